//! The XDP program run by the kernel on crafted frames (BPF_PROG_TEST_RUN):
//! rewrite, checksums (verified from scratch), pass/drop reasons, counters.
//! Needs root; no network namespace.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use ebpf_relay::{action, FlowSpec, Outcome, Program, RelayOptions, SourcePolicy, XdpRelay};

const EGRESS_SRC_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 0x02];

fn relay() -> XdpRelay {
    XdpRelay::load(RelayOptions {
        max_flows: 1024,
        max_blocklist: 64,
    })
    .expect("load relay (root?)")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn spec_v4(policy: SourcePolicy) -> FlowSpec {
    FlowSpec {
        expected_source: sa("198.18.1.2:5000"),
        policy,
        egress_source: sa("198.18.2.1:30002"),
        peer: sa("198.18.2.2:6000"),
        // BPF_PROG_TEST_RUN feeds the frame in as if received on the
        // loopback device (ifindex 1): egress 1 means XDP_TX.
        egress_ifindex: 1,
        src_mac: EGRESS_SRC_MAC,
        dst_mac: PEER_MAC,
    }
}

fn run(r: &mut XdpRelay, frame: &[u8]) -> (u32, Vec<u8>) {
    let out = r.test_run(Program::Relay, frame, 1).expect("test run");
    (out.action, out.frame)
}

#[test]
fn ipv4_rtp_is_rewritten_with_valid_checksums() {
    if !privileged("ipv4_rtp_is_rewritten_with_valid_checksums") {
        return;
    }
    let mut r = relay();
    let local = sa("198.18.1.1:30000");
    r.insert_flow(local, &spec_v4(SourcePolicy::Strict))
        .unwrap();

    let mut bytes = 0u64;
    // Many sequence numbers and payloads so that checksum edge cases
    // (0x0000/0xffff intermediate sums) are likely to be exercised.
    for seq in 0..2000u16 {
        let payload = rtp_payload(seq, 0xdead_beef ^ (u32::from(seq) * 7919));
        let frame = ipv4_udp(&V4::default(), &payload);
        assert!(ipv4_header_ok(&frame) && ipv4_udp_ok(&frame, false));
        let (act, out) = run(&mut r, &frame);
        assert_eq!(act, action::TX, "seq {seq}");
        assert_eq!(out.len(), frame.len());
        assert_eq!(&out[0..6], &PEER_MAC);
        assert_eq!(&out[6..12], &EGRESS_SRC_MAC);
        let ip = &out[ETH_LEN..];
        assert_eq!(&ip[12..16], &[198, 18, 2, 1]);
        assert_eq!(&ip[16..20], &[198, 18, 2, 2]);
        assert_eq!(u16::from_be_bytes([ip[20], ip[21]]), 30002);
        assert_eq!(u16::from_be_bytes([ip[22], ip[23]]), 6000);
        assert_eq!(&ip[28..], &payload[..], "payload untouched");
        assert_eq!(ip[8], 64, "TTL untouched");
        assert!(
            ipv4_header_ok(&out),
            "IPv4 header checksum wrong, seq {seq}"
        );
        assert!(ipv4_udp_ok(&out, false), "UDP checksum wrong, seq {seq}");
        bytes += (frame.len() - ETH_LEN) as u64;
    }
    let c = r.flow_counters(local).unwrap().unwrap();
    assert_eq!(c.packets, 2000);
    assert_eq!(c.bytes, bytes);
    assert!(c.last_seen_ns > 0);
    let s = r.stats().unwrap();
    assert_eq!(s.get(Outcome::ForwardedTx), 2000);
    assert_eq!(s.forwarded(), 2000);
}

#[test]
fn ipv4_zero_udp_checksum_stays_zero() {
    if !privileged("ipv4_zero_udp_checksum_stays_zero") {
        return;
    }
    let mut r = relay();
    r.insert_flow(sa("198.18.1.1:30000"), &spec_v4(SourcePolicy::Strict))
        .unwrap();
    let frame = ipv4_udp(
        &V4 {
            zero_udp_csum: true,
            ..V4::default()
        },
        &rtp_payload(1, 1),
    );
    let (act, out) = run(&mut r, &frame);
    assert_eq!(act, action::TX);
    assert_eq!(&out[ETH_LEN + 26..ETH_LEN + 28], &[0, 0]);
    assert!(ipv4_header_ok(&out));
}

#[test]
fn ipv6_rtp_is_rewritten_with_valid_checksum() {
    if !privileged("ipv6_rtp_is_rewritten_with_valid_checksum") {
        return;
    }
    let mut r = relay();
    let local = sa("[2001:db8:1::1]:30000");
    let spec = FlowSpec {
        expected_source: sa("[2001:db8:1::2]:5000"),
        policy: SourcePolicy::Strict,
        egress_source: sa("[2001:db8:2::1]:30002"),
        peer: sa("[2001:db8:2::2]:6000"),
        egress_ifindex: 1,
        src_mac: EGRESS_SRC_MAC,
        dst_mac: PEER_MAC,
    };
    r.insert_flow(local, &spec).unwrap();
    for seq in 0..1000u16 {
        let payload = rtp_payload(seq, 0x1234_5678 ^ (u32::from(seq) * 104729));
        let frame = ipv6_udp(&V6::default(), &payload);
        assert!(ipv6_udp_ok(&frame));
        let (act, out) = run(&mut r, &frame);
        assert_eq!(act, action::TX);
        let ip = &out[ETH_LEN..];
        assert_eq!(
            &ip[8..24],
            &"2001:db8:2::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(
            &ip[24..40],
            &"2001:db8:2::2"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(u16::from_be_bytes([ip[40], ip[41]]), 30002);
        assert_eq!(u16::from_be_bytes([ip[42], ip[43]]), 6000);
        assert_eq!(&ip[48..], &payload[..]);
        assert!(ipv6_udp_ok(&out), "IPv6 UDP checksum wrong, seq {seq}");
    }
    let c = r.flow_counters(local).unwrap().unwrap();
    assert_eq!(c.packets, 1000);
    assert_eq!(c.bytes, 1000 * (40 + 8 + 172));
}

#[test]
fn packets_not_owned_are_passed_with_their_reason() {
    if !privileged("packets_not_owned_are_passed_with_their_reason") {
        return;
    }
    let mut r = relay();
    r.insert_flow(sa("198.18.1.1:30000"), &spec_v4(SourcePolicy::Strict))
        .unwrap();
    let rtp = rtp_payload(7, 7);
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "tcp",
            ipv4_udp(
                &V4 {
                    proto: 6,
                    ..V4::default()
                },
                &rtp,
            ),
            Outcome::PassNotUdp,
        ),
        (
            "more fragments",
            ipv4_udp(
                &V4 {
                    frag_off: 0x2000,
                    ..V4::default()
                },
                &rtp,
            ),
            Outcome::PassFragment,
        ),
        (
            "fragment offset",
            ipv4_udp(
                &V4 {
                    frag_off: 0x0010,
                    ..V4::default()
                },
                &rtp,
            ),
            Outcome::PassFragment,
        ),
        (
            "ip options",
            ipv4_udp(
                &V4 {
                    options: 4,
                    ..V4::default()
                },
                &rtp,
            ),
            Outcome::PassIpOptions,
        ),
        (
            "unknown port",
            ipv4_udp(
                &V4 {
                    dport: 30001,
                    ..V4::default()
                },
                &rtp,
            ),
            Outcome::PassUnknownPort,
        ),
        (
            "stun 0x00",
            ipv4_udp(&V4::default(), &[0x00, 0x01, 0, 0]),
            Outcome::PassStunDtls,
        ),
        (
            "stun 0x01",
            ipv4_udp(&V4::default(), &[0x01, 0x01, 0, 0]),
            Outcome::PassStunDtls,
        ),
        (
            "stun 3",
            ipv4_udp(&V4::default(), &[3, 0, 0, 0]),
            Outcome::PassStunDtls,
        ),
        (
            "dtls 20",
            ipv4_udp(&V4::default(), &[20, 0xfe, 0xfd]),
            Outcome::PassStunDtls,
        ),
        (
            "dtls 22",
            ipv4_udp(&V4::default(), &[22, 0xfe, 0xfd]),
            Outcome::PassStunDtls,
        ),
        (
            "dtls 63",
            ipv4_udp(&V4::default(), &[63, 0xfe, 0xfd]),
            Outcome::PassStunDtls,
        ),
        (
            "empty payload",
            ipv4_udp(&V4::default(), &[]),
            Outcome::PassMalformed,
        ),
        (
            "ipv6 fragment header",
            ipv6_udp(
                &V6 {
                    next_header: 44,
                    ..V6::default()
                },
                &rtp,
            ),
            Outcome::PassFragment,
        ),
        (
            "ipv6 no flow",
            ipv6_udp(&V6::default(), &rtp),
            Outcome::PassUnknownPort,
        ),
    ];
    for (name, frame, outcome) in &cases {
        let before = r.stats().unwrap();
        let (act, out) = run(&mut r, frame);
        assert_eq!(act, action::PASS, "{name}");
        assert_eq!(&out, frame, "{name}: a passed frame must be untouched");
        let d = r.stats().unwrap().since(&before);
        assert_eq!(d.get(*outcome), 1, "{name}: {d}");
        assert_eq!(d.iter().map(|(_, c)| c).sum::<u64>(), 1, "{name}: {d}");
    }
    // Truncated frame: the IP header says more than there is.
    let mut trunc = ipv4_udp(&V4::default(), &rtp);
    trunc.truncate(60);
    let (act, _) = run(&mut r, &trunc);
    assert_eq!(act, action::PASS);
    // ARP.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let before = r.stats().unwrap();
    assert_eq!(run(&mut r, &arp).0, action::PASS);
    assert_eq!(r.stats().unwrap().since(&before).get(Outcome::PassNotIp), 1);
    // Bytes at the edges of the STUN/DTLS ranges that are not STUN/DTLS
    // (RTP 128..191, ZRTP 16..19, TURN channel 64..79) are forwarded.
    for b in [4u8, 19, 64, 128, 191] {
        let mut p = rtp.clone();
        p[0] = b;
        assert_eq!(
            run(&mut r, &ipv4_udp(&V4::default(), &p)).0,
            action::TX,
            "byte {b}"
        );
    }
    assert_eq!(
        r.flow_counters(sa("198.18.1.1:30000"))
            .unwrap()
            .unwrap()
            .packets,
        5
    );
}

