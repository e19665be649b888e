//! SIP digest authentication (RFC 3261 22, RFC 7616 digest computations, RFC 8760 SHA-256
//! for SIP), sans-IO: challenges to put in `WWW-Authenticate`, verification of
//! `Authorization` headers. Time is passed in (seconds since the Unix epoch).
//!
//! Nonces are stateless: `<timestamp hex>.<HMAC-SHA256(secret, timestamp) hex>`, so any
//! nonce we issued can be checked without storing it; an expired one gives `stale=true`.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest algorithms offered, strongest first (RFC 8760 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }
    fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else {
            None
        }
    }
    fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Sha256 => to_hex(&Sha256::digest(data.as_bytes())),
            Algorithm::Md5 => to_hex(&Md5::digest(data.as_bytes())),
        }
    }
}

fn to_hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

/// Outcome of checking an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Credentials valid for this user.
    Authorized(String),
    /// The nonce was ours but expired: challenge again with `stale=true`.
    Stale,
    /// Wrong password, unknown user, foreign realm, forged nonce or malformed header.
    Rejected(&'static str),
}

/// Digest authenticator for one realm.
pub struct DigestAuth {
    realm: String,
    secret: Vec<u8>,
    users: HashMap<String, String>,
    nonce_ttl_s: u64,
    /// Algorithms offered and accepted, in order of preference.
    algorithms: Vec<Algorithm>,
}

