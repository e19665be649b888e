//! SRTP against published vectors (RFC 7714 16.1.1 / 17.1, AEAD_AES_128_GCM; RFC 3711
//! Appendix B is in the unit tests of `srtp::crypto`), replay and index handling, and
//! robustness on arbitrary input.

use media_engine::srtp::{SessionKeys, SrtpContext, SrtpError, SrtpProfile};

mod common;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// RFC 7714 section 16 and 17 use these as session key and salt directly.
fn rfc7714_context() -> SrtpContext {
    let keys = SessionKeys {
        enc_key: unhex("000102030405060708090a0b0c0d0e0f")
            .try_into()
            .unwrap(),
        salt: unhex("517569642070726f2071756f"),
        auth_key: Vec::new(),
    };
    SrtpContext::with_session_keys(SrtpProfile::AeadAes128Gcm, &keys, &keys).unwrap()
}

const RTP_PLAIN: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                         20646976 69736120 696e2070 61727465 73207472 6573";
const RTP_PROTECTED: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                             be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                             6a9152cf 765ee439 0cce";
const RTCP_PLAIN: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                          4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
const RTCP_PROTECTED: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                              6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                              96cf4d2f c5abf872 45d9eade 800005d4";

#[test]
fn rfc7714_gcm_rtp_vector() {
    let mut tx = rfc7714_context();
    let mut p = unhex(RTP_PLAIN);
    tx.protect_rtp(&mut p).unwrap();
    assert_eq!(p, unhex(RTP_PROTECTED));

    let mut rx = rfc7714_context();
    rx.unprotect_rtp(&mut p).unwrap();
    assert_eq!(p, unhex(RTP_PLAIN));

    // Any flipped bit (header, ciphertext or tag) fails authentication.
    let protected = unhex(RTP_PROTECTED);
    for bit in [3 * 8, 12 * 8 + 1, (protected.len() - 1) * 8 + 7] {
        let mut rx = rfc7714_context();
        let mut bad = protected.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let r = rx.unprotect_rtp(&mut bad);
        assert!(r.is_err(), "bit {bit}: {r:?}");
    }
}

#[test]
fn rfc7714_gcm_rtcp_vector() {
    let mut tx = rfc7714_context();
    tx.set_srtcp_index(0x4d61_7273, 0x5d4).unwrap();
    let mut p = unhex(RTCP_PLAIN);
    tx.protect_rtcp(&mut p).unwrap();
    assert_eq!(p, unhex(RTCP_PROTECTED));

    let mut rx = rfc7714_context();
    rx.unprotect_rtcp(&mut p).unwrap();
    assert_eq!(p, unhex(RTCP_PLAIN));
    let mut again = unhex(RTCP_PROTECTED);
    assert_eq!(
        rx.unprotect_rtcp(&mut again),
        Err(SrtpError::Replayed { index: 0x5d4 })
    );
}

fn ctx(profile: SrtpProfile) -> SrtpContext {
    let key = [7u8; 16];
    let salt = vec![9u8; profile.master_salt_len()];
    SrtpContext::new(profile, &key, &salt).unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x08];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

const PROFILES: [SrtpProfile; 3] = [
    SrtpProfile::AesCm128HmacSha1_80,
    SrtpProfile::AesCm128HmacSha1_32,
    SrtpProfile::AeadAes128Gcm,
];

#[test]
fn key_lengths_are_checked() {
    assert_eq!(
        SrtpContext::new(SrtpProfile::AesCm128HmacSha1_80, &[0; 15], &[0; 14]).unwrap_err(),
        SrtpError::KeyLength {
            expected: 16,
            got: 15
        }
    );
    assert_eq!(
        SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[0; 16], &[0; 14]).unwrap_err(),
        SrtpError::SaltLength {
            expected: 12,
            got: 14
        }
    );
    assert!(SrtpContext::from_key_and_salt(SrtpProfile::AesCm128HmacSha1_80, &[0; 30]).is_ok());
    assert!(SrtpContext::from_key_and_salt(SrtpProfile::AesCm128HmacSha1_80, &[0; 29]).is_err());
    assert_eq!(
        SrtpProfile::from_sdes_name("aes_cm_128_hmac_sha1_80"),
        Some(SrtpProfile::AesCm128HmacSha1_80)
    );
    assert_eq!(
        SrtpProfile::from_dtls_id(7),
        Some(SrtpProfile::AeadAes128Gcm)
    );
}

