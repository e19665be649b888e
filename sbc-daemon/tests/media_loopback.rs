//! Media anchoring end to end on loopback with real sockets: the SDP offer and answer are
//! rewritten to the SBC's relay ports, RTP is relayed both ways by the userspace datapath,
//! hold and resume by re-INVITE keep the ports and media flows again, and a BYE releases the
//! relay (nothing is forwarded afterwards, ports are free again).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::timeout;

fn base_port() -> u16 {
    27000 + (std::process::id() % 500) as u16 * 8
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
}

fn media_port(msg: &str) -> u16 {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio line in:\n{msg}"))
}

async fn recv_text(sock: &UdpSocket) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65535];
    let (n, from) = timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("message within 5 s")
        .expect("recv");
    (String::from_utf8_lossy(&buf[..n]).to_string(), from)
}

/// Receives SIP messages until one matches `pred`.
async fn recv_until(sock: &UdpSocket, pred: impl Fn(&str) -> bool) -> (String, SocketAddr) {
    loop {
        let (m, from) = recv_text(sock).await;
        if pred(&m) {
            return (m, from);
        }
    }
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
    p.extend_from_slice(&[0xffu8; 160]);
    p
}

/// Counts RTP packets arriving at `sock` within `wait`.
async fn count_rtp(sock: &UdpSocket, wait: Duration) -> (usize, Option<SocketAddr>) {
    let mut n = 0;
    let mut from = None;
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok((len, src))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
    {
        if len >= 12 && buf[0] == 0x80 {
            n += 1;
            from = Some(src);
        }
    }
    (n, from)
}

