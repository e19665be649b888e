//! Sans-IO flow table with latching: the per-packet decision both datapaths
//! share. No sockets, no clock: callers pass the local socket a packet arrived
//! on, its source, its first bytes and the time (CLOCK_MONOTONIC ns).
//!
//! Latching (RTP Bleed / RTP Inject protection, CVE-2025-53399): every leg
//! starts unlatched. A packet from a source other than the leg's latched one
//! never changes where media goes.
//! - [`LearnPolicy::Off`]: only the address signalled in SDP is accepted; the
//!   leg is latched (final, strict) from the start.
//! - [`LearnPolicy::Window`]: the window opens with the first packet on the
//!   leg and closes after `packets` packets (from any source) or `duration`.
//!   While it is open, a packet from the SDP address latches the leg at once;
//!   otherwise the first source seen is accepted (NAT learning) and no other
//!   non-SDP source can take its place. When it closes, the leg is latched on
//!   what it learned and strict from then on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ebpf_relay::FlowCounters;

/// Identifier of a flow pair in a datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairId(pub u64);

/// NAT learning for one leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnPolicy {
    /// Accept only the SDP address (strict from the first packet).
    Off,
    /// Learn the source during a short window, then strict.
    Window {
        /// The window closes after this many packets on the leg (any source).
        packets: u32,
        /// ... or this long after its first packet, whichever comes first.
        duration: Duration,
    },
}

impl LearnPolicy {
    /// rtpengine-like default for NATed parties: 10 packets or 3 s.
    pub const DEFAULT_WINDOW: LearnPolicy = LearnPolicy::Window {
        packets: 10,
        duration: Duration::from_secs(3),
    };
}

/// One leg (one party) of a flow pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegSpec {
    /// Local relay socket this party sends to (bound by the datapath).
    pub local: SocketAddr,
    /// Where this party said it receives (SDP); `None` if not known.
    /// Symmetric RTP: it is also the expected source.
    pub peer: Option<SocketAddr>,
    /// NAT learning for this leg.
    pub learn: LearnPolicy,
}

/// A flow pair: packets from leg `a`'s party arriving on `a.local` leave from
/// `b.local` toward `b`'s party, and the reverse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowPairSpec {
    pub a: LegSpec,
    pub b: LegSpec,
    /// One side multiplexes RTCP on its RTP port (RFC 5761) and the other does not.
    pub rtcp: Option<RtcpDemux>,
}

impl FlowPairSpec {
    /// A pair of two legs (RTP, or RTCP when both sides have their own RTCP port).
    pub fn new(a: LegSpec, b: LegSpec) -> Self {
        FlowPairSpec { a, b, rtcp: None }
    }

    /// Every local socket of the pair (two or three).
    pub fn locals(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.a.local, self.b.local];
        if let Some(r) = &self.rtcp {
            v.push(r.leg.local);
        }
        v
    }
}

/// Side of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// RTCP between a side that multiplexes it with RTP (RFC 5761) and one that does not:
/// RTCP (RFC 5761 section 4: second byte 192-223) arriving on the muxed side's socket
/// leaves from `leg.local` (the other side's RTCP relay socket) toward that party's RTCP
/// address, and RTCP arriving on `leg.local` leaves from the muxed socket toward the muxed
/// party. RTP is relayed as in any pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpDemux {
    /// The side that multiplexes.
    pub muxed: Side,
    /// The other side's RTCP leg.
    pub leg: LegSpec,
}

/// Latching state of a leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatchState {
    /// Nothing accepted yet; media to this party goes to its SDP address.
    Unlatched,
    /// Learning window open; `source` accepted so far (not final).
    Learning { source: SocketAddr },
    /// Final: only `source` is accepted, media to this party goes there.
    Latched { source: SocketAddr },
}

/// Why a packet was not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Source is not the latched/expected one (strict, or learn window closed).
    Source,
    /// Not RTP/RTCP (RFC 7983 first byte outside 128-191, or too short).
    Garbage,
    /// The other party's address is not known yet.
    NoDestination,
}

/// STUN or DTLS, by first byte (RFC 7983).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlKind {
    /// First byte 0-3.
    Stun,
    /// First byte 20-63.
    Dtls,
}

/// Decision for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the payload unchanged from local socket `from` to `to`.
    Forward { from: SocketAddr, to: SocketAddr },
    /// Hand to the ICE/DTLS code, do not relay.
    Control(ControlKind),
    /// Drop and count.
    Drop(DropReason),
    /// No flow on that local socket.
    NoFlow,
}

/// RFC 7983 demultiplexing by first byte, as the XDP program does, plus the
/// userspace garbage check (RTP/RTCP is 128-191 and at least 8 bytes).
pub fn classify_first_byte(payload: &[u8]) -> Result<(), Verdict> {
    match payload.first() {
        Some(0..=3) => Err(Verdict::Control(ControlKind::Stun)),
        Some(20..=63) => Err(Verdict::Control(ControlKind::Dtls)),
        Some(128..=191) if payload.len() >= 8 => Ok(()),
        _ => Err(Verdict::Drop(DropReason::Garbage)),
    }
}

