//! SRTP and SRTCP (RFC 3711) with the AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32
//! (RFC 4568 / RFC 5764) and AEAD_AES_128_GCM (RFC 7714) protection profiles.
//!
//! Sans-IO: an [`SrtpContext`] holds the session keys of one direction (one context protects
//! what we send, another unprotects what we receive, as in libsrtp) and per-SSRC state: the
//! rollover counter and highest sequence number (index estimation, RFC 3711 3.3.1 and
//! Appendix A), the SRTCP index, and a 128-packet replay window (RFC 3711 3.3.2).
//!
//! Packets are transformed in place in a `Vec<u8>`: protection appends the tag (and the SRTCP
//! index), unprotection verifies and truncates. No input panics; every rejection is an
//! [`SrtpError`] and leaves the context unchanged.
//!
//! Implementation: our own packet transforms on RustCrypto primitives (`aes` 0.8 with AES-NI,
//! `ghash` with PCLMULQDQ, `hmac` + `sha1` with SHA-NI, all detected at run time), chosen
//! after measuring: on the development VM it does ~2.2 M protect+unprotect pairs/s per core
//! for AES_CM_128_HMAC_SHA1_80 and ~4.3 M for AEAD_AES_128_GCM (172-byte packets), about 8x and
//! 5x Debian's libsrtp 2.5 (`cargo bench -p media-engine --bench srtp` prints both). Keystream
//! blocks are generated in batches rounded up to the AES backend's parallel width, GCM takes
//! the tag mask from the same AES batch and feeds GHASH in 4-block groups (leading zero
//! blocks, which do not change GHASH, pad the count). Interoperability is tested against
//! libsrtp (`tests/srtp_libsrtp.rs`, byte-identical output).
//!
//! Scope: key derivation rate 0 (the only one SDES and DTLS-SRTP use), no MKI, SRTCP of the
//! AES-CM profiles always carries an 80-bit tag (RFC 3711 / RFC 4568 / libsrtp behaviour).
//! New SSRCs are admitted on unprotect only once a packet from them authenticates, and at most
//! [`SrtpContext::max_streams`] of them per context.

mod crypto;
mod replay;

use subtle::ConstantTimeEq;

use crypto::{AesCm, Gcm, HmacSha1};
pub use replay::REPLAY_WINDOW;
use replay::{estimate_index, ReplayVerdict, ReplayWindow};

/// Default cap on SSRCs tracked by one context.
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Largest SRTCP index (31 bits).
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// An SRTP protection profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag.
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
    /// AES-128-GCM with a 128-bit tag (RFC 7714).
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes (14 for AES-CM, 12 for GCM).
    pub fn master_salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 12,
            _ => 14,
        }
    }

    /// Authentication tag length appended to SRTP packets.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
            Self::AeadAes128Gcm => 16,
        }
    }

    /// Authentication tag length appended to SRTCP packets (besides the 4-byte index).
    pub fn rtcp_tag_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 16,
            _ => 10,
        }
    }

    /// Bytes protection adds to an RTP packet.
    pub fn rtp_overhead(self) -> usize {
        self.rtp_tag_len()
    }

    /// Bytes protection adds to an RTCP packet.
    pub fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }

    /// The SDES crypto-suite name (RFC 4568, RFC 7714 14.2).
    pub fn sdes_name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// Parses an SDES crypto-suite name.
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        [
            Self::AesCm128HmacSha1_80,
            Self::AesCm128HmacSha1_32,
            Self::AeadAes128Gcm,
        ]
        .into_iter()
        .find(|p| p.sdes_name().eq_ignore_ascii_case(name))
    }

    /// The DTLS-SRTP protection profile identifier (RFC 5764 4.1.2, RFC 7714 14.2).
    pub fn dtls_id(self) -> u16 {
        match self {
            Self::AesCm128HmacSha1_80 => 0x0001,
            Self::AesCm128HmacSha1_32 => 0x0002,
            Self::AeadAes128Gcm => 0x0007,
        }
    }

    /// Profile for a DTLS-SRTP protection profile identifier.
    pub fn from_dtls_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Self::AesCm128HmacSha1_80),
            0x0002 => Some(Self::AesCm128HmacSha1_32),
            0x0007 => Some(Self::AeadAes128Gcm),
            _ => None,
        }
    }
}

