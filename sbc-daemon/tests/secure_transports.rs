//! SIP over TLS and over WebSocket (RFC 7118) against real client stacks (rustls,
//! tungstenite) on loopback: requests answered over the same connection, the `sip`
//! subprotocol enforced, a registered WebSocket client reached over its connection whatever
//! its Contact says (S-01), and its registration removed when the connection closes (S-02).

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// SIP and metrics ports of test `slot`, per process, below the ephemeral range (32768+) so
/// that no connection's or `bind(0)`'s port can take them. UDP listeners use SIP + 100.
fn ports(slot: u16) -> (u16, u16) {
    let base = 20000 + (std::process::id() % 1000) as u16 * 10 + slot * 2;
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

    let mut tls = tls_to_sbc(sip, &[cert.cert.der().clone()]).await;
    tls.write_all(options("TLS", "tls1").as_bytes())
        .await
        .unwrap();
    let got = read_message(&mut tls).await;
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

/// Reads one SIP message (headers, no body) from a stream.
async fn read_message<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.contains("\r\n\r\n") {
        let n = timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("message in time")
            .expect("read");
        assert!(n > 0, "connection closed before a whole message: {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    got
}

/// The first final response to `call_id` the UDP caller gets.
async fn final_response(caller: &UdpSocket, call_id: &str) -> String {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Ok((n, _))) =
            timeout(Duration::from_millis(500), caller.recv_from(&mut buf)).await
        {
            let r = String::from_utf8_lossy(&buf[..n]).to_string();
            if r.contains(call_id) && r.starts_with("SIP/2.0 ") && !r.starts_with("SIP/2.0 1") {
                return r;
            }
        }
    }
    panic!("no final response to {call_id}");
}

