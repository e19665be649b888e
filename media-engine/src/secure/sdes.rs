//! SDES `a=crypto` attributes (RFC 4568, RFC 7714 14.2).

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

use super::SecureError;
use crate::srtp::SrtpProfile;

/// Standard alphabet; padding optional on input (some devices omit it), written on output.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One `a=crypto` attribute value: `<tag> <crypto-suite> inline:<key||salt>[|lifetime][|MKI:len]
/// [session-params]`.
///
/// Supported: the suites of [`SrtpProfile`] (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32,
/// AEAD_AES_128_GCM), one key parameter, a lifetime (`|2^31` or decimal; checked for syntax
/// and otherwise ignored: we never rekey, and a call does not come near 2^31 packets), the
/// session parameters `WSH=` (window size hint; ignored, our window is 128), `KDR=0` and
/// `FEC_ORDER=`. Refused with an error (the caller may pick another `a=crypto` line):
/// an MKI (our SRTP carries none), several key parameters, `KDR` other than 0,
/// `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`, `UNAUTHENTICATED_SRTP`, `FEC_KEY` and any unknown
/// session parameter (RFC 4568 6.3: an attribute whose parameters are not understood is not
/// usable).
#[derive(Clone, PartialEq, Eq)]
pub struct SdesCrypto {
    /// The attribute's tag (decimal, up to 9 digits).
    pub tag: u32,
    /// The crypto suite.
    pub suite: SrtpProfile,
    /// Master key followed by master salt (30 bytes for AES-CM, 28 for GCM).
    pub key_salt: Vec<u8>,
}

impl fmt::Debug for SdesCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesCrypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key_salt", &"<redacted>")
            .finish()
    }
}

fn bad(what: &str) -> SecureError {
    SecureError::Crypto(what.to_owned())
}

/// Checks the `|lifetime` of a key parameter: decimal or `2^n`.
fn check_lifetime(s: &str) -> Result<(), SecureError> {
    let digits = s.strip_prefix("2^").unwrap_or(s);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("bad key lifetime"));
    }
    Ok(())
}

impl SdesCrypto {
    /// Key plus salt length of a suite.
    pub fn key_salt_len(suite: SrtpProfile) -> usize {
        suite.master_key_len() + suite.master_salt_len()
    }

