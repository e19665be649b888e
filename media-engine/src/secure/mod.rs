//! Termination of the security of one media leg (SDES-SRTP or DTLS-SRTP, optionally with
//! ICE-lite), so a relay can bridge it to a plain RTP leg. Sans-IO.
//!
//! A [`SecureLeg`] owns everything that arrives on one relay port of one party:
//!
//! - [`SecureLeg::handle_inbound`] demultiplexes each datagram by its first byte (RFC 7983):
//!   STUN (0-3) goes to the [`IceLiteAgent`], DTLS (20-63) to the [`DtlsEndpoint`], RTP/RTCP
//!   (128-191) to SRTP or SRTCP unprotection (RTCP when the second byte is 192-223, the
//!   rtcp-mux rule of RFC 5761 4). Authenticated media comes out as [`Inbound::Media`];
//!   everything else is [`Inbound::Consumed`] or [`Inbound::Dropped`] and counted.
//! - [`SecureLeg::protect_outbound`] turns plain RTP/RTCP from the other leg into SRTP/SRTCP
//!   for this party; [`SecureLeg::destination`] says where to send it.
//! - [`SecureLeg::poll_transmit`], [`SecureLeg::poll_timeout`] / [`SecureLeg::handle_timeout`]
//!   and [`SecureLeg::poll_event`] are the usual sans-IO outputs (STUN responses, DTLS
//!   flights, timers, [`SecureEvent`]s). Drain transmits and events after every input.
//!
//! # Security decisions
//!
//! - **Authenticated latching** (issue 6 item 5). Without ICE, media goes to the SDP address
//!   until a packet authenticates (SRTP or SRTCP tag verified, not a replay); from then on to
//!   the latest source whose packet authenticated. Packets that fail authentication, replays
//!   and packets before keys exist never pass and never move the destination, whatever their
//!   source. A replay of a captured packet from another address is rejected by the replay
//!   window (RFC 3711 3.3.2), so it cannot steal the latch either.
//! - **Destination with ICE** is the address the peer nominated (USE-CANDIDATE) while its
//!   consent is fresh (RFC 7675); `None` before nomination and after consent expiry (media to
//!   the party stops, [`SecureEvent::ConsentExpired`]). Authenticated media is still accepted
//!   from any source (the SRTP key is the proof), but it does not override ICE.
//! - **DTLS source filtering** (S-23, the ClientHello race). A DTLS datagram (any record,
//!   not only ClientHello) reaches the DTLS endpoint only if its source is accepted:
//!   - with ICE: the source has passed a valid ICE check ([`IceLiteAgent::is_validated`])
//!     within the consent lifetime. Browsers start DTLS after ICE, so the check comes first;
//!     a ClientHello that overtakes the first check is dropped and its retransmission
//!     (1 s later) gets through.
//!   - without ICE: the source equals the SDP address. **When the SDP address is unknown,
//!     no DTLS datagram is accepted** (strict: "first ClientHello wins" is exactly the race
//!     ES2023-03 exploited); call [`SecureLeg::set_sdp_peer`] once it is known. Consequence: a
//!     DTLS-SRTP party without ICE whose packets come from another address than its SDP says
//!     (NAT) cannot complete the handshake; such parties need ICE.
//!
//!   Rejected datagrams are counted ([`SecureStats::dtls_rejected`], and
//!   [`SecureStats::hello_rejected`] for ClientHellos, which also raise
//!   [`SecureEvent::HelloRejected`]). The DTLS endpoint never sees them, so an attacker's
//!   failed or unfinished handshake cannot block or hijack the legitimate one.
//!
//!   ClientHellos *from* the accepted source (spoofed, or a stray sender behind the same
//!   address) are the DTLS endpoint's business: as a server it answers those without its
//!   cookie statelessly, starts a handshake only for a ClientHello carrying it (proof that
//!   the sender receives at the accepted address), lets a new verified handshake replace a
//!   failed or abandoned one, and drops every ClientHello once connected (see
//!   [`crate::dtls`]). Those it kept out are counted in [`SecureStats::hello_ignored`].
//! - DTLS flights go to the source of the latest accepted DTLS datagram, or before any, to
//!   the ICE-selected address (with ICE) or the SDP address (without). A DTLS client whose
//!   peer address is not known yet keeps its flight queued until it is.
//! - STUN is answered from the moment the leg exists, before DTLS keys (ICE first).
//!   Media before keys is dropped ([`DropReason::NotReady`]).
//! - After the DTLS peer closes the association (close_notify), keys are discarded: media
//!   both ways stops ([`SecureEvent::DtlsClosed`]).
//!
//! Not here: re-keying on a re-INVITE (a new `SecureLeg` is made instead), MKI, ICE restart
//! ([`SecureLeg::set_remote_ice_credentials`] exists but a new ufrag only resets ICE, not
//! DTLS).

