//! The proxy under test: Portcullis `sbcd`, or Debian's Kamailio configured as an
//! equivalent stateful proxy (record_route + t_relay, double Record-Route across
//! interfaces/transports, dispatcher priority failover). Kamailio is the known-good
//! reference used to validate the scenarios; CI runs against sbcd.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::{wait_until, TestEnv};
use crate::error::{HarnessError, Result};
use crate::process::{Process, Spec};
use crate::sipp::{is_listening, Transport};

/// Which proxy implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Sbcd,
    Kamailio,
}

impl ProxyKind {
    /// From `PORTCULLIS_PROXY` (`sbcd`, the default, or `kamailio`). Panics on other values.
    pub fn from_env() -> Self {
        match std::env::var("PORTCULLIS_PROXY").as_deref() {
            Err(_) | Ok("") | Ok("sbcd") => ProxyKind::Sbcd,
            Ok("kamailio") => ProxyKind::Kamailio,
            Ok(other) => panic!("PORTCULLIS_PROXY={other}: expected `sbcd` or `kamailio`"),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Sbcd => "sbcd",
            ProxyKind::Kamailio => "kamailio",
        }
    }
}

/// One upstream trunk (member of the single group `core`).
#[derive(Debug, Clone)]
pub struct Trunk {
    pub name: String,
    pub host: Ipv4Addr,
    pub port: u16,
    pub transport: Transport,
    /// Lower is tried first.
    pub priority: u32,
    /// OPTIONS probing interval (sbcd only; None: no probing).
    pub probe_interval_s: Option<u64>,
    /// sbcd only: the trunk is configured by this host name instead of `host`, without a
    /// port, so sbcd resolves it by RFC 3263 (SRV for `transport`, or NAPTR first when
    /// `naptr` is set and no transport is written either).
    pub host_name: Option<String>,
    pub naptr: bool,
    /// sbcd only: a TLS trunk with these `tls` settings (a YAML flow mapping such as
    /// `{ ca: /x/ca.pem, server_name: pbx.test }`); `transport` is then ignored.
    pub tls: Option<String>,
}

impl Trunk {
    /// A trunk at `host:5060`.
    pub fn new(name: &str, host: Ipv4Addr, transport: Transport, priority: u32) -> Self {
        Trunk {
            name: name.into(),
            host,
            port: 5060,
            transport,
            priority,
            probe_interval_s: None,
            host_name: None,
            naptr: false,
            tls: None,
        }
    }
}

/// What the proxy should look like; rendered to an sbcd YAML or a Kamailio cfg.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// Address of the `outside` interface (ingress of calls).
    pub outside_ip: Ipv4Addr,
    /// Address of the `inside` interface (egress toward the trunks).
    pub inside_ip: Ipv4Addr,
    /// SIP port of every listener (UDP and TCP on both interfaces).
    pub port: u16,
    /// Trunks of group `core`, to which everything from `outside` is routed by priority.
    pub trunks: Vec<Trunk>,
    /// RFC 3261 T1 in ms (Timer B/F = 64*T1).
    pub t1_ms: u32,
    /// Metrics/health listener (sbcd only).
    pub metrics: (Ipv4Addr, u16),
    /// sbcd `sip.workers` (None: sbcd's default).
    pub workers: Option<u32>,
    /// Kamailio UDP children per listener.
    pub kamailio_children: u32,
    /// Kamailio shared memory in MB.
    pub kamailio_shm_mb: u32,
    /// Verbose logs (tests) or warnings only (benchmarks).
    pub verbose: bool,
    /// Cargo profile of the sbcd binary to run (`debug` for tests, `release` for
    /// benchmarks).
    pub sbcd_profile: &'static str,
    /// Media anchoring (sbcd only): relay addresses on both interfaces.
    pub media: Option<MediaSpec>,
    /// REGISTERs are proxied to the `core` group as the upstream registrar (sbcd: Path
    /// mode; Kamailio: `add_path()`).
    pub register_upstream: bool,
    /// sbcd `dns.resolvers` (empty: not written).
    pub dns_resolvers: Vec<String>,
    /// sbcd registration throttling on the outside interface
    /// (`policy.registration_client_expires`; None: off).
    pub registration_client_expires: Option<u32>,
}

