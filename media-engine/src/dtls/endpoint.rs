//! One DTLS-SRTP association, sans-IO, on top of `rtc-dtls`'s `Endpoint`.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn,
};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::error::Error as LibError;
use rtc_shared::TransportProtocol;

use super::cert::{DtlsCertificate, Fingerprint};
use super::setup::Role;
use super::DtlsError;
use crate::srtp::{SrtpContext, SrtpError, SrtpProfile};

/// The RFC 5764 4.2 exporter label.
pub const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The library keys associations by remote address; ours has exactly one, so a fixed
/// placeholder is used (it never reaches a socket).
const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8);

/// Cap of the doubling retransmission timeout (RFC 6347 4.2.4.1, RFC 6298's 60 s).
pub const MAX_RETRANSMIT_INTERVAL: Duration = Duration::from_secs(60);

/// Settings of a [`DtlsEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsConfig {
    /// SRTP profiles offered (client) or accepted (server), most preferred first. The client's
    /// order decides. Must not be empty. Default: AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80.
    pub srtp_profiles: Vec<SrtpProfile>,
    /// First retransmission timeout of a handshake flight (RFC 6347 4.2.4.1; default 1 s).
    /// It doubles at each retransmission of the same flight, up to
    /// [`MAX_RETRANSMIT_INTERVAL`]; after 7 retransmissions the handshake fails.
    pub retransmit_interval: Duration,
    /// Overall limit for the handshake, from [`DtlsEndpoint::new`] (default 30 s).
    pub handshake_timeout: Duration,
    /// Largest datagram we send (handshake messages are fragmented to fit; default 1200).
    pub mtu: usize,
    /// Require the extended master secret (RFC 7627; browsers, OpenSSL and aiortc all do it).
    /// Default true.
    pub require_extended_master_secret: bool,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        Self {
            srtp_profiles: vec![SrtpProfile::AeadAes128Gcm, SrtpProfile::AesCm128HmacSha1_80],
            retransmit_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(30),
            mtu: 1200,
            require_extended_master_secret: true,
        }
    }
}

fn to_lib_profile(p: SrtpProfile) -> SrtpProtectionProfile {
    match p {
        SrtpProfile::AesCm128HmacSha1_80 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        SrtpProfile::AesCm128HmacSha1_32 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
        SrtpProfile::AeadAes128Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
    }
}

fn from_lib_profile(p: SrtpProtectionProfile) -> Option<SrtpProfile> {
    match p {
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
            Some(SrtpProfile::AesCm128HmacSha1_80)
        }
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => {
            Some(SrtpProfile::AesCm128HmacSha1_32)
        }
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Some(SrtpProfile::AeadAes128Gcm),
        _ => None,
    }
}

/// A master key and salt for one direction (RFC 5764 4.2).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpMasterKey {
    /// Master key (16 bytes for the supported profiles).
    pub key: Vec<u8>,
    /// Master salt (14 bytes for AES-CM, 12 for GCM).
    pub salt: Vec<u8>,
}

impl fmt::Debug for SrtpMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SrtpMasterKey(<redacted>)")
    }
}

/// The SRTP keys of a completed DTLS-SRTP handshake.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SrtpKeyingMaterial {
    /// Negotiated protection profile.
    pub profile: SrtpProfile,
    /// Our role in the handshake.
    pub role: Role,
    /// What the DTLS client protects with (and the server unprotects with).
    pub client_write: SrtpMasterKey,
    /// What the DTLS server protects with (and the client unprotects with).
    pub server_write: SrtpMasterKey,
}

impl SrtpKeyingMaterial {
    /// Splits exported keying material `client_key | server_key | client_salt | server_salt`
    /// (RFC 5764 4.2).
    pub fn from_exported(
        profile: SrtpProfile,
        role: Role,
        material: &[u8],
    ) -> Result<Self, DtlsError> {
        let k = profile.master_key_len();
        let s = profile.master_salt_len();
        if material.len() != 2 * (k + s) {
            return Err(DtlsError::KeyExport(format!(
                "expected {} bytes of keying material, got {}",
                2 * (k + s),
                material.len()
            )));
        }
        let (ck, rest) = material.split_at(k);
        let (sk, rest) = rest.split_at(k);
        let (cs, ss) = rest.split_at(s);
        Ok(Self {
            profile,
            role,
            client_write: SrtpMasterKey {
                key: ck.to_vec(),
                salt: cs.to_vec(),
            },
            server_write: SrtpMasterKey {
                key: sk.to_vec(),
                salt: ss.to_vec(),
            },
        })
    }

