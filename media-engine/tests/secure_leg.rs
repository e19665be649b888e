//! `media_engine::secure::SecureLeg` in memory with synthetic time, against peers built from
//! the crate's other layers driven by hand (a second SDES leg; a `DtlsEndpoint` plus STUN
//! checks made with `StunMessageBuilder` as the full-ICE, controlling party):
//!
//! - SDES both ways, RTP and RTCP (SRTCP by the rtcp-mux rule), both main suites;
//!   authenticated latching: bad tags, wrong keys and replays from another source neither
//!   pass nor move the destination, a verified packet from a new source does;
//! - DTLS-SRTP + ICE-lite in both DTLS roles: STUN answered before keys, media before keys
//!   dropped, a ClientHello before the ICE check dropped, attacker ClientHellos from an
//!   unvalidated address before and during the handshake dropped and counted while the
//!   legitimate handshake completes (S-23), nothing ever sent to the attacker, media both ways
//!   after; consent expiry stops media and a new nomination restores it;
//! - DTLS-SRTP without ICE: only the SDP address may do DTLS; with no SDP address, nobody
//!   until it is set;
//! - wrong fingerprint fails (S-22);
//! - garbage and mutated packets from anywhere never panic and never break the leg.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use media_engine::dtls::{
    DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsEvent, FailureReason, Role, SrtpKeyingMaterial,
};
use media_engine::ice::{self, stun, StunMessage, StunMessageBuilder};
use media_engine::secure::{
    DropReason, IceCredentials, Inbound, LegSecurity, SdesCrypto, SecureConfig, SecureEvent,
    SecureLeg,
};
use media_engine::srtp::{SrtpContext, SrtpProfile};

mod common;
use common::XorShift as Rng;

const LOCAL_UFRAG: &str = "lEgA";
const LOCAL_PWD: &str = "leg-local-ice-password-0123456789";
const REMOTE_UFRAG: &str = "pEeR";
const REMOTE_PWD: &str = "peer-remote-ice-password-987654321";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn cert() -> DtlsCertificate {
    DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap()
}

fn rtp(seq: u16, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 160));
    p
}

/// An RTCP sender report (packet type 200), 28 bytes.
fn rtcp_sr(ssrc: u32, count: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 8]);
    p.extend_from_slice(&(count * 160).to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&(count * 160).to_be_bytes());
    p
}

fn media(out: Inbound) -> (Vec<u8>, SocketAddr) {
    match out {
        Inbound::Media { plain, source } => (plain, source),
        other => panic!("expected media, got {other:?}"),
    }
}

fn events(leg: &mut SecureLeg) -> Vec<SecureEvent> {
    std::iter::from_fn(|| leg.poll_event()).collect()
}

/// A connectivity check from the controlling full agent (the party), USERNAME
/// `<leg ufrag>:<peer ufrag>`, keyed with the leg's password.
fn check(txid: u8, nominate: bool) -> Vec<u8> {
    let b = StunMessageBuilder::binding_request([txid; 12])
        .username(&format!("{LOCAL_UFRAG}:{REMOTE_UFRAG}"))
        .priority(0x6e7f_1eff)
        .ice_controlling(42);
    let b = if nominate { b.use_candidate() } else { b };
    b.build_with_integrity(LOCAL_PWD.as_bytes())
}

