//! Our DTLS endpoint against a foreign peer: the `openssl` command-line tool (Debian's
//! OpenSSL 3, `s_client`/`s_server` with `-dtls1_2 -use_srtp`) over loopback UDP.
//!
//! Checked:
//! - OpenSSL reads our certificate as ECDSA P-256 / ecdsa-with-SHA256 with the validity we
//!   asked for, and computes the same SHA-256 fingerprint we put in SDP;
//! - our server with `openssl s_client` as client, and our client with `openssl s_server` as
//!   server, for AES_CM_128_HMAC_SHA1_80 and AEAD_AES_128_GCM: both sides negotiate the
//!   profile, and the RFC 5764 keying material OpenSSL exports (`-keymatexport
//!   EXTRACTOR-dtls_srtp`) is byte for byte the client key | server key | client salt |
//!   server salt our endpoint split; the keys then key `media_engine::srtp` contexts;
//! - OpenSSL's certificate is checked against the fingerprint from "its SDP": a wrong one
//!   fails our handshake with `FingerprintMismatch` naming OpenSSL's real fingerprint, and
//!   OpenSSL is told with a bad_certificate alert.
//!
//! Needs `openssl` on PATH (Debian package `openssl`); fails with that message otherwise.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use media_engine::dtls::{
    DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsEvent, FailureReason, Fingerprint, Role,
    SrtpKeyingMaterial,
};
use media_engine::srtp::SrtpProfile;

fn openssl_ok() {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the `openssl` command is needed for this test (apt-get install openssl)"
    );
}

fn workdir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dtls-openssl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// OpenSSL's own P-256 certificate and key, and its SHA-256 fingerprint as OpenSSL prints it.
fn openssl_cert(dir: &Path) -> (PathBuf, PathBuf, Fingerprint) {
    let (cert, key) = (dir.join("peer.pem"), dir.join("peer.key"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=openssl-peer",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let fp = fingerprint_by_openssl(&cert, "PEM");
    (cert, key, fp)
}

fn fingerprint_by_openssl(cert: &Path, form: &str) -> Fingerprint {
    let out = run(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-inform",
            form,
            "-in",
        ])
        .arg(cert));
    // "sha256 Fingerprint=AB:CD:..." (OpenSSL 3) or "SHA256 Fingerprint=..." (1.1).
    let hex = out
        .trim()
        .split_once('=')
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("unexpected openssl output {out:?}"));
    Fingerprint::parse_sdp(&format!("sha-256 {hex}")).unwrap()
}

fn openssl_profile(p: SrtpProfile) -> &'static str {
    match p {
        SrtpProfile::AesCm128HmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
        SrtpProfile::AesCm128HmacSha1_32 => "SRTP_AES128_CM_SHA1_32",
        SrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
    }
}

fn exported_len(p: SrtpProfile) -> usize {
    2 * (p.master_key_len() + p.master_salt_len())
}

/// A running openssl process.
type Peer = common::LinePeer;

/// Starts openssl with its stdin held open (s_client/s_server quit at end of input).
fn spawn_openssl(cmd: &mut Command) -> Peer {
    Peer::spawn(cmd.stdin(Stdio::piped()))
}

/// Drives `ep` over `sock` until it reports an event and `done(peer)` holds, or 20 s pass.
/// `peer_addr` is where to send (None: learn it from the first datagram received).
fn drive(
    ep: &mut DtlsEndpoint,
    sock: &UdpSocket,
    mut peer_addr: Option<SocketAddr>,
    peer: &mut Peer,
    done: impl Fn(&Peer) -> bool,
) -> Option<DtlsEvent> {
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut event = None;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Some(to) = peer_addr {
            while let Some(d) = ep.poll_transmit() {
                sock.send_to(&d, to).unwrap();
            }
        }
        while let Some(e) = ep.poll_event() {
            event.get_or_insert(e);
        }
        peer.poll();
        if event.is_some() && done(peer) {
            break;
        }
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if peer_addr.is_none() {
                    peer_addr = Some(from);
                }
                if Some(from) == peer_addr {
                    ep.handle_datagram(&buf[..n], Instant::now());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
        if ep.poll_timeout().is_some_and(|t| Instant::now() >= t) {
            ep.handle_timeout(Instant::now());
        }
    }
    event
}

