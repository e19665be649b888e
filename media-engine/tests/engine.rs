//! Offer/answer engine behaviour: S-13, S-14, port allocation and release, re-INVITE, hold,
//! forks, delete, rtcp-mux, stream plans, errors leave no trace.

use std::net::SocketAddr;

use media_engine::sdp::Direction;
use media_engine::{
    AnswerRequest, DeleteOutcome, EngineError, Flags, MediaEngine, MediaInterface, OfferRequest,
    RtcpMuxPolicy, Sdp,
};

mod common;

fn iface(name: &str, addr: &str, min: u16, max: u16) -> MediaInterface {
    MediaInterface {
        name: name.into(),
        address: addr.parse().unwrap(),
        advertised_address: None,
        port_min: min,
        port_max: max,
    }
}

fn engine() -> MediaEngine {
    MediaEngine::new(vec![
        iface("outside", "192.0.2.1", 30000, 30099),
        iface("inside", "10.0.0.1", 40000, 40099),
    ])
    .unwrap()
}

fn sdp(lines: &[&str]) -> Vec<u8> {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.into_bytes()
}

fn phone_sdp(addr: &str, port: u16, extra: &[&str]) -> Vec<u8> {
    let o = format!("o=- 1 1 IN IP4 {addr}");
    let c = format!("c=IN IP4 {addr}");
    let m = format!("m=audio {port} RTP/AVP 0 8 101");
    let mut v = vec![
        "v=0",
        &o,
        "s=-",
        &c,
        "t=0 0",
        &m,
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    ];
    v.extend_from_slice(extra);
    sdp(&v)
}

fn offer<'a>(
    call: &'a str,
    from: &'a str,
    to: Option<&'a str>,
    body: &'a [u8],
) -> OfferRequest<'a> {
    OfferRequest {
        call_id: call,
        from_tag: from,
        to_tag: to,
        via_branch: Some("z9hG4bK-a"),
        sdp: body,
        ingress_interface: "outside",
        egress_interface: "inside",
        flags: Flags::default(),
    }
}

fn answer<'a>(call: &'a str, from: &'a str, to: &'a str, body: &'a [u8]) -> AnswerRequest<'a> {
    AnswerRequest {
        call_id: call,
        from_tag: from,
        to_tag: to,
        via_branch: Some("z9hG4bK-a"),
        sdp: body,
        flags: Flags::default(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn m_line(b: &[u8]) -> String {
    text(b)
        .lines()
        .find(|l| l.starts_with("m="))
        .unwrap()
        .to_string()
}

fn used(e: &MediaEngine) -> (usize, usize) {
    let u = e.port_usage();
    (u[0].used, u[1].used)
}

/// S-13: fmtp-only differences must not remove a codec.
#[test]
fn s13_fmtp_only_difference_keeps_pcmu() {
    let mut e = engine();
    let a = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 2000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=fmtp:0 abc=no",
        "a=rtpmap:8 PCMA/8000",
        "a=fmtp:8 abc=no",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    ]);
    let o = e.offer(&offer("s13", "A", None, &a)).unwrap();
    assert!(
        text(&o.sdp).contains("a=fmtp:0 abc=no"),
        "offer passes fmtp through"
    );
    let b = sdp(&[
        "v=0",
        "o=- 2 2 IN IP4 10.0.0.9",
        "s=-",
        "c=IN IP4 10.0.0.9",
        "t=0 0",
        "m=audio 2002 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
    ]);
    let r = e.answer(&answer("s13", "A", "B", &b)).unwrap();
    let port = o.streams[0].sides[0].local_ports.unwrap().rtp;
    assert_eq!(m_line(&r.sdp), format!("m=audio {port} RTP/AVP 0 101"));
    assert!(text(&r.sdp).contains("a=rtpmap:0 PCMU/8000\r\n"));
    assert_eq!(r.streams[0].sides[1].payload_types, vec![0, 101]);
}

/// S-14: never emit an answer whose audio line has only telephone-event/CN; error + counter.
#[test]
fn s14_answer_with_only_telephone_event_is_refused() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    e.offer(&offer("s14", "A", None, &a)).unwrap();
    // B answers only with telephone-event (or with a codec that was never offered + 101).
    for m in [
        "m=audio 2002 RTP/AVP 101",
        "m=audio 2002 RTP/AVP 9 101",
        "m=audio 2002 RTP/AVP 13 101",
    ] {
        let b = sdp(&[
            "v=0",
            "o=- 2 2 IN IP4 10.0.0.9",
            "s=-",
            "c=IN IP4 10.0.0.9",
            "t=0 0",
            m,
            "a=rtpmap:101 telephone-event/8000",
        ]);
        let err = e.answer(&answer("s14", "A", "B", &b)).unwrap_err();
        assert!(
            matches!(err, EngineError::NoCommonCodec { index: 0, .. }),
            "{m}: {err}"
        );
        assert_eq!(err.sip_status(), 488);
    }
    assert_eq!(e.stats().answers_without_codec, 3);
    // The failed answers changed nothing: a good answer still works.
    let b = phone_sdp("10.0.0.9", 2002, &[]);
    e.answer(&answer("s14", "A", "B", &b)).unwrap();
}