fn ice_creds() -> IceCredentials {
    IceCredentials {
        local_ufrag: LOCAL_UFRAG.into(),
        local_pwd: LOCAL_PWD.into(),
        remote_ufrag: REMOTE_UFRAG.into(),
        remote_pwd: REMOTE_PWD.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// SDES

fn sdes_pair(suite: SrtpProfile, sdp: Option<SocketAddr>) -> (SecureLeg, SecureLeg) {
    let ours = SdesCrypto::generate(1, suite);
    let theirs = SdesCrypto::generate(1, suite);
    // The keys travel as SDP attributes.
    let ours_sdp = SdesCrypto::parse(&ours.to_attr_value()).unwrap();
    let theirs_sdp = SdesCrypto::parse(&theirs.to_attr_value()).unwrap();
    let now = Instant::now();
    let leg = SecureLeg::new(
        LegSecurity::Sdes {
            local: ours,
            remote: theirs_sdp,
        },
        sdp,
        now,
    )
    .unwrap();
    // The party: same keys the other way round.
    let party = SecureLeg::new(
        LegSecurity::Sdes {
            local: theirs,
            remote: ours_sdp,
        },
        None,
        now,
    )
    .unwrap();
    (leg, party)
}

#[test]
fn sdes_both_ways_rtp_and_rtcp_with_authenticated_latching() {
    for suite in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let sdp = addr("192.0.2.10:4000");
        let nat = addr("198.51.100.20:61000");
        let attacker = addr("203.0.113.66:5004");
        let (mut leg, mut party) = sdes_pair(suite, Some(sdp));
        let now = Instant::now();
        assert!(leg.is_ready() && party.is_ready());
        assert_eq!(leg.destination(), Some(sdp), "{suite:?}: SDP address first");
        assert_eq!(leg.poll_timeout(), None);

        // Party -> leg: SRTP and SRTCP from its NAT address; the leg latches there.
        let p1 = rtp(100, 0xAAAA_0001, 0x11);
        let s1 = party.protect_outbound(&p1).unwrap();
        assert_ne!(s1[12..172], p1[12..], "payload encrypted");
        assert_eq!(s1.len(), p1.len() + suite.rtp_tag_len());
        let (plain, src) = media(leg.handle_inbound(now, nat, &s1));
        assert_eq!((plain, src), (p1.clone(), nat));
        assert_eq!(leg.destination(), Some(nat), "{suite:?}: latched");
        assert_eq!(events(&mut leg), vec![SecureEvent::Latched(nat)]);
        let sr = rtcp_sr(0xAAAA_0001, 1);
        let ssr = party.protect_outbound(&sr).unwrap();
        assert_eq!(
            ssr.len(),
            sr.len() + suite.rtcp_overhead(),
            "SRTCP, not SRTP"
        );
        assert_eq!(media(leg.handle_inbound(now, nat, &ssr)).0, sr);

        // Leg -> party, RTP and RTCP.
        for seq in 0..5u16 {
            let p = rtp(seq, 0xBBBB_0002, seq as u8);
            let s = leg.protect_outbound(&p).unwrap();
            assert_eq!(media(party.handle_inbound(now, sdp, &s)).0, p);
        }
        let sr2 = rtcp_sr(0xBBBB_0002, 5);
        let s = leg.protect_outbound(&sr2).unwrap();
        assert_eq!(media(party.handle_inbound(now, sdp, &s)).0, sr2);

        // Attacks from another source.
        // 1. The next packet with a flipped tag bit, before the real one.
        let p2 = rtp(101, 0xAAAA_0001, 0x22);
        let s2 = party.protect_outbound(&p2).unwrap();
        let mut forged = s2.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            leg.handle_inbound(now, attacker, &forged),
            Inbound::Dropped(DropReason::AuthFailed)
        );
        // 2. A payload bit flipped.
        let mut forged = s2.clone();
        forged[20] ^= 0x80;
        assert_eq!(
            leg.handle_inbound(now, attacker, &forged),
            Inbound::Dropped(DropReason::AuthFailed)
        );
        // 3. A packet protected with another key (new SSRC too).
        let mut other =
            SrtpContext::from_key_and_salt(suite, &SdesCrypto::generate(1, suite).key_salt)
                .unwrap();
        let mut foreign = rtp(102, 0xEEEE_0003, 0x33);
        other.protect_rtp(&mut foreign).unwrap();
        assert_eq!(
            leg.handle_inbound(now, attacker, &foreign),
            Inbound::Dropped(DropReason::AuthFailed)
        );
        // 4. A forged SRTCP packet.
        let mut forged_rtcp = rtcp_sr(0xAAAA_0001, 9);
        // (An index the leg has not seen: a seen one is rejected as a replay before the tag.)
        other.set_srtcp_index(0xAAAA_0001, 50).unwrap();
        other.protect_rtcp(&mut forged_rtcp).unwrap();
        assert_eq!(
            leg.handle_inbound(now, attacker, &forged_rtcp),
            Inbound::Dropped(DropReason::AuthFailed)
        );
        // 5. Replays of captured genuine packets (SRTP, SRTCP).
        assert_eq!(
            leg.handle_inbound(now, attacker, &s1),
            Inbound::Dropped(DropReason::Replayed)
        );
        assert_eq!(
            leg.handle_inbound(now, attacker, &ssr),
            Inbound::Dropped(DropReason::Replayed)
        );
        assert_eq!(leg.destination(), Some(nat), "{suite:?}: latch unmoved");
        assert!(events(&mut leg).is_empty());
        // The genuine packet the forgeries imitated still passes (no state was touched).
        assert_eq!(media(leg.handle_inbound(now, nat, &s2)).0, p2);

        // The party moves (new NAT binding): the first verified packet moves the latch.
        let moved = addr("198.51.100.20:61002");
        let s3 = party
            .protect_outbound(&rtp(102, 0xAAAA_0001, 0x33))
            .unwrap();
        media(leg.handle_inbound(now, moved, &s3));
        assert_eq!(leg.destination(), Some(moved));
        assert_eq!(events(&mut leg), vec![SecureEvent::Latched(moved)]);

        // STUN and DTLS have no business on an SDES leg; unknown ranges neither.
        assert_eq!(
            leg.handle_inbound(now, moved, &check(1, true)),
            Inbound::Dropped(DropReason::NoIce)
        );
        assert_eq!(
            leg.handle_inbound(now, moved, &[22, 0xfe, 0xfd, 0, 0]),
            Inbound::Dropped(DropReason::NoDtls)
        );
        assert_eq!(
            leg.handle_inbound(now, moved, &[0x40, 0, 0, 0]),
            Inbound::Dropped(DropReason::Unknown)
        );
        assert_eq!(leg.poll_transmit(), None);
        // Malformed outbound is refused, not protected.
        assert_eq!(leg.protect_outbound(&[0x80, 0, 1]), None);

        let st = leg.stats();
        assert_eq!(st.srtp_in, 3, "{suite:?} {st:?}");
        assert_eq!(st.srtcp_in, 1);
        assert_eq!(st.srtp_out, 5);
        assert_eq!(st.srtcp_out, 1);
        assert_eq!(st.auth_failures, 4);
        assert_eq!(st.replays, 2);
        assert_eq!(st.latch_moves, 2);
        assert_eq!(st.stun_dropped, 1);
        assert_eq!(st.unknown, 2);
        assert_eq!(st.protect_failed, 1);
    }
}

