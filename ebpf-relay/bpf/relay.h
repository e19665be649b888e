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

/* Key of the flow map: the local relay socket the packet was sent to. */
struct flow_key {
	__u8 addr[16];  /* local (SBC) address, network order */
	__be16 port;    /* local UDP port, network order */
	__u8 family;    /* RELAY_AF_INET or RELAY_AF_INET6 */
	__u8 pad;       /* must be 0 */
};

/* Value of the flow map. The counters at the end are updated by the program. */
struct flow_value {
	__u8 expected_src_addr[16];
	__be16 expected_src_port;
	__u8 policy;             /* RELAY_POLICY_* */
	__u8 flags;              /* reserved, must be 0 */
	__u8 new_src_addr[16];   /* SBC egress relay socket */
	__u8 new_dst_addr[16];   /* peer */
	__be16 new_src_port;
	__be16 new_dst_port;
	__u32 egress_ifindex;    /* == ingress ifindex: XDP_TX, else XDP_REDIRECT via tx_ports */
	__u8 src_mac[6];         /* egress interface MAC */
	__u8 dst_mac[6];         /* next hop MAC */
	__u64 packets;           /* forwarded packets (atomic) */
	__u64 bytes;             /* forwarded bytes, IP header included (atomic) */
	__u64 last_seen_ns;      /* bpf_ktime_get_ns() of the last forwarded packet */
};

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

_Static_assert(sizeof(struct flow_key) == 20, "flow_key layout");
_Static_assert(sizeof(struct flow_value) == 96, "flow_value layout");
_Static_assert(sizeof(struct addr_key) == 20, "addr_key layout");
_Static_assert(sizeof(struct blocklist_value) == 8, "blocklist_value layout");
_Static_assert(sizeof(struct relay_config) == 8, "relay_config layout");
_Static_assert(__builtin_offsetof(struct flow_value, packets) == 72, "flow_value.packets");

#endif