#[test]
fn ports_are_allocated_rewritten_and_released() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o = e.offer(&offer("c1", "A", None, &a)).unwrap();
    assert_eq!(used(&e), (2, 2));
    let plan = &o.streams[0];
    assert_eq!(plan.media, "audio");
    let [sa, sb] = &plan.sides;
    assert_eq!(sa.interface, "outside");
    assert_eq!(sb.interface, "inside");
    let pa = sa.local_ports.unwrap();
    let pb = sb.local_ports.unwrap();
    assert_eq!(pa.rtp % 2, 0);
    assert_eq!(pa.rtcp, Some(pa.rtp + 1));
    assert_eq!(sa.peer_rtp, Some("198.51.100.7:2000".parse().unwrap()));
    assert_eq!(sa.peer_rtcp, Some("198.51.100.7:2001".parse().unwrap()));
    assert_eq!(
        sb.peer_rtp, None,
        "callee address unknown before the answer"
    );
    let out = text(&o.sdp);
    assert!(out.contains("c=IN IP4 10.0.0.1\r\n"));
    assert!(out.contains("o=- 1 1 IN IP4 10.0.0.1\r\n"));
    assert!(out.contains(&format!("m=audio {} RTP/AVP 0 8 101\r\n", pb.rtp)));
    assert!(
        !out.contains("198.51.100.7"),
        "offerer address leaked: {out}"
    );

    let b = phone_sdp("10.0.0.9", 3000, &[]);
    let r = e.answer(&answer("c1", "A", "B", &b)).unwrap();
    let out = text(&r.sdp);
    assert!(out.contains("c=IN IP4 192.0.2.1\r\n"));
    assert!(out.contains(&format!("m=audio {} RTP/AVP 0 8 101\r\n", pa.rtp)));
    assert!(!out.contains("10.0.0.9"));
    let sb = &r.streams[0].sides[1];
    assert_eq!(sb.tag.as_deref(), Some("B"));
    assert_eq!(
        sb.peer_rtp,
        Some("10.0.0.9:3000".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(sb.local_ports, Some(pb));

    let q = e.query("c1").unwrap();
    assert_eq!(q.legs.len(), 2);
    assert_eq!(q.legs[1].peer_tag.as_deref(), Some("A"));

    assert_eq!(
        e.delete("c1", "A", Some("B")),
        DeleteOutcome::Deleted {
            legs: 2,
            ports_released: 4,
            call_ended: true
        }
    );
    assert_eq!(used(&e), (0, 0));
    assert!(e.query("c1").is_none());
    assert_eq!(e.call_count(), 0);
}

#[test]
fn unknown_delete_is_harmless() {
    let mut e = engine();
    assert_eq!(e.delete("nope", "x", None), DeleteOutcome::NotFound);
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    e.offer(&offer("c1", "A", None, &a)).unwrap();
    assert_eq!(e.delete("c1", "X", Some("Y")), DeleteOutcome::NotFound);
    assert_eq!(e.call_count(), 1);
    assert_eq!(used(&e), (2, 2));
    assert!(matches!(
        e.delete("c1", "A", None),
        DeleteOutcome::Deleted {
            call_ended: true,
            ..
        }
    ));
    assert_eq!(e.delete("c1", "A", None), DeleteOutcome::NotFound);
    assert_eq!(used(&e), (0, 0));
    assert_eq!(e.stats().deletes_unknown, 3);
}

#[test]
fn exhaustion_is_a_clean_503_and_leaks_nothing() {
    // 4 ports inside = 2 pairs; outside has plenty.
    let mut e = MediaEngine::new(vec![
        iface("outside", "192.0.2.1", 30000, 30099),
        iface("inside", "10.0.0.1", 40000, 40003),
    ])
    .unwrap();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    e.offer(&offer("c1", "A", None, &a)).unwrap();
    e.offer(&offer("c2", "A", None, &a)).unwrap();
    let before = used(&e);
    let err = e.offer(&offer("c3", "A", None, &a)).unwrap_err();
    assert!(
        matches!(&err, EngineError::PortsExhausted { interface, capacity: 4 } if interface == "inside")
    );
    assert_eq!(err.sip_status(), 503);
    assert_eq!(
        used(&e),
        before,
        "the outside pair taken for c3 was given back"
    );
    assert!(e.query("c3").is_none());
    assert_eq!(e.stats().port_exhaustions, 1);
    // Releasing a call makes room again.
    e.delete("c1", "A", None);
    e.offer(&offer("c3", "A", None, &a)).unwrap();
}

#[test]
fn reinvite_keeps_ports_and_hold_is_reported() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o1 = e.offer(&offer("c1", "A", None, &a)).unwrap();
    assert!(!o1.hold);
    let b = phone_sdp("10.0.0.9", 3000, &[]);
    e.answer(&answer("c1", "A", "B", &b)).unwrap();
    let ports = |r: &media_engine::OfferResponse| {
        (
            r.streams[0].sides[0].local_ports,
            r.streams[0].sides[1].local_ports,
        )
    };

    // Hold by sendonly (in-dialog: to-tag known), different o= version.
    let hold = phone_sdp("198.51.100.7", 2000, &["a=sendonly"]);
    let o2 = e.offer(&offer("c1", "A", Some("B"), &hold)).unwrap();
    assert!(o2.hold);
    assert_eq!(ports(&o2), ports(&o1), "re-INVITE keeps the ports");
    assert_eq!(o2.streams[0].sides[0].direction, Direction::SendOnly);
    assert!(o2.streams[0].sides[0].hold);
    assert!(text(&o2.sdp).contains("a=sendonly"));
    let ans_hold = phone_sdp("10.0.0.9", 3000, &["a=recvonly"]);
    let r2 = e.answer(&answer("c1", "A", "B", &ans_hold)).unwrap();
    assert!(!r2.hold, "recvonly answer is not the answerer holding");
    assert_eq!(r2.streams[0].sides[1].direction, Direction::RecvOnly);

    // Old-style hold: c=0.0.0.0 is kept as it is and reported; no peer address to latch.
    let zero = phone_sdp("0.0.0.0", 2000, &[]);
    let o3 = e.offer(&offer("c1", "A", Some("B"), &zero)).unwrap();
    assert!(o3.hold);
    assert!(text(&o3.sdp).contains("c=IN IP4 0.0.0.0\r\n"));
    assert_eq!(o3.streams[0].sides[0].peer_rtp, None);
    assert_eq!(ports(&o3), ports(&o1));

    // Resume.
    let o4 = e.offer(&offer("c1", "A", Some("B"), &a)).unwrap();
    assert!(!o4.hold);
    assert_eq!(ports(&o4), ports(&o1));
    assert_eq!(used(&e), (2, 2), "no extra ports taken by re-INVITEs");
    assert_eq!(e.call_count(), 1);
    assert_eq!(e.query("c1").unwrap().legs.len(), 2);
}

