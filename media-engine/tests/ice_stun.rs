//! STUN codec against the RFC 5769 test vectors (2.1 request, 2.2 IPv4 response, 2.3 IPv6
//! response; 2.4 long-term credentials is out of scope: ICE uses short-term ones), the
//! ICE-lite agent's decisions (answer, drop and count, nominate, role conflict, consent expiry
//! with synthetic time), and a bounded mutation test of the parser and agent (no panic).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use media_engine::ice::stun::{self, attr, StunMessage, StunMessageBuilder};
use media_engine::ice::{DropReason, IceEvent, IceLiteAgent, CONSENT_TIMEOUT};

mod common;

const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const RFC5769_TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// RFC 5769 2.1, sample request.
const REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 2.2, sample IPv4 response.
const RESPONSE_V4: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 2.3, sample IPv6 response.
const RESPONSE_V6: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn rfc5769_request() {
    let m = StunMessage::parse(&REQUEST).unwrap();
    assert!(stun::is_stun(&REQUEST));
    assert_eq!(m.message_type(), stun::BINDING_REQUEST);
    assert_eq!(m.transaction_id(), RFC5769_TXID);
    assert_eq!(m.username(), Some("evtj:h6vY"));
    assert_eq!(m.priority(), Some(0x6e00_01ff));
    assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
    assert_eq!(m.attribute(attr::SOFTWARE), Some(&b"STUN test client"[..]));
    assert!(m.verify_integrity(RFC5769_PASSWORD));
    assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBu"));
    assert!(m.verify_fingerprint());

    // Rebuilt with our builder (same attributes, RFC's 0x20 padding): byte-identical.
    let built = StunMessageBuilder::binding_request(RFC5769_TXID)
        .padding(0x20)
        .software("STUN test client")
        .priority(0x6e00_01ff)
        .ice_controlled(0x932f_f9b1_5126_3b36)
        .username("evtj:h6vY")
        .build_with_integrity(RFC5769_PASSWORD);
    assert_eq!(built, REQUEST.to_vec());

    // Any flipped bit before the FINGERPRINT breaks the fingerprint or the integrity.
    for i in 0..REQUEST.len() {
        let mut bad = REQUEST;
        bad[i] ^= 0x10;
        let ok = StunMessage::parse(&bad)
            .map(|m| m.verify_integrity(RFC5769_PASSWORD) && m.verify_fingerprint())
            .unwrap_or(false);
        assert!(!ok, "flip at byte {i} went unnoticed");
    }
}

#[test]
fn rfc5769_responses() {
    for (bytes, expected) in [
        (&RESPONSE_V4[..], addr("192.0.2.1:32853")),
        (
            &RESPONSE_V6[..],
            addr("[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
        ),
    ] {
        let m = StunMessage::parse(bytes).unwrap();
        assert_eq!(m.message_type(), stun::BINDING_SUCCESS);
        assert_eq!(m.xor_mapped_address(), Some(expected));
        assert!(m.verify_integrity(RFC5769_PASSWORD));
        assert!(m.verify_fingerprint());
        let built = StunMessageBuilder::binding_success(RFC5769_TXID)
            .padding(0x20)
            .software("test vector")
            .xor_mapped_address(expected)
            .build_with_integrity(RFC5769_PASSWORD);
        assert_eq!(built, bytes.to_vec());
    }
}

#[test]
fn parser_rejects_malformed() {
    assert_eq!(
        StunMessage::parse(&REQUEST[..19]).unwrap_err(),
        stun::StunError::TooShort
    );
    let mut b = REQUEST;
    b[0] = 0x80;
    assert_eq!(
        StunMessage::parse(&b).unwrap_err(),
        stun::StunError::NotStun
    );
    let mut b = REQUEST;
    b[4] = 0;
    assert_eq!(
        StunMessage::parse(&b).unwrap_err(),
        stun::StunError::BadCookie
    );
    assert!(matches!(
        StunMessage::parse(&REQUEST[..104]),
        Err(stun::StunError::LengthMismatch { .. })
    ));
    // Attribute length overrunning the message.
    let mut b = REQUEST;
    b[22] = 0x01;
    assert!(matches!(
        StunMessage::parse(&b),
        Err(stun::StunError::AttributeOverrun { .. })
    ));
    // An attribute after FINGERPRINT.
    let mut v = REQUEST.to_vec();
    v.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = u16::from_be_bytes([v[2], v[3]]) + 4;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        StunMessage::parse(&v),
        Err(stun::StunError::AttributeAfterIntegrity { .. })
    ));
}

