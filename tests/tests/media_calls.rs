//! Media anchoring end to end with real peers in network namespaces: a sipp caller outside
//! plays G.711 RTP (Debian sip-tester's g711a.pcap), a sipp callee inside echoes it
//! (`-rtp_echo`); sbcd rewrites both SDPs to its own relay addresses (asserted in the
//! scenarios: neither peer sees the other's address) and relays the RTP both ways
//! (asserted with sbcd's relayed-packet counter), with the userspace datapath.

use std::time::Duration;

use portcullis_tests::capture::{Capture, UdpDatagram};
use portcullis_tests::netns::{CLIENT_IP, CORE_IP, SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::proxy::{MediaSpec, Proxy, ProxyKind, ProxySpec, Trunk};
use portcullis_tests::sipp::{finish_pair, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

fn metric_value(ns: &str, name: &str) -> f64 {
    portcullis_tests::proxy::sbcd_metric(ns, name).unwrap_or(0.0)
}

/// Runs `f` on a thread inside network namespace `ns` (XDP attaches in the caller's
/// namespace).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("thread in {ns} panicked"))
}

/// One call with RTP both ways through sbcd with `datapath`; returns the test env (for
/// metrics) after both sipp peers succeeded.
/// A finished media call: its environment, what sbcd's namespace is, the XDP pass programs
/// and sbcd (still running, for metrics), and the RTP captured on the relay ports.
struct MediaCall {
    env: TestEnv,
    sbc_ns: String,
    _passes: Vec<ebpf_relay::PassProgram>,
    _proxy: Proxy,
    rtp: Vec<UdpDatagram>,
}

fn media_call(test: &str, datapath: &'static str) -> Option<MediaCall> {
    if !require_root(test) {
        return None;
    }
    require_tool("sipp", "sip-tester");
    require_tool("curl", "curl");
    require_tool("ethtool", "ethtool");
    require_tool("tshark", "tshark");
    assert!(
        std::path::Path::new(PCAP).is_file(),
        "{PCAP} missing: install sip-tester"
    );
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let mut passes = Vec::new();
    let mut xdp_interfaces = Vec::new();
    if datapath == "xdp" {
        // veth: frames the SBC's XDP program sends arrive only if the peer veth has an XDP
        // program too; locally generated UDP leaves veth with a partial checksum.
        for (ns, dev) in [
            (out_ns.clone(), format!("{}c0", env.topo.stem)),
            (in_ns.clone(), format!("{}i0", env.topo.stem)),
        ] {
            portcullis_tests::netns::run(
                "ip",
                &["netns", "exec", &ns, "ethtool", "-K", &dev, "tx", "off"],
            )
            .unwrap_or_else(|e| panic!("ethtool on {dev}: {e}"));
            let d = dev.clone();
            passes.push(
                in_netns(&ns, move || ebpf_relay::PassProgram::attach(&d, false))
                    .unwrap_or_else(|e| panic!("XDP pass program on {dev}: {e}")),
            );
        }
        xdp_interfaces = vec![env.topo.sbc_out_dev.clone(), env.topo.sbc_in_dev.clone()];
    }
    let spec = ProxySpec {
        t1_ms: 500,
        media: Some(MediaSpec {
            datapath,
            xdp_interfaces,
            timeout_s: None,
            profiles: [None, None],
        }),
        ..ProxySpec::standard(vec![Trunk::new("core", CORE_IP, Transport::Udp, 1)])
    };
    let proxy = Proxy::start(&mut env, ProxyKind::Sbcd, &sbc_ns, spec, None)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    // The relay ports of both interfaces (frames the XDP program redirects bypass the
    // capture hook, so only the userspace test asserts on this).
    let (out_dev, in_dev) = (env.topo.sbc_out_dev.clone(), env.topo.sbc_in_dev.clone());
    let capture = Capture::start_filtered(
        &mut env,
        &sbc_ns,
        &[&out_dev, &in_dev],
        "udp portrange 30000-31999",
        "rtp",
    )
    .expect("start capture");
    let vars = vec![("PCAP".to_string(), PCAP.to_string())];
    let uas_scn = render("media_uas.xml", &vars, &env.dir).expect("render uas");
    let uac_scn = render("media_uac.xml", &vars, &env.dir).expect("render uac");
    let media = |ip: std::net::Ipv4Addr, port: u16, echo: bool| {
        let mut v = vec![
            "-mi".to_string(),
            ip.to_string(),
            "-mp".to_string(),
            port.to_string(),
        ];
        if echo {
            v.push("-rtp_echo".into());
        }
        v
    };
    let mut uas_cfg = SippConfig::uas("uas", &in_ns, uas_scn, CORE_IP, Transport::Udp);
    uas_cfg.extra_args = media(CORE_IP, 20000, true);
    uas_cfg.timeout = Duration::from_secs(30);
    let uas = Sipp::start(&mut env, uas_cfg).expect("start uas");
    let mut uac_cfg = SippConfig::uac(
        "uac",
        &out_ns,
        uac_scn,
        CLIENT_IP,
        Transport::Udp,
        (SBC_OUTSIDE_IP, 5060),
    );
    uac_cfg.extra_args = media(CLIENT_IP, 21000, false);
    uac_cfg.timeout = Duration::from_secs(30);
    let uac = Sipp::start(&mut env, uac_cfg).expect("start uac");
    finish_pair(uac, uas, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    let rtp = capture.finish_udp().expect("read capture");
    Some(MediaCall {
        env,
        sbc_ns,
        _passes: passes,
        _proxy: proxy,
        rtp,
    })
}

#[test]
fn rtp_is_anchored_and_relayed_both_ways_with_the_userspace_datapath() {
    // Kept whole until the end: sbcd must outlive the metric reads.
    let Some(call) = media_call("media_call_userspace", "userspace") else {
        return;
    };
    let (env, sbc_ns, rtp) = (&call.env, &call.sbc_ns, &call.rtp);
    // On the wire: RTP to and from the SBC's relay ports on both interfaces, both ways.
    let (out_dev, in_dev) = (env.topo.sbc_out_dev.clone(), env.topo.sbc_in_dev.clone());
    let (client, sbc_out, sbc_in, core) = (
        CLIENT_IP.to_string(),
        SBC_OUTSIDE_IP.to_string(),
        SBC_INSIDE_IP.to_string(),
        CORE_IP.to_string(),
    );
    let flow = |iface: &str,
                src: &str,
                dst: &str,
                relay_src: bool,
                ports: std::ops::RangeInclusive<u16>| {
        rtp.iter()
            .filter(|d| d.iface == iface && d.src == src && d.dst == dst)
            .filter(|d| ports.contains(if relay_src { &d.src_port } else { &d.dst_port }))
            .filter(|d| d.payload.first().is_some_and(|b| (128..=191).contains(b)))
            .count()
    };
    for (what, n) in [
        (
            "caller -> outside relay",
            flow(&out_dev, &client, &sbc_out, false, 30000..=30999),
        ),
        (
            "outside relay -> caller",
            flow(&out_dev, &sbc_out, &client, true, 30000..=30999),
        ),
        (
            "inside relay -> callee",
            flow(&in_dev, &sbc_in, &core, true, 31000..=31999),
        ),
        (
            "callee -> inside relay",
            flow(&in_dev, &core, &sbc_in, false, 31000..=31999),
        ),
    ] {
        assert!(n >= 50, "{what}: {n} RTP packets captured");
    }
    // g711a.pcap holds ~100 packets (2 s at 50/s); the callee echoes them: ~200 relayed.
    // One direction alone could not reach 150.
    let relayed = metric_value(sbc_ns, "sbc_media_relayed_packets_total");
    if relayed < 150.0 {
        env.dump_logs();
    }
    assert!(relayed >= 150.0, "relayed packets: {relayed}");
    // The call ended with BYE: its RTP pair carried media both ways.
    let two_way = metric_value(sbc_ns, "sbc_media_streams_ended_total{kind=\"two_way\"}");
    assert!(two_way >= 1.0, "two-way streams ended: {two_way}");
}

#[test]
fn rtp_is_relayed_by_the_xdp_program_once_latched() {
    let Some(call) = media_call("media_call_xdp", "xdp") else {
        return;
    };
    let (env, sbc_ns) = (&call.env, &call.sbc_ns);
    let relayed = metric_value(sbc_ns, "sbc_media_relayed_packets_total");
    let by_xdp = metric_value(
        sbc_ns,
        "sbc_media_xdp_packets_total{outcome=\"forwarded_redirect\"}",
    ) + metric_value(
        sbc_ns,
        "sbc_media_xdp_packets_total{outcome=\"forwarded_tx\"}",
    );
    eprintln!("relayed {relayed} packets, {by_xdp} of them by XDP");
    if relayed < 150.0 || by_xdp < 150.0 {
        env.dump_logs();
    }
    assert!(relayed >= 150.0, "relayed packets: {relayed}");
    // After latching (the first packets of each direction go through userspace), the
    // XDP program forwards the stream.
    assert!(
        by_xdp >= 150.0,
        "packets forwarded by XDP: {by_xdp} of {relayed}"
    );
    // The pass programs and sbcd go with `call`, after the checks.
    drop(call);
}

#[test]
fn media_timeout_ends_the_call_with_bye_to_both_legs() {
    let test = "media_timeout";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let spec = ProxySpec {
        t1_ms: 500,
        media: Some(MediaSpec {
            datapath: "userspace",
            xdp_interfaces: Vec::new(),
            timeout_s: Some(3),
            profiles: [None, None],
        }),
        ..ProxySpec::standard(vec![Trunk::new("core", CORE_IP, Transport::Udp, 1)])
    };
    let _proxy = Proxy::start(&mut env, ProxyKind::Sbcd, &sbc_ns, spec, None)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    let uas_scn = render("media_timeout_uas.xml", &[], &env.dir).expect("render uas");
    let uac_scn = render("media_timeout_uac.xml", &[], &env.dir).expect("render uac");
    let mut uas_cfg = SippConfig::uas("uas", &in_ns, uas_scn, CORE_IP, Transport::Udp);
    uas_cfg.extra_args = vec![
        "-mi".into(),
        CORE_IP.to_string(),
        "-mp".into(),
        "20000".into(),
    ];
    let uas = Sipp::start(&mut env, uas_cfg).expect("start uas");
    let mut uac_cfg = SippConfig::uac(
        "uac",
        &out_ns,
        uac_scn,
        CLIENT_IP,
        Transport::Udp,
        (SBC_OUTSIDE_IP, 5060),
    );
    uac_cfg.extra_args = vec![
        "-mi".into(),
        CLIENT_IP.to_string(),
        "-mp".into(),
        "21000".into(),
    ];
    let started = std::time::Instant::now();
    let uac = Sipp::start(&mut env, uac_cfg).expect("start uac");
    finish_pair(uac, uas, Duration::from_secs(30));
    // The BYEs come after the 3 s timeout (checked once each scenario got its BYE).
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "BYE before the media timeout"
    );
    // No packet was ever sent: its streams are reported as zero-packet streams.
    std::thread::sleep(Duration::from_millis(300));
    let m = |k: &str| {
        metric_value(
            &sbc_ns,
            &format!("sbc_media_streams_ended_total{{kind=\"{k}\"}}"),
        )
    };
    assert!(
        m("zero_packet") >= 1.0,
        "zero-packet streams: {}",
        m("zero_packet")
    );
    assert_eq!(m("two_way") + m("one_way"), 0.0, "no stream carried media");
    assert_eq!(metric_value(&sbc_ns, "sbc_media_timeouts_total"), 1.0);
}
