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

/// Socket options of every SIP stream connection, accepted or opened: no Nagle delay, and OS
/// keepalive probes after `keepalive` idle time (every 10 s, 3 unanswered close it).
pub fn tune(stream: &tokio::net::TcpStream, keepalive: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    if let Some(idle) = keepalive {
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(Duration::from_secs(10).min(idle))
            .with_retries(3);
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
            debug!(error = %e, "cannot set TCP keepalive");
        }
    }
}

/// Accepts connections until the listener fails.
pub async fn accept_loop(shared: Arc<Shared>, listener: ListenerId, tcp: TcpListener) {
    loop {
        match tcp.accept().await {
            Ok((stream, remote)) => {
                tune(&stream, shared.io.tcp_keepalive);
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
        match dial(&shared, handle.remote, local_ip).await {
            Ok(stream) => {
                debug!(remote = %handle.remote, conn = handle.id.0, "connected");
                run_stream(shared, handle, stream, rx);
            }
            Err(e) => {
                warn!(remote = %handle.remote, error = %e, "TCP connect failed");
                shared.metrics.tcp_connect_failure();
                connect_failed(&shared, &handle, &mut rx);
            }
        }
    });
}

/// The TCP part of an outbound stream connection (TCP, or under TLS): from the listener's
/// address when it has one of the remote's family, within the connect timeout, tuned.
pub(super) async fn dial(
    shared: &Shared,
    remote: SocketAddr,
    local_ip: std::net::IpAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !local_ip.is_unspecified() && local_ip.is_ipv4() == remote.is_ipv4() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let stream = tokio::time::timeout(shared.io.connect_timeout, socket.connect(remote))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    tune(&stream, shared.io.tcp_keepalive);
    Ok(stream)
}

/// An outbound connection could not be opened: forget its flow and report every message
/// queued on it as a transport error.
pub(super) fn connect_failed(
    shared: &Arc<Shared>,
    handle: &FlowHandle,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
) {
    shared.flows.remove(handle.id);
    rx.close();
    while let Ok(m) = rx.try_recv() {
        if let Some(t) = m.token {
            shared.transport_error(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tune;
    use std::time::Duration;

    #[test]
    fn stream_connections_get_nodelay_and_keepalive() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
            let (client, (server, _)) = (client.unwrap(), accepted.unwrap());
            tune(&server, Some(Duration::from_secs(45)));
            let s = socket2::SockRef::from(&server);
            assert!(server.nodelay().unwrap());
            assert!(s.keepalive().unwrap());
            assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
            assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(10));
            assert_eq!(s.tcp_keepalive_retries().unwrap(), 3);
            tune(&client, None);
            assert!(client.nodelay().unwrap());
            assert!(!socket2::SockRef::from(&client).keepalive().unwrap());
        });
    }
}
