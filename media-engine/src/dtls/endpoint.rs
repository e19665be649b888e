//! One DTLS-SRTP association, sans-IO, on top of `rtc-dtls`'s `Endpoint`.
//!
//! # ClientHellos from the accepted address (S-23)
//!
//! Source filtering (in `crate::secure`) only lets DTLS in from the address the peer
//! validated (ICE) or signalled (SDP). Anyone able to spoof that address can still send
//! ClientHellos, and so can a stray earlier client behind it. `rtc-dtls` keeps one state per
//! remote address and lets the first ClientHello it sees decide it: the client random, SRTP
//! profile and curve of the first hello are kept (the cookied second hello only has to carry
//! the cookie), a fatal problem in any hello fails the association, and a handshake message
//! takes its message-sequence slot for good (later ones with the same number are ignored).
//! One forged hello was enough to make the real client's handshake fail (wrong random in the
//! key exchange signature) or stall (its second hello ignored).
//!
//! So a server endpoint does the cookie exchange itself, statelessly (RFC 6347 4.2.1): a
//! ClientHello without our cookie (or with another one) is answered with a
//! HelloVerifyRequest and never reaches the library. Only a ClientHello that carries our
//! cookie, which proves its sender receives at the accepted address, starts a handshake in
//! the library: a fresh `rtc-dtls` endpoint is given the first ClientHello rebuilt from it
//! (same fields, no cookie, message sequence 0; the client must repeat every field, RFC 6347
//! 4.2.1) and then the cookied one itself. The library's cookie is made ours through the
//! random source it draws it from (see [`FixedCookieProvider`]), so its check passes and
//! its HelloVerifyRequest, identical to the one the client already has, is not sent.
//!
//! The random of the verified hello names the handshake. A verified hello with another
//! random is the peer starting over (RFC 6347 4.2.8): the library is restarted from scratch
//! (same certificate and settings) for it, also after a failed handshake, so a failure does
//! not prevent a later correct handshake before the handshake deadline. Restarts are
//! limited ([`MAX_HANDSHAKE_ATTEMPTS`] per endpoint, [`MIN_RESTART_INTERVAL`] apart). Once
//! connected, every ClientHello is dropped and counted: nothing can tear down an established
//! association (no renegotiation). The drops are counted by reason in
//! [`DtlsStats::hello_drops`].
//!
//! What this does not cover: an attacker who spoofs the accepted address and races forged
//! client flight-5 messages (Certificate, ClientKeyExchange) into the library within the
//! round trip after our ServerHelloDone can still make that handshake fail (the library
//! keeps the first message with each sequence number); the failure is reported, and the
//! peer can start over.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc_dtls::crypto_provider::{CryptoError, RTCCrypto, RTCCryptoProvider, RTCRandom};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::error::Error as LibError;
use rtc_shared::TransportProtocol;

use super::cert::{DtlsCertificate, Fingerprint};
use super::hello::{
    hello_verify_cookie, hello_verify_request, parse_client_hello, ClientHello, HelloPiece,
    HelloReassembly, COOKIE_LEN, RANDOM_LEN,
};
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

/// Handshakes a server endpoint starts over its life, the first included: a verified
/// ClientHello with a new random beyond this is dropped ([`HelloDrops::restart_limited`]).
pub const MAX_HANDSHAKE_ATTEMPTS: u32 = 8;

/// Least time between the starts of two handshakes of a server endpoint.
pub const MIN_RESTART_INTERVAL: Duration = Duration::from_millis(250);

/// Datagrams with plaintext (epoch 0) handshake records, other than ClientHellos, passed to
/// the library per handshake (it keeps stray handshake fragments, up to 2 MB). A handshake
/// needs a few per flight and retransmission.
const MAX_PLAINTEXT_HANDSHAKE_DATAGRAMS: u32 = 128;