const UFRAG: &str = "lite";
const PWD: &str = "lite-password-0123456789";

fn check(txid: u8, username: &str, key: &str, nominate: bool) -> Vec<u8> {
    let b = StunMessageBuilder::binding_request([txid; 12])
        .username(username)
        .priority(0x6e7f_1eff)
        .ice_controlling(42);
    let b = if nominate { b.use_candidate() } else { b };
    b.build_with_integrity(key.as_bytes())
}

#[test]
fn agent_answers_valid_checks_before_and_after_remote_credentials() {
    let mut agent = IceLiteAgent::new(UFRAG, PWD);
    let t0 = Instant::now();
    let peer = addr("198.51.100.7:5000");

    // Before the SDP answer: any peer ufrag, our ufrag and password (S-18).
    let out = agent.handle_stun(t0, peer, &check(1, "lite:early", PWD, false));
    let resp = out.response.expect("answered");
    let m = StunMessage::parse(&resp).unwrap();
    assert_eq!(m.message_type(), stun::BINDING_SUCCESS);
    assert_eq!(m.transaction_id(), [1; 12]);
    assert_eq!(m.xor_mapped_address(), Some(peer));
    assert!(m.verify_integrity(PWD.as_bytes()));
    assert!(m.verify_fingerprint());
    assert_eq!(agent.poll_event(), Some(IceEvent::Validated(peer)));
    assert_eq!(agent.selected(), None);

    agent.set_remote_credentials("early", "peerpwd");
    // Wrong peer ufrag now dropped, right one answered and nominating.
    let out = agent.handle_stun(t0, peer, &check(2, "lite:other", PWD, true));
    assert_eq!(out.dropped, Some(DropReason::UnknownUsername));
    let out = agent.handle_stun(t0, peer, &check(3, "lite:early", PWD, true));
    assert!(out.response.is_some());
    assert_eq!(agent.poll_event(), Some(IceEvent::Nominated(peer)));
    assert_eq!(agent.selected(), Some(peer));

    // IPv6 source.
    let v6 = addr("[2001:db8::9]:7000");
    let out = agent.handle_stun(t0, v6, &check(4, "lite:early", PWD, false));
    let resp = out.response.unwrap();
    assert_eq!(
        StunMessage::parse(&resp).unwrap().xor_mapped_address(),
        Some(v6)
    );
    assert_eq!(agent.selected(), Some(peer), "no nomination, no switch");
}

