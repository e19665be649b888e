//! Our DTLS certificate (self-signed ECDSA P-256, RFC 8827 6.5 / RFC 5763 5) and SDP
//! fingerprints (`a=fingerprint`, RFC 8122).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtc_dtls::crypto::{Certificate, CryptoPrivateKey};
use rtc_dtls::crypto_provider::{default_provider, RTCCryptoProvider};

use super::DtlsError;

/// Hash functions allowed in `a=fingerprint` (RFC 8122 5, the ones seen in practice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    /// The SDP token (`sha-256`, ...).
    pub fn sdp_name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha-1",
            Self::Sha256 => "sha-256",
            Self::Sha384 => "sha-384",
            Self::Sha512 => "sha-512",
        }
    }

    /// Parses an SDP hash token, case-insensitively (RFC 8122 5: tokens are case-insensitive).
    pub fn from_sdp_name(name: &str) -> Option<Self> {
        [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|a| a.sdp_name().eq_ignore_ascii_case(name))
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn ring_algorithm(self) -> &'static ring::digest::Algorithm {
        match self {
            Self::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha384 => &ring::digest::SHA384,
            Self::Sha512 => &ring::digest::SHA512,
        }
    }

    /// Digest of `data` with this algorithm.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(self.ring_algorithm(), data)
            .as_ref()
            .to_vec()
    }
}

/// Why an `a=fingerprint` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("fingerprint has no hash algorithm or no value")]
    Missing,
    #[error("unsupported fingerprint hash algorithm {0:?}")]
    UnknownAlgorithm(String),
    #[error("fingerprint value is not colon-separated hex bytes")]
    BadHex,
    #[error("{algorithm} fingerprint must have {expected} bytes, got {got}")]
    Length {
        algorithm: &'static str,
        expected: usize,
        got: usize,
    },
}

/// A certificate fingerprint as carried in `a=fingerprint:<hash> <hex>` (RFC 8122).
///
/// Equality compares the algorithm and the digest bytes, so two fingerprints that differ only
/// in hex case or algorithm-name case are equal.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    algorithm: HashAlgorithm,
    value: Vec<u8>,
}

impl Fingerprint {
    /// The fingerprint of a DER certificate with `algorithm`.
    pub fn of_der(algorithm: HashAlgorithm, der: &[u8]) -> Self {
        Self {
            algorithm,
            value: algorithm.digest(der),
        }
    }

    /// Builds one from raw digest bytes, checking the length.
    pub fn from_bytes(algorithm: HashAlgorithm, value: &[u8]) -> Result<Self, FingerprintError> {
        if value.len() != algorithm.digest_len() {
            return Err(FingerprintError::Length {
                algorithm: algorithm.sdp_name(),
                expected: algorithm.digest_len(),
                got: value.len(),
            });
        }
        Ok(Self {
            algorithm,
            value: value.to_vec(),
        })
    }

    /// Parses the value of an `a=fingerprint` attribute (`sha-256 AB:CD:...`). Surrounding
    /// whitespace and an `a=fingerprint:` or `fingerprint:` prefix are tolerated; the hex is
    /// case-insensitive and must be two digits per byte separated by single colons.
    pub fn parse_sdp(s: &str) -> Result<Self, FingerprintError> {
        let s = s.trim();
        let s = s
            .strip_prefix("a=fingerprint:")
            .or_else(|| s.strip_prefix("fingerprint:"))
            .unwrap_or(s)
            .trim_start();
        let mut parts = s.split_ascii_whitespace();
        let (Some(alg), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(FingerprintError::Missing);
        };
        let algorithm = HashAlgorithm::from_sdp_name(alg)
            .ok_or_else(|| FingerprintError::UnknownAlgorithm(alg.to_owned()))?;
        let mut value = Vec::with_capacity(algorithm.digest_len());
        for byte in hex.split(':') {
            let b = byte.as_bytes();
            if b.len() != 2 {
                return Err(FingerprintError::BadHex);
            }
            let hi = hex_digit(b[0]).ok_or(FingerprintError::BadHex)?;
            let lo = hex_digit(b[1]).ok_or(FingerprintError::BadHex)?;
            value.push(hi << 4 | lo);
        }
        Self::from_bytes(algorithm, &value)
    }

    /// The hash algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// The digest bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// Whether `der` (a peer's certificate) has this fingerprint.
    pub fn matches_der(&self, der: &[u8]) -> bool {
        self.algorithm.digest(der) == self.value
    }

    /// The SDP form: `sha-256 AB:CD:...` (upper-case hex, as browsers write it).
    pub fn to_sdp(&self) -> String {
        self.to_string()
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm.sdp_name())?;
        f.write_str(" ")?;
        for (i, b) in self.value.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_sdp(s)
    }
}

/// Default certificate lifetime: 30 days (browsers use about a month for theirs).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// How far `not_before` is set in the past, so peers with a slow clock accept the certificate.
pub const CERT_BACKDATE: Duration = Duration::from_secs(24 * 3600);