#[test]
fn strict_drops_and_learn_passes_wrong_sources() {
    if !privileged("strict_drops_and_learn_passes_wrong_sources") {
        return;
    }
    let mut r = relay();
    let strict = sa("198.18.1.1:30000");
    let learn = sa("198.18.1.1:30010");
    r.insert_flow(strict, &spec_v4(SourcePolicy::Strict))
        .unwrap();
    r.insert_flow(learn, &spec_v4(SourcePolicy::Learn)).unwrap();
    let rtp = rtp_payload(1, 1);
    let wrong_ip = V4 {
        src: "198.18.1.66".parse().unwrap(),
        ..V4::default()
    };
    let wrong_port = V4 {
        sport: 5001,
        ..V4::default()
    };
    for p in [&wrong_ip, &wrong_port] {
        let f = ipv4_udp(
            &V4 {
                dport: 30000,
                ..clone4(p)
            },
            &rtp,
        );
        assert_eq!(run(&mut r, &f).0, action::DROP);
        let f = ipv4_udp(
            &V4 {
                dport: 30010,
                ..clone4(p)
            },
            &rtp,
        );
        let (act, out) = run(&mut r, &f);
        assert_eq!(act, action::PASS);
        assert_eq!(out, f);
    }
    let s = r.stats().unwrap();
    assert_eq!(s.get(Outcome::DropStrictMismatch), 2);
    assert_eq!(s.get(Outcome::PassLearnMismatch), 2);
    assert_eq!(s.forwarded(), 0);
    assert_eq!(r.flow_counters(strict).unwrap().unwrap().packets, 0);
    // The expected source still goes through on both.
    assert_eq!(run(&mut r, &ipv4_udp(&V4::default(), &rtp)).0, action::TX);
    let f = ipv4_udp(
        &V4 {
            dport: 30010,
            ..V4::default()
        },
        &rtp,
    );
    assert_eq!(run(&mut r, &f).0, action::TX);
}

