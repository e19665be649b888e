//! Helpers of the privileged datapath tests (root guard, and the netns topology
//! of ebpf-relay's tests, shared through a path module).
#![allow(dead_code)]

// The netns topology helper of the XDP relay tests, shared rather than copied.
#[path = "../../../ebpf-relay/tests/common/netns.rs"]
pub mod netns;

/// Returns true if the test may run. Not root: panics with a clear message,
/// unless PORTCULLIS_SKIP_PRIVILEGED=1, in which case prints a loud SKIPPED
/// line and returns false.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var("PORTCULLIS_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: needs root (XDP, netns); PORTCULLIS_SKIP_PRIVILEGED=1 ***"
        );
        return false;
    }
    panic!(
        "{test} needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces). Run as root, or set \
         PORTCULLIS_SKIP_PRIVILEGED=1 to skip privileged tests explicitly."
    );
}

/// An RTP packet (G.711, 160 bytes of payload).
pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(0xd5u8, 160));
    p
}

/// The python of a venv `dir_name` under the cargo target tmpdir with `requirements`
/// (relative to the crate) installed; created once and reused while `imports` import.
/// Tests of one binary running in parallel install once (the others wait). Panics with
/// pip's output when the install fails.
pub fn venv_python(dir_name: &str, requirements: &str, imports: &str) -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir_name);
    let python = dir.join("bin").join("python");
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", &format!("import {imports}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok(&python) {
        return python;
    }
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (install python3, python3-venv): {e}"));
    assert!(
        out.status.success(),
        "python3 -m venv failed (install python3-venv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let req = Path::new(env!("CARGO_MANIFEST_DIR")).join(requirements);
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&req)
        .output()
        .unwrap_or_else(|e| panic!("cannot run pip: {e}"));
    assert!(
        out.status.success(),
        "pip install -r {} failed:\n{}\n{}",
        req.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ok(&python),
        "{imports} still not importable after pip install"
    );
    python
}
