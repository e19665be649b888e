//! Keeps one trunk's resolution fresh: resolve, hand the result over, wait for the TTL
//! (clamped to the configured bounds) or, after a failure, the retry interval.

use std::sync::Arc;
use std::time::Duration;

use portcullis_config::DnsSettings;

use super::{resolve, DnsError, Lookup, Resolution, TrunkQuery};

/// When to ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub retry: Duration,
}

impl RefreshPolicy {
    pub fn from_settings(s: &DnsSettings) -> Self {
        RefreshPolicy {
            min_ttl: Duration::from_secs(s.min_ttl_s),
            max_ttl: Duration::from_secs(s.max_ttl_s),
            retry: Duration::from_secs(s.retry_s),
        }
    }

    /// Delay before the next lookup after `result`. A zero TTL is never used as is (at
    /// least one second passes), so a misconfigured zone cannot make us spin.
    pub fn next(&self, result: &Result<Resolution, DnsError>) -> Duration {
        match result {
            Ok(r) => Duration::from_secs(u64::from(r.ttl))
                .clamp(self.min_ttl, self.max_ttl.max(self.min_ttl))
                .max(Duration::from_secs(1)),
            Err(_) => self.retry.max(Duration::from_secs(1)),
        }
    }
}

/// Resolves `query` for ever, calling `on_result` after every attempt. Runs until its task
/// is aborted.
pub async fn run<L, F>(lookup: Arc<L>, query: TrunkQuery, policy: RefreshPolicy, mut on_result: F)
where
    L: Lookup + Send + Sync + 'static,
    F: FnMut(Result<Resolution, DnsError>) + Send,
{
    loop {
        let result = resolve(lookup.as_ref(), &query).await;
        let wait = policy.next(&result);
        on_result(result);
        tokio::time::sleep(wait).await;
    }
}
