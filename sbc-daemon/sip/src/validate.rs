//! Semantic checks a proxy applies before acting on a message (RFC 3261 8.2.1-8.2.2,
//! 16.3 "Request Validation", 8.1.3.3 for responses, 7.3.1 singleton headers).
//!
//! [`SipMessage::parse`] is deliberately lazy; these functions are where the RFC 4475
//! messages that are syntactically framed but semantically broken get rejected (missing
//! or duplicated mandatory headers, CSeq method mismatch, malformed typed values,
//! unsupported SIP version, bad Request-URI). CSeq *number* matching for ACK/CANCEL
//! belongs to the transaction layer.

use crate::error::ParseError;
use crate::header::{trim_lws, HeaderName};
use crate::message::SipMessage;
use crate::method::is_token;
use crate::params::{params_well_formed, Params};
use crate::uri::{check_request_uri, SipUri};

/// Headers that must appear at most once (RFC 3261 7.3.1: only list headers may repeat).
const SINGLETONS: [HeaderName; 7] = [
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::ContentType,
    HeaderName::Expires,
];

/// `type "/" subtype *(SEMI m-parameter)` (RFC 3261 20.15).
fn check_media_type(v: &str) -> Result<(), ParseError> {
    let bad = ParseError::BadHeaderValue {
        header: "Content-Type",
        reason: "not type/subtype[;params]",
    };
    let v = trim_lws(v);
    let (mt, params) = match crate::params::find_semicolon(v) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let (ty, sub) = mt.split_once('/').ok_or(bad.clone())?;
    if !is_token(trim_lws(ty)) || !is_token(trim_lws(sub)) {
        return Err(bad);
    }
    if !params_well_formed(&Params::new(params)) {
        return Err(bad);
    }
    Ok(())
}

