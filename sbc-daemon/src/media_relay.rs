//! The IO side of media anchoring: owns the datapath (XDP or userspace relay from
//! `media-engine`) and carries out the proxy's [`MediaCommand`]s, keeping the relay pairs of
//! every call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media_engine::datapath::TransformInbound;
use media_engine::datapath::{
    pairs_from_plan, Datapath, DatapathConfig, DatapathKind, FlowPairSpec, LearnPolicy,
    LegTransform, PairId, RelayIo, UserspaceOptions,
};
use media_engine::secure::{LegSecurity, SecureEvent, SecureLeg, SecureStats};
use portcullis_config::{Config, DatapathChoice, RelayIoChoice};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::proxy::media::MediaCommand;

/// A relay pair of a call.
#[derive(Debug, Clone)]
struct CallPair {
    id: PairId,
    /// Packets (a->b, b->a) relayed by earlier pairs at this position (replaced on re-offers).
    carried: (u64, u64),
    spec: FlowPairSpec,
    /// What terminates SRTP on each side (None: plain).
    security: [SideSecurity; 2],
}

/// The SRTP termination parameters of one side of a pair, to tell whether a re-offer changed
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SideSecurity {
    Plain,
    Sdes(media_engine::SdesKeys),
    Dtls(media_engine::DtlsKeys),
}

fn side_security(plan: &media_engine::StreamPlan) -> [SideSecurity; 2] {
    let of = |s: &media_engine::StreamSide| match (&s.sdes, &s.dtls) {
        (Some(k), _) => SideSecurity::Sdes(k.clone()),
        (None, Some(d)) => SideSecurity::Dtls(d.clone()),
        (None, None) => SideSecurity::Plain,
    };
    [of(&plan.sides[0]), of(&plan.sides[1])]
}

