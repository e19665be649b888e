//! Relay CPU at a fixed, realistic load on one netns topology, in one run: no
//! relay, (a) the XDP relay, (b) our userspace relay, (c) Debian's rtpengine
//! (userspace, `--table=-1`) driven over NG (issue 4, "Benchmark"). On demand,
//! root; not a test.
//!
//! Topology (namespaces unique per run, deleted on every exit path, Ctrl-C
//! included): generator netns A (198.18.1.2) -- veth -- SBC netns (sbc0
//! 198.18.1.1, sbc1 198.18.2.1) -- veth -- echo netns C (198.18.2.2), plus a
//! direct veth A (198.18.3.1) -- C (198.18.3.2) for the no-relay baseline
//! (`ebpf-relay/tests/common/netns.rs`; generator, echo and CPU accounting in
//! `common/netns_load.rs`, shared with `ebpf-relay`'s xdp_load_bench).
//!
//! Load: `--streams` (1,000) G.711 streams, `--pps` (50) packets/s each way:
//! A's socket 198.18.1.2:40000 sends 172-byte RTP to the relay socket of each
//! stream, the relay sends it from the stream's other relay socket to C's
//! socket 198.18.2.2:50000, C echoes every packet back to where it came from,
//! and the relay sends it on to A (100,000 packets/s relayed in total). The
//! same two sockets and the same streams for every relay:
//! - (a) `Datapath` with `DatapathKind::Xdp` on sbc0 and sbc1 (native), one
//!   pair per stream with SDP peers and no learning (final at once, installed
//!   in XDP as strict: the benchmark waits until every direction is);
//! - (b) `Datapath` with `DatapathKind::Userspace` (`--workers`, default 1);
//! - (c) `rtpengine` started in the SBC namespace with two logical interfaces
//!   (`--interface=a/198.18.1.1 --interface=c/198.18.2.1`, `--num-threads`
//!   = `--workers`); per stream an offer from A with `direction: [a, c]` and
//!   an answer from C.
//!
//! Relay CPU, over the sending window after a 0.5 s warm-up, each minus the
//! mean of the no-relay runs before and after the round (same generator and
//! echo over the direct veth) where it says "- base":
//! - tasks - base: utime+stime of every task doing the benchmark's work: this
//!   process (generator, echo, receiver, our relay threads), the ksoftirqd
//!   threads, and rtpengine when it runs. The one measure for all three that
//!   other users' load on this shared machine does not enter;
//! - machine - base: whole-machine busy time, i.e. the window on every CPU
//!   minus /proc/stat idle+iowait (measured at idle entry and exit by a
//!   tickless kernel, so precise, unlike the tick-sampled
//!   user/system/softirq split), and the softirq part of the split (where
//!   the XDP program runs; tick-sampled); meaningless when the machine is
//!   busy with others (the report says so);
//! - relay own: our `relay-*` worker threads' utime+stime
//!   (/proc/self/task/*/stat) for (b), the whole rtpengine process's
//!   (/proc/<pid>/stat) for (c). Both include the kernel work run in their
//!   context (sends into the veth and the delivery to the peer's socket), not
//!   the receive path run in the sender's context.
//!
//! Ratios are per relayed packet: XDP / rtpengine (goal <= 0.10) by tasks,
//! by machine, and XDP softirq / rtpengine own; userspace / rtpengine (goal
//! <= 0.67) by relay own, tasks and machine. Loss per direction, one-way
//! latency p50/p99 (CLOCK_MONOTONIC stamps in the payload) and the added
//! latency against the no-relay runs; packets of an earlier run still in a
//! relay's queues are not counted (run number in the payload). `--peak` then
//! searches each relay's peak rate with < 0.5% loss (bounded steps of
//! `--peak-seconds`), saying when the generator, not the relay, was the limit.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/work/target-bench
//! cargo build --release -p media-engine --example netns_relay_bench
//! sudo flock /tmp/bench.lock $CARGO_TARGET_DIR/release/examples/netns_relay_bench \
//!     [--streams 1000] [--pps 50] [--seconds 10] [--rounds 1] [--workers 1] \
//!     [--only xdp,userspace,rtpengine] [--peak] [--peak-seconds 3] [--nice 0] \
//!     [--peer-poll-us 0] [--io auto|io_uring|epoll] [--coalesce-us 100] \
//!     [--xdp-mode native|generic] [--no-connect] [--pin] [--threaded-napi]
//! ```
//!
//! `--threaded-napi`: the SBC's two veths poll like a NIC's queues, for every relay: GRO on
//! (a veth NAPI without XDP too) and threaded NAPI (`/sys/class/net/<dev>/threaded`, an
//! operator setting), so that a kernel thread polls what has queued meanwhile instead of a
//! softirq run for every packet a sender puts in; polls batch, as a NIC's interrupt
//! coalescing makes them. The threads' CPU is in "tasks". The peers' veths do not change.
//!
//! `--pin`: the relay under test (our `relay-*` threads, the whole rtpengine process) on the
//! last CPU, generator, echo and receivers on the others, alike for every relay and round
//! (`common/pin.rs` says why). The XDP relay runs in the senders' softirq, on their CPUs.
//!
//! `--no-connect`: the userspace relay sends from its unconnected relay sockets only (no
//! connected twin per latched leg), for comparison.
//!
//! `--peer-poll-us N`: the generator's and the echo's receivers poll (sleeping N us when
//! empty) instead of blocking. A blocked receiver is woken by each datagram, and on one
//! machine that wake-up (an inter-processor interrupt; a VM exit here) runs in the context of
//! whoever delivered the datagram, i.e. is charged to the relay under test (about a sixth of
//! the userspace relay's time here); peers on other hosts cost a relay nothing of the kind.
//!
//! `--nice -10` runs every benchmark thread and rtpengine at that nice value:
//! on a machine that other users load, a starved relay queues packets for
//! seconds (latency, late packets counted as lost) and a starved generator
//! falls short; the header and every run print the other users' share.