#[test]
fn agent_drops_and_counts_bad_requests() {
    let mut agent = IceLiteAgent::new(UFRAG, PWD);
    let t0 = Instant::now();
    let src = addr("203.0.113.5:4000");
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (
            check(1, "lite:x", "wrong-password", true),
            DropReason::BadIntegrity,
        ),
        (check(2, "nope:x", PWD, true), DropReason::UnknownUsername),
        (check(3, "lite", PWD, true), DropReason::UnknownUsername),
        (
            StunMessageBuilder::binding_request([4; 12])
                .username("lite:x")
                .fingerprint()
                .build(),
            DropReason::BadIntegrity,
        ),
        (b"\x80\x00hello, RTP here".to_vec(), DropReason::Malformed),
        (REQUEST[..40].to_vec(), DropReason::Malformed),
        (RESPONSE_V4.to_vec(), DropReason::NotBindingRequest),
        (
            {
                let mut v = check(5, "lite:x", PWD, true);
                let n = v.len();
                v[n - 1] ^= 1;
                v
            },
            DropReason::BadFingerprint,
        ),
    ];
    for (bytes, reason) in &cases {
        let out = agent.handle_stun(t0, src, bytes);
        assert_eq!(out.response, None);
        assert_eq!(out.dropped, Some(*reason));
    }
    let s = agent.stats();
    assert_eq!(s.dropped_bad_integrity, 2);
    assert_eq!(s.dropped_unknown_username, 2);
    assert_eq!(s.dropped_malformed, 2);
    assert_eq!(s.dropped_not_request, 1);
    assert_eq!(s.dropped_bad_fingerprint, 1);
    assert_eq!(s.checks_answered, 0);
    assert_eq!(agent.poll_event(), None);
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.poll_timeout(), None);

    // Binding indication (keepalive): no answer, no drop.
    let ind = StunMessageBuilder::new(stun::BINDING_INDICATION, [9; 12])
        .fingerprint()
        .build();
    let out = agent.handle_stun(t0, src, &ind);
    assert_eq!((out.response, out.dropped), (None, None));
    assert_eq!(agent.stats().indications, 1);
}

#[test]
fn role_conflict_when_peer_is_also_controlled() {
    let mut agent = IceLiteAgent::new(UFRAG, PWD);
    let req = StunMessageBuilder::binding_request([7; 12])
        .username("lite:x")
        .ice_controlled(1)
        .use_candidate()
        .build_with_integrity(PWD.as_bytes());
    let out = agent.handle_stun(Instant::now(), addr("192.0.2.2:1"), &req);
    let m_bytes = out.response.unwrap();
    let m = StunMessage::parse(&m_bytes).unwrap();
    assert_eq!(m.message_type(), stun::BINDING_ERROR);
    assert_eq!(m.error_code().map(|(c, _)| c), Some(487));
    assert!(m.verify_integrity(PWD.as_bytes()) && m.verify_fingerprint());
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.stats().role_conflicts, 1);
}

#[test]
fn consent_expires_30s_after_last_valid_check() {
    let mut agent = IceLiteAgent::new(UFRAG, PWD);
    let t0 = Instant::now();
    let a = addr("192.0.2.10:1000");
    let b = addr("192.0.2.11:1000");
    agent.handle_stun(t0, a, &check(1, "lite:p", PWD, true));
    agent.handle_stun(t0, b, &check(2, "lite:p", PWD, false));
    agent.drain_events().for_each(drop);
    assert_eq!(agent.poll_timeout(), Some(t0 + CONSENT_TIMEOUT));

    // Checks from `a` keep coming every 5 s; `b` stops.
    let mut now = t0;
    for i in 0..5u8 {
        now += Duration::from_secs(5);
        agent.handle_stun(now, a, &check(10 + i, "lite:p", PWD, true));
        agent.handle_timeout(now);
    }
    assert_eq!(agent.poll_event(), None);
    // t0 + 29 s: b still fresh.
    agent.handle_timeout(t0 + Duration::from_secs(29));
    assert!(agent.is_validated(t0 + Duration::from_secs(29), b));
    agent.handle_timeout(t0 + CONSENT_TIMEOUT);
    assert_eq!(agent.poll_event(), Some(IceEvent::ConsentExpired(b)));
    assert_eq!(agent.selected(), Some(a));

    // `a` stops too: 30 s after its last check (t0 + 25 s) the selection goes.
    let last_a = t0 + Duration::from_secs(25);
    assert_eq!(agent.poll_timeout(), Some(last_a + CONSENT_TIMEOUT));
    agent.handle_timeout(last_a + CONSENT_TIMEOUT - Duration::from_millis(1));
    assert_eq!(agent.selected(), Some(a));
    agent.handle_timeout(last_a + CONSENT_TIMEOUT);
    assert_eq!(agent.poll_event(), Some(IceEvent::ConsentExpired(a)));
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.stats().consent_expired, 2);
    assert_eq!(agent.poll_timeout(), None);

    // A bad-integrity check does not refresh consent.
    let c = addr("192.0.2.12:1000");
    agent.handle_stun(now, c, &check(30, "lite:p", "bad", true));
    assert!(!agent.is_validated(now, c));
}