#[test]
fn sdes_without_sdp_address_waits_for_authenticated_media() {
    let (mut leg, mut party) = sdes_pair(SrtpProfile::AesCm128HmacSha1_80, None);
    let now = Instant::now();
    assert_eq!(leg.destination(), None);
    let s = party.protect_outbound(&rtp(1, 7, 0)).unwrap();
    let mut bad = s.clone();
    bad[13] ^= 1;
    assert_eq!(
        leg.handle_inbound(now, addr("203.0.113.1:9"), &bad),
        Inbound::Dropped(DropReason::AuthFailed)
    );
    assert_eq!(leg.destination(), None, "a bad tag never latches");
    media(leg.handle_inbound(now, addr("192.0.2.1:3000"), &s));
    assert_eq!(leg.destination(), Some(addr("192.0.2.1:3000")));
}

#[test]
fn sdes_keys_of_the_wrong_length_are_refused() {
    let mut short = SdesCrypto::generate(1, SrtpProfile::AesCm128HmacSha1_80);
    short.key_salt.pop();
    let r = SecureLeg::new(
        LegSecurity::Sdes {
            local: SdesCrypto::generate(1, SrtpProfile::AesCm128HmacSha1_80),
            remote: short,
        },
        None,
        Instant::now(),
    );
    assert!(r.is_err());
}

// ---------------------------------------------------------------------------------------------
// DTLS-SRTP (+ ICE)

/// The party: a DTLS endpoint at `addr`.
struct Party {
    ep: DtlsEndpoint,
    addr: SocketAddr,
    keys: Option<SrtpKeyingMaterial>,
    failed: Option<FailureReason>,
    /// (outbound, inbound) SRTP contexts made from `keys`.
    srtp: Option<(SrtpContext, SrtpContext)>,
    /// STUN responses received (transaction ids).
    stun_ok: Vec<[u8; 12]>,
}

impl Party {
    fn new(role: Role, leg_cert: &DtlsCertificate, addr: SocketAddr, now: Instant) -> Self {
        let own = cert();
        Self::with_cert(role, &own, leg_cert, addr, now)
    }

    fn with_cert(
        role: Role,
        own: &DtlsCertificate,
        leg_cert: &DtlsCertificate,
        addr: SocketAddr,
        now: Instant,
    ) -> Self {
        let ep = DtlsEndpoint::new(
            role,
            own,
            [leg_cert.fingerprint().clone()],
            &DtlsConfig::default(),
            now,
        )
        .unwrap();
        Self {
            ep,
            addr,
            keys: None,
            failed: None,
            srtp: None,
            stun_ok: Vec::new(),
        }
    }
}

/// Everything the leg sent, by destination.
#[derive(Default)]
struct Wire {
    sent_to: Vec<SocketAddr>,
}

