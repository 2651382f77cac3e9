//! The shortest end-to-end path: connect, publish through the API, receive.

mod common;

use common::TestServer;
use groupcast::Hub;

#[tokio::test]
async fn api_publish_reaches_a_member() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let mut client = server.connect("ticker_ws").await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(server.http_url("/api/groups/ticker_ws/messages"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["delivered"], 1);
    assert_eq!(client.recv_text().await, "hello");
}
