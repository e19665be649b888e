//! SIP over TLS and over WebSocket (RFC 7118) against real client stacks (rustls,
//! tungstenite) on loopback: requests answered over the same connection, the `sip`
//! subprotocol enforced, a registered WebSocket client reached over its connection whatever
//! its Contact says (S-01), and its registration removed when the connection closes (S-02).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn ports(slot: u16) -> (u16, u16) {
    let base = 24000 + (std::process::id() % 1500) as u16 * 10 + slot * 2;
    (base, base + 1)
}

struct Daemon {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

async fn start(yaml: &str, dir: Option<std::path::PathBuf>) -> Daemon {
    let cfg = match portcullis_config::load_str(yaml, "test.yaml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}"),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = sbc_daemon::server::run(cfg, async {
            let _ = rx.await;
        })
        .await
        {
            panic!("sbcd failed to start: {e}");
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    Daemon {
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

fn options(transport: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} client.invalid;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@client.invalid>;tag=1\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn sip_over_tls_is_answered_on_the_same_connection() {
    let (sip, metrics) = ports(0);
    let dir = std::env::temp_dir().join(format!("portcullis-tls-{}-{sip}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["sbc.test".to_string()]).unwrap();
    let cert_pem = cert.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        "logging: {{ level: warn }}\nmetrics: {{ listen: \"127.0.0.1:{metrics}\" }}\ninterfaces:\n  - name: lo\n    listeners:\n      - {{ name: lo-tls, proto: tls, address: 127.0.0.1, port: {sip}, tls: {{ certificate: {}, private_key: {} }} }}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let _d = start(&yaml, Some(dir)).await;

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(("127.0.0.1", sip)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("sbc.test").unwrap();
    let mut tls = timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    tls.write_all(options("TLS", "tls1").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.contains("\r\n\r\n") {
        let n = timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "TLS connection closed");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.starts_with("SIP/2.0 200 OK"), "{got}");
    assert!(got.contains("Call-ID: tls1@test"));
}

async fn ws_connect(
    port: u16,
    protocol: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>, String>
{
    let mut req = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    match timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(req),
    )
    .await
    {
        Ok(Ok((ws, resp))) => {
            if protocol.is_some() {
                assert_eq!(
                    resp.headers()
                        .get("Sec-WebSocket-Protocol")
                        .map(|v| v.to_str().unwrap()),
                    Some("sip")
                );
            }
            Ok(ws)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

async fn ws_recv(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) -> String {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Binary(b)))) => return String::from_utf8_lossy(&b).to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no WebSocket message: {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_requires_sip_subprotocol_and_reaches_registered_browser_over_its_connection() {
    let (sip, metrics) = ports(1);
    let udp_port = sip + 100;
    let yaml = format!(
        "logging: {{ level: warn }}\nmetrics: {{ listen: \"127.0.0.1:{metrics}\" }}\ninterfaces:\n  - name: lo\n    listeners:\n      - {{ name: lo-ws, proto: ws, address: 127.0.0.1, port: {sip} }}\n      - {{ name: lo-udp, proto: udp, address: 127.0.0.1, port: {udp_port} }}\n"
    );
    let _d = start(&yaml, None).await;
    assert!(
        ws_connect(sip, None).await.is_err(),
        "a client without the sip subprotocol is refused"
    );
    let mut ws = ws_connect(sip, Some("sip")).await.unwrap();
    ws.send(Message::text(options("WS", "ws1"))).await.unwrap();
    let r = ws_recv(&mut ws).await;
    assert!(
        r.starts_with("SIP/2.0 200 OK") && r.contains("Call-ID: ws1@test"),
        "{r}"
    );

    // A browser registers with an unreachable .invalid Contact (JsSIP style).
    let register = "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKwsreg\r\n\
        Max-Forwards: 70\r\nFrom: <sip:web@127.0.0.1>;tag=w1\r\nTo: <sip:web@127.0.0.1>\r\nCall-ID: wsreg@test\r\n\
        CSeq: 1 REGISTER\r\nContact: <sip:x7k2@df7jal23ls0d.invalid;transport=ws>;expires=300\r\nContent-Length: 0\r\n\r\n";
    ws.send(Message::text(register)).await.unwrap();
    let r = ws_recv(&mut ws).await;
    assert!(r.starts_with("SIP/2.0 200 OK"), "{r}");
    // A UDP caller invites the browser's AOR: the INVITE arrives on the WebSocket (S-01).
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cport = caller.local_addr().unwrap().port();
    let invite = format!(
        "INVITE sip:web@127.0.0.1:{udp_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};rport;branch=z9hG4bKwsinv\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:web@127.0.0.1>\r\nCall-ID: wsinv@test\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{cport}>\r\nContent-Length: 0\r\n\r\n"
    );
    caller
        .send_to(invite.as_bytes(), ("127.0.0.1", udp_port))
        .await
        .unwrap();
    let got = ws_recv(&mut ws).await;
    assert!(
        got.starts_with("INVITE sip:x7k2@df7jal23ls0d.invalid;transport=ws SIP/2.0"),
        "{got}"
    );
    assert!(got.contains("Via: SIP/2.0/WS 127.0.0.1:"), "{got}");
    // The browser closes its connection: the registration goes with it, the next call is
    // answered at once instead of waiting for a timeout.
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let invite2 = invite
        .replace("z9hG4bKwsinv", "z9hG4bKwsinv2")
        .replace("wsinv@test", "wsinv2@test");
    caller
        .send_to(invite2.as_bytes(), ("127.0.0.1", udp_port))
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut finals = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while finals.is_empty() && tokio::time::Instant::now() < deadline {
        if let Ok(Ok((n, _))) =
            timeout(Duration::from_millis(500), caller.recv_from(&mut buf)).await
        {
            let r = String::from_utf8_lossy(&buf[..n]).to_string();
            if r.contains("wsinv2@test") && !r.starts_with("SIP/2.0 100") {
                finals.push(r);
            }
        }
    }
    assert!(
        finals.first().is_some_and(|r| r.starts_with("SIP/2.0 404")),
        "{finals:?}"
    );
}
