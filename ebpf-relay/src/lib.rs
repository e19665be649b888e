//! Portcullis in-kernel RTP relay (XDP).
//!
//! The XDP program (`bpf/relay.bpf.c`, compiled by build.rs with
//! `clang -O2 -g -target bpf`) relays plain RTP/RTCP between relay sockets the
//! media engine installs as flows, and passes everything else to the kernel
//! stack. This crate embeds the object, mirrors its map layouts
//! ([`maps`]), and loads, attaches and drives it with aya ([`XdpRelay`]).
//!
//! What the program does per packet (see `bpf/relay.bpf.c`):
//! - blocklisted source address (when the blocklist is in use): XDP_DROP;
//! - not IPv4/IPv6, not UDP, IPv4 fragment or options, IPv6 fragment or
//!   extension header, malformed: XDP_PASS;
//! - UDP to a local address/port without a flow: XDP_PASS;
//! - first payload byte 0-3 (STUN) or 20-63 (DTLS) per RFC 7983: XDP_PASS;
//! - source other than the flow's expected one: XDP_DROP (strict) or
//!   XDP_PASS (learn);
//! - otherwise rewrite MACs, addresses and ports, update the IPv4 header and
//!   UDP checksums incrementally (RFC 1624), count, and XDP_TX (egress ==
//!   ingress interface) or XDP_REDIRECT through the `tx_ports` devmap.

mod index;
pub mod maps;
mod netlink;
pub mod relay;
pub mod stats;

pub use netlink::XdpAttachment;
pub use relay::{
    action, xdp_attachment, AttachMode, AttachedMode, FlowCounters, FlowEntry, FlowSpec,
    PassProgram, Program, RelayError, RelayOptions, SourcePolicy, TestRunOutput, XdpRelay,
};
pub use stats::{Outcome, RelayStats};

/// The compiled XDP object (BTF maps, programs `portcullis_xdp`,
/// `portcullis_pass`, `portcullis_bnd`).
pub static RELAY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));
