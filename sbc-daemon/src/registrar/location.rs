//! The location service (RFC 3261 10.3): address-of-record -> bindings, each remembering
//! the flow the REGISTER arrived on (listener, source address, connection) so that requests
//! for the AOR are delivered over that flow, whatever the Contact says (NAT, WebSocket
//! `.invalid` hosts).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::transport::{ConnId, Source};

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Contact URI as registered.
    pub uri: String,
    /// Contact header parameters other than `expires` (e.g. `q`, `+sip.instance`).
    pub params: String,
    /// The flow the registration came from.
    pub flow: Source,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// The client registered from behind NAT (requests go to the flow, not the Contact).
    pub nated: bool,
}

impl Binding {
    /// Seconds left, rounded up.
    pub fn remaining(&self, now: Instant) -> u64 {
        let d = self.expires_at.saturating_duration_since(now);
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

/// A contact in a REGISTER, after the expiry rules were applied.
#[derive(Debug, Clone)]
pub struct ContactUpdate {
    pub uri: String,
    pub params: String,
    /// 0 removes the binding.
    pub expires: u32,
    pub nated: bool,
}

/// Why a REGISTER cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// RFC 3261 10.3 step 7: same Call-ID with a CSeq not higher than the stored one.
    #[error("out-of-order REGISTER (CSeq not higher than the binding's)")]
    OutOfOrder,
    #[error("too many bindings for this address-of-record")]
    TooManyBindings,
}

/// In-memory location store.
#[derive(Debug, Default)]
pub struct LocationStore {
    aors: HashMap<String, Vec<Binding>>,
    max_bindings: usize,
}

impl LocationStore {
    pub fn new(max_bindings: usize) -> Self {
        LocationStore {
            aors: HashMap::new(),
            max_bindings: max_bindings.max(1),
        }
    }

    /// Applies a REGISTER's contacts for `aor` (10.3 steps 6-8). All-or-nothing.
    pub fn update(
        &mut self,
        now: Instant,
        aor: &str,
        call_id: &str,
        cseq: u32,
        flow: Source,
        contacts: &[ContactUpdate],
    ) -> Result<(), UpdateError> {
        let mut bindings = self.aors.get(aor).cloned().unwrap_or_default();
        bindings.retain(|b| b.expires_at > now);
        for c in contacts {
            if let Some(i) = bindings.iter().position(|b| uri_equal(&b.uri, &c.uri)) {
                let b = &bindings[i];
                if b.call_id == call_id && cseq <= b.cseq {
                    return Err(UpdateError::OutOfOrder);
                }
                if c.expires == 0 {
                    bindings.remove(i);
                } else {
                    bindings[i] = new_binding(now, c, flow, call_id, cseq);
                }
            } else if c.expires > 0 {
                bindings.push(new_binding(now, c, flow, call_id, cseq));
            }
        }
        if bindings.len() > self.max_bindings {
            return Err(UpdateError::TooManyBindings);
        }
        if bindings.is_empty() {
            self.aors.remove(aor);
        } else {
            self.aors.insert(aor.to_string(), bindings);
        }
        Ok(())
    }

    /// `Contact: *` with expiry 0 (10.3 step 6): removes every binding, subject to the
    /// Call-ID/CSeq rule.
    pub fn remove_all(&mut self, aor: &str, call_id: &str, cseq: u32) -> Result<(), UpdateError> {
        if let Some(b) = self.aors.get(aor) {
            if b.iter().any(|b| b.call_id == call_id && cseq <= b.cseq) {
                return Err(UpdateError::OutOfOrder);
            }
        }
        self.aors.remove(aor);
        Ok(())
    }

    /// Live bindings of an AOR.
    pub fn lookup(&self, now: Instant, aor: &str) -> Vec<Binding> {
        self.aors
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default()
    }

    /// Removes every binding that used connection `conn` (a closed stream flow, S-02).
    /// Returns how many were removed.
    pub fn remove_flow(&mut self, conn: ConnId) -> usize {
        let mut removed = 0;
        self.aors.retain(|_, v| {
            let before = v.len();
            v.retain(|b| b.flow.conn != Some(conn));
            removed += before - v.len();
            !v.is_empty()
        });
        removed
    }

    /// Whether any live binding uses this flow (listener and remote address).
    pub fn has_flow(&self, flow: &Source) -> bool {
        self.aors
            .values()
            .flatten()
            .any(|b| b.flow.listener == flow.listener && b.flow.remote == flow.remote)
    }