#[test]
fn reinvite_from_the_callee_uses_the_same_ports() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o1 = e.offer(&offer("c1", "A", None, &a)).unwrap();
    let b = phone_sdp("10.0.0.9", 3000, &[]);
    e.answer(&answer("c1", "A", "B", &b)).unwrap();
    let pa = o1.streams[0].sides[0].local_ports;
    let pb = o1.streams[0].sides[1].local_ports;
    // B sends a re-INVITE: From=B, To=A, arriving on the inside.
    let b2 = phone_sdp("10.0.0.9", 3000, &["a=sendonly"]);
    let o2 = e
        .offer(&OfferRequest {
            ingress_interface: "inside",
            egress_interface: "outside",
            ..offer("c1", "B", Some("A"), &b2)
        })
        .unwrap();
    assert!(o2.hold);
    assert_eq!(o2.streams[0].sides[0].tag.as_deref(), Some("B"));
    assert_eq!(o2.streams[0].sides[0].local_ports, pb);
    assert_eq!(o2.streams[0].sides[1].local_ports, pa);
    assert!(m_line(&o2.sdp).contains(&pa.unwrap().rtp.to_string()));
    let a2 = phone_sdp("198.51.100.7", 2000, &["a=recvonly"]);
    e.answer(&answer("c1", "B", "A", &a2)).unwrap();
    assert_eq!(used(&e), (2, 2));
    // A BYE from B deletes everything.
    assert!(matches!(
        e.delete("c1", "B", Some("A")),
        DeleteOutcome::Deleted {
            call_ended: true,
            ..
        }
    ));
    assert_eq!(used(&e), (0, 0));
}

