//! Topology hiding with real peers (S-07): a PBX inside calls a phone outside through sbcd
//! with `topology_hiding` on the outside interface (and media anchored), holds and resumes
//! the call and hangs up. Everything sbcd sends on the outside link is captured with
//! tshark: no inside address appears in any SIP message (Via, Record-Route, Contact,
//! Call-Info, Call-ID with masking on, SDP, ...), while the calls complete on both sides.

use std::net::Ipv4Addr;
use std::time::Duration;

use portcullis_tests::capture::Capture;
use portcullis_tests::env::wait_until;
use portcullis_tests::netns::{CLIENT_IP, CORE_IP, SBC_INSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::sbcd_binary;
use portcullis_tests::sipp::{is_listening, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const CONFIG: &str = r#"
logging: { level: debug }
metrics: { listen: "127.0.0.1:9090" }
media: { datapath: userspace }
interfaces:
  - name: outside
    listeners: [{ name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }]
    media: { address: 192.0.2.1, port_min: 30000, port_max: 30999 }
    policy: { topology_hiding: true, call_id_masking: true }
  - name: inside
    listeners: [{ name: in-udp, proto: udp, address: 198.51.100.1, port: 5060 }]
    media: { address: 198.51.100.1, port_min: 31000, port_max: 31999 }
trunks:
  - { name: phone, host: 192.0.2.2, port: 5060, group: ext, interface: outside }
routes:
  - { name: out, match: { interface: inside }, group: ext }
"#;

#[test]
fn nothing_from_inside_leaks_to_the_outside_during_a_call_with_hold() {
    let test = "topology_hiding";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("tshark", "tshark");
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = (
        env.topo.outside.name().to_string(),
        env.topo.sbc.name().to_string(),
        env.topo.inside.name().to_string(),
    );
    let cfg = env.dir.join("sbcd.yaml");
    std::fs::write(&cfg, CONFIG).expect("write config");
    let bin = sbcd_binary("debug").unwrap_or_else(|e| panic!("{e}"));
    env.spawn(
        &Spec::new("sbcd", bin.display().to_string())
            .netns(&sbc_ns)
            .args(["--config".to_string(), cfg.display().to_string()]),
    )
    .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    wait_until("sbcd listening", Duration::from_secs(10), || {
        is_listening(&sbc_ns, Transport::Udp, SBC_INSIDE_IP, 5060)
    })
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });
    let out_dev = env.topo.sbc_out_dev.clone();
    let capture = Capture::start(&mut env, &sbc_ns, &[&out_dev]).expect("start capture");

    let uas_scn = render("hide_uas.xml", &[], &env.dir).expect("render");
    let uac_scn = render("hide_uac.xml", &[], &env.dir).expect("render");
    let mut uas_cfg = SippConfig::uas("phone", &out_ns, uas_scn, CLIENT_IP, Transport::Udp);
    uas_cfg.extra_args = vec![
        "-mi".into(),
        CLIENT_IP.to_string(),
        "-mp".into(),
        "22000".into(),
    ];
    let uas = Sipp::start(&mut env, uas_cfg).expect("start phone");
    let mut uac_cfg = SippConfig::uac(
        "pbx",
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
        "23000".into(),
    ];
    let uac = Sipp::start(&mut env, uac_cfg).expect("start pbx");
    let uac_res = uac.finish(Duration::from_secs(30)).expect("pbx finished");
    let uas_res = uas.finish(Duration::from_secs(10)).expect("phone finished");
    if uac_res.exit_code != Some(0) || uas_res.exit_code != Some(0) {
        env.dump_logs();
    }
    uac_res.assert_success();
    uas_res.assert_success();

    let payloads = capture.finish_payloads().expect("read capture");
    let sent_by_sbc: Vec<String> = payloads
        .iter()
        .map(|p| String::from_utf8_lossy(p).to_string())
        .filter(|t| {
            t.starts_with("INVITE")
                || t.starts_with("ACK")
                || t.starts_with("BYE")
                || t.starts_with("SIP/2.0")
        })
        .collect();
    // INVITE, ACK, re-INVITE, ACK, BYE from the SBC; 200, 200, 200 from the phone.
    assert!(
        sent_by_sbc.len() >= 8,
        "captured {} SIP messages: {sent_by_sbc:?}",
        sent_by_sbc.len()
    );
    let inside = Ipv4Addr::new(198, 51, 100, 0).to_string();
    let inside_prefix = &inside[..inside.len() - 1];
    for m in &sent_by_sbc {
        assert!(
            !m.contains(inside_prefix),
            "inside address on the outside link:\n{m}"
        );
    }
    assert!(
        sent_by_sbc
            .iter()
            .any(|m| m.starts_with("INVITE")
                && m.contains("Call-Info: <http://192.0.2.1/photo.png>")),
        "Call-Info rewritten to the SBC's outside address"
    );
}
