//! Topology hiding with real peers (S-05, S-07, S-04): with `topology_hiding` (and
//! `hide_hosts`) on the outside interface and media anchored, a call matrix runs through
//! sbcd: the phone outside registers to the registrar inside (Path), the PBX inside calls
//! the phone, holds and resumes and hangs up; a call the phone hangs up; a call answered
//! 486; a call cancelled while ringing. Everything on the outside link is captured with
//! tshark: no inside address and no inside host name appears in any SIP message (Via,
//! Record-Route, Path, Contact, From, To, Request-URI, Call-Info, Server, Warning, P-*,
//! Call-ID with masking on, SDP), while every call completes on both sides. The capture of
//! both links shows the double Record-Route: one SBC entry on the outside, both entries
//! toward the inside (S-04).

use std::net::Ipv4Addr;
use std::time::Duration;

use portcullis_tests::capture::Capture;
use portcullis_tests::netns::{CLIENT_IP, CORE_IP, SBC_INSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::proxy::{Proxy, ProxySpec};
use portcullis_tests::sipp::{finish_pair, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const CONFIG: &str = r#"
logging: { level: debug }
metrics: { listen: "127.0.0.1:9090" }
media: { datapath: userspace }
interfaces:
  - name: outside
    listeners:
      - { name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }
      - { name: out-tcp, proto: tcp, address: 192.0.2.1, port: 5060 }
    media: { address: 192.0.2.1, port_min: 30000, port_max: 30999 }
    policy: { topology_hiding: true, call_id_masking: true, hide_hosts: [corp.internal, 198.51.100.0/24] }
  - name: inside
    listeners:
      - { name: in-udp, proto: udp, address: 198.51.100.1, port: 5060 }
      - { name: in-tcp, proto: tcp, address: 198.51.100.1, port: 5060 }
    media: { address: 198.51.100.1, port_min: 31000, port_max: 31999 }
trunks:
  - { name: phone, host: 192.0.2.2, port: 5060, group: ext, interface: outside }
  - { name: registrar, host: 198.51.100.2, port: 5060, group: reg, interface: inside }
routes:
  - { name: out, match: { interface: inside }, group: ext }
registrar: { upstream: reg, mode: path }
"#;

/// Runs one scenario pair to completion: `uas_xml` at `uas_ip` in `uas_ns`, `uac_xml` from
/// `uac_ip` in `uac_ns` to sbcd's address on that side.
#[allow(clippy::too_many_arguments)]
fn run_pair(
    env: &mut TestEnv,
    step: &str,
    (uas_xml, uas_ns, uas_ip): (&str, &str, Ipv4Addr),
    (uac_xml, uac_ns, uac_ip): (&str, &str, Ipv4Addr),
    sbc_ip: Ipv4Addr,
    media: bool,
) {
    let uas_scn = render(uas_xml, &[], &env.dir).expect("render");
    let uac_scn = render(uac_xml, &[], &env.dir).expect("render");
    let mut uas_cfg = SippConfig::uas(
        &format!("{step}-uas"),
        uas_ns,
        uas_scn,
        uas_ip,
        Transport::Udp,
    );
    if media {
        uas_cfg.extra_args = vec![
            "-mi".into(),
            uas_ip.to_string(),
            "-mp".into(),
            "22000".into(),
        ];
    }
    let uas = Sipp::start(env, uas_cfg).expect("start uas");
    let mut uac_cfg = SippConfig::uac(
        &format!("{step}-uac"),
        uac_ns,
        uac_scn,
        uac_ip,
        Transport::Udp,
        (sbc_ip, 5060),
    );
    if media {
        uac_cfg.extra_args = vec![
            "-mi".into(),
            uac_ip.to_string(),
            "-mp".into(),
            "23000".into(),
        ];
    }
    let uac = Sipp::start(env, uac_cfg).expect("start uac");
    finish_pair(uac, uas, Duration::from_secs(30));
}

#[test]
fn nothing_from_inside_leaks_to_the_outside_during_a_call_matrix() {
    let test = "topology_hiding";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("tshark", "tshark");
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    let _proxy = Proxy::start_sbcd_with_config(
        &mut env,
        &sbc_ns,
        ProxySpec::standard(Vec::new()),
        CONFIG.to_string(),
    )
    .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    let out_dev = env.topo.sbc_out_dev.clone();
    let in_dev = env.topo.sbc_in_dev.clone();
    let capture = Capture::start(&mut env, &sbc_ns, &[&out_dev]).expect("start capture");
    let inside_capture = Capture::start(&mut env, &sbc_ns, &[&in_dev]).expect("start capture");

    let outside_sbc = Ipv4Addr::new(192, 0, 2, 1);
    // 1. The phone registers through sbcd to the registrar inside (Path mode).
    run_pair(
        &mut env,
        "register",
        ("hide_reg_registrar.xml", &in_ns, CORE_IP),
        ("hide_reg_phone.xml", &out_ns, CLIENT_IP),
        outside_sbc,
        false,
    );
    // 2. Call, hold, resume, BYE from the inside.
    run_pair(
        &mut env,
        "call",
        ("hide_uas.xml", &out_ns, CLIENT_IP),
        ("hide_uac.xml", &in_ns, CORE_IP),
        SBC_INSIDE_IP,
        true,
    );
    // 3. Call, BYE from the outside.
    run_pair(
        &mut env,
        "calleebye",
        ("hide_calleebye_uas.xml", &out_ns, CLIENT_IP),
        ("hide_calleebye_uac.xml", &in_ns, CORE_IP),
        SBC_INSIDE_IP,
        true,
    );
    // 4. 486 Busy Here.
    run_pair(
        &mut env,
        "busy",
        ("hide_busy_uas.xml", &out_ns, CLIENT_IP),
        ("hide_busy_uac.xml", &in_ns, CORE_IP),
        SBC_INSIDE_IP,
        false,
    );
    // 5. CANCEL while ringing.
    run_pair(
        &mut env,
        "cancel",
        ("hide_cancel_uas.xml", &out_ns, CLIENT_IP),
        ("hide_cancel_uac.xml", &in_ns, CORE_IP),
        SBC_INSIDE_IP,
        false,
    );

    let payloads = capture.finish_payloads().expect("read capture");
    let on_outside: Vec<String> = payloads
        .iter()
        .map(|p| String::from_utf8_lossy(p).to_string())
        .filter(|t| t.contains("SIP/2.0"))
        .collect();
    let starts = |m: &String, p: &str| m.starts_with(p);
    let count = |p: &str| on_outside.iter().filter(|m| starts(m, p)).count();
    // Every step of the matrix crossed the outside link.
    for (what, prefix, at_least) in [
        ("REGISTER", "REGISTER ", 1),
        ("INVITEs (4 calls + re-INVITEs)", "INVITE ", 6),
        ("BYEs (both directions)", "BYE ", 2),
        ("CANCEL", "CANCEL ", 1),
        ("486", "SIP/2.0 486", 1),
        ("487", "SIP/2.0 487", 1),
        ("ACKs", "ACK ", 5),
    ] {
        assert!(
            count(prefix) >= at_least,
            "{what}: {} on the outside link (want >= {at_least}):\n{}",
            count(prefix),
            on_outside.join("\n----\n")
        );
    }
    let sent_by_sbc = on_outside;
    let inside = Ipv4Addr::new(198, 51, 100, 0).to_string();
    let inside_prefix = &inside[..inside.len() - 1];
    for m in &sent_by_sbc {
        assert!(
            !m.contains(inside_prefix),
            "inside address on the outside link:\n{m}"
        );
        assert!(
            !m.to_ascii_lowercase().contains("corp.internal"),
            "inside host name on the outside link:\n{m}"
        );
    }
    // S-04: on the outside, initial INVITEs carry exactly one Record-Route, sbcd's outside
    // address; toward the inside the 2xx carries both of sbcd's entries.
    for m in sent_by_sbc
        .iter()
        .filter(|m| m.starts_with("INVITE ") && !m.contains(";tag="))
    {
        let rr: Vec<&str> = m
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .collect();
        assert_eq!(rr.len(), 1, "one Record-Route on the outside:\n{m}");
        assert!(rr[0].contains("sip:192.0.2.1"), "outside RR entry:\n{m}");
    }
    let inside: Vec<String> = inside_capture
        .finish_payloads()
        .expect("read inside capture")
        .iter()
        .map(|p| String::from_utf8_lossy(p).to_string())
        .collect();
    let ok_inside = inside
        .iter()
        .find(|m| {
            m.starts_with("SIP/2.0 200") && m.contains("INVITE") && m.contains("Record-Route")
        })
        .unwrap_or_else(|| panic!("no 2xx to an INVITE on the inside link: {inside:?}"));
    let rr_text: String = ok_inside
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        rr_text.contains("sip:192.0.2.1") && rr_text.contains("sip:198.51.100.1"),
        "both SBC entries toward the inside:\n{ok_inside}"
    );
    assert!(
        sent_by_sbc
            .iter()
            .any(|m| m.starts_with("INVITE")
                && m.contains("Call-Info: <http://192.0.2.1/photo.png>")),
        "Call-Info rewritten to the SBC's outside address"
    );
}
