// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Portcullis XDP RTP relay.
 *
 * For every UDP packet addressed to a local relay socket that userspace has
 * installed in `flows`, check its source, rewrite Ethernet/IP/UDP addresses to
 * "SBC egress relay socket -> peer", fix the IPv4 header and UDP checksums
 * incrementally (RFC 1624) and send it with XDP_TX (same interface) or
 * XDP_REDIRECT through the `tx_ports` devmap. Everything the relay does not own
 * goes to the kernel stack with XDP_PASS.
 *
 * The flow is found through the port-indexed `flow_index` array (inlined
 * lookup, sequence-locked slots written by userspace) and only falls back to
 * the `flows` hash map when a slot is being written or its port is shared;
 * counters are per CPU; no helper call on the XDP_TX path. See README.md.
 *
 * Layouts of the map keys/values are in relay.h (mirrored in src/maps.rs).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "relay.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RELAY_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RELAY_PORT_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct flow_slot);
} flow_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RELAY_MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct flow_counters);
} flow_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RELAY_MAX_BLOCKLIST);
	__type(key, struct addr_key);
	__type(value, struct blocklist_value);
} blocklist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} relay_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct relay_config);
} relay_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, RELAY_MAX_TX_PORTS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

/* Coarse clock for the flows' last_seen_ns, without a helper call per packet:
 * a BPF timer (armed by `portcullis_clk`, run once with BPF_PROG_TEST_RUN by
 * the loader) stores bpf_ktime_get_coarse_ns() every RELAY_CLOCK_TICK_NS. On
 * kernels with return-thunk mitigations (here: SRSO safe RET) a helper call
 * costs ~20 ns, two thirds of the whole relay path. */
struct relay_clock {
	__u64 now_ns;
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct relay_clock);
} relay_clock SEC(".maps");

#define RELAY_CLOCK_TICK_NS (4 * 1000 * 1000ULL)
#define CLOCK_MONOTONIC 1

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NEXTHDR_FRAGMENT 44

#define barrier() asm volatile("" ::: "memory")
#define READ_ONCE_U32(x) (*(const volatile __u32 *)&(x))

/* Array lookups (relay_stats, flow_counters, flow_index, relay_config) are
 * inlined by the verifier; only `flows` and `blocklist` are hash lookups. */