/// Datagrams queued for sending before the oldest are discarded (the caller drains them after
/// every input; this only bounds a caller that does not).
const MAX_QUEUED_TRANSMITS: usize = 256;

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
    /// The handshake failed. A client endpoint ignores further input. A server endpoint
    /// accepts a new handshake from the peer (a ClientHello with our cookie and a new random,
    /// RFC 6347 4.2.8) until the handshake deadline, within [`MAX_HANDSHAKE_ATTEMPTS`]:
    /// `Connected` may still follow.
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
    /// HelloVerifyRequests sent by a server, statelessly, in answer to ClientHellos without
    /// our cookie (RFC 6347 4.2.1).
    pub hello_verify_sent: u64,
    /// ClientHellos kept out of the handshake, by reason.
    pub hello_drops: HelloDrops,
    /// Handshakes a server restarted from scratch for a verified ClientHello with a new
    /// random (after a failure, or the peer started over; RFC 6347 4.2.8).
    pub restarts: u64,
    /// Datagrams with plaintext handshake records dropped over the per-handshake budget.
    pub dropped_over_budget: u64,
}

/// ClientHellos that reached the endpoint (so from the accepted address) and were kept out
/// of the handshake, by reason (S-23). Cookieless ClientHellos are not counted here: a server
/// answers them with a HelloVerifyRequest ([`DtlsStats::hello_verify_sent`]) and keeps no
/// state for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HelloDrops {
    /// With a cookie that is not ours (forged or stale); answered with a HelloVerifyRequest
    /// like a cookieless one (RFC 6347 4.2.1).
    pub bad_cookie: u64,
    /// After the association was established (it is never renegotiated or replaced).
    pub after_connect: u64,
    /// Received by a client endpoint.
    pub not_server: u64,
    /// A ClientHello (or a fragment of one) that is not well formed, or too large to reassemble.
    pub unparsable: u64,
    /// A new verified handshake refused by [`MAX_HANDSHAKE_ATTEMPTS`] or
    /// [`MIN_RESTART_INTERVAL`].
    pub restart_limited: u64,
    /// A repeat of the ClientHello of a handshake that failed.
    pub after_failure: u64,
}

impl HelloDrops {
    /// All reasons together.
    pub fn total(&self) -> u64 {
        self.bad_cookie
            + self.after_connect
            + self.not_server
            + self.unparsable
            + self.restart_limited
            + self.after_failure
    }
}

/// The random source of a server's `rtc-dtls`: `inner`'s, except that a fill of exactly
/// [`COOKIE_LEN`] bytes yields the endpoint's fixed cookie. In `rtc-dtls` 0.21 that fill is
/// the HelloVerifyRequest cookie (`flight0.rs`) and the only random draw of that length
/// (the others are 28-byte randoms, 8-byte nonces, 16-byte IVs), so every restart of the
/// library expects the cookie our stateless HelloVerifyRequests hand out. The endpoint checks
/// the library's own HelloVerifyRequest against it at every handshake start (a unit test
/// too), so a library change would be noticed rather than silently break handshakes.
struct FixedCookieRandom {
    inner: Arc<dyn RTCCryptoProvider>,
    cookie: [u8; COOKIE_LEN],
}

impl RTCRandom for FixedCookieRandom {
    fn fill(&self, output: &mut [u8]) -> Result<(), CryptoError> {
        if output.len() == COOKIE_LEN {
            output.copy_from_slice(&self.cookie);
            Ok(())
        } else {
            self.inner.random().fill(output)
        }
    }
}

/// A crypto provider that is `inner` with [`FixedCookieRandom`] as its random source.
struct FixedCookieProvider {
    inner: Arc<dyn RTCCryptoProvider>,
    random: FixedCookieRandom,
}

impl RTCCryptoProvider for FixedCookieProvider {
    fn name(&self) -> &'static str {
        "portcullis-fixed-cookie"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        self.inner.crypto()
    }

    fn random(&self) -> &dyn RTCRandom {
        &self.random
    }
}

