//! Trunk host name resolution per RFC 3263 (NAPTR -> SRV -> A/AAAA) with RFC 2782 SRV
//! ordering.
//!
//! The procedure ([`resolve`]) is written against the [`Lookup`] trait so that every branch
//! (no NAPTR, unsupported NAPTR services, SRV target `.`, a dead SRV target, no SRV at all)
//! is unit-tested with a scripted resolver; [`hickory`] implements the trait with
//! hickory-resolver and [`refresh`] keeps one trunk's [`Resolution`] fresh for its TTL.
//!
//! A [`Resolution`] keeps the SRV structure (rank and weight of every entry) so that the
//! proxy orders the addresses per request ([`Resolution::ordered`]): lower rank first, and
//! within a rank a weighted random draw, so weights spread calls between refreshes too.

pub mod hickory;
pub mod refresh;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use portcullis_config::TrunkDns;
use thiserror::Error;

use crate::transport::Transport;

/// At most this many addresses are kept per trunk (failover beyond that is pointless: every
/// failed attempt costs a transaction timeout).
pub const MAX_ADDRESSES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DnsError {
    #[error("no records")]
    NoRecords,
    #[error("lookup failed: {0}")]
    Failed(String),
}

/// A NAPTR record (RFC 3403) as far as RFC 3263 needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    pub replacement: String,
    pub ttl: u32,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    pub ttl: u32,
}

/// The DNS queries RFC 3263 needs. Implemented over the network by [`hickory::HickoryLookup`].
pub trait Lookup {
    fn naptr(&self, name: &str) -> impl Future<Output = Result<Vec<NaptrRecord>, DnsError>> + Send;
    fn srv(&self, name: &str) -> impl Future<Output = Result<Vec<SrvRecord>, DnsError>> + Send;
    /// A and AAAA addresses with the smallest TTL among them.
    fn ip(&self, name: &str) -> impl Future<Output = Result<(Vec<IpAddr>, u32), DnsError>> + Send;
}

/// What is to be resolved for one trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkQuery {
    pub host: String,
    /// The configured (or default) port, used when no SRV record gives one.
    pub port: u16,
    /// The configured (or default) transport, used for `a`/`srv` and as the NAPTR fallback.
    pub transport: Transport,
    pub mode: TrunkDns,
    /// Transports the trunk's interface has a listener for (NAPTR/SRV for others are
    /// ignored, RFC 3263 4.1).
    pub supported: Vec<Transport>,
}

/// One SRV entry (or the single A/AAAA entry) with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lower is tried first: NAPTR position in the high bits, SRV priority in the low ones.
    pub rank: u32,
    pub weight: u16,
    pub transport: Transport,
    /// The SRV target (or the host for A/AAAA).
    pub target: String,
    pub addrs: Vec<SocketAddr>,
}

/// The result of resolving a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub entries: Vec<Entry>,
    /// Smallest TTL of the records used (seconds).
    pub ttl: u32,
    /// Which step produced the entries: `naptr`, `srv` or `a`.
    pub via: &'static str,
}

impl Resolution {
    /// Every (address, transport), deduplicated, in the order to try for one request:
    /// ascending rank, weighted random order within a rank (RFC 2782), at most
    /// [`MAX_ADDRESSES`].
    pub fn ordered(&self, seed: u64) -> Vec<(SocketAddr, Transport)> {
        let mut rng = crate::xorshift::XorShift::new(seed);
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by_key(|e| e.rank);
        let mut out: Vec<(SocketAddr, Transport)> = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let rank = entries[i].rank;
            let mut group: Vec<&Entry> = entries[i..]
                .iter()
                .take_while(|e| e.rank == rank)
                .copied()
                .collect();
            i += group.len();
            // RFC 2782: zero weights first, then draw by running sum until none is left.
            group.sort_by_key(|e| e.weight != 0);
            while !group.is_empty() {
                let total: u64 = group.iter().map(|e| u64::from(e.weight)).sum();
                let pick = if total == 0 {
                    0
                } else {
                    let r = rng.next_u64() % (total + 1);
                    let mut run = 0u64;
                    group
                        .iter()
                        .position(|e| {
                            run += u64::from(e.weight);
                            run >= r
                        })
                        .unwrap_or(0)
                };
                let e = group.remove(pick);
                for a in &e.addrs {
                    if !out.iter().any(|(x, t)| x == a && *t == e.transport) {
                        out.push((*a, e.transport));
                    }
                }
            }
        }
        out.truncate(MAX_ADDRESSES);
        out
    }

    /// Every address once, in rank order (for metrics and logs).
    pub fn addresses(&self) -> Vec<(SocketAddr, Transport)> {
        let mut v: Vec<(SocketAddr, Transport)> = Vec::new();
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by_key(|e| e.rank);
        for e in entries {
            for a in &e.addrs {
                if !v.iter().any(|(x, t)| x == a && *t == e.transport) {
                    v.push((*a, e.transport));
                }
            }
        }
        v.truncate(MAX_ADDRESSES);
        v
    }
}

/// The SRV owner name for a transport (RFC 3263 4.1, RFC 3261 26.2: TLS is `_sips._tcp`).
pub fn srv_name(transport: Transport, host: &str) -> Option<String> {
    let host = host.trim_end_matches('.');
    match transport {
        Transport::Udp => Some(format!("_sip._udp.{host}")),
        Transport::Tcp => Some(format!("_sip._tcp.{host}")),
        Transport::Tls => Some(format!("_sips._tcp.{host}")),
        _ => None,
    }
}

