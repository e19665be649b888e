/* SPDX-License-Identifier: Apache-2.0 */
/* Host program run by build.rs: prints the C layout of the map types as Rust
 * constants, so the Rust mirror is checked against what the C compiler does. */
#include <stddef.h>
#include <stdio.h>
#include "relay.h"

#define SIZE(t) printf("pub const SIZE_%s: usize = %zu;\n", #t, sizeof(struct t))
#define OFF(t, f) printf("pub const OFF_%s_%s: usize = %zu;\n", #t, #f, offsetof(struct t, f))

int main(void)
{
	SIZE(flow_key);
	OFF(flow_key, addr);
	OFF(flow_key, port);
	OFF(flow_key, family);
	OFF(flow_key, pad);
	SIZE(flow_value);
	OFF(flow_value, expected_src_addr);
	OFF(flow_value, expected_src_port);
	OFF(flow_value, policy);
	OFF(flow_value, flags);
	OFF(flow_value, new_src_addr);
	OFF(flow_value, new_dst_addr);
	OFF(flow_value, new_src_port);
	OFF(flow_value, new_dst_port);
	OFF(flow_value, egress_ifindex);
	OFF(flow_value, src_mac);
	OFF(flow_value, dst_mac);
	OFF(flow_value, slot);
	OFF(flow_value, csum_ip);
	OFF(flow_value, csum_udp);
	SIZE(flow_counters);
	OFF(flow_counters, packets);
	OFF(flow_counters, bytes);
	OFF(flow_counters, last_seen_ns);
	SIZE(flow_slot);
	OFF(flow_slot, seq);
	OFF(flow_slot, family);
	OFF(flow_slot, flags);
	OFF(flow_slot, pad);
	OFF(flow_slot, local_addr);
	OFF(flow_slot, v);
	SIZE(addr_key);
	OFF(addr_key, addr);
	OFF(addr_key, family);
	OFF(addr_key, pad);
	SIZE(blocklist_value);
	OFF(blocklist_value, drops);
	SIZE(relay_config);
	OFF(relay_config, blocklist_enabled);
	OFF(relay_config, flags);
	printf("pub const STAT_MAX: u32 = %d;\n", STAT_MAX);
	printf("pub const MAX_FLOWS: u32 = %d;\n", RELAY_MAX_FLOWS);
	printf("pub const POLICY_STRICT: u8 = %d;\n", RELAY_POLICY_STRICT);
	printf("pub const PORT_SLOTS: u32 = %d;\n", RELAY_PORT_SLOTS);
	printf("pub const FLOW_F_SRC_BLOCKED: u8 = %d;\n", FLOW_F_SRC_BLOCKED);
	printf("pub const SLOT_F_HASH: u8 = %d;\n", SLOT_F_HASH);
	printf("pub const POLICY_LEARN: u8 = %d;\n", RELAY_POLICY_LEARN);
	return 0;
}
