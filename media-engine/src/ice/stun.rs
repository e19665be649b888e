//! STUN message codec (RFC 8489) with the ICE attributes (RFC 8445 16.1): parse a message
//! into a borrowed view, verify MESSAGE-INTEGRITY (short-term credentials, HMAC-SHA1) and
//! FINGERPRINT, and build messages.
//!
//! Parsing never panics and never allocates; it checks the header, that the length matches,
//! that every attribute fits, and the attribute order rules (only FINGERPRINT may follow
//! MESSAGE-INTEGRITY; nothing may follow FINGERPRINT).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// The magic cookie (RFC 8489 5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// XORed into the CRC-32 of a FINGERPRINT attribute.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// STUN header length.
pub const HEADER_LEN: usize = 20;

/// Binding request message type.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Binding success response message type.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Binding error response message type.
pub const BINDING_ERROR: u16 = 0x0111;
/// Binding indication message type.
pub const BINDING_INDICATION: u16 = 0x0011;

/// Attribute types used here.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

/// Why bytes are not a well-formed STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("first two bits not zero")]
    NotStun,
    #[error("bad magic cookie")]
    BadCookie,
    #[error("message length {declared} does not match the {actual} bytes after the header")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("attribute at offset {offset} overruns the message")]
    AttributeOverrun { offset: usize },
    #[error("attribute {kind:#06x} after MESSAGE-INTEGRITY or FINGERPRINT")]
    AttributeAfterIntegrity { kind: u16 },
    #[error("malformed {kind:#06x} attribute")]
    BadAttribute { kind: u16 },
}

/// True if `buf` looks like STUN (RFC 7983 first-byte demux plus the magic cookie).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && buf[0] < 4
        && u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) == MAGIC_COOKIE
}

/// A parsed STUN message borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct StunMessage<'a> {
    raw: &'a [u8],
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_at: Option<usize>,
    /// Offset of the FINGERPRINT attribute header, if present.
    fingerprint_at: Option<usize>,
}

impl<'a> StunMessage<'a> {
    /// Parses and structurally validates a message.
    pub fn parse(raw: &'a [u8]) -> Result<Self, StunError> {
        if raw.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        if raw[0] & 0xc0 != 0 {
            return Err(StunError::NotStun);
        }
        if u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) != MAGIC_COOKIE {
            return Err(StunError::BadCookie);
        }
        let declared = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if declared % 4 != 0 || HEADER_LEN + declared != raw.len() {
            return Err(StunError::LengthMismatch {
                declared,
                actual: raw.len() - HEADER_LEN,
            });
        }
        let mut integrity_at = None;
        let mut fingerprint_at = None;
        let mut off = HEADER_LEN;
        while off < raw.len() {
            if off + 4 > raw.len() {
                return Err(StunError::AttributeOverrun { offset: off });
            }
            let kind = u16::from_be_bytes([raw[off], raw[off + 1]]);
            let len = usize::from(u16::from_be_bytes([raw[off + 2], raw[off + 3]]));
            let padded = (len + 3) & !3;
            if off + 4 + padded > raw.len() {
                return Err(StunError::AttributeOverrun { offset: off });
            }
            if fingerprint_at.is_some() {
                return Err(StunError::AttributeAfterIntegrity { kind });
            }
            match kind {
                attr::MESSAGE_INTEGRITY => {
                    if integrity_at.is_some() {
                        return Err(StunError::AttributeAfterIntegrity { kind });
                    }
                    if len != 20 {
                        return Err(StunError::BadAttribute { kind });
                    }
                    integrity_at = Some(off);
                }
                attr::FINGERPRINT => {
                    if len != 4 {
                        return Err(StunError::BadAttribute { kind });
                    }
                    fingerprint_at = Some(off);
                }
                // RFC 8489 14.6: attributes after MESSAGE-INTEGRITY other than FINGERPRINT
                // (and MESSAGE-INTEGRITY-SHA256) are ignored by receivers; we reject them to
                // keep the integrity-covered region unambiguous.
                attr::MESSAGE_INTEGRITY_SHA256 => {}
                _ if integrity_at.is_some() => {
                    return Err(StunError::AttributeAfterIntegrity { kind });
                }
                _ => {}
            }
            off += 4 + padded;
        }
        Ok(Self {
            raw,
            integrity_at,
            fingerprint_at,
        })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Message type (method and class).
    pub fn message_type(&self) -> u16 {
        u16::from_be_bytes([self.raw[0], self.raw[1]])
    }

