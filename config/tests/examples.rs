//! The shipped example files and the embedded default.

use std::path::{Path, PathBuf};

use portcullis_config::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// No process environment: results must not depend on the machine.
fn opts() -> LoadOptions {
    LoadOptions {
        env: EnvSource::Map(Default::default()),
        overrides: Vec::new(),
    }
}

#[test]
fn embedded_default_validates_and_matches_the_spec() {
    let cfg = load_str(EMBEDDED_DEFAULT_YAML, "default.yaml").unwrap();
    assert_eq!(cfg, embedded_default());
    assert_eq!(cfg.interfaces.len(), 1);
    let lo = &cfg.interfaces[0];
    assert_eq!(lo.name, "loopback");
    let names: Vec<_> = lo
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.proto))
        .collect();
    assert_eq!(
        names,
        [
            ("lo-udp", Proto::Udp),
            ("lo-tcp", Proto::Tcp),
            ("lo-ws", Proto::Ws)
        ]
    );
    for l in &lo.listeners {
        assert_eq!(l.address.to_string(), "127.0.0.1");
        assert_eq!(l.port, if l.proto == Proto::Ws { 8080 } else { 5060 });
        assert!(l.tls.is_none());
    }
    let media = lo.media.as_ref().unwrap();
    assert_eq!(media.address.to_string(), "127.0.0.1");
    assert_eq!((media.port_min, media.port_max), (30000, 39999));
    assert_eq!(lo.policy, InterfacePolicy::default());
    assert!(cfg.trunks.is_empty());
    assert!(cfg.routes.is_empty());
    assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(cfg.logging.level, LogLevel::Info);
    assert_eq!(cfg.sip.timers.t1_ms, 500);
    // The loader with no file uses the embedded default too.
    assert_eq!(load_file_with_overrides(None, &[]).unwrap(), cfg);
}

