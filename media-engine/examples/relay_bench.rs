//! On-demand benchmark of the userspace relay on loopback (not run in CI).
//!
//! N bidirectional G.711-like streams (172-byte RTP, `--pps` packets/s each
//! way), relayed for `--seconds`; prints packets/s relayed, loss, added
//! latency p50/p99/max, and the relay's CPU (user+system time of the relay
//! worker threads from /proc/self/task/*/stat, which includes the loopback
//! delivery softirq run in their context) per packet. With `--rtpengine`
//! (Debian `rtpengine` installed) the same load is sent through an rtpengine
//! daemon started here and driven over its NG protocol (bencode over UDP),
//! and the ratio is printed (rtpengine CPU = its whole process).
//!
//! ```sh
//! cargo run -p media-engine --release --example relay_bench -- \
//!     --streams 1000 --pps 50 --seconds 10 [--workers 1] [--rtpengine] \
//!     [--rtpengine-threads N]   # default: as many as --workers
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_engine::datapath::sys::{monotonic_ns, Batch, Epoll};
use media_engine::datapath::{
    Datapath, DatapathConfig, DatapathKind, FlowPairSpec, LearnPolicy, LegSpec, UserspaceOptions,
};

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
}

fn parse_args() -> Args {
    let mut a = Args {
        streams: 1000,
        pps: 50,
        seconds: 10,
        workers: 1,
        rtpengine: false,
        rtpengine_threads: None,
        base_port: 20000,
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
            "--rtpengine-threads" => {
                a.rtpengine_threads = Some(v.parse().expect("--rtpengine-threads N"))
            }
            "--rtpengine" => {
                a.rtpengine = true;
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

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// utime+stime (ns) from a /proc/.../stat line.
fn stat_cpu_ns(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut + st) * 1_000_000_000 / clk_tck())
}

/// CPU of this process's threads whose name starts with `prefix`.
fn threads_cpu_ns(prefix: &str) -> u64 {
    let mut sum = 0;
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let p = e.path();
            let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(prefix) {
                if let Some(ns) = std::fs::read_to_string(p.join("stat"))
                    .ok()
                    .and_then(|s| stat_cpu_ns(&s))
                {
                    sum += ns;
                }
            }
        }
    }
    sum
}

fn pid_cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_ns(&s))
        .unwrap_or(0)
}

