//! Running sipp (Debian `sip-tester`) scenarios as real peers.
//!
//! Scenario files live in `tests/scenarios/`. They are templates: `%%NAME%%` placeholders
//! are replaced (values XML-escaped) and the result is written to the test directory
//! before sipp runs. Every run traces messages (`-trace_msg`) and unexpected events
//! (`-trace_err`) so tests can assert on exactly what each peer saw.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::{wait_until, TestEnv};
use crate::error::{HarnessError, Result};
use crate::netns::{SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use crate::process::{Process, Spec};
use crate::sipmsg::{parse_trace, Direction, TracedMessage};

/// SIP transport of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// sipp `-t` mode (single socket).
    pub fn sipp_mode(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// URI `transport=` parameter value / config value.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Directory holding the scenario templates.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn regex_escape_ip(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "\\.")
}

/// Regex for a Record-Route URI of `ip` whose transport is `tp` (UDP: no transport
/// parameter or `transport=udp`; otherwise `transport=<tp>` required).
pub fn rr_uri_regex(ip: Ipv4Addr, tp: Transport) -> String {
    let host = regex_escape_ip(ip);
    match tp {
        Transport::Udp => format!("<sip:{host}(:5060)?;[^>]*>"),
        _ => format!(
            "<sip:{host}(:5060)?;([^>]*;)?transport={}(;[^>]*)?>",
            tp.name()
        ),
    }
}

/// Regex that must not match: a Record-Route URI of `ip` with a transport other than `tp`.
pub fn rr_uri_bad_transport_regex(ip: Ipv4Addr, tp: Transport) -> String {
    let host = regex_escape_ip(ip);
    // POSIX ERE has no negative lookahead: exclude by first letter (udp/tcp/tls/sctp/ws).
    let not_first = match tp {
        Transport::Udp => "[^uU]",
        Transport::Tcp => "([^tT]|[tT][^cC])",
    };
    format!("<sip:{host}(:5060)?;([^>]*;)?transport={not_first}")
}

/// Placeholder values for the call scenarios (`uac_*.xml`, `uas_*.xml`): caller leg on
/// `uac_tp` (outside), callee leg on `uas_tp` (inside), callee at `uas_ip`.
pub fn call_vars(uac_tp: Transport, uas_tp: Transport, uas_ip: Ipv4Addr) -> Vec<(String, String)> {
    vec![
        ("UAC_TP".into(), uac_tp.via_token().into()),
        ("UAS_TP".into(), uas_tp.via_token().into()),
        ("UAS_IP_RE".into(), regex_escape_ip(uas_ip)),
        ("RR_IN".into(), rr_uri_regex(SBC_INSIDE_IP, uas_tp)),
        ("RR_OUT".into(), rr_uri_regex(SBC_OUTSIDE_IP, uac_tp)),
        (
            "RR_IN_BAD".into(),
            rr_uri_bad_transport_regex(SBC_INSIDE_IP, uas_tp),
        ),
        (
            "RR_OUT_BAD".into(),
            rr_uri_bad_transport_regex(SBC_OUTSIDE_IP, uac_tp),
        ),
    ]
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders scenario template `name` with `vars` into `dir` and returns the new path.
/// Fails if a placeholder is left unreplaced.
pub fn render(name: &str, vars: &[(String, String)], dir: &Path) -> Result<PathBuf> {
    render_from(&scenarios_dir(), name, vars, dir)
}

/// Like [`render`] for a template in `templates` instead of `tests/scenarios/`.
pub fn render_from(
    templates: &Path,
    name: &str,
    vars: &[(String, String)],
    dir: &Path,
) -> Result<PathBuf> {
    let src = templates.join(name);
    let mut text = std::fs::read_to_string(&src)
        .map_err(|e| HarnessError::io(format!("reading {}", src.display()), e))?;
    for (k, v) in vars {
        text = text.replace(&format!("%%{k}%%"), &xml_escape(v));
    }
    // Only look outside XML comments, which document the placeholders.
    let mut rest = text.as_str();
    let mut uncommented = String::new();
    while let Some(start) = rest.find("<!--") {
        uncommented.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |e| &rest[start + e + 3..]);
    }
    uncommented.push_str(rest);
    if let Some(pos) = uncommented.find("%%") {
        let snippet: String = uncommented[pos..].chars().take(30).collect();
        return Err(HarnessError::Parse(format!(
            "scenario {name}: unreplaced placeholder near `{snippet}`"
        )));
    }
    let dest = dir.join(name);
    std::fs::write(&dest, text)
        .map_err(|e| HarnessError::io(format!("writing {}", dest.display()), e))?;
    Ok(dest)
}

/// One sipp invocation.
#[derive(Debug, Clone)]
pub struct SippConfig {
    /// Label (log file names).
    pub name: String,
    /// Namespace to run in.
    pub netns: Option<String>,
    /// Rendered scenario file.
    pub scenario: PathBuf,
    pub local_ip: Ipv4Addr,
    pub local_port: u16,
    pub transport: Transport,
    /// Remote host for a UAC (`None` for a UAS).
    pub remote: Option<(Ipv4Addr, u16)>,
    /// Number of calls (`-m`): sipp exits after that many calls ended (0: no limit).
    pub calls: u32,
    /// Call rate per second (`-r`).
    pub rate: u32,
    /// Global timeout after which sipp exits with an error.
    pub timeout: Duration,
    /// Trace every message (`-trace_msg`); disable for load runs.
    pub trace_messages: bool,
    /// Optional CPU list (taskset).
    pub cpus: Option<String>,
    /// Further raw arguments.
    pub extra_args: Vec<String>,
}

impl SippConfig {
    /// A UAS listening on `ip:5060`.
    pub fn uas(name: &str, netns: &str, scenario: PathBuf, ip: Ipv4Addr, tp: Transport) -> Self {
        SippConfig {
            name: name.into(),
            netns: Some(netns.into()),
            scenario,
            local_ip: ip,
            local_port: 5060,
            transport: tp,
            remote: None,
            calls: 1,
            rate: 10,
            timeout: Duration::from_secs(30),
            trace_messages: true,
            cpus: None,
            extra_args: Vec::new(),
        }
    }

    /// A UAC on `ip:5060` sending to `remote`.
    pub fn uac(
        name: &str,
        netns: &str,
        scenario: PathBuf,
        ip: Ipv4Addr,
        tp: Transport,
        remote: (Ipv4Addr, u16),
    ) -> Self {
        SippConfig {
            remote: Some(remote),
            ..Self::uas(name, netns, scenario, ip, tp)
        }
    }

    /// Sets the number of calls.
    pub fn calls(mut self, n: u32) -> Self {
        self.calls = n;
        self
    }

    /// Sets the call rate.
    pub fn rate(mut self, r: u32) -> Self {
        self.rate = r;
        self
    }

    fn args(&self, dir: &Path) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-sf".into(),
            self.scenario.display().to_string(),
            "-i".into(),
            self.local_ip.to_string(),
            "-p".into(),
            self.local_port.to_string(),
            "-t".into(),
            self.transport.sipp_mode().into(),
            "-r".into(),
            self.rate.to_string(),
            "-rp".into(),
            "1000".into(),
            "-nostdin".into(),
            "-timeout".into(),
            format!("{}s", self.timeout.as_secs().max(1)),
            "-timeout_error".into(),
            "-trace_err".into(),
            "-error_file".into(),
            dir.join(format!("{}.errors.log", self.name))
                .display()
                .to_string(),
            "-trace_screen".into(),
            "-screen_file".into(),
            dir.join(format!("{}.screen.log", self.name))
                .display()
                .to_string(),
        ];
        if self.calls > 0 {
            a.extend(["-m".into(), self.calls.to_string()]);
        }
        if self.trace_messages {
            a.extend([
                "-trace_msg".into(),
                "-message_file".into(),
                dir.join(format!("{}.messages.log", self.name))
                    .display()
                    .to_string(),
            ]);
        }
        a.extend(self.extra_args.iter().cloned());
        if let Some((ip, port)) = self.remote {
            a.push(format!("{ip}:{port}"));
        }
        a
    }
}

