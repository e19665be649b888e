//! Packet capture with tshark inside a namespace, for assertions sipp cannot express
//! (what crossed which link).

use std::path::PathBuf;
use std::time::Duration;

use crate::env::{wait_until, TestEnv};
use crate::error::{HarnessError, Result};
use crate::process::{Process, Spec};

/// One SIP message seen on the wire.
#[derive(Debug, Clone)]
pub struct WireMessage {
    /// Capture interface name.
    pub iface: String,
    pub src: String,
    pub dst: String,
    /// Request method (requests only).
    pub method: Option<String>,
    /// Status code (responses only).
    pub status: Option<u16>,
    pub cseq_method: String,
    pub call_id: String,
    /// Via branches, top first (one per Via).
    pub via_branches: Vec<String>,
}

/// A running capture.
#[derive(Debug)]
pub struct Capture {
    process: Process,
    pcap: PathBuf,
}

impl Capture {
    /// Starts tshark on `ifaces` in `netns` (SIP ports only) and waits until it captures.
    pub fn start(env: &mut TestEnv, netns: &str, ifaces: &[&str]) -> Result<Self> {
        Self::spawn(
            env,
            netns,
            ifaces,
            "udp port 5060 or tcp port 5060",
            "",
            false,
        )
    }

    /// Like [`Capture::start`] with the capture filter `filter` applied to every interface;
    /// `label` (may be empty) tells this capture's files apart from others on the same
    /// interfaces.
    pub fn start_filtered(
        env: &mut TestEnv,
        netns: &str,
        ifaces: &[&str],
        filter: &str,
        label: &str,
    ) -> Result<Self> {
        Self::spawn(env, netns, ifaces, filter, label, true)
    }

    /// tshark takes a `-f` given before the first `-i` as every interface's filter, and one
    /// given after an `-i` as that interface's only (`filter_first: false`, as `start` has
    /// always done).
    fn spawn(
        env: &mut TestEnv,
        netns: &str,
        ifaces: &[&str],
        filter: &str,
        label: &str,
        filter_first: bool,
    ) -> Result<Self> {
        // One file (and one tshark log) per set of interfaces, so captures can run side by side.
        let tag = if label.is_empty() {
            ifaces.join("+")
        } else {
            format!("{label}-{}", ifaces.join("+"))
        };
        let pcap = env.dir.join(format!("capture-{tag}.pcapng"));
        let mut args: Vec<String> = Vec::new();
        if filter_first {
            args.extend(["-f".into(), filter.to_string()]);
        }
        for i in ifaces {
            args.push("-i".into());
            args.push((*i).to_string());
        }
        if !filter_first {
            args.extend(["-f".into(), filter.to_string()]);
        }
        args.extend(["-w".into(), pcap.display().to_string()]);
        let spec = Spec::new(format!("tshark-{tag}"), "tshark")
            .netns(netns)
            .args(args);
        let mut process = Process::spawn(&spec, &env.dir)?;
        env.dump_on_failure(&process.stderr_path);
        let stderr_path = process.stderr_path.clone();
        wait_until("tshark capturing", Duration::from_secs(20), || {
            process.ensure_running()?;
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            Ok(text.contains("Capturing on"))
        })?;
        Ok(Capture { process, pcap })
    }

