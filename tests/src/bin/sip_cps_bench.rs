//! SIP calls-per-second benchmark: sbcd versus Kamailio as stateful proxies.
//!
//! Run on demand (root, not in CI):
//! `cargo run -p portcullis-tests --release --bin sip-cps-bench -- [--duration 10]
//!  [--proxies kamailio,sbcd] [--fixed-rate N] [--start-rate 1000] [--max-rate 40000]
//!  [--kamailio-children 2]`
//! (or `tests/bench/sip_cps.sh`). Needs `cargo build --release -p sbc-daemon` for sbcd.
//!
//! Topology: one private network namespace, loopback only. The proxy listens on
//! 127.0.0.1:5060 (outside) and relays to the callee from 127.0.0.2:5060 (inside), so
//! both proxies do the same work (double Record-Route). The proxy is pinned to one core
//! (`taskset -c 1`, sbcd with `sip.workers: 1`); sipp caller and callee share the other.
//!
//! For each proxy: the highest call rate whose step (bounded duration) completes with
//! < 0.1 % failed calls and on schedule (doubling, then bisection), then CPU microseconds
//! per call at a fixed rate both sustain (from /proc utime+stime of the proxy's processes).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use portcullis_tests::env::fresh_dir;
use portcullis_tests::netns::{unique_stem, Netns};
use portcullis_tests::process::{clock_ticks_per_sec, proc_stat};
use portcullis_tests::proxy::{sbcd_binary, Proxy, ProxyKind, ProxySpec, Trunk};
use portcullis_tests::sipp::{render, Sipp, SippConfig, Transport};

const UAC_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
const UAS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
const OUT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const IN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Kamailio reference measured elsewhere on one core.
const KAMAILIO_REF_CPS: f64 = 8000.0;
const KAMAILIO_REF_US: f64 = 112.0;
/// Kamailio reference for Path-based REGISTER proxying, CPU per REGISTER on one core.
const KAMAILIO_REF_REG_US: f64 = 36.0;

