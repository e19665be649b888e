//! Exact Rust mirrors of the map keys and values declared in `bpf/relay.h`.
//!
//! Addresses and ports are kept in network byte order, as the BPF program sees
//! them on the wire. IPv4 addresses occupy the first 4 bytes of a 16-byte field,
//! the rest being zero. The typed API in [`crate::relay`] converts from and to
//! `std::net` types; use these raw types only to talk to the maps directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `RELAY_AF_INET` in relay.h.
pub const FAMILY_INET: u8 = 4;
/// `RELAY_AF_INET6` in relay.h.
pub const FAMILY_INET6: u8 = 6;
/// `RELAY_POLICY_STRICT`: drop packets from an unexpected source.
pub const POLICY_STRICT: u8 = 0;
/// `RELAY_POLICY_LEARN`: pass packets from an unexpected source to userspace.
pub const POLICY_LEARN: u8 = 1;
/// `RELAY_MAX_FLOWS`: default capacity of the flow map.
pub const MAX_FLOWS: u32 = 65536;
/// `RELAY_PORT_SLOTS`: entries of the `flow_index` array (one per UDP port).
pub const PORT_SLOTS: u32 = 65536;
/// `FLOW_F_SRC_BLOCKED` (`RawFlowValue::flags`): the flow's expected source
/// is in the blocklist; the program looks it up only for such flows.
pub const FLOW_F_SRC_BLOCKED: u8 = 1;
/// `SLOT_F_HASH`: more flows with this port are only in the `flows` hash map.
pub const SLOT_F_HASH: u8 = 1;

/// `struct flow_key`: the local relay socket a packet was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawFlowKey {
    /// Local address, network order.
    pub addr: [u8; 16],
    /// Local UDP port, network order (use `u16::to_be`).
    pub port: u16,
    /// [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u8,
    /// Must be zero.
    pub pad: u8,
}

/// `struct flow_value`: the forwarding rule (counters are in [`RawFlowCounters`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlowValue {
    pub expected_src_addr: [u8; 16],
    pub expected_src_port: u16,
    pub policy: u8,
    /// [`FLOW_F_SRC_BLOCKED`] or 0.
    pub flags: u8,
    pub new_src_addr: [u8; 16],
    pub new_dst_addr: [u8; 16],
    pub new_src_port: u16,
    pub new_dst_port: u16,
    pub egress_ifindex: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Index of this flow's entry in the per-CPU `flow_counters` array.
    pub slot: u32,
    /// RFC 1624 delta of the IPv4 header checksum (see [`csum_deltas`]).
    pub csum_ip: u16,
    /// RFC 1624 delta of the UDP checksum (see [`csum_deltas`]).
    pub csum_udp: u16,
}

/// `struct flow_counters`: one CPU's counters of one flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlowCounters {
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
}

/// `struct flow_slot`: one entry of the mmap()ed `flow_index` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlowSlot {
    /// Sequence lock: odd while userspace writes the slot.
    pub seq: u32,
    /// 0: empty; else [`FAMILY_INET`] or [`FAMILY_INET6`].
    pub family: u8,
    /// [`SLOT_F_HASH`] or 0.
    pub flags: u8,
    pub pad: [u8; 2],
    /// Local address of the flow in this slot (its port is the slot index).
    pub local_addr: [u8; 16],
    pub v: RawFlowValue,
}