#[test]
fn wrong_interface_for_an_existing_leg_is_refused() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    e.offer(&offer("c1", "A", None, &a)).unwrap();
    let err = e
        .offer(&OfferRequest {
            ingress_interface: "inside",
            egress_interface: "outside",
            ..offer("c1", "A", None, &a)
        })
        .unwrap_err();
    assert!(
        matches!(err, EngineError::InterfaceMismatch { .. }),
        "{err}"
    );
    let err = e
        .offer(&OfferRequest {
            ingress_interface: "elsewhere",
            ..offer("c1", "A", None, &a)
        })
        .unwrap_err();
    assert_eq!(err, EngineError::UnknownInterface("elsewhere".into()));
}

/// sbcd forks the INVITE to two targets (two Via branches): each branch gets its own ports
/// toward the callee, both early answers get their own state, the caller-facing ports are
/// shared.
#[test]
fn forked_branches_get_their_own_state() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o1 = e.offer(&offer("f", "A", None, &a)).unwrap();
    let o2 = e
        .offer(&OfferRequest {
            via_branch: Some("z9hG4bK-b"),
            ..offer("f", "A", None, &a)
        })
        .unwrap();
    assert_eq!(
        o1.streams[0].sides[0].local_ports,
        o2.streams[0].sides[0].local_ports
    );
    assert_ne!(
        o1.streams[0].sides[1].local_ports,
        o2.streams[0].sides[1].local_ports
    );
    assert_eq!(used(&e), (2, 4));

    let b1 = phone_sdp("10.0.0.11", 3000, &[]);
    let b2 = phone_sdp("10.0.0.12", 4000, &["a=sendonly"]);
    let r1 = e.answer(&answer("f", "A", "B1", &b1)).unwrap();
    let r2 = e
        .answer(&AnswerRequest {
            via_branch: Some("z9hG4bK-b"),
            ..answer("f", "A", "B2", &b2)
        })
        .unwrap();
    assert_eq!(
        r1.streams[0].sides[1].peer_rtp,
        Some("10.0.0.11:3000".parse().unwrap())
    );
    assert_eq!(
        r2.streams[0].sides[1].peer_rtp,
        Some("10.0.0.12:4000".parse().unwrap())
    );
    assert_eq!(
        r1.streams[0].sides[1].local_ports,
        o1.streams[0].sides[1].local_ports
    );
    assert_eq!(
        r2.streams[0].sides[1].local_ports,
        o2.streams[0].sides[1].local_ports
    );
    assert!(r2.hold && !r1.hold);
    assert_eq!(e.query("f").unwrap().legs.len(), 3);

    // B2 wins; BYE later removes the whole call including B1's early leg.
    assert!(matches!(
        e.delete("f", "A", Some("B2")),
        DeleteOutcome::Deleted {
            legs: 3,
            call_ended: true,
            ..
        }
    ));
    assert_eq!(used(&e), (0, 0));
}

/// A downstream proxy forks: two early dialogs (different To tags) answer on the same Via
/// branch. Both share that branch's relay ports but keep their own peer and codec state.
#[test]
fn downstream_fork_on_one_branch_shares_ports() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o = e.offer(&offer("f", "A", None, &a)).unwrap();
    let b1 = phone_sdp("10.0.0.11", 3000, &[]);
    let b2 = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.12",
        "s=-",
        "c=IN IP4 10.0.0.12",
        "t=0 0",
        "m=audio 4000 RTP/AVP 8",
    ]);
    let r1 = e.answer(&answer("f", "A", "B1", &b1)).unwrap();
    let r2 = e.answer(&answer("f", "A", "B2", &b2)).unwrap();
    let pb = o.streams[0].sides[1].local_ports;
    assert_eq!(r1.streams[0].sides[1].local_ports, pb);
    assert_eq!(r2.streams[0].sides[1].local_ports, pb);
    assert_eq!(r1.streams[0].sides[1].payload_types, vec![0, 8, 101]);
    assert_eq!(r2.streams[0].sides[1].payload_types, vec![8]);
    assert_eq!(
        m_line(&r2.sdp),
        format!(
            "m=audio {} RTP/AVP 8",
            o.streams[0].sides[0].local_ports.unwrap().rtp
        )
    );
    assert_eq!(used(&e), (2, 2));
    // An in-dialog re-offer toward B2 keeps the shared ports.
    let o2 = e.offer(&offer("f", "A", Some("B2"), &a)).unwrap();
    assert_eq!(o2.streams[0].sides[1].local_ports, pb);
    assert_eq!(o2.streams[0].sides[1].tag.as_deref(), Some("B2"));
    assert_eq!(used(&e), (2, 2));
    // BYE on the A-B2 dialog: A and B2 go, B1's early leg is left without a partner and goes
    // too; the shared pair is released once (4 ports in all, not 6).
    assert_eq!(
        e.delete("f", "A", Some("B2")),
        DeleteOutcome::Deleted {
            legs: 3,
            ports_released: 4,
            call_ended: true
        }
    );
    assert_eq!(used(&e), (0, 0));
}

