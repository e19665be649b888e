//! Two of our DTLS endpoints handshaking in memory with synthetic time: every `a=setup`
//! combination, both SRTP profiles, keys checked by protecting and unprotecting RTP/RTCP with
//! `media_engine::srtp`; fingerprint mismatch; lost flights recovered by retransmission;
//! unanswered handshakes failing in bounded time; garbage never panicking.

use std::time::{Duration, Instant, SystemTime};

use media_engine::dtls::{
    answer_setup, dtls_role, DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsState,
    FailureReason, Fingerprint, HashAlgorithm, Role, Setup, SrtpKeyingMaterial,
};
use media_engine::srtp::SrtpProfile;

mod common;
use common::XorShift as Rng;

fn cert() -> DtlsCertificate {
    DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap()
}

/// Which datagrams the simulated network loses: called with (sender role, index of the
/// datagram among those this sender produced, its bytes); true drops it.
type Loss<'a> = &'a mut dyn FnMut(Role, usize, &[u8]) -> bool;

struct Outcome {
    a: Vec<DtlsEvent>,
    b: Vec<DtlsEvent>,
    /// When each side first reported an event.
    a_at: Option<Duration>,
    b_at: Option<Duration>,
    elapsed: Duration,
    delivered: usize,
}

/// Runs two endpoints until both have reported an outcome (or nothing is left to do), moving
/// synthetic time to the next timer when the network is idle. Bounded in steps.
fn pump(a: &mut DtlsEndpoint, b: &mut DtlsEndpoint, start: Instant, loss: Loss<'_>) -> Outcome {
    let mut now = start;
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    let (mut sent_a, mut sent_b) = (0usize, 0usize);
    let mut delivered = 0;
    let (mut a_at, mut b_at) = (None, None);
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(d) = a.poll_transmit() {
            moved = true;
            let drop = loss(a.role(), sent_a, &d);
            sent_a += 1;
            if !drop {
                delivered += 1;
                b.handle_datagram(&d, now);
            }
        }
        while let Some(d) = b.poll_transmit() {
            moved = true;
            let drop = loss(b.role(), sent_b, &d);
            sent_b += 1;
            if !drop {
                delivered += 1;
                a.handle_datagram(&d, now);
            }
        }
        while let Some(e) = a.poll_event() {
            a_at.get_or_insert(now - start);
            ev_a.push(e);
        }
        while let Some(e) = b.poll_event() {
            b_at.get_or_insert(now - start);
            ev_b.push(e);
        }
        let done = |s: DtlsState| s != DtlsState::Handshaking;
        if done(a.state()) && done(b.state()) && !moved {
            break;
        }
        if !moved {
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            now = now.max(next);
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    Outcome {
        a: ev_a,
        b: ev_b,
        a_at,
        b_at,
        elapsed: now - start,
        delivered,
    }
}

fn no_loss() -> impl FnMut(Role, usize, &[u8]) -> bool {
    |_, _, _| false
}

fn connected(events: &[DtlsEvent]) -> &SrtpKeyingMaterial {
    match events {
        [DtlsEvent::Connected(k)] => k,
        other => panic!("expected exactly one Connected event, got {other:?}"),
    }
}

struct Pair {
    a: DtlsEndpoint,
    b: DtlsEndpoint,
}

fn pair(role_a: Role, cfg_a: &DtlsConfig, cfg_b: &DtlsConfig, now: Instant) -> Pair {
    let (ca, cb) = (cert(), cert());
    Pair {
        a: DtlsEndpoint::new(role_a, &ca, [cb.fingerprint().clone()], cfg_a, now).unwrap(),
        b: DtlsEndpoint::new(
            role_a.opposite(),
            &cb,
            [ca.fingerprint().clone()],
            cfg_b,
            now,
        )
        .unwrap(),
    }
}

fn rtp_packet(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i * 7 + u32::from(seq)) as u8));
    p
}

fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 20]);
    p
}