#[test]
fn example_sbc_validates() {
    let cfg = load_file_with(Some(&example("sbc.yaml")), &opts()).unwrap();
    let names: Vec<_> = cfg.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["outside", "inside"]);
    let outside = cfg.interface("outside").unwrap();
    assert_eq!(outside.listeners.len(), 3);
    assert_eq!(
        outside.listeners[0].advertised_address.as_deref(),
        Some("203.0.113.5")
    );
    assert!(outside.listeners[2].tls.is_some());
    assert!(outside.policy.topology_hiding);
    // Trunk group failover: two trunks in "core" with distinct priorities.
    let core: Vec<_> = cfg
        .trunks_in_group("core")
        .map(|t| (t.name.as_str(), t.priority))
        .collect();
    assert_eq!(core, [("pbx-a", 1), ("pbx-b", 2)]);
    assert_eq!(cfg.trunks[0].host, "10.0.0.5"); // ${PBX_A_HOST:-10.0.0.5}
    assert_eq!(cfg.trunks[1].port, 5060); // default
    assert_eq!(cfg.trunks[2].weight, 3);
    let r = &cfg.routes[2];
    assert_eq!(r.group, "core");
    assert_eq!(r.selection, Selection::Priority);
    assert_eq!(r.r#match.interface.as_deref(), Some("outside"));
    assert_eq!(cfg.routes[0].r#match.user_prefix.as_deref(), Some("112"));
    assert_eq!(cfg.routes[1].selection, Selection::Weighted);
}

#[test]
fn example_substitution_uses_environment() {
    let mut env = std::collections::HashMap::new();
    env.insert("SBC_LOG_LEVEL".to_string(), "debug".to_string());
    env.insert("PBX_A_HOST".to_string(), "pbx-a.example.net".to_string());
    let o = LoadOptions {
        env: EnvSource::Map(env),
        overrides: Vec::new(),
    };
    let cfg = load_file_with(Some(&example("sbc.yaml")), &o).unwrap();
    assert_eq!(cfg.logging.level, LogLevel::Debug);
    assert_eq!(cfg.trunks[0].host, "pbx-a.example.net");
}

#[test]
fn rendered_configs_load_back_identically() {
    for cfg in [
        embedded_default(),
        load_file_with(Some(&example("sbc.yaml")), &opts()).unwrap(),
    ] {
        let text = render_effective(&cfg);
        let again = load_str_with(&text, "rendered.yaml", &opts())
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        assert_eq!(again, cfg, "{text}");
    }
}

/// (line, column, path, message fragment) for every error bad.yaml must give.
const BAD_EXPECTED: &[(usize, usize, &str, &str)] = &[
    (
        4,
        10,
        "logging.level",
        "expected one of trace, debug, info, warn, error; got 'verbose'",
    ),
    (5, 3, "logging.colour", "unknown key 'colour'"),
    (7, 11, "metrics.listen", "expected address:port"),
    (9, 20, "sip.timers.t1_ms", "expected 1..60000, got 0"),
    (
        10,
        21,
        "sip.max_message_size",
        "expected 1024..1048576, got 512",
    ),
    (11, 3, "sip.user_agnet", "did you mean 'user_agent'?"),
    (
        15,
        65,
        "interfaces[0].listeners[0].port",
        "expected 1..65535, got 70000",
    ),
    (
        16,
        9,
        "interfaces[0].listeners[1]",
        "proto tls requires tls.certificate and tls.private_key",
    ),
    (17, 34, "interfaces[0].listeners[2].proto", "got 'sctp'"),
    (
        18,
        47,
        "interfaces[0].listeners[3].address",
        "expected an IP address, got '192.0.2.300'",
    ),
    (
        19,
        63,
        "interfaces[0].listeners[4].port",
        "both need TCP port 5061 on 192.0.2.10",
    ),
    (20, 45, "interfaces[0].media.port_min", "must be even"),
    (
        20,
        62,
        "interfaces[0].media.port_max",
        "must not be below port_min",
    ),
    (
        21,
        11,
        "interfaces[1].name",
        "duplicate interface name 'outside'",
    ),
    (
        23,
        17,
        "interfaces[1].listeners[0].name",
        "duplicate listener name 'out-udp'",
    ),
    (
        24,
        9,
        "interfaces[1].listeners[1].name",
        "required value is missing",
    ),
    (
        27,
        18,
        "interfaces[1].listeners[2].address",
        "environment variable UNSET_BAD_EXAMPLE_ADDR is not set",
    ),
    (
        29,
        9,
        "interfaces[1].listeners[3].prot",
        "did you mean 'proto'?",
    ),
    (
        32,
        26,
        "interfaces[1].listeners[3].advertised_port",
        "expected 1..65535, got 0",
    ),
    (
        33,
        14,
        "interfaces[1].listeners[3].tls.private_key",
        "required value is missing",
    ),
    (
        33,
        14,
        "interfaces[1].listeners[3].tls",
        "only allowed for proto tls or wss, not tcp",
    ),
    (
        34,
        45,
        "interfaces[1].media.port_min",
        "expected 1024..65535, got 80",
    ),
    (
        36,
        23,
        "trunks[0].host",
        "expected an IP address or host name, got 'bad host'",
    ),
    (
        36,
        59,
        "trunks[0].interface",
        "unknown interface 'nowhere' (known: 'outside')",
    ),
    (36, 76, "trunks[0].weight", "expected 1..1000000, got 0"),
    (
        37,
        76,
        "trunks[1].listener",
        "interface 'outside' has no listener 'nope'",
    ),
    (38, 5, "trunks[2].interface", "required value is missing"),
    (
        39,
        76,
        "trunks[3].listener",
        "listener 'out-udp' is udp but the trunk transport is tcp",
    ),
    (40, 66, "trunks[4].name", "duplicate key 'name'"),
    (
        42,
        37,
        "routes[0].match.interface",
        "unknown interface 'inside'",
    ),
    (42, 71, "routes[0].selection", "got 'random'"),
    (
        43,
        55,
        "routes[1].group",
        "no trunk belongs to group 'nogroup'",
    ),
];

#[test]
fn bad_example_reports_every_error_with_its_location() {
    let path = example("bad.yaml");
    let errs = load_file_with(Some(&path), &opts()).unwrap_err();
    let got: Vec<_> = errs
        .errors
        .iter()
        .map(|e| (e.line, e.column, e.path.as_str(), e.message.as_str()))
        .collect();
    for (i, exp) in BAD_EXPECTED.iter().enumerate() {
        let Some(g) = got.get(i) else {
            panic!("missing error #{i} {exp:?}\n{errs}");
        };
        assert_eq!((g.0, g.1, g.2), (exp.0, exp.1, exp.2), "error #{i}\n{errs}");
        assert!(
            g.3.contains(exp.3),
            "error #{i}: {:?} lacks {:?}",
            g.3,
            exp.3
        );
    }
    assert_eq!(got.len(), BAD_EXPECTED.len(), "{errs}");
    for e in &errs.errors {
        assert_eq!(e.file, path.display().to_string());
    }
    // Display: one error per line, "file:line:col: path: message".
    let shown = errs.to_string();
    assert_eq!(shown.lines().count(), BAD_EXPECTED.len());
    let first = shown.lines().next().unwrap();
    assert!(first.ends_with("bad.yaml:4:10: logging.level: expected one of trace, debug, info, warn, error; got 'verbose'"), "{first}");
}