    /// The keys we protect with.
    pub fn local(&self) -> &SrtpMasterKey {
        match self.role {
            Role::Client => &self.client_write,
            Role::Server => &self.server_write,
        }
    }

    /// The keys the peer protects with.
    pub fn remote(&self) -> &SrtpMasterKey {
        match self.role {
            Role::Client => &self.server_write,
            Role::Server => &self.client_write,
        }
    }

    /// A context that protects what we send (SRTP and SRTCP).
    pub fn outbound_context(&self) -> Result<SrtpContext, SrtpError> {
        let k = self.local();
        SrtpContext::new(self.profile, &k.key, &k.salt)
    }

    /// A context that unprotects what the peer sends.
    pub fn inbound_context(&self) -> Result<SrtpContext, SrtpError> {
        let k = self.remote();
        SrtpContext::new(self.profile, &k.key, &k.salt)
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    /// The peer's certificate does not have the fingerprint signalled in its SDP (S-22).
    #[error("peer certificate fingerprint {got} matches none of the SDP's {expected:?}")]
    FingerprintMismatch {
        /// The SDP's fingerprints that were checked (those with the strongest hash offered).
        expected: Vec<Fingerprint>,
        /// The peer certificate's fingerprint with that hash.
        got: Fingerprint,
    },
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The peer sent a fatal alert (e.g. it rejected our fingerprint).
    #[error("peer sent fatal alert {0}")]
    PeerAlert(String),
    /// The handshake completed without an SRTP profile we accept (no `use_srtp`).
    #[error("no SRTP protection profile was negotiated")]
    NoSrtpProfile,
    /// Flights went unanswered through every retransmission.
    #[error("handshake retransmissions exhausted")]
    RetransmissionsExhausted,
    /// The handshake did not complete within [`DtlsConfig::handshake_timeout`].
    #[error("handshake timed out")]
    Timeout,
    /// Any other protocol failure reported by the DTLS library.
    #[error("handshake failed: {0}")]
    Protocol(String),
}

/// What the endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// The handshake completed and the peer's certificate matched its fingerprint.
    Connected(SrtpKeyingMaterial),
    /// The handshake failed; the endpoint ignores further input.
    Failed(FailureReason),
    /// The peer closed the association (close_notify) after it was established.
    Closed,
}

/// Where the association stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsState {
    Handshaking,
    Connected,
    Failed,
    Closed,
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtlsStats {
    /// Datagrams that were not well-formed DTLS records and were dropped unseen by the library
    /// (RFC 6347 4.1.2.7).
    pub dropped_malformed: u64,
    /// Datagrams received after the association failed or closed.
    pub dropped_after_end: u64,
    /// Application data records received (we carry none; they are discarded).
    pub application_data: u64,
    /// Datagrams handed to the DTLS library.
    pub datagrams_in: u64,
    /// Datagrams produced for sending.
    pub datagrams_out: u64,
}

/// What the certificate check found, shared with the verification callback.
#[derive(Default)]
struct VerifyOutcome {
    failure: Option<FailureReason>,
}

/// A sans-IO DTLS-SRTP endpoint for one association.
///
/// Inputs: [`handle_datagram`](Self::handle_datagram) and
/// [`handle_timeout`](Self::handle_timeout), each with the current time. Outputs:
/// [`poll_transmit`](Self::poll_transmit) (datagrams to send to the peer),
/// [`poll_timeout`](Self::poll_timeout) (when to call `handle_timeout` next) and
/// [`poll_event`](Self::poll_event). Drain all three after every input.
///
/// A client sends its first flight from [`new`](Self::new); a server waits for the
/// ClientHello. Either way the peer must present a certificate whose fingerprint equals the
/// one from its SDP (the server requests the client's certificate), or the handshake fails
/// with [`FailureReason::FingerprintMismatch`].
pub struct DtlsEndpoint {
    role: Role,
    endpoint: Endpoint,
    started: bool,
    state: DtlsState,
    deadline: Instant,
    /// Retransmission backoff (RFC 6347 4.2.4.1). `rtc-dtls` re-arms its timer at a fixed
    /// interval; we call its `handle_timeout` only at `wake`, which doubles per
    /// retransmission of one flight. `lib_timer` is the library's timer as last seen: when it
    /// changes other than through our timeout call, a new flight went out and backoff resets.
    retransmit_interval: Duration,
    lib_timer: Option<Instant>,
    wake: Option<Instant>,
    backoff: u32,
    accepted_profiles: Vec<SrtpProfile>,
    verify: Arc<Mutex<VerifyOutcome>>,
    events: VecDeque<DtlsEvent>,
    transmits: VecDeque<Vec<u8>>,
    stats: DtlsStats,
}

