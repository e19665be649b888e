//! The RTP load of the netns relay benchmarks, shared by `#[path]` between
//! `ebpf-relay/examples/xdp_load_bench.rs` (XDP relay only) and
//! `media-engine/examples/netns_relay_bench.rs` (XDP, userspace and rtpengine):
//! a sendmmsg generator in namespace A, an echo in C, one-way latency from
//! CLOCK_MONOTONIC stamps in the payload, loss per direction, whole-machine
//! CPU from /proc/stat, the direct A -- C veth of the no-relay baseline, and
//! the peak-rate search with what limited it.
//!
//! Needs the topology helper of `ebpf-relay/tests/common/netns.rs` included by
//! the example as module `netns` (crate root).

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::netns::{bind_in, in_netns, run, Topology};
use ebpf_relay::PassProgram;

pub const PAYLOAD: usize = 172; // 12-byte RTP header + 160 bytes of G.711
pub const BATCH: usize = 64;
pub const A_PORT: u16 = 40000;
pub const C_PORT: u16 = 50000;

/// Set (e.g. by a SIGINT handler) to end the current phase's sending early so
/// that the caller can unwind and clean up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Number of the current phase, carried in every packet: packets of an
/// earlier phase still in flight (a relay's backlog) are not counted.
static PHASE: AtomicU32 = AtomicU32::new(0);

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
    s
}

