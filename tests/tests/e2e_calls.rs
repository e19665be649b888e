//! End-to-end call tests: real sipp peers in network namespaces, the proxy under test
//! (`PORTCULLIS_PROXY=sbcd`, the default, or `kamailio`) in between.
//!
//! Each test builds its own client / proxy / core topology. Per-message content is
//! asserted inside the sipp scenarios (tests/scenarios/*.xml); counts and cross-message
//! relations (branches, retransmissions, what crossed which link) are asserted here.

use std::collections::HashMap;
use std::time::Duration;

use portcullis_tests::capture::Capture;
use portcullis_tests::netns::{CLIENT_IP, CORE_IP, CORE_IP2, SBC_INSIDE_IP, SBC_OUTSIDE_IP};
use portcullis_tests::privileged::{require_root, require_tool};
use portcullis_tests::process::Spec;
use portcullis_tests::proxy::{Proxy, ProxyKind, ProxySpec, Trunk};
use portcullis_tests::sipmsg::{via_param, TracedMessage};
use portcullis_tests::sipp::{
    call_vars, finish_pair, render, Sipp, SippConfig, SippResult, Transport,
};
use portcullis_tests::TestEnv;

/// Calls per scenario run: several, to exercise the retransmission-free steady state.
const CALLS: u32 = 5;
const RATE: u32 = 10;

struct Names {
    out: String,
    sbc: String,
    inside: String,
}

fn setup(test: &str) -> Option<(TestEnv, ProxyKind, Names)> {
    if !require_root(test) {
        return None;
    }
    let kind = ProxyKind::from_env();
    require_tool("sipp", "sip-tester");
    require_tool("ss", "iproute2");
    match kind {
        ProxyKind::Kamailio => require_tool("kamailio", "kamailio"),
        ProxyKind::Sbcd => require_tool("curl", "curl"),
    }
    let env = TestEnv::new(test).unwrap_or_else(|e| panic!("{test}: topology setup: {e}"));
    let names = Names {
        out: env.topo.outside.name().to_string(),
        sbc: env.topo.sbc.name().to_string(),
        inside: env.topo.inside.name().to_string(),
    };
    Some((env, kind, names))
}

/// RFC 3261 default T1: leaves the peers 500 ms before any retransmission, so the exact
/// message counts below hold on a loaded machine too.
const T1_DEFAULT_MS: u32 = 500;
/// Small T1 for failover tests: Timer B = 64*T1 = 3.2 s for an upstream that is down.
const T1_FAILOVER_MS: u32 = 50;

/// The topology and the proxy with one trunk, `core` at the callee's address over
/// `transport`, default timers; None when the test is skipped (not root).
fn single_trunk(test: &str, transport: Transport) -> Option<(TestEnv, Names, Proxy)> {
    let (mut env, kind, names) = setup(test)?;
    let proxy = start_proxy(
        &mut env,
        kind,
        &names.sbc,
        vec![Trunk::new("core", CORE_IP, transport, 1)],
        T1_DEFAULT_MS,
    );
    Some((env, names, proxy))
}

fn start_proxy(
    env: &mut TestEnv,
    kind: ProxyKind,
    ns: &str,
    trunks: Vec<Trunk>,
    t1_ms: u32,
) -> Proxy {
    let spec = ProxySpec {
        t1_ms,
        ..ProxySpec::standard(trunks)
    };
    Proxy::start(env, kind, ns, spec, None)
        .unwrap_or_else(|e| panic!("starting {}: {e}", kind.name()))
}

fn distinct_calls(msgs: &[&TracedMessage]) -> usize {
    by_call_id(msgs).len()
}

fn by_call_id<'a>(msgs: &[&'a TracedMessage]) -> HashMap<String, &'a TracedMessage> {
    msgs.iter()
        .filter_map(|m| m.call_id().map(|c| (c, *m)))
        .collect()
}

fn assert_count(what: &str, got: usize, want: u32) {
    assert_eq!(
        got, want as usize,
        "{what}: expected exactly {want} (one per call, no duplicates or retransmissions), got {got}"
    );
}

