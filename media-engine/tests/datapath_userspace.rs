//! Userspace relay on real loopback sockets: relaying both ways with exact
//! counters, strict vs learn-window latching, attacker floods, STUN/DTLS to the
//! control callback, garbage, removal, datapath selection. Unprivileged.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_engine::datapath::{
    ActiveDatapath, ControlKind, ControlPacket, Datapath, DatapathConfig, DatapathError,
    DatapathKind, FlowPairSpec, LatchState, LearnPolicy, LegSpec, PairId, RelayIo, RtcpDemux, Side,
    UserspaceOptions,
};

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, 160));
    p
}

/// A loopback socket with a short read timeout.
fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Taken for writing while a test checks that the ports it just released can be bound
/// again: no other test (they run in parallel) may be handed one of them meanwhile.
static PORT_PROBES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A free loopback port for a relay socket (probed, then released for the relay to bind).
/// Taken below the ephemeral range (32768 and up), from 10,000 ports starting at a place
/// this process's id picks: a test's `bind(0)` running in parallel can never be handed it
/// between the probe and the relay's bind.
fn free_local() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _probing = PORT_PROBES.read().unwrap_or_else(|e| e.into_inner());
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..10_000 {
        let port = 20_000 + (start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000);
        let a = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if UdpSocket::bind(a).is_ok() {
            return a;
        }
    }
    panic!("no free loopback port in 20000-29999");
}

fn recv_all(s: &UdpSocket, want: usize, timeout: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
        }
    }
    out
}

fn silence(s: &UdpSocket, what: &str) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, from)) = s.recv_from(&mut buf) {
        panic!("{what}: unexpected {n}-byte datagram from {from}");
    }
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
}

thread_local! {
    /// The relay I/O the current test runs with (every test runs once per mode).
    static IO: std::cell::Cell<RelayIo> = const { std::cell::Cell::new(RelayIo::Auto) };
}

fn opts(workers: usize) -> UserspaceOptions {
    UserspaceOptions {
        workers,
        io: IO.with(|c| c.get()),
        ..UserspaceOptions::default()
    }
}

fn userspace(workers: usize) -> Datapath {
    let cfg = DatapathConfig {
        kind: DatapathKind::Userspace,
        userspace: opts(workers),
        ..DatapathConfig::default()
    };
    let dp = Datapath::start(&cfg, None).unwrap();
    check_io(&dp);
    dp
}

/// A test asked for one I/O mode gets exactly that one (io_uring must not quietly fall back).
fn check_io(dp: &Datapath) {
    let want = IO.with(|c| c.get());
    if want != RelayIo::Auto {
        assert_eq!(dp.relay_io(), want);
    }
}

struct Call {
    a: UdpSocket,
    b: UdpSocket,
    ra: SocketAddr,
    rb: SocketAddr,
    id: PairId,
}

fn call(
    dp: &Datapath,
    learn_a: LearnPolicy,
    learn_b: LearnPolicy,
    a_sdp: Option<SocketAddr>,
) -> Call {
    let (a, b) = (peer(), peer());
    let (ra, rb) = (free_local(), free_local());
    let spec = FlowPairSpec {
        a: LegSpec {
            local: ra,
            peer: Some(a_sdp.unwrap_or_else(|| a.local_addr().unwrap())),
            learn: learn_a,
        },
        b: LegSpec {
            local: rb,
            peer: Some(b.local_addr().unwrap()),
            learn: learn_b,
        },
        rtcp: None,
    };
    let id = dp.create_pair(spec).unwrap();
    Call { a, b, ra, rb, id }
}

/// A call whose party a is behind NAT (its SDP says an address nobody uses) and learns
/// for `duration` (or 1,000 packets); b is strict.
fn nat_call(dp: &Datapath, duration: Duration) -> Call {
    let w = LearnPolicy::Window {
        packets: 1000,
        duration,
    };
    call(
        dp,
        w,
        LearnPolicy::Off,
        Some("127.0.0.1:9".parse().unwrap()),
    )
}

