//! TCP transport: listeners, outbound connections bound to the listener's address,
//! Content-Length framing (RFC 3261 18.3), CRLF keepalive answering (RFC 5626 4.4.1), a
//! maximum message size and an idle timeout per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::flows::{FlowHandle, Outgoing};
use super::stream::run_stream;
use super::{ListenerId, Transport};
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
                run_stream(shared.clone(), handle, stream, rx);
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
                run_stream(shared, handle, stream, rx);
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
