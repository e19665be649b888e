//! (g) `sbcd check-config`: the shipped bad example reports every error with
//! `file:line:column: path: message` and exits 2; the shipped good example exits 0.
//! Needs no privileges, only a built sbcd (`cargo build -p sbc-daemon`).

use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_tests::proxy::sbcd_binary;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn sbcd() -> PathBuf {
    sbcd_binary("debug").unwrap_or_else(|e| panic!("{e}"))
}

fn check_config(file: &Path) -> (Option<i32>, String) {
    let out = Command::new(sbcd())
        .arg("check-config")
        .arg(file)
        .env_remove("UNSET_BAD_EXAMPLE_ADDR")
        .output()
        .unwrap_or_else(|e| panic!("running sbcd check-config: {e}"));
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.code(), text)
}

/// One parsed `file:line:col: path: message` line.
#[derive(Debug)]
struct Reported {
    line: usize,
    column: usize,
    path: String,
    message: String,
}

fn parse_error_line(l: &str, file_name: &str) -> Option<Reported> {
    // The file part may itself contain ':' only in exotic paths; ours do not.
    let idx = l.find(file_name)?;
    let rest = l[idx + file_name.len()..].strip_prefix(':')?;
    let mut it = rest.splitn(3, ':');
    let line = it.next()?.trim().parse().ok()?;
    let column = it.next()?.trim().parse().ok()?;
    let tail = it.next()?;
    let (path, message) = tail.trim_start().split_once(": ")?;
    Some(Reported {
        line,
        column,
        path: path.trim().to_string(),
        message: message.trim().to_string(),
    })
}

#[test]
fn good_example_validates() {
    let file = workspace().join("config/examples/sbc.yaml");
    assert!(file.is_file(), "missing {}", file.display());
    let (code, text) = check_config(&file);
    assert_eq!(
        code,
        Some(0),
        "sbcd check-config {} must exit 0; output:\n{text}",
        file.display()
    );
}

#[test]
fn bad_example_reports_every_error_with_location() {
    let file = workspace().join("config/examples/bad.yaml");
    let source = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let (code, text) = check_config(&file);
    assert_eq!(
        code,
        Some(2),
        "check-config on bad.yaml must exit 2; output:\n{text}"
    );

    let lines: Vec<&str> = source.lines().collect();
    let mut reported = Vec::new();
    let mut summary: Option<usize> = None;
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        // An optional closing summary `<file>: N error(s)` is allowed (and must agree).
        if let Some(n) = parse_summary_line(l) {
            summary = Some(n);
            continue;
        }
        let r = parse_error_line(l, "bad.yaml").unwrap_or_else(|| {
            panic!("not a `file:line:col: path: message` line: {l:?}\nfull output:\n{text}")
        });
        assert!(
            r.line >= 1 && r.line <= lines.len(),
            "line {} out of range in {l:?}",
            r.line
        );
        let len = lines[r.line - 1].chars().count();
        assert!(
            r.column >= 1 && r.column <= len + 1,
            "column {} out of range (line has {len} chars) in {l:?}",
            r.column
        );
        assert!(
            !r.path.is_empty() && !r.message.is_empty(),
            "empty path/message: {l:?}"
        );
        reported.push(r);
    }
    if let Some(n) = summary {
        assert_eq!(
            n,
            reported.len(),
            "summary count disagrees with the error lines"
        );
    }
    // The example documents its errors: every line carrying a trailing comment is an
    // error, all reported at once.
    let commented: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(" # "))
        .map(|(i, _)| i + 1)
        .collect();
    assert!(commented.len() >= 5, "bad.yaml documents too few errors");
    let missing: Vec<String> = commented
        .iter()
        .filter(|n| !reported.iter().any(|r| r.line == **n))
        .map(|n| format!("{n}: {}", lines[n - 1].trim()))
        .collect();
    assert!(
        missing.is_empty(),
        "errors documented in bad.yaml but not reported:\n{}\nreported:\n{text}",
        missing.join("\n")
    );
    assert!(
        reported.len() >= commented.len(),
        "fewer errors than documented: {} < {}",
        reported.len(),
        commented.len()
    );
    assert!(
        reported
            .iter()
            .any(|r| r.message.contains("UNSET_BAD_EXAMPLE_ADDR")),
        "the unset variable must be named in an error:\n{text}"
    );
}

/// `<file>: N error(s)` -> N.
fn parse_summary_line(l: &str) -> Option<usize> {
    let rest = l.trim_end().strip_suffix(" error(s)")?;
    let (_, n) = rest.rsplit_once(": ")?;
    n.trim().parse().ok()
}

#[test]
fn parses_error_lines() {
    assert_eq!(
        parse_summary_line("config/examples/bad.yaml: 32 error(s)"),
        Some(32)
    );
    assert_eq!(parse_summary_line("bad.yaml:4:10: a: b"), None);
    let r = parse_error_line(
        "config/examples/bad.yaml:15:60: interfaces[0].listeners[0].port: expected 1..65535, got 70000",
        "bad.yaml",
    )
    .expect("parse");
    assert_eq!((r.line, r.column), (15, 60));
    assert_eq!(r.path, "interfaces[0].listeners[0].port");
    assert_eq!(r.message, "expected 1..65535, got 70000");
    assert!(parse_error_line("error: something", "bad.yaml").is_none());
}
