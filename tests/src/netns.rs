//! Network namespaces and the standard three-host topology.
//!
//! ```text
//!  <p>-out (client)            <p>-sbc (proxy under test)             <p>-in (core)
//!  192.0.2.2/24  [<p>c0] ==== [<p>s0] 192.0.2.1/24
//!                              198.51.100.1/24 [<p>s1] ==== [<p>i0] 198.51.100.2/24
//!                                                                    198.51.100.3/24
//! ```
//! Names are unique per process and per topology (`pc<pid>n<counter>`), so tests can run
//! in parallel. Namespaces are deleted on drop (also while unwinding from a panic); the
//! veth pairs disappear with them. Namespaces left behind by a killed test run (their
//! creator PID no longer exists) are removed the next time a topology is built.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{HarnessError, Result};

/// Client (caller) address on the outside network.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Proxy address on the outside network.
pub const SBC_OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Proxy address on the inside network.
pub const SBC_INSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// Core upstream address (second upstream of the default group).
pub const CORE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Extra core address (first upstream of the failover group).
pub const CORE_IP2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

static COUNTER: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "pc";

/// Runs `ip` with the given arguments and returns stdout, or an error with stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs a command to completion; error if it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let cmdline = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| HarnessError::io(format!("running `{cmdline}`"), e))?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            cmd: cmdline,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Returns a fresh unique name stem `pc<pid>n<counter>` (at most 12 characters, so that
/// interface names derived from it fit in IFNAMSIZ).
pub fn unique_stem() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{PREFIX}{}n{n}", std::process::id())
}

/// Deletes namespaces named `pc<pid>n...` whose creating process no longer exists.
pub fn remove_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('n') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One network namespace with loopback up, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` inside the namespace to completion and returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

/// The standard client / proxy / core topology (see module docs).
#[derive(Debug)]
pub struct Topology {
    /// Name stem shared by all namespaces and devices of this topology.
    pub stem: String,
    /// Outside client namespace (192.0.2.2).
    pub outside: Netns,
    /// Proxy namespace (192.0.2.1 on `sbc_out_dev`, 198.51.100.1 on `sbc_in_dev`).
    pub sbc: Netns,
    /// Inside core namespace (198.51.100.2 and .3).
    pub inside: Netns,
    /// Proxy's outside-facing device (in `sbc`).
    pub sbc_out_dev: String,
    /// Proxy's inside-facing device (in `sbc`).
    pub sbc_in_dev: String,
}

impl Topology {
    /// The names of the outside, proxy and inside namespaces, in that order.
    pub fn names(&self) -> (String, String, String) {
        (
            self.outside.name().to_string(),
            self.sbc.name().to_string(),
            self.inside.name().to_string(),
        )
    }

    /// Builds the topology with fresh unique names.
    pub fn build() -> Result<Self> {
        remove_stale_namespaces();
        let stem = unique_stem();
        let outside = Netns::create(&format!("{stem}-out"))?;
        let sbc = Netns::create(&format!("{stem}-sbc"))?;
        let inside = Netns::create(&format!("{stem}-in"))?;
        let (c0, s0, s1, i0) = (
            format!("{stem}c0"),
            format!("{stem}s0"),
            format!("{stem}s1"),
            format!("{stem}i0"),
        );
        // Both ends are created directly inside their namespaces: nothing is ever left
        // in the root namespace, and deleting the namespaces removes the pairs.
        ip(&[
            "link",
            "add",
            &c0,
            "netns",
            outside.name(),
            "type",
            "veth",
            "peer",
            "name",
            &s0,
            "netns",
            sbc.name(),
        ])?;
        ip(&[
            "link",
            "add",
            &s1,
            "netns",
            sbc.name(),
            "type",
            "veth",
            "peer",
            "name",
            &i0,
            "netns",
            inside.name(),
        ])?;
        let addr = |ns: &Netns, a: &str, dev: &str| {
            ip(&["-n", ns.name(), "addr", "add", a, "dev", dev]).map(|_| ())
        };
        addr(&outside, "192.0.2.2/24", &c0)?;
        addr(&sbc, "192.0.2.1/24", &s0)?;
        addr(&sbc, "198.51.100.1/24", &s1)?;
        addr(&inside, "198.51.100.2/24", &i0)?;
        addr(&inside, "198.51.100.3/24", &i0)?;
        for (ns, dev) in [(&outside, &c0), (&sbc, &s0), (&sbc, &s1), (&inside, &i0)] {
            ip(&["-n", ns.name(), "link", "set", dev, "up"])?;
        }
        // Addresses are usable only once duplicate address detection (IPv6 only) and
        // link-up are done; for IPv4 link-up is enough.
        Ok(Topology {
            stem,
            outside,
            sbc,
            inside,
            sbc_out_dev: s0,
            sbc_in_dev: s1,
        })
    }
}