#[derive(Debug, Clone)]
struct Args {
    duration: u64,
    proxies: Vec<ProxyKind>,
    start_rate: u32,
    max_rate: u32,
    fixed_rate: Option<u32>,
    proxy_cpu: String,
    gen_cpu: String,
    kamailio_children: u32,
    /// `calls` (INVITE..BYE) or `register` (proxied REGISTERs).
    scenario: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        duration: 10,
        proxies: vec![ProxyKind::Kamailio, ProxyKind::Sbcd],
        start_rate: 1000,
        max_rate: 40000,
        fixed_rate: None,
        proxy_cpu: "1".into(),
        gen_cpu: "0".into(),
        kamailio_children: 2,
        scenario: "calls".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--duration" => a.duration = num(val()?)?.clamp(2, 120),
            "--start-rate" => a.start_rate = num(val()?)?.max(10) as u32,
            "--max-rate" => a.max_rate = num(val()?)?.max(10) as u32,
            "--fixed-rate" => a.fixed_rate = Some(num(val()?)?.max(10) as u32),
            "--proxy-cpu" => a.proxy_cpu = val()?,
            "--generator-cpu" => a.gen_cpu = val()?,
            "--kamailio-children" => a.kamailio_children = num(val()?)?.clamp(1, 64) as u32,
            "--scenario" => {
                a.scenario = val()?;
                if !["calls", "register", "register-cached"].contains(&a.scenario.as_str()) {
                    return Err(format!(
                        "--scenario: calls, register or register-cached, not {}",
                        a.scenario
                    ));
                }
            }
            "--proxies" => {
                a.proxies = val()?
                    .split(',')
                    .map(|p| match p.trim() {
                        "sbcd" => Ok(ProxyKind::Sbcd),
                        "kamailio" => Ok(ProxyKind::Kamailio),
                        other => Err(format!("unknown proxy {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: sip-cps-bench [--duration S] [--proxies kamailio,sbcd] \
                            [--start-rate N] [--max-rate N] [--fixed-rate N] \
                            [--proxy-cpu C] [--generator-cpu C] [--kamailio-children N] \
                            [--scenario calls|register|register-cached]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[derive(Debug, Clone)]
struct Step {
    rate: u32,
    attempted: u64,
    ok: u64,
    failed: u64,
    wall: f64,
    /// Proxy CPU seconds over the whole step (for CPU per call).
    proxy_cpu_s: f64,
    /// Length of the offered-load window (start of the caller to `duration` later, or
    /// to its exit if earlier) and the CPU used by the proxy / sipp inside it.
    window: f64,
    proxy_cpu_window_s: f64,
    gen_cpu_window_s: f64,
    /// sipp watchdog trips (caller + callee): sipp's loop was not run for > 500 ms, i.e.
    /// the generator itself was starved or saturated.
    sipp_stalls: usize,
}

impl Step {
    fn passed(&self, duration: u64) -> bool {
        let on_schedule = self.wall <= duration as f64 * 1.15 + 1.5;
        self.ok + self.failed >= self.attempted
            && self.failed * 1000 < self.attempted
            && self.ok * 1000 >= self.attempted * 999
            && on_schedule
    }

    fn cps(&self) -> f64 {
        self.ok as f64 / self.wall.max(0.001)
    }

    /// CPU use while the load was offered (a failing step lingers for sipp's timeouts
    /// long after that, which would dilute or, with late retransmissions, skew it).
    fn proxy_cpu_pct(&self) -> f64 {
        100.0 * self.proxy_cpu_window_s / self.window.max(0.001)
    }

    fn gen_cpu_pct(&self) -> f64 {
        100.0 * self.gen_cpu_window_s / self.window.max(0.001)
    }

    fn us_per_call(&self) -> f64 {
        self.proxy_cpu_s * 1e6 / (self.ok.max(1) as f64)
    }
}

/// Reads the last line of a sipp `-trace_stat` CSV: (successful, failed, outgoing).
fn read_stats(csv: &Path) -> Result<(u64, u64, u64), String> {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("{}: {e}", csv.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().ok_or("empty stats file")?.split(';').collect();
    let last: Vec<&str> = lines
        .next_back()
        .ok_or("no stats line")?
        .split(';')
        .collect();
    let col = |name: &str| -> Result<u64, String> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .ok_or(format!("no column {name}"))?;
        last.get(i)
            .and_then(|v| v.trim().parse().ok())
            .ok_or(format!("bad value for {name}"))
    };
    Ok((
        col("SuccessfulCall(C)")?,
        col("FailedCall(C)")?,
        col("OutgoingCall(C)")?,
    ))
}

struct Bench {
    args: Args,
    ns: Netns,
    dir: PathBuf,
    uac_scn: PathBuf,
    uas_scn: PathBuf,
    ticks: f64,
}

impl Bench {
    fn spec(&self) -> ProxySpec {
        ProxySpec {
            outside_ip: OUT_IP,
            inside_ip: IN_IP,
            port: 5060,
            trunks: vec![Trunk::new("core", UAS_IP, Transport::Udp, 1)],
            t1_ms: 500,
            metrics: (Ipv4Addr::LOCALHOST, 9090),
            workers: Some(1),
            kamailio_children: self.args.kamailio_children,
            kamailio_shm_mb: 1024,
            verbose: false,
            sbcd_profile: "release",
            media: None,
            register_upstream: self.args.scenario.starts_with("register"),
            dns_resolvers: Vec::new(),
            // register-cached: sbcd answers refreshes from its throttling cache.
            registration_client_expires: (self.args.scenario == "register-cached").then_some(600),
        }
    }

    fn start(&self, kind: ProxyKind, tag: &str) -> Result<(Proxy, Sipp), String> {
        let dir = self.dir.join(format!("{}-{tag}", kind.name()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let proxy = Proxy::start_in(
            &dir,
            None,
            kind,
            self.ns.name(),
            self.spec(),
            Some(&self.args.proxy_cpu),
        )
        .map_err(|e| format!("starting {}: {e}", kind.name()))?;
        let mut uas = SippConfig::uas(
            &format!("uas-{}-{tag}", kind.name()),
            self.ns.name(),
            self.uas_scn.clone(),
            UAS_IP,
            Transport::Udp,
        );
        uas.calls = 0; // no limit: killed at the end of the phase
        uas.trace_messages = false;
        uas.timeout = Duration::from_secs(3600);
        uas.cpus = Some(self.args.gen_cpu.clone());
        uas.extra_args = vec!["-buff_size".into(), "8388608".into()];
        let uas = Sipp::start_in(&self.dir, uas).map_err(|e| format!("starting uas: {e}"))?;
        Ok((proxy, uas))
    }

    fn step(
        &self,
        kind: ProxyKind,
        proxy: &mut Proxy,
        uas: &mut Sipp,
        rate: u32,
    ) -> Result<Step, String> {
        let calls = u64::from(rate) * self.args.duration;
        let name = format!("uac-{}-{rate}", kind.name());
        let stat = self.dir.join(format!("{name}.csv"));
        let _ = std::fs::remove_file(&stat);
        let mut cfg = SippConfig::uac(
            &name,
            self.ns.name(),
            self.uac_scn.clone(),
            UAC_IP,
            Transport::Udp,
            (OUT_IP, 5060),
        )
        .calls(u32::try_from(calls).unwrap_or(u32::MAX))
        .rate(rate);
        cfg.trace_messages = false;
        cfg.timeout = Duration::from_secs(self.args.duration + 40);
        cfg.cpus = Some(self.args.gen_cpu.clone());
        cfg.extra_args = vec![
            "-trace_stat".into(),
            "-stf".into(),
            stat.display().to_string(),
            "-fd".into(),
            "1".into(),
            "-buff_size".into(),
            "8388608".into(),
            "-l".into(),
            (rate * 2).max(1000).to_string(),
        ];
        let p0 = proxy.process().group_cpu_ticks();
        let u0 = uas.process().group_cpu_ticks();
        let t0 = Instant::now();
        let mut uac = Sipp::start_in(&self.dir, cfg).map_err(|e| format!("starting uac: {e}"))?;
        // Sample everything at the end of the offered-load window (or when the caller
        // exits, if earlier).
        let uac_pid = uac.process().pid();
        let window_end = t0 + Duration::from_secs(self.args.duration);
        while Instant::now() < window_end {
            match proc_stat(uac_pid) {
                Some(('Z', _, _)) | None => break,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let window = t0.elapsed().as_secs_f64();
        let p_mid = proxy.process().group_cpu_ticks();
        let u_mid = uas.process().group_cpu_ticks() + uac.process().group_cpu_ticks();
        // Wait for the caller to end (it lingers for retransmission timeouts when calls
        // fail).
        let finished = uac
            .process()
            .final_group_cpu_ticks(Duration::from_secs(self.args.duration + 45))
            .is_some();
        let wall = t0.elapsed().as_secs_f64();
        let p1 = proxy.process().group_cpu_ticks();
        let res = uac
            .finish(Duration::from_secs(5))
            .map_err(|e| format!("uac: {e}"))?;
        proxy
            .ensure_running()
            .map_err(|e| format!("{} died during the step: {e}", kind.name()))?;
        if !finished {
            return Err(format!("sipp caller did not finish at {rate} cps"));
        }
        let sipp_stalls = [
            self.dir.join(format!("{name}.errors.log")),
            self.dir.join(format!("{}.errors.log", uas.name())),
        ]
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .matches("watchdog timer")
                .count()
        })
        .sum();
        let (ok, failed, _outgoing) = read_stats(&stat).map_err(|e| {
            format!(
                "{e} (sipp exit {:?}; screen: {})",
                res.exit_code, res.screen
            )
        })?;
        Ok(Step {
            rate,
            attempted: calls,
            ok,
            failed,
            wall,
            proxy_cpu_s: p1.saturating_sub(p0) as f64 / self.ticks,
            window,
            proxy_cpu_window_s: p_mid.saturating_sub(p0) as f64 / self.ticks,
            gen_cpu_window_s: u_mid.saturating_sub(u0) as f64 / self.ticks,
            sipp_stalls,
        })
    }

    fn print_step(&self, kind: ProxyKind, s: &Step) {
        println!(
            "  {:<8} rate {:>6}/s  calls {:>7}  ok {:>7}  failed {:>5}  wall {:>6.2}s  achieved {:>8.0} cps  proxy CPU {:>5.1}%  sipp CPU {:>5.1}%  sipp stalls {:>3}  {:>6.1} us/call  {}",
            kind.name(),
            s.rate,
            s.attempted,
            s.ok,
            s.failed,
            s.wall,
            s.cps(),
            s.proxy_cpu_pct(),
            s.gen_cpu_pct(),
            s.sipp_stalls,
            s.us_per_call(),
            if s.passed(self.args.duration) { "PASS" } else { "FAIL" }
        );
    }

    /// One step on a freshly started proxy and callee, so that a failing step (calls
    /// and transactions lingering for their timeouts) cannot spoil the next one.
    fn fresh_step(&self, kind: ProxyKind, rate: u32, tag: &str) -> Result<Step, String> {
        let (mut proxy, mut uas) = self.start(kind, tag)?;
        let s = self.step(kind, &mut proxy, &mut uas, rate)?;
        self.print_step(kind, &s);
        Ok(s)
    }

    /// Doubling then bisection; returns (best passing step, first failing step).
    fn search(&self, kind: ProxyKind) -> Result<(Option<Step>, Option<Step>), String> {
        let mut best: Option<Step> = None;
        let mut fail: Option<Step> = None;
        let mut rate = self.args.start_rate;
        loop {
            let s = self.fresh_step(kind, rate, &format!("r{rate}"))?;
            if s.passed(self.args.duration) {
                best = Some(s);
                if rate >= self.args.max_rate {
                    break;
                }
                rate = (rate * 2).min(self.args.max_rate);
            } else {
                fail = Some(s);
                break;
            }
        }
        for _ in 0..4 {
            let (Some(lo), Some(hi)) = (&best, &fail) else {
                break;
            };
            if hi.rate - lo.rate <= (lo.rate / 16).max(100) {
                break;
            }
            let mid = ((lo.rate + hi.rate) / 2 / 100 * 100).max(lo.rate + 50);
            let s = self.fresh_step(kind, mid, &format!("r{mid}"))?;
            if s.passed(self.args.duration) {
                best = Some(s);
            } else {
                fail = Some(s);
            }
        }
        Ok((best, fail))
    }

    fn fixed(&self, kind: ProxyKind, rate: u32) -> Result<Step, String> {
        self.fresh_step(kind, rate, "fixed")
    }
}

/// `/proc/loadavg`'s first three fields: other load on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn limit_note(best: &Option<Step>, fail: &Option<Step>) -> String {
    match (best, fail) {
        (_, Some(f)) if f.sipp_stalls > 0 => format!(
            "GENERATOR STALLED at {} cps: sipp's watchdog tripped {} times (sipp not run for > 500 ms: saturated or starved by other load; sipp CPU {:.0}%); the proxy's real maximum may be higher",
            f.rate,
            f.sipp_stalls,
            f.gen_cpu_pct()
        ),
        (_, Some(f)) if f.gen_cpu_pct() >= 90.0 => format!(
            "GENERATOR-LIMITED: sipp used {:.0}% of its core at {} cps; the proxy's real maximum may be higher",
            f.gen_cpu_pct(),
            f.rate
        ),
        (_, Some(f)) if f.proxy_cpu_pct() >= 90.0 => {
            format!("proxy-limited (proxy CPU {:.0}% at {} cps)", f.proxy_cpu_pct(), f.rate)
        }
        (_, Some(f)) => format!(
            "limit unclear: at {} cps proxy CPU {:.0}%, sipp CPU {:.0}%",
            f.rate,
            f.proxy_cpu_pct(),
            f.gen_cpu_pct()
        ),
        (Some(b), None) => format!("no failure up to --max-rate ({} cps passed)", b.rate),
        (None, None) => "no data".into(),
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if !portcullis_tests::privileged::require_root("sip-cps-bench") {
        return;
    }
    portcullis_tests::privileged::require_tool("sipp", "sip-tester");
    portcullis_tests::privileged::require_tool("taskset", "util-linux");
    let mut proxies = args.proxies.clone();
    if proxies.contains(&ProxyKind::Sbcd) {
        if let Err(e) = sbcd_binary("release") {
            println!("NOTE: skipping sbcd: {e}");
            proxies.retain(|p| *p != ProxyKind::Sbcd);
        }
    }
    if proxies.contains(&ProxyKind::Kamailio) {
        portcullis_tests::privileged::require_tool("kamailio", "kamailio");
    }
    let dir = fresh_dir("sip-cps-bench").unwrap_or_else(|e| panic!("{e}"));
    let ns = Netns::create(&format!("{}-bench", unique_stem())).unwrap_or_else(|e| panic!("{e}"));
    let (uac_name, uas_name) = if args.scenario == "register" {
        ("bench_reg_uac.xml", "bench_reg_uas.xml")
    } else if args.scenario == "register-cached" {
        ("bench_reg_cached_uac.xml", "bench_reg_cached_uas.xml")
    } else {
        ("bench_uac.xml", "bench_uas.xml")
    };
    let uac_scn = render(uac_name, &[], &dir).unwrap_or_else(|e| panic!("{e}"));
    let uas_scn = render(uas_name, &[], &dir).unwrap_or_else(|e| panic!("{e}"));
    let bench = Bench {
        args: args.clone(),
        ns,
        dir: dir.clone(),
        uac_scn,
        uas_scn,
        ticks: clock_ticks_per_sec() as f64,
    };
    println!(
        "sip-cps-bench: {}s per step, proxy on CPU {}, sipp on CPU {}, logs in {}",
        args.duration,
        args.proxy_cpu,
        args.gen_cpu,
        dir.display()
    );
    println!("load average at start: {}", load_average());
    let mut results = Vec::new();
    for kind in &proxies {
        println!("== {}: max CPS search", kind.name());
        match bench.search(*kind) {
            Ok((best, fail)) => results.push((*kind, best, fail)),
            Err(e) => println!("  {} search aborted: {e}", kind.name()),
        }
    }
    let fixed_rate = args.fixed_rate.unwrap_or_else(|| {
        let min_best = results
            .iter()
            .filter_map(|(_, b, _)| b.as_ref().map(|s| s.rate))
            .min()
            .unwrap_or(args.start_rate);
        (min_best / 2 / 100 * 100).max(100)
    });
    println!("== CPU per call at a fixed {fixed_rate} cps");
    let mut summary = Vec::new();
    for (kind, best, fail) in &results {
        let fixed = match bench.fixed(*kind, fixed_rate) {
            Ok(s) => Some(s),
            Err(e) => {
                println!("  {} fixed-rate run failed: {e}", kind.name());
                None
            }
        };
        summary.push((*kind, best.clone(), fail.clone(), fixed));
    }
    println!();
    println!(
        "== summary (one proxy core; sipp on the other; load average now: {})",
        load_average()
    );
    for (kind, best, fail, fixed) in &summary {
        let max = best.as_ref().map_or("none passed".to_string(), |b| {
            format!("{} cps (achieved {:.0})", b.rate, b.cps())
        });
        let cpu = fixed.as_ref().map_or("n/a".to_string(), |f| {
            let ok = if f.passed(args.duration) {
                ""
            } else {
                " (step FAILED)"
            };
            format!("{:.1} us/call{ok}", f.us_per_call())
        });
        println!(
            "  {:<8}  max {:<28}  CPU {:<22}  {}",
            kind.name(),
            max,
            cpu,
            limit_note(best, fail)
        );
    }
    let get = |k: ProxyKind| summary.iter().find(|(kind, ..)| *kind == k);
    match (get(ProxyKind::Sbcd), get(ProxyKind::Kamailio)) {
        (Some((_, sb, _, sf)), Some((_, kb, _, kf))) => {
            if let (Some(sb), Some(kb)) = (sb, kb) {
                println!(
                    "  ratio sbcd/kamailio max CPS: {:.2}x (goal >= 1.5x)",
                    f64::from(sb.rate) / f64::from(kb.rate)
                );
            }
            if let (Some(sf), Some(kf)) = (sf, kf) {
                println!(
                    "  ratio sbcd/kamailio CPU per call: {:.2} (lower is better; kamailio/sbcd = {:.2}x)",
                    sf.us_per_call() / kf.us_per_call().max(0.001),
                    kf.us_per_call() / sf.us_per_call().max(0.001)
                );
            }
        }
        _ => println!("  ratio: needs both proxies (sbcd built with --release?)"),
    }
    if args.scenario == "register-cached" {
        // Ten REGISTERs per sipp call: report per REGISTER.
        for (kind, best, _, fixed) in &summary {
            println!(
                "  {:<8}  per REGISTER: max {}  CPU {}",
                kind.name(),
                best.as_ref()
                    .map_or("n/a".into(), |b| format!("{:.0} reg/s", b.cps() * 10.0)),
                fixed.as_ref().map_or("n/a".into(), |f| format!(
                    "{:.1} us",
                    f.us_per_call() / 10.0
                )),
            );
        }
        println!("  (sbcd answers 9 of 10 from its throttling cache; kamailio forwards all 10)");
    }
    if args.scenario.starts_with("register") {
        // The REGISTER anchor has a CPU figure only.
        println!(
            "  anchor: Kamailio measured elsewhere ~{KAMAILIO_REF_REG_US:.0} us CPU per proxied REGISTER (Path)"
        );
        if let Some((_, _, _, Some(kf))) = get(ProxyKind::Kamailio) {
            let per_call = if args.scenario == "register-cached" {
                10.0
            } else {
                1.0
            };
            println!(
                "  this machine's kamailio vs anchor: {:.2}x CPU/REGISTER",
                kf.us_per_call() / per_call / KAMAILIO_REF_REG_US
            );
        }
        return;
    }
    println!(
        "  anchor: Kamailio measured elsewhere ~{KAMAILIO_REF_CPS:.0} CPS, ~{KAMAILIO_REF_US:.0} us/call on one core"
    );
    if let Some((_, Some(kb), _, kf)) = get(ProxyKind::Kamailio) {
        print!(
            "  this machine's kamailio vs anchor: {:.2}x CPS",
            f64::from(kb.rate) / KAMAILIO_REF_CPS
        );
        if let Some(kf) = kf {
            print!(", {:.2}x CPU/call", kf.us_per_call() / KAMAILIO_REF_US);
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_last_sipp_stats_line() {
        let dir = fresh_dir("bench-unit").expect("dir");
        let csv = dir.join("s.csv");
        std::fs::write(
            &csv,
            "StartTime;OutgoingCall(C);SuccessfulCall(C);FailedCall(C);\n\
             t;10;9;1;\n\
             t;30;28;2;\n",
        )
        .expect("write");
        assert_eq!(read_stats(&csv), Ok((28, 2, 30)));
        std::fs::write(&csv, "StartTime;\n").expect("write");
        assert!(read_stats(&csv).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn step_verdict() {
        let s = Step {
            rate: 1000,
            attempted: 10_000,
            ok: 9_995,
            failed: 5,
            wall: 10.2,
            proxy_cpu_s: 1.0,
            window: 10.0,
            proxy_cpu_window_s: 0.9,
            gen_cpu_window_s: 0.5,
            sipp_stalls: 0,
        };
        assert!(s.passed(10));
        let too_many_failures = Step {
            ok: 9_980,
            failed: 20,
            ..s.clone()
        };
        assert!(!too_many_failures.passed(10));
        let late = Step {
            wall: 20.0,
            ..s.clone()
        };
        assert!(!late.passed(10));
        assert!((s.us_per_call() - 100.05).abs() < 0.1);
        assert!((s.proxy_cpu_pct() - 9.0).abs() < 0.01);
        assert!((s.gen_cpu_pct() - 5.0).abs() < 0.01);
    }
}