/// Precise double Record-Route check on a message the callee received (independent of
/// the sipp regexes, for clearer failure messages).
fn assert_double_rr(msg: &TracedMessage, inside_tp: Transport, outside_tp: Transport) {
    let rr = msg.header_values("Record-Route");
    assert_eq!(
        rr.len(),
        2,
        "expected two Record-Route entries (interface crossing), got {rr:?} in:\n{}",
        msg.text
    );
    for (uri, ip, tp, side) in [
        (&rr[0], SBC_INSIDE_IP, inside_tp, "first (inside)"),
        (&rr[1], SBC_OUTSIDE_IP, outside_tp, "second (outside)"),
    ] {
        let inner = uri
            .trim()
            .strip_prefix('<')
            .and_then(|u| u.strip_suffix('>'))
            .unwrap_or_else(|| panic!("{side} Record-Route not in <>: {uri}"));
        let mut parts = inner.split(';');
        let hostport = parts.next().unwrap_or("");
        assert!(
            hostport == format!("sip:{ip}") || hostport == format!("sip:{ip}:5060"),
            "{side} Record-Route must point at {ip}: {uri}"
        );
        let params: Vec<String> = parts.map(|p| p.to_ascii_lowercase()).collect();
        assert!(
            params.iter().any(|p| p == "lr" || p == "lr=on"),
            "{side} Record-Route lacks lr: {uri}"
        );
        assert!(
            params.iter().any(|p| p == "r2=on"),
            "{side} Record-Route lacks r2=on: {uri}"
        );
        let transport = params
            .iter()
            .find_map(|p| p.strip_prefix("transport="))
            .unwrap_or("udp");
        assert_eq!(
            transport,
            tp.name(),
            "{side} Record-Route transport must be {} : {uri}",
            tp.name()
        );
    }
}

/// The caller's Via as seen by the callee carries received + rport (RFC 3581).
fn assert_nat_params(msg: &TracedMessage) {
    let vias = msg.vias();
    assert_eq!(vias.len(), 2, "expected proxy Via + caller Via: {vias:?}");
    let caller = &vias[1];
    assert_eq!(
        via_param(caller, "received").as_deref(),
        Some(CLIENT_IP.to_string().as_str()),
        "caller Via lacks received={CLIENT_IP}: {caller}"
    );
    let rport = via_param(caller, "rport").unwrap_or_default();
    assert!(
        rport.parse::<u16>().is_ok(),
        "caller Via lacks rport=<port>: {caller}"
    );
}

/// Runs `CALLS` calls from a sipp caller outside (`uac_tp`) to a sipp callee inside
/// (`uas_tp`, at the core address) through the proxy; both scenarios must pass.
fn run_pair(
    env: &mut TestEnv,
    names: &Names,
    uac_xml: &str,
    uas_xml: &str,
    uac_tp: Transport,
    uas_tp: Transport,
) -> (SippResult, SippResult) {
    let vars = call_vars(uac_tp, uas_tp, CORE_IP);
    let uas_scn = render(uas_xml, &vars, &env.dir).expect("render uas scenario");
    let uac_scn = render(uac_xml, &vars, &env.dir).expect("render uac scenario");
    let uas = Sipp::start(
        env,
        SippConfig::uas("uas", &names.inside, uas_scn, CORE_IP, uas_tp).calls(CALLS),
    )
    .expect("start sipp uas");
    let uac = Sipp::start(
        env,
        SippConfig::uac(
            "uac",
            &names.out,
            uac_scn,
            CLIENT_IP,
            uac_tp,
            (SBC_OUTSIDE_IP, 5060),
        )
        .calls(CALLS)
        .rate(RATE),
    )
    .expect("start sipp uac");
    finish_pair(uac, uas, Duration::from_secs(40))
}

