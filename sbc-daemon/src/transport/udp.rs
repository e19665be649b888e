//! UDP listeners: one socket per listener, a receive loop feeding the daemon, and sends
//! from the listener's own socket so replies leave from the address the peer talks to.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::{ListenerId, Source, Transport};
use crate::server::Shared;

/// Socket buffer size requested for UDP listeners (S-41); the kernel may cap it.
const UDP_BUFFER: usize = 4 << 20;

/// Binds a UDP listener socket.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER) {
        debug!(error = %e, "could not raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER) {
        debug!(error = %e, "could not raise the UDP send buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until the socket fails.
pub async fn receive_loop(shared: Arc<Shared>, listener: ListenerId, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    let max = shared.io.max_message_size;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, remote)) => {
                if n == 0 {
                    continue;
                }
                let data = &buf[..n];
                // RFC 5626 4.4.1 keepalives over UDP are STUN, not CRLF; a bare CRLF is noise.
                if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    continue;
                }
                if n > max {
                    shared.metrics.dropped(crate::metrics::DropReason::TooLarge);
                    continue;
                }
                let src = Source {
                    listener,
                    transport: Transport::Udp,
                    remote,
                    conn: None,
                };
                shared.deliver(Bytes::copy_from_slice(data), src);
            }
            Err(e) => {
                // ICMP errors surface here on some systems; they are not fatal.
                debug!(error = %e, "UDP receive error");
                if e.kind() == std::io::ErrorKind::Other {
                    warn!(error = %e, "UDP listener stopping");
                    return;
                }
            }
        }
    }
}
