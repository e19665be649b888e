//! SIP over WebSocket (RFC 7118) on `ws` and `wss` listeners: the `sip` subprotocol is
//! required, each WebSocket message carries one SIP message, and the SBC pings every
//! connection so that a dead browser is noticed (S-02): a connection that answers no ping
//! for two intervals is closed, and its registrations go with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use super::{ListenerId, Source, Transport};
use crate::server::Shared;

/// Interval of WebSocket pings.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks the opening handshake: the client must offer the `sip` subprotocol (RFC 7118 4).
#[allow(clippy::result_large_err)]
fn select_sip_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        let mut err = ErrorResponse::new(Some(
            "the sip WebSocket subprotocol is required (RFC 7118)".into(),
        ));
        *err.status_mut() = StatusCode::BAD_REQUEST;
        return Err(err);
    }
    resp.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

/// Accepts WebSocket connections (over TLS for `wss`) until the listener fails.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: ListenerId,
    tcp: TcpListener,
    transport: Transport,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "WebSocket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        super::tcp::tune(&stream, shared.io.tcp_keepalive);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => serve(shared, listener, transport, remote, s).await,
                        Ok(Err(e)) => debug!(%remote, error = %e, "WSS TLS handshake failed"),
                        Err(_) => debug!(%remote, "WSS TLS handshake timed out"),
                    }
                }
                None => serve(shared, listener, transport, remote, stream).await,
            }
        });
    }
}

async fn serve<S>(
    shared: Arc<Shared>,
    listener: ListenerId,
    transport: Transport,
    remote: std::net::SocketAddr,
    stream: S,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let max = shared.io.max_message_size;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(max);
    config.max_frame_size = Some(max);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        select_sip_subprotocol,
        Some(config),
    );
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "WebSocket handshake timed out");
            return;
        }
    };
    let (handle, mut rx) = shared.flows.register(listener, transport, remote);
    debug!(%remote, conn = handle.id.0, %transport, "WebSocket connection open");
    shared.metrics.tcp_connections(1);
    let (mut sink, mut stream) = ws.split();
    let started = Instant::now();
    let last_pong = Arc::new(AtomicU64::new(0));
    let writer_pong = last_pong.clone();
    let writer_shared = shared.clone();
    let conn = handle.id;
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    let frame = match std::str::from_utf8(&m.payload) {
                        Ok(text) => Message::text(text),
                        Err(_) => Message::binary(m.payload.clone()),
                    };
                    if let Err(e) = sink.send(frame).await {
                        debug!(conn = conn.0, error = %e, "WebSocket send failed");
                        if let Some(t) = m.token {
                            writer_shared.transport_error(t);
                        }
                        break;
                    }
                }
                _ = ping.tick() => {
                    // No pong for two intervals: the peer is gone (S-02).
                    let since_pong = started.elapsed().as_secs().saturating_sub(writer_pong.load(Ordering::Relaxed));
                    if since_pong > 2 * PING_INTERVAL.as_secs() + 1 {
                        debug!(conn = conn.0, "WebSocket peer stopped answering pings");
                        break;
                    }
                    if sink.send(Message::Ping(Bytes::from_static(b"portcullis"))).await.is_err() {
                        break;
                    }
                }
            }
        }
        rx.close();
        while let Ok(m) = rx.try_recv() {
            if let Some(t) = m.token {
                writer_shared.transport_error(t);
            }
        }
        let _ = sink.close().await;
    });
    let idle = shared.io.idle_timeout;
    loop {
        let next = tokio::time::timeout(idle, stream.next()).await;
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => {
                debug!(conn = handle.id.0, error = %e, "WebSocket read failed");
                break;
            }
            Ok(None) | Err(_) => break,
        };
        let payload: Bytes = match msg {
            Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
            Message::Binary(b) => b,
            Message::Pong(_) => {
                last_pong.store(started.elapsed().as_secs(), Ordering::Relaxed);
                continue;
            }
            Message::Ping(_) | Message::Frame(_) => continue,
            Message::Close(_) => break,
        };
        if payload.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        let src = Source {
            listener: handle.listener,
            transport: handle.transport,
            remote: handle.remote,
            conn: Some(handle.id),
        };
        shared.deliver(payload, src);
    }
    shared.flow_closed(handle.id);
    shared.metrics.tcp_connections(-1);
    drop(handle);
    writer.abort();
    let _ = writer.await;
}