/// A running sipp.
#[derive(Debug)]
pub struct Sipp {
    cfg: SippConfig,
    process: Process,
    msg_log: PathBuf,
    err_log: PathBuf,
    screen_log: PathBuf,
}

/// What a finished sipp reports.
#[derive(Debug)]
pub struct SippResult {
    pub name: String,
    /// sipp exit code: 0 all calls succeeded, 1 some failed, others fatal.
    pub exit_code: Option<i32>,
    /// Every message sent or received, in order.
    pub messages: Vec<TracedMessage>,
    /// sipp's error log (unexpected messages, failed regexp checks).
    pub errors: String,
    /// Final statistics screen.
    pub screen: String,
}

impl SippResult {
    /// Panics (with the error log and screen) unless sipp exited 0.
    pub fn assert_success(&self) {
        assert_eq!(
            self.exit_code,
            Some(0),
            "sipp `{}` failed (exit {:?}).\n--- error log:\n{}\n--- screen:\n{}",
            self.name,
            self.exit_code,
            crate::process::tail(&self.errors, 60),
            crate::process::tail(&self.screen, 40)
        );
    }

    /// Received messages matching `pred`.
    pub fn received<F: Fn(&TracedMessage) -> bool>(&self, pred: F) -> Vec<&TracedMessage> {
        self.messages
            .iter()
            .filter(|m| m.direction == Direction::Received && pred(m))
            .collect()
    }

