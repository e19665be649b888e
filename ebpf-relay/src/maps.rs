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

/// `struct flow_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlowValue {
    pub expected_src_addr: [u8; 16],
    pub expected_src_port: u16,
    pub policy: u8,
    pub flags: u8,
    pub new_src_addr: [u8; 16],
    pub new_dst_addr: [u8; 16],
    pub new_src_port: u16,
    pub new_dst_port: u16,
    pub egress_ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
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
        assert_eq!(size_of::<RawFlowValue>(), 96);
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
        assert_eq!(offset_of!(RawFlowValue, packets), c::OFF_flow_value_packets);
        assert_eq!(offset_of!(RawFlowValue, bytes), c::OFF_flow_value_bytes);
        assert_eq!(
            offset_of!(RawFlowValue, last_seen_ns),
            c::OFF_flow_value_last_seen_ns
        );
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