/// A self-signed ECDSA P-256 certificate with its private key, ready for DTLS handshakes.
///
/// Cheap to clone (the key is shared). The private key never leaves the crypto provider.
#[derive(Clone)]
pub struct DtlsCertificate {
    pub(crate) inner: Certificate,
    pub(crate) provider: Arc<dyn RTCCryptoProvider>,
    der: Vec<u8>,
    fingerprint: Fingerprint,
    created: SystemTime,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl fmt::Debug for DtlsCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsCertificate")
            .field("fingerprint", &self.fingerprint)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, DtlsError> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).map_err(|_| DtlsError::Certificate("time".into()))?,
        Err(e) => -i64::try_from(e.duration().as_secs())
            .map_err(|_| DtlsError::Certificate("time".into()))?,
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| DtlsError::Certificate(format!("validity date: {e}")))
}

impl DtlsCertificate {
    /// Generates a fresh key pair and a self-signed certificate valid from `now - 1 day`
    /// ([`CERT_BACKDATE`]) to `now + lifetime`, with a random 128-bit serial number and
    /// subject `CN=portcullis`. `now` is passed in (sans-IO); callers use `SystemTime::now()`.
    pub fn generate(now: SystemTime, lifetime: Duration) -> Result<Self, DtlsError> {
        if lifetime.is_zero() {
            return Err(DtlsError::Certificate("lifetime must be positive".into()));
        }
        let provider =
            default_provider().map_err(|e| DtlsError::Certificate(format!("crypto: {e}")))?;
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| DtlsError::Certificate(format!("key generation: {e}")))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "portcullis");
        params.distinguished_name = dn;
        let not_before = now.checked_sub(CERT_BACKDATE).unwrap_or(now);
        let not_after = now
            .checked_add(lifetime)
            .ok_or_else(|| DtlsError::Certificate("lifetime too long".into()))?;
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| DtlsError::Certificate("random serial".into()))?;
        serial[0] &= 0x7f; // positive INTEGER
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| DtlsError::Certificate(format!("signing: {e}")))?;
        let der = cert.der().to_vec();
        let private_key = CryptoPrivateKey::from_key_pair(&key_pair, provider.crypto())
            .map_err(|e| DtlsError::Certificate(format!("key import: {e}")))?;
        let inner = Certificate {
            certificate: vec![cert.der().clone()],
            private_key,
        };
        Ok(Self {
            inner,
            provider,
            fingerprint: Fingerprint::of_der(HashAlgorithm::Sha256, &der),
            der,
            created: now,
            not_before,
            not_after,
        })
    }

    /// The DER encoding of the certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The SHA-256 fingerprint (what we put in `a=fingerprint`).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The fingerprint with another hash algorithm.
    pub fn fingerprint_with(&self, algorithm: HashAlgorithm) -> Fingerprint {
        Fingerprint::of_der(algorithm, &self.der)
    }

    /// When it was generated (the `now` given to [`Self::generate`]).
    pub fn created(&self) -> SystemTime {
        self.created
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// Certificate rotation policy: a certificate is used for new sessions until `rotate_after`
/// of its life has passed; then a new one is due, so no session starts with a certificate
/// close to expiry. Sessions keep the certificate they started with (its fingerprint is in
/// their SDP), so the old one stays valid for `lifetime - rotate_after` more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificatePolicy {
    /// Validity of each generated certificate.
    pub lifetime: Duration,
    /// Age after which a replacement is due (must be below `lifetime`).
    pub rotate_after: Duration,
}

impl Default for CertificatePolicy {
    fn default() -> Self {
        Self {
            lifetime: DEFAULT_CERT_LIFETIME,
            rotate_after: DEFAULT_CERT_LIFETIME / 2,
        }
    }
}