impl fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// What [`inspect_records`] found in a well-formed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct RecordInfo {
    /// The first plaintext (epoch 0) alert: (level, description).
    alert: Option<(u8, u8)>,
    /// The type of the first plaintext handshake message, if the first record is one.
    first_handshake: Option<u8>,
}

/// Handshake message types that may appear in plaintext (RFC 6347 4.2.2, RFC 5246 7.4).
const PLAINTEXT_HANDSHAKE_TYPES: [u8; 10] = [0, 1, 2, 3, 11, 12, 13, 14, 15, 16];

/// Checks the handshake message headers in a plaintext handshake record body (type, and
/// fragment offset/length consistent with the message length and the record).
fn check_handshake_body(mut body: &[u8]) -> Result<u8, ()> {
    const HS_HEADER: usize = 12;
    let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let mut first = None;
    if body.is_empty() {
        return Err(());
    }
    while !body.is_empty() {
        if body.len() < HS_HEADER || !PLAINTEXT_HANDSHAKE_TYPES.contains(&body[0]) {
            return Err(());
        }
        let length = u24(&body[1..4]);
        let offset = u24(&body[6..9]);
        let frag_len = u24(&body[9..12]);
        if offset.checked_add(frag_len).is_none_or(|end| end > length) {
            return Err(());
        }
        let frag_len = usize::try_from(frag_len).map_err(|_| ())?;
        if body.len() - HS_HEADER < frag_len {
            return Err(());
        }
        first.get_or_insert(body[0]);
        body = &body[HS_HEADER + frag_len..];
    }
    first.ok_or(())
}

/// A sanity look at a datagram before the library sees it: a sequence of DTLS 1.x records
/// (content type 20..=23, version 254.x, lengths that add up), plaintext handshake records
/// with consistent message headers, plaintext alerts of two bytes, no plaintext application
/// data. `Err` for anything else (it is dropped, RFC 6347 4.1.2.7).
fn inspect_records(mut data: &[u8]) -> Result<RecordInfo, ()> {
    const HEADER: usize = 13;
    if data.is_empty() {
        return Err(());
    }
    let mut info = RecordInfo::default();
    let mut first = true;
    while !data.is_empty() {
        if data.len() < HEADER {
            return Err(());
        }
        let content_type = data[0];
        if !(20..=23).contains(&content_type) || data[1] != 0xfe {
            return Err(());
        }
        let epoch = u16::from_be_bytes([data[3], data[4]]);
        let len = usize::from(u16::from_be_bytes([data[11], data[12]]));
        let body = data.get(HEADER..HEADER + len).ok_or(())?;
        if epoch == 0 {
            match content_type {
                // Application data is never plaintext.
                23 => return Err(()),
                21 => {
                    let [level, desc] = body else { return Err(()) };
                    info.alert.get_or_insert((*level, *desc));
                }
                22 => {
                    let t = check_handshake_body(body)?;
                    if first {
                        info.first_handshake = Some(t);
                    }
                }
                _ => {}
            }
        }
        first = false;
        data = &data[HEADER + len..];
    }
    Ok(info)
}

/// The name of a TLS alert description (RFC 5246 7.2).
fn alert_name(desc: u8) -> String {
    let name = match desc {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        110 => "unsupported_extension",
        _ => return format!("alert {desc}"),
    };
    name.to_owned()
}