/// A server's side of the cookie exchange and of its handshake restarts.
struct HelloGuard {
    /// The cookie of every HelloVerifyRequest of this endpoint (RFC 6347 4.2.1 lets a server
    /// derive it from the client's address; there is one address here).
    cookie: [u8; COOKIE_LEN],
    /// The client random of the handshake the library has (running, done or failed).
    attempt: Option<[u8; RANDOM_LEN]>,
    /// Handshakes started.
    attempts: u32,
    /// When the latest one started.
    last_start: Option<Instant>,
    /// A fragmented ClientHello being put together.
    reassembly: HelloReassembly,
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
    /// For fresh library endpoints when a server restarts its handshake.
    handshake_config: Arc<HandshakeConfig>,
    /// Server only.
    guard: Option<HelloGuard>,
    /// The library has an association (a client's from the start, a server's from its first
    /// verified ClientHello).
    started: bool,
    /// Datagrams with plaintext handshake records (not ClientHellos) passed to the library in
    /// this handshake.
    plaintext_handshakes: u32,
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
    /// A plaintext handshake record holds a ClientHello (anywhere in the datagram).
    client_hello: bool,
    /// The datagram has a plaintext handshake record.
    plaintext_handshake: bool,
}

/// Handshake message types that may appear in plaintext (RFC 6347 4.2.2, RFC 5246 7.4).
const PLAINTEXT_HANDSHAKE_TYPES: [u8; 10] = [0, 1, 2, 3, 11, 12, 13, 14, 15, 16];

