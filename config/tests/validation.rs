//! Validation rules, locations, all-errors-at-once, defaults, overrides.

use std::collections::HashMap;

use portcullis_config::*;

fn opts() -> LoadOptions {
    LoadOptions {
        env: EnvSource::Map(HashMap::new()),
        overrides: Vec::new(),
    }
}

fn load(yaml: &str) -> Result<Config, ConfigErrors> {
    load_str_with(yaml, "sbc.yaml", &opts())
}

/// Display lines of the errors; panics if the config is valid.
fn errs(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

fn ok(yaml: &str) -> Config {
    load(yaml).unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"))
}

/// One interface `a` with one udp listener; append sections to it.
const MIN: &str = "interfaces:
  - name: a
    listeners:
      - { name: a-udp, proto: udp, address: 127.0.0.1 }
";

fn with(extra: &str) -> String {
    format!("{MIN}{extra}")
}

fn assert_one(yaml: &str, expected: &str) {
    let e = errs(yaml);
    assert_eq!(e, [expected.to_string()], "\n{yaml}");
}

#[test]
fn minimal_config_gets_defaults() {
    let cfg = ok(MIN);
    let l = &cfg.interfaces[0].listeners[0];
    assert_eq!(l.port, 5060);
    assert!(cfg.interfaces[0].media.is_none());
    assert_eq!(cfg.interfaces[0].policy, InterfacePolicy::default());
    assert!(cfg.interfaces[0].policy.anchor_media);
    assert!(cfg.interfaces[0].policy.nat_fixing);
    assert!(!cfg.interfaces[0].policy.topology_hiding);
    assert!(!cfg.interfaces[0].policy.allow_request_uri_routing);
    assert_eq!(cfg.logging.level, LogLevel::Info);
    assert_eq!(cfg.logging.format, LogFormat::Text);
    assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:9090");
    let s = &cfg.sip;
    assert_eq!(
        (s.timers.t1_ms, s.timers.t2_ms, s.timers.t4_ms),
        (500, 4000, 5000)
    );
    assert_eq!(s.max_message_size, 65535);
    assert_eq!(s.udp_mtu_threshold, 1300);
    assert_eq!(s.tcp_idle_timeout_s, 600);
    assert_eq!(s.tcp_connect_timeout_ms, 2000);
    assert_eq!(s.workers, 0);
    assert_eq!(s.user_agent, "Portcullis");
    assert!(s.domain_aliases.is_empty());
    assert!(cfg.secret_paths.is_empty());
}

#[test]
fn default_ports_follow_protocol() {
    let cfg = ok("interfaces:
  - name: a
    listeners:
      - { name: u, proto: udp, address: 127.0.0.1 }
      - { name: t, proto: tcp, address: 127.0.0.1 }
      - { name: s, proto: tls, address: 127.0.0.1, tls: { certificate: c.pem, private_key: k.pem } }
      - { name: w, proto: ws, address: 127.0.0.1 }
      - { name: ws, proto: wss, address: '::1', tls: { certificate: c.pem, private_key: k.pem, ca: ca.pem, verify_client: true } }
trunks:
  - { name: t1, host: 10.0.0.1, group: g, interface: a }
  - { name: t2, host: 10.0.0.1, group: g, interface: a, transport: tls }
routes:
  - { name: r, group: g }
");
    let ports: Vec<_> = cfg.interfaces[0].listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [5060, 5060, 5061, 8080, 8443]);
    let wss = &cfg.interfaces[0].listeners[4];
    assert_eq!(wss.address.to_string(), "::1");
    let tls = wss.tls.as_ref().unwrap();
    assert!(tls.verify_client);
    assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("ca.pem")));
    assert_eq!(cfg.trunks[0].port, 5060);
    assert_eq!(cfg.trunks[0].transport, TrunkTransport::Udp);
    assert_eq!((cfg.trunks[0].weight, cfg.trunks[0].priority), (1, 1));
    assert_eq!(cfg.trunks[1].port, 5061);
    assert_eq!(cfg.routes[0].selection, Selection::Priority);
    assert_eq!(cfg.routes[0].r#match, RouteMatch::default());
}

#[test]
fn port_error_has_the_documented_shape() {
    let yaml = "interfaces:
  - name: a
    listeners:
      - name: a-udp
        proto: udp
        address: 127.0.0.1
  - name: b
    listeners:
      - name: b-udp
        proto: udp
        address: 127.0.0.2
        port: 70000
";
    assert_one(
        yaml,
        "sbc.yaml:12:15: interfaces[1].listeners[0].port: expected 1..65535, got 70000",
    );
    assert_one(
        &yaml.replace("70000", "0"),
        "sbc.yaml:12:15: interfaces[1].listeners[0].port: expected 1..65535, got 0",
    );
    assert_one(
        &yaml.replace("70000", "sip"),
        "sbc.yaml:12:15: interfaces[1].listeners[0].port: expected an integer 1..65535, got 'sip'",
    );
}

