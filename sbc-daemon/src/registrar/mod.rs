//! Standalone registrar (RFC 3261 10.3) used when no upstream registrar is configured: the
//! in-memory [`location`] service, optional [`digest`] authentication (RFC 8760 SHA-256 and
//! MD5), and the REGISTER processing rules (expiry limits, `Contact: *`, Call-ID/CSeq
//! ordering). Sans-IO: the proxy core feeds it a parsed REGISTER, the flow it came on and
//! the time, and sends the reply it returns.

pub mod digest;
pub mod location;
pub mod upstream;

use std::time::Instant;

use portcullis_sip::{Contact, HeaderName, SipMessage};

use crate::transport::{ConnId, Source};
use digest::{AuthOutcome, DigestAuth};
use location::{Binding, ContactUpdate, LocationStore, UpdateError};

/// Expiry policy and limits.
#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    /// Shorter non-zero expiries get 423 Interval Too Brief (10.3 step 7).
    pub min_expires: u32,
    /// Longer expiries are shortened to this.
    pub max_expires: u32,
    /// Used when neither the Contact nor the request carries an expiry.
    pub default_expires: u32,
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 10,
        }
    }
}

/// What to answer to a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterReply {
    pub code: u16,
    pub reason: &'static str,
    /// Extra response headers (Contact list, Min-Expires, WWW-Authenticate, ...).
    pub headers: Vec<(&'static str, String)>,
}

impl RegisterReply {
    fn error(code: u16, reason: &'static str) -> Self {
        RegisterReply {
            code,
            reason,
            headers: Vec::new(),
        }
    }
}

pub struct Registrar {
    settings: RegistrarSettings,
    store: LocationStore,
    auth: Option<DigestAuth>,
}

impl Registrar {
    pub fn new(settings: RegistrarSettings, auth: Option<DigestAuth>) -> Self {
        let store = LocationStore::new(settings.max_bindings_per_aor);
        Registrar {
            settings,
            store,
            auth,
        }
    }

    /// Checks credentials when authentication is configured. `None` means the request may
    /// proceed; `Some(reply)` is the challenge or rejection to send.
    pub fn authenticate(
        &self,
        unix_now: u64,
        msg: &SipMessage,
        header: HeaderName,
    ) -> Option<RegisterReply> {
        let auth = self.auth.as_ref()?;
        let method = msg
            .method()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let challenge_header = if header == HeaderName::Authorization {
            "WWW-Authenticate"
        } else {
            "Proxy-Authenticate"
        };
        let (code, reason) = if header == HeaderName::Authorization {
            (401, "Unauthorized")
        } else {
            (407, "Proxy Authentication Required")
        };
        let mut stale = false;
        let creds: Vec<&str> = msg
            .headers()
            .filter(|h| h.name == header)
            .map(|h| h.value)
            .collect();
        for value in creds {
            match auth.verify(unix_now, &method, value) {
                AuthOutcome::Authorized(_) => return None,
                AuthOutcome::Stale => stale = true,
                AuthOutcome::Rejected(why) => {
                    tracing::debug!(why, "digest credentials rejected");
                }
            }
        }
        Some(RegisterReply {
            code,
            reason,
            headers: auth
                .challenges(unix_now, stale)
                .into_iter()
                .map(|c| (challenge_header, c))
                .collect(),
        })
    }

    /// Processes a REGISTER for `aor` that arrived on `flow` (10.3 steps 6-8).
    pub fn register(
        &mut self,
        now: Instant,
        unix_now: u64,
        msg: &SipMessage,
        aor: &str,
        flow: Source,
    ) -> RegisterReply {
        if let Some(challenge) = self.authenticate(unix_now, msg, HeaderName::Authorization) {
            return challenge;
        }
        let (Ok(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return RegisterReply::error(400, "Bad Request");
        };
        let header_expires = match msg.expires() {
            Ok(e) => e,
            Err(_) => return RegisterReply::error(400, "Bad Expires"),
        };
        let contacts = match msg.contacts() {
            Ok(c) => c,
            Err(_) => return RegisterReply::error(400, "Bad Contact"),
        };
        let nated = crate::proxy::nat::detect(msg, flow.remote).nated;
        let has_star = contacts.iter().any(|c| matches!(c, Contact::Star));
        if has_star {
            if contacts.len() != 1 || header_expires != Some(0) {
                return RegisterReply::error(
                    400,
                    "Bad Contact: * needs Expires: 0 and no other Contact",
                );
            }
            return match self.store.remove_all(aor, call_id, cseq.seq) {
                Ok(()) => self.ok(now, aor),
                Err(e) => update_error(e),
            };
        }
        let mut updates = Vec::new();
        for c in &contacts {
            let Contact::Addr(na) = c else { continue };
            let param_expires = match na.params.get("expires") {
                Some(Some(v)) => match v.trim().parse::<u64>() {
                    Ok(v) => Some(v.min(u64::from(u32::MAX)) as u32),
                    Err(_) => return RegisterReply::error(400, "Bad Contact expires"),
                },
                _ => None,
            };
            let mut expires = param_expires
                .or(header_expires)
                .unwrap_or(self.settings.default_expires);
            if expires != 0 && expires < self.settings.min_expires {
                return RegisterReply {
                    code: 423,
                    reason: "Interval Too Brief",
                    headers: vec![("Min-Expires", self.settings.min_expires.to_string())],
                };
            }
            expires = expires.min(self.settings.max_expires);
            let params: String = na
                .params
                .iter()
                .filter(|(k, _)| !k.eq_ignore_ascii_case("expires"))
                .map(|(k, v)| match v {
                    Some(v) => format!(";{k}={v}"),
                    None => format!(";{k}"),
                })
                .collect();
            updates.push(ContactUpdate {
                uri: na.uri.to_string(),
                params,
                expires,
                nated,
            });
        }
        if !updates.is_empty() {
            if let Err(e) = self
                .store
                .update(now, aor, call_id, cseq.seq, flow, &updates)
            {
                return update_error(e);
            }
        }
        self.ok(now, aor)
    }

    /// 200 OK listing every current binding with its remaining time (10.3 step 8).
    fn ok(&self, now: Instant, aor: &str) -> RegisterReply {
        let headers = self
            .store
            .lookup(now, aor)
            .iter()
            .map(|b| {
                (
                    "Contact",
                    format!("<{}>{};expires={}", b.uri, b.params, b.remaining(now)),
                )
            })
            .collect();
        RegisterReply {
            code: 200,
            reason: "OK",
            headers,
        }
    }

    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<Binding> {
        self.store.lookup(now, aor)
    }

    pub fn has_flow(&self, flow: &Source) -> bool {
        self.store.has_flow(flow)
    }

    pub fn remove_flow_source(&mut self, flow: &Source) -> usize {
        self.store.remove_flow_source(flow)
    }

    pub fn flow_closed(&mut self, conn: ConnId) -> usize {
        self.store.remove_flow(conn)
    }

    pub fn remove_binding(&mut self, aor: &str, uri: &str) {
        self.store.remove_binding(aor, uri);
    }

    pub fn purge(&mut self, now: Instant) -> usize {
        self.store.purge(now)
    }

    pub fn bindings(&self) -> usize {
        self.store.len()
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }
}

fn update_error(e: UpdateError) -> RegisterReply {
    match e {
        UpdateError::OutOfOrder => RegisterReply::error(500, "Server Internal Error"),
        UpdateError::TooManyBindings => RegisterReply::error(403, "Too Many Bindings"),
    }
}
