//! Typed configuration from the positioned tree: key checking (unknown keys
//! with suggestions), required values, defaults, substitution and value
//! parsing. Every problem is collected; erroneous values are replaced by
//! placeholders and their key paths remembered as "bad" so the semantic
//! checks in `validate` do not report follow-on errors.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::model::*;
use crate::subst::{substitute, EnvSource};
use crate::tree::{Entry, Node, Pos, Value};

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The parent of a key path (`a.b[1]` -> `a.b`, `a.b` -> `a`, `a` -> ``).
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// Loading context: collected errors, key path locations, bad paths.
pub(crate) struct Cx<'a> {
    sources: &'a [String],
    env: &'a EnvSource,
    base_dir: Option<&'a Path>,
    pub errors: Vec<(Pos, ConfigError)>,
    locs: HashMap<String, Pos>,
    bad: HashSet<String>,
    pub secret_paths: Vec<String>,
}

impl<'a> Cx<'a> {
    pub fn new(sources: &'a [String], env: &'a EnvSource, base_dir: Option<&'a Path>) -> Self {
        Cx {
            sources,
            env,
            base_dir,
            errors: Vec::new(),
            locs: HashMap::new(),
            bad: HashSet::new(),
            secret_paths: Vec::new(),
        }
    }

    /// Report a problem with a value; the path is marked bad so semantic
    /// checks skip it.
    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.bad.insert(path.to_string());
        self.push(pos, path, message);
    }

    fn push(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        let file = self.sources.get(pos.src).cloned().unwrap_or_default();
        self.errors.push((
            pos,
            ConfigError {
                file,
                line: pos.line,
                column: pos.col,
                path: path.to_string(),
                message: message.into(),
            },
        ));
    }

    /// Report a semantic problem at the location of `path` (or its nearest
    /// located ancestor). The path is not marked bad: the value itself is
    /// well-formed and other checks may still use it.
    pub fn error_at(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.loc(path);
        self.push(pos, path, message);
    }

    pub fn loc(&self, path: &str) -> Pos {
        let mut p = Some(path);
        while let Some(cur) = p {
            if let Some(pos) = self.locs.get(cur) {
                return *pos;
            }
            p = parent(cur);
        }
        Pos {
            src: 0,
            line: 1,
            col: 1,
        }
    }

    /// True when an error was reported for `path` or one of its ancestors.
    pub fn is_bad(&self, path: &str) -> bool {
        let mut p = Some(path);
        while let Some(cur) = p {
            if self.bad.contains(cur) {
                return true;
            }
            p = parent(cur);
        }
        false
    }

    fn record(&mut self, path: &str, pos: Pos) {
        self.locs.insert(path.to_string(), pos);
    }

    /// View a node as a mapping with the given allowed keys. A missing or
    /// null node is an empty mapping located at its parent.
    fn fields<'n>(
        &mut self,
        node: Option<&'n Node>,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Some(node) = node else {
            return Some(Fields {
                path: path.to_string(),
                pos: self.loc(path),
                entries: &[],
            });
        };
        self.record(path, node.pos);
        if node.is_null() {
            return Some(Fields {
                path: path.to_string(),
                pos: node.pos,
                entries: &[],
            });
        }
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.kind_name()),
            );
            return None;
        };
        for e in entries {
            if !allowed.contains(&e.key.as_str()) {
                let mut msg = format!("unknown key '{}'", e.key);
                if let Some(s) = suggest(&e.key, allowed) {
                    msg.push_str(&format!(" (did you mean '{s}'?)"));
                } else {
                    msg.push_str(&format!(" (expected one of: {})", allowed.join(", ")));
                }
                self.error(e.key_pos, &join(path, &e.key), msg);
            }
        }
        Some(Fields {
            path: path.to_string(),
            pos: node.pos,
            entries,
        })
    }

    fn get<'n>(&mut self, f: &Fields<'n>, key: &str) -> (String, Option<&'n Node>) {
        let path = join(&f.path, key);
        let node = f.entries.iter().find(|e| e.key == key).map(|e| &e.value);
        if let Some(n) = node {
            self.record(&path, n.pos);
        }
        (path, node)
    }

    /// The substituted text of a scalar field.
    fn scalar(&mut self, f: &Fields<'_>, key: &str) -> (String, Field<String>) {
        let (path, node) = self.get(f, key);
        let Some(node) = node else {
            return (path, Field::Missing(f.pos));
        };
        if node.is_null() {
            return (path, Field::Missing(node.pos));
        }
        let field = self.scalar_node(node, &path);
        (path, field)
    }

    fn scalar_node(&mut self, node: &Node, path: &str) -> Field<String> {
        let Value::Scalar { text, .. } = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a single value, found {}", node.kind_name()),
            );
            return Field::Bad;
        };
        match substitute(text, self.env, self.base_dir) {
            Ok(s) => {
                if s.secret {
                    self.secret_paths.push(path.to_string());
                }
                if s.text.trim().is_empty() {
                    Field::Missing(node.pos)
                } else {
                    Field::Ok(s.text, node.pos)
                }
            }
            Err(m) => {
                self.error(node.pos, path, m);
                Field::Bad
            }
        }
    }

    fn typed<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> (String, Field<T>) {
        let (path, field) = self.scalar(f, key);
        let field = self.parse_field(field, &path, parse);
        (path, field)
    }

    fn parse_field<T>(
        &mut self,
        field: Field<String>,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Field<T> {
        match field {
            Field::Ok(text, pos) => match parse(&text) {
                Ok(v) => Field::Ok(v, pos),
                Err(m) => {
                    self.error(pos, path, m);
                    Field::Bad
                }
            },
            Field::Missing(p) => Field::Missing(p),
            Field::Bad => Field::Bad,
        }
    }

    /// A required field: missing or empty is an error.
    fn req<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.typed(f, key, parse) {
            (_, Field::Ok(v, _)) => Some(v),
            (path, Field::Missing(pos)) => {
                self.error(pos, &path, "required value is missing");
                None
            }
            (_, Field::Bad) => None,
        }
    }

    fn opt<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.typed(f, key, parse) {
            (_, Field::Ok(v, _)) => Some(v),
            _ => None,
        }
    }

    fn or<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.opt(f, key, parse).unwrap_or(default)
    }

    /// The items of a list field (missing or null: empty).
    fn list<'n>(&mut self, f: &Fields<'n>, key: &str) -> Vec<(String, &'n Node)> {
        let (path, node) = self.get(f, key);
        let Some(node) = node else {
            return Vec::new();
        };
        if node.is_null() {
            return Vec::new();
        }
        let Value::Seq(items) = &node.value else {
            self.error(
                node.pos,
                &path,
                format!("expected a list, found {}", node.kind_name()),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = index(&path, i);
                self.record(&p, n.pos);
                (p, n)
            })
            .collect()
    }
}

