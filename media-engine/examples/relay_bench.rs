//! On-demand benchmark of the userspace relay on loopback (not run in CI).
//!
//! N bidirectional G.711-like streams (172-byte RTP, `--pps` packets/s each
//! way), relayed for `--seconds`; prints packets/s relayed, loss, added
//! latency p50/p99/max, and the relay's CPU (user+system time of the relay
//! worker threads and any io_uring kernel workers from /proc/self/task/*/stat, which includes the loopback
//! delivery softirq run in their context) per packet. With `--rtpengine`
//! (Debian `rtpengine` installed) the same load is sent through an rtpengine
//! daemon started here and driven over its NG protocol (bencode over UDP),
//! and the ratio is printed (rtpengine CPU = its whole process).
//!
//! `--srtp` bridges SDES-SRTP (AES_CM_128_HMAC_SHA1_80, RFC 4568) on side a to plain RTP on
//! side b: our relay with a secure leg per stream, rtpengine with an RTP/SAVP offer carrying
//! a=crypto and `transport-protocol: RTP/AVP` toward b. The generator protects what side a
//! sends and the receiver unprotects what side a gets (their cost is not the relay's).
//!
//! ```sh
//! cargo run -p media-engine --release --example relay_bench -- \
//!     --streams 1000 --pps 50 --seconds 10 [--workers 1] [--rtpengine] \
//!     [--rtpengine-threads N]   # default: as many as --workers
//!     [--srtp]                  # SDES-SRTP on side a, plain RTP on side b
//!     [--io auto|io_uring|epoll] [--coalesce-us N]   # relay worker I/O (default auto)
//!     [--rounds N]              # alternate ours / rtpengine N times, print the median ratio
//!     [--no-connect]            # no connected twin sockets for latched legs (A/B)
//!     [--pin]                   # relay on the last CPU, load on the others (common/pin.rs)
//! ```

#[path = "common/ng.rs"]
mod ng;

#[path = "common/pin.rs"]
mod pin;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_engine::datapath::sys::{monotonic_ns, Batch, Epoll};
use media_engine::datapath::{
    Datapath, DatapathConfig, DatapathKind, FlowPairSpec, LearnPolicy, LegSpec, LegTransform,
    RelayIo, UserspaceOptions, DEFAULT_COALESCE,
};
use media_engine::secure::{LegSecurity, SdesCrypto, SecureLeg};
use media_engine::srtp::{SrtpContext, SrtpProfile};

#[derive(Clone, Debug)]
struct Args {
    streams: usize,
    pps: u32,
    seconds: u64,
    workers: usize,
    rtpengine: bool,
    /// rtpengine --num-threads (default: same as --workers).
    rtpengine_threads: Option<usize>,
    base_port: u16,
    srtp: bool,
    io: RelayIo,
    coalesce_us: Option<u64>,
    /// Alternate ours and rtpengine this many times (median ratio printed).
    rounds: usize,
    /// No connected twin sockets for latched legs (`UserspaceOptions::connect_latched`).
    no_connect: bool,
    /// `--pin`: where the relay and the load run.
    pin: Option<pin::Placement>,
}

/// Our relay's threads: the workers, and io_uring's kernel workers (`iou-wrk-*`, should the
/// ring ever punt a request to them) which belong to this process and only the relay uses.
const RELAY_THREADS: &[&str] = &["relay-", "iou-"];

