//! Media datapath: relays RTP/RTCP between the two legs of a stream, in
//! userspace or with the XDP program of `ebpf-relay`, with latching and RTP
//! Bleed/Inject protection (CVE-2025-53399).
//!
//! - [`table`]: the sans-IO flow table both datapaths share (latching rules,
//!   RFC 7983 demultiplexing, counters with the XDP per-flow meaning).
//! - [`userspace`]: the socket relay (epoll + recvmmsg/sendmmsg, a fixed pool
//!   of worker threads).
//! - [`xdp`]: installation of latched directions in the XDP map (strict).
//! - [`Datapath`]: what the media engine / sbcd use: create/update/remove a
//!   flow pair, counters, list, and which datapath is active
//!   ([`ActiveDatapath::as_str`] for `sbc_media_datapath{kind}`).
//!
//! With XDP the relay sockets are bound too: a direction not latched yet has
//! no map entry, so the program passes its packets up and the userspace relay
//! handles (and latches) them; once both legs of a direction are final it is
//! installed in XDP as strict.

pub mod sys;
pub mod table;
pub mod transform;
mod uring;
pub mod userspace;
pub mod xdp;

use std::net::SocketAddr;
use std::sync::Arc;

pub use ebpf_relay::{AttachMode, FlowCounters, RelayStats};
use ebpf_relay::{RelayError, RelayOptions, XdpRelay};
use tracing::{info, warn};
pub use transform::{LegTransform, TransformInbound};

use crate::session::StreamPlan;
pub use table::{
    is_rtcp, ControlKind, DirectionCounters, DropReason, FlowPairSpec, FlowTable, LatchState,
    LearnPolicy, LegInfo, LegSpec, PairId, PairInfo, RtcpDemux, Side, TableError, Verdict,
};
pub use userspace::{
    ControlCallback, ControlPacket, RelayIo, UserspaceOptions, UserspaceRelay, UserspaceStats,
    DEFAULT_COALESCE,
};

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("binding relay socket {local}: {source}")]
    Bind {
        local: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("datapath I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("XDP datapath: {0}")]
    Xdp(#[from] RelayError),
    #[error("XDP datapath requested but no interface configured")]
    NoXdpInterface,
    #[error("no relay socket bound on {0}")]
    NoSocket(SocketAddr),
}

/// Requested datapath (config `datapath: auto | xdp | userspace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatapathKind {
    /// XDP if it can be loaded and attached (root, driver), else userspace
    /// with a warning.
    #[default]
    Auto,
    /// XDP or fail.
    Xdp,
    /// Userspace only.
    Userspace,
}

/// Datapath actually in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveDatapath {
    Xdp,
    Userspace,
}

impl ActiveDatapath {
    /// Label value for `sbc_media_datapath{kind}`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveDatapath::Xdp => "xdp",
            ActiveDatapath::Userspace => "userspace",
        }
    }
}

/// Datapath configuration.
#[derive(Clone, Debug, Default)]
pub struct DatapathConfig {
    pub kind: DatapathKind,
    /// Interfaces to attach XDP to (in the namespace of the calling thread).
    pub xdp_interfaces: Vec<String>,
    pub attach_mode: AttachMode,
    pub xdp_max_flows: Option<u32>,
    pub userspace: UserspaceOptions,
}

/// Local sockets of a pair's legs (a, b, then the RTCP leg of a muxed/non-muxed pair).
fn info_locals(info: &PairInfo) -> Vec<SocketAddr> {
    let mut v = vec![info.a.spec.local, info.b.spec.local];
    if let Some((_, c)) = &info.rtcp {
        v.push(c.spec.local);
    }
    v
}

/// The RTCP leg of a muxed/non-muxed pair carries the non-muxed party's RTCP toward the
/// muxed party: counted in that direction (userspace and XDP counts).
fn fold_rtcp(info: &PairInfo, xdp: FlowCounters, ab: &mut FlowCounters, ba: &mut FlowCounters) {
    if let Some((muxed, c)) = &info.rtcp {
        let total = xdp::merge_counters(c.counters.forwarded, xdp);
        match muxed {
            Side::A => *ba = xdp::merge_counters(*ba, total),
            Side::B => *ab = xdp::merge_counters(*ab, total),
        }
    }
}

/// Counters of a pair's directions across both datapaths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairCounters {
    /// Packets entering at `a.local` (leg a's party toward b's): userspace
    /// and XDP forwarded counts summed.
    pub a_to_b: FlowCounters,
    pub b_to_a: FlowCounters,
    /// Full per-leg state from the userspace table (drops, latching).
    pub info: PairInfo,
    /// Whether each direction is currently forwarded by XDP.
    pub a_to_b_in_xdp: bool,
    pub b_to_a_in_xdp: bool,
}