/// A field lookup result.
enum Field<T> {
    /// Absent, null or empty; the position is the value's or the parent mapping's.
    Missing(Pos),
    Ok(T, Pos),
    /// Already reported.
    Bad,
}

struct Fields<'n> {
    path: String,
    pos: Pos,
    entries: &'n [Entry],
}

// ---------- suggestions ----------

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within a small edit distance.
pub(crate) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if word.chars().count() > 64 {
        return None;
    }
    let lower = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

// ---------- value parsers ----------

fn uint(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let t = s.trim();
    let range = if hi == u64::MAX {
        format!(">= {lo}")
    } else {
        format!("{lo}..{hi}")
    };
    let v: u64 = t
        .parse()
        .map_err(|_| format!("expected an integer {range}, got '{t}'"))?;
    if v < lo || v > hi {
        return Err(format!("expected {range}, got {v}"));
    }
    Ok(v)
}

fn port(s: &str) -> Result<u16, String> {
    uint(s, 1, 65535).map(|v| v as u16)
}

fn rtp_port(s: &str) -> Result<u16, String> {
    uint(s, 1024, 65535).map(|v| v as u16)
}

fn u32_range(lo: u64, hi: u64) -> impl FnOnce(&str) -> Result<u32, String> {
    move |s| uint(s, lo, hi).map(|v| v as u32)
}

fn u64_range(lo: u64, hi: u64) -> impl FnOnce(&str) -> Result<u64, String> {
    move |s| uint(s, lo, hi)
}

fn usize_range(lo: u64, hi: u64) -> impl FnOnce(&str) -> Result<usize, String> {
    move |s| uint(s, lo, hi).map(|v| v as usize)
}

fn boolean(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "True" | "TRUE" => Ok(true),
        "false" | "False" | "FALSE" => Ok(false),
        t => Err(format!("expected true or false, got '{t}'")),
    }
}

fn one_of<T: Copy>(
    all: &[T],
    name: fn(&T) -> &'static str,
) -> impl FnOnce(&str) -> Result<T, String> + '_ {
    move |s| {
        let t = s.trim();
        if let Some(v) = all.iter().find(|v| name(v) == t.to_ascii_lowercase()) {
            return Ok(*v);
        }
        let names: Vec<&str> = all.iter().map(name).collect();
        let mut m = format!("expected one of {}; got '{t}'", names.join(", "));
        if let Some(s) = suggest(t, &names) {
            m.push_str(&format!(" (did you mean '{s}'?)"));
        }
        Err(m)
    }
}

fn ip(s: &str) -> Result<IpAddr, String> {
    let t = s.trim();
    t.parse()
        .map_err(|_| format!("expected an IP address, got '{t}'"))
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    t.parse()
        .map_err(|_| format!("expected address:port (e.g. 127.0.0.1:9090), got '{t}'"))
}