/// Media anchoring settings of the sbcd under test.
#[derive(Debug, Clone)]
pub struct MediaSpec {
    /// `userspace`, `xdp` or `auto`.
    pub datapath: &'static str,
    /// Interfaces (in the SBC namespace) the XDP relay attaches to.
    pub xdp_interfaces: Vec<String>,
    /// `media.timeout_s` (None: sbcd's default).
    pub timeout_s: Option<u64>,
    /// `interfaces[].media.profile` of the outside and inside interfaces (None: default).
    pub profiles: [Option<&'static str>; 2],
}

impl ProxySpec {
    /// The standard test topology's proxy with the given trunks and T1 = 50 ms.
    pub fn standard(trunks: Vec<Trunk>) -> Self {
        ProxySpec {
            outside_ip: crate::netns::SBC_OUTSIDE_IP,
            inside_ip: crate::netns::SBC_INSIDE_IP,
            port: 5060,
            trunks,
            t1_ms: 50,
            metrics: (Ipv4Addr::LOCALHOST, 9090),
            workers: None,
            kamailio_children: 2,
            kamailio_shm_mb: 64,
            verbose: true,
            sbcd_profile: "debug",
            media: None,
            register_upstream: false,
            dns_resolvers: Vec::new(),
            registration_client_expires: None,
        }
    }
}

/// sbcd YAML for `spec` (schema from the sbcd contract).
pub fn sbcd_config(spec: &ProxySpec) -> String {
    let mut y = String::new();
    let level = if spec.verbose { "debug" } else { "warn" };
    y.push_str(&format!("logging: {{ level: {level}, format: text }}\n"));
    y.push_str(&format!(
        "metrics: {{ listen: \"{}:{}\" }}\n",
        spec.metrics.0, spec.metrics.1
    ));
    y.push_str("sip:\n");
    y.push_str(&format!(
        "  timers: {{ t1_ms: {}, t2_ms: 4000, t4_ms: 5000 }}\n",
        spec.t1_ms
    ));
    if let Some(w) = spec.workers {
        y.push_str(&format!("  workers: {w}\n"));
    }
    if let Some(m) = &spec.media {
        let timeout = m
            .timeout_s
            .map(|t| format!(", timeout_s: {t}"))
            .unwrap_or_default();
        y.push_str(&format!(
            "media: {{ datapath: {}, xdp_interfaces: [{}]{timeout} }}\n",
            m.datapath,
            m.xdp_interfaces.join(", ")
        ));
    }
    y.push_str("interfaces:\n");
    for (i, (name, short, ip)) in [
        ("outside", "out", spec.outside_ip),
        ("inside", "in", spec.inside_ip),
    ]
    .into_iter()
    .enumerate()
    {
        y.push_str(&format!("  - name: {name}\n    listeners:\n"));
        for proto in ["udp", "tcp"] {
            y.push_str(&format!(
                "      - {{ name: {short}-{proto}, proto: {proto}, address: {ip}, port: {} }}\n",
                spec.port
            ));
        }
        if let (0, Some(e)) = (i, spec.registration_client_expires) {
            y.push_str(&format!(
                "    policy: {{ registration_client_expires: {e}, registration_upstream_expires: 3600 }}\n"
            ));
        }
        if spec.media.is_some() {
            let base = 30000 + 1000 * i;
            let profile = spec
                .media
                .as_ref()
                .and_then(|m| m.profiles[i])
                .map(|p| format!(", profile: {p}"))
                .unwrap_or_default();
            y.push_str(&format!(
                "    media: {{ address: {ip}, port_min: {base}, port_max: {}{profile} }}\n",
                base + 999
            ));
        }
    }
    y.push_str("trunks:\n");
    for t in &spec.trunks {
        let probe = t
            .probe_interval_s
            .map(|s| format!(", probe_interval_s: {s}"))
            .unwrap_or_default();
        let transport = match &t.tls {
            Some(tls) => format!("tls, tls: {tls}"),
            None => t.transport.name().to_string(),
        };
        let place = match (&t.host_name, t.naptr) {
            (Some(name), true) => format!("host: {name}"),
            (Some(name), false) => format!("host: {name}, transport: {transport}"),
            (None, _) => format!("host: {}, port: {}, transport: {transport}", t.host, t.port),
        };
        y.push_str(&format!(
            "  - {{ name: {}, {place}, group: core, interface: inside, priority: {}{probe} }}\n",
            t.name, t.priority
        ));
    }
    y.push_str("routes:\n");
    y.push_str(
        "  - { name: all, match: { interface: outside }, group: core, selection: priority }\n",
    );
    if spec.register_upstream {
        y.push_str("registrar: { upstream: core, mode: path }\n");
    }
    if !spec.dns_resolvers.is_empty() {
        y.push_str(&format!(
            "dns: {{ resolvers: [{}], min_ttl_s: 1, timeout_ms: 1000 }}\n",
            spec.dns_resolvers.join(", ")
        ));
    }
    y
}

/// [`sbcd_config`] with `listeners` (YAML flow mappings such as
/// `{ name: out-wss, proto: wss, ... }`) added to the outside interface after its UDP and
/// TCP listeners.
pub fn sbcd_config_with_outside_listeners(spec: &ProxySpec, listeners: &[String]) -> String {
    sbcd_config_with_listeners(spec, listeners, &[])
}

/// [`sbcd_config`] with `outside` and `inside` listeners (YAML flow mappings) added to
/// each interface after its UDP and TCP listeners.
pub fn sbcd_config_with_listeners(
    spec: &ProxySpec,
    outside: &[String],
    inside: &[String],
) -> String {
    let mut out = String::new();
    for line in sbcd_config(spec).lines() {
        out.push_str(line);
        out.push('\n');
        let extra = match line.trim_start() {
            l if l.starts_with("- { name: out-tcp,") => outside,
            l if l.starts_with("- { name: in-tcp,") => inside,
            _ => &[],
        };
        for l in extra {
            out.push_str(&format!("      - {l}\n"));
        }
    }
    out
}

/// Kamailio cfg and dispatcher list for `spec`; `dir` holds the list file.
pub fn kamailio_config(spec: &ProxySpec, dir: &Path) -> (String, String) {
    let list_path = dir.join("dispatcher.list");
    let mut list = String::new();
    for t in &spec.trunks {
        // Dispatcher algorithm 8 tries higher priority values first.
        let prio = 1000u32.saturating_sub(t.priority);
        let tp = t.transport.name();
        list.push_str(&format!(
            "1 sip:{}:{};transport={tp} 0 {prio} socket={tp}:{}:{}\n",
            t.host, t.port, spec.inside_ip, spec.port
        ));
    }
    let debug = if spec.verbose { 2 } else { 0 };
    let fr = 64 * spec.t1_ms;
    let cfg = format!(
        r#"#!KAMAILIO
# Generated by portcullis-tests: stateful proxy equivalent to the sbcd test config.
debug={debug}
log_stderror=yes
children={children}
tcp_children=2
auto_aliases=no
mhomed=0
listen=udp:{out}:{port}
listen=tcp:{out}:{port}
listen=udp:{inn}:{port}
listen=tcp:{inn}:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "dispatcher.so"
loadmodule "path.so"
modparam("tm", "retr_timer1", {t1})
modparam("tm", "fr_timer", {fr})
modparam("tm", "fr_inv_timer", {fr})
modparam("rr", "enable_double_rr", 1)
modparam("rr", "append_fromtag", 0)
modparam("dispatcher", "list_file", "{list}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_interval", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ route(RELAY); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ route(RELAY); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ route(RELAY); }} exit; }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{ t_check_trans(); exit; }}
        t_check_trans();
    }}
    remove_hf("Route");
    if (is_method("REGISTER")) {{ add_path(); }}
    if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
    if (!ds_select_dst("1", "8")) {{ sl_send_reply("503", "No upstream"); exit; }}
    t_on_failure("FAILOVER");
    route(RELAY);
}}
route[RELAY] {{ if (!t_relay()) {{ sl_reply_error(); }} exit; }}
failure_route[FAILOVER] {{
    if (t_is_canceled()) {{ exit; }}
    if (t_check_status("408|5[0-9][0-9]") || (t_branch_timeout() && !t_branch_replied())) {{
        if (ds_next_dst()) {{ t_on_failure("FAILOVER"); route(RELAY); }}
    }}
}}
"#,
        children = spec.kamailio_children,
        out = spec.outside_ip,
        inn = spec.inside_ip,
        port = spec.port,
        t1 = spec.t1_ms,
        list = list_path.display(),
    );
    (cfg, list)
}