/// The datapath the media engine drives.
pub struct Datapath {
    user: UserspaceRelay,
    xdp: Option<xdp::Shared>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

fn start_xdp(cfg: &DatapathConfig) -> Result<XdpRelay, DatapathError> {
    if cfg.xdp_interfaces.is_empty() {
        return Err(DatapathError::NoXdpInterface);
    }
    let mut opts = RelayOptions::default();
    if let Some(m) = cfg.xdp_max_flows {
        opts.max_flows = m;
    }
    let mut relay = XdpRelay::load(opts)?;
    for ifname in &cfg.xdp_interfaces {
        let mode = relay.attach(ifname, cfg.attach_mode)?;
        info!(ifname, ?mode, "XDP datapath attached");
    }
    Ok(relay)
}

impl Datapath {
    /// Starts the datapath chosen by `cfg.kind`. Call it from the network
    /// namespace that owns the relay interfaces. `control` receives STUN/DTLS
    /// packets arriving on relay sockets.
    pub fn start(
        cfg: &DatapathConfig,
        control: Option<ControlCallback>,
    ) -> Result<Self, DatapathError> {
        let relay = match cfg.kind {
            DatapathKind::Userspace => None,
            DatapathKind::Xdp => Some(start_xdp(cfg)?),
            DatapathKind::Auto => match start_xdp(cfg) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(error = %e, "XDP datapath unavailable; falling back to the userspace relay");
                    None
                }
            },
        };
        let shared = relay.map(|r| Arc::new(xdp::XdpShared::new(r)));
        let hook: Option<userspace::EventHook> = shared.clone().map(|s| {
            let h: userspace::EventHook =
                Arc::new(move |t: &FlowTable, e: &[table::TableEvent]| s.on_events(t, e));
            h
        });
        let mut opts = cfg.userspace.clone();
        // Under XDP, latched flows leave userspace; what still arrives is for it to see.
        opts.connect_latched &= shared.is_none();
        let user = UserspaceRelay::start_with_hook(opts, control, hook)?;
        let dp = Self { user, xdp: shared };
        info!(
            kind = dp.active().as_str(),
            relay_io = dp.relay_io().as_str(),
            "media datapath active"
        );
        Ok(dp)
    }

    /// The datapath in use.
    pub fn active(&self) -> ActiveDatapath {
        if self.xdp.is_some() {
            ActiveDatapath::Xdp
        } else {
            ActiveDatapath::Userspace
        }
    }

    /// Binds the legs' relay sockets (in the network namespace of the calling
    /// thread) and starts relaying.
    pub fn create_pair(&self, spec: FlowPairSpec) -> Result<PairId, DatapathError> {
        self.user.create_pair(spec)
    }

    /// Like [`Self::create_pair`], with the transforms of secure legs (SRTP termination)
    /// in place from the first packet. Transformed pairs stay in userspace.
    pub fn create_pair_with(
        &self,
        spec: FlowPairSpec,
        transforms: [Option<Box<dyn LegTransform>>; 2],
    ) -> Result<PairId, DatapathError> {
        self.user.create_pair_with(spec, transforms)
    }

    /// Changes peers/learning of a pair; legs that changed re-latch (and leave
    /// XDP until they are final again).
    pub fn update_pair(&self, id: PairId, spec: FlowPairSpec) -> Result<(), DatapathError> {
        let x = self.xdp.clone();
        self.user.update_pair_then(id, spec, |t| {
            if let Some(x) = x {
                let locals = spec.locals();
                x.uninstall(&locals, true);
                // Re-install what is still final with the new addresses.
                let evs: Vec<table::TableEvent> = locals
                    .iter()
                    .map(|l| table::TableEvent::Latched {
                        pair: id,
                        local: *l,
                    })
                    .collect();
                x.on_events(t, &evs);
            }
        })
    }

    /// Removes a pair: XDP entries and sockets are gone when this returns.
    pub fn remove_pair(&self, id: PairId) -> Option<PairCounters> {
        let x = self.xdp.clone();
        let mut xdp_counts = (FlowCounters::default(), FlowCounters::default());
        let mut xdp_rtcp = (Side::A, FlowCounters::default());
        let info = self.user.remove_pair_then(id, |info| {
            if let Some(x) = x {
                let c = x.uninstall(&info_locals(info), false);
                if let [a, b, ..] = c[..] {
                    xdp_counts = (a, b);
                }
                if let (Some((side, _)), Some(r)) = (info.rtcp, c.get(2)) {
                    xdp_rtcp = (side, *r);
                }
            }
        })?;
        let (mut ab, mut ba) = (info.a.counters.forwarded, info.b.counters.forwarded);
        ab = xdp::merge_counters(ab, xdp_counts.0);
        ba = xdp::merge_counters(ba, xdp_counts.1);
        fold_rtcp(&info, xdp_rtcp.1, &mut ab, &mut ba);
        Some(PairCounters {
            a_to_b: ab,
            b_to_a: ba,
            info,
            a_to_b_in_xdp: false,
            b_to_a_in_xdp: false,
        })
    }

    fn with_xdp(&self, info: PairInfo) -> PairCounters {
        let (mut ab, mut ba) = (info.a.counters.forwarded, info.b.counters.forwarded);
        let (mut ia, mut ib) = (false, false);
        let mut rtcp_xdp = FlowCounters::default();
        if let Some(x) = &self.xdp {
            ab = xdp::merge_counters(ab, x.counters(info.a.spec.local));
            ba = xdp::merge_counters(ba, x.counters(info.b.spec.local));
            ia = x.is_installed(info.a.spec.local);
            ib = x.is_installed(info.b.spec.local);
            if let Some((_, c)) = &info.rtcp {
                rtcp_xdp = x.counters(c.spec.local);
            }
        }
        fold_rtcp(&info, rtcp_xdp, &mut ab, &mut ba);
        PairCounters {
            a_to_b: ab,
            b_to_a: ba,
            info,
            a_to_b_in_xdp: ia,
            b_to_a_in_xdp: ib,
        }
    }

    /// Counters and state of one pair.
    pub fn pair(&self, id: PairId) -> Option<PairCounters> {
        self.user.pair(id).map(|i| self.with_xdp(i))
    }

    /// Every pair.
    pub fn pairs(&self) -> Vec<PairCounters> {
        self.user
            .pairs()
            .into_iter()
            .map(|i| self.with_xdp(i))
            .collect()
    }

    /// Sends `data` from relay socket `local` to `to` (for the ICE/DTLS code;
    /// callable from the control callback).
    pub fn send_from(
        &self,
        local: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> Result<(), DatapathError> {
        self.user.send_from(local, to, data)
    }

    /// The socket I/O of the userspace relay (io_uring or epoll).
    pub fn relay_io(&self) -> RelayIo {
        self.user.io()
    }

    /// Userspace relay counters.
    pub fn userspace_stats(&self) -> UserspaceStats {
        self.user.stats()
    }

    /// XDP program statistics (None with the userspace datapath).
    pub fn xdp_stats(&self) -> Option<Result<RelayStats, RelayError>> {
        self.xdp.as_ref().map(|x| x.lock().relay.stats())
    }
}