fn name(s: &str) -> Result<String, String> {
    let ok = s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid name '{s}': use at most 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

pub(crate) fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn is_ip_literal(s: &str) -> bool {
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    unbracketed.parse::<IpAddr>().is_ok()
}

fn host(s: &str) -> Result<String, String> {
    let t = s.trim();
    let unbracketed = t
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(t);
    if unbracketed.parse::<IpAddr>().is_ok() || is_hostname(t) {
        Ok(t.to_string())
    } else {
        Err(format!("expected an IP address or host name, got '{t}'"))
    }
}

fn token(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!(
            "must not contain spaces or control characters, got '{}'",
            s.escape_debug()
        ))
    } else {
        Ok(s.to_string())
    }
}

fn header_value(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c.is_control()) || s.len() > 256 {
        Err("must be at most 256 characters without control characters".into())
    } else {
        Ok(s.to_string())
    }
}

fn path_buf(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

// ---------- schema ----------

const ROOT_KEYS: &[&str] = &[
    "logging",
    "metrics",
    "sip",
    "interfaces",
    "trunks",
    "routes",
    "registrar",
    "media",
    "dns",
];
const DNS_KEYS: &[&str] = &[
    "resolvers",
    "timeout_ms",
    "min_ttl_s",
    "max_ttl_s",
    "retry_s",
];
const MEDIA_SETTINGS_KEYS: &[&str] = &[
    "datapath",
    "xdp_interfaces",
    "learn_packets",
    "learn_ms",
    "timeout_s",
    "hold_timeout_s",
    "relay_io",
    "relay_workers",
    "relay_coalesce_us",
];
const REGISTRAR_KEYS: &[&str] = &[
    "realm",
    "min_expires",
    "max_expires",
    "default_expires",
    "max_contacts",
    "users",
    "algorithms",
    "upstream",
    "mode",
    "keepalive",
];
const KEEPALIVE_KEYS: &[&str] = &["method", "interval_s", "max_failures"];
const USER_KEYS: &[&str] = &["user", "password"];
const LOGGING_KEYS: &[&str] = &["level", "format"];
const METRICS_KEYS: &[&str] = &["listen"];
const SIP_KEYS: &[&str] = &[
    "timers",
    "max_message_size",
    "udp_mtu_threshold",
    "tcp_idle_timeout_s",
    "tcp_connect_timeout_ms",
    "tcp_keepalive_s",
    "domain_aliases",
    "workers",
    "user_agent",
];
const TIMER_KEYS: &[&str] = &["t1_ms", "t2_ms", "t4_ms"];
const INTERFACE_KEYS: &[&str] = &["name", "listeners", "media", "policy"];
const LISTENER_KEYS: &[&str] = &[
    "name",
    "proto",
    "address",
    "port",
    "advertised_address",
    "advertised_port",
    "tls",
];
const TLS_KEYS: &[&str] = &["certificate", "private_key", "ca", "verify_client"];
const MEDIA_KEYS: &[&str] = &[
    "address",
    "advertised_address",
    "port_min",
    "port_max",
    "max_sessions",
    "profile",
];
const POLICY_KEYS: &[&str] = &[
    "anchor_media",
    "topology_hiding",
    "call_id_masking",
    "nat_fixing",
    "allow_request_uri_routing",
    "registration_client_expires",
    "registration_upstream_expires",
    "hide_hosts",
];
const TRUNK_KEYS: &[&str] = &[
    "name",
    "host",
    "port",
    "transport",
    "dns",
    "group",
    "interface",
    "listener",
    "weight",
    "priority",
    "probe_interval_s",
    "probe_failures",
    "request_uri_params",
    "disable_100rel",
    "request_uri_form",
    "headers",
    "tls",
];
const TRUNK_TLS_KEYS: &[&str] = &["ca", "server_name"];
const HEADER_RULE_KEYS: &[&str] = &["action", "name", "value", "from_header"];
const ROUTE_KEYS: &[&str] = &["name", "match", "group", "selection"];
const MATCH_KEYS: &[&str] = &["user_prefix", "domain", "interface"];

pub(crate) fn build(root: Option<&Node>, cx: &mut Cx<'_>) -> Config {
    let f = match cx.fields(root, "", ROOT_KEYS) {
        Some(f) => f,
        None => Fields {
            path: String::new(),
            pos: Pos::default(),
            entries: &[],
        },
    };
    let (p, n) = cx.get(&f, "logging");
    let logging = logging(cx, n, &p);
    let (p, n) = cx.get(&f, "metrics");
    let metrics = metrics(cx, n, &p);
    let (p, n) = cx.get(&f, "sip");
    let sip = sip(cx, n, &p);
    let interfaces = cx
        .list(&f, "interfaces")
        .into_iter()
        .map(|(p, n)| interface(cx, n, &p))
        .collect();
    let trunks = cx
        .list(&f, "trunks")
        .into_iter()
        .map(|(p, n)| trunk(cx, n, &p))
        .collect();
    let routes = cx
        .list(&f, "routes")
        .into_iter()
        .map(|(p, n)| route(cx, n, &p))
        .collect();
    let (p, n) = cx.get(&f, "registrar");
    let registrar = registrar(cx, n, &p);
    let (p, n) = cx.get(&f, "media");
    let media = media_settings(cx, n, &p);
    let (p, n) = cx.get(&f, "dns");
    let dns = dns_settings(cx, n, &p);
    Config {
        logging,
        metrics,
        sip,
        interfaces,
        trunks,
        routes,
        registrar,
        media,
        dns,
        secret_paths: Vec::new(),
    }
}

fn dns_settings(cx: &mut Cx<'_>, node: Option<&Node>, path: &str) -> DnsSettings {
    let mut d = DnsSettings::default();
    let Some(f) = cx.fields(node, path, DNS_KEYS) else {
        return d;
    };
    for (p, n) in cx.list(&f, "resolvers") {
        match cx.scalar_node(n, &p) {
            Field::Ok(text, pos) => match name_server(&text) {
                Ok(v) => d.resolvers.push(v),
                Err(e) => cx.error(pos, &p, e),
            },
            Field::Missing(pos) => cx.error(pos, &p, "required value is missing"),
            Field::Bad => {}
        }
    }
    d.timeout_ms = cx.or(&f, "timeout_ms", d.timeout_ms, u64_range(10, 60_000));
    d.min_ttl_s = cx.or(&f, "min_ttl_s", d.min_ttl_s, u64_range(0, 86_400));
    d.max_ttl_s = cx.or(&f, "max_ttl_s", d.max_ttl_s, u64_range(1, 604_800));
    d.retry_s = cx.or(&f, "retry_s", d.retry_s, u64_range(1, 86_400));
    if d.min_ttl_s > d.max_ttl_s {
        let (p, _) = cx.get(&f, "min_ttl_s");
        let pos = cx.loc(&p);
        cx.error(
            pos,
            &p,
            format!("must not exceed max_ttl_s ({})", d.max_ttl_s),
        );
    }
    d
}

/// A name server: `ip`, `ip:port` or `[ipv6]:port` (default port 53).
fn name_server(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    t.parse()
        .map_err(|_| format!("expected a name server address (ip or ip:port), got '{t}'"))
}

fn media_settings(cx: &mut Cx<'_>, node: Option<&Node>, path: &str) -> MediaSettings {
    let mut m = MediaSettings::default();
    let Some(f) = cx.fields(node, path, MEDIA_SETTINGS_KEYS) else {
        return m;
    };
    m.datapath = cx.or(
        &f,
        "datapath",
        m.datapath,
        one_of(&DatapathChoice::ALL, DatapathChoice::as_str),
    );
    for (p, n) in cx.list(&f, "xdp_interfaces") {
        match cx.scalar_node(n, &p) {
            Field::Ok(text, pos) => match token(&text) {
                Ok(v) => m.xdp_interfaces.push(v),
                Err(e) => cx.error(pos, &p, e),
            },
            Field::Missing(pos) => cx.error(pos, &p, "required value is missing"),
            Field::Bad => {}
        }
    }
    m.learn_packets = cx.or(&f, "learn_packets", m.learn_packets, u32_range(0, 10_000));
    m.learn_ms = cx.or(&f, "learn_ms", m.learn_ms, u64_range(0, 60_000));
    m.timeout_s = cx.or(&f, "timeout_s", m.timeout_s, u64_range(0, 86_400));
    m.hold_timeout_s = cx.or(&f, "hold_timeout_s", m.hold_timeout_s, u64_range(0, 86_400));
    m.relay_io = cx.or(
        &f,
        "relay_io",
        m.relay_io,
        one_of(&RelayIoChoice::ALL, RelayIoChoice::as_str),
    );
    m.relay_workers = cx.or(&f, "relay_workers", m.relay_workers, u32_range(1, 64));
    m.relay_coalesce_us = cx.or(
        &f,
        "relay_coalesce_us",
        m.relay_coalesce_us,
        u32_range(0, 10_000),
    );
    m
}

fn registrar(cx: &mut Cx<'_>, node: Option<&Node>, path: &str) -> Registrar {
    let mut r = Registrar::default();
    let Some(f) = cx.fields(node, path, REGISTRAR_KEYS) else {
        return r;
    };
    r.realm = cx.or(&f, "realm", r.realm, token);
    r.min_expires = cx.or(&f, "min_expires", r.min_expires, u32_range(1, 86_400));
    r.max_expires = cx.or(&f, "max_expires", r.max_expires, u32_range(1, 604_800));
    r.default_expires = cx.or(
        &f,
        "default_expires",
        r.default_expires,
        u32_range(1, 604_800),
    );
    r.max_contacts = cx.or(&f, "max_contacts", r.max_contacts, usize_range(1, 1000));
    let algs = cx.list(&f, "algorithms");
    if !algs.is_empty() {
        r.algorithms.clear();
        for (p, n) in algs {
            match cx.scalar_node(n, &p) {
                Field::Ok(text, pos) => match text.to_ascii_uppercase().as_str() {
                    a @ ("SHA-256" | "MD5") => {
                        if r.algorithms.iter().any(|x| x == a) {
                            cx.error(pos, &p, format!("{a} listed twice"));
                        } else {
                            r.algorithms.push(a.to_string());
                        }
                    }
                    _ => cx.error(
                        pos,
                        &p,
                        format!("expected SHA-256 or MD5, got '{}'", text.escape_debug()),
                    ),
                },
                Field::Missing(pos) => cx.error(pos, &p, "required value is missing"),
                Field::Bad => {}
            }
        }
    }
    r.upstream = cx.opt(&f, "upstream", name);
    r.mode = cx.or(
        &f,
        "mode",
        r.mode,
        one_of(&RegistrationMode::ALL, RegistrationMode::as_str),
    );
    let (kp, kn) = cx.get(&f, "keepalive");
    if let Some(k) = cx.fields(kn, &kp, KEEPALIVE_KEYS) {
        r.keepalive.method = cx.or(
            &k,
            "method",
            r.keepalive.method,
            one_of(&KeepaliveMethod::ALL, KeepaliveMethod::as_str),
        );
        r.keepalive.interval_s = cx.or(&k, "interval_s", 30, u64_range(1, 3600));
        r.keepalive.max_failures = cx.or(&k, "max_failures", 3, u32_range(1, 100));
    }
    for (p, n) in cx.list(&f, "users") {
        let Some(u) = cx.fields(Some(n), &p, USER_KEYS) else {
            continue;
        };
        let user = cx.req(&u, "user", token);
        let password = cx.req(&u, "password", |s| Ok(s.to_string()));
        // Passwords never appear in print-config, whatever their source.
        cx.secret_paths.push(join(&p, "password"));
        if let (Some(user), Some(password)) = (user, password) {
            r.users.push(User { user, password });
        }
    }
    r
}

fn logging(cx: &mut Cx<'_>, node: Option<&Node>, path: &str) -> Logging {
    let mut l = Logging {
        level: LogLevel::Info,
        format: LogFormat::Text,
    };
    if let Some(f) = cx.fields(node, path, LOGGING_KEYS) {
        l.level = cx.or(
            &f,
            "level",
            l.level,
            one_of(&LogLevel::ALL, LogLevel::as_str),
        );
        l.format = cx.or(
            &f,
            "format",
            l.format,
            one_of(&LogFormat::ALL, LogFormat::as_str),
        );
    }
    l
}

pub(crate) const DEFAULT_METRICS: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

fn metrics(cx: &mut Cx<'_>, node: Option<&Node>, path: &str) -> Metrics {
    let mut m = Metrics {
        listen: DEFAULT_METRICS,
    };
    if let Some(f) = cx.fields(node, path, METRICS_KEYS) {
        m.listen = cx.or(&f, "listen", m.listen, socket_addr);
    }
    m
}

pub(crate) fn default_sip() -> SipSettings {
    SipSettings {
        timers: SipTimers {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
        },
        max_message_size: 65535,
        udp_mtu_threshold: 1300,
        tcp_idle_timeout_s: 600,
        tcp_connect_timeout_ms: 2000,
        tcp_keepalive_s: 60,
        domain_aliases: Vec::new(),
        workers: 0,
        user_agent: "Portcullis".to_string(),
    }
}

fn sip(cx: &mut Cx<'_>, node: Option<&Node>, path: &str) -> SipSettings {
    let mut s = default_sip();
    let Some(f) = cx.fields(node, path, SIP_KEYS) else {
        return s;
    };
    let (tp, tn) = cx.get(&f, "timers");
    if let Some(t) = cx.fields(tn, &tp, TIMER_KEYS) {
        s.timers.t1_ms = cx.or(&t, "t1_ms", s.timers.t1_ms, u64_range(1, 60_000));
        s.timers.t2_ms = cx.or(&t, "t2_ms", s.timers.t2_ms, u64_range(1, 600_000));
        s.timers.t4_ms = cx.or(&t, "t4_ms", s.timers.t4_ms, u64_range(1, 600_000));
    }
    s.max_message_size = cx.or(
        &f,
        "max_message_size",
        s.max_message_size,
        usize_range(1024, 1_048_576),
    );
    s.udp_mtu_threshold = cx.or(
        &f,
        "udp_mtu_threshold",
        s.udp_mtu_threshold,
        usize_range(512, 65507),
    );
    s.tcp_idle_timeout_s = cx.or(
        &f,
        "tcp_idle_timeout_s",
        s.tcp_idle_timeout_s,
        u64_range(1, 86_400),
    );
    s.tcp_connect_timeout_ms = cx.or(
        &f,
        "tcp_connect_timeout_ms",
        s.tcp_connect_timeout_ms,
        u64_range(1, 600_000),
    );
    s.tcp_keepalive_s = cx.or(
        &f,
        "tcp_keepalive_s",
        s.tcp_keepalive_s,
        u64_range(0, 86_400),
    );
    s.workers = cx.or(&f, "workers", s.workers, usize_range(0, 1024));
    s.user_agent = cx.or(&f, "user_agent", s.user_agent, header_value);
    for (p, n) in cx.list(&f, "domain_aliases") {
        match cx.scalar_node(n, &p) {
            Field::Ok(text, pos) => match host(&text) {
                Ok(h) => s.domain_aliases.push(h),
                Err(m) => cx.error(pos, &p, m),
            },
            Field::Missing(pos) => cx.error(pos, &p, "required value is missing"),
            Field::Bad => {}
        }
    }
    s
}

fn interface(cx: &mut Cx<'_>, node: &Node, path: &str) -> Interface {
    let mut i = Interface {
        name: String::new(),
        listeners: Vec::new(),
        media: None,
        policy: InterfacePolicy::default(),
    };
    let Some(f) = cx.fields(Some(node), path, INTERFACE_KEYS) else {
        return i;
    };
    i.name = cx.req(&f, "name", name).unwrap_or_default();
    i.listeners = cx
        .list(&f, "listeners")
        .into_iter()
        .map(|(p, n)| listener(cx, n, &p))
        .collect();
    let (mp, mn) = cx.get(&f, "media");
    if mn.is_some_and(|n| !n.is_null()) {
        if let Some(m) = cx.fields(mn, &mp, MEDIA_KEYS) {
            let address = cx.req(&m, "address", ip);
            let advertised_address = cx.opt(&m, "advertised_address", ip);
            let port_min = cx.or(&m, "port_min", 20000, rtp_port);
            let port_max = cx.or(&m, "port_max", 29999, rtp_port);
            let max_sessions = cx.or(&m, "max_sessions", 0, u32_range(0, 10_000_000));
            let profile = cx.or(
                &m,
                "profile",
                MediaProfile::Keep,
                one_of(&MediaProfile::ALL, MediaProfile::as_str),
            );
            i.media = Some(Media {
                address: address.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                advertised_address,
                port_min,
                port_max,
                max_sessions,
                profile,
            });
        }
    }
    let (pp, pn) = cx.get(&f, "policy");
    if let Some(p) = cx.fields(pn, &pp, POLICY_KEYS) {
        let d = InterfacePolicy::default();
        i.policy = InterfacePolicy {
            anchor_media: cx.or(&p, "anchor_media", d.anchor_media, boolean),
            topology_hiding: cx.or(&p, "topology_hiding", d.topology_hiding, boolean),
            call_id_masking: cx.or(&p, "call_id_masking", d.call_id_masking, boolean),
            nat_fixing: cx.or(&p, "nat_fixing", d.nat_fixing, boolean),
            allow_request_uri_routing: cx.or(
                &p,
                "allow_request_uri_routing",
                d.allow_request_uri_routing,
                boolean,
            ),
            registration_client_expires: cx.or(
                &p,
                "registration_client_expires",
                d.registration_client_expires,
                u32_range(0, 86_400),
            ),
            registration_upstream_expires: cx.or(
                &p,
                "registration_upstream_expires",
                d.registration_upstream_expires,
                u32_range(60, 604_800),
            ),
            hide_hosts: Vec::new(),
        };
        for (path, n) in cx.list(&p, "hide_hosts") {
            match cx.scalar_node(n, &path) {
                Field::Ok(text, pos) => match host_pattern(&text) {
                    Ok(v) => i.policy.hide_hosts.push(v),
                    Err(m) => cx.error(pos, &path, m),
                },
                Field::Missing(pos) => cx.error(pos, &path, "required value is missing"),
                Field::Bad => {}
            }
        }
    }
    i
}

/// A host name, an IP address or an IP network in CIDR form.
fn host_pattern(s: &str) -> Result<String, String> {
    let t = s.trim();
    let bad =
        || format!("expected a host name, an IP address or a network like 10.0.0.0/8, got '{t}'");
    if let Some((ip, len)) = t.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(l) if l <= max => Ok(t.to_string()),
            _ => Err(bad()),
        }
    } else if t.parse::<IpAddr>().is_ok() || is_hostname(t) {
        Ok(t.to_ascii_lowercase())
    } else {
        Err(bad())
    }
}

