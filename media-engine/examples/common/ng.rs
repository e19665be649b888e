//! A minimal client for rtpengine's NG control protocol (bencode over UDP) and a guard that
//! starts Debian's rtpengine on loopback for on-demand comparisons. Only what the
//! benchmarks need: flat dictionaries of strings out, string values back.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `d<key><value>...e` with keys sorted, as bencode requires.
pub fn bencode_dict(items: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, &str)> = items.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut out = b"d".to_vec();
    for (k, v) in sorted {
        out.extend_from_slice(format!("{}:{}{}:", k.len(), k, v.len()).as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.push(b'e');
    out
}

/// The string value of `key` in a bencoded reply (first occurrence).
pub fn bencode_get(reply: &[u8], key: &str) -> Option<String> {
    let pat = format!("{}:{}", key.len(), key);
    let s = String::from_utf8_lossy(reply);
    let at = s.find(&pat)? + pat.len();
    let rest = &s[at..];
    let colon = rest.find(':')?;
    let len: usize = rest[..colon].parse().ok()?;
    rest.get(colon + 1..colon + 1 + len).map(str::to_string)
}

/// One NG request and its reply (without the cookie); retried on timeout.
pub fn request(
    sock: &UdpSocket,
    to: SocketAddr,
    cookie: u64,
    dict: &[(&str, &str)],
) -> Option<Vec<u8>> {
    request_raw(sock, to, cookie, &bencode_dict(dict))
}

/// [`request`] with a body that is already bencoded (e.g. a dictionary holding a list).
pub fn request_raw(sock: &UdpSocket, to: SocketAddr, cookie: u64, body: &[u8]) -> Option<Vec<u8>> {
    let want = format!("{cookie} ");
    let mut msg = want.clone().into_bytes();
    msg.extend_from_slice(body);
    let mut buf = vec![0u8; 65536];
    for _ in 0..3 {
        sock.send_to(&msg, to).ok()?;
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            // Late replies to earlier (retried) requests are skipped.
            if let Some(reply) = buf[..n].strip_prefix(want.as_bytes()) {
                return Some(reply.to_vec());
            }
        }
    }
    None
}

/// rtpengine started here; killed (by PID) when dropped.
pub struct Rtpengine {
    child: Child,
    pub ng: SocketAddr,
}

impl Rtpengine {
    /// Starts `/usr/bin/rtpengine` (Debian `rtpengine-daemon`) on 127.0.0.1 with the given
    /// port range and threads; None (with a note printed) when it is not installed or does
    /// not answer.
    pub fn start(port_min: u16, port_max: u16, threads: usize) -> Option<Rtpengine> {
        let bin = ["/usr/bin/rtpengine", "/usr/sbin/rtpengine"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(bin) = bin else {
            println!("rtpengine: not installed (apt-get install rtpengine-daemon); skipped");
            return None;
        };
        let ng_port = 22222 + (std::process::id() % 1000) as u16;
        let child = Command::new(bin)
            .args([
                "--foreground".to_string(),
                "--table=-1".to_string(),
                "--interface=127.0.0.1".to_string(),
                format!("--listen-ng=127.0.0.1:{ng_port}"),
                format!("--port-min={port_min}"),
                format!("--port-max={port_max}"),
                "--log-stderr".to_string(),
                "--log-level=3".to_string(),
                "--no-fallback".to_string(),
                format!("--num-threads={threads}"),
                "--delete-delay=0".to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Rtpengine {
            child,
            ng: SocketAddr::from(([127, 0, 0, 1], ng_port)),
        };
        let ctl = UdpSocket::bind("127.0.0.1:0").ok()?;
        ctl.set_read_timeout(Some(Duration::from_millis(300))).ok();
        for i in 0..30 {
            if request(&ctl, r.ng, i, &[("command", "ping")]).is_some() {
                return Some(r);
            }
        }
        println!("rtpengine: NG port did not answer; skipped");
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user+system) of a process, in nanoseconds.
pub fn pid_cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_ns(&s))
        .unwrap_or(0)
}

/// utime+stime, in ns, of a `/proc/.../stat` line.
pub fn stat_cpu_ns(stat: &str) -> Option<u64> {
    // Fields after the command name (which may contain spaces) start after ") ".
    let (_, rest) = stat.rsplit_once(") ")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// CPU (ns) of this process's threads whose name starts with one of `prefixes`.
pub fn threads_cpu_ns(prefixes: &[&str]) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| prefixes.iter().any(|p| c.trim_end().starts_with(p)))
        })
        .filter_map(|t| stat_cpu_ns(&std::fs::read_to_string(t.path().join("stat")).ok()?))
        .sum()
}