/// Both ends' keys agree, and SRTP/SRTCP protected by one is unprotected by the other (and a
/// tampered packet is not).
fn check_keys(ka: &SrtpKeyingMaterial, kb: &SrtpKeyingMaterial) {
    assert_eq!(ka.profile, kb.profile);
    assert_eq!(ka.role, kb.role.opposite());
    assert_eq!(ka.client_write, kb.client_write);
    assert_eq!(ka.server_write, kb.server_write);
    assert_ne!(ka.client_write, ka.server_write);
    assert_eq!(ka.local(), kb.remote());
    assert_eq!(ka.client_write.key.len(), 16);
    assert_eq!(ka.client_write.salt.len(), ka.profile.master_salt_len());
    for (tx, rx, ssrc) in [(ka, kb, 0x1111_1111u32), (kb, ka, 0x2222_2222)] {
        let mut out = tx.outbound_context().unwrap();
        let mut inp = rx.inbound_context().unwrap();
        for seq in [1u16, 2, 3] {
            let plain = rtp_packet(ssrc, seq);
            let mut pkt = plain.clone();
            out.protect_rtp(&mut pkt).unwrap();
            assert_ne!(pkt[12..plain.len()], plain[12..], "payload not encrypted");
            let mut bad = pkt.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(inp.unprotect_rtp(&mut bad).is_err());
            inp.unprotect_rtp(&mut pkt).unwrap();
            assert_eq!(pkt, plain);
        }
        let plain = rtcp_sr(ssrc);
        let mut pkt = plain.clone();
        out.protect_rtcp(&mut pkt).unwrap();
        inp.unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, plain);
        // Our own inbound context cannot read what we send (distinct directions).
        let mut pkt = rtp_packet(ssrc, 9);
        out.protect_rtp(&mut pkt).unwrap();
        assert!(tx
            .inbound_context()
            .unwrap()
            .unprotect_rtp(&mut pkt)
            .is_err());
    }
}

#[test]
fn every_setup_combination_handshakes_and_keys_srtp() {
    // (offerer's a=setup, answerer's a=setup): the RFC 5763/8842 cases, plus answers that
    // wrongly say actpass (S-21 "actpass-in-answer").
    let cases = [
        (Setup::ActPass, answer_setup(Setup::ActPass)),
        (Setup::ActPass, Setup::Passive),
        (Setup::Active, Setup::Passive),
        (Setup::Passive, Setup::Active),
        (Setup::Active, Setup::ActPass),
        (Setup::Passive, Setup::ActPass),
    ];
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let cfg = DtlsConfig {
            srtp_profiles: vec![profile],
            ..DtlsConfig::default()
        };
        for (offer, answer) in cases {
            let role_offerer = dtls_role(offer, answer).unwrap();
            let role_answerer = dtls_role(answer, offer).unwrap();
            assert_eq!(role_offerer, role_answerer.opposite());
            let (co, ca) = (cert(), cert());
            let now = Instant::now();
            // The answerer is created first (it knows the offer when it answers); if it is the
            // client, its ClientHello may reach the offerer before the answer does: the
            // offerer's endpoint is created afterwards and still gets every datagram here.
            let mut answerer =
                DtlsEndpoint::new(role_answerer, &ca, [co.fingerprint().clone()], &cfg, now)
                    .unwrap();
            let mut offerer =
                DtlsEndpoint::new(role_offerer, &co, [ca.fingerprint().clone()], &cfg, now)
                    .unwrap();
            let out = pump(&mut offerer, &mut answerer, now, &mut no_loss());
            let ko = connected(&out.a);
            let kb = connected(&out.b);
            assert_eq!(ko.profile, profile, "{offer}/{answer}");
            assert_eq!(ko.role, role_offerer);
            check_keys(ko, kb);
            // No retransmission was needed on a lossless network.
            assert_eq!(out.elapsed, Duration::ZERO, "{offer}/{answer}");
            assert_eq!(offerer.state(), DtlsState::Connected);
            assert_eq!(answerer.state(), DtlsState::Connected);
            assert!(offerer.poll_timeout().is_none());
        }
    }
}