#[allow(dead_code)]
#[path = "../../ebpf-relay/tests/common/netns.rs"]
mod netns;

#[allow(dead_code)]
#[path = "common/netns_load.rs"]
mod load;

#[allow(dead_code)]
#[path = "common/ng.rs"]
mod ng;

#[path = "common/rtpengine_netns.rs"]
mod rtpengine_netns;

#[path = "common/pin.rs"]
mod pin;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use load::*;
use media_engine::datapath::{
    AttachMode, Datapath, DatapathConfig, DatapathKind, FlowPairSpec, LearnPolicy, LegSpec,
    RelayIo, RelayStats, UserspaceOptions, UserspaceStats, DEFAULT_COALESCE,
};
use netns::{bind_in, in_netns, Topology};
use rtpengine_netns::{NetnsRtpengine, RtpengineOptions};

const SBC_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const SBC_C: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const PARTY_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 2), A_PORT);
const PARTY_C: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 2), C_PORT);
/// Our relay sockets: 198.18.1.1:20000+i facing A, 198.18.2.1:30000+i facing C.
const A_LEG_BASE: u16 = 20000;
const C_LEG_BASE: u16 = 30000;
/// rtpengine's port range starts here (it allocates RTP+RTCP per side).
const RTPENGINE_PORT_MIN: u16 = 20000;
/// Peak search: packets/s per stream each way.
const PEAK_STEPS: [u32; 7] = [50, 75, 100, 125, 150, 200, 300];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    Xdp,
    Userspace,
    Rtpengine,
}

impl Relay {
    const ALL: [Relay; 3] = [Relay::Xdp, Relay::Userspace, Relay::Rtpengine];

    fn name(self) -> &'static str {
        match self {
            Relay::Xdp => "xdp",
            Relay::Userspace => "userspace",
            Relay::Rtpengine => "rtpengine",
        }
    }
}

#[derive(Clone, Debug)]
struct Args {
    streams: u16,
    pps: u32,
    seconds: f64,
    rounds: usize,
    workers: usize,
    only: Vec<Relay>,
    peak: bool,
    peak_seconds: f64,
    /// Nice value of every benchmark thread and of rtpengine (inherited).
    nice: i32,
    /// `--pin`: where the relay and the load run.
    pin: Option<pin::Placement>,
    /// Receivers of the generator and echo poll (sleeping this long when empty) instead of
    /// blocking; see `PEER_POLL_US`.
    peer_poll_us: u64,
    /// No connected twin sockets for latched legs (`UserspaceOptions::connect_latched`).
    no_connect: bool,
    /// `--threaded-napi`: the SBC veths' NAPI (XDP relay only) runs in kernel threads.
    threaded_napi: bool,
    /// Socket I/O of our userspace relay.
    io: RelayIo,
    /// io_uring coalescing window (default: the library's).
    coalesce_us: Option<u64>,
    /// How the XDP relay attaches to sbc0/sbc1 (native by default).
    xdp_mode: AttachMode,
}

