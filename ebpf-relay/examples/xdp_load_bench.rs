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
// Generator, echo, CPU accounting and peak search, shared with media-engine's
// netns_relay_bench (XDP vs userspace vs rtpengine).
#[allow(dead_code)]
#[path = "../../media-engine/examples/common/netns_load.rs"]
mod load;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use ebpf_relay::{AttachMode, FlowSpec, RelayOptions, SourcePolicy, XdpRelay};
use load::*;
use netns::*;

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

#[derive(Clone, Copy, Debug)]
enum Path {
    /// Through the SBC namespace and the XDP relay.
    Relay,
    /// Over the direct veth A -- C (no relay).
    Direct,
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
    let dests = (0..streams)
        .map(|i| match path {
            Path::Relay => SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 1), A_LEG_BASE + i),
            Path::Direct => DIRECT_C,
        })
        .collect();
    load::endpoints(t, matches!(path, Path::Direct), dests)
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
        let mut r = run_phase(&via_relay, streams, rate, args.seconds, &[]);
        let fwd = relay.stats()?.since(&s0);
        let mut d = run_phase(&direct, streams, rate, args.seconds, &[]);
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
        let mut r = run_phase(&via_relay, streams, rate, args.peak_seconds, &[]);
        let (t1, c1) = relay.program_run_stats()?;
        // Calibration: the trivial XDP_PASS program on C's end of the direct
        // veth, same statistics, during a no-relay run.
        let c_pass = direct_pass
            .get(1)
            .ok_or("no XDP_PASS program on C's eth1")?;
        let (p0, n0) = c_pass.run_stats()?;
        let _ = run_phase(&direct, streams, rate, args.peak_seconds, &[]);
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
        let steps = [50u32, 60, 70, 80, 90, 100, 125, 150, 200, 300, 400];
        let Peak { best, limit, .. } = peak_search(
            "relay",
            &via_relay,
            &direct,
            streams,
            args.peak_seconds,
            &steps,
            true,
            None,
        );
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