/// A trunk with `transport: tls`: sbcd opens the TLS connection itself, checks the trunk's
/// certificate against the trunk's `tls.ca` and name, and presents its TLS listener's
/// certificate when the trunk asks (mutual TLS). The trunk here is a rustls server that
/// requires that client certificate. A trunk whose certificate is not valid for the
/// configured name, or not signed by its CA, gets no request: the caller gets 503 and
/// `sbc_sip_tls_client_failures_total{trunk}` counts the failed handshakes.
#[tokio::test]
async fn tls_trunk_is_verified_and_gets_the_listener_certificate() {
    let (sip, metrics) = ports(2);
    let udp_port = sip + 100;
    let trunk_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let trunk_port = trunk_listener.local_addr().unwrap().port();
    trunk_listener.set_nonblocking(true).unwrap();
    let trunk_listener = tokio::net::TcpListener::from_std(trunk_listener).unwrap();
    let dir =
        std::env::temp_dir().join(format!("portcullis-tlstrunk-{}-{sip}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sbc = rcgen::generate_simple_self_signed(vec!["sbc.test".to_string()]).unwrap();
    let trunk = rcgen::generate_simple_self_signed(vec!["trunk.test".to_string()]).unwrap();
    for (name, pem) in [
        ("sbc.pem", sbc.cert.pem()),
        ("sbc.key", sbc.signing_key.serialize_pem()),
        ("trunk.pem", trunk.cert.pem()),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let p = |f: &str| dir.join(f).display().to_string();
    let yaml = format!(
        "logging: {{ level: warn }}\nmetrics: {{ listen: \"127.0.0.1:{metrics}\" }}\n\
         interfaces:\n  - name: lo\n    listeners:\n\
         \x20     - {{ name: lo-udp, proto: udp, address: 127.0.0.1, port: {udp_port} }}\n\
         \x20     - {{ name: lo-tls, proto: tls, address: 127.0.0.1, port: {sip}, tls: {{ certificate: {}, private_key: {} }} }}\n\
         trunks:\n\
         \x20 - {{ name: good, host: 127.0.0.1, port: {trunk_port}, transport: tls, tls: {{ ca: {}, server_name: trunk.test }}, group: good, interface: lo }}\n\
         \x20 - {{ name: wrongname, host: 127.0.0.1, port: {trunk_port}, transport: tls, tls: {{ ca: {}, server_name: other.test }}, group: wrongname, interface: lo }}\n\
         \x20 - {{ name: wrongca, host: 127.0.0.1, port: {trunk_port}, transport: tls, tls: {{ ca: {}, server_name: trunk.test }}, group: wrongca, interface: lo }}\n\
         routes:\n\
         \x20 - {{ name: r1, match: {{ user_prefix: \"1\" }}, group: good }}\n\
         \x20 - {{ name: r2, match: {{ user_prefix: \"2\" }}, group: wrongname }}\n\
         \x20 - {{ name: r3, match: {{ user_prefix: \"3\" }}, group: wrongca }}\n",
        p("sbc.pem"),
        p("sbc.key"),
        p("trunk.pem"),
        p("trunk.pem"),
        p("sbc.pem"),
    );
    let _d = start(&yaml, Some(dir)).await;

    // The trunk: TLS with its certificate, requiring a client certificate signed by (here:
    // equal to) the SBC's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client_roots = rustls::RootCertStore::empty();
    client_roots.add(sbc.cert.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(client_roots))
        .build()
        .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(trunk.signing_key.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![trunk.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let handshakes = Arc::new(std::sync::Mutex::new(Vec::<Result<(), String>>::new()));
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let seen = handshakes.clone();
    let trunk_task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = trunk_listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            let got_tx = got_tx.clone();
            tokio::spawn(async move {
                let mut tls = match timeout(Duration::from_secs(5), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        seen.lock().unwrap().push(Err(e.to_string()));
                        return;
                    }
                    Err(_) => {
                        seen.lock().unwrap().push(Err("timeout".into()));
                        return;
                    }
                };
                seen.lock().unwrap().push(Ok(()));
                let client_cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref().to_vec())
                    .unwrap_or_default();
                // The INVITE; answered 486 over the same connection.
                let invite = read_message(&mut tls).await;
                let vias: Vec<&str> = invite.lines().filter(|l| l.starts_with("Via:")).collect();
                let header = |n: &str| {
                    invite
                        .lines()
                        .find(|l| l.starts_with(n))
                        .unwrap_or_default()
                        .to_string()
                };
                let resp = format!(
                    "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{};tag=trunk\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
                    vias.join("\r\n"),
                    header("From:"),
                    header("To:"),
                    header("Call-ID:"),
                    header("CSeq:")
                );
                tls.write_all(resp.as_bytes()).await.unwrap();
                let _ = got_tx.send((invite, client_cert));
                // Keep the connection for sbcd's ACK.
                let mut buf = [0u8; 2048];
                let _ = timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
            });
        }
    });

    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let cport = caller.local_addr().unwrap().port();
    let invite = |user: &str, id: &str| {
        format!(
            "INVITE sip:{user}@127.0.0.1:{udp_port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{cport};rport;branch=z9hG4bK{id}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=c1\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: {id}@test\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{cport}>\r\nContent-Length: 0\r\n\r\n"
        )
    };

    // Verified trunk: the INVITE goes over TLS with our listener's certificate, the
    // trunk's 486 comes back to the caller.
    caller
        .send_to(invite("1001", "tlsok").as_bytes(), ("127.0.0.1", udp_port))
        .await
        .unwrap();
    let (got, client_cert) = timeout(Duration::from_secs(8), got_rx.recv())
        .await
        .expect("INVITE at the TLS trunk in time")
        .expect("trunk task alive");
    assert!(got.starts_with("INVITE sip:1001@"), "{got}");
    assert!(
        got.lines()
            .find(|l| l.starts_with("Via:"))
            .is_some_and(|v| v.starts_with("Via: SIP/2.0/TLS 127.0.0.1:")),
        "sbcd's Via names TLS and its TLS listener: {got}"
    );
    assert_eq!(
        client_cert,
        sbc.cert.der().to_vec(),
        "sbcd presents its TLS listener's certificate"
    );
    let r = final_response(&caller, "tlsok@test").await;
    assert!(r.starts_with("SIP/2.0 486"), "{r}");

    // A certificate not valid for the configured name, and one not signed by the
    // configured CA: no request reaches the trunk, the caller gets 503.
    for (user, id) in [("2002", "tlsname"), ("3003", "tlsca")] {
        caller
            .send_to(invite(user, id).as_bytes(), ("127.0.0.1", udp_port))
            .await
            .unwrap();
        let r = final_response(&caller, &format!("{id}@test")).await;
        assert!(r.starts_with("SIP/2.0 503"), "{id}: {r}");
    }
    assert!(
        timeout(Duration::from_millis(300), got_rx.recv())
            .await
            .is_err(),
        "no INVITE reached the trunk over an unverified connection"
    );
    let outcomes = handshakes.lock().unwrap().clone();
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "only the verified connection completes its handshake: {outcomes:?}"
    );

    // The failures are counted per trunk.
    let body = common::http_get(metrics, "/metrics").await;
    for t in ["wrongname", "wrongca"] {
        assert!(
            body.contains(&format!(
                "sbc_sip_tls_client_failures_total{{trunk=\"{t}\"}} 1"
            )),
            "failure of trunk {t} counted: {}",
            body.lines()
                .filter(|l| l.contains("tls_client"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    trunk_task.abort();
}

/// A TLS connection to 127.0.0.1:`port`, trusting `roots`, for the name `sbc.test`.
async fn tls_to_sbc(
    port: u16,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("sbc.test").unwrap();
    timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// The certificate the TLS server at 127.0.0.1:`port` presents (see [`tls_to_sbc`]).
async fn presented_certificate(
    port: u16,
    roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Vec<u8> {
    tls_to_sbc(port, roots)
        .await
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}

/// `systemctl reload sbcd` (SIGHUP to the real sbcd binary) puts a renewed listener
/// certificate in use for new connections without a restart; a file that cannot be used
/// leaves the previous certificate in place and sbcd running.
#[tokio::test]
async fn sighup_reloads_the_listener_certificate() {
    let (sip, metrics) = ports(3);
    let dir = std::env::temp_dir().join(format!("portcullis-reload-{}-{sip}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = rcgen::generate_simple_self_signed(vec!["sbc.test".to_string()]).unwrap();
    // The renewed certificate expires 2031-01-01T00:00:00Z = 1924992000.
    let renewed = {
        let mut params = rcgen::CertificateParams::new(vec!["sbc.test".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&signing_key).unwrap();
        rcgen::CertifiedKey { cert, signing_key }
    };
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, first.cert.pem()).unwrap();
    std::fs::write(&key, first.signing_key.serialize_pem()).unwrap();
    let yaml = dir.join("sbc.yaml");
    std::fs::write(
        &yaml,
        format!(
            "logging: {{ level: info }}\nmetrics: {{ listen: \"127.0.0.1:{metrics}\" }}\ninterfaces:\n  - name: lo\n    listeners:\n      - {{ name: lo-tls, proto: tls, address: 127.0.0.1, port: {sip}, tls: {{ certificate: {}, private_key: {} }} }}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let log = dir.join("sbcd.log");
    /// Ends the sbcd this test started (by its PID), whatever happens.
    struct Started(std::process::Child);
    impl Drop for Started {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sbcd = Started(
        std::process::Command::new(env!("CARGO_BIN_EXE_sbcd"))
            .arg("--config")
            .arg(&yaml)
            .stdout(std::fs::File::create(dir.join("sbcd.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sbcd"),
    );
    let pid = sbcd.0.id().to_string();
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP {pid}");
    };
    let result = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", sip)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sbcd listening in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let roots = [first.cert.der().clone(), renewed.cert.der().clone()];
        assert_eq!(
            presented_certificate(sip, &roots).await,
            first.cert.der().to_vec()
        );

        // Renewed in place (as certbot does), then SIGHUP.
        std::fs::write(&cert, renewed.cert.pem()).unwrap();
        std::fs::write(&key, renewed.signing_key.serialize_pem()).unwrap();
        hup();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while presented_certificate(sip, &roots).await != renewed.cert.der().to_vec() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "renewed certificate in use after SIGHUP"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let expiry = "sbc_tls_certificate_expiry_timestamp_seconds{listener=\"lo-tls\"} 1924992000";
        assert!(
            common::http_get(metrics, "/metrics").await.contains(expiry),
            "the expiry metric follows the reload"
        );

        // A certificate that does not fit the key: refused, the renewed one stays.
        std::fs::write(&cert, first.cert.pem()).unwrap();
        hup();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("TLS certificate not reloaded")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the refusal is logged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            presented_certificate(sip, &roots).await,
            renewed.cert.der().to_vec()
        );
        assert!(common::http_get(metrics, "/metrics").await.contains(expiry));
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), result).await;
    let alive = sbcd.0.try_wait().ok().flatten().is_none();
    drop(sbcd);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(outcome.is_ok(), "timed out; sbcd log:\n{text}");
    assert!(alive, "sbcd kept running through the reloads; log:\n{text}");
}
