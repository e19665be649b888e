//! Debian's rtpengine (userspace only, `--table=-1`) started inside a network
//! namespace with two named logical interfaces, and the NG offer/answer that
//! puts a call between them (`direction`). Needs module `ng` (common/ng.rs)
//! at the crate root. The daemon is stopped by its PID when the guard drops,
//! and gets SIGKILL if this process dies first (PR_SET_PDEATHSIG).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ng;

/// Lines of rtpengine's stderr kept for error messages.
const LOG_LINES: usize = 20;

/// How rtpengine is started.
pub struct RtpengineOptions<'a> {
    /// Network namespace to run in (`ip netns exec`).
    pub netns: &'a str,
    /// Logical interfaces, `--interface=NAME/ADDR` each, in this order.
    pub interfaces: &'a [(&'a str, Ipv4Addr)],
    pub port_min: u16,
    pub port_max: u16,
    /// `--num-threads`.
    pub threads: usize,
    /// NG control socket, bound in `netns` on 127.0.0.1 (the daemon listens
    /// on 127.0.0.1 there too).
    pub ctl: UdpSocket,
}

/// A running rtpengine; stopped (SIGTERM, then SIGKILL after 2 s) by PID on drop.
pub struct NetnsRtpengine {
    child: Child,
    ng: SocketAddr,
    ctl: UdpSocket,
    cookie: u64,
    log: Arc<Mutex<VecDeque<String>>>,
    log_reader: Option<JoinHandle<()>>,
}

