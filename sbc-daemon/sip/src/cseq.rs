//! The CSeq header (RFC 3261 20.16, 8.1.1.5): sequence number and method.

use crate::error::ParseError;
use crate::header::{is_lws, parse_decimal, trim_lws};
use crate::method::{is_token, Method};

/// A parsed CSeq value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// Sequence number; RFC 3261 8.1.1.5 requires it to be below 2^31.
    pub seq: u32,
    /// Method token.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(value: &str) -> Result<CSeq, ParseError> {
        let bad = |reason| ParseError::BadHeaderValue {
            header: "CSeq",
            reason,
        };
        let v = trim_lws(value);
        let split = v.bytes().position(is_lws).ok_or(bad("missing method"))?;
        let seq = parse_decimal(&v[..split], (1u64 << 31) - 1)
            .ok_or(bad("sequence number not a decimal below 2^31"))?;
        let method = trim_lws(&v[split..]);
        if !is_token(method) {
            return Err(bad("method is not a token"));
        }
        Ok(CSeq {
            seq: u32::try_from(seq).map_err(|_| bad("sequence number too large"))?,
            method: Method::parse(method),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            CSeq::parse(" 0009\r\n  INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse("2147483647 ACK").unwrap().seq, 2147483647);
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "1",
            "INVITE",
            "2147483648 INVITE",
            "36893488147419103232 INVITE",
            "1 INV ITE",
            "-1 BYE",
        ] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?}");
        }
    }
}