fn parse_args() -> Args {
    let mut a = Args {
        streams: 1000,
        pps: 50,
        seconds: 10,
        workers: 1,
        rtpengine: false,
        rtpengine_threads: None,
        base_port: 20000,
        srtp: false,
        io: RelayIo::Auto,
        coalesce_us: None,
        rounds: 1,
        no_connect: false,
        pin: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--streams" => a.streams = v.parse().expect("--streams N"),
            "--pps" => a.pps = v.parse().expect("--pps N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--workers" => a.workers = v.parse().expect("--workers N"),
            "--base-port" => a.base_port = v.parse().expect("--base-port N"),
            "--io" => a.io = v.parse().expect("--io auto|io_uring|epoll"),
            "--rounds" => a.rounds = v.parse::<usize>().expect("--rounds N").max(1),
            "--coalesce-us" => a.coalesce_us = Some(v.parse().expect("--coalesce-us N")),
            "--rtpengine-threads" => {
                a.rtpengine_threads = Some(v.parse().expect("--rtpengine-threads N"))
            }
            "--rtpengine" => {
                a.rtpengine = true;
                i += 1;
                continue;
            }
            "--srtp" => {
                a.srtp = true;
                i += 1;
                continue;
            }
            "--no-connect" => {
                a.no_connect = true;
                i += 1;
                continue;
            }
            "--pin" => {
                a.pin = Some(pin::Placement::new().expect("--pin"));
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(a.seconds <= 120 && a.streams <= 5000, "bounded load only");
    a
}

fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

/// One stream: two peers and where each sends to.
struct Stream {
    a: UdpSocket,
    b: UdpSocket,
    a_to: SocketAddr,
    b_to: SocketAddr,
    /// `--srtp`: side a's key (the generator protects with it) and the relay's key toward
    /// side a (the receiver unprotects with it).
    keys: Option<(Vec<u8>, Vec<u8>)>,
}

const SRTP_PROFILE: SrtpProfile = SrtpProfile::AesCm128HmacSha1_80;

fn srtp_ctx(key_salt: &[u8], streams: usize) -> SrtpContext {
    let mut c = SrtpContext::from_key_and_salt(SRTP_PROFILE, key_salt).expect("SRTP key");
    c.set_max_streams(streams * 2 + 16);
    c
}

fn rtp(seq: u16, ssrc: u32, ts_ns: u64, measured: bool) -> [u8; 172] {
    let mut p = [0xd5u8; 172];
    p[0] = 0x80;
    p[1] = 0;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p[12..20].copy_from_slice(&ts_ns.to_be_bytes());
    p[20] = u8::from(measured);
    p
}

struct Outcome {
    sent: u64,
    received: u64,
    lat_us: Vec<u32>,
    relay_cpu_ns: u64,
    wall: Duration,
}

/// Sends the load over `streams`, receives it, and measures `cpu()` over the
/// measured window (after one second of warm-up).
fn run_load(args: &Args, streams: &[Stream], cpu: &dyn Fn() -> u64) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    // Receiver: epoll over every peer socket.
    let ep = Epoll::new().expect("epoll");
    let mut fds = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        for (k, sock) in [&s.a, &s.b].into_iter().enumerate() {
            sock.set_nonblocking(true).expect("nonblocking");
            ep.add(sock.as_raw_fd(), (i * 2 + k) as u64)
                .expect("epoll add");
            fds.push(sock.as_raw_fd());
        }
    }
    std::thread::scope(|sc| {
        let stop_r = stop.clone();
        let fds_r = fds.clone();
        let ep_r = &ep;
        // Side a's SRTP contexts (one per stream: each has its own keys).
        let mut rx_ctx: Vec<Option<SrtpContext>> = streams
            .iter()
            .map(|s| s.keys.as_ref().map(|(_, relay)| srtp_ctx(relay, 1)))
            .collect();
        let rx = sc.spawn(move || {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
            let mut batch = Batch::new(16);
            let mut received = 0u64;
            let mut lat = Vec::with_capacity(4_000_000);
            let mut plain = Vec::with_capacity(256);
            while !stop_r.load(Ordering::Relaxed) {
                let n = ep_r.wait(&mut events, 20).unwrap_or(0);
                for ev in &events[..n] {
                    let fd = fds_r[ev.u64 as usize];
                    let (stream, side_a) = (ev.u64 as usize / 2, ev.u64 % 2 == 0);
                    let got = batch.recv(fd).unwrap_or(0);
                    let now = monotonic_ns();
                    for i in 0..got {
                        let mut p = batch.payload(i);
                        if side_a {
                            if let Some(Some(ctx)) = rx_ctx.get_mut(stream) {
                                plain.clear();
                                plain.extend_from_slice(p);
                                if ctx.unprotect_rtp(&mut plain).is_err() {
                                    continue;
                                }
                                p = &plain;
                            }
                        }
                        if p.len() > 20 && p[20] == 1 {
                            received += 1;
                            let mut ts = [0u8; 8];
                            ts.copy_from_slice(&p[12..20]);
                            let d = now.saturating_sub(u64::from_be_bytes(ts)) / 1000;
                            lat.push(d.min(u64::from(u32::MAX)) as u32);
                        }
                    }
                }
            }
            (received, lat)
        });
        // Generator: every stream sends `pps` packets/s each way, spread
        // evenly over each packet interval in 10 slices.
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.pps));
        let slices = 10usize;
        let per_slice = streams.len().div_ceil(slices);
        let total = Duration::from_secs(args.seconds + 1);
        let mut tx_ctx: Vec<Option<SrtpContext>> = streams
            .iter()
            .map(|s| s.keys.as_ref().map(|(party, _)| srtp_ctx(party, 1)))
            .collect();
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut seq = 0u16;
        let mut cpu0 = 0;
        let mut wall0 = t0;
        let mut tick = 0u64;
        'outer: loop {
            for sl in 0..slices {
                let due = t0 + interval * tick as u32 + interval / slices as u32 * sl as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if t0.elapsed() >= total {
                    break 'outer;
                }
                if !measuring.load(Ordering::Relaxed) && t0.elapsed() >= Duration::from_secs(1) {
                    // Let in-flight warm-up packets land, then start counting.
                    cpu0 = cpu();
                    wall0 = Instant::now();
                    measuring.store(true, Ordering::SeqCst);
                }
                let m = measuring.load(Ordering::Relaxed);
                let lo = sl * per_slice;
                let hi = ((sl + 1) * per_slice).min(streams.len());
                for (i, s) in streams[lo.min(hi)..hi].iter().enumerate() {
                    let ts = monotonic_ns();
                    let pkt = rtp(seq, (lo + i) as u32 * 2, ts, m);
                    match tx_ctx.get_mut(lo + i).and_then(Option::as_mut) {
                        Some(ctx) => {
                            let mut v = pkt.to_vec();
                            if ctx.protect_rtp(&mut v).is_ok() {
                                let _ = s.a.send_to(&v, s.a_to);
                            }
                        }
                        None => {
                            let _ = s.a.send_to(&pkt, s.a_to);
                        }
                    }
                    let _ =
                        s.b.send_to(&rtp(seq, (lo + i) as u32 * 2 + 1, ts, m), s.b_to);
                    if m {
                        sent += 2;
                    }
                }
            }
            seq = seq.wrapping_add(1);
            tick += 1;
        }
        // Packets sent at the end need a moment to arrive (counted as lost
        // if later than this).
        let wall = wall0.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        let cpu1 = cpu();
        stop.store(true, Ordering::SeqCst);
        let (received, lat) = rx.join().expect("receiver");
        Outcome {
            sent,
            received,
            lat_us: lat,
            relay_cpu_ns: cpu1.saturating_sub(cpu0),
            wall,
        }
    })
}