/// Our relay's threads: the workers, and io_uring's kernel workers (`iou-wrk-*`, should the
/// ring ever punt a request to them) which belong to this process and only the relay uses.
const RELAY_THREADS: &[&str] = &["relay-", "iou-"];

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        streams: 1000,
        pps: 50,
        seconds: 10.0,
        rounds: 1,
        workers: 1,
        only: Relay::ALL.to_vec(),
        peak: false,
        peak_seconds: 3.0,
        nice: 0,
        peer_poll_us: 0,
        pin: None,
        no_connect: false,
        threaded_napi: false,
        io: RelayIo::Auto,
        coalesce_us: None,
        xdp_mode: AttachMode::Native,
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
            "--rounds" => a.rounds = v.parse().map_err(|_| bad("--rounds"))?,
            "--workers" => a.workers = v.parse().map_err(|_| bad("--workers"))?,
            "--peak-seconds" => a.peak_seconds = v.parse().map_err(|_| bad("--peak-seconds"))?,
            "--nice" => a.nice = v.parse().map_err(|_| bad("--nice"))?,
            "--io" => a.io = v.parse().map_err(|_| bad("--io"))?,
            "--xdp-mode" => {
                a.xdp_mode = match v.as_str() {
                    "native" => AttachMode::Native,
                    "generic" => AttachMode::Generic,
                    _ => return Err(bad("--xdp-mode")),
                }
            }
            "--coalesce-us" => a.coalesce_us = Some(v.parse().map_err(|_| bad("--coalesce-us"))?),
            "--peer-poll-us" => a.peer_poll_us = v.parse().map_err(|_| bad("--peer-poll-us"))?,
            "--only" => {
                let names: Vec<&str> = v.split(',').filter(|s| !s.is_empty()).collect();
                for n in &names {
                    if !Relay::ALL.iter().any(|r| r.name() == *n) {
                        return Err(format!(
                            "--only: unknown relay {n:?} (xdp,userspace,rtpengine)"
                        ));
                    }
                }
                a.only = Relay::ALL
                    .into_iter()
                    .filter(|r| names.contains(&r.name()))
                    .collect();
            }
            "--threaded-napi" => {
                a.threaded_napi = true;
                i += 1;
                continue;
            }
            "--no-connect" => {
                a.no_connect = true;
                i += 1;
                continue;
            }
            "--peak" => {
                a.peak = true;
                i += 1;
                continue;
            }
            "--pin" => {
                a.pin = Some(pin::Placement::new().map_err(|e| format!("--pin: {e}"))?);
                i += 1;
                continue;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: netns_relay_bench [--streams 1000] [--pps 50] [--seconds 10] \
                     [--rounds 1] [--workers 1] [--only xdp,userspace,rtpengine] [--peak] \
                     [--peak-seconds 3] [--nice 0] [--pin] (see the source's header)"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 2;
    }
    let bounded = (1..=10000).contains(&a.streams)
        && (1..=1000).contains(&a.pps)
        && a.seconds > 0.0
        && a.seconds <= 120.0
        && (1..=10).contains(&a.rounds)
        && (1..=16).contains(&a.workers)
        && a.peak_seconds > 0.0
        && a.peak_seconds <= 30.0
        && (-20..=19).contains(&a.nice)
        && !a.only.is_empty();
    if !bounded {
        return Err(
            "need 1..=10000 streams, 1..=1000 pps, 0 < seconds <= 120, 1..=10 rounds, \
                    1..=16 workers, 0 < peak-seconds <= 30, nice -20..=19 and at least one relay"
                .into(),
        );
    }
    Ok(a)
}

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // A second signal ends the process the default way.
    // SAFETY: signal() is async-signal-safe on Linux (sigaction).
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// PIDs of the ksoftirqd threads (softirq work deferred out of the context
/// of the task that raised it runs there).
fn ksoftirqd_pids() -> Vec<u32> {
    pids_where_comm(|c| c.starts_with("ksoftirqd/"))
}

/// PIDs of the processes and kernel threads whose name satisfies `f`.
fn pids_where_comm(f: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| f(&c)))
        .collect()
}

/// CPU time (utime+stime, ns) of every task doing the benchmark's work: this
/// process (generator, echo, receiver, our relay threads), ksoftirqd, and
/// rtpengine when it runs. Unlike the whole-machine figures, other users'
/// load on the shared machine is not in it.
fn tasks_cpu_ns(ksoftirqd: &[u32], rtpengine: Option<u32>) -> u64 {
    ng::pid_cpu_ns(std::process::id())
        + ksoftirqd.iter().map(|&p| ng::pid_cpu_ns(p)).sum::<u64>()
        + rtpengine.map_or(0, ng::pid_cpu_ns)
        + sbc_napi_threads()
            .iter()
            .map(|&p| ng::pid_cpu_ns(p))
            .sum::<u64>()
}

/// `--threaded-napi`: the SBC's veths poll like a NIC's queues. GRO on gives a veth NAPI
/// without XDP too, and threaded NAPI polls it from a kernel thread that takes what has
/// queued meanwhile, instead of a softirq run for each packet the sender puts in.
fn sbc_threaded_napi(t: &Topology) {
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &t.sbc,
            "sh",
            "-c",
            "for d in sbc0 sbc1; do ethtool -K $d gro on && echo 1 > /sys/class/net/$d/threaded || exit 1; done",
        ],
    );
}

/// The kernel threads polling the SBC veths under `--threaded-napi` (`napi/sbc0-<id>`,
/// `napi/sbc1-<id>`; none otherwise), looked up at every probe: they come and go with the
/// XDP relay's attachment.
fn sbc_napi_threads() -> Vec<u32> {
    pids_where_comm(|c| c.starts_with("napi/sbc0-") || c.starts_with("napi/sbc1-"))
}

