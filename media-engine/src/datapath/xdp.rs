//! XDP offload of latched flows.
//!
//! The userspace relay always binds the relay sockets and owns the latching
//! decision: while a flow direction is not final it has no XDP map entry, so
//! the XDP program passes its packets to the stack (`pass_unknown_port`) and
//! the userspace relay handles them. Once both legs of a direction are
//! latched, the direction is installed in the XDP map as **strict** (expected
//! source = the latched one): from then on the kernel forwards it and drops
//! any other source. Removal or an update that resets latching takes the
//! entry out of the map first (under the worker's lock).
//!
//! Egress resolution (IPv4): route from `/proc/thread-self/net/route`
//! (longest prefix), next-hop MAC from `/proc/thread-self/net/arp` (complete
//! entries only), egress MAC by SIOCGIFHWADDR; all in the network namespace of
//! the thread that started the datapath (workers inherit it). A direction whose
//! next hop is not resolved yet (no ARP entry: the userspace relay's own sends
//! create one) stays in userspace and is retried every tick. IPv6: route from
//! `/proc/thread-self/net/ipv6_route`, neighbour from an rtnetlink
//! RTM_GETNEIGH dump.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use ebpf_relay::{FlowCounters, FlowSpec, SourcePolicy, XdpRelay};
use tracing::{debug, info, warn};

use super::table::{FlowTable, PairId, TableEvent};

/// Egress of one direction as the XDP map wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// The XDP map entry for a final direction (sans-IO conversion, tested):
/// expected source = latched source, strict; rewrite source = egress relay
/// socket, destination = the other party's latched address.
pub fn flow_spec(
    expected_source: SocketAddr,
    egress_source: SocketAddr,
    peer: SocketAddr,
    egress: Egress,
) -> FlowSpec {
    FlowSpec {
        expected_source,
        policy: SourcePolicy::Strict,
        egress_source,
        peer,
        egress_ifindex: egress.ifindex,
        src_mac: egress.src_mac,
        dst_mac: egress.dst_mac,
    }
}

/// Adds the XDP-side counters of a direction to the userspace ones (same
/// meaning: packets, bytes from the IP header, CLOCK_MONOTONIC last seen).
pub fn merge_counters(a: FlowCounters, b: FlowCounters) -> FlowCounters {
    FlowCounters {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        last_seen_ns: a.last_seen_ns.max(b.last_seen_ns),
    }
}

pub(crate) struct XdpInner {
    pub relay: XdpRelay,
    /// Directions (keyed by ingress local socket) to (re)consider.
    pending: BTreeSet<(PairId, SocketAddr)>,
    /// Installed directions and their spec.
    installed: HashMap<SocketAddr, (PairId, FlowSpec)>,
    /// Counters of XDP entries removed (update) while the pair lives on.
    folded: HashMap<SocketAddr, FlowCounters>,
    warned: HashSet<SocketAddr>,
    attached: Vec<u32>,
}

/// Shared between the control API and the workers' hook. Lock order: a
/// worker's state first, then this.
pub(crate) struct XdpShared {
    inner: Mutex<XdpInner>,
}