/// Checks the handshake message headers in a plaintext handshake record body (type, and
/// fragment offset/length consistent with the message length and the record). Returns the
/// first message's type and whether any message is a ClientHello.
fn check_handshake_body(mut body: &[u8]) -> Result<(u8, bool), ()> {
    const HS_HEADER: usize = 12;
    let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let mut first = None;
    let mut hello = false;
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
        hello |= body[0] == 1;
        body = &body[HS_HEADER + frag_len..];
    }
    first.map(|t| (t, hello)).ok_or(())
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
                    let (t, hello) = check_handshake_body(body)?;
                    if first {
                        info.first_handshake = Some(t);
                    }
                    info.client_hello |= hello;
                    info.plaintext_handshake = true;
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
        let is_client = role == Role::Client;
        let guard = if is_client {
            None
        } else {
            let mut cookie = [0u8; COOKIE_LEN];
            certificate
                .provider
                .random()
                .fill(&mut cookie)
                .map_err(|e| DtlsError::Config(format!("cookie: {e}")))?;
            Some(HelloGuard {
                cookie,
                attempt: None,
                attempts: 0,
                last_start: None,
                reassembly: HelloReassembly::default(),
            })
        };
        let provider: Arc<dyn RTCCryptoProvider> = match &guard {
            None => Arc::clone(&certificate.provider),
            Some(g) => Arc::new(FixedCookieProvider {
                inner: Arc::clone(&certificate.provider),
                random: FixedCookieRandom {
                    inner: Arc::clone(&certificate.provider),
                    cookie: g.cookie,
                },
            }),
        };
        let builder = ConfigBuilder::default()
            .with_crypto_provider(provider)
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
            handshake_config: Arc::clone(&handshake_config),
            guard,
            started: false,
            plaintext_handshakes: 0,
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
        let ended = match self.state {
            DtlsState::Closed => true,
            DtlsState::Failed => !self.can_restart(now),
            DtlsState::Handshaking | DtlsState::Connected => false,
        };
        if ended {
            self.stats.dropped_after_end += 1;
            return;
        }
        let Ok(info) = inspect_records(data) else {
            self.stats.dropped_malformed += 1;
            tracing::debug!(len = data.len(), "dtls: dropped malformed datagram");
            return;
        };
        if info.client_hello {
            self.on_client_hello(data, now);
            return;
        }
        if self.state == DtlsState::Failed {
            // Only a new handshake, which starts with a ClientHello, can follow a failure.
            self.stats.dropped_after_end += 1;
            return;
        }
        // A server's association starts with a ClientHello; nothing else can be meant for it
        // yet, and letting it in could leave the library's state waiting for the wrong thing.
        if !self.started {
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
        if info.plaintext_handshake {
            if self.plaintext_handshakes >= MAX_PLAINTEXT_HANDSHAKE_DATAGRAMS {
                self.stats.dropped_over_budget += 1;
                return;
            }
            self.plaintext_handshakes += 1;
        }
        self.feed(data, alert, now);
    }

    /// Hands one datagram to the library and takes in what comes out.
    fn feed(&mut self, data: &[u8], alert: Option<(u8, u8)>, now: Instant) {
        self.stats.datagrams_in += 1;
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

    /// A server may still start a handshake after a failure (see [`DtlsEvent::Failed`]).
    fn can_restart(&self, now: Instant) -> bool {
        now < self.deadline
            && self
                .guard
                .as_ref()
                .is_some_and(|g| g.attempts < MAX_HANDSHAKE_ATTEMPTS)
    }

    /// A datagram with a ClientHello in it (S-23; see the module documentation).
    fn on_client_hello(&mut self, data: &[u8], now: Instant) {
        let drops = &mut self.stats.hello_drops;
        let Some(guard) = self.guard.as_mut() else {
            drops.not_server += 1;
            return;
        };
        if self.state == DtlsState::Connected {
            drops.after_connect += 1;
            tracing::debug!("dtls: ClientHello after the association was established dropped");
            return;
        }
        // A ClientHello split over several records (Chrome's, with a post-quantum key share)
        // is checked once whole, as one unfragmented record.
        let rebuilt;
        let data = match guard.reassembly.push(data) {
            HelloPiece::Whole => data,
            HelloPiece::Complete(whole) => {
                rebuilt = whole;
                &rebuilt[..]
            }
            HelloPiece::Pending => return,
            HelloPiece::Invalid => {
                drops.unparsable += 1;
                tracing::debug!("dtls: dropped datagram with an unusable ClientHello fragment");
                return;
            }
        };
        let Some(hello) = parse_client_hello(data) else {
            drops.unparsable += 1;
            tracing::debug!("dtls: dropped datagram with an unusable ClientHello");
            return;
        };
        if hello.cookie != guard.cookie {
            // Cookieless (a first ClientHello), or a cookie that is not ours: answer
            // statelessly (RFC 6347 4.2.1). Nothing is kept, so no number of these can pin,
            // fail or stall the handshake; only the real peer receives the answer.
            if !hello.cookie.is_empty() {
                drops.bad_cookie += 1;
            }
            let answer = hello_verify_request(&guard.cookie);
            self.stats.hello_verify_sent += 1;
            self.push_transmit(answer);
            return;
        }
        // The sender received our HelloVerifyRequest at the accepted address.
        if guard.attempt == Some(hello.random) {
            if self.state == DtlsState::Failed {
                drops.after_failure += 1;
                return;
            }
            // A repeat of the running handshake's ClientHello: the library's business.
            self.feed(data, None, now);
            return;
        }
        // A new handshake: the first, or the peer starting over (RFC 6347 4.2.8).
        if guard.attempts > 0 {
            let too_soon = guard
                .last_start
                .is_some_and(|t| now < t + MIN_RESTART_INTERVAL);
            if too_soon || guard.attempts >= MAX_HANDSHAKE_ATTEMPTS {
                drops.restart_limited += 1;
                tracing::debug!(
                    attempts = guard.attempts,
                    "dtls: new handshake refused by the restart limits"
                );
                return;
            }
        }
        guard.attempt = Some(hello.random);
        guard.attempts += 1;
        guard.last_start = Some(now);
        let cookie = guard.cookie;
        if self.started {
            tracing::debug!(role = ?self.role, "dtls: peer started a new handshake; restarting");
            self.restart();
            self.stats.restarts += 1;
        }
        self.begin(&hello, data, &cookie, now);
    }

    /// Forgets the library's association: a fresh library endpoint, same settings.
    fn restart(&mut self) {
        self.endpoint = Endpoint::new(
            LOCAL,
            TransportProtocol::UDP,
            Some(Arc::clone(&self.handshake_config)),
        );
        self.state = DtlsState::Handshaking;
        self.started = false;
        self.plaintext_handshakes = 0;
        self.lib_timer = None;
        self.wake = None;
        self.backoff = 0;
        // Anything still queued belongs to the abandoned handshake.
        self.transmits.clear();
        self.verify
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure = None;
    }

    /// Starts the library's handshake from a verified (cookied) ClientHello `data`.
    fn begin(&mut self, hello: &ClientHello<'_>, data: &[u8], cookie: &[u8], now: Instant) {
        self.started = true;
        // The library wants the cookie exchange too: it gets the first ClientHello as the
        // client sent it (one record sequence number earlier, unseen by this fresh library
        // endpoint; a client whose cookied hello is its record 0 gets through on its next
        // retransmission), and answers with a HelloVerifyRequest carrying our cookie, which
        // the client already has and does not get again.
        let first = hello.without_cookie(hello.record_seq.saturating_sub(1));
        let result = self
            .endpoint
            .read(now, PEER, None, BytesMut::from(&first[..]));
        let answer: Vec<Vec<u8>> = std::iter::from_fn(|| self.endpoint.poll_transmit())
            .map(|m| m.message.to_vec())
            .collect();
        if let Err(err) = result {
            // The hello itself is unacceptable (no common SRTP profile, cipher suite...):
            // the library's alert tells the peer.
            for m in answer {
                self.push_transmit(m);
            }
            self.on_library_error(&err, None);
            return;
        }
        match answer.iter().find_map(|m| hello_verify_cookie(m)) {
            Some(c) if c == cookie => self.feed(data, None, now),
            Some(_) => {
                tracing::error!("dtls: the library's cookie is not ours; handshakes will fail");
                debug_assert!(
                    false,
                    "rtc-dtls did not draw its cookie from FixedCookieRandom"
                );
                self.feed(data, None, now);
            }
            None => {
                // The library ignored the hello (something in it that we do not check, such
                // as an extension, does not parse). Its state is unusable: forget the
                // attempt, so that the client's next ClientHello starts afresh.
                tracing::debug!("dtls: ClientHello not taken by the library");
                self.stats.hello_drops.unparsable += 1;
                self.restart();
                if let Some(guard) = self.guard.as_mut() {
                    guard.attempt = None;
                }
            }
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
            self.push_transmit(msg.message.to_vec());
        }
    }

    fn push_transmit(&mut self, datagram: Vec<u8>) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.transmits.pop_front();
        }
        self.stats.datagrams_out += 1;
        self.transmits.push_back(datagram);
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
                first_handshake: Some(1),
                client_hello: true,
                plaintext_handshake: true,
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
                first_handshake: Some(1),
                client_hello: true,
                plaintext_handshake: true,
            })
        );
        // Plaintext application data.
        let app = [23, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7];
        assert!(inspect_records(&app).is_err());
        // Not DTLS (an RTP packet).
        assert!(inspect_records(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn library_hello_verify_request_is_ours() {
        // The library, given a first ClientHello, answers with exactly the HelloVerifyRequest
        // we send statelessly: same cookie (drawn from FixedCookieRandom), same form (what
        // peers saw before we answered ourselves), record sequence 0.
        let (cs, cc) = (
            DtlsCertificate::generate(std::time::SystemTime::now(), Duration::from_secs(60))
                .unwrap(),
            DtlsCertificate::generate(std::time::SystemTime::now(), Duration::from_secs(60))
                .unwrap(),
        );
        let now = Instant::now();
        let cfg = DtlsConfig::default();
        let mut server =
            DtlsEndpoint::new(Role::Server, &cs, [cc.fingerprint().clone()], &cfg, now).unwrap();
        let mut client =
            DtlsEndpoint::new(Role::Client, &cc, [cs.fingerprint().clone()], &cfg, now).unwrap();
        let hello = client.poll_transmit().unwrap();
        let cookie = server.guard.as_ref().unwrap().cookie;
        server
            .endpoint
            .read(now, PEER, None, BytesMut::from(&hello[..]))
            .unwrap();
        let library = server.endpoint.poll_transmit().unwrap().message.to_vec();
        assert_eq!(library, hello_verify_request(&cookie));
        // A second endpoint has another cookie.
        let other =
            DtlsEndpoint::new(Role::Server, &cs, [cc.fingerprint().clone()], &cfg, now).unwrap();
        assert_ne!(other.guard.as_ref().unwrap().cookie, cookie);
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