/// RFC 3261 20.17: `SIP-date = rfc1123-date`, which is always in GMT:
/// `wkday "," SP 2DIGIT SP month SP 4DIGIT SP 2DIGIT ":" 2DIGIT ":" 2DIGIT SP "GMT"`.
fn check_sip_date(v: &str) -> Result<(), ParseError> {
    let bad = ParseError::BadHeaderValue {
        header: "Date",
        reason: "not an RFC 1123 date in GMT",
    };
    let v = trim_lws(v);
    let b = v.as_bytes();
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let ok = b.len() == 29
        && v.is_ascii()
        && DAYS.contains(&&v[..3])
        && &v[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &v[25..] == " GMT";
    if ok {
        Ok(())
    } else {
        Err(bad)
    }
}

impl SipMessage {
    fn check_common(&self) -> Result<(), ParseError> {
        if !self.version().eq_ignore_ascii_case("SIP/2.0") {
            return Err(ParseError::BadVersion);
        }
        for name in SINGLETONS {
            if self.lines.iter().filter(|l| l.name() == name).count() > 1 {
                return Err(ParseError::DuplicateHeader(name.as_str()));
            }
        }
        let vias = self.vias()?;
        if vias.is_empty() {
            return Err(ParseError::MissingHeader("Via"));
        }
        for v in &vias {
            if !params_well_formed(&v.params) {
                return Err(ParseError::BadHeaderValue {
                    header: "Via",
                    reason: "malformed via-params",
                });
            }
        }
        for na in [self.from()?, self.to()?] {
            na.parse_uri_lenient()?;
            if !params_well_formed(&na.params) {
                return Err(ParseError::BadHeaderValue {
                    header: "From/To",
                    reason: "malformed header parameters",
                });
            }
        }
        self.call_id()?;
        self.cseq()?;
        self.max_forwards()?;
        self.expires()?;
        self.content_length()?;
        if let Some(ct) = self.content_type() {
            check_media_type(ct)?;
        }
        for c in self.contacts()? {
            if let crate::Contact::Addr(na) = c {
                na.parse_uri_lenient()?;
                if !params_well_formed(&na.params) {
                    return Err(ParseError::BadHeaderValue {
                        header: "Contact",
                        reason: "malformed contact-params",
                    });
                }
                if let Some(e) = na.params.get("expires") {
                    let ok = e.and_then(|e| crate::header::parse_decimal(e, u64::from(u32::MAX)));
                    if ok.is_none() {
                        return Err(ParseError::BadHeaderValue {
                            header: "Contact",
                            reason: "expires parameter out of range",
                        });
                    }
                }
            }
        }
        self.routes()?;
        self.record_routes()?;
        if let (Some(declared), actual) = (self.content_length()?, self.body().len()) {
            if declared != actual {
                return Err(ParseError::ContentLengthMismatch { declared, actual });
            }
        }
        Ok(())
    }

    /// Checks the Date header, if present, against RFC 3261 20.17 (`rfc1123-date` in
    /// GMT). Not part of [`Self::validate_request`]: RFC 4475 3.1.2.12 advises elements
    /// that do not use Date not to reject a message for it; call this where Date matters.
    pub fn validate_date(&self) -> Result<(), ParseError> {
        match self.header_by_name("Date") {
            Some(date) => check_sip_date(date),
            None => Ok(()),
        }
    }

    /// RFC 3261 8.2 / 16.3 request validation: SIP/2.0, a valid Request-URI, mandatory
    /// To/From/CSeq/Call-ID/Via present and well-formed, singletons not repeated, CSeq
    /// method equal to the request method, numeric headers in range, Content-Length
    /// consistent with the body.
    pub fn validate_request(&self) -> Result<(), ParseError> {
        let method = self.method().ok_or(ParseError::BadStartLine)?;
        let ruri = self.request_uri().unwrap_or("");
        check_request_uri(ruri)?;
        // RFC 3261 19.1.1 Table 1: URI headers are not allowed in a Request-URI.
        if let Ok(u) = SipUri::parse(ruri) {
            if u.headers.is_some() {
                return Err(ParseError::BadRequestUri(
                    "headers not allowed in Request-URI",
                ));
            }
        }
        self.check_common()?;
        if &self.cseq()?.method != method {
            return Err(ParseError::CSeqMethodMismatch);
        }
        Ok(())
    }

    /// Response validation: SIP/2.0, mandatory To/From/CSeq/Call-ID/Via present and
    /// well-formed, singletons not repeated, Content-Length consistent.
    pub fn validate_response(&self) -> Result<(), ParseError> {
        if self.status().is_none() {
            return Err(ParseError::BadStartLine);
        }
        self.check_common()
    }
}

impl crate::NameAddr<'_> {
    /// sip/sips/tel URIs must parse; other absolute URIs only need a valid shape.
    fn parse_uri_lenient(&self) -> Result<(), ParseError> {
        check_request_uri(self.uri).map_err(|e| match e {
            ParseError::BadRequestUri(r) => ParseError::BadUri(r),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn m(s: &str) -> SipMessage {
        SipMessage::parse(Bytes::from(s.to_owned())).unwrap()
    }

    const OK: &str = "OPTIONS sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\nTo: <sip:b@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn valid_request_passes() {
        assert_eq!(m(OK).validate_request(), Ok(()));
        assert_eq!(m(OK).validate_response(), Err(ParseError::BadStartLine));
    }

    #[test]
    fn semantic_failures() {
        let cases = [
            (
                OK.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
                ParseError::CSeqMethodMismatch,
            ),
            (
                OK.replace("Call-ID: x\r\n", ""),
                ParseError::MissingHeader("Call-ID"),
            ),
            (
                OK.replace("Call-ID: x\r\n", "Call-ID: x\r\ni: y\r\n"),
                ParseError::DuplicateHeader("Call-ID"),
            ),
            (
                OK.replace("SIP/2.0\r\n", "SIP/7.0\r\n"),
                ParseError::BadVersion,
            ),
            (
                OK.replace("Content-Length: 0\r\n", "Content-Type: application\r\n"),
                ParseError::BadHeaderValue {
                    header: "Content-Type",
                    reason: "not type/subtype[;params]",
                },
            ),
        ];
        for (text, err) in cases {
            assert_eq!(m(&text).validate_request(), Err(err), "{text}");
        }
    }

    #[test]
    fn dates() {
        assert!(check_sip_date("Sat, 15 Oct 2005 04:44:56 GMT").is_ok());
        assert!(check_sip_date("Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(check_sip_date("Fri, 01 Jan 2010 16:00:00 GMT ").is_ok());
        assert!(check_sip_date("Frx, 01 Jan 2010 16:00:00 GMT").is_err());
        assert!(check_sip_date(
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}x"
        )
        .is_err());
    }

    #[test]
    fn response_validation() {
        let r = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\nTo: <sip:b@example.com>;tag=2\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(m(r).validate_response(), Ok(()));
        assert_eq!(
            m(&r.replace("CSeq: 1 OPTIONS\r\n", "")).validate_response(),
            Err(ParseError::MissingHeader("CSeq"))
        );
    }
}