/// Locates the sbcd binary of `profile` (`debug` or `release`): `SBCD_BIN`, else
/// `$CARGO_TARGET_DIR/<profile>/sbcd`, else `<workspace>/target/<profile>/sbcd`.
pub fn sbcd_binary(profile: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SBCD_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(HarnessError::MissingBinary {
                path: p,
                hint: "SBCD_BIN points to a file that does not exist".into(),
            })
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = if t.is_relative() {
            workspace.join(t)
        } else {
            t
        };
        candidates.push(t.join(profile).join("sbcd"));
    }
    candidates.push(workspace.join("target").join(profile).join("sbcd"));
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    let flag = if profile == "release" {
        " --release"
    } else {
        ""
    };
    Err(HarnessError::MissingBinary {
        path: candidates[0].clone(),
        hint: format!(
            "sbcd is not built: run `cargo build{flag} -p sbc-daemon` (same CARGO_TARGET_DIR) \
             or set SBCD_BIN; or run the e2e tests against Kamailio with PORTCULLIS_PROXY=kamailio"
        ),
    })
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub spec: ProxySpec,
    pub config_path: PathBuf,
    process: Process,
}

impl Proxy {
    /// Starts the proxy of `kind` in namespace `netns` and waits until all four
    /// listeners are up (and, for sbcd, `/healthz` answers).
    pub fn start(
        env: &mut TestEnv,
        kind: ProxyKind,
        netns: &str,
        spec: ProxySpec,
        cpus: Option<&str>,
    ) -> Result<Self> {
        Self::start_in(&env.dir.clone(), Some(env), kind, netns, spec, cpus)
    }