fn relays_both_directions_with_exact_counters() {
    for workers in [1, 2] {
        let dp = userspace(workers);
        assert_eq!(dp.active(), ActiveDatapath::Userspace);
        assert_eq!(dp.active().as_str(), "userspace");
        let calls: Vec<Call> = (0..4)
            .map(|_| call(&dp, LearnPolicy::Off, LearnPolicy::Off, None))
            .collect();
        const N: u16 = 300;
        const BATCH: u16 = 50;
        // Batches, each read back before the next: the receivers' socket
        // buffers (not the relay) would overflow otherwise.
        for start in (0..N).step_by(BATCH as usize) {
            for c in &calls {
                for seq in start..start + BATCH {
                    c.a.send_to(&rtp(seq, 1), c.ra).unwrap();
                    c.b.send_to(&rtp(seq, 2), c.rb).unwrap();
                }
            }
            for c in &calls {
                let at_b = recv_all(&c.b, BATCH as usize, Duration::from_secs(3));
                let at_a = recv_all(&c.a, BATCH as usize, Duration::from_secs(3));
                assert_eq!(at_b.len(), BATCH as usize, "a->b lost packets");
                assert_eq!(at_a.len(), BATCH as usize, "b->a lost packets");
                for (i, (from, data)) in at_b.iter().enumerate() {
                    assert_eq!(*from, c.rb, "a->b leaves from b's relay socket");
                    assert_eq!(data, &rtp(start + i as u16, 1), "payload/order a->b");
                }
                for (i, (from, data)) in at_a.iter().enumerate() {
                    assert_eq!(*from, c.ra, "b->a leaves from a's relay socket");
                    assert_eq!(data, &rtp(start + i as u16, 2), "payload/order b->a");
                }
            }
        }
        for c in &calls {
            silence(&c.b, "duplicate at b");
            let p = dp.pair(c.id).unwrap();
            assert_eq!(p.a_to_b.packets, u64::from(N));
            assert_eq!(p.b_to_a.packets, u64::from(N));
            // Bytes from the IP header, like the XDP program: 172 + 8 + 20.
            assert_eq!(p.a_to_b.bytes, u64::from(N) * 200);
            assert!(p.a_to_b.last_seen_ns > 0);
            assert_eq!(
                p.info.a.state,
                LatchState::Latched {
                    source: c.a.local_addr().unwrap()
                }
            );
        }
        assert_eq!(dp.pairs().len(), 4);
        // Global counters are added right after each batch is sent.
        let deadline = Instant::now() + Duration::from_secs(2);
        while dp.userspace_stats().sent < 4 * 2 * u64::from(N) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let st = dp.userspace_stats();
        assert_eq!(st.received, 4 * 2 * u64::from(N));
        assert_eq!(st.sent, 4 * 2 * u64::from(N));
        assert_eq!(st.send_failed, 0);
    }
}