/// Folded one's complement sum of `bytes` taken as 16-bit words in memory
/// order (RFC 1071 2(B): byte-order independent), each complemented if `neg`.
fn csum_words(mut sum: u32, bytes: &[u8], neg: bool) -> u32 {
    for c in bytes.chunks(2) {
        let w = u16::from_ne_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
        sum += u32::from(if neg { !w } else { w });
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// RFC 1624 checksum deltas of the rewrite `expected source -> local` into
/// `egress source -> peer`: (IPv4 header, UDP), as the program adds them to
/// the complemented checksums. Addresses are 4 (IPv4) or 16 (IPv6) bytes in
/// network order, ports `[source, destination]` in network order as stored
/// (`u16::to_be`).
pub fn csum_deltas(
    old_src: &[u8],
    old_dst: &[u8],
    new_src: &[u8],
    new_dst: &[u8],
    old_ports: [u16; 2],
    new_ports: [u16; 2],
) -> (u16, u16) {
    let [old_sport, old_dport] = old_ports;
    let [new_sport, new_dport] = new_ports;
    let mut ip = csum_words(0, old_src, true);
    ip = csum_words(ip, old_dst, true);
    ip = csum_words(ip, new_src, false);
    ip = csum_words(ip, new_dst, false);
    let mut udp = csum_words(ip, &old_sport.to_ne_bytes(), true);
    udp = csum_words(udp, &old_dport.to_ne_bytes(), true);
    udp = csum_words(udp, &new_sport.to_ne_bytes(), false);
    udp = csum_words(udp, &new_dport.to_ne_bytes(), false);
    (ip as u16, udp as u16)
}

/// `struct addr_key`: key of the source blocklist.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawAddrKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub pad: [u8; 3],
}

/// `struct blocklist_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawBlocklistValue {
    /// Packets dropped from this source.
    pub drops: u64,
}

/// `struct relay_config`: the single entry of the `relay_config` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawRelayConfig {
    pub blocklist_enabled: u32,
    pub flags: u32,
}

// SAFETY: plain `#[repr(C)]` data without implicit padding (checked by the
// layout tests below against the C compiler's view of relay.h); every bit
// pattern is a valid value.
unsafe impl aya::Pod for RawFlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawFlowValue {}
// SAFETY: as above.
unsafe impl aya::Pod for RawFlowCounters {}
// SAFETY: as above.
unsafe impl aya::Pod for RawAddrKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawBlocklistValue {}
// SAFETY: as above.
unsafe impl aya::Pod for RawRelayConfig {}

/// Splits an address into (family, 16-byte field).
pub fn addr_to_raw(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            (FAMILY_INET, out)
        }
        IpAddr::V6(v6) => (FAMILY_INET6, v6.octets()),
    }
}

/// Inverse of [`addr_to_raw`]; `None` for an unknown family.
pub fn addr_from_raw(family: u8, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_INET => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        FAMILY_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*addr))),
        _ => None,
    }
}

impl RawFlowKey {
    /// Key for the local relay socket `local`.
    pub fn from_socket(local: SocketAddr) -> Self {
        let (family, addr) = addr_to_raw(local.ip());
        Self {
            addr,
            port: local.port().to_be(),
            family,
            pad: 0,
        }
    }

    /// The local relay socket, or `None` if the family is unknown.
    pub fn to_socket(&self) -> Option<SocketAddr> {
        addr_from_raw(self.family, &self.addr)
            .map(|ip| SocketAddr::new(ip, u16::from_be(self.port)))
    }
}

impl RawAddrKey {
    /// Blocklist key for `ip`.
    pub fn from_ip(ip: IpAddr) -> Self {
        let (family, addr) = addr_to_raw(ip);
        Self {
            addr,
            family,
            pad: [0; 3],
        }
    }

    /// The address, or `None` if the family is unknown.
    pub fn to_ip(&self) -> Option<IpAddr> {
        addr_from_raw(self.family, &self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[allow(non_upper_case_globals)]
    mod c {
        include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));
    }

    #[test]
    fn flow_key_layout_matches_c() {
        assert_eq!(size_of::<RawFlowKey>(), c::SIZE_flow_key);
        assert_eq!(size_of::<RawFlowKey>(), 20);
        assert_eq!(offset_of!(RawFlowKey, addr), c::OFF_flow_key_addr);
        assert_eq!(offset_of!(RawFlowKey, port), c::OFF_flow_key_port);
        assert_eq!(offset_of!(RawFlowKey, family), c::OFF_flow_key_family);
        assert_eq!(offset_of!(RawFlowKey, pad), c::OFF_flow_key_pad);
        assert!(align_of::<RawFlowKey>() <= 8);
    }

