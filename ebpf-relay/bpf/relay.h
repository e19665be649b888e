/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Portcullis XDP RTP relay: map layouts shared by the BPF program (relay.bpf.c),
 * the layout probe (layout.c, run by build.rs) and mirrored by hand in
 * ebpf-relay/src/maps.rs. Every struct is free of implicit padding so that hash
 * keys compare byte for byte and the Rust mirror is exact.
 *
 * Byte order: addresses and ports are stored in network byte order (as on the
 * wire). IPv4 addresses occupy the first 4 bytes of the 16-byte address field;
 * the remaining 12 bytes must be zero.
 */
#ifndef PORTCULLIS_RELAY_H
#define PORTCULLIS_RELAY_H

#ifndef __BPF__
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef uint16_t __be16;
#endif

#define RELAY_AF_INET 4
#define RELAY_AF_INET6 6

#define RELAY_POLICY_STRICT 0 /* drop packets from an unexpected source */
#define RELAY_POLICY_LEARN 1  /* pass them to userspace (XDP_PASS) */

/* flow_value.flags. FLOW_F_SRC_BLOCKED: the expected source is (being put) in
 * the blocklist. Userspace sets it on the flows before adding the address to
 * the blocklist map and clears it after removing it, and sets it on flows
 * installed while the address is listed, so a packet from the expected source
 * needs the blocklist lookup only when the flag is set (IPv4 path). */
#define FLOW_F_SRC_BLOCKED 1

/* Key of the flow map: the local relay socket the packet was sent to. */
struct flow_key {
	__u8 addr[16];  /* local (SBC) address, network order */
	__be16 port;    /* local UDP port, network order */
	__u8 family;    /* RELAY_AF_INET or RELAY_AF_INET6 */
	__u8 pad;       /* must be 0 */
};

/* Value of the flow map: the forwarding rule. Written by userspace only (a
 * whole-value replace); the program's per-flow counters live in the per-CPU
 * `flow_counters` array at index `slot`. */
struct flow_value {
	__u8 expected_src_addr[16];
	__be16 expected_src_port;
	__u8 policy;             /* RELAY_POLICY_* */
	__u8 flags;              /* FLOW_F_* */
	__u8 new_src_addr[16];   /* SBC egress relay socket */
	__u8 new_dst_addr[16];   /* peer */
	__be16 new_src_port;
	__be16 new_dst_port;
	__u32 egress_ifindex;    /* == ingress ifindex: XDP_TX, else XDP_REDIRECT via tx_ports */
	__u8 dst_mac[6];         /* next hop MAC (frame order: dst_mac, src_mac) */
	__u8 src_mac[6];         /* egress interface MAC */
	__u32 slot;              /* index in flow_counters (< max flows), owned by this flow */
	/* RFC 1624 checksum deltas, precomputed by userspace: folded one's
	 * complement sums of (~old + new) over the 16-bit words (as raw memory
	 * values) that the rewrite changes. A forwarded packet always carries the
	 * old values: its destination is the key and its source the expected one. */
	__u16 csum_ip;           /* IPv4 header: addresses (unused for IPv6) */
	__u16 csum_udp;          /* UDP: addresses and ports */
};

/* Per-CPU counters of one flow (`flow_counters` per-CPU array, index = slot).
 * Userspace sums packets and bytes over CPUs and takes the largest last_seen. */
struct flow_counters {
	__u64 packets;           /* forwarded packets */
	__u64 bytes;             /* forwarded bytes, IP header included */
	__u64 last_seen_ns;      /* relay clock (coarse CLOCK_MONOTONIC, 4 ms ticks) at the last forwarded packet */
};

/* Direct-mapped fast index of the flow map (`flow_index` array, index = local
 * UDP port in host order; mmap()ed and written by userspace with a sequence
 * lock). A slot holds at most one flow with that port; the `flows` hash map
 * stays the authority. The program uses a slot only if `seq` is even and the
 * same before and after it copied the slot, and `family`/`local_addr` are
 * the packet's destination; otherwise it looks the flow up in `flows` when
 * `seq` is odd (write in progress) or SLOT_F_HASH is set (other flows with
 * this port are only in `flows`). */
struct flow_slot {
	__u32 seq;               /* odd while userspace writes the slot */
	__u8 family;             /* 0: no flow in this slot */
	__u8 flags;              /* SLOT_F_* */
	__u8 pad[2];             /* must be 0 */
	__u8 local_addr[16];     /* the flow's key address (port = slot index) */
	struct flow_value v;
};

#define SLOT_F_HASH 1            /* more flows with this port are in `flows` only */

/* Key of the source blocklist. */
struct addr_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];             /* must be 0 */
};

struct blocklist_value {
	__u64 drops;             /* packets dropped from this source (atomic) */
};

/* Single entry of the `relay_config` array map. */
struct relay_config {
	__u32 blocklist_enabled; /* non-zero: consult the blocklist map */
	__u32 flags;             /* reserved, must be 0 */
};

/* Indexes of the per-CPU `relay_stats` array (one __u64 counter each). */
enum relay_stat {
	STAT_FORWARDED_TX = 0,
	STAT_FORWARDED_REDIRECT = 1,
	STAT_PASS_NOT_IP = 2,
	STAT_PASS_NOT_UDP = 3,
	STAT_PASS_FRAGMENT = 4,
	STAT_PASS_IP_OPTIONS = 5,
	STAT_PASS_UNKNOWN_PORT = 6,
	STAT_PASS_STUN_DTLS = 7,
	STAT_PASS_LEARN_MISMATCH = 8,
	STAT_PASS_MALFORMED = 9,
	STAT_DROP_STRICT_MISMATCH = 10,
	STAT_DROP_BLOCKLIST = 11,
	STAT_DROP_NO_EGRESS = 12,
	STAT_MAX = 13,
};

#define RELAY_MAX_FLOWS 65536
#define RELAY_MAX_BLOCKLIST 65536
#define RELAY_MAX_TX_PORTS 256
#define RELAY_PORT_SLOTS 65536

_Static_assert(sizeof(struct flow_key) == 20, "flow_key layout");
_Static_assert(sizeof(struct flow_value) == 80, "flow_value layout");
_Static_assert(sizeof(struct flow_counters) == 24, "flow_counters layout");
_Static_assert(sizeof(struct flow_slot) == 104, "flow_slot layout");
_Static_assert(sizeof(struct addr_key) == 20, "addr_key layout");
_Static_assert(sizeof(struct blocklist_value) == 8, "blocklist_value layout");
_Static_assert(sizeof(struct relay_config) == 8, "relay_config layout");
_Static_assert(__builtin_offsetof(struct flow_value, slot) == 72, "flow_value.slot");
_Static_assert(__builtin_offsetof(struct flow_slot, v) == 24, "flow_slot.v");
_Static_assert(__builtin_offsetof(struct flow_value, dst_mac) == 60, "flow_value.dst_mac: 4-aligned, src_mac follows");
_Static_assert(__builtin_offsetof(struct flow_value, new_dst_port) == 54, "flow_value ports adjacent");

#endif
