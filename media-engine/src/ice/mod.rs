//! ICE-lite agent (RFC 8445 2.5 / 7.3, lite implementation) with consent freshness
//! (RFC 7675), and the STUN codec it uses ([`stun`]).
//!
//! Sans-IO: the caller feeds received STUN datagrams with [`IceLiteAgent::handle_stun`] (which
//! returns the bytes to send back to the source, if any), drives time with
//! [`IceLiteAgent::poll_timeout`] / [`IceLiteAgent::handle_timeout`], and drains
//! [`IceEvent`]s. A lite agent never sends checks; it is always controlled and answers the full
//! peer's Binding requests:
//!
//! - a request is answered only if it is well formed, its USERNAME is `<local ufrag>:<peer
//!   ufrag>` (the peer part is checked once the remote credentials are known: requests that
//!   arrive before the SDP answer are answered too, S-18), its MESSAGE-INTEGRITY verifies with
//!   the local password and its FINGERPRINT (when present) is right. Anything else is dropped
//!   silently and counted in [`IceStats`];
//! - the success response carries XOR-MAPPED-ADDRESS (the source), MESSAGE-INTEGRITY and
//!   FINGERPRINT;
//! - a request with ICE-CONTROLLED (the peer also believes it is controlled) gets a 487 Role
//!   Conflict error: the full agent must take the controlling role;
//! - USE-CANDIDATE nominates the source address: [`IceEvent::Nominated`] and
//!   [`IceLiteAgent::selected`] tell where media goes;
//! - every valid check refreshes consent for its source; 30 s without one
//!   ([`CONSENT_TIMEOUT`]) raises [`IceEvent::ConsentExpired`] and, for the selected address,
//!   clears the selection (media to that peer must stop).

pub mod stun;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use stun::{IntegrityKey, StunError, StunMessage, StunMessageBuilder};

/// Consent lifetime after the last valid check (RFC 7675 5.1).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Remote addresses tracked at once (authenticated sources only).
pub const MAX_PEERS: usize = 16;
/// Events kept before the oldest are discarded (the caller should drain them).
const MAX_EVENTS: usize = 256;

/// Something the caller must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// First valid check from this address: it has passed ICE (e.g. DTLS may be accepted
    /// from it).
    Validated(SocketAddr),
    /// The peer nominated this address (USE-CANDIDATE): send media there.
    Nominated(SocketAddr),
    /// No valid check from this address for [`CONSENT_TIMEOUT`]: stop sending to it.
    ConsentExpired(SocketAddr),
}

/// Why a STUN datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a well-formed STUN message.
    Malformed,
    /// Not a Binding request (responses, other methods).
    NotBindingRequest,
    /// USERNAME absent, or its local or remote part is not ours / the peer's.
    UnknownUsername,
    /// MESSAGE-INTEGRITY absent or wrong.
    BadIntegrity,
    /// FINGERPRINT present but wrong.
    BadFingerprint,
}

/// What [`IceLiteAgent::handle_stun`] did with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunOutcome {
    /// Bytes to send back to the source, if any.
    pub response: Option<Vec<u8>>,
    /// Why nothing valid came of it (`None` for an answered check or a Binding indication).
    pub dropped: Option<DropReason>,
}

impl StunOutcome {
    fn dropped(reason: DropReason) -> Self {
        Self {
            response: None,
            dropped: Some(reason),
        }
    }
}

/// Counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IceStats {
    /// Valid checks answered with a success response.
    pub checks_answered: u64,
    /// Valid checks answered with 487 Role Conflict.
    pub role_conflicts: u64,
    /// Binding indications (keepalives) received.
    pub indications: u64,
    pub dropped_malformed: u64,
    pub dropped_not_request: u64,
    pub dropped_unknown_username: u64,
    pub dropped_bad_integrity: u64,
    pub dropped_bad_fingerprint: u64,
    /// Consent expiries.
    pub consent_expired: u64,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    last_valid: Instant,
}

/// ICE-lite agent for one media stream (one component with rtcp-mux).
#[derive(Debug)]
pub struct IceLiteAgent {
    local_ufrag: String,
    local_pwd: String,
    key: IntegrityKey,
    remote_ufrag: Option<String>,
    remote_pwd: Option<String>,
    peers: HashMap<SocketAddr, Peer>,
    selected: Option<SocketAddr>,
    events: VecDeque<IceEvent>,
    stats: IceStats,
    consent_timeout: Duration,
}

impl IceLiteAgent {
    /// An agent with local credentials (`a=ice-ufrag`, `a=ice-pwd` of our SDP).
    pub fn new(local_ufrag: &str, local_pwd: &str) -> Self {
        Self {
            local_ufrag: local_ufrag.to_owned(),
            local_pwd: local_pwd.to_owned(),
            key: IntegrityKey::new(local_pwd.as_bytes()),
            remote_ufrag: None,
            remote_pwd: None,
            peers: HashMap::new(),
            selected: None,
            events: VecDeque::new(),
            stats: IceStats::default(),
            consent_timeout: CONSENT_TIMEOUT,
        }
    }

    /// Changes the consent lifetime (default [`CONSENT_TIMEOUT`]).
    pub fn set_consent_timeout(&mut self, timeout: Duration) {
        self.consent_timeout = timeout;
    }

