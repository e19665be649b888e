//! The daemon's transports over real loopback sockets: CRLF keepalives, stream framing,
//! maximum message size, idle timeout, connection reuse toward a trunk, UDP, and the
//! /metrics and /healthz endpoints.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;

/// Ports for one test: distinct per test and per process so parallel runs do not collide.
fn ports(slot: u16) -> (u16, u16, u16) {
    let base = 20000 + (std::process::id() % 2000) as u16 * 10 + slot * 3;
    (base, base + 1, base + 2)
}

struct Daemon {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

async fn start(yaml: &str) -> Daemon {
    let cfg = match portcullis_config::load_str(yaml, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}"),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let r = sbc_daemon::server::run(cfg, async {
            let _ = rx.await;
        })
        .await;
        if let Err(e) = r {
            panic!("sbcd failed to start: {e}");
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    Daemon {
        stop: Some(tx),
        task,
    }
}

fn config(sip: u16, metrics: u16, extra_sip: &str, trunks: &str) -> String {
    format!(
        r#"
logging: {{ level: warn }}
metrics: {{ listen: "127.0.0.1:{metrics}" }}
sip:
  max_message_size: 4096
  {extra_sip}
interfaces:
  - name: lo
    listeners:
      - {{ name: lo-udp, proto: udp, address: 127.0.0.1, port: {sip} }}
      - {{ name: lo-tcp, proto: tcp, address: 127.0.0.1, port: {sip} }}
{trunks}
"#
    )
}

fn options(port: u16, transport: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:9;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:{port}>\r\n\
         Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match timeout(Duration::from_secs(3), s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => panic!(
                "no response within 3 s; got so far: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        };
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            if text[..end].contains("Content-Length: 0") {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn crlf_ping_is_answered_with_crlf() {
    let (sip, metrics, _) = ports(0);
    let _d = start(&config(sip, metrics, "", "")).await;
    let mut s = TcpStream::connect(("127.0.0.1", sip)).await.unwrap();
    s.write_all(b"\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 8];
    let n = timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"\r\n", "RFC 5626 4.4.1 pong");
}

#[tokio::test]
async fn fragmented_and_pipelined_messages_are_framed_by_content_length() {
    let (sip, metrics, _) = ports(1);
    let _d = start(&config(sip, metrics, "", "")).await;
    let mut s = TcpStream::connect(("127.0.0.1", sip)).await.unwrap();
    let msg = options(sip, "TCP", "frag1");
    let (a, b) = msg.split_at(40);
    s.write_all(a.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("SIP/2.0 200 OK\r\n"), "{r}");
    assert!(r.contains("Call-ID: frag1@test"));
    // Two messages in one write: two responses on the same connection.
    let two = format!(
        "{}{}",
        options(sip, "TCP", "pipe1"),
        options(sip, "TCP", "pipe2")
    );
    s.write_all(two.as_bytes()).await.unwrap();
    let mut got = String::new();
    while !(got.contains("pipe1@test") && got.contains("pipe2@test")) {
        let mut chunk = [0u8; 4096];
        let n = timeout(Duration::from_secs(3), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test]
async fn oversize_stream_message_closes_the_connection_and_is_counted() {
    let (sip, metrics, _) = ports(2);
    let _d = start(&config(sip, metrics, "", "")).await;
    let mut s = TcpStream::connect(("127.0.0.1", sip)).await.unwrap();
    let big = options(sip, "TCP", "big").replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nX-Pad: {}\r\n", "p".repeat(8000)),
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "connection must be closed after an oversize message");
    let body = common::http_get(metrics, "/metrics").await;
    assert!(
        body.contains("sbc_sip_parse_errors_total{interface=\"lo\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let (sip, metrics, _) = ports(3);
    let _d = start(&config(sip, metrics, "tcp_idle_timeout_s: 1", "")).await;
    let mut s = TcpStream::connect(("127.0.0.1", sip)).await.unwrap();
    let mut buf = [0u8; 8];
    let n = timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("idle timeout did not close the connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn udp_options_to_the_sbc_is_answered() {
    let (sip, metrics, _) = ports(4);
    let _d = start(&config(sip, metrics, "", "")).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let msg =
        options(sip, "UDP", "udp1").replace("127.0.0.1:9;", &format!("127.0.0.1:{port};rport;"));
    sock.send_to(msg.as_bytes(), ("127.0.0.1", sip))
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], sip)));
    assert!(r.starts_with("SIP/2.0 200 OK"), "{r}");
    assert!(r.contains(&format!("rport={port}")), "{r}");
}

#[tokio::test]
async fn requests_to_a_tcp_trunk_reuse_one_connection() {
    let (sip, metrics, trunk_port) = ports(5);
    let trunk = TcpListener::bind(("127.0.0.1", trunk_port)).await.unwrap();
    let trunks = format!(
        "trunks:\n  - {{ name: t1, host: 127.0.0.1, port: {trunk_port}, transport: tcp, group: g, interface: lo }}\nroutes:\n  - {{ name: all, match: {{ }}, group: g }}\n"
    );
    let _d = start(&config(sip, metrics, "", &trunks)).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cport = client.local_addr().unwrap().port();
    let invite = |n: u32| {
        format!(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};rport;branch=z9hG4bKreuse{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag={n}\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: reuse{n}@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    client
        .send_to(invite(1).as_bytes(), ("127.0.0.1", sip))
        .await
        .unwrap();
    let (mut conn, _) = timeout(Duration::from_secs(3), trunk.accept())
        .await
        .unwrap()
        .unwrap();
    let first = read_until_messages(&mut conn, 1).await;
    assert!(first.contains("INVITE sip:bob@example.com"), "{first}");
    assert!(
        first.contains("Via: SIP/2.0/TCP 127.0.0.1:"),
        "our Via names TCP: {first}"
    );
    client
        .send_to(invite(2).as_bytes(), ("127.0.0.1", sip))
        .await
        .unwrap();
    let second = read_until_messages(&mut conn, 1).await;
    assert!(
        second.contains("reuse2@test"),
        "second INVITE over the same connection: {second}"
    );
    // No second connection was opened.
    assert!(timeout(Duration::from_millis(300), trunk.accept())
        .await
        .is_err());
}

async fn read_until_messages(conn: &mut TcpStream, n: usize) -> String {
    let mut got = String::new();
    while got.matches("\r\n\r\n").count() < n {
        let mut chunk = [0u8; 4096];
        let k = timeout(Duration::from_secs(3), conn.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0);
        got.push_str(&String::from_utf8_lossy(&chunk[..k]));
    }
    got
}

#[tokio::test]
async fn metrics_and_healthz_are_served() {
    let (sip, metrics, _) = ports(6);
    let _d = start(&config(sip, metrics, "", "")).await;
    let h = common::http_get(metrics, "/healthz").await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    let m = common::http_get(metrics, "/metrics").await;
    for family in [
        "sbc_sip_requests_total",
        "sbc_sip_responses_total",
        "sbc_sip_transactions",
        "sbc_sip_parse_errors_total",
        "sbc_build_info",
    ] {
        assert!(m.contains(family), "missing {family} in {m}");
    }
}
