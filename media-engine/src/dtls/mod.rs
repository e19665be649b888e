//! DTLS-SRTP (RFC 5763, RFC 5764, RFC 8842), sans-IO.
//!
//! - [`DtlsCertificate`]: our self-signed ECDSA P-256 certificate with a chosen lifetime, its
//!   `a=fingerprint` ([`Fingerprint`], SHA-256), and [`CertificatePolicy`] saying when a new
//!   one is due.
//! - [`Fingerprint`]: parsing and comparison of `a=fingerprint` values (sha-1, sha-256,
//!   sha-384, sha-512; hex and names case-insensitive).
//! - [`dtls_role`] / [`answer_setup`]: the `a=setup` matrix (active/passive/actpass/holdconn)
//!   giving each end the opposite [`Role`], or an error where no role can be derived.
//! - [`DtlsEndpoint`]: one association. Inputs are datagrams and timeouts with the current
//!   time; outputs are datagrams to send, the next timer, and [`DtlsEvent`]s: `Connected` with
//!   the [`SrtpKeyingMaterial`] (RFC 5764 4.2 exporter, split into client/server master key
//!   and salt, ready for [`crate::srtp::SrtpContext`]) or `Failed` with a reason (fingerprint
//!   mismatch, S-22; retransmissions exhausted; peer alert; no SRTP profile).
//!   A server endpoint runs the HelloVerifyRequest cookie exchange itself, statelessly, so
//!   ClientHellos from the peer's address that do not carry its cookie (forged, stray, bogus)
//!   never reach the handshake state; a verified ClientHello with a new random restarts the
//!   handshake, also after a failure; once connected, ClientHellos are dropped (S-23; see
//!   [`DtlsStats::hello_drops`]).
//!
//! The DTLS protocol itself is webrtc-rs's sans-IO `rtc-dtls` (the successor of the
//! tokio-based `dtls`/webrtc-dtls crate in webrtc-rs's "rtc" stack); this module configures
//! it (certificate pinning by fingerprint, `use_srtp` with AES_CM_128_HMAC_SHA1_80 and
//! AEAD_AES_128_GCM, extended master secret, client certificate required), screens datagrams
//! that are not DTLS records before they reach it, and turns its results into keys and events.
//!
//! Not here: demultiplexing one port between STUN/DTLS/SRTP (RFC 7983, the caller's job),
//! source filtering against the ClientHello race (S-23, decided by ICE above this module;
//! this module handles hellos from the accepted address), and DTLS renegotiation or
//! re-keying on a re-INVITE.

mod cert;
mod endpoint;
mod hello;
mod setup;

#[cfg(test)]
mod race_tests;

pub use cert::{
    CertificatePolicy, DtlsCertificate, Fingerprint, FingerprintError, HashAlgorithm,
    CERT_BACKDATE, DEFAULT_CERT_LIFETIME,
};
pub use endpoint::{
    DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsState, DtlsStats, FailureReason, HelloDrops,
    SrtpKeyingMaterial, SrtpMasterKey, MAX_HANDSHAKE_ATTEMPTS, MAX_RETRANSMIT_INTERVAL,
    MIN_RESTART_INTERVAL, SRTP_EXPORTER_LABEL,
};
pub use setup::{answer_setup, dtls_role, Role, Setup, SetupError};

/// Errors creating certificates or endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("DTLS configuration: {0}")]
    Config(String),
    #[error("SRTP key export: {0}")]
    KeyExport(String),
}