/// Moves datagrams between the leg and the party (and runs `inject` before each round, for
/// attackers) until both sides have a DTLS outcome, advancing synthetic time to the next
/// timer when idle. Returns the time reached.
fn pump(
    leg: &mut SecureLeg,
    party: &mut Party,
    mut now: Instant,
    wire: &mut Wire,
    leg_events: &mut Vec<SecureEvent>,
    inject: &mut dyn FnMut(&mut SecureLeg, Instant),
) -> Instant {
    for _ in 0..2000 {
        inject(leg, now);
        let mut moved = false;
        while let Some((to, d)) = leg.poll_transmit() {
            moved = true;
            wire.sent_to.push(to);
            if to != party.addr {
                continue;
            }
            if stun::is_stun(&d) {
                let m = StunMessage::parse(&d).unwrap();
                assert_eq!(m.message_type(), stun::BINDING_SUCCESS);
                assert!(m.verify_integrity(LOCAL_PWD.as_bytes()));
                assert_eq!(m.xor_mapped_address(), Some(party.addr));
                party.stun_ok.push(m.transaction_id());
            } else {
                party.ep.handle_datagram(&d, now);
            }
        }
        while let Some(d) = party.ep.poll_transmit() {
            moved = true;
            leg.handle_inbound(now, party.addr, &d);
        }
        while let Some(e) = party.ep.poll_event() {
            match e {
                DtlsEvent::Connected(k) => {
                    party.srtp =
                        Some((k.outbound_context().unwrap(), k.inbound_context().unwrap()));
                    party.keys = Some(k);
                }
                DtlsEvent::Failed(r) => party.failed = Some(r),
                DtlsEvent::Closed => {}
            }
        }
        leg_events.extend(std::iter::from_fn(|| leg.poll_event()));
        let leg_done = leg_events
            .iter()
            .any(|e| matches!(e, SecureEvent::DtlsConnected | SecureEvent::DtlsFailed(_)));
        let party_done = party.keys.is_some() || party.failed.is_some();
        if leg_done && party_done && !moved {
            return now;
        }
        if !moved {
            let next = [leg.poll_timeout(), party.ep.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { return now };
            now = now.max(next);
            leg.handle_timeout(now);
            party.ep.handle_timeout(now);
        }
    }
    panic!("pump did not settle");
}

/// Media both ways between a connected leg and party, RTP and RTCP.
fn media_both_ways(leg: &mut SecureLeg, party: &mut Party, now: Instant, first_seq: u16) {
    let party_addr = party.addr;
    let (p_out, p_in) = party.srtp.as_mut().expect("party connected");
    for i in 0..4u16 {
        let seq = first_seq + i;
        let p = rtp(seq, 0x5041_5254, i as u8);
        let mut s = p.clone();
        p_out.protect_rtp(&mut s).unwrap();
        let (plain, src) = media(leg.handle_inbound(now, party_addr, &s));
        assert_eq!((plain, src), (p, party_addr));
        let q = rtp(seq, 0x4C45_4721, 0x80 | i as u8);
        let mut back = leg.protect_outbound(&q).unwrap();
        p_in.unprotect_rtp(&mut back).unwrap();
        assert_eq!(back, q);
    }
    let sr = rtcp_sr(0x5041_5254, u32::from(first_seq));
    let mut s = sr.clone();
    p_out.protect_rtcp(&mut s).unwrap();
    assert_eq!(media(leg.handle_inbound(now, party.addr, &s)).0, sr);
    let sr2 = rtcp_sr(0x4C45_4721, u32::from(first_seq));
    let mut back = leg.protect_outbound(&sr2).unwrap();
    p_in.unprotect_rtcp(&mut back).unwrap();
    assert_eq!(back, sr2);
}

fn dtls_leg(
    role: Role,
    leg_cert: &Arc<DtlsCertificate>,
    party_cert: &DtlsCertificate,
    ice: bool,
    sdp: Option<SocketAddr>,
    now: Instant,
    config: &SecureConfig,
) -> SecureLeg {
    SecureLeg::with_config(
        LegSecurity::DtlsSrtp {
            role,
            certificate: Arc::clone(leg_cert),
            remote_fingerprints: vec![party_cert.fingerprint().clone()],
            ice: ice.then(ice_creds),
        },
        sdp,
        now,
        config,
    )
    .unwrap()
}

/// An attacker's ClientHello (its own certificate; it knows the leg's fingerprint from the
/// SDP it saw).
fn attacker_hello(leg_cert: &DtlsCertificate, now: Instant) -> Vec<u8> {
    let mut ep = DtlsEndpoint::new(
        Role::Client,
        &cert(),
        [leg_cert.fingerprint().clone()],
        &DtlsConfig::default(),
        now,
    )
    .unwrap();
    let hello = ep.poll_transmit().unwrap();
    assert_eq!((hello[0], hello[13]), (22, 1), "a ClientHello record");
    hello
}

#[test]
fn dtls_ice_server_role_hello_race_s23_then_media_and_consent() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("198.51.100.7:50000");
    let attacker = addr("203.0.113.66:50000");
    let sdp = addr("192.0.2.7:9"); // the browser's c= (unused with ICE)
    let config = SecureConfig {
        consent_timeout: Duration::from_secs(5),
        ..SecureConfig::default()
    };
    let mut leg = dtls_leg(
        Role::Server,
        &leg_cert,
        &party_cert,
        true,
        Some(sdp),
        t0,
        &config,
    );
    let mut party = Party::with_cert(Role::Client, &party_cert, &leg_cert, party_addr, t0);
    assert!(!leg.is_ready());
    assert_eq!(
        leg.destination(),
        None,
        "ICE: no destination before nomination"
    );
    assert_eq!(leg.protect_outbound(&rtp(1, 1, 0)), None, "no keys yet");

    // Before ICE: the attacker's ClientHello, and even the party's own (it raced its check).
    let evil = attacker_hello(&leg_cert, t0);
    assert_eq!(
        leg.handle_inbound(t0, attacker, &evil),
        Inbound::Dropped(DropReason::DtlsRejected)
    );
    let early = party.ep.poll_transmit().unwrap();
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &early),
        Inbound::Dropped(DropReason::DtlsRejected)
    );
    // Media before keys.
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &rtp(1, 2, 3)),
        Inbound::Dropped(DropReason::NotReady)
    );
    // A check with the wrong password is not answered and validates nothing.
    let bad_check = StunMessageBuilder::binding_request([9; 12])
        .username(&format!("{LOCAL_UFRAG}:{REMOTE_UFRAG}"))
        .ice_controlling(1)
        .use_candidate()
        .build_with_integrity(b"not-the-password");
    assert_eq!(
        leg.handle_inbound(t0, attacker, &bad_check),
        Inbound::Dropped(DropReason::Stun(ice::DropReason::BadIntegrity))
    );
    assert_eq!(leg.poll_transmit(), None);
    assert_eq!(
        events(&mut leg),
        vec![
            SecureEvent::HelloRejected(attacker),
            SecureEvent::HelloRejected(party_addr)
        ]
    );

    // ICE: answered before any DTLS key exists; the nomination selects the party.
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &check(1, true)),
        Inbound::Consumed
    );
    assert_eq!(leg.destination(), Some(party_addr));
    assert_eq!(events(&mut leg), vec![SecureEvent::IceSelected(party_addr)]);

    // The handshake (the party retransmits its dropped ClientHello), with the attacker
    // sending a fresh ClientHello (and garbage DTLS) before every round.
    let mut wire = Wire::default();
    let mut leg_events = Vec::new();
    let mut injected = 0;
    let mut inject = |leg: &mut SecureLeg, now: Instant| {
        let out = leg.handle_inbound(now, attacker, &attacker_hello(&leg_cert, now));
        assert_eq!(out, Inbound::Dropped(DropReason::DtlsRejected));
        // Not a ClientHello (handshake type 11), from the same attacker.
        let mut junk = early.clone();
        junk[13] = 11;
        assert_eq!(
            leg.handle_inbound(now, attacker, &junk),
            Inbound::Dropped(DropReason::DtlsRejected)
        );
        injected += 1;
    };
    let now = pump(
        &mut leg,
        &mut party,
        t0,
        &mut wire,
        &mut leg_events,
        &mut inject,
    );
    assert!(
        injected >= 3,
        "the attacker was active during the handshake"
    );
    assert!(
        leg_events.contains(&SecureEvent::DtlsConnected),
        "{leg_events:?}"
    );
    assert!(party.keys.is_some(), "party: {:?}", party.failed);
    assert!(leg.is_ready());
    assert!(
        wire.sent_to.iter().all(|a| *a == party_addr),
        "nothing ever went to the attacker: {:?}",
        wire.sent_to
    );
    assert_eq!(party.stun_ok, vec![[1; 12]]);
    let st = leg.stats();
    assert_eq!(st.hello_rejected, 2 + injected, "{st:?}");
    assert_eq!(st.dtls_rejected, 2 + 2 * injected);
    assert_eq!(st.not_ready, 1);
    assert_eq!(st.stun_answered, 1);
    assert_eq!(st.stun_dropped, 1);
    assert_eq!(
        leg_events
            .iter()
            .filter(|e| matches!(e, SecureEvent::HelloRejected(a) if *a == attacker))
            .count() as u64,
        injected
    );

    media_both_ways(&mut leg, &mut party, now, 1000);
    // A forgery and a replay from the attacker after connection: dropped, ICE destination
    // unchanged.
    let mut forged = rtp(2000, 0x5041_5254, 9);
    forged.extend_from_slice(&[0; 16]);
    assert_eq!(
        leg.handle_inbound(now, attacker, &forged),
        Inbound::Dropped(DropReason::AuthFailed)
    );
    assert_eq!(leg.destination(), Some(party_addr));

    // Consent: checks keep it; without them for the consent lifetime, media stops.
    let t1 = now + Duration::from_secs(3);
    assert_eq!(
        leg.handle_inbound(t1, party_addr, &check(2, false)),
        Inbound::Consumed
    );
    leg.handle_timeout(t1 + Duration::from_secs(4));
    assert_eq!(
        leg.destination(),
        Some(party_addr),
        "consent refreshed at t1"
    );
    let expiry = leg.poll_timeout().unwrap();
    assert!(expiry <= t1 + Duration::from_secs(5));
    leg.handle_timeout(expiry);
    assert_eq!(leg.destination(), None, "consent expired: media stops");
    let evs = events(&mut leg);
    assert_eq!(
        evs.iter()
            .filter(|e| **e == SecureEvent::ConsentExpired)
            .count(),
        1,
        "{evs:?}"
    );
    // Keys survive; a new nomination brings media back.
    let t2 = expiry + Duration::from_secs(1);
    assert_eq!(
        leg.handle_inbound(t2, party_addr, &check(3, true)),
        Inbound::Consumed
    );
    assert_eq!(leg.destination(), Some(party_addr));
    assert!(events(&mut leg).contains(&SecureEvent::IceSelected(party_addr)));
    media_both_ways(&mut leg, &mut party, t2, 3000);
}

