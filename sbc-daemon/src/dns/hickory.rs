//! [`Lookup`] over the network with hickory-resolver: the configured name servers (UDP with
//! TCP fallback) or the system's `/etc/resolv.conf`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use portcullis_config::DnsSettings;

use super::{DnsError, Lookup, NaptrRecord, SrvRecord};

pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// A resolver for `settings`: its name servers, or the system configuration when none
    /// is listed.
    pub fn new(settings: &DnsSettings) -> Result<HickoryLookup, DnsError> {
        let mut builder = if settings.resolvers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| {
                DnsError::Failed(format!("reading the system resolver configuration: {e}"))
            })?
        } else {
            let servers = settings
                .resolvers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = Duration::from_millis(settings.timeout_ms);
        opts.attempts = 2;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.ndots = 0;
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Failed(format!("building the resolver: {e}")))?;
        Ok(HickoryLookup { resolver })
    }
}

/// Trunk names are absolute: no search-list expansion.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn map_err(e: NetError) -> DnsError {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsError::NoRecords
    } else {
        DnsError::Failed(e.to_string())
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Lookup for HickoryLookup {
    async fn naptr(&self, name: &str) -> Result<Vec<NaptrRecord>, DnsError> {
        let l = self
            .resolver
            .lookup(absolute(name), RecordType::NAPTR)
            .await
            .map_err(map_err)?;
        Ok(l.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => Some(NaptrRecord {
                    order: n.order,
                    preference: n.preference,
                    flags: text(&n.flags),
                    services: text(&n.services),
                    replacement: n.replacement.to_ascii(),
                    ttl: r.ttl,
                }),
                _ => None,
            })
            .collect())
    }

    async fn srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let l = self
            .resolver
            .lookup(absolute(name), RecordType::SRV)
            .await
            .map_err(map_err)?;
        Ok(l.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(SrvRecord {
                    priority: s.priority,
                    weight: s.weight,
                    port: s.port,
                    target: s.target.to_ascii(),
                    ttl: r.ttl,
                }),
                _ => None,
            })
            .collect())
    }

    async fn ip(&self, name: &str) -> Result<(Vec<IpAddr>, u32), DnsError> {
        let l = self
            .resolver
            .lookup_ip(absolute(name))
            .await
            .map_err(map_err)?;
        let ttl = l
            .valid_until()
            .saturating_duration_since(Instant::now())
            .as_secs()
            .min(u64::from(u32::MAX)) as u32;
        Ok((l.iter().collect(), ttl))
    }
}