/// One stream: two peers and where each sends to.
struct Stream {
    a: UdpSocket,
    b: UdpSocket,
    a_to: SocketAddr,
    b_to: SocketAddr,
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
        let rx = sc.spawn(move || {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
            let mut batch = Batch::new(16);
            let mut received = 0u64;
            let mut lat = Vec::with_capacity(4_000_000);
            while !stop_r.load(Ordering::Relaxed) {
                let n = ep_r.wait(&mut events, 20).unwrap_or(0);
                for ev in &events[..n] {
                    let fd = fds_r[ev.u64 as usize];
                    let got = batch.recv(fd).unwrap_or(0);
                    let now = monotonic_ns();
                    for i in 0..got {
                        let p = batch.payload(i);
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
                    let _ = s.a.send_to(&rtp(seq, (lo + i) as u32 * 2, ts, m), s.a_to);
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
            ..UserspaceOptions::default()
        },
        ..DatapathConfig::default()
    };
    let dp = Datapath::start(&cfg, None).expect("datapath");
    let mut streams = Vec::new();
    for (i, (a, b)) in peers(args.streams).into_iter().enumerate() {
        let ra: SocketAddr = format!("127.0.0.1:{}", args.base_port as usize + 4 * i)
            .parse()
            .expect("addr");
        let rb: SocketAddr = format!("127.0.0.1:{}", args.base_port as usize + 4 * i + 2)
            .parse()
            .expect("addr");
        dp.create_pair(FlowPairSpec {
            a: LegSpec {
                local: ra,
                peer: Some(a.local_addr().expect("addr")),
                learn: LearnPolicy::Off,
            },
            b: LegSpec {
                local: rb,
                peer: Some(b.local_addr().expect("addr")),
                learn: LearnPolicy::Off,
            },
        })
        .expect("create pair (are the ports free?)");
        streams.push(Stream {
            a,
            b,
            a_to: ra,
            b_to: rb,
        });
    }
    let mut o = run_load(args, &streams, &|| threads_cpu_ns("relay-"));
    let st = dp.userspace_stats();
    let r = report("portcullis", &mut o);
    println!(
        "              syscalls (recvmmsg+sendmmsg) per relayed packet: {:.2}; send failures {}",
        st.syscalls as f64 / st.sent.max(1) as f64,
        st.send_failed
    );
    r
}

// ---- rtpengine over NG (bencode over UDP) ---------------------------------

fn bencode_dict(items: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, &str)> = items.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut out = b"d".to_vec();
    for (k, v) in sorted {
        out.extend_from_slice(format!("{}:{}{}:", k.len(), k, v.len()).as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.push(b'e');
    out
}

/// Extracts the string value of `key` from a flat bencoded dictionary reply.
fn bencode_get(reply: &[u8], key: &str) -> Option<String> {
    let pat = format!("{}:{}", key.len(), key);
    let s = String::from_utf8_lossy(reply);
    let at = s.find(&pat)? + pat.len();
    let rest = &s[at..];
    let colon = rest.find(':')?;
    let len: usize = rest[..colon].parse().ok()?;
    rest.get(colon + 1..colon + 1 + len).map(str::to_string)
}

fn ng(sock: &UdpSocket, to: SocketAddr, cookie: u32, dict: &[(&str, &str)]) -> Vec<u8> {
    let mut msg = format!("{cookie} ").into_bytes();
    msg.extend(bencode_dict(dict));
    for _ in 0..3 {
        sock.send_to(&msg, to).expect("NG send");
        let mut buf = vec![0u8; 65536];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let reply = &buf[..n];
            let sp = reply.iter().position(|b| *b == b' ').unwrap_or(0);
            return reply[sp + 1..].to_vec();
        }
    }
    panic!("rtpengine did not answer NG request");
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

fn sdp_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find(|l| l.starts_with("m=audio "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only the process started here, by its PID.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_rtpengine(args: &Args) -> Option<f64> {
    let bin = ["/usr/bin/rtpengine", "/usr/sbin/rtpengine"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        println!(
            "   rtpengine: not installed (apt-get install rtpengine-daemon); comparison skipped"
        );
        return None;
    };
    let ng_port = 22222 + (std::process::id() % 1000) as u16;
    let lo = args.base_port - 10000;
    let child = Command::new(bin)
        .args([
            "--foreground",
            "--table=-1",
            "--interface=127.0.0.1",
            &format!("--listen-ng=127.0.0.1:{ng_port}"),
            &format!("--port-min={lo}"),
            &format!("--port-max={}", lo + (args.streams as u16) * 4 + 100),
            "--log-stderr",
            "--log-level=3",
            "--no-fallback",
            &format!(
                "--num-threads={}",
                args.rtpengine_threads.unwrap_or(args.workers)
            ),
            "--delete-delay=0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    let ctl = UdpSocket::bind("127.0.0.1:0").expect("bind NG client");
    ctl.set_read_timeout(Some(Duration::from_millis(500))).ok();
    let to: SocketAddr = format!("127.0.0.1:{ng_port}").parse().ok()?;
    let mut up = false;
    for i in 0..20 {
        let mut msg = format!("{i} ").into_bytes();
        msg.extend(bencode_dict(&[("command", "ping")]));
        let _ = ctl.send_to(&msg, to);
        let mut buf = [0u8; 256];
        if ctl.recv_from(&mut buf).is_ok() {
            up = true;
            break;
        }
    }
    if !up {
        println!("   rtpengine: NG port did not answer; comparison skipped");
        return None;
    }
    let mut streams = Vec::new();
    let mut cookie = 100u32;
    for (i, (a, b)) in peers(args.streams).into_iter().enumerate() {
        let call = format!("bench-{i}");
        let pa = a.local_addr().ok()?.port();
        let pb = b.local_addr().ok()?.port();
        cookie += 1;
        let offer = ng(
            &ctl,
            to,
            cookie,
            &[
                ("command", "offer"),
                ("call-id", &call),
                ("from-tag", "a"),
                ("sdp", &sdp(pa)),
            ],
        );
        let b_to = sdp_port(&bencode_get(&offer, "sdp")?)?;
        cookie += 1;
        let answer = ng(
            &ctl,
            to,
            cookie,
            &[
                ("command", "answer"),
                ("call-id", &call),
                ("from-tag", "a"),
                ("to-tag", "b"),
                ("sdp", &sdp(pb)),
            ],
        );
        let a_to = sdp_port(&bencode_get(&answer, "sdp")?)?;
        streams.push(Stream {
            a,
            b,
            a_to: SocketAddr::from(([127, 0, 0, 1], a_to)),
            b_to: SocketAddr::from(([127, 0, 0, 1], b_to)),
        });
    }
    let mut o = run_load(args, &streams, &|| pid_cpu_ns(pid));
    let r = report("rtpengine", &mut o);
    drop(daemon);
    Some(r)
}

fn main() {
    let args = parse_args();
    raise_nofile();
    println!(
        "userspace relay benchmark: {} bidirectional streams x {} pkt/s each way = {} pkt/s offered, {} s measured (+1 s warm-up), {} worker(s), loopback",
        args.streams,
        args.pps,
        args.streams as u64 * 2 * u64::from(args.pps),
        args.seconds,
        args.workers
    );
    let ours = bench_ours(&args);
    if args.rtpengine {
        if let Some(theirs) = bench_rtpengine(&args) {
            println!(
                "CPU per relayed packet, portcullis / rtpengine = {:.2} (goal <= 0.67)",
                ours / theirs
            );
        }
    }
}