    /// Sent messages matching `pred`.
    pub fn sent<F: Fn(&TracedMessage) -> bool>(&self, pred: F) -> Vec<&TracedMessage> {
        self.messages
            .iter()
            .filter(|m| m.direction == Direction::Sent && pred(m))
            .collect()
    }

    /// Received requests with `method`.
    pub fn received_requests(&self, method: &str) -> Vec<&TracedMessage> {
        self.received(|m| m.is_request(method))
    }

    /// Received responses with `status` to `cseq_method`.
    pub fn received_responses(&self, status: u16, cseq_method: &str) -> Vec<&TracedMessage> {
        self.received(|m| m.is_response(status, cseq_method))
    }
}

/// True if something listens on `ip:port` (`tcp` or `udp`) inside `netns`.
pub fn is_listening(netns: &str, proto: Transport, ip: Ipv4Addr, port: u16) -> Result<bool> {
    let flag = match proto {
        Transport::Udp => "-Hlnu",
        Transport::Tcp => "-Hlnt",
    };
    let out = crate::netns::run("ip", &["netns", "exec", netns, "ss", flag])?;
    let want = format!("{ip}:{port}");
    Ok(out
        .lines()
        .any(|l| l.split_whitespace().any(|field| field == want)))
}

/// Waits for a caller and a callee started together (the caller up to `uac_timeout`, the
/// callee 10 s more) and asserts that both scenarios passed. On failure the test panics and
/// its [`TestEnv`] prints every log as it is dropped.
pub fn finish_pair(uac: Sipp, uas: Sipp, uac_timeout: Duration) -> (SippResult, SippResult) {
    let uac = uac.finish(uac_timeout).expect("uac finished");
    let uas = uas.finish(Duration::from_secs(10)).expect("uas finished");
    uac.assert_success();
    uas.assert_success();
    (uac, uas)
}

impl Sipp {
    /// Starts sipp with logs in the test directory (printed if the test fails); for a
    /// UAS (no remote), waits until it listens.
    pub fn start(env: &mut TestEnv, cfg: SippConfig) -> Result<Self> {
        let sipp = Self::start_in(&env.dir.clone(), cfg)?;
        for f in [
            &sipp.process.stdout_path,
            &sipp.process.stderr_path,
            &sipp.err_log,
            &sipp.screen_log,
        ] {
            env.dump_on_failure(f);
        }
        Ok(sipp)
    }

    /// Like [`Sipp::start`] with logs in `dir` (benchmarks).
    pub fn start_in(dir: &Path, cfg: SippConfig) -> Result<Self> {
        let spec = Spec {
            name: cfg.name.clone(),
            netns: cfg.netns.clone(),
            cpus: cfg.cpus.clone(),
            program: "sipp".into(),
            args: cfg.args(dir),
        };
        let process = Process::spawn(&spec, dir)?;
        let msg_log = dir.join(format!("{}.messages.log", cfg.name));
        let err_log = dir.join(format!("{}.errors.log", cfg.name));
        let screen_log = dir.join(format!("{}.screen.log", cfg.name));
        let mut sipp = Sipp {
            cfg,
            process,
            msg_log,
            err_log,
            screen_log,
        };
        if sipp.cfg.remote.is_none() {
            let (ns, tp, ip, port) = (
                sipp.cfg.netns.clone().unwrap_or_default(),
                sipp.cfg.transport,
                sipp.cfg.local_ip,
                sipp.cfg.local_port,
            );
            let what = format!("sipp {} listening on {ip}:{port}", sipp.cfg.name);
            wait_until(&what, Duration::from_secs(10), || {
                sipp.process.ensure_running()?;
                is_listening(&ns, tp, ip, port)
            })?;
        }
        Ok(sipp)
    }

    /// The label given in its config (log file names).
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits for sipp to exit (killing it after `timeout`) and collects its traces.
    pub fn finish(mut self, timeout: Duration) -> Result<SippResult> {
        let status = match self.process.wait_timeout(timeout) {
            Ok(st) => Some(st),
            Err(_) => {
                self.process.stop(Duration::from_secs(2));
                None
            }
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Ok(SippResult {
            name: self.cfg.name.clone(),
            exit_code: status.and_then(|s| s.code()),
            messages: parse_trace(&read(&self.msg_log)),
            errors: read(&self.err_log),
            screen: read(&self.screen_log),
        })
    }
}
