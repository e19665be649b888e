//! Sans-IO tests of the proxy core: messages in, transmits out, time injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_sip::{HeaderName, SipMessage};

use super::Proxy;
use crate::metrics::Metrics;
use crate::transport::{Destination, ListenerId, Source, Transmit, Transport};

const CONFIG: &str = r#"
sip:
  timers: { t1_ms: 100, t2_ms: 400, t4_ms: 500 }
interfaces:
  - name: outside
    listeners:
      - { name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }
      - { name: out-tcp, proto: tcp, address: 192.0.2.1, port: 5060 }
  - name: inside
    listeners:
      - { name: in-udp, proto: udp, address: 198.51.100.1, port: 5060, advertised_address: core-sbc.example, advertised_port: 5080 }
      - { name: in-tcp, proto: tcp, address: 198.51.100.1, port: 5060 }
trunks:
  - { name: core-a, host: 198.51.100.3, port: 5060, transport: udp, group: core, interface: inside, priority: 1 }
  - { name: core-b, host: 198.51.100.2, port: 5060, transport: udp, group: core, interface: inside, priority: 2 }
  - { name: tcp-a, host: 198.51.100.2, port: 5060, transport: tcp, group: tcpcore, interface: inside }
routes:
  - { name: tcp, match: { user_prefix: "tcp" }, group: tcpcore }
  - { name: all, match: { interface: outside }, group: core, selection: priority }
"#;

const UAC: &str = "192.0.2.2:5060";

fn proxy() -> Proxy {
    let cfg = match portcullis_config::load_str(CONFIG, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    )
}

fn from_uac() -> Source {
    Source {
        listener: ListenerId(0),
        transport: Transport::Udp,
        remote: UAC.parse().unwrap(),
        conn: None,
    }
}

fn from_core(addr: &str) -> Source {
    Source {
        listener: ListenerId(2),
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        conn: None,
    }
}

fn invite(user: &str, branch: &str) -> Bytes {
    let body = "v=0\r\no=- 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    Bytes::from(format!(
        "INVITE sip:{user}@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.2:5060;branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:{user}@example.com>\r\n\
         Call-ID: call-{branch}@192.0.2.2\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@192.0.2.2:5060>\r\n\
         X-Custom: keep me\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

fn drain(p: &mut Proxy) -> Vec<Transmit> {
    let mut v = vec![];
    while let Some(t) = p.poll_transmit() {
        v.push(t);
    }
    v
}

fn parse(t: &Transmit) -> SipMessage {
    SipMessage::parse(t.payload.clone()).expect("proxy emitted an unparseable message")
}

/// Builds a response to a forwarded request as a UAS would (copies Via, From, To, Call-ID,
/// CSeq, Record-Route).
fn respond(req: &SipMessage, code: u16, to_tag: &str) -> Bytes {
    let mut s = format!("SIP/2.0 {code} Whatever\r\n");
    for v in req.header_values(HeaderName::Via) {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    for v in req.header_values(HeaderName::RecordRoute) {
        s.push_str(&format!("Record-Route: {v}\r\n"));
    }
    s.push_str(&format!(
        "From: {}\r\n",
        req.header(HeaderName::From).unwrap()
    ));
    let to = req.header(HeaderName::To).unwrap();
    if code > 100 && !to.contains("tag=") {
        s.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    } else {
        s.push_str(&format!("To: {to}\r\n"));
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.call_id().unwrap()));
    s.push_str(&format!(
        "CSeq: {}\r\n",
        req.header(HeaderName::CSeq).unwrap()
    ));
    s.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(s)
}

fn status_of(t: &Transmit) -> Option<u16> {
    parse(t).status()
}

#[test]
fn invite_is_forwarded_with_via_record_route_and_max_forwards() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc1"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 2, "100 Trying and the forwarded INVITE");
    assert_eq!(status_of(&out[0]), Some(100));
    assert_eq!(out[0].destination, Destination::Addr(UAC.parse().unwrap()));
    let fwd = parse(&out[1]);
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.3:5060".parse().unwrap())
    );
    assert_eq!(out[1].listener, ListenerId(2));
    let vias = fwd.header_values(HeaderName::Via);
    assert_eq!(vias.len(), 2);
    assert!(
        vias[0].starts_with("SIP/2.0/UDP core-sbc.example:5080;branch=z9hG4bK"),
        "{}",
        vias[0]
    );
    assert_eq!(
        vias[1],
        "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKc1;received=192.0.2.2;rport=5060"
    );
    assert_eq!(fwd.max_forwards().unwrap(), Some(69));
    // Crossing from outside to inside: double Record-Route, inside entry on top.
    let rr = fwd.header_values(HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2);
    assert_eq!(rr[0], "<sip:core-sbc.example:5080;r2=on;lr>");
    // The outside entry carries the caller's flow token (NAT traversal for in-dialog requests).
    assert!(
        rr[1].starts_with("<sip:192.0.2.1:5060;r2=on;lr;ft="),
        "{}",
        rr[1]
    );
    assert_eq!(fwd.header_by_name("X-Custom"), Some("keep me"));
    assert_eq!(fwd.body(), parse_body(&invite("bob", "z9hG4bKc1")));
}

fn parse_body(b: &Bytes) -> Vec<u8> {
    SipMessage::parse(b.clone()).unwrap().body().to_vec()
}

