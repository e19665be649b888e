//! Per-test environment: a work directory, the topology and the processes of one test.
//!
//! Dropping a [`TestEnv`] stops every process it started (by PID), prints the logs of
//! all of them if the test is panicking (the work directory is then kept for
//! inspection), and deletes the namespaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};
use crate::netns::Topology;
use crate::process::{tail, Process, Spec};

/// Root of all per-test work directories.
pub fn work_root() -> PathBuf {
    std::env::var_os("PORTCULLIS_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("portcullis-e2e"))
}

/// Creates a fresh directory `<root>/<name>-<pid>-<nanos>`.
pub fn fresh_dir(name: &str) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = work_root().join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
    Ok(dir)
}

/// Everything one end-to-end test owns.
#[derive(Debug)]
pub struct TestEnv {
    /// Test name (for messages and the directory name).
    pub name: String,
    /// Work directory: generated configs, scenario copies, logs, traces, captures.
    pub dir: PathBuf,
    /// The client / proxy / core namespaces.
    pub topo: Topology,
    procs: Vec<Process>,
    extra_dumps: Vec<PathBuf>,
}

impl TestEnv {
    /// Creates the work directory and the topology.
    pub fn new(name: &str) -> Result<Self> {
        let dir = fresh_dir(name)?;
        let topo = Topology::build()?;
        Ok(TestEnv {
            name: name.to_string(),
            dir,
            topo,
            procs: Vec::new(),
            extra_dumps: Vec::new(),
        })
    }

    /// Starts a process owned by this environment and returns its index.
    pub fn spawn(&mut self, spec: &Spec) -> Result<usize> {
        let p = Process::spawn(spec, &self.dir)?;
        self.procs.push(p);
        Ok(self.procs.len() - 1)
    }

    /// The process with index `idx`.
    pub fn process(&mut self, idx: usize) -> &mut Process {
        &mut self.procs[idx]
    }

    /// Registers a file whose contents are printed if the test fails.
    pub fn dump_on_failure(&mut self, path: &Path) {
        self.extra_dumps.push(path.to_path_buf());
    }

    /// Prints every log file (tails) to stderr; used on failure.
    pub fn dump_logs(&self) {
        eprintln!(
            "===== e2e test `{}` failed; work directory kept: {}",
            self.name,
            self.dir.display()
        );
        let mut files: Vec<PathBuf> = Vec::new();
        for p in &self.procs {
            files.push(p.stdout_path.clone());
            files.push(p.stderr_path.clone());
        }
        files.extend(self.extra_dumps.iter().cloned());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            if text.trim().is_empty() {
                continue;
            }
            eprintln!("----- {} (last 80 lines)", f.display());
            eprintln!("{}", tail(&text, 80));
        }
        eprintln!("===== end of logs for `{}`", self.name);
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop(Duration::from_secs(3));
        }
        if std::thread::panicking() {
            self.dump_logs();
        } else if std::env::var_os("PORTCULLIS_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // `topo` drops after this: namespaces go once their processes are gone.
    }
}

/// Polls `f` every 20 ms until it returns `Ok(true)` or `timeout` passes.
pub fn wait_until<F>(what: &str, timeout: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Result<bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout(what.to_string()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