fn clone4(p: &V4) -> V4 {
    V4 {
        src_mac: p.src_mac,
        dst_mac: p.dst_mac,
        src: p.src,
        dst: p.dst,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        frag_off: p.frag_off,
        options: p.options,
        ttl: p.ttl,
        zero_udp_csum: p.zero_udp_csum,
    }
}

#[test]
fn blocklist_drops_any_packet_from_a_source() {
    if !privileged("blocklist_drops_any_packet_from_a_source") {
        return;
    }
    let mut r = relay();
    r.insert_flow(sa("198.18.1.1:30000"), &spec_v4(SourcePolicy::Strict))
        .unwrap();
    let frame = ipv4_udp(&V4::default(), &rtp_payload(1, 1));
    let tcp = ipv4_udp(
        &V4 {
            proto: 6,
            ..V4::default()
        },
        &rtp_payload(1, 1),
    );
    let src: IpAddr = "198.18.1.2".parse().unwrap();
    r.block_source(src).unwrap();
    assert_eq!(run(&mut r, &frame).0, action::DROP);
    assert_eq!(run(&mut r, &tcp).0, action::DROP);
    assert_eq!(r.blocked_sources().unwrap(), vec![(src, 2)]);
    assert_eq!(r.stats().unwrap().get(Outcome::DropBlocklist), 2);
    // Another source is not affected by the blocklist (it is then a strict mismatch).
    let other = ipv4_udp(
        &V4 {
            src: "198.18.1.9".parse().unwrap(),
            ..V4::default()
        },
        &rtp_payload(1, 1),
    );
    assert_eq!(run(&mut r, &other).0, action::DROP);
    assert_eq!(r.stats().unwrap().get(Outcome::DropStrictMismatch), 1);
    assert!(r.unblock_source(src).unwrap());
    assert!(!r.unblock_source(src).unwrap());
    assert_eq!(run(&mut r, &frame).0, action::TX);
    // IPv6 blocklist.
    let src6: IpAddr = "2001:db8:1::2".parse().unwrap();
    r.block_source(src6).unwrap();
    let f6 = ipv6_udp(&V6::default(), &rtp_payload(1, 1));
    assert_eq!(run(&mut r, &f6).0, action::DROP);
    assert_eq!(r.blocked_sources().unwrap(), vec![(src6, 1)]);
}