fn exported_hex(k: &SrtpKeyingMaterial) -> String {
    let mut v = Vec::new();
    v.extend_from_slice(&k.client_write.key);
    v.extend_from_slice(&k.server_write.key);
    v.extend_from_slice(&k.client_write.salt);
    v.extend_from_slice(&k.server_write.salt);
    v.iter().map(|b| format!("{b:02X}")).collect()
}

fn check_srtp_roundtrip(k: &SrtpKeyingMaterial) {
    // What we protect, the peer (keyed the other way round) unprotects: simulate its side
    // with the opposite-role view of the same material.
    let peer_view = SrtpKeyingMaterial {
        role: k.role.opposite(),
        ..k.clone()
    };
    let mut pkt = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe];
    pkt.extend_from_slice(&[0x55; 160]);
    let plain = pkt.clone();
    k.outbound_context().unwrap().protect_rtp(&mut pkt).unwrap();
    peer_view
        .inbound_context()
        .unwrap()
        .unprotect_rtp(&mut pkt)
        .unwrap();
    assert_eq!(pkt, plain);
}

#[test]
fn openssl_reads_our_certificate() {
    openssl_ok();
    let dir = workdir("cert");
    let now = SystemTime::now();
    let ours = DtlsCertificate::generate(now, Duration::from_secs(10 * 24 * 3600)).unwrap();
    let der = dir.join("ours.der");
    std::fs::write(&der, ours.der()).unwrap();
    assert_eq!(&fingerprint_by_openssl(&der, "DER"), ours.fingerprint());
    let text = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-inform", "DER", "-in"])
        .arg(&der));
    assert!(text.contains("id-ecPublicKey"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    assert!(
        text.contains("CN = portcullis") || text.contains("CN=portcullis"),
        "{text}"
    );
    // -checkend: still valid 9 days from now, expired 11 days from now.
    let checkend = |secs: u64| {
        Command::new("openssl")
            .args(["x509", "-noout", "-inform", "DER", "-in"])
            .arg(&der)
            .args(["-checkend", &secs.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(checkend(9 * 24 * 3600));
    assert!(!checkend(11 * 24 * 3600));
}

#[test]
fn our_server_with_openssl_client() {
    openssl_ok();
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let dir = workdir(&format!("srv-{}", profile.dtls_id()));
        let (cert, key, peer_fp) = openssl_cert(&dir);
        let ours = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut ep = DtlsEndpoint::new(
            Role::Server,
            &ours,
            [peer_fp.clone()],
            &DtlsConfig::default(),
            Instant::now(),
        )
        .unwrap();
        let mut peer = spawn_openssl(
            Command::new("openssl")
                .args(["s_client", "-dtls1_2", "-connect"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .args(["-use_srtp", openssl_profile(profile)])
                .args(["-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen"])
                .arg(exported_len(profile).to_string()),
        );
        let ev = drive(&mut ep, &sock, None, &mut peer, |p| {
            p.find("Keying material:").is_some()
        });
        let Some(DtlsEvent::Connected(k)) = ev else {
            panic!("{profile:?}: {ev:?}\nopenssl:\n{}", peer.output());
        };
        assert_eq!(k.profile, profile);
        assert_eq!(k.role, Role::Server);
        assert_eq!(
            peer.find("SRTP Extension negotiated, profile=").as_deref(),
            Some(openssl_profile(profile)),
            "{}",
            peer.output()
        );
        assert_eq!(
            peer.find("Keying material:").unwrap_or_default(),
            exported_hex(&k),
            "{profile:?}: OpenSSL's exported keying material differs\n{}",
            peer.output()
        );
        check_srtp_roundtrip(&k);
    }
}

#[test]
fn our_client_with_openssl_server() {
    openssl_ok();
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let dir = workdir(&format!("cli-{}", profile.dtls_id()));
        let (cert, key, peer_fp) = openssl_cert(&dir);
        let ours = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap();
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut peer = spawn_openssl(
            Command::new("openssl")
                .args(["s_server", "-dtls1_2", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                // Ask for our certificate (a self-signed one: OpenSSL reports the chain
                // error and carries on, as s_server does without -verify_return_error).
                .args(["-Verify", "1", "-naccept", "1"])
                .args(["-use_srtp", openssl_profile(profile)])
                .args(["-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen"])
                .arg(exported_len(profile).to_string()),
        );
        // Wait for it to listen.
        let t0 = Instant::now();
        while peer.find("ACCEPT").is_none() && peer.seen.iter().all(|l| l != "ACCEPT") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "s_server did not start:\n{}",
                peer.output()
            );
            std::thread::sleep(Duration::from_millis(20));
            peer.poll();
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let cfg = DtlsConfig {
            srtp_profiles: vec![profile],
            ..DtlsConfig::default()
        };
        let mut ep =
            DtlsEndpoint::new(Role::Client, &ours, [peer_fp], &cfg, Instant::now()).unwrap();
        let ev = drive(&mut ep, &sock, Some(server), &mut peer, |p| {
            p.find("Keying material:").is_some()
        });
        let Some(DtlsEvent::Connected(k)) = ev else {
            panic!("{profile:?}: {ev:?}\nopenssl:\n{}", peer.output());
        };
        assert_eq!(k.profile, profile);
        assert_eq!(k.role, Role::Client);
        assert_eq!(
            peer.find("SRTP Extension negotiated, profile=").as_deref(),
            Some(openssl_profile(profile)),
            "{}",
            peer.output()
        );
        assert_eq!(
            peer.find("Keying material:").unwrap_or_default(),
            exported_hex(&k),
            "{profile:?}: OpenSSL's exported keying material differs\n{}",
            peer.output()
        );
        check_srtp_roundtrip(&k);
    }
}

#[test]
fn openssl_client_with_wrong_fingerprint_is_rejected() {
    openssl_ok();
    let dir = workdir("wrongfp");
    let (cert, key, real_fp) = openssl_cert(&dir);
    let ours = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap();
    // "The SDP" announced a different certificate.
    let other = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut ep = DtlsEndpoint::new(
        Role::Server,
        &ours,
        [other.fingerprint().clone()],
        &DtlsConfig::default(),
        Instant::now(),
    )
    .unwrap();
    let mut peer = spawn_openssl(
        Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(["-use_srtp", "SRTP_AES128_CM_SHA1_80"]),
    );
    let ev = drive(&mut ep, &sock, None, &mut peer, |p| {
        p.output().contains("bad certificate")
    });
    match ev {
        Some(DtlsEvent::Failed(FailureReason::FingerprintMismatch { expected, got })) => {
            assert_eq!(expected, vec![other.fingerprint().clone()]);
            assert_eq!(got, real_fp);
        }
        other => panic!(
            "expected a fingerprint mismatch, got {other:?}\n{}",
            peer.output()
        ),
    }
    assert!(
        peer.output().contains("bad certificate"),
        "OpenSSL was not told:\n{}",
        peer.output()
    );
    assert!(peer.find("Keying material:").is_none());
}

#[test]
fn openssl_client_without_use_srtp_gets_no_keys() {
    openssl_ok();
    let dir = workdir("nosrtp");
    let (cert, key, peer_fp) = openssl_cert(&dir);
    let ours = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut ep = DtlsEndpoint::new(
        Role::Server,
        &ours,
        [peer_fp],
        &DtlsConfig::default(),
        Instant::now(),
    )
    .unwrap();
    // A plain DTLS client: no use_srtp extension, so there is nothing to key SRTP with.
    let mut peer = spawn_openssl(
        Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key),
    );
    let ev = drive(&mut ep, &sock, None, &mut peer, |_| true);
    assert_eq!(
        ev,
        Some(DtlsEvent::Failed(FailureReason::NoSrtpProfile)),
        "{}",
        peer.output()
    );
}
