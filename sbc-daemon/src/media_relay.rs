//! The IO side of media anchoring: owns the datapath (XDP or userspace relay from
//! `media-engine`) and carries out the proxy's [`MediaCommand`]s, keeping the relay pairs of
//! every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use media_engine::datapath::{
    pairs_from_plan, Datapath, DatapathConfig, DatapathKind, LearnPolicy, LegTransform, PairId,
};
use media_engine::secure::{LegSecurity, SecureLeg};
use portcullis_config::{Config, DatapathChoice};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::proxy::media::MediaCommand;

/// A relay pair of a call and the packets (a->b, b->a) its position carried before.
type CallPair = (PairId, (u64, u64));

pub struct MediaRelay {
    datapath: Datapath,
    metrics: Arc<Metrics>,
    /// Packets and bytes of pairs already removed.
    released: Mutex<(u64, u64)>,
    /// Relay pairs per Call-ID, with the packets (a->b, b->a) each pair position relayed
    /// before a re-offer replaced it.
    calls: Mutex<HashMap<String, Vec<CallPair>>>,
    /// NAT learning per interface name.
    learn: HashMap<String, LearnPolicy>,
}

impl MediaRelay {
    /// Starts the configured datapath when any interface has a media address.
    pub fn start(cfg: &Config, metrics: &Arc<Metrics>) -> Option<MediaRelay> {
        if cfg.interfaces.iter().all(|i| i.media.is_none()) {
            return None;
        }
        let dp_cfg = DatapathConfig {
            kind: match cfg.media.datapath {
                DatapathChoice::Auto => DatapathKind::Auto,
                DatapathChoice::Xdp => DatapathKind::Xdp,
                DatapathChoice::Userspace => DatapathKind::Userspace,
            },
            xdp_interfaces: cfg.media.xdp_interfaces.clone(),
            ..DatapathConfig::default()
        };
        let datapath = match Datapath::start(&dp_cfg, None) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "media datapath cannot start; media will not be relayed");
                return None;
            }
        };
        metrics.media_datapath(datapath.active().as_str());
        let window = LearnPolicy::Window {
            packets: cfg.media.learn_packets,
            duration: Duration::from_millis(cfg.media.learn_ms),
        };
        let learn = cfg
            .interfaces
            .iter()
            .map(|i| {
                let p = if i.policy.nat_fixing && cfg.media.learn_packets > 0 {
                    window
                } else {
                    LearnPolicy::Off
                };
                (i.name.clone(), p)
            })
            .collect();
        Some(MediaRelay {
            datapath,
            metrics: metrics.clone(),
            released: Mutex::new((0, 0)),
            calls: Mutex::new(HashMap::new()),
            learn,
        })
    }

    fn learn_of(&self, iface: &str) -> LearnPolicy {
        self.learn.get(iface).copied().unwrap_or(LearnPolicy::Off)
    }

    /// Removes a pair; returns the packets it relayed (a->b, b->a).
    fn remove(&self, id: PairId) -> (u64, u64) {
        match self.datapath.remove_pair(id) {
            Some(c) => {
                let mut r = self.released.lock().unwrap_or_else(|p| p.into_inner());
                r.0 += c.a_to_b.packets + c.b_to_a.packets;
                r.1 += c.a_to_b.bytes + c.b_to_a.bytes;
                (c.a_to_b.packets, c.b_to_a.packets)
            }
            None => (0, 0),
        }
    }

    /// Packets and bytes relayed since start (both directions, both datapaths).
    pub fn relayed_totals(&self) -> (u64, u64) {
        let (mut p, mut b) = *self.released.lock().unwrap_or_else(|p| p.into_inner());
        for c in self.datapath.pairs() {
            p += c.a_to_b.packets + c.b_to_a.packets;
            b += c.a_to_b.bytes + c.b_to_a.bytes;
        }
        (p, b)
    }

    /// Carries out one command of the proxy.
    pub fn execute(&self, cmd: MediaCommand) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        match cmd {
            MediaCommand::Program { call_id, streams } => {
                // Ports stay the same across re-offers; the old pairs are replaced and what
                // they relayed is carried over to the pair at the same position.
                let old = calls.remove(&call_id).unwrap_or_default();
                let carried: Vec<(u64, u64)> = old
                    .into_iter()
                    .map(|(id, before)| {
                        let (a, b) = self.remove(id);
                        (before.0 + a, before.1 + b)
                    })
                    .collect();
                let mut ids = Vec::new();
                for plan in &streams {
                    let learn = [
                        self.learn_of(&plan.sides[0].interface),
                        self.learn_of(&plan.sides[1].interface),
                    ];
                    for spec in pairs_from_plan(plan, learn) {
                        let transforms = secure_transforms(&call_id, plan, &spec);
                        match self.datapath.create_pair_with(spec, transforms) {
                            Ok(id) => {
                                let before = carried.get(ids.len()).copied().unwrap_or((0, 0));
                                ids.push((id, before));
                            }
                            Err(e) => warn!(call_id, error = %e, "cannot create relay pair"),
                        }
                    }
                }
                debug!(call_id, pairs = ids.len(), "media relay programmed");
                calls.insert(call_id, ids);
            }
            MediaCommand::Release { call_id } => {
                for (id, before) in calls.remove(&call_id).unwrap_or_default() {
                    let (a, b) = self.remove(id);
                    self.metrics
                        .media_stream_ended(StreamKind::of(before.0 + a, before.1 + b));
                }
                debug!(call_id, "media relay released");
            }
        }
    }

    /// Packets relayed so far per call (both directions of every pair), for media
    /// timeouts.
    pub fn activity(&self) -> Vec<(String, u64)> {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls
            .iter()
            .map(|(call, ids)| {
                let total = ids
                    .iter()
                    .filter_map(|(id, _)| self.datapath.pair(*id))
                    .map(|c| c.a_to_b.packets + c.b_to_a.packets)
                    .sum();
                (call.clone(), total)
            })
            .collect()
    }

    /// The XDP program's packet counts by outcome (None with the userspace datapath).
    pub fn xdp_outcomes(&self) -> Option<Vec<(&'static str, u64)>> {
        match self.datapath.xdp_stats()? {
            Ok(stats) => Some(stats.iter().map(|(o, n)| (o.name(), n)).collect()),
            Err(e) => {
                debug!(error = %e, "cannot read XDP statistics");
                None
            }
        }
    }

    /// Number of relay pairs (streams and their RTCP) in use.
    pub fn pair_count(&self) -> usize {
        self.calls
            .lock()
            .map(|c| c.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Relay pairs in use by where they are forwarded: (both directions in XDP, the rest).
    pub fn pairs_by_datapath(&self) -> (usize, usize) {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let mut xdp = 0;
        let mut user = 0;
        for (id, _) in calls.values().flatten() {
            match self.datapath.pair(*id) {
                Some(c) if c.a_to_b_in_xdp && c.b_to_a_in_xdp => xdp += 1,
                Some(_) => user += 1,
                None => {}
            }
        }
        (xdp, user)
    }

    /// The datapath, for counters.
    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }
}