#[test]
fn dtls_ice_client_role_waits_for_nomination_and_ignores_attackers() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("[2001:db8::7]:40000");
    let attacker = addr("[2001:db8::66]:40000");
    let config = SecureConfig {
        dtls: DtlsConfig {
            srtp_profiles: vec![SrtpProfile::AeadAes128Gcm],
            ..DtlsConfig::default()
        },
        ..SecureConfig::default()
    };
    let mut leg = dtls_leg(
        Role::Client,
        &leg_cert,
        &party_cert,
        true,
        None,
        t0,
        &config,
    );
    // Our ClientHello is ready but has nowhere to go before ICE selects the party.
    assert_eq!(leg.poll_transmit(), None);
    // Someone else's ClientHello to a client: still dropped by source.
    assert_eq!(
        leg.handle_inbound(t0, attacker, &attacker_hello(&leg_cert, t0)),
        Inbound::Dropped(DropReason::DtlsRejected)
    );
    // A valid but non-nominating check validates, but does not select.
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &check(1, false)),
        Inbound::Consumed
    );
    assert_eq!(leg.destination(), None);
    let (to, resp) = leg.poll_transmit().unwrap();
    assert_eq!(to, party_addr);
    assert!(stun::is_stun(&resp));
    assert_eq!(leg.poll_transmit(), None, "no DTLS before nomination");
    leg.handle_inbound(t0, party_addr, &check(2, true));

    let mut party = Party::with_cert(Role::Server, &party_cert, &leg_cert, party_addr, t0);
    let mut wire = Wire::default();
    let mut leg_events = Vec::new();
    let mut inject = |leg: &mut SecureLeg, now: Instant| {
        leg.handle_inbound(now, attacker, &attacker_hello(&leg_cert, now));
    };
    let now = pump(
        &mut leg,
        &mut party,
        t0,
        &mut wire,
        &mut leg_events,
        &mut inject,
    );
    assert!(
        leg_events.contains(&SecureEvent::DtlsConnected),
        "{leg_events:?}"
    );
    let keys = party.keys.clone().expect("party connected");
    assert_eq!(keys.profile, SrtpProfile::AeadAes128Gcm);
    assert!(wire.sent_to.iter().all(|a| *a == party_addr));
    assert!(leg.stats().hello_rejected >= 2);
    media_both_ways(&mut leg, &mut party, now, 10);
}

