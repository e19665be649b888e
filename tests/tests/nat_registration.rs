//! Registration proxying through a real NAT (issue: SBC signalling): a phone on a private
//! address behind an iptables SNAT rule in its namespace registers through sbcd to a
//! registrar inside (a sipp registrar scenario). sbcd replaces the Contact with its own
//! flow-token URI, throttles the registration (60 s to the phone, 3600 s upstream) and
//! answers the phone's 10 refreshes itself, so the registrar sees exactly one REGISTER.
//! The registrar then calls the Contact it holds; the INVITE reaches the phone through the
//! NAT binding, and the phone's BYE goes back through sbcd.

use std::time::Duration;

use portcullis_tests::env::wait_until;
use portcullis_tests::netns::{CORE_IP, SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::sbcd_binary;
use portcullis_tests::sipp::{is_listening, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const CONFIG: &str = r#"
logging: { level: debug }
metrics: { listen: "127.0.0.1:9090" }
interfaces:
  - name: outside
    listeners: [{ name: out-udp, proto: udp, address: 192.0.2.1, port: 5060 }]
    policy: { registration_client_expires: 60, registration_upstream_expires: 3600 }
  - name: inside
    listeners: [{ name: in-udp, proto: udp, address: 198.51.100.1, port: 5060 }]
trunks:
  - { name: registrar, host: 198.51.100.2, port: 5060, group: reg, interface: inside }
registrar: { upstream: reg }
"#;

const REFRESHES: u32 = 10;

fn metric(ns: &str, name: &str) -> f64 {
    let out = portcullis_tests::netns::run(
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
    .unwrap_or_default();
    out.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn natted_phone_registers_through_sbcd_is_throttled_and_reachable() {
    let test = "nat_registration";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("iptables", "iptables");
    require_tool("curl", "curl");
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let (out_ns, sbc_ns, in_ns) = env.topo.names();
    // The phone's private address and the NAT in front of it.
    let c0 = format!("{}c0", env.topo.stem);
    let run = |args: &[&str]| {
        portcullis_tests::netns::run("ip", args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
    };
    run(&["-n", &out_ns, "addr", "add", "10.9.9.9/32", "dev", &c0]);
    run(&[
        "netns",
        "exec",
        &out_ns,
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.9.9.9",
        "-p",
        "udp",
        "-j",
        "SNAT",
        "--to-source",
        "192.0.2.2:40000-40999",
    ]);

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

    let mut blocks = String::new();
    for n in 0..REFRESHES {
        blocks.push_str(&format!(
            "  <send retrans=\"500\">\n    <![CDATA[\n\n      REGISTER sip:sbc.example SIP/2.0\n      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]\n      Max-Forwards: 70\n      From: <sip:natphone@sbc.example>;tag=[pid]N[call_number]\n      To: <sip:natphone@sbc.example>\n      Call-ID: [call_id]\n      CSeq: {} REGISTER\n      Contact: <sip:natphone@[local_ip]:[local_port]>\n      Expires: 3600\n      Content-Length: 0\n\n    ]]>\n  </send>\n  <recv response=\"200\"/>\n",
            n + 2
        ));
    }
    // render() escapes values for XML and the blocks are XML: they replace a marker after.
    let vars = vec![
        ("REFRESHES".to_string(), REFRESHES.to_string()),
        ("REFRESH_BLOCKS".to_string(), "@@BLOCKS@@".to_string()),
    ];
    let phone_scn = render("nat_phone.xml", &vars, &env.dir).expect("render phone");
    let text = std::fs::read_to_string(&phone_scn)
        .expect("read")
        .replace("@@BLOCKS@@", &blocks);
    std::fs::write(&phone_scn, text).expect("write");
    let reg_scn = render("nat_registrar.xml", &[], &env.dir).expect("render registrar");

    let registrar = Sipp::start(
        &mut env,
        SippConfig::uas("registrar", &in_ns, reg_scn, CORE_IP, Transport::Udp),
    )
    .expect("start registrar");
    let mut phone_cfg = SippConfig::uac(
        "phone",
        &out_ns,
        phone_scn,
        std::net::Ipv4Addr::new(10, 9, 9, 9),
        Transport::Udp,
        (SBC_OUTSIDE_IP, 5060),
    );
    phone_cfg.timeout = Duration::from_secs(30);
    let phone = Sipp::start(&mut env, phone_cfg).expect("start phone");
    let phone_res = phone
        .finish(Duration::from_secs(30))
        .expect("phone finished");
    let reg_res = registrar
        .finish(Duration::from_secs(10))
        .expect("registrar finished");
    if phone_res.exit_code != Some(0) || reg_res.exit_code != Some(0) {
        env.dump_logs();
    }
    phone_res.assert_success();
    reg_res.assert_success();
    assert_eq!(
        reg_res.received_requests("REGISTER").len(),
        1,
        "the registrar saw exactly one REGISTER"
    );
    assert_eq!(
        metric(&sbc_ns, "sbc_registrations_total{reason=\"cached\"}"),
        f64::from(REFRESHES)
    );
    assert_eq!(
        metric(&sbc_ns, "sbc_registrations_total{reason=\"forwarded\"}"),
        1.0
    );
    assert!(
        metric(&sbc_ns, "sbc_nat_detected_total{interface=\"outside\"}") >= 1.0,
        "NAT detected"
    );
}