    /// Parses the value of an `a=crypto` attribute (what follows `a=crypto:`).
    pub fn parse(attr_value: &str) -> Result<SdesCrypto, SecureError> {
        let mut fields = attr_value.split_ascii_whitespace();
        let tag_s = fields.next().ok_or_else(|| bad("empty attribute"))?;
        if tag_s.is_empty() || tag_s.len() > 9 || !tag_s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("bad tag"));
        }
        let tag: u32 = tag_s.parse().map_err(|_| bad("bad tag"))?;
        let suite_s = fields.next().ok_or_else(|| bad("missing crypto suite"))?;
        let suite = SrtpProfile::from_sdes_name(suite_s)
            .ok_or_else(|| SecureError::UnsupportedSuite(suite_s.to_owned()))?;
        let key_params = fields.next().ok_or_else(|| bad("missing key parameters"))?;
        if key_params.contains(';') {
            return Err(SecureError::Unsupported(
                "several key parameters (MKI)".into(),
            ));
        }
        let (method, info) = key_params
            .split_once(':')
            .ok_or_else(|| bad("key parameter without method"))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SecureError::Unsupported(format!("key method {method}")));
        }
        let mut parts = info.split('|');
        let key_b64 = parts.next().unwrap_or_default();
        let mut seen_lifetime = false;
        for p in parts {
            if p.contains(':') {
                return Err(SecureError::Unsupported(format!("MKI {p}")));
            }
            if seen_lifetime {
                return Err(bad("two key lifetimes"));
            }
            check_lifetime(p)?;
            seen_lifetime = true;
        }
        let key_salt = DECODER
            .decode(key_b64)
            .map_err(|_| bad("key is not valid base64"))?;
        let want = Self::key_salt_len(suite);
        if key_salt.len() != want {
            return Err(SecureError::KeyLength {
                expected: want,
                got: key_salt.len(),
            });
        }
        for param in fields {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name.to_ascii_uppercase().as_str() {
                "WSH" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad("bad WSH"));
                    }
                }
                "FEC_ORDER" => {}
                "KDR" if value == "0" => {}
                _ => {
                    return Err(SecureError::Unsupported(format!(
                        "session parameter {param}"
                    )))
                }
            }
        }
        Ok(SdesCrypto {
            tag,
            suite,
            key_salt,
        })
    }

    /// The attribute value: `<tag> <suite> inline:<base64 key||salt>`.
    pub fn to_attr_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.sdes_name(),
            STANDARD.encode(&self.key_salt)
        )
    }

    /// A fresh random master key and salt for our side (from the OS random generator).
    ///
    /// # Panics
    /// If the operating system's random generator fails (`getrandom(2)`, which does not fail
    /// on Linux once the system has booted). Keys are never made from anything weaker.
    pub fn generate(tag: u32, suite: SrtpProfile) -> SdesCrypto {
        let mut key_salt = vec![0u8; Self::key_salt_len(suite)];
        #[allow(clippy::expect_used)]
        SystemRandom::new()
            .fill(&mut key_salt)
            .expect("the OS random number generator failed");
        SdesCrypto {
            tag,
            suite,
            key_salt,
        }
    }

    /// The master key part.
    pub fn master_key(&self) -> &[u8] {
        let k = self.suite.master_key_len().min(self.key_salt.len());
        &self.key_salt[..k]
    }

    /// The master salt part.
    pub fn master_salt(&self) -> &[u8] {
        let k = self.suite.master_key_len().min(self.key_salt.len());
        &self.key_salt[k..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4568_example_parses() {
        // RFC 4568 section 4 (the MKI-less form) and a lifetime.
        let c = SdesCrypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, SrtpProfile::AesCm128HmacSha1_80);
        assert_eq!(c.key_salt.len(), 30);
        assert_eq!(c.master_key().len(), 16);
        assert_eq!(c.master_salt().len(), 14);
        assert_eq!(&c.key_salt[..4], b"=-n@");
        assert_eq!(
            c.to_attr_value(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
        );
    }

    #[test]
    fn gcm_and_session_params() {
        let g = SdesCrypto::generate(7, SrtpProfile::AeadAes128Gcm);
        assert_eq!(g.key_salt.len(), 28);
        let back = SdesCrypto::parse(&g.to_attr_value()).unwrap();
        assert_eq!(back, g);
        let v = format!("{} WSH=64 KDR=0 FEC_ORDER=FEC_SRTP", g.to_attr_value());
        assert_eq!(SdesCrypto::parse(&v).unwrap(), g);
        // Unpadded base64 is accepted.
        let unpadded = g.to_attr_value().trim_end_matches('=').to_owned();
        assert_eq!(SdesCrypto::parse(&unpadded).unwrap(), g);
        // Two generated keys differ.
        assert_ne!(
            SdesCrypto::generate(7, SrtpProfile::AeadAes128Gcm).key_salt,
            g.key_salt
        );
    }

    #[test]
    fn refusals() {
        let k = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        for (v, why) in [
            (String::new(), "empty"),
            (format!("x AES_CM_128_HMAC_SHA1_80 {k}"), "tag"),
            (
                format!("1234567890 AES_CM_128_HMAC_SHA1_80 {k}"),
                "tag length",
            ),
            (format!("1 AES_256_CM_HMAC_SHA1_80 {k}"), "suite"),
            ("1 AES_CM_128_HMAC_SHA1_80".to_owned(), "no key"),
            (format!("1 AES_CM_128_HMAC_SHA1_80 {k}|2^20|1:4"), "MKI"),
            (format!("1 AES_CM_128_HMAC_SHA1_80 {k}|1:4"), "MKI only"),
            (format!("1 AES_CM_128_HMAC_SHA1_80 {k};{k}"), "two keys"),
            (format!("1 AES_CM_128_HMAC_SHA1_80 {k}|2^x"), "lifetime"),
            (format!("1 AEAD_AES_128_GCM {k}"), "key length for GCM"),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 {k} UNENCRYPTED_SRTP"),
                "param",
            ),
            (format!("1 AES_CM_128_HMAC_SHA1_80 {k} KDR=1"), "KDR"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_owned(), "base64"),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:x".to_owned(), "method"),
        ] {
            assert!(SdesCrypto::parse(&v).is_err(), "{why}: {v}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let base =
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20 WSH=64";
        let mut rng = crate::test_support::XorShift(0x1234_5678);
        for _ in 0..20_000 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..3 {
                let x = rng.next_u64();
                let i = (x % b.len() as u64) as usize;
                b[i] = (x >> 56) as u8;
            }
            let s = String::from_utf8_lossy(&b);
            let _ = SdesCrypto::parse(&s);
        }
    }
}