fn basic_call(test: &str, uac_tp: Transport, uas_tp: Transport) {
    let Some((mut env, names, mut proxy)) = single_trunk(test, uas_tp) else {
        return;
    };
    let (uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_call.xml",
        "uas_call.xml",
        uac_tp,
        uas_tp,
    );

    // Steady state: the caller never had to retransmit, the callee saw each request once.
    assert_count(
        "INVITEs sent by the caller",
        uac.sent(|m| m.is_request("INVITE")).len(),
        CALLS,
    );
    assert_count(
        "BYEs sent by the caller",
        uac.sent(|m| m.is_request("BYE")).len(),
        CALLS,
    );
    let invites = uas.received_requests("INVITE");
    assert_count("INVITEs at the callee", invites.len(), CALLS);
    assert_count(
        "ACKs at the callee",
        uas.received_requests("ACK").len(),
        CALLS,
    );
    assert_count(
        "BYEs at the callee",
        uas.received_requests("BYE").len(),
        CALLS,
    );
    assert_count(
        "100 Trying at the caller",
        uac.received_responses(100, "INVITE").len(),
        CALLS,
    );
    assert_count(
        "180 at the caller",
        uac.received_responses(180, "INVITE").len(),
        CALLS,
    );
    assert_count(
        "200 (INVITE) at the caller",
        uac.received_responses(200, "INVITE").len(),
        CALLS,
    );
    assert_count(
        "200 (BYE) at the caller",
        uac.received_responses(200, "BYE").len(),
        CALLS,
    );
    for inv in &invites {
        assert_double_rr(inv, uas_tp, uac_tp);
        assert_nat_params(inv);
        assert_eq!(inv.transport, uas_tp.via_token(), "callee leg transport");
    }
    for ok in uac.received_responses(200, "INVITE") {
        assert_double_rr(ok, uas_tp, uac_tp);
        assert_eq!(
            ok.vias().len(),
            1,
            "200 at the caller must carry only its Via"
        );
    }
    // In-dialog requests: a new proxy branch each, distinct from the INVITE's.
    let inv_by_call = by_call_id(&invites);
    for m in uas
        .received_requests("ACK")
        .iter()
        .chain(uas.received_requests("BYE").iter())
    {
        let cid = m.call_id().unwrap_or_default();
        let inv = inv_by_call
            .get(&cid)
            .expect("in-dialog request for a known call");
        assert_ne!(
            m.top_via_branch(),
            inv.top_via_branch(),
            "{} must be a new transaction at the proxy",
            m.method().unwrap_or("?")
        );
        assert_eq!(
            m.vias().len(),
            2,
            "end-to-end {} keeps the caller's Via",
            m.first_line()
        );
    }
    proxy
        .ensure_running()
        .expect("proxy still running after the calls");
}

/// (a) UDP call INVITE/100/180/200/ACK/BYE through the proxy, outside -> inside.
#[test]
fn udp_call() {
    basic_call("udp_call", Transport::Udp, Transport::Udp);
}

/// (b) the same call over TCP on both legs.
#[test]
fn tcp_call() {
    basic_call("tcp_call", Transport::Tcp, Transport::Tcp);
}

/// (c) UDP outside -> TCP inside: double Record-Route with each side's transport.
#[test]
fn udp_to_tcp_crossing_call() {
    basic_call("udp_to_tcp_call", Transport::Udp, Transport::Tcp);
}

/// (c') crossing call where the callee hangs up: its BYE (TCP, inside) follows the
/// Record-Route set back through the proxy to the caller (UDP, outside).
#[test]
fn callee_hangs_up_crossing() {
    let Some((mut env, names, mut proxy)) = single_trunk("callee_hangs_up", Transport::Tcp) else {
        return;
    };
    let (uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_call_callee_bye.xml",
        "uas_call_callee_bye.xml",
        Transport::Udp,
        Transport::Tcp,
    );
    assert_count(
        "INVITEs at the callee",
        uas.received_requests("INVITE").len(),
        CALLS,
    );
    assert_count(
        "ACKs at the callee",
        uas.received_requests("ACK").len(),
        CALLS,
    );
    let byes = uac.received_requests("BYE");
    assert_count("BYEs at the caller", byes.len(), CALLS);
    for bye in &byes {
        let vias = bye.vias();
        assert_eq!(
            vias.len(),
            2,
            "BYE at the caller: proxy Via + callee Via:\n{}",
            bye.text
        );
        assert!(
            vias[0].starts_with(&format!("SIP/2.0/UDP {SBC_OUTSIDE_IP}")),
            "top Via of the relayed BYE must be the proxy's outside UDP address: {}",
            vias[0]
        );
        assert!(
            vias[1].starts_with(&format!("SIP/2.0/TCP {CORE_IP}")),
            "second Via must be the callee's (TCP): {}",
            vias[1]
        );
        assert!(bye.header_values("Route").is_empty(), "Route left in BYE");
    }
    assert_count(
        "200 (BYE) at the callee",
        uas.received_responses(200, "BYE").len(),
        CALLS,
    );
    proxy.ensure_running().expect("proxy still running");
}