/// Why a key was refused or a packet could not be protected or unprotected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("master key must be {expected} bytes, got {got}")]
    KeyLength { expected: usize, got: usize },
    #[error("master salt must be {expected} bytes, got {got}")]
    SaltLength { expected: usize, got: usize },
    #[error("packet too short ({len} bytes)")]
    TooShort { len: usize },
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed packet (index {index})")]
    Replayed { index: u64 },
    #[error("packet index {index} is older than the replay window")]
    TooOld { index: u64 },
    #[error("sequence number {seq} cannot be given a valid packet index")]
    BadIndex { seq: u16 },
    #[error("SRTCP index space exhausted; the context must be rekeyed")]
    IndexExhausted,
    #[error("too many SSRCs in this context (limit {limit})")]
    TooManyStreams { limit: usize },
}

/// Session keys for one of RTP or RTCP (the output of key derivation). Public so keys derived
/// elsewhere, and the RFC 7714 test vectors (which give session keys), can be used directly.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Session encryption key.
    pub enc_key: [u8; 16],
    /// Session salt (14 bytes for AES-CM, 12 for GCM).
    pub salt: Vec<u8>,
    /// Session authentication key (20 bytes for HMAC-SHA1; empty for GCM).
    pub auth_key: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

impl SessionKeys {
    /// Derives the RTP (`rtcp == false`) or RTCP session keys from a master key and salt.
    fn derive(profile: SrtpProfile, master_key: &[u8; 16], master_salt: &[u8], rtcp: bool) -> Self {
        let base = if rtcp { 3 } else { 0 };
        let mut enc_key = [0u8; 16];
        crypto::derive(master_key, master_salt, base, &mut enc_key);
        let mut salt = vec![0u8; profile.master_salt_len()];
        crypto::derive(master_key, master_salt, base + 2, &mut salt);
        let auth_key = match profile {
            SrtpProfile::AeadAes128Gcm => Vec::new(),
            _ => {
                let mut k = vec![0u8; 20];
                crypto::derive(master_key, master_salt, base + 1, &mut k);
                k
            }
        };
        Self {
            enc_key,
            salt,
            auth_key,
        }
    }
}

#[derive(Clone)]
// One per session-key set, long-lived; keeping AES-CM's schedules inline saves a pointer
// chase per packet, the size difference to the GCM variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Transform {
    Cm { aes: AesCm, auth: HmacSha1 },
    Gcm(Gcm),
}

#[derive(Clone)]
struct Keyed {
    transform: Transform,
    /// Session salt, right-padded with zeros to 14 bytes.
    salt: [u8; 14],
    tag_len: usize,
}

impl Keyed {
    fn new(profile: SrtpProfile, keys: &SessionKeys, tag_len: usize) -> Result<Self, SrtpError> {
        let want = profile.master_salt_len();
        if keys.salt.len() != want {
            return Err(SrtpError::SaltLength {
                expected: want,
                got: keys.salt.len(),
            });
        }
        let mut salt = [0u8; 14];
        salt[..want].copy_from_slice(&keys.salt);
        let transform = match profile {
            SrtpProfile::AeadAes128Gcm => {
                Transform::Gcm(Gcm::new(&keys.enc_key).ok_or(SrtpError::KeyLength {
                    expected: 16,
                    got: keys.enc_key.len(),
                })?)
            }
            _ => {
                if keys.auth_key.len() != 20 {
                    return Err(SrtpError::KeyLength {
                        expected: 20,
                        got: keys.auth_key.len(),
                    });
                }
                Transform::Cm {
                    aes: AesCm::new(&keys.enc_key),
                    auth: HmacSha1::new(&keys.auth_key),
                }
            }
        };
        Ok(Self {
            transform,
            salt,
            tag_len,
        })
    }

    fn gcm_salt(&self) -> [u8; 12] {
        let mut s = [0u8; 12];
        s.copy_from_slice(&self.salt[..12]);
        s
    }
}

/// Per-SSRC state.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// `None` until the first packet; then its highest index and replay bitmap.
    window: Option<ReplayWindow>,
    /// ROC to assume for the first packet (set by [`SrtpContext::set_roc`]).
    initial_roc: u32,
    /// Last SRTCP index sent (sender side).
    rtcp_sent: u32,
    /// SRTCP replay window (receiver side).
    rtcp_window: Option<ReplayWindow>,
}

impl Stream {
    fn new(initial_roc: u32) -> Self {
        Self {
            window: None,
            initial_roc,
            rtcp_sent: 0,
            rtcp_window: None,
        }
    }

    fn rtp_index(&self, seq: u16) -> Result<u64, SrtpError> {
        match &self.window {
            None => Ok((u64::from(self.initial_roc) << 16) | u64::from(seq)),
            Some(w) => estimate_index(w.highest(), seq).ok_or(SrtpError::BadIndex { seq }),
        }
    }
}