#[test]
fn dtls_without_ice_accepts_only_the_sdp_address() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("192.0.2.30:30000");
    let other = addr("192.0.2.31:30000");
    let mut leg = dtls_leg(
        Role::Server,
        &leg_cert,
        &party_cert,
        false,
        Some(party_addr),
        t0,
        &SecureConfig::default(),
    );
    // STUN on a leg without ICE.
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &check(1, true)),
        Inbound::Dropped(DropReason::NoIce)
    );
    // Another address (even the same host, another port) may not start DTLS.
    assert_eq!(
        leg.handle_inbound(t0, other, &attacker_hello(&leg_cert, t0)),
        Inbound::Dropped(DropReason::DtlsRejected)
    );
    let mut party = Party::with_cert(Role::Client, &party_cert, &leg_cert, party_addr, t0);
    let (mut wire, mut evs) = (Wire::default(), Vec::new());
    let mut inject = |leg: &mut SecureLeg, now: Instant| {
        leg.handle_inbound(now, other, &attacker_hello(&leg_cert, now));
    };
    let now = pump(&mut leg, &mut party, t0, &mut wire, &mut evs, &mut inject);
    assert!(evs.contains(&SecureEvent::DtlsConnected), "{evs:?}");
    assert!(wire.sent_to.iter().all(|a| *a == party_addr));
    media_both_ways(&mut leg, &mut party, now, 1);
    // Without ICE the destination is the latest authenticated source.
    assert_eq!(leg.destination(), Some(party_addr));
}

#[test]
fn dtls_without_ice_or_sdp_address_accepts_nobody_until_it_is_known() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("192.0.2.40:40000");
    let mut leg = dtls_leg(
        Role::Server,
        &leg_cert,
        &party_cert,
        false,
        None,
        t0,
        &SecureConfig::default(),
    );
    let mut party = Party::with_cert(Role::Client, &party_cert, &leg_cert, party_addr, t0);
    let hello = party.ep.poll_transmit().unwrap();
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &hello),
        Inbound::Dropped(DropReason::DtlsRejected),
        "strict: the first ClientHello does not win"
    );
    assert_eq!(leg.poll_transmit(), None);
    leg.set_sdp_peer(Some(party_addr));
    let (mut wire, mut evs) = (Wire::default(), Vec::new());
    let now = pump(
        &mut leg,
        &mut party,
        t0,
        &mut wire,
        &mut evs,
        &mut |_: &mut SecureLeg, _| {},
    );
    assert!(evs.contains(&SecureEvent::DtlsConnected), "{evs:?}");
    media_both_ways(&mut leg, &mut party, now, 1);
}

#[test]
fn dtls_wrong_fingerprint_fails_s22() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let signalled = cert(); // what "the SDP" said
    let party_addr = addr("198.51.100.9:9000");
    let mut leg = dtls_leg(
        Role::Server,
        &leg_cert,
        &signalled,
        true,
        None,
        t0,
        &SecureConfig::default(),
    );
    leg.handle_inbound(t0, party_addr, &check(1, true));
    let mut party = Party::new(Role::Client, &leg_cert, party_addr, t0);
    let (mut wire, mut evs) = (Wire::default(), Vec::new());
    pump(
        &mut leg,
        &mut party,
        t0,
        &mut wire,
        &mut evs,
        &mut |_: &mut SecureLeg, _| {},
    );
    assert!(
        evs.iter().any(|e| matches!(
            e,
            SecureEvent::DtlsFailed(FailureReason::FingerprintMismatch { .. })
        )),
        "{evs:?}"
    );
    assert!(!leg.is_ready());
    assert_eq!(leg.protect_outbound(&rtp(1, 1, 1)), None);
}

#[test]
fn empty_fingerprint_list_is_an_error() {
    let r = SecureLeg::new(
        LegSecurity::DtlsSrtp {
            role: Role::Server,
            certificate: Arc::new(cert()),
            remote_fingerprints: Vec::new(),
            ice: None,
        },
        None,
        Instant::now(),
    );
    assert!(r.is_err());
}

// ---------------------------------------------------------------------------------------------
// Garbage

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut d = base.to_vec();
    match rng.below(4) {
        0 => {
            let n = rng.below(200);
            d = (0..n).map(|_| rng.next_u64() as u8).collect();
            if let Some(b) = d.first_mut() {
                // Aim at every RFC 7983 range.
                *b = [0, 1, 3, 20, 22, 23, 63, 64, 128, 191, 255][rng.below(11)];
            }
        }
        1 => d.truncate(rng.below(d.len() + 1)),
        _ => {
            for _ in 0..=rng.below(4) {
                if d.is_empty() {
                    break;
                }
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
        }
    }
    d
}