    #[test]
    fn flow_value_layout_matches_c() {
        assert_eq!(size_of::<RawFlowValue>(), c::SIZE_flow_value);
        assert_eq!(size_of::<RawFlowValue>(), 80);
        assert_eq!(
            offset_of!(RawFlowValue, expected_src_addr),
            c::OFF_flow_value_expected_src_addr
        );
        assert_eq!(
            offset_of!(RawFlowValue, expected_src_port),
            c::OFF_flow_value_expected_src_port
        );
        assert_eq!(offset_of!(RawFlowValue, policy), c::OFF_flow_value_policy);
        assert_eq!(offset_of!(RawFlowValue, flags), c::OFF_flow_value_flags);
        assert_eq!(
            offset_of!(RawFlowValue, new_src_addr),
            c::OFF_flow_value_new_src_addr
        );
        assert_eq!(
            offset_of!(RawFlowValue, new_dst_addr),
            c::OFF_flow_value_new_dst_addr
        );
        assert_eq!(
            offset_of!(RawFlowValue, new_src_port),
            c::OFF_flow_value_new_src_port
        );
        assert_eq!(
            offset_of!(RawFlowValue, new_dst_port),
            c::OFF_flow_value_new_dst_port
        );
        assert_eq!(
            offset_of!(RawFlowValue, egress_ifindex),
            c::OFF_flow_value_egress_ifindex
        );
        assert_eq!(offset_of!(RawFlowValue, src_mac), c::OFF_flow_value_src_mac);
        assert_eq!(offset_of!(RawFlowValue, dst_mac), c::OFF_flow_value_dst_mac);
        assert_eq!(offset_of!(RawFlowValue, slot), c::OFF_flow_value_slot);
        assert_eq!(offset_of!(RawFlowValue, csum_ip), c::OFF_flow_value_csum_ip);
        assert_eq!(
            offset_of!(RawFlowValue, csum_udp),
            c::OFF_flow_value_csum_udp
        );
    }

    #[test]
    fn flow_counters_and_slot_layout_match_c() {
        assert_eq!(size_of::<RawFlowCounters>(), c::SIZE_flow_counters);
        assert_eq!(size_of::<RawFlowCounters>(), 24);
        assert_eq!(
            offset_of!(RawFlowCounters, packets),
            c::OFF_flow_counters_packets
        );
        assert_eq!(
            offset_of!(RawFlowCounters, bytes),
            c::OFF_flow_counters_bytes
        );
        assert_eq!(
            offset_of!(RawFlowCounters, last_seen_ns),
            c::OFF_flow_counters_last_seen_ns
        );
        assert_eq!(size_of::<RawFlowSlot>(), c::SIZE_flow_slot);
        assert_eq!(size_of::<RawFlowSlot>(), 104);
        assert_eq!(offset_of!(RawFlowSlot, seq), c::OFF_flow_slot_seq);
        assert_eq!(offset_of!(RawFlowSlot, family), c::OFF_flow_slot_family);
        assert_eq!(offset_of!(RawFlowSlot, flags), c::OFF_flow_slot_flags);
        assert_eq!(offset_of!(RawFlowSlot, pad), c::OFF_flow_slot_pad);
        assert_eq!(
            offset_of!(RawFlowSlot, local_addr),
            c::OFF_flow_slot_local_addr
        );
        assert_eq!(offset_of!(RawFlowSlot, v), c::OFF_flow_slot_v);
        // The mmap()ed array places entries at multiples of the value size
        // rounded up to 8.
        assert_eq!(size_of::<RawFlowSlot>() % 8, 0);
    }