fn strict_leg_ignores_attacker_flood() {
    let dp = userspace(1);
    let c = call(&dp, LearnPolicy::Off, LearnPolicy::Off, None);
    let attacker = peer();
    // Flood from another address before and between legit packets.
    for i in 0..500u16 {
        attacker.send_to(&rtp(i, 0xbad), c.ra).unwrap();
        attacker.send_to(&rtp(i, 0xbad), c.rb).unwrap();
        if i % 25 == 24 {
            // Paced so that the relay sockets' buffers never overflow: every
            // attacker packet must be seen and counted.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for seq in 0..20 {
        c.a.send_to(&rtp(seq, 1), c.ra).unwrap();
        c.b.send_to(&rtp(seq, 2), c.rb).unwrap();
    }
    let at_b = recv_all(&c.b, 20, Duration::from_secs(2));
    let at_a = recv_all(&c.a, 20, Duration::from_secs(2));
    assert_eq!(at_b.len(), 20);
    assert_eq!(at_a.len(), 20);
    assert!(
        at_b.iter().all(|(_, d)| d[8..12] == 1u32.to_be_bytes()),
        "no attacker payload at b"
    );
    assert!(
        at_a.iter().all(|(_, d)| d[8..12] == 2u32.to_be_bytes()),
        "no attacker payload at a"
    );
    silence(&attacker, "attacker must never receive media (RTP Bleed)");
    silence(&c.b, "nothing extra at b");
    let p = dp.pair(c.id).unwrap();
    assert_eq!(p.info.a.counters.rejected_source, 500);
    assert_eq!(p.info.b.counters.rejected_source, 500);
    assert_eq!(p.a_to_b.packets, 20);
}

fn learn_window_latches_nat_address_then_strict() {
    let dp = userspace(1);
    // A's SDP says a private address nobody uses; A really sends from `a` (NAT).
    let sdp_private: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let w = LearnPolicy::Window {
        packets: 5,
        duration: Duration::from_secs(10),
    };
    let c = call(&dp, w, LearnPolicy::Off, Some(sdp_private));
    let nat = c.a.local_addr().unwrap();
    assert_eq!(dp.pair(c.id).unwrap().info.a.state, LatchState::Unlatched);
    for seq in 0..5 {
        c.a.send_to(&rtp(seq, 1), c.ra).unwrap();
    }
    assert_eq!(recv_all(&c.b, 5, Duration::from_secs(2)).len(), 5);
    let p = dp.pair(c.id).unwrap();
    assert_eq!(p.info.a.state, LatchState::Latched { source: nat });
    // Media toward A goes to the learned address, not the SDP one.
    for seq in 0..5 {
        c.b.send_to(&rtp(seq, 2), c.rb).unwrap();
    }
    let at_a = recv_all(&c.a, 5, Duration::from_secs(2));
    assert_eq!(at_a.len(), 5);
    assert!(at_a.iter().all(|(from, _)| *from == c.ra));
    // Window closed: a new source (attacker) cannot take over.
    let attacker = peer();
    for seq in 0..200 {
        attacker.send_to(&rtp(seq, 0xbad), c.ra).unwrap();
    }
    c.b.send_to(&rtp(99, 2), c.rb).unwrap();
    assert_eq!(recv_all(&c.a, 1, Duration::from_secs(2)).len(), 1);
    silence(&attacker, "attacker after window");
    silence(&c.b, "attacker payload relayed to b");
    assert_eq!(dp.pair(c.id).unwrap().info.a.counters.rejected_source, 200);
}

fn learn_off_refuses_nat_address() {
    let dp = userspace(1);
    let sdp_private: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let c = call(&dp, LearnPolicy::Off, LearnPolicy::Off, Some(sdp_private));
    for seq in 0..10 {
        c.a.send_to(&rtp(seq, 1), c.ra).unwrap();
    }
    silence(&c.b, "strict leg must not accept a non-SDP source");
    let p = dp.pair(c.id).unwrap();
    assert_eq!(p.info.a.counters.rejected_source, 10);
    assert_eq!(p.a_to_b.packets, 0);
}

fn learn_window_closes_by_time() {
    let dp = userspace(1);
    let c = nat_call(&dp, Duration::from_millis(150));
    c.a.send_to(&rtp(0, 1), c.ra).unwrap();
    assert_eq!(recv_all(&c.b, 1, Duration::from_secs(2)).len(), 1);
    assert!(matches!(
        dp.pair(c.id).unwrap().info.a.state,
        LatchState::Learning { .. }
    ));
    std::thread::sleep(Duration::from_millis(400));
    assert!(matches!(
        dp.pair(c.id).unwrap().info.a.state,
        LatchState::Latched { .. }
    ));
}

fn stun_and_dtls_go_to_callback_not_peer() {
    let got: Arc<Mutex<Vec<ControlPacket>>> = Arc::default();
    let g2 = got.clone();
    let cfg = DatapathConfig {
        kind: DatapathKind::Userspace,
        userspace: opts(1),
        ..DatapathConfig::default()
    };
    let dp = Datapath::start(&cfg, Some(Arc::new(move |p| g2.lock().unwrap().push(p)))).unwrap();
    check_io(&dp);
    let c = call(&dp, LearnPolicy::Off, LearnPolicy::Off, None);
    let stranger = peer();
    // STUN binding request (first byte 0x00), DTLS ClientHello record (22).
    let stun = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    c.a.send_to(&stun, c.ra).unwrap();
    c.a.send_to(&dtls, c.ra).unwrap();
    stranger.send_to(&stun, c.rb).unwrap();
    c.a.send_to(b"garbage, not RTP", c.ra).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while got.lock().unwrap().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    silence(&c.b, "STUN/DTLS/garbage must not be relayed");
    silence(&c.a, "nothing relayed back");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].kind, ControlKind::Stun);
    assert_eq!(got[0].data, stun);
    assert_eq!(got[0].local, c.ra);
    assert_eq!(got[0].source, c.a.local_addr().unwrap());
    assert_eq!(got[1].kind, ControlKind::Dtls);
    assert_eq!(got[2].local, c.rb);
    assert_eq!(got[2].source, stranger.local_addr().unwrap());
    let p = dp.pair(c.id).unwrap();
    assert_eq!(p.info.a.counters.control, 2);
    assert_eq!(p.info.a.counters.garbage, 1);
    assert_eq!(p.info.b.counters.control, 1);
    assert_eq!(p.a_to_b.packets, 0);
    // The ICE/DTLS code answers from the same relay socket.
    let resp = [0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    dp.send_from(c.ra, c.a.local_addr().unwrap(), &resp)
        .unwrap();
    let got = recv_all(&c.a, 1, Duration::from_secs(2));
    assert_eq!(got, vec![(c.ra, resp.to_vec())]);
    assert!(matches!(
        dp.send_from(free_local(), c.a.local_addr().unwrap(), &resp),
        Err(DatapathError::NoSocket(_))
    ));
}