/// (d) CANCEL before answer: 200 from the proxy, CANCEL propagated to the callee on the
/// INVITE's branch, 487 relayed, hop-by-hop ACKs on both sides.
#[test]
fn cancel_before_answer() {
    let Some((mut env, names, mut proxy)) = single_trunk("cancel_before_answer", Transport::Udp)
    else {
        return;
    };
    let (uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_cancel.xml",
        "uas_cancel.xml",
        Transport::Udp,
        Transport::Udp,
    );
    let invites = uas.received_requests("INVITE");
    let cancels = uas.received_requests("CANCEL");
    let acks = uas.received_requests("ACK");
    assert_count("INVITEs at the callee", invites.len(), CALLS);
    assert_count("CANCELs at the callee", cancels.len(), CALLS);
    assert_count("ACKs at the callee", acks.len(), CALLS);
    assert_count(
        "CANCELs sent by the caller",
        uac.sent(|m| m.is_request("CANCEL")).len(),
        CALLS,
    );
    assert_count(
        "200 (CANCEL) at the caller",
        uac.received_responses(200, "CANCEL").len(),
        CALLS,
    );
    assert_count(
        "487 at the caller (no retransmission)",
        uac.received_responses(487, "INVITE").len(),
        CALLS,
    );
    let inv_by_call = by_call_id(&invites);
    for m in cancels.iter().chain(acks.iter()) {
        let cid = m.call_id().unwrap_or_default();
        let inv = inv_by_call.get(&cid).expect("CANCEL/ACK for a known call");
        assert_eq!(
            m.vias().len(),
            1,
            "proxy-generated {} has one Via:\n{}",
            m.first_line(),
            m.text
        );
        assert_eq!(
            m.top_via_branch(),
            inv.top_via_branch(),
            "{} must use the branch of the INVITE it refers to",
            m.first_line()
        );
        assert_eq!(
            m.request_uri(),
            inv.request_uri(),
            "Request-URI of {}",
            m.first_line()
        );
    }
    proxy.ensure_running().expect("proxy still running");
}

/// (e) 486 from the callee: relayed to the caller; the proxy ACKs the callee itself
/// (hop-by-hop) and absorbs the caller's ACK. Also checked on the wire with tshark.
#[test]
fn busy_486() {
    let Some((mut env, names, mut proxy)) = single_trunk("busy_486", Transport::Udp) else {
        return;
    };
    require_tool("tshark", "tshark");
    let (dev_out, dev_in) = (env.topo.sbc_out_dev.clone(), env.topo.sbc_in_dev.clone());
    let capture = Capture::start(&mut env, &names.sbc, &[&dev_out, &dev_in]).expect("tshark");
    let (uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_busy.xml",
        "uas_busy.xml",
        Transport::Udp,
        Transport::Udp,
    );
    let wire = capture.finish().expect("decode capture");
    let invites = uas.received_requests("INVITE");
    let acks = uas.received_requests("ACK");
    assert_count("INVITEs at the callee", invites.len(), CALLS);
    assert_count("ACKs at the callee", acks.len(), CALLS);
    assert_count(
        "486 at the caller (no retransmission)",
        uac.received_responses(486, "INVITE").len(),
        CALLS,
    );
    let inv_by_call = by_call_id(&invites);
    for ack in &acks {
        let inv = inv_by_call
            .get(&ack.call_id().unwrap_or_default())
            .expect("ACK for a known call");
        assert_eq!(
            ack.vias().len(),
            1,
            "hop-by-hop ACK has only the proxy's Via:\n{}",
            ack.text
        );
        assert_eq!(
            ack.top_via_branch(),
            inv.top_via_branch(),
            "ACK branch = INVITE branch"
        );
    }
    // On the wire: exactly CALLS ACKs entered from the caller, exactly CALLS left toward
    // the callee, each from the proxy with a single Via.
    let acks_in: Vec<_> = wire
        .iter()
        .filter(|m| m.iface == dev_out && m.method.as_deref() == Some("ACK"))
        .collect();
    let acks_out: Vec<_> = wire
        .iter()
        .filter(|m| m.iface == dev_in && m.method.as_deref() == Some("ACK"))
        .collect();
    assert_count(
        "ACKs from the caller on the outside link",
        acks_in.len(),
        CALLS,
    );
    assert_count("ACKs on the inside link", acks_out.len(), CALLS);
    for a in &acks_out {
        assert_eq!(a.src, SBC_INSIDE_IP.to_string(), "inside ACK source: {a:?}");
        assert_eq!(a.via_branches.len(), 1, "inside ACK Via count: {a:?}");
    }
    let busy_out = wire
        .iter()
        .filter(|m| m.iface == dev_out && m.status == Some(486))
        .count();
    assert_count("486 on the outside link", busy_out, CALLS);
    proxy.ensure_running().expect("proxy still running");
}

