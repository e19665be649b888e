//! `${...}` substitution through the loader (scenario S-40) and redaction.

use std::collections::HashMap;
use std::path::PathBuf;

use portcullis_config::*;

fn env(vars: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        env: EnvSource::Map(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        ),
        overrides: Vec::new(),
    }
}

const BASE: &str = "interfaces:
  - name: a
    listeners:
      - { name: a-udp, proto: udp, address: '${SBC_ADDR:-127.0.0.1}', port: '${SBC_PORT}' }
";

#[test]
fn env_vars_and_defaults_in_values() {
    let c = load_str_with(BASE, "sbc.yaml", &env(&[("SBC_PORT", "5070")])).unwrap();
    let l = &c.interfaces[0].listeners[0];
    assert_eq!(l.address.to_string(), "127.0.0.1");
    assert_eq!(l.port, 5070);
    let c = load_str_with(
        BASE,
        "sbc.yaml",
        &env(&[("SBC_PORT", "5080"), ("SBC_ADDR", "10.1.2.3")]),
    )
    .unwrap();
    assert_eq!(c.interfaces[0].listeners[0].address.to_string(), "10.1.2.3");
    assert!(c.secret_paths.is_empty());
}

#[test]
fn missing_env_var_is_an_error_naming_it_with_location() {
    let e = load_str_with(BASE, "sbc.yaml", &env(&[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sbc.yaml:4:77: interfaces[0].listeners[0].port: environment variable SBC_PORT is not set (use ${SBC_PORT:-default} to give a default)"
    );
    // Substituted values are type-checked like literal ones.
    let e = load_str_with(BASE, "sbc.yaml", &env(&[("SBC_PORT", "99999")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sbc.yaml:4:77: interfaces[0].listeners[0].port: expected 1..65535, got 99999"
    );
}

#[test]
fn dollar_text_is_never_mangled() {
    // SIP/SDP-like text: `$1`, lone `$`, `$$`, and the `$${` escape.
    let yaml = format!(
        "{BASE}sip:\n  user_agent: 'Portcullis $1 a=rtpmap:$x $ $$ $${{NOT_A_VAR}} ${{SBC_PORT}}'\n"
    );
    let c = load_str_with(&yaml, "sbc.yaml", &env(&[("SBC_PORT", "5060")])).unwrap();
    assert_eq!(
        c.sip.user_agent,
        "Portcullis $1 a=rtpmap:$x $ $$ ${NOT_A_VAR} 5060"
    );
    let yaml = format!(
        "{BASE}trunks:\n  - {{ name: t, host: h.example, group: g, interface: a }}\nroutes:\n  - {{ name: r, match: {{ user_prefix: $1 }}, group: g }}\n"
    );
    let c = load_str_with(&yaml, "sbc.yaml", &env(&[("SBC_PORT", "5060")])).unwrap();
    assert_eq!(c.routes[0].r#match.user_prefix.as_deref(), Some("$1"));
    // A value from the environment containing `${` is not expanded again.
    let yaml = format!("{BASE}sip:\n  user_agent: '${{UA}}'\n");
    let c = load_str_with(
        &yaml,
        "sbc.yaml",
        &env(&[("SBC_PORT", "5060"), ("UA", "x ${SBC_PORT} $1")]),
    )
    .unwrap();
    assert_eq!(c.sip.user_agent, "x ${SBC_PORT} $1");
}

#[test]
fn substituted_text_cannot_inject_yaml_structure() {
    let yaml = format!("{BASE}sip:\n  user_agent: ${{UA}}\n");
    let c = load_str_with(
        &yaml,
        "sbc.yaml",
        &env(&[("SBC_PORT", "5060"), ("UA", "{workers: 9}")]),
    )
    .unwrap();
    assert_eq!(c.sip.user_agent, "{workers: 9}");
    assert_eq!(c.sip.workers, 0);
    let e = load_str_with(BASE, "sbc.yaml", &env(&[("SBC_PORT", "5060\n  extra: 1")])).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert!(e.errors[0].message.contains("expected an integer"), "{e}");
}

#[test]
fn bad_substitution_syntax_is_reported() {
    let yaml = format!("{BASE}sip:\n  user_agent: 'a ${{oops'\n");
    let e = load_str_with(&yaml, "sbc.yaml", &env(&[("SBC_PORT", "5060")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sbc.yaml:6:15: sip.user_agent: unterminated '${' (write '$${' for a literal '${')"
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("portcullis-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn file_secrets_are_read_and_redacted() {
    let dir = TempDir::new("secret");
    std::fs::write(dir.0.join("trunk-host"), "pbx-secret.example.net\n").unwrap();
    let abs = dir.0.join("ua");
    std::fs::write(&abs, "TopSecretAgent/1.0\n").unwrap();
    let yaml = format!(
        "{BASE}sip:\n  user_agent: '${{file:{}}}'\ntrunks:\n  - {{ name: t, host: '${{file:trunk-host}}', group: g, interface: a }}\n",
        abs.display()
    );
    let cfg_path = dir.0.join("sbc.yaml");
    std::fs::write(&cfg_path, &yaml).unwrap();
    let c = load_file_with(Some(&cfg_path), &env(&[("SBC_PORT", "5060")])).unwrap();
    // One trailing newline stripped; relative path next to the config file.
    assert_eq!(c.sip.user_agent, "TopSecretAgent/1.0");
    assert_eq!(c.trunks[0].host, "pbx-secret.example.net");
    let mut secrets = c.secret_paths.clone();
    secrets.sort();
    assert_eq!(secrets, ["sip.user_agent", "trunks[0].host"]);
    let shown = render_effective(&c);
    assert!(!shown.contains("TopSecretAgent"), "{shown}");
    assert!(!shown.contains("pbx-secret"), "{shown}");
    assert_eq!(shown.matches("\"<redacted>\"").count(), 2, "{shown}");
    assert!(shown.contains("user_agent: \"<redacted>\""), "{shown}");
    assert!(shown.contains("host: \"<redacted>\""), "{shown}");
    // Non-secret values are shown.
    assert!(shown.contains("name: a-udp"), "{shown}");
    assert!(shown.contains("port: 5060"), "{shown}");

    // A missing secret file is an error at the value.
    let yaml = format!("{BASE}sip:\n  user_agent: ${{file:nope}}\n");
    std::fs::write(&cfg_path, &yaml).unwrap();
    let e = load_file_with(Some(&cfg_path), &env(&[("SBC_PORT", "5060")])).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    let x = &e.errors[0];
    assert_eq!(
        (x.line, x.column, x.path.as_str()),
        (6, 15, "sip.user_agent")
    );
    assert!(x.message.starts_with("cannot read secret file"), "{x}");
    assert!(x.message.contains("nope"), "{x}");
}

#[test]
fn process_environment_is_the_default_source() {
    // Use a variable this process already has; never modify the environment
    // (tests run in parallel).
    let Some((name, value)) = std::env::vars().find(|(k, v)| {
        !v.is_empty()
            && v.len() < 200
            && !v.chars().any(char::is_control)
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
    }) else {
        panic!("no usable environment variable in this process");
    };
    let yaml =
        format!("{BASE}sip:\n  user_agent: '${{{name}}}'\n").replace("'${SBC_PORT}'", "5060");
    let c = load_str(&yaml, "sbc.yaml").unwrap();
    assert_eq!(c.sip.user_agent, value);
}