impl CertificatePolicy {
    /// A policy with `lifetime`, rotating at half of it.
    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self {
            lifetime,
            rotate_after: lifetime / 2,
        }
    }

    /// Generates a certificate under this policy.
    pub fn generate(&self, now: SystemTime) -> Result<DtlsCertificate, DtlsError> {
        if self.rotate_after >= self.lifetime {
            return Err(DtlsError::Certificate(
                "rotate_after must be shorter than the lifetime".into(),
            ));
        }
        DtlsCertificate::generate(now, self.lifetime)
    }

    /// When a replacement for `cert` is due.
    pub fn rotation_due_at(&self, cert: &DtlsCertificate) -> SystemTime {
        cert.created()
            .checked_add(self.rotate_after)
            .unwrap_or(cert.not_after())
            .min(cert.not_after())
    }

    /// Whether a new certificate should be generated at `now` (due by age, or the current one
    /// is not valid at `now`, e.g. after a clock jump).
    pub fn rotation_due(&self, cert: &DtlsCertificate, now: SystemTime) -> bool {
        now >= self.rotation_due_at(cert) || now < cert.not_before()
    }

    /// Returns `Some(new certificate)` when one is due at `now`.
    pub fn rotate_if_due(
        &self,
        cert: &DtlsCertificate,
        now: SystemTime,
    ) -> Result<Option<DtlsCertificate>, DtlsError> {
        if self.rotation_due(cert, now) {
            self.generate(now).map(Some)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parse_format_compare() {
        let hex32: Vec<String> = (0..32u8).map(|b| format!("{:02x}", b * 7)).collect();
        let lower = format!("sha-256 {}", hex32.join(":"));
        let fp = Fingerprint::parse_sdp(&lower).unwrap();
        assert_eq!(fp.algorithm(), HashAlgorithm::Sha256);
        assert_eq!(fp.value()[1], 7);
        // Written upper-case, parsed back equal; case of name and hex does not matter.
        assert_eq!(
            fp.to_sdp(),
            lower.to_uppercase().replace("SHA-256", "sha-256")
        );
        assert_eq!(Fingerprint::parse_sdp(&fp.to_sdp()).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse_sdp(&format!(
                "a=fingerprint:SHA-256 {}",
                hex32.join(":").to_uppercase()
            ))
            .unwrap(),
            fp
        );
        for (alg, n) in [("sha-1", 20), ("sha-384", 48), ("SHA-512", 64)] {
            let v = vec!["AB"; n].join(":");
            let f = Fingerprint::parse_sdp(&format!("{alg} {v}")).unwrap();
            assert_eq!(f.value().len(), n);
        }
        // Different algorithm, same bytes: not equal.
        let v20 = vec!["AB"; 20].join(":");
        assert_ne!(
            Fingerprint::parse_sdp(&format!("sha-1 {v20}")).ok(),
            Some(fp.clone())
        );
        let bad = [
            "",
            "sha-256",
            "md5 AB:CD",
            "sha-256 AB:CD",
            "sha-256 ABCD",
            "sha-256 A:BC",
            "sha-256 zz:00",
            "sha-256 AB::CD",
            "sha-256 AB:CD extra",
        ];
        for b in bad {
            assert!(Fingerprint::parse_sdp(b).is_err(), "{b:?}");
        }
        assert!(matches!(
            Fingerprint::parse_sdp("md5 AB"),
            Err(FingerprintError::UnknownAlgorithm(_))
        ));
        assert!(matches!(
            Fingerprint::parse_sdp("sha-256 AB:CD"),
            Err(FingerprintError::Length { got: 2, .. })
        ));
    }

    #[test]
    fn fingerprint_parser_survives_arbitrary_input() {
        let mut rng = crate::test_support::XorShift(0x1234_5678_9abc_def1);
        let alphabet = b"sha-1256384: \tABCDEFabcdefxyz09\x00\xff";
        for _ in 0..20_000 {
            let x = rng.next_u64();
            let len = (x % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i % 60)) as usize + i) % alphabet.len()])
                .collect();
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(f) = Fingerprint::parse_sdp(&s) {
                assert_eq!(Fingerprint::parse_sdp(&f.to_sdp()), Ok(f));
            }
        }
    }

    #[test]
    fn generated_certificate_fingerprint_and_validity() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let life = Duration::from_secs(7 * 24 * 3600);
        let c = DtlsCertificate::generate(now, life).unwrap();
        assert_eq!(c.not_after(), now + life);
        assert_eq!(c.not_before(), now - CERT_BACKDATE);
        assert!(c.fingerprint().matches_der(c.der()));
        assert_eq!(c.fingerprint().value().len(), 32);
        assert!(c.fingerprint_with(HashAlgorithm::Sha1).matches_der(c.der()));
        let d = DtlsCertificate::generate(now, life).unwrap();
        assert_ne!(c.fingerprint(), d.fingerprint(), "fresh key each time");
        assert!(!c.fingerprint().matches_der(d.der()));
        assert!(DtlsCertificate::generate(now, Duration::ZERO).is_err());
    }

    #[test]
    fn rotation_is_due_after_the_configured_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let policy = CertificatePolicy::with_lifetime(Duration::from_secs(1000));
        let c = policy.generate(now).unwrap();
        assert_eq!(policy.rotation_due_at(&c), now + Duration::from_secs(500));
        assert!(!policy.rotation_due(&c, now));
        assert!(!policy.rotation_due(&c, now + Duration::from_secs(499)));
        assert!(policy.rotation_due(&c, now + Duration::from_secs(500)));
        // A clock that jumped back before the certificate's validity.
        assert!(policy.rotation_due(&c, now - Duration::from_secs(3 * 24 * 3600)));
        assert!(policy
            .rotate_if_due(&c, now + Duration::from_secs(10))
            .unwrap()
            .is_none());
        let n = policy
            .rotate_if_due(&c, now + Duration::from_secs(600))
            .unwrap()
            .unwrap();
        assert_ne!(n.fingerprint(), c.fingerprint());
        assert_eq!(n.created(), now + Duration::from_secs(600));
        let bad = CertificatePolicy {
            lifetime: Duration::from_secs(10),
            rotate_after: Duration::from_secs(10),
        };
        assert!(bad.generate(now).is_err());
    }
}
