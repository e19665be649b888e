//! TCP transport: listeners, outbound connections bound to the listener's address,
//! Content-Length framing (RFC 3261 18.3), CRLF keepalive answering (RFC 5626 4.4.1), a
//! maximum message size and an idle timeout per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use portcullis_sip::{frame, Framing};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::flows::{FlowHandle, Outgoing};
use super::{ListenerId, Source, Transport};
use crate::server::Shared;

/// Binds a TCP listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until the listener fails.
pub async fn accept_loop(shared: Arc<Shared>, listener: ListenerId, tcp: TcpListener) {
    loop {
        match tcp.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let (handle, rx) = shared.flows.register(listener, Transport::Tcp, remote);
                debug!(%remote, conn = handle.id.0, "accepted TCP connection");
                run_connection(shared.clone(), handle, stream, rx);
            }
            Err(e) => {
                warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens an outbound connection for `handle` (already registered, so messages queue while it
/// connects), bound to the listener's address; on failure every queued message is reported.
pub fn connect(
    shared: Arc<Shared>,
    handle: FlowHandle,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    local_ip: std::net::IpAddr,
) {
    tokio::spawn(async move {
        let timeout = shared.io.connect_timeout;
        let result = async {
            let socket = if handle.remote.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if !local_ip.is_unspecified() && local_ip.is_ipv4() == handle.remote.is_ipv4() {
                socket.bind(SocketAddr::new(local_ip, 0))?;
            }
            tokio::time::timeout(timeout, socket.connect(handle.remote))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))?
        }
        .await;
        match result {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                debug!(remote = %handle.remote, conn = handle.id.0, "connected");
                run_connection(shared, handle, stream, rx);
            }
            Err(e) => {
                warn!(remote = %handle.remote, error = %e, "TCP connect failed");
                shared.metrics.tcp_connect_failure();
                shared.flows.remove(handle.id);
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    if let Some(t) = m.token {
                        shared.transport_error(t);
                    }
                }
            }
        }
    });
}

/// Spawns the reader and writer of an established connection.
fn run_connection(
    shared: Arc<Shared>,
    handle: FlowHandle,
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    shared.metrics.tcp_connections(1);
    let (mut reader, mut writer) = stream.into_split();
    let writer_shared = shared.clone();
    let id = handle.id;
    let writer_task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Err(e) = writer.write_all(&m.payload).await {
                debug!(conn = id.0, error = %e, "TCP write failed");
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
                    debug!(conn = handle.id.0, error = %e, "TCP read failed");
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