#[test]
fn replay_window_and_rollover() {
    for profile in PROFILES {
        let mut tx = ctx(profile);
        let mut rx = ctx(profile);
        let mut sent = Vec::new();
        for i in 0..400u32 {
            let seq = (65_300 + i) as u16; // wraps after 236 packets
            let mut p = rtp(seq, 42);
            tx.protect_rtp(&mut p).unwrap();
            assert_eq!(p.len(), 172 + profile.rtp_tag_len());
            sent.push(p);
        }
        assert_eq!(tx.roc(42), Some(1));
        // Deliver the first 300 in order, then 350.., then late 300..350 (inside window).
        for p in sent[..300]
            .iter()
            .chain(&sent[350..])
            .chain(&sent[300..350])
        {
            let mut q = p.clone();
            rx.unprotect_rtp(&mut q).unwrap();
            assert_eq!(q.len(), 172);
        }
        assert_eq!(rx.roc(42), Some(1));
        // Duplicates refused; too old refused; the sender refuses to reuse an index.
        let mut dup = sent[399].clone();
        assert!(matches!(
            rx.unprotect_rtp(&mut dup),
            Err(SrtpError::Replayed { .. })
        ));
        let mut old = sent[100].clone();
        assert!(matches!(
            rx.unprotect_rtp(&mut old),
            Err(SrtpError::TooOld { .. })
        ));
        let mut again = rtp((65_300u32 + 399) as u16, 42);
        assert!(matches!(
            tx.protect_rtp(&mut again),
            Err(SrtpError::Replayed { .. })
        ));
        // A forged packet neither passes nor moves the state.
        let mut forged = rtp(10_000, 42);
        forged.extend_from_slice(&vec![0; profile.rtp_tag_len()]);
        assert_eq!(rx.unprotect_rtp(&mut forged), Err(SrtpError::AuthFailed));
        assert_eq!(rx.roc(42), Some(1));
        // Unknown SSRC with a bad tag is not admitted.
        let mut stranger = rtp(1, 99);
        stranger.extend_from_slice(&vec![0; profile.rtp_tag_len()]);
        assert_eq!(rx.unprotect_rtp(&mut stranger), Err(SrtpError::AuthFailed));
        assert_eq!(rx.stream_count(), 1);
    }
}

#[test]
fn set_roc_joins_a_stream_in_progress() {
    let mut tx = ctx(SrtpProfile::AesCm128HmacSha1_80);
    tx.set_roc(5, 7).unwrap();
    let mut p = rtp(1000, 5);
    tx.protect_rtp(&mut p).unwrap();
    let mut rx = ctx(SrtpProfile::AesCm128HmacSha1_80);
    // Without the ROC the tag does not verify; with it, it does.
    assert_eq!(rx.unprotect_rtp(&mut p.clone()), Err(SrtpError::AuthFailed));
    rx.set_roc(5, 7).unwrap();
    rx.unprotect_rtp(&mut p).unwrap();
    assert_eq!(rx.roc(5), Some(7));
}

#[test]
fn stream_cap_limits_ssrcs() {
    let mut tx = ctx(SrtpProfile::AeadAes128Gcm);
    tx.set_max_streams(2);
    tx.protect_rtp(&mut rtp(1, 1)).unwrap();
    tx.protect_rtp(&mut rtp(1, 2)).unwrap();
    assert_eq!(
        tx.protect_rtp(&mut rtp(1, 3)),
        Err(SrtpError::TooManyStreams { limit: 2 })
    );
    tx.remove_stream(1);
    tx.protect_rtp(&mut rtp(1, 3)).unwrap();
}

#[test]
fn rtcp_round_trip() {
    for profile in PROFILES {
        let mut tx = ctx(profile);
        let mut rx = ctx(profile);
        let plain: Vec<u8> = [0x81, 201, 0, 7, 0, 0, 0, 9]
            .into_iter()
            .chain(0..24)
            .collect();
        let mut p = plain.clone();
        tx.protect_rtcp(&mut p).unwrap();
        assert_eq!(p.len(), plain.len() + profile.rtcp_overhead());
        assert_ne!(p[8..plain.len()], plain[8..]);
        rx.unprotect_rtcp(&mut p).unwrap();
        assert_eq!(p, plain);
    }
}

/// Deterministic pseudo-random mutation of valid packets and random garbage: every call must
/// return (Ok or Err), never panic, and a context must keep working afterwards.
#[test]
fn arbitrary_input_never_panics() {
    let mut rng = common::XorShift(0x0123_4567_89ab_cdef);
    let mut next = move || rng.next_u64();
    for profile in PROFILES {
        let mut tx = ctx(profile);
        let mut rx = ctx(profile);
        let mut good = rtp(1, 77);
        tx.protect_rtp(&mut good).unwrap();
        let mut rtcp = vec![0x80, 200, 0, 1, 0, 0, 0, 77];
        tx.protect_rtcp(&mut rtcp).unwrap();
        let mut accepted = 0;
        for i in 0..20_000u32 {
            let base = if i % 2 == 0 { &good } else { &rtcp };
            let mut p = match next() % 4 {
                0 => (0..(next() % 64) as usize).map(|_| next() as u8).collect(),
                1 => base[..(next() as usize % (base.len() + 1))].to_vec(),
                _ => {
                    let mut p = base.clone();
                    for _ in 0..1 + next() % 3 {
                        let at = next() as usize % p.len();
                        p[at] ^= 1 << (next() % 8);
                    }
                    p
                }
            };
            let r = match next() % 4 {
                0 => rx.unprotect_rtp(&mut p),
                1 => rx.unprotect_rtcp(&mut p),
                2 => tx.protect_rtp(&mut p),
                _ => tx.protect_rtcp(&mut p),
            };
            accepted += usize::from(r.is_ok());
        }
        assert!(accepted > 0, "some protect calls on random input succeed");
        // Still usable.
        let mut fresh = rtp(2, 77);
        let mut tx2 = ctx(profile);
        tx2.protect_rtp(&mut rtp(1, 77)).unwrap();
        tx2.protect_rtp(&mut fresh).unwrap();
        let mut rx2 = ctx(profile);
        rx2.unprotect_rtp(&mut fresh).unwrap();
    }
}