#[test]
fn missing_required_value_points_at_parent_mapping() {
    // Block mapping: the mapping starts at its first key.
    let yaml = "interfaces:
  - name: a
    listeners:
      - name: a-udp
        proto: udp
";
    assert_one(
        yaml,
        "sbc.yaml:4:9: interfaces[0].listeners[0].address: required value is missing",
    );
    // Flow mapping: at the '{'.
    assert_one(
        "interfaces:\n  - name: a\n    listeners:\n      - { name: a-udp, address: 127.0.0.1 }\n",
        "sbc.yaml:4:9: interfaces[0].listeners[0].proto: required value is missing",
    );
    // Missing interface name.
    assert_one(
        "interfaces:\n  - listeners: [{ name: a-udp, proto: udp, address: 127.0.0.1 }]\n",
        "sbc.yaml:2:5: interfaces[0].name: required value is missing",
    );
}

#[test]
fn empty_required_value_points_at_the_value() {
    for (value, col) in [("\"\"", 18), ("", 17), ("~", 18), ("null", 18), ("' '", 18)] {
        let yaml = format!(
            "interfaces:\n  - name: a\n    listeners:\n      - name: a-udp\n        proto: udp\n        address: {value}\n"
        );
        let e = errs(&yaml);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "sbc.yaml:6:{col}: interfaces[0].listeners[0].address: required value is missing"
            )) || (value.is_empty()
                && e[0].contains("6:")
                && e[0].ends_with("required value is missing")),
            "{value:?}: {e:?}"
        );
    }
}

#[test]
fn unique_names() {
    let e = errs(
        "interfaces:
  - name: a
    listeners:
      - { name: l1, proto: udp, address: 127.0.0.1 }
  - name: a
    listeners:
      - { name: l1, proto: udp, address: 127.0.0.2 }
trunks:
  - { name: t, host: h.example, group: g, interface: a }
  - { name: t, host: h.example, group: g, interface: a }
routes:
  - { name: r, group: g }
  - { name: r, group: g }
",
    );
    assert_eq!(
        e,
        [
            "sbc.yaml:5:11: interfaces[1].name: duplicate interface name 'a' (first used at interfaces[0].name, line 2)",
            "sbc.yaml:7:17: interfaces[1].listeners[0].name: duplicate listener name 'l1' (first used at interfaces[0].listeners[0].name, line 4)",
            "sbc.yaml:10:13: trunks[1].name: duplicate trunk name 't' (first used at trunks[0].name, line 9)",
            "sbc.yaml:13:13: routes[1].name: duplicate route name 'r' (first used at routes[0].name, line 12)",
        ]
    );
}

#[test]
fn names_must_be_simple_tokens() {
    let e = errs("interfaces:\n  - name: a b\n    listeners: [{ name: x, proto: udp, address: 127.0.0.1 }]\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("sbc.yaml:2:11: interfaces[0].name: invalid name 'a b'"),
        "{e:?}"
    );
}

#[test]
fn rtp_port_range_rules() {
    let media = |m: &str| with(&format!("    media: {m}\n"));
    let c = ok(&media(
        "{ address: 127.0.0.1, port_min: 1024, port_max: 65535 }",
    ));
    let m = c.interfaces[0].media.as_ref().unwrap();
    assert_eq!((m.port_min, m.port_max), (1024, 65535));
    let c = ok(&media("{ address: 127.0.0.1 }"));
    let m = c.interfaces[0].media.as_ref().unwrap();
    assert_eq!((m.port_min, m.port_max), (20000, 29999));
    assert_eq!(
        errs(&media("{ address: 127.0.0.1, port_min: 30000, port_max: 20000 }")),
        ["sbc.yaml:5:61: interfaces[0].media.port_max: port_max (20000) must not be below port_min (30000)"]
    );
    assert_eq!(
        errs(&media("{ address: 127.0.0.1, port_min: 30001, port_max: 40000 }")),
        ["sbc.yaml:5:44: interfaces[0].media.port_min: must be even (RTP uses the even port, RTCP the next), got 30001"]
    );
    assert_eq!(
        errs(&media(
            "{ address: 127.0.0.1, port_min: 1000, port_max: 70000 }"
        )),
        [
            "sbc.yaml:5:44: interfaces[0].media.port_min: expected 1024..65535, got 1000",
            "sbc.yaml:5:60: interfaces[0].media.port_max: expected 1024..65535, got 70000",
        ]
    );
    assert_eq!(
        errs(&media("{ port_min: 20000 }")),
        ["sbc.yaml:5:12: interfaces[0].media.address: required value is missing"]
    );
}