#[test]
fn flow_lifecycle_insert_update_remove() {
    if !privileged("flow_lifecycle_insert_update_remove") {
        return;
    }
    let mut r = relay();
    let local = sa("198.18.1.1:30000");
    let spec = spec_v4(SourcePolicy::Strict);
    r.insert_flow(local, &spec).unwrap();
    assert!(matches!(
        r.insert_flow(local, &spec),
        Err(ebpf_relay::RelayError::FlowExists(_))
    ));
    assert!(matches!(
        r.update_flow(sa("198.18.1.1:1"), &spec),
        Err(ebpf_relay::RelayError::FlowNotFound(_))
    ));
    let mut v6 = spec;
    v6.peer = sa("[2001:db8::2]:6000");
    assert!(matches!(
        r.insert_flow(sa("198.18.1.1:30004"), &v6),
        Err(ebpf_relay::RelayError::FamilyMismatch(_))
    ));
    let frame = ipv4_udp(&V4::default(), &rtp_payload(1, 1));
    for _ in 0..3 {
        assert_eq!(run(&mut r, &frame).0, action::TX);
    }
    // Update to a new peer keeps the counters.
    let mut spec2 = spec;
    spec2.peer = sa("198.18.2.3:6002");
    r.update_flow(local, &spec2).unwrap();
    let e = r.flow(local).unwrap().unwrap();
    assert_eq!(e.spec, spec2);
    assert_eq!(e.counters.packets, 3);
    let (act, out) = run(&mut r, &frame);
    assert_eq!(act, action::TX);
    assert_eq!(&out[ETH_LEN + 16..ETH_LEN + 20], &[198, 18, 2, 3]);
    assert!(ipv4_header_ok(&out) && ipv4_udp_ok(&out, false));
    let all = r.flows().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].local, local);
    assert_eq!(all[0].counters.packets, 4);
    // Removal: the very next packet is no longer forwarded.
    let last = r.remove_flow(local).unwrap().unwrap();
    assert_eq!(last.counters.packets, 4);
    assert_eq!(run(&mut r, &frame).0, action::PASS);
    assert!(r.remove_flow(local).unwrap().is_none());
    assert!(r.flows().unwrap().is_empty());
}