fn listener(cx: &mut Cx<'_>, node: &Node, path: &str) -> Listener {
    let mut l = Listener {
        name: String::new(),
        proto: Proto::Udp,
        address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        port: 5060,
        advertised_address: None,
        advertised_port: None,
        tls: None,
    };
    let Some(f) = cx.fields(Some(node), path, LISTENER_KEYS) else {
        return l;
    };
    l.name = cx.req(&f, "name", name).unwrap_or_default();
    if let Some(p) = cx.req(&f, "proto", one_of(&Proto::ALL, Proto::as_str)) {
        l.proto = p;
    }
    if let Some(a) = cx.req(&f, "address", ip) {
        l.address = a;
    }
    l.port = cx.or(&f, "port", l.proto.default_port(), port);
    l.advertised_address = cx.opt(&f, "advertised_address", host);
    l.advertised_port = cx.opt(&f, "advertised_port", port);
    let (tp, tn) = cx.get(&f, "tls");
    if tn.is_some_and(|n| !n.is_null()) {
        if let Some(t) = cx.fields(tn, &tp, TLS_KEYS) {
            let certificate = cx.req(&t, "certificate", path_buf);
            let private_key = cx.req(&t, "private_key", path_buf);
            let ca = cx.opt(&t, "ca", path_buf);
            let verify_client = cx.or(&t, "verify_client", false, boolean);
            l.tls = Some(TlsSettings {
                certificate: certificate.unwrap_or_default(),
                private_key: private_key.unwrap_or_default(),
                ca,
                verify_client,
            });
        }
    }
    l
}

