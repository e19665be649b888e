//! Messages the proxy generates itself: responses to requests it answers locally
//! (RFC 3261 8.2.6), the ACK for a non-2xx final response (17.1.1.3) and CANCEL (9.1).

use std::fmt::Write as _;

use bytes::Bytes;
use portcullis_sip::{HeaderName, SipMessage};

/// Standard reason phrase for status codes the proxy generates.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// Builds a response to `req` (RFC 3261 8.2.6.2): Via (all values, as received including
/// received/rport), From, To (with `to_tag` added when the To has none and the status is not
/// 100), Call-ID and CSeq copied; `extra` headers (name, value) appended.
pub fn response(
    req: &SipMessage,
    code: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
    server: &str,
    extra: &[(&str, &str)],
) -> Bytes {
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "SIP/2.0 {} {}\r\n",
        code,
        reason.unwrap_or(reason_phrase(code))
    );
    for h in req.headers() {
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                let _ = write!(out, "{}: {}\r\n", h.name.as_str(), h.value);
            }
            HeaderName::To => {
                let has_tag = req.to().map(|t| t.tag().is_some()).unwrap_or(false);
                match to_tag {
                    Some(tag) if !has_tag && code > 100 => {
                        let _ = write!(out, "To: {};tag={}\r\n", h.value, tag);
                    }
                    _ => {
                        let _ = write!(out, "To: {}\r\n", h.value);
                    }
                }
            }
            _ => {}
        }
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !server.is_empty() {
        let _ = write!(out, "Server: {server}\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(out)
}

/// Builds the ACK for a non-2xx final response to the INVITE `invite` we sent (17.1.1.3):
/// same Request-URI, top Via, Route, From, Call-ID and CSeq number as the INVITE, To from the
/// response.
pub fn ack_for_non_2xx(invite: &SipMessage, resp: &SipMessage) -> Option<Bytes> {
    let ruri = invite.request_uri()?;
    let cseq = invite.cseq().ok()?;
    let mut out = String::with_capacity(512);
    let _ = write!(out, "ACK {ruri} SIP/2.0\r\n");
    let via = invite.header_values(HeaderName::Via);
    let _ = write!(out, "Via: {}\r\n", via.first()?);
    out.push_str("Max-Forwards: 70\r\n");
    for r in invite.header_values(HeaderName::Route) {
        let _ = write!(out, "Route: {r}\r\n");
    }
    let _ = write!(out, "From: {}\r\n", invite.header(HeaderName::From)?);
    let _ = write!(out, "To: {}\r\n", resp.header(HeaderName::To)?);
    let _ = write!(out, "Call-ID: {}\r\n", invite.call_id().ok()?);
    let _ = write!(out, "CSeq: {} ACK\r\nContent-Length: 0\r\n\r\n", cseq.seq);
    Some(Bytes::from(out))
}

/// Builds a CANCEL for the INVITE `invite` we sent (9.1): same Request-URI, top Via (so the
/// same branch), Route, From, To, Call-ID and CSeq number.
pub fn cancel_for(invite: &SipMessage, server: &str) -> Option<Bytes> {
    let ruri = invite.request_uri()?;
    let cseq = invite.cseq().ok()?;
    let mut out = String::with_capacity(512);
    let _ = write!(out, "CANCEL {ruri} SIP/2.0\r\n");
    let via = invite.header_values(HeaderName::Via);
    let _ = write!(out, "Via: {}\r\n", via.first()?);
    out.push_str("Max-Forwards: 70\r\n");
    for r in invite.header_values(HeaderName::Route) {
        let _ = write!(out, "Route: {r}\r\n");
    }
    let _ = write!(out, "From: {}\r\n", invite.header(HeaderName::From)?);
    let _ = write!(out, "To: {}\r\n", invite.header(HeaderName::To)?);
    let _ = write!(out, "Call-ID: {}\r\n", invite.call_id().ok()?);
    let _ = write!(out, "CSeq: {} CANCEL\r\n", cseq.seq);
    if !server.is_empty() {
        let _ = write!(out, "User-Agent: {server}\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}