/// The address and port of the first audio stream of an SDP body.
pub fn sdp_audio(sdp: &str) -> Option<SocketAddrV4> {
    let ip: Ipv4Addr = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .parse()
        .ok()?;
    let port: u16 = sdp
        .lines()
        .find(|l| l.starts_with("m=audio "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(SocketAddrV4::new(ip, port))
}

/// A plain RTP/AVP PCMU offer or answer from `party`.
pub fn sdp_pcmu(party: SocketAddrV4) -> String {
    let ip = party.ip();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n\
         a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n",
        party.port()
    )
}

/// A bencoded dictionary of the string `items` plus one list of strings
/// (`ng::bencode_dict` writes strings only; rtpengine's `direction` is a list).
fn dict_with_list(items: &[(&str, &str)], list_key: &str, list: &[&str]) -> Vec<u8> {
    let mut entries: Vec<(&str, Vec<u8>)> = items
        .iter()
        .map(|&(k, v)| {
            let one = ng::bencode_dict(&[(k, v)]);
            (k, one[1..one.len() - 1].to_vec())
        })
        .collect();
    let mut l = format!("{}:{list_key}l", list_key.len()).into_bytes();
    for x in list {
        l.extend_from_slice(format!("{}:{x}", x.len()).as_bytes());
    }
    l.push(b'e');
    entries.push((list_key, l));
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = b"d".to_vec();
    for (_, e) in entries {
        out.extend(e);
    }
    out.push(b'e');
    out
}

impl NetnsRtpengine {
    pub fn start(o: RtpengineOptions<'_>) -> Result<Self, String> {
        let bin = ["/usr/bin/rtpengine", "/usr/sbin/rtpengine"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("rtpengine is not installed (apt-get install rtpengine-daemon)")?;
        let ng_port = 2223;
        let mut args = vec![
            "netns".to_string(),
            "exec".to_string(),
            o.netns.to_string(),
            bin.to_string(),
            "--foreground".to_string(),
            "--table=-1".to_string(),
            format!("--listen-ng=127.0.0.1:{ng_port}"),
            format!("--port-min={}", o.port_min),
            format!("--port-max={}", o.port_max),
            "--log-stderr".to_string(),
            "--log-level=3".to_string(),
            "--no-fallback".to_string(),
            format!("--num-threads={}", o.threads),
            "--delete-delay=0".to_string(),
        ];
        args.extend(
            o.interfaces
                .iter()
                .map(|(name, ip)| format!("--interface={name}/{ip}")),
        );
        let mut cmd = Command::new("ip");
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a terminal Ctrl-C reaches only us, and we
            // stop it by PID while cleaning up.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run ip netns exec {} {bin}: {e}", o.netns))?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let log_reader = child.stderr.take().map(|err| {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        if l.len() == LOG_LINES {
                            l.pop_front();
                        }
                        l.push_back(line);
                    }
                }
            })
        });
        let mut r = NetnsRtpengine {
            child,
            ng: SocketAddr::from(([127, 0, 0, 1], ng_port)),
            ctl: o.ctl,
            cookie: 0,
            log,
            log_reader,
        };
        r.ctl
            .set_read_timeout(Some(Duration::from_millis(300)))
            .map_err(|e| format!("NG socket: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(format!("rtpengine exited ({status}): {}", r.log_tail()));
            }
            r.cookie += 1;
            if ng::request(&r.ctl, r.ng, r.cookie, &[("command", "ping")]).is_some() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "rtpengine's NG port did not answer: {}",
                    r.log_tail()
                ));
            }
        }
        // `ip netns exec` execs the daemon in place: the PID must be rtpengine's
        // (its CPU time is read from /proc/<pid>/stat).
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", r.pid())).unwrap_or_default();
        if comm.trim_end() != "rtpengine" {
            return Err(format!(
                "PID {} is {:?}, not rtpengine: cannot measure its CPU",
                r.pid(),
                comm.trim_end()
            ));
        }
        Ok(r)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines rtpengine wrote to stderr.
    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }

    /// One NG request whose body is already bencoded; retried on timeout.
    fn request(&mut self, body: &[u8]) -> Result<Vec<u8>, String> {
        self.cookie += 1;
        ng::request_raw(&self.ctl, self.ng, self.cookie, body)
            .ok_or_else(|| format!("no NG reply: {}", self.log_tail()))
    }

    /// Offer from `from` (on logical interface `direction[0]`) toward the
    /// callee on `direction[1]`, then the callee's answer from `to`. Returns
    /// rtpengine's media addresses (toward `to`, toward `from`).
    pub fn call(
        &mut self,
        call_id: &str,
        from: SocketAddrV4,
        to: SocketAddrV4,
        direction: [&str; 2],
    ) -> Result<(SocketAddrV4, SocketAddrV4), String> {
        let offer_sdp = sdp_pcmu(from);
        let body = dict_with_list(
            &[
                ("command", "offer"),
                ("call-id", call_id),
                ("from-tag", "a"),
                ("sdp", &offer_sdp),
            ],
            "direction",
            &direction,
        );
        let reply = self.request(&body)?;
        let toward_to = ng::bencode_get(&reply, "sdp")
            .as_deref()
            .and_then(sdp_audio)
            .ok_or_else(|| format!("offer {call_id}: {}", String::from_utf8_lossy(&reply)))?;
        let answer_sdp = sdp_pcmu(to);
        let answer = ng::bencode_dict(&[
            ("command", "answer"),
            ("call-id", call_id),
            ("from-tag", "a"),
            ("to-tag", "b"),
            ("sdp", &answer_sdp),
        ]);
        let reply = self.request(&answer)?;
        let toward_from = ng::bencode_get(&reply, "sdp")
            .as_deref()
            .and_then(sdp_audio)
            .ok_or_else(|| format!("answer {call_id}: {}", String::from_utf8_lossy(&reply)))?;
        Ok((toward_to, toward_from))
    }
}

impl Drop for NetnsRtpengine {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            if let Ok(None) = self.child.try_wait() {
                // SAFETY: signals our own child, which has not been reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(2);
                while let Ok(None) = self.child.try_wait() {
                    if Instant::now() > deadline {
                        let _ = self.child.kill();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let _ = self.child.wait();
        if let Some(h) = self.log_reader.take() {
            let _ = h.join();
        }
    }
}