fn verdict_error(v: ReplayVerdict, index: u64) -> SrtpError {
    match v {
        ReplayVerdict::Replayed => SrtpError::Replayed { index },
        ReplayVerdict::TooOld => SrtpError::TooOld { index },
    }
}

/// Length of the RTP header (fixed part, CSRCs, extension), checked against the packet.
fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    if pkt.len() < 12 {
        return Err(SrtpError::TooShort { len: pkt.len() });
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let cc = usize::from(pkt[0] & 0x0f);
    let mut len = 12 + 4 * cc;
    if pkt[0] & 0x10 != 0 {
        if pkt.len() < len + 4 {
            return Err(SrtpError::TooShort { len: pkt.len() });
        }
        let words = usize::from(u16::from_be_bytes([pkt[len + 2], pkt[len + 3]]));
        len += 4 + 4 * words;
    }
    if pkt.len() < len {
        return Err(SrtpError::TooShort { len: pkt.len() });
    }
    Ok(len)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SRTP/SRTCP state for one direction of one session (one master key).
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: Keyed,
    rtcp: Keyed,
    /// Per-SSRC state; a short list (usually one or two SSRCs) scanned linearly.
    streams: Vec<(u32, Stream)>,
    max_streams: usize,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context keyed with a master key and master salt (RFC 3711 key derivation, rate 0).
    pub fn new(
        profile: SrtpProfile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SrtpError> {
        let key: &[u8; 16] = master_key.try_into().map_err(|_| SrtpError::KeyLength {
            expected: profile.master_key_len(),
            got: master_key.len(),
        })?;
        if master_salt.len() != profile.master_salt_len() {
            return Err(SrtpError::SaltLength {
                expected: profile.master_salt_len(),
                got: master_salt.len(),
            });
        }
        let rtp = SessionKeys::derive(profile, key, master_salt, false);
        let rtcp = SessionKeys::derive(profile, key, master_salt, true);
        Self::with_session_keys(profile, &rtp, &rtcp)
    }

    /// A context keyed with `key || salt` concatenated (the SDES inline key, RFC 4568).
    pub fn from_key_and_salt(profile: SrtpProfile, keying: &[u8]) -> Result<Self, SrtpError> {
        let k = profile.master_key_len();
        if keying.len() != k + profile.master_salt_len() {
            return Err(SrtpError::KeyLength {
                expected: k + profile.master_salt_len(),
                got: keying.len(),
            });
        }
        Self::new(profile, &keying[..k], &keying[k..])
    }

    /// A context keyed with already derived session keys.
    pub fn with_session_keys(
        profile: SrtpProfile,
        rtp: &SessionKeys,
        rtcp: &SessionKeys,
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            profile,
            rtp: Keyed::new(profile, rtp, profile.rtp_tag_len())?,
            rtcp: Keyed::new(profile, rtcp, profile.rtcp_tag_len())?,
            streams: Vec::new(),
            max_streams: DEFAULT_MAX_STREAMS,
        })
    }

    /// The protection profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Cap on SSRCs tracked.
    pub fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Changes the cap on SSRCs tracked (existing streams are kept).
    pub fn set_max_streams(&mut self, max: usize) {
        self.max_streams = max;
    }

    /// Number of SSRCs tracked.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Sets the rollover counter to assume for the first packet of `ssrc` (e.g. joining a
    /// stream in progress). Has no effect once that SSRC has been seen.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), SrtpError> {
        if let Some(i) = self.find(ssrc) {
            let s = &mut self.streams[i].1;
            if s.window.is_none() {
                s.initial_roc = roc;
            }
            return Ok(());
        }
        self.admit(ssrc)?;
        self.streams.push((ssrc, Stream::new(roc)));
        Ok(())
    }

    /// Sets the SRTCP index the next protected RTCP packet of `ssrc` carries (e.g. to
    /// continue a stream; 1 by default). Must be in 1..=2^31-1.
    pub fn set_srtcp_index(&mut self, ssrc: u32, next_index: u32) -> Result<(), SrtpError> {
        if next_index == 0 || next_index > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let (slot, mut stream) = self.stream(ssrc)?;
        stream.rtcp_sent = next_index - 1;
        self.store(slot, ssrc, stream);
        Ok(())
    }

    /// The rollover counter of `ssrc`, if it has been seen.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.find(ssrc)
            .and_then(|i| self.streams[i].1.window)
            .map(|w| (w.highest() >> 16) as u32)
    }

    /// Forgets the state of `ssrc`.
    pub fn remove_stream(&mut self, ssrc: u32) {
        self.streams.retain(|(s, _)| *s != ssrc);
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|(s, _)| *s == ssrc)
    }

    fn admit(&self, ssrc: u32) -> Result<(), SrtpError> {
        if self.find(ssrc).is_none() && self.streams.len() >= self.max_streams {
            return Err(SrtpError::TooManyStreams {
                limit: self.max_streams,
            });
        }
        Ok(())
    }

    /// The state of `ssrc` (a fresh one if unknown and there is room) and its slot.
    fn stream(&self, ssrc: u32) -> Result<(Option<usize>, Stream), SrtpError> {
        match self.find(ssrc) {
            Some(i) => Ok((Some(i), self.streams[i].1)),
            None => {
                self.admit(ssrc)?;
                Ok((None, Stream::new(0)))
            }
        }
    }

    fn store(&mut self, slot: Option<usize>, ssrc: u32, stream: Stream) {
        match slot {
            Some(i) => self.streams[i].1 = stream,
            None => self.streams.push((ssrc, stream)),
        }
    }

    fn rtp_iv_cm(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.rtp.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }

    fn rtp_iv_gcm(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = self.rtp.gcm_salt();
        let s = ssrc.to_be_bytes();
        let r = ((index >> 16) as u32).to_be_bytes();
        let q = (index as u16).to_be_bytes();
        let fields = [
            0, 0, s[0], s[1], s[2], s[3], r[0], r[1], r[2], r[3], q[0], q[1],
        ];
        for (b, f) in iv.iter_mut().zip(fields) {
            *b ^= f;
        }
        iv
    }

    fn rtcp_iv_cm(&self, ssrc: u32, index: u32) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.rtcp.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[10..14].iter_mut().zip(index.to_be_bytes()) {
            *b ^= s;
        }
        iv
    }

    fn rtcp_iv_gcm(&self, ssrc: u32, index: u32) -> [u8; 12] {
        let mut iv = self.rtcp.gcm_salt();
        for (b, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..12].iter_mut().zip(index.to_be_bytes()) {
            *b ^= s;
        }
        iv
    }

    /// Protects an RTP packet in place (encrypts the payload, appends the tag).
    pub fn protect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hdr = rtp_header_len(pkt)?;
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ssrc = be32(&pkt[8..12]);
        let (slot, mut stream) = self.stream(ssrc)?;
        let index = stream.rtp_index(seq)?;
        if let Some(w) = &stream.window {
            w.check(index).map_err(|v| verdict_error(v, index))?;
        }
        match &self.rtp.transform {
            Transform::Cm { aes, auth } => {
                let iv = self.rtp_iv_cm(ssrc, index);
                aes.apply_keystream(&iv, &mut pkt[hdr..]);
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = auth.mac(&[pkt, &roc]);
                pkt.extend_from_slice(&tag[..self.rtp.tag_len]);
            }
            Transform::Gcm(gcm) => {
                let iv = self.rtp_iv_gcm(ssrc, index);
                let (aad, data) = pkt.split_at_mut(hdr);
                let tag = gcm.seal(&iv, aad, data);
                pkt.extend_from_slice(&tag);
            }
        }
        stream
            .window
            .get_or_insert_with(|| ReplayWindow::starting_at(index))
            .accept(index);
        self.store(slot, ssrc, stream);
        Ok(())
    }

    /// Verifies and decrypts an SRTP packet in place (the tag is removed). On error the packet
    /// content is unspecified and the context unchanged.
    pub fn unprotect_rtp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        let hdr = rtp_header_len(pkt)?;
        let tag_len = self.rtp.tag_len;
        if pkt.len() < hdr + tag_len {
            return Err(SrtpError::TooShort { len: pkt.len() });
        }
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ssrc = be32(&pkt[8..12]);
        let (slot, mut stream) = self.stream(ssrc)?;
        let index = stream.rtp_index(seq)?;
        if let Some(w) = &stream.window {
            w.check(index).map_err(|v| verdict_error(v, index))?;
        }
        let body = pkt.len() - tag_len;
        match &self.rtp.transform {
            Transform::Cm { aes, auth } => {
                let roc = ((index >> 16) as u32).to_be_bytes();
                let tag = auth.mac(&[&pkt[..body], &roc]);
                if !bool::from(tag[..tag_len].ct_eq(&pkt[body..])) {
                    return Err(SrtpError::AuthFailed);
                }
                let iv = self.rtp_iv_cm(ssrc, index);
                aes.apply_keystream(&iv, &mut pkt[hdr..body]);
            }
            Transform::Gcm(gcm) => {
                let iv = self.rtp_iv_gcm(ssrc, index);
                let (head, rest) = pkt.split_at_mut(hdr);
                let (data, tag) = rest.split_at_mut(body - hdr);
                if !gcm.open(&iv, head, data, tag) {
                    return Err(SrtpError::AuthFailed);
                }
            }
        }
        pkt.truncate(body);
        stream
            .window
            .get_or_insert_with(|| ReplayWindow::starting_at(index))
            .accept(index);
        self.store(slot, ssrc, stream);
        Ok(())
    }

    /// Protects an RTCP compound packet in place (encrypts after the first 8 bytes, appends
    /// E flag + SRTCP index and the tag).
    pub fn protect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        if pkt.len() < 8 {
            return Err(SrtpError::TooShort { len: pkt.len() });
        }
        if pkt[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let ssrc = be32(&pkt[4..8]);
        let (slot, mut stream) = self.stream(ssrc)?;
        if stream.rtcp_sent >= MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let index = stream.rtcp_sent + 1;
        let e_index = (index | 0x8000_0000).to_be_bytes();
        match &self.rtcp.transform {
            Transform::Cm { aes, auth } => {
                let iv = self.rtcp_iv_cm(ssrc, index);
                aes.apply_keystream(&iv, &mut pkt[8..]);
                pkt.extend_from_slice(&e_index);
                let tag = auth.mac(&[pkt]);
                pkt.extend_from_slice(&tag[..self.rtcp.tag_len]);
            }
            Transform::Gcm(gcm) => {
                let iv = self.rtcp_iv_gcm(ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&pkt[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = gcm.seal(&iv, &aad, &mut pkt[8..]);
                pkt.extend_from_slice(&tag);
                pkt.extend_from_slice(&e_index);
            }
        }
        stream.rtcp_sent = index;
        self.store(slot, ssrc, stream);
        Ok(())
    }

    /// Verifies and decrypts an SRTCP packet in place (index and tag removed). Packets with
    /// the E flag clear (authenticated but not encrypted) are accepted too.
    pub fn unprotect_rtcp(&mut self, pkt: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.rtcp.tag_len;
        if pkt.len() < 8 + 4 + tag_len {
            return Err(SrtpError::TooShort { len: pkt.len() });
        }
        if pkt[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let ssrc = be32(&pkt[4..8]);
        let (slot, mut stream) = self.stream(ssrc)?;
        let gcm = matches!(self.rtcp.transform, Transform::Gcm(_));
        // AES-CM: ... | E+index | tag.  GCM: ... | tag | E+index.
        let idx_at = if gcm {
            pkt.len() - 4
        } else {
            pkt.len() - tag_len - 4
        };
        let e_index = be32(&pkt[idx_at..idx_at + 4]);
        let encrypted = e_index & 0x8000_0000 != 0;
        let index = e_index & MAX_SRTCP_INDEX;
        if let Some(w) = &stream.rtcp_window {
            w.check(u64::from(index))
                .map_err(|v| verdict_error(v, u64::from(index)))?;
        }
        let plain_len = pkt.len() - tag_len - 4;
        match &self.rtcp.transform {
            Transform::Cm { aes, auth } => {
                let tag = auth.mac(&[&pkt[..idx_at + 4]]);
                if !bool::from(tag[..tag_len].ct_eq(&pkt[idx_at + 4..])) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    let iv = self.rtcp_iv_cm(ssrc, index);
                    aes.apply_keystream(&iv, &mut pkt[8..plain_len]);
                }
            }
            Transform::Gcm(g) => {
                let iv = self.rtcp_iv_gcm(ssrc, index);
                let e_bytes = e_index.to_be_bytes();
                let (body, trailer) = pkt.split_at_mut(plain_len);
                let tag = &trailer[..tag_len];
                let ok = if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&body[..8]);
                    aad[8..].copy_from_slice(&e_bytes);
                    g.open(&iv, &aad, &mut body[8..], tag)
                } else {
                    let mut aad = Vec::with_capacity(body.len() + 4);
                    aad.extend_from_slice(body);
                    aad.extend_from_slice(&e_bytes);
                    g.open(&iv, &aad, &mut [], tag)
                };
                if !ok {
                    return Err(SrtpError::AuthFailed);
                }
            }
        }
        pkt.truncate(plain_len);
        stream
            .rtcp_window
            .get_or_insert_with(|| ReplayWindow::starting_at(u64::from(index)))
            .accept(u64::from(index));
        self.store(slot, ssrc, stream);
        Ok(())
    }
}