/// Counters of one direction (packets arriving on the ingress leg's local
/// socket). `forwarded` has the layout and meaning of the XDP per-flow
/// counters: bytes counted from the IP header, `last_seen_ns` CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    pub forwarded: FlowCounters,
    /// Dropped because of their source (counted in userspace only; in XDP,
    /// strict drops of installed flows are in the global `drop_strict_mismatch`).
    pub rejected_source: u64,
    /// Not RTP/RTCP, dropped.
    pub garbage: u64,
    /// STUN/DTLS handed to the control callback.
    pub control: u64,
    /// Dropped because the destination party's address was unknown.
    pub no_destination: u64,
}

/// State of one leg as reported by [`FlowTable::pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegInfo {
    pub spec: LegSpec,
    pub state: LatchState,
    /// Counters of packets arriving on `spec.local` (this party -> the other).
    pub counters: DirectionCounters,
}

/// One pair as reported by [`FlowTable::pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairInfo {
    pub id: PairId,
    pub a: LegInfo,
    pub b: LegInfo,
    /// The RTCP leg of a muxed/non-muxed pair ([`FlowPairSpec::rtcp`]) and its muxed side.
    pub rtcp: Option<(Side, LegInfo)>,
}

/// Events for the layer above (XDP installation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableEvent {
    /// The leg on this local socket became final (latched, strict).
    Latched { pair: PairId, local: SocketAddr },
}

/// Errors of the flow table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("local socket {0} is already used by another flow")]
    LocalInUse(SocketAddr),
    #[error("both legs use the same local socket {0}")]
    SameLocal(SocketAddr),
    #[error("flow pair {0:?} does not exist")]
    NotFound(PairId),
    #[error("flow pair update cannot change local sockets ({0} -> {1}); remove and create it")]
    LocalChanged(SocketAddr, SocketAddr),
    #[error("address family of {0} differs from its local socket")]
    FamilyMismatch(SocketAddr),
    #[error("flow pair update cannot add, remove or move its RTCP leg; remove and create it")]
    RtcpChanged,
}

#[derive(Debug)]
struct Leg {
    pair: PairId,
    spec: LegSpec,
    /// Local socket of the other leg (egress for packets arriving here).
    other: SocketAddr,
    state: LatchState,
    window_open_ns: Option<u64>,
    window_packets: u32,
    counters: DirectionCounters,
    /// Packets of this leg were authenticated and decrypted by its transform
    /// (`super::transform`): every source it hands over is accepted, and the leg is never
    /// final (never offloaded to XDP).
    transformed: bool,
    /// Where media to a transformed leg's party goes, as its transform last said.
    transform_destination: Option<SocketAddr>,
    /// A muxed leg facing a non-muxed side: the local socket its RTCP leaves from.
    rtcp_via: Option<SocketAddr>,
}

impl Leg {
    fn new(pair: PairId, spec: LegSpec, other: SocketAddr) -> Self {
        let mut l = Leg {
            pair,
            spec,
            other,
            state: LatchState::Unlatched,
            window_open_ns: None,
            window_packets: 0,
            counters: DirectionCounters::default(),
            transformed: false,
            transform_destination: None,
            rtcp_via: None,
        };
        l.reset_latch();
        l
    }

    fn reset_latch(&mut self) {
        self.window_open_ns = None;
        self.window_packets = 0;
        self.state = match (self.spec.learn, self.spec.peer) {
            (LearnPolicy::Off, Some(p)) => LatchState::Latched { source: p },
            _ => LatchState::Unlatched,
        };
    }

    /// Where media for this party goes.
    fn destination(&self) -> Option<SocketAddr> {
        if self.transformed {
            return self.transform_destination;
        }
        match self.state {
            LatchState::Latched { source } | LatchState::Learning { source } => Some(source),
            LatchState::Unlatched => self.spec.peer,
        }
    }

    /// Closes the learn window if its time is up; returns true if the leg
    /// became final.
    fn expire(&mut self, now_ns: u64) -> bool {
        let LearnPolicy::Window { duration, .. } = self.spec.learn else {
            return false;
        };
        match (self.state, self.window_open_ns) {
            (LatchState::Latched { .. }, _) | (_, None) => false,
            (_, Some(open)) => {
                if now_ns.saturating_sub(open) >= duration_ns(duration) {
                    self.close_window()
                } else {
                    false
                }
            }
        }
    }

    fn close_window(&mut self) -> bool {
        let next = match self.state {
            LatchState::Learning { source } => Some(source),
            LatchState::Unlatched => self.spec.peer,
            LatchState::Latched { .. } => None,
        };
        match next {
            Some(source) => {
                self.state = LatchState::Latched { source };
                true
            }
            None => false,
        }
    }