mod sdes;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use sdes::SdesCrypto;

use crate::datapath::is_rtcp;
use crate::dtls::{
    DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsError, DtlsEvent, FailureReason, Fingerprint,
    Role,
};
use crate::ice::{self, IceEvent, IceLiteAgent, CONSENT_TIMEOUT};
use crate::srtp::{SrtpContext, SrtpError};

/// Events kept before the oldest are discarded (the caller should drain them).
const MAX_EVENTS: usize = 256;
/// Datagrams queued for sending (STUN responses) before the oldest are discarded.
const MAX_TRANSMITS: usize = 256;

/// Errors creating a leg or parsing its keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureError {
    /// A malformed `a=crypto` attribute.
    #[error("bad a=crypto: {0}")]
    Crypto(String),
    /// An `a=crypto` crypto suite we do not implement.
    #[error("unsupported SDES crypto suite {0}")]
    UnsupportedSuite(String),
    /// A well-formed `a=crypto` feature we do not implement (MKI, session parameters).
    #[error("unsupported a=crypto feature: {0}")]
    Unsupported(String),
    /// The inline key has the wrong length for its suite.
    #[error("a=crypto key||salt must be {expected} bytes, got {got}")]
    KeyLength { expected: usize, got: usize },
    /// The SRTP context could not be keyed.
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpError),
    /// The DTLS endpoint could not be created (e.g. no remote fingerprint).
    #[error("DTLS: {0}")]
    Dtls(#[from] DtlsError),
}

/// ICE credentials of both sides (RFC 8839 `a=ice-ufrag` / `a=ice-pwd`). An empty
/// `remote_ufrag` means the peer's are not known yet: checks are then answered whatever
/// their peer part (S-18) until [`SecureLeg::set_remote_ice_credentials`] is called.
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub local_ufrag: String,
    pub local_pwd: String,
    pub remote_ufrag: String,
    pub remote_pwd: String,
}

impl std::fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceCredentials")
            .field("local_ufrag", &self.local_ufrag)
            .field("remote_ufrag", &self.remote_ufrag)
            .finish_non_exhaustive()
    }
}

/// How the leg is secured.
#[derive(Debug, Clone)]
pub enum LegSecurity {
    /// SDES (RFC 4568): our key (we protect with it) and the peer's (we unprotect with it).
    Sdes {
        local: SdesCrypto,
        remote: SdesCrypto,
    },
    /// DTLS-SRTP (RFC 5763/5764), optionally with ICE-lite (RFC 8445) on the same port.
    DtlsSrtp {
        /// Our DTLS role (from the `a=setup` exchange, [`crate::dtls::dtls_role`]).
        role: Role,
        /// Our certificate (its fingerprint is in our SDP).
        certificate: Arc<DtlsCertificate>,
        /// The peer's `a=fingerprint` values (at least one).
        remote_fingerprints: Vec<Fingerprint>,
        /// ICE-lite on this leg, if the peer does ICE.
        ice: Option<IceCredentials>,
    },
}

/// Tunables of a leg (defaults are the standard values).
#[derive(Debug, Clone)]
pub struct SecureConfig {
    /// DTLS settings (profiles offered/accepted, retransmission, handshake timeout, MTU).
    pub dtls: DtlsConfig,
    /// ICE consent lifetime (RFC 7675; default 30 s).
    pub consent_timeout: Duration,
}

impl Default for SecureConfig {
    fn default() -> Self {
        Self {
            dtls: DtlsConfig::default(),
            consent_timeout: CONSENT_TIMEOUT,
        }
    }
}

/// Why an inbound datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// SRTP/SRTCP before keys exist (DTLS not connected yet, or closed).
    NotReady,
    /// SRTP/SRTCP authentication failed.
    AuthFailed,
    /// SRTP/SRTCP replay, or older than the replay window.
    Replayed,
    /// RTP/RTCP too short, bad version, unusable index, or over the SSRC limit.
    Malformed,
    /// STUN that the ICE agent dropped (bad integrity, unknown ufrag, ...).
    Stun(ice::DropReason),
    /// STUN on a leg without ICE.
    NoIce,
    /// DTLS from a source not accepted for DTLS (S-23).
    DtlsRejected,
    /// DTLS on an SDES leg.
    NoDtls,
    /// First byte in none of the RFC 7983 ranges we serve (ZRTP, TURN channels, others).
    Unknown,
}

/// Something the caller may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecureEvent {
    /// The peer nominated this address (ICE): media to the party goes there now.
    IceSelected(SocketAddr),
    /// Consent of the selected address expired: no destination until a new nomination.
    ConsentExpired,
    /// DTLS completed and the peer's certificate matched its fingerprint: keys both ways.
    DtlsConnected,
    /// DTLS failed (wrong fingerprint, timeout, alert...). No keys will come.
    DtlsFailed(FailureReason),
    /// The DTLS peer closed the association; keys were discarded.
    DtlsClosed,
    /// A ClientHello from a source not accepted for DTLS was dropped (S-23).
    HelloRejected(SocketAddr),
    /// Without ICE: the destination moved to this source, whose media authenticated.
    Latched(SocketAddr),
}

/// Counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecureStats {
    /// SRTP packets authenticated and decrypted.
    pub srtp_in: u64,
    /// SRTCP packets authenticated and decrypted.
    pub srtcp_in: u64,
    /// RTP packets protected.
    pub srtp_out: u64,
    /// RTCP packets protected.
    pub srtcp_out: u64,
    /// Plain packets from the other leg that could not be protected (no keys, malformed).
    pub protect_failed: u64,
    /// SRTP/SRTCP with a bad authentication tag.
    pub auth_failures: u64,
    /// SRTP/SRTCP replays (or too old for the replay window).
    pub replays: u64,
    /// RTP/RTCP-looking datagrams that could not be processed (see [`DropReason::Malformed`]).
    pub malformed: u64,
    /// SRTP/SRTCP that arrived before keys.
    pub not_ready: u64,
    /// STUN requests answered (success or 487).
    pub stun_answered: u64,
    /// STUN datagrams dropped (by the agent, or no ICE on this leg).
    pub stun_dropped: u64,
    /// DTLS datagrams handed to the DTLS endpoint.
    pub dtls_in: u64,
    /// DTLS datagrams dropped because of their source (S-23), ClientHellos included.
    pub dtls_rejected: u64,
    /// Of those, datagrams starting with a ClientHello.
    pub hello_rejected: u64,
    /// ClientHellos from the accepted source that the DTLS endpoint kept out of its handshake
    /// (a cookie not its own, after connection, restart limits; the reasons are in
    /// [`crate::dtls::DtlsStats::hello_drops`]). Cookieless ones, answered with a
    /// HelloVerifyRequest and otherwise forgotten, are not counted.
    pub hello_ignored: u64,
    /// Datagrams outside the ranges served, or DTLS on an SDES leg.
    pub unknown: u64,
    /// Times the latest authenticated source changed (first one included); without ICE this
    /// is where media goes.
    pub latch_moves: u64,
}

struct DtlsPart {
    endpoint: DtlsEndpoint,
    ice: Option<IceLiteAgent>,
    /// Source of the latest DTLS datagram accepted.
    peer: Option<SocketAddr>,
}

enum Mode {
    Sdes,
    Dtls(Box<DtlsPart>),
}

/// The security termination of one media leg. See the [module documentation](self).
///
/// `Send` (it can move to the thread or task that owns the leg's socket); not meant to be
/// shared.
pub struct SecureLeg {
    mode: Mode,
    sdp_peer: Option<SocketAddr>,
    /// Latest source whose media authenticated.
    latched: Option<SocketAddr>,
    /// Protects what we send to the party.
    outbound: Option<SrtpContext>,
    /// Unprotects what the party sends.
    inbound: Option<SrtpContext>,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<SecureEvent>,
    stats: SecureStats,
}

impl std::fmt::Debug for SecureLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureLeg")
            .field(
                "mode",
                &match self.mode {
                    Mode::Sdes => "sdes",
                    Mode::Dtls(_) => "dtls-srtp",
                },
            )
            .field("sdp_peer", &self.sdp_peer)
            .field("latched", &self.latched)
            .field("ready", &self.is_ready())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// An unspecified IP or port 0 (e.g. `c=IN IP4 0.0.0.0`, hold) is no address.
fn usable(addr: Option<SocketAddr>) -> Option<SocketAddr> {
    addr.filter(|a| !a.ip().is_unspecified() && a.port() != 0)
}

/// A plaintext DTLS record carrying a ClientHello first (content type 22, epoch 0,
/// handshake type 1).
fn is_client_hello(data: &[u8]) -> bool {
    data.len() > 13 && data[0] == 22 && data[3] == 0 && data[4] == 0 && data[13] == 1
}

impl SecureLeg {
    /// A leg with default settings. `sdp_peer`: where the party said (SDP) it receives, if
    /// known. A DTLS client sends its ClientHello as soon as it has an address for the peer.
    pub fn new(
        security: LegSecurity,
        sdp_peer: Option<SocketAddr>,
        now: Instant,
    ) -> Result<SecureLeg, SecureError> {
        Self::with_config(security, sdp_peer, now, &SecureConfig::default())
    }

