//! Trunks with host names: the hops a trunk expands to, from its RFC 3263 resolution
//! (pushed in by the IO layer's DNS tasks, see `crate::dns`), and the queries those tasks
//! run.

use std::net::SocketAddr;

use tracing::info;

use super::routing::TrunkTarget;
use super::{addressing, Hop, Proxy};
use crate::dns::{Resolution, TrunkQuery};
use crate::transport::{Destination, Transport};

impl Proxy {
    /// The hops of one trunk in the order to try them: its address for an IP literal, the
    /// resolved addresses (SRV order drawn per request) for a resolved name, or the name
    /// itself (resolved by the IO layer at send time) until the first resolution arrives.
    pub(super) fn trunk_hops(&self, t: &TrunkTarget) -> Vec<Hop> {
        let targets: Vec<(Destination, Transport)> = match (
            addressing::parse_host_ip(&t.host),
            self.trunk_dns.get(&t.name),
        ) {
            (Some(ip), _) => vec![(Destination::Addr(SocketAddr::new(ip, t.port)), t.transport)],
            (None, Some(res)) => res
                .ordered(rand::random::<u64>())
                .into_iter()
                .map(|(a, tp)| (Destination::Addr(a), tp))
                .collect(),
            (None, None) => vec![(Destination::Name(t.host.clone(), t.port), t.transport)],
        };
        targets
            .into_iter()
            .filter_map(|(d, tp)| {
                // A pinned listener applies to the configured transport only.
                let pinned = (tp == t.transport)
                    .then_some(t.listener.as_deref())
                    .flatten();
                let listener = self.local.egress_listener(Some(&t.interface), tp, pinned)?;
                let mut hop = Hop::to(d, tp, listener.id);
                hop.trunk = Some(t.name.clone());
                hop.may_upgrade = tp == Transport::Udp;
                Some(hop)
            })
            .collect()
    }

    /// Trunks whose host is a name, with what to ask for each. NAPTR/SRV results are
    /// limited to transports the trunk's interface has a listener to send from (TLS needs a
    /// TLS listener: its certificate is the client certificate).
    pub fn dns_queries(&self) -> Vec<(String, TrunkQuery)> {
        self.router
            .trunks()
            .filter(|t| addressing::parse_host_ip(&t.host).is_none())
            .map(|t| {
                let supported = [Transport::Udp, Transport::Tcp, Transport::Tls]
                    .into_iter()
                    .filter(|tp| {
                        self.local
                            .egress_listener(Some(&t.interface), *tp, None)
                            .is_some()
                    })
                    .collect();
                (
                    t.name.clone(),
                    TrunkQuery {
                        host: t.host.clone(),
                        port: t.port,
                        transport: t.transport,
                        mode: t.dns,
                        supported,
                    },
                )
            })
            .collect()
    }

    /// A new resolution of trunk `name` (replaces the previous one). Returns true when the
    /// addresses changed.
    pub fn set_trunk_resolution(&mut self, name: &str, res: Resolution) -> bool {
        let changed = self
            .trunk_dns
            .get(name)
            .is_none_or(|old| old.addresses() != res.addresses());
        if changed {
            let list: Vec<String> = res
                .addresses()
                .iter()
                .map(|(a, t)| format!("{a}/{t}"))
                .collect();
            info!(trunk = name, via = res.via, ttl = res.ttl, addresses = %list.join(","), "trunk resolved");
        }
        self.trunk_dns.insert(name.to_string(), res);
        changed
    }

    /// The probe hop of trunk `name`: the first resolved address when it has a resolution.
    /// (Only trunks with host names are resolved, see [`Self::dns_queries`].)
    pub(super) fn resolved_probe_hop(&self, name: &str, hop: Hop) -> Hop {
        let Some(res) = self.trunk_dns.get(name) else {
            return hop;
        };
        match res
            .addresses()
            .into_iter()
            .find(|(_, tp)| *tp == hop.transport)
        {
            Some((addr, _)) => Hop {
                destination: Destination::Addr(addr),
                ..hop
            },
            None => hop,
        }
    }
}
