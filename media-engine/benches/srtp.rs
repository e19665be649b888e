//! SRTP protect+unprotect throughput for 172-byte RTP packets (12-byte header + 160 bytes of
//! G.711 payload), per profile, and STUN binding request handling by the ICE-lite agent.
//!
//! Run: `cargo bench -p media-engine --bench srtp`. Prints criterion timings and a plain-loop
//! figure per case (pairs/s or requests/s on one core) with the issue #6 bar beside it.
//! Set `SRTP_BENCH_SECS` to change the plain-loop duration (default 2 s), `SRTP_BENCH_QUICK=1`
//! to print only the plain-loop figures.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use media_engine::ice::{IceLiteAgent, StunMessageBuilder};
use media_engine::srtp::{SrtpContext, SrtpProfile};

const PROFILES: [(SrtpProfile, f64); 3] = [
    (SrtpProfile::AesCm128HmacSha1_80, 2.0e6),
    (SrtpProfile::AesCm128HmacSha1_32, 2.0e6),
    (SrtpProfile::AeadAes128Gcm, 5.0e6),
];

fn rtp_packet(seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(172 + 16);
    p.extend_from_slice(&[0x80, 0x00]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..160).map(|i| (i * 7) as u8));
    p
}

fn contexts(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
    let key = [0x11u8; 16];
    let salt = vec![0x22u8; profile.master_salt_len()];
    let tx = SrtpContext::new(profile, &key, &salt).expect("key");
    let rx = SrtpContext::new(profile, &key, &salt).expect("key");
    (tx, rx)
}

/// One protect + one unprotect of the packet with sequence number `seq`.
fn pair(tx: &mut SrtpContext, rx: &mut SrtpContext, buf: &mut Vec<u8>, seq: u16) {
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    tx.protect_rtp(buf).expect("protect");
    rx.unprotect_rtp(buf).expect("unprotect");
}

fn bench_srtp(c: &mut Criterion) {
    for (profile, _) in PROFILES {
        let (mut tx, mut rx) = contexts(profile);
        let mut buf = rtp_packet(0);
        let mut seq = 0u16;
        c.bench_function(&format!("srtp pair 172B {}", profile.sdes_name()), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                pair(&mut tx, &mut rx, black_box(&mut buf), seq);
            })
        });
    }
}

fn binding_request(agent_ufrag: &str, pwd: &str, txid: [u8; 12]) -> Vec<u8> {
    StunMessageBuilder::binding_request(txid)
        .username(&format!("{agent_ufrag}:peer"))
        .priority(0x6e7f_00ff)
        .ice_controlling(0x0102_0304_0506_0708)
        .use_candidate()
        .build_with_integrity(pwd.as_bytes())
}

fn bench_stun(c: &mut Criterion) {
    let mut agent = IceLiteAgent::new("lite1234", "litepassword0123456789");
    let src: SocketAddr = "192.0.2.10:40000".parse().expect("addr");
    let req = binding_request("lite1234", "litepassword0123456789", [7; 12]);
    let now = Instant::now();
    c.bench_function("stun binding request -> response", |b| {
        b.iter(|| {
            let out = agent.handle_stun(now, src, black_box(&req));
            black_box(out.response);
            agent.drain_events().for_each(drop);
        })
    });
}

/// CPU time consumed by this thread (the machine may be shared: wall-clock rates then
/// understate what one core does).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `step` in batches of 1000 for `dur` of wall time; returns (per wall second, per CPU
/// second).
fn rate(dur: Duration, mut step: impl FnMut(u64)) -> (f64, f64) {
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut n: u64 = 0;
    while start.elapsed() < dur {
        for _ in 0..1000 {
            n += 1;
            step(n);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu0).as_secs_f64().max(1e-9);
    (n as f64 / wall, n as f64 / cpu)
}

fn plain_loop_figures() {
    let secs: f64 = std::env::var("SRTP_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let dur = Duration::from_secs_f64(secs);
    println!("\n== plain-loop figures (one core, {secs} s each) ==");
    println!("(rates per second of this thread's CPU time; wall-clock rate in brackets)");
    let mut ours_by_name = Vec::new();
    for (profile, bar) in PROFILES {
        let (mut tx, mut rx) = contexts(profile);
        let mut buf = rtp_packet(0);
        let (wall, cpu) = rate(dur, |n| pair(&mut tx, &mut rx, &mut buf, n as u16));
        println!(
            "srtp {:<24} protect+unprotect 172B: {:>6.2} M pairs/s [{:.2}] (bar {:.0} M, ratio {:.2})",
            profile.sdes_name(),
            cpu / 1e6,
            wall / 1e6,
            bar / 1e6,
            cpu / bar
        );
        ours_by_name.push((profile.sdes_name().to_string(), cpu));
    }
    match libsrtp_anchor(secs) {
        Some(rows) if !rows.is_empty() => {
            for (name, cpu, wall) in rows {
                let ours = ours_by_name
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, r)| *r);
                println!(
                    "libsrtp {:<21} protect+unprotect 172B: {:>6.2} M pairs/s [{:.2}]{}",
                    name,
                    cpu / 1e6,
                    wall / 1e6,
                    ours.map(|o| format!(" (ours/libsrtp {:.2})", o / cpu))
                        .unwrap_or_default()
                );
            }
        }
        _ => println!("libsrtp anchor unavailable (needs cc and libsrtp2-dev)"),
    }
    let mut agent = IceLiteAgent::new("lite1234", "litepassword0123456789");
    let src: SocketAddr = "192.0.2.10:40000".parse().expect("addr");
    let req = binding_request("lite1234", "litepassword0123456789", [7; 12]);
    let now = Instant::now();
    let (wall, cpu) = rate(dur, |_| {
        let out = agent.handle_stun(now, src, &req);
        black_box(out.response);
        agent.drain_events().for_each(drop);
    });
    println!(
        "stun binding request (USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MI, FP) -> response: {:.2} M req/s [{:.2}]",
        cpu / 1e6,
        wall / 1e6
    );
}

