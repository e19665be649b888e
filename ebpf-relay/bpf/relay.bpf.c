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

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NEXTHDR_FRAGMENT 44

static __always_inline int count(__u32 stat, int action)
{
	__u64 *c = bpf_map_lookup_elem(&relay_stats, &stat);

	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
	return action;
}

/* One's complement helpers. Words are summed as raw memory values, which is
 * byte-order independent (RFC 1071 section 2(B)). */
static __always_inline __u32 csum_replace32(__u32 sum, __u32 old, __u32 new)
{
	__u32 nold = ~old;

	return sum + (nold & 0xffff) + (nold >> 16) + (new & 0xffff) + (new >> 16);
}

static __always_inline __u32 csum_replace16(__u32 sum, __u16 old, __u16 new)
{
	return sum + ((__u16)~old) + new;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline int blocked(__u8 family, const void *saddr, __u32 len)
{
	__u32 zero = 0;
	struct relay_config *cfg = bpf_map_lookup_elem(&relay_config, &zero);
	struct addr_key bk = {};
	struct blocklist_value *bv;

	if (!cfg || !cfg->blocklist_enabled)
		return 0;
	bk.family = family;
	if (len == 4)
		__builtin_memcpy(bk.addr, saddr, 4);
	else
		__builtin_memcpy(bk.addr, saddr, 16);
	bv = bpf_map_lookup_elem(&blocklist, &bk);
	if (!bv)
		return 0;
	__sync_fetch_and_add(&bv->drops, 1);
	return 1;
}

/* RFC 7983: 0..3 STUN, 20..63 DTLS. Those stay with userspace (ICE consent,
 * DTLS handshakes) even on a relayed port. */
static __always_inline int is_stun_or_dtls(__u8 b)
{
	return b <= 3 || (b >= 20 && b <= 63);
}

static __always_inline int forward(struct xdp_md *ctx, struct ethhdr *eth, struct flow_value *v,
				   __u64 ip_bytes)
{
	__u32 stat = STAT_FORWARDED_TX;
	int act = XDP_TX;

	if (v->egress_ifindex != ctx->ingress_ifindex) {
		if (bpf_redirect_map(&tx_ports, v->egress_ifindex, 0) != XDP_REDIRECT)
			return count(STAT_DROP_NO_EGRESS, XDP_DROP);
		stat = STAT_FORWARDED_REDIRECT;
		act = XDP_REDIRECT;
	}
	__builtin_memcpy(eth->h_source, v->src_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, v->dst_mac, ETH_ALEN);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, ip_bytes);
	/* Coarse clock (jiffy resolution): enough for media timeouts, and the
	 * precise one costs ~17 ns per packet on this kind of VM. */
	v->last_seen_ns = bpf_ktime_get_coarse_ns();
	return count(stat, act);
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	struct iphdr *iph = (void *)(eth + 1);
	struct udphdr *udph;
	struct flow_key key = {};
	struct flow_value *v;
	__u8 *payload;
	__u16 tot_len, udp_len;
	__u32 sum, old_saddr, old_daddr, new_saddr, new_daddr;
	__u16 old_sport, old_dport;

	if ((void *)(iph + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (iph->version != 4)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (blocked(RELAY_AF_INET, &iph->saddr, 4))
		return count(STAT_DROP_BLOCKLIST, XDP_DROP);
	if (iph->protocol != IPPROTO_UDP)
		return count(STAT_PASS_NOT_UDP, XDP_PASS);
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return count(STAT_PASS_FRAGMENT, XDP_PASS);
	if (iph->ihl != 5)
		return count(STAT_PASS_IP_OPTIONS, XDP_PASS);

	udph = (void *)(iph + 1);
	payload = (void *)(udph + 1);
	if ((void *)(payload + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	tot_len = bpf_ntohs(iph->tot_len);
	udp_len = bpf_ntohs(udph->len);
	if (tot_len > (__u64)(data_end - (void *)iph) || udp_len < sizeof(*udph) + 1 ||
	    udp_len != tot_len - sizeof(*iph))
		return count(STAT_PASS_MALFORMED, XDP_PASS);

	key.family = RELAY_AF_INET;
	__builtin_memcpy(key.addr, &iph->daddr, 4);
	key.port = udph->dest;
	v = bpf_map_lookup_elem(&flows, &key);
	if (!v)
		return count(STAT_PASS_UNKNOWN_PORT, XDP_PASS);
	if (is_stun_or_dtls(payload[0]))
		return count(STAT_PASS_STUN_DTLS, XDP_PASS);

	if (iph->saddr != *(__u32 *)v->expected_src_addr || udph->source != v->expected_src_port) {
		if (v->policy == RELAY_POLICY_LEARN)
			return count(STAT_PASS_LEARN_MISMATCH, XDP_PASS);
		return count(STAT_DROP_STRICT_MISMATCH, XDP_DROP);
	}

	old_saddr = iph->saddr;
	old_daddr = iph->daddr;
	old_sport = udph->source;
	old_dport = udph->dest;
	new_saddr = *(__u32 *)v->new_src_addr;
	new_daddr = *(__u32 *)v->new_dst_addr;

	iph->saddr = new_saddr;
	iph->daddr = new_daddr;
	sum = (__u16)~iph->check;
	sum = csum_replace32(sum, old_saddr, new_saddr);
	sum = csum_replace32(sum, old_daddr, new_daddr);
	iph->check = ~csum_fold(sum);

	udph->source = v->new_src_port;
	udph->dest = v->new_dst_port;
	if (udph->check) { /* 0: sender sent no checksum (IPv4 only); keep it so */
		sum = (__u16)~udph->check;
		sum = csum_replace32(sum, old_saddr, new_saddr);
		sum = csum_replace32(sum, old_daddr, new_daddr);
		sum = csum_replace16(sum, old_sport, v->new_src_port);
		sum = csum_replace16(sum, old_dport, v->new_dst_port);
		udph->check = ~csum_fold(sum);
		if (!udph->check)
			udph->check = 0xffff;
	}
	return forward(ctx, eth, v, tot_len);
}

static __always_inline int handle_ipv6(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	struct ipv6hdr *ip6 = (void *)(eth + 1);
	struct udphdr *udph;
	struct flow_key key = {};
	struct flow_value *v;
	__u8 *payload;
	__u16 pl_len, udp_len;
	__u32 sum, *src, *dst, *exp, *nsrc, *ndst;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (ip6->version != 6)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (blocked(RELAY_AF_INET6, &ip6->saddr, 16))
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

	key.family = RELAY_AF_INET6;
	__builtin_memcpy(key.addr, &ip6->daddr, 16);
	key.port = udph->dest;
	v = bpf_map_lookup_elem(&flows, &key);
	if (!v)
		return count(STAT_PASS_UNKNOWN_PORT, XDP_PASS);
	if (is_stun_or_dtls(payload[0]))
		return count(STAT_PASS_STUN_DTLS, XDP_PASS);

	src = (__u32 *)&ip6->saddr;
	dst = (__u32 *)&ip6->daddr;
	exp = (__u32 *)v->expected_src_addr;
	if (((src[0] ^ exp[0]) | (src[1] ^ exp[1]) | (src[2] ^ exp[2]) | (src[3] ^ exp[3])) ||
	    udph->source != v->expected_src_port) {
		if (v->policy == RELAY_POLICY_LEARN)
			return count(STAT_PASS_LEARN_MISMATCH, XDP_PASS);
		return count(STAT_DROP_STRICT_MISMATCH, XDP_DROP);
	}

	nsrc = (__u32 *)v->new_src_addr;
	ndst = (__u32 *)v->new_dst_addr;
	sum = (__u16)~udph->check;
#pragma unroll
	for (i = 0; i < 4; i++) {
		sum = csum_replace32(sum, src[i], nsrc[i]);
		sum = csum_replace32(sum, dst[i], ndst[i]);
		src[i] = nsrc[i];
		dst[i] = ndst[i];
	}
	sum = csum_replace16(sum, udph->source, v->new_src_port);
	sum = csum_replace16(sum, udph->dest, v->new_dst_port);
	udph->source = v->new_src_port;
	udph->dest = v->new_dst_port;
	udph->check = ~csum_fold(sum);
	if (!udph->check)
		udph->check = 0xffff;
	return forward(ctx, eth, v, (__u64)pl_len + sizeof(*ip6));
}

SEC("xdp")
int portcullis_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return count(STAT_PASS_MALFORMED, XDP_PASS);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(ctx, eth, data_end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return handle_ipv6(ctx, eth, data_end);
	return count(STAT_PASS_NOT_IP, XDP_PASS);
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
