//! NAT detection (as Kamailio's `nat_uac_test(19)` plus private-source checks), ALG
//! mangling suspicion (S-10), and the table of NATed UDP client flows that get keepalives.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use portcullis_sip::SipMessage;

use super::addressing::parse_host_ip;
use crate::transport::{ListenerId, Source};

/// RFC 1918, RFC 6598 (CGN), link-local, unique-local and loopback addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_loopback()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// What the first look at a request says about NAT between the client and us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatVerdict {
    /// The client is behind NAT: its Via does not match the packet's source, or its Contact
    /// is a private address while it reaches us from a public one.
    pub nated: bool,
    /// An ALG rewrote the Via to the public address but left a private Contact or SDP
    /// address behind (or the other way round).
    pub alg_suspected: bool,
}

/// Inspects a request received from `src`.
pub fn detect(msg: &SipMessage, src: SocketAddr) -> NatVerdict {
    let Ok(via) = msg.top_via() else {
        return NatVerdict::default();
    };
    let via_ip = parse_host_ip(via.host);
    let via_port = via.port.unwrap_or(5060);
    let via_mismatch = via_ip != Some(src.ip()) || via_port != src.port();
    let contact_ip = msg.contacts().ok().and_then(|c| {
        c.iter().find_map(|c| match c {
            portcullis_sip::Contact::Addr(na) => {
                na.parse_uri().ok().and_then(|u| parse_host_ip(u.host))
            }
            portcullis_sip::Contact::Star => None,
        })
    });
    let source_public = !is_private(src.ip());
    let contact_private = contact_ip.is_some_and(is_private);
    let sdp_private = sdp_connection_ip(msg.body()).is_some_and(is_private);
    let nated = via_mismatch || (source_public && contact_private);
    // The Via names the public source exactly (an ALG rewrote it) while the Contact or the
    // SDP still carries a private address.
    let alg_suspected = !via_mismatch && source_public && (contact_private || sdp_private);
    NatVerdict {
        nated,
        alg_suspected,
    }
}

/// The session-level (or first) `c=` address of an SDP body.
fn sdp_connection_ip(body: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .find_map(|l| {
            l.trim_end()
                .strip_prefix("c=IN IP4 ")
                .or_else(|| l.trim_end().strip_prefix("c=IN IP6 "))
        })
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.trim().parse().ok())
}

/// Keepalive state of one NATed UDP flow.
#[derive(Debug, Clone)]
pub struct KeepaliveState {
    pub flow: Source,
    pub failures: u32,
    /// Client transaction of the OPTIONS keepalive in flight.
    pub outstanding: Option<u64>,
}

pub type FlowKey = (ListenerId, SocketAddr);

/// NATed UDP flows with registrations.
#[derive(Debug, Default)]
pub struct KeepaliveTable {
    pub flows: HashMap<FlowKey, KeepaliveState>,
}

impl KeepaliveTable {
    pub fn add(&mut self, flow: Source) {
        self.flows
            .entry((flow.listener, flow.remote))
            .or_insert(KeepaliveState {
                flow,
                failures: 0,
                outstanding: None,
            });
    }

    /// A keepalive was answered.
    pub fn answered(&mut self, key: &FlowKey) {
        if let Some(k) = self.flows.get_mut(key) {
            k.failures = 0;
            k.outstanding = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn req(via: &str, contact: &str, sdp_c: &str) -> SipMessage {
        let body = format!("v=0\r\nc=IN IP4 {sdp_c}\r\n");
        SipMessage::parse(Bytes::from(format!(
            "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{contact}>\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )))
        .unwrap()
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["100.128.0.1", "8.8.8.8", "203.0.113.5", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn nat_and_alg_detection() {
        let src: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        // Classic NAT: private Via and Contact, public source.
        let v = detect(
            &req("192.168.1.5:5060", "192.168.1.5:5060", "192.168.1.5"),
            src,
        );
        assert!(v.nated && !v.alg_suspected);
        // No NAT: everything says the source.
        let v = detect(
            &req("203.0.113.7:40001", "203.0.113.7:40001", "203.0.113.7"),
            src,
        );
        assert_eq!(v, NatVerdict::default());
        // ALG: Via rewritten to the public address, Contact left private.
        let v = detect(
            &req("203.0.113.7:40001", "192.168.1.5:5060", "203.0.113.7"),
            src,
        );
        assert!(v.nated && v.alg_suspected);
        // ALG: Via and Contact rewritten, SDP left private.
        let v = detect(
            &req("203.0.113.7:40001", "203.0.113.7:40001", "192.168.1.5"),
            src,
        );
        assert!(!v.nated && v.alg_suspected);
        // A LAN client talking to our private side is not NATed.
        let lan: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        let v = detect(&req("10.0.0.5:5060", "10.0.0.5:5060", "10.0.0.5"), lan);
        assert_eq!(v, NatVerdict::default());
    }
}
