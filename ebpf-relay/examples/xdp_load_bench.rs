//! The XDP relay at a fixed, realistic load on the real kernel path (on
//! demand, root; not a test).
//!
//! Topology (namespaces named per run, deleted on every exit path; the helper
//! of `tests/common/netns.rs`): generator netns A -- veth -- SBC netns (XDP
//! relay on sbc0 and sbc1, native mode) -- veth -- echo netns C; XDP_PASS on
//! the peer veths, `ethtool -K eth0 tx off` on A and C. For the baseline the
//! same generator and echo also talk over a direct veth A -- C (XDP_PASS on
//! both ends, so their receive path is the same): "no relay".
//!
//! Load: `--streams` (1,000) G.711 streams, each `--pps` (50) packets/s each
//! way: A sends 172-byte RTP to the SBC's relay socket of the stream, the
//! relay rewrites and redirects it to C, C echoes every packet back through
//! the stream's other relay socket to A (100,000 packets/s relayed in total).
//! Each payload carries CLOCK_MONOTONIC send and echo times (one clock: same
//! machine), so one-way latency is measured per direction.
//!
//! Reported, per phase:
//! - relay CPU as **softirq time on the whole machine** (/proc/stat `softirq`
//!   deltas, tick-sampled: this kernel has no IRQ time accounting) with the
//!   relay **minus the same generator and echo with no relay** (direct veth);
//!   also the whole-machine busy time (user+system+irq+softirq) difference;
//!   the machine is shared, so both are printed with the load average;
//! - the relay program's own run time per packet (BPF_ENABLE_STATS, separate
//!   short phase because the statistics cost time themselves);
//! - loss per direction, one-way latency p50/p99 with the relay and without,
//!   and the difference (added latency);
//! - the peak rate (same 1,000 streams, more packets per stream) with < 0.5%
//!   loss, relay and baseline at each step, and what limited it (generator
//!   short of its target rate, or loss that also occurs without the relay).
//!
//! ```sh
//! cargo run -p ebpf-relay --release --example xdp_load_bench -- \
//!     [--streams 1000] [--pps 50] [--seconds 10] [--pairs 3] [--peak-seconds 3] [--no-peak]
//! ```

#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ebpf_relay::{AttachMode, FlowSpec, PassProgram, RelayOptions, SourcePolicy, XdpRelay};
use netns::*;

const PAYLOAD: usize = 172; // 12-byte RTP header + 160 bytes of G.711
const BATCH: usize = 64;
const A_PORT: u16 = 40000;
const C_PORT: u16 = 50000;
const A_LEG_BASE: u16 = 20000; // SBC relay sockets facing A: 198.18.1.1:20000+i
const C_LEG_BASE: u16 = 30000; // facing C: 198.18.2.1:30000+i

#[derive(Clone, Debug)]
struct Args {
    streams: u16,
    pps: u32,
    seconds: f64,
    peak_seconds: f64,
    peak: bool,
    pairs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        streams: 1000,
        pps: 50,
        seconds: 10.0,
        peak_seconds: 3.0,
        peak: true,
        pairs: 3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        let bad = |what: &str| format!("{what} needs a number, got {v:?}");
        match argv[i].as_str() {
            "--streams" => a.streams = v.parse().map_err(|_| bad("--streams"))?,
            "--pps" => a.pps = v.parse().map_err(|_| bad("--pps"))?,
            "--seconds" => a.seconds = v.parse().map_err(|_| bad("--seconds"))?,
            "--pairs" => a.pairs = v.parse().map_err(|_| bad("--pairs"))?,
            "--peak-seconds" => a.peak_seconds = v.parse().map_err(|_| bad("--peak-seconds"))?,
            "--no-peak" => {
                a.peak = false;
                i += 1;
                continue;
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    if a.streams == 0 || a.streams > 10000 || a.pps == 0 || a.seconds <= 0.0 || a.pairs == 0 {
        return Err("need 1..=10000 streams, pps > 0, seconds > 0, pairs > 0".into());
    }
    Ok(a)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
    s
}

fn tune(sock: &UdpSocket) {
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: valid socket and option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
}

/// A batch of datagrams for recvmmsg/sendmmsg.
struct Batch {
    bufs: Vec<[u8; 256]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Self> {
        let mut b = Box::new(Batch {
            bufs: vec![[0u8; 256]; BATCH],
            // SAFETY: all-zero is valid for these C structs.
            addrs: vec![unsafe { zeroed() }; BATCH],
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
        });
        for i in 0..BATCH {
            let base = b.bufs[i].as_mut_ptr();
            b.iovs.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: 256,
            });
        }
        for i in 0..BATCH {
            // SAFETY: as above.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    fn prepare_recv(&mut self) {
        for i in 0..BATCH {
            self.iovs[i].iov_len = 256;
            self.hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
    }

    fn recv(&mut self, sock: &UdpSocket) -> usize {
        self.prepare_recv();
        // SAFETY: headers point into this batch's buffers.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }

    /// Sends the first `n` messages (payload length `len`); returns how many went.
    fn send(&mut self, sock: &UdpSocket, n: usize, len: usize) -> usize {
        for i in 0..n {
            self.iovs[i].iov_len = len;
            self.hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: as above.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    0,
                )
            };
            if r <= 0 {
                break; // dropped by the stack (queue full): counted as loss
            }
            done += r as usize;
        }
        done
    }
}

// Payload layout after the 12-byte RTP header.
const OFF_STREAM: usize = 12;
const OFF_TSEND: usize = 16;
const OFF_TECHO: usize = 24;

fn rd64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(w)
}