/// The transport a NAPTR service field names (RFC 3263 4.1), if it is one we speak.
pub fn naptr_transport(services: &str) -> Option<Transport> {
    match services.to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        "SIPS+D2T" => Some(Transport::Tls),
        _ => None,
    }
}

/// Resolves a trunk per RFC 3263 client rules (section 4), using `lookup` for the queries.
pub async fn resolve<L: Lookup + Sync>(lookup: &L, q: &TrunkQuery) -> Result<Resolution, DnsError> {
    if let Ok(ip) = q
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Resolution {
            entries: vec![Entry {
                rank: 0,
                weight: 0,
                transport: q.transport,
                target: q.host.clone(),
                addrs: vec![SocketAddr::new(ip, q.port)],
            }],
            ttl: u32::MAX,
            via: "a",
        });
    }
    let mut ttl = u32::MAX;
    if q.mode == TrunkDns::Naptr {
        if let Ok(records) = lookup.naptr(&q.host).await {
            let mut usable: Vec<(NaptrRecord, Transport)> = records
                .into_iter()
                .filter(|r| r.flags.eq_ignore_ascii_case("s"))
                .filter_map(|r| naptr_transport(&r.services).map(|t| (r, t)))
                .filter(|(_, t)| q.supported.contains(t))
                .collect();
            usable.sort_by_key(|(r, _)| (r.order, r.preference));
            // Once a usable order is found, records of other orders are not considered
            // (RFC 3403 / RFC 3263 4.1).
            if let Some(first_order) = usable.first().map(|(r, _)| r.order) {
                usable.retain(|(r, _)| r.order == first_order);
            }
            let targets = usable
                .iter()
                .enumerate()
                .map(|(i, (r, t))| (i, r.replacement.clone(), *t, r.ttl))
                .collect();
            let entries = srv_in_order(lookup, targets, &mut ttl).await;
            if !entries.is_empty() {
                return Ok(Resolution {
                    entries,
                    ttl,
                    via: "naptr",
                });
            }
        }
        // No (usable) NAPTR: SRV for every transport we support, in our preference order.
        let targets = [Transport::Udp, Transport::Tcp, Transport::Tls]
            .into_iter()
            .filter(|t| q.supported.contains(t))
            .enumerate()
            .filter_map(|(i, t)| srv_name(t, &q.host).map(|name| (i, name, t, u32::MAX)))
            .collect();
        let entries = srv_in_order(lookup, targets, &mut ttl).await;
        if !entries.is_empty() {
            return Ok(Resolution {
                entries,
                ttl,
                via: "srv",
            });
        }
    }
    if q.mode == TrunkDns::Srv {
        if let Some(name) = srv_name(q.transport, &q.host) {
            if let Ok((entries, srv_ttl)) = srv_entries(lookup, &name, q.transport).await {
                return Ok(Resolution {
                    entries,
                    ttl: srv_ttl,
                    via: "srv",
                });
            }
        }
    }
    // RFC 3263 4.2: no SRV records: A/AAAA of the host at the (default) port.
    let (ips, a_ttl) = lookup.ip(&q.host).await?;
    if ips.is_empty() {
        return Err(DnsError::NoRecords);
    }
    Ok(Resolution {
        entries: vec![Entry {
            rank: 0,
            weight: 0,
            transport: q.transport,
            target: q.host.clone(),
            addrs: ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, q.port))
                .collect(),
        }],
        ttl: a_ttl,
        via: "a",
    })
}

/// The SRV records of `name` with their targets' addresses. A target of `.` means the
/// service is not offered (RFC 2782); a target that does not resolve is left out.
/// The SRV entries of `targets` (place, name, transport, TTL cap), ranked by place first
/// (the high bits of `rank`); `ttl` becomes the smallest TTL seen.
async fn srv_in_order<L: Lookup + Sync>(
    lookup: &L,
    targets: Vec<(usize, String, Transport, u32)>,
    ttl: &mut u32,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (i, name, t, cap) in targets {
        if let Ok((mut e, srv_ttl)) = srv_entries(lookup, &name, t).await {
            *ttl = (*ttl).min(cap).min(srv_ttl);
            for x in &mut e {
                x.rank |= (i as u32 + 1) << 16;
            }
            entries.extend(e);
        }
    }
    entries
}

async fn srv_entries<L: Lookup + Sync>(
    lookup: &L,
    name: &str,
    transport: Transport,
) -> Result<(Vec<Entry>, u32), DnsError> {
    let records = lookup.srv(name).await?;
    let mut ttl = u32::MAX;
    let mut entries = Vec::new();
    for r in records {
        let target = r.target.trim_end_matches('.');
        if target.is_empty() {
            continue;
        }
        let addrs = match target.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, r.port)],
            Err(_) => match lookup.ip(target).await {
                Ok((ips, a_ttl)) => {
                    ttl = ttl.min(a_ttl);
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip, r.port))
                        .collect()
                }
                Err(_) => continue,
            },
        };
        if addrs.is_empty() {
            continue;
        }
        ttl = ttl.min(r.ttl);
        entries.push(Entry {
            rank: u32::from(r.priority),
            weight: r.weight,
            transport,
            target: target.to_string(),
            addrs,
        });
    }
    if entries.is_empty() {
        return Err(DnsError::NoRecords);
    }
    Ok((entries, ttl))
}

#[cfg(test)]
mod tests;