#[test]
fn rtcp_mux_negotiation_and_demux() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &["a=rtcp-mux"]);
    let o = e.offer(&offer("m", "A", None, &a)).unwrap();
    assert!(text(&o.sdp).contains("a=rtcp-mux\r\n"));
    assert_eq!(used(&e), (2, 2));
    let b = phone_sdp("10.0.0.9", 3000, &["a=rtcp-mux"]);
    let r = e.answer(&answer("m", "A", "B", &b)).unwrap();
    assert!(text(&r.sdp).contains("a=rtcp-mux\r\n"));
    let [sa, sb] = &r.streams[0].sides;
    assert!(sa.rtcp_mux && sb.rtcp_mux);
    assert_eq!(sa.local_ports.unwrap().rtcp, None);
    assert_eq!(sb.peer_rtcp, None);
    assert_eq!(used(&e), (1, 1), "RTCP ports given back once mux is agreed");
    // Re-INVITE offering mux again keeps the single ports.
    let o2 = e.offer(&offer("m", "A", Some("B"), &a)).unwrap();
    assert_eq!(o2.streams[0].sides[0].local_ports, sa.local_ports);
    assert_eq!(used(&e), (1, 1));

    // Demux: mux is not offered onward, but answered toward the offerer.
    let mut e = engine();
    let o = e
        .offer(&OfferRequest {
            flags: Flags {
                rtcp_mux: RtcpMuxPolicy::Demux,
                ..Flags::default()
            },
            ..offer("d", "A", None, &a)
        })
        .unwrap();
    assert!(!text(&o.sdp).contains("rtcp-mux"));
    let b = phone_sdp("10.0.0.9", 3000, &[]);
    let r = e.answer(&answer("d", "A", "B", &b)).unwrap();
    assert!(text(&r.sdp).contains("a=rtcp-mux\r\n"));
    let [sa, sb] = &r.streams[0].sides;
    assert!(sa.rtcp_mux && !sb.rtcp_mux);
    assert_eq!(sb.peer_rtcp, Some("10.0.0.9:3001".parse().unwrap()));
    assert_eq!(used(&e), (1, 2));
}

#[test]
fn rejected_streams_stay_in_place() {
    let mut e = engine();
    let a = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 2000 RTP/AVP 0",
        "m=video 0 RTP/AVP 96",
        "a=rtpmap:96 VP8/90000",
        "m=video 2002 RTP/AVP 97",
        "a=rtpmap:97 H264/90000",
    ]);
    let o = e.offer(&offer("r", "A", None, &a)).unwrap();
    let out = text(&o.sdp);
    let ms: Vec<&str> = out.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(ms.len(), 3);
    assert!(ms[1].starts_with("m=video 0 RTP/AVP 96"));
    assert!(o.streams[1].sides[0].disabled && o.streams[1].sides[1].disabled);
    assert_eq!(used(&e), (4, 4));
    // Callee rejects the H.264 stream.
    let b = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.9",
        "s=-",
        "c=IN IP4 10.0.0.9",
        "t=0 0",
        "m=audio 3000 RTP/AVP 0",
        "m=video 0 RTP/AVP 96",
        "m=video 0 RTP/AVP 97",
        "c=IN IP4 10.0.0.99",
        "a=rtcp:3001 IN IP4 10.0.0.99",
    ]);
    let r = e.answer(&answer("r", "A", "B", &b)).unwrap();
    let out = text(&r.sdp);
    assert!(!out.contains("10.0.0.9"), "callee address leaked: {out}");
    let ms: Vec<&str> = out.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(ms[2], "m=video 0 RTP/AVP 97");
    assert!(r.streams[2].sides[1].disabled);
    // Fewer m-lines in the answer than in the offer is an error.
    let short = phone_sdp("10.0.0.9", 3000, &[]);
    let err = e.answer(&answer("r", "A", "B", &short)).unwrap_err();
    assert!(matches!(
        err,
        EngineError::MediaCountMismatch {
            offer: 3,
            answer: 1,
            ..
        }
    ));
    // A re-offer may not remove m-lines.
    let err = e.offer(&offer("r", "A", Some("B"), &short)).unwrap_err();
    assert!(matches!(
        err,
        EngineError::MediaRemoved {
            before: 3,
            now: 1,
            ..
        }
    ));
}

