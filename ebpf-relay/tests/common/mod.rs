//! Helpers shared by the privileged tests: root guard, frame builders and an
//! independent (from-scratch, RFC 1071) checksum verifier.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

/// Returns true if the test may run. Not root: panics with a clear message,
/// unless PORTCULLIS_SKIP_PRIVILEGED=1, in which case prints a loud SKIPPED line
/// and returns false.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var("PORTCULLIS_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        // Straight to the stderr handle: libtest captures eprintln! of passing tests.
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

/// One's complement sum of `data` (big-endian 16-bit words) added to `sum`.
pub fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

pub const ETH_LEN: usize = 14;

pub struct V4 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub frag_off: u16,
    pub options: usize,
    pub ttl: u8,
    pub zero_udp_csum: bool,
}

impl Default for V4 {
    fn default() -> Self {
        Self {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(198, 18, 1, 2),
            dst: Ipv4Addr::new(198, 18, 1, 1),
            sport: 5000,
            dport: 30000,
            proto: 17,
            frag_off: 0,
            options: 0,
            ttl: 64,
            zero_udp_csum: false,
        }
    }
}

/// Ethernet + IPv4 + UDP frame with correct checksums.
pub fn ipv4_udp(p: &V4, payload: &[u8]) -> Vec<u8> {
    let ihl = 20 + p.options;
    let udp_len = 8 + payload.len();
    let tot = ihl + udp_len;
    let mut f = Vec::with_capacity(ETH_LEN + tot);
    f.extend_from_slice(&p.dst_mac);
    f.extend_from_slice(&p.src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.push(0x40 | (ihl / 4) as u8);
    f.push(0);
    f.extend_from_slice(&(tot as u16).to_be_bytes());
    f.extend_from_slice(&0x1234u16.to_be_bytes());
    f.extend_from_slice(&p.frag_off.to_be_bytes());
    f.push(p.ttl);
    f.push(p.proto);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&p.src.octets());
    f.extend_from_slice(&p.dst.octets());
    f.extend(std::iter::repeat_n(1u8, p.options)); // NOP options
    let c = !fold(sum16(0, &f[ip_start..ip_start + ihl]));
    f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&p.sport.to_be_bytes());
    f.extend_from_slice(&p.dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    if !p.zero_udp_csum {
        let c = udp_csum_v4(&f[ip_start..], ihl);
        f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
    }
    f
}

fn udp_csum_v4(ip: &[u8], ihl: usize) -> u16 {
    let udp = &ip[ihl..];
    let mut s = sum16(0, &ip[12..20]);
    s += 17 + udp.len() as u32;
    let mut tmp = udp.to_vec();
    tmp[6] = 0;
    tmp[7] = 0;
    s = sum16(s, &tmp);
    let c = !fold(s);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

pub struct V6 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
    pub next_header: u8,
}

impl Default for V6 {
    fn default() -> Self {
        Self {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "2001:db8:1::2".parse().unwrap(),
            dst: "2001:db8:1::1".parse().unwrap(),
            sport: 5000,
            dport: 30000,
            next_header: 17,
        }
    }
}

/// Ethernet + IPv6 + UDP frame with a correct UDP checksum.
pub fn ipv6_udp(p: &V6, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = Vec::new();
    f.extend_from_slice(&p.dst_mac);
    f.extend_from_slice(&p.src_mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.push(p.next_header);
    f.push(64);
    f.extend_from_slice(&p.src.octets());
    f.extend_from_slice(&p.dst.octets());
    let udp_start = f.len();
    f.extend_from_slice(&p.sport.to_be_bytes());
    f.extend_from_slice(&p.dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let c = udp_csum_v6(&f[ip_start..]);
    f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
    f
}

fn udp_csum_v6(ip: &[u8]) -> u16 {
    let udp = &ip[40..];
    let mut s = sum16(0, &ip[8..40]);
    s += 17 + udp.len() as u32;
    let mut tmp = udp.to_vec();
    tmp[6] = 0;
    tmp[7] = 0;
    s = sum16(s, &tmp);
    let c = !fold(s);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Verifies the IPv4 header checksum of an Ethernet frame.
pub fn ipv4_header_ok(frame: &[u8]) -> bool {
    let ip = &frame[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    fold(sum16(0, &ip[..ihl])) == 0xffff
}

/// Verifies the UDP checksum (IPv4 frame); a zero checksum counts as valid
/// ("none") only when `allow_zero`.
pub fn ipv4_udp_ok(frame: &[u8], allow_zero: bool) -> bool {
    let ip = &frame[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let udp = &ip[ihl..];
    if udp[6] == 0 && udp[7] == 0 {
        return allow_zero;
    }
    let mut s = sum16(0, &ip[12..20]);
    s += 17 + udp.len() as u32;
    s = sum16(s, udp);
    fold(s) == 0xffff
}

/// Verifies the UDP checksum of an IPv6 frame (zero is invalid).
pub fn ipv6_udp_ok(frame: &[u8]) -> bool {
    let ip = &frame[ETH_LEN..];
    let udp = &ip[40..];
    if udp[6] == 0 && udp[7] == 0 {
        return false;
    }
    let mut s = sum16(0, &ip[8..40]);
    s += 17 + udp.len() as u32;
    s = sum16(s, udp);
    fold(s) == 0xffff
}

/// A 172-byte RTP packet (12-byte header + 160 bytes of G.711) with the given
/// sequence number.
pub fn rtp_payload(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(172);
    p.push(0x80);
    p.push(0); // PT 0 (PCMU)
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
    p
}
pub mod netns;