fn report(name: &str, o: &mut Outcome) -> f64 {
    o.lat_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if o.lat_us.is_empty() {
            return 0;
        }
        let i = ((o.lat_us.len() as f64 - 1.0) * p).round() as usize;
        o.lat_us[i]
    };
    let loss = if o.sent == 0 {
        0.0
    } else {
        100.0 * (o.sent.saturating_sub(o.received)) as f64 / o.sent as f64
    };
    let secs = o.wall.as_secs_f64();
    let pps = o.received as f64 / secs;
    let cpu_pct = 100.0 * o.relay_cpu_ns as f64 / 1e9 / secs;
    let per_pkt = if o.received > 0 {
        o.relay_cpu_ns as f64 / o.received as f64 / 1000.0
    } else {
        f64::NAN
    };
    println!(
        "{name:>12}: sent {} recv {} loss {loss:.3}% | {pps:.0} pkt/s relayed | relay CPU {cpu_pct:.1}% of a core, {per_pkt:.2} us/packet | latency p50 {} us p99 {} us max {} us",
        o.sent,
        o.received,
        pct(0.5),
        pct(0.99),
        o.lat_us.last().copied().unwrap_or(0)
    );
    per_pkt
}

fn peers(n: usize) -> Vec<(UdpSocket, UdpSocket)> {
    (0..n)
        .map(|_| {
            let a = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
            let b = UdpSocket::bind("127.0.0.1:0").expect("bind peer");
            for s in [&a, &b] {
                media_engine::datapath::sys::set_buffers(s.as_raw_fd(), 1 << 20);
            }
            (a, b)
        })
        .collect()
}