/// Time (ns) the threads of process `pid` ("self" or a PID) whose name
/// starts with `prefix` spent runnable but waiting for a CPU (schedstat
/// run_delay): how much other load delayed them.
fn sched_wait_ns(pid: &str, prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .filter_map(|t| {
            let st = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            st.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Probes of every phase: the relay's own CPU, the benchmark's tasks, the
/// relay's and this process's time waiting for a CPU.
const OWN: usize = 0;
const TASKS: usize = 1;
const RELAY_WAIT: usize = 2;
const SELF_WAIT: usize = 3;

/// A relay set up in the SBC namespace between A's and C's sockets.
enum Running {
    Ours(Datapath),
    Rtpengine(NetnsRtpengine),
}

impl Running {
    /// CPU time (ns) of the relay's own threads/process.
    fn own_cpu_ns(&self) -> u64 {
        match self {
            Running::Ours(_) => ng::threads_cpu_ns(RELAY_THREADS),
            Running::Rtpengine(r) => ng::pid_cpu_ns(r.pid()),
        }
    }

    /// Time (ns) the relay's threads waited for a CPU while runnable.
    fn wait_ns(&self) -> u64 {
        match self {
            Running::Ours(_) => sched_wait_ns("self", "relay-"),
            Running::Rtpengine(r) => sched_wait_ns(&r.pid().to_string(), ""),
        }
    }

    fn rtpengine_pid(&self) -> Option<u32> {
        match self {
            Running::Ours(_) => None,
            Running::Rtpengine(r) => Some(r.pid()),
        }
    }

    /// Socket I/O of our userspace relay (io_uring or epoll).
    fn relay_io(&self) -> &'static str {
        match self {
            Running::Ours(dp) => dp.relay_io().as_str(),
            Running::Rtpengine(_) => "-",
        }
    }

    fn counters(&self) -> (Option<RelayStats>, Option<UserspaceStats>) {
        match self {
            Running::Ours(dp) => (
                dp.xdp_stats().and_then(Result::ok),
                Some(dp.userspace_stats()),
            ),
            Running::Rtpengine(_) => (None, None),
        }
    }

    /// Stops the relay (XDP detached, sockets closed, daemon stopped) from
    /// the SBC namespace.
    fn stop(self, t: &Topology) {
        match self {
            Running::Ours(dp) => in_netns(&t.sbc, move || drop(dp)),
            Running::Rtpengine(r) => drop(r),
        }
    }
}

fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// Starts `relay` in the SBC namespace with one relayed stream per A -> C
/// stream; returns it and where A sends each stream.
fn start_relay(
    relay: Relay,
    t: &Topology,
    args: &Args,
) -> Result<(Running, Vec<SocketAddrV4>), String> {
    let streams = args.streams;
    match relay {
        Relay::Xdp | Relay::Userspace => {
            let cfg = DatapathConfig {
                kind: if relay == Relay::Xdp {
                    DatapathKind::Xdp
                } else {
                    DatapathKind::Userspace
                },
                xdp_interfaces: vec!["sbc0".into(), "sbc1".into()],
                attach_mode: args.xdp_mode,
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
            let dp = in_netns(&t.sbc, move || -> Result<Datapath, String> {
                let dp = Datapath::start(&cfg, None).map_err(|e| format!("datapath: {e}"))?;
                for i in 0..streams {
                    let spec = FlowPairSpec {
                        a: LegSpec {
                            local: v4(SBC_A, A_LEG_BASE + i),
                            peer: Some(SocketAddr::V4(PARTY_A)),
                            learn: LearnPolicy::Off,
                        },
                        b: LegSpec {
                            local: v4(SBC_C, C_LEG_BASE + i),
                            peer: Some(SocketAddr::V4(PARTY_C)),
                            learn: LearnPolicy::Off,
                        },
                        rtcp: None,
                    };
                    dp.create_pair(spec)
                        .map_err(|e| format!("create pair {i}: {e}"))?;
                }
                Ok(dp)
            })?;
            if let (Some(p), Relay::Userspace) = (&args.pin, relay) {
                p.pin_relay(std::process::id(), RELAY_THREADS)
                    .map_err(|e| format!("pin the relay threads: {e}"))?;
            }
            if relay == Relay::Xdp && args.threaded_napi {
                // Attaching XDP may have made the veths' NAPI anew.
                sbc_threaded_napi(t);
            }
            if relay == Relay::Xdp {
                // Final at once (SDP peers, no learning); installation is
                // asynchronous: wait (bounded) until every direction is in XDP.
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    let pairs = dp.pairs();
                    let in_xdp = pairs
                        .iter()
                        .filter(|p| p.a_to_b_in_xdp && p.b_to_a_in_xdp)
                        .count();
                    if in_xdp == usize::from(streams) {
                        break;
                    }
                    if Instant::now() > deadline || INTERRUPTED.load(Ordering::Relaxed) {
                        let r = Running::Ours(dp);
                        r.stop(t);
                        return Err(format!(
                            "only {in_xdp} of {streams} pairs installed in XDP after 10 s"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let dests = (0..streams)
                .map(|i| SocketAddrV4::new(SBC_A, A_LEG_BASE + i))
                .collect();
            Ok((Running::Ours(dp), dests))
        }
        Relay::Rtpengine => {
            let ctl = bind_in(&t.sbc, "127.0.0.1:0");
            let port_max = u32::from(RTPENGINE_PORT_MIN) + 4 * u32::from(streams) + 100;
            let mut r = NetnsRtpengine::start(RtpengineOptions {
                netns: &t.sbc,
                interfaces: &[("a", SBC_A), ("c", SBC_C)],
                port_min: RTPENGINE_PORT_MIN,
                port_max: u16::try_from(port_max.min(65535)).unwrap_or(u16::MAX),
                threads: args.workers,
                ctl,
            })?;
            if let Some(p) = &args.pin {
                p.pin_relay(r.pid(), &[])
                    .map_err(|e| format!("pin rtpengine: {e}"))?;
            }
            let mut dests = Vec::with_capacity(usize::from(streams));
            for i in 0..streams {
                interrupted()?;
                let (toward_c, toward_a) =
                    r.call(&format!("bench-{i}"), PARTY_A, PARTY_C, ["a", "c"])?;
                if toward_c.ip() != &SBC_C || toward_a.ip() != &SBC_A {
                    return Err(format!(
                        "rtpengine ignored the direction: media at {toward_a} for A and \
                         {toward_c} for C (expected {SBC_A} and {SBC_C})"
                    ));
                }
                dests.push(toward_a);
            }
            Ok((Running::Rtpengine(r), dests))
        }
    }
}

/// CPU figures of a run (% of one core over its window).
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// Whole machine: the window on every CPU minus /proc/stat idle (see `cpu_delta`).
    busy: f64,
    softirq: f64,
    /// The benchmark's tasks ([`tasks_cpu_ns`]).
    tasks: f64,
}

impl Cpu {
    fn of(r: &PhaseResult) -> Self {
        Cpu {
            busy: r.cpu.busy,
            softirq: r.cpu.softirq,
            tasks: r.probe_pct(TASKS),
        }
    }

    fn mean(a: Cpu, b: Cpu) -> Cpu {
        Cpu {
            busy: (a.busy + b.busy) / 2.0,
            softirq: (a.softirq + b.softirq) / 2.0,
            tasks: (a.tasks + b.tasks) / 2.0,
        }
    }
}

/// One relay's fixed-load run, with what it is compared to.
struct Measured {
    relay: Relay,
    r: PhaseResult,
    /// Mean of the no-relay runs before and after the round.
    base: Cpu,
    /// Datagrams dropped by full receive buffers in the SBC namespace (the
    /// relay's own sockets).
    relay_rcvbuf_drops: u64,
}

impl Measured {
    fn delta(&self) -> Cpu {
        let c = Cpu::of(&self.r);
        Cpu {
            busy: c.busy - self.base.busy,
            softirq: c.softirq - self.base.softirq,
            tasks: c.tasks - self.base.tasks,
        }
    }
}

/// ns of CPU per relayed packet for `pct` % of one core.
fn per_packet_ns(pct: f64, pps: f64) -> f64 {
    1e7 * pct / pps.max(1.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints a phase: the shared line, then this benchmark's CPU figures.
fn print_run(name: &str, r: &mut PhaseResult, own: Option<&str>, extra: &[String]) {
    print_phase(name, r);
    let ncpu = cpu_ticks().cpus.max(1) as f64;
    let mut notes = vec![format!(
        "benchmark tasks (this process + ksoftirqd{}) {:.1}%; machine busy minus these tasks \
         (other users) {:.1}% of \
         {:.0}%",
        if own == Some(OWN_RTPENGINE) {
            " + rtpengine"
        } else {
            ""
        },
        r.probe_pct(TASKS),
        r.cpu.busy - r.probe_pct(TASKS),
        100.0 * ncpu
    )];
    if let Some(own) = own {
        notes.push(format!("relay own CPU ({own}) {:.1}%", r.probe_pct(OWN)));
        notes.push(format!(
            "relay runnable but waiting for a CPU {:.1}% of the time",
            r.probe_pct(RELAY_WAIT)
        ));
    }
    notes.push(format!(
        "this process's threads waiting for a CPU {:.1}% (sum over threads)",
        r.probe_pct(SELF_WAIT)
    ));
    notes.extend_from_slice(extra);
    println!("  {:<9} {}", "", notes.join("; "));
}

const OWN_OURS: &str = "utime+stime of our relay-* threads";
const OWN_RTPENGINE: &str = "utime+stime of the rtpengine process";

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("netns_relay_bench: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netns_relay_bench needs root (network namespaces, XDP)");
        std::process::exit(2);
    }
    PEER_POLL_US.store(args.peer_poll_us, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic and resets itself.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    raise_nofile();
    if let Some(p) = &args.pin {
        // Before any thread is spawned: the load threads and rtpengine inherit it.
        if let Err(e) = p.pin_self_to_load() {
            eprintln!("netns_relay_bench: --pin: {e}");
            std::process::exit(2);
        }
    }
    if args.nice != 0 {
        // Before any thread is spawned: threads and rtpengine inherit it.
        // SAFETY: plain setpriority on this thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, args.nice) } != 0 {
            eprintln!(
                "netns_relay_bench: setpriority({}): {}",
                args.nice,
                std::io::Error::last_os_error()
            );
            std::process::exit(1);
        }
    }
    // Namespaces, XDP programs and rtpengine are released by drops on the way
    // out of bench(): errors, panics (unwinding) and Ctrl-C (INTERRUPTED ends
    // the current phase early, then bench() returns an error) included.
    if let Err(e) = bench(&args) {
        eprintln!("netns_relay_bench failed: {e}");
        std::process::exit(1);
    }
}

fn rtpengine_version() -> String {
    std::process::Command::new("rtpengine")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .trim()
            .to_string()
        })
        .unwrap_or_else(|_| "not installed".into())
}

fn bench(args: &Args) -> Result<(), String> {
    let streams = args.streams;
    let rate = f64::from(streams) * f64::from(args.pps); // each way
    let t = Topology::new(true);
    if args.threaded_napi {
        sbc_threaded_napi(&t);
    }
    let direct_pass = direct_link(&t);
    let mut via = endpoints(&t, false, Vec::new());
    let direct = endpoints(&t, true, vec![DIRECT_C; usize::from(streams)]);
    let ksoftirqd = ksoftirqd_pids();
    println!(
        "netns relay benchmark: {streams} bidirectional G.711 streams ({PAYLOAD}-byte RTP), {} \
         pkt/s each way per stream = {:.0} pkt/s relayed in total; relays: {}; {} round(s) of \
         {:.0} s per run; {} userspace worker(s) / rtpengine thread(s); nice {}; peers {}; XDP {:?} mode; {}; rtpengine: {}; \
         namespaces {} {} {}; {} CPUs, load average before: {}",
        args.pps,
        2.0 * rate,
        args.only
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.rounds,
        args.seconds,
        args.workers,
        args.nice,
        if args.peer_poll_us > 0 {
            format!("poll every {} us", args.peer_poll_us)
        } else {
            "block in recvmmsg".to_string()
        },
        args.xdp_mode,
        args.pin
            .as_ref()
            .map_or("unpinned".to_string(), pin::Placement::describe),
        rtpengine_version(),
        t.a,
        t.sbc,
        t.c,
        cpu_ticks().cpus,
        loadavg()
    );

    if args.threaded_napi {
        println!(
            "sbc0/sbc1 with GRO and threaded NAPI for every relay (their napi/* kernel threads \
             counted in tasks)"
        );
    }
    // Fixed load: per round the baseline, each relay, and the baseline again
    // (the next round's first): the machine is shared, the two baselines
    // show the drift.
    let mut baselines: Vec<PhaseResult> = Vec::new();
    let mut measured: Vec<Measured> = Vec::new();
    let run_base = |baselines: &mut Vec<PhaseResult>| -> Result<(), String> {
        interrupted()?;
        let none = || 0;
        let tasks = || tasks_cpu_ns(&ksoftirqd, None);
        let backlog0 = softnet_drops();
        let self_wait = || sched_wait_ns("self", "");
        let mut b = run_phase(
            &direct,
            streams,
            rate,
            args.seconds,
            &[&none, &tasks, &none, &self_wait],
        );
        let backlog = softnet_drops().saturating_sub(backlog0);
        interrupted()?;
        print_run(
            "no relay",
            &mut b,
            None,
            &[format!("kernel backlog drops {backlog}")],
        );
        baselines.push(b);
        Ok(())
    };
    for round in 1..=args.rounds {
        println!(" round {round}:");
        if round == 1 {
            run_base(&mut baselines)?;
        }
        let mut this_round = Vec::new();
        for &relay in &args.only {
            interrupted()?;
            let (running, dests) = start_relay(relay, &t, args)?;
            via.dests = dests;
            let (x0, u0) = running.counters();
            let relay_io = running.relay_io();
            let sbc_drops0 = rcvbuf_errors(&t.sbc);
            let backlog0 = softnet_drops();
            let own = || running.own_cpu_ns();
            let tasks = || tasks_cpu_ns(&ksoftirqd, running.rtpengine_pid());
            let relay_wait = || running.wait_ns();
            let self_wait = || sched_wait_ns("self", "");
            let mut r = run_phase(
                &via,
                streams,
                rate,
                args.seconds,
                &[&own, &tasks, &relay_wait, &self_wait],
            );
            let relay_rcvbuf_drops = rcvbuf_errors(&t.sbc).saturating_sub(sbc_drops0);
            let backlog = softnet_drops().saturating_sub(backlog0);
            let (x1, u1) = running.counters();
            running.stop(&t);
            interrupted()?;
            let mut notes = vec![
                format!("relay sockets' buffer drops {relay_rcvbuf_drops}"),
                format!("kernel backlog drops {backlog}"),
            ];
            if let (Some(a), Some(b)) = (x0, x1) {
                notes.push(format!("XDP program: {}", b.since(&a)));
            }
            if let (Some(a), Some(b)) = (u0, u1) {
                notes.push(format!(
                    "userspace relay ({}) received {} sent {} (from connected sockets {}, send failures {})",
                    relay_io,
                    b.received - a.received,
                    b.sent - a.sent,
                    b.connected_sends - a.connected_sends,
                    b.send_failed - a.send_failed
                ));
            }
            let own = if relay == Relay::Rtpengine {
                OWN_RTPENGINE
            } else {
                OWN_OURS
            };
            print_run(relay.name(), &mut r, Some(own), &notes);
            this_round.push((relay, r, relay_rcvbuf_drops));
        }
        run_base(&mut baselines)?;
        let base = Cpu::mean(Cpu::of(&baselines[round - 1]), Cpu::of(&baselines[round]));
        for (relay, r, relay_rcvbuf_drops) in this_round {
            measured.push(Measured {
                relay,
                r,
                base,
                relay_rcvbuf_drops,
            });
        }
    }
    report(args, &baselines, &measured);

    if args.peak {
        println!(
            "peak search: {streams} streams, {:.0} s per step, steps of {:?} pkt/s per stream \
             each way; the no-relay run only at the failing step:",
            args.peak_seconds, PEAK_STEPS
        );
        let mut peaks = Vec::new();
        for &relay in &args.only {
            interrupted()?;
            println!(" {}:", relay.name());
            let (running, dests) = start_relay(relay, &t, args)?;
            via.dests = dests;
            let p = peak_search(
                relay.name(),
                &via,
                &direct,
                streams,
                args.peak_seconds,
                &PEAK_STEPS,
                false,
                (relay != Relay::Xdp).then_some(t.sbc.as_str()),
            );
            running.stop(&t);
            peaks.push((relay, p));
        }
        println!("PEAK with < 0.5% loss (both directions relayed):");
        for (relay, p) in &peaks {
            let verdict = if p.generator_limited {
                "=> the GENERATOR, not the relay, was the limit"
            } else if p.limit.starts_with("nothing") {
                "=> the relay kept up with every step"
            } else if !p.limit.contains("the path") {
                "=> drops at the echo/receiver sockets, not in the relay"
            } else {
                "=> loss on the relay path"
            };
            match p.best {
                Some(b) => println!(
                    "  {:<9} {b:.0} pkt/s; the next step was limited by {} {verdict}",
                    relay.name(),
                    p.limit
                ),
                None => println!(
                    "  {:<9} none: the first step failed, limited by {} {verdict}",
                    relay.name(),
                    p.limit
                ),
            }
        }
    }
    println!("load average after: {}", loadavg());
    drop(via);
    drop(direct);
    drop(direct_pass);
    drop(t);
    interrupted()
}

fn report(args: &Args, baselines: &[PhaseResult], measured: &[Measured]) {
    let mut base_lat: Vec<u32> = baselines.iter().flat_map(all_lat).collect();
    let (b50, b99) = (pct(&mut base_lat, 0.5), pct(&mut base_lat, 0.99));
    let base_pps = median(baselines.iter().map(PhaseResult::relayed_pps).collect());
    let loss = |sent: u64, got: u64| 100.0 * (1.0 - got as f64 / sent.max(1) as f64);
    println!(
        "RESULTS at {} streams x {} pkt/s each way ({} round(s) of {:.0} s; medians over \
         rounds). CPU cells: % of one core over the sending window, and ns per relayed packet.",
        args.streams, args.pps, args.rounds, args.seconds
    );
    println!(
        "  {:<10} {:>7} {:>8} {:>8} {:>14} {:>14} | {:>17} {:>17} {:>17} | {:>17}",
        "relay",
        "pkt/s",
        "loss A>C",
        "loss C>A",
        "p50/p99 us",
        "added p50/p99",
        "tasks - base",
        "machine - base",
        "softirq - base",
        "relay own"
    );
    let bc = |f: fn(&PhaseResult) -> f64| median(baselines.iter().map(f).collect());
    println!(
        "  {:<10} {:>7.0} {:>7.3}% {:>7.3}% {:>14} {:>14} | {:>17} {:>17} {:>17} | {:>17}",
        "no relay",
        base_pps,
        loss(
            baselines.iter().map(|b| b.sent_a).sum(),
            baselines.iter().map(|b| b.recv_c).sum()
        ),
        loss(
            baselines.iter().map(|b| b.echoed_c).sum(),
            baselines.iter().map(|b| b.recv_a).sum()
        ),
        format!("{b50:.0}/{b99:.0}"),
        "-",
        format!("(tasks {:.1}%)", bc(|b| b.probe_pct(TASKS))),
        format!("(busy {:.1}%)", bc(|b| b.cpu.busy)),
        format!("(softirq {:.1}%)", bc(|b| b.cpu.softirq)),
        "-"
    );
    // Per relay: CPU per relayed packet (tasks, machine, softirq, own), ns.
    let mut per_pkt: Vec<(Relay, [f64; 4])> = Vec::new();
    for relay in Relay::ALL {
        let ms: Vec<&Measured> = measured.iter().filter(|m| m.relay == relay).collect();
        if ms.is_empty() {
            continue;
        }
        let mut lat: Vec<u32> = ms.iter().flat_map(|m| all_lat(&m.r)).collect();
        let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
        let pps = median(ms.iter().map(|m| m.r.relayed_pps()).collect());
        let med = |f: fn(&Measured) -> f64| median(ms.iter().map(|m| f(m)).collect());
        let cpu = [
            med(|m| m.delta().tasks),
            med(|m| m.delta().busy),
            med(|m| m.delta().softirq),
            med(|m| m.r.probe_pct(OWN)),
        ];
        let cell = |p: f64| format!("{p:.1}% {:.0} ns", per_packet_ns(p, pps));
        println!(
            "  {:<10} {:>7.0} {:>7.3}% {:>7.3}% {:>14} {:>14} | {:>17} {:>17} {:>17} | {:>17}",
            relay.name(),
            pps,
            loss(
                ms.iter().map(|m| m.r.sent_a).sum(),
                ms.iter().map(|m| m.r.recv_c).sum()
            ),
            loss(
                ms.iter().map(|m| m.r.echoed_c).sum(),
                ms.iter().map(|m| m.r.recv_a).sum()
            ),
            format!("{p50:.0}/{p99:.0}"),
            format!("{:.0}/{:.0}", p50 - b50, p99 - b99),
            cell(cpu[0]),
            cell(cpu[1]),
            cell(cpu[2]),
            if relay == Relay::Xdp {
                "(no process)".to_string()
            } else {
                cell(cpu[3])
            },
        );
        let drops: u64 = ms.iter().map(|m| m.relay_rcvbuf_drops).sum();
        if drops > 0 {
            println!(
                "  {:<10} relay sockets dropped {drops} datagrams (full buffers)",
                ""
            );
        }
        per_pkt.push((relay, cpu.map(|c| per_packet_ns(c, pps))));
    }
    let ncpu = cpu_ticks().cpus.max(1) as f64;
    let max_busy = measured
        .iter()
        .map(|m| m.r.cpu.busy)
        .chain(baselines.iter().map(|b| b.cpu.busy))
        .fold(0.0, f64::max);
    println!(
        "  loss: A>C of what A sent, C>A of what C echoed. Latency: one-way, both directions \
         pooled, us; added = relay - no relay. tasks = utime+stime of this process (generator, \
         echo, receiver, our relay threads), ksoftirqd and rtpengine (when it runs), minus the \
         mean of the no-relay runs before and after; machine = all CPUs' time minus \
         /proc/stat idle+iowait (precise with a tickless kernel) minus the same; softirq = \
         /proc/stat softirq (tick-sampled) minus the same; relay own = utime+stime of our relay-* threads or of the rtpengine \
         process (includes the sends into the veth and the delivery to the peer's socket run \
         in their context)."
    );
    if max_busy > 0.9 * 100.0 * ncpu {
        println!(
            "  WARNING: the machine was busy up to {max_busy:.0}% of {:.0}% during these runs \
             (other users' load): the whole-machine differences (machine, softirq) are not \
             meaningful; use tasks and relay own.",
            100.0 * ncpu
        );
    }
    let get = |r: Relay| per_pkt.iter().find(|p| p.0 == r).map(|p| p.1);
    let verdict = |ratio: f64, goal: f64| {
        if !ratio.is_finite() {
            "n/a"
        } else if ratio <= goal {
            "MET"
        } else {
            "NOT MET"
        }
    };
    let Some(rte) = get(Relay::Rtpengine) else {
        println!("RATIOS: rtpengine not measured (--only): no ratios");
        return;
    };
    let (xdp, user) = (get(Relay::Xdp), get(Relay::Userspace));
    if xdp.is_none() && user.is_none() {
        println!("RATIOS: neither xdp nor userspace measured (--only): no ratios");
        return;
    }
    println!("RATIOS of CPU per relayed packet (goal):");
    if let Some(x) = xdp {
        for (what, r) in [
            ("XDP / rtpengine, tasks - base both", x[0] / rte[0]),
            ("XDP / rtpengine, machine - base both", x[1] / rte[1]),
            ("XDP softirq - base / rtpengine own", x[2] / rte[3]),
        ] {
            println!("  {what:<44} {r:>7.3} (<= 0.10) {}", verdict(r, 0.10));
        }
    }
    if let Some(u) = user {
        for (what, r) in [
            ("userspace / rtpengine, relay own", u[3] / rte[3]),
            ("userspace / rtpengine, tasks - base both", u[0] / rte[0]),
            ("userspace / rtpengine, machine - base both", u[1] / rte[1]),
        ] {
            println!("  {what:<44} {r:>7.3} (<= 0.67) {}", verdict(r, 0.67));
        }
    }
}