impl DigestAuth {
    pub fn new(
        realm: &str,
        users: HashMap<String, String>,
        secret: Vec<u8>,
        nonce_ttl_s: u64,
    ) -> Self {
        DigestAuth {
            realm: realm.to_string(),
            secret,
            users,
            nonce_ttl_s,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    /// Offers (and accepts) only these algorithms, in this order of preference.
    pub fn with_algorithms(mut self, names: &[String]) -> Self {
        let algs: Vec<Algorithm> = names.iter().filter_map(|n| Algorithm::parse(n)).collect();
        if !algs.is_empty() {
            self.algorithms = algs;
        }
        self
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn nonce_mac(&self, ts: u64) -> String {
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret) {
            Ok(m) => m,
            // HMAC accepts keys of any length; this arm cannot be reached.
            Err(_) => return String::new(),
        };
        mac.update(&ts.to_be_bytes());
        to_hex(&mac.finalize().into_bytes())[..32].to_string()
    }

    /// A fresh nonce for time `now`.
    pub fn nonce(&self, now: u64) -> String {
        format!("{now:x}.{}", self.nonce_mac(now))
    }

    /// `WWW-Authenticate` values, SHA-256 first then MD5 (RFC 8760 2.4).
    pub fn challenges(&self, now: u64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    nonce,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks an `Authorization` value for a request with `method`.
    pub fn verify(&self, now: u64, method: &str, header: &str) -> AuthOutcome {
        let Some(p) = parse_credentials(header) else {
            return AuthOutcome::Rejected("malformed Authorization");
        };
        let get = |k: &str| p.get(k).map(String::as_str);
        let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) = (
            get("username"),
            get("realm"),
            get("nonce"),
            get("uri"),
            get("response"),
        ) else {
            return AuthOutcome::Rejected("missing digest parameter");
        };
        if realm != self.realm {
            return AuthOutcome::Rejected("foreign realm");
        }
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(a) {
                Some(a) => a,
                None => return AuthOutcome::Rejected("unsupported algorithm"),
            },
        };
        if !self.algorithms.contains(&algorithm) {
            return AuthOutcome::Rejected("algorithm not offered");
        }
        // Our nonce?
        let Some((ts_hex, mac)) = nonce.split_once('.') else {
            return AuthOutcome::Rejected("foreign nonce");
        };
        let Ok(ts) = u64::from_str_radix(ts_hex, 16) else {
            return AuthOutcome::Rejected("foreign nonce");
        };
        if !constant_time_eq(mac.as_bytes(), self.nonce_mac(ts).as_bytes()) {
            return AuthOutcome::Rejected("foreign nonce");
        }
        let Some(password) = self.users.get(username) else {
            return AuthOutcome::Rejected("unknown user");
        };
        let ha1 = algorithm.hash_hex(&format!("{username}:{realm}:{password}"));
        let ha2 = algorithm.hash_hex(&format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return AuthOutcome::Rejected("qop without nc/cnonce");
                };
                algorithm.hash_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            Some(_) => return AuthOutcome::Rejected("unsupported qop"),
            None => algorithm.hash_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return AuthOutcome::Rejected("wrong credentials");
        }
        if now.saturating_sub(ts) > self.nonce_ttl_s || ts > now + 5 {
            return AuthOutcome::Stale;
        }
        AuthOutcome::Authorized(username.to_string())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses `Digest k=v, k="v", ...` into a map (keys lower-cased, quotes removed).
pub fn parse_credentials(header: &str) -> Option<HashMap<String, String>> {
    let rest = header.trim();
    let (scheme, rest) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = HashMap::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let key = rest[key_start..i].trim().to_ascii_lowercase();
        if i >= bytes.len() || bytes[i] != b'=' {
            return None;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut v = String::new();
            loop {
                if i >= bytes.len() {
                    return None;
                }
                match bytes[i] {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' if i + 1 < bytes.len() => {
                        v.push(bytes[i + 1] as char);
                        i += 2;
                    }
                    _ => {
                        let ch_len = rest[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                        v.push_str(&rest[i..i + ch_len]);
                        i += ch_len;
                    }
                }
            }
            v
        } else {
            let s = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            rest[s..i].trim().to_string()
        };
        if key.is_empty() {
            return None;
        }
        out.insert(key, value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> DigestAuth {
        let mut users = HashMap::new();
        users.insert("alice".to_string(), "secret".to_string());
        DigestAuth::new("example.com", users, b"k".to_vec(), 300)
    }

    /// What a UA computes (RFC 7616 3.4.1).
    fn ua_response(alg: Algorithm, nonce: &str, password: &str, qop: bool) -> String {
        let ha1 = alg.hash_hex(&format!("alice:example.com:{password}"));
        let ha2 = alg.hash_hex("REGISTER:sip:example.com");
        let response = if qop {
            alg.hash_hex(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"))
        } else {
            alg.hash_hex(&format!("{ha1}:{nonce}:{ha2}"))
        };
        let q = if qop {
            ", qop=auth, nc=00000001, cnonce=\"abc\""
        } else {
            ""
        };
        format!(
            "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{response}\", algorithm={}{q}",
            alg.name()
        )
    }

    #[test]
    fn known_md5_vector() {
        // RFC 2617 3.5 style check of the hash primitive.
        assert_eq!(
            Algorithm::Md5.hash_hex(""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            Algorithm::Sha256.hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sha256_and_md5_with_and_without_qop() {
        let a = auth();
        let now = 1_800_000_000;
        let ch = a.challenges(now, false);
        assert!(ch[0].contains("algorithm=SHA-256"));
        assert!(ch[1].contains("algorithm=MD5"));
        let nonce = a.nonce(now);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            for qop in [true, false] {
                let h = ua_response(alg, &nonce, "secret", qop);
                assert_eq!(
                    a.verify(now + 10, "REGISTER", &h),
                    AuthOutcome::Authorized("alice".into()),
                    "{h}"
                );
            }
        }
    }

    #[test]
    fn wrong_password_forged_nonce_and_stale() {
        let a = auth();
        let now = 1_800_000_000;
        let nonce = a.nonce(now);
        let bad = ua_response(Algorithm::Sha256, &nonce, "wrong", true);
        assert_eq!(
            a.verify(now, "REGISTER", &bad),
            AuthOutcome::Rejected("wrong credentials")
        );
        let forged = ua_response(
            Algorithm::Sha256,
            "6b49d200.00000000000000000000000000000000",
            "secret",
            true,
        );
        assert_eq!(
            a.verify(now, "REGISTER", &forged),
            AuthOutcome::Rejected("foreign nonce")
        );
        let h = ua_response(Algorithm::Sha256, &nonce, "secret", true);
        assert_eq!(a.verify(now + 301, "REGISTER", &h), AuthOutcome::Stale);
        assert!(matches!(
            a.verify(now, "REGISTER", "Basic abc"),
            AuthOutcome::Rejected(_)
        ));
        assert!(matches!(
            a.verify(now, "REGISTER", "Digest username=\"x"),
            AuthOutcome::Rejected(_)
        ));
    }
}