    /// Starts sbcd in namespace `netns` with the configuration text `yaml` (for settings
    /// [`ProxySpec`] does not render; `spec` must describe its standard UDP/TCP listeners,
    /// whose readiness is awaited as in [`Proxy::start`]).
    pub fn start_sbcd_with_config(
        env: &mut TestEnv,
        netns: &str,
        spec: ProxySpec,
        yaml: String,
    ) -> Result<Self> {
        let dir = env.dir.clone();
        Self::start_inner(
            &dir,
            Some(env),
            ProxyKind::Sbcd,
            netns,
            spec,
            None,
            Some(yaml),
        )
    }

    /// Like [`Proxy::start`] without a [`TestEnv`] (benchmarks).
    pub fn start_in(
        dir: &Path,
        env: Option<&mut TestEnv>,
        kind: ProxyKind,
        netns: &str,
        spec: ProxySpec,
        cpus: Option<&str>,
    ) -> Result<Self> {
        Self::start_inner(dir, env, kind, netns, spec, cpus, None)
    }

    fn start_inner(
        dir: &Path,
        env: Option<&mut TestEnv>,
        kind: ProxyKind,
        netns: &str,
        spec: ProxySpec,
        cpus: Option<&str>,
        sbcd_yaml: Option<String>,
    ) -> Result<Self> {
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text)
                .map_err(|e| HarnessError::io(format!("writing {}", p.display()), e))?;
            Ok(p)
        };
        let (config_path, mut pspec) = match kind {
            ProxyKind::Sbcd => {
                let bin = sbcd_binary(spec.sbcd_profile)?;
                let text = sbcd_yaml.unwrap_or_else(|| sbcd_config(&spec));
                let cfg = write("sbcd.yaml", &text)?;
                let pspec = Spec::new("sbcd", bin.display().to_string())
                    .args(["--config".to_string(), cfg.display().to_string()]);
                (cfg, pspec)
            }
            ProxyKind::Kamailio => {
                let (cfg_text, list) = kamailio_config(&spec, dir);
                write("dispatcher.list", &list)?;
                let cfg = write("kamailio.cfg", &cfg_text)?;
                let rundir = dir.join("kamailio-run");
                std::fs::create_dir_all(&rundir)
                    .map_err(|e| HarnessError::io("creating kamailio run dir", e))?;
                let pspec = Spec::new("kamailio", "kamailio").args([
                    "-DD".to_string(),
                    "-E".into(),
                    "-f".into(),
                    cfg.display().to_string(),
                    "-Y".into(),
                    rundir.display().to_string(),
                    "-m".into(),
                    spec.kamailio_shm_mb.to_string(),
                    "-M".into(),
                    "8".into(),
                ]);
                (cfg, pspec)
            }
        };
        pspec = pspec.netns(netns);
        if let Some(c) = cpus {
            pspec = pspec.cpus(c);
        }
        let process = Process::spawn(&pspec, dir)?;
        if let Some(env) = env {
            env.dump_on_failure(&config_path);
            env.dump_on_failure(&process.stderr_path);
            env.dump_on_failure(&process.stdout_path);
        }
        let mut proxy = Proxy {
            kind,
            spec,
            config_path,
            process,
        };
        proxy.wait_ready(netns)?;
        Ok(proxy)
    }

    fn wait_ready(&mut self, netns: &str) -> Result<()> {
        let spec = self.spec.clone();
        let what = format!(
            "{} listening on {} and {}",
            self.kind.name(),
            spec.outside_ip,
            spec.inside_ip
        );
        let proc_ = &mut self.process;
        wait_until(&what, Duration::from_secs(15), || {
            proc_.ensure_running()?;
            for ip in [spec.outside_ip, spec.inside_ip] {
                for tp in [Transport::Udp, Transport::Tcp] {
                    if !is_listening(netns, tp, ip, spec.port)? {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })?;
        if self.kind == ProxyKind::Sbcd {
            let url = format!("http://{}:{}/healthz", spec.metrics.0, spec.metrics.1);
            let proc_ = &mut self.process;
            wait_until("sbcd /healthz", Duration::from_secs(10), || {
                proc_.ensure_running()?;
                Ok(crate::netns::run(
                    "ip",
                    &["netns", "exec", netns, "curl", "-sf", "-m", "1", &url],
                )
                .is_ok())
            })?;
        }
        Ok(())
    }

    /// The proxy process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Errors if the proxy died.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process.ensure_running()
    }
}

/// One sample of sbcd's `/metrics` (on 127.0.0.1:9090 in namespace `ns`), by its full name
/// with labels as exposed, e.g. `sbc_trunk_up{trunk="core-a"}`; `None` if absent.
pub fn sbcd_metric(ns: &str, name: &str) -> Option<f64> {
    let out = crate::netns::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "http://127.0.0.1:9090/metrics",
        ],
    )
    .ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}