#[test]
fn srtp_profile_negotiation() {
    let both = DtlsConfig::default();
    let cm_only = DtlsConfig {
        srtp_profiles: vec![SrtpProfile::AesCm128HmacSha1_80],
        ..DtlsConfig::default()
    };
    let gcm_only = DtlsConfig {
        srtp_profiles: vec![SrtpProfile::AeadAes128Gcm],
        ..DtlsConfig::default()
    };
    let cm_first = DtlsConfig {
        srtp_profiles: vec![SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm],
        ..DtlsConfig::default()
    };
    let now = Instant::now();
    for (client, server, expect) in [
        (&both, &both, Some(SrtpProfile::AeadAes128Gcm)),
        (&cm_first, &both, Some(SrtpProfile::AesCm128HmacSha1_80)),
        (&both, &cm_only, Some(SrtpProfile::AesCm128HmacSha1_80)),
        (&cm_only, &both, Some(SrtpProfile::AesCm128HmacSha1_80)),
        (&gcm_only, &both, Some(SrtpProfile::AeadAes128Gcm)),
        (&gcm_only, &cm_only, None),
    ] {
        let mut p = pair(Role::Client, client, server, now);
        let out = pump(&mut p.a, &mut p.b, now, &mut no_loss());
        match expect {
            Some(profile) => {
                let (kc, ks) = (connected(&out.a), connected(&out.b));
                assert_eq!(kc.profile, profile);
                check_keys(kc, ks);
            }
            None => {
                assert_eq!(p.a.state(), DtlsState::Failed, "{:?}", out.a);
                assert_eq!(p.b.state(), DtlsState::Failed, "{:?}", out.b);
                assert!(out.a.iter().all(|e| matches!(e, DtlsEvent::Failed(_))));
                assert!(out.b.iter().all(|e| matches!(e, DtlsEvent::Failed(_))));
            }
        }
    }
}

#[test]
fn wrong_fingerprint_fails_both_sides() {
    let now = Instant::now();
    let cfg = DtlsConfig::default();
    for checker in [Role::Server, Role::Client] {
        let (c_checker, c_peer, c_other) = (cert(), cert(), cert());
        // The checker was told (by SDP) to expect another certificate's fingerprint.
        let mut checking = DtlsEndpoint::new(
            checker,
            &c_checker,
            [c_other.fingerprint().clone()],
            &cfg,
            now,
        )
        .unwrap();
        let mut peer = DtlsEndpoint::new(
            checker.opposite(),
            &c_peer,
            [c_checker.fingerprint().clone()],
            &cfg,
            now,
        )
        .unwrap();
        let out = pump(&mut checking, &mut peer, now, &mut no_loss());
        match out.a.as_slice() {
            [DtlsEvent::Failed(FailureReason::FingerprintMismatch { expected, got })] => {
                assert_eq!(expected, &[c_other.fingerprint().clone()]);
                assert_eq!(got, c_peer.fingerprint());
            }
            other => panic!("{checker:?} checking: expected a fingerprint mismatch, got {other:?}"),
        }
        assert_eq!(checking.state(), DtlsState::Failed);
        // The peer is told by a fatal alert and never sees keys.
        assert!(
            !out.b.iter().any(|e| matches!(e, DtlsEvent::Connected(_))),
            "{checker:?}: peer connected: {:?}",
            out.b
        );
        assert_eq!(peer.state(), DtlsState::Failed, "{:?}", out.b);
    }
}

#[test]
fn fingerprint_with_other_hash_and_case_is_accepted() {
    let now = Instant::now();
    let cfg = DtlsConfig::default();
    let (cc, cs) = (cert(), cert());
    // The client's SDP says sha-512 in lower case; the server's sha-1 in upper case.
    let fp_c = Fingerprint::parse_sdp(
        &cc.fingerprint_with(HashAlgorithm::Sha512)
            .to_sdp()
            .to_lowercase(),
    )
    .unwrap();
    let fp_s = Fingerprint::parse_sdp(
        &cs.fingerprint_with(HashAlgorithm::Sha1)
            .to_sdp()
            .replace("sha-1", "SHA-1"),
    )
    .unwrap();
    let mut c = DtlsEndpoint::new(Role::Client, &cc, [fp_s], &cfg, now).unwrap();
    let mut s = DtlsEndpoint::new(Role::Server, &cs, [fp_c], &cfg, now).unwrap();
    let out = pump(&mut c, &mut s, now, &mut no_loss());
    check_keys(connected(&out.a), connected(&out.b));
}

