//! The shortest end-to-end path: connect, publish through the API, receive.

use crate::common::{TestServer, http};
use groupcast::Hub;

#[tokio::test]
async fn api_publish_reaches_a_member() {
    let server = TestServer::start(Hub::builder().build().unwrap()).await;
    let mut client = server.connect("ticker_ws").await;
    let (status, answer) =
        http::post_text(&server.http_url("/api/groups/ticker_ws/messages"), "hello").await;
    assert_eq!(status, 200);
    assert_eq!(answer["delivered"], 1);
    assert_eq!(client.recv_text().await, "hello");
}