#[test]
fn codec_strip_and_its_limits() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o = e
        .offer(&OfferRequest {
            flags: Flags {
                strip_codecs: vec!["pcma".into()],
                ..Flags::default()
            },
            ..offer("s", "A", None, &a)
        })
        .unwrap();
    let out = text(&o.sdp);
    assert!(out.contains("RTP/AVP 0 101\r\n"));
    assert!(!out.contains("PCMA"));
    // Stripping every real codec would leave telephone-event only: refused, nothing allocated.
    let err = e
        .offer(&OfferRequest {
            flags: Flags {
                strip_codecs: vec!["PCMU".into(), "PCMA".into()],
                ..Flags::default()
            },
            ..offer("s2", "A", None, &a)
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::NoCommonCodec { .. }));
    assert_eq!(e.stats().offers_without_codec, 1);
    assert!(e.query("s2").is_none());
    assert_eq!(used(&e), (2, 2));
}

#[test]
fn answering_a_webrtc_offerer_terminates_dtls_and_keeps_the_data_channel_rejected() {
    let mut e = engine();
    let chrome = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/webrtc-chromium.offer.in.sdp"
    ))
    .unwrap();
    let o = e
        .offer(&OfferRequest {
            flags: Flags {
                transport: Some("RTP/AVP".into()),
                rtcp_mux: RtcpMuxPolicy::Demux,
                ..Flags::default()
            },
            ..offer("w", "A", None, &chrome)
        })
        .unwrap();
    assert!(o.sdp.len() < 1300);
    let b = sdp(&[
        "v=0",
        "o=- 1 1 IN IP4 10.0.0.9",
        "s=-",
        "c=IN IP4 10.0.0.9",
        "t=0 0",
        "m=audio 3000 RTP/AVP 0",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
    ]);
    // The relay terminates WebRTC toward the browser (ICE-lite + DTLS-SRTP); the data channel
    // it cannot carry stays rejected.
    let a = e.answer(&answer("w", "A", "B", &b)).unwrap();
    let text = String::from_utf8_lossy(&a.sdp).to_string();
    assert!(
        text.contains("m=audio 30000 UDP/TLS/RTP/SAVPF 0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=ice-lite\r\n") && text.contains("a=setup:active\r\n"),
        "{text}"
    );
    assert!(text.contains("m=application 0 UDP/DTLS/SCTP"), "{text}");
    assert!(a.streams[0].sides[0].dtls.is_some());
    assert!(!text.contains("10.0.0.9"));
}

#[test]
fn malformed_sdp_and_unknown_calls_are_errors() {
    let mut e = engine();
    let err = e
        .offer(&offer("x", "A", None, b"v=0\r\nbogus\r\n"))
        .unwrap_err();
    assert!(matches!(err, EngineError::Sdp(_)), "{err}");
    assert_eq!(err.sip_status(), 488);
    let b = phone_sdp("10.0.0.9", 3000, &[]);
    assert_eq!(
        e.answer(&answer("x", "A", "B", &b)).unwrap_err(),
        EngineError::UnknownCall("x".into())
    );
    let bad_rtpmap = phone_sdp("198.51.100.7", 2000, &["a=rtpmap:96"]);
    assert!(e.offer(&offer("x", "A", None, &bad_rtpmap)).is_err());
    assert_eq!(e.call_count(), 0);
    assert_eq!(used(&e), (0, 0));
}

#[test]
fn offer_retransmission_is_idempotent() {
    let mut e = engine();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o1 = e.offer(&offer("c", "A", None, &a)).unwrap();
    let o2 = e.offer(&offer("c", "A", None, &a)).unwrap();
    assert_eq!(o1, o2);
    assert_eq!(used(&e), (2, 2));
    let b = phone_sdp("10.0.0.9", 3000, &[]);
    let r1 = e.answer(&answer("c", "A", "B", &b)).unwrap();
    let r2 = e.answer(&answer("c", "A", "B", &b)).unwrap();
    assert_eq!(r1, r2);
    assert_eq!(e.query("c").unwrap().legs.len(), 2);
}

