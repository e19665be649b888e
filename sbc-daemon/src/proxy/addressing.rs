//! Addresses the proxy owns and addresses it sends to.
//!
//! - Which URIs are ours (listener addresses, advertised addresses, domain aliases), so Route
//!   headers we inserted are consumed and we never loop to ourselves (RFC 3261 16.4, S-06).
//! - The target of a URI (host, port, transport; RFC 3263's defaults for IP literals).
//! - Received/rport on the received Via (RFC 3261 18.2.1, RFC 3581 4) and where a response
//!   goes (18.2.2, RFC 3581 4).

use std::net::{IpAddr, SocketAddr};

use portcullis_config::Config;
use portcullis_sip::SipUri;

use crate::transport::{Destination, ListenerId, Source, Transport};

/// A SIP listener as the core sees it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub id: ListenerId,
    pub name: String,
    pub interface: String,
    pub transport: Transport,
    pub local: SocketAddr,
    /// Host put in Via and Record-Route (advertised address or the bind address).
    pub advertised_host: String,
    pub advertised_port: u16,
}

impl ListenerInfo {
    pub fn from_config(cfg: &Config) -> Vec<ListenerInfo> {
        let mut out = Vec::new();
        for iface in &cfg.interfaces {
            for l in &iface.listeners {
                let transport = Transport::from_proto(l.proto);
                let local = SocketAddr::new(l.address, l.port);
                let advertised_host = match &l.advertised_address {
                    Some(a) => a.clone(),
                    None => host_literal(l.address),
                };
                out.push(ListenerInfo {
                    id: ListenerId(out.len()),
                    name: l.name.clone(),
                    interface: iface.name.clone(),
                    transport,
                    local,
                    advertised_host,
                    advertised_port: l.advertised_port.unwrap_or(l.port),
                });
            }
        }
        out
    }

    /// `host:port` as it goes into Via sent-by and Record-Route.
    pub fn hostport(&self) -> String {
        format!("{}:{}", self.advertised_host, self.advertised_port)
    }
}

/// An IP address as a URI host (IPv6 in brackets).
pub fn host_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Parses a URI/Via host (IPv6 may be bracketed) as an IP address.
pub fn parse_host_ip(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse().ok()
}

/// The set of names and addresses that mean "this SBC".
#[derive(Debug, Clone)]
pub struct LocalAddresses {
    listeners: Vec<ListenerInfo>,
    aliases: Vec<String>,
}

impl LocalAddresses {
    pub fn new(listeners: Vec<ListenerInfo>, aliases: Vec<String>) -> Self {
        LocalAddresses {
            listeners,
            aliases: aliases
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
        }
    }

    pub fn listeners(&self) -> &[ListenerInfo] {
        &self.listeners
    }

    pub fn listener(&self, id: ListenerId) -> Option<&ListenerInfo> {
        self.listeners.get(id.0)
    }

    fn host_is_ours(&self, host: &str, port: Option<u16>) -> bool {
        let lower = host.to_ascii_lowercase();
        if self.aliases.contains(&lower) {
            return true;
        }
        let ip = parse_host_ip(host);
        self.listeners.iter().any(|l| {
            let host_match = ip.is_some_and(|ip| ip == l.local.ip() && !ip.is_unspecified())
                || l.advertised_host.eq_ignore_ascii_case(host);
            // Without a port the host alone decides: clients (WebSocket ones in particular)
            // address the SBC by host even when it listens on a non-default port.
            let port_ok = match port {
                Some(p) => p == l.local.port() || p == l.advertised_port,
                None => true,
            };
            host_match && port_ok
        })
    }

    /// Whether a URI designates this SBC (RFC 3261 16.4). Returns the listener that matches
    /// best (same host, port and transport), or any listener of ours for an alias.
    pub fn own_listener_for(&self, uri: &SipUri<'_>) -> Option<ListenerId> {
        if !self.host_is_ours(uri.host, uri.port) {
            return None;
        }
        let transport = uri_transport(uri);
        let ip = parse_host_ip(uri.host);
        let port = uri.port.unwrap_or(transport.default_port());
        let exact = self.listeners.iter().find(|l| {
            l.transport == transport
                && (l.local.port() == port || l.advertised_port == port)
                && (ip.is_some_and(|ip| ip == l.local.ip())
                    || l.advertised_host.eq_ignore_ascii_case(uri.host))
        });
        exact
            .or_else(|| self.listeners.iter().find(|l| l.transport == transport))
            .or_else(|| self.listeners.first())
            .map(|l| l.id)
    }

    /// Whether a Via sent-by designates this SBC.
    pub fn is_own_sent_by(&self, host: &str, port: Option<u16>) -> bool {
        self.host_is_ours(host, port)
    }

    /// Picks the listener to send from: on `interface` (if given) with `transport`, preferring
    /// a listener named `name`.
    pub fn egress_listener(
        &self,
        interface: Option<&str>,
        transport: Transport,
        name: Option<&str>,
    ) -> Option<&ListenerInfo> {
        if let Some(n) = name {
            if let Some(l) = self.listeners.iter().find(|l| l.name == n) {
                return Some(l);
            }
        }
        let on_iface = |l: &&ListenerInfo| interface.is_none_or(|i| l.interface == i);
        self.listeners
            .iter()
            .filter(on_iface)
            .find(|l| l.transport == transport)
    }
}