impl XdpShared {
    pub fn new(relay: XdpRelay) -> Self {
        let attached = relay.attachments().iter().map(|a| a.1).collect();
        Self {
            inner: Mutex::new(XdpInner {
                relay,
                pending: BTreeSet::new(),
                installed: HashMap::new(),
                folded: HashMap::new(),
                warned: HashSet::new(),
                attached,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, XdpInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Worker hook: installs directions that became final.
    pub fn on_events(&self, table: &FlowTable, events: &[TableEvent]) {
        let mut x = self.lock();
        for e in events {
            let TableEvent::Latched { pair, local } = *e;
            x.pending.insert((pair, local));
            if let Some((_, other)) = table.leg_of(local) {
                x.pending.insert((pair, other));
            }
            // The non-muxed side's RTCP direction goes to this (muxed) leg's party.
            if let Some(via) = table.rtcp_via(local) {
                x.pending.insert((pair, via));
            }
        }
        if x.pending.is_empty() {
            return;
        }
        let pending: Vec<(PairId, SocketAddr)> = x.pending.iter().copied().collect();
        for (pair, local) in pending {
            match table.leg_of(local) {
                Some((p, _)) if p == pair => {}
                _ => {
                    x.pending.remove(&(pair, local));
                    continue;
                }
            }
            let Some((src, egress_local, dest)) = table.final_direction(local) else {
                // Not final (yet): stays in userspace; a later event retries.
                x.pending.remove(&(pair, local));
                continue;
            };
            match x.install(pair, local, src, egress_local, dest) {
                Ok(()) => {
                    x.pending.remove(&(pair, local));
                }
                Err(reason) => {
                    if x.warned.insert(local) {
                        debug!(%local, %dest, reason, "direction stays in userspace for now");
                    }
                }
            }
        }
    }

    /// Takes the directions of `locals` out of XDP (remove/update). With
    /// `keep` (the pair lives on) their counters are folded for later reads.
    /// Returns each direction's XDP counters (folded + the entry's last state).
    pub fn uninstall(&self, locals: &[SocketAddr], keep: bool) -> Vec<FlowCounters> {
        let mut x = self.lock();
        let mut out = Vec::with_capacity(locals.len());
        for local in locals {
            x.pending.retain(|(_, l)| l != local);
            x.warned.remove(local);
            let mut total = x.folded.remove(local).unwrap_or_default();
            if x.installed.remove(local).is_some() {
                match x.relay.remove_flow(*local) {
                    Ok(Some(last)) => total = merge_counters(total, last.counters),
                    Ok(None) => {}
                    Err(e) => warn!(%local, error = %e, "removing XDP flow failed"),
                }
            }
            if keep {
                x.folded.insert(*local, total);
            }
            out.push(total);
        }
        out
    }

    /// XDP counters (live entry + folded) of the direction entering at `local`.
    pub fn counters(&self, local: SocketAddr) -> FlowCounters {
        let x = self.lock();
        let mut c = x.folded.get(&local).copied().unwrap_or_default();
        if x.installed.contains_key(&local) {
            match x.relay.flow_counters(local) {
                Ok(Some(live)) => c = merge_counters(c, live),
                Ok(None) => {}
                Err(e) => debug!(%local, error = %e, "reading XDP counters"),
            }
        }
        c
    }

    /// Whether the direction entering at `local` is in the XDP map.
    pub fn is_installed(&self, local: SocketAddr) -> bool {
        self.lock().installed.contains_key(&local)
    }
}

impl XdpInner {
    fn install(
        &mut self,
        pair: PairId,
        local: SocketAddr,
        src: SocketAddr,
        egress_local: SocketAddr,
        dest: SocketAddr,
    ) -> Result<(), String> {
        let egress = resolve_egress(dest.ip())?;
        if !self.attached.contains(&egress.ifindex) {
            return Err(format!(
                "egress ifindex {} is not an XDP-attached interface",
                egress.ifindex
            ));
        }
        let spec = flow_spec(src, egress_local, dest, egress);
        match self.installed.get(&local) {
            Some((_, old)) if *old == spec => return Ok(()),
            Some(_) => self.relay.update_flow(local, &spec),
            None => self.relay.insert_flow(local, &spec),
        }
        .map_err(|e| e.to_string())?;
        self.installed.insert(local, (pair, spec));
        info!(%local, source = %src, peer = %dest, ifindex = egress.ifindex, "latched flow installed in XDP (strict)");
        Ok(())
    }
}

/// Resolves egress interface and MACs toward `dest` in the calling thread's
/// network namespace.
pub fn resolve_egress(dest: IpAddr) -> Result<Egress, String> {
    let (ifname, dst_mac) = match dest {
        IpAddr::V4(d) => {
            let routes = std::fs::read_to_string("/proc/thread-self/net/route")
                .map_err(|e| format!("reading routes: {e}"))?;
            let (ifname, gw) = route_lookup(&routes, d).ok_or("no route")?;
            let next_hop = if gw.is_unspecified() { d } else { gw };
            let arp = std::fs::read_to_string("/proc/thread-self/net/arp")
                .map_err(|e| format!("reading ARP table: {e}"))?;
            let mac = arp_lookup(&arp, next_hop, &ifname).ok_or("next hop not in the ARP table")?;
            (ifname, mac)
        }
        IpAddr::V6(d) => {
            let routes = std::fs::read_to_string("/proc/thread-self/net/ipv6_route")
                .map_err(|e| format!("reading IPv6 routes: {e}"))?;
            let (ifname, gw) = route6_lookup(&routes, d).ok_or("no IPv6 route")?;
            let next_hop = if gw.is_unspecified() { d } else { gw };
            let mac = neigh6_lookup(next_hop, ifindex(&ifname)?)?
                .ok_or("next hop not in the neighbour table")?;
            (ifname, mac)
        }
    };
    let ifindex = ifindex(&ifname)?;
    let src_mac = hwaddr(&ifname)?;
    Ok(Egress {
        ifindex,
        src_mac,
        dst_mac,
    })
}

/// Longest-prefix match in /proc/net/ipv6_route text, skipping local and
/// reject routes: (interface, gateway).
pub fn route6_lookup(text: &str, dest: Ipv6Addr) -> Option<(String, Ipv6Addr)> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    const RTF_LOCAL: u32 = 0x8000_0000;
    let hex6 = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
    let mut best: Option<(u32, String, Ipv6Addr)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(net), Some(gw)) = (hex6(f[0]), hex6(f[4])) else {
            continue;
        };
        let Ok(plen) = u32::from_str_radix(f[1], 16) else {
            continue;
        };
        let flags = u32::from_str_radix(f[8], 16).unwrap_or(0);
        if flags & RTF_UP == 0 || flags & (RTF_REJECT | RTF_LOCAL) != 0 || plen > 128 {
            continue;
        }
        let mask = if plen == 0 {
            0
        } else {
            u128::MAX << (128 - plen)
        };
        if u128::from(dest) & mask != u128::from(net) & mask {
            continue;
        }
        if best.as_ref().is_none_or(|b| plen > b.0) {
            best = Some((plen, f[9].to_string(), gw));
        }
    }
    best.map(|b| (b.1, b.2))
}

/// Link-layer address of IPv6 neighbour `ip` on `ifindex` (RTM_GETNEIGH dump
/// over rtnetlink); `None` if absent, incomplete or failed.
fn neigh6_lookup(ip: Ipv6Addr, ifindex: u32) -> Result<Option<[u8; 6]>, String> {
    const RTM_NEWNEIGH: u16 = 28;
    const RTM_GETNEIGH: u16 = 30;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NDA_DST: u16 = 1;
    const NDA_LLADDR: u16 = 2;
    const NUD_INCOMPLETE: u16 = 0x01;
    const NUD_FAILED: u16 = 0x20;
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(format!(
            "netlink socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just returned by the kernel and is owned here.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; 28];
    req[0..4].copy_from_slice(&28u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_INET6 as u8;
    // SAFETY: valid fd and buffer.
    let rc = unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if rc < 0 {
        return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut found = None;
    loop {
        // SAFETY: valid fd and writable buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
        }
        let data = &buf[..n as usize];
        let mut off = 0usize;
        while off + 16 <= data.len() {
            let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                as usize;
            let ty = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
            if len < 16 || off + len > data.len() {
                return Err("malformed netlink message".into());
            }
            match ty {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => return Err("netlink error reply".into()),
                RTM_NEWNEIGH if len >= 28 => {
                    let m = &data[off + 16..off + len];
                    let idx = i32::from_ne_bytes([m[4], m[5], m[6], m[7]]);
                    let state = u16::from_ne_bytes([m[8], m[9]]);
                    let (mut dst, mut ll) = (None, None);
                    let mut a = 12usize;
                    while a + 4 <= m.len() {
                        let alen = usize::from(u16::from_ne_bytes([m[a], m[a + 1]]));
                        let aty = u16::from_ne_bytes([m[a + 2], m[a + 3]]);
                        if alen < 4 || a + alen > m.len() {
                            break;
                        }
                        let v = &m[a + 4..a + alen];
                        match aty {
                            NDA_DST if v.len() == 16 => {
                                let mut o = [0u8; 16];
                                o.copy_from_slice(v);
                                dst = Some(Ipv6Addr::from(o));
                            }
                            NDA_LLADDR if v.len() == 6 => {
                                let mut o = [0u8; 6];
                                o.copy_from_slice(v);
                                ll = Some(o);
                            }
                            _ => {}
                        }
                        a += (alen + 3) & !3;
                    }
                    if u32::try_from(idx).ok() == Some(ifindex)
                        && dst == Some(ip)
                        && state != 0
                        && state & (NUD_INCOMPLETE | NUD_FAILED) == 0
                    {
                        found = ll.filter(|m| *m != [0; 6]).or(found);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

fn hex_ipv4_le(s: &str) -> Option<Ipv4Addr> {
    u32::from_str_radix(s, 16)
        .ok()
        .map(|v| Ipv4Addr::from(v.to_le_bytes()))
}

/// Longest-prefix match in /proc/net/route text: (interface, gateway).
pub fn route_lookup(text: &str, dest: Ipv4Addr) -> Option<(String, Ipv4Addr)> {
    let mut best: Option<(u32, String, Ipv4Addr)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(net), Some(gw), Some(mask)) =
            (hex_ipv4_le(f[1]), hex_ipv4_le(f[2]), hex_ipv4_le(f[7]))
        else {
            continue;
        };
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        if flags & 1 == 0 {
            continue; // not RTF_UP
        }
        let (m, n, d) = (u32::from(mask), u32::from(net), u32::from(dest));
        if d & m != n & m {
            continue;
        }
        let len = m.count_ones();
        if best.as_ref().is_none_or(|b| len > b.0) {
            best = Some((len, f[0].to_string(), gw));
        }
    }
    best.map(|b| (b.1, b.2))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Complete (ATF_COM) entry for `ip` on `dev` in /proc/net/arp text.
pub fn arp_lookup(text: &str, ip: Ipv4Addr, dev: &str) -> Option<[u8; 6]> {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != dev || f[0].parse::<Ipv4Addr>().ok() != Some(ip) {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & 0x2 == 0 {
            continue;
        }
        let mac = parse_mac(f[3])?;
        if mac != [0; 6] {
            return Some(mac);
        }
    }
    None
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(format!("unknown interface {name}"));
    }
    Ok(idx)
}

fn hwaddr(name: &str) -> Result<[u8; 6], String> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name too long: {name}"));
    }
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: zeroed ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: valid fd and ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(format!("SIOCGIFHWADDR {name}: {err}"));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// Shared handle type used by the datapath.
pub(crate) type Shared = Arc<XdpShared>;

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
sbc1\t000212C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn route_longest_prefix() {
        assert_eq!(
            route_lookup(ROUTE, "198.18.2.2".parse().unwrap()),
            Some(("sbc1".into(), Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            route_lookup(ROUTE, "192.168.1.7".parse().unwrap()),
            Some(("eth0".into(), Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            route_lookup(ROUTE, "8.8.8.8".parse().unwrap()),
            Some(("eth0".into(), "192.168.1.1".parse().unwrap()))
        );
        assert_eq!(route_lookup("hdr\n", "8.8.8.8".parse().unwrap()), None);
    }

    #[test]
    fn route6_longest_prefix_skips_local() {
        let t = "20010db8000200000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     sbc1\n\
20010db8000200000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001     sbc1\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000100000000000000000009 00000400 00000002 00000000 00000003     sbc0\n";
        assert_eq!(
            route6_lookup(t, "2001:db8:2::2".parse().unwrap()),
            Some(("sbc1".into(), Ipv6Addr::UNSPECIFIED))
        );
        // The local /128 of our own address is skipped; its /64 matches.
        assert_eq!(
            route6_lookup(t, "2001:db8:2::1".parse().unwrap()).map(|r| r.0),
            Some("sbc1".into())
        );
        assert_eq!(
            route6_lookup(t, "2001:db8:9::1".parse().unwrap()),
            Some(("sbc0".into(), "2001:db8:1::9".parse().unwrap()))
        );
    }

    #[test]
    fn arp_complete_entries_only() {
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
198.18.2.2       0x1         0x6         02:00:00:00:c0:00     *        sbc1\n\
198.18.2.3       0x1         0x0         00:00:00:00:00:00     *        sbc1\n\
198.18.1.2       0x1         0x2         02:00:00:00:a0:00     *        sbc0\n";
        assert_eq!(
            arp_lookup(arp, "198.18.2.2".parse().unwrap(), "sbc1"),
            Some([2, 0, 0, 0, 0xc0, 0])
        );
        assert_eq!(arp_lookup(arp, "198.18.2.3".parse().unwrap(), "sbc1"), None);
        assert_eq!(arp_lookup(arp, "198.18.1.2".parse().unwrap(), "sbc1"), None);
        assert_eq!(
            arp_lookup(arp, "198.18.1.2".parse().unwrap(), "sbc0"),
            Some([2, 0, 0, 0, 0xa0, 0])
        );
    }

    #[test]
    fn flow_spec_is_strict_with_latched_addresses() {
        let e = Egress {
            ifindex: 7,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
        };
        let s = flow_spec(
            "203.0.113.5:41000".parse().unwrap(),
            "198.18.2.1:30002".parse().unwrap(),
            "198.18.2.2:6000".parse().unwrap(),
            e,
        );
        assert_eq!(s.policy, SourcePolicy::Strict);
        assert_eq!(
            s.expected_source,
            "203.0.113.5:41000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            s.egress_source,
            "198.18.2.1:30002".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(s.peer, "198.18.2.2:6000".parse::<SocketAddr>().unwrap());
        assert_eq!(
            (s.egress_ifindex, s.src_mac, s.dst_mac),
            (7, e.src_mac, e.dst_mac)
        );
        let m = merge_counters(
            FlowCounters {
                packets: 2,
                bytes: 400,
                last_seen_ns: 9,
            },
            FlowCounters {
                packets: 3,
                bytes: 600,
                last_seen_ns: 5,
            },
        );
        assert_eq!((m.packets, m.bytes, m.last_seen_ns), (5, 1000, 9));
    }
}
