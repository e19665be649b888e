//! Global per-outcome statistics (`relay_stats` per-CPU array, `enum relay_stat`
//! in relay.h).

use std::fmt;

/// What the XDP program did with a packet. The discriminant is the index in the
/// `relay_stats` per-CPU array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Outcome {
    /// Rewritten and sent back out of the ingress interface (XDP_TX).
    ForwardedTx = 0,
    /// Rewritten and redirected to another interface through the devmap.
    ForwardedRedirect = 1,
    /// Not IPv4/IPv6 (ARP, VLAN-tagged, ...): XDP_PASS.
    PassNotIp = 2,
    /// Not UDP (or IPv6 extension headers): XDP_PASS.
    PassNotUdp = 3,
    /// IPv4 fragment (MF or offset) or IPv6 fragment header: XDP_PASS.
    PassFragment = 4,
    /// IPv4 header with options (ihl != 5): XDP_PASS.
    PassIpOptions = 5,
    /// UDP to a port with no flow: XDP_PASS.
    PassUnknownPort = 6,
    /// STUN or DTLS by first payload byte (RFC 7983): XDP_PASS.
    PassStunDtls = 7,
    /// Unexpected source on a flow with the learn policy: XDP_PASS.
    PassLearnMismatch = 8,
    /// Truncated or inconsistent headers, empty UDP payload, IPv6 UDP
    /// checksum 0: XDP_PASS (the stack decides).
    PassMalformed = 9,
    /// Unexpected source on a strict flow: XDP_DROP.
    DropStrictMismatch = 10,
    /// Source address in the blocklist: XDP_DROP.
    DropBlocklist = 11,
    /// Egress interface missing from the devmap: XDP_DROP.
    DropNoEgress = 12,
}

impl Outcome {
    /// Every outcome, in index order.
    pub const ALL: [Outcome; 13] = [
        Outcome::ForwardedTx,
        Outcome::ForwardedRedirect,
        Outcome::PassNotIp,
        Outcome::PassNotUdp,
        Outcome::PassFragment,
        Outcome::PassIpOptions,
        Outcome::PassUnknownPort,
        Outcome::PassStunDtls,
        Outcome::PassLearnMismatch,
        Outcome::PassMalformed,
        Outcome::DropStrictMismatch,
        Outcome::DropBlocklist,
        Outcome::DropNoEgress,
    ];

    /// Index in the stats array.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name (for metrics labels).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::ForwardedTx => "forwarded_tx",
            Outcome::ForwardedRedirect => "forwarded_redirect",
            Outcome::PassNotIp => "pass_not_ip",
            Outcome::PassNotUdp => "pass_not_udp",
            Outcome::PassFragment => "pass_fragment",
            Outcome::PassIpOptions => "pass_ip_options",
            Outcome::PassUnknownPort => "pass_unknown_port",
            Outcome::PassStunDtls => "pass_stun_dtls",
            Outcome::PassLearnMismatch => "pass_learn_mismatch",
            Outcome::PassMalformed => "pass_malformed",
            Outcome::DropStrictMismatch => "drop_strict_mismatch",
            Outcome::DropBlocklist => "drop_blocklist",
            Outcome::DropNoEgress => "drop_no_egress",
        }
    }
}

/// Snapshot of the global counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    counts: [u64; 13],
}

impl RelayStats {
    pub(crate) fn from_counts(counts: [u64; 13]) -> Self {
        Self { counts }
    }

    /// Counter for one outcome.
    pub fn get(&self, o: Outcome) -> u64 {
        self.counts[o as usize]
    }

    /// Forwarded packets (TX + redirect).
    pub fn forwarded(&self) -> u64 {
        self.get(Outcome::ForwardedTx) + self.get(Outcome::ForwardedRedirect)
    }

    /// `(outcome, count)` for every outcome.
    pub fn iter(&self) -> impl Iterator<Item = (Outcome, u64)> + '_ {
        Outcome::ALL.iter().map(move |o| (*o, self.get(*o)))
    }

    /// Per-outcome difference `self - earlier` (saturating).
    pub fn since(&self, earlier: &RelayStats) -> RelayStats {
        let mut counts = [0u64; 13];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        RelayStats { counts }
    }
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (o, c) in self.iter() {
            if c == 0 {
                continue;
            }
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{}={c}", o.name())?;
        }
        if first {
            f.write_str("(all zero)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_names_unique() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index() as usize, i);
        }
        let mut names: Vec<_> = Outcome::ALL.iter().map(|o| o.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::ALL.len());
    }

    #[test]
    fn since_and_display() {
        let mut a = [0u64; 13];
        a[0] = 5;
        a[10] = 2;
        let mut b = a;
        b[0] = 9;
        let d = RelayStats::from_counts(b).since(&RelayStats::from_counts(a));
        assert_eq!(d.get(Outcome::ForwardedTx), 4);
        assert_eq!(d.get(Outcome::DropStrictMismatch), 0);
        assert_eq!(d.to_string(), "forwarded_tx=4");
        assert_eq!(RelayStats::default().to_string(), "(all zero)");
    }
}
