//! Registration proxying toward an upstream registrar (S-10): the SBC keeps, per registered
//! contact, the client's flow and its real Contact behind an opaque token that replaces the
//! Contact upstream (or goes into a Path header), and a throttling cache that answers
//! refreshes itself while the upstream registration is still valid.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::transport::{ConnId, Source};

/// Prefix of registration tokens (the user part of the SBC-owned Contact).
pub const TOKEN_PREFIX: &str = "rg";

/// One contact registered upstream through the SBC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBinding {
    pub aor: String,
    /// The client's own Contact URI and its parameters (without `expires`).
    pub contact_uri: String,
    pub contact_params: String,
    pub flow: Source,
    pub call_id: String,
    /// Until when the upstream registrar holds the binding (after its 200 OK).
    pub upstream_until: Option<Instant>,
    /// Until when the client believes it is registered.
    pub client_until: Option<Instant>,
    pub last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct RegistrationCache {
    by_token: HashMap<String, UpstreamBinding>,
    by_contact: HashMap<(String, String), String>,
}

/// How long an unconfirmed binding (no 200 OK from upstream) is kept.
const UNCONFIRMED_TTL: Duration = Duration::from_secs(300);

impl RegistrationCache {
    /// The token for (AOR, contact), created on first use; the flow and Call-ID are updated.
    pub fn token_for(
        &mut self,
        now: Instant,
        aor: &str,
        contact_uri: &str,
        contact_params: &str,
        flow: Source,
        call_id: &str,
    ) -> String {
        let key = (aor.to_string(), contact_uri.to_ascii_lowercase());
        if let Some(tok) = self.by_contact.get(&key) {
            if let Some(b) = self.by_token.get_mut(tok) {
                if b.flow != flow || b.call_id != call_id {
                    // A new flow or a new registration: the cache must not answer for it.
                    b.upstream_until = None;
                    b.client_until = None;
                }
                b.flow = flow;
                b.call_id = call_id.to_string();
                b.contact_params = contact_params.to_string();
                b.last_seen = now;
                return tok.clone();
            }
        }
        let tok = format!("{TOKEN_PREFIX}{:016x}", rand::random::<u64>());
        self.by_token.insert(
            tok.clone(),
            UpstreamBinding {
                aor: aor.to_string(),
                contact_uri: contact_uri.to_string(),
                contact_params: contact_params.to_string(),
                flow,
                call_id: call_id.to_string(),
                upstream_until: None,
                client_until: None,
                last_seen: now,
            },
        );
        self.by_contact.insert(key, tok.clone());
        tok
    }

    pub fn get(&self, token: &str) -> Option<&UpstreamBinding> {
        self.by_token.get(token)
    }

    /// The upstream registrar accepted the binding for `upstream_expires` seconds; the
    /// client was told `client_expires`.
    pub fn confirm(
        &mut self,
        now: Instant,
        token: &str,
        upstream_expires: u32,
        client_expires: u32,
    ) {
        if let Some(b) = self.by_token.get_mut(token) {
            b.upstream_until = Some(now + Duration::from_secs(u64::from(upstream_expires)));
            b.client_until = Some(now + Duration::from_secs(u64::from(client_expires)));
        }
    }

    /// Whether a refresh of `tokens` from `flow` with `call_id` can be answered locally: each
    /// binding is confirmed upstream, still valid upstream for longer than the client expiry
    /// about to be granted, and comes from the same flow and registration.
    pub fn can_answer_locally(
        &self,
        now: Instant,
        tokens: &[String],
        flow: &Source,
        call_id: &str,
        client_expires: u32,
    ) -> bool {
        !tokens.is_empty()
            && tokens.iter().all(|t| {
                self.by_token.get(t).is_some_and(|b| {
                    b.flow == *flow
                        && b.call_id == call_id
                        && b.upstream_until.is_some_and(|u| {
                            u > now + Duration::from_secs(u64::from(client_expires) + 5)
                        })
                })
            })
    }

