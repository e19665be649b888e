//! Via header values (RFC 3261 20.42, 18.2.1, RFC 3581 rport).
//!
//! Owns [`Via`]: `sent-protocol LWS sent-by *(SEMI via-params)`, where white space is
//! allowed around the `/` of the protocol, around the `:` of sent-by and around `;`/`=`.

use crate::error::ParseError;
use crate::header::{is_lws, trim_lws};
use crate::method::is_token_char;
use crate::params::{find_semicolon, Params};
use crate::uri::{parse_port, valid_hostname};

/// One Via value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name and version as written ("SIP/2.0"; any white space around the `/`
    /// is kept as written).
    pub protocol: &'a str,
    /// Transport as written: "UDP", "TCP", "TLS", "WS", "WSS", "SCTP", ...
    pub transport: &'a str,
    /// sent-by host; IPv6 references keep their brackets (`"[::1]"`).
    pub host: &'a str,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// via-params.
    pub params: Params<'a>,
}

fn bad(reason: &'static str) -> ParseError {
    ParseError::BadHeaderValue {
        header: "Via",
        reason,
    }
}

fn skip_lws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_lws(b[i]) {
        i += 1;
    }
    i
}

fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_token_char(b[i]) {
        i += 1;
    }
    i
}

impl<'a> Via<'a> {
    /// Parses a single Via value (one element of a comma-separated Via line).
    pub fn parse(value: &'a str) -> Result<Via<'a>, ParseError> {
        let v = trim_lws(value);
        let b = v.as_bytes();
        // protocol-name
        let name_end = token_end(b, 0);
        if name_end == 0 {
            return Err(bad("missing protocol name"));
        }
        let mut i = skip_lws(b, name_end);
        if b.get(i) != Some(&b'/') {
            return Err(bad("missing '/' after protocol name"));
        }
        i = skip_lws(b, i + 1);
        let ver_start = i;
        let ver_end = token_end(b, ver_start);
        if ver_end == ver_start {
            return Err(bad("missing protocol version"));
        }
        let protocol = &v[..ver_end];
        i = skip_lws(b, ver_end);
        if b.get(i) != Some(&b'/') {
            return Err(bad("missing '/' before transport"));
        }
        i = skip_lws(b, i + 1);
        let tr_start = i;
        let tr_end = token_end(b, tr_start);
        if tr_end == tr_start {
            return Err(bad("missing transport"));
        }
        let transport = &v[tr_start..tr_end];
        let after = skip_lws(b, tr_end);
        if after == tr_end {
            return Err(bad("missing white space before sent-by"));
        }
        let rest = &v[after..];
        let (sent_by, params) = match find_semicolon(rest) {
            Some(sc) => (trim_lws(&rest[..sc]), &rest[sc..]),
            None => (trim_lws(rest), ""),
        };
        let (host, port_text) = if sent_by.starts_with('[') {
            let close = sent_by
                .find(']')
                .ok_or(bad("unterminated IPv6 reference"))?;
            let host = &sent_by[..=close];
            let inner = &host[1..host.len() - 1];
            if inner.is_empty()
                || !inner
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
            {
                return Err(bad("bad IPv6 reference"));
            }
            (host, trim_lws(&sent_by[close + 1..]))
        } else {
            let end = sent_by
                .bytes()
                .position(|c| c == b':' || is_lws(c))
                .unwrap_or(sent_by.len());
            let host = &sent_by[..end];
            if !valid_hostname(host) {
                return Err(bad("bad sent-by host"));
            }
            (host, trim_lws(&sent_by[end..]))
        };
        let port = if port_text.is_empty() {
            None
        } else {
            let p = port_text
                .strip_prefix(':')
                .ok_or(bad("unexpected text after sent-by host"))?;
            Some(parse_port(trim_lws(p)).ok_or(bad("bad sent-by port"))?)
        };
        Ok(Via {
            protocol,
            transport,
            host,
            port,
            params: Params::new(params),
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&str> {
        self.params.get("received").flatten()
    }

    /// `None`: no rport; `Some(None)`: `rport` without a value (or a value that is not a
    /// port); `Some(Some(p))`: `rport=p`.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| v.and_then(parse_port))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.get("maddr").flatten()
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<&str> {
        self.params.get("ttl").flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), None);
    }

    #[test]
    fn tortuous_white_space() {
        let v = Via::parse(
            "SIP  /   2.0  / UDP\r\n    192.0.2.2;branch=390skdjuw;rport=5070 ;received = 10.1.1.1",
        )
        .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.2");
        assert_eq!(v.port, None);
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert_eq!(v.rport(), Some(Some(5070)));
        assert_eq!(v.received(), Some("10.1.1.1"));
        let v = Via::parse("SIP/2.0/TCP [2001:db8::9:1] : 5061 ;maddr=x;ttl=1").unwrap();
        assert_eq!(v.host, "[2001:db8::9:1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.maddr(), Some("x"));
        assert_eq!(v.ttl(), Some("1"));
        assert_eq!(
            Via::parse("SIP/2.0/UDP my_pc.lan").unwrap().host,
            "my_pc.lan"
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host junk",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP ho/st",
            "SIP/2.0/UDP a..b",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?}");
        }
    }
}
