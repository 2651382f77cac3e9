//! The terminal client: `groupcast tail` and `groupcast publish`.
//!
//! Watching a group and writing to one are the first two things anyone
//! does with a node, and until now they took three other tools (websocat,
//! curl, redis-cli), each needing the right flags to speak the protocol:
//! websocat cannot resume, curl needs the content type and the API key
//! header spelled out, redis-cli needs the function's name and key count.
//! These commands speak it natively, from the library's own definitions
//! (`groupcast::protocol::V1`, `groupcast::close_code`, the Redis
//! Function's name, the channel names), so they cannot drift from what the
//! nodes do.
//!
//! They live in the binary, not the library: a library user has the
//! [`Hub`](groupcast::Hub) and does not need a command-line client, and the
//! library should not depend on an HTTP client.
//!
//! * [`tail`]: a `groupcast.v1` WebSocket client that prints one line per
//!   message and resumes across reconnects (`docs/protocol.md`,
//!   "Reconnecting").
//! * [`publish`]: one message or stdin's lines, through a node's HTTP API
//!   or straight to Redis, paced with `--rate`.

pub mod publish;
pub mod tail;

use std::time::Duration;

use anyhow::{Context, bail};
use url::Url;

/// How long one HTTP request, WebSocket handshake or Redis connect may
/// take before the client gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The reason of a refusal, as the node's JSON error body gives it
/// (`{"error": "<code>", "message": "<text>"}`, `src/http_error.rs`):
/// `401 api_key_missing: <text>`. A body that is not that JSON (a proxy's
/// HTML page, say) is shown as is, shortened.
fn refusal(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) if error.message.is_empty() => format!("{status} {}", error.error),
        Ok(error) => format!("{status} {}: {}", error.error, error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("{status}")
            } else {
                let short: String = text.chars().take(200).collect();
                format!("{status}: {short}")
            }
        }
    }
}

/// What to tell the user about an error code, beyond the server's text.
fn hint(code_and_text: &str) -> Option<&'static str> {
    if code_and_text.contains("api_key_missing") || code_and_text.contains("api_key_invalid") {
        Some("this node requires an API key: pass --api-key or set GROUPCAST_API_KEY")
    } else if code_and_text.contains("token_") || code_and_text.contains("bad_signature") {
        Some("this node requires a client token: pass --token or set GROUPCAST_TOKEN")
    } else {
        None
    }
}

/// A node's base URL (`--url`) with the scheme `http` or `ws` (as the
/// caller wants), checked: this build speaks plain HTTP and WebSocket only
/// (no TLS client), which it says instead of failing obscurely later.
fn node_url(url: &str, websocket: bool) -> anyhow::Result<Url> {
    let mut parsed = Url::parse(url)
        .with_context(|| format!("{url:?} is not a URL (e.g. {DEFAULT_EXAMPLE})"))?;
    let scheme = match (parsed.scheme(), websocket) {
        ("http" | "ws", true) => "ws",
        ("http" | "ws", false) => "http",
        ("https" | "wss", _) => bail!(
            "{url}: this client speaks plain http and ws only; reach the node without TLS \
             (e.g. inside the cluster or through a port-forward)"
        ),
        (other, _) => {
            bail!("{url}: unknown scheme {other:?}; use http:// (e.g. {DEFAULT_EXAMPLE})")
        }
    };
    // Only between the special schemes http and ws, which the url crate
    // allows to swap; both are checked above.
    if parsed.set_scheme(scheme).is_err() {
        bail!("{url}: cannot use it as a {scheme}:// URL");
    }
    Ok(parsed)
}

const DEFAULT_EXAMPLE: &str = "http://127.0.0.1:8080";

/// `url` with the password (if any) replaced, for error messages: Redis
/// URLs carry credentials.
fn redact(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(the --redis-url given)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_code_and_the_text() {
        let body = br#"{"error":"api_key_missing","message":"an API key is required"}"#;
        assert_eq!(
            refusal(401, body),
            "401 api_key_missing: an API key is required"
        );
        assert_eq!(
            refusal(502, b"<html>bad gateway</html>"),
            "502: <html>bad gateway</html>"
        );
        assert_eq!(refusal(500, b""), "500");
        assert!(hint(&refusal(401, body)).is_some_and(|h| h.contains("--api-key")));
    }

    #[test]
    fn node_urls_take_the_wanted_scheme_and_refuse_tls() {
        assert_eq!(
            node_url("http://h:1/base", true).unwrap().as_str(),
            "ws://h:1/base"
        );
        assert_eq!(node_url("ws://h:1", false).unwrap().as_str(), "http://h:1/");
        assert!(
            node_url("https://h", false)
                .unwrap_err()
                .to_string()
                .contains("plain http")
        );
        assert!(node_url("h:8080", false).is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert!(!redact("not a url secret").contains("secret"));
    }
}
