//! Transaction matching keys (RFC 3261 17.1.3 and 17.2.3).
//!
//! Only RFC 3261 branches (magic cookie `z9hG4bK`) are matched by branch; requests from
//! RFC 2543 peers without the cookie get a key built from the fields 17.2.3 lists for that
//! case, so retransmissions are still recognised.

use portcullis_sip::{Method, SipMessage};

/// RFC 3261 branch magic cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Server transaction key: top Via branch + sent-by + method (ACK maps to INVITE; CANCEL is
/// its own transaction).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

/// Client transaction key: the branch of the Via we inserted + CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: Method,
}

impl ServerKey {
    /// Key of the server transaction a request belongs to. `as_method` overrides the method
    /// (e.g. to find the INVITE transaction a CANCEL or ACK refers to).
    pub fn for_request(msg: &SipMessage, as_method: Option<Method>) -> Option<ServerKey> {
        let via = msg.top_via().ok()?;
        let method = match as_method {
            Some(m) => m,
            None => match msg.method()? {
                Method::Ack => Method::Invite,
                m => m.clone(),
            },
        };
        let sent_by = match via.port {
            Some(p) => format!("{}:{}", via.host.to_ascii_lowercase(), p),
            None => via.host.to_ascii_lowercase(),
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.to_string(),
            // RFC 2543 compatibility (17.2.3): Request-URI, To tag, From tag, Call-ID, CSeq
            // number and top Via identify the transaction.
            _ => {
                let cseq = msg.cseq().ok()?;
                format!(
                    "2543|{}|{}|{}|{}|{}",
                    msg.request_uri().unwrap_or(""),
                    msg.to()
                        .ok()
                        .and_then(|t| t.tag().map(str::to_string))
                        .unwrap_or_default(),
                    msg.from()
                        .ok()
                        .and_then(|f| f.tag().map(str::to_string))
                        .unwrap_or_default(),
                    msg.call_id().ok()?,
                    cseq.seq
                )
            }
        };
        Some(ServerKey {
            branch,
            sent_by,
            method,
        })
    }
}

impl ClientKey {
    /// Key of the client transaction a response belongs to.
    pub fn for_response(msg: &SipMessage) -> Option<ClientKey> {
        let via = msg.top_via().ok()?;
        let branch = via.branch()?.to_string();
        let method = msg.cseq().ok()?.method;
        Some(ClientKey { branch, method })
    }
}