fn bench_ours(args: &Args) -> f64 {
    let cfg = DatapathConfig {
        kind: DatapathKind::Userspace,
        userspace: UserspaceOptions {
            workers: args.workers,
            io: args.io,
            coalesce: args
                .coalesce_us
                .map(Duration::from_micros)
                .unwrap_or(DEFAULT_COALESCE),
            connect_latched: !args.no_connect,
            ..UserspaceOptions::default()
        },
        ..DatapathConfig::default()
    };
    let dp = Datapath::start(&cfg, None).expect("datapath");
    if let Some(p) = &args.pin {
        p.pin_relay(std::process::id(), RELAY_THREADS)
            .expect("pin the relay threads");
    }
    let mut streams = Vec::new();
    for (i, (a, b)) in peers(args.streams).into_iter().enumerate() {
        let ra: SocketAddr = format!("127.0.0.1:{}", args.base_port as usize + 4 * i)
            .parse()
            .expect("addr");
        let rb: SocketAddr = format!("127.0.0.1:{}", args.base_port as usize + 4 * i + 2)
            .parse()
            .expect("addr");
        let a_addr = a.local_addr().expect("addr");
        let spec = FlowPairSpec {
            a: LegSpec {
                local: ra,
                peer: Some(a_addr),
                learn: LearnPolicy::Off,
            },
            b: LegSpec {
                local: rb,
                peer: Some(b.local_addr().expect("addr")),
                learn: LearnPolicy::Off,
            },
            rtcp: None,
        };
        let mut keys = None;
        let transforms: [Option<Box<dyn LegTransform>>; 2] = if args.srtp {
            let party = SdesCrypto::generate(1, SRTP_PROFILE);
            let relay = SdesCrypto::generate(1, SRTP_PROFILE);
            keys = Some((party.key_salt.clone(), relay.key_salt.clone()));
            let leg = SecureLeg::new(
                LegSecurity::Sdes {
                    local: relay,
                    remote: party,
                },
                Some(a_addr),
                Instant::now(),
            )
            .expect("secure leg");
            [Some(Box::new(leg)), None]
        } else {
            [None, None]
        };
        dp.create_pair_with(spec, transforms)
            .expect("create pair (are the ports free?)");
        streams.push(Stream {
            a,
            b,
            a_to: ra,
            b_to: rb,
            keys,
        });
    }
    let mut o = run_load(args, &streams, &|| ng::threads_cpu_ns(RELAY_THREADS));
    let st = dp.userspace_stats();
    let r = report("portcullis", &mut o);
    println!(
        "              I/O {}, coalescing {} us; system calls per relayed packet: {:.2}; sent from connected sockets {:.0}%; send failures {}",
        dp.relay_io().as_str(),
        args.coalesce_us
            .unwrap_or(DEFAULT_COALESCE.as_micros() as u64),
        st.syscalls as f64 / st.sent.max(1) as f64,
        100.0 * st.connected_sends as f64 / st.sent.max(1) as f64,
        st.send_failed
    );
    r
}

// ---- rtpengine over NG (bencode over UDP) ---------------------------------

fn sdp(port: u16, crypto: Option<&str>) -> String {
    let (proto, extra) = match crypto {
        Some(c) => ("RTP/SAVP", format!("a=crypto:{c}\r\n")),
        None => ("RTP/AVP", String::new()),
    };
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n{extra}"
    )
}

fn sdp_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find(|l| l.starts_with("m=audio "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
}

fn sdp_crypto(sdp: &str) -> Option<SdesCrypto> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=crypto:"))
        .find_map(|v| SdesCrypto::parse(v).ok())
}