#[test]
fn output_always_parses_and_ipv6_interfaces_work() {
    let mut e = MediaEngine::new(vec![
        iface("v6", "2001:db8::1", 30000, 30099),
        iface("v4", "10.0.0.1", 40000, 40099),
    ])
    .unwrap();
    let a = phone_sdp("198.51.100.7", 2000, &[]);
    let o = e
        .offer(&OfferRequest {
            ingress_interface: "v4",
            egress_interface: "v6",
            ..offer("6", "A", None, &a)
        })
        .unwrap();
    let out = text(&o.sdp);
    assert!(out.contains("c=IN IP6 2001:db8::1\r\n"), "{out}");
    assert!(out.contains("o=- 1 1 IN IP6 2001:db8::1\r\n"), "{out}");
    Sdp::parse(&o.sdp).unwrap();
}

#[test]
fn engine_config_is_validated() {
    assert!(matches!(
        MediaEngine::new(vec![
            iface("a", "10.0.0.1", 100, 200),
            iface("a", "10.0.0.2", 300, 400)
        ]),
        Err(EngineError::DuplicateInterface(_))
    ));
    assert!(matches!(
        MediaEngine::new(vec![iface("a", "10.0.0.1", 200, 100)]),
        Err(EngineError::EmptyPortRange { .. })
    ));
}

/// Bounded random mutation of real SDPs through offer and answer: every call returns a value
/// or an error (no panic), every produced SDP parses again, and deleting all calls gives every
/// port back.
#[test]
fn mutated_sdps_never_panic_or_leak_ports() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let seeds: Vec<Vec<u8>> = [
        "desk-phone.offer.in.sdp",
        "desk-phone.answer.in.sdp",
        "pbx.offer.in.sdp",
        "pbx.answer.in.sdp",
        "trunk-video.offer.in.sdp",
        "trunk-video.answer.in.sdp",
        "webrtc-chromium.offer.in.sdp",
    ]
    .iter()
    .map(|f| std::fs::read(format!("{dir}{f}")).unwrap())
    .collect();
    let mut rng = common::XorShift(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    let alphabet = b"0123456789 =:/.\r\nacmoptvIPN-";
    let mutate = |seed: &[u8], next: &mut dyn FnMut() -> u64| {
        let mut buf = seed.to_vec();
        for _ in 0..1 + next() % 4 {
            if buf.is_empty() {
                break;
            }
            let pos = next() as usize % buf.len();
            let b = alphabet[next() as usize % alphabet.len()];
            match next() % 3 {
                0 => buf[pos] = b,
                1 => buf.insert(pos, b),
                _ => {
                    buf.remove(pos);
                }
            }
        }
        buf
    };
    let mut e = MediaEngine::new(vec![
        iface("outside", "192.0.2.1", 20000, 59999),
        iface("inside", "10.0.0.1", 20000, 59999),
    ])
    .unwrap();
    let (mut offers_ok, mut answers_ok) = (0, 0);
    let mut calls = Vec::new();
    for i in 0..1500 {
        let call = format!("fuzz-{i}");
        let o = mutate(&seeds[i % seeds.len()], &mut next);
        let flags = Flags {
            transport: (i % 3 == 0).then(|| "RTP/AVP".to_string()),
            rtcp_mux: if i % 2 == 0 {
                RtcpMuxPolicy::Demux
            } else {
                RtcpMuxPolicy::Pass
            },
            ..Flags::default()
        };
        if let Ok(r) = e.offer(&OfferRequest {
            flags,
            ..offer(&call, "A", None, &o)
        }) {
            offers_ok += 1;
            Sdp::parse(&r.sdp).expect("offer output parses");
            calls.push(call.clone());
            let a = mutate(&seeds[(i + 1) % seeds.len()], &mut next);
            if let Ok(r) = e.answer(&answer(&call, "A", "B", &a)) {
                answers_ok += 1;
                Sdp::parse(&r.sdp).expect("answer output parses");
            }
            if i % 5 == 0 {
                let _ = e.offer(&offer(&call, "A", Some("B"), &o));
            }
        }
    }
    eprintln!("mutation: {offers_ok} offers and {answers_ok} answers accepted of 1500");
    assert!(offers_ok > 300, "only {offers_ok} offers accepted");
    assert!(answers_ok > 20, "only {answers_ok} answers accepted");
    for (i, call) in calls.iter().enumerate() {
        if i % 2 == 0 {
            e.delete(call, "A", Some("B"));
        } else {
            e.delete(call, "A", None);
        }
        e.delete(call, "A", None);
    }
    assert_eq!(e.call_count(), 0);
    assert_eq!(used(&e), (0, 0));
}