#[test]
fn several_sdp_fingerprints_use_the_strongest_hash() {
    let now = Instant::now();
    let cfg = DtlsConfig::default();
    let (cc, cs, other) = (cert(), cert(), cert());
    let run = |client_sees: Vec<Fingerprint>| {
        let mut c = DtlsEndpoint::new(Role::Client, &cc, client_sees, &cfg, now).unwrap();
        let mut s =
            DtlsEndpoint::new(Role::Server, &cs, [cc.fingerprint().clone()], &cfg, now).unwrap();
        pump(&mut c, &mut s, now, &mut no_loss()).a
    };
    let ok = |ev: Vec<DtlsEvent>| matches!(ev.as_slice(), [DtlsEvent::Connected(_)]);
    // A wrong sha-1 beside the right sha-256: sha-256 is the one checked.
    assert!(ok(run(vec![
        other.fingerprint_with(HashAlgorithm::Sha1),
        cs.fingerprint().clone()
    ])));
    // Two sha-256 (e.g. the peer is rotating certificates): one matching is enough.
    assert!(ok(run(vec![
        other.fingerprint().clone(),
        cs.fingerprint().clone()
    ])));
    // The right sha-256 beside a wrong sha-512: sha-512 is checked, and fails.
    match run(vec![
        cs.fingerprint().clone(),
        other.fingerprint_with(HashAlgorithm::Sha512),
    ])
    .as_slice()
    {
        [DtlsEvent::Failed(FailureReason::FingerprintMismatch { expected, got })] => {
            assert_eq!(expected, &[other.fingerprint_with(HashAlgorithm::Sha512)]);
            assert_eq!(got, &cs.fingerprint_with(HashAlgorithm::Sha512));
        }
        other => panic!("{other:?}"),
    }
    // No fingerprint at all is a configuration error.
    assert!(DtlsEndpoint::new(Role::Client, &cc, Vec::new(), &cfg, now).is_err());
}

#[test]
fn lost_flights_are_retransmitted() {
    let cfg = DtlsConfig::default();
    // Drop, in turn, the first datagram each side sends (ClientHello / HelloVerifyRequest),
    // the second of each (ClientHello with cookie / ServerHello flight), and the last flights.
    let cases: [(&str, Role, usize); 6] = [
        ("first ClientHello", Role::Client, 0),
        ("HelloVerifyRequest", Role::Server, 0),
        ("second ClientHello", Role::Client, 1),
        ("server flight 4", Role::Server, 1),
        ("client flight 5", Role::Client, 2),
        ("server flight 6", Role::Server, 2),
    ];
    for (what, who, index) in cases {
        let now = Instant::now();
        let mut p = pair(Role::Client, &cfg, &cfg, now);
        let mut dropped = 0;
        let mut loss = |role: Role, i: usize, _: &[u8]| {
            let d = role == who && i == index;
            dropped += usize::from(d);
            d
        };
        let out = pump(&mut p.a, &mut p.b, now, &mut loss);
        assert_eq!(dropped, 1, "{what}: nothing was dropped");
        let (kc, ks) = (connected(&out.a), connected(&out.b));
        check_keys(kc, ks);
        // Recovery took at least one retransmission interval, and not many.
        assert!(
            out.elapsed >= cfg.retransmit_interval && out.elapsed <= 4 * cfg.retransmit_interval,
            "{what}: elapsed {:?}",
            out.elapsed
        );
    }
    // Every datagram of the first attempt at each flight is lost (both directions, first
    // two datagrams each side): still completes.
    let now = Instant::now();
    let mut p = pair(Role::Client, &cfg, &cfg, now);
    let out = pump(&mut p.a, &mut p.b, now, &mut |_, i, _| i < 2);
    check_keys(connected(&out.a), connected(&out.b));
}