/// libsrtp (Debian `libsrtp2-dev`) doing the same protect+unprotect loop, as the anchor.
const LIBSRTP_BENCH_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <srtp2/srtp.h>
static double cpu(void) {
    struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static double wall(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    const char *names[3] = {"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"};
    srtp_init();
    for (int k = 0; k < 3; k++) {
        unsigned char key[30]; memset(key, 0x11, 16); memset(key + 16, 0x22, 14);
        srtp_policy_t tx, rx; memset(&tx, 0, sizeof tx);
        if (k == 0) { srtp_crypto_policy_set_rtp_default(&tx.rtp); srtp_crypto_policy_set_rtcp_default(&tx.rtcp); }
        if (k == 1) { srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&tx.rtp); srtp_crypto_policy_set_rtcp_default(&tx.rtcp); }
        if (k == 2) { srtp_crypto_policy_set_aes_gcm_128_16_auth(&tx.rtp); srtp_crypto_policy_set_aes_gcm_128_16_auth(&tx.rtcp); }
        tx.key = key; tx.window_size = 128; rx = tx;
        tx.ssrc.type = ssrc_any_outbound; rx.ssrc.type = ssrc_any_inbound;
        srtp_t stx, srx;
        if (srtp_create(&stx, &tx) || srtp_create(&srx, &rx)) { printf("%s create failed\n", names[k]); continue; }
        unsigned char pkt[256]; memset(pkt, 0, sizeof pkt); pkt[0] = 0x80; pkt[8] = 0x12; pkt[9] = 0x34;
        unsigned long n = 0; double w0 = wall(), c0 = cpu();
        while (wall() - w0 < secs) {
            for (int i = 0; i < 1000; i++) {
                n++;
                pkt[2] = (n >> 8) & 0xff; pkt[3] = n & 0xff;
                for (int j = 12; j < 172; j++) pkt[j] = (unsigned char)j;
                int len = 172;
                if (srtp_protect(stx, pkt, &len) || srtp_unprotect(srx, pkt, &len)) { printf("error\n"); return 1; }
            }
        }
        double cw = wall() - w0, cc = cpu() - c0;
        printf("%s %f %f\n", names[k], n / cc, n / cw);
        srtp_dealloc(stx); srtp_dealloc(srx);
    }
    return 0;
}
"#;

/// Compiles and runs the libsrtp loop; name -> (per CPU second, per wall second).
fn libsrtp_anchor(secs: f64) -> Option<Vec<(String, f64, f64)>> {
    let dir = std::env::temp_dir().join(format!("portcullis-srtp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("libsrtp_bench.c");
    let bin = dir.join("libsrtp_bench");
    std::fs::write(&src, LIBSRTP_BENCH_C).ok()?;
    let built = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg("-lsrtp2")
        .status()
        .ok()?
        .success();
    let out = if built {
        std::process::Command::new(&bin)
            .arg(secs.to_string())
            .output()
            .ok()
    } else {
        None
    };
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(out?.stdout).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.parse().ok()?,
                ))
            })
            .collect(),
    )
}

fn all(c: &mut Criterion) {
    if std::env::var_os("SRTP_BENCH_QUICK").is_none() {
        bench_srtp(c);
        bench_stun(c);
    }
    plain_loop_figures();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = all
}
criterion_main!(benches);