fn removal_stops_forwarding_immediately() {
    let dp = userspace(1);
    let c = call(&dp, LearnPolicy::Off, LearnPolicy::Off, None);
    c.a.send_to(&rtp(0, 1), c.ra).unwrap();
    assert_eq!(recv_all(&c.b, 1, Duration::from_secs(2)).len(), 1);
    let last = dp.remove_pair(c.id).expect("pair existed");
    assert_eq!(last.a_to_b.packets, 1);
    for seq in 1..50 {
        let _ = c.a.send_to(&rtp(seq, 1), c.ra);
    }
    silence(&c.b, "forwarded after removal");
    assert!(dp.pair(c.id).is_none());
    assert!(dp.pairs().is_empty());
    assert!(dp.remove_pair(c.id).is_none());
    // The ports are free again.
    UdpSocket::bind(c.ra).expect("relay port released");
}

fn update_relatches_changed_leg() {
    let dp = userspace(1);
    let c = call(&dp, LearnPolicy::Off, LearnPolicy::Off, None);
    c.a.send_to(&rtp(0, 1), c.ra).unwrap();
    assert_eq!(recv_all(&c.b, 1, Duration::from_secs(2)).len(), 1);
    // Re-INVITE: A moves to a new socket.
    let a2 = peer();
    let mut spec = dp.pair(c.id).unwrap().info;
    spec.a.spec.peer = Some(a2.local_addr().unwrap());
    dp.update_pair(
        c.id,
        FlowPairSpec {
            a: spec.a.spec,
            b: spec.b.spec,
            rtcp: None,
        },
    )
    .unwrap();
    c.a.send_to(&rtp(1, 1), c.ra).unwrap();
    silence(&c.b, "old address after re-INVITE");
    a2.send_to(&rtp(2, 1), c.ra).unwrap();
    assert_eq!(recv_all(&c.b, 1, Duration::from_secs(2)).len(), 1);
    c.b.send_to(&rtp(0, 2), c.rb).unwrap();
    assert_eq!(recv_all(&a2, 1, Duration::from_secs(2)).len(), 1);
    assert_eq!(dp.pair(c.id).unwrap().a_to_b.packets, 2);
}

