//! A real browser through the WebRTC gateway (issue 6, first "must show" item): headless
//! Chromium (Debian `chromium`, fake microphone playing a 400 Hz tone) runs a JsSIP page
//! (npm `jssip`, pinned in tests/browser/package-lock.json) in the outside namespace. It
//! registers over WSS (certificate made for the run) to sbcd, whose outside interface has
//! `media.profile: webrtc` and inside interface `media.profile: plain`, and
//!
//! - calls a sipp UAS inside (RTP/AVP PCMU, `-rtp_echo`), sees the echoed audio come back
//!   through the SBC in `RTCPeerConnection.getStats()` (inbound-rtp packets and a non-zero
//!   audio level) and hangs up: the UAS gets the BYE;
//! - calls the UAS, which hangs up after a few seconds of media: the browser gets the BYE over
//!   its WebSocket (S-01);
//! - is called by a sipp UAC inside (PCMU, `-rtp_echo`) and answers: audio both ways (what
//!   the browser sends comes back from the phone), then the browser hangs up.
//!
//! In every case the SDP the browser receives from sbcd is WebRTC (UDP/TLS/RTP/SAVPF, ICE-lite,
//! DTLS fingerprint, rtcp-mux) and the SDP the phone receives is plain RTP/AVP (checked in the
//! scenarios, tests/browser/scenarios/); a capture in the SBC namespace shows STUN, DTLS and
//! SRTP on the outside link and plain PCMU RTP on the inside link, and none of the inside RTP
//! payloads in clear on the outside.
//!
//! The three tests run one at a time (each starts a Chromium). Pieces: tests/browser/driver.mjs
//! (Chromium over the DevTools protocol on a pipe), tests/browser/page.js (the JsSIP page).

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use portcullis_tests::capture::{Capture, UdpDatagram};
use portcullis_tests::env::wait_until;
use portcullis_tests::netns::{CORE_IP, SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::{
    sbcd_config_with_outside_listeners, MediaSpec, Proxy, ProxySpec, Trunk,
};
use portcullis_tests::sipp::{is_listening, render_from, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

/// sbcd's WSS listener port on the outside interface.
const WSS_PORT: u16 = 8443;
/// Inbound RTP packets the browser must see (50 per second of PCMU) before it hangs up.
const MIN_PACKETS: u64 = 50;
/// The echoed 400 Hz tone has an audio level around 0.36; silence or noise stays far below.
const MIN_AUDIO_LEVEL: f64 = 0.05;
/// How long the browser waits for media before hanging up anyway.
const MEDIA_WAIT_MS: u64 = 10_000;
/// How long the UAS talks before it hangs up in the callee-hangs-up case.
const TALK_MS: u64 = 5_000;
/// Whole-browser bound (driver timeout).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(40);
/// The gateway's media: outside relay ports (sbcd_config: 30000-30999), inside 31000-31999.
const OUT_MEDIA: std::ops::RangeInclusive<u16> = 30000..=30999;
const IN_MEDIA: std::ops::RangeInclusive<u16> = 31000..=31999;

/// One Chromium at a time: each test starts its own, and the machine has few cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// FNV-1a, to name the dependency cache after the lock file's content.
fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Installs the page's npm dependencies (`npm ci`, exactly the lock file's versions) once
/// per lock file into a cache directory and returns it: `$PORTCULLIS_BROWSER_DEPS`, else
/// `<target dir>/portcullis-browser-deps/<hash of package-lock.json>`.
fn browser_deps() -> PathBuf {
    static DEPS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DEPS.get_or_init(install_browser_deps)
        .clone()
        .unwrap_or_else(|e| panic!("browser dependencies: {e}"))
}

fn install_browser_deps() -> Result<PathBuf, String> {
    let src = browser_dir();
    let lock = std::fs::read(src.join("package-lock.json"))
        .map_err(|e| format!("reading tests/browser/package-lock.json: {e}"))?;
    let dest = match std::env::var_os("PORTCULLIS_BROWSER_DEPS") {
        Some(d) => PathBuf::from(d),
        None => {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| {
                    if t.is_relative() {
                        workspace.join(t)
                    } else {
                        t
                    }
                })
                .unwrap_or_else(|| workspace.join("target"));
            target
                .join("portcullis-browser-deps")
                .join(format!("{:016x}", fnv64(&lock)))
        }
    };
    if dest.join("node_modules/jssip/package.json").is_file() {
        return Ok(dest);
    }
    // Install into a private directory and move it into place, so that concurrent test
    // binaries never see a half-installed tree.
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(f), tmp.join(f)).map_err(|e| format!("copying {f}: {e}"))?;
    }
    let out = std::process::Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&tmp)
        .output()
        .map_err(|e| format!("running npm (Debian package `npm`): {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "`npm ci` in {} failed ({}): {}{}",
            tmp.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    if std::fs::rename(&tmp, &dest).is_err() {
        // Another run installed it first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if dest.join("node_modules/jssip/package.json").is_file() {
        Ok(dest)
    } else {
        Err(format!("jssip missing in {} after npm ci", dest.display()))
    }
}

/// A self-signed P-256 certificate for sbcd's WSS listener (CN and SAN: its outside address).
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("wss-cert.pem"), dir.join("wss-key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={SBC_OUTSIDE_IP}"),
        ])
        .args(["-addext", &format!("subjectAltName=IP:{SBC_OUTSIDE_IP}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// What the page does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Call the UAS and hang up once the echoed media is seen.
    CallAndHangUp,
    /// Call the UAS and wait for its BYE.
    CallAndWaitForBye,
    /// Answer a call and hang up once the echoed media is seen.
    AnswerAndHangUp,
}

/// The browser (driver + Chromium) of one test.
struct Browser {
    idx: usize,
}

impl Browser {
    fn start(env: &mut TestEnv, role: Role) -> Browser {
        let deps = browser_deps();
        let work = env.dir.join("browser");
        std::fs::create_dir_all(&work).expect("browser work dir");
        let (mode, hangup) = match role {
            Role::CallAndHangUp => ("call", "browser"),
            Role::CallAndWaitForBye => ("call", "remote"),
            Role::AnswerAndHangUp => ("answer", "browser"),
        };
        let page = format!(
            "{{\"ws_url\": {}, \"uri\": {}, \"target\": {}, \"mode\": \"{mode}\", \
             \"hangup\": \"{hangup}\", \"min_packets\": {MIN_PACKETS}, \
             \"media_wait_ms\": {MEDIA_WAIT_MS}, \"remote_wait_ms\": {}, \"answer_wait_ms\": 20000}}",
            json_str(&format!("wss://{SBC_OUTSIDE_IP}:{WSS_PORT}")),
            json_str(&format!("sip:alice@{SBC_OUTSIDE_IP}")),
            json_str(&format!("sip:uas@{SBC_OUTSIDE_IP}")),
            TALK_MS + 10_000,
        );
        let cfg = format!(
            "{{\"chromium\": \"/usr/bin/chromium\", \"deps_dir\": {}, \"work_dir\": {}, \
             \"timeout_ms\": {}, \"page\": {page}}}\n",
            json_str(&deps.display().to_string()),
            json_str(&work.display().to_string()),
            BROWSER_TIMEOUT.as_millis(),
        );
        let cfg_path = env.dir.join("browser.json");
        std::fs::write(&cfg_path, cfg).expect("writing browser.json");
        let out_ns = env.topo.outside.name().to_string();
        let spec = Spec::new("browser", "node").netns(&out_ns).args([
            browser_dir().join("driver.mjs").display().to_string(),
            cfg_path.display().to_string(),
        ]);
        let idx = env
            .spawn(&spec)
            .unwrap_or_else(|e| panic!("starting the browser: {e}"));
        env.dump_on_failure(&cfg_path);
        env.dump_on_failure(&work.join("chromium.log"));
        Browser { idx }
    }

    /// Waits until the page reports its registration (panics on failure or timeout).
    fn wait_registered(&self, env: &mut TestEnv) {
        let idx = self.idx;
        let res = wait_until(
            "browser registered over WSS",
            Duration::from_secs(20),
            || {
                let out = env.process(idx).stdout_text();
                if out.contains("\"event\":\"registered\"") {
                    return Ok(true);
                }
                if out.contains("\nRESULT ") || out.starts_with("RESULT ") {
                    return Err(portcullis_tests::HarnessError::Parse(format!(
                        "the page ended before registering:\n{out}"
                    )));
                }
                env.process(idx).ensure_running()?;
                Ok(false)
            },
        );
        if let Err(e) = res {
            env.dump_logs();
            panic!("{e}");
        }
    }

    /// Waits for the driver to exit and returns the page's flattened result.
    fn finish(self, env: &mut TestEnv) -> PageResult {
        let status = env
            .process(self.idx)
            .wait_timeout(BROWSER_TIMEOUT + Duration::from_secs(10));
        let out = env.process(self.idx).stdout_text();
        let fields: HashMap<String, String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ok = matches!(&status, Ok(st) if st.success());
        if !ok || fields.is_empty() {
            env.dump_logs();
            panic!("browser driver failed ({status:?}); its output:\n{out}");
        }
        PageResult { fields, raw: out }
    }
}

/// The page's final report, flattened (`stats.max_audio_level` -> JSON value).
struct PageResult {
    fields: HashMap<String, String>,
    raw: String,
}

impl PageResult {
    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    fn num(&self, key: &str) -> f64 {
        self.get(key).parse().unwrap_or(f64::NAN)
    }

    /// JSON string value without its quotes (escapes kept: only for substring checks).
    fn text(&self, key: &str) -> String {
        let v = self.get(key);
        v.strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v)
            .to_string()
    }

    /// Every SDP the page received from sbcd (offer or answer).
    fn remote_sdps(&self) -> Vec<String> {
        (0..4)
            .map(|i| self.text(&format!("remote_sdp.{i}.sdp")))
            .filter(|s| !s.is_empty())
            .collect()
    }

    fn timeline(&self) -> String {
        (0..200)
            .map_while(|i| self.fields.get(&format!("timeline.{i}")))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Topology, sbcd (WSS outside with the webrtc profile, plain inside) and the media capture.
struct Setup {
    env: TestEnv,
    _proxy: Proxy,
    capture: Capture,
}

fn setup(test: &str) -> Option<Setup> {
    if !require_root(test) {
        return None;
    }
    for (tool, pkg) in [
        ("sipp", "sip-tester"),
        ("tshark", "tshark"),
        ("chromium", "chromium"),
        ("node", "nodejs"),
        ("npm", "npm"),
        ("openssl", "openssl"),
    ] {
        require_tool(tool, pkg);
    }
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (cert, key) = make_certificate(&env.dir);
    let spec = ProxySpec {
        t1_ms: 500,
        media: Some(MediaSpec {
            datapath: "userspace",
            xdp_interfaces: Vec::new(),
            timeout_s: None,
            profiles: [Some("webrtc"), Some("plain")],
        }),
        ..ProxySpec::standard(vec![Trunk::new("core", CORE_IP, Transport::Udp, 1)])
    };
    let wss = format!(
        "{{ name: out-wss, proto: wss, address: {SBC_OUTSIDE_IP}, port: {WSS_PORT}, \
         tls: {{ certificate: {}, private_key: {} }} }}",
        cert.display(),
        key.display()
    );
    let yaml = sbcd_config_with_outside_listeners(&spec, &[wss]);
    let sbc_ns = env.topo.sbc.name().to_string();
    let proxy = Proxy::start_sbcd_with_config(&mut env, &sbc_ns, spec, yaml)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    let res = wait_until("sbcd WSS listener", Duration::from_secs(10), || {
        is_listening(&sbc_ns, Transport::Tcp, SBC_OUTSIDE_IP, WSS_PORT)
    });
    if let Err(e) = res {
        env.dump_logs();
        panic!("{e}");
    }
    let (s0, s1) = (env.topo.sbc_out_dev.clone(), env.topo.sbc_in_dev.clone());
    let capture = Capture::start_filtered(
        &mut env,
        &sbc_ns,
        &[&s0, &s1],
        "udp and not port 5060",
        "media",
    )
    .unwrap_or_else(|e| panic!("starting tshark: {e}"));
    Some(Setup {
        env,
        _proxy: proxy,
        capture,
    })
}

fn uas(env: &mut TestEnv, scenario: &str) -> Sipp {
    let vars = vec![("TALK_MS".to_string(), TALK_MS.to_string())];
    let scn = render_from(&browser_dir().join("scenarios"), scenario, &vars, &env.dir)
        .unwrap_or_else(|e| panic!("render {scenario}: {e}"));
    let in_ns = env.topo.inside.name().to_string();
    let mut cfg = SippConfig::uas("uas", &in_ns, scn, CORE_IP, Transport::Udp);
    cfg.extra_args = vec![
        "-mi".into(),
        CORE_IP.to_string(),
        "-mp".into(),
        "20000".into(),
        "-rtp_echo".into(),
    ];
    cfg.timeout = Duration::from_secs(50);
    Sipp::start(env, cfg).unwrap_or_else(|e| panic!("starting the UAS: {e}"))
}

/// Asserts on what the page saw: registration, the call, the WebRTC SDP from sbcd and the
/// media in getStats().
fn assert_page(res: &PageResult, ended_by: &str) {
    let ctx = || {
        format!(
            "page timeline:\n{}\n--- page output:\n{}",
            res.timeline(),
            res.raw
        )
    };
    assert_eq!(res.get("registered"), "true", "not registered; {}", ctx());
    assert_eq!(
        res.get("confirmed"),
        "true",
        "call not established; {}",
        ctx()
    );
    assert_eq!(res.get("failed"), "null", "call failed; {}", ctx());
    assert_eq!(
        res.text("ended_by"),
        ended_by,
        "who ended the call; {}",
        ctx()
    );
    let sdps = res.remote_sdps();
    assert!(!sdps.is_empty(), "no SDP from sbcd; {}", ctx());
    for sdp in &sdps {
        for want in [
            "UDP/TLS/RTP/SAVPF",
            "a=ice-lite",
            "a=ice-ufrag:",
            "a=ice-pwd:",
            "a=fingerprint:sha-256 ",
            "a=setup:",
            "a=rtcp-mux",
            &format!("c=IN IP4 {SBC_OUTSIDE_IP}"),
        ] {
            assert!(sdp.contains(want), "SDP from sbcd lacks `{want}`: {sdp}");
        }
        assert!(
            !sdp.contains("RTP/AVP ") && !sdp.contains(&CORE_IP.to_string()),
            "SDP from sbcd leaks the plain inside side: {sdp}"
        );
    }
    let st = |k: &str| res.num(&format!("stats.{k}"));
    assert_eq!(res.text("stats.dtls_state"), "connected", "DTLS; {}", ctx());
    assert!(
        !res.text("stats.srtp_cipher").is_empty(),
        "no SRTP cipher; {}",
        ctx()
    );
    assert_eq!(
        res.text("stats.codec"),
        "audio/PCMU/8000",
        "codec; {}",
        ctx()
    );
    assert!(st("packets_sent") >= MIN_PACKETS as f64, "sent; {}", ctx());
    assert!(
        st("max_packets_received") >= MIN_PACKETS as f64,
        "inbound-rtp packetsReceived {} < {MIN_PACKETS}; {}",
        st("max_packets_received"),
        ctx()
    );
    assert!(
        st("max_audio_level") > MIN_AUDIO_LEVEL,
        "inbound-rtp audioLevel {} (the echoed tone is ~0.36); {}",
        st("max_audio_level"),
        ctx()
    );
}

/// RFC 7983 demultiplexing classes of a UDP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Stun,
    Dtls,
    Rtp,
    Other,
}

fn class(p: &[u8]) -> Class {
    match p.first() {
        Some(0..=3) => Class::Stun,
        Some(20..=63) => Class::Dtls,
        Some(128..=191) => Class::Rtp,
        _ => Class::Other,
    }
}

/// RTP payload (after the fixed header, CSRCs and an extension); None for RTCP (rtcp-mux
/// packet types 64..=95 after the marker bit) or a malformed header.
fn rtp_body(p: &[u8]) -> Option<&[u8]> {
    if class(p) != Class::Rtp || p.len() < 12 || (64..=95).contains(&(p[1] & 0x7f)) {
        return None;
    }
    let mut off = 12 + 4 * usize::from(p[0] & 0x0f);
    if p[0] & 0x10 != 0 {
        let words = usize::from(u16::from_be_bytes([*p.get(off + 2)?, *p.get(off + 3)?]));
        off += 4 + 4 * words;
    }
    p.get(off..)
}

/// The capture: STUN, DTLS and SRTP between the browser and the outside relay ports, plain
/// PCMU RTP between the inside relay ports and the phone, and no inside payload in clear
/// outside.
fn assert_media_capture(capture: Capture, env: &TestEnv, phone: Ipv4Addr) {
    let all = capture
        .finish_udp()
        .unwrap_or_else(|e| panic!("reading the media capture: {e}"));
    let (s0, s1) = (&env.topo.sbc_out_dev, &env.topo.sbc_in_dev);
    let sbc_out = SBC_OUTSIDE_IP.to_string();
    let sbc_in = SBC_INSIDE_IP.to_string();
    let on = |iface: &str, sbc: &str, ports: &std::ops::RangeInclusive<u16>| -> Vec<&UdpDatagram> {
        all.iter()
            .filter(|d| d.iface == iface)
            .filter(|d| {
                (d.src == sbc && ports.contains(&d.src_port))
                    || (d.dst == sbc && ports.contains(&d.dst_port))
            })
            .collect()
    };
    let outside = on(s0, &sbc_out, &OUT_MEDIA);
    let inside = on(s1, &sbc_in, &IN_MEDIA);
    let count = |set: &[&UdpDatagram], c: Class, from_sbc: bool, sbc: &str| {
        set.iter()
            .filter(|d| class(&d.payload) == c && (d.src == sbc) == from_sbc)
            .count()
    };
    let summary = format!(
        "outside: {} datagrams (STUN in/out {}/{}, DTLS {}/{}, RTP-range {}/{}); inside: {} \
         (RTP in/out {}/{}, STUN {}, DTLS {})",
        outside.len(),
        count(&outside, Class::Stun, false, &sbc_out),
        count(&outside, Class::Stun, true, &sbc_out),
        count(&outside, Class::Dtls, false, &sbc_out),
        count(&outside, Class::Dtls, true, &sbc_out),
        count(&outside, Class::Rtp, false, &sbc_out),
        count(&outside, Class::Rtp, true, &sbc_out),
        inside.len(),
        count(&inside, Class::Rtp, false, &sbc_in),
        count(&inside, Class::Rtp, true, &sbc_in),
        inside
            .iter()
            .filter(|d| class(&d.payload) == Class::Stun)
            .count(),
        inside
            .iter()
            .filter(|d| class(&d.payload) == Class::Dtls)
            .count(),
    );
    eprintln!("media capture: {summary}");
    let min = MIN_PACKETS as usize;
    // ICE-lite: the browser checks, the SBC answers; DTLS both ways; SRTP both ways.
    assert!(
        count(&outside, Class::Stun, false, &sbc_out) >= 1,
        "no STUN check from the browser: {summary}"
    );
    assert!(
        count(&outside, Class::Stun, true, &sbc_out) >= 1,
        "no STUN response from sbcd: {summary}"
    );
    assert!(
        count(&outside, Class::Dtls, false, &sbc_out) >= 1,
        "no DTLS from the browser: {summary}"
    );
    assert!(
        count(&outside, Class::Dtls, true, &sbc_out) >= 1,
        "no DTLS from sbcd: {summary}"
    );
    assert!(
        count(&outside, Class::Rtp, false, &sbc_out) >= min,
        "too little SRTP from the browser: {summary}"
    );
    assert!(
        count(&outside, Class::Rtp, true, &sbc_out) >= min,
        "too little SRTP toward the browser: {summary}"
    );
    // Inside: plain RTP both ways between the relay and the phone, PCMU, nothing else.
    let phone = phone.to_string();
    let plain: Vec<&UdpDatagram> = inside
        .iter()
        .copied()
        .filter(|d| d.src == phone || d.dst == phone)
        .collect();
    assert!(
        count(&plain, Class::Rtp, true, &sbc_in) >= min,
        "too little RTP to the phone: {summary}"
    );
    assert!(
        count(&plain, Class::Rtp, false, &sbc_in) >= min,
        "too little RTP from the phone: {summary}"
    );
    assert!(
        inside
            .iter()
            .all(|d| matches!(class(&d.payload), Class::Rtp)),
        "inside media is not all RTP/RTCP (STUN/DTLS/other leaked): {summary}"
    );
    let bodies: BTreeSet<&[u8]> = plain
        .iter()
        .filter(|d| d.payload.get(1).is_some_and(|b| b & 0x7f == 0))
        .filter_map(|d| rtp_body(&d.payload))
        .filter(|b| b.len() >= 80)
        .collect();
    assert!(
        !bodies.is_empty(),
        "no PCMU (payload type 0) RTP inside: {summary}"
    );
    // Outside is SRTP: not one of the inside PCMU payloads (first 80 bytes) appears in clear.
    for d in &outside {
        for b in &bodies {
            let probe = &b[..80];
            assert!(
                !d.payload.windows(probe.len()).any(|w| w == probe),
                "plain RTP payload seen on the outside link ({}:{} -> {}:{}): not SRTP; {summary}",
                d.src,
                d.src_port,
                d.dst,
                d.dst_port
            );
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn browser_calls_a_phone_and_hangs_up() {
    let _serial = lock();
    let Some(Setup {
        mut env,
        _proxy,
        capture,
    }) = setup("browser_calls_phone")
    else {
        return;
    };
    let uas = uas(&mut env, "browser_uas.xml");
    let browser = Browser::start(&mut env, Role::CallAndHangUp);
    browser.wait_registered(&mut env);
    let res = browser.finish(&mut env);
    let uas_res = uas.finish(Duration::from_secs(10)).expect("uas finished");
    if uas_res.exit_code != Some(0) {
        env.dump_logs();
    }
    // The INVITE reached the phone with a plain offer, and the browser's BYE reached it.
    uas_res.assert_success();
    assert_eq!(uas_res.received_requests("BYE").len(), 1, "BYE at the UAS");
    assert_page(&res, "local");
    assert_media_capture(capture, &env, CORE_IP);
}

// In-dialog requests from the inside (the phone's BYE, its ACK) reach the browser over its
// WebSocket flow, named by the Record-Route flow token, not at the `.invalid` host of its
// Contact (S-01).
#[test]
fn phone_hangs_up_on_the_browser() {
    let _serial = lock();
    let Some(Setup {
        mut env,
        _proxy,
        capture,
    }) = setup("browser_callee_bye")
    else {
        return;
    };
    let uas = uas(&mut env, "browser_uas_bye.xml");
    let browser = Browser::start(&mut env, Role::CallAndWaitForBye);
    browser.wait_registered(&mut env);
    let res = browser.finish(&mut env);
    let uas_res = uas.finish(Duration::from_secs(10)).expect("uas finished");
    if uas_res.exit_code != Some(0) {
        env.dump_logs();
    }
    // The phone's BYE reached the browser over its WebSocket and was answered 200.
    uas_res.assert_success();
    assert_eq!(
        uas_res.received_responses(200, "BYE").len(),
        1,
        "200 (BYE) at the UAS"
    );
    assert_page(&res, "remote");
    assert_eq!(res.text("end_cause"), "Terminated", "{}", res.timeline());
    assert_media_capture(capture, &env, CORE_IP);
}

// In-dialog requests from the inside (the phone's BYE, its ACK) reach the browser over its
// WebSocket flow, named by the Record-Route flow token, not at the `.invalid` host of its
// Contact (S-01).
#[test]
fn phone_calls_the_registered_browser() {
    let _serial = lock();
    let Some(Setup {
        mut env,
        _proxy,
        capture,
    }) = setup("phone_calls_browser")
    else {
        return;
    };
    let browser = Browser::start(&mut env, Role::AnswerAndHangUp);
    browser.wait_registered(&mut env);
    let vars = vec![("CALLEE".to_string(), "alice".to_string())];
    let scn = render_from(
        &browser_dir().join("scenarios"),
        "browser_uac.xml",
        &vars,
        &env.dir,
    )
    .unwrap_or_else(|e| panic!("render browser_uac.xml: {e}"));
    let in_ns = env.topo.inside.name().to_string();
    let mut cfg = SippConfig::uac(
        "uac",
        &in_ns,
        scn,
        CORE_IP,
        Transport::Udp,
        (SBC_INSIDE_IP, 5060),
    );
    cfg.extra_args = vec![
        "-mi".into(),
        CORE_IP.to_string(),
        "-mp".into(),
        "20000".into(),
        "-rtp_echo".into(),
    ];
    cfg.timeout = Duration::from_secs(50);
    let uac = Sipp::start(&mut env, cfg).unwrap_or_else(|e| panic!("starting the UAC: {e}"));
    let res = browser.finish(&mut env);
    let uac_res = uac.finish(Duration::from_secs(10)).expect("uac finished");
    if uac_res.exit_code != Some(0) {
        env.dump_logs();
    }
    uac_res.assert_success();
    assert_eq!(uac_res.received_requests("BYE").len(), 1, "BYE at the UAC");
    assert_page(&res, "local");
    assert_media_capture(capture, &env, CORE_IP);
}

#[test]
fn rfc7983_classes_and_rtp_payloads() {
    assert_eq!(class(&[0x00, 0x01, 0x00, 0x00]), Class::Stun);
    assert_eq!(class(&[22, 0xfe, 0xfd]), Class::Dtls);
    assert_eq!(class(&[0x17]), Class::Dtls);
    assert_eq!(class(&[0x45]), Class::Other);
    assert_eq!(class(&[]), Class::Other);
    // PCMU (payload type 0, marker set) without CSRC or extension.
    let mut rtp = vec![0x80, 0x80, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1];
    rtp.extend([0xff; 160]);
    assert_eq!(class(&rtp), Class::Rtp);
    assert_eq!(rtp_body(&rtp), Some(&[0xff; 160][..]));
    // One CSRC and a one-word RFC 8285 extension before the payload.
    let mut ext = vec![0x91, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
    ext.extend([0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
    ext.extend([0x7f; 20]);
    assert_eq!(rtp_body(&ext), Some(&[0x7f; 20][..]));
    // Truncated extension, short packets and RTCP (rtcp-mux: receiver report, PT 201).
    assert_eq!(rtp_body(&ext[..18]), None);
    assert_eq!(rtp_body(&[0x80, 0x00, 0, 1]), None);
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
    assert_eq!(class(&rr), Class::Rtp);
    assert_eq!(rtp_body(&rr), None);
}

#[test]
fn page_config_strings_are_json_escaped() {
    assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
}