/// Flow pairs for one stream of the offer/answer engine: RTP, plus RTCP when
/// both sides have a separate RTCP port. `learn[k]` is the NAT learning of
/// `plan.sides[k]`. Disabled streams give none.
///
/// Not handled: one side rtcp-mux and the other not (RTCP demultiplexing by
/// payload type on the muxed side); such RTCP is relayed only on the RTP pair.
pub fn pairs_from_plan(plan: &StreamPlan, learn: [LearnPolicy; 2]) -> Vec<FlowPairSpec> {
    let [s0, s1] = &plan.sides;
    let (Some(p0), Some(p1)) = (s0.local_ports, s1.local_ports) else {
        return Vec::new();
    };
    if s0.disabled || s1.disabled {
        return Vec::new();
    }
    let leg = |addr, port, peer, learn| LegSpec {
        local: SocketAddr::new(addr, port),
        peer,
        learn,
    };
    let rtcp_peer = |rtcp: Option<SocketAddr>, rtp: Option<SocketAddr>| {
        rtcp.or_else(|| rtp.map(|r| SocketAddr::new(r.ip(), r.port().wrapping_add(1))))
    };
    let mut rtp = FlowPairSpec::new(
        leg(s0.local_address, p0.rtp, s0.peer_rtp, learn[0]),
        leg(s1.local_address, p1.rtp, s1.peer_rtp, learn[1]),
    );
    match (p0.rtcp, p1.rtcp) {
        (Some(r0), Some(r1)) => vec![
            rtp,
            FlowPairSpec::new(
                leg(
                    s0.local_address,
                    r0,
                    rtcp_peer(s0.peer_rtcp, s0.peer_rtp),
                    learn[0],
                ),
                leg(
                    s1.local_address,
                    r1,
                    rtcp_peer(s1.peer_rtcp, s1.peer_rtp),
                    learn[1],
                ),
            ),
        ],
        // One side muxes (RFC 5761), the other has its own RTCP port: RTCP is split off
        // the muxed leg by packet type.
        (None, Some(r1)) => {
            rtp.rtcp = Some(RtcpDemux {
                muxed: Side::A,
                leg: leg(
                    s1.local_address,
                    r1,
                    rtcp_peer(s1.peer_rtcp, s1.peer_rtp),
                    learn[1],
                ),
            });
            vec![rtp]
        }
        (Some(r0), None) => {
            rtp.rtcp = Some(RtcpDemux {
                muxed: Side::B,
                leg: leg(
                    s0.local_address,
                    r0,
                    rtcp_peer(s0.peer_rtcp, s0.peer_rtp),
                    learn[0],
                ),
            });
            vec![rtp]
        }
        (None, None) => vec![rtp],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::RelayPorts;
    use crate::sdp::Direction;
    use crate::session::StreamSide;
    use std::net::IpAddr;

    fn side(addr: &str, rtp: u16, rtcp: Option<u16>, peer: Option<&str>) -> StreamSide {
        StreamSide {
            tag: Some("t".into()),
            interface: "pub".into(),
            local_address: addr.parse::<IpAddr>().unwrap(),
            local_ports: Some(RelayPorts { rtp, rtcp }),
            peer_rtp: peer.map(|p| p.parse().unwrap()),
            peer_rtcp: None,
            rtcp_mux: rtcp.is_none(),
            direction: Direction::SendRecv,
            hold: false,
            payload_types: vec![0],
            disabled: false,
            sdes: None,
            dtls: None,
        }
    }

    #[test]
    fn plan_gives_rtp_and_rtcp_pairs() {
        let plan = StreamPlan {
            index: 0,
            media: "audio".into(),
            sides: [
                side("192.0.2.1", 30000, Some(30001), Some("203.0.113.5:5004")),
                side("10.0.0.1", 40000, Some(40001), None),
            ],
        };
        let w = LearnPolicy::DEFAULT_WINDOW;
        let pairs = pairs_from_plan(&plan, [w, LearnPolicy::Off]);
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            pairs[0].a.local,
            "192.0.2.1:30000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            pairs[0].a.peer,
            Some("203.0.113.5:5004".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(pairs[0].a.learn, w);
        assert_eq!(
            pairs[0].b.local,
            "10.0.0.1:40000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(pairs[0].b.peer, None);
        assert_eq!(pairs[0].b.learn, LearnPolicy::Off);
        // RTCP: the next port by default (RFC 3605 absent).
        assert_eq!(
            pairs[1].a.local,
            "192.0.2.1:30001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            pairs[1].a.peer,
            Some("203.0.113.5:5005".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(
            pairs[1].b.local,
            "10.0.0.1:40001".parse::<SocketAddr>().unwrap()
        );

        // Side 0 muxes, side 1 does not: one pair, RTCP split off to side 1's RTCP socket.
        let mut muxed = plan.clone();
        muxed.sides[0] = side("192.0.2.1", 30000, None, Some("203.0.113.5:5004"));
        let p = pairs_from_plan(&muxed, [w, LearnPolicy::Off]);
        assert_eq!(p.len(), 1);
        let r = p[0].rtcp.expect("RTCP demux");
        assert_eq!(r.muxed, Side::A);
        assert_eq!(r.leg.local, "10.0.0.1:40001".parse::<SocketAddr>().unwrap());
        assert_eq!(r.leg.learn, LearnPolicy::Off);
        let mut muxed_b = plan.clone();
        muxed_b.sides[1] = side("10.0.0.1", 40000, None, None);
        let p = pairs_from_plan(&muxed_b, [w, w]);
        assert_eq!(p.len(), 1);
        let r = p[0].rtcp.expect("RTCP demux");
        assert_eq!(r.muxed, Side::B);
        assert_eq!(
            r.leg.local,
            "192.0.2.1:30001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            r.leg.peer,
            Some("203.0.113.5:5005".parse::<SocketAddr>().unwrap())
        );
        let mut both = muxed;
        both.sides[1] = side("10.0.0.1", 40000, None, None);
        let p = pairs_from_plan(&both, [w, w]);
        assert_eq!(p.len(), 1);
        assert!(p[0].rtcp.is_none());
        let mut disabled = plan;
        disabled.sides[1].disabled = true;
        assert!(pairs_from_plan(&disabled, [w, w]).is_empty());
    }
}
