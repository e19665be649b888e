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

/// A foreign peer process (Python script, openssl) whose stdout and stderr lines arrive on a
/// channel and are kept in `seen`; killed by its own PID (`Child::kill`) when dropped.
pub struct LinePeer {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl LinePeer {
    /// Starts `cmd` (its stdin as the caller set it) with stdout and stderr read line by line.
    pub fn spawn(cmd: &mut std::process::Command) -> LinePeer {
        use std::io::{BufRead, BufReader, Read};
        use std::process::Stdio;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        let (tx, lines) = std::sync::mpsc::channel();
        fn pipe(r: impl Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        if let Some(out) = child.stdout.take() {
            pipe(out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pipe(err, tx);
        }
        LinePeer {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Takes the lines printed so far into `seen`.
    pub fn poll(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Waits (bounded) for a line starting with `prefix`; returns the rest.
    pub fn wait_line(&mut self, prefix: &str, timeout: std::time::Duration) -> String {
        let end = std::time::Instant::now() + timeout;
        loop {
            self.poll();
            if let Some(rest) = self.seen.iter().find_map(|l| l.strip_prefix(prefix)) {
                return rest.to_owned();
            }
            assert!(
                std::time::Instant::now() < end,
                "peer never printed {prefix:?}:\n{}",
                self.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The first line (trimmed) starting with `prefix`, the rest trimmed.
    pub fn find(&self, prefix: &str) -> Option<String> {
        self.seen
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|s| s.trim().to_owned()))
    }

    /// The rest of every line starting with `prefix`.
    pub fn lines_with(&self, prefix: &str) -> Vec<&str> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    }

    /// Writes `go` to the peer's stdin (it must have been piped).
    pub fn go(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("peer stdin is piped");
        stdin.write_all(b"go\n").expect("write to peer");
        stdin.flush().expect("flush peer stdin");
    }

    pub fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for LinePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic PRNG (xorshift64: shifts 13, 7, 17) for the bounded mutation
/// tests, so that a failure reproduces from its seed.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