pub struct MediaRelay {
    datapath: Datapath,
    metrics: Arc<Metrics>,
    /// What the secure legs of every call counted (for metrics).
    secure: Arc<SecureTotals>,
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
            userspace: UserspaceOptions {
                workers: cfg.media.relay_workers as usize,
                io: match cfg.media.relay_io {
                    RelayIoChoice::Auto => RelayIo::Auto,
                    RelayIoChoice::IoUring => RelayIo::IoUring,
                    RelayIoChoice::Epoll => RelayIo::Epoll,
                },
                coalesce: Duration::from_micros(u64::from(cfg.media.relay_coalesce_us)),
                ..UserspaceOptions::default()
            },
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
        metrics.media_relay_io(datapath.relay_io().as_str());
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
            secure: Arc::new(SecureTotals::default()),
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
                // Ports stay the same across re-offers. A secure pair whose sockets and keys
                // did not change is updated in place, so its SRTP contexts and DTLS
                // association go on (a hold re-INVITE must not restart DTLS); other pairs are
                // replaced and what they relayed is carried over to the pair at the same
                // position.
                let mut old: Vec<Option<CallPair>> = calls
                    .remove(&call_id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Some)
                    .collect();
                let mut pairs: Vec<CallPair> = Vec::new();
                for plan in &streams {
                    let learn = [
                        self.learn_of(&plan.sides[0].interface),
                        self.learn_of(&plan.sides[1].interface),
                    ];
                    let security = side_security(plan);
                    for spec in pairs_from_plan(plan, learn) {
                        let pos = pairs.len();
                        let keep = old.get(pos).and_then(Option::as_ref).is_some_and(|o| {
                            o.security.iter().any(|s| *s != SideSecurity::Plain)
                                && o.security == security
                                && o.spec.a.local == spec.a.local
                                && o.spec.b.local == spec.b.local
                                && o.spec.rtcp.map(|r| (r.muxed, r.leg.local))
                                    == spec.rtcp.map(|r| (r.muxed, r.leg.local))
                        });
                        if keep {
                            if let Some(mut o) = old.get_mut(pos).and_then(Option::take) {
                                if let Err(e) = self.datapath.update_pair(o.id, spec) {
                                    warn!(call_id, error = %e, "cannot update relay pair");
                                }
                                o.spec = spec;
                                pairs.push(o);
                                continue;
                            }
                        }
                        let carried = match old.get_mut(pos).and_then(Option::take) {
                            Some(o) => {
                                let (a, b) = self.remove(o.id);
                                (o.carried.0 + a, o.carried.1 + b)
                            }
                            None => (0, 0),
                        };
                        let transforms = secure_transforms(&call_id, plan, &spec, &self.secure);
                        match self.datapath.create_pair_with(spec, transforms) {
                            Ok(id) => pairs.push(CallPair {
                                id,
                                carried,
                                spec,
                                security: security.clone(),
                            }),
                            Err(e) => warn!(call_id, error = %e, "cannot create relay pair"),
                        }
                    }
                }
                // Pairs of streams that went away.
                for o in old.into_iter().flatten() {
                    self.remove(o.id);
                }
                debug!(call_id, pairs = pairs.len(), "media relay programmed");
                calls.insert(call_id, pairs);
            }
            MediaCommand::Release { call_id } => {
                for p in calls.remove(&call_id).unwrap_or_default() {
                    let (a, b) = self.remove(p.id);
                    self.metrics
                        .media_stream_ended(StreamKind::of(p.carried.0 + a, p.carried.1 + b));
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
                    .filter_map(|p| self.datapath.pair(p.id))
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

    /// Totals of the secure legs (SRTP/DTLS/ICE) since start.
    pub fn secure_totals(&self) -> SecureSnapshot {
        self.secure.snapshot()
    }

    /// Relay pairs in use by where they are forwarded: (both directions in XDP, the rest).
    pub fn pairs_by_datapath(&self) -> (usize, usize) {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let mut xdp = 0;
        let mut user = 0;
        for p in calls.values().flatten() {
            match self.datapath.pair(p.id) {
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
    totals: &Arc<SecureTotals>,
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
            Ok(leg) => {
                out[i] = Some(Box::new(MeteredLeg {
                    leg,
                    totals: totals.clone(),
                    last: SecureStats::default(),
                }))
            }
            Err(e) => {
                warn!(call_id, error = %e, "SRTP leg cannot be set up; its media is dropped");
                out[i] = Some(Box::new(DropAll));
            }
        }
    }
    out
}

/// Counters of all secure legs, shared with the relay workers.
#[derive(Debug, Default)]
pub struct SecureTotals {
    dtls_connected: AtomicU64,
    dtls_failed: AtomicU64,
    consent_expired: AtomicU64,
    auth_failures: AtomicU64,
    replays: AtomicU64,
    dtls_rejected: AtomicU64,
    hello_rejected: AtomicU64,
}

/// A copy of [`SecureTotals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecureSnapshot {
    pub dtls_connected: u64,
    pub dtls_failed: u64,
    pub consent_expired: u64,
    /// SRTP/SRTCP with a bad authentication tag (from any source).
    pub auth_failures: u64,
    pub replays: u64,
    /// DTLS datagrams from sources not accepted (S-23), ClientHellos included.
    pub dtls_rejected: u64,
    pub hello_rejected: u64,
}

impl SecureTotals {
    fn snapshot(&self) -> SecureSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SecureSnapshot {
            dtls_connected: g(&self.dtls_connected),
            dtls_failed: g(&self.dtls_failed),
            consent_expired: g(&self.consent_expired),
            auth_failures: g(&self.auth_failures),
            replays: g(&self.replays),
            dtls_rejected: g(&self.dtls_rejected),
            hello_rejected: g(&self.hello_rejected),
        }
    }
}

/// A secure leg that reports what it counted to [`SecureTotals`]: its events (handshakes,
/// consent) and the growth of its drop counters.
struct MeteredLeg {
    leg: SecureLeg,
    totals: Arc<SecureTotals>,
    last: SecureStats,
}