#[test]
fn unanswered_handshake_fails_in_bounded_time() {
    let cfg = DtlsConfig::default();
    let now = Instant::now();
    let mut p = pair(Role::Client, &cfg, &cfg, now);
    // The network loses everything the client sends.
    let out = pump(&mut p.a, &mut p.b, now, &mut |role, _, _| {
        role == Role::Client
    });
    // Retransmissions at 1, 3, 7, 15 s (doubling); the next would be at 31 s, past the
    // 30 s handshake deadline.
    assert_eq!(out.a, vec![DtlsEvent::Failed(FailureReason::Timeout)]);
    assert_eq!(out.a_at, Some(cfg.handshake_timeout));
    assert!(out.delivered == 0);
    // The server never heard anything: it gives up at the same deadline.
    assert_eq!(
        out.b,
        vec![DtlsEvent::Failed(FailureReason::Timeout)],
        "server"
    );
    assert_eq!(out.b_at, Some(cfg.handshake_timeout));
    assert!(p.a.poll_timeout().is_none() && p.b.poll_timeout().is_none());
}

/// Sends times of a lone client's flights until it fails, with synthetic time.
fn lone_client_schedule(cfg: &DtlsConfig) -> (Vec<Duration>, Duration, Vec<DtlsEvent>) {
    let start = Instant::now();
    let (c, other) = (cert(), cert());
    let mut ep =
        DtlsEndpoint::new(Role::Client, &c, [other.fingerprint().clone()], cfg, start).unwrap();
    let mut now = start;
    let mut sends = Vec::new();
    let mut events = Vec::new();
    for _ in 0..100 {
        if ep.poll_transmit().is_some() {
            sends.push(now - start);
            while ep.poll_transmit().is_some() {}
        }
        events.extend(std::iter::from_fn(|| ep.poll_event()));
        let Some(t) = ep.poll_timeout() else { break };
        now = t;
        ep.handle_timeout(now);
    }
    (sends, now - start, events)
}

#[test]
fn retransmissions_back_off_exponentially() {
    let secs = |v: &[u64]| {
        v.iter()
            .map(|s| Duration::from_secs(*s))
            .collect::<Vec<_>>()
    };
    let (sends, end, events) = lone_client_schedule(&DtlsConfig::default());
    assert_eq!(sends, secs(&[0, 1, 3, 7, 15]));
    assert_eq!(end, Duration::from_secs(30));
    assert_eq!(events, vec![DtlsEvent::Failed(FailureReason::Timeout)]);
    // With a long deadline: 7 retransmissions (the interval capped at 60 s), then the 8th
    // expiry of the timer ends it.
    let cfg = DtlsConfig {
        handshake_timeout: Duration::from_secs(600),
        ..DtlsConfig::default()
    };
    let (sends, end, events) = lone_client_schedule(&cfg);
    assert_eq!(sends, secs(&[0, 1, 3, 7, 15, 31, 63, 123]));
    assert_eq!(end, Duration::from_secs(183));
    assert_eq!(
        events,
        vec![DtlsEvent::Failed(FailureReason::RetransmissionsExhausted)]
    );
    // A shorter first interval (e.g. 100 ms) doubles the same way.
    let cfg = DtlsConfig {
        retransmit_interval: Duration::from_millis(100),
        ..DtlsConfig::default()
    };
    let (sends, _, _) = lone_client_schedule(&cfg);
    let ms = |v: &[u64]| {
        v.iter()
            .map(|s| Duration::from_millis(*s))
            .collect::<Vec<_>>()
    };
    assert_eq!(sends, ms(&[0, 100, 300, 700, 1500, 3100, 6300, 12700]));
}

fn random_garbage(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(300);
    let mut d: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    match rng.below(4) {
        // Looks like a DTLS record header (handshake, epoch 0 or 1), random rest.
        0 if d.len() >= 13 => {
            d[0] = 22;
            d[1] = 0xfe;
            d[2] = 0xfd;
            d[3] = 0;
            d[4] = rng.below(2) as u8;
            let body = (d.len() - 13) as u16;
            d[11..13].copy_from_slice(&body.to_be_bytes());
        }
        // Declares more than it has.
        1 if d.len() >= 13 => {
            d[0] = 22;
            d[1] = 0xfe;
            d[11] = 0xff;
        }
        _ => {}
    }
    d
}