/// Transport of a URI: `transport=` parameter, `sips:` means TLS, default UDP.
pub fn uri_transport(uri: &SipUri<'_>) -> Transport {
    if let Some(t) = uri.transport().and_then(Transport::parse) {
        return t;
    }
    if uri.scheme.eq_ignore_ascii_case("sips") {
        Transport::Tls
    } else {
        Transport::Udp
    }
}

/// Next-hop destination of a URI (maddr wins over host; RFC 3261 16.5 / 19.1.1). Names that are
/// not IP literals are resolved by the IO layer (A/AAAA; NAPTR/SRV are not implemented yet).
pub fn uri_destination(uri: &SipUri<'_>) -> (Destination, Transport) {
    let transport = uri_transport(uri);
    let host = uri.maddr().unwrap_or(uri.host);
    let port = uri.port.unwrap_or(transport.default_port());
    let dest = match parse_host_ip(host) {
        Some(ip) => Destination::Addr(SocketAddr::new(ip, port)),
        None => Destination::Name(host.to_string(), port),
    };
    (dest, transport)
}

/// Rewrites a Via value with `received` and a filled-in `rport` (RFC 3261 18.2.1, RFC 3581 4).
/// `received` is added when the sent-by host differs from the source address or when the
/// client asked for rport; `rport` is filled only when present. Returns `None` if nothing
/// changes.
pub fn via_with_received(via_value: &str, src: SocketAddr, sent_by_host: &str) -> Option<String> {
    let mut parts = split_params(via_value);
    if parts.is_empty() {
        return None;
    }
    let head = parts.remove(0);
    let mut has_rport = false;
    let mut out = String::with_capacity(via_value.len() + 40);
    out.push_str(head.trim_end());
    for p in &parts {
        let p = p.trim();
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            has_rport = true;
            continue;
        }
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    let host_differs = parse_host_ip(sent_by_host) != Some(src.ip());
    if !host_differs && !has_rport {
        return None;
    }
    out.push_str(";received=");
    out.push_str(&src.ip().to_string());
    if has_rport {
        out.push_str(";rport=");
        out.push_str(&src.port().to_string());
    }
    Some(out)
}

/// Splits `a;b=c;d="x;y"` at semicolons outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Where a response to a request received from `src` goes (RFC 3261 18.2.2, RFC 3581 4).
/// For streams the response goes over the connection the request came on (the transmit
/// carries it); the destination returned here is only used if that connection has closed:
/// the source address with the Via sent-by port. For UDP: the source address and, with
/// rport, the source port, otherwise the Via sent-by port.
pub fn response_destination(
    src: &Source,
    via_port: Option<u16>,
    via_has_rport: bool,
) -> Destination {
    if via_has_rport && !src.transport.is_reliable() {
        return Destination::Addr(src.remote);
    }
    let port = via_port.unwrap_or(src.transport.default_port());
    Destination::Addr(SocketAddr::new(src.remote.ip(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_and_rport_follow_rfc3581() {
        let src: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let v = via_with_received(
            "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKx",
            src,
            "10.0.0.1",
        )
        .unwrap();
        assert_eq!(
            v,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx;received=192.0.2.9;rport=40000"
        );
        // Same host, no rport: untouched.
        assert!(
            via_with_received("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx", src, "192.0.2.9").is_none()
        );
        // Host name: received added.
        let v = via_with_received(
            "SIP/2.0/TCP pc.example.com;branch=z9hG4bKx",
            src,
            "pc.example.com",
        )
        .unwrap();
        assert!(v.ends_with(";received=192.0.2.9"));
        // Same host with rport: received added too (RFC 3581 4).
        let v = via_with_received(
            "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKx;rport",
            src,
            "192.0.2.9",
        )
        .unwrap();
        assert!(v.ends_with(";received=192.0.2.9;rport=40000"), "{v}");
    }

    #[test]
    fn response_destination_uses_rport_or_sent_by_port() {
        let src = Source {
            listener: ListenerId(0),
            transport: Transport::Udp,
            remote: "192.0.2.9:40000".parse().unwrap(),
            conn: None,
        };
        assert_eq!(
            response_destination(&src, Some(5070), true),
            Destination::Addr(src.remote)
        );
        assert_eq!(
            response_destination(&src, Some(5070), false),
            Destination::Addr("192.0.2.9:5070".parse().unwrap())
        );
        assert_eq!(
            response_destination(&src, None, false),
            Destination::Addr("192.0.2.9:5060".parse().unwrap())
        );
        // Streams: the connection is used first; if it closed, a new connection goes to the
        // sent-by port, not to the client's ephemeral source port.
        let tcp = Source {
            transport: Transport::Tcp,
            ..src
        };
        assert_eq!(
            response_destination(&tcp, Some(5062), true),
            Destination::Addr("192.0.2.9:5062".parse().unwrap())
        );
    }
}