impl MeteredLeg {
    fn account(&mut self) {
        let t = &self.totals;
        while let Some(ev) = self.leg.poll_event() {
            match ev {
                SecureEvent::DtlsConnected => t.dtls_connected.fetch_add(1, Ordering::Relaxed),
                SecureEvent::DtlsFailed(_) => t.dtls_failed.fetch_add(1, Ordering::Relaxed),
                SecureEvent::ConsentExpired => t.consent_expired.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        let now = self.leg.stats();
        let add = |a: &AtomicU64, new: u64, old: u64| {
            if new > old {
                a.fetch_add(new - old, Ordering::Relaxed);
            }
        };
        add(&t.auth_failures, now.auth_failures, self.last.auth_failures);
        add(&t.replays, now.replays, self.last.replays);
        add(&t.dtls_rejected, now.dtls_rejected, self.last.dtls_rejected);
        add(
            &t.hello_rejected,
            now.hello_rejected,
            self.last.hello_rejected,
        );
        self.last = now;
    }
}

impl LegTransform for MeteredLeg {
    fn inbound(&mut self, now: Instant, src: SocketAddr, data: &[u8]) -> TransformInbound {
        let r = LegTransform::inbound(&mut self.leg, now, src, data);
        if !matches!(r, TransformInbound::Media { .. }) {
            // Drops and handshake steps are rare; media is counted by the relay itself.
            self.account();
        }
        r
    }
    fn outbound(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        LegTransform::outbound(&mut self.leg, plain)
    }
    fn destination(&self) -> Option<SocketAddr> {
        LegTransform::destination(&self.leg)
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        LegTransform::poll_transmit(&mut self.leg)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        LegTransform::poll_timeout(&self.leg)
    }
    fn handle_timeout(&mut self, now: Instant) {
        LegTransform::handle_timeout(&mut self.leg, now);
        self.account();
    }
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
    use super::*;
    use media_engine::ports::RelayPorts;
    use media_engine::sdp::Direction;
    use media_engine::secure::SdesCrypto;
    use media_engine::srtp::SrtpProfile;
    use media_engine::{SdesKeys, StreamPlan, StreamSide};

    fn side(port: u16, sdes: Option<SdesKeys>) -> StreamSide {
        StreamSide {
            tag: Some("t".into()),
            interface: "lo".into(),
            local_address: "127.0.0.1".parse().unwrap(),
            local_ports: Some(RelayPorts {
                rtp: port,
                rtcp: None,
            }),
            peer_rtp: Some("127.0.0.1:9".parse().unwrap()),
            peer_rtcp: None,
            rtcp_mux: true,
            direction: Direction::SendRecv,
            hold: false,
            payload_types: vec![0],
            disabled: false,
            sdes,
            dtls: None,
        }
    }

    fn free_port() -> u16 {
        // An even free port (the relay binds it; released here first).
        loop {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let p = s.local_addr().unwrap().port();
            if p.is_multiple_of(2) && p < 65000 {
                return p;
            }
        }
    }

    #[test]
    fn secure_pairs_survive_re_offers_with_the_same_keys() {
        let cfg = portcullis_config::load_str(
            "media: { datapath: userspace }\ninterfaces:\n  - name: lo\n    listeners: [{ name: l, proto: udp, address: 127.0.0.1, port: 5999 }]\n    media: { address: 127.0.0.1, port_min: 40000, port_max: 40100 }\n",
            "t.yaml",
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new(&["lo".into()]));
        let relay = MediaRelay::start(&cfg, &metrics).expect("relay");
        let keys = SdesKeys {
            local: SdesCrypto::generate(1, SrtpProfile::AesCm128HmacSha1_80),
            remote: SdesCrypto::generate(1, SrtpProfile::AesCm128HmacSha1_80),
        };
        let (pa, pb) = (free_port(), free_port());
        let plan = |k: &SdesKeys| StreamPlan {
            index: 0,
            media: "audio".into(),
            sides: [side(pa, Some(k.clone())), side(pb, None)],
        };
        let program = |p: StreamPlan| {
            relay.execute(MediaCommand::Program {
                call_id: "c".into(),
                streams: vec![p],
            })
        };
        let ids =
            || -> Vec<PairId> { relay.datapath().pairs().iter().map(|c| c.info.id).collect() };
        program(plan(&keys));
        let first = ids();
        assert_eq!(first.len(), 1);
        // A re-offer (e.g. hold) with the same keys and sockets: the same pair, SRTP goes on.
        program(plan(&keys));
        assert_eq!(ids(), first);
        // New keys: a new secure leg.
        let rekeyed = SdesKeys {
            local: keys.local.clone(),
            remote: SdesCrypto::generate(2, SrtpProfile::AesCm128HmacSha1_80),
        };
        program(plan(&rekeyed));
        let after = ids();
        assert_eq!(after.len(), 1);
        assert_ne!(after, first);
        relay.execute(MediaCommand::Release {
            call_id: "c".into(),
        });
        assert!(ids().is_empty());
    }

    #[test]
    fn stream_kinds() {
        assert_eq!(StreamKind::of(5, 3), StreamKind::TwoWay);
        assert_eq!(StreamKind::of(5, 0), StreamKind::OneWay);
        assert_eq!(StreamKind::of(0, 1), StreamKind::OneWay);
        assert_eq!(StreamKind::of(0, 0), StreamKind::ZeroPacket);
        assert_eq!(StreamKind::ZeroPacket.as_str(), "zero_packet");
    }
}