#[test]
fn ice_restart_forgets_addresses() {
    let mut agent = IceLiteAgent::new(UFRAG, PWD);
    let t0 = Instant::now();
    agent.set_remote_credentials("p1", "x");
    agent.handle_stun(t0, addr("192.0.2.1:1"), &check(1, "lite:p1", PWD, true));
    assert!(agent.selected().is_some());
    agent.set_remote_credentials("p2", "y");
    assert_eq!(agent.selected(), None);
    assert_eq!(agent.poll_timeout(), None);
}

/// Bounded mutation test: valid messages mutated (bit flips, truncation, extension, length
/// field and attribute-length rewrites) and random garbage, fed to the parser, every accessor
/// and the agent. Nothing may panic; the agent must still answer a valid check afterwards.
#[test]
fn mutation_never_panics() {
    let mut rng = common::XorShift(0xdead_beef_cafe_f00d);
    let mut rnd = move || rng.next_u64();
    let mut agent = IceLiteAgent::new(UFRAG, PWD);
    let t0 = Instant::now();
    let seeds: Vec<Vec<u8>> = vec![
        REQUEST.to_vec(),
        RESPONSE_V4.to_vec(),
        RESPONSE_V6.to_vec(),
        check(1, "lite:p", PWD, true),
    ];
    let mut parsed = 0;
    for i in 0..50_000u64 {
        let mut m = seeds[(i % 4) as usize].clone();
        match rnd() % 6 {
            0 => {
                for _ in 0..1 + rnd() % 4 {
                    let at = rnd() as usize % m.len();
                    m[at] ^= 1 << (rnd() % 8);
                }
            }
            1 => m.truncate(rnd() as usize % (m.len() + 1)),
            2 => m.extend((0..rnd() % 40).map(|_| rnd() as u8)),
            3 => {
                let len = (rnd() % 256) as u16;
                m[2..4].copy_from_slice(&len.to_be_bytes());
            }
            4 => {
                // Rewrite the length of one attribute header.
                let at = 20 + 4 * (rnd() as usize % ((m.len() - 20) / 4));
                if at + 4 <= m.len() {
                    m[at + 2..at + 4].copy_from_slice(&((rnd() % 300) as u16).to_be_bytes());
                }
            }
            _ => m = (0..rnd() % 120).map(|_| rnd() as u8).collect(),
        }
        if let Ok(msg) = StunMessage::parse(&m) {
            parsed += 1;
            let _ = (
                msg.username(),
                msg.priority(),
                msg.use_candidate(),
                msg.ice_controlling(),
                msg.ice_controlled(),
                msg.xor_mapped_address(),
                msg.error_code(),
                msg.verify_integrity(PWD.as_bytes()),
                msg.verify_fingerprint(),
                msg.attributes().count(),
            );
        }
        let _ = stun::is_stun(&m);
        let src = SocketAddr::from(([10, 0, (i % 7) as u8, 1], 1000 + (i % 13) as u16));
        let _ = agent.handle_stun(t0, src, &m);
        agent.drain_events().for_each(drop);
    }
    assert!(
        parsed > 1000,
        "mutations still parse often enough: {parsed}"
    );
    let out = agent.handle_stun(t0, addr("192.0.2.99:9"), &check(99, "lite:p", PWD, true));
    assert!(out.response.is_some());
    assert_eq!(agent.selected(), Some(addr("192.0.2.99:9")));
}
