//! HTTP helpers: JSON GET and POST with the status, and Prometheus samples.

use serde_json::Value;

/// `GET url`: the status and the JSON body (`Null` when the body is not
/// JSON). Panics when nothing answers.
pub async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET url`: the status, or 0 while nothing answers.
pub async fn status(url: &str) -> u16 {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `GET url`: the body as text (e.g. `/metrics`).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `POST url` with `content_type` and `body`: the status and the JSON
/// answer (`Null` when it is not JSON).
pub async fn post(url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST url` with the `text/plain` body `text` on `client` (one client
/// for a whole burst of publishes); the response, whatever its status.
/// Panics when nothing answers.
pub async fn post_text_with(
    client: &reqwest::Client,
    url: &str,
    text: impl Into<String>,
) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "text/plain")
        .body(text.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `POST url` with a `text/plain` body.
pub async fn post_text(url: &str, text: &str) -> (u16, Value) {
    post(url, "text/plain", text.as_bytes().to_vec()).await
}

/// The value of the sample `name` (with its labels, if any, as written:
/// `groupcast_limit_rejections_total{limit="groups"}`) in a Prometheus
/// text exposition; panics when it is missing.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
        .trim()
        .parse()
        .expect("a sample value")
}