/// Two local addresses with the same port: one flow lives in the port-indexed
/// slot, the other only in the hash map; both relay, a third address on that
/// port is not ours, and removing the slot's flow hands the slot to the other.
#[test]
fn flows_sharing_a_port_are_all_relayed() {
    if !privileged("flows_sharing_a_port_are_all_relayed") {
        return;
    }
    let mut r = relay();
    let a = sa("198.18.1.1:30000");
    let b = sa("198.18.9.1:30000");
    let mut spec_b = spec_v4(SourcePolicy::Strict);
    spec_b.peer = sa("198.18.2.9:6009");
    r.insert_flow(a, &spec_v4(SourcePolicy::Strict)).unwrap();
    r.insert_flow(b, &spec_b).unwrap();
    let slot = r.index_slot(30000);
    assert_eq!(
        &slot.local_addr[..4],
        &[198, 18, 1, 1],
        "first flow owns the slot"
    );
    assert_eq!(slot.flags, ebpf_relay::maps::SLOT_F_HASH);

    let to = |dst: [u8; 4]| {
        ipv4_udp(
            &V4 {
                dst: dst.into(),
                ..V4::default()
            },
            &rtp_payload(7, 7),
        )
    };
    let check = |r: &mut XdpRelay, dst: [u8; 4], peer: [u8; 4]| {
        let (act, out) = run(r, &to(dst));
        assert_eq!(act, action::TX, "to {dst:?}");
        assert_eq!(&out[ETH_LEN + 16..ETH_LEN + 20], &peer);
        assert!(ipv4_header_ok(&out) && ipv4_udp_ok(&out, false));
    };
    check(&mut r, [198, 18, 1, 1], [198, 18, 2, 2]);
    check(&mut r, [198, 18, 9, 1], [198, 18, 2, 9]);
    assert_eq!(run(&mut r, &to([198, 18, 5, 1])).0, action::PASS);
    assert_eq!(r.stats().unwrap().get(Outcome::PassUnknownPort), 1);

    // The slot's flow goes: the other one takes the slot, no flag left.
    r.remove_flow(a).unwrap().unwrap();
    let slot = r.index_slot(30000);
    assert_eq!(&slot.local_addr[..4], &[198, 18, 9, 1]);
    assert_eq!(slot.flags, 0);
    assert_eq!(run(&mut r, &to([198, 18, 1, 1])).0, action::PASS);
    check(&mut r, [198, 18, 9, 1], [198, 18, 2, 9]);

    // A hash-only flow removed: the flag is cleared, the slot's flow stays.
    r.insert_flow(a, &spec_v4(SourcePolicy::Strict)).unwrap();
    assert_eq!(r.index_slot(30000).flags, ebpf_relay::maps::SLOT_F_HASH);
    check(&mut r, [198, 18, 1, 1], [198, 18, 2, 2]);
    r.remove_flow(a).unwrap().unwrap();
    assert_eq!(r.index_slot(30000).flags, 0);
    assert_eq!(run(&mut r, &to([198, 18, 1, 1])).0, action::PASS);
    assert_eq!(r.flow_counters(b).unwrap().unwrap().packets, 2);
    r.remove_flow(b).unwrap().unwrap();
    assert_eq!(r.index_slot(30000).family, 0);
    assert_eq!(run(&mut r, &to([198, 18, 9, 1])).0, action::PASS);
}