fn bind_conflict_is_an_error_and_leaves_nothing() {
    let dp = userspace(1);
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = FlowPairSpec {
        a: LegSpec {
            local: free_local(),
            peer: None,
            learn: LearnPolicy::DEFAULT_WINDOW,
        },
        b: LegSpec {
            local: taken.local_addr().unwrap(),
            peer: None,
            learn: LearnPolicy::DEFAULT_WINDOW,
        },
        rtcp: None,
    };
    assert!(matches!(
        dp.create_pair(spec),
        Err(DatapathError::Bind { .. })
    ));
    assert!(dp.pairs().is_empty());
    UdpSocket::bind(spec.a.local).expect("first leg's port released");
}

fn selection_auto_falls_back_and_xdp_without_interfaces_fails() {
    let dp = Datapath::start(&DatapathConfig::default(), None).unwrap();
    assert_eq!(dp.active(), ActiveDatapath::Userspace);
    let cfg = DatapathConfig {
        kind: DatapathKind::Xdp,
        ..DatapathConfig::default()
    };
    assert!(matches!(
        Datapath::start(&cfg, None),
        Err(DatapathError::NoXdpInterface)
    ));
    let cfg = DatapathConfig {
        kind: DatapathKind::Auto,
        xdp_interfaces: vec!["no-such-if0".into()],
        ..DatapathConfig::default()
    };
    assert_eq!(
        Datapath::start(&cfg, None).unwrap().active(),
        ActiveDatapath::Userspace
    );
}

