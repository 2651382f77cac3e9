//! The WebSocket handshake (RFC 6455 section 4.2), done here rather than by
//! axum's `WebSocketUpgrade`, because groupcast keeps the socket itself:
//! after the 101 answer the connection is handed over as the raw
//! `TcpStream` (see `transport/websocket/connection.rs`), and the answer negotiates
//! what axum's does not — permessage-deflate (`wire::deflate`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http_error::ApiError;
use crate::wire::deflate;

/// A valid upgrade request, answered with [`Upgrade::accept`].
pub(crate) struct Upgrade {
    key: HeaderValue,
    /// The subprotocols the client offers, in its order.
    protocols: Vec<String>,
    /// Whether the client offers permessage-deflate in a form we accept.
    deflate_offered: bool,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket upgrade; answered in JSON with the
/// same statuses as axum's extractor.
#[derive(Debug)]
pub(crate) struct NotAnUpgrade {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl NotAnUpgrade {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        NotAnUpgrade { status, reason }
    }
}

impl IntoResponse for NotAnUpgrade {
    fn into_response(self) -> Response {
        ApiError::new(self.status, "not_a_websocket_request", self.reason).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotAnUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = |reason| NotAnUpgrade::new(StatusCode::BAD_REQUEST, reason);
        if parts.method != Method::GET {
            return Err(NotAnUpgrade::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET",
            ));
        }
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(bad("the Connection header does not include 'upgrade'"));
        }
        if !has_token(headers, header::UPGRADE, "websocket") {
            return Err(bad("the Upgrade header does not include 'websocket'"));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(bad("the Sec-WebSocket-Version header is not '13'"));
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or_else(|| bad("the Sec-WebSocket-Key header is missing"))?;
        let protocols = values(headers, header::SEC_WEBSOCKET_PROTOCOL)
            .map(str::to_string)
            .collect();
        let deflate_offered = headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(deflate::accepts);
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            NotAnUpgrade::new(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            )
        })?;
        Ok(Upgrade {
            key,
            protocols,
            deflate_offered,
            on_upgrade,
        })
    }
}

/// The socket after the handshake: the TCP stream itself when the server
/// runs on TCP (always, with groupcast's own accept loop), any upgraded
/// connection otherwise; plus the bytes the client sent right behind its
/// request, which HTTP had already read.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Other(TokioIo<Upgraded>),
}

// One socket type for the connection (not a generic per kind): one copy
// of the connection's code, and no wrapper future around it.
impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Socket::Other(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Socket::Other(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Socket::Other(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(tcp) => tcp.is_write_vectored(),
            Socket::Other(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Socket::Other(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Socket::Other(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// What the handshake agreed on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    /// The client asked for (and got) this subprotocol.
    pub protocol: Option<&'static str>,
    /// permessage-deflate is on for this connection.
    pub deflate: bool,
}

impl Upgrade {
    /// Whether the client offers subprotocol `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.protocols.iter().any(|p| p == name)
    }

    /// Answers 101 and, once the client has it, runs `serve` with the
    /// socket. `protocol` is chosen if the client offered it; compression
    /// is on if `compression` and the client offered it.
    pub fn accept<F, Fut>(self, protocol: &'static str, compression: bool, serve: F) -> Response
    where
        F: FnOnce(Socket, Bytes, Negotiated) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let negotiated = Negotiated {
            protocol: self.offers(protocol).then_some(protocol),
            deflate: compression && self.deflate_offered,
        };
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "the upgrade did not complete");
                    return;
                }
            };
            let (socket, leftover) = match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => (Socket::Tcp(parts.io.into_inner()), parts.read_buf),
                Err(upgraded) => (Socket::Other(TokioIo::new(upgraded)), Bytes::new()),
            };
            serve(socket, leftover, negotiated).await;
        });
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
            ],
        )
            .into_response();
        let headers = response.headers_mut();
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = negotiated.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        if negotiated.deflate {
            headers.insert(
                header::SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(deflate::RESPONSE),
            );
        }
        response
    }
}

/// The comma-separated values of every `name` header, trimmed.
fn values(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    values(headers, name).any(|v| v.eq_ignore_ascii_case(token))
}