fn bench_rtpengine(args: &Args) -> Option<f64> {
    let lo = args.base_port - 10000;
    let r = ng::Rtpengine::start(
        lo,
        lo + (args.streams as u16) * 4 + 100,
        args.rtpengine_threads.unwrap_or(args.workers),
    )?;
    let pid = r.pid();
    if let Some(p) = &args.pin {
        p.pin_relay(pid, &[]).expect("pin rtpengine");
    }
    let ctl = UdpSocket::bind("127.0.0.1:0").expect("bind NG client");
    ctl.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let mut streams = Vec::new();
    let mut cookie = 100u64;
    for (i, (a, b)) in peers(args.streams).into_iter().enumerate() {
        let call = format!("bench-{i}");
        let pa = a.local_addr().ok()?.port();
        let pb = b.local_addr().ok()?.port();
        let party = args.srtp.then(|| SdesCrypto::generate(1, SRTP_PROFILE));
        let offer_sdp = sdp(pa, party.as_ref().map(SdesCrypto::to_attr_value).as_deref());
        let mut offer_req = vec![
            ("command", "offer"),
            ("call-id", call.as_str()),
            ("from-tag", "a"),
            ("sdp", offer_sdp.as_str()),
        ];
        if args.srtp {
            offer_req.push(("transport-protocol", "RTP/AVP"));
        }
        cookie += 1;
        let offer = ng::request(&ctl, r.ng, cookie, &offer_req)?;
        let offer_out = ng::bencode_get(&offer, "sdp")?;
        let b_to = sdp_port(&offer_out)?;
        cookie += 1;
        let answer_sdp = sdp(pb, None);
        let answer = ng::request(
            &ctl,
            r.ng,
            cookie,
            &[
                ("command", "answer"),
                ("call-id", &call),
                ("from-tag", "a"),
                ("to-tag", "b"),
                ("sdp", &answer_sdp),
            ],
        )?;
        let answer_out = ng::bencode_get(&answer, "sdp")?;
        let a_to = sdp_port(&answer_out)?;
        let keys = match party {
            Some(p) => {
                let Some(relay) = sdp_crypto(&answer_out) else {
                    println!("   rtpengine: no a=crypto in its answer to the SRTP side; skipped");
                    return None;
                };
                Some((p.key_salt, relay.key_salt))
            }
            None => None,
        };
        streams.push(Stream {
            a,
            b,
            a_to: SocketAddr::from(([127, 0, 0, 1], a_to)),
            b_to: SocketAddr::from(([127, 0, 0, 1], b_to)),
            keys,
        });
    }
    let mut o = run_load(args, &streams, &|| ng::pid_cpu_ns(pid));
    let res = report("rtpengine", &mut o);
    drop(r);
    Some(res)
}

fn main() {
    let args = parse_args();
    raise_nofile();
    if let Some(p) = &args.pin {
        // Before any thread is spawned: the load threads inherit it.
        p.pin_self_to_load().expect("pin the load");
    }
    println!(
        "userspace relay benchmark{}: {} bidirectional streams x {} pkt/s each way = {} pkt/s offered, {} s measured (+1 s warm-up), {} worker(s), loopback, {}",
        if args.srtp { " (SDES-SRTP on side a <-> RTP on side b)" } else { "" },
        args.streams,
        args.pps,
        args.streams as u64 * 2 * u64::from(args.pps),
        args.seconds,
        args.workers,
        args.pin
            .as_ref()
            .map_or("unpinned".to_string(), pin::Placement::describe)
    );
    // Goals: issue 4 (plain relay) <= 2/3 of rtpengine, issue 6 (SDES bridge) <= 1/2.
    let goal = if args.srtp { "0.50" } else { "0.67" };
    let mut ratios = Vec::new();
    // Rounds alternate the two relays, so that what else the machine does weighs on both.
    for round in 1..=args.rounds {
        if args.rounds > 1 {
            println!("round {round}/{}", args.rounds);
        }
        let ours = bench_ours(&args);
        if args.rtpengine {
            if let Some(theirs) = bench_rtpengine(&args) {
                ratios.push(ours / theirs);
                println!(
                    "CPU per relayed packet, portcullis / rtpengine = {:.2} (goal <= {goal})",
                    ours / theirs
                );
            }
        }
    }
    if ratios.len() > 1 {
        ratios.sort_by(f64::total_cmp);
        let list: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "ratio over {} rounds: median {:.2}, sorted [{}] (goal <= {goal})",
            ratios.len(),
            ratios[ratios.len() / 2],
            list.join(", ")
        );
    }
}