impl DtlsEndpoint {
    /// Creates an endpoint in `role` with our certificate, checking the peer against
    /// `remote_fingerprints` (its `a=fingerprint` lines, at least one). As RFC 8122 5 says,
    /// the strongest hash function among them is used and the peer's certificate must match
    /// one of the fingerprints made with it. A client queues its ClientHello now.
    pub fn new(
        role: Role,
        certificate: &DtlsCertificate,
        remote_fingerprints: impl IntoIterator<Item = Fingerprint>,
        config: &DtlsConfig,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        if config.srtp_profiles.is_empty() {
            return Err(DtlsError::Config("no SRTP profile configured".into()));
        }
        let offered: Vec<Fingerprint> = remote_fingerprints.into_iter().collect();
        let strongest = offered
            .iter()
            .map(|f| f.algorithm())
            .max_by_key(|a| a.digest_len())
            .ok_or_else(|| DtlsError::Config("no remote fingerprint".into()))?;
        let expected: Vec<Fingerprint> = offered
            .into_iter()
            .filter(|f| f.algorithm() == strongest)
            .collect();
        let verify = Arc::new(Mutex::new(VerifyOutcome::default()));
        let cb_verify = Arc::clone(&verify);
        let verifier: VerifyPeerCertificateFn = Arc::new(move |certs: &[Vec<u8>], _chains| {
            let failure = match certs.first() {
                None => FailureReason::NoPeerCertificate,
                Some(leaf) => {
                    let got = Fingerprint::of_der(strongest, leaf);
                    if expected.contains(&got) {
                        return Ok(());
                    }
                    FailureReason::FingerprintMismatch {
                        expected: expected.clone(),
                        got,
                    }
                }
            };
            let message = failure.to_string();
            cb_verify
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .failure = Some(failure);
            Err(LibError::Other(message))
        });
        let builder = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&certificate.provider))
            .with_certificates(vec![certificate.inner.clone()])
            .with_srtp_protection_profiles(
                config
                    .srtp_profiles
                    .iter()
                    .map(|p| to_lib_profile(*p))
                    .collect(),
            )
            .with_extended_master_secret(if config.require_extended_master_secret {
                ExtendedMasterSecretType::Require
            } else {
                ExtendedMasterSecretType::Request
            })
            // No CA chain: the peer's self-signed certificate is pinned by its fingerprint.
            .with_insecure_skip_verify(true)
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_verify_peer_certificate(Some(verifier))
            .with_flight_interval(config.retransmit_interval)
            .with_mtu(config.mtu)
            .with_server_name("portcullis".to_owned());
        let is_client = role == Role::Client;
        let handshake_config = Arc::new(
            builder
                .build(is_client, Some(PEER))
                .map_err(|e| DtlsError::Config(e.to_string()))?,
        );
        let mut me = Self {
            role,
            endpoint: Endpoint::new(
                LOCAL,
                TransportProtocol::UDP,
                (!is_client).then(|| Arc::clone(&handshake_config)),
            ),
            started: false,
            state: DtlsState::Handshaking,
            deadline: now + config.handshake_timeout,
            retransmit_interval: config.retransmit_interval,
            lib_timer: None,
            wake: None,
            backoff: 0,
            accepted_profiles: config.srtp_profiles.clone(),
            verify,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            stats: DtlsStats::default(),
        };
        if is_client {
            me.endpoint
                .connect(now, PEER, handshake_config, None)
                .map_err(|e| DtlsError::Config(e.to_string()))?;
            me.started = true;
            me.collect_transmits();
            me.sync_timer();
        }
        Ok(me)
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the association stands.
    pub fn state(&self) -> DtlsState {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> DtlsStats {
        self.stats
    }

    /// Feeds one datagram received from the peer (already demultiplexed as DTLS, RFC 7983).
    pub fn handle_datagram(&mut self, data: &[u8], now: Instant) {
        if matches!(self.state, DtlsState::Failed | DtlsState::Closed) {
            self.stats.dropped_after_end += 1;
            return;
        }
        let Ok(info) = inspect_records(data) else {
            self.stats.dropped_malformed += 1;
            tracing::debug!(len = data.len(), "dtls: dropped malformed datagram");
            return;
        };
        // A server's association starts with a ClientHello; nothing else can be meant for it
        // yet, and letting it in could leave the library's state waiting for the wrong thing.
        if !self.started && info.first_handshake != Some(1) {
            self.stats.dropped_malformed += 1;
            tracing::debug!("dtls: dropped datagram before any ClientHello");
            return;
        }
        let alert = info.alert;
        if let Some((level, desc)) = alert {
            // A plaintext warning alert other than close_notify means nothing before the
            // handshake is done (and cannot be authentic after): drop it.
            if level != 2 && desc != 0 {
                self.stats.dropped_malformed += 1;
                return;
            }
        }
        self.stats.datagrams_in += 1;
        self.started = true;
        let result = self.endpoint.read(now, PEER, None, BytesMut::from(data));
        self.collect_transmits();
        self.sync_timer();
        match result {
            Ok(events) => {
                for ev in events {
                    self.on_library_event(ev, now);
                }
            }
            Err(err) => self.on_library_error(&err, alert),
        }
    }

    /// Drives retransmission and the handshake deadline; call at [`Self::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != DtlsState::Handshaking {
            return;
        }
        if now >= self.deadline {
            self.fail(FailureReason::Timeout);
            return;
        }
        if !self.started || self.wake.is_none_or(|w| now < w) {
            return;
        }
        let result = self.endpoint.handle_timeout(PEER, now);
        self.collect_transmits();
        if let Err(err) = result {
            tracing::debug!(%err, "dtls: handshake timeout");
            self.fail(FailureReason::RetransmissionsExhausted);
            return;
        }
        self.backoff = (self.backoff + 1).min(16);
        self.lib_timer = self.endpoint.poll_timeout(&PEER);
        let interval = self
            .retransmit_interval
            .saturating_mul(1 << self.backoff)
            .min(MAX_RETRANSMIT_INTERVAL.max(self.retransmit_interval));
        // Never before the library's own timer (it ignores calls until then).
        self.wake = self.lib_timer.map(|t| t.max(now + interval));
    }

    fn sync_timer(&mut self) {
        let t = self.endpoint.poll_timeout(&PEER);
        if t != self.lib_timer {
            self.lib_timer = t;
            self.wake = t;
            self.backoff = 0;
        }
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != DtlsState::Handshaking {
            return None;
        }
        Some(self.wake.map_or(self.deadline, |t| t.min(self.deadline)))
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Sends close_notify (if the association exists) and ends it.
    pub fn close(&mut self, now: Instant) {
        if self.started {
            let _ = self.endpoint.stop(now, PEER);
            self.collect_transmits();
        }
        if self.state == DtlsState::Handshaking || self.state == DtlsState::Connected {
            self.state = DtlsState::Closed;
        }
    }

    fn collect_transmits(&mut self) {
        while let Some(msg) = self.endpoint.poll_transmit() {
            self.stats.datagrams_out += 1;
            self.transmits.push_back(msg.message.to_vec());
        }
    }

    fn fail(&mut self, reason: FailureReason) {
        if self.state == DtlsState::Handshaking {
            tracing::info!(role = ?self.role, %reason, "dtls: handshake failed");
            self.state = DtlsState::Failed;
            self.events.push_back(DtlsEvent::Failed(reason));
        }
    }

    fn on_library_event(&mut self, ev: EndpointEvent, now: Instant) {
        match ev {
            EndpointEvent::HandshakeComplete => match self.export_keys() {
                Ok(keys) => {
                    tracing::debug!(role = ?self.role, profile = ?keys.profile, "dtls: connected");
                    self.state = DtlsState::Connected;
                    self.events.push_back(DtlsEvent::Connected(keys));
                }
                Err(reason) => {
                    self.fail(reason);
                    // Tell the peer too; it may otherwise send SRTP nobody can read.
                    let _ = self.endpoint.stop(now, PEER);
                    self.collect_transmits();
                }
            },
            EndpointEvent::ApplicationData(_) => self.stats.application_data += 1,
            EndpointEvent::PeerClosed => {
                if self.state == DtlsState::Connected {
                    self.state = DtlsState::Closed;
                    self.events.push_back(DtlsEvent::Closed);
                } else {
                    self.fail(FailureReason::PeerAlert(alert_name(0)));
                }
            }
            _ => {}
        }
    }

    fn on_library_error(&mut self, err: &LibError, alert: Option<(u8, u8)>) {
        if self.state != DtlsState::Handshaking {
            // Established: the library already discards what it cannot authenticate; what is
            // left (e.g. an encrypted fatal alert) ends the association.
            tracing::debug!(%err, "dtls: error on established association");
            if matches!(err, LibError::ErrAlertFatalOrClose) {
                self.state = DtlsState::Closed;
                self.events.push_back(DtlsEvent::Closed);
            }
            return;
        }
        let verified = self
            .verify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure
            .take();
        let reason = if let Some(reason) = verified {
            reason
        } else if let Some((_, desc)) = alert {
            FailureReason::PeerAlert(alert_name(desc))
        } else {
            FailureReason::Protocol(err.to_string())
        };
        self.fail(reason);
    }

    fn export_keys(&self) -> Result<SrtpKeyingMaterial, FailureReason> {
        let state = self
            .endpoint
            .get_connection_state(PEER)
            .ok_or_else(|| FailureReason::Protocol("association vanished".into()))?;
        let profile = from_lib_profile(state.srtp_protection_profile())
            .filter(|p| self.accepted_profiles.contains(p))
            .ok_or(FailureReason::NoSrtpProfile)?;
        let len = 2 * (profile.master_key_len() + profile.master_salt_len());
        let material = state
            .export_keying_material(SRTP_EXPORTER_LABEL, &[], len)
            .map_err(|e| FailureReason::Protocol(format!("key export: {e}")))?;
        SrtpKeyingMaterial::from_exported(profile, self.role, material.as_ref())
            .map_err(|e| FailureReason::Protocol(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_inspection() {
        assert!(inspect_records(&[]).is_err());
        assert!(inspect_records(&[22; 12]).is_err());
        // Handshake record, epoch 0, 1-byte body.
        let hs = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7];
        assert!(
            inspect_records(&hs).is_err(),
            "handshake body shorter than its header"
        );
        // A ClientHello fragment: type 1, length 3, offset 0, fragment length 3.
        let mut ch = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15];
        ch.extend_from_slice(&[1, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0xfe, 0xfd, 0]);
        assert_eq!(
            inspect_records(&ch),
            Ok(RecordInfo {
                alert: None,
                first_handshake: Some(1)
            })
        );
        // Fragment beyond the message length.
        let mut bad = ch.clone();
        bad[13 + 8] = 9;
        assert!(inspect_records(&bad).is_err());
        // Unknown handshake type.
        let mut bad = ch.clone();
        bad[13] = 99;
        assert!(inspect_records(&bad).is_err());
        // Length beyond the datagram.
        let mut long = hs;
        long[12] = 2;
        assert!(inspect_records(&long).is_err());
        // Two records, second a fatal alert.
        let mut two = ch.clone();
        two.extend_from_slice(&[21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 42]);
        assert_eq!(
            inspect_records(&two),
            Ok(RecordInfo {
                alert: Some((2, 42)),
                first_handshake: Some(1)
            })
        );
        // Plaintext application data.
        let app = [23, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7];
        assert!(inspect_records(&app).is_err());
        // Not DTLS (an RTP packet).
        assert!(inspect_records(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn exported_material_split() {
        let m: Vec<u8> = (0..60).collect();
        let k =
            SrtpKeyingMaterial::from_exported(SrtpProfile::AesCm128HmacSha1_80, Role::Client, &m)
                .unwrap();
        assert_eq!(k.client_write.key, (0..16).collect::<Vec<u8>>());
        assert_eq!(k.server_write.key, (16..32).collect::<Vec<u8>>());
        assert_eq!(k.client_write.salt, (32..46).collect::<Vec<u8>>());
        assert_eq!(k.server_write.salt, (46..60).collect::<Vec<u8>>());
        assert_eq!(k.local(), &k.client_write);
        let g: Vec<u8> = (0..56).collect();
        let k = SrtpKeyingMaterial::from_exported(SrtpProfile::AeadAes128Gcm, Role::Server, &g)
            .unwrap();
        assert_eq!(k.client_write.salt, (32..44).collect::<Vec<u8>>());
        assert_eq!(k.server_write.salt, (44..56).collect::<Vec<u8>>());
        assert_eq!(k.local(), &k.server_write);
        assert!(
            SrtpKeyingMaterial::from_exported(SrtpProfile::AeadAes128Gcm, Role::Server, &m)
                .is_err()
        );
    }
}