static __always_inline int count(__u32 stat, int action)
{
	__u64 *c = bpf_map_lookup_elem(&relay_stats, &stat);

	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
	return action;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline int blocklist_on(void)
{
	__u32 zero = 0;
	struct relay_config *cfg = bpf_map_lookup_elem(&relay_config, &zero);

	return cfg && cfg->blocklist_enabled;
}

/* Looks the source up in the blocklist (the caller checked blocklist_on()). */
static __always_inline int blocked_lookup(struct addr_key *bk)
{
	struct blocklist_value *bv = bpf_map_lookup_elem(&blocklist, bk);

	if (!bv)
		return 0;
	__sync_fetch_and_add(&bv->drops, 1);
	return 1;
}

static __always_inline int blocked4(int on, __u32 saddr)
{
	struct addr_key bk = {};

	if (!on)
		return 0;
	bk.family = RELAY_AF_INET;
	*(__u32 *)bk.addr = saddr;
	return blocked_lookup(&bk);
}

/* An IPv4 packet not forwarded for reason `stat`: dropped instead if its
 * source is blocklisted (the blocklist comes first, as for every packet). */
static __always_inline int not_relayed4(int on, __u32 saddr, __u32 stat, int action)
{
	if (blocked4(on, saddr))
		return count(STAT_DROP_BLOCKLIST, XDP_DROP);
	return count(stat, action);
}

static __always_inline int blocked6(const struct in6_addr *saddr)
{
	struct addr_key bk = {};

	if (!blocklist_on())
		return 0;
	bk.family = RELAY_AF_INET6;
	__builtin_memcpy(bk.addr, saddr, 16);
	return blocked_lookup(&bk);
}

/* RFC 7983: 0..3 STUN, 20..63 DTLS. Those stay with userspace (ICE consent,
 * DTLS handshakes) even on a relayed port. */
static __always_inline int is_stun_or_dtls(__u8 b)
{
	return b <= 3 || (b >= 20 && b <= 63);
}

static __always_inline __u64 clock_now(void)
{
	__u32 zero = 0;
	struct relay_clock *c = bpf_map_lookup_elem(&relay_clock, &zero);

	return c ? c->now_ns : 0;
}

/* Per-CPU flow counters: no atomics, no contention; summed by userspace. */
static __always_inline void count_flow(__u32 slot, __u64 ip_bytes)
{
	struct flow_counters *c = bpf_map_lookup_elem(&flow_counters, &slot);

	if (c) {
		c->packets += 1;
		c->bytes += ip_bytes;
		c->last_seen_ns = clock_now();
	}
}

/* Egress decision and MAC rewrite. `macs`: dst MAC then src MAC (frame
 * order), as three 32-bit words. */
static __always_inline int forward(struct xdp_md *ctx, void *data, __u32 ifindex,
				   const __u32 *macs, __u32 slot, __u64 ip_bytes)
{
	__u32 stat = STAT_FORWARDED_TX;
	__u32 *eth = data;
	int act = XDP_TX;

	if (ifindex != ctx->ingress_ifindex) {
		if (bpf_redirect_map(&tx_ports, ifindex, 0) != XDP_REDIRECT)
			return count(STAT_DROP_NO_EGRESS, XDP_DROP);
		stat = STAT_FORWARDED_REDIRECT;
		act = XDP_REDIRECT;
	}
	eth[0] = macs[0];
	eth[1] = macs[1];
	eth[2] = macs[2];
	count_flow(slot, ip_bytes);
	return count(stat, act);
}

#define RETRY_HASH (-1)

/* The slot `s` (NULL: `v` is a hash value, replaced whole by userspace, no
 * check needed) did not change since its sequence number read `seq`. */
static __always_inline int slot_stable(struct flow_slot *s, __u32 seq)
{
	barrier();
	return !s || READ_ONCE_U32(s->seq) == seq;
}

/* Everything after the flow lookup for IPv4: decide, rewrite, forward. Reads
 * the rule straight from `v`; when `v` is in slot `s`, every decision is
 * taken only after the slot is seen unchanged, else RETRY_HASH (the packet is
 * not modified before that point). */
static __always_inline int relay4(struct xdp_md *ctx, void *data, struct iphdr *iph,
				  struct udphdr *udph, __u8 first, __u16 tot_len,
				  const struct flow_value *v, struct flow_slot *s, __u32 seq,
				  int bl)
{
	__u32 exp_addr = *(const __u32 *)v->expected_src_addr;
	__be16 exp_port = v->expected_src_port;
	__u8 policy = v->policy;
	__u8 flags = v->flags;
	__u32 new_saddr = *(const __u32 *)v->new_src_addr;
	__u32 new_daddr = *(const __u32 *)v->new_dst_addr;
	/* new_src_port, new_dst_port: adjacent, as in the UDP header */
	__u32 new_ports = *(const __u32 *)&v->new_src_port;
	__u32 ifindex = v->egress_ifindex;
	__u32 slot = v->slot;
	__u16 csum_ip = v->csum_ip;
	__u16 csum_udp = v->csum_udp;
	const __u32 *mp = (const __u32 *)v->dst_mac; /* dst_mac, src_mac */
	__u32 macs[3] = {mp[0], mp[1], mp[2]};
	__u16 check;
	__u32 sum;

	if (!slot_stable(s, seq))
		return RETRY_HASH;
	if (is_stun_or_dtls(first))
		return not_relayed4(bl, iph->saddr, STAT_PASS_STUN_DTLS, XDP_PASS);
	if (iph->saddr != exp_addr || udph->source != exp_port) {
		if (policy == RELAY_POLICY_LEARN)
			return not_relayed4(bl, iph->saddr, STAT_PASS_LEARN_MISMATCH, XDP_PASS);
		return not_relayed4(bl, iph->saddr, STAT_DROP_STRICT_MISMATCH, XDP_DROP);
	}
	/* The expected source: only a flagged flow's source can be listed. */
	if ((flags & FLOW_F_SRC_BLOCKED) && blocked4(bl, iph->saddr))
		return count(STAT_DROP_BLOCKLIST, XDP_DROP);

	/* The packet's addresses and ports are the flow's key and expected
	 * source, so the checksum deltas precomputed for the flow apply. */
	iph->saddr = new_saddr;
	iph->daddr = new_daddr;
	sum = (__u16)~iph->check;
	iph->check = ~csum_fold(sum + csum_ip);
	*(__u32 *)&udph->source = new_ports;
	check = udph->check;
	if (check) { /* 0: sender sent no checksum (IPv4 only); keep it so */
		check = ~csum_fold((__u16)~check + csum_udp);
		udph->check = check ? check : 0xffff;
	}
	return forward(ctx, data, ifindex, macs, slot, tot_len);
}

/* IPv4 slow path: the flow from the `flows` hash map. A separate BPF function
 * (not inlined) so that the compiler does not merge it with the fast path,
 * which then keeps the rule in registers. The caller checked the frame. */
static __noinline int relay4_hash(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct udphdr *udph = (void *)(iph + 1);
	__u8 *payload = (void *)(udph + 1);
	struct flow_key key = {};
	struct flow_value *v;
	int bl = blocklist_on();

	if ((void *)(payload + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	key.family = RELAY_AF_INET;
	*(__u32 *)key.addr = iph->daddr;
	key.port = udph->dest;
	v = bpf_map_lookup_elem(&flows, &key);
	if (!v)
		return not_relayed4(bl, iph->saddr, STAT_PASS_UNKNOWN_PORT, XDP_PASS);
	return relay4(ctx, data, iph, udph, payload[0], bpf_ntohs(iph->tot_len), v, NULL, 0,
		      bl);
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, void *data, void *data_end)
{
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct udphdr *udph = (void *)(iph + 1);
	__u8 *payload = (void *)(udph + 1);
	struct flow_slot *s;
	__u32 idx, seq;
	__u16 tot_len;
	int r, bl = blocklist_on();

	/* Blocklisted sources are dropped before anything else happens to the
	 * packet; on the relayed path the lookup is only made where the packet
	 * would not be forwarded anyway, or for a flagged flow (see
	 * FLOW_F_SRC_BLOCKED). One bounds check for the whole relayed path;
	 * shorter frames are classified below. */
	if ((void *)(payload + 1) > data_end) {
		if ((void *)(iph + 1) > data_end || iph->version != 4)
			return count(STAT_PASS_MALFORMED, XDP_PASS);
		if (blocked4(bl, iph->saddr))
			return count(STAT_DROP_BLOCKLIST, XDP_DROP);
		if (iph->protocol != IPPROTO_UDP)
			return count(STAT_PASS_NOT_UDP, XDP_PASS);
		if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return count(STAT_PASS_FRAGMENT, XDP_PASS);
		if (iph->ihl != 5)
			return count(STAT_PASS_IP_OPTIONS, XDP_PASS);
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	}
	if (iph->version != 4)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (iph->protocol != IPPROTO_UDP)
		return not_relayed4(bl, iph->saddr, STAT_PASS_NOT_UDP, XDP_PASS);
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return not_relayed4(bl, iph->saddr, STAT_PASS_FRAGMENT, XDP_PASS);
	if (iph->ihl != 5)
		return not_relayed4(bl, iph->saddr, STAT_PASS_IP_OPTIONS, XDP_PASS);

	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len > (__u64)(data_end - (void *)iph) ||
	    bpf_ntohs(udph->len) != tot_len - sizeof(*iph) ||
	    tot_len < sizeof(*iph) + sizeof(*udph) + 1)
		return not_relayed4(bl, iph->saddr, STAT_PASS_MALFORMED, XDP_PASS);

	/* Fast path: the port-indexed slot, under its sequence lock. */
	idx = bpf_ntohs(udph->dest);
	s = bpf_map_lookup_elem(&flow_index, &idx);
	if (!s)
		return relay4_hash(ctx);
	seq = READ_ONCE_U32(s->seq);
	if (seq & 1)
		return relay4_hash(ctx);
	barrier();
	if (s->family == RELAY_AF_INET && *(__u32 *)s->local_addr == iph->daddr) {
		r = relay4(ctx, data, iph, udph, payload[0], tot_len, &s->v, s, seq, bl);
		if (r != RETRY_HASH)
			return r;
	} else if (!(s->flags & SLOT_F_HASH) && slot_stable(s, seq)) {
		return not_relayed4(bl, iph->saddr, STAT_PASS_UNKNOWN_PORT, XDP_PASS);
	}
	return relay4_hash(ctx);
}

/* 1: flow found and copied to *v; 0: none; -1: look in `flows`. */
static __always_inline int slot_lookup6(const __u32 *daddr, __u16 port_host,
					struct flow_value *v)
{
	__u32 idx = port_host;
	struct flow_slot *s = bpf_map_lookup_elem(&flow_index, &idx);
	const __u32 *la;
	__u32 seq;
	int r;

	if (!s)
		return -1;
	seq = READ_ONCE_U32(s->seq);
	if (seq & 1)
		return -1;
	barrier();
	la = (const __u32 *)s->local_addr;
	if (s->family == RELAY_AF_INET6 && la[0] == daddr[0] && la[1] == daddr[1] &&
	    la[2] == daddr[2] && la[3] == daddr[3]) {
		__builtin_memcpy(v, &s->v, sizeof(*v));
		r = 1;
	} else {
		r = (s->flags & SLOT_F_HASH) ? -1 : 0;
	}
	barrier();
	if (READ_ONCE_U32(s->seq) != seq)
		return -1;
	return r;
}

static __always_inline int handle_ipv6(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct udphdr *udph;
	struct flow_value v;
	__u8 *payload;
	__u16 pl_len, udp_len, check;
	__u32 *src, *dst, *nsrc, *ndst, *exp;
	__u32 macs[3];
	int r;

	if ((void *)(ip6 + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (ip6->version != 6)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (blocked6(&ip6->saddr))
		return count(STAT_DROP_BLOCKLIST, XDP_DROP);
	if (ip6->nexthdr == NEXTHDR_FRAGMENT)
		return count(STAT_PASS_FRAGMENT, XDP_PASS);
	/* Extension headers are not parsed: anything but UDP right after the
	 * fixed header goes to the stack. */
	if (ip6->nexthdr != IPPROTO_UDP)
		return count(STAT_PASS_NOT_UDP, XDP_PASS);

	udph = (void *)(ip6 + 1);
	payload = (void *)(udph + 1);
	if ((void *)(payload + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	pl_len = bpf_ntohs(ip6->payload_len);
	udp_len = bpf_ntohs(udph->len);
	if (pl_len > (__u64)(data_end - (void *)udph) || udp_len < sizeof(*udph) + 1 ||
	    udp_len != pl_len || udph->check == 0)
		return count(STAT_PASS_MALFORMED, XDP_PASS);

	src = (__u32 *)&ip6->saddr;
	dst = (__u32 *)&ip6->daddr;
	r = slot_lookup6(dst, bpf_ntohs(udph->dest), &v);
	if (r < 0) {
		struct flow_key key = {};
		struct flow_value *hv;

		key.family = RELAY_AF_INET6;
		__builtin_memcpy(key.addr, &ip6->daddr, 16);
		key.port = udph->dest;
		hv = bpf_map_lookup_elem(&flows, &key);
		if (hv) {
			__builtin_memcpy(&v, hv, sizeof(v));
			r = 1;
		}
	}
	if (r <= 0)
		return count(STAT_PASS_UNKNOWN_PORT, XDP_PASS);
	if (is_stun_or_dtls(payload[0]))
		return count(STAT_PASS_STUN_DTLS, XDP_PASS);

	exp = (__u32 *)v.expected_src_addr;
	if (((src[0] ^ exp[0]) | (src[1] ^ exp[1]) | (src[2] ^ exp[2]) | (src[3] ^ exp[3])) ||
	    udph->source != v.expected_src_port) {
		if (v.policy == RELAY_POLICY_LEARN)
			return count(STAT_PASS_LEARN_MISMATCH, XDP_PASS);
		return count(STAT_DROP_STRICT_MISMATCH, XDP_DROP);
	}

	nsrc = (__u32 *)v.new_src_addr;
	ndst = (__u32 *)v.new_dst_addr;
	src[0] = nsrc[0];
	src[1] = nsrc[1];
	src[2] = nsrc[2];
	src[3] = nsrc[3];
	dst[0] = ndst[0];
	dst[1] = ndst[1];
	dst[2] = ndst[2];
	dst[3] = ndst[3];
	udph->source = v.new_src_port;
	udph->dest = v.new_dst_port;
	check = ~csum_fold((__u16)~udph->check + v.csum_udp);
	udph->check = check ? check : 0xffff;
	__builtin_memcpy(macs, v.dst_mac, 2 * ETH_ALEN);
	return forward(ctx, data, v.egress_ifindex, macs, v.slot, (__u64)pl_len + sizeof(*ip6));
}

SEC("xdp")
int portcullis_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	/* struct ethhdr is packed: read h_proto as one 16-bit word. */
	proto = *(__be16 *)(data + __builtin_offsetof(struct ethhdr, h_proto));
	if (proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, data, data_end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle_ipv6(ctx, data, data_end);
	return count(STAT_PASS_NOT_IP, XDP_PASS);
}

static int clock_tick(void *map, __u32 *key, struct relay_clock *c)
{
	c->now_ns = bpf_ktime_get_coarse_ns();
	bpf_timer_start(&c->timer, RELAY_CLOCK_TICK_NS, 0);
	return 0;
}

/* Starts the relay clock; run once by the loader with BPF_PROG_TEST_RUN.
 * Returns XDP_PASS when the timer runs, XDP_ABORTED otherwise. */
SEC("xdp")
int portcullis_clk(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct relay_clock *c = bpf_map_lookup_elem(&relay_clock, &zero);
	long err;

	if (!c)
		return XDP_ABORTED;
	c->now_ns = bpf_ktime_get_coarse_ns();
	err = bpf_timer_init(&c->timer, &relay_clock, CLOCK_MONOTONIC);
	if (err && err != -16 /* EBUSY: already initialized */)
		return XDP_ABORTED;
	if (bpf_timer_set_callback(&c->timer, clock_tick))
		return XDP_ABORTED;
	if (bpf_timer_start(&c->timer, RELAY_CLOCK_TICK_NS, 0))
		return XDP_ABORTED;
	return XDP_PASS;
}

/* Trivial program for the far end of a veth pair: frames sent with XDP_TX or
 * XDP_REDIRECT into a veth are only delivered if its peer runs XDP. */
SEC("xdp")
int portcullis_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

/* Benchmark bound: parse Ethernet/IPv4/UDP, swap MACs, addresses and ports
 * (checksums unchanged by a swap) and XDP_TX. Used by the
 * prog_test_run_bench example only. */
SEC("xdp")
int portcullis_bnd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct udphdr *udph = (void *)(iph + 1);
	__u8 mac[ETH_ALEN];
	__u32 a;
	__u16 p;

	if ((void *)(udph + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->protocol != IPPROTO_UDP)
		return XDP_PASS;
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	a = iph->saddr;
	iph->saddr = iph->daddr;
	iph->daddr = a;
	p = udph->source;
	udph->source = udph->dest;
	udph->dest = p;
	return XDP_TX;
}

/* The kernel only needs a GPL-compatible string; the file is GPL-2.0 OR Apache-2.0. */
char LICENSE[] SEC("license") = "GPL";