    /// Removes every binding registered from this flow (listener and remote address).
    pub fn remove_flow_source(&mut self, flow: &Source) -> usize {
        let mut removed = 0;
        self.aors.retain(|_, v| {
            let before = v.len();
            v.retain(|b| !(b.flow.listener == flow.listener && b.flow.remote == flow.remote));
            removed += before - v.len();
            !v.is_empty()
        });
        removed
    }

    /// Removes one binding (e.g. its flow proved dead).
    pub fn remove_binding(&mut self, aor: &str, uri: &str) {
        if let Some(v) = self.aors.get_mut(aor) {
            v.retain(|b| !uri_equal(&b.uri, uri));
            if v.is_empty() {
                self.aors.remove(aor);
            }
        }
    }

    /// Drops expired bindings; returns how many.
    pub fn purge(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        self.aors.retain(|_, v| {
            let before = v.len();
            v.retain(|b| b.expires_at > now);
            removed += before - v.len();
            !v.is_empty()
        });
        removed
    }

    /// Number of bindings held.
    pub fn len(&self) -> usize {
        self.aors.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.aors.is_empty()
    }
}

fn new_binding(now: Instant, c: &ContactUpdate, flow: Source, call_id: &str, cseq: u32) -> Binding {
    Binding {
        uri: c.uri.clone(),
        params: c.params.clone(),
        flow,
        expires_at: now + Duration::from_secs(u64::from(c.expires)),
        call_id: call_id.to_string(),
        cseq,
        nated: c.nated,
    }
}

/// URI comparison for bindings: case-insensitive scheme and host, exact user (a
/// simplification of RFC 3261 19.1.4 sufficient for matching a UA's own refreshes).
fn uri_equal(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ListenerId, Transport};

    fn flow(conn: Option<u64>) -> Source {
        Source {
            listener: ListenerId(0),
            transport: if conn.is_some() {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            remote: "192.0.2.7:40000".parse().unwrap(),
            conn: conn.map(ConnId),
        }
    }

    fn c(uri: &str, expires: u32) -> ContactUpdate {
        ContactUpdate {
            uri: uri.into(),
            params: String::new(),
            expires,
            nated: false,
        }
    }

    #[test]
    fn register_refresh_expire_and_remove() {
        let mut s = LocationStore::new(5);
        let now = Instant::now();
        s.update(
            now,
            "alice",
            "c1",
            1,
            flow(None),
            &[c("sip:a@10.0.0.2", 60)],
        )
        .unwrap();
        assert_eq!(s.lookup(now, "alice").len(), 1);
        // Out of order within the same Call-ID.
        assert_eq!(
            s.update(
                now,
                "alice",
                "c1",
                1,
                flow(None),
                &[c("sip:a@10.0.0.2", 60)]
            ),
            Err(UpdateError::OutOfOrder)
        );
        s.update(
            now,
            "alice",
            "c1",
            2,
            flow(None),
            &[c("sip:a@10.0.0.2", 120)],
        )
        .unwrap();
        let b = s.lookup(now, "alice");
        assert_eq!(b[0].remaining(now), 120);
        assert!(s.lookup(now + Duration::from_secs(121), "alice").is_empty());
        s.update(now, "alice", "c1", 3, flow(None), &[c("sip:a@10.0.0.2", 0)])
            .unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn star_removal_and_flow_removal() {
        let mut s = LocationStore::new(5);
        let now = Instant::now();
        s.update(
            now,
            "bob",
            "c1",
            1,
            flow(Some(7)),
            &[c("sip:b@x", 60), c("sip:b@y", 60)],
        )
        .unwrap();
        s.update(now, "carol", "c2", 1, flow(None), &[c("sip:c@x", 60)])
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.remove_flow(ConnId(7)), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.remove_all("carol", "c2", 1), Err(UpdateError::OutOfOrder));
        s.remove_all("carol", "c2", 2).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn binding_limit() {
        let mut s = LocationStore::new(2);
        let now = Instant::now();
        let r = s.update(
            now,
            "d",
            "c",
            1,
            flow(None),
            &[c("sip:1@x", 60), c("sip:2@x", 60), c("sip:3@x", 60)],
        );
        assert_eq!(r, Err(UpdateError::TooManyBindings));
        assert!(s.is_empty(), "all or nothing");
    }
}