/// A slot caught in the middle of a userspace write (odd sequence number,
/// body half written) is not used: the packet is relayed from the hash map,
/// with the right rewrite, and strict/learn decisions still hold.
#[test]
fn slot_being_written_falls_back_to_the_flow_map() {
    if !privileged("slot_being_written_falls_back_to_the_flow_map") {
        return;
    }
    let mut r = relay();
    let local = sa("198.18.1.1:30000");
    r.insert_flow(local, &spec_v4(SourcePolicy::Strict))
        .unwrap();
    r.simulate_torn_slot(30000, true).unwrap();
    assert_eq!(r.index_slot(30000).seq % 2, 1);
    for seq in 0..100u16 {
        let frame = ipv4_udp(&V4::default(), &rtp_payload(seq, 99));
        let (act, out) = run(&mut r, &frame);
        assert_eq!(act, action::TX);
        assert_eq!(&out[0..6], &PEER_MAC);
        assert_eq!(
            &out[ETH_LEN + 12..ETH_LEN + 20],
            &[198, 18, 2, 1, 198, 18, 2, 2]
        );
        assert!(ipv4_header_ok(&out) && ipv4_udp_ok(&out, false));
    }
    let wrong = ipv4_udp(
        &V4 {
            sport: 5001,
            ..V4::default()
        },
        &rtp_payload(1, 1),
    );
    assert_eq!(run(&mut r, &wrong).0, action::DROP);
    // IPv6 path too.
    let local6 = sa("[2001:db8:1::1]:30010");
    r.insert_flow(
        local6,
        &FlowSpec {
            expected_source: sa("[2001:db8:1::2]:5000"),
            policy: SourcePolicy::Strict,
            egress_source: sa("[2001:db8:2::1]:30002"),
            peer: sa("[2001:db8:2::2]:6000"),
            egress_ifindex: 1,
            src_mac: EGRESS_SRC_MAC,
            dst_mac: PEER_MAC,
        },
    )
    .unwrap();
    r.simulate_torn_slot(30010, true).unwrap();
    let f6 = ipv6_udp(
        &V6 {
            dport: 30010,
            ..V6::default()
        },
        &rtp_payload(1, 1),
    );
    let (act, out) = run(&mut r, &f6);
    assert_eq!(act, action::TX);
    assert!(ipv6_udp_ok(&out));
    // Once written completely, the slot serves again.
    r.simulate_torn_slot(30000, false).unwrap();
    assert_eq!(r.index_slot(30000).seq % 2, 0);
    let (act, _) = run(&mut r, &ipv4_udp(&V4::default(), &rtp_payload(1, 1)));
    assert_eq!(act, action::TX);
    assert_eq!(r.flow_counters(local).unwrap().unwrap().packets, 101);
    assert_eq!(r.stats().unwrap().get(Outcome::DropStrictMismatch), 1);
}