#[derive(Clone, Copy, Debug)]
enum Path {
    /// Through the SBC namespace and the XDP relay.
    Relay,
    /// Over the direct veth A -- C (no relay).
    Direct,
}

struct Endpoints {
    a: UdpSocket,
    c: UdpSocket,
    /// Destination of stream i's packets from A.
    dests: Vec<SocketAddrV4>,
    ns_a: String,
    ns_c: String,
}

#[derive(Default, Debug)]
struct PhaseResult {
    target_pps_each_way: f64,
    elapsed: f64,
    sent_a: u64,
    recv_c: u64,
    echoed_c: u64,
    recv_a: u64,
    lat_ac: Vec<u32>,
    lat_ca: Vec<u32>,
    cpu: CpuDelta,
    /// CPU of the generator, echo and receiver threads, % of one core.
    threads_cpu: f64,
    /// Datagrams dropped by the A and C sockets' full receive buffers.
    rcvbuf_drops: u64,
}

impl PhaseResult {
    fn sent_rate(&self) -> f64 {
        self.sent_a as f64 / self.elapsed
    }
    fn loss_ac(&self) -> f64 {
        1.0 - self.recv_c as f64 / self.sent_a.max(1) as f64
    }
    fn loss_ca(&self) -> f64 {
        1.0 - self.recv_a as f64 / self.echoed_c.max(1) as f64
    }
    /// Packets that did not come back to A, of those A sent.
    fn loss_total(&self) -> f64 {
        1.0 - self.recv_a as f64 / self.sent_a.max(1) as f64
    }
    fn relayed_pps(&self) -> f64 {
        (self.recv_c + self.recv_a) as f64 / self.elapsed
    }
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i.min(v.len() - 1)]) / 1000.0
}

/// /proc/stat "cpu" line (all CPUs), in ticks.
#[derive(Clone, Copy, Default, Debug)]
struct CpuTicks {
    user: u64,
    system: u64,
    idle: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
    total: u64,
}

fn cpu_ticks() -> CpuTicks {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    CpuTicks {
        user: g(0) + g(1),
        system: g(2),
        idle: g(3) + g(4),
        irq: g(5),
        softirq: g(6),
        steal: g(7),
        total: v.iter().take(8).sum(),
    }
}

/// CPU use over a window, in % of one core.
#[derive(Clone, Copy, Default, Debug)]
struct CpuDelta {
    softirq: f64,
    system: f64,
    user: f64,
    irq: f64,
    busy: f64,
    steal: f64,
}

fn cpu_delta(a: CpuTicks, b: CpuTicks, secs: f64) -> CpuDelta {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let p = |x: u64, y: u64| 100.0 * (y.saturating_sub(x)) as f64 / hz / secs;
    let busy_a = a.user + a.system + a.irq + a.softirq;
    let busy_b = b.user + b.system + b.irq + b.softirq;
    let _ = (a.total, b.total, a.idle, b.idle);
    CpuDelta {
        softirq: p(a.softirq, b.softirq),
        system: p(a.system, b.system),
        user: p(a.user, b.user),
        irq: p(a.irq, b.irq),
        busy: p(busy_a, busy_b),
        steal: p(a.steal, b.steal),
    }
}

