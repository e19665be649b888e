//! `${...}` substitution in scalar values (after YAML parsing, never in keys).
//!
//! - `${NAME}`: environment variable, error when unset.
//! - `${NAME:-default}`: the default when the variable is unset or empty.
//! - `${file:/path}`: file content with one trailing newline removed (secrets);
//!   a relative path is taken relative to the configuration file's directory.
//! - `$${` produces a literal `${`; a `$` not followed by `{` is literal, so
//!   SIP/SDP text such as `$1` or `a=$x` passes through untouched.
//!
//! Substituted text is not scanned again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest secret file accepted.
const MAX_FILE: u64 = 1024 * 1024;

/// Where variables and secret files come from.
#[derive(Debug, Clone, Default)]
pub enum EnvSource {
    /// The process environment (`std::env::var`).
    #[default]
    Process,
    /// A fixed set of variables (tests, embedding).
    Map(HashMap<String, String>),
}

impl EnvSource {
    fn var(&self, name: &str) -> Option<String> {
        match self {
            EnvSource::Process => std::env::var(name).ok(),
            EnvSource::Map(m) => m.get(name).cloned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Substituted {
    pub text: String,
    /// True when any part came from a `${file:...}` secret.
    pub secret: bool,
}

pub(crate) fn substitute(
    input: &str,
    env: &EnvSource,
    base_dir: Option<&Path>,
) -> Result<Substituted, String> {
    if !input.contains('$') {
        return Ok(Substituted {
            text: input.to_string(),
            secret: false,
        });
    }
    let mut out = String::with_capacity(input.len());
    let mut secret = false;
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            // `$${` -> literal `${`
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("unterminated '${' (write '$${' for a literal '${')".into());
            };
            let expr = &body[..end];
            if expr.contains("${") {
                return Err("nested '${' substitution is not supported".into());
            }
            let (value, from_file) = expand(expr, env, base_dir)?;
            secret |= from_file;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Substituted { text: out, secret })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn expand(expr: &str, env: &EnvSource, base_dir: Option<&Path>) -> Result<(String, bool), String> {
    if let Some(path) = expr.strip_prefix("file:") {
        return read_secret(path, base_dir).map(|s| (s, true));
    }
    let (name, default) = match expr.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (expr, None),
    };
    if !valid_name(name) {
        return Err(format!(
            "invalid substitution '${{{expr}}}': expected ${{NAME}}, ${{NAME:-default}} or ${{file:/path}} (write '$${{' for a literal '${{')"
        ));
    }
    match (env.var(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok((d.to_string(), false)),
        (Some(v), _) => Ok((v, false)),
        (None, Some(d)) => Ok((d.to_string(), false)),
        (None, None) => Err(format!(
            "environment variable {name} is not set (use ${{{name}:-default}} to give a default)"
        )),
    }
}

fn read_secret(path: &str, base_dir: Option<&Path>) -> Result<String, String> {
    if path.is_empty() {
        return Err("empty path in '${file:}'".into());
    }
    let p = PathBuf::from(path);
    let p = match base_dir {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    };
    let meta = std::fs::metadata(&p)
        .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?;
    if meta.len() > MAX_FILE {
        return Err(format!(
            "secret file {} is larger than {MAX_FILE} bytes",
            p.display()
        ));
    }
    let mut s = std::fs::read_to_string(&p)
        .map_err(|e| format!("cannot read secret file {}: {e}", p.display()))?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvSource {
        let mut m = HashMap::new();
        m.insert("HOST".to_string(), "10.0.0.5".to_string());
        m.insert("EMPTY".to_string(), String::new());
        m.insert("DOLLAR".to_string(), "a${B}c$".to_string());
        EnvSource::Map(m)
    }

    fn sub(s: &str) -> Result<String, String> {
        substitute(s, &env(), None).map(|s| s.text)
    }

    #[test]
    fn plain_text_untouched() {
        assert_eq!(sub("no dollars").unwrap(), "no dollars");
        assert_eq!(sub("").unwrap(), "");
    }

    #[test]
    fn env_vars_and_defaults() {
        assert_eq!(sub("${HOST}").unwrap(), "10.0.0.5");
        assert_eq!(sub("sip:${HOST}:5060").unwrap(), "sip:10.0.0.5:5060");
        assert_eq!(sub("${NOPE:-1.2.3.4}").unwrap(), "1.2.3.4");
        assert_eq!(sub("${HOST:-1.2.3.4}").unwrap(), "10.0.0.5");
        assert_eq!(sub("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(sub("${EMPTY}").unwrap(), "");
        assert_eq!(sub("${NOPE:-}").unwrap(), "");
        assert_eq!(sub("${NOPE:-a:-b}").unwrap(), "a:-b");
    }

    #[test]
    fn substituted_text_is_not_rescanned() {
        assert_eq!(sub("${DOLLAR}").unwrap(), "a${B}c$");
    }

    #[test]
    fn escapes_and_lone_dollars() {
        assert_eq!(sub("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(sub("$$${HOST}").unwrap(), "$${HOST}");
        assert_eq!(sub("$1").unwrap(), "$1");
        assert_eq!(sub("cost $5 $").unwrap(), "cost $5 $");
        assert_eq!(sub("$$").unwrap(), "$$");
        assert_eq!(
            sub("s/^sip:(.*)$/$1/ a=fmtp:101 0-15 $$").unwrap(),
            "s/^sip:(.*)$/$1/ a=fmtp:101 0-15 $$"
        );
        assert_eq!(sub("a$${b}$HOST${HOST}").unwrap(), "a${b}$HOST10.0.0.5");
    }

    #[test]
    fn errors() {
        let e = sub("${MISSING_VAR}").unwrap_err();
        assert!(e.contains("MISSING_VAR is not set"), "{e}");
        assert!(sub("${HOST").unwrap_err().contains("unterminated"));
        assert!(sub("${}").unwrap_err().contains("invalid substitution"));
        assert!(sub("${1A}").unwrap_err().contains("invalid substitution"));
        assert!(sub("${A B}").unwrap_err().contains("invalid substitution"));
        assert!(sub("${A:-${B}}").unwrap_err().contains("nested"));
        assert!(sub("${file:}").unwrap_err().contains("empty path"));
        assert!(sub("${file:/nonexistent/portcullis/secret}")
            .unwrap_err()
            .contains("cannot read secret file"));
    }

    #[test]
    fn file_secret_strips_one_newline() {
        let dir = std::env::temp_dir().join(format!("portcullis-subst-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("one"), "s3cret\n").unwrap();
        std::fs::write(dir.join("two"), "s3cret\n\n").unwrap();
        std::fs::write(dir.join("crlf"), "s3cret\r\n").unwrap();
        let abs = dir.join("one");
        let r = substitute(&format!("${{file:{}}}", abs.display()), &env(), None).unwrap();
        assert_eq!(r.text, "s3cret");
        assert!(r.secret);
        let r = substitute("pw=${file:two}", &env(), Some(&dir)).unwrap();
        assert_eq!(r.text, "pw=s3cret\n");
        let r = substitute("${file:crlf}", &env(), Some(&dir)).unwrap();
        assert_eq!(r.text, "s3cret");
        let r = substitute("${HOST}", &env(), Some(&dir)).unwrap();
        assert!(!r.secret);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