fn trunk(cx: &mut Cx<'_>, node: &Node, path: &str) -> Trunk {
    let mut t = Trunk {
        name: String::new(),
        host: String::new(),
        port: 5060,
        transport: TrunkTransport::Udp,
        dns: TrunkDns::A,
        group: String::new(),
        interface: String::new(),
        listener: None,
        weight: 1,
        priority: 1,
        probe_interval_s: 0,
        probe_failures: 1,
        request_uri_params: Vec::new(),
        disable_100rel: false,
        request_uri_form: UriForm::Keep,
        headers: Vec::new(),
        tls: None,
    };
    let Some(f) = cx.fields(Some(node), path, TRUNK_KEYS) else {
        return t;
    };
    t.name = cx.req(&f, "name", name).unwrap_or_default();
    t.host = cx.req(&f, "host", host).unwrap_or_default();
    t.transport = cx.or(
        &f,
        "transport",
        t.transport,
        one_of(&TrunkTransport::ALL, TrunkTransport::as_str),
    );
    t.port = cx.or(&f, "port", t.transport.default_port(), port);
    let given = |k: &str| f.entries.iter().any(|e| e.key == k && !e.value.is_null());
    let derived = if given("port") {
        TrunkDns::A
    } else if given("transport") {
        TrunkDns::Srv
    } else {
        TrunkDns::Naptr
    };
    t.dns = cx.or(&f, "dns", derived, one_of(&TrunkDns::ALL, TrunkDns::as_str));
    if is_ip_literal(&t.host) {
        if t.dns != TrunkDns::A && given("dns") {
            let (p, _) = cx.get(&f, "dns");
            let pos = cx.loc(&p);
            cx.error(
                pos,
                &p,
                "an IP address is not looked up: use dns: a or a host name",
            );
        }
        t.dns = TrunkDns::A;
    }
    let (tp, tn) = cx.get(&f, "tls");
    if tn.is_some_and(|n| !n.is_null()) {
        if t.transport != TrunkTransport::Tls {
            let pos = cx.loc(&tp);
            cx.error(
                pos,
                &tp,
                "tls settings are only allowed with transport: tls",
            );
        } else if let Some(tf) = cx.fields(tn, &tp, TRUNK_TLS_KEYS) {
            t.tls = Some(TrunkTls {
                ca: cx.opt(&tf, "ca", path_buf),
                server_name: cx.opt(&tf, "server_name", host),
            });
        }
    }
    t.group = cx.req(&f, "group", name).unwrap_or_default();
    t.interface = cx.req(&f, "interface", name).unwrap_or_default();
    t.listener = cx.opt(&f, "listener", name);
    t.weight = cx.or(&f, "weight", 1, u32_range(1, 1_000_000));
    t.priority = cx.or(&f, "priority", 1, u32_range(0, 1_000_000));
    t.probe_interval_s = cx.or(&f, "probe_interval_s", 0, u64_range(0, 86_400));
    t.probe_failures = cx.or(&f, "probe_failures", 1, u32_range(1, 100));
    t.disable_100rel = cx.or(&f, "disable_100rel", false, boolean);
    t.request_uri_form = cx.or(
        &f,
        "request_uri_form",
        UriForm::Keep,
        one_of(&UriForm::ALL, UriForm::as_str),
    );
    for (p, n) in cx.list(&f, "request_uri_params") {
        match cx.scalar_node(n, &p) {
            Field::Ok(text, pos) => match uri_param(&text) {
                Ok(v) => t.request_uri_params.push(v),
                Err(m) => cx.error(pos, &p, m),
            },
            Field::Missing(pos) => cx.error(pos, &p, "required value is missing"),
            Field::Bad => {}
        }
    }
    for (p, n) in cx.list(&f, "headers") {
        let Some(h) = cx.fields(Some(n), &p, HEADER_RULE_KEYS) else {
            continue;
        };
        let action = cx.req(
            &h,
            "action",
            one_of(&HeaderAction::ALL, HeaderAction::as_str),
        );
        let name = cx.req(&h, "name", token);
        let value = cx.opt(&h, "value", header_value);
        let from_header = cx.opt(&h, "from_header", token);
        if let (Some(action), Some(name)) = (action, name) {
            if action != HeaderAction::Remove && value.is_none() && from_header.is_none() {
                cx.error_at(
                    &join(&p, "value"),
                    "add/replace needs `value` or `from_header`",
                );
                continue;
            }
            t.headers.push(HeaderRule {
                action,
                name,
                value,
                from_header,
            });
        }
    }
    t
}