#[test]
fn full_call_flow_with_2xx_ack_and_bye_routed_by_route_set() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc2"), from_uac());
    let out = drain(&mut p);
    let fwd = parse(&out[1]);
    p.handle_message(now, respond(&fwd, 100, "u"), from_core("198.51.100.3:5060"));
    assert!(drain(&mut p).is_empty(), "100 is not forwarded");
    p.handle_message(
        now,
        respond(&fwd, 180, "u1"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), Some(180));
    let ringing = parse(&out[0]);
    assert_eq!(
        ringing.header_values(HeaderName::Via).len(),
        1,
        "our Via removed"
    );
    p.handle_message(
        now,
        respond(&fwd, 200, "u1"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(status_of(&out[0]), Some(200));
    assert_eq!(out[0].destination, Destination::Addr(UAC.parse().unwrap()));
    // The UAC sends ACK and BYE along the reversed Record-Route set.
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        Bytes::from(format!(
            "{method} sip:bob@198.51.100.3:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.2:5060;branch={branch}\r\n\
             Route: <sip:192.0.2.1:5060;r2=on;lr>\r\n\
             Route: <sip:core-sbc.example:5080;r2=on;lr>\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:bob@example.com>;tag=u1\r\n\
             Call-ID: call-z9hG4bKc2@192.0.2.2\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n"
        ))
    };
    p.handle_message(now, in_dialog("ACK", 1, "z9hG4bKack"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1, "2xx ACK forwarded statelessly");
    let ack = parse(&out[0]);
    assert_eq!(
        out[0].destination,
        Destination::Addr("198.51.100.3:5060".parse().unwrap())
    );
    assert_eq!(out[0].listener, ListenerId(2));
    assert!(
        ack.header(HeaderName::Route).is_none(),
        "our two Route entries were consumed"
    );
    p.handle_message(now, in_dialog("BYE", 2, "z9hG4bKbye"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let bye = parse(&out[0]);
    assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
    assert!(
        bye.header(HeaderName::RecordRoute).is_none(),
        "no Record-Route on in-dialog requests"
    );
    p.handle_message(
        now,
        respond(&bye, 200, "u1"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(status_of(&out[0]), Some(200));
}

#[test]
fn non_2xx_is_acked_hop_by_hop_and_uac_ack_absorbed() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc3"), from_uac());
    let fwd = parse(&drain(&mut p)[1]);
    p.handle_message(
        now,
        respond(&fwd, 486, "u3"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(out.len(), 2);
    let ack = parse(&out[0]);
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(
        ack.top_via().unwrap().branch(),
        fwd.top_via().unwrap().branch(),
        "same branch as the INVITE"
    );
    assert!(ack.header(HeaderName::To).unwrap().contains("tag=u3"));
    assert_eq!(status_of(&out[1]), Some(486));
    // A retransmitted 486 is ACKed again and not forwarded.
    p.handle_message(
        now,
        respond(&fwd, 486, "u3"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(parse(&out[0]).method().map(|m| m.as_str()), Some("ACK"));
    // The UAC's ACK matches the server transaction and goes no further.
    let ack = Bytes::from(
        "ACK sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKc3;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=u3\r\n\
         Call-ID: call-z9hG4bKc3@192.0.2.2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(now, ack, from_uac());
    assert!(drain(&mut p).is_empty());
}

#[test]
fn failover_on_503_and_on_timeout_then_best_response() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc4"), from_uac());
    let out = drain(&mut p);
    let first = parse(&out[1]);
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.3:5060".parse().unwrap())
    );
    p.handle_message(
        now,
        respond(&first, 503, "x"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    // ACK to the 503 and the INVITE to the second trunk.
    assert_eq!(parse(&out[0]).method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.2:5060".parse().unwrap())
    );
    let second = parse(&out[1]);
    assert_ne!(
        second.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    assert_eq!(second.header_values(HeaderName::RecordRoute).len(), 2);
    p.handle_message(
        now,
        respond(&second, 200, "ok"),
        from_core("198.51.100.2:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(status_of(&out[0]), Some(200));

    // Timeout: nobody answers; timer B (64*T1 = 6.4 s) moves to the next trunk.
    let mut p = proxy();
    p.handle_message(now, invite("bob", "z9hG4bKc5"), from_uac());
    let out = drain(&mut p);
    let first = parse(&out[1]);
    let mut t = now;
    let mut retrans = 0;
    let mut second = None;
    while t < now + Duration::from_secs(8) {
        t += Duration::from_millis(50);
        p.handle_timeout(t);
        for tx in drain(&mut p) {
            let m = parse(&tx);
            if m.top_via().unwrap().branch() == first.top_via().unwrap().branch() {
                retrans += 1;
            } else {
                second = Some((tx.destination.clone(), t - now));
            }
        }
        if second.is_some() {
            break;
        }
    }
    assert_eq!(retrans, 6, "timer A retransmissions before timer B");
    let (dest, after) = second.expect("failover after timer B");
    assert_eq!(
        dest,
        Destination::Addr("198.51.100.2:5060".parse().unwrap())
    );
    assert!(
        after >= Duration::from_millis(6400) && after < Duration::from_millis(6500),
        "{after:?}"
    );
}

#[test]
fn all_trunks_failing_gives_500_for_503_and_408_for_timeouts() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc6"), from_uac());
    let fwd = parse(&drain(&mut p)[1]);
    p.handle_message(now, respond(&fwd, 503, "x"), from_core("198.51.100.3:5060"));
    let fwd2 = parse(&drain(&mut p)[1]);
    p.handle_message(
        now,
        respond(&fwd2, 503, "y"),
        from_core("198.51.100.2:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(
        status_of(out.last().unwrap()),
        Some(500),
        "a selected 503 becomes 500 (16.7)"
    );

    let mut p = proxy();
    p.handle_message(now, invite("bob", "z9hG4bKc7"), from_uac());
    drain(&mut p);
    let mut final_status = None;
    let mut t = now;
    while t < now + Duration::from_secs(15) && final_status.is_none() {
        t += Duration::from_millis(100);
        p.handle_timeout(t);
        for tx in drain(&mut p) {
            if tx.destination == Destination::Addr(UAC.parse().unwrap()) {
                final_status = status_of(&tx);
            }
        }
    }
    assert_eq!(final_status, Some(408));
}

#[test]
fn cancel_is_answered_and_propagated_then_487_relayed() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc8"), from_uac());
    let fwd = parse(&drain(&mut p)[1]);
    p.handle_message(
        now,
        respond(&fwd, 180, "u8"),
        from_core("198.51.100.3:5060"),
    );
    drain(&mut p);
    let cancel = Bytes::from(
        "CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKc8;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: call-z9hG4bKc8@192.0.2.2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(now, cancel.clone(), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 2);
    assert_eq!(status_of(&out[0]), Some(200));
    let c = parse(&out[1]);
    assert_eq!(c.method().map(|m| m.as_str()), Some("CANCEL"));
    assert_eq!(
        c.top_via().unwrap().branch(),
        fwd.top_via().unwrap().branch()
    );
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.3:5060".parse().unwrap())
    );
    // A retransmitted CANCEL gets the same 200 again and nothing more.
    p.handle_message(now, cancel, from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), Some(200));
    p.handle_message(now, respond(&c, 200, "u8"), from_core("198.51.100.3:5060"));
    assert!(drain(&mut p).is_empty(), "the 200 to our CANCEL stops here");
    p.handle_message(
        now,
        respond(&fwd, 487, "u8"),
        from_core("198.51.100.3:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(parse(&out[0]).method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(status_of(&out[1]), Some(487));
}

#[test]
fn cancel_without_transaction_gets_481() {
    let mut p = proxy();
    let cancel = Bytes::from(
        "CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKnone\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: x@y\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(Instant::now(), cancel, from_uac());
    let out = drain(&mut p);
    assert_eq!(status_of(&out[0]), Some(481));
}

#[test]
fn invite_retransmission_is_absorbed_and_100_resent() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKc9"), from_uac());
    assert_eq!(drain(&mut p).len(), 2);
    p.handle_message(now, invite("bob", "z9hG4bKc9"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), Some(100));
}

#[test]
fn stray_responses_are_dropped() {
    let mut p = proxy();
    let stray = Bytes::from(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKother\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: s@t\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(Instant::now(), stray, from_core("198.51.100.3:5060"));
    assert!(drain(&mut p).is_empty());
    let ours_unknown = Bytes::from(
        "SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKpc0000.1\r\n\
         Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKx\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: s@t\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(Instant::now(), ours_unknown, from_core("198.51.100.3:5060"));
    assert!(drain(&mut p).is_empty());
}

#[test]
fn max_forwards_zero_gets_483_and_loops_get_482() {
    let mut p = proxy();
    let now = Instant::now();
    let mf0 = String::from_utf8(invite("bob", "z9hG4bKmf").to_vec())
        .unwrap()
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    p.handle_message(now, Bytes::from(mf0), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), Some(483));

    // The forwarded INVITE comes back to us unchanged (a loop through the core).
    p.handle_message(now, invite("bob", "z9hG4bKlp"), from_uac());
    let fwd = drain(&mut p).remove(1);
    let mut looped = parse(&fwd);
    looped.prepend_header(
        HeaderName::Via,
        "SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKcore1",
    );
    p.handle_message(now, looped.to_bytes(), from_core("198.51.100.3:5060"));
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(status_of(&out[0]), Some(482));
}

#[test]
fn requests_to_us_without_route_and_options_ping() {
    let mut p = proxy();
    let now = Instant::now();
    let opts = Bytes::from(
        "OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKopt\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@core>;tag=1\r\nTo: <sip:192.0.2.1>\r\nCall-ID: o@p\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(now, opts, from_core("198.51.100.3:5060"));
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let resp = parse(&out[0]);
    assert_eq!(resp.status(), Some(200));
    assert!(resp.header(HeaderName::Allow).is_some());
    assert!(
        resp.to().unwrap().tag().is_some(),
        "local final responses carry a To tag"
    );
}

#[test]
fn udp_to_tcp_crossing_uses_tcp_listener_and_transport_in_record_route() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("tcpbob", "z9hG4bKt1"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out[1].transport, Transport::Tcp);
    assert_eq!(out[1].listener, ListenerId(3));
    let fwd = parse(&out[1]);
    assert!(fwd.top_via().unwrap().transport.eq_ignore_ascii_case("TCP"));
    let rr = fwd.header_values(HeaderName::RecordRoute);
    assert_eq!(rr[0], "<sip:198.51.100.1:5060;transport=tcp;r2=on;lr>");
    assert!(
        rr[1].starts_with("<sip:192.0.2.1:5060;r2=on;lr;ft="),
        "{}",
        rr[1]
    );
    // Over TCP there are no retransmissions; a connection failure fails the call over.
    let tok = out[1].token.unwrap();
    p.handle_transport_error(now, tok);
    let out = drain(&mut p);
    assert_eq!(status_of(out.last().unwrap()), Some(503));
}

#[test]
fn large_udp_request_is_sent_over_tcp_and_falls_back_to_udp() {
    let mut p = proxy();
    let now = Instant::now();
    let big = String::from_utf8(invite("bob", "z9hG4bKbig").to_vec())
        .unwrap()
        .replace(
            "X-Custom: keep me\r\n",
            &format!("X-Custom: {}\r\n", "x".repeat(1400)),
        );
    p.handle_message(now, Bytes::from(big), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        out[1].transport,
        Transport::Tcp,
        "RFC 3261 18.1.1: > 1300 bytes goes over TCP"
    );
    assert!(parse(&out[1])
        .top_via()
        .unwrap()
        .transport
        .eq_ignore_ascii_case("TCP"));
    p.handle_transport_error(now, out[1].token.unwrap());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].transport,
        Transport::Udp,
        "falls back to UDP on connection failure"
    );
    assert_eq!(
        out[0].destination,
        Destination::Addr("198.51.100.3:5060".parse().unwrap())
    );
}

#[test]
fn strict_router_request_uri_is_fixed_up() {
    let mut p = proxy();
    let now = Instant::now();
    // A strict router put our Record-Route URI in the Request-URI and the real target last.
    let req = Bytes::from(
        "BYE sip:192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKsr\r\n\
         Route: <sip:198.51.100.2:5060;transport=udp>\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b\r\n\
         Call-ID: sr@x\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(now, req, from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let fwd = parse(&out[0]);
    assert_eq!(
        fwd.request_uri(),
        Some("sip:198.51.100.2:5060;transport=udp")
    );
    assert!(fwd.header(HeaderName::Route).is_none());
    assert_eq!(
        out[0].destination,
        Destination::Addr("198.51.100.2:5060".parse().unwrap())
    );
}

#[test]
fn garbage_never_panics() {
    let mut p = proxy();
    let now = Instant::now();
    let samples: [&[u8]; 6] = [
        b"",
        b"\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: garbage\r\n\r\n",
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nContent-Length: 5\r\n\r\nab",
        b"\x00\xff\xfe SIP/2.0",
    ];
    for s in samples {
        p.handle_message(now, Bytes::copy_from_slice(s), from_uac());
        let _ = drain(&mut p);
    }
    let src: SocketAddr = UAC.parse().unwrap();
    assert_eq!(src.port(), 5060);
}

const TRUNK_A: &str = "198.51.100.3:5060";

/// Where the INVITE just handled was forwarded to.
fn invite_destination(p: &mut Proxy) -> &'static str {
    let out = drain(p);
    let fwd = out
        .iter()
        .find(|t| parse(t).method().map(|m| m.as_str()) == Some("INVITE"))
        .expect("INVITE forwarded");
    match &fwd.destination {
        Destination::Addr(a) if a.to_string() == TRUNK_A => TRUNK_A,
        other => panic!("unexpected destination {other}"),
    }
}

fn register(user: &str, contact: &str, expires: u32, cseq: u32, call_id: &str) -> Bytes {
    Bytes::from(format!(
        "REGISTER sip:192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.1.1.5:5060;branch=z9hG4bKreg{cseq}{user}{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@192.0.2.1>;tag=r{cseq}\r\n\
         To: <sip:{user}@192.0.2.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <{contact}>;expires={expires}\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn from_phone(addr: &str, transport: Transport, conn: Option<u64>) -> Source {
    Source {
        listener: if transport == Transport::Tcp {
            ListenerId(1)
        } else {
            ListenerId(0)
        },
        transport,
        remote: addr.parse().unwrap(),
        conn: conn.map(crate::transport::ConnId),
    }
}

fn invite_to_sbc(user: &str, branch: &str) -> Bytes {
    let s = String::from_utf8(invite(user, branch).to_vec())
        .unwrap()
        .replace(
            &format!("INVITE sip:{user}@example.com"),
            &format!("INVITE sip:{user}@192.0.2.1"),
        );
    Bytes::from(s)
}

#[test]
fn standalone_registrar_registers_and_routes_calls_to_the_flow() {
    let mut p = proxy();
    let now = Instant::now();
    // A NATed phone: private Contact, public source address.
    let phone = from_phone("203.0.113.7:40001", Transport::Udp, None);
    p.handle_message(
        now,
        register("carol", "sip:carol@10.1.1.5:5060", 300, 1, "reg1"),
        phone,
    );
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let ok = parse(&out[0]);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.header(HeaderName::Contact),
        Some("<sip:carol@10.1.1.5:5060>;expires=300")
    );
    assert_eq!(
        out[0].destination,
        Destination::Addr("203.0.113.7:40001".parse().unwrap())
    );

    p.handle_message(now, invite_to_sbc("carol", "z9hG4bKcall1"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 2);
    let fwd = parse(&out[1]);
    assert_eq!(
        fwd.request_uri(),
        Some("sip:carol@10.1.1.5:5060"),
        "Request-URI is the registered contact"
    );
    assert_eq!(
        out[1].destination,
        Destination::Addr("203.0.113.7:40001".parse().unwrap()),
        "sent to the flow, not to the private Contact"
    );

    // De-registration with expires=0 removes the binding: the next call gets 404.
    p.handle_message(
        now,
        register("carol", "sip:carol@10.1.1.5:5060", 0, 2, "reg1"),
        phone,
    );
    let ok = parse(&drain(&mut p)[0]);
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header(HeaderName::Contact).is_none());
    p.handle_message(now, invite_to_sbc("carol", "z9hG4bKcall2"), from_uac());
    assert_eq!(
        invite_destination(&mut p),
        TRUNK_A,
        "unregistered users go to the routing rules"
    );
}

#[test]
fn register_interval_too_brief_and_expiry() {
    let mut p = proxy();
    let now = Instant::now();
    let phone = from_phone("203.0.113.7:40001", Transport::Udp, None);
    p.handle_message(
        now,
        register("dave", "sip:dave@10.1.1.6", 30, 1, "r"),
        phone,
    );
    let resp = parse(&drain(&mut p)[0]);
    assert_eq!(resp.status(), Some(423));
    assert_eq!(resp.header_by_name("Min-Expires"), Some("60"));
    p.handle_message(
        now,
        register("dave", "sip:dave@10.1.1.6", 60, 2, "r"),
        phone,
    );
    assert_eq!(status_of(&drain(&mut p)[0]), Some(200));
    // After expiry the user is unknown.
    let later = now + Duration::from_secs(61);
    p.handle_message(later, invite_to_sbc("dave", "z9hG4bKlate"), from_uac());
    assert_eq!(invite_destination(&mut p), TRUNK_A);
}

#[test]
fn two_contacts_are_forked_in_parallel_and_the_loser_cancelled() {
    let mut p = proxy();
    let now = Instant::now();
    let a = from_phone("203.0.113.7:40001", Transport::Udp, None);
    let b = from_phone("203.0.113.8:40002", Transport::Udp, None);
    p.handle_message(now, register("erin", "sip:erin@10.0.0.7", 300, 1, "ra"), a);
    p.handle_message(now, register("erin", "sip:erin@10.0.0.8", 300, 1, "rb"), b);
    drain(&mut p);
    p.handle_message(now, invite_to_sbc("erin", "z9hG4bKfork"), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 3, "100 Trying + two branches at once");
    let b1 = parse(&out[1]);
    let b2 = parse(&out[2]);
    p.handle_message(now, respond(&b1, 180, "t1"), a);
    p.handle_message(now, respond(&b2, 180, "t2"), b);
    assert_eq!(drain(&mut p).len(), 2, "both 180s relayed");
    p.handle_message(now, respond(&b2, 200, "t2"), b);
    let out = drain(&mut p);
    let cancel = out
        .iter()
        .find(|t| parse(t).method().map(|m| m.as_str()) == Some("CANCEL"))
        .expect("CANCEL to the other branch");
    assert_eq!(
        cancel.destination,
        Destination::Addr("203.0.113.7:40001".parse().unwrap())
    );
    assert!(out.iter().any(|t| status_of(t) == Some(200)));
}

#[test]
fn dead_tcp_flow_gives_prompt_480_and_drops_the_binding() {
    let mut p = proxy();
    let now = Instant::now();
    let phone = from_phone("203.0.113.9:50000", Transport::Tcp, Some(42));
    p.handle_message(
        now,
        register("frank", "sip:frank@10.0.0.9;transport=tcp", 300, 1, "rf"),
        phone,
    );
    assert_eq!(status_of(&drain(&mut p)[0]), Some(200));
    p.handle_message(now, invite_to_sbc("frank", "z9hG4bKdead"), from_uac());
    let out = drain(&mut p);
    assert!(out[1].flow_bound);
    assert_eq!(out[1].conn, Some(crate::transport::ConnId(42)));
    p.handle_transport_error(now, out[1].token.unwrap());
    let out = drain(&mut p);
    assert_eq!(status_of(out.last().unwrap()), Some(480));
    p.handle_message(now, invite_to_sbc("frank", "z9hG4bKdead2"), from_uac());
    assert_eq!(invite_destination(&mut p), TRUNK_A, "the binding is gone");
}

#[test]
fn closed_flow_removes_its_registrations() {
    let mut p = proxy();
    let now = Instant::now();
    let phone = from_phone("203.0.113.9:50000", Transport::Tcp, Some(7));
    p.handle_message(
        now,
        register("gina", "sip:gina@10.0.0.9;transport=tcp", 300, 1, "rg"),
        phone,
    );
    drain(&mut p);
    p.handle_flow_closed(crate::transport::ConnId(7));
    p.handle_message(now, invite_to_sbc("gina", "z9hG4bKgone"), from_uac());
    assert_eq!(invite_destination(&mut p), TRUNK_A);
}

#[test]
fn registrar_with_users_challenges_and_accepts_digest_sha256() {
    use sha2::Digest;
    let cfg_text = format!(
        "{CONFIG}registrar:\n  realm: sbc.test\n  users:\n    - {{ user: henry, password: pw1 }}\n"
    );
    let cfg = match portcullis_config::load_str(&cfg_text, "auth.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let now = Instant::now();
    let phone = from_phone("203.0.113.7:40001", Transport::Udp, None);
    p.handle_message(
        now,
        register("henry", "sip:henry@10.1.1.5", 300, 1, "ra"),
        phone,
    );
    let challenge = parse(&drain(&mut p)[0]);
    assert_eq!(challenge.status(), Some(401));
    let www: Vec<&str> = challenge
        .headers()
        .filter(|h| h.name == HeaderName::WwwAuthenticate)
        .map(|h| h.value)
        .collect();
    assert_eq!(www.len(), 2, "SHA-256 and MD5 challenges");
    assert!(www[0].contains("algorithm=SHA-256") && www[0].contains("realm=\"sbc.test\""));
    let nonce = www[0]
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let h = |s: String| -> String {
        sha2::Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let ha1 = h("henry:sbc.test:pw1".into());
    let ha2 = h("REGISTER:sip:192.0.2.1".into());
    let resp = h(format!("{ha1}:{nonce}:00000001:xyz:auth:{ha2}"));
    let authz = format!(
        "Authorization: Digest username=\"henry\", realm=\"sbc.test\", nonce=\"{nonce}\", uri=\"sip:192.0.2.1\", response=\"{resp}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"xyz\"\r\n"
    );
    let with_auth =
        String::from_utf8(register("henry", "sip:henry@10.1.1.5", 300, 2, "ra").to_vec())
            .unwrap()
            .replace(
                "Content-Length: 0\r\n",
                &format!("{authz}Content-Length: 0\r\n"),
            );
    p.handle_message(now, Bytes::from(with_auth.clone()), phone);
    assert_eq!(status_of(&drain(&mut p)[0]), Some(200));
    // A wrong password is challenged again.
    let wrong = with_auth
        .replace(&resp, &"0".repeat(64))
        .replace("CSeq: 2", "CSeq: 3")
        .replace("z9hG4bKreg2", "z9hG4bKreg3");
    p.handle_message(now, Bytes::from(wrong), phone);
    assert_eq!(status_of(&drain(&mut p)[0]), Some(401));
}

#[test]
fn options_probing_marks_trunks_down_and_up_and_routing_skips_down_ones() {
    let cfg_text = CONFIG.replace(
        "group: core, interface: inside, priority: 1 }",
        "group: core, interface: inside, priority: 1, probe_interval_s: 5 }",
    );
    let cfg = match portcullis_config::load_str(&cfg_text, "probe.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let metrics = Arc::new(Metrics::new(&["outside".into(), "inside".into()]));
    let mut p = Proxy::new(&cfg, metrics.clone());
    let now = Instant::now();
    p.start(now);
    p.handle_timeout(now);
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let probe = parse(&out[0]);
    assert_eq!(probe.method().map(|m| m.as_str()), Some("OPTIONS"));
    assert_eq!(
        out[0].destination,
        Destination::Addr(TRUNK_A.parse().unwrap())
    );
    assert!(p.trunk_is_up("core-a"));
    // No answer by the next interval: down; calls go to core-b.
    let t5 = now + Duration::from_secs(5);
    p.handle_timeout(t5);
    let out = drain(&mut p);
    assert!(!p.trunk_is_up("core-a"));
    assert!(metrics
        .encode()
        .contains("sbc_trunk_up{trunk=\"core-a\"} 0"));
    // The first probe was retransmitted (timer E) before the second one went out; the
    // clock jumps straight to 5 s, so timer E fires once in this call.
    let probes: Vec<SipMessage> = out
        .iter()
        .map(parse)
        .filter(|m| m.method().map(|m| m.as_str()) == Some("OPTIONS"))
        .collect();
    assert_eq!(probes.len(), 2, "one retransmission, then the next probe");
    let second_probe = probes.last().unwrap().clone();
    assert_ne!(second_probe.call_id().unwrap(), probe.call_id().unwrap());
    p.handle_message(t5, invite("bob", "z9hG4bKprobe1"), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.2:5060".parse().unwrap())
    );
    // The trunk answers the next probe (even 404 means alive): up again.
    p.handle_message(t5, respond(&second_probe, 404, "x"), from_core(TRUNK_A));
    assert!(p.trunk_is_up("core-a"));
    assert!(metrics
        .encode()
        .contains("sbc_trunk_up{trunk=\"core-a\"} 1"));
    p.handle_message(t5, invite("bob", "z9hG4bKprobe2"), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        out[1].destination,
        Destination::Addr(TRUNK_A.parse().unwrap())
    );
}

#[test]
fn in_dialog_requests_from_the_callee_reach_a_natted_caller_through_its_flow() {
    let mut p = proxy();
    let now = Instant::now();
    // The caller's Via/Contact say 10.0.0.99:5060 but it sends from 203.0.113.50:4444 (NAT).
    let inv = String::from_utf8(invite("bob", "z9hG4bKnat").to_vec())
        .unwrap()
        .replace("192.0.2.2", "10.0.0.99");
    let nat = Source {
        listener: ListenerId(0),
        transport: Transport::Udp,
        remote: "203.0.113.50:4444".parse().unwrap(),
        conn: None,
    };
    p.handle_message(now, Bytes::from(inv), nat);
    let out = drain(&mut p);
    assert_eq!(
        out[0].destination,
        Destination::Addr(nat.remote),
        "100 Trying to the NAT binding"
    );
    let fwd = parse(&out[1]);
    let rr = fwd.header_values(HeaderName::RecordRoute);
    // The callee hangs up: BYE to the caller's (private) Contact along the Record-Route set.
    let bye = format!(
        "BYE sip:alice@10.0.0.99:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKcalleebye\r\n\
         Route: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=u1\r\n\
         To: <sip:alice@example.com>;tag=a1\r\nCall-ID: call-z9hG4bKnat@10.0.0.99\r\nCSeq: 1 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        rr[0], rr[1]
    );
    let bye_bytes = Bytes::from(bye);
    if let Err(e) = SipMessage::parse(bye_bytes.clone()) {
        panic!("test BYE does not parse: {e}");
    }
    p.handle_message(now, bye_bytes, from_core(TRUNK_A));
    let out = drain(&mut p);
    assert_eq!(
        out.len(),
        1,
        "{:?}",
        out.iter()
            .map(|t| String::from_utf8_lossy(&t.payload).to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        out[0].destination,
        Destination::Addr(nat.remote),
        "BYE goes to the NAT binding, not 10.0.0.99"
    );
    assert_eq!(out[0].listener, ListenerId(0));
    let fwd_bye = parse(&out[0]);
    assert_eq!(fwd_bye.request_uri(), Some("sip:alice@10.0.0.99:5060"));
    // A forged token is ignored (the request then follows its Request-URI).
    let forged = rr[1].replace("ft=0", "ft=1");
    let bye2 = format!(
        "BYE sip:alice@10.0.0.99:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKcalleebye2\r\n\
         Route: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=u1\r\n\
         To: <sip:alice@example.com>;tag=a1\r\nCall-ID: call-z9hG4bKnat@10.0.0.99\r\nCSeq: 2 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        rr[0], forged
    );
    p.handle_message(now, Bytes::from(bye2), from_core(TRUNK_A));
    let out = drain(&mut p);
    assert_eq!(
        out[0].destination,
        Destination::Addr("10.0.0.99:5060".parse().unwrap())
    );
}

/// A registrar's 200 OK: the request's Contacts with their expiry.
fn registrar_ok(req: &SipMessage) -> Bytes {
    let base = String::from_utf8(respond(req, 200, "reg").to_vec()).unwrap();
    let contacts: String = req
        .header_values(HeaderName::Contact)
        .iter()
        .map(|c| format!("Contact: {c}\r\n"))
        .collect();
    Bytes::from(base.replace(
        "Content-Length: 0\r\n",
        &format!("{contacts}Content-Length: 0\r\n"),
    ))
}

fn upstream_proxy(mode: &str) -> (Proxy, Arc<Metrics>) {
    let cfg_text = CONFIG.replace(
        "  - name: inside\n",
        "    policy: { registration_client_expires: 60, registration_upstream_expires: 3600 }\n  - name: inside\n",
    ) + &format!("registrar:\n  upstream: core\n  mode: {mode}\n");
    let cfg = match portcullis_config::load_str(&cfg_text, "up.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}\n{cfg_text}"),
    };
    let metrics = Arc::new(Metrics::new(&["outside".into(), "inside".into()]));
    (Proxy::new(&cfg, metrics.clone()), metrics)
}

#[test]
fn registration_proxy_hides_contact_throttles_and_routes_calls_to_the_flow() {
    let (mut p, metrics) = upstream_proxy("contact");
    let now = Instant::now();
    let phone = from_phone("203.0.113.7:40001", Transport::Udp, None);
    p.handle_message(
        now,
        register("carol", "sip:carol@10.1.1.5:5060", 3600, 1, "rc"),
        phone,
    );
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].destination,
        Destination::Addr(TRUNK_A.parse().unwrap())
    );
    let up = parse(&out[0]);
    let contact = up.header(HeaderName::Contact).unwrap().to_string();
    assert!(
        contact.starts_with("<sip:rg") && contact.contains("@core-sbc.example:5080>"),
        "{contact}"
    );
    assert!(contact.ends_with(";expires=3600"), "{contact}");
    assert!(
        !contact.contains("10.1.1.5"),
        "the client's Contact is hidden"
    );
    // The registrar accepts for 3600 s; the phone is told 60 s and sees its own Contact.
    p.handle_message(now, registrar_ok(&up), from_core(TRUNK_A));
    let out = drain(&mut p);
    let ok = parse(&out[0]);
    assert_eq!(ok.status(), Some(200));
    assert_eq!(out[0].destination, Destination::Addr(phone.remote));
    assert_eq!(
        ok.header(HeaderName::Contact),
        Some("<sip:carol@10.1.1.5:5060>;expires=60")
    );
    // Ten refreshes inside the upstream window are answered by the SBC.
    for i in 0..10u32 {
        let t = now + Duration::from_secs(50 * u64::from(i + 1));
        p.handle_message(
            t,
            register("carol", "sip:carol@10.1.1.5:5060", 3600, 2 + i, "rc"),
            phone,
        );
        let out = drain(&mut p);
        assert_eq!(out.len(), 1, "refresh {i} answered locally");
        assert_eq!(out[0].destination, Destination::Addr(phone.remote));
        assert_eq!(status_of(&out[0]), Some(200));
    }
    let m = metrics.encode();
    assert!(
        m.contains("sbc_registrations_total{reason=\"cached\"} 10"),
        "{m}"
    );
    assert!(
        m.contains("sbc_registrations_total{reason=\"forwarded\"} 1"),
        "{m}"
    );
    // A call from the core to the SBC-owned Contact reaches the phone over its flow.
    let token = contact
        .trim_start_matches("<sip:")
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let inv = String::from_utf8(invite("x", "z9hG4bKin1").to_vec())
        .unwrap()
        .replace(
            "INVITE sip:x@example.com",
            &format!("INVITE sip:{token}@core-sbc.example:5080"),
        );
    p.handle_message(now, Bytes::from(inv), from_core(TRUNK_A));
    let out = drain(&mut p);
    let fwd = parse(&out[1]);
    assert_eq!(out[1].destination, Destination::Addr(phone.remote));
    assert_eq!(fwd.request_uri(), Some("sip:carol@10.1.1.5:5060"));
}

#[test]
fn registration_proxy_path_mode_adds_path_and_routes_by_it() {
    let (mut p, _) = upstream_proxy("path");
    let now = Instant::now();
    let phone = from_phone("203.0.113.7:40001", Transport::Udp, None);
    p.handle_message(
        now,
        register("dora", "sip:dora@10.1.1.8:5060", 3600, 1, "rp"),
        phone,
    );
    let up = parse(&drain(&mut p)[0]);
    let path = up.header(HeaderName::Path).unwrap().to_string();
    assert!(
        path.starts_with("<sip:") && path.contains("@core-sbc.example:5080;lr>"),
        "{path}"
    );
    assert_eq!(
        up.header(HeaderName::Contact),
        Some("<sip:dora@10.1.1.8:5060>;expires=3600")
    );
    p.handle_message(now, registrar_ok(&up), from_core(TRUNK_A));
    let ok = parse(&drain(&mut p)[0]);
    assert_eq!(
        ok.header(HeaderName::Contact),
        Some("<sip:dora@10.1.1.8:5060>;expires=60")
    );
    // The registrar routes a call to the client with the Path as a pre-loaded Route.
    let inv = String::from_utf8(invite("x", "z9hG4bKin2").to_vec())
        .unwrap()
        .replace(
            "INVITE sip:x@example.com SIP/2.0\r\n",
            &format!("INVITE sip:dora@10.1.1.8:5060 SIP/2.0\r\nRoute: {path}\r\n"),
        );
    p.handle_message(now, Bytes::from(inv), from_core(TRUNK_A));
    let out = drain(&mut p);
    assert_eq!(out[1].destination, Destination::Addr(phone.remote));
    assert_eq!(parse(&out[1]).request_uri(), Some("sip:dora@10.1.1.8:5060"));
}

const TOPO_CONFIG: &str = r#"
interfaces:
  - name: outside
    listeners:
      - { name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }
    policy: { topology_hiding: true }
  - name: inside
    listeners:
      - { name: in-udp, proto: udp, address: 198.51.100.1, port: 5060 }
trunks:
  - { name: pbx, host: 198.51.100.9, port: 5060, group: core, interface: inside }
  - { name: ext, host: 192.0.2.50, port: 5060, group: ext, interface: outside }
routes:
  - { name: out, match: { interface: inside }, group: ext }
  - { name: in, match: { interface: outside }, group: core }
"#;

fn topo_proxy() -> Proxy {
    let cfg = match portcullis_config::load_str(TOPO_CONFIG, "topo.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    )
}

/// Header section of a message (the SDP is the media engine's business).
fn headers_text(t: &Transmit) -> String {
    let text = String::from_utf8_lossy(&t.payload).to_string();
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

fn inside_invite() -> Bytes {
    // From the PBX (198.51.100.3) through an inside proxy (198.51.100.9) that record-routed.
    Bytes::from(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKproxy1\r\n\
         Via: SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKpbx1\r\n\
         Record-Route: <sip:198.51.100.9;lr>\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:alice@pbx.corp.internal>;tag=p1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: topo1@pbx.corp.internal\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@198.51.100.3:5060>\r\n\
         Content-Length: 0\r\n\r\n",
    )
}

#[test]
fn topology_hiding_inside_caller_nothing_inside_leaks_and_dialog_routes_both_ways() {
    let mut p = topo_proxy();
    let now = Instant::now();
    let proxy_src = from_inside("198.51.100.9:5060");
    p.handle_message(now, inside_invite(), proxy_src);
    let out = drain(&mut p);
    let fwd_t = out.iter().find(|t| parse(t).method().is_some()).unwrap();
    assert_eq!(
        fwd_t.destination,
        Destination::Addr("192.0.2.50:5060".parse().unwrap())
    );
    let head = headers_text(fwd_t);
    assert!(
        !head.contains("198.51.100"),
        "inside address leaked:\n{head}"
    );
    let fwd = parse(fwd_t);
    assert_eq!(fwd.header_values(HeaderName::Via).len(), 1);
    let rr = fwd.header_values(HeaderName::RecordRoute);
    assert_eq!(rr.len(), 1);
    assert!(
        rr[0].starts_with("<sip:192.0.2.1:5060;r2=on;lr"),
        "{}",
        rr[0]
    );
    let contact = fwd.header(HeaderName::Contact).unwrap().to_string();
    assert!(
        contact.starts_with("<sip:dg") && contact.contains("@192.0.2.1:5060>"),
        "{contact}"
    );

    // The outside UAS answers; the PBX side gets its Vias and the full route set back.
    let ok = String::from_utf8(respond(&fwd, 200, "b1").to_vec())
        .unwrap()
        .replace(
            "Content-Length: 0",
            "Contact: <sip:bob@192.0.2.50:5060>\r\nContent-Length: 0",
        );
    p.handle_message(now, Bytes::from(ok), from_uac_addr("192.0.2.50:5060"));
    let out = drain(&mut p);
    let resp = parse(&out[0]);
    assert_eq!(resp.status(), Some(200));
    assert_eq!(
        out[0].destination,
        Destination::Addr("198.51.100.9:5060".parse().unwrap())
    );
    assert_eq!(
        resp.header_values(HeaderName::Via),
        vec![
            "SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKproxy1",
            "SIP/2.0/UDP 198.51.100.3:5060;branch=z9hG4bKpbx1"
        ]
    );
    let full_rr = resp.header_values(HeaderName::RecordRoute);
    assert_eq!(full_rr.len(), 3, "{full_rr:?}");
    assert_eq!(full_rr[2], "<sip:198.51.100.9;lr>");

    // BYE from the outside party to the dialog token: delivered to the PBX via the inside proxy.
    let token_uri = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let bye = format!(
        "BYE {token_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKextbye\r\n\
         Route: {}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b1\r\n\
         To: <sip:alice@pbx.corp.internal>;tag=p1\r\nCall-ID: topo1@pbx.corp.internal\r\n\
         CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        rr[0]
    );
    p.handle_message(now, Bytes::from(bye), from_uac_addr("192.0.2.50:5060"));
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].destination,
        Destination::Addr("198.51.100.9:5060".parse().unwrap())
    );
    let fwd_bye = parse(&out[0]);
    assert_eq!(fwd_bye.request_uri(), Some("sip:alice@198.51.100.3:5060"));
    assert_eq!(
        fwd_bye.header_values(HeaderName::Route),
        vec!["<sip:198.51.100.9;lr>"]
    );
    // The 200 to the BYE going out carries no inside Via.
    p.handle_message(now, respond(&fwd_bye, 200, "p1"), proxy_src);
    let out = drain(&mut p);
    assert_eq!(
        out[0].destination,
        Destination::Addr("192.0.2.50:5060".parse().unwrap())
    );
    assert!(
        !headers_text(&out[0]).contains("198.51.100"),
        "{}",
        headers_text(&out[0])
    );
}

fn from_uac_addr(addr: &str) -> Source {
    Source {
        listener: ListenerId(0),
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        conn: None,
    }
}

#[test]
fn topology_hiding_outside_caller_sees_only_sbc_addresses_in_responses() {
    let mut p = topo_proxy();
    let now = Instant::now();
    let phone = from_uac_addr("192.0.2.2:5060");
    p.handle_message(now, invite("alice", "z9hG4bKtopo2"), phone);
    let out = drain(&mut p);
    let fwd = parse(&out[1]);
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.9:5060".parse().unwrap())
    );
    // Inside, a proxy adds its Record-Route on top; the PBX answers with its Contact.
    let mut rr = vec!["<sip:198.51.100.9;lr>".to_string()];
    rr.extend(
        fwd.header_values(HeaderName::RecordRoute)
            .iter()
            .map(|s| s.to_string()),
    );
    let mut ok = "SIP/2.0 200 OK\r\n".to_string();
    for v in fwd.header_values(HeaderName::Via) {
        ok.push_str(&format!("Via: {v}\r\n"));
    }
    for v in &rr {
        ok.push_str(&format!("Record-Route: {v}\r\n"));
    }
    ok.push_str(&format!(
        "From: {}\r\nTo: {};tag=pbx9\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.3:5060>\r\n\
         Warning: 399 198.51.100.3 \"inside\"\r\nContent-Length: 0\r\n\r\n",
        fwd.header(HeaderName::From).unwrap(),
        fwd.header(HeaderName::To).unwrap(),
        fwd.call_id().unwrap()
    ));
    p.handle_message(now, Bytes::from(ok), from_inside("198.51.100.9:5060"));
    let out = drain(&mut p);
    let resp = parse(&out[0]);
    assert_eq!(out[0].destination, Destination::Addr(phone.remote));
    let rr_out = resp.header_values(HeaderName::RecordRoute);
    assert_eq!(rr_out.len(), 1, "{rr_out:?}");
    assert!(rr_out[0].starts_with("<sip:192.0.2.1:5060;r2=on;lr"));
    let contact = resp.header(HeaderName::Contact).unwrap().to_string();
    assert!(contact.starts_with("<sip:dg"), "{contact}");
    // The inside address in the Warning header is replaced by the SBC's outside address.
    assert_eq!(
        resp.header_by_name("Warning"),
        Some("399 192.0.2.1 \"inside\"")
    );
    let head = headers_text(&out[0]);
    assert!(
        !head.contains("198.51.100"),
        "inside address leaked:\n{head}"
    );
    // The phone's BYE to the hidden Contact reaches the PBX through the inside proxy.
    let token_uri = contact
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_string();
    let bye = format!(
        "BYE {token_uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKphonebye\r\n\
         Route: {}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:alice@example.com>;tag=pbx9\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        rr_out[0],
        fwd.call_id().unwrap()
    );
    p.handle_message(now, Bytes::from(bye), phone);
    let out = drain(&mut p);
    assert_eq!(
        out[0].destination,
        Destination::Addr("198.51.100.9:5060".parse().unwrap())
    );
    let b = parse(&out[0]);
    assert_eq!(b.request_uri(), Some("sip:alice@198.51.100.3:5060"));
    assert_eq!(
        b.header_values(HeaderName::Route),
        vec!["<sip:198.51.100.9;lr>"]
    );
}

fn from_inside(addr: &str) -> Source {
    Source {
        listener: ListenerId(1),
        transport: Transport::Udp,
        remote: addr.parse().unwrap(),
        conn: None,
    }
}

#[test]
fn natted_registrations_get_options_keepalives_and_are_dropped_when_they_stop_answering() {
    let cfg = match portcullis_config::load_str(CONFIG, "t.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let metrics = Arc::new(Metrics::new(&["outside".into(), "inside".into()]));
    let mut p = Proxy::new(&cfg, metrics.clone());
    let now = Instant::now();
    p.start(now);
    let phone = from_phone("203.0.113.7:40001", Transport::Udp, None);
    p.handle_message(
        now,
        register("kim", "sip:kim@10.1.1.5:5060", 3600, 1, "rk"),
        phone,
    );
    assert_eq!(status_of(&drain(&mut p)[0]), Some(200));
    assert!(metrics
        .encode()
        .contains("sbc_nat_detected_total{interface=\"outside\"} 1"));
    let keepalives = |p: &mut Proxy, t: Instant| -> Vec<SipMessage> {
        p.handle_timeout(t);
        drain(p)
            .iter()
            .filter(|tx| tx.destination == Destination::Addr(phone.remote))
            .map(parse)
            .filter(|m| {
                m.method().map(|m| m.as_str()) == Some("OPTIONS")
                    && m.call_id().unwrap().starts_with("keepalive-")
            })
            .collect()
    };
    let t30 = now + Duration::from_secs(30);
    let ka = keepalives(&mut p, t30);
    assert_eq!(ka.len(), 1, "one keepalive per interval");
    p.handle_message(t30, respond(&ka[0], 200, "k"), phone);
    // Three unanswered rounds: the registration is dropped.
    for i in 2..=4u64 {
        assert_eq!(
            keepalives(&mut p, now + Duration::from_secs(30 * i)).len(),
            1
        );
    }
    p.handle_timeout(now + Duration::from_secs(150));
    drain(&mut p);
    assert!(
        metrics
            .encode()
            .contains("sbc_nat_keepalive_failures_total 3"),
        "{}",
        metrics.encode()
    );
    let t = now + Duration::from_secs(151);
    p.handle_message(t, invite_to_sbc("kim", "z9hG4bKka"), from_uac());
    assert_eq!(
        invite_destination(&mut p),
        TRUNK_A,
        "binding dropped after 3 failures"
    );
}

#[test]
fn uri_params_are_set_without_duplication() {
    let p = |u: &str| super::set_uri_params(u, &["user=phone".to_string(), "npdi".to_string()]);
    assert_eq!(
        p("sip:+4930123@gw.example"),
        "sip:+4930123@gw.example;user=phone;npdi"
    );
    assert_eq!(
        p("sip:+4930123@gw.example;user=ip"),
        "sip:+4930123@gw.example;user=phone;npdi"
    );
    assert_eq!(
        p("sip:+4930123@gw.example:5060;USER=phone;x=1?h=v"),
        "sip:+4930123@gw.example:5060;user=phone;x=1;npdi?h=v"
    );
    assert_eq!(p("sip:gw.example;npdi"), "sip:gw.example;npdi;user=phone");
}

#[test]
fn per_trunk_rules_user_phone_100rel_and_headers() {
    let cfg_text = CONFIG.replace(
        "group: core, interface: inside, priority: 1 }",
        "group: core, interface: inside, priority: 1, request_uri_params: [user=phone], disable_100rel: true, headers: [{ action: remove, name: X-Custom }, { action: add, name: X-Caller, from_header: From }, { action: replace, name: User-Agent, value: SBC }] }",
    );
    let cfg = match portcullis_config::load_str(&cfg_text, "rules.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let inv = String::from_utf8(invite("bob", "z9hG4bKrules").to_vec())
        .unwrap()
        .replace(
            "X-Custom: keep me\r\n",
            "X-Custom: keep me\r\nSupported: 100rel, timer\r\nUser-Agent: Phone 1.0\r\n",
        );
    p.handle_message(Instant::now(), Bytes::from(inv), from_uac());
    let out = drain(&mut p);
    let fwd = parse(&out[1]);
    assert_eq!(fwd.request_uri(), Some("sip:bob@example.com;user=phone"));
    assert_eq!(fwd.supported(), vec!["timer"]);
    assert_eq!(fwd.header_by_name("X-Custom"), None);
    assert_eq!(
        fwd.header_by_name("X-Caller"),
        Some("<sip:alice@example.com>;tag=a1")
    );
    assert_eq!(fwd.header(HeaderName::UserAgent), Some("SBC"));
}

const MEDIA_CONFIG: &str = r#"
media: { datapath: userspace, timeout_s: 60 }
interfaces:
  - name: outside
    listeners:
      - { name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }
    media: { address: 192.0.2.1, port_min: 30000, port_max: 30999 }
  - name: inside
    listeners:
      - { name: in-udp, proto: udp, address: 198.51.100.1, port: 5060 }
    media: { address: 198.51.100.1, port_min: 31000, port_max: 31999 }
trunks:
  - { name: core-a, host: 198.51.100.3, port: 5060, group: core, interface: inside }
routes:
  - { name: all, match: { interface: outside }, group: core }
"#;

#[test]
fn anchored_call_gets_bye_on_both_legs_after_media_timeout() {
    let cfg = match portcullis_config::load_str(MEDIA_CONFIG, "media.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let metrics = Arc::new(Metrics::new(&["outside".into(), "inside".into()]));
    let mut p = Proxy::new(&cfg, metrics.clone());
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKmt"), from_uac());
    let out = drain(&mut p);
    let fwd = parse(&out[1]);
    assert!(
        String::from_utf8_lossy(fwd.body()).contains("c=IN IP4 198.51.100.1"),
        "offer anchored"
    );
    // The callee answers with SDP and its Contact.
    let body = "v=0\r\no=- 2 2 IN IP4 198.51.100.3\r\ns=-\r\nc=IN IP4 198.51.100.3\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    let ok = String::from_utf8(respond(&fwd, 200, "callee1").to_vec()).unwrap().replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Contact: <sip:bob@198.51.100.3:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    p.handle_message(now, Bytes::from(ok), from_core(TRUNK_A));
    let out = drain(&mut p);
    assert!(
        String::from_utf8_lossy(parse(&out[0]).body()).contains("c=IN IP4 192.0.2.1"),
        "answer anchored"
    );
    let programmed: Vec<_> = std::iter::from_fn(|| p.poll_media()).collect();
    assert!(matches!(
        programmed.as_slice(),
        [super::media::MediaCommand::Program { .. }]
    ));

    let call_id = fwd.call_id().unwrap().to_string();
    assert!(
        !p.handle_media_idle(now, &call_id, Duration::from_secs(59)),
        "not yet"
    );
    assert!(p.handle_media_idle(now, &call_id, Duration::from_secs(61)));
    let byes: Vec<(Destination, SipMessage)> = drain(&mut p)
        .iter()
        .map(|t| (t.destination.clone(), parse(t)))
        .collect();
    assert_eq!(byes.len(), 2);
    let to_caller = byes
        .iter()
        .find(|(d, _)| *d == Destination::Addr(UAC.parse().unwrap()))
        .expect("BYE to the caller");
    assert_eq!(to_caller.1.method().map(|m| m.as_str()), Some("BYE"));
    assert_eq!(to_caller.1.request_uri(), Some("sip:alice@192.0.2.2:5060"));
    assert_eq!(to_caller.1.from().unwrap().tag(), Some("callee1"));
    assert_eq!(to_caller.1.to().unwrap().tag(), Some("a1"));
    assert_eq!(to_caller.1.call_id().unwrap(), call_id);
    let to_callee = byes
        .iter()
        .find(|(d, _)| *d == Destination::Addr(TRUNK_A.parse().unwrap()))
        .expect("BYE to the callee");
    assert_eq!(to_callee.1.request_uri(), Some("sip:bob@198.51.100.3:5060"));
    assert_eq!(to_callee.1.from().unwrap().tag(), Some("a1"));
    assert_eq!(
        to_callee.1.cseq().unwrap().seq,
        2,
        "above the caller's INVITE CSeq"
    );
    let released: Vec<_> = std::iter::from_fn(|| p.poll_media()).collect();
    assert!(matches!(
        released.as_slice(),
        [super::media::MediaCommand::Release { .. }]
    ));
    assert!(metrics.encode().contains("sbc_media_timeouts_total 1"));
    // Once ended, the call does not time out again.
    assert!(!p.handle_media_idle(now, &call_id, Duration::from_secs(120)));
}

#[test]
fn late_offer_in_the_2xx_and_answer_in_the_ack_are_anchored() {
    let cfg = match portcullis_config::load_str(MEDIA_CONFIG, "media.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let now = Instant::now();
    // An INVITE without SDP.
    let inv = String::from_utf8(invite("bob", "z9hG4bKlate").to_vec()).unwrap();
    let head = inv.split("Content-Type:").next().unwrap().to_string();
    let no_sdp = format!("{head}Content-Length: 0\r\n\r\n");
    p.handle_message(now, Bytes::from(no_sdp), from_uac());
    let out = drain(&mut p);
    let fwd = parse(&out[1]);
    assert!(fwd.body().is_empty());
    // The callee offers in its 2xx.
    let body = "v=0\r\no=- 2 2 IN IP4 198.51.100.3\r\ns=-\r\nc=IN IP4 198.51.100.3\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let ok = String::from_utf8(respond(&fwd, 200, "lo1").to_vec()).unwrap().replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Contact: <sip:bob@198.51.100.3:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    p.handle_message(now, Bytes::from(ok), from_core(TRUNK_A));
    let out = drain(&mut p);
    let ok_out = parse(&out[0]);
    let offer = String::from_utf8_lossy(ok_out.body()).to_string();
    assert!(
        offer.contains("c=IN IP4 192.0.2.1"),
        "late offer anchored toward the caller:\n{offer}"
    );
    assert!(
        std::iter::from_fn(|| p.poll_media()).next().is_none(),
        "nothing to relay before the answer"
    );
    // The caller answers in the ACK.
    let answer = "v=0\r\no=- 3 3 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let rr = ok_out.header_values(HeaderName::RecordRoute);
    let mut ack = "ACK sip:bob@198.51.100.3:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKlateack\r\n"
        .to_string();
    for r in rr.iter().rev() {
        ack.push_str(&format!("Route: {r}\r\n"));
    }
    ack.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=lo1\r\n\
         Call-ID: {}\r\nCSeq: 1 ACK\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        fwd.call_id().unwrap(),
        answer.len()
    ));
    p.handle_message(now, Bytes::from(ack), from_uac());
    let out = drain(&mut p);
    assert_eq!(out.len(), 1);
    let fwd_ack = parse(&out[0]);
    let ans = String::from_utf8_lossy(fwd_ack.body()).to_string();
    assert!(
        ans.contains("c=IN IP4 198.51.100.1"),
        "answer anchored toward the callee:\n{ans}"
    );
    let cmds: Vec<_> = std::iter::from_fn(|| p.poll_media()).collect();
    assert!(
        matches!(
            cmds.as_slice(),
            [super::media::MediaCommand::Program { .. }]
        ),
        "{cmds:?}"
    );
}

/// Mutated messages of every kind fed to the whole proxy core (routing, registrar,
/// topology hiding, media), with time moving on: no panic, and the proxy keeps working.
#[test]
fn mutated_messages_never_panic_the_proxy_core() {
    let cfg = match portcullis_config::load_str(
        &format!(
            "{}{}",
            TOPO_CONFIG.replace("policy: { topology_hiding: true }", "policy: { topology_hiding: true }\n    media: { address: 192.0.2.1, port_min: 30000, port_max: 30999 }"),
            "registrar:\n  users: [{ user: alice, password: x }]\n"
        ),
        "fuzz.yaml",
    ) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let now = Instant::now();
    p.start(now);
    let seeds: Vec<Vec<u8>> = vec![
        invite("bob", "z9hG4bKf1").to_vec(),
        inside_invite().to_vec(),
        register("alice", "sip:alice@10.1.1.5", 300, 1, "rf").to_vec(),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKpc0000000000000000.1\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKx\r\nRecord-Route: <sip:192.0.2.1;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f@g\r\nCSeq: 1 INVITE\r\nContact: <sip:c@192.0.2.50>\r\nContent-Length: 0\r\n\r\n".to_vec(),
        b"BYE sip:dg0123456789abcdef@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKb\r\nRoute: <sip:192.0.2.1:5060;lr;ft=00>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f@g\r\nCSeq: 2 BYE\r\nMax-Forwards: 1\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ];
    let mut rng = crate::xorshift::XorShift(0x5eed_1234_abcd_0001);
    let mut next = || rng.next_u64();
    for i in 0..4000u64 {
        let mut m = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..(1 + next() % 4) {
            if m.is_empty() {
                break;
            }
            let pos = (next() % m.len() as u64) as usize;
            match next() % 4 {
                0 => m[pos] = (next() & 0xff) as u8,
                1 => {
                    m.truncate(pos);
                }
                2 => m.insert(pos, b";:<>@\r\n,="[(next() % 9) as usize]),
                _ => {
                    let end = (pos + (next() % 16) as usize).min(m.len());
                    m.drain(pos..end);
                }
            }
        }
        let src = if i % 2 == 0 {
            from_uac()
        } else {
            from_inside("198.51.100.9:5060")
        };
        p.handle_message(now + Duration::from_millis(i), Bytes::from(m), src);
        p.handle_timeout(now + Duration::from_millis(i));
        let _ = drain(&mut p);
        let _ = std::iter::from_fn(|| p.poll_media()).count();
    }
    // Still working afterwards.
    let fresh = String::from_utf8(inside_invite().to_vec())
        .unwrap()
        .replace("z9hG4bKproxy1", "z9hG4bKalive")
        .replace("topo1@", "alive@");
    p.handle_message(
        now + Duration::from_secs(10),
        Bytes::from(fresh),
        from_inside("198.51.100.9:5060"),
    );
    let out = drain(&mut p);
    assert!(
        out.iter().any(|t| parse(t).method().is_some()),
        "proxy still forwards: {:?}",
        out.iter()
            .map(|t| String::from_utf8_lossy(&t.payload).to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn media_session_limit_per_interface_gives_503() {
    let cfg_text = MEDIA_CONFIG.replace(
        "media: { address: 198.51.100.1, port_min: 31000, port_max: 31999 }",
        "media: { address: 198.51.100.1, port_min: 31000, port_max: 31999, max_sessions: 1 }",
    );
    let cfg = match portcullis_config::load_str(&cfg_text, "limit.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKlim1"), from_uac());
    let out = drain(&mut p);
    assert!(parse(&out[1]).method().is_some(), "first call forwarded");
    p.handle_message(now, invite("carl", "z9hG4bKlim2"), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        status_of(out.last().unwrap()),
        Some(503),
        "second call over the limit"
    );
    // The first call ends (CANCEL before answer releases it): room again.
    let cancel = Bytes::from(
        "CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKlim1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: call-z9hG4bKlim1@192.0.2.2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    );
    p.handle_message(now, cancel, from_uac());
    drain(&mut p);
    p.handle_message(now, invite("dora", "z9hG4bKlim3"), from_uac());
    let out = drain(&mut p);
    assert!(
        parse(&out[1]).method().is_some(),
        "a call fits again after the first ended"
    );
}

#[test]
fn call_id_masking_hides_the_inside_call_id_and_restores_it() {
    let cfg_text = TOPO_CONFIG.replace(
        "policy: { topology_hiding: true }",
        "policy: { topology_hiding: true, call_id_masking: true }",
    );
    let cfg = match portcullis_config::load_str(&cfg_text, "mask.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let now = Instant::now();
    p.handle_message(now, inside_invite(), from_inside("198.51.100.9:5060"));
    let out = drain(&mut p);
    let fwd_t = out.iter().find(|t| parse(t).method().is_some()).unwrap();
    let fwd = parse(fwd_t);
    let masked = fwd.call_id().unwrap().to_string();
    assert!(masked.starts_with("pcm"), "{masked}");
    assert!(!masked.contains("topo1"), "{masked}");
    // The phone answers with the masked Call-ID; the PBX gets its own back.
    p.handle_message(
        now,
        respond(&fwd, 180, "m1"),
        from_uac_addr("192.0.2.50:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(parse(&out[0]).call_id().unwrap(), "topo1@pbx.corp.internal");
    // A call created outside keeps its Call-ID in both directions.
    p.handle_message(
        now,
        invite("alice", "z9hG4bKnative"),
        from_uac_addr("192.0.2.2:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(status_of(&out[0]), Some(100));
    assert_eq!(
        parse(&out[0]).call_id().unwrap(),
        "call-z9hG4bKnative@192.0.2.2"
    );
    let fwd = parse(&out[1]);
    assert_eq!(fwd.call_id().unwrap(), "call-z9hG4bKnative@192.0.2.2");
}

#[test]
fn tel_uri_routed_by_number_and_converted_per_trunk() {
    let cfg_text = CONFIG
        .replace(
            "group: core, interface: inside, priority: 1 }",
            "group: core, interface: inside, priority: 1, request_uri_form: sip }",
        )
        .replace(
            "  - { name: tcp, match: { user_prefix: \"tcp\" }, group: tcpcore }",
            "  - { name: tcp, match: { user_prefix: \"tcp\" }, group: tcpcore }\n  - { name: de, match: { user_prefix: \"+4930\" }, group: core }",
        );
    let cfg = match portcullis_config::load_str(&cfg_text, "tel.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let inv = String::from_utf8(invite("x", "z9hG4bKtel").to_vec())
        .unwrap()
        .replace(
            "INVITE sip:x@example.com SIP/2.0",
            "INVITE tel:+49-30-1234567 SIP/2.0",
        );
    p.handle_message(Instant::now(), Bytes::from(inv), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        out[1].destination,
        Destination::Addr(TRUNK_A.parse().unwrap())
    );
    assert_eq!(
        parse(&out[1]).request_uri(),
        Some("sip:+49-30-1234567@198.51.100.3:5060;user=phone")
    );
}

#[test]
fn provisional_181_with_call_info_passes_unchanged_and_in_order() {
    let mut p = proxy();
    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bK181"), from_uac());
    let fwd = parse(&drain(&mut p)[1]);
    let mut relayed = Vec::new();
    for n in 1..=2 {
        let r = String::from_utf8(respond(&fwd, 181, "f1").to_vec()).unwrap().replace(
            "Content-Length: 0",
            &format!("Call-Info: <urn:x-vendor:forward-{n}>;x-reason=unconditional;x-odd=\"a,b\"\r\nContent-Length: 0"),
        );
        p.handle_message(now, Bytes::from(r), from_core(TRUNK_A));
        relayed.extend(drain(&mut p));
    }
    assert_eq!(relayed.len(), 2);
    for (i, t) in relayed.iter().enumerate() {
        let m = parse(t);
        assert_eq!(m.status(), Some(181));
        assert_eq!(
            m.header_by_name("Call-Info"),
            Some(
                format!(
                    "<urn:x-vendor:forward-{}>;x-reason=unconditional;x-odd=\"a,b\"",
                    i + 1
                )
                .as_str()
            )
        );
    }
}

/// A trunk with a host name: before any resolution the name goes to the IO layer; after the
/// DNS task hands in an SRV resolution, the INVITE goes to the resolved addresses in order,
/// failing over on 503 from the first SRV target to the second, with its NAPTR transport.
#[test]
fn resolved_trunk_names_expand_to_srv_targets_with_failover() {
    use crate::dns::{Entry, Resolution};
    let cfg_text = CONFIG.replace(
        "  - { name: core-a, host: 198.51.100.3, port: 5060, transport: udp, group: core, interface: inside, priority: 1 }\n",
        "  - { name: core-a, host: core.example.net, group: core, interface: inside, priority: 1 }\n",
    );
    let cfg = portcullis_config::load_str(&cfg_text, "test.yaml").unwrap();
    assert_eq!(cfg.trunks[0].dns, portcullis_config::TrunkDns::Naptr);
    let mut p = Proxy::new(
        &cfg,
        Arc::new(Metrics::new(&["outside".into(), "inside".into()])),
    );
    let queries = p.dns_queries();
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].0, "core-a");
    assert_eq!(queries[0].1.host, "core.example.net");
    assert_eq!(queries[0].1.supported, [Transport::Udp, Transport::Tcp]);

    let now = Instant::now();
    p.handle_message(now, invite("bob", "z9hG4bKd1"), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        out[1].destination,
        Destination::Name("core.example.net".into(), 5060)
    );

    let entry = |rank, ip: &str, transport| Entry {
        rank,
        weight: 0,
        transport,
        target: "x".into(),
        addrs: vec![ip.parse().unwrap()],
    };
    assert!(p.set_trunk_resolution(
        "core-a",
        Resolution {
            entries: vec![
                entry(20, "198.51.100.8:5070", Transport::Tcp),
                entry(10, "198.51.100.7:5060", Transport::Udp),
            ],
            ttl: 60,
            via: "naptr",
        },
    ));
    p.handle_message(now, invite("bob", "z9hG4bKd2"), from_uac());
    let out = drain(&mut p);
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.7:5060".parse().unwrap())
    );
    assert_eq!(out[1].transport, Transport::Udp);
    let first = parse(&out[1]);
    p.handle_message(
        now,
        respond(&first, 503, "x"),
        from_core("198.51.100.7:5060"),
    );
    let out = drain(&mut p);
    assert_eq!(parse(&out[0]).method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(
        out[1].destination,
        Destination::Addr("198.51.100.8:5070".parse().unwrap())
    );
    assert_eq!(out[1].transport, Transport::Tcp, "second SRV target is TCP");
    let second = parse(&out[1]);
    assert_eq!(second.top_via().unwrap().transport, "TCP");
    // Then the next trunk of the group (core-b, an IP literal).
    p.handle_message(
        now,
        respond(&second, 503, "y"),
        from_core("198.51.100.8:5070"),
    );
    let out = drain(&mut p);
    assert_eq!(
        out.last().unwrap().destination,
        Destination::Addr("198.51.100.2:5060".parse().unwrap())
    );
}
