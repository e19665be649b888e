//! Byte-stream SIP connections (TCP and TLS): Content-Length framing (RFC 3261 18.3), CRLF
//! keepalive answering (RFC 5626 4.4.1), the maximum message size and the idle timeout.
//! WebSocket connections carry one message per frame instead (see [`super::ws`]).

use std::sync::Arc;

use bytes::BytesMut;
use portcullis_sip::{frame, Framing};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::flows::{FlowHandle, Outgoing};
use super::Source;
use crate::server::Shared;

/// Spawns the reader and writer of an established stream connection.
pub fn run_stream<S>(
    shared: Arc<Shared>,
    handle: FlowHandle,
    stream: S,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    shared.metrics.tcp_connections(1);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_shared = shared.clone();
    let id = handle.id;
    let writer_task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Err(e) = writer.write_all(&m.payload).await {
                debug!(conn = id.0, error = %e, "stream write failed");
                if let Some(t) = m.token {
                    writer_shared.transport_error(t);
                }
                break;
            }
        }
        // Report what was still queued when the connection died.
        rx.close();
        while let Ok(m) = rx.try_recv() {
            if let Some(t) = m.token {
                writer_shared.transport_error(t);
            }
        }
        let _ = writer.shutdown().await;
    });
    tokio::spawn(async move {
        let max = shared.io.max_message_size;
        let idle = shared.io.idle_timeout;
        let mut buf = BytesMut::with_capacity(8192);
        'conn: loop {
            // Take every complete message out of the buffer.
            loop {
                match frame(&buf, max) {
                    Framing::Message(n) => {
                        let msg = buf.split_to(n).freeze();
                        let src = Source {
                            listener: handle.listener,
                            transport: handle.transport,
                            remote: handle.remote,
                            conn: Some(handle.id),
                        };
                        shared.deliver(msg, src);
                    }
                    Framing::KeepAlivePing(n) => {
                        let _ = buf.split_to(n);
                        // RFC 5626 4.4.1: answer a double-CRLF ping with a single CRLF.
                        let _ = handle.tx.send(Outgoing {
                            payload: bytes::Bytes::from_static(b"\r\n"),
                            token: None,
                        });
                    }
                    Framing::KeepAlivePong(n) => {
                        let _ = buf.split_to(n);
                    }
                    Framing::Partial => break,
                    Framing::Invalid(e) => {
                        let iface = shared.interface_of(handle.listener);
                        shared.metrics.parse_error(&iface);
                        warn!(remote = %handle.remote, error = %e, "closing connection after unframeable data");
                        break 'conn;
                    }
                }
            }
            match tokio::time::timeout(idle, reader.read_buf(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    debug!(conn = handle.id.0, error = %e, "stream read failed");
                    break;
                }
                Err(_) => {
                    debug!(conn = handle.id.0, "closing idle connection");
                    break;
                }
            }
        }
        shared.flow_closed(handle.id);
        shared.metrics.tcp_connections(-1);
        // The writer ends once the last sender (ours, now dropped) is gone and its queue is
        // drained or fails.
        drop(handle);
        let _ = writer_task.await;
    });
}