/// A URI parameter `name` or `name=value` (no `;`, spaces or control characters).
fn uri_param(s: &str) -> Result<String, String> {
    let s = s.trim_start_matches(';');
    if s.is_empty()
        || s.chars()
            .any(|c| c == ';' || c == '?' || c == '>' || c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "expected a URI parameter like user=phone, got '{}'",
            s.escape_debug()
        ))
    } else {
        Ok(s.to_string())
    }
}

fn route(cx: &mut Cx<'_>, node: &Node, path: &str) -> Route {
    let mut r = Route {
        name: String::new(),
        r#match: RouteMatch::default(),
        group: String::new(),
        selection: Selection::Priority,
    };
    let Some(f) = cx.fields(Some(node), path, ROUTE_KEYS) else {
        return r;
    };
    r.name = cx.req(&f, "name", name).unwrap_or_default();
    let (mp, mn) = cx.get(&f, "match");
    if let Some(m) = cx.fields(mn, &mp, MATCH_KEYS) {
        r.r#match = RouteMatch {
            user_prefix: cx.opt(&m, "user_prefix", token),
            domain: cx.opt(&m, "domain", host),
            interface: cx.opt(&m, "interface", name),
        };
    }
    r.group = cx.req(&f, "group", name).unwrap_or_default();
    r.selection = cx.or(
        &f,
        "selection",
        r.selection,
        one_of(&Selection::ALL, Selection::as_str),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_paths() {
        assert_eq!(parent("a.b[1]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
        assert_eq!(parent("a[0].b"), Some("a[0]"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("prot", LISTENER_KEYS), Some("proto"));
        assert_eq!(suggest("adress", LISTENER_KEYS), Some("address"));
        assert_eq!(suggest("xyzzy", LISTENER_KEYS), None);
        assert_eq!(suggest("udpp", &["udp", "tcp"]), Some("udp"));
    }

    #[test]
    fn value_parsers() {
        assert_eq!(port("5060"), Ok(5060));
        assert_eq!(port("70000"), Err("expected 1..65535, got 70000".into()));
        assert!(port("0").is_err());
        assert!(port("-1").unwrap_err().contains("expected an integer"));
        assert!(port("5060.5").is_err());
        assert!(port("99999999999999999999999").is_err());
        assert_eq!(
            rtp_port("1023"),
            Err("expected 1024..65535, got 1023".into())
        );
        assert_eq!(boolean("true"), Ok(true));
        assert!(boolean("yes").is_err());
        assert!(host("pbx.example.net").is_ok());
        assert!(host("10.0.0.5").is_ok());
        assert!(host("[2001:db8::1]").is_ok());
        assert!(host("bad host").is_err());
        assert!(host("-bad.example").is_err());
        assert!(name("out-udp_1.a").is_ok());
        assert!(name("has space").is_err());
        assert!(token("+49").is_ok());
        assert!(token("a b").is_err());
        assert!(header_value("Portcullis/1.0 (x)").is_ok());
        assert!(header_value("a\r\nX-Injected: 1").is_err());
        let sel = one_of(&Selection::ALL, Selection::as_str)("round-robin").unwrap_err();
        assert!(sel.contains("did you mean 'round_robin'"), "{sel}");
    }
}