/// S-20: behind a 1:1 NAT the SDP carries the advertised (public) address while the plan
/// gives the datapath the local address to bind.
#[test]
fn s20_advertised_address_in_sdp_local_address_in_plan() {
    let mut e = MediaEngine::new(vec![
        MediaInterface {
            advertised_address: Some("203.0.113.5".parse().unwrap()),
            ..iface("outside", "192.0.2.1", 30000, 30099)
        },
        iface("inside", "10.0.0.1", 40000, 40099),
    ])
    .unwrap();
    let pbx = phone_sdp("10.0.0.20", 12000, &["a=rtcp:12001 IN IP4 10.0.0.20"]);
    let o = e
        .offer(&OfferRequest {
            ingress_interface: "inside",
            egress_interface: "outside",
            ..offer("n", "P", None, &pbx)
        })
        .unwrap();
    let out = text(&o.sdp);
    let b = o.streams[0].sides[1].local_ports.unwrap();
    assert!(out.contains("c=IN IP4 203.0.113.5\r\n"), "{out}");
    assert!(out.contains("o=- 1 1 IN IP4 203.0.113.5\r\n"), "{out}");
    assert!(
        out.contains(&format!(
            "a=rtcp:{} IN IP4 203.0.113.5\r\n",
            b.rtcp.unwrap()
        )),
        "{out}"
    );
    assert!(
        !out.contains("192.0.2.1") && !out.contains("10.0.0."),
        "{out}"
    );
    assert_eq!(
        o.streams[0].sides[1].local_address,
        "192.0.2.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        o.streams[0].sides[0].local_address,
        "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        o.streams[0].sides[0].peer_rtcp,
        Some("10.0.0.20:12001".parse().unwrap())
    );
    let err = e.offer(&offer("n2", "T", Some("T"), &pbx)).unwrap_err();
    assert!(matches!(err, EngineError::SameTags { .. }));
}

/// When rtcp-mux was agreed and later dropped, and the odd neighbour port went to another call
/// meanwhile, RTCP gets another port and the SDP says so with a=rtcp (RFC 3605).
#[test]
fn rtcp_port_moved_elsewhere_is_signalled_with_a_rtcp() {
    let mut e = MediaEngine::new(vec![
        iface("outside", "192.0.2.1", 30000, 30009),
        iface("inside", "10.0.0.1", 40000, 40009),
    ])
    .unwrap();
    let a_mux = phone_sdp("198.51.100.7", 2000, &["a=rtcp-mux"]);
    let o1 = e.offer(&offer("c1", "A", None, &a_mux)).unwrap();
    let b_mux = phone_sdp("10.0.0.9", 3000, &["a=rtcp-mux"]);
    e.answer(&answer("c1", "A", "B", &b_mux)).unwrap();
    let pa = o1.streams[0].sides[0].local_ports.unwrap();
    assert_eq!(used(&e), (1, 1));
    // Another call with rtcp-mux-only takes the freed odd ports.
    let only = phone_sdp("198.51.100.8", 2000, &["a=rtcp-mux-only", "a=rtcp-mux"]);
    let o2 = e.offer(&offer("c2", "C", None, &only)).unwrap();
    assert_eq!(o2.streams[0].sides[0].local_ports.unwrap().rtp, pa.rtp + 1);
    assert_eq!(o2.streams[0].sides[0].local_ports.unwrap().rtcp, None);
    // Call 1 re-offers without rtcp-mux: same RTP port, RTCP elsewhere, announced.
    let a_plain = phone_sdp("198.51.100.7", 2000, &[]);
    e.offer(&offer("c1", "A", Some("B"), &a_plain)).unwrap();
    let b_plain = phone_sdp("10.0.0.9", 3000, &[]);
    let r = e.answer(&answer("c1", "A", "B", &b_plain)).unwrap();
    let pa2 = r.streams[0].sides[0].local_ports.unwrap();
    assert_eq!(pa2.rtp, pa.rtp);
    let rtcp = pa2.rtcp.unwrap();
    assert_ne!(rtcp, pa.rtp + 1);
    let out = text(&r.sdp);
    assert!(
        out.contains(&format!("a=rtcp:{rtcp} IN IP4 192.0.2.1\r\n")),
        "{out}"
    );
    assert!(!out.contains("rtcp-mux"));
    // Everything is given back.
    e.delete("c1", "A", None);
    e.delete("c2", "C", None);
    assert_eq!(used(&e), (0, 0));
}