    /// Refreshes the client-side expiry after a locally answered refresh.
    pub fn touch(&mut self, now: Instant, token: &str, client_expires: u32) {
        if let Some(b) = self.by_token.get_mut(token) {
            b.client_until = Some(now + Duration::from_secs(u64::from(client_expires)));
            b.last_seen = now;
        }
    }

    pub fn remove(&mut self, token: &str) {
        if let Some(b) = self.by_token.remove(token) {
            self.by_contact
                .remove(&(b.aor, b.contact_uri.to_ascii_lowercase()));
        }
    }

    /// Tokens of an AOR registered from `flow` (for `Contact: *`).
    pub fn tokens_of(&self, aor: &str, flow: &Source) -> Vec<String> {
        self.by_token
            .iter()
            .filter(|(_, b)| b.aor == aor && b.flow == *flow)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Drops bindings that expired upstream, or were never confirmed.
    pub fn purge(&mut self, now: Instant) -> usize {
        let dead: Vec<String> = self
            .by_token
            .iter()
            .filter(|(_, b)| match b.upstream_until {
                Some(u) => u <= now,
                None => b.last_seen + UNCONFIRMED_TTL <= now,
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in &dead {
            self.remove(t);
        }
        dead.len()
    }

    /// A stream flow closed: its bindings can no longer be reached (S-02).
    pub fn flow_closed(&mut self, conn: ConnId) -> usize {
        let dead: Vec<String> = self
            .by_token
            .iter()
            .filter(|(_, b)| b.flow.conn == Some(conn))
            .map(|(t, _)| t.clone())
            .collect();
        for t in &dead {
            self.remove(t);
        }
        dead.len()
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn has_flow(&self, flow: &Source) -> bool {
        self.by_token
            .values()
            .any(|b| b.flow.listener == flow.listener && b.flow.remote == flow.remote)
    }

    /// Forgets every binding registered from this flow; returns how many.
    pub fn remove_flow_source(&mut self, flow: &Source) -> usize {
        let dead: Vec<String> = self
            .by_token
            .iter()
            .filter(|(_, b)| b.flow.listener == flow.listener && b.flow.remote == flow.remote)
            .map(|(t, _)| t.clone())
            .collect();
        for t in &dead {
            self.remove(t);
        }
        dead.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ListenerId, Transport};

    fn flow(port: u16) -> Source {
        Source {
            listener: ListenerId(0),
            transport: Transport::Udp,
            remote: std::net::SocketAddr::from(([203, 0, 113, 7], port)),
            conn: None,
        }
    }

    #[test]
    fn tokens_are_stable_and_cache_answers_only_confirmed_same_flow_refreshes() {
        let mut c = RegistrationCache::default();
        let now = Instant::now();
        let t = c.token_for(now, "alice@x", "sip:alice@10.0.0.5", "", flow(1), "cid");
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(
            c.token_for(now, "alice@x", "SIP:alice@10.0.0.5", "", flow(1), "cid"),
            t
        );
        assert!(
            !c.can_answer_locally(now, std::slice::from_ref(&t), &flow(1), "cid", 60),
            "not confirmed yet"
        );
        c.confirm(now, &t, 3600, 60);
        assert!(c.can_answer_locally(now, std::slice::from_ref(&t), &flow(1), "cid", 60));
        assert!(
            !c.can_answer_locally(now, std::slice::from_ref(&t), &flow(2), "cid", 60),
            "other flow"
        );
        assert!(
            !c.can_answer_locally(now, std::slice::from_ref(&t), &flow(1), "other", 60),
            "other Call-ID"
        );
        let late = now + Duration::from_secs(3550);
        assert!(
            !c.can_answer_locally(late, std::slice::from_ref(&t), &flow(1), "cid", 60),
            "upstream about to expire"
        );
        // The NAT binding changed: a new flow resets the confirmation.
        c.token_for(now, "alice@x", "sip:alice@10.0.0.5", "", flow(9), "cid");
        assert!(!c.can_answer_locally(now, std::slice::from_ref(&t), &flow(9), "cid", 60));
        assert_eq!(c.purge(now + Duration::from_secs(301)), 1);
        assert!(c.is_empty());
    }
}