fn failover(test: &str, first_answers_503: bool) {
    let Some((mut env, kind, names)) = setup(test) else {
        return;
    };
    let mut proxy = start_proxy(
        &mut env,
        kind,
        &names.sbc,
        vec![
            Trunk::new("core-a", CORE_IP2, Transport::Udp, 1),
            Trunk::new("core-b", CORE_IP, Transport::Udp, 2),
        ],
        T1_FAILOVER_MS,
    );
    let vars = call_vars(Transport::Udp, Transport::Udp, CORE_IP);
    let first = if first_answers_503 {
        let scn = render("uas_503.xml", &vars, &env.dir).expect("render");
        Some(
            Sipp::start(
                &mut env,
                SippConfig::uas("uas-a", &names.inside, scn, CORE_IP2, Transport::Udp).calls(CALLS),
            )
            .expect("start first upstream"),
        )
    } else {
        None // nothing listens on 198.51.100.3
    };
    let (uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_call.xml",
        "uas_call.xml",
        Transport::Udp,
        Transport::Udp,
    );
    assert!(
        uac.received(|m| m.status().is_some_and(|s| s >= 300))
            .is_empty(),
        "the caller must not see the failed attempt"
    );
    // With T1 = 50 ms a retransmission on a busy machine is legitimate here: count calls.
    assert_count(
        "calls whose INVITE reached the second upstream",
        distinct_calls(&uas.received_requests("INVITE")),
        CALLS,
    );
    assert_count(
        "calls whose BYE reached the second upstream",
        distinct_calls(&uas.received_requests("BYE")),
        CALLS,
    );
    if let Some(first) = first {
        let first = first
            .finish(Duration::from_secs(10))
            .expect("first upstream result");
        first.assert_success();
        assert_count(
            "calls whose INVITE reached the first upstream",
            distinct_calls(&first.received_requests("INVITE")),
            CALLS,
        );
        let acks = first.received_requests("ACK");
        assert_count(
            "calls whose 503 the proxy ACKed",
            distinct_calls(&acks),
            CALLS,
        );
        for a in acks {
            assert_eq!(a.vias().len(), 1, "hop-by-hop ACK for the 503:\n{}", a.text);
        }
    }
    proxy.ensure_running().expect("proxy still running");
}

/// (f1) first upstream of the group is down (nothing listens at 198.51.100.3): the
/// INVITE goes to the second one after timeout/ICMP error and the call completes.
#[test]
fn failover_first_upstream_down() {
    failover("failover_down", false);
}

/// (f2) first upstream answers 503: the proxy ACKs it and tries the second upstream.
#[test]
fn failover_first_upstream_503() {
    failover("failover_503", true);
}

fn sbc_metric(ns: &str, name: &str) -> Option<f64> {
    portcullis_tests::proxy::sbcd_metric(ns, name)
}