fn relays_ipv6() {
    let Ok(a) = UdpSocket::bind("[::1]:0") else {
        // Loopback without IPv6 (some containers): nothing to test here, say so.
        eprintln!("*** SKIPPED relays_ipv6: no ::1 on this host ***");
        return;
    };
    let b = UdpSocket::bind("[::1]:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    let local = || UdpSocket::bind("[::1]:0").unwrap().local_addr().unwrap();
    let (ra, rb) = (local(), local());
    let dp = userspace(1);
    let id = dp
        .create_pair(FlowPairSpec {
            a: LegSpec {
                local: ra,
                peer: Some(a.local_addr().unwrap()),
                learn: LearnPolicy::Off,
            },
            b: LegSpec {
                local: rb,
                peer: Some(b.local_addr().unwrap()),
                learn: LearnPolicy::Off,
            },
            rtcp: None,
        })
        .unwrap();
    for seq in 0..20 {
        a.send_to(&rtp(seq, 1), ra).unwrap();
        b.send_to(&rtp(seq, 2), rb).unwrap();
    }
    let at_b = recv_all(&b, 20, Duration::from_secs(2));
    let at_a = recv_all(&a, 20, Duration::from_secs(2));
    assert_eq!((at_a.len(), at_b.len()), (20, 20));
    assert!(at_b.iter().all(|(from, _)| *from == rb));
    assert!(at_a.iter().all(|(from, _)| *from == ra));
    let p = dp.pair(id).unwrap();
    // IPv6 header is 40 bytes: 172 + 8 + 40.
    assert_eq!(p.a_to_b.bytes, 20 * 220);
    assert_eq!(p.b_to_a.packets, 20);
}

/// The whole path: offer/answer through the media engine, pairs from its
/// StreamPlan, packets relayed to the ports written into the SDP.
fn offer_answer_plan_programs_the_relay() {
    use media_engine::datapath::pairs_from_plan;
    use media_engine::{AnswerRequest, Flags, MediaEngine, MediaInterface, OfferRequest};

    let iface = |name: &str, min, max| MediaInterface {
        name: name.into(),
        address: "127.0.0.1".parse().unwrap(),
        advertised_address: None,
        port_min: min,
        port_max: max,
    };
    let mut engine = MediaEngine::new(vec![
        iface("outside", 26200, 26249),
        iface("inside", 26250, 26299),
    ])
    .unwrap();
    let (a, b) = (peer(), peer());
    let body = |port: u16| {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        .into_bytes()
    };
    let m_port = |sdp: &[u8]| -> u16 {
        String::from_utf8_lossy(sdp)
            .lines()
            .find(|l| l.starts_with("m=audio "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap()
    };
    let offer_sdp = body(a.local_addr().unwrap().port());
    let offer = engine
        .offer(&OfferRequest {
            call_id: "c1",
            from_tag: "ta",
            to_tag: None,
            via_branch: Some("z9hG4bK-1"),
            sdp: &offer_sdp,
            ingress_interface: "outside",
            egress_interface: "inside",
            flags: Flags::default(),
        })
        .unwrap();
    let answer_sdp = body(b.local_addr().unwrap().port());
    let answer = engine
        .answer(&AnswerRequest {
            call_id: "c1",
            from_tag: "ta",
            to_tag: "tb",
            via_branch: Some("z9hG4bK-1"),
            sdp: &answer_sdp,
            flags: Flags::default(),
        })
        .unwrap();
    let dp = userspace(1);
    let plan = &answer.streams[0];
    let pairs = pairs_from_plan(plan, [LearnPolicy::Off, LearnPolicy::Off]);
    assert_eq!(pairs.len(), 2, "RTP and RTCP pairs");
    let ids: Vec<PairId> = pairs.iter().map(|p| dp.create_pair(*p).unwrap()).collect();
    // A sends where the answer told it, B where the offer told it.
    let to_a_side: SocketAddr = ([127, 0, 0, 1], m_port(&answer.sdp)).into();
    let to_b_side: SocketAddr = ([127, 0, 0, 1], m_port(&offer.sdp)).into();
    assert_eq!(to_a_side, pairs[0].a.local);
    assert_eq!(to_b_side, pairs[0].b.local);
    for seq in 0..30 {
        a.send_to(&rtp(seq, 1), to_a_side).unwrap();
        b.send_to(&rtp(seq, 2), to_b_side).unwrap();
    }
    let at_b = recv_all(&b, 30, Duration::from_secs(2));
    let at_a = recv_all(&a, 30, Duration::from_secs(2));
    assert_eq!((at_a.len(), at_b.len()), (30, 30));
    assert!(at_b.iter().all(|(from, _)| *from == to_b_side));
    assert!(at_a.iter().all(|(from, _)| *from == to_a_side));
    let p = dp.pair(ids[0]).unwrap();
    assert_eq!((p.a_to_b.packets, p.b_to_a.packets), (30, 30));
    for id in ids {
        assert!(dp.remove_pair(id).is_some());
    }
}

/// A browser-like party multiplexing RTCP on its RTP socket (RFC 5761) and a phone with a
/// separate RTCP socket: RTCP crosses between the muxed socket and the phone's RTCP port,
/// RTP stays on the RTP pair, the third socket goes away with the pair.
fn rtcp_between_muxed_and_non_muxed_parties() {
    let dp = userspace(1);
    let (browser, phone_rtp, phone_rtcp) = (peer(), peer(), peer());
    let (ra, rb, rb_rtcp) = (free_local(), free_local(), free_local());
    let spec = FlowPairSpec {
        a: LegSpec {
            local: ra,
            peer: Some(browser.local_addr().unwrap()),
            learn: LearnPolicy::Off,
        },
        b: LegSpec {
            local: rb,
            peer: Some(phone_rtp.local_addr().unwrap()),
            learn: LearnPolicy::Off,
        },
        rtcp: Some(RtcpDemux {
            muxed: Side::A,
            leg: LegSpec {
                local: rb_rtcp,
                peer: Some(phone_rtcp.local_addr().unwrap()),
                learn: LearnPolicy::Off,
            },
        }),
    };
    let id = dp.create_pair(spec).unwrap();
    let sr = |ssrc: u8| vec![0x80, 200, 0, 6, 0, 0, 0, ssrc, 0, 0, 0, 0, 0, 0, 0, 0];
    browser.send_to(&rtp(1, 7), ra).unwrap();
    browser.send_to(&sr(7), ra).unwrap();
    assert_eq!(
        recv_all(&phone_rtp, 1, Duration::from_secs(2)),
        vec![(rb, rtp(1, 7))]
    );
    assert_eq!(
        recv_all(&phone_rtcp, 1, Duration::from_secs(2)),
        vec![(rb_rtcp, sr(7))]
    );
    phone_rtp.send_to(&rtp(1, 9), rb).unwrap();
    phone_rtcp.send_to(&sr(9), rb_rtcp).unwrap();
    let got = recv_all(&browser, 2, Duration::from_secs(2));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&(ra, rtp(1, 9))) && got.contains(&(ra, sr(9))));
    silence(&phone_rtp, "RTCP must not reach the phone's RTP port");
    let c = dp.pair(id).unwrap();
    assert_eq!(c.a_to_b.packets, 2);
    assert_eq!(c.b_to_a.packets, 2, "the RTCP leg counts toward b -> a");
    dp.remove_pair(id).unwrap();
    UdpSocket::bind(rb_rtcp).expect("RTCP relay port released");
}

/// Stopping the datapath (daemon restart) releases every relay port at once.
fn stopping_releases_the_ports() {
    let dp = userspace(1);
    // Many sockets: the io_uring worker must see every receive's cancellation through.
    let calls: Vec<Call> = (0..100)
        .map(|_| call(&dp, LearnPolicy::Off, LearnPolicy::Off, None))
        .collect();
    let c = &calls[0];
    c.a.send_to(&rtp(0, 1), c.ra).unwrap();
    assert_eq!(recv_all(&c.b, 1, Duration::from_secs(2)).len(), 1);
    let _no_probes = PORT_PROBES.write().unwrap_or_else(|e| e.into_inner());
    drop(dp);
    for c in &calls {
        UdpSocket::bind(c.ra).expect("relay port a released on stop");
        UdpSocket::bind(c.rb).expect("relay port b released on stop");
    }
}

/// Blocks `io_uring_setup` (ENOSYS) for this thread and the threads it starts, like the
/// default seccomp profile of container runtimes does.
fn block_io_uring() {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    let nr = u32::try_from(libc::SYS_io_uring_setup).unwrap();
    let mut filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: nr,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl calls with a valid filter program that outlives them.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Where io_uring is refused (a container's seccomp profile, `kernel.io_uring_disabled`),
/// `auto` relays with epoll and `io_uring` fails to start with a clear error. The filter is
/// installed in a child process (this test binary again), not in the test runner.
#[test]
fn io_uring_refused_falls_back_to_epoll() {
    if std::env::var_os("PORTCULLIS_IO_URING_BLOCKED").is_some() {
        block_io_uring();
        let forced = Datapath::start(
            &DatapathConfig {
                kind: DatapathKind::Userspace,
                userspace: UserspaceOptions {
                    io: RelayIo::IoUring,
                    ..UserspaceOptions::default()
                },
                ..DatapathConfig::default()
            },
            None,
        );
        match forced {
            Err(e) => assert!(e.to_string().contains("io_uring"), "{e}"),
            Ok(_) => panic!("io_uring relay started although io_uring_setup is blocked"),
        }
        IO.with(|c| c.set(RelayIo::Auto));
        let dp = userspace(1);
        assert_eq!(dp.relay_io(), RelayIo::Epoll);
        let c = call(&dp, LearnPolicy::Off, LearnPolicy::Off, None);
        c.a.send_to(&rtp(0, 1), c.ra).unwrap();
        assert_eq!(recv_all(&c.b, 1, Duration::from_secs(2)).len(), 1);
        println!("CHILD-OK");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "io_uring_refused_falls_back_to_epoll",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("PORTCULLIS_IO_URING_BLOCKED", "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// io_uring: a latched leg's party is sent to from a socket connected to it (no address,
/// no route lookup per packet); strangers still reach the relay socket and are counted;
/// a re-INVITE moves the connection; a leg still learning is not connected. Epoll: never.
fn latched_legs_send_from_connected_sockets() {
    let uring = IO.with(|c| c.get()) == RelayIo::IoUring;
    let dp = userspace(1);
    // a: learning for the whole test; b: strict.
    let c = nat_call(&dp, Duration::from_secs(30));
    let exchange = |b: &UdpSocket, n: u16| {
        for seq in 0..n {
            c.a.send_to(&rtp(seq, 1), c.ra).unwrap();
            b.send_to(&rtp(seq, 2), c.rb).unwrap();
        }
        let at_b = recv_all(b, n.into(), Duration::from_secs(2));
        let at_a = recv_all(&c.a, n.into(), Duration::from_secs(2));
        assert_eq!((at_b.len(), at_a.len()), (n.into(), n.into()));
        assert!(at_a.iter().all(|(from, _)| *from == c.ra));
        assert!(at_b.iter().all(|(from, _)| *from == c.rb));
    };
    let connected = || dp.userspace_stats().connected_sends;
    let settle = || {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = connected();
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = connected();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    };
    // After one exchange the worker has seen the latching and made the connected socket.
    exchange(&c.b, 1);
    let before = settle();
    exchange(&c.b, 40);
    // Toward b (latched): connected. Toward a (learning): not.
    assert_eq!(settle() - before, if uring { 40 } else { 0 });
    assert!(matches!(
        dp.pair(c.id).unwrap().info.a.state,
        LatchState::Learning { .. }
    ));
    // A stranger reaches the unconnected relay socket and is rejected and counted.
    let stranger = peer();
    for seq in 0..30 {
        stranger.send_to(&rtp(seq, 0xbad), c.rb).unwrap();
    }
    silence(&c.a, "stranger relayed");
    assert_eq!(dp.pair(c.id).unwrap().info.b.counters.rejected_source, 30);
    // A datagram larger than a receive buffer, from the party itself: not relayed cut short.
    let mut big = rtp(99, 2);
    big.resize(3000, 0xd5);
    c.b.send_to(&big, c.rb).unwrap();
    silence(&c.a, "oversized datagram relayed");
    assert_eq!(dp.pair(c.id).unwrap().info.b.counters.garbage, 1);
    // Re-INVITE: b moves; media toward it leaves connected to the new address.
    let b2 = peer();
    let spec = dp.pair(c.id).unwrap().info;
    dp.update_pair(
        c.id,
        FlowPairSpec {
            a: spec.a.spec,
            b: LegSpec {
                peer: Some(b2.local_addr().unwrap()),
                ..spec.b.spec
            },
            rtcp: None,
        },
    )
    .unwrap();
    exchange(&b2, 1);
    let before = settle();
    exchange(&b2, 25);
    assert_eq!(settle() - before, if uring { 25 } else { 0 });
    // The old address is refused (its connection went with it).
    c.b.send_to(&rtp(7, 2), c.rb).unwrap();
    silence(&c.a, "old address after re-INVITE");
    let last = dp.remove_pair(c.id).unwrap();
    assert_eq!(last.info.b.counters.rejected_source, 31);
    UdpSocket::bind(c.rb).expect("relay port and its connected twin released");
}

fn with_io(io: RelayIo, test: fn()) {
    IO.with(|c| c.set(io));
    test();
}

/// Every test above, once with io_uring workers and once with epoll workers.
macro_rules! in_both_io_modes {
    ($($t:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $t() { super::with_io(super::RelayIo::IoUring, super::$t) } )*
        }
        mod epoll {
            $( #[test] fn $t() { super::with_io(super::RelayIo::Epoll, super::$t) } )*
        }
    };
}

in_both_io_modes!(
    relays_both_directions_with_exact_counters,
    strict_leg_ignores_attacker_flood,
    learn_window_latches_nat_address_then_strict,
    learn_off_refuses_nat_address,
    learn_window_closes_by_time,
    stun_and_dtls_go_to_callback_not_peer,
    removal_stops_forwarding_immediately,
    update_relatches_changed_leg,
    bind_conflict_is_an_error_and_leaves_nothing,
    selection_auto_falls_back_and_xdp_without_interfaces_fails,
    relays_ipv6,
    offer_answer_plan_programs_the_relay,
    rtcp_between_muxed_and_non_muxed_parties,
    stopping_releases_the_ports,
    latched_legs_send_from_connected_sockets,
);