#[tokio::test]
async fn offer_answer_rewritten_rtp_relayed_both_ways_and_released_by_bye() {
    let base = base_port();
    let (sip, metrics, uas_sip) = (base, base + 1, base + 2);
    let (port_min, port_max) = (40000 + (base % 500) * 20, 40000 + (base % 500) * 20 + 19);
    let yaml = format!(
        r#"
logging: {{ level: warn }}
metrics: {{ listen: "127.0.0.1:{metrics}" }}
media: {{ datapath: userspace }}
interfaces:
  - name: lo
    listeners:
      - {{ name: lo-udp, proto: udp, address: 127.0.0.1, port: {sip} }}
    media: {{ address: 127.0.0.1, port_min: {port_min}, port_max: {port_max} }}
trunks:
  - {{ name: uas, host: 127.0.0.1, port: {uas_sip}, group: g, interface: lo }}
routes:
  - {{ name: all, match: {{ }}, group: g }}
"#
    );
    let cfg = match portcullis_config::load_str(&yaml, "media.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let daemon = tokio::spawn(async move {
        let _ = sbc_daemon::server::run(cfg, async {
            let _ = stopped.await;
        })
        .await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let uac = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uac_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uas = UdpSocket::bind(("127.0.0.1", uas_sip)).await.unwrap();
    let uas_rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uac_port = uac.local_addr().unwrap().port();
    let body = sdp(uac_rtp.local_addr().unwrap().port());
    let invite = format!(
        "INVITE sip:bob@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{uac_port};rport;branch=z9hG4bKmedia1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: media1@test\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{uac_port}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    uac.send_to(invite.as_bytes(), ("127.0.0.1", sip))
        .await
        .unwrap();

    // The UAS sees the SBC's relay port, not the caller's.
    let (inv, sbc_addr) = recv_until(&uas, |m| m.starts_with("INVITE")).await;
    let relay_b = media_port(&inv);
    assert!(
        (port_min..=port_max).contains(&relay_b),
        "offer relay port {relay_b} in range:\n{inv}"
    );
    assert!(!inv.contains(&format!(
        "m=audio {} ",
        uac_rtp.local_addr().unwrap().port()
    )));
    let vias: Vec<&str> = inv.lines().filter(|l| l.starts_with("Via:")).collect();
    let answer = sdp(uas_rtp.local_addr().unwrap().port());
    let mut ok = "SIP/2.0 200 OK\r\n".to_string();
    for v in &vias {
        ok.push_str(v);
        ok.push_str("\r\n");
    }
    for l in inv.lines().filter(|l| {
        l.starts_with("Record-Route:")
            || l.starts_with("From:")
            || l.starts_with("Call-ID:")
            || l.starts_with("CSeq:")
    }) {
        ok.push_str(l);
        ok.push_str("\r\n");
    }
    ok.push_str(&format!(
        "To: <sip:bob@127.0.0.1>;tag=b1\r\nContact: <sip:bob@127.0.0.1:{uas_sip}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        answer.len()
    ));
    uas.send_to(ok.as_bytes(), sbc_addr).await.unwrap();
    let (resp, _) = recv_until(&uac, |m| m.starts_with("SIP/2.0 200")).await;
    let relay_a = media_port(&resp);
    assert!(
        (port_min..=port_max).contains(&relay_a),
        "answer relay port {relay_a}:\n{resp}"
    );
    assert_ne!(relay_a, relay_b);

    // RTP both ways through the relay.
    for i in 0..20u16 {
        uac_rtp
            .send_to(&rtp(i), ("127.0.0.1", relay_a))
            .await
            .unwrap();
        uas_rtp
            .send_to(&rtp(1000 + i), ("127.0.0.1", relay_b))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (to_uas, from_b) = count_rtp(&uas_rtp, Duration::from_millis(500)).await;
    let (to_uac, from_a) = count_rtp(&uac_rtp, Duration::from_millis(300)).await;
    assert_eq!(to_uas, 20, "caller -> callee packets relayed");
    assert_eq!(to_uac, 20, "callee -> caller packets relayed");
    assert_eq!(
        from_b.map(|a| a.port()),
        Some(relay_b),
        "callee sees the SBC's relay port as source"
    );
    assert_eq!(from_a.map(|a| a.port()), Some(relay_a));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = common::http_get(metrics, "/metrics").await;
    assert!(m.contains("sbc_media_sessions 1"), "{m}");
    let relayed: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("sbc_media_relayed_packets_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(relayed, 40, "relayed packet counter:\n{m}");
    assert!(
        m.contains("sbc_media_datapath{kind=\"userspace\"} 1"),
        "{m}"
    );
    // io_uring where the kernel allows it (relay_io: auto), else the epoll fallback.
    let io_lines: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("sbc_media_relay_io{"))
        .collect();
    assert!(
        io_lines == ["sbc_media_relay_io{io=\"io_uring\"} 1"]
            || io_lines == ["sbc_media_relay_io{io=\"epoll\"} 1"],
        "{m}"
    );

    // Hold and resume by re-INVITE: the relay ports stay the same, media flows again after
    // the resume.
    let route_lines: Vec<String> = resp
        .lines()
        .filter(|l| l.starts_with("Record-Route:"))
        .map(|l| l.replacen("Record-Route:", "Route:", 1))
        .collect();
    let uac_media_port = uac_rtp.local_addr().unwrap().port();
    let uas_media_port = uas_rtp.local_addr().unwrap().port();
    for (n, direction, answer_direction) in
        [(2u32, "sendonly", "recvonly"), (3, "sendrecv", "sendrecv")]
    {
        let offer = sdp(uac_media_port).replace("a=sendrecv", &format!("a={direction}"));
        let reinvite = format!(
            "INVITE sip:bob@127.0.0.1:{uas_sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{uac_port};rport;branch=z9hG4bKre{n}\r\n{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=b1\r\nCall-ID: media1@test\r\n\
             CSeq: {n} INVITE\r\nContact: <sip:alice@127.0.0.1:{uac_port}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{offer}",
            route_lines.join("\r\n"),
            offer.len()
        );
        uac.send_to(reinvite.as_bytes(), ("127.0.0.1", sip))
            .await
            .unwrap();
        let (re, from) = recv_until(&uas, |m| {
            m.starts_with("INVITE") && m.contains(&format!("CSeq: {n} INVITE"))
        })
        .await;
        assert_eq!(
            media_port(&re),
            relay_b,
            "re-INVITE keeps the callee-side relay port"
        );
        assert!(re.contains(&format!("a={direction}")), "{re}");
        let ans = sdp(uas_media_port).replace("a=sendrecv", &format!("a={answer_direction}"));
        let mut ok = "SIP/2.0 200 OK\r\n".to_string();
        for l in re.lines().filter(|l| {
            l.starts_with("Via:")
                || l.starts_with("From:")
                || l.starts_with("Call-ID:")
                || l.starts_with("CSeq:")
                || l.starts_with("To:")
        }) {
            ok.push_str(l);
            ok.push_str("\r\n");
        }
        ok.push_str(&format!(
            "Contact: <sip:bob@127.0.0.1:{uas_sip}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{ans}",
            ans.len()
        ));
        uas.send_to(ok.as_bytes(), from).await.unwrap();
        let (r, _) = recv_until(&uac, |m| {
            m.starts_with("SIP/2.0 200") && m.contains(&format!("CSeq: {n} INVITE"))
        })
        .await;
        assert_eq!(
            media_port(&r),
            relay_a,
            "re-INVITE keeps the caller-side relay port"
        );
        let ack = format!(
            "ACK sip:bob@127.0.0.1:{uas_sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{uac_port};rport;branch=z9hG4bKreack{n}\r\n{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=b1\r\nCall-ID: media1@test\r\n\
             CSeq: {n} ACK\r\nContent-Length: 0\r\n\r\n",
            route_lines.join("\r\n")
        );
        uac.send_to(ack.as_bytes(), ("127.0.0.1", sip))
            .await
            .unwrap();
        let _ = recv_until(&uas, |m| m.starts_with("ACK")).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10u16 {
        uac_rtp
            .send_to(&rtp(200 + i), ("127.0.0.1", relay_a))
            .await
            .unwrap();
        uas_rtp
            .send_to(&rtp(300 + i), ("127.0.0.1", relay_b))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        count_rtp(&uas_rtp, Duration::from_millis(400)).await.0,
        10,
        "media after resume (caller -> callee)"
    );
    assert_eq!(
        count_rtp(&uac_rtp, Duration::from_millis(300)).await.0,
        10,
        "media after resume (callee -> caller)"
    );

    // BYE releases the relay: later RTP is not forwarded.
    let rr: Vec<String> = resp
        .lines()
        .filter(|l| l.starts_with("Record-Route:"))
        .map(|l| l.replacen("Record-Route:", "Route:", 1))
        .collect();
    let bye = format!(
        "BYE sip:bob@127.0.0.1:{uas_sip} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{uac_port};rport;branch=z9hG4bKmediabye\r\n{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=b1\r\nCall-ID: media1@test\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        rr.join("\r\n")
    );
    uac.send_to(bye.as_bytes(), ("127.0.0.1", sip))
        .await
        .unwrap();
    let _ = recv_until(&uas, |m| m.starts_with("BYE")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5u16 {
        uac_rtp
            .send_to(&rtp(100 + i), ("127.0.0.1", relay_a))
            .await
            .unwrap();
    }
    let (after, _) = count_rtp(&uas_rtp, Duration::from_millis(300)).await;
    assert_eq!(after, 0, "no media after BYE");
    let m = common::http_get(metrics, "/metrics").await;
    assert!(m.contains("sbc_media_sessions 0"), "{m}");
    assert!(
        m.contains("sbc_media_ports{interface=\"lo\",state=\"used\"} 0"),
        "ports freed after BYE:\n{m}"
    );
    let _ = stop.send(());
    daemon.abort();
}
