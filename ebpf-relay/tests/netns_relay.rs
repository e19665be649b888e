//! The relay on the real kernel path: sender netns -> SBC netns (XDP on both
//! veths) -> receiver netns, with RTP-like traffic from a small generator.
//! Needs root.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::netns::*;
use common::{privileged, rtp_payload};
use ebpf_relay::{
    xdp_attachment, AttachMode, AttachedMode, FlowSpec, Outcome, RelayError, RelayOptions,
    SourcePolicy, XdpRelay,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn start_relay(t: &Topology, mode: AttachMode) -> (XdpRelay, u32, u32) {
    in_netns(&t.sbc, || {
        let mut r = XdpRelay::load(RelayOptions::default()).expect("load relay");
        for dev in ["sbc0", "sbc1"] {
            let m = r.attach(dev, mode).expect("attach relay");
            match mode {
                AttachMode::Native => assert_eq!(m, AttachedMode::Native),
                AttachMode::Generic => assert_eq!(m, AttachedMode::Generic),
                AttachMode::Auto => {}
            }
        }
        let idx = |n: &str| {
            r.attachments()
                .iter()
                .find(|a| a.0 == n)
                .map(|a| a.1)
                .expect("attached")
        };
        let (i0, i1) = (idx("sbc0"), idx("sbc1"));
        (r, i0, i1)
    })
}

/// A -> SBC:30000 -> C:6000 (redirect sbc0 -> sbc1).
fn spec_a_to_c(i1: u32, policy: SourcePolicy) -> FlowSpec {
    FlowSpec {
        expected_source: sa("198.18.1.2:5000"),
        policy,
        egress_source: sa("198.18.2.1:30002"),
        peer: sa("198.18.2.2:6000"),
        egress_ifindex: i1,
        src_mac: SBC1_MAC,
        dst_mac: C_MAC,
    }
}

/// C -> SBC:30002 -> A:5000 (redirect sbc1 -> sbc0).
fn spec_c_to_a(i0: u32) -> FlowSpec {
    FlowSpec {
        expected_source: sa("198.18.2.2:6000"),
        policy: SourcePolicy::Strict,
        egress_source: sa("198.18.1.1:30000"),
        peer: sa("198.18.1.2:5000"),
        egress_ifindex: i0,
        src_mac: SBC0_MAC,
        dst_mac: A_MAC,
    }
}

/// Receives up to `n` datagrams; returns (source, payload) pairs.
fn recv_n(s: &UdpSocket, n: usize, timeout: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while out.len() < n {
        match s.recv_from(&mut buf) {
            Ok((len, from)) => out.push((from, buf[..len].to_vec())),
            Err(_) => break,
        }
    }
    out
}

/// Expects nothing to arrive on `s` within a short time.
fn expect_silence(s: &UdpSocket, what: &str) {
    let got = recv_n(s, 1, Duration::from_millis(300));
    assert!(
        got.is_empty(),
        "{what}: unexpected datagram {:?}",
        got.first().map(|g| (g.0, g.1.len()))
    );
}

struct Leg<'a> {
    name: &'static str,
    tx: &'a UdpSocket,
    to: SocketAddr,
    rx: &'a UdpSocket,
    expect_from: SocketAddr,
    ssrc: u32,
}

