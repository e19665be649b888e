//! Transports (RFC 3261 section 18): listeners, the connection (flow) table, stream framing,
//! and the types the sans-IO proxy core uses to describe where a message came from
//! ([`Source`]) and where it must go ([`Transmit`]).
//!
//! - [`udp`]: one socket per UDP listener, receive loop.
//! - [`tcp`]: TCP listeners, outbound connections, Content-Length framing, CRLF keepalives.
//! - [`flows`]: the connection table: reuse of existing connections per peer, idle timeout.

pub mod flow_token;
pub mod flows;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod ws;

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use portcullis_config::Proto;

/// Index of a listener in the daemon's listener table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub usize);

/// Identifier of a stream connection (flow) in the connection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// SIP transport protocol of a message or listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn from_proto(p: Proto) -> Transport {
        match p {
            Proto::Udp => Transport::Udp,
            Proto::Tcp => Transport::Tcp,
            Proto::Tls => Transport::Tls,
            Proto::Ws => Transport::Ws,
            Proto::Wss => Transport::Wss,
        }
    }
    /// Parses a `transport=` URI parameter or Via transport token (case-insensitive).
    pub fn parse(s: &str) -> Option<Transport> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            "ws" => Some(Transport::Ws),
            "wss" => Some(Transport::Wss),
            _ => None,
        }
    }
    /// Token used in Via headers (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }
    /// Value of the `transport=` URI parameter.
    pub fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
    /// Reliable transports carry no retransmissions (RFC 3261 17.1.1.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls | Transport::Wss => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.param())
    }
}

/// Where a received message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub listener: ListenerId,
    pub transport: Transport,
    pub remote: SocketAddr,
    /// The connection it arrived on (stream transports).
    pub conn: Option<ConnId>,
}

/// Destination of an outgoing message: an address, or a host name the IO layer resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Addr(SocketAddr),
    Name(String, u16),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Addr(a) => write!(f, "{a}"),
            Destination::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Token the core attaches to a transmit so the IO layer can report a failure back
/// (connection refused, unresolvable name, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransmitToken(pub u64);

/// A message the core wants sent.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub listener: ListenerId,
    pub transport: Transport,
    pub destination: Destination,
    /// Send over this connection if it is still open (responses, flow reuse).
    pub conn: Option<ConnId>,
    pub payload: Bytes,
    /// When set, a send failure is reported back with `Proxy::handle_transport_error`.
    pub token: Option<TransmitToken>,
    /// Deliver only over `conn` (a registered client's flow): if that connection is gone the
    /// send fails instead of opening a new connection, which a NATed client could not
    /// accept anyway.
    pub flow_bound: bool,
    /// The trunk the message goes to, if any: a TLS connection the IO layer opens takes the
    /// trunk's TLS client settings (certificate verification, server name).
    pub trunk: Option<String>,
}