/// (f3) OPTIONS probing (S-28): the first member answers probes, then stops; it is marked
/// down within the probe interval, and calls go straight to the second member (no failover
/// attempt on the dead one).
#[test]
fn failover_with_options_probing_skips_the_stopped_member() {
    let Some((mut env, kind, names)) = setup("failover_probing") else {
        return;
    };
    if kind == ProxyKind::Kamailio {
        eprintln!("failover_with_options_probing: sbcd-only test (probing is sbcd's own config)");
        return;
    }
    let mut first = Trunk::new("core-a", CORE_IP2, Transport::Udp, 1);
    first.probe_interval_s = Some(1);
    let mut proxy = start_proxy(
        &mut env,
        kind,
        &names.sbc,
        vec![first, Trunk::new("core-b", CORE_IP, Transport::Udp, 2)],
        T1_DEFAULT_MS,
    );
    let scn = render("options_responder.xml", &[], &env.dir).expect("render");
    let mut responder = Sipp::start(
        &mut env,
        SippConfig::uas(
            "probe-responder",
            &names.inside,
            scn,
            CORE_IP2,
            Transport::Udp,
        )
        .calls(0),
    )
    .expect("start responder");
    // Up while it answers.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        sbc_metric(&names.sbc, "sbc_trunk_up{trunk=\"core-a\"}"),
        Some(1.0),
        "core-a answers its probes"
    );
    // The member stops: marked down within the probe interval (a probe left unanswered
    // at the next one).
    responder.process().stop(Duration::from_secs(2));
    let stopped = std::time::Instant::now();
    portcullis_tests::env::wait_until("core-a marked down", Duration::from_secs(5), || {
        Ok(sbc_metric(&names.sbc, "sbc_trunk_up{trunk=\"core-a\"}") == Some(0.0))
    })
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });
    let took = stopped.elapsed();
    assert!(took <= Duration::from_secs(3), "marked down after {took:?}");
    let (_uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_call.xml",
        "uas_call.xml",
        Transport::Udp,
        Transport::Udp,
    );
    assert_count(
        "calls answered by the second member",
        distinct_calls(&uas.received_requests("INVITE")),
        CALLS,
    );
    assert_eq!(
        sbc_metric(
            &names.sbc,
            "sbc_sip_trunk_failovers_total{trunk=\"core-a\"}"
        )
        .unwrap_or(0.0),
        0.0,
        "the down member was skipped, not tried and failed over"
    );
    proxy.ensure_running().expect("proxy still running");
}

/// Starts dnsmasq, a real DNS server, in the inside namespace on CORE_IP:53 serving
/// `records` (dnsmasq options such as `--srv-host=...`); waits until it answers.
fn start_dns(env: &mut TestEnv, ns: &str, records: &[String]) {
    require_tool("dnsmasq", "dnsmasq-base");
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--port=53",
        "--user=root",
        "--group=root",
        "--pid-file=",
        "--log-queries",
        "--log-facility=-",
        "--local-ttl=30",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--listen-address={CORE_IP}"));
    args.extend(records.iter().cloned());
    env.spawn(&Spec::new("dnsmasq", "dnsmasq").netns(ns).args(args))
        .expect("start dnsmasq");
    portcullis_tests::env::wait_until("dnsmasq listening", Duration::from_secs(5), || {
        portcullis_tests::sipp::is_listening(ns, Transport::Udp, CORE_IP, 53)
    })
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });
}