    /// A leg with explicit settings.
    pub fn with_config(
        security: LegSecurity,
        sdp_peer: Option<SocketAddr>,
        now: Instant,
        config: &SecureConfig,
    ) -> Result<SecureLeg, SecureError> {
        let mut leg = SecureLeg {
            mode: Mode::Sdes,
            sdp_peer: usable(sdp_peer),
            latched: None,
            outbound: None,
            inbound: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SecureStats::default(),
        };
        match security {
            LegSecurity::Sdes { local, remote } => {
                leg.outbound = Some(SrtpContext::from_key_and_salt(
                    local.suite,
                    &local.key_salt,
                )?);
                leg.inbound = Some(SrtpContext::from_key_and_salt(
                    remote.suite,
                    &remote.key_salt,
                )?);
            }
            LegSecurity::DtlsSrtp {
                role,
                certificate,
                remote_fingerprints,
                ice,
            } => {
                let endpoint =
                    DtlsEndpoint::new(role, &certificate, remote_fingerprints, &config.dtls, now)?;
                let ice = ice.map(|c| {
                    let mut agent = IceLiteAgent::new(&c.local_ufrag, &c.local_pwd);
                    agent.set_consent_timeout(config.consent_timeout);
                    if !c.remote_ufrag.is_empty() {
                        agent.set_remote_credentials(&c.remote_ufrag, &c.remote_pwd);
                    }
                    agent
                });
                leg.mode = Mode::Dtls(Box::new(DtlsPart {
                    endpoint,
                    ice,
                    peer: None,
                }));
            }
        }
        Ok(leg)
    }

    /// Sets (or clears) the SDP address of the party, e.g. when its answer arrives after the
    /// leg was made.
    pub fn set_sdp_peer(&mut self, sdp_peer: Option<SocketAddr>) {
        self.sdp_peer = usable(sdp_peer);
    }

    /// The SDP address in use.
    pub fn sdp_peer(&self) -> Option<SocketAddr> {
        self.sdp_peer
    }

    /// Sets the peer's ICE credentials (from its SDP, when it arrives after the leg was made).
    /// Ignored on a leg without ICE. A changed ufrag resets ICE validation and selection.
    pub fn set_remote_ice_credentials(&mut self, ufrag: &str, pwd: &str) {
        if let Mode::Dtls(d) = &mut self.mode {
            if let Some(agent) = d.ice.as_mut() {
                agent.set_remote_credentials(ufrag, pwd);
            }
        }
    }

    /// Whether this leg does ICE.
    pub fn has_ice(&self) -> bool {
        matches!(&self.mode, Mode::Dtls(d) if d.ice.is_some())
    }