    /// Transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut t = [0u8; 12];
        t.copy_from_slice(&self.raw[8..20]);
        t
    }

    /// Iterates over (type, value) of every attribute, in order.
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let raw = self.raw;
        let mut off = HEADER_LEN;
        std::iter::from_fn(move || {
            // `parse` checked every attribute fits; `get` keeps this panic-free anyway.
            let head = raw.get(off..off + 4)?;
            let kind = u16::from_be_bytes([head[0], head[1]]);
            let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
            let value = raw.get(off + 4..off + 4 + len)?;
            off += 4 + ((len + 3) & !3);
            Some((kind, value))
        })
    }

    /// First attribute of a type.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(k, _)| *k == kind).map(|(_, v)| v)
    }

    /// USERNAME, if present and UTF-8.
    pub fn username(&self) -> Option<&'a str> {
        self.attribute(attr::USERNAME)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// PRIORITY, if present and well-formed.
    pub fn priority(&self) -> Option<u32> {
        let v: [u8; 4] = self.attribute(attr::PRIORITY)?.try_into().ok()?;
        Some(u32::from_be_bytes(v))
    }

    /// Whether USE-CANDIDATE is present.
    pub fn use_candidate(&self) -> bool {
        self.attribute(attr::USE_CANDIDATE).is_some()
    }

    /// ICE-CONTROLLING tie-breaker, if present.
    pub fn ice_controlling(&self) -> Option<u64> {
        let v: [u8; 8] = self.attribute(attr::ICE_CONTROLLING)?.try_into().ok()?;
        Some(u64::from_be_bytes(v))
    }

    /// ICE-CONTROLLED tie-breaker, if present.
    pub fn ice_controlled(&self) -> Option<u64> {
        let v: [u8; 8] = self.attribute(attr::ICE_CONTROLLED)?.try_into().ok()?;
        Some(u64::from_be_bytes(v))
    }

    /// XOR-MAPPED-ADDRESS, if present and well-formed.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let v = self.attribute(attr::XOR_MAPPED_ADDRESS)?;
        decode_xor_address(v, &self.transaction_id())
    }

    /// ERROR-CODE as (code, reason), if present and well-formed.
    pub fn error_code(&self) -> Option<(u16, &'a str)> {
        let v = self.attribute(attr::ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        Some((code, std::str::from_utf8(&v[4..]).unwrap_or("")))
    }

    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Whether FINGERPRINT is present.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_at.is_some()
    }

    /// Verifies MESSAGE-INTEGRITY with a short-term credential key (the password bytes).
    /// False when absent or wrong.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        self.verify_integrity_with(&IntegrityKey::new(key))
    }

    /// Verifies MESSAGE-INTEGRITY with a prepared key.
    pub fn verify_integrity_with(&self, key: &IntegrityKey) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(expected) = self.raw.get(at + 4..at + 24) else {
            return false;
        };
        let mac = key.mac(self.raw, at);
        bool::from(mac.ct_eq(expected))
    }

    /// Verifies FINGERPRINT. False when absent or wrong.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(at) = self.fingerprint_at else {
            return false;
        };
        let Some(v) = self.raw.get(at + 4..at + 8) else {
            return false;
        };
        let got = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        // FINGERPRINT is last, so the header length already covers it.
        crc32fast::hash(&self.raw[..at]) ^ FINGERPRINT_XOR == got
    }
}

/// A short-term credential key (the ICE password) with its HMAC pads precomputed.
#[derive(Clone)]
pub struct IntegrityKey {
    keyed: Hmac<Sha1>,
}

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(<redacted>)")
    }
}

impl IntegrityKey {
    /// Keys HMAC-SHA1 with `key` (for short-term credentials: the password bytes).
    pub fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length; the fallback is unreachable.
        let keyed = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha1> as KeyInit>::new(&Default::default()));
        Self { keyed }
    }

    /// HMAC-SHA1 over the message up to the attribute at `mi_at`, with the header length set
    /// as if MESSAGE-INTEGRITY were the last attribute (RFC 8489 14.5).
    fn mac(&self, raw: &[u8], mi_at: usize) -> [u8; 20] {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&raw[..HEADER_LEN]);
        let len = (mi_at + 24 - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = self.keyed.clone();
        mac.update(&header);
        mac.update(&raw[HEADER_LEN..mi_at]);
        let out = mac.finalize().into_bytes();
        let mut r = [0u8; 20];
        r.copy_from_slice(&out);
        r
    }
}

