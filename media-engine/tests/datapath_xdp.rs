//! The datapath with XDP on the real kernel path: sender netns A -> SBC netns
//! (relay on two veths) -> receiver netns C. Unlatched directions are relayed
//! by the userspace relay (the XDP program passes them up); once both legs are
//! latched they are installed in XDP as strict. Needs root.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::*;
use common::{privileged, rtp};
use ebpf_relay::{AttachMode, Outcome};
use media_engine::datapath::{
    ActiveDatapath, ControlKind, ControlPacket, Datapath, DatapathConfig, DatapathKind,
    FlowPairSpec, LatchState, LearnPolicy, LegSpec, PairCounters, PairId,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const RA: &str = "198.18.1.1:30000";
const RB: &str = "198.18.2.1:30002";

fn start(t: &Topology, mode: AttachMode, control: Arc<Mutex<Vec<ControlPacket>>>) -> Datapath {
    let cfg = DatapathConfig {
        kind: DatapathKind::Xdp,
        xdp_interfaces: vec!["sbc0".into(), "sbc1".into()],
        attach_mode: mode,
        ..DatapathConfig::default()
    };
    in_netns(&t.sbc, move || {
        Datapath::start(
            &cfg,
            Some(Arc::new(move |p| control.lock().unwrap().push(p))),
        )
        .expect("XDP datapath")
    })
}

fn create(t: &Topology, dp: &Datapath, spec: FlowPairSpec) -> PairId {
    in_netns(&t.sbc, || dp.create_pair(spec).expect("create pair"))
}

fn recv_n(s: &UdpSocket, n: usize, timeout: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n && Instant::now() < deadline {
        if let Ok((len, from)) = s.recv_from(&mut buf) {
            out.push((from, buf[..len].to_vec()));
        }
    }
    out
}

fn silence(s: &UdpSocket, what: &str) {
    let got = recv_n(s, 1, Duration::from_millis(300));
    assert!(
        got.is_empty(),
        "{what}: unexpected datagram from {:?}",
        got.first().map(|g| g.0)
    );
}

fn wait_pair(
    dp: &Datapath,
    id: PairId,
    what: &str,
    f: impl Fn(&PairCounters) -> bool,
) -> PairCounters {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let p = dp.pair(id).expect("pair exists");
        if f(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: timed out; pair state {p:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stat(dp: &Datapath, o: Outcome) -> u64 {
    dp.xdp_stats().expect("xdp active").expect("stats").get(o)
}

/// Sends `n` packets each way in batches (A to RA, C to RB) and checks each
/// arrives rewritten.
fn both_ways(
    a: &UdpSocket,
    c: &UdpSocket,
    c_expects_from: SocketAddr,
    a_expects_from: SocketAddr,
    start: u16,
    n: u16,
) {
    both_ways_via(
        a,
        c,
        (sa(RA), sa(RB)),
        (c_expects_from, a_expects_from),
        start,
        n,
    )
}

/// Same, with explicit relay sockets `(ra, rb)` and expected sources
/// `(at C, at A)`.
fn both_ways_via(
    a: &UdpSocket,
    c: &UdpSocket,
    (ra, rb): (SocketAddr, SocketAddr),
    (c_expects_from, a_expects_from): (SocketAddr, SocketAddr),
    start: u16,
    n: u16,
) {
    const BATCH: u16 = 50;
    let mut seq = start;
    while seq < start + n {
        let end = (seq + BATCH).min(start + n);
        for s in seq..end {
            a.send_to(&rtp(s, 1), ra).unwrap();
            c.send_to(&rtp(s, 2), rb).unwrap();
        }
        let at_c = recv_n(c, usize::from(end - seq), Duration::from_secs(2));
        let at_a = recv_n(a, usize::from(end - seq), Duration::from_secs(2));
        assert_eq!(
            at_c.len(),
            usize::from(end - seq),
            "A->C lost packets at {seq}"
        );
        assert_eq!(
            at_a.len(),
            usize::from(end - seq),
            "C->A lost packets at {seq}"
        );
        for (i, (from, d)) in at_c.iter().enumerate() {
            assert_eq!(*from, c_expects_from);
            assert_eq!(d, &rtp(seq + i as u16, 1));
        }
        for (i, (from, d)) in at_a.iter().enumerate() {
            assert_eq!(*from, a_expects_from);
            assert_eq!(d, &rtp(seq + i as u16, 2));
        }
        seq = end;
    }
}

fn strict_pair_in_xdp(mode: AttachMode, test: &str) {
    if !privileged(test) {
        return;
    }
    let t = Topology::new(true);
    let control = Arc::new(Mutex::new(Vec::new()));
    let dp = start(&t, mode, control.clone());
    assert_eq!(dp.active(), ActiveDatapath::Xdp);
    assert_eq!(dp.active().as_str(), "xdp");
    let a = bind_in(&t.a, "198.18.1.2:5000");
    let attacker = bind_in(&t.a, "198.18.1.3:5000");
    let c = bind_in(&t.c, "198.18.2.2:6000");
    let (errs_a, errs_c) = (udp_csum_errors(&t.a), udp_csum_errors(&t.c));
    let id = create(
        &t,
        &dp,
        FlowPairSpec {
            a: LegSpec {
                local: sa(RA),
                peer: Some(sa("198.18.1.2:5000")),
                learn: LearnPolicy::Off,
            },
            b: LegSpec {
                local: sa(RB),
                peer: Some(sa("198.18.2.2:6000")),
                learn: LearnPolicy::Off,
            },
            rtcp: None,
        },
    );
    // Learning off with SDP addresses: final at once, installed as strict.
    wait_pair(&dp, id, "installed in XDP", |p| {
        p.a_to_b_in_xdp && p.b_to_a_in_xdp
    });
    const N: u16 = 400;
    both_ways(&a, &c, sa(RB), sa(RA), 0, N);
    let p = dp.pair(id).unwrap();
    assert_eq!(
        p.a_to_b.packets,
        u64::from(N),
        "per-flow counter = packets sent"
    );
    assert_eq!(p.b_to_a.packets, u64::from(N));
    assert_eq!(
        p.a_to_b.bytes,
        u64::from(N) * 200,
        "bytes from the IP header"
    );
    assert_eq!(
        dp.userspace_stats().received,
        0,
        "every packet relayed by XDP, none by userspace"
    );
    assert_eq!(stat(&dp, Outcome::ForwardedRedirect), 2 * u64::from(N));
    assert_eq!(udp_csum_errors(&t.c), errs_c, "UDP checksum errors at C");
    assert_eq!(udp_csum_errors(&t.a), errs_a, "UDP checksum errors at A");

    // Attacker flood from another address: dropped in XDP, stream unchanged.
    for i in 0..1000u16 {
        attacker.send_to(&rtp(i, 0xbad), sa(RA)).unwrap();
    }
    both_ways(&a, &c, sa(RB), sa(RA), N, 50);
    silence(&c, "attacker packets relayed");
    silence(&attacker, "attacker received media");
    assert_eq!(stat(&dp, Outcome::DropStrictMismatch), 1000);
    assert_eq!(dp.pair(id).unwrap().a_to_b.packets, u64::from(N) + 50);

    // STUN and DTLS on an installed relay port reach the callback, not C.
    let stun = [
        0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    a.send_to(&stun, sa(RA)).unwrap();
    a.send_to(&dtls, sa(RA)).unwrap();
    silence(&c, "STUN/DTLS relayed");
    let deadline = Instant::now() + Duration::from_secs(2);
    while control.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let got = control.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].kind, ControlKind::Stun);
    assert_eq!(got[1].kind, ControlKind::Dtls);
    assert_eq!(got[0].source, sa("198.18.1.2:5000"));
    assert!(stat(&dp, Outcome::PassStunDtls) >= 2);

    // Removal: map entries and sockets gone; nothing forwarded any more.
    let last = dp.remove_pair(id).expect("pair");
    assert_eq!(last.a_to_b.packets, u64::from(N) + 50);
    let fwd = stat(&dp, Outcome::ForwardedRedirect);
    for s in 0..20 {
        a.send_to(&rtp(s, 1), sa(RA)).unwrap();
    }
    silence(&c, "forwarded after removal");
    assert_eq!(stat(&dp, Outcome::ForwardedRedirect), fwd);
    assert!(dp.pairs().is_empty());
    drop(dp);
    for dev in ["sbc0", "sbc1"] {
        let att = in_netns(&t.sbc, || ebpf_relay::xdp_attachment(dev).expect("netlink"));
        assert!(
            att.native_prog_id.is_none() && att.generic_prog_id.is_none(),
            "XDP left on {dev}: {att:?}"
        );
    }
}

#[test]
fn xdp_strict_pair_native() {
    strict_pair_in_xdp(AttachMode::Native, "xdp_strict_pair_native");
}

#[test]
fn xdp_strict_pair_generic() {
    strict_pair_in_xdp(AttachMode::Generic, "xdp_strict_pair_generic");
}

/// C's party is behind a NAT: its SDP says :6000, it sends from :6001. Until
/// the learn window closes everything goes through userspace; then both
/// directions are installed in XDP, toward the learned address, strict.
#[test]
fn xdp_learn_window_then_strict_in_xdp() {
    if !privileged("xdp_learn_window_then_strict_in_xdp") {
        return;
    }
    let t = Topology::new(true);
    let dp = start(&t, AttachMode::Auto, Arc::default());
    let a = bind_in(&t.a, "198.18.1.2:5000");
    let c_sdp = bind_in(&t.c, "198.18.2.2:6000");
    let c_nat = bind_in(&t.c, "198.18.2.2:6001");
    let c_attacker = bind_in(&t.c, "198.18.2.2:6666");
    let id = create(
        &t,
        &dp,
        FlowPairSpec {
            a: LegSpec {
                local: sa(RA),
                peer: Some(sa("198.18.1.2:5000")),
                learn: LearnPolicy::Off,
            },
            b: LegSpec {
                local: sa(RB),
                peer: Some(sa("198.18.2.2:6000")),
                learn: LearnPolicy::Window {
                    packets: 3,
                    duration: Duration::from_secs(10),
                },
            },
            rtcp: None,
        },
    );
    // Before C speaks: A->C goes by userspace to C's SDP address.
    for s in 0..10 {
        a.send_to(&rtp(s, 1), sa(RA)).unwrap();
    }
    let got = recv_n(&c_sdp, 10, Duration::from_secs(2));
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(from, _)| *from == sa(RB)));
    let p = dp.pair(id).unwrap();
    assert!(
        !p.a_to_b_in_xdp && !p.b_to_a_in_xdp,
        "not final yet: {p:#?}"
    );
    wait_for("userspace relayed the first 10", || {
        dp.userspace_stats().received == 10
    });
    assert!(stat(&dp, Outcome::PassUnknownPort) >= 10);

    // C speaks from its NAT address: 3 packets close the window.
    for s in 0..3 {
        c_nat.send_to(&rtp(s, 2), sa(RB)).unwrap();
    }
    assert_eq!(recv_n(&a, 3, Duration::from_secs(2)).len(), 3);
    wait_for("userspace relayed C's 3", || {
        dp.userspace_stats().received == 13
    });
    let p = wait_pair(&dp, id, "installed after latching", |p| {
        p.a_to_b_in_xdp && p.b_to_a_in_xdp
    });
    assert_eq!(
        p.info.b.state,
        LatchState::Latched {
            source: sa("198.18.2.2:6001")
        }
    );
    let user_before = dp.userspace_stats().received;
    let fwd_before = stat(&dp, Outcome::ForwardedRedirect);
    both_ways(&a, &c_nat, sa(RB), sa(RA), 100, 200);
    assert_eq!(dp.userspace_stats().received, user_before, "XDP took over");
    assert_eq!(stat(&dp, Outcome::ForwardedRedirect), fwd_before + 400);
    silence(&c_sdp, "media still sent to the SDP address after latching");

    // Another source (same IP, other port) cannot redirect or inject.
    for i in 0..500u16 {
        c_attacker.send_to(&rtp(i, 0xbad), sa(RB)).unwrap();
    }
    both_ways(&a, &c_nat, sa(RB), sa(RA), 300, 20);
    silence(&a, "attacker injected");
    silence(&c_attacker, "attacker received media");
    assert!(stat(&dp, Outcome::DropStrictMismatch) >= 500);

    // Counters: userspace part + XDP part = everything sent.
    let p = dp.pair(id).unwrap();
    assert_eq!(p.a_to_b.packets, 10 + 200 + 20);
    assert_eq!(p.b_to_a.packets, 3 + 200 + 20);
    dp.remove_pair(id).expect("pair");
    for s in 0..10 {
        c_nat.send_to(&rtp(s, 2), sa(RB)).unwrap();
    }
    silence(&a, "forwarded after removal");
}

/// Re-INVITE while a pair is in XDP: A moves to another address. The old XDP
/// entry leaves the map (its counters are kept), the new address is final at
/// once (learning off) and installed; the old address is refused.
#[test]
fn xdp_update_moves_installed_flow() {
    if !privileged("xdp_update_moves_installed_flow") {
        return;
    }
    let t = Topology::new(true);
    let dp = start(&t, AttachMode::Auto, Arc::default());
    let a = bind_in(&t.a, "198.18.1.2:5000");
    let a2 = bind_in(&t.a, "198.18.1.3:5002");
    let c = bind_in(&t.c, "198.18.2.2:6000");
    let mut spec = FlowPairSpec {
        a: LegSpec {
            local: sa(RA),
            peer: Some(sa("198.18.1.2:5000")),
            learn: LearnPolicy::Off,
        },
        b: LegSpec {
            local: sa(RB),
            peer: Some(sa("198.18.2.2:6000")),
            learn: LearnPolicy::Off,
        },
        rtcp: None,
    };
    let id = create(&t, &dp, spec);
    wait_pair(&dp, id, "installed", |p| p.a_to_b_in_xdp && p.b_to_a_in_xdp);
    both_ways(&a, &c, sa(RB), sa(RA), 0, 100);
    spec.a.peer = Some(sa("198.18.1.3:5002"));
    dp.update_pair(id, spec).expect("update");
    let p = wait_pair(&dp, id, "re-installed", |p| {
        p.a_to_b_in_xdp && p.b_to_a_in_xdp
    });
    assert_eq!(p.a_to_b.packets, 100, "counters kept across the update");
    let drops = stat(&dp, Outcome::DropStrictMismatch);
    for s in 0..10 {
        a.send_to(&rtp(s, 1), sa(RA)).unwrap();
    }
    silence(&c, "old address after re-INVITE");
    assert_eq!(stat(&dp, Outcome::DropStrictMismatch), drops + 10);
    both_ways(&a2, &c, sa(RB), sa(RA), 100, 100);
    silence(&a, "media still sent to the old address");
    let p = dp.pair(id).unwrap();
    assert_eq!(p.a_to_b.packets, 200);
    assert_eq!(p.b_to_a.packets, 200);
    assert_eq!(dp.userspace_stats().received, 0, "all in XDP");
}

/// IPv6 legs: egress resolved from the IPv6 routes and the neighbour table
/// (rtnetlink), installed in XDP, every packet relayed with correct checksums.
#[test]
fn xdp_ipv6_strict_pair() {
    if !privileged("xdp_ipv6_strict_pair") {
        return;
    }
    let t = Topology::new(true);
    let dp = start(&t, AttachMode::Auto, Arc::default());
    let (ra, rb) = (sa("[2001:db8:1::1]:30010"), sa("[2001:db8:2::1]:30012"));
    let a = bind_in(&t.a, "[2001:db8:1::2]:5010");
    let c = bind_in(&t.c, "[2001:db8:2::2]:6010");
    let (errs_a, errs_c) = (udp6_csum_errors(&t.a), udp6_csum_errors(&t.c));
    let id = create(
        &t,
        &dp,
        FlowPairSpec {
            a: LegSpec {
                local: ra,
                peer: Some(sa("[2001:db8:1::2]:5010")),
                learn: LearnPolicy::Off,
            },
            b: LegSpec {
                local: rb,
                peer: Some(sa("[2001:db8:2::2]:6010")),
                learn: LearnPolicy::Off,
            },
            rtcp: None,
        },
    );
    wait_pair(&dp, id, "IPv6 installed in XDP", |p| {
        p.a_to_b_in_xdp && p.b_to_a_in_xdp
    });
    both_ways_via(&a, &c, (ra, rb), (rb, ra), 0, 200);
    let p = dp.pair(id).unwrap();
    assert_eq!((p.a_to_b.packets, p.b_to_a.packets), (200, 200));
    assert_eq!(p.a_to_b.bytes, 200 * 220, "IPv6: 40-byte header");
    assert_eq!(dp.userspace_stats().received, 0, "all in XDP");
    assert_eq!(udp6_csum_errors(&t.c), errs_c);
    assert_eq!(udp6_csum_errors(&t.a), errs_a);
}

/// Udp6InCsumErrors of namespace `ns`.
fn udp6_csum_errors(ns: &str) -> u64 {
    in_netns(ns, || {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp6").expect("snmp6");
        snmp.lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Udp6InCsumErrors")
    })
}