    /// Keys are available both ways (SDES: always; DTLS: once connected and until closed).
    pub fn is_ready(&self) -> bool {
        self.inbound.is_some() && self.outbound.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> SecureStats {
        self.stats
    }

    /// Counters of the ICE agent, if any.
    pub fn ice_stats(&self) -> Option<ice::IceStats> {
        match &self.mode {
            Mode::Dtls(d) => d.ice.as_ref().map(IceLiteAgent::stats),
            Mode::Sdes => None,
        }
    }

    /// Counters of the DTLS endpoint, if any.
    pub fn dtls_stats(&self) -> Option<crate::dtls::DtlsStats> {
        match &self.mode {
            Mode::Dtls(d) => Some(d.endpoint.stats()),
            Mode::Sdes => None,
        }
    }

    /// Where media to this party goes now: the ICE-selected address (with ICE; `None` before
    /// nomination and once consent expired), else the latest source whose SRTP/SRTCP
    /// authentication verified, else the SDP address.
    pub fn destination(&self) -> Option<SocketAddr> {
        if let Mode::Dtls(d) = &self.mode {
            if let Some(agent) = &d.ice {
                return agent.selected();
            }
        }
        self.latched.or(self.sdp_peer)
    }

    fn push_event(&mut self, e: SecureEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SecureEvent> {
        self.events.pop_front()
    }

    /// Any datagram that arrived on this leg's relay socket from `src` at `now`.
    pub fn handle_inbound(&mut self, now: Instant, src: SocketAddr, data: &[u8]) -> Inbound {
        match data.first() {
            Some(0..=3) => self.on_stun(now, src, data),
            Some(20..=63) => self.on_dtls(now, src, data),
            Some(128..=191) => self.on_media(src, data),
            _ => {
                self.stats.unknown += 1;
                Inbound::Dropped(DropReason::Unknown)
            }
        }
    }

    fn on_stun(&mut self, now: Instant, src: SocketAddr, data: &[u8]) -> Inbound {
        let Mode::Dtls(d) = &mut self.mode else {
            self.stats.stun_dropped += 1;
            return Inbound::Dropped(DropReason::NoIce);
        };
        let Some(agent) = d.ice.as_mut() else {
            self.stats.stun_dropped += 1;
            return Inbound::Dropped(DropReason::NoIce);
        };
        let out = agent.handle_stun(now, src, data);
        if let Some(reason) = out.dropped {
            self.stats.stun_dropped += 1;
            return Inbound::Dropped(DropReason::Stun(reason));
        }
        if let Some(resp) = out.response {
            self.stats.stun_answered += 1;
            self.queue_transmit(src, resp);
        }
        self.drain_ice_events();
        Inbound::Consumed
    }

    fn queue_transmit(&mut self, to: SocketAddr, data: Vec<u8>) {
        if self.transmits.len() >= MAX_TRANSMITS {
            self.transmits.pop_front();
        }
        self.transmits.push_back((to, data));
    }

    fn drain_ice_events(&mut self) {
        let Mode::Dtls(d) = &mut self.mode else {
            return;
        };
        let Some(agent) = d.ice.as_mut() else {
            return;
        };
        let evs: Vec<IceEvent> = agent.drain_events().collect();
        for e in evs {
            match e {
                IceEvent::Nominated(a) => self.push_event(SecureEvent::IceSelected(a)),
                // Validation is read through `is_validated`; the expiry of the selected
                // address is reported by `handle_timeout` (others change nothing here).
                IceEvent::Validated(_) | IceEvent::ConsentExpired(_) => {}
            }
        }
    }

    fn on_dtls(&mut self, now: Instant, src: SocketAddr, data: &[u8]) -> Inbound {
        let sdp_peer = self.sdp_peer;
        let Mode::Dtls(d) = &mut self.mode else {
            self.stats.unknown += 1;
            return Inbound::Dropped(DropReason::NoDtls);
        };
        let accepted = match &d.ice {
            Some(agent) => agent.is_validated(now, src),
            None => sdp_peer == Some(src),
        };
        if !accepted {
            self.stats.dtls_rejected += 1;
            if is_client_hello(data) {
                self.stats.hello_rejected += 1;
                tracing::debug!(%src, "secure leg: ClientHello from an unaccepted source dropped");
                self.push_event(SecureEvent::HelloRejected(src));
            }
            return Inbound::Dropped(DropReason::DtlsRejected);
        }
        d.peer = Some(src);
        let ignored_before = d.endpoint.stats().hello_drops.total();
        d.endpoint.handle_datagram(data, now);
        self.stats.dtls_in += 1;
        self.stats.hello_ignored += d
            .endpoint
            .stats()
            .hello_drops
            .total()
            .saturating_sub(ignored_before);
        self.drain_dtls_events();
        Inbound::Consumed
    }

    fn drain_dtls_events(&mut self) {
        loop {
            let Mode::Dtls(d) = &mut self.mode else {
                return;
            };
            let Some(e) = d.endpoint.poll_event() else {
                return;
            };
            match e {
                DtlsEvent::Connected(keys) => {
                    match (keys.outbound_context(), keys.inbound_context()) {
                        (Ok(out), Ok(inb)) => {
                            self.outbound = Some(out);
                            self.inbound = Some(inb);
                            self.push_event(SecureEvent::DtlsConnected);
                        }
                        (Err(err), _) | (_, Err(err)) => {
                            tracing::warn!(%err, "secure leg: DTLS keys unusable");
                            self.push_event(SecureEvent::DtlsFailed(FailureReason::Protocol(
                                format!("SRTP keys unusable: {err}"),
                            )));
                        }
                    }
                }
                DtlsEvent::Failed(reason) => self.push_event(SecureEvent::DtlsFailed(reason)),
                DtlsEvent::Closed => {
                    self.outbound = None;
                    self.inbound = None;
                    self.push_event(SecureEvent::DtlsClosed);
                }
            }
        }
    }

    fn on_media(&mut self, src: SocketAddr, data: &[u8]) -> Inbound {
        let Some(ctx) = self.inbound.as_mut() else {
            self.stats.not_ready += 1;
            return Inbound::Dropped(DropReason::NotReady);
        };
        let rtcp = is_rtcp(data);
        let mut pkt = data.to_vec();
        let result = if rtcp {
            ctx.unprotect_rtcp(&mut pkt)
        } else {
            ctx.unprotect_rtp(&mut pkt)
        };
        match result {
            Ok(()) => {
                if rtcp {
                    self.stats.srtcp_in += 1;
                } else {
                    self.stats.srtp_in += 1;
                }
                if self.latched != Some(src) {
                    self.latched = Some(src);
                    self.stats.latch_moves += 1;
                    if !self.has_ice() {
                        tracing::debug!(%src, "secure leg: latched on authenticated media");
                        self.push_event(SecureEvent::Latched(src));
                    }
                }
                Inbound::Media {
                    plain: pkt,
                    source: src,
                }
            }
            Err(SrtpError::AuthFailed) => {
                self.stats.auth_failures += 1;
                Inbound::Dropped(DropReason::AuthFailed)
            }
            Err(SrtpError::Replayed { .. } | SrtpError::TooOld { .. }) => {
                self.stats.replays += 1;
                Inbound::Dropped(DropReason::Replayed)
            }
            Err(_) => {
                self.stats.malformed += 1;
                Inbound::Dropped(DropReason::Malformed)
            }
        }
    }

    /// Plain RTP or RTCP from the other leg, protected for this party (SRTCP when the second
    /// byte is 192-223, RFC 5761 4). `None` if keys are not ready yet (DTLS not connected) or
    /// the packet is malformed (counted in [`SecureStats::protect_failed`]).
    pub fn protect_outbound(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        let Some(ctx) = self.outbound.as_mut() else {
            self.stats.protect_failed += 1;
            return None;
        };
        let rtcp = is_rtcp(plain);
        let mut pkt = Vec::with_capacity(plain.len() + 32);
        pkt.extend_from_slice(plain);
        let result = if rtcp {
            ctx.protect_rtcp(&mut pkt)
        } else {
            ctx.protect_rtp(&mut pkt)
        };
        match result {
            Ok(()) => {
                if rtcp {
                    self.stats.srtcp_out += 1;
                } else {
                    self.stats.srtp_out += 1;
                }
                Some(pkt)
            }
            Err(err) => {
                tracing::trace!(%err, "secure leg: cannot protect outbound packet");
                self.stats.protect_failed += 1;
                None
            }
        }
    }

    /// Ends the leg's DTLS association, if any (e.g. the call ended): close_notify is queued
    /// for the DTLS peer ([`poll_transmit`](Self::poll_transmit)) and keys are discarded, so
    /// media stops both ways. On an SDES leg only the keys are discarded.
    pub fn close(&mut self, now: Instant) {
        if let Mode::Dtls(d) = &mut self.mode {
            d.endpoint.close(now);
        }
        self.outbound = None;
        self.inbound = None;
    }

    /// Where DTLS flights go now (see the module documentation).
    fn dtls_destination(&self) -> Option<SocketAddr> {
        match &self.mode {
            Mode::Sdes => None,
            Mode::Dtls(d) => d.peer.or_else(|| match &d.ice {
                Some(agent) => agent.selected(),
                None => self.sdp_peer,
            }),
        }
    }

    /// The next datagram to send: STUN responses (to the checking source) and DTLS flights
    /// (to the DTLS peer address, once known).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let to = self.dtls_destination()?;
        match &mut self.mode {
            Mode::Dtls(d) => d.endpoint.poll_transmit().map(|data| (to, data)),
            Mode::Sdes => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Sdes => None,
            Mode::Dtls(d) => {
                let ice = d.ice.as_ref().and_then(IceLiteAgent::poll_timeout);
                let dtls = d.endpoint.poll_timeout();
                match (ice, dtls) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// Drives DTLS retransmission and ICE consent expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Mode::Dtls(d) = &mut self.mode else {
            return;
        };
        if d.endpoint.poll_timeout().is_some_and(|t| now >= t) {
            d.endpoint.handle_timeout(now);
        }
        let mut consent_lost = false;
        if let Some(agent) = d.ice.as_mut() {
            if agent.poll_timeout().is_some_and(|t| now >= t) {
                let before = agent.selected();
                agent.handle_timeout(now);
                consent_lost = before.is_some() && agent.selected().is_none();
            }
        }
        if consent_lost {
            self.push_event(SecureEvent::ConsentExpired);
        }
        self.drain_ice_events();
        self.drain_dtls_events();
    }
}

/// What [`SecureLeg::handle_inbound`] made of a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Decrypted RTP/RTCP to relay to the other leg; `source` passed authentication.
    Media { plain: Vec<u8>, source: SocketAddr },
    /// STUN/DTLS consumed (replies may be queued in [`SecureLeg::poll_transmit`]).
    Consumed,
    /// Dropped; counted in [`SecureStats`].
    Dropped(DropReason),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the DTLS handshake between `client` (the party) and `leg` from `now`, calling
    /// `before` ahead of each datagram the client sends; returns the time it ended at.
    fn handshake(
        leg: &mut SecureLeg,
        client: &mut DtlsEndpoint,
        party: SocketAddr,
        now: Instant,
        mut before: impl FnMut(&mut SecureLeg, Instant),
    ) -> Instant {
        let mut t = now;
        for _ in 0..200 {
            let mut moved = false;
            while let Some(d) = client.poll_transmit() {
                moved = true;
                before(leg, t);
                leg.handle_inbound(t, party, &d);
            }
            while let Some((to, d)) = leg.poll_transmit() {
                assert_eq!(to, party);
                moved = true;
                client.handle_datagram(&d, t);
            }
            if leg.is_ready() && client.state() == DtlsState::Connected {
                break;
            }
            if !moved {
                t += Duration::from_millis(500);
                client.handle_timeout(t);
                leg.handle_timeout(t);
            }
        }
        t
    }

    #[test]
    fn demux_helpers() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 0]));
        // Marker bit set on payload type 96: 0xe0 = 224 is RTP.
        assert!(!is_rtcp(&[0x80, 0xe0]));
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_client_hello(&[22; 13]));
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 1];
        assert!(is_client_hello(&hello));
        hello[4] = 1;
        assert!(!is_client_hello(&hello));
    }

    #[test]
    fn leg_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<SecureLeg>();
        send::<Inbound>();
        send::<SecureEvent>();
    }

    use crate::dtls::{DtlsCertificate, DtlsEndpoint, DtlsState};
    use crate::ice::StunMessageBuilder;
    use crate::srtp::SrtpProfile;
    use std::time::SystemTime;

    fn cert() -> DtlsCertificate {
        DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap()
    }

    fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend(std::iter::repeat_n(0x55, 160));
        p
    }

    fn rtcp_sr(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x11; 20]);
        p
    }

    /// Two SDES legs keyed for each other.
    fn sdes_pair(suite: SrtpProfile) -> (SecureLeg, SecureLeg) {
        let (a, b) = (
            SdesCrypto::generate(1, suite),
            SdesCrypto::generate(1, suite),
        );
        let now = Instant::now();
        let leg = |local: &SdesCrypto, remote: &SdesCrypto| {
            SecureLeg::new(
                LegSecurity::Sdes {
                    local: local.clone(),
                    remote: remote.clone(),
                },
                None,
                now,
            )
            .unwrap()
        };
        (leg(&a, &b), leg(&b, &a))
    }

    /// Every prefix of `d`, and `d` with each of `spots` set to 0x00 and to 0xff (where that
    /// changes it).
    fn malformed(d: &[u8], spots: &[usize]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = (0..d.len()).map(|n| d[..n].to_vec()).collect();
        for &i in spots.iter().filter(|&&i| i < d.len()) {
            for v in [0x00, 0xff].into_iter().filter(|&v| d[i] != v) {
                let mut m = d.to_vec();
                m[i] = v;
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn malformed_srtp_and_srtcp_never_panic_or_pass() {
        for suite in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
            let (mut a, mut b) = sdes_pair(suite);
            let src: SocketAddr = "192.0.2.1:4000".parse().unwrap();
            let now = Instant::now();
            let srtp = b.protect_outbound(&rtp(1, 7)).unwrap();
            let srtcp = b.protect_outbound(&rtcp_sr(7)).unwrap();
            // Truncations (header, tag, SRTCP index), CSRC count and extension bit and
            // length, RTCP length field, the E bit / index of SRTCP.
            let rtp_spots = [0, 1, 2, 11, 12, 13, srtp.len() - 1];
            let rtcp_spots = [0, 2, 3, srtcp.len() - 15, srtcp.len() - 11, srtcp.len() - 1];
            let mut cases = malformed(&srtp, &rtp_spots);
            cases.extend(malformed(&srtcp, &rtcp_spots));
            // A CSRC count and an extension that claim more than there is.
            let mut cc = srtp.clone();
            cc[0] = 0x8f;
            cases.push(cc);
            let mut ext = rtp(2, 7);
            ext[0] = 0x90;
            ext[12..16].copy_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
            cases.push(ext.clone());
            for m in &cases {
                let out = a.handle_inbound(now, src, m);
                assert!(
                    !matches!(out, Inbound::Media { .. }),
                    "{suite:?}: a malformed packet of {} bytes passed",
                    m.len()
                );
                // The same bytes as plain input for the other direction.
                let _ = a.protect_outbound(m);
            }
            assert_eq!(a.stats().srtp_in + a.stats().srtcp_in, 0);
            assert_eq!(a.destination(), None, "nothing latched");
            // The genuine packets still pass, once.
            assert!(matches!(
                a.handle_inbound(now, src, &srtp),
                Inbound::Media { .. }
            ));
            assert!(matches!(
                a.handle_inbound(now, src, &srtcp),
                Inbound::Media { .. }
            ));
            assert_eq!(a.destination(), Some(src));
            // Outbound too: a header that claims more than the packet holds is refused.
            let failed = b.stats().protect_failed;
            assert_eq!(b.protect_outbound(&ext), None);
            let mut cc = rtp(3, 7);
            cc.truncate(20);
            cc[0] = 0x8f;
            assert_eq!(b.protect_outbound(&cc), None);
            assert_eq!(b.stats().protect_failed, failed + 2);
        }
    }

    #[test]
    fn malformed_stun_and_dtls_never_panic() {
        let now = Instant::now();
        let (leg_cert, party_cert) = (Arc::new(cert()), cert());
        let party: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let mut leg = SecureLeg::new(
            LegSecurity::DtlsSrtp {
                role: Role::Server,
                certificate: Arc::clone(&leg_cert),
                remote_fingerprints: vec![party_cert.fingerprint().clone()],
                ice: Some(IceCredentials {
                    local_ufrag: "lEgA".into(),
                    local_pwd: "leg-local-ice-password-0123456789".into(),
                    remote_ufrag: "pEeR".into(),
                    remote_pwd: "peer-remote-ice-password-987654321".into(),
                }),
            },
            None,
            now,
        )
        .unwrap();
        let check = StunMessageBuilder::binding_request([7; 12])
            .username("lEgA:pEeR")
            .priority(1)
            .ice_controlling(1)
            .use_candidate()
            .build_with_integrity(b"leg-local-ice-password-0123456789");
        // Message length, attribute type and length, the integrity and fingerprint values.
        let stun_spots = [
            2,
            3,
            20,
            22,
            23,
            check.len() - 30,
            check.len() - 5,
            check.len() - 1,
        ];
        for m in malformed(&check, &stun_spots) {
            let _ = leg.handle_inbound(now, party, &m);
        }
        assert_eq!(leg.destination(), None, "no malformed check nominated");
        assert!(matches!(
            leg.handle_inbound(now, party, &check),
            Inbound::Consumed
        ));
        assert_eq!(leg.destination(), Some(party));
        while leg.poll_transmit().is_some() {}
        // DTLS from the validated address: record and handshake lengths, types, epoch.
        let mut client = DtlsEndpoint::new(
            Role::Client,
            &party_cert,
            [leg_cert.fingerprint().clone()],
            &crate::dtls::DtlsConfig::default(),
            now,
        )
        .unwrap();
        let hello = client.poll_transmit().unwrap();
        let dtls_spots = [0, 1, 4, 11, 12, 13, 16, 19, 21, 24, 25, 59, 60, 61, 62];
        for m in malformed(&hello, &dtls_spots) {
            let _ = leg.handle_inbound(now, party, &m);
            while leg.poll_transmit().is_some() {}
        }
        while leg.poll_event().is_some() {}
        // The handshake still completes.
        client.handle_datagram(&[], now);
        handshake(&mut leg, &mut client, party, now, |_, _| {});
        assert!(leg.is_ready(), "{:?}", leg.stats());
        assert_eq!(client.state(), DtlsState::Connected);
    }

    #[test]
    fn hellos_from_the_accepted_address_do_not_block_the_handshake() {
        // Without ICE, DTLS is accepted from the SDP address only; an attacker spoofing that
        // very address sends ClientHellos before and during the handshake and after it.
        let t0 = Instant::now();
        let (leg_cert, party_cert) = (Arc::new(cert()), cert());
        let party: SocketAddr = "198.51.100.9:7000".parse().unwrap();
        let mut leg = SecureLeg::new(
            LegSecurity::DtlsSrtp {
                role: Role::Server,
                certificate: Arc::clone(&leg_cert),
                remote_fingerprints: vec![party_cert.fingerprint().clone()],
                ice: None,
            },
            Some(party),
            t0,
        )
        .unwrap();
        let cfg = crate::dtls::DtlsConfig::default();
        let forged = |seq: u8| {
            let mut c = DtlsEndpoint::new(
                Role::Client,
                &cert(),
                [leg_cert.fingerprint().clone()],
                &cfg,
                t0,
            )
            .unwrap();
            let mut d = c.poll_transmit().unwrap();
            d[10] = seq;
            d
        };
        leg.handle_inbound(t0, party, &forged(0));
        let mut client = DtlsEndpoint::new(
            Role::Client,
            &party_cert,
            [leg_cert.fingerprint().clone()],
            &cfg,
            t0,
        )
        .unwrap();
        let mut n = 0u8;
        let t = handshake(&mut leg, &mut client, party, t0, |leg, t| {
            n = n.wrapping_add(1);
            leg.handle_inbound(t, party, &forged(n));
        });
        let evs: Vec<SecureEvent> = std::iter::from_fn(|| leg.poll_event()).collect();
        assert_eq!(evs, vec![SecureEvent::DtlsConnected]);
        assert_eq!(client.state(), DtlsState::Connected);
        // After connection: dropped and counted, nothing sent, keys kept.
        let before = leg.stats();
        for i in 0..5 {
            leg.handle_inbound(t, party, &forged(200 + i));
        }
        assert!(leg.poll_transmit().is_none());
        assert!(leg.poll_event().is_none());
        assert!(leg.is_ready());
        let after = leg.stats();
        assert_eq!(after.hello_ignored - before.hello_ignored, 5);
        assert_eq!(after.hello_rejected, 0, "nothing came from another address");
        let dtls = leg.dtls_stats().unwrap();
        assert_eq!(dtls.hello_drops.after_connect, 5);
        assert!(dtls.hello_verify_sent >= 2, "{dtls:?}");
    }

    #[test]
    fn unusable_sdp_addresses() {
        assert_eq!(usable(Some("0.0.0.0:4000".parse().unwrap())), None);
        assert_eq!(usable(Some("10.0.0.1:0".parse().unwrap())), None);
        let a: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        assert_eq!(usable(Some(a)), Some(a));
    }
}