#[test]
fn garbage_and_mutations_never_panic_or_break_the_leg() {
    let iters: usize = std::env::var("SECURE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(0x5ec0_e1e9_0000_0001);
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("198.51.100.7:50000");
    let mut leg = dtls_leg(
        Role::Server,
        &leg_cert,
        &party_cert,
        true,
        None,
        t0,
        &SecureConfig::default(),
    );
    let mut party = Party::with_cert(Role::Client, &party_cert, &leg_cert, party_addr, t0);
    let hello = party.ep.poll_transmit().unwrap();
    let samples = [check(1, true), hello.clone(), rtp(1, 2, 3), rtcp_sr(1, 1)];
    // Before the handshake, from random sources. (Not from the party's address: once ICE has
    // validated it, what comes from it is the party's as far as anyone can tell, and an
    // attacker able to spoof it can disrupt any DTLS handshake; source filtering is about the
    // other addresses.)
    let mut now = t0;
    for _ in 0..iters / 2 {
        let base = &samples[rng.below(samples.len())];
        let d = mutate(&mut rng, base);
        let src = SocketAddr::from(([203, 0, 113, rng.below(256) as u8], rng.below(65536) as u16));
        now += Duration::from_micros(10);
        let _ = leg.handle_inbound(now, src, &d);
        while leg.poll_transmit().is_some() {}
        while leg.poll_event().is_some() {}
    }
    let st = leg.stats();
    assert!(
        st.dtls_rejected > 0 && st.stun_dropped > 0 && st.not_ready > 0 && st.unknown > 0,
        "every path was exercised: {st:?}"
    );
    assert_eq!(st.dtls_in, 0, "no garbage reached the DTLS endpoint");
    // The legitimate party still gets through: nominate and handshake.
    leg.handle_inbound(now, party_addr, &check(7, true));
    leg.handle_inbound(now, party_addr, &hello);
    let (mut wire, mut evs) = (Wire::default(), Vec::new());
    let now = pump(
        &mut leg,
        &mut party,
        now,
        &mut wire,
        &mut evs,
        &mut |_: &mut SecureLeg, _| {},
    );
    assert!(evs.contains(&SecureEvent::DtlsConnected), "{evs:?}");
    media_both_ways(&mut leg, &mut party, now, 100);
    // After: mutated genuine SRTP/SRTCP, checks, hellos, from anywhere including the party's
    // address (the established association ignores what it cannot authenticate).
    let out = &mut party.srtp.as_mut().unwrap().0;
    let mut srtp = rtp(500, 0x5041_5254, 1);
    out.protect_rtp(&mut srtp).unwrap();
    let mut srtcp = rtcp_sr(0x5041_5254, 7);
    out.protect_rtcp(&mut srtcp).unwrap();
    let samples = [check(8, false), hello, srtp, srtcp];
    let mut passed = 0;
    for _ in 0..iters / 2 {
        let k = rng.below(samples.len());
        let d = mutate(&mut rng, &samples[k]);
        let src = if rng.below(3) == 0 {
            party_addr
        } else {
            SocketAddr::from(([203, 0, 113, 1], rng.below(65536) as u16))
        };
        if let Inbound::Media { plain, .. } = leg.handle_inbound(now, src, &d) {
            // Only an unmodified genuine packet may pass (once).
            assert!(
                d == samples[2] || d == samples[3],
                "a mutated packet passed: {plain:02x?}"
            );
            passed += 1;
        }
        let _ = leg.protect_outbound(&d);
        while leg.poll_transmit().is_some() {}
    }
    assert!(passed <= 2);
    let st = leg.stats();
    assert!(st.auth_failures > 0 && st.replays > 0, "{st:?}");
    assert_eq!(leg.destination(), Some(party_addr), "ICE destination held");
    media_both_ways(&mut leg, &mut party, now, 600);
}

#[test]
fn ice_checks_answered_before_the_peer_credentials_are_known() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("198.51.100.7:50000");
    // The offer went out; the answer with the peer's ufrag has not been processed (S-18).
    let mut leg = SecureLeg::new(
        LegSecurity::DtlsSrtp {
            role: Role::Server,
            certificate: Arc::clone(&leg_cert),
            remote_fingerprints: vec![party_cert.fingerprint().clone()],
            ice: Some(IceCredentials {
                remote_ufrag: String::new(),
                remote_pwd: String::new(),
                ..ice_creds()
            }),
        },
        None,
        t0,
    )
    .unwrap();
    assert!(leg.has_ice());
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &check(1, true)),
        Inbound::Consumed
    );
    let (to, resp) = leg.poll_transmit().unwrap();
    assert_eq!(to, party_addr);
    assert_eq!(
        StunMessage::parse(&resp).unwrap().message_type(),
        stun::BINDING_SUCCESS
    );
    assert_eq!(leg.destination(), Some(party_addr));
    // The answer names another ufrag: checks with the old one are no longer answered.
    leg.set_remote_ice_credentials("oThR", "other-password-0123456789abcdef");
    assert_eq!(
        leg.handle_inbound(t0, party_addr, &check(2, true)),
        Inbound::Dropped(DropReason::Stun(ice::DropReason::UnknownUsername))
    );
    assert_eq!(leg.stats().stun_dropped, 1);
}