/// last_seen_ns is CLOCK_MONOTONIC as kept by the program's timer: close to
/// the current time and moving forward.
#[test]
fn last_seen_follows_the_monotonic_clock() {
    if !privileged("last_seen_follows_the_monotonic_clock") {
        return;
    }
    fn mono_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    let mut r = relay();
    let local = sa("198.18.1.1:30000");
    r.insert_flow(local, &spec_v4(SourcePolicy::Strict))
        .unwrap();
    let frame = ipv4_udp(&V4::default(), &rtp_payload(1, 1));
    assert_eq!(run(&mut r, &frame).0, action::TX);
    let t1 = r.flow_counters(local).unwrap().unwrap().last_seen_ns;
    let now = mono_ns();
    assert!(t1 > 0 && t1 <= now, "last_seen {t1} now {now}");
    assert!(
        now - t1 < 50_000_000,
        "last_seen {} ms behind",
        (now - t1) / 1_000_000
    );
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(run(&mut r, &frame).0, action::TX);
    let t2 = r.flow_counters(local).unwrap().unwrap().last_seen_ns;
    assert!(t2 >= t1 + 15_000_000, "clock did not advance: {t1} -> {t2}");
}

/// The blocklist still drops a listed source on every path when the lookup
/// is only made for flagged flows: flows installed or updated while their
/// expected source is listed, the hash-map path, unknown ports, and not after
/// unblocking.
#[test]
fn blocklist_holds_on_the_fast_path_and_for_new_flows() {
    if !privileged("blocklist_holds_on_the_fast_path_and_for_new_flows") {
        return;
    }
    let mut r = relay();
    let src: IpAddr = "198.18.1.2".parse().unwrap();
    let a = sa("198.18.1.1:30000");
    r.insert_flow(a, &spec_v4(SourcePolicy::Strict)).unwrap();
    let frame = |dport: u16| {
        ipv4_udp(
            &V4 {
                dport,
                ..V4::default()
            },
            &rtp_payload(3, 3),
        )
    };
    assert_eq!(run(&mut r, &frame(30000)).0, action::TX);
    r.block_source(src).unwrap();
    assert_eq!(
        r.index_slot(30000).v.flags,
        ebpf_relay::maps::FLOW_F_SRC_BLOCKED
    );
    assert_eq!(run(&mut r, &frame(30000)).0, action::DROP);
    // A flow installed while the source is listed, one updated, one that
    // lives in the hash map only (port shared), an unknown port.
    r.insert_flow(sa("198.18.1.1:30002"), &spec_v4(SourcePolicy::Learn))
        .unwrap();
    assert_eq!(run(&mut r, &frame(30002)).0, action::DROP);
    let mut spec2 = spec_v4(SourcePolicy::Strict);
    spec2.peer = sa("198.18.2.3:6002");
    r.update_flow(a, &spec2).unwrap();
    assert_eq!(run(&mut r, &frame(30000)).0, action::DROP);
    r.insert_flow(sa("198.18.9.1:30000"), &spec_v4(SourcePolicy::Strict))
        .unwrap();
    r.simulate_torn_slot(30000, true).unwrap();
    assert_eq!(run(&mut r, &frame(30000)).0, action::DROP);
    r.simulate_torn_slot(30000, false).unwrap();
    assert_eq!(run(&mut r, &frame(31000)).0, action::DROP);
    let s = r.stats().unwrap();
    assert_eq!(s.get(Outcome::DropBlocklist), 5);
    assert_eq!(s.forwarded(), 1);
    assert_eq!(r.blocked_sources().unwrap(), vec![(src, 5)]);
    // Another source on a flagged flow is a strict mismatch, not a blocklist drop.
    let other = ipv4_udp(
        &V4 {
            src: "198.18.1.9".parse().unwrap(),
            ..V4::default()
        },
        &rtp_payload(1, 1),
    );
    assert_eq!(run(&mut r, &other).0, action::DROP);
    assert_eq!(r.stats().unwrap().get(Outcome::DropStrictMismatch), 1);
    // Unblocked: flags cleared, forwarding again on every flow.
    assert!(r.unblock_source(src).unwrap());
    assert_eq!(r.index_slot(30000).v.flags, 0);
    assert_eq!(run(&mut r, &frame(30000)).0, action::TX);
    assert_eq!(run(&mut r, &frame(30002)).0, action::TX);
    assert_eq!(r.stats().unwrap().get(Outcome::DropBlocklist), 5);
}