    /// Stops the capture and returns the UDP/TCP payload of every captured packet (SIP
    /// ports only), for assertions on the raw bytes that crossed the link.
    pub fn finish_payloads(mut self) -> Result<Vec<Vec<u8>>> {
        std::thread::sleep(Duration::from_millis(300));
        self.process.signal(libc::SIGINT);
        let _ = self.process.wait_timeout(Duration::from_secs(5));
        self.process.stop(Duration::from_secs(1));
        let pcap = self.pcap.display().to_string();
        let out = crate::netns::run(
            "tshark",
            &[
                "-r",
                &pcap,
                "-T",
                "fields",
                "-e",
                "udp.payload",
                "-e",
                "tcp.payload",
            ],
        )?;
        Ok(out
            .lines()
            .map(|l| {
                let hex: String = l.chars().filter(|c| c.is_ascii_hexdigit()).collect();
                (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect::<Vec<u8>>()
            })
            .filter(|p| !p.is_empty())
            .collect())
    }

    /// Stops the capture and returns every UDP datagram in it with its interface and
    /// addresses (for media assertions: what crossed which link, RFC 7983 classes).
    pub fn finish_udp(mut self) -> Result<Vec<UdpDatagram>> {
        std::thread::sleep(Duration::from_millis(300));
        self.process.signal(libc::SIGINT);
        let _ = self.process.wait_timeout(Duration::from_secs(5));
        self.process.stop(Duration::from_secs(1));
        let pcap = self.pcap.display().to_string();
        let out = crate::netns::run(
            "tshark",
            &[
                "-r",
                &pcap,
                "-Y",
                "udp",
                "-T",
                "fields",
                "-E",
                "separator=/t",
                "-e",
                "frame.interface_name",
                "-e",
                "ip.src",
                "-e",
                "udp.srcport",
                "-e",
                "ip.dst",
                "-e",
                "udp.dstport",
                "-e",
                "udp.payload",
            ],
        )?;
        Ok(out.lines().filter_map(parse_udp_line).collect())
    }

    /// Stops the capture and decodes the SIP messages in it.
    pub fn finish(mut self) -> Result<Vec<WireMessage>> {
        // Give the last packets a moment to be written, then let tshark flush and exit.
        std::thread::sleep(Duration::from_millis(300));
        self.process.signal(libc::SIGINT);
        let _ = self.process.wait_timeout(Duration::from_secs(5));
        self.process.stop(Duration::from_secs(1));
        let pcap = self.pcap.display().to_string();
        let out = crate::netns::run(
            "tshark",
            &[
                "-r",
                &pcap,
                "-Y",
                "sip",
                "-T",
                "fields",
                "-E",
                "separator=/t",
                "-E",
                "occurrence=a",
                "-E",
                "aggregator=,",
                "-e",
                "frame.interface_name",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "sip.Method",
                "-e",
                "sip.Status-Code",
                "-e",
                "sip.CSeq.method",
                "-e",
                "sip.Call-ID",
                "-e",
                "sip.Via.branch",
            ],
        )?;
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_fields_line)
            .collect()
    }
}

/// One UDP datagram seen on the wire.
#[derive(Debug, Clone)]
pub struct UdpDatagram {
    /// Capture interface name.
    pub iface: String,
    pub src: String,
    pub src_port: u16,
    pub dst: String,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

fn parse_udp_line(line: &str) -> Option<UdpDatagram> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 6 {
        return None;
    }
    // ICMP errors quoting a UDP header also match `udp`: their fields hold two values.
    if f[1].contains(',') || f[2].contains(',') {
        return None;
    }
    let hex: String = f[5].chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let payload = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    Some(UdpDatagram {
        iface: f[0].to_string(),
        src: f[1].to_string(),
        src_port: f[2].parse().ok()?,
        dst: f[3].to_string(),
        dst_port: f[4].parse().ok()?,
        payload,
    })
}

fn parse_fields_line(line: &str) -> Result<WireMessage> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 8 {
        return Err(HarnessError::Parse(format!("tshark fields line: {line:?}")));
    }
    Ok(WireMessage {
        iface: f[0].to_string(),
        src: f[1].to_string(),
        dst: f[2].to_string(),
        method: Some(f[3].to_string()).filter(|s| !s.is_empty()),
        status: f[4].parse().ok(),
        cseq_method: f[5].to_string(),
        call_id: f[6].to_string(),
        via_branches: f[7]
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tshark_fields() {
        let m = parse_fields_line(
            "s1\t198.51.100.1\t198.51.100.2\tACK\t\tACK\t1-2@x\tz9hG4bKa,z9hG4bK-1",
        )
        .unwrap();
        assert_eq!(m.method.as_deref(), Some("ACK"));
        assert_eq!(m.status, None);
        assert_eq!(m.via_branches.len(), 2);
        let r = parse_fields_line("s0\t1\t2\t\t486\tINVITE\tc\tb").unwrap();
        assert_eq!(r.status, Some(486));
        assert!(parse_fields_line("garbage").is_err());
    }

    #[test]
    fn parses_udp_datagram_lines() {
        let d = parse_udp_line("s0\t192.0.2.2\t5000\t192.0.2.1\t30000\t80:00:01").unwrap();
        assert_eq!((d.src_port, d.dst_port), (5000, 30000));
        assert_eq!(d.payload, vec![0x80, 0x00, 0x01]);
        assert!(parse_udp_line("s0\t1.1.1.1,2.2.2.2\t1,2\t3\t4\t00").is_none());
        assert!(parse_udp_line("garbage").is_none());
    }
}