    /// Source check with latching; returns (accepted, became_final).
    fn accept(&mut self, src: SocketAddr, now_ns: u64) -> (bool, bool) {
        let mut became_final = self.expire(now_ns);
        if let LatchState::Latched { source } = self.state {
            return (src == source, became_final);
        }
        let LearnPolicy::Window { packets, .. } = self.spec.learn else {
            // Learn off without an SDP address: nothing is acceptable.
            return (false, became_final);
        };
        if self.window_open_ns.is_none() {
            self.window_open_ns = Some(now_ns);
        }
        self.window_packets = self.window_packets.saturating_add(1);
        let accepted = if Some(src) == self.spec.peer {
            self.state = LatchState::Latched { source: src };
            became_final = true;
            true
        } else {
            match self.state {
                LatchState::Unlatched => {
                    self.state = LatchState::Learning { source: src };
                    true
                }
                LatchState::Learning { source } => src == source,
                LatchState::Latched { source } => src == source,
            }
        };
        if !matches!(self.state, LatchState::Latched { .. }) && self.window_packets >= packets {
            became_final |= self.close_window();
        }
        (accepted, became_final)
    }

    fn info(&self) -> LegInfo {
        LegInfo {
            spec: self.spec,
            state: self.state,
            counters: self.counters,
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// IP + UDP header bytes, so that byte counters match the XDP program's
/// (which counts from the IP header).
pub fn ip_udp_overhead(local: SocketAddr) -> u64 {
    match local {
        SocketAddr::V4(_) => 20 + 8,
        SocketAddr::V6(_) => 40 + 8,
    }
}

fn check_family(spec: &LegSpec) -> Result<(), TableError> {
    if let Some(p) = spec.peer {
        if p.is_ipv4() != spec.local.is_ipv4() {
            return Err(TableError::FamilyMismatch(p));
        }
    }
    Ok(())
}

/// RTCP by the rtcp-mux rule (RFC 5761 section 4): second byte (marker + payload type)
/// 192-223. Used by the flow table (RTCP split off a muxed leg) and the secure legs (SRTCP).
pub fn is_rtcp(payload: &[u8]) -> bool {
    matches!(payload.get(1), Some(192..=223))
}

/// Local sockets of a pair's legs: a, b and the RTCP leg of a muxed/non-muxed pair.
#[derive(Clone, Copy, Debug)]
struct PairLegs {
    a: SocketAddr,
    b: SocketAddr,
    rtcp: Option<(Side, SocketAddr)>,
}

/// The flow table: legs keyed by local relay socket.
#[derive(Debug, Default)]
pub struct FlowTable {
    legs: HashMap<SocketAddr, Leg, foldhash::fast::RandomState>,
    pairs: HashMap<PairId, PairLegs, foldhash::fast::RandomState>,
    events: Vec<TableEvent>,
}

impl FlowTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pair. Legs whose SDP address is known and learning is off are
    /// latched (final) at once, and reported as events.
    pub fn insert(&mut self, id: PairId, spec: FlowPairSpec) -> Result<(), TableError> {
        let locals = spec.locals();
        for (i, l) in locals.iter().enumerate() {
            if locals[..i].contains(l) {
                return Err(TableError::SameLocal(*l));
            }
        }
        for l in &locals {
            if self.legs.contains_key(l) {
                return Err(TableError::LocalInUse(*l));
            }
        }
        check_family(&spec.a)?;
        check_family(&spec.b)?;
        let mut a = Leg::new(id, spec.a, spec.b.local);
        let mut b = Leg::new(id, spec.b, spec.a.local);
        let mut c = None;
        if let Some(r) = spec.rtcp {
            check_family(&r.leg)?;
            let muxed = match r.muxed {
                Side::A => &mut a,
                Side::B => &mut b,
            };
            muxed.rtcp_via = Some(r.leg.local);
            c = Some(Leg::new(id, r.leg, muxed.spec.local));
        }
        for leg in [Some(&a), Some(&b), c.as_ref()].into_iter().flatten() {
            if matches!(leg.state, LatchState::Latched { .. }) {
                self.events.push(TableEvent::Latched {
                    pair: id,
                    local: leg.spec.local,
                });
            }
        }
        self.legs.insert(spec.a.local, a);
        self.legs.insert(spec.b.local, b);
        if let Some(c) = c {
            self.legs.insert(c.spec.local, c);
        }
        self.pairs.insert(
            id,
            PairLegs {
                a: spec.a.local,
                b: spec.b.local,
                rtcp: spec.rtcp.map(|r| (r.muxed, r.leg.local)),
            },
        );
        Ok(())
    }

    /// Changes peers/learning of a pair (re-INVITE). A leg whose SDP address
    /// or policy changed starts unlatched again; counters are kept.
    pub fn update(&mut self, id: PairId, spec: FlowPairSpec) -> Result<(), TableError> {
        let &PairLegs { a: la, b: lb, rtcp } =
            self.pairs.get(&id).ok_or(TableError::NotFound(id))?;
        if spec.a.local != la {
            return Err(TableError::LocalChanged(la, spec.a.local));
        }
        if spec.b.local != lb {
            return Err(TableError::LocalChanged(lb, spec.b.local));
        }
        if rtcp != spec.rtcp.map(|r| (r.muxed, r.leg.local)) {
            return Err(TableError::RtcpChanged);
        }
        check_family(&spec.a)?;
        check_family(&spec.b)?;
        if let Some(r) = &spec.rtcp {
            check_family(&r.leg)?;
        }
        for new in [Some(spec.a), Some(spec.b), spec.rtcp.map(|r| r.leg)]
            .into_iter()
            .flatten()
        {
            if let Some(leg) = self.legs.get_mut(&new.local) {
                if leg.spec != new {
                    leg.spec = new;
                    leg.reset_latch();
                    if matches!(leg.state, LatchState::Latched { .. }) {
                        self.events.push(TableEvent::Latched {
                            pair: id,
                            local: new.local,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes a pair; returns its last state.
    pub fn remove(&mut self, id: PairId) -> Option<PairInfo> {
        let info = self.pair(id);
        if let Some(p) = self.pairs.remove(&id) {
            self.legs.remove(&p.a);
            self.legs.remove(&p.b);
            if let Some((_, c)) = p.rtcp {
                self.legs.remove(&c);
            }
        }
        self.events.retain(|e| match e {
            TableEvent::Latched { pair, .. } => *pair != id,
        });
        info
    }

    /// State and counters of a pair.
    pub fn pair(&self, id: PairId) -> Option<PairInfo> {
        let p = self.pairs.get(&id)?;
        let rtcp = match p.rtcp {
            Some((side, c)) => Some((side, self.legs.get(&c)?.info())),
            None => None,
        };
        Some(PairInfo {
            id,
            a: self.legs.get(&p.a)?.info(),
            b: self.legs.get(&p.b)?.info(),
            rtcp,
        })
    }

    /// Every pair.
    pub fn pairs(&self) -> Vec<PairInfo> {
        let mut v: Vec<PairInfo> = self.pairs.keys().filter_map(|id| self.pair(*id)).collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// No pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pair and the other leg's local socket for a local socket.
    pub fn leg_of(&self, local: SocketAddr) -> Option<(PairId, SocketAddr)> {
        self.legs.get(&local).map(|l| (l.pair, l.other))
    }

    /// The address everything sent from the relay socket `local` goes to, while that is
    /// settled: a final (latched, strict) plain leg's source, or where a secure leg's
    /// transform sends (it may move to another authenticated source or nominated ICE
    /// candidate; [`Self::set_transform_destination`] says when). `None` while a leg is
    /// unlatched or learning.
    pub fn fixed_peer(&self, local: SocketAddr) -> Option<SocketAddr> {
        let leg = self.legs.get(&local)?;
        match leg.state {
            _ if leg.transformed => leg.transform_destination,
            LatchState::Latched { source } => Some(source),
            _ => None,
        }
    }

    /// For a muxed leg facing a non-muxed side: the other side's RTCP socket (whose
    /// direction toward this leg's party depends on this leg's latching).
    pub fn rtcp_via(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.legs.get(&local).and_then(|l| l.rtcp_via)
    }

    /// Decides what to do with a packet of `len` bytes of UDP payload starting
    /// with `payload` (only its first bytes are looked at), sent by `src` to
    /// the local relay socket `local`, at `now_ns`; counts it.
    pub fn handle(
        &mut self,
        local: SocketAddr,
        src: SocketAddr,
        payload: &[u8],
        now_ns: u64,
    ) -> Verdict {
        let Some(leg) = self.legs.get_mut(&local) else {
            return Verdict::NoFlow;
        };
        if let Err(v) = classify_first_byte(payload) {
            match v {
                Verdict::Control(_) => leg.counters.control += 1,
                _ => leg.counters.garbage += 1,
            }
            return v;
        }
        let (accepted, became_final) = if leg.transformed {
            (true, false)
        } else {
            leg.accept(src, now_ns)
        };
        let pair = leg.pair;
        let other = match leg.rtcp_via {
            Some(via) if is_rtcp(payload) => via,
            _ => leg.other,
        };
        if became_final {
            self.events.push(TableEvent::Latched { pair, local });
        }
        if !accepted {
            if let Some(leg) = self.legs.get_mut(&local) {
                leg.counters.rejected_source += 1;
            }
            return Verdict::Drop(DropReason::Source);
        }
        let dest = self.legs.get(&other).and_then(Leg::destination);
        let Some(leg) = self.legs.get_mut(&local) else {
            return Verdict::NoFlow;
        };
        match dest {
            Some(to) => {
                let c = &mut leg.counters.forwarded;
                c.packets += 1;
                c.bytes += payload.len() as u64 + ip_udp_overhead(local);
                c.last_seen_ns = now_ns;
                Verdict::Forward { from: other, to }
            }
            None => {
                leg.counters.no_destination += 1;
                Verdict::Drop(DropReason::NoDestination)
            }
        }
    }

    /// Closes learn windows whose time is up (call periodically).
    pub fn tick(&mut self, now_ns: u64) {
        for (local, leg) in self.legs.iter_mut() {
            if leg.expire(now_ns) {
                self.events.push(TableEvent::Latched {
                    pair: leg.pair,
                    local: *local,
                });
            }
        }
    }

    /// Takes pending events.
    pub fn take_events(&mut self) -> Vec<TableEvent> {
        std::mem::take(&mut self.events)
    }

    /// Marks the leg on `local` as transformed (see `super::transform`). Returns false if
    /// there is no such leg.
    pub fn set_transformed(&mut self, local: SocketAddr) -> bool {
        match self.legs.get_mut(&local) {
            Some(l) => {
                l.transformed = true;
                true
            }
            None => false,
        }
    }

    /// The transform of the leg on `local` says where its party receives now.
    /// Returns whether it changed.
    pub fn set_transform_destination(
        &mut self,
        local: SocketAddr,
        dest: Option<SocketAddr>,
    ) -> bool {
        match self.legs.get_mut(&local) {
            Some(l) if l.transformed && l.transform_destination != dest => {
                l.transform_destination = dest;
                true
            }
            _ => false,
        }
    }

    /// Whether the leg on `local` is final (latched, strict) and plain.
    pub fn is_final(&self, local: SocketAddr) -> bool {
        self.legs
            .get(&local)
            .is_some_and(|l| !l.transformed && matches!(l.state, LatchState::Latched { .. }))
    }

    /// For the direction entering at `local`: (expected source, egress local
    /// socket, destination) if both its legs are final, i.e. what the XDP map
    /// entry of that direction would hold.
    pub fn final_direction(
        &self,
        local: SocketAddr,
    ) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
        let leg = self.legs.get(&local)?;
        let other = self.legs.get(&leg.other)?;
        // A muxed leg facing a non-muxed side splits RTP from RTCP: userspace only.
        if leg.transformed || other.transformed || leg.rtcp_via.is_some() {
            return None;
        }
        match (leg.state, other.state) {
            (LatchState::Latched { source }, LatchState::Latched { source: dest }) => {
                Some((source, leg.other, dest))
            }
            _ => None,
        }
    }

    /// Userspace counters of the direction entering at `local`.
    pub fn leg_counters(&self, local: SocketAddr) -> Option<DirectionCounters> {
        self.legs.get(&local).map(|l| l.counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const RTP: [u8; 12] = [0x80, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
    const MS: u64 = 1_000_000;

    fn pair(learn_a: LearnPolicy, learn_b: LearnPolicy) -> FlowPairSpec {
        FlowPairSpec {
            a: LegSpec {
                local: sa("10.0.0.1:30000"),
                peer: Some(sa("192.0.2.10:5000")),
                learn: learn_a,
            },
            b: LegSpec {
                local: sa("10.0.0.1:30002"),
                peer: Some(sa("198.51.100.20:6000")),
                learn: learn_b,
            },
            rtcp: None,
        }
    }

    #[test]
    fn strict_forwards_only_from_sdp_address() {
        let mut t = FlowTable::new();
        t.insert(PairId(1), pair(LearnPolicy::Off, LearnPolicy::Off))
            .unwrap();
        let ev = t.take_events();
        assert_eq!(ev.len(), 2, "both legs final at once: {ev:?}");
        let v = t.handle(sa("10.0.0.1:30000"), sa("192.0.2.10:5000"), &RTP, MS);
        assert_eq!(
            v,
            Verdict::Forward {
                from: sa("10.0.0.1:30002"),
                to: sa("198.51.100.20:6000")
            }
        );
        let v = t.handle(sa("10.0.0.1:30000"), sa("192.0.2.66:5000"), &RTP, 2 * MS);
        assert_eq!(v, Verdict::Drop(DropReason::Source));
        let v = t.handle(sa("10.0.0.1:30002"), sa("198.51.100.20:6000"), &RTP, MS);
        assert_eq!(
            v,
            Verdict::Forward {
                from: sa("10.0.0.1:30000"),
                to: sa("192.0.2.10:5000")
            }
        );
        let p = t.pair(PairId(1)).unwrap();
        assert_eq!(p.a.counters.forwarded.packets, 1);
        assert_eq!(p.a.counters.forwarded.bytes, 12 + 28);
        assert_eq!(p.a.counters.forwarded.last_seen_ns, MS);
        assert_eq!(p.a.counters.rejected_source, 1);
        assert_eq!(p.b.counters.forwarded.packets, 1);
        assert!(t.final_direction(sa("10.0.0.1:30000")).is_some());
    }

    #[test]
    fn learn_window_accepts_first_source_then_strict() {
        let mut t = FlowTable::new();
        let w = LearnPolicy::Window {
            packets: 3,
            duration: Duration::from_secs(1),
        };
        t.insert(PairId(1), pair(w, LearnPolicy::Off)).unwrap();
        t.take_events();
        let a = sa("10.0.0.1:30000");
        let nat = sa("203.0.113.5:41000");
        let attacker = sa("203.0.113.66:1234");
        assert!(matches!(
            t.handle(a, nat, &RTP, MS),
            Verdict::Forward { .. }
        ));
        assert_eq!(
            t.pair(PairId(1)).unwrap().a.state,
            LatchState::Learning { source: nat }
        );
        // Another non-SDP source during the window does not take over.
        assert_eq!(
            t.handle(a, attacker, &RTP, 2 * MS),
            Verdict::Drop(DropReason::Source)
        );
        // Third packet closes the window: latched on the NAT address.
        assert!(matches!(
            t.handle(a, nat, &RTP, 3 * MS),
            Verdict::Forward { .. }
        ));
        assert_eq!(
            t.pair(PairId(1)).unwrap().a.state,
            LatchState::Latched { source: nat }
        );
        assert_eq!(
            t.take_events(),
            vec![TableEvent::Latched {
                pair: PairId(1),
                local: a
            }]
        );
        // Media toward A now goes to the learned address.
        assert_eq!(
            t.handle(sa("10.0.0.1:30002"), sa("198.51.100.20:6000"), &RTP, 4 * MS),
            Verdict::Forward { from: a, to: nat }
        );
        // Strict: even the SDP address is refused now.
        assert_eq!(
            t.handle(a, sa("192.0.2.10:5000"), &RTP, 5 * MS),
            Verdict::Drop(DropReason::Source)
        );
    }

    #[test]
    fn sdp_address_wins_during_window_and_window_closes_by_time() {
        let mut t = FlowTable::new();
        let w = LearnPolicy::Window {
            packets: 100,
            duration: Duration::from_millis(500),
        };
        t.insert(PairId(7), pair(w, w)).unwrap();
        assert!(t.take_events().is_empty());
        let a = sa("10.0.0.1:30000");
        let b = sa("10.0.0.1:30002");
        let other = sa("203.0.113.5:41000");
        assert!(matches!(
            t.handle(a, other, &RTP, 0),
            Verdict::Forward { .. }
        ));
        // SDP address seen during the window: final at once.
        assert!(matches!(
            t.handle(a, sa("192.0.2.10:5000"), &RTP, MS),
            Verdict::Forward { .. }
        ));
        assert!(t.is_final(a));
        assert_eq!(
            t.handle(a, other, &RTP, 2 * MS),
            Verdict::Drop(DropReason::Source)
        );
        // Leg b learns a NAT address and is closed by time through tick().
        let nat_b = sa("198.51.100.99:7000");
        assert!(matches!(
            t.handle(b, nat_b, &RTP, 10 * MS),
            Verdict::Forward { .. }
        ));
        assert!(!t.is_final(b));
        t.tick(400 * MS);
        assert!(!t.is_final(b));
        t.tick(511 * MS);
        assert!(t.is_final(b));
        assert_eq!(
            t.final_direction(a),
            Some((sa("192.0.2.10:5000"), b, nat_b))
        );
    }

    #[test]
    fn stun_dtls_and_garbage_never_latch() {
        let mut t = FlowTable::new();
        t.insert(
            PairId(1),
            pair(LearnPolicy::DEFAULT_WINDOW, LearnPolicy::DEFAULT_WINDOW),
        )
        .unwrap();
        let a = sa("10.0.0.1:30000");
        let x = sa("203.0.113.5:1");
        assert_eq!(
            t.handle(a, x, &[0, 1, 0, 0], 0),
            Verdict::Control(ControlKind::Stun)
        );
        assert_eq!(
            t.handle(a, x, &[22, 254, 253], 0),
            Verdict::Control(ControlKind::Dtls)
        );
        assert_eq!(
            t.handle(a, x, b"hello world", 0),
            Verdict::Drop(DropReason::Garbage)
        );
        assert_eq!(
            t.handle(a, x, &[0x80, 0], 0),
            Verdict::Drop(DropReason::Garbage)
        );
        assert_eq!(t.handle(a, x, &[], 0), Verdict::Drop(DropReason::Garbage));
        let p = t.pair(PairId(1)).unwrap();
        assert_eq!(p.a.state, LatchState::Unlatched);
        assert_eq!(p.a.counters.control, 2);
        assert_eq!(p.a.counters.garbage, 3);
        assert_eq!(p.a.counters.forwarded.packets, 0);
    }

    #[test]
    fn unknown_destination_and_learn_off_without_address() {
        let mut t = FlowTable::new();
        let mut s = pair(LearnPolicy::DEFAULT_WINDOW, LearnPolicy::Off);
        s.b.peer = None;
        t.insert(PairId(1), s).unwrap();
        let a = sa("10.0.0.1:30000");
        let b = sa("10.0.0.1:30002");
        assert_eq!(
            t.handle(a, sa("192.0.2.10:5000"), &RTP, 0),
            Verdict::Drop(DropReason::NoDestination)
        );
        // b has learning off and no SDP address: nothing from it is accepted.
        assert_eq!(
            t.handle(b, sa("198.51.100.20:6000"), &RTP, 0),
            Verdict::Drop(DropReason::Source)
        );
        assert_eq!(t.pair(PairId(1)).unwrap().a.counters.no_destination, 1);
    }

    #[test]
    fn update_relearns_changed_leg_and_keeps_counters() {
        let mut t = FlowTable::new();
        t.insert(PairId(1), pair(LearnPolicy::Off, LearnPolicy::Off))
            .unwrap();
        let a = sa("10.0.0.1:30000");
        t.handle(a, sa("192.0.2.10:5000"), &RTP, 0);
        t.take_events();
        let mut s = pair(LearnPolicy::Off, LearnPolicy::Off);
        s.a.peer = Some(sa("192.0.2.11:5002"));
        t.update(PairId(1), s).unwrap();
        assert_eq!(
            t.take_events(),
            vec![TableEvent::Latched {
                pair: PairId(1),
                local: a
            }]
        );
        assert_eq!(
            t.handle(a, sa("192.0.2.10:5000"), &RTP, 1),
            Verdict::Drop(DropReason::Source)
        );
        assert!(matches!(
            t.handle(a, sa("192.0.2.11:5002"), &RTP, 2),
            Verdict::Forward { .. }
        ));
        assert_eq!(t.pair(PairId(1)).unwrap().a.counters.forwarded.packets, 2);
        s.a.local = sa("10.0.0.1:30010");
        assert!(matches!(
            t.update(PairId(1), s),
            Err(TableError::LocalChanged(..))
        ));
    }

    #[test]
    fn insert_conflicts_and_remove() {
        let mut t = FlowTable::new();
        t.insert(PairId(1), pair(LearnPolicy::Off, LearnPolicy::Off))
            .unwrap();
        assert_eq!(
            t.insert(PairId(2), pair(LearnPolicy::Off, LearnPolicy::Off)),
            Err(TableError::LocalInUse(sa("10.0.0.1:30000")))
        );
        let mut s = pair(LearnPolicy::Off, LearnPolicy::Off);
        s.b.local = s.a.local;
        assert_eq!(
            t.insert(PairId(3), s),
            Err(TableError::SameLocal(s.a.local))
        );
        let mut s = pair(LearnPolicy::Off, LearnPolicy::Off);
        s.a.local = sa("10.0.0.1:31000");
        s.b.local = sa("10.0.0.1:31002");
        s.b.peer = Some(sa("[2001:db8::1]:5000"));
        assert!(matches!(
            t.insert(PairId(4), s),
            Err(TableError::FamilyMismatch(_))
        ));
        assert!(t.remove(PairId(1)).is_some());
        assert!(t.is_empty());
        assert_eq!(
            t.handle(sa("10.0.0.1:30000"), sa("192.0.2.10:5000"), &RTP, 0),
            Verdict::NoFlow
        );
        assert!(t.remove(PairId(1)).is_none());
    }

    /// Side a (e.g. a WebRTC browser) muxes RTCP on its RTP port, side b (a phone) sends
    /// RTCP to the next port.
    fn muxed_pair(learn_b: LearnPolicy) -> FlowPairSpec {
        let mut p = pair(LearnPolicy::Off, learn_b);
        p.rtcp = Some(RtcpDemux {
            muxed: Side::A,
            leg: LegSpec {
                local: sa("10.0.0.1:30003"),
                peer: Some(sa("198.51.100.20:6001")),
                learn: learn_b,
            },
        });
        p
    }

    const RTCP_SR: [u8; 8] = [0x80, 200, 0, 6, 0, 0, 0, 1];

    #[test]
    fn muxed_side_rtcp_goes_to_the_other_sides_rtcp_port() {
        let mut t = FlowTable::new();
        t.insert(PairId(1), muxed_pair(LearnPolicy::Off)).unwrap();
        assert_eq!(t.take_events().len(), 3, "three final legs");
        let (mux, rtp_b, rtcp_b) = (
            sa("10.0.0.1:30000"),
            sa("10.0.0.1:30002"),
            sa("10.0.0.1:30003"),
        );
        let browser = sa("192.0.2.10:5000");
        // RTP from the muxed side: the RTP pair as usual.
        assert_eq!(
            t.handle(mux, browser, &RTP, MS),
            Verdict::Forward {
                from: rtp_b,
                to: sa("198.51.100.20:6000")
            }
        );
        // RTCP from the muxed side: out of b's RTCP socket to the phone's RTCP port.
        assert_eq!(
            t.handle(mux, browser, &RTCP_SR, MS),
            Verdict::Forward {
                from: rtcp_b,
                to: sa("198.51.100.20:6001")
            }
        );
        // The phone's RTCP: out of the muxed socket to the browser.
        assert_eq!(
            t.handle(rtcp_b, sa("198.51.100.20:6001"), &RTCP_SR, MS),
            Verdict::Forward {
                from: mux,
                to: browser
            }
        );
        // Its RTP as usual; RTCP from the phone's RTP port is still relayed (same pair).
        assert_eq!(
            t.handle(rtp_b, sa("198.51.100.20:6000"), &RTP, MS),
            Verdict::Forward {
                from: mux,
                to: browser
            }
        );
        // Strict on the RTCP leg too.
        assert_eq!(
            t.handle(rtcp_b, sa("198.51.100.66:6001"), &RTCP_SR, MS),
            Verdict::Drop(DropReason::Source)
        );
        // XDP: the muxed direction splits by packet type, so it stays in userspace; the
        // phone's RTCP direction and b's RTP direction can be offloaded.
        assert_eq!(t.final_direction(mux), None);
        assert_eq!(
            t.final_direction(rtcp_b),
            Some((sa("198.51.100.20:6001"), mux, browser))
        );
        assert_eq!(
            t.final_direction(rtp_b),
            Some((sa("198.51.100.20:6000"), mux, browser))
        );
        assert_eq!(t.rtcp_via(mux), Some(rtcp_b));
        let info = t.pair(PairId(1)).unwrap();
        let (side, c) = info.rtcp.unwrap();
        assert_eq!(side, Side::A);
        assert_eq!(c.counters.forwarded.packets, 1);
        assert_eq!(c.counters.rejected_source, 1);
        assert_eq!(info.a.counters.forwarded.packets, 2);
        // Removal takes all three legs.
        t.remove(PairId(1));
        assert!(t.is_empty());
        assert_eq!(
            t.handle(rtcp_b, sa("198.51.100.20:6001"), &RTCP_SR, MS),
            Verdict::NoFlow
        );
        t.insert(PairId(2), muxed_pair(LearnPolicy::Off)).unwrap();
    }

    #[test]
    fn rtcp_leg_learns_and_updates_like_any_leg() {
        let mut t = FlowTable::new();
        t.insert(PairId(1), muxed_pair(LearnPolicy::DEFAULT_WINDOW))
            .unwrap();
        let rtcp_b = sa("10.0.0.1:30003");
        // NAT: the phone's RTCP comes from another port, learned in the window.
        assert!(matches!(
            t.handle(rtcp_b, sa("198.51.100.20:40001"), &RTCP_SR, MS),
            Verdict::Forward { .. }
        ));
        assert_eq!(
            t.handle(
                sa("10.0.0.1:30000"),
                sa("192.0.2.10:5000"),
                &RTCP_SR,
                2 * MS
            ),
            Verdict::Forward {
                from: rtcp_b,
                to: sa("198.51.100.20:40001")
            }
        );
        // An update may not add, drop or move the RTCP leg.
        let mut spec = muxed_pair(LearnPolicy::DEFAULT_WINDOW);
        spec.rtcp = None;
        assert_eq!(t.update(PairId(1), spec), Err(TableError::RtcpChanged));
        let mut spec = muxed_pair(LearnPolicy::Off);
        if let Some(r) = spec.rtcp.as_mut() {
            r.leg.peer = Some(sa("198.51.100.30:7001"));
        }
        t.update(PairId(1), spec).unwrap();
        assert_eq!(
            t.handle(
                sa("10.0.0.1:30000"),
                sa("192.0.2.10:5000"),
                &RTCP_SR,
                3 * MS
            ),
            Verdict::Forward {
                from: rtcp_b,
                to: sa("198.51.100.30:7001")
            }
        );
        // Three distinct sockets are required.
        let mut bad = muxed_pair(LearnPolicy::Off);
        if let Some(r) = bad.rtcp.as_mut() {
            r.leg.local = bad.b.local;
        }
        assert!(matches!(
            FlowTable::new().insert(PairId(9), bad),
            Err(TableError::SameLocal(_))
        ));
    }

    #[test]
    fn rtcp_by_second_byte() {
        assert!(is_rtcp(&RTCP_SR));
        assert!(is_rtcp(&[0x81, 201, 0, 1]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&RTP));
        assert!(!is_rtcp(&[0x80, 0x80 | 96]));
        assert!(!is_rtcp(&[0x80]));
    }
}