/// CPU time (user + system) of the calling thread, softirq run in its
/// context included (tick accounting charges it to the interrupted task).
fn thread_cpu() -> Duration {
    // SAFETY: all-zero rusage is valid; RUSAGE_THREAD fills it.
    let mut ru: libc::rusage = unsafe { zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// UDP RcvbufErrors of namespace `ns` (datagrams its sockets dropped because
/// the receiving thread did not keep up: generator/echo side, not the relay).
fn rcvbuf_errors(ns: &str) -> u64 {
    in_netns(ns, || {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
            return 0;
        };
        h.split_whitespace()
            .position(|x| x == "RcvbufErrors")
            .and_then(|i| v.split_whitespace().nth(i))
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    })
}

/// Runs one phase: A sends `pps_each_way` packets/s spread over the streams
/// for `secs`, C echoes; counts and latencies; CPU over the sending window
/// after a 0.5 s warm-up.
fn run_phase(ep: &Endpoints, streams: u16, pps_each_way: f64, secs: f64) -> PhaseResult {
    let rb0 = rcvbuf_errors(&ep.ns_a) + rcvbuf_errors(&ep.ns_c);
    let stop_rx = AtomicBool::new(false);
    let warm = 0.5;
    let mut res = PhaseResult {
        target_pps_each_way: pps_each_way,
        ..PhaseResult::default()
    };
    std::thread::scope(|s| {
        // C: echo every packet back to its source, stamping the echo time.
        let echo = s.spawn(|| {
            let c0 = thread_cpu();
            let mut b = Batch::new();
            let (mut recv, mut echoed) = (0u64, 0u64);
            let mut lat = Vec::with_capacity((pps_each_way * secs * 1.1) as usize);
            while !stop_rx.load(Ordering::Relaxed) {
                let n = b.recv(&ep.c);
                if n == 0 {
                    continue;
                }
                let now = monotonic_ns();
                for i in 0..n {
                    let len = b.hdrs[i].msg_len as usize;
                    let buf = &mut b.bufs[i];
                    if len != PAYLOAD {
                        continue;
                    }
                    lat.push(
                        now.saturating_sub(rd64(buf, OFF_TSEND))
                            .min(u64::from(u32::MAX)) as u32,
                    );
                    buf[OFF_TECHO..OFF_TECHO + 8].copy_from_slice(&now.to_ne_bytes());
                }
                recv += n as u64;
                // Source addresses were written by recvmmsg: send back.
                echoed += b.send(&ep.c, n, PAYLOAD) as u64;
            }
            (recv, echoed, lat, thread_cpu().saturating_sub(c0))
        });
        // A: receive the echoes.
        let rx = s.spawn(|| {
            let c0 = thread_cpu();
            let mut b = Batch::new();
            let mut recv = 0u64;
            let mut lat = Vec::with_capacity((pps_each_way * secs * 1.1) as usize);
            while !stop_rx.load(Ordering::Relaxed) {
                let n = b.recv(&ep.a);
                let now = monotonic_ns();
                for i in 0..n {
                    if b.hdrs[i].msg_len as usize != PAYLOAD {
                        continue;
                    }
                    let t = rd64(&b.bufs[i], OFF_TECHO);
                    lat.push(now.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                    recv += 1;
                }
            }
            (recv, lat, thread_cpu().saturating_sub(c0))
        });

        // A: the generator (this thread), paced in 1 ms ticks.
        let g0 = thread_cpu();
        let mut b = Batch::new();
        let mut sent = 0u64;
        let mut seq = 0u64;
        let start = Instant::now();
        let mut cpu0 = None;
        let mut t_cpu0 = start;
        loop {
            let el = start.elapsed().as_secs_f64();
            if el >= secs {
                break;
            }
            if cpu0.is_none() && el >= warm {
                cpu0 = Some(cpu_ticks());
                t_cpu0 = Instant::now();
            }
            let due = (el * pps_each_way) as u64;
            while seq < due {
                let n = ((due - seq) as usize).min(BATCH);
                let now = monotonic_ns();
                for k in 0..n {
                    let g = seq + k as u64;
                    let stream = (g % u64::from(streams)) as u16;
                    let sseq = (g / u64::from(streams)) as u16;
                    let buf = &mut b.bufs[k];
                    buf[0] = 0x80; // RTP v2: not STUN/DTLS (RFC 7983)
                    buf[1] = 0; // PCMU
                    buf[2..4].copy_from_slice(&sseq.to_be_bytes());
                    buf[4..8].copy_from_slice(&(u32::from(sseq) * 160).to_be_bytes());
                    buf[8..12].copy_from_slice(&u32::from(stream).to_be_bytes());
                    buf[OFF_STREAM..OFF_STREAM + 4]
                        .copy_from_slice(&u32::from(stream).to_ne_bytes());
                    buf[OFF_TSEND..OFF_TSEND + 8].copy_from_slice(&now.to_ne_bytes());
                    b.addrs[k] = sockaddr_in(ep.dests[usize::from(stream)]);
                }
                sent += b.send(&ep.a, n, PAYLOAD) as u64;
                seq += n as u64;
                if start.elapsed().as_secs_f64() >= secs {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let cpu1 = cpu_ticks();
        let window = t_cpu0.elapsed().as_secs_f64();
        res.elapsed = start.elapsed().as_secs_f64().min(secs.max(1e-9));
        res.cpu = cpu_delta(cpu0.unwrap_or(cpu1), cpu1, window.max(1e-9));
        res.sent_a = sent;
        let gen_cpu = thread_cpu().saturating_sub(g0);
        // Drain what is in flight, then stop the receivers.
        std::thread::sleep(Duration::from_millis(300));
        stop_rx.store(true, Ordering::Relaxed);
        let (rc, ec, lc, ecpu) = echo.join().unwrap_or_default();
        let (ra, la, rcpu) = rx.join().unwrap_or_default();
        let all = start.elapsed().as_secs_f64();
        res.threads_cpu = 100.0 * (gen_cpu + ecpu + rcpu).as_secs_f64() / all;
        res.recv_c = rc;
        res.echoed_c = ec;
        res.recv_a = ra;
        res.lat_ac = lc;
        res.lat_ca = la;
    });
    res.rcvbuf_drops = (rcvbuf_errors(&ep.ns_a) + rcvbuf_errors(&ep.ns_c)).saturating_sub(rb0);
    res
}

fn mac_of(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Direct veth A(eth1, 198.18.3.1) -- C(eth1, 198.18.3.2), XDP_PASS on both
/// ends like eth0, for the no-relay baseline. Deleted with the namespaces.
fn direct_link(t: &Topology) -> Vec<PassProgram> {
    const A1: [u8; 6] = [0x02, 0, 0, 0, 0xa1, 0];
    const C1: [u8; 6] = [0x02, 0, 0, 0, 0xc1, 0];
    run(
        "ip",
        &[
            "-n",
            &t.a,
            "link",
            "add",
            "eth1",
            "address",
            &mac_of(A1),
            "type",
            "veth",
            "peer",
            "name",
            "eth1",
            "address",
            &mac_of(C1),
            "netns",
            &t.c,
        ],
    );
    for (ns, me, peer, peer_mac) in [
        (&t.a, "198.18.3.1/24", "198.18.3.2", C1),
        (&t.c, "198.18.3.2/24", "198.18.3.1", A1),
    ] {
        run("ip", &["-n", ns, "addr", "add", me, "dev", "eth1"]);
        run("ip", &["-n", ns, "link", "set", "eth1", "up"]);
        run(
            "ip",
            &[
                "-n",
                ns,
                "neigh",
                "replace",
                peer,
                "lladdr",
                &mac_of(peer_mac),
                "dev",
                "eth1",
                "nud",
                "permanent",
            ],
        );
        run(
            "ip",
            &["netns", "exec", ns, "ethtool", "-K", "eth1", "tx", "off"],
        );
    }
    [&t.a, &t.c]
        .into_iter()
        .map(|ns| {
            in_netns(ns, || PassProgram::attach("eth1", false))
                .unwrap_or_else(|e| panic!("attach XDP_PASS on {ns}/eth1: {e}"))
        })
        .collect()
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let dev = dev.to_string();
    in_netns(ns, move || {
        let c = std::ffi::CString::new(dev).unwrap_or_default();
        // SAFETY: valid C string.
        unsafe { libc::if_nametoindex(c.as_ptr()) }
    })
}

fn load_relay(t: &Topology, streams: u16) -> Result<XdpRelay, ebpf_relay::RelayError> {
    let (i0, i1) = (ifindex(&t.sbc, "sbc0"), ifindex(&t.sbc, "sbc1"));
    in_netns(&t.sbc, move || {
        let mut r = XdpRelay::load(RelayOptions::default())?;
        r.attach("sbc0", AttachMode::Native)?;
        r.attach("sbc1", AttachMode::Native)?;
        let v4 = |a: [u8; 4], p: u16| SocketAddr::V4(SocketAddrV4::new(a.into(), p));
        for i in 0..streams {
            let (al, cl) = (A_LEG_BASE + i, C_LEG_BASE + i);
            r.insert_flow(
                v4([198, 18, 1, 1], al),
                &FlowSpec {
                    expected_source: v4([198, 18, 1, 2], A_PORT),
                    policy: SourcePolicy::Strict,
                    egress_source: v4([198, 18, 2, 1], cl),
                    peer: v4([198, 18, 2, 2], C_PORT),
                    egress_ifindex: i1,
                    src_mac: SBC1_MAC,
                    dst_mac: C_MAC,
                },
            )?;
            r.insert_flow(
                v4([198, 18, 2, 1], cl),
                &FlowSpec {
                    expected_source: v4([198, 18, 2, 2], C_PORT),
                    policy: SourcePolicy::Strict,
                    egress_source: v4([198, 18, 1, 1], al),
                    peer: v4([198, 18, 1, 2], A_PORT),
                    egress_ifindex: i0,
                    src_mac: SBC0_MAC,
                    dst_mac: A_MAC,
                },
            )?;
        }
        Ok(r)
    })
}

fn endpoints(t: &Topology, path: Path, streams: u16) -> Endpoints {
    let (a_addr, c_addr) = match path {
        Path::Relay => ("198.18.1.2", "198.18.2.2"),
        Path::Direct => ("198.18.3.1", "198.18.3.2"),
    };
    let a = bind_in(&t.a, &format!("{a_addr}:{A_PORT}"));
    let c = bind_in(&t.c, &format!("{c_addr}:{C_PORT}"));
    tune(&a);
    tune(&c);
    let dests = (0..streams)
        .map(|i| match path {
            Path::Relay => SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), A_LEG_BASE + i),
            Path::Direct => SocketAddrV4::new(Ipv4Addr::new(198, 18, 3, 2), C_PORT),
        })
        .collect();
    Endpoints {
        a,
        c,
        dests,
        ns_a: t.a.clone(),
        ns_c: t.c.clone(),
    }
}

fn print_phase(name: &str, r: &mut PhaseResult) {
    println!(
        "  {name:<9} sent {:>7.0}/s (target {:>7.0})  relayed/echoed {:>7.0} pkt/s  \
         loss A->C {:.3}%  C->A {:.3}% (socket buffer drops {})  one-way p50/p90/p99 \
         A->C {:.0}/{:.0}/{:.0} us  C->A {:.0}/{:.0}/{:.0} us",
        r.sent_rate(),
        r.target_pps_each_way,
        r.relayed_pps(),
        100.0 * r.loss_ac(),
        100.0 * r.loss_ca(),
        r.rcvbuf_drops,
        pct(&mut r.lat_ac, 0.5),
        pct(&mut r.lat_ac, 0.9),
        pct(&mut r.lat_ac, 0.99),
        pct(&mut r.lat_ca, 0.5),
        pct(&mut r.lat_ca, 0.9),
        pct(&mut r.lat_ca, 0.99),
    );
    println!(
        "  {:<9} CPU (% of one core, whole machine): softirq {:.1}  system {:.1}  user {:.1}  \
         irq {:.1}  busy {:.1}  steal {:.1}; generator+echo threads {:.1}",
        "",
        r.cpu.softirq,
        r.cpu.system,
        r.cpu.user,
        r.cpu.irq,
        r.cpu.busy,
        r.cpu.steal,
        r.threads_cpu
    );
}

fn all_lat(r: &PhaseResult) -> impl Iterator<Item = u32> + '_ {
    r.lat_ac.iter().chain(r.lat_ca.iter()).copied()
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xdp_load_bench: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xdp_load_bench needs root (network namespaces, XDP)");
        std::process::exit(2);
    }
    if let Err(e) = bench(&args) {
        eprintln!("xdp_load_bench failed: {e}");
        std::process::exit(1);
    }
}

fn bench(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let streams = args.streams;
    let rate = f64::from(streams) * f64::from(args.pps); // each way
    let t = Topology::new(true);
    let direct_pass = direct_link(&t);
    let relay = load_relay(&t, streams)?;
    let via_relay = endpoints(&t, Path::Relay, streams);
    let direct = endpoints(&t, Path::Direct, streams);
    println!(
        "XDP relay load: {streams} bidirectional G.711 streams ({PAYLOAD}-byte RTP), \
         {} pkt/s each way per stream = {:.0} pkt/s relayed in total; {} flows; \
         namespaces {} {} {}; {} CPUs, load average before: {}",
        args.pps,
        2.0 * rate,
        relay.flows()?.len(),
        t.a,
        t.sbc,
        t.c,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        loadavg()
    );
    // Fixed load: relay and no-relay runs alternated `--pairs` times (the
    // machine is shared: the spread shows how much the figures move).
    println!("fixed load, {:.0} s per run:", args.seconds);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for pair in 0..args.pairs {
        let s0 = relay.stats()?;
        let mut r = run_phase(&via_relay, streams, rate, args.seconds);
        let fwd = relay.stats()?.since(&s0);
        let mut d = run_phase(&direct, streams, rate, args.seconds);
        println!(" pair {}:", pair + 1);
        print_phase("relay", &mut r);
        print_phase("no relay", &mut d);
        println!(
            "            relay stats: {fwd}; sockets received {} of the relayed packets",
            r.recv_c + r.recv_a
        );
        with.push(r);
        without.push(d);
    }
    let mut diffs: Vec<f64> = with
        .iter()
        .zip(&without)
        .map(|(r, d)| r.cpu.softirq - d.cpu.softirq)
        .collect();
    diffs.sort_by(f64::total_cmp);
    let med = diffs[diffs.len() / 2];
    let relayed = with.iter().map(|r| r.relayed_pps()).sum::<f64>() / with.len() as f64;
    println!(
        "RELAY CPU = whole-machine softirq time (/proc/stat, tick-sampled) with the relay minus \
         without, per pair: {}; median {med:.1}% of one core = {:.0} ns per relayed packet at \
         {relayed:.0} pkt/s",
        diffs
            .iter()
            .map(|d| format!("{d:.1}%"))
            .collect::<Vec<_>>()
            .join(", "),
        1e7 * med / relayed.max(1.0)
    );
    let mut tdiffs: Vec<f64> = with
        .iter()
        .zip(&without)
        .map(|(r, d)| r.threads_cpu - d.threads_cpu)
        .collect();
    tdiffs.sort_by(f64::total_cmp);
    let tmed = tdiffs[tdiffs.len() / 2];
    println!(
        "  second estimate: generator+echo threads' CPU (precise per-thread run time, which \
         includes the softirq work run in their context, e.g. the veth hops on send) with the \
         relay minus without, per pair: {}; median {tmed:.1}% of one core = {:.0} ns per \
         relayed packet",
        tdiffs
            .iter()
            .map(|d| format!("{d:.1}%"))
            .collect::<Vec<_>>()
            .join(", "),
        1e7 * tmed / relayed.max(1.0)
    );
    let (mut lw, mut lo): (Vec<u32>, Vec<u32>) = (
        with.iter().flat_map(all_lat).collect(),
        without.iter().flat_map(all_lat).collect(),
    );
    let (p50, p90, p99) = (pct(&mut lw, 0.5), pct(&mut lw, 0.9), pct(&mut lw, 0.99));
    let (b50, b90, b99) = (pct(&mut lo, 0.5), pct(&mut lo, 0.9), pct(&mut lo, 0.99));
    println!(
        "ADDED LATENCY (one-way, both directions and all runs pooled, relay - no relay): \
         p50 {:.1} us ({p50:.1} vs {b50:.1}), p90 {:.1} us ({p90:.1} vs {b90:.1}), \
         p99 {:.1} us ({p99:.1} vs {b99:.1}; tails are scheduling of the generator/echo \
         threads on a shared machine)",
        p50 - b50,
        p90 - b90,
        p99 - b99
    );
    let loss = |v: &[PhaseResult]| {
        let sent: u64 = v.iter().map(|r| r.sent_a).sum();
        let back: u64 = v.iter().map(|r| r.recv_a).sum();
        100.0 * (1.0 - back as f64 / sent.max(1) as f64)
    };
    println!(
        "LOSS at fixed load (A -> C -> A, all runs): relay {:.3}%, no relay {:.3}%",
        loss(&with),
        loss(&without)
    );

    // The relay program's own time (BPF_ENABLE_STATS; costs time itself, so
    // a separate short run).
    {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
        let (t0, c0) = relay.program_run_stats()?;
        let mut r = run_phase(&via_relay, streams, rate, args.peak_seconds);
        let (t1, c1) = relay.program_run_stats()?;
        // Calibration: the trivial XDP_PASS program on C's end of the direct
        // veth, same statistics, during a no-relay run.
        let c_pass = direct_pass
            .get(1)
            .ok_or("no XDP_PASS program on C's eth1")?;
        let (p0, n0) = c_pass.run_stats()?;
        let _ = run_phase(&direct, streams, rate, args.peak_seconds);
        let (p1, n1) = c_pass.run_stats()?;
        let runs = c1.saturating_sub(c0);
        let ns = t1.saturating_sub(t0).as_nanos() as f64;
        let pass_ns = p1.saturating_sub(p0).as_nanos() as f64 / n1.saturating_sub(n0).max(1) as f64;
        println!(
            "XDP PROGRAM TIME (BPF_ENABLE_STATS runs): relay {runs} runs, {:.0} ns per run, \
             {:.2}% of one core at {:.0} pkt/s (softirq in that run: {:.1}%); a trivial \
             XDP_PASS program measured the same way: {pass_ns:.0} ns per run (statistics \
             overhead and call)",
            ns / runs.max(1) as f64,
            100.0 * ns / 1e9 / r.elapsed,
            r.relayed_pps(),
            r.cpu.softirq
        );
        let _ = pct(&mut r.lat_ac, 0.5);
    }

    if args.peak {
        println!(
            "peak search, {} streams, {:.0} s per step (relay, then the same load with no relay):",
            streams, args.peak_seconds
        );
        let mut best: Option<f64> = None;
        let mut limit = String::from("nothing: every step had < 0.5% loss");
        for pps in [50u32, 60, 70, 80, 90, 100, 125, 150, 200, 300, 400] {
            let each_way = f64::from(streams) * f64::from(pps);
            let mut r = run_phase(&via_relay, streams, each_way, args.peak_seconds);
            let mut b = run_phase(&direct, streams, each_way, args.peak_seconds);
            println!(
                "  step {pps} pkt/s per stream each way ({:.0} pkt/s relayed target):",
                2.0 * each_way
            );
            print_phase("relay", &mut r);
            print_phase("no relay", &mut b);
            let gen_short = r.sent_rate() < 0.95 * each_way;
            if r.loss_total() < 0.005 && !gen_short {
                best = Some(r.relayed_pps());
                continue;
            }
            // Every reason that applies, generator first.
            let lost = r.sent_a.saturating_sub(r.recv_a);
            let mut why = Vec::new();
            if gen_short {
                why.push(format!(
                    "the generator (sent only {:.0} of {:.0} pkt/s each way)",
                    r.sent_rate(),
                    each_way
                ));
            }
            if r.rcvbuf_drops > 0 {
                why.push(format!(
                    "the echo/receiver threads ({} of the {lost} lost datagrams dropped by full \
                     socket buffers, after the relay)",
                    r.rcvbuf_drops
                ));
            }
            if lost > r.rcvbuf_drops {
                why.push(format!(
                    "the path ({} datagrams lost before a socket; {:.2}% loss without the relay)",
                    lost - r.rcvbuf_drops,
                    100.0 * b.loss_total()
                ));
            }
            limit = why.join("; ");
            break;
        }
        match best {
            Some(p) => println!(
                "PEAK with < 0.5% loss: {p:.0} pkt/s relayed; next step limited by {limit}"
            ),
            None => println!("PEAK: even the first step failed; limited by {limit}"),
        }
    }
    println!("load average after: {}", loadavg());
    drop(via_relay);
    drop(direct);
    drop(relay);
    drop(direct_pass);
    Ok(())
}