pub fn tune(sock: &UdpSocket) {
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

/// When non-zero, the generator's and the echo's receivers poll their sockets, sleeping this
/// many microseconds when empty, instead of blocking in recvmmsg. A blocked receiver is woken
/// by every datagram delivered to it, and on one machine that wake-up (an inter-processor
/// interrupt, a VM exit here) is paid in the context of whoever delivered the datagram: the
/// relay under test. Peers on other hosts cost a relay nothing of the kind.
pub static PEER_POLL_US: AtomicU64 = AtomicU64::new(0);

/// A batch of datagrams for recvmmsg/sendmmsg.
pub struct Batch {
    pub bufs: Vec<[u8; 256]>,
    pub addrs: Vec<libc::sockaddr_in>,
    pub iovs: Vec<libc::iovec>,
    pub hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    pub fn new() -> Box<Self> {
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

    pub fn prepare_recv(&mut self) {
        for i in 0..BATCH {
            self.iovs[i].iov_len = 256;
            self.hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
    }

    pub fn recv(&mut self, sock: &UdpSocket) -> usize {
        self.prepare_recv();
        let poll_us = PEER_POLL_US.load(Ordering::Relaxed);
        let flags = if poll_us > 0 {
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        // SAFETY: headers point into this batch's buffers.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if poll_us > 0 {
                std::thread::sleep(Duration::from_micros(poll_us));
            }
            0
        } else {
            n as usize
        }
    }

    /// Sends the first `n` messages (payload length `len`); returns how many went.
    pub fn send(&mut self, sock: &UdpSocket, n: usize, len: usize) -> usize {
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
pub const OFF_STREAM: usize = 12;
pub const OFF_TSEND: usize = 16;
pub const OFF_TECHO: usize = 24;
pub const OFF_PHASE: usize = 32;

pub fn rd32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(w)
}

pub fn rd64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(w)
}

pub struct Endpoints {
    pub a: UdpSocket,
    pub c: UdpSocket,
    /// Destination of stream i's packets from A.
    pub dests: Vec<SocketAddrV4>,
    pub ns_a: String,
    pub ns_c: String,
}

#[derive(Default, Debug)]
pub struct PhaseResult {
    pub target_pps_each_way: f64,
    pub elapsed: f64,
    pub sent_a: u64,
    pub recv_c: u64,
    pub echoed_c: u64,
    pub recv_a: u64,
    pub lat_ac: Vec<u32>,
    pub lat_ca: Vec<u32>,
    pub cpu: CpuDelta,
    /// CPU of the generator, echo and receiver threads, % of one core.
    pub threads_cpu: f64,
    /// Datagrams dropped by the A and C sockets' full receive buffers.
    pub rcvbuf_drops: u64,
    /// Datagrams of earlier phases that A or C received (not counted).
    pub stale: u64,
    /// Growth of each of the caller's CPU probes over the CPU window, ns.
    pub probe_ns: Vec<u64>,
    /// Length of the CPU window (sending time after the warm-up), s.
    pub window: f64,
}

impl PhaseResult {
    pub fn sent_rate(&self) -> f64 {
        self.sent_a as f64 / self.elapsed
    }
    pub fn loss_ac(&self) -> f64 {
        1.0 - self.recv_c as f64 / self.sent_a.max(1) as f64
    }
    pub fn loss_ca(&self) -> f64 {
        1.0 - self.recv_a as f64 / self.echoed_c.max(1) as f64
    }
    /// Packets that did not come back to A, of those A sent.
    pub fn loss_total(&self) -> f64 {
        1.0 - self.recv_a as f64 / self.sent_a.max(1) as f64
    }
    pub fn relayed_pps(&self) -> f64 {
        (self.recv_c + self.recv_a) as f64 / self.elapsed
    }
    /// Probe `i`'s CPU over the CPU window, % of one core (NaN if absent).
    pub fn probe_pct(&self, i: usize) -> f64 {
        self.probe_ns.get(i).map_or(f64::NAN, |&ns| {
            100.0 * ns as f64 / 1e9 / self.window.max(1e-9)
        })
    }
}

pub fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    f64::from(v[i.min(v.len() - 1)]) / 1000.0
}

/// /proc/stat "cpu" line (all CPUs), in ticks, and the number of CPUs it sums.
#[derive(Clone, Copy, Default, Debug)]
pub struct CpuTicks {
    pub cpus: u64,
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub total: u64,
}

pub fn cpu_ticks() -> CpuTicks {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = s.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    let cpus = s
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64;
    CpuTicks {
        cpus,
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
pub struct CpuDelta {
    pub softirq: f64,
    pub system: f64,
    pub user: f64,
    pub irq: f64,
    pub busy: f64,
    pub steal: f64,
}

pub fn cpu_delta(a: CpuTicks, b: CpuTicks, secs: f64) -> CpuDelta {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let p = |x: u64, y: u64| 100.0 * (y.saturating_sub(x)) as f64 / hz / secs;
    // Busy = the window on every CPU minus idle (+ iowait). With a tickless idle
    // (NOHZ, Debian's default) the kernel measures idle time at idle entry and
    // exit, so this is precise, where user+system+irq+softirq are tick samples:
    // short bursts of work that end before the next tick (a veth NAPI poll
    // scheduled per packet, a woken relay thread) are sampled in proportion only
    // on average, and a sampling bias moves them by several % of a core here
    // (once the tick samples showed the machine less busy under a relay than
    // without it).
    let busy = if a.cpus > 0 && a.cpus == b.cpus && secs > 0.0 {
        let idle = (b.idle.saturating_sub(a.idle)) as f64 / hz;
        (100.0 * (secs * a.cpus as f64 - idle) / secs).max(0.0)
    } else {
        p(
            a.user + a.system + a.irq + a.softirq,
            b.user + b.system + b.irq + b.softirq,
        )
    };
    CpuDelta {
        softirq: p(a.softirq, b.softirq),
        system: p(a.system, b.system),
        user: p(a.user, b.user),
        irq: p(a.irq, b.irq),
        busy,
        steal: p(a.steal, b.steal),
    }
}

/// CPU time (user + system) of the calling thread, softirq run in its
/// context included (tick accounting charges it to the interrupted task).
pub fn thread_cpu() -> Duration {
    // SAFETY: all-zero rusage is valid; RUSAGE_THREAD fills it.
    let mut ru: libc::rusage = unsafe { zeroed() };
    // SAFETY: valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// UDP RcvbufErrors of namespace `ns` (datagrams its sockets dropped because
/// the receiving thread did not keep up).
pub fn rcvbuf_errors(ns: &str) -> u64 {
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

/// Datagrams dropped by `sock` in namespace `ns` because its receive buffer
/// was full (the `drops` column of /proc/net/udp for its local address).
pub fn socket_drops(ns: &str, sock: &UdpSocket) -> u64 {
    let Ok(SocketAddr::V4(local)) = sock.local_addr() else {
        return 0;
    };
    // The kernel prints the address as the in-memory (network order) u32.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(local.ip().octets()),
        local.port()
    );
    in_netns(ns, move || {
        let udp = std::fs::read_to_string("/proc/thread-self/net/udp").unwrap_or_default();
        udp.lines()
            .skip(1)
            .find(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    })
}

/// Packets dropped because a CPU's input backlog was full (softirq did not
/// keep up; `net.core.netdev_max_backlog`): /proc/net/softnet_stat column 2,
/// all CPUs, all namespaces.
pub fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// Reads and discards what still arrives at A and C (an earlier phase's
/// packets delayed in a relay) until both are quiet for 200 ms, at most 3 s.
fn settle(ep: &Endpoints) -> u64 {
    let mut b = Batch::new();
    let start = Instant::now();
    let mut quiet = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(3) && quiet.elapsed() < Duration::from_millis(200) {
        let got = b.recv(&ep.a) + b.recv(&ep.c);
        if got > 0 {
            n += got as u64;
            quiet = Instant::now();
        }
    }
    n
}

/// Runs one phase: A sends `pps_each_way` packets/s spread over the streams
/// for `secs`, C echoes; counts and latencies; CPU over the sending window
/// after a 0.5 s warm-up (whole machine, and `probes`, CPU times in ns read at
/// the same two instants: e.g. a relay process's utime+stime). Sending ends
/// early if [`INTERRUPTED`] is set.
pub fn run_phase(
    ep: &Endpoints,
    streams: u16,
    pps_each_way: f64,
    secs: f64,
    probes: &[&dyn Fn() -> u64],
) -> PhaseResult {
    let stale_before = settle(ep);
    let drops = || socket_drops(&ep.ns_a, &ep.a) + socket_drops(&ep.ns_c, &ep.c);
    let rb0 = drops();
    let phase = PHASE.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    let stop_rx = AtomicBool::new(false);
    // Datagrams seen by the echo and the receiver (progress, for the drain).
    let seen = AtomicU64::new(0);
    let warm = 0.5;
    let mut res = PhaseResult {
        target_pps_each_way: pps_each_way,
        stale: stale_before,
        ..PhaseResult::default()
    };
    std::thread::scope(|s| {
        // C: echo every packet of this phase back to its source, stamping the
        // echo time.
        let echo = s.spawn(|| {
            let c0 = thread_cpu();
            let mut b = Batch::new();
            let (mut recv, mut echoed, mut stale) = (0u64, 0u64, 0u64);
            let mut lat = Vec::with_capacity((pps_each_way * secs * 1.1) as usize);
            while !stop_rx.load(Ordering::Relaxed) {
                let n = b.recv(&ep.c);
                if n == 0 {
                    continue;
                }
                seen.fetch_add(n as u64, Ordering::Relaxed);
                let now = monotonic_ns();
                // Packets to echo are moved to the front of the batch.
                let mut k = 0;
                for i in 0..n {
                    let len = b.hdrs[i].msg_len as usize;
                    if len != PAYLOAD || rd32(&b.bufs[i], OFF_PHASE) != phase {
                        stale += 1;
                        continue;
                    }
                    if k != i {
                        b.bufs[k] = b.bufs[i];
                        b.addrs[k] = b.addrs[i];
                    }
                    let buf = &mut b.bufs[k];
                    lat.push(
                        now.saturating_sub(rd64(buf, OFF_TSEND))
                            .min(u64::from(u32::MAX)) as u32,
                    );
                    buf[OFF_TECHO..OFF_TECHO + 8].copy_from_slice(&now.to_ne_bytes());
                    k += 1;
                }
                recv += k as u64;
                // Source addresses were written by recvmmsg: send back.
                echoed += b.send(&ep.c, k, PAYLOAD) as u64;
            }
            (recv, echoed, stale, lat, thread_cpu().saturating_sub(c0))
        });
        // A: receive the echoes.
        let rx = s.spawn(|| {
            let c0 = thread_cpu();
            let mut b = Batch::new();
            let (mut recv, mut stale) = (0u64, 0u64);
            let mut lat = Vec::with_capacity((pps_each_way * secs * 1.1) as usize);
            while !stop_rx.load(Ordering::Relaxed) {
                let n = b.recv(&ep.a);
                seen.fetch_add(n as u64, Ordering::Relaxed);
                let now = monotonic_ns();
                for i in 0..n {
                    if b.hdrs[i].msg_len as usize != PAYLOAD || rd32(&b.bufs[i], OFF_PHASE) != phase
                    {
                        stale += 1;
                        continue;
                    }
                    let t = rd64(&b.bufs[i], OFF_TECHO);
                    lat.push(now.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                    recv += 1;
                }
            }
            (recv, stale, lat, thread_cpu().saturating_sub(c0))
        });

        // A: the generator (this thread), paced in 1 ms ticks.
        let g0 = thread_cpu();
        let mut b = Batch::new();
        let mut sent = 0u64;
        let mut seq = 0u64;
        let start = Instant::now();
        let mut cpu0 = None;
        let mut probe0 = None;
        let mut t_cpu0 = start;
        loop {
            let el = start.elapsed().as_secs_f64();
            if el >= secs || INTERRUPTED.load(Ordering::Relaxed) {
                break;
            }
            if cpu0.is_none() && el >= warm {
                cpu0 = Some(cpu_ticks());
                probe0 = Some(probes.iter().map(|p| p()).collect::<Vec<u64>>());
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
                    buf[OFF_PHASE..OFF_PHASE + 4].copy_from_slice(&phase.to_ne_bytes());
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
        let probe1: Vec<u64> = probes.iter().map(|p| p()).collect();
        let window = t_cpu0.elapsed().as_secs_f64();
        res.probe_ns = match probe0 {
            Some(p0) => probe1
                .iter()
                .zip(p0)
                .map(|(b, a)| b.saturating_sub(a))
                .collect(),
            None => vec![0; probes.len()],
        };
        res.window = window;
        res.elapsed = start.elapsed().as_secs_f64().min(secs.max(1e-9));
        res.cpu = cpu_delta(cpu0.unwrap_or(cpu1), cpu1, window.max(1e-9));
        res.sent_a = sent;
        let gen_cpu = thread_cpu().saturating_sub(g0);
        // Drain what is in flight (until nothing arrived for 300 ms; at most
        // 5 s: a starved relay can hold packets for a while), then stop the
        // receivers.
        let drain = Instant::now();
        let mut last = (seen.load(Ordering::Relaxed), Instant::now());
        while drain.elapsed() < Duration::from_secs(5)
            && last.1.elapsed() < Duration::from_millis(300)
        {
            std::thread::sleep(Duration::from_millis(50));
            let now = seen.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        stop_rx.store(true, Ordering::Relaxed);
        let (rc, ec, sc, lc, ecpu) = echo.join().unwrap_or_default();
        let (ra, sa, la, rcpu) = rx.join().unwrap_or_default();
        res.stale += sc + sa;
        let all = start.elapsed().as_secs_f64();
        res.threads_cpu = 100.0 * (gen_cpu + ecpu + rcpu).as_secs_f64() / all;
        res.recv_c = rc;
        res.echoed_c = ec;
        res.recv_a = ra;
        res.lat_ac = lc;
        res.lat_ca = la;
    });
    res.rcvbuf_drops = drops().saturating_sub(rb0);
    res
}

pub fn mac_of(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Direct veth A(eth1, 198.18.3.1) -- C(eth1, 198.18.3.2), XDP_PASS on both
/// ends like eth0, for the no-relay baseline. Deleted with the namespaces.
pub fn direct_link(t: &Topology) -> Vec<PassProgram> {
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

pub fn print_phase(name: &str, r: &mut PhaseResult) {
    println!(
        "  {name:<9} sent {:>7.0}/s (target {:>7.0})  relayed/echoed {:>7.0} pkt/s  \
         loss A->C {:.3}%  C->A {:.3}% (socket buffer drops {}{})  one-way p50/p90/p99 \
         A->C {:.0}/{:.0}/{:.0} us  C->A {:.0}/{:.0}/{:.0} us",
        r.sent_rate(),
        r.target_pps_each_way,
        r.relayed_pps(),
        100.0 * r.loss_ac(),
        100.0 * r.loss_ca(),
        r.rcvbuf_drops,
        if r.stale > 0 {
            format!("; {} late packets of an earlier run ignored", r.stale)
        } else {
            String::new()
        },
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

pub fn all_lat(r: &PhaseResult) -> impl Iterator<Item = u32> + '_ {
    r.lat_ac.iter().chain(r.lat_ca.iter()).copied()
}

/// C's socket on the direct veth: where A sends every stream with no relay.
pub const DIRECT_C: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 3, 2), C_PORT);

/// Binds A's and C's sockets (A 198.18.1.2:40000 and C 198.18.2.2:50000 facing
/// the SBC, or 198.18.3.1:40000 and 198.18.3.2:50000 on the direct veth of
/// [`direct_link`]); A sends stream i to `dests[i]`.
pub fn endpoints(t: &Topology, direct: bool, dests: Vec<SocketAddrV4>) -> Endpoints {
    let (a_addr, c_addr) = if direct {
        ("198.18.3.1", "198.18.3.2")
    } else {
        ("198.18.1.2", "198.18.2.2")
    };
    let a = bind_in(&t.a, &format!("{a_addr}:{A_PORT}"));
    let c = bind_in(&t.c, &format!("{c_addr}:{C_PORT}"));
    tune(&a);
    tune(&c);
    Endpoints {
        a,
        c,
        dests,
        ns_a: t.a.clone(),
        ns_c: t.c.clone(),
    }
}

/// Outcome of [`peak_search`].
#[derive(Clone, Debug)]
pub struct Peak {
    /// Highest relayed packets/s (both directions) of a step with < 0.5% loss.
    pub best: Option<f64>,
    /// What limited the first failing step (every reason that applies,
    /// generator first), or that no step failed.
    pub limit: String,
    /// The generator sent less than 95% of its target at the failing step.
    pub generator_limited: bool,
}

/// Peak rate with < 0.5% loss: the same streams, `steps` packets/s per stream
/// each way in order, `secs` per step, stopping at the first step with loss
/// (or with the generator short of its target). Each step runs through `via`
/// (printed as `label`) and the same load with no relay through `direct`:
/// at every step if `baseline_each_step`, else only at the failing step (to
/// tell the relay's limit from the generator's and the echo's). With
/// `relay_ns` (a socket relay's namespace), datagrams lost on the way are
/// split into the relay sockets' buffer drops there, the kernel's input
/// backlog drops, and the rest.
#[allow(clippy::too_many_arguments)]
pub fn peak_search(
    label: &str,
    via: &Endpoints,
    direct: &Endpoints,
    streams: u16,
    secs: f64,
    steps: &[u32],
    baseline_each_step: bool,
    relay_ns: Option<&str>,
) -> Peak {
    let mut peak = Peak {
        best: None,
        limit: String::from("nothing: every step had < 0.5% loss"),
        generator_limited: false,
    };
    for &pps in steps {
        if INTERRUPTED.load(Ordering::Relaxed) {
            peak.limit = String::from("interrupted");
            break;
        }
        let each_way = f64::from(streams) * f64::from(pps);
        let relay_drops = || relay_ns.map_or(0, rcvbuf_errors);
        let (rd0, bl0) = (relay_drops(), softnet_drops());
        let mut r = run_phase(via, streams, each_way, secs, &[]);
        let (rd, bl) = (
            relay_drops().saturating_sub(rd0),
            softnet_drops().saturating_sub(bl0),
        );
        let gen_short = r.sent_rate() < 0.95 * each_way;
        let ok = r.loss_total() < 0.005 && !gen_short;
        let mut b =
            (baseline_each_step || !ok).then(|| run_phase(direct, streams, each_way, secs, &[]));
        println!(
            "  step {pps} pkt/s per stream each way ({:.0} pkt/s relayed target):",
            2.0 * each_way
        );
        print_phase(label, &mut r);
        if relay_ns.is_some() {
            println!(
                "  {:<9} relay sockets' buffer drops {rd}; kernel backlog drops {bl}",
                ""
            );
        }
        if let Some(b) = b.as_mut() {
            print_phase("no relay", b);
        }
        if ok {
            peak.best = Some(r.relayed_pps());
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
            let split = if relay_ns.is_some() {
                format!(
                    ": {rd} in the relay's socket buffers, {bl} in the kernel input backlog, \
                     the rest not delivered by the end of the drain"
                )
            } else {
                String::new()
            };
            why.push(format!(
                "the path ({} datagrams lost before a socket{split}; {:.2}% loss without the \
                 relay)",
                lost - r.rcvbuf_drops,
                100.0 * b.as_ref().map_or(f64::NAN, PhaseResult::loss_total)
            ));
        }
        peak.limit = why.join("; ");
        peak.generator_limited = gen_short;
        break;
    }
    peak
}
