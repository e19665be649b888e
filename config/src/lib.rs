//! Portcullis configuration: YAML schema, defaults, `${...}` substitution and
//! validation with `file:line:column` errors.
//!
//! Loading is: parse the YAML once (serde-saphyr's `granit-parser` events)
//! into a small positioned tree, apply `--set` overrides, then build the
//! typed [`Config`] from the tree (unknown keys, required values, value
//! syntax, substitution in scalar values) and run the semantic checks. All
//! problems are collected and returned together in [`ConfigErrors`].
//!
//! Substitution (scenario S-40) runs on scalar values after parsing (never
//! on keys), so it cannot change YAML structure, and `$` in SIP/SDP text is
//! kept:
//!
//! - `${NAME}`: environment variable (error naming it when unset)
//! - `${NAME:-default}`: default when unset or empty
//! - `${file:/path}`: file content minus one trailing newline (secret; shown
//!   as `<redacted>` by [`render_effective`]); relative paths are relative to
//!   the configuration file's directory
//! - `$${` is a literal `${`; any other `$` is literal

mod build;
mod error;
mod model;
mod overrides;
mod subst;
mod tree;
mod validate;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use subst::EnvSource;

/// The embedded default configuration (used by `sbcd` without `--config`).
pub const EMBEDDED_DEFAULT_YAML: &str = include_str!("default.yaml");

/// Origin name used in messages for the embedded default.
pub const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// Origin name used in messages for `--set` overrides; the line number is the
/// override's position (1-based) and the column is within the argument.
pub const OVERRIDE_ORIGIN: &str = "--set";

/// Largest configuration file accepted.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;

/// Options for the `load_*_with` functions.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Where `${NAME}` values come from (default: the process environment).
    pub env: EnvSource,
    /// `key.path=value` overrides applied after parsing, in order.
    pub overrides: Vec<String>,
}

/// The embedded default configuration, parsed from [`EMBEDDED_DEFAULT_YAML`].
pub fn embedded_default() -> Config {
    match load_str_with(
        EMBEDDED_DEFAULT_YAML,
        EMBEDDED_ORIGIN,
        &LoadOptions::default(),
    ) {
        Ok(cfg) => cfg,
        Err(e) => {
            // Cannot happen (a test checks it), but never panic over it.
            tracing::error!(errors = %e, "embedded default configuration is invalid; using built-in values");
            builtin_default()
        }
    }
}

/// The embedded default built in code (must equal the parsed YAML).
fn builtin_default() -> Config {
    use std::net::{IpAddr, Ipv4Addr};
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let listener = |name: &str, proto| Listener {
        name: name.to_string(),
        proto,
        address: lo,
        port: 5060,
        advertised_address: None,
        advertised_port: None,
        tls: None,
    };
    Config {
        logging: Logging {
            level: LogLevel::Info,
            format: LogFormat::Text,
        },
        metrics: Metrics {
            listen: build::DEFAULT_METRICS,
        },
        sip: build::default_sip(),
        interfaces: vec![Interface {
            name: "loopback".into(),
            listeners: vec![
                listener("lo-udp", Proto::Udp),
                listener("lo-tcp", Proto::Tcp),
                Listener {
                    port: 8080,
                    ..listener("lo-ws", Proto::Ws)
                },
            ],
            media: Some(Media {
                address: lo,
                advertised_address: None,
                port_min: 30000,
                port_max: 39999,
                max_sessions: 0,
                profile: MediaProfile::Keep,
            }),
            policy: InterfacePolicy::default(),
        }],
        trunks: Vec::new(),
        routes: Vec::new(),
        registrar: Registrar::default(),
        media: MediaSettings::default(),
        dns: DnsSettings::default(),
        secret_paths: Vec::new(),
    }
}

/// Read, parse, substitute and validate a configuration file. Locations in
/// errors use `path` as given.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_file_with(Some(path), &LoadOptions::default())
}

/// Parse, substitute and validate configuration text; `origin` names it in
/// error messages.
pub fn load_str(src: &str, origin: &str) -> Result<Config, ConfigErrors> {
    load_str_with(src, origin, &LoadOptions::default())
}