#[test]
fn garbage_is_dropped_and_handshake_still_completes() {
    let cfg = DtlsConfig::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20 {
        let now = Instant::now();
        let mut p = pair(Role::Client, &cfg, &cfg, now);
        // Garbage before anything else, and beside every genuine datagram.
        for _ in 0..5 {
            p.b.handle_datagram(&random_garbage(&mut rng), now);
        }
        let mut garbage_rng = Rng(round + 1);
        let mut extra = Vec::new();
        let mut loss = |_: Role, _: usize, _: &[u8]| {
            extra.push(random_garbage(&mut garbage_rng));
            false
        };
        let out = pump(&mut p.a, &mut p.b, now, &mut loss);
        check_keys(connected(&out.a), connected(&out.b));
        // After the handshake: garbage (and the garbage the pump generated) changes nothing.
        for g in &extra {
            p.a.handle_datagram(g, now);
            p.b.handle_datagram(g, now);
        }
        for _ in 0..50 {
            let g = random_garbage(&mut rng);
            p.a.handle_datagram(&g, now);
            p.b.handle_datagram(&g, now);
        }
        assert_eq!(p.a.state(), DtlsState::Connected);
        assert_eq!(p.b.state(), DtlsState::Connected);
        assert!(p.a.poll_event().is_none() && p.b.poll_event().is_none());
        assert!(p.b.stats().dropped_malformed >= 5);
    }
}