    #[test]
    fn csum_deltas_match_a_checksum_from_scratch() {
        // IPv4 header of the benchmark frame, checksum computed from scratch
        // before and after the rewrite, against the incremental update.
        fn full(words: &[u8]) -> u16 {
            !(csum_words(0, words, false) as u16)
        }
        let mut h = [
            0x45u8, 0xb8, 0, 200, 0, 1, 0x40, 0, 64, 17, 0, 0, 198, 18, 1, 2, 198, 18, 1, 1,
        ];
        let c = full(&h);
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        let (dip, _) = csum_deltas(
            &h[12..16],
            &h[16..20],
            &[198, 18, 2, 1],
            &[198, 18, 2, 2],
            [5000u16.to_be(), 30000u16.to_be()],
            [30002u16.to_be(), 6000u16.to_be()],
        );
        let old = u16::from_ne_bytes([h[10], h[11]]);
        let sum = u32::from(!old) + u32::from(dip);
        let inc = !(csum_words(sum, &[], false) as u16);
        h[12..16].copy_from_slice(&[198, 18, 2, 1]);
        h[16..20].copy_from_slice(&[198, 18, 2, 2]);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, full(&h));
    }

    #[test]
    fn addr_key_and_small_types_layout_match_c() {
        assert_eq!(size_of::<RawAddrKey>(), c::SIZE_addr_key);
        assert_eq!(offset_of!(RawAddrKey, addr), c::OFF_addr_key_addr);
        assert_eq!(offset_of!(RawAddrKey, family), c::OFF_addr_key_family);
        assert_eq!(offset_of!(RawAddrKey, pad), c::OFF_addr_key_pad);
        assert_eq!(size_of::<RawBlocklistValue>(), c::SIZE_blocklist_value);
        assert_eq!(
            offset_of!(RawBlocklistValue, drops),
            c::OFF_blocklist_value_drops
        );
        assert_eq!(size_of::<RawRelayConfig>(), c::SIZE_relay_config);
        assert_eq!(
            offset_of!(RawRelayConfig, blocklist_enabled),
            c::OFF_relay_config_blocklist_enabled
        );
        assert_eq!(offset_of!(RawRelayConfig, flags), c::OFF_relay_config_flags);
    }

    #[test]
    fn constants_match_c() {
        assert_eq!(crate::stats::Outcome::ALL.len() as u32, c::STAT_MAX);
        assert_eq!(MAX_FLOWS, c::MAX_FLOWS);
        assert_eq!(PORT_SLOTS, c::PORT_SLOTS);
        assert_eq!(SLOT_F_HASH, c::SLOT_F_HASH);
        assert_eq!(FLOW_F_SRC_BLOCKED, c::FLOW_F_SRC_BLOCKED);
        assert_eq!(POLICY_STRICT, c::POLICY_STRICT);
        assert_eq!(POLICY_LEARN, c::POLICY_LEARN);
    }

    #[test]
    fn keys_round_trip_and_are_network_order() {
        let sa: SocketAddr = "198.18.1.1:30000".parse().unwrap();
        let k = RawFlowKey::from_socket(sa);
        assert_eq!(k.family, FAMILY_INET);
        assert_eq!(&k.addr[..4], &[198, 18, 1, 1]);
        assert!(k.addr[4..].iter().all(|b| *b == 0));
        // 30000 = 0x7530, stored big-endian in memory.
        assert_eq!(k.port.to_ne_bytes(), [0x75, 0x30]);
        assert_eq!(k.to_socket(), Some(sa));

        let sa6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let k6 = RawFlowKey::from_socket(sa6);
        assert_eq!(k6.family, FAMILY_INET6);
        assert_eq!(k6.to_socket(), Some(sa6));

        let bad = RawFlowKey {
            family: 9,
            ..RawFlowKey::default()
        };
        assert_eq!(bad.to_socket(), None);

        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(RawAddrKey::from_ip(ip).to_ip(), Some(ip));
    }
}