/// Like [`load_file`], with `key.path=value` overrides (`sbcd --set`), e.g.
/// `sip.timers.t1_ms=250` or `interfaces[0].listeners[1].port=5070`.
/// `None` starts from the embedded default.
pub fn load_file_with_overrides(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<Config, ConfigErrors> {
    let opts = LoadOptions {
        overrides: overrides.to_vec(),
        ..LoadOptions::default()
    };
    load_file_with(path, &opts)
}

/// [`load_file`] with options. `None` loads the embedded default text.
pub fn load_file_with(path: Option<&Path>, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let Some(path) = path else {
        return load_str_with(EMBEDDED_DEFAULT_YAML, EMBEDDED_ORIGIN, opts);
    };
    let origin = path.display().to_string();
    let cannot =
        |e: std::io::Error| ConfigErrors::single(&origin, format!("cannot read file: {e}"));
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > MAX_FILE_SIZE {
        return Err(ConfigErrors::single(
            &origin,
            format!("file is larger than {MAX_FILE_SIZE} bytes"),
        ));
    }
    let text = std::fs::read(path).map_err(cannot)?;
    let text = String::from_utf8(text)
        .map_err(|e| ConfigErrors::single(&origin, format!("file is not valid UTF-8: {e}")))?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    load_inner(&text, &origin, base_dir, opts)
}

/// [`load_str`] with options. Relative `${file:...}` paths are relative to
/// the current directory.
pub fn load_str_with(src: &str, origin: &str, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    load_inner(src, origin, None, opts)
}

fn load_inner(
    text: &str,
    origin: &str,
    base_dir: Option<&Path>,
    opts: &LoadOptions,
) -> Result<Config, ConfigErrors> {
    let sources = [origin.to_string(), OVERRIDE_ORIGIN.to_string()];
    let mut cx = build::Cx::new(&sources, &opts.env, base_dir);
    let mut root = match tree::parse(text, 0) {
        Ok(parsed) => {
            for issue in parsed.issues {
                cx.error(issue.pos, &issue.path, issue.message);
            }
            parsed.root
        }
        Err(issue) => {
            cx.error(issue.pos, &issue.path, issue.message);
            return Err(finish(cx));
        }
    };
    for (i, arg) in opts.overrides.iter().enumerate() {
        if let Err(issue) = overrides::apply(&mut root, arg, 1, i + 1) {
            cx.error(issue.pos, &issue.path, issue.message);
        }
    }
    let mut cfg = build::build(root.as_ref(), &mut cx);
    validate::check(&cfg, &mut cx);
    if !cx.errors.is_empty() {
        return Err(finish(cx));
    }
    cfg.secret_paths = std::mem::take(&mut cx.secret_paths);
    tracing::debug!(
        origin,
        interfaces = cfg.interfaces.len(),
        trunks = cfg.trunks.len(),
        routes = cfg.routes.len(),
        "configuration loaded"
    );
    Ok(cfg)
}

/// Errors in source order (file first, then overrides; by line and column).
fn finish(cx: build::Cx<'_>) -> ConfigErrors {
    let mut errors = cx.errors;
    errors.sort_by_key(|(pos, _)| (pos.src, pos.line, pos.col));
    ConfigErrors {
        errors: errors.into_iter().map(|(_, e)| e).collect(),
    }
}

/// The effective configuration as YAML (defaults applied, substitutions
/// done), with every value that came from `${file:...}` shown as
/// `<redacted>`. Loading the output again gives the same configuration
/// (apart from redacted values).
pub fn render_effective(cfg: &Config) -> String {
    let yaml = match serde_saphyr::to_string(cfg) {
        Ok(y) => y,
        Err(e) => return format!("# cannot render the configuration: {e}\n"),
    };
    let mut root = match tree::parse(&yaml, 0) {
        Ok(tree::Parsed { root: Some(r), .. }) => r,
        Ok(_) => return yaml,
        Err(e) => return format!("# cannot render the configuration: {}\n", e.message),
    };
    for path in &cfg.secret_paths {
        overrides::redact(&mut root, path);
    }
    let mut out =
        String::from("# Portcullis effective configuration (defaults applied, secrets redacted)\n");
    out.push_str(&tree::emit(&root));
    out
}