#[test]
fn mutated_handshake_datagrams_never_panic() {
    // Record genuine handshake datagrams, then feed mutated copies (bit flips, truncation,
    // duplication) to fresh endpoints in both roles. The handshake may fail (it is DTLS's
    // business to reject tampering); it must not panic, and must end in bounded time.
    let cfg = DtlsConfig::default();
    let now = Instant::now();
    let mut p = pair(Role::Client, &cfg, &cfg, now);
    let mut recorded: Vec<(Role, Vec<u8>)> = Vec::new();
    let mut rec = |role: Role, _: usize, d: &[u8]| {
        recorded.push((role, d.to_vec()));
        false
    };
    let out = pump(&mut p.a, &mut p.b, now, &mut rec);
    connected(&out.a);
    assert!(recorded.len() >= 5, "{}", recorded.len());
    // DTLS_FUZZ_ITERS raises the count for a longer run on demand.
    let iters = std::env::var("DTLS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed = std::env::var("DTLS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let mut rng = Rng(seed);
    for _ in 0..iters {
        let target_role = if rng.below(2) == 0 {
            Role::Client
        } else {
            Role::Server
        };
        let mut q = pair(target_role, &cfg, &cfg, now);
        for (sender, d) in &recorded {
            if *sender == target_role {
                continue;
            }
            let mut m = d.clone();
            match rng.below(4) {
                0 => {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
                1 => m.truncate(rng.below(m.len())),
                2 => {
                    let copy = m.clone();
                    m.extend_from_slice(&copy);
                }
                _ => {
                    let i = rng.below(m.len());
                    m[i] = rng.next_u64() as u8;
                }
            }
            q.a.handle_datagram(&m, now);
            while q.a.poll_transmit().is_some() {}
        }
        let mut t = now;
        for _ in 0..100 {
            let Some(next) = q.a.poll_timeout() else {
                break;
            };
            t = t.max(next);
            q.a.handle_timeout(t);
            while q.a.poll_transmit().is_some() {}
        }
        assert_ne!(q.a.state(), DtlsState::Handshaking, "never ended");
    }
}

#[test]
fn close_notify_ends_the_association_on_both_sides() {
    let cfg = DtlsConfig::default();
    for closer in [Role::Client, Role::Server] {
        let now = Instant::now();
        let mut p = pair(closer, &cfg, &cfg, now);
        let out = pump(&mut p.a, &mut p.b, now, &mut no_loss());
        check_keys(connected(&out.a), connected(&out.b));
        p.a.close(now);
        assert_eq!(p.a.state(), DtlsState::Closed);
        let mut sent = 0;
        while let Some(d) = p.a.poll_transmit() {
            sent += 1;
            p.b.handle_datagram(&d, now);
        }
        assert!(sent >= 1, "no close_notify sent");
        assert_eq!(p.b.poll_event(), Some(DtlsEvent::Closed), "{closer:?}");
        assert_eq!(p.b.state(), DtlsState::Closed);
        // Nothing more is accepted.
        p.b.handle_datagram(&[22, 0xfe, 0xfd], now);
        assert_eq!(p.b.stats().dropped_after_end, 1);
    }
}

#[test]
fn small_mtu_fragments_handshake_messages() {
    let cfg = DtlsConfig {
        mtu: 200,
        ..DtlsConfig::default()
    };
    let now = Instant::now();
    let mut p = pair(Role::Client, &cfg, &cfg, now);
    let mut largest = 0;
    let mut count = 0;
    let out = pump(&mut p.a, &mut p.b, now, &mut |_, _, d| {
        largest = largest.max(d.len());
        count += 1;
        false
    });
    check_keys(connected(&out.a), connected(&out.b));
    // Certificates (~300-400 bytes of DER each) cannot travel whole: more datagrams than the
    // 6 of an unfragmented handshake, none much above the MTU (record and handshake headers).
    assert!(count > 6, "{count}");
    assert!(largest <= 200 + 2 * 25, "{largest}");
}

/// Delivers `src`'s datagrams to `dst`, each preceded by a mutated copy. True if any.
fn deliver_with_mutant(
    src: &mut DtlsEndpoint,
    dst: &mut DtlsEndpoint,
    rng: &mut Rng,
    now: Instant,
) -> bool {
    let mut moved = false;
    while let Some(d) = src.poll_transmit() {
        moved = true;
        let mut m = d.clone();
        match rng.below(3) {
            0 => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 => m.truncate(rng.below(m.len())),
            _ => {
                let i = rng.below(m.len());
                m[i] = rng.next_u64() as u8;
            }
        }
        dst.handle_datagram(&m, now);
        dst.handle_datagram(&d, now);
    }
    moved
}

#[test]
fn mutated_copies_in_live_handshakes_never_panic() {
    // Live handshakes where every genuine datagram is preceded by a mutated copy of itself,
    // reaching every state of both roles (including encrypted epoch-1 records). Outcome
    // either way; no panic; both ends finish in bounded (synthetic) time.
    let cfg = DtlsConfig::default();
    let iters = std::env::var("DTLS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(0xdead_beef);
    let mut completed = 0;
    for _ in 0..iters {
        let start = Instant::now();
        let mut now = start;
        let mut p = pair(Role::Client, &cfg, &cfg, now);
        for _ in 0..1000 {
            let moved_ab = deliver_with_mutant(&mut p.a, &mut p.b, &mut rng, now);
            let moved_ba = deliver_with_mutant(&mut p.b, &mut p.a, &mut rng, now);
            let moved = moved_ab || moved_ba;
            while p.a.poll_event().is_some() || p.b.poll_event().is_some() {}
            let done = |s: DtlsState| s != DtlsState::Handshaking;
            if done(p.a.state()) && done(p.b.state()) {
                break;
            }
            if !moved {
                let Some(next) = [p.a.poll_timeout(), p.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                else {
                    break;
                };
                now = now.max(next);
                p.a.handle_timeout(now);
                p.b.handle_timeout(now);
            }
        }
        assert_ne!(p.a.state(), DtlsState::Handshaking);
        assert_ne!(p.b.state(), DtlsState::Handshaking);
        assert!(now - start <= cfg.handshake_timeout);
        completed +=
            usize::from(p.a.state() == DtlsState::Connected && p.b.state() == DtlsState::Connected);
    }
    eprintln!("{completed} of {iters} handshakes completed despite the mutated copies");
}