fn decode_xor_address(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match (v[1], v.len()) {
        (0x01, 8) => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = v[4 + i] ^ cookie[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        (0x02, 20) => {
            let mut a = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                a[i] = v[4 + i] ^ k;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

fn encode_xor_address(addr: SocketAddr, txid: &[u8; 12], out: &mut Vec<u8>) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    // An IPv4 peer seen on a dual-stack socket is answered with its IPv4 address.
    let ip = match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            out.extend_from_slice(&[0, 0x01]);
            out.extend_from_slice(&port.to_be_bytes());
            for (b, k) in v4.octets().iter().zip(cookie) {
                out.push(b ^ k);
            }
        }
        IpAddr::V6(v6) => {
            out.extend_from_slice(&[0, 0x02]);
            out.extend_from_slice(&port.to_be_bytes());
            for (i, b) in v6.octets().iter().enumerate() {
                let k = if i < 4 { cookie[i] } else { txid[i - 4] };
                out.push(b ^ k);
            }
        }
    }
}

/// Builds a STUN message attribute by attribute.
#[derive(Debug, Clone)]
pub struct StunMessageBuilder {
    buf: Vec<u8>,
    txid: [u8; 12],
    padding: u8,
}

impl StunMessageBuilder {
    /// A message of `message_type` with transaction ID `txid`.
    pub fn new(message_type: u16, txid: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&txid);
        Self {
            buf,
            txid,
            padding: 0,
        }
    }

    /// A Binding request.
    pub fn binding_request(txid: [u8; 12]) -> Self {
        Self::new(BINDING_REQUEST, txid)
    }

    /// A Binding success response.
    pub fn binding_success(txid: [u8; 12]) -> Self {
        Self::new(BINDING_SUCCESS, txid)
    }

    /// Byte used to pad attribute values to 4 bytes (default 0; RFC 5769 samples use 0x20).
    pub fn padding(mut self, byte: u8) -> Self {
        self.padding = byte;
        self
    }

    /// Appends an attribute with a raw value (values over 65535 bytes are truncated).
    pub fn attribute(mut self, kind: u16, value: &[u8]) -> Self {
        let value = &value[..value.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(self.padding, pad));
        self
    }

    /// USERNAME.
    pub fn username(self, username: &str) -> Self {
        self.attribute(attr::USERNAME, username.as_bytes())
    }

    /// SOFTWARE.
    pub fn software(self, software: &str) -> Self {
        self.attribute(attr::SOFTWARE, software.as_bytes())
    }

    /// PRIORITY.
    pub fn priority(self, priority: u32) -> Self {
        self.attribute(attr::PRIORITY, &priority.to_be_bytes())
    }

    /// USE-CANDIDATE.
    pub fn use_candidate(self) -> Self {
        self.attribute(attr::USE_CANDIDATE, &[])
    }

    /// ICE-CONTROLLING.
    pub fn ice_controlling(self, tie_breaker: u64) -> Self {
        self.attribute(attr::ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// ICE-CONTROLLED.
    pub fn ice_controlled(self, tie_breaker: u64) -> Self {
        self.attribute(attr::ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// XOR-MAPPED-ADDRESS.
    pub fn xor_mapped_address(self, addr: SocketAddr) -> Self {
        let mut v = Vec::with_capacity(20);
        encode_xor_address(addr, &self.txid, &mut v);
        self.attribute(attr::XOR_MAPPED_ADDRESS, &v)
    }

    /// ERROR-CODE.
    pub fn error_code(self, code: u16, reason: &str) -> Self {
        let mut v = vec![0, 0, ((code / 100) & 0x07) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attribute(attr::ERROR_CODE, &v)
    }

    fn set_length(&mut self, extra: usize) {
        let len = (self.buf.len() + extra - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` (short-term: the password).
    pub fn message_integrity(self, key: &[u8]) -> Self {
        self.message_integrity_with(&IntegrityKey::new(key))
    }

    /// Appends MESSAGE-INTEGRITY with a prepared key.
    pub fn message_integrity_with(mut self, key: &IntegrityKey) -> Self {
        let at = self.buf.len();
        let mac = key.mac(&self.buf, at);
        self.buf
            .extend_from_slice(&attr::MESSAGE_INTEGRITY.to_be_bytes());
        self.buf.extend_from_slice(&20u16.to_be_bytes());
        self.buf.extend_from_slice(&mac);
        self
    }

    /// Appends FINGERPRINT (must be the last attribute).
    pub fn fingerprint(mut self) -> Self {
        self.set_length(8);
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        self.buf.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self
    }

    /// The message bytes (length field set).
    pub fn build(mut self) -> Vec<u8> {
        self.set_length(0);
        self.buf
    }

    /// MESSAGE-INTEGRITY, FINGERPRINT, then the bytes.
    pub fn build_with_integrity(self, key: &[u8]) -> Vec<u8> {
        self.message_integrity(key).fingerprint().build()
    }

    /// MESSAGE-INTEGRITY with a prepared key, FINGERPRINT, then the bytes.
    pub fn build_with_integrity_key(self, key: &IntegrityKey) -> Vec<u8> {
        self.message_integrity_with(key).fingerprint().build()
    }
}
