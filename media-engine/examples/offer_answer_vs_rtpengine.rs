//! On-demand benchmark (not run in CI): SDP offer + answer + delete per second of the
//! media engine (in-process, as sbcd calls it) beside Debian's rtpengine doing the same
//! offer/answer/delete over its NG port in the same run, with the same desk-phone SDPs.
//!
//! ```sh
//! apt-get install rtpengine-daemon   # the anchor; without it only our figure is printed
//! cargo run -p media-engine --release --example offer_answer_vs_rtpengine -- \
//!     [--calls 20000] [--clients 4] [--rtpengine-threads 2]
//! ```
//!
//! rtpengine is driven by `--clients` threads, each with its own socket and one request
//! outstanding, so its figure is throughput with concurrency, not one round trip's
//! latency; its CPU per call (whole process) is printed too.

// Shared with the relay benchmarks, which use more of it.
#[allow(dead_code)]
#[path = "common/ng.rs"]
mod ng;

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use media_engine::{AnswerRequest, Flags, MediaEngine, MediaInterface, OfferRequest};

const OFFER: &str = include_str!("../tests/fixtures/desk-phone.offer.in.sdp");
const ANSWER: &str = include_str!("../tests/fixtures/desk-phone.answer.in.sdp");

struct Args {
    calls: usize,
    clients: usize,
    rtpengine_threads: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        calls: 20_000,
        clients: 4,
        rtpengine_threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        let n: usize = v.parse().unwrap_or_else(|_| {
            eprintln!("{k} needs a number");
            std::process::exit(2)
        });
        match k.as_str() {
            "--calls" => a.calls = n.max(1),
            "--clients" => a.clients = n.max(1),
            "--rtpengine-threads" => a.rtpengine_threads = n.max(1),
            _ => {
                eprintln!("usage: [--calls N] [--clients N] [--rtpengine-threads N]");
                std::process::exit(2)
            }
        }
    }
    a
}

fn engine() -> MediaEngine {
    let iface = |name: &str, ip: &str| MediaInterface {
        name: name.into(),
        address: ip.parse().expect("literal"),
        advertised_address: None,
        port_min: 20000,
        port_max: 59999,
    };
    MediaEngine::new(vec![
        iface("outside", "192.0.2.1"),
        iface("inside", "10.0.0.1"),
    ])
    .expect("engine")
}

fn ours(calls: usize) -> f64 {
    let mut e = engine();
    let ids: Vec<String> = (0..calls).map(|i| format!("{i:08x}-oa@bench")).collect();
    let run = |e: &mut MediaEngine, id: &str| {
        let o = e.offer(&OfferRequest {
            call_id: id,
            from_tag: "as8f7a6s",
            to_tag: None,
            via_branch: Some("z9hG4bK-1"),
            sdp: OFFER.as_bytes(),
            ingress_interface: "outside",
            egress_interface: "inside",
            flags: Flags::default(),
        });
        let a = e.answer(&AnswerRequest {
            call_id: id,
            from_tag: "as8f7a6s",
            to_tag: "9fxced76sl",
            via_branch: Some("z9hG4bK-1"),
            sdp: ANSWER.as_bytes(),
            flags: Flags::default(),
        });
        let ok = o.is_ok() && a.is_ok();
        e.delete(id, "as8f7a6s", Some("9fxced76sl"));
        black_box(ok)
    };
    for id in ids.iter().take(1000) {
        run(&mut e, id);
    }
    let start = Instant::now();
    let mut ok = 0usize;
    for id in &ids {
        ok += usize::from(run(&mut e, id));
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ok, calls, "every offer/answer succeeded");
    let rate = calls as f64 / secs;
    println!(
        "media-engine (in-process, 1 thread): {rate:.0} calls/s offer+answer+delete ({:.2} us per call)",
        secs / calls as f64 * 1e6
    );
    rate
}

fn theirs(args: &Args) -> Option<f64> {
    let r = ng::Rtpengine::start(30000, 60000, args.rtpengine_threads)?;
    let per_client = args.calls / args.clients;
    let cpu0 = ng::pid_cpu_ns(r.pid());
    let start = Instant::now();
    let handles: Vec<_> = (0..args.clients)
        .map(|c| {
            let to = r.ng;
            std::thread::spawn(move || -> (usize, usize) {
                let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
                    return (0, per_client);
                };
                sock.set_read_timeout(Some(Duration::from_millis(500))).ok();
                let mut ok = 0;
                let mut failed = 0;
                let mut cookie = (c as u64) << 32;
                for i in 0..per_client {
                    let call = format!("{c}-{i}-oa@bench");
                    cookie += 3;
                    let offer = ng::request(
                        &sock,
                        to,
                        cookie,
                        &[
                            ("command", "offer"),
                            ("call-id", &call),
                            ("from-tag", "as8f7a6s"),
                            ("sdp", OFFER),
                        ],
                    );
                    let answer = ng::request(
                        &sock,
                        to,
                        cookie + 1,
                        &[
                            ("command", "answer"),
                            ("call-id", &call),
                            ("from-tag", "as8f7a6s"),
                            ("to-tag", "9fxced76sl"),
                            ("sdp", ANSWER),
                        ],
                    );
                    let delete = ng::request(
                        &sock,
                        to,
                        cookie + 2,
                        &[
                            ("command", "delete"),
                            ("call-id", &call),
                            ("from-tag", "as8f7a6s"),
                        ],
                    );
                    let good = |r: &Option<Vec<u8>>| {
                        r.as_ref()
                            .and_then(|b| ng::bencode_get(b, "result"))
                            .is_some_and(|v| v == "ok")
                    };
                    if good(&offer) && good(&answer) && good(&delete) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        let (o, f) = h.join().unwrap_or((0, per_client));
        ok += o;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (ng::pid_cpu_ns(r.pid()) - cpu0) as f64 / 1e9;
    let rate = ok as f64 / secs;
    println!(
        "rtpengine (NG over UDP, {} clients, {} threads): {rate:.0} calls/s offer+answer+delete, {failed} failed, {:.1} us CPU per call ({:.0}% of a core)",
        args.clients,
        args.rtpengine_threads,
        cpu / ok.max(1) as f64 * 1e6,
        cpu / secs * 100.0
    );
    Some(rate)
}

fn main() {
    let args = parse_args();
    let a = ours(args.calls);
    if let Some(b) = theirs(&args) {
        println!(
            "ratio media-engine / rtpengine: {:.1}x (goal >= 5x)",
            a / b.max(1e-9)
        );
    }
}