#[test]
fn close_ends_dtls_and_media() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("192.0.2.30:30000");
    let mut leg = dtls_leg(
        Role::Server,
        &leg_cert,
        &party_cert,
        false,
        Some(party_addr),
        t0,
        &SecureConfig::default(),
    );
    let mut party = Party::with_cert(Role::Client, &party_cert, &leg_cert, party_addr, t0);
    let (mut wire, mut evs) = (Wire::default(), Vec::new());
    let now = pump(
        &mut leg,
        &mut party,
        t0,
        &mut wire,
        &mut evs,
        &mut |_: &mut SecureLeg, _| {},
    );
    media_both_ways(&mut leg, &mut party, now, 1);
    leg.close(now);
    assert!(!leg.is_ready());
    assert_eq!(leg.protect_outbound(&rtp(9, 1, 1)), None);
    // close_notify goes to the party, whose association ends.
    let (to, alert) = leg.poll_transmit().unwrap();
    assert_eq!(to, party_addr);
    party.ep.handle_datagram(&alert, now);
    assert_eq!(party.ep.poll_event(), Some(DtlsEvent::Closed));
}

#[test]
fn peer_close_notify_discards_keys() {
    let t0 = Instant::now();
    let leg_cert = Arc::new(cert());
    let party_cert = cert();
    let party_addr = addr("192.0.2.30:30000");
    let mut leg = dtls_leg(
        Role::Client,
        &leg_cert,
        &party_cert,
        false,
        Some(party_addr),
        t0,
        &SecureConfig::default(),
    );
    let mut party = Party::with_cert(Role::Server, &party_cert, &leg_cert, party_addr, t0);
    let (mut wire, mut evs) = (Wire::default(), Vec::new());
    let now = pump(
        &mut leg,
        &mut party,
        t0,
        &mut wire,
        &mut evs,
        &mut |_: &mut SecureLeg, _| {},
    );
    media_both_ways(&mut leg, &mut party, now, 1);
    party.ep.close(now);
    let alert = party.ep.poll_transmit().unwrap();
    assert_eq!(
        leg.handle_inbound(now, party_addr, &alert),
        Inbound::Consumed
    );
    assert!(events(&mut leg).contains(&SecureEvent::DtlsClosed));
    assert!(!leg.is_ready());
    assert_eq!(
        leg.handle_inbound(now, party_addr, &rtp(50, 1, 1)),
        Inbound::Dropped(DropReason::NotReady)
    );
}

#[test]
fn two_legs_back_to_back_without_ice() {
    // Two SecureLegs as each other's party (DTLS client and server, no ICE, each told the
    // other's address by "SDP"), and an attacker racing ClientHellos at both.
    let t0 = Instant::now();
    let (ca, cb) = (Arc::new(cert()), Arc::new(cert()));
    let (a_addr, b_addr) = (addr("10.1.0.1:20000"), addr("10.2.0.2:30000"));
    let attacker = addr("10.1.0.1:20002");
    let leg = |role, own: &Arc<DtlsCertificate>, peer: &DtlsCertificate, sdp| {
        dtls_leg(
            role,
            own,
            peer,
            false,
            Some(sdp),
            t0,
            &SecureConfig::default(),
        )
    };
    let mut a = leg(Role::Client, &ca, &cb, b_addr);
    let mut b = leg(Role::Server, &cb, &ca, a_addr);
    let evil = attacker_hello(&cb, t0);
    let mut now = t0;
    for _ in 0..200 {
        b.handle_inbound(now, attacker, &evil);
        a.handle_inbound(now, attacker, &evil);
        let mut moved = false;
        while let Some((to, d)) = a.poll_transmit() {
            assert_eq!(to, b_addr);
            moved = true;
            b.handle_inbound(now, a_addr, &d);
        }
        while let Some((to, d)) = b.poll_transmit() {
            assert_eq!(to, a_addr);
            moved = true;
            a.handle_inbound(now, b_addr, &d);
        }
        if a.is_ready() && b.is_ready() && !moved {
            break;
        }
        if !moved {
            let Some(next) = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            now = now.max(next);
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    assert!(
        a.is_ready() && b.is_ready(),
        "{:?} {:?}",
        events(&mut a),
        events(&mut b)
    );
    assert!(events(&mut a).contains(&SecureEvent::DtlsConnected));
    assert!(events(&mut b).contains(&SecureEvent::DtlsConnected));
    for seq in 0..10u16 {
        let p = rtp(seq, 0xA, seq as u8);
        let s = a.protect_outbound(&p).unwrap();
        assert_eq!(media(b.handle_inbound(now, a_addr, &s)), (p, a_addr));
        let q = rtcp_sr(0xB, u32::from(seq));
        let s = b.protect_outbound(&q).unwrap();
        assert_eq!(media(a.handle_inbound(now, b_addr, &s)), (q, b_addr));
    }
    assert!(a.stats().hello_rejected > 0 && b.stats().hello_rejected > 0);
    assert_eq!(
        (a.destination(), b.destination()),
        (Some(b_addr), Some(a_addr))
    );
}