#[test]
fn media_ranges_on_one_address_must_not_overlap() {
    let e = errs(
        "interfaces:
  - name: a
    listeners: [{ name: a-udp, proto: udp, address: 127.0.0.1 }]
    media: { address: 127.0.0.1, port_min: 20000, port_max: 29999 }
  - name: b
    listeners: [{ name: b-udp, proto: udp, address: 127.0.0.2 }]
    media: { address: 127.0.0.1, port_min: 29000, port_max: 39999 }
",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("sbc.yaml:7:12: interfaces[1].media: media ports 29000-39999 on 127.0.0.1 overlap interfaces[0].media"), "{e:?}");
    // Different addresses may share port numbers.
    ok("interfaces:
  - name: a
    listeners: [{ name: a-udp, proto: udp, address: 127.0.0.1 }]
    media: { address: 127.0.0.1 }
  - name: b
    listeners: [{ name: b-udp, proto: udp, address: 127.0.0.2 }]
    media: { address: 127.0.0.2 }
");
}

#[test]
fn tls_settings_rules() {
    let l = |x: &str| format!("interfaces:\n  - name: a\n    listeners:\n      - {x}\n");
    assert_eq!(
        errs(&l("{ name: s, proto: tls, address: 127.0.0.1 }")),
        ["sbc.yaml:4:9: interfaces[0].listeners[0]: proto tls requires tls.certificate and tls.private_key"]
    );
    assert_eq!(
        errs(&l("{ name: s, proto: wss, address: 127.0.0.1 }")),
        ["sbc.yaml:4:9: interfaces[0].listeners[0]: proto wss requires tls.certificate and tls.private_key"]
    );
    assert_eq!(
        errs(&l(
            "{ name: s, proto: tls, address: 127.0.0.1, tls: { private_key: k.pem } }"
        )),
        ["sbc.yaml:4:57: interfaces[0].listeners[0].tls.certificate: required value is missing"]
    );
    assert_eq!(
        errs(&l("{ name: s, proto: udp, address: 127.0.0.1, tls: { certificate: c, private_key: k } }")),
        ["sbc.yaml:4:57: interfaces[0].listeners[0].tls: tls settings are only allowed for proto tls or wss, not udp"]
    );
    assert_eq!(
        errs(&l("{ name: s, proto: tls, address: 127.0.0.1, tls: { certificate: c, private_key: k, verify_client: maybe } }")),
        ["sbc.yaml:4:106: interfaces[0].listeners[0].tls.verify_client: expected true or false, got 'maybe'"]
    );
}

#[test]
fn advertised_address_and_port() {
    let l = |x: &str| {
        format!("interfaces:\n  - name: a\n    listeners:\n      - {{ name: u, proto: udp, address: 127.0.0.1, {x} }}\n")
    };
    let c = ok(&l(
        "advertised_address: sbc.example.com, advertised_port: 5070",
    ));
    let u = &c.interfaces[0].listeners[0];
    assert_eq!(u.advertised_address.as_deref(), Some("sbc.example.com"));
    assert_eq!(u.advertised_port, Some(5070));
    assert_eq!(
        errs(&l("advertised_port: 65536")),
        ["sbc.yaml:4:69: interfaces[0].listeners[0].advertised_port: expected 1..65535, got 65536"]
    );
    assert_eq!(
        errs(&l("advertised_address: 'not a host'")),
        ["sbc.yaml:4:72: interfaces[0].listeners[0].advertised_address: expected an IP address or host name, got 'not a host'"]
    );
}

#[test]
fn listener_bind_conflicts() {
    let l = |a: &str, b: &str| {
        format!("interfaces:\n  - name: a\n    listeners:\n      - {a}\n  - name: b\n    listeners:\n      - {b}\n")
    };
    assert_eq!(
        errs(&l(
            "{ name: x, proto: udp, address: 127.0.0.1, port: 5060 }",
            "{ name: y, proto: udp, address: 127.0.0.1 }"
        )),
        ["sbc.yaml:7:9: interfaces[1].listeners[0].port: listener 'y' binds the same udp 127.0.0.1:5060 as listener 'x' (interfaces[0].listeners[0])"]
    );
    let e = errs(&l(
        "{ name: x, proto: tcp, address: 127.0.0.1, port: 8080 }",
        "{ name: y, proto: ws, address: 127.0.0.1 }",
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("ws listener 'y' and tcp listener 'x' (interfaces[0].listeners[0]) both need TCP port 8080 on 127.0.0.1"), "{e:?}");
    // udp and tcp share a port number; different addresses are independent.
    ok(&l(
        "{ name: x, proto: udp, address: 127.0.0.1 }",
        "{ name: y, proto: tcp, address: 127.0.0.1 }",
    ));
    ok(&l(
        "{ name: x, proto: udp, address: 127.0.0.1 }",
        "{ name: y, proto: udp, address: 127.0.0.2 }",
    ));
}

#[test]
fn at_least_one_interface_with_a_listener() {
    assert_eq!(
        errs("logging: { level: info }\n"),
        ["sbc.yaml:1:1: interfaces: at least one interface is required"]
    );
    assert_eq!(
        errs("interfaces: []\n"),
        ["sbc.yaml:1:13: interfaces: at least one interface is required"]
    );
    assert_eq!(
        errs(""),
        ["sbc.yaml:1:1: interfaces: at least one interface is required"]
    );
    assert_eq!(
        errs("interfaces:\n  - name: a\n"),
        ["sbc.yaml:2:3: interfaces: at least one interface needs at least one listener"]
    );
    // One interface without listeners is fine if another has one.
    ok(&with("  - name: media-only\n"));
}

#[test]
fn trunk_references() {
    let t = |x: &str| {
        with(&format!(
            "  - name: empty\ntrunks:\n  - {x}\nroutes:\n  - {{ name: r, group: g }}\n"
        ))
    };
    ok(&t(
        "{ name: t, host: 10.0.0.1, group: g, interface: a, listener: a-udp }",
    ));
    assert_eq!(
        errs(&t("{ name: t, host: 10.0.0.1, group: g, interface: b }")),
        ["sbc.yaml:7:53: trunks[0].interface: unknown interface 'b' (known: 'a', 'empty')"]
    );
    assert_eq!(
        errs(&t(
            "{ name: t, host: 10.0.0.1, group: g, interface: empty }"
        )),
        ["sbc.yaml:7:53: trunks[0].interface: interface 'empty' has no listeners"]
    );
    assert_eq!(
        errs(&t("{ name: t, host: 10.0.0.1, group: g, interface: a, listener: zz }")),
        ["sbc.yaml:7:66: trunks[0].listener: interface 'a' has no listener 'zz' (known: 'a-udp')"]
    );
    assert_eq!(
        errs(&t("{ name: t, host: 10.0.0.1, group: g, interface: a, listener: a-udp, transport: tls }")),
        ["sbc.yaml:7:66: trunks[0].listener: listener 'a-udp' is udp but the trunk transport is tls"]
    );
    assert_eq!(
        errs(&t("{ name: t, host: 10.0.0.1, group: g, interface: a, weight: 0, priority: -1, transport: sctp }")),
        [
            "sbc.yaml:7:64: trunks[0].weight: expected 1..1000000, got 0",
            "sbc.yaml:7:77: trunks[0].priority: expected an integer 0..1000000, got '-1'",
            "sbc.yaml:7:92: trunks[0].transport: expected one of udp, tcp, tls; got 'sctp'",
        ]
    );
    assert_eq!(
        errs(&t("{ name: t, host: 'a..b', group: g, interface: a }")),
        ["sbc.yaml:7:22: trunks[0].host: expected an IP address or host name, got 'a..b'"]
    );
    let c = ok(&t(
        "{ name: t, host: '[2001:db8::1]', group: g, interface: a, weight: 5, priority: 0 }",
    ));
    assert_eq!(c.trunks[0].host, "[2001:db8::1]");
    assert_eq!((c.trunks[0].weight, c.trunks[0].priority), (5, 0));
}

#[test]
fn route_rules() {
    let r = |x: &str| {
        with(&format!(
            "trunks:\n  - {{ name: t, host: 10.0.0.1, group: g, interface: a }}\nroutes:\n  - {x}\n"
        ))
    };
    let c = ok(&r("{ name: r, match: { user_prefix: '+49', domain: example.com, interface: a }, group: g, selection: round_robin }"));
    let m = &c.routes[0].r#match;
    assert_eq!(m.user_prefix.as_deref(), Some("+49"));
    assert_eq!(m.domain.as_deref(), Some("example.com"));
    assert_eq!(m.interface.as_deref(), Some("a"));
    assert_eq!(c.routes[0].selection, Selection::RoundRobin);
    // A numeric-looking prefix stays text (leading zeros kept).
    let c = ok(&r("{ name: r, match: { user_prefix: 0049 }, group: g }"));
    assert_eq!(c.routes[0].r#match.user_prefix.as_deref(), Some("0049"));
    assert_eq!(
        errs(&r("{ name: r, match: { interface: x }, group: g }")),
        ["sbc.yaml:8:36: routes[0].match.interface: unknown interface 'x' (known: 'a')"]
    );
    assert_eq!(
        errs(&r("{ name: r, group: h }")),
        ["sbc.yaml:8:23: routes[0].group: no trunk belongs to group 'h' (known: 'g')"]
    );
    assert_eq!(
        errs(&r("{ name: r, group: g, selection: round-robin }")),
        ["sbc.yaml:8:37: routes[0].selection: expected one of round_robin, weighted, priority; got 'round-robin' (did you mean 'round_robin'?)"]
    );
    assert_eq!(
        errs(&r("{ name: r, match: { user: '1' }, group: g }")),
        ["sbc.yaml:8:25: routes[0].match.user: unknown key 'user' (expected one of: user_prefix, domain, interface)"]
    );
    assert_eq!(
        errs(&r("{ name: r }")),
        ["sbc.yaml:8:5: routes[0].group: required value is missing"]
    );
}

#[test]
fn timer_rules() {
    let t = |x: &str| with(&format!("sip:\n  timers: {{ {x} }}\n"));
    let c = ok(&t("t1_ms: 250, t2_ms: 250, t4_ms: 250"));
    assert_eq!(c.sip.timers.t1_ms, 250);
    assert_eq!(
        errs(&t("t1_ms: 500, t2_ms: 400, t4_ms: 499")),
        [
            "sbc.yaml:6:32: sip.timers.t2_ms: must be >= t1_ms (500), got 400",
            "sbc.yaml:6:44: sip.timers.t4_ms: must be >= t1_ms (500), got 499",
        ]
    );
    assert_eq!(
        errs(&t("t1_ms: 0")),
        ["sbc.yaml:6:20: sip.timers.t1_ms: expected 1..60000, got 0"]
    );
    // Defaults t2=4000/t4=5000 are checked against a larger t1 too.
    assert_eq!(
        errs(&t("t1_ms: 4500")),
        ["sbc.yaml:6:11: sip.timers.t2_ms: must be >= t1_ms (4500), got 4000"]
    );
}

#[test]
fn sip_settings() {
    let c = ok(&with(
        "sip:
  max_message_size: 1048576
  udp_mtu_threshold: 1400
  tcp_idle_timeout_s: 30
  tcp_connect_timeout_ms: 500
  domain_aliases: [sbc.example.com, 192.0.2.1]
  workers: 4
  user_agent: 'Portcullis/0.1 (lab)'
",
    ));
    assert_eq!(c.sip.max_message_size, 1_048_576);
    assert_eq!(c.sip.udp_mtu_threshold, 1400);
    assert_eq!(c.sip.tcp_idle_timeout_s, 30);
    assert_eq!(c.sip.tcp_connect_timeout_ms, 500);
    assert_eq!(c.sip.domain_aliases, ["sbc.example.com", "192.0.2.1"]);
    assert_eq!(c.sip.workers, 4);
    assert_eq!(c.sip.user_agent, "Portcullis/0.1 (lab)");
    assert_eq!(
        errs(&with("sip:\n  max_message_size: 1048577\n  domain_aliases: [ok.example, 'bad alias', '']\n  user_agent: \"a\\r\\nX-Evil: 1\"\n")),
        [
            "sbc.yaml:6:21: sip.max_message_size: expected 1024..1048576, got 1048577",
            "sbc.yaml:7:32: sip.domain_aliases[1]: expected an IP address or host name, got 'bad alias'",
            "sbc.yaml:7:45: sip.domain_aliases[2]: required value is missing",
            "sbc.yaml:8:15: sip.user_agent: must be at most 256 characters without control characters",
        ]
    );
}

#[test]
fn logging_and_metrics() {
    let c = ok(&with(
        "logging: { level: trace, format: json }\nmetrics: { listen: '[::1]:9100' }\n",
    ));
    assert_eq!(c.logging.level, LogLevel::Trace);
    assert_eq!(c.logging.level.as_str(), "trace");
    assert_eq!(c.logging.format, LogFormat::Json);
    assert_eq!(c.metrics.listen.to_string(), "[::1]:9100");
    for l in LogLevel::ALL {
        let c = ok(&with(&format!("logging: {{ level: {} }}\n", l.as_str())));
        assert_eq!(c.logging.level, l);
    }
    assert_eq!(
        errs(&with("logging: { level: warning, format: xml }\n")),
        [
            "sbc.yaml:5:19: logging.level: expected one of trace, debug, info, warn, error; got 'warning'",
            "sbc.yaml:5:36: logging.format: expected one of text, json; got 'xml'",
        ]
    );
}

#[test]
fn unknown_keys_and_wrong_shapes() {
    assert_eq!(
        errs(&with("trunk:\n  - {}\n")),
        ["sbc.yaml:5:1: trunk: unknown key 'trunk' (did you mean 'trunks'?)"]
    );
    assert_eq!(
        errs("interfaces:\n  - name: a\n    listeners:\n      - { name: x, prot: udp, proto: udp, address: 127.0.0.1 }\n"),
        ["sbc.yaml:4:20: interfaces[0].listeners[0].prot: unknown key 'prot' (did you mean 'proto'?)"]
    );
    assert_eq!(
        errs("interfaces:\n  - name: a\n    listeners: udp\n"),
        ["sbc.yaml:3:16: interfaces[0].listeners: expected a list, found a scalar"]
    );
    assert_eq!(
        errs("interfaces:\n  - just-a-name\n"),
        ["sbc.yaml:2:5: interfaces[0]: expected a mapping, found a scalar"]
    );
    assert_eq!(
        errs(&with("sip:\n  workers: [1, 2]\n")),
        ["sbc.yaml:6:12: sip.workers: expected a single value, found a list"]
    );
    assert_eq!(
        errs("- a\n- b\n"),
        ["sbc.yaml:1:1: expected a mapping, found a list"]
    );
    // Keys are never substituted.
    assert_eq!(
        errs(&with("${HOME}: x\n")),
        ["sbc.yaml:5:1: ${HOME}: unknown key '${HOME}' (expected one of: logging, metrics, sip, interfaces, trunks, routes, registrar, media, dns)"]
    );
}

#[test]
fn yaml_syntax_errors_have_locations() {
    let e = load("interfaces:\n  - name: a\n    listeners: [ { name: x\n").unwrap_err();
    assert_eq!(e.errors.len(), 1);
    let x = &e.errors[0];
    assert_eq!(x.file, "sbc.yaml");
    assert!(x.line >= 3, "{x}");
    assert!(x.message.starts_with("YAML syntax error"), "{x}");
    let e = load("a: b: c\n").unwrap_err();
    assert_eq!((e.errors[0].line, e.errors[0].column), (1, 5), "{e}");
    let e = load("interfaces:\n  - name: a\n\tlisteners: []\n").unwrap_err();
    assert!(e.errors[0].message.contains("tab"), "{e}");
    assert_eq!((e.errors[0].line, e.errors[0].column), (2, 11), "{e}");
    let e = load("a: 1\n---\nb: 2\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "sbc.yaml:2:1: only one YAML document is allowed"
    );
    let e = load(&with("sip: { workers: 1, workers: 2 }\n")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sbc.yaml:5:20: sip.workers: duplicate key 'workers'"
    );
}

#[test]
fn all_errors_at_once_in_source_order() {
    let yaml = "logging: { level: loud }
metrics: { listen: nowhere }
sip: { timers: { t1_ms: -5 } }
interfaces:
  - name: a
    listeners:
      - { name: x, proto: udp, address: 1.2.3, port: 0 }
trunks:
  - { name: t, host: h.example, group: g, interface: q }
routes:
  - { name: r, group: nope }
";
    let e = load(yaml).unwrap_err();
    let lines: Vec<_> = e.errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        lines,
        [
            (1, "logging.level"),
            (2, "metrics.listen"),
            (3, "sip.timers.t1_ms"),
            (7, "interfaces[0].listeners[0].address"),
            (7, "interfaces[0].listeners[0].port"),
            (9, "trunks[0].interface"),
            (11, "routes[0].group"),
        ]
    );
}

#[test]
fn anchors_and_merge_keys_work() {
    let c = ok("interfaces:
  - name: a
    listeners:
      - &l { name: one, proto: udp, address: 127.0.0.1 }
      - { <<: *l, name: two, port: 5070 }
");
    let l = &c.interfaces[0].listeners;
    assert_eq!(
        (l[1].name.as_str(), l[1].proto, l[1].port),
        ("two", Proto::Udp, 5070)
    );
}

#[test]
fn overrides_change_values() {
    let base = "interfaces:
  - name: a
    listeners:
      - { name: u, proto: udp, address: 127.0.0.1 }
      - { name: t, proto: tcp, address: 127.0.0.1 }
";
    let o = |ov: &[&str]| LoadOptions {
        env: EnvSource::Map(HashMap::new()),
        overrides: ov.iter().map(|s| s.to_string()).collect(),
    };
    let c = load_str_with(
        base,
        "sbc.yaml",
        &o(&[
            "sip.timers.t1_ms=250",
            "interfaces[0].listeners[1].port=5070",
            "logging.level=debug",
            "sip.domain_aliases=[a.example, b.example]",
            "interfaces[0].listeners[2]={ name: w, proto: ws, address: 127.0.0.1 }",
        ]),
    )
    .unwrap();
    assert_eq!(c.sip.timers.t1_ms, 250);
    assert_eq!(c.interfaces[0].listeners[1].port, 5070);
    assert_eq!(c.logging.level, LogLevel::Debug);
    assert_eq!(c.sip.domain_aliases, ["a.example", "b.example"]);
    assert_eq!(c.interfaces[0].listeners[2].proto, Proto::Ws);
    // Errors in override values point into the --set argument.
    let e = load_str_with(
        base,
        "sbc.yaml",
        &o(&["sip.workers=2", "interfaces[0].listeners[1].port=70000"]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--set:2:33: interfaces[0].listeners[1].port: expected 1..65535, got 70000"
    );
    let e = load_str_with(
        base,
        "sbc.yaml",
        &o(&["sip.timer.t1_ms=1", "bogus", "interfaces[9].name=x"]),
    )
    .unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("--set:1:1: sip.timer: unknown key 'timer' (did you mean 'timers'?)"),
        "{shown}"
    );
    assert!(
        shown.contains("--set:2:1: invalid override 'bogus': expected key.path=value"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "--set:3:1: interfaces[9].name: index 9 is out of range: interfaces has 1 items"
        ),
        "{shown}"
    );
    // No file: overrides apply to the embedded default.
    let c = load_file_with_overrides(None, &["metrics.listen=0.0.0.0:9100".to_string()]).unwrap();
    assert_eq!(c.metrics.listen.to_string(), "0.0.0.0:9100");
    assert_eq!(c.interfaces[0].name, "loopback");
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let e = load_file(std::path::Path::new("/nonexistent/portcullis/sbc.yaml")).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].line, 0);
    assert!(
        e.to_string()
            .starts_with("/nonexistent/portcullis/sbc.yaml: cannot read file"),
        "{e}"
    );
}

#[test]
fn unusual_values_render_and_load_back() {
    let yaml = "logging: { level: warn, format: json }
metrics: { listen: '[::1]:9100' }
sip:
  domain_aliases: ['2001:db8::5', sbc.example.com.]
  user_agent: 'SBC: \"quoted\" # not a comment, {x}, [y], & *z'
interfaces:
  - name: v6
    listeners:
      - { name: v6-udp, proto: udp, address: '2001:db8::1', advertised_address: '[2001:db8::2]', advertised_port: 5999 }
    media: { address: '::', advertised_address: '2001:db8::2', port_min: 1024, port_max: 1025 }
    policy: { anchor_media: false, topology_hiding: true, nat_fixing: false, allow_request_uri_routing: true }
trunks:
  - { name: t.1, host: '0049.example', port: 5080, transport: tcp, group: '007', interface: v6, weight: 7, priority: 0 }
routes:
  - { name: r_1, match: { user_prefix: '0049', domain: 'true' }, group: '007', selection: weighted }
";
    let c = ok(yaml);
    assert_eq!(
        c.sip.user_agent,
        "SBC: \"quoted\" # not a comment, {x}, [y], & *z"
    );
    assert_eq!(c.trunks[0].group, "007");
    assert_eq!(c.routes[0].r#match.domain.as_deref(), Some("true"));
    let shown = render_effective(&c);
    let again = load(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(again, c, "{shown}");
}

#[test]
fn registrar_section_defaults_users_and_redaction() {
    let yaml = "interfaces:\n  - name: lo\n    listeners: [{ name: u, proto: udp, address: 127.0.0.1 }]\nregistrar:\n  realm: sbc.example\n  users:\n    - { user: alice, password: s3cret }\n    - { user: alice, password: other }\n  min_expires: 120\n  max_expires: 60\n";
    let errs = match portcullis_config::load_str(yaml, "r.yaml") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    };
    let text = errs.to_string();
    assert!(
        text.contains(
            "r.yaml:8:15: registrar.users[1].user: duplicate registrar user name 'alice'"
        ),
        "{text}"
    );
    assert!(
        text.contains("registrar.max_expires: must be >= min_expires (120), got 60"),
        "{text}"
    );
    assert!(
        text.contains("registrar.default_expires: must be <= max_expires (60), got 3600"),
        "{text}"
    );

    let ok = "interfaces:\n  - name: lo\n    listeners: [{ name: u, proto: udp, address: 127.0.0.1 }]\nregistrar:\n  users:\n    - { user: alice, password: s3cret }\n";
    let cfg = match portcullis_config::load_str(ok, "ok.yaml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.registrar.realm, "portcullis");
    assert_eq!(cfg.registrar.min_expires, 60);
    assert_eq!(cfg.registrar.users.len(), 1);
    assert_eq!(cfg.registrar.users[0].password, "s3cret");
    let printed = portcullis_config::render_effective(&cfg);
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
}

#[test]
fn trunk_dns_resolution_follows_rfc3263_from_what_is_given() {
    let cfg = ok(&with(
        "trunks:
  - { name: t1, host: sip.example.com, group: g, interface: a }
  - { name: t2, host: sip.example.com, transport: tcp, group: g, interface: a }
  - { name: t3, host: sip.example.com, port: 5070, group: g, interface: a }
  - { name: t4, host: 192.0.2.10, group: g, interface: a }
  - { name: t5, host: sip.example.com, port: 5070, dns: srv, group: g, interface: a }
  - { name: t6, host: sip.example.com, dns: a, group: g, interface: a }
routes:
  - { name: r, group: g }
dns: { resolvers: [127.0.0.1, \"[::1]:5353\", \"10.0.0.2:53\"], min_ttl_s: 10 }
",
    ));
    let dns: Vec<TrunkDns> = cfg.trunks.iter().map(|t| t.dns).collect();
    assert_eq!(
        dns,
        [
            TrunkDns::Naptr,
            TrunkDns::Srv,
            TrunkDns::A,
            TrunkDns::A,
            TrunkDns::Srv,
            TrunkDns::A
        ]
    );
    let r: Vec<String> = cfg.dns.resolvers.iter().map(|a| a.to_string()).collect();
    assert_eq!(r, ["127.0.0.1:53", "[::1]:5353", "10.0.0.2:53"]);
    assert_eq!(cfg.dns.min_ttl_s, 10);
    assert_eq!(cfg.dns.max_ttl_s, 3600);
    assert_eq!(cfg.dns.timeout_ms, 2000);
}

#[test]
fn trunk_dns_errors_point_at_the_value() {
    assert_one(
        &with(
            "trunks:
  - { name: t1, host: 192.0.2.1, dns: srv, group: g, interface: a }
routes:
  - { name: r, group: g }
",
        ),
        "sbc.yaml:6:39: trunks[0].dns: an IP address is not looked up: use dns: a or a host name",
    );
    let e = errs(&with(
        "dns: { resolvers: [dns.example.com], min_ttl_s: 100, max_ttl_s: 50 }\n",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("dns.resolvers[0]: expected a name server address"),
        "{e:?}"
    );
    assert!(
        e[1].contains("dns.min_ttl_s: must not exceed max_ttl_s (50)"),
        "{e:?}"
    );
}

#[test]
fn tcp_keepalive_default_override_and_range() {
    assert_eq!(ok(MIN).sip.tcp_keepalive_s, 60);
    assert_eq!(
        ok(&with("sip: { tcp_keepalive_s: 0 }\n"))
            .sip
            .tcp_keepalive_s,
        0
    );
    let e = errs(&with("sip: { tcp_keepalive_s: 100000 }\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("sip.tcp_keepalive_s"), "{e:?}");
}

#[test]
fn media_relay_io_settings() {
    let cfg = ok(MIN);
    assert_eq!(cfg.media.relay_io, RelayIoChoice::Auto);
    assert_eq!(cfg.media.relay_workers, 1);
    assert_eq!(cfg.media.relay_coalesce_us, 100);
    let cfg = ok(&with(
        "media: { relay_io: epoll, relay_workers: 2, relay_coalesce_us: 0 }\n",
    ));
    assert_eq!(cfg.media.relay_io, RelayIoChoice::Epoll);
    assert_eq!(cfg.media.relay_workers, 2);
    assert_eq!(cfg.media.relay_coalesce_us, 0);
    assert_eq!(
        ok(&with("media: { relay_io: io_uring }\n")).media.relay_io,
        RelayIoChoice::IoUring
    );
    let e = errs(&with("media: { relay_io: uring, relay_workers: 0 }\n"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("relay_io") && e[0].contains("io_uring"),
        "{e:?}"
    );
    assert!(e[1].contains("relay_workers"), "{e:?}");
}

#[test]
fn tls_trunk_settings() {
    let tls_iface = "interfaces:
  - name: a
    listeners:
      - { name: a-udp, proto: udp, address: 127.0.0.1 }
      - { name: a-tls, proto: tls, address: 127.0.0.1, tls: { certificate: /c.pem, private_key: /k.pem } }
";
    let cfg = ok(&format!(
        "{tls_iface}trunks:
  - {{ name: t1, host: sip.example.com, transport: tls, tls: {{ ca: /ca.pem, server_name: sbc.example.net }}, group: g, interface: a }}
  - {{ name: t2, host: 192.0.2.7, transport: tls, group: g, interface: a }}
routes:
  - {{ name: r, group: g }}
"
    ));
    assert_eq!(
        cfg.trunks[0].tls,
        Some(TrunkTls {
            ca: Some("/ca.pem".into()),
            server_name: Some("sbc.example.net".into()),
        })
    );
    assert_eq!(cfg.trunks[0].port, 5061);
    assert_eq!(
        cfg.trunks[1].tls, None,
        "defaults: system CA store, the host's name"
    );
    assert_one(
        &format!(
            "{tls_iface}trunks:
  - {{ name: t1, host: 192.0.2.7, transport: udp, tls: {{ ca: /ca.pem }}, group: g, interface: a }}
routes:
  - {{ name: r, group: g }}
"
        ),
        "sbc.yaml:7:55: trunks[0].tls: tls settings are only allowed with transport: tls",
    );
    let e = errs(&with(
        "trunks:
  - { name: t1, host: 192.0.2.7, transport: tls, group: g, interface: a }
routes:
  - { name: r, group: g }
",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("trunks[0].transport: transport tls needs a tls listener on interface 'a'"),
        "{e:?}"
    );
    let e = errs(&format!(
        "{tls_iface}trunks:
  - {{ name: t1, host: 192.0.2.7, transport: tls, tls: {{ server_name: \"not a name\", bogus: 1 }}, group: g, interface: a }}
routes:
  - {{ name: r, group: g }}
"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
}
