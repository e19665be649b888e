//! DTLS-SRTP handshake cost: full handshakes between two of our endpoints in memory, on one
//! thread, with the time spent inside each side's calls measured separately, so the figure
//! per role is "handshakes per second per core" for an SBC playing that role.
//!
//! Run on demand (not in CI):
//!   cargo run --release -p media-engine --example dtls_handshake_bench [-- HANDSHAKES]
//!
//! Anchor: the public-key work alone, as OpenSSL 3 does it (`openssl speed ecdsap256
//! ecdhp256`, when `openssl` is installed): a server handshake with client authentication
//! needs one ECDSA P-256 signature, one verification and two ECDH operations (key generation
//! and derivation), so that sum is a floor no DTLS stack can beat on this machine.
//!
//! Each handshake: new endpoint on both sides (certificates are generated once, as the SBC
//! does), ClientHello / HelloVerifyRequest / ClientHello+cookie / server flight /
//! client flight / server Finished, fingerprint check on both sides, SRTP key export.

use std::time::{Duration, Instant, SystemTime};

use media_engine::dtls::{DtlsCertificate, DtlsConfig, DtlsEndpoint, DtlsEvent, Role};

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed();
    r
}

/// OpenSSL's P-256 figures: (sign/s, verify/s, ecdh op/s).
fn openssl_p256() -> Option<(f64, f64, f64)> {
    let out = std::process::Command::new("openssl")
        .args(["speed", "-seconds", "2", "ecdsap256", "ecdhp256"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let nums = |needle: &str| -> Option<Vec<f64>> {
        let line = text.lines().find(|l| l.contains(needle))?;
        Some(
            line.split_whitespace()
                .filter_map(|w| w.parse::<f64>().ok())
                .collect(),
        )
    };
    // " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  59043.9  19827.0"
    let e = nums("ecdsa (nistp256)")?;
    let d = nums("ecdh (nistp256)")?;
    Some((*e.get(e.len().checked_sub(2)?)?, *e.last()?, *d.last()?))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let t = Instant::now();
    let certs = 50;
    for _ in 0..certs {
        let _ = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600));
    }
    let cert_gen = t.elapsed() / certs;

    let ca = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("certificate: {e}"));
    let cb = DtlsCertificate::generate(SystemTime::now(), Duration::from_secs(3600))
        .unwrap_or_else(|e| panic!("certificate: {e}"));
    let cfg = DtlsConfig::default();
    let (mut client_time, mut server_time) = (Duration::ZERO, Duration::ZERO);
    let mut datagrams = 0usize;
    let wall = Instant::now();
    for i in 0..n {
        let now = Instant::now();
        let mut c = timed(&mut client_time, || {
            DtlsEndpoint::new(Role::Client, &ca, [cb.fingerprint().clone()], &cfg, now)
        })
        .unwrap_or_else(|e| panic!("client: {e}"));
        let mut s = timed(&mut server_time, || {
            DtlsEndpoint::new(Role::Server, &cb, [ca.fingerprint().clone()], &cfg, now)
        })
        .unwrap_or_else(|e| panic!("server: {e}"));
        let (mut c_ok, mut s_ok) = (false, false);
        for _ in 0..50 {
            let mut moved = false;
            while let Some(d) = timed(&mut client_time, || c.poll_transmit()) {
                moved = true;
                datagrams += 1;
                timed(&mut server_time, || s.handle_datagram(&d, now));
            }
            while let Some(d) = timed(&mut server_time, || s.poll_transmit()) {
                moved = true;
                datagrams += 1;
                timed(&mut client_time, || c.handle_datagram(&d, now));
            }
            while let Some(e) = c.poll_event() {
                c_ok |= matches!(e, DtlsEvent::Connected(_));
            }
            while let Some(e) = s.poll_event() {
                s_ok |= matches!(e, DtlsEvent::Connected(_));
            }
            if !moved {
                break;
            }
        }
        assert!(c_ok && s_ok, "handshake {i} did not complete");
    }
    let wall = wall.elapsed();
    let per = |d: Duration| d.as_secs_f64() / n as f64;
    println!("DTLS-SRTP handshakes (rtc-dtls, ECDSA P-256, ECDHE, EMS, use_srtp), {n} runs:");
    println!(
        "  certificate generation:        {:>8.1} us each",
        cert_gen.as_secs_f64() * 1e6
    );
    println!(
        "  server side:                   {:>8.1} us/handshake -> {:>7.0} handshakes/s per core",
        per(server_time) * 1e6,
        1.0 / per(server_time)
    );
    println!(
        "  client side:                   {:>8.1} us/handshake -> {:>7.0} handshakes/s per core",
        per(client_time) * 1e6,
        1.0 / per(client_time)
    );
    println!(
        "  both sides on one core:        {:>8.1} us/handshake -> {:>7.0} handshakes/s",
        per(wall) * 1e6,
        n as f64 / wall.as_secs_f64()
    );
    println!(
        "  datagrams per handshake:       {:>8.1}",
        datagrams as f64 / n as f64
    );
    match openssl_p256() {
        Some((sign, verify, ecdh)) => {
            let floor = 1.0 / sign + 1.0 / verify + 2.0 / ecdh;
            println!(
                "  anchor, OpenSSL P-256 sign+verify+2 ECDH only: {:>6.1} us -> {:>7.0}/s per core; \
                 server side costs {:.2}x that",
                floor * 1e6,
                1.0 / floor,
                per(server_time) / floor
            );
        }
        None => println!("  anchor: `openssl speed` not available"),
    }
}