fn sbc_metrics_text(ns: &str) -> String {
    portcullis_tests::netns::run(
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
    .unwrap_or_default()
}

/// Waits until sbcd's `sbc_trunk_address` lists `addr`/`transport` for `trunk`.
fn wait_trunk_address(env: &TestEnv, sbc_ns: &str, trunk: &str, addr: &str, transport: &str) {
    let want = format!(
        "sbc_trunk_address{{trunk=\"{trunk}\",address=\"{addr}\",transport=\"{transport}\"}} 1"
    );
    portcullis_tests::env::wait_until("trunk resolved", Duration::from_secs(10), || {
        Ok(sbc_metrics_text(sbc_ns).contains(&want))
    })
    .unwrap_or_else(|e| {
        env.dump_logs();
        panic!("{e}")
    });
}

/// (d1) RFC 3263 SRV (S-11): the trunk is a name with a transport and no port; dnsmasq
/// serves `_sip._udp.core.test` with two targets. The priority-10 target answers 503, the
/// proxy fails over to the priority-20 target, where the calls complete. The resolved
/// addresses are visible in `sbc_trunk_address`.
#[test]
fn srv_trunk_fails_over_between_srv_targets() {
    let Some((mut env, kind, names)) = setup("dns_srv_failover") else {
        return;
    };
    if kind == ProxyKind::Kamailio {
        eprintln!("srv_trunk_fails_over_between_srv_targets: sbcd-only test");
        return;
    }
    start_dns(
        &mut env,
        &names.inside,
        &[
            "--srv-host=_sip._udp.core.test,a.core.test,5060,10,0".into(),
            "--srv-host=_sip._udp.core.test,b.core.test,5060,20,0".into(),
            format!("--host-record=a.core.test,{CORE_IP2}"),
            format!("--host-record=b.core.test,{CORE_IP}"),
        ],
    );
    let mut trunk = Trunk::new("core", CORE_IP, Transport::Udp, 1);
    trunk.host_name = Some("core.test".into());
    let spec = ProxySpec {
        t1_ms: T1_FAILOVER_MS,
        dns_resolvers: vec![CORE_IP.to_string()],
        ..ProxySpec::standard(vec![trunk])
    };
    let mut proxy = Proxy::start(&mut env, kind, &names.sbc, spec, None)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    wait_trunk_address(&env, &names.sbc, "core", &format!("{CORE_IP}:5060"), "udp");
    let text = sbc_metrics_text(&names.sbc);
    assert!(
        text.contains(&format!(
            "sbc_trunk_address{{trunk=\"core\",address=\"{CORE_IP2}:5060\",transport=\"udp\"}} 1"
        )),
        "both SRV targets listed:\n{text}"
    );
    let vars = call_vars(Transport::Udp, Transport::Udp, CORE_IP);
    let scn = render("uas_503.xml", &vars, &env.dir).expect("render");
    let first = Sipp::start(
        &mut env,
        SippConfig::uas("uas-a", &names.inside, scn, CORE_IP2, Transport::Udp).calls(CALLS),
    )
    .expect("start first SRV target");
    let (_uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_call.xml",
        "uas_call.xml",
        Transport::Udp,
        Transport::Udp,
    );
    let first = first
        .finish(Duration::from_secs(10))
        .expect("first target result");
    first.assert_success();
    assert_count(
        "calls whose INVITE reached the priority-10 SRV target first",
        distinct_calls(&first.received_requests("INVITE")),
        CALLS,
    );
    assert_count(
        "calls completed at the priority-20 SRV target",
        distinct_calls(&uas.received_requests("BYE")),
        CALLS,
    );
    assert!(
        sbc_metric(
            &names.sbc,
            "sbc_dns_lookups_total{trunk=\"core\",result=\"ok\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    proxy.ensure_running().expect("proxy still running");
}

/// (d2) RFC 3263 NAPTR: the trunk is a bare name; its NAPTR record selects SIP over TCP
/// (`SIP+D2T`), whose SRV record points at the core. The calls reach the core over TCP.
#[test]
fn naptr_trunk_selects_tcp() {
    let Some((mut env, kind, names)) = setup("dns_naptr_tcp") else {
        return;
    };
    if kind == ProxyKind::Kamailio {
        eprintln!("naptr_trunk_selects_tcp: sbcd-only test");
        return;
    }
    start_dns(
        &mut env,
        &names.inside,
        &[
            "--naptr-record=pbx.test,10,10,S,SIP+D2T,,_sip._tcp.pbx.test".into(),
            "--naptr-record=pbx.test,10,20,S,SIP+D2U,,_sip._udp.pbx.test".into(),
            "--srv-host=_sip._tcp.pbx.test,core.pbx.test,5060,10,0".into(),
            "--srv-host=_sip._udp.pbx.test,core.pbx.test,5060,10,0".into(),
            format!("--host-record=core.pbx.test,{CORE_IP}"),
        ],
    );
    let mut trunk = Trunk::new("pbx", CORE_IP, Transport::Udp, 1);
    trunk.host_name = Some("pbx.test".into());
    trunk.naptr = true;
    let spec = ProxySpec {
        t1_ms: T1_DEFAULT_MS,
        dns_resolvers: vec![format!("{CORE_IP}:53")],
        ..ProxySpec::standard(vec![trunk])
    };
    let mut proxy = Proxy::start(&mut env, kind, &names.sbc, spec, None)
        .unwrap_or_else(|e| panic!("starting sbcd: {e}"));
    wait_trunk_address(&env, &names.sbc, "pbx", &format!("{CORE_IP}:5060"), "tcp");
    let (_uac, uas) = run_pair(
        &mut env,
        &names,
        "uac_call.xml",
        "uas_call.xml",
        Transport::Udp,
        Transport::Tcp,
    );
    let invites = uas.received_requests("INVITE");
    assert_count(
        "calls reaching the core over TCP",
        distinct_calls(&invites),
        CALLS,
    );
    for i in invites {
        assert!(
            i.vias()[0].contains("SIP/2.0/TCP"),
            "top Via of the SBC is TCP:\n{}",
            i.text
        );
    }
    proxy.ensure_running().expect("proxy still running");
}