/// Sends `total` RTP packets on every leg in batches, checks each one arrives
/// once, in order, from the rewritten source, with its payload intact.
fn relay_traffic(relay: &XdpRelay, legs: &[Leg<'_>], total: u16) {
    const BATCH: u16 = 50;
    let mut seq = 0u16;
    while seq < total {
        let end = (seq + BATCH).min(total);
        for leg in legs {
            for s in seq..end {
                leg.tx.send_to(&rtp_payload(s, leg.ssrc), leg.to).unwrap();
            }
        }
        for leg in legs {
            let got = recv_n(leg.rx, usize::from(end - seq), Duration::from_secs(2));
            assert_eq!(
                got.len(),
                usize::from(end - seq),
                "{}: lost packets in batch starting at {seq}; relay stats: {}",
                leg.name,
                relay.stats().map(|s| s.to_string()).unwrap_or_default()
            );
            for (i, (from, data)) in got.iter().enumerate() {
                assert_eq!(*from, leg.expect_from, "{}: source not rewritten", leg.name);
                assert_eq!(
                    data,
                    &rtp_payload(seq + i as u16, leg.ssrc),
                    "{}: payload",
                    leg.name
                );
            }
        }
        seq = end;
    }
}

fn bidirectional_relay(mode: AttachMode, test: &str) {
    if !privileged(test) {
        return;
    }
    let t = Topology::new(true);
    let (mut relay, i0, i1) = start_relay(&t, mode);

    // Redirect legs (sbc0 <-> sbc1), a same-interface leg (XDP_TX), IPv6.
    relay
        .insert_flow(
            sa("198.18.1.1:30000"),
            &spec_a_to_c(i1, SourcePolicy::Strict),
        )
        .unwrap();
    relay
        .insert_flow(sa("198.18.2.1:30002"), &spec_c_to_a(i0))
        .unwrap();
    relay
        .insert_flow(
            sa("198.18.1.1:30010"),
            &FlowSpec {
                expected_source: sa("198.18.1.2:5010"),
                policy: SourcePolicy::Strict,
                egress_source: sa("198.18.1.1:30012"),
                peer: sa("198.18.1.2:5012"),
                egress_ifindex: i0,
                src_mac: SBC0_MAC,
                dst_mac: A_MAC,
            },
        )
        .unwrap();
    relay
        .insert_flow(
            sa("[2001:db8:1::1]:30020"),
            &FlowSpec {
                expected_source: sa("[2001:db8:1::2]:5020"),
                policy: SourcePolicy::Strict,
                egress_source: sa("[2001:db8:2::1]:30022"),
                peer: sa("[2001:db8:2::2]:6020"),
                egress_ifindex: i1,
                src_mac: SBC1_MAC,
                dst_mac: C_MAC,
            },
        )
        .unwrap();

    let a5000 = bind_in(&t.a, "198.18.1.2:5000");
    let a5010 = bind_in(&t.a, "198.18.1.2:5010");
    let a5012 = bind_in(&t.a, "198.18.1.2:5012");
    let a5020 = bind_in(&t.a, "[2001:db8:1::2]:5020");
    let c6000 = bind_in(&t.c, "198.18.2.2:6000");
    let c6020 = bind_in(&t.c, "[2001:db8:2::2]:6020");
    let (err_a, err_c) = (udp_csum_errors(&t.a), udp_csum_errors(&t.c));

    const N: u16 = 300;
    if std::env::var("PC_DEBUG").is_ok() {
        a5000
            .send_to(&rtp_payload(1, 1), sa("198.18.1.1:30000"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        eprintln!(
            "{}",
            output("ip", &["-n", &t.c, "-s", "link", "show", "eth0"])
        );
        eprintln!(
            "{}",
            output("ip", &["netns", "exec", &t.c, "cat", "/proc/net/snmp"])
        );
        eprintln!("{}", output("ip", &["netns", "exec", &t.c, "nstat", "-az"]));
        eprintln!("{}", output("ip", &["-n", &t.sbc, "-s", "link", "show"]));
    }
    relay_traffic(
        &relay,
        &[
            Leg {
                name: "A->C",
                tx: &a5000,
                to: sa("198.18.1.1:30000"),
                rx: &c6000,
                expect_from: sa("198.18.2.1:30002"),
                ssrc: 0x1111,
            },
            Leg {
                name: "C->A",
                tx: &c6000,
                to: sa("198.18.2.1:30002"),
                rx: &a5000,
                expect_from: sa("198.18.1.1:30000"),
                ssrc: 0x2222,
            },
            Leg {
                name: "A->A (XDP_TX)",
                tx: &a5010,
                to: sa("198.18.1.1:30010"),
                rx: &a5012,
                expect_from: sa("198.18.1.1:30012"),
                ssrc: 0x3333,
            },
            Leg {
                name: "A->C IPv6",
                tx: &a5020,
                to: sa("[2001:db8:1::1]:30020"),
                rx: &c6020,
                expect_from: sa("[2001:db8:2::1]:30022"),
                ssrc: 0x4444,
            },
        ],
        N,
    );

    assert_eq!(udp_csum_errors(&t.a), err_a, "UdpInCsumErrors grew in A");
    assert_eq!(udp_csum_errors(&t.c), err_c, "UdpInCsumErrors grew in C");
    let ip_len4 = 20 + 8 + 172u64;
    for (local, len) in [
        ("198.18.1.1:30000", ip_len4),
        ("198.18.2.1:30002", ip_len4),
        ("198.18.1.1:30010", ip_len4),
        ("[2001:db8:1::1]:30020", 40 + 8 + 172),
    ] {
        let c = relay.flow_counters(sa(local)).unwrap().unwrap();
        assert_eq!(c.packets, u64::from(N), "{local} packets");
        assert_eq!(c.bytes, u64::from(N) * len, "{local} bytes");
        assert!(c.last_seen_ns > 0);
    }
    let s = relay.stats().unwrap();
    assert_eq!(s.get(Outcome::ForwardedRedirect), 3 * u64::from(N), "{s}");
    assert_eq!(s.get(Outcome::ForwardedTx), u64::from(N), "{s}");
    assert_eq!(s.get(Outcome::DropNoEgress), 0, "{s}");
    eprintln!("{test}: relayed {} packets; stats: {s}", 4 * N);

    // Detach: no XDP program left on the SBC interfaces.
    drop(relay);
    for dev in ["sbc0", "sbc1"] {
        let att = in_netns(&t.sbc, || xdp_attachment(dev)).unwrap();
        assert!(att.is_empty(), "{dev} still has XDP after detach: {att:?}");
        let shown = output("ip", &["-n", &t.sbc, "link", "show", "dev", dev]);
        assert!(
            !shown.contains("xdp"),
            "ip link show still lists xdp: {shown}"
        );
    }
}

#[test]
fn relays_both_directions_native_mode() {
    bidirectional_relay(AttachMode::Native, "relays_both_directions_native_mode");
}

#[test]
fn relays_both_directions_generic_mode() {
    bidirectional_relay(AttachMode::Generic, "relays_both_directions_generic_mode");
}

#[test]
fn source_policy_passthrough_and_flow_removal() {
    if !privileged("source_policy_passthrough_and_flow_removal") {
        return;
    }
    let t = Topology::new(true);
    let (mut relay, _i0, i1) = start_relay(&t, AttachMode::Native);
    let local = sa("198.18.1.1:30000");
    relay
        .insert_flow(local, &spec_a_to_c(i1, SourcePolicy::Strict))
        .unwrap();
    let legit = bind_in(&t.a, "198.18.1.2:5000");
    let attacker = bind_in(&t.a, "198.18.1.3:5000");
    let receiver = bind_in(&t.c, "198.18.2.2:6000");
    // The SBC's own socket on the relay port: what XDP passes up lands here.
    let sbc_sock = bind_in(&t.sbc, "198.18.1.1:30000");

    // Strict: an attacker flood from another address interleaved with the
    // stream is dropped; the stream keeps going to the receiver only.
    let before = relay.stats().unwrap();
    let mut pending = 0usize;
    for seq in 0..200u16 {
        attacker.send_to(&rtp_payload(seq, 0xbad), local).unwrap();
        attacker.send_to(&rtp_payload(seq, 0xbad), local).unwrap();
        if seq % 4 == 0 {
            legit.send_to(&rtp_payload(seq, 0x600d), local).unwrap();
            pending += 1;
        }
        if seq % 50 == 49 {
            let got = recv_n(&receiver, pending, Duration::from_secs(2));
            assert_eq!(got.len(), pending, "legit stream lost under flood");
            pending = 0;
            for (from, data) in &got {
                assert_eq!(*from, sa("198.18.2.1:30002"));
                assert_eq!(
                    &data[8..12],
                    &0x600du32.to_be_bytes(),
                    "attacker packet relayed"
                );
            }
        }
    }
    expect_silence(&receiver, "after strict flood");
    expect_silence(&sbc_sock, "strict mismatches must not reach userspace");
    let d = relay.stats().unwrap().since(&before);
    assert_eq!(d.get(Outcome::DropStrictMismatch), 400, "{d}");
    assert_eq!(relay.flow_counters(local).unwrap().unwrap().packets, 50);
    // The flow still points at the signalled peer.
    assert_eq!(
        relay.flow(local).unwrap().unwrap().spec.peer,
        sa("198.18.2.2:6000")
    );

    // Learn: mismatches go up to the SBC socket, not to the peer.
    relay
        .update_flow(local, &spec_a_to_c(i1, SourcePolicy::Learn))
        .unwrap();
    for seq in 0..20u16 {
        attacker.send_to(&rtp_payload(seq, 0xbad), local).unwrap();
    }
    let up = recv_n(&sbc_sock, 20, Duration::from_secs(2));
    assert_eq!(up.len(), 20, "learn mismatches must reach userspace");
    assert!(up.iter().all(|(from, _)| *from == sa("198.18.1.3:5000")));
    expect_silence(&receiver, "learn mismatches relayed");
    legit.send_to(&rtp_payload(999, 0x600d), local).unwrap();
    assert_eq!(recv_n(&receiver, 1, Duration::from_secs(2)).len(), 1);
    assert_eq!(
        relay
            .stats()
            .unwrap()
            .since(&before)
            .get(Outcome::PassLearnMismatch),
        20
    );

    // STUN and DTLS from the expected source on the relay port reach userspace.
    let stun = [
        0x00u8, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    legit.send_to(&stun, local).unwrap();
    legit.send_to(&dtls, local).unwrap();
    let up = recv_n(&sbc_sock, 2, Duration::from_secs(2));
    assert_eq!(up.len(), 2, "STUN/DTLS must reach userspace");
    assert_eq!(up[0].1, stun);
    assert_eq!(up[1].1, dtls);
    expect_silence(&receiver, "STUN/DTLS relayed");

    // A fragmented datagram (3000 bytes over a 1500 MTU) reaches userspace
    // reassembled, and not the peer.
    let before_frag = relay.stats().unwrap();
    let mut big = rtp_payload(1000, 0x600d);
    big.resize(3000, 0x55);
    legit.send_to(&big, local).unwrap();
    let up = recv_n(&sbc_sock, 1, Duration::from_secs(2));
    assert_eq!(up.len(), 1, "fragmented datagram must reach userspace");
    assert_eq!(up[0].1, big);
    expect_silence(&receiver, "fragments relayed");
    let d = relay.stats().unwrap().since(&before_frag);
    assert!(d.get(Outcome::PassFragment) >= 3, "{d}");

    // Removal stops forwarding at once: the next packets go to the stack.
    let forwarded = relay.remove_flow(local).unwrap().unwrap().counters.packets;
    assert_eq!(forwarded, 51);
    for seq in 0..10u16 {
        legit.send_to(&rtp_payload(seq, 0x600d), local).unwrap();
    }
    assert_eq!(recv_n(&sbc_sock, 10, Duration::from_secs(2)).len(), 10);
    expect_silence(&receiver, "removed flow still forwarding");
}

#[test]
fn stale_program_is_replaced_and_foreign_program_is_kept() {
    if !privileged("stale_program_is_replaced_and_foreign_program_is_kept") {
        return;
    }
    let t = Topology::new(false);
    in_netns(&t.sbc, || {
        // A relay program attached by netlink (no bpf_link): it outlives
        // its loader, like one left by a crashed process.
        ebpf_relay::relay::attach_detached_copy_for_tests("sbc0", false).unwrap();
        let stale = xdp_attachment("sbc0").unwrap();
        let stale_id = stale.native_prog_id.expect("stale program attached");

        // A foreign program on sbc1 (the pass program is not the relay).
        let _foreign = ebpf_relay::PassProgram::attach("sbc1", false).unwrap();

        let mut r = XdpRelay::load(RelayOptions::default()).unwrap();
        assert_eq!(
            r.attach("sbc0", AttachMode::Native).unwrap(),
            AttachedMode::Native
        );
        let now = xdp_attachment("sbc0").unwrap();
        let new_id = now.native_prog_id.expect("relay attached");
        assert_ne!(new_id, stale_id, "stale program still attached");

        match r.attach("sbc1", AttachMode::Native) {
            Err(RelayError::ForeignProgram { prog_name, .. }) => {
                assert_eq!(prog_name, "portcullis_pass")
            }
            other => panic!("expected ForeignProgram, got {other:?}"),
        }
        assert!(xdp_attachment("sbc1").unwrap().native_prog_id.is_some());

        r.detach("sbc0").unwrap();
        assert!(xdp_attachment("sbc0").unwrap().is_empty());
    });
}

#[test]
fn auto_mode_falls_back_to_generic_without_driver_support() {
    if !privileged("auto_mode_falls_back_to_generic_without_driver_support") {
        return;
    }
    let t = Topology::new(false);
    // The bridge driver has no native XDP.
    run(
        "ip",
        &["-n", &t.sbc, "link", "add", "dum0", "type", "bridge"],
    );
    run("ip", &["-n", &t.sbc, "link", "set", "dum0", "up"]);
    in_netns(&t.sbc, || {
        let mut r = XdpRelay::load(RelayOptions::default()).unwrap();
        match r.attach("dum0", AttachMode::Native) {
            Err(RelayError::Attach { .. }) => {}
            other => panic!("native attach on a bridge should fail, got {other:?}"),
        }
        assert!(xdp_attachment("dum0").unwrap().is_empty());
        assert_eq!(
            r.attach("dum0", AttachMode::Auto).unwrap(),
            AttachedMode::Generic
        );
        let att = xdp_attachment("dum0").unwrap();
        assert!(
            att.generic_prog_id.is_some() && att.native_prog_id.is_none(),
            "{att:?}"
        );
        assert!(matches!(
            r.attach("nonexistent0", AttachMode::Auto),
            Err(RelayError::UnknownInterface(_))
        ));
        drop(r);
        assert!(xdp_attachment("dum0").unwrap().is_empty());
    });
}

/// Rewriting a flow's rule continuously while its traffic flows: every packet
/// arrives, rewritten by one whole rule or the other (never a mix of the old
/// and new addresses, ports or checksum deltas), with a valid checksum.
/// Exercises the sequence-locked index slot and its hash-map fallback under
/// concurrency (the program runs on the receiving CPU while this thread writes).
#[test]
fn rule_updates_under_traffic_never_mix_rules() {
    if !privileged("rule_updates_under_traffic_never_mix_rules") {
        return;
    }
    let t = Topology::new(true);
    let (mut relay, _i0, i1) = start_relay(&t, AttachMode::Native);
    let local = sa("198.18.1.1:30000");
    let spec1 = spec_a_to_c(i1, SourcePolicy::Strict);
    let spec2 = FlowSpec {
        egress_source: sa("198.18.2.1:30004"),
        peer: sa("198.18.2.2:6001"),
        ..spec1
    };
    relay.insert_flow(local, &spec1).unwrap();
    let tx = bind_in(&t.a, "198.18.1.2:5000");
    let rx1 = bind_in(&t.c, "198.18.2.2:6000");
    let rx2 = bind_in(&t.c, "198.18.2.2:6001");
    // Room for every packet even if the receiving threads get no CPU for a
    // while (the machine is shared): a loss then means the relay lost it.
    for rx in [&rx1, &rx2] {
        let size: libc::c_int = 32 << 20;
        // SAFETY: valid socket and option value.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(rx),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE");
    }
    let csum_before = udp_csum_errors(&t.c);
    const N: u32 = 20_000;
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut updates = 0u64;
    let (got1, got2) = std::thread::scope(|s| {
        let done = &done;
        let recv = move |rx: &UdpSocket, from: SocketAddr| {
            rx.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 2048];
            let mut n = 0u32;
            loop {
                match rx.recv_from(&mut buf) {
                    Ok((_, f)) => {
                        assert_eq!(f, from, "packet rewritten by a mix of two rules");
                        n += 1;
                    }
                    Err(_) if done.load(std::sync::atomic::Ordering::Relaxed) => break n,
                    Err(_) => {}
                }
            }
        };
        let (rx1, rx2) = (&rx1, &rx2);
        let h1 = s.spawn(move || recv(rx1, spec1.egress_source));
        let h2 = s.spawn(move || recv(rx2, spec2.egress_source));
        let sender = s.spawn(|| {
            for seq in 0..N {
                tx.send_to(&rtp_payload(seq as u16, 7), local).unwrap();
                if seq % 20 == 19 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        while !sender.is_finished() {
            let spec = if updates.is_multiple_of(2) {
                &spec2
            } else {
                &spec1
            };
            relay.update_flow(local, spec).unwrap();
            updates += 1;
        }
        sender.join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (h1.join().unwrap(), h2.join().unwrap())
    });
    eprintln!("{updates} rule updates while {N} packets flowed: {got1} + {got2} received");
    assert!(
        updates > 1000,
        "too few updates to mean anything: {updates}"
    );
    assert!(
        got1 > 0 && got2 > 0,
        "both rules were used: {got1} + {got2}"
    );
    // Relay side first: every packet forwarded, none with a bad checksum.
    let s = relay.stats().unwrap();
    assert_eq!(
        s.get(Outcome::ForwardedRedirect),
        u64::from(N),
        "stats: {s}"
    );
    assert_eq!(udp_csum_errors(&t.c), csum_before, "UDP checksum errors");
    let snmp = in_netns(&t.c, || {
        std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default()
    });
    assert_eq!(
        got1 + got2,
        N,
        "lost packets after the relay forwarded them all; receiver's UDP counters:\n{}",
        snmp.lines()
            .filter(|l| l.starts_with("Udp:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        relay.flow_counters(local).unwrap().unwrap().packets,
        u64::from(N)
    );
}
