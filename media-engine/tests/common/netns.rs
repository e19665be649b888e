//! Three-namespace test topology: A (sender) -- SBC (relay, two veths) -- C
//! (receiver). Names are unique per run; the namespaces are deleted on drop
//! (every exit path, panics included). No process is left running: traffic
//! comes from threads that entered a namespace with setns(2).

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ebpf_relay::PassProgram;

pub const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xa0, 0];
pub const SBC0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xb0, 0];
pub const SBC1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xb1, 0];
pub const C_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xc0, 0];

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Output of a command (stdout), panicking if it fails.
pub fn output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "`{cmd} {}` failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that has entered network namespace `ns`. Sockets and
/// XDP attachments made there keep that namespace after the thread ends.
pub fn in_netns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: valid fd of a netns file; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// UdpInCsumErrors of the namespace `ns` (from /proc/thread-self/net/snmp).
pub fn udp_csum_errors(ns: &str) -> u64 {
    in_netns(ns, || {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
        let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let header = lines.next().expect("Udp header");
        let values = lines.next().expect("Udp values");
        let idx = header
            .split_whitespace()
            .position(|h| h == "InCsumErrors")
            .expect("InCsumErrors column");
        values
            .split_whitespace()
            .nth(idx)
            .and_then(|v| v.parse().ok())
            .expect("InCsumErrors value")
    })
}

/// Binds a UDP socket inside `ns`.
pub fn bind_in(ns: &str, addr: &str) -> UdpSocket {
    let addr = addr.to_string();
    in_netns(ns, move || {
        let s = UdpSocket::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        s
    })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Topology {
    /// Sender namespace (eth0: 198.18.1.2, .3; 2001:db8:1::2).
    pub a: String,
    /// SBC namespace (sbc0: 198.18.1.1 / 2001:db8:1::1, sbc1: 198.18.2.1 / 2001:db8:2::1).
    pub sbc: String,
    /// Receiver namespace (eth0: 198.18.2.2; 2001:db8:2::2).
    pub c: String,
    passes: Vec<PassProgram>,
}

impl Topology {
    /// Builds the namespaces and veths. With `peer_xdp`, attaches the XDP_PASS
    /// program to the far ends (eth0 in A and C) so that frames redirected or
    /// sent back by XDP into the veths are delivered.
    pub fn new(peer_xdp: bool) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id());
        let mut t = Topology {
            a: format!("pdA{id}"),
            sbc: format!("pdS{id}"),
            c: format!("pdC{id}"),
            passes: Vec::new(),
        };
        // From here on, Drop deletes whatever was created.
        for ns in [&t.a, &t.sbc, &t.c] {
            run("ip", &["netns", "add", ns]);
        }
        let (a, s, c) = (t.a.clone(), t.sbc.clone(), t.c.clone());
        run(
            "ip",
            &[
                "-n",
                &s,
                "link",
                "add",
                "sbc0",
                "address",
                &mac_str(&SBC0_MAC),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &mac_str(&A_MAC),
                "netns",
                &a,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &s,
                "link",
                "add",
                "sbc1",
                "address",
                &mac_str(&SBC1_MAC),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &mac_str(&C_MAC),
                "netns",
                &c,
            ],
        );
        let addrs: [(&str, &str, &str); 8] = [
            (&a, "eth0", "198.18.1.2/24"),
            (&a, "eth0", "198.18.1.3/24"),
            (&a, "eth0", "2001:db8:1::2/64"),
            (&s, "sbc0", "198.18.1.1/24"),
            (&s, "sbc0", "2001:db8:1::1/64"),
            (&s, "sbc1", "198.18.2.1/24"),
            (&s, "sbc1", "2001:db8:2::1/64"),
            (&c, "eth0", "198.18.2.2/24"),
        ];
        for (ns, dev, addr) in addrs {
            if addr.contains(':') {
                run("ip", &["-n", ns, "addr", "add", addr, "dev", dev, "nodad"]);
            } else {
                run("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
            }
        }
        run(
            "ip",
            &[
                "-n",
                &c,
                "addr",
                "add",
                "2001:db8:2::2/64",
                "dev",
                "eth0",
                "nodad",
            ],
        );
        for (ns, dev) in [(&a, "eth0"), (&s, "sbc0"), (&s, "sbc1"), (&c, "eth0")] {
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        // Static neighbours: no dependency on ARP/ND timing.
        let neigh = [
            (&a, "198.18.1.1", SBC0_MAC),
            (&a, "2001:db8:1::1", SBC0_MAC),
            (&c, "198.18.2.1", SBC1_MAC),
            (&c, "2001:db8:2::1", SBC1_MAC),
            (&s, "198.18.1.2", A_MAC),
            (&s, "198.18.1.3", A_MAC),
            (&s, "2001:db8:1::2", A_MAC),
            (&s, "198.18.2.2", C_MAC),
            (&s, "2001:db8:2::2", C_MAC),
        ];
        for (ns, ip, mac) in neigh {
            let dev = if ns == &s {
                if ip.starts_with("198.18.1.") || ip.starts_with("2001:db8:1:") {
                    "sbc0"
                } else {
                    "sbc1"
                }
            } else {
                "eth0"
            };
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    ip,
                    "lladdr",
                    &mac_str(&mac),
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
            );
        }
        // Locally generated UDP over veth leaves the checksum partial: compute
        // it in software on the senders so it is complete on the wire.
        for ns in [&a, &c] {
            run(
                "ip",
                &["netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"],
            );
        }
        if peer_xdp {
            for ns in [a.clone(), c.clone()] {
                let p = in_netns(&ns, || PassProgram::attach("eth0", false))
                    .expect("attach XDP_PASS on the peer veth");
                t.passes.push(p);
            }
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.passes.clear();
        for ns in [&self.a, &self.sbc, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