    /// Sets the peer's credentials (from its SDP). From then on the peer part of USERNAME must
    /// match. A new ufrag (ICE restart) forgets validated addresses and the selection.
    pub fn set_remote_credentials(&mut self, ufrag: &str, pwd: &str) {
        let restart = self.remote_ufrag.as_deref().is_some_and(|old| old != ufrag);
        if restart {
            self.peers.clear();
            self.selected = None;
        }
        self.remote_ufrag = Some(ufrag.to_owned());
        self.remote_pwd = Some(pwd.to_owned());
    }

    /// Local ufrag.
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// Local password.
    pub fn local_pwd(&self) -> &str {
        &self.local_pwd
    }

    /// The peer's password, if known (a lite agent does not use it for checks; kept for
    /// callers that need it).
    pub fn remote_pwd(&self) -> Option<&str> {
        self.remote_pwd.as_deref()
    }

    /// The nominated address media goes to, while its consent is fresh.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether `addr` has passed a valid check within the consent lifetime.
    pub fn is_validated(&self, now: Instant, addr: SocketAddr) -> bool {
        self.peers
            .get(&addr)
            .is_some_and(|p| now.saturating_duration_since(p.last_valid) < self.consent_timeout)
    }

    /// Counters.
    pub fn stats(&self) -> IceStats {
        self.stats
    }

    /// Next pending event.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// All pending events.
    pub fn drain_events(&mut self) -> impl Iterator<Item = IceEvent> + '_ {
        self.events.drain(..)
    }

    fn push_event(&mut self, e: IceEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn drop_with(&mut self, reason: DropReason) -> StunOutcome {
        let c = match reason {
            DropReason::Malformed => &mut self.stats.dropped_malformed,
            DropReason::NotBindingRequest => &mut self.stats.dropped_not_request,
            DropReason::UnknownUsername => &mut self.stats.dropped_unknown_username,
            DropReason::BadIntegrity => &mut self.stats.dropped_bad_integrity,
            DropReason::BadFingerprint => &mut self.stats.dropped_bad_fingerprint,
        };
        *c += 1;
        tracing::debug!(?reason, "STUN datagram dropped");
        StunOutcome::dropped(reason)
    }

    fn username_ok(&self, username: &str) -> bool {
        let Some((local, remote)) = username.split_once(':') else {
            return false;
        };
        if local != self.local_ufrag {
            return false;
        }
        match &self.remote_ufrag {
            Some(r) => remote == r,
            None => !remote.is_empty(),
        }
    }

    /// Handles one STUN datagram received from `src` at `now`.
    pub fn handle_stun(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) -> StunOutcome {
        let msg = match StunMessage::parse(bytes) {
            Ok(m) => m,
            Err(_) => return self.drop_with(DropReason::Malformed),
        };
        match msg.message_type() {
            stun::BINDING_REQUEST => {}
            stun::BINDING_INDICATION => {
                self.stats.indications += 1;
                return StunOutcome {
                    response: None,
                    dropped: None,
                };
            }
            _ => return self.drop_with(DropReason::NotBindingRequest),
        }
        if msg.has_fingerprint() && !msg.verify_fingerprint() {
            return self.drop_with(DropReason::BadFingerprint);
        }
        match msg.username() {
            Some(u) if self.username_ok(u) => {}
            _ => return self.drop_with(DropReason::UnknownUsername),
        }
        if !msg.verify_integrity_with(&self.key) {
            return self.drop_with(DropReason::BadIntegrity);
        }
        let txid = msg.transaction_id();
        if msg.ice_controlled().is_some() {
            // Both sides controlled: a lite agent cannot switch to controlling (RFC 8445
            // 6.1.1), so the full agent must.
            self.stats.role_conflicts += 1;
            let resp = StunMessageBuilder::new(stun::BINDING_ERROR, txid)
                .error_code(487, "Role Conflict")
                .build_with_integrity_key(&self.key);
            return StunOutcome {
                response: Some(resp),
                dropped: None,
            };
        }
        self.stats.checks_answered += 1;
        self.refresh(now, src);
        if msg.use_candidate() && self.selected != Some(src) {
            tracing::debug!(%src, "ICE-lite: nominated");
            self.selected = Some(src);
            self.push_event(IceEvent::Nominated(src));
        }
        let resp = StunMessageBuilder::binding_success(txid)
            .xor_mapped_address(src)
            .build_with_integrity_key(&self.key);
        StunOutcome {
            response: Some(resp),
            dropped: None,
        }
    }

    fn refresh(&mut self, now: Instant, src: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&src) {
            p.last_valid = now;
            return;
        }
        if self.peers.len() >= MAX_PEERS {
            // Evict the stalest address that is not the selected one.
            let victim = self
                .peers
                .iter()
                .filter(|(a, _)| Some(**a) != self.selected)
                .min_by_key(|(_, p)| p.last_valid)
                .map(|(a, _)| *a);
            if let Some(v) = victim {
                self.peers.remove(&v);
            }
        }
        self.peers.insert(src, Peer { last_valid: now });
        self.push_event(IceEvent::Validated(src));
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called (earliest consent
    /// expiry), if anything is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.last_valid.checked_add(self.consent_timeout))
            .min()
    }

    /// Expires consent of addresses without a valid check for the consent lifetime.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.consent_timeout;
        let mut expired: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_valid) >= timeout)
            .map(|(a, _)| *a)
            .collect();
        expired.sort();
        for addr in expired {
            self.peers.remove(&addr);
            self.stats.consent_expired += 1;
            if self.selected == Some(addr) {
                self.selected = None;
            }
            tracing::info!(%addr, "ICE consent expired");
            self.push_event(IceEvent::ConsentExpired(addr));
        }
    }
}
