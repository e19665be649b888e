//! Processes started by a test, optionally inside a network namespace.
//!
//! stdout/stderr go to files in the test's directory. A process is killed by PID (its
//! own process group, which holds only what it forked) when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use crate::error::{HarnessError, Result};

/// A running (or finished) child process.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    /// File receiving the process's stdout.
    pub stdout_path: PathBuf,
    /// File receiving the process's stderr.
    pub stderr_path: PathBuf,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Short label, used for log file names and messages.
    pub name: String,
    /// Namespace to run in (`ip netns exec`), or `None` for the current one.
    pub netns: Option<String>,
    /// Optional CPU list for `taskset -c`.
    pub cpus: Option<String>,
    /// Program and arguments.
    pub program: String,
    pub args: Vec<String>,
}

impl Spec {
    /// A spec for `program` with no arguments.
    pub fn new(name: impl Into<String>, program: impl Into<String>) -> Self {
        Spec {
            name: name.into(),
            netns: None,
            cpus: None,
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Runs inside namespace `ns`.
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_string());
        self
    }

    /// Pins to the given CPU list (taskset syntax).
    pub fn cpus(mut self, cpus: &str) -> Self {
        self.cpus = Some(cpus.to_string());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    fn command(&self) -> Command {
        // `ip netns exec` and `taskset` both exec() their target, so the PID we get is the
        // program's own PID.
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        if let Some(cpus) = &self.cpus {
            argv.extend(["taskset", "-c", cpus].map(String::from));
        }
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// The full command line, for messages.
    pub fn cmdline(&self) -> String {
        let c = self.command();
        let mut s = c.get_program().to_string_lossy().into_owned();
        for a in c.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

impl Process {
    /// Starts `spec` with stdout/stderr in `dir/<name>.stdout|.stderr`.
    pub fn spawn(spec: &Spec, dir: &Path) -> Result<Self> {
        let stdout_path = dir.join(format!("{}.stdout", spec.name));
        let stderr_path = dir.join(format!("{}.stderr", spec.name));
        let out = File::create(&stdout_path)
            .map_err(|e| HarnessError::io(format!("creating {}", stdout_path.display()), e))?;
        let err = File::create(&stderr_path)
            .map_err(|e| HarnessError::io(format!("creating {}", stderr_path.display()), e))?;
        let cmdline = spec.cmdline();
        std::fs::write(dir.join(format!("{}.cmdline", spec.name)), &cmdline)
            .map_err(|e| HarnessError::io("writing cmdline file", e))?;
        let child = spec
            .command()
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning `{cmdline}`"), e))?;
        Ok(Process {
            name: spec.name.clone(),
            child,
            status: None,
            stdout_path,
            stderr_path,
        })
    }

    /// The label given at spawn time.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The PID (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| HarnessError::io(format!("waiting for {}", self.name), e))?;
        }
        Ok(self.status)
    }

    /// Waits at most `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{} still running after {timeout:?}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: i32) {
        let Ok(pgid) = i32::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: plain kill(2) on the process group we created for our own child.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.try_wait() {
            // Also reap anything the process forked and left behind in its group.
            self.signal(libc::SIGKILL);
            return Some(st);
        }
        self.signal(libc::SIGTERM);
        let st = match self.wait_timeout(grace) {
            Ok(st) => Some(st),
            Err(_) => {
                self.signal(libc::SIGKILL);
                self.wait_timeout(Duration::from_secs(5)).ok()
            }
        };
        self.signal(libc::SIGKILL);
        st
    }

    /// The process's stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The process's stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Error if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(st) = self.try_wait()? {
            return Err(HarnessError::ExitedEarly {
                name: self.name.clone(),
                status: st.to_string(),
                stderr: tail(&self.stderr_text(), 40),
            });
        }
        Ok(())
    }

    /// Waits (at most `timeout`) until the process has exited but is not yet reaped, and
    /// returns its group's CPU ticks at that moment (a zombie still shows its final
    /// times). `None` if it is still running after `timeout`.
    pub fn final_group_cpu_ticks(&mut self, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let pid = self.child.id();
        loop {
            match proc_stat(pid) {
                Some(('Z', _, _)) => return Some(group_cpu_ticks(pid)),
                Some(_) => {}
                None => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sum of user+system CPU time (clock ticks) over every process in this process's
    /// group (threads are included in their process's figures).
    pub fn group_cpu_ticks(&self) -> u64 {
        group_cpu_ticks(self.child.id())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Sum of utime+stime ticks of all live processes whose process group is `pgid`.
pub fn group_cpu_ticks(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((pgrp, ticks)) = parse_stat(&stat) {
            if pgrp == pgid {
                total += ticks;
            }
        }
    }
    total
}

/// Parses `/proc/<pid>/stat` into (pgrp, utime+stime).
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    parse_stat_full(stat).map(|(_, pgrp, ticks)| (pgrp, ticks))
}

/// Parses `/proc/<pid>/stat` into (state, pgrp, utime+stime).
fn parse_stat_full(stat: &str) -> Option<(char, u32, u64)> {
    // The command name (field 2) may contain spaces; fields after it start past ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] = state (field 3), pgrp = field 5, utime = 14, stime = 15.
    let state = f.first()?.chars().next()?;
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((state, pgrp, utime + stime))
}

/// (state, pgrp, utime+stime) of a live or zombie process.
pub fn proc_stat(pid: u32) -> Option<(char, u32, u64)> {
    parse_stat_full(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second (for converting [`group_cpu_ticks`]).
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_name() {
        let stat = "1234 (my proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 4 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(stat), Some((1234, 21)));
    }

    #[test]
    fn tail_takes_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