/// SRTP termination of a pair's legs (SDES keys or DTLS-SRTP/ICE-lite parameters from the
/// offer/answer): a secure leg per side that has them, so only authenticated media is relayed from that party and what is
/// sent to it is protected. A side whose keys cannot be used gets a transform that drops
/// everything rather than a plain leg (never relay unprotected where SRTP was agreed).
fn secure_transforms(
    call_id: &str,
    plan: &media_engine::StreamPlan,
    spec: &media_engine::datapath::FlowPairSpec,
) -> [Option<Box<dyn LegTransform>>; 2] {
    let peers = [spec.a.peer, spec.b.peer];
    let mut out: [Option<Box<dyn LegTransform>>; 2] = [None, None];
    for (i, side) in plan.sides.iter().enumerate() {
        let security = match (&side.sdes, &side.dtls) {
            (Some(keys), _) => LegSecurity::Sdes {
                local: keys.local.clone(),
                remote: keys.remote.clone(),
            },
            (None, Some(d)) => LegSecurity::DtlsSrtp {
                role: d.role,
                certificate: d.certificate.clone(),
                remote_fingerprints: d.remote_fingerprints.clone(),
                ice: d.ice.clone(),
            },
            (None, None) => continue,
        };
        match SecureLeg::new(security, peers[i], std::time::Instant::now()) {
            Ok(leg) => out[i] = Some(Box::new(leg)),
            Err(e) => {
                warn!(call_id, error = %e, "SRTP leg cannot be set up; its media is dropped");
                out[i] = Some(Box::new(DropAll));
            }
        }
    }
    out
}

/// A transform that relays nothing (a secure leg whose keys are unusable).
struct DropAll;

impl LegTransform for DropAll {
    fn inbound(
        &mut self,
        _: std::time::Instant,
        _: std::net::SocketAddr,
        _: &[u8],
    ) -> media_engine::datapath::TransformInbound {
        media_engine::datapath::TransformInbound::Dropped
    }
    fn outbound(&mut self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn destination(&self) -> Option<std::net::SocketAddr> {
        None
    }
    fn poll_transmit(&mut self) -> Option<(std::net::SocketAddr, Vec<u8>)> {
        None
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        None
    }
    fn handle_timeout(&mut self, _: std::time::Instant) {}
}

/// How a relayed stream (one relay pair, both directions) ended, as rtpengine reports
/// one-way and zero-packet streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    TwoWay,
    OneWay,
    ZeroPacket,
}

impl StreamKind {
    pub fn of(a_to_b: u64, b_to_a: u64) -> StreamKind {
        match (a_to_b > 0, b_to_a > 0) {
            (true, true) => StreamKind::TwoWay,
            (false, false) => StreamKind::ZeroPacket,
            _ => StreamKind::OneWay,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::TwoWay => "two_way",
            StreamKind::OneWay => "one_way",
            StreamKind::ZeroPacket => "zero_packet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StreamKind;

    #[test]
    fn stream_kinds() {
        assert_eq!(StreamKind::of(5, 3), StreamKind::TwoWay);
        assert_eq!(StreamKind::of(5, 0), StreamKind::OneWay);
        assert_eq!(StreamKind::of(0, 1), StreamKind::OneWay);
        assert_eq!(StreamKind::of(0, 0), StreamKind::ZeroPacket);
        assert_eq!(StreamKind::ZeroPacket.as_str(), "zero_packet");
    }
}
