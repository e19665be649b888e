//! SRTP <-> RTP bridging with real peers (issue 6).
//!
//! SDES (item 5): a scripted SRTP caller
//! (pylibsrtp, i.e. libsrtp 2) outside calls through sbcd, whose inside interface has the
//! `plain` media profile, to a sipp callee that answers RTP/AVP and echoes RTP. The caller
//! sees an RTP/SAVP answer with the SBC's own key, every SRTP packet it sends comes back
//! (decrypted by sbcd, echoed in the clear inside, encrypted again by sbcd), and the packets
//! an attacker sends from another port with bad authentication tags neither reach the callee
//! nor move the media away from the caller.
//!
//! WebRTC (items 2, 3, 7): aiortc, a real WebRTC stack (full ICE, DTLS-SRTP with OpenSSL,
//! libsrtp, rtcp-mux, BUNDLE), calls through sbcd with the offer it generates; sbcd answers
//! as ICE-lite DTLS-SRTP endpoint, the callee inside gets plain RTP/AVP without WebRTC
//! attributes and echoes; aiortc connects and receives the echoed audio. A capture of the
//! outside link shows DTLS and no plain RTP there.

use std::time::Duration;

use portcullis_tests::capture::Capture;
use portcullis_tests::env::wait_until;
use portcullis_tests::netns::{CLIENT_IP, CORE_IP, SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::{MediaSpec, Proxy, ProxyKind, ProxySpec, Trunk};
use portcullis_tests::sipp::{is_listening, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const PACKETS: u32 = 60;

/// The JSON line a scripted peer prints last, read field by field (flat objects only).
struct PeerReport(String);

impl PeerReport {
    fn from_stdout(out: &str) -> Self {
        PeerReport(out.lines().last().unwrap_or_default().to_string())
    }

    /// The raw JSON value of `key` (strings keep their quotes); empty when absent.
    fn field(&self, key: &str) -> String {
        let pat = format!("\"{key}\": ");
        self.0
            .split(&pat)
            .nth(1)
            .map(|r| r.split([',', '}']).next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    }

    /// A numeric field; a missing or non-numeric one fails the test.
    fn num(&self, key: &str) -> u64 {
        self.field(key)
            .parse()
            .unwrap_or_else(|_| panic!("peer report without a number for {key}: {}", self.0))
    }
}

/// sbcd with media anchored (userspace relay) and these `media.profile`s on the outside and
/// inside interfaces, routing everything from outside to the core.
fn bridged_sbcd(env: &mut TestEnv, sbc_ns: &str, profiles: [Option<&'static str>; 2]) -> Proxy {
    let spec = ProxySpec {
        t1_ms: 500,
        media: Some(MediaSpec {
            datapath: "userspace",
            xdp_interfaces: Vec::new(),
            timeout_s: None,
            profiles,
        }),
        ..ProxySpec::standard(vec![Trunk::new("core", CORE_IP, Transport::Udp, 1)])
    };
    Proxy::start(env, ProxyKind::Sbcd, sbc_ns, spec, None)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"))
}

/// A sipp callee inside answering `scenario` and echoing the RTP it gets.
fn echo_callee(env: &mut TestEnv, in_ns: &str, scenario: &str, vars: &[(String, String)]) -> Sipp {
    let scn = render(scenario, vars, &env.dir).expect("render uas");
    let mut cfg = SippConfig::uas("uas", in_ns, scn, CORE_IP, Transport::Udp);
    cfg.extra_args = vec![
        "-mi".into(),
        CORE_IP.to_string(),
        "-mp".into(),
        "20000".into(),
        "-rtp_echo".into(),
    ];
    cfg.timeout = Duration::from_secs(60);
    Sipp::start(env, cfg).expect("start uas")
}

/// Runs a scripted Python peer (tests/python) in `ns` to completion; its exit success and
/// stdout.
fn run_peer(
    env: &mut TestEnv,
    ns: &str,
    python: &std::path::Path,
    script: &str,
    args: &[String],
) -> (bool, String) {
    let path = portcullis_tests::python::scripts_dir().join(script);
    let mut all = vec![path.display().to_string()];
    all.extend(args.iter().cloned());
    let idx = env
        .spawn(
            &Spec::new(script.trim_end_matches(".py"), python.display().to_string())
                .netns(ns)
                .args(all),
        )
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let status = env
        .process(idx)
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{script} did not finish: {e}"));
    (status.success(), env.process(idx).stdout_text())
}

/// Captures of the relay ports on both links (outside 30000-30999, inside 31000-31999).
fn media_captures(env: &mut TestEnv, sbc_ns: &str) -> (Capture, Capture) {
    let (out_dev, in_dev) = (env.topo.sbc_out_dev.clone(), env.topo.sbc_in_dev.clone());
    let outside = Capture::start_filtered(
        env,
        sbc_ns,
        &[&out_dev],
        "udp portrange 30000-30999",
        "media",
    )
    .expect("start capture");
    let inside = Capture::start_filtered(
        env,
        sbc_ns,
        &[&in_dev],
        "udp portrange 31000-31999",
        "media",
    )
    .expect("start capture");
    (outside, inside)
}

#[test]
fn sdes_caller_is_bridged_to_a_plain_rtp_callee() {
    let test = "srtp_sdes_call";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("python3", "python3");
    let python = portcullis_tests::python::venv_python("pylibsrtp")
        .unwrap_or_else(|e| panic!("{test}: python peer: {e}"));
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let _proxy = bridged_sbcd(&mut env, &sbc_ns, [None, Some("plain")]);
    let uas = echo_callee(
        &mut env,
        &in_ns,
        "media_uas.xml",
        &[("PCAP".to_string(), String::new())],
    );
    let (ok, out) = run_peer(
        &mut env,
        &out_ns,
        &python,
        "sdes_caller.py",
        &[
            SBC_OUTSIDE_IP.to_string(),
            CLIENT_IP.to_string(),
            PACKETS.to_string(),
        ],
    );
    let uas_res = uas.finish(Duration::from_secs(10)).expect("uas finished");
    if !ok || uas_res.exit_code != Some(0) {
        env.dump_logs();
    }
    assert!(ok, "SRTP caller failed: {out}");
    uas_res.assert_success();
    let report = PeerReport::from_stdout(&out);
    let line = &report.0;
    eprintln!("SRTP caller: {line}");
    assert_eq!(report.field("answer_proto"), "\"RTP/SAVP\"", "{line}");
    assert_eq!(report.field("answer_has_crypto"), "true", "{line}");
    assert_eq!(report.num("sent"), u64::from(PACKETS), "{line}");
    // Every packet came back through both directions of the bridge (loopback-class links;
    // a couple lost would still show the bridge works, none forged may appear).
    assert!(report.num("echoed") >= u64::from(PACKETS - 2), "{line}");
    assert_eq!(
        report.num("unexpected"),
        0,
        "forged packets were relayed: {line}"
    );
    assert_eq!(report.num("undecryptable"), 0, "{line}");
    assert_eq!(report.num("forged_sent"), u64::from(PACKETS), "{line}");
    assert_eq!(
        report.num("attacker_got"),
        0,
        "media moved to the attacker: {line}"
    );
    assert_eq!(report.num("bye"), 200, "{line}");
    // The forged packets are counted as authentication failures (metrics tick every second).
    let metric = |name: &str| portcullis_tests::proxy::sbcd_metric(&sbc_ns, name).unwrap_or(0.0);
    wait_until("secure drops counted", Duration::from_secs(5), || {
        Ok(metric("sbc_media_secure_drops_total{reason=\"auth_failed\"}") >= f64::from(PACKETS))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            metric("sbc_media_secure_drops_total{reason=\"auth_failed\"}")
        )
    });
}

#[test]
fn webrtc_caller_is_bridged_to_a_plain_rtp_callee() {
    let test = "webrtc_call";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("python3", "python3");
    require_tool("tshark", "tshark");
    let python = portcullis_tests::python::venv_python("aiortc")
        .unwrap_or_else(|e| panic!("{test}: python peer: {e}"));
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let _proxy = bridged_sbcd(&mut env, &sbc_ns, [Some("webrtc"), Some("plain")]);
    let (capture, inside_capture) = media_captures(&mut env, &sbc_ns);
    let uas = echo_callee(&mut env, &in_ns, "webrtc_uas.xml", &[]);
    let (ok, out) = run_peer(
        &mut env,
        &out_ns,
        &python,
        "webrtc_caller.py",
        &[
            SBC_OUTSIDE_IP.to_string(),
            CLIENT_IP.to_string(),
            "3".to_string(),
        ],
    );
    let uas_res = uas.finish(Duration::from_secs(10)).expect("uas finished");
    let outside = capture.finish_payloads().expect("read capture");
    let inside = inside_capture.finish_payloads().expect("read capture");
    if !ok || uas_res.exit_code != Some(0) {
        env.dump_logs();
    }
    assert!(ok, "WebRTC caller failed: {out}");
    uas_res.assert_success();
    let report = PeerReport::from_stdout(&out);
    let line = &report.0;
    eprintln!("WebRTC caller: {line}");
    assert_eq!(
        report.field("answer_proto"),
        "\"UDP/TLS/RTP/SAVPF\"",
        "{line}"
    );
    assert_eq!(report.field("answer_ice_lite"), "true", "{line}");
    assert_eq!(report.field("connection"), "\"connected\"", "{line}");
    // ~3 s of 20 ms audio each way: aiortc sent ~150 and got the echo back.
    assert!(report.num("packets_sent") >= 100, "{line}");
    assert!(
        report.num("packets_received") >= 80,
        "echoed audio came back: {line}"
    );
    assert_eq!(report.num("bye"), 200, "{line}");
    let metric = |name: &str| portcullis_tests::proxy::sbcd_metric(&sbc_ns, name).unwrap_or(0.0);
    wait_until("handshake counted", Duration::from_secs(5), || {
        Ok(metric("sbc_media_dtls_handshakes_total{result=\"connected\"}") >= 1.0)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        metric("sbc_media_dtls_handshakes_total{result=\"failed\"}"),
        0.0
    );
    // On the outside link: the DTLS handshake and SRTP, never the callee's plain RTP (aiortc
    // sends silence, PCMA 0xd5 bytes, which the callee echoes: in the clear only inside).
    let is_rtp = |p: &&Vec<u8>| p.len() > 12 && (128..=191).contains(&p[0]);
    let plain_silence = |p: &&&Vec<u8>| p[12..].iter().all(|b| *b == 0xd5);
    let dtls = outside.iter().filter(|p| (20..=63).contains(&p[0])).count();
    let rtp_out: Vec<&Vec<u8>> = outside.iter().filter(is_rtp).collect();
    let rtp_in: Vec<&Vec<u8>> = inside.iter().filter(is_rtp).collect();
    eprintln!(
        "outside: {dtls} DTLS, {} RTP-like; inside: {} RTP",
        rtp_out.len(),
        rtp_in.len()
    );
    assert!(
        dtls >= 2,
        "DTLS handshake on the outside link: {dtls} records"
    );
    assert!(
        rtp_out.len() >= 150,
        "SRTP both ways outside: {}",
        rtp_out.len()
    );
    assert_eq!(
        rtp_out.iter().filter(plain_silence).count(),
        0,
        "plain RTP on the outside link"
    );
    assert!(
        rtp_in.iter().filter(plain_silence).count() >= 100,
        "plain RTP inside: {} packets",
        rtp_in.len()
    );
}

const REVERSE_CONFIG: &str = r#"
logging: { level: debug }
metrics: { listen: "127.0.0.1:9090" }
media: { datapath: userspace }
interfaces:
  - name: outside
    listeners:
      - { name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }
      - { name: out-tcp, proto: tcp, address: 192.0.2.1, port: 5060 }
    media: { address: 192.0.2.1, port_min: 30000, port_max: 30999, profile: webrtc }
  - name: inside
    listeners:
      - { name: in-udp, proto: udp, address: 198.51.100.1, port: 5060 }
      - { name: in-tcp, proto: tcp, address: 198.51.100.1, port: 5060 }
    media: { address: 198.51.100.1, port_min: 31000, port_max: 31999, profile: plain }
trunks:
  - { name: webrtc-callee, host: 192.0.2.2, port: 5070, group: ext, interface: outside }
routes:
  - { name: out, match: { interface: inside }, group: ext }
"#;

/// The reverse direction: a sipp phone inside calls a WebRTC callee (aiortc) outside. sbcd
/// offers ICE-lite DTLS-SRTP to it (media.profile webrtc) and plain RTP/AVP back to the phone;
/// the phone's G.711 reaches aiortc decrypted by aiortc, aiortc's audio reaches the phone in
/// the clear, also after a hold re-INVITE; nothing on the outside link is plain.
#[test]
fn plain_caller_reaches_a_webrtc_callee() {
    let test = "webrtc_callee";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("tshark", "tshark");
    let pcap = "/usr/share/sip-tester/g711a.pcap";
    assert!(
        std::path::Path::new(pcap).is_file(),
        "{pcap} missing: install sip-tester"
    );
    let python = portcullis_tests::python::venv_python("aiortc")
        .unwrap_or_else(|e| panic!("{test}: python peer: {e}"));
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let _proxy = Proxy::start_sbcd_with_config(
        &mut env,
        &sbc_ns,
        ProxySpec::standard(Vec::new()),
        REVERSE_CONFIG.to_string(),
    )
    .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    let (capture, inside_capture) = media_captures(&mut env, &sbc_ns);
    let script = portcullis_tests::python::scripts_dir().join("webrtc_callee.py");
    let callee = env
        .spawn(
            &Spec::new("webrtc-callee", python.display().to_string())
                .netns(&out_ns)
                .args([
                    script.display().to_string(),
                    CLIENT_IP.to_string(),
                    "5070".to_string(),
                    "40".to_string(),
                ]),
        )
        .expect("start the WebRTC callee");
    wait_until("WebRTC callee listening", Duration::from_secs(20), || {
        is_listening(&out_ns, Transport::Udp, CLIENT_IP, 5070)
    })
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });
    let vars = vec![("PCAP".to_string(), pcap.to_string())];
    let uac_scn = render("webrtc_uac.xml", &vars, &env.dir).expect("render uac");
    let mut uac_cfg = SippConfig::uac(
        "phone",
        &in_ns,
        uac_scn,
        CORE_IP,
        Transport::Udp,
        (SBC_INSIDE_IP, 5060),
    );
    uac_cfg.extra_args = vec![
        "-mi".into(),
        CORE_IP.to_string(),
        "-mp".into(),
        "20000".into(),
    ];
    let uac = Sipp::start(&mut env, uac_cfg).expect("start phone");
    let uac_res = uac.finish(Duration::from_secs(40)).expect("phone finished");
    let status = env
        .process(callee)
        .wait_timeout(Duration::from_secs(45))
        .expect("WebRTC callee finished");
    let out = env.process(callee).stdout_text();
    let outside = capture.finish_payloads().expect("read capture");
    let inside = inside_capture.finish_payloads().expect("read capture");
    if !status.success() || uac_res.exit_code != Some(0) {
        env.dump_logs();
    }
    uac_res.assert_success();
    assert!(status.success(), "WebRTC callee failed: {out}");
    let report = PeerReport::from_stdout(&out);
    let line = &report.0;
    eprintln!("WebRTC callee: {line}");
    assert_eq!(
        report.field("offer_proto"),
        "\"UDP/TLS/RTP/SAVPF\"",
        "{line}"
    );
    assert_eq!(report.field("offer_ice_lite"), "true", "{line}");
    assert_eq!(report.field("connection"), "\"connected\"", "{line}");
    assert_eq!(
        report.field("bye"),
        "true",
        "the phone's BYE reached the callee: {line}"
    );
    // g711a.pcap holds ~100 packets (2 s), the first ones may arrive before the DTLS
    // handshake ends (dropped); aiortc sent for ~3 s.
    assert!(
        report.num("packets_received") >= 50,
        "phone audio reached aiortc: {line}"
    );
    assert!(report.num("packets_sent") >= 100, "{line}");
    assert_eq!(
        report.num("reinvites"),
        1,
        "the hold re-INVITE reached the callee: {line}"
    );
    let is_rtp = |p: &&Vec<u8>| p.len() > 12 && (128..=191).contains(&p[0]);
    // aiortc's audio (PCMA silence, 0xd5) kept reaching the phone in the clear after the
    // hold re-INVITE: the relay kept its DTLS association (re-creating the secure leg would
    // have cut it off at the re-INVITE, about a third into the call).
    let silence_inside = inside
        .iter()
        .filter(is_rtp)
        .filter(|p| p[12..].iter().all(|b| *b == 0xd5))
        .count() as u64;
    assert!(
        silence_inside * 10 >= report.num("packets_sent") * 8,
        "aiortc sent {} packets, {silence_inside} reached the phone",
        report.num("packets_sent")
    );
    let rtp_out: Vec<&Vec<u8>> = outside.iter().filter(is_rtp).collect();
    let rtp_in: std::collections::HashSet<&[u8]> =
        inside.iter().filter(is_rtp).map(|p| &p[12..]).collect();
    let dtls = outside.iter().filter(|p| (20..=63).contains(&p[0])).count();
    eprintln!(
        "outside: {dtls} DTLS, {} RTP-like; inside: {} distinct RTP payloads",
        rtp_out.len(),
        rtp_in.len()
    );
    assert!(dtls >= 2, "DTLS on the outside link");
    assert!(rtp_in.len() >= 50, "plain RTP inside");
    assert_eq!(
        rtp_out.iter().filter(|p| rtp_in.contains(&p[12..])).count(),
        0,
        "a plain RTP payload from inside crossed the outside link"
    );
}
