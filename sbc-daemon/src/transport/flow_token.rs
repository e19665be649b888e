//! Flow tokens: a stateless, tamper-proof encoding of a flow (listener, transport, remote
//! address, connection) that the SBC puts into URIs it owns (Record-Route, registered
//! Contacts, Path) so that a later request can be delivered over the same flow (RFC 5626
//! style), whatever the peer's Contact says. The token is hex of the flow fields followed by
//! a truncated HMAC-SHA256 under a per-process key, so a forged or altered token is
//! rejected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{ConnId, ListenerId, Source, Transport};

/// Encodes and verifies flow tokens. Encodings are cached per flow (the HMAC is the
/// expensive part and the same few flows ask again and again).
#[derive(Clone)]
pub struct FlowTokens {
    key: [u8; 32],
    cache: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Source, String>>>,
}

/// Flows whose token is remembered; the cache is emptied when it grows past this.
const CACHE_LIMIT: usize = 65_536;

impl std::fmt::Debug for FlowTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowTokens(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Udp => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    }
}

fn transport_from(c: u8) -> Option<Transport> {
    Some(match c {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        2 => Transport::Tls,
        3 => Transport::Ws,
        4 => Transport::Wss,
        _ => return None,
    })
}

impl FlowTokens {
    pub fn new(key: [u8; 32]) -> Self {
        FlowTokens {
            key,
            cache: Default::default(),
        }
    }

    /// A key from the OS random generator.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        for b in key.iter_mut() {
            *b = rand::random();
        }
        FlowTokens::new(key)
    }

    fn mac(&self, data: &[u8]) -> [u8; 8] {
        let mut out = [0u8; 8];
        if let Ok(mut m) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) {
            m.update(data);
            let full = m.finalize().into_bytes();
            out.copy_from_slice(&full[..8]);
        }
        out
    }

    /// The token of a flow (lower-case hex, safe in a URI user part or parameter).
    pub fn encode(&self, src: &Source) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(src) {
            return t.clone();
        }
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let t = self.compute(src);
        cache.insert(*src, t.clone());
        t
    }

    fn compute(&self, src: &Source) -> String {
        let mut data = Vec::with_capacity(40);
        data.extend_from_slice(&(src.listener.0 as u16).to_be_bytes());
        data.push(transport_code(src.transport));
        match src.remote.ip() {
            IpAddr::V4(v4) => {
                data.push(4);
                data.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                data.push(6);
                data.extend_from_slice(&v6.octets());
            }
        }
        data.extend_from_slice(&src.remote.port().to_be_bytes());
        data.extend_from_slice(&src.conn.map(|c| c.0).unwrap_or(0).to_be_bytes());
        let mac = self.mac(&data);
        let mut s = String::with_capacity(2 * (data.len() + 8));
        push_hex(&mut s, &data);
        push_hex(&mut s, &mac);
        s
    }

    /// The flow a token designates, if the token is ours and intact.
    pub fn decode(&self, token: &str) -> Option<Source> {
        let bytes = from_hex(token)?;
        if bytes.len() < 8 + 4 {
            return None;
        }
        let (data, mac) = bytes.split_at(bytes.len() - 8);
        let expected = self.mac(data);
        if expected.iter().zip(mac).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
            return None;
        }
        let listener = ListenerId(usize::from(u16::from_be_bytes([data[0], data[1]])));
        let transport = transport_from(data[2])?;
        let (ip, rest): (IpAddr, &[u8]) = match data[3] {
            4 if data.len() == 4 + 4 + 2 + 8 => {
                let o: [u8; 4] = data[4..8].try_into().ok()?;
                (IpAddr::V4(Ipv4Addr::from(o)), &data[8..])
            }
            6 if data.len() == 4 + 16 + 2 + 8 => {
                let o: [u8; 16] = data[4..20].try_into().ok()?;
                (IpAddr::V6(Ipv6Addr::from(o)), &data[20..])
            }
            _ => return None,
        };
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let conn = u64::from_be_bytes(rest[2..10].try_into().ok()?);
        Some(Source {
            listener,
            transport,
            remote: SocketAddr::new(ip, port),
            conn: (conn != 0).then_some(ConnId(conn)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let t = FlowTokens::new([7; 32]);
        for src in [
            Source {
                listener: ListenerId(3),
                transport: Transport::Udp,
                remote: "203.0.113.9:40000".parse().unwrap(),
                conn: None,
            },
            Source {
                listener: ListenerId(1),
                transport: Transport::Tcp,
                remote: "[2001:db8::1]:5060".parse().unwrap(),
                conn: Some(ConnId(99)),
            },
        ] {
            let tok = t.encode(&src);
            assert!(tok.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(t.decode(&tok), Some(src));
            // Flip one character: rejected.
            let mut bad = tok.clone().into_bytes();
            bad[5] = if bad[5] == b'0' { b'1' } else { b'0' };
            assert_eq!(t.decode(std::str::from_utf8(&bad).unwrap()), None);
            // Another key: rejected.
            assert_eq!(FlowTokens::new([8; 32]).decode(&tok), None);
        }
        for junk in ["", "zz", "00", "0123456789abcdef0123456789", "pc1234"] {
            assert_eq!(t.decode(junk), None);
        }
    }
}
