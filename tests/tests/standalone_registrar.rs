//! Standalone registrar and media anchoring with real peers: the embedded default sbcd
//! (plus two digest users given with `--set`) runs in its own network namespace; two sipp
//! phones register with digest authentication (RFC 8760 challenges; MD5 offered first because
//! sipp only knows MD5 and answers the first one) and one
//! calls the other through it. The call's SDP is anchored on the SBC's relay ports (checked
//! in the scenarios) and the caller's G.711 RTP (Debian sip-tester's g711a.pcap) and the
//! callee's echo of it are relayed (checked with sbcd's relayed-packet counter).

use std::net::Ipv4Addr;
use std::time::Duration;

use portcullis_tests::env::wait_until;
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::sbcd_binary;
use portcullis_tests::sipp::{is_listening, render, Sipp, SippConfig, Transport};
use portcullis_tests::TestEnv;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

fn metric(ns: &str, name: &str) -> Option<f64> {
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
    .ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn phone(
    name: &str,
    ns: &str,
    scenario: std::path::PathBuf,
    port: u16,
    media_port: u16,
    echo: bool,
) -> SippConfig {
    let mut extra = vec![
        "-mi".to_string(),
        LO.to_string(),
        "-mp".to_string(),
        media_port.to_string(),
    ];
    if echo {
        extra.push("-rtp_echo".into());
    }
    SippConfig {
        name: name.into(),
        netns: Some(ns.into()),
        scenario,
        local_ip: LO,
        local_port: port,
        transport: Transport::Udp,
        remote: Some((LO, 5060)),
        calls: 1,
        rate: 1,
        timeout: Duration::from_secs(40),
        trace_messages: true,
        cpus: None,
        extra_args: extra,
    }
}

#[test]
fn two_phones_register_with_digest_and_call_through_the_default_sbcd_with_media_relayed() {
    let test = "standalone_registrar_call";
    if !require_root(test) {
        return;
    }
    require_tool("sipp", "sip-tester");
    require_tool("curl", "curl");
    assert!(
        std::path::Path::new(PCAP).is_file(),
        "{PCAP} missing: install sip-tester"
    );
    let mut env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: setup: {e}"));
    let ns = env.topo.sbc.name().to_string();
    let bin = sbcd_binary("debug").unwrap_or_else(|e| panic!("{e}"));
    let sbcd = Spec::new("sbcd", bin.display().to_string())
        .netns(&ns)
        .args([
            "--set",
            "registrar.users=[{user: alice, password: a-secret}, {user: bob, password: b-secret}]",
            // sipp answers the first challenge and knows only MD5: offer MD5 first.
            "--set",
            "registrar.algorithms=[MD5, SHA-256]",
        ]);
    let sbcd_idx = env
        .spawn(&sbcd)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    wait_until(
        "sbcd listening on 127.0.0.1:5060",
        Duration::from_secs(10),
        || is_listening(&ns, Transport::Udp, LO, 5060),
    )
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });

    let vars = |user: &str, pw: &str| {
        vec![
            ("USER".to_string(), user.to_string()),
            ("PASSWORD".to_string(), pw.to_string()),
            ("CALLEE".to_string(), "alice".to_string()),
            ("CONTACT_PORT".to_string(), "5073".to_string()),
            ("PCAP".to_string(), PCAP.to_string()),
        ]
    };
    let render_for = |env: &TestEnv, name: &str, user: &str, pw: &str| {
        render(name, &vars(user, pw), &env.dir).unwrap_or_else(|e| panic!("render {name}: {e}"))
    };
    // Alice's phone answers on 5073; her registration (Contact :5073) is sent from 5071.
    let answer_scn = render_for(&env, "phone_answer.xml", "alice", "a-secret");
    let mut answer_cfg = phone("alice", &ns, answer_scn, 5073, 16000, true);
    answer_cfg.remote = None;
    let alice = Sipp::start(&mut env, answer_cfg).expect("start alice");
    let reg_scn = render_for(&env, "phone_register.xml", "alice", "a-secret");
    let alice_reg = Sipp::start(
        &mut env,
        phone("alice-register", &ns, reg_scn, 5071, 16200, false),
    )
    .expect("start alice registration");
    let reg_res = alice_reg
        .finish(Duration::from_secs(15))
        .expect("alice registration finished");
    if reg_res.exit_code != Some(0) {
        env.dump_logs();
    }
    reg_res.assert_success();
    let bob_scn = render_for(&env, "phone_register_call.xml", "bob", "b-secret");
    let bob =
        Sipp::start(&mut env, phone("bob", &ns, bob_scn, 5072, 16100, false)).expect("start bob");
    let bob_res = bob.finish(Duration::from_secs(40)).expect("bob finished");
    let alice_res = alice
        .finish(Duration::from_secs(20))
        .expect("alice finished");
    if !(bob_res.exit_code == Some(0) && alice_res.exit_code == Some(0)) {
        env.dump_logs();
    }
    bob_res.assert_success();
    alice_res.assert_success();

    assert_eq!(
        metric(&ns, "sbc_registrar_bindings"),
        Some(2.0),
        "both phones registered"
    );
    // The caller played g711a.pcap (~100 packets of 50 packet/s G.711) and the callee
    // echoed it: both directions went through the relay (one alone stays near 100).
    std::thread::sleep(Duration::from_millis(1500));
    let relayed = metric(&ns, "sbc_media_relayed_packets_total").unwrap_or(0.0);
    assert!(relayed >= 150.0, "relayed packets: {relayed}");
    assert_eq!(
        metric(&ns, "sbc_media_sessions"),
        Some(0.0),
        "BYE released the media session"
    );
    let _ = env.process(sbcd_idx).ensure_running();
}
