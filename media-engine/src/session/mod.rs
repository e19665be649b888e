//! Offer/answer engine (RFC 3264) with an API modelled on rtpengine's NG commands
//! (`offer`, `answer`, `delete`, `query`), called in-process by sbcd. Sans-IO: no sockets, no
//! clock; the engine owns sessions and relay port allocations and returns rewritten SDP plus
//! plain data ([`StreamPlan`]) that a datapath uses to create flows.
//!
//! Model (after rtpengine's call/monologue): a call (Call-ID) has legs, one per SIP tag (the
//! callee side of an offer is untagged until the answer names it; the Via branch tells forked
//! branches apart). Each leg faces one interface and owns, per media section, the relay ports
//! on that interface that its party sends to. Forks answering on the same branch (downstream
//! forking) share that branch's ports but keep their own state.

pub mod codec;
mod rewrite;
mod webrtc;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

pub use codec::Codec;
use rewrite::{MediaRewrite, StreamFacts};
pub use webrtc::DtlsKeys;

use crate::dtls::{CertificatePolicy, DtlsCertificate};
use crate::interface::{MediaInterface, PortUsage};
use crate::ports::{PortAllocator, RelayPorts};
use crate::sdp::{Direction, Line, Sdp, SdpError};
use crate::secure::SdesCrypto;
use crate::srtp::SrtpProfile;
use std::sync::Arc;

/// What to do with RTCP multiplexing toward the receiver of the produced SDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RtcpMuxPolicy {
    /// Offer rtcp-mux onward when the offerer offered it (and answer it as negotiated).
    #[default]
    Pass,
    /// Do not offer rtcp-mux onward; still accept it from the offerer (the relay
    /// demultiplexes). rtpengine's `rtcp-mux-demux`.
    Demux,
}

/// Options of an offer (subset of rtpengine's flags that the SDP side needs now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// Transport protocol of the produced offer, e.g. `RTP/AVP` toward a plain SIP leg
    /// (rtpengine's `transport-protocol`). `None` keeps the offerer's. Ignored for answers,
    /// which always use the protocol the offerer used.
    pub transport: Option<String>,
    /// rtcp-mux handling toward the receiver of the offer. Ignored for answers.
    pub rtcp_mux: RtcpMuxPolicy,
    /// Encoding names (case-insensitive) removed from the produced offer
    /// (rtpengine's `codec-strip-<name>`). Ignored for answers.
    pub strip_codecs: Vec<String>,
    /// Leave the `o=` line as the peer wrote it (default: its address is replaced,
    /// rtpengine's `replace-origin`).
    pub keep_origin: bool,
}

/// An SDP offer (INVITE, re-INVITE, UPDATE, or a 200 OK carrying a late offer).
#[derive(Debug, Clone)]
pub struct OfferRequest<'a> {
    pub call_id: &'a str,
    /// Tag of the party that sent this SDP (From tag of the request).
    pub from_tag: &'a str,
    /// Tag of the party receiving it, when known (in-dialog offers).
    pub to_tag: Option<&'a str>,
    /// Via branch of the forwarded request, to keep forked branches apart.
    pub via_branch: Option<&'a str>,
    pub sdp: &'a [u8],
    /// Interface facing the offerer.
    pub ingress_interface: &'a str,
    /// Interface facing the receiver of the offer.
    pub egress_interface: &'a str,
    pub flags: Flags,
}

/// An SDP answer (18x/2xx, or the ACK of a late offer).
#[derive(Debug, Clone)]
pub struct AnswerRequest<'a> {
    pub call_id: &'a str,
    /// Tag of the offerer.
    pub from_tag: &'a str,
    /// Tag of the answerer (To tag of the response).
    pub to_tag: &'a str,
    pub via_branch: Option<&'a str>,
    pub sdp: &'a [u8],
    pub flags: Flags,
}

/// Relay endpoint and signalled peer of one party for one media stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSide {
    pub tag: Option<String>,
    pub interface: String,
    /// Local address the datapath binds.
    pub local_address: IpAddr,
    /// Relay ports this party sends to; `None` for a disabled stream.
    pub local_ports: Option<RelayPorts>,
    /// Where this party said it receives RTP (`None`: not known yet, hold address, disabled).
    pub peer_rtp: Option<SocketAddr>,
    /// Where this party receives RTCP when not multiplexed.
    pub peer_rtcp: Option<SocketAddr>,
    /// RTCP multiplexed on the RTP port toward this party.
    pub rtcp_mux: bool,
    /// Direction from this party's latest SDP.
    pub direction: Direction,
    /// This party's latest SDP put the stream on hold (sendonly/inactive/zero address).
    pub hold: bool,
    /// Payload types listed in this party's latest SDP.
    pub payload_types: Vec<u8>,
    /// Port 0 / rejected stream.
    pub disabled: bool,
    /// SRTP (SDES, RFC 4568) terminated by the relay toward this party: the relay
    /// unprotects what the party sends with `remote` and protects what it sends to the
    /// party with `local`. `None`: plain RTP toward this party (or SRTP passed through).
    pub sdes: Option<SdesKeys>,
    /// DTLS-SRTP with ICE-lite (WebRTC) terminated by the relay toward this party, once its
    /// parameters are known.
    pub dtls: Option<DtlsKeys>,
}

/// The two keys of an SDES-terminated side (see [`StreamSide::sdes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesKeys {
    pub local: SdesCrypto,
    pub remote: SdesCrypto,
}

/// One media stream across the relay. Packets arriving at `sides[0].local_ports` from
/// `sides[0]`'s party leave from `sides[1].local_ports` toward `sides[1].peer_*`, and the
/// reverse. `sides[0]` is the offerer of the exchange that produced the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlan {
    /// Position of the `m=` line.
    pub index: usize,
    pub media: String,
    pub sides: [StreamSide; 2],
}

/// Result of [`MediaEngine::offer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferResponse {
    /// SDP to forward to the receiver of the offer.
    pub sdp: Vec<u8>,
    pub streams: Vec<StreamPlan>,
    /// The offerer puts at least one stream on hold (use the longer media timeout).
    pub hold: bool,
}

/// Result of [`MediaEngine::answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerResponse {
    /// SDP to forward to the offerer.
    pub sdp: Vec<u8>,
    pub streams: Vec<StreamPlan>,
    /// The answerer puts at least one stream on hold.
    pub hold: bool,
}

/// Result of [`MediaEngine::delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// No such call or tags: nothing to do (not an error).
    NotFound,
    /// Legs were removed; `call_ended` when nothing is left of the call.
    Deleted {
        legs: usize,
        ports_released: usize,
        call_ended: bool,
    },
}

/// One leg in [`CallInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegInfo {
    pub tag: Option<String>,
    pub via_branch: Option<String>,
    pub interface: String,
    pub peer_tag: Option<String>,
    pub streams: Vec<StreamSide>,
}

/// Result of [`MediaEngine::query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call_id: String,
    pub legs: Vec<LegInfo>,
}

/// Counters for metrics (cumulative since the engine was created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub offers: u64,
    pub offers_failed: u64,
    pub answers: u64,
    pub answers_failed: u64,
    pub deletes: u64,
    pub deletes_unknown: u64,
    pub calls_created: u64,
    pub calls_ended: u64,
    /// Answers refused because no real codec remained (S-14).
    pub answers_without_codec: u64,
    /// Offers refused because stripping left no real codec.
    pub offers_without_codec: u64,
    pub port_exhaustions: u64,
}

/// Errors of the engine. [`EngineError::sip_status`] suggests the SIP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("invalid SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error("unknown media interface {0:?}")]
    UnknownInterface(String),
    #[error("media interface {0:?} configured twice")]
    DuplicateInterface(String),
    #[error("media interface {name:?} has an empty port range {min}-{max}")]
    EmptyPortRange { name: String, min: u16, max: u16 },
    #[error("no free relay ports on media interface {interface:?} ({capacity} ports in range)")]
    PortsExhausted { interface: String, capacity: usize },
    #[error("unknown call {0:?}")]
    UnknownCall(String),
    #[error("call {call_id:?}: From and To tag are both {tag:?}")]
    SameTags { call_id: String, tag: String },
    #[error("call {call_id:?} has no leg tagged {tag:?}")]
    UnknownTag { call_id: String, tag: String },
    #[error("call {call_id:?}: no offer from {from_tag:?} is waiting for this answer")]
    NoPendingOffer { call_id: String, from_tag: String },
    #[error("call {call_id:?}: offer from {from_tag:?} went to several branches; the answer must name its Via branch")]
    AmbiguousBranch { call_id: String, from_tag: String },
    #[error("call {call_id:?}: the answer has {answer} media sections, the offer had {offer}")]
    MediaCountMismatch {
        call_id: String,
        offer: usize,
        answer: usize,
    },
    #[error("call {call_id:?}: the offer has {now} media sections, fewer than the {before} negotiated before (RFC 3264 8)")]
    MediaRemoved {
        call_id: String,
        before: usize,
        now: usize,
    },
    #[error("call {call_id:?} media section {index}: no common codec (only telephone-event/CN would remain)")]
    NoCommonCodec { call_id: String, index: usize },
    #[error("call {call_id:?}: leg {tag:?} faces media interface {existing:?}, the request says {requested:?}")]
    InterfaceMismatch {
        call_id: String,
        tag: String,
        existing: String,
        requested: String,
    },
    #[error("call {call_id:?} media section {index}: {what} is not implemented yet")]
    Unsupported {
        call_id: String,
        index: usize,
        what: String,
    },
}

impl EngineError {
    /// The SIP status code a proxy should answer (or use to end the call) with.
    pub fn sip_status(&self) -> u16 {
        match self {
            EngineError::PortsExhausted { .. } => 503,
            EngineError::UnknownInterface(_)
            | EngineError::DuplicateInterface(_)
            | EngineError::EmptyPortRange { .. } => 500,
            _ => 488,
        }
    }
}

struct Interface {
    cfg: MediaInterface,
    ports: PortAllocator,
}

/// Per-leg, per-media-section state.
#[derive(Debug, Clone)]
struct LegStream {
    media: String,
    /// Protocol this party uses (from its latest SDP).
    proto: String,
    peer_rtp: Option<SocketAddr>,
    peer_rtcp: Option<SocketAddr>,
    /// RTCP multiplexing in use toward this party.
    mux_active: bool,
    /// This party offered/accepted rtcp-mux in its latest SDP.
    mux_signalled: bool,
    direction: Direction,
    hold: bool,
    disabled: bool,
    codecs: Vec<Codec>,
    /// What was last offered to this party (for checking its answer).
    offered: Vec<Codec>,
    offered_proto: String,
    offered_mux: bool,
    /// rtcp-mux was offered to us by the other party but not passed on to this one.
    demuxed: bool,
    offered_disabled: bool,
    /// SDES terminated toward this party: our key (offered/answered to it) and its key.
    sdes_local: Option<SdesCrypto>,
    sdes_remote: Option<SdesCrypto>,
    /// WebRTC (ICE-lite + DTLS-SRTP) terminated toward this party.
    webrtc: Option<webrtc::WebrtcLeg>,
}

impl LegStream {
    fn new() -> Self {
        LegStream {
            media: String::new(),
            proto: String::new(),
            peer_rtp: None,
            peer_rtcp: None,
            mux_active: false,
            mux_signalled: false,
            direction: Direction::SendRecv,
            hold: false,
            disabled: false,
            codecs: Vec::new(),
            offered: Vec::new(),
            offered_proto: String::new(),
            offered_mux: false,
            demuxed: false,
            offered_disabled: false,
            sdes_local: None,
            sdes_remote: None,
            webrtc: None,
        }
    }

    fn learn(&mut self, f: &StreamFacts) {
        self.media.clone_from(&f.media);
        self.proto.clone_from(&f.proto);
        self.peer_rtp = f.peer_rtp;
        self.peer_rtcp = f.peer_rtcp;
        self.mux_signalled = f.mux;
        self.direction = f.direction;
        self.hold = f.is_hold();
        self.disabled = f.port == 0;
        self.codecs.clone_from(&f.codecs);
    }
}

#[derive(Debug, Clone)]
struct Leg {
    tag: Option<String>,
    via_branch: Option<String>,
    iface: usize,
    /// The leg of the latest offer/answer exchange with this one.
    peer: Option<usize>,
    /// Index into `Call::port_sets`.
    ports: usize,
    streams: Vec<LegStream>,
}

#[derive(Debug, Clone)]
struct PortSet {
    iface: usize,
    streams: Vec<Option<RelayPorts>>,
    refs: usize,
}

#[derive(Debug, Clone, Default)]
struct Call {
    legs: Vec<Option<Leg>>,
    port_sets: Vec<Option<PortSet>>,
    /// The DTLS certificate of this call's WebRTC legs (kept across rotations: its
    /// fingerprint is in the call's SDP).
    dtls_cert: Option<CertHandle>,
}

#[derive(Clone)]
struct CertHandle(Arc<DtlsCertificate>);

impl std::fmt::Debug for CertHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertHandle({})", self.0.fingerprint())
    }
}

impl Call {
    fn legs(&self) -> impl Iterator<Item = (usize, &Leg)> {
        self.legs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
    }

    fn find_tag(&self, tag: &str) -> Option<usize> {
        self.legs()
            .find(|(_, l)| l.tag.as_deref() == Some(tag))
            .map(|(i, _)| i)
    }

    fn add_leg(&mut self, tag: Option<&str>, via_branch: Option<&str>, iface: usize) -> usize {
        self.port_sets.push(Some(PortSet {
            iface,
            streams: Vec::new(),
            refs: 1,
        }));
        let ports = self.port_sets.len() - 1;
        self.legs.push(Some(Leg {
            tag: tag.map(str::to_string),
            via_branch: via_branch.map(str::to_string),
            iface,
            peer: None,
            ports,
            streams: Vec::new(),
        }));
        self.legs.len() - 1
    }

    fn leg(&self, i: usize) -> &Leg {
        // Indices come from this call's own lookups; a missing leg is a logic error that would
        // be caught by tests, but do not panic on it: fall back to the first leg.
        match self.legs.get(i).and_then(Option::as_ref) {
            Some(l) => l,
            None => unreachable_leg(),
        }
    }

    fn leg_mut(&mut self, i: usize) -> &mut Leg {
        match self.legs.get_mut(i).and_then(Option::as_mut) {
            Some(l) => l,
            None => unreachable_leg(),
        }
    }
}

#[cold]
fn unreachable_leg() -> ! {
    // Leg indices are only produced by `Call` lookups on the same call value.
    unreachable!("leg index from this call's own lookup")
}

/// Port allocations made while processing one request: undone on error, kept on success.
#[derive(Default)]
struct Txn {
    allocated: Vec<(usize, u16)>,
    release_on_commit: Vec<(usize, u16)>,
}

impl Txn {
    fn rollback(self, ifaces: &mut [Interface]) {
        for (i, p) in self.allocated {
            ifaces[i].ports.release_port(p);
        }
    }

    fn commit(self, ifaces: &mut [Interface]) {
        for (i, p) in self.release_on_commit {
            ifaces[i].ports.release_port(p);
        }
    }
}

fn exhausted(ifaces: &[Interface], iface: usize) -> EngineError {
    EngineError::PortsExhausted {
        interface: ifaces[iface].cfg.name.clone(),
        capacity: ifaces[iface].ports.capacity(),
    }
}

/// Make sure media section `idx` of `set` has ports; `need_rtcp` asks for a separate RTCP
/// port. Existing ports are kept (re-INVITE keeps the same ports).
fn ensure_ports(
    ifaces: &mut [Interface],
    txn: &mut Txn,
    set: &mut PortSet,
    idx: usize,
    need_rtcp: bool,
) -> Result<RelayPorts, EngineError> {
    let iface = set.iface;
    if set.streams.len() <= idx {
        set.streams.resize(idx + 1, None);
    }
    let ports = match set.streams[idx] {
        Some(mut p) => {
            if need_rtcp && p.rtcp.is_none() {
                p.rtcp = Some(acquire_rtcp(ifaces, txn, iface, p.rtp)?);
            }
            p
        }
        None => {
            let alloc = &mut ifaces[iface].ports;
            let p = if need_rtcp {
                alloc.allocate_pair()
            } else {
                alloc.allocate_single()
            }
            .ok_or_else(|| exhausted(ifaces, iface))?;
            txn.allocated.push((iface, p.rtp));
            if let Some(r) = p.rtcp {
                txn.allocated.push((iface, r));
            }
            p
        }
    };
    set.streams[idx] = Some(ports);
    Ok(ports)
}

fn acquire_rtcp(
    ifaces: &mut [Interface],
    txn: &mut Txn,
    iface: usize,
    rtp: u16,
) -> Result<u16, EngineError> {
    let alloc = &mut ifaces[iface].ports;
    let port = match rtp.checked_add(1).filter(|&p| alloc.take(p)) {
        Some(p) => p,
        None => match alloc.allocate_single() {
            Some(p) => p.rtp,
            None => return Err(exhausted(ifaces, iface)),
        },
    };
    txn.allocated.push((iface, port));
    Ok(port)
}

/// Drop the RTCP port of section `idx` (rtcp-mux negotiated).
fn drop_rtcp(txn: &mut Txn, set: &mut PortSet, idx: usize) {
    if let Some(Some(p)) = set.streams.get_mut(idx) {
        if let Some(r) = p.rtcp.take() {
            txn.release_on_commit.push((set.iface, r));
        }
    }
}

/// The SDP offer/answer engine. Not thread-safe by itself: sbcd holds it behind a lock (or one
/// per shard of Call-IDs).
pub struct MediaEngine {
    interfaces: Vec<Interface>,
    calls: HashMap<String, Call>,
    stats: EngineStats,
    /// DTLS certificate for new WebRTC calls (made on first use, rotated by the policy).
    dtls_cert: Option<Arc<DtlsCertificate>>,
    cert_policy: CertificatePolicy,
}

impl MediaEngine {
    /// An engine with these interfaces. Names must be unique and port ranges non-empty.
    pub fn new(interfaces: Vec<MediaInterface>) -> Result<Self, EngineError> {
        let mut out: Vec<Interface> = Vec::with_capacity(interfaces.len());
        for cfg in interfaces {
            if out.iter().any(|i| i.cfg.name == cfg.name) {
                return Err(EngineError::DuplicateInterface(cfg.name));
            }
            let ports = PortAllocator::new(cfg.port_min, cfg.port_max);
            if ports.capacity() < 2 {
                return Err(EngineError::EmptyPortRange {
                    name: cfg.name,
                    min: cfg.port_min,
                    max: cfg.port_max,
                });
            }
            out.push(Interface { cfg, ports });
        }
        Ok(MediaEngine {
            interfaces: out,
            calls: HashMap::new(),
            stats: EngineStats::default(),
            dtls_cert: None,
            cert_policy: CertificatePolicy::default(),
        })
    }

    /// Lifetime of the DTLS certificates made from now on (rotated at half of it).
    pub fn set_certificate_lifetime(&mut self, lifetime: std::time::Duration) {
        self.cert_policy = CertificatePolicy::with_lifetime(lifetime);
        self.dtls_cert = None;
    }

    /// The certificate for new WebRTC calls, generated or rotated when due.
    fn certificate(&mut self) -> Option<Arc<DtlsCertificate>> {
        let now = std::time::SystemTime::now();
        let due = self
            .dtls_cert
            .as_ref()
            .is_none_or(|c| self.cert_policy.rotation_due(c, now));
        if due {
            match self.cert_policy.generate(now) {
                Ok(c) => {
                    tracing::info!(fingerprint = %c.fingerprint(), "new DTLS certificate");
                    self.dtls_cert = Some(Arc::new(c));
                }
                Err(e) => tracing::error!(error = %e, "cannot generate a DTLS certificate"),
            }
        }
        self.dtls_cert.clone()
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Calls currently held.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Port usage per interface.
    pub fn port_usage(&self) -> Vec<PortUsage> {
        self.interfaces
            .iter()
            .map(|i| PortUsage {
                interface: i.cfg.name.clone(),
                total: i.ports.capacity(),
                used: i.ports.in_use(),
                free: i.ports.free(),
            })
            .collect()
    }

    fn iface_index(&self, name: &str) -> Result<usize, EngineError> {
        self.interfaces
            .iter()
            .position(|i| i.cfg.name == name)
            .ok_or_else(|| EngineError::UnknownInterface(name.to_string()))
    }

    /// Process an SDP offer: allocate relay ports on both interfaces (or reuse the leg's),
    /// rewrite the SDP for the receiver. Nothing changes when an error is returned.
    pub fn offer(&mut self, req: &OfferRequest<'_>) -> Result<OfferResponse, EngineError> {
        self.stats.offers += 1;
        let res = self.offer_inner(req);
        if let Err(e) = &res {
            self.stats.offers_failed += 1;
            match e {
                EngineError::PortsExhausted { .. } => self.stats.port_exhaustions += 1,
                EngineError::NoCommonCodec { .. } => self.stats.offers_without_codec += 1,
                _ => {}
            }
            tracing::warn!(call_id = req.call_id, from_tag = req.from_tag, error = %e, "media offer refused");
        }
        res
    }

    fn offer_inner(&mut self, req: &OfferRequest<'_>) -> Result<OfferResponse, EngineError> {
        let ingress = self.iface_index(req.ingress_interface)?;
        let egress = self.iface_index(req.egress_interface)?;
        let sdp = Sdp::parse(req.sdp)?;
        let existing = self.calls.get(req.call_id);
        let is_new = existing.is_none();
        let mut call = existing.cloned().unwrap_or_default();
        let mut txn = Txn::default();
        if call.dtls_cert.is_none() && needs_certificate(&sdp, req) {
            call.dtls_cert = self.certificate().map(CertHandle);
        }
        match offer_apply(
            &mut self.interfaces,
            &mut call,
            &sdp,
            req,
            ingress,
            egress,
            &mut txn,
        ) {
            Ok(resp) => {
                txn.commit(&mut self.interfaces);
                if is_new {
                    self.stats.calls_created += 1;
                }
                self.calls.insert(req.call_id.to_string(), call);
                tracing::debug!(
                    call_id = req.call_id,
                    from_tag = req.from_tag,
                    hold = resp.hold,
                    "media offer"
                );
                Ok(resp)
            }
            Err(e) => {
                txn.rollback(&mut self.interfaces);
                Err(e)
            }
        }
    }

    /// Process an SDP answer: match codecs against the offer, settle rtcp-mux, rewrite the SDP
    /// for the offerer. Nothing changes when an error is returned.
    pub fn answer(&mut self, req: &AnswerRequest<'_>) -> Result<AnswerResponse, EngineError> {
        self.stats.answers += 1;
        let res = self.answer_inner(req);
        if let Err(e) = &res {
            self.stats.answers_failed += 1;
            match e {
                EngineError::PortsExhausted { .. } => self.stats.port_exhaustions += 1,
                EngineError::NoCommonCodec { .. } => {
                    self.stats.answers_without_codec += 1;
                    tracing::error!(call_id = req.call_id, to_tag = req.to_tag, error = %e,
                        "answer without a usable codec refused (S-14)");
                }
                _ => {}
            }
            tracing::warn!(call_id = req.call_id, to_tag = req.to_tag, error = %e, "media answer refused");
        }
        res
    }

    fn answer_inner(&mut self, req: &AnswerRequest<'_>) -> Result<AnswerResponse, EngineError> {
        let sdp = Sdp::parse(req.sdp)?;
        let Some(existing) = self.calls.get(req.call_id) else {
            return Err(EngineError::UnknownCall(req.call_id.to_string()));
        };
        let mut call = existing.clone();
        let mut txn = Txn::default();
        match answer_apply(&mut self.interfaces, &mut call, &sdp, req, &mut txn) {
            Ok(resp) => {
                txn.commit(&mut self.interfaces);
                self.calls.insert(req.call_id.to_string(), call);
                tracing::debug!(
                    call_id = req.call_id,
                    to_tag = req.to_tag,
                    hold = resp.hold,
                    "media answer"
                );
                Ok(resp)
            }
            Err(e) => {
                txn.rollback(&mut self.interfaces);
                Err(e)
            }
        }
    }

    /// Delete a call (no `to_tag`: everything) or one dialog of it (`to_tag`: the legs of both
    /// tags, plus legs left without a partner, e.g. other early forks). Unknown calls or tags
    /// are harmless ([`DeleteOutcome::NotFound`]). Ports are released.
    pub fn delete(&mut self, call_id: &str, from_tag: &str, to_tag: Option<&str>) -> DeleteOutcome {
        self.stats.deletes += 1;
        let Some(call) = self.calls.get_mut(call_id) else {
            self.stats.deletes_unknown += 1;
            tracing::debug!(call_id, "delete of an unknown call ignored");
            return DeleteOutcome::NotFound;
        };
        let mut remove = vec![false; call.legs.len()];
        match to_tag {
            None => remove.iter_mut().for_each(|r| *r = true),
            Some(to) => {
                let a = call.find_tag(from_tag);
                let b = call.find_tag(to);
                if a.is_none() && b.is_none() {
                    self.stats.deletes_unknown += 1;
                    tracing::debug!(
                        call_id,
                        from_tag,
                        to_tag = to,
                        "delete of unknown tags ignored"
                    );
                    return DeleteOutcome::NotFound;
                }
                for i in [a, b].into_iter().flatten() {
                    remove[i] = true;
                }
                // Sweep legs that no longer have a partner.
                loop {
                    let mut changed = false;
                    for (i, leg) in call.legs() {
                        if remove[i] {
                            continue;
                        }
                        let connected = call.legs().any(|(j, other)| {
                            j != i && !remove[j] && (other.peer == Some(i) || leg.peer == Some(j))
                        });
                        if !connected {
                            remove[i] = true;
                            changed = true;
                        }
                    }
                    if !changed {
                        break;
                    }
                }
            }
        }
        let mut legs = 0;
        let mut ports_released = 0;
        for (i, r) in remove.iter().enumerate() {
            if !*r {
                continue;
            }
            let Some(leg) = call.legs[i].take() else {
                continue;
            };
            legs += 1;
            if let Some(slot) = call.port_sets.get_mut(leg.ports) {
                let last = match slot {
                    Some(set) => {
                        set.refs = set.refs.saturating_sub(1);
                        set.refs == 0
                    }
                    None => false,
                };
                if last {
                    if let Some(set) = slot.take() {
                        for p in set.streams.into_iter().flatten() {
                            self.interfaces[set.iface].ports.release(p);
                            ports_released += 1 + usize::from(p.rtcp.is_some());
                        }
                    }
                }
            }
        }
        let call_ended = call.legs.iter().all(Option::is_none);
        if call_ended {
            self.calls.remove(call_id);
            self.stats.calls_ended += 1;
        }
        tracing::debug!(call_id, legs, ports_released, call_ended, "media delete");
        DeleteOutcome::Deleted {
            legs,
            ports_released,
            call_ended,
        }
    }

    /// State of a call (rtpengine's `query`).
    pub fn query(&self, call_id: &str) -> Option<CallInfo> {
        let call = self.calls.get(call_id)?;
        let legs = call
            .legs()
            .map(|(i, leg)| LegInfo {
                tag: leg.tag.clone(),
                via_branch: leg.via_branch.clone(),
                interface: self.interfaces[leg.iface].cfg.name.clone(),
                peer_tag: leg
                    .peer
                    .and_then(|p| call.legs.get(p).and_then(Option::as_ref))
                    .and_then(|p| p.tag.clone()),
                streams: (0..leg.streams.len())
                    .map(|s| side(&self.interfaces, call, i, s))
                    .collect(),
            })
            .collect();
        Some(CallInfo {
            call_id: call_id.to_string(),
            legs,
        })
    }
}

fn side(ifaces: &[Interface], call: &Call, leg_idx: usize, s: usize) -> StreamSide {
    let leg = call.leg(leg_idx);
    let iface = &ifaces[leg.iface].cfg;
    let ports = call
        .port_sets
        .get(leg.ports)
        .and_then(Option::as_ref)
        .and_then(|set| set.streams.get(s).copied().flatten());
    let st = leg.streams.get(s);
    let disabled = st.is_none_or(|st| st.disabled || st.offered_disabled);
    StreamSide {
        tag: leg.tag.clone(),
        interface: iface.name.clone(),
        local_address: iface.address,
        local_ports: if disabled { None } else { ports },
        peer_rtp: st.and_then(|s| s.peer_rtp),
        peer_rtcp: st.and_then(|s| s.peer_rtcp),
        rtcp_mux: st.is_some_and(|s| s.mux_active),
        direction: st.map_or(Direction::SendRecv, |s| s.direction),
        hold: st.is_some_and(|s| s.hold),
        payload_types: st.map_or_else(Vec::new, |s| {
            s.codecs.iter().map(|c| c.payload_type).collect()
        }),
        disabled,
        dtls: st.and_then(|s| {
            let cert = call.dtls_cert.as_ref()?;
            s.webrtc.as_ref()?.relay_keys(&cert.0)
        }),
        sdes: st.and_then(|s| match (&s.sdes_local, &s.sdes_remote) {
            (Some(l), Some(r)) => Some(SdesKeys {
                local: l.clone(),
                remote: r.clone(),
            }),
            _ => None,
        }),
    }
}

fn plans(ifaces: &[Interface], call: &Call, a: usize, b: usize) -> Vec<StreamPlan> {
    let n = call.leg(a).streams.len().max(call.leg(b).streams.len());
    (0..n)
        .map(|i| {
            let sa = side(ifaces, call, a, i);
            let sb = side(ifaces, call, b, i);
            let media = call
                .leg(a)
                .streams
                .get(i)
                .map(|s| s.media.clone())
                .unwrap_or_default();
            StreamPlan {
                index: i,
                media,
                sides: [sa, sb],
            }
        })
        .collect()
}

fn check_iface(
    ifaces: &[Interface],
    call_id: &str,
    leg: &Leg,
    requested: usize,
) -> Result<(), EngineError> {
    if leg.iface != requested {
        return Err(EngineError::InterfaceMismatch {
            call_id: call_id.to_string(),
            tag: leg.tag.clone().unwrap_or_default(),
            existing: ifaces[leg.iface].cfg.name.clone(),
            requested: ifaces[requested].cfg.name.clone(),
        });
    }
    Ok(())
}

/// Protocol of the first active RTP stream (used for session-level attribute decisions).
fn first_proto<'a>(protos: impl Iterator<Item = (&'a str, bool)>) -> &'a str {
    let mut first = "";
    for (p, active) in protos {
        if first.is_empty() {
            first = p;
        }
        if active {
            return p;
        }
    }
    first
}

fn offer_apply(
    ifaces: &mut [Interface],
    call: &mut Call,
    sdp: &Sdp<'_>,
    req: &OfferRequest<'_>,
    ingress: usize,
    egress: usize,
    txn: &mut Txn,
) -> Result<OfferResponse, EngineError> {
    let call_id = req.call_id;
    if req.to_tag == Some(req.from_tag) {
        return Err(EngineError::SameTags {
            call_id: call_id.to_string(),
            tag: req.from_tag.to_string(),
        });
    }
    // The offerer's leg.
    let off = match call.find_tag(req.from_tag) {
        Some(i) => {
            check_iface(ifaces, call_id, call.leg(i), ingress)?;
            i
        }
        None => call.add_leg(Some(req.from_tag), None, ingress),
    };
    // The receiver's leg: by To tag when in-dialog, else the branch's (untagged first).
    let by_tag = req.to_tag.and_then(|t| call.find_tag(t));
    let ans = match by_tag {
        Some(i) => i,
        None => {
            let branch = call
                .legs()
                .filter(|(i, l)| {
                    *i != off
                        && l.peer == Some(off)
                        && l.via_branch.as_deref() == req.via_branch
                        && (req.to_tag.is_none() || l.tag.is_none())
                })
                .min_by_key(|(_, l)| l.tag.is_some())
                .map(|(i, _)| i);
            match branch {
                Some(i) => {
                    if let Some(t) = req.to_tag {
                        call.leg_mut(i).tag = Some(t.to_string());
                    }
                    i
                }
                None => call.add_leg(req.to_tag, req.via_branch, egress),
            }
        }
    };
    check_iface(ifaces, call_id, call.leg(ans), egress)?;
    call.leg_mut(ans).peer = Some(off);
    call.leg_mut(off).peer = Some(ans);

    let facts = rewrite::read_facts(sdp)?;
    let n = facts.len();
    for leg in [off, ans] {
        let before = call.leg(leg).streams.len();
        if before > n {
            return Err(EngineError::MediaRemoved {
                call_id: call_id.to_string(),
                before,
                now: n,
            });
        }
        call.leg_mut(leg).streams.resize_with(n, LegStream::new);
    }

    let out_addr = ifaces[egress].cfg.sdp_address();
    let in_proto = first_proto(facts.iter().map(|f| (f.proto.as_str(), f.port != 0)));
    let out_proto_of = |f: &StreamFacts| -> String {
        match (&req.flags.transport, f.rtp) {
            (Some(t), true) => t.clone(),
            _ => f.proto.clone(),
        }
    };
    let session_out_proto = facts
        .iter()
        .find(|f| f.port != 0)
        .or(facts.first())
        .map(out_proto_of)
        .unwrap_or_default();
    let all_zero_hold = facts.iter().all(|f| f.zero_hold || f.port == 0);
    let mut out = sdp.clone();
    rewrite::rewrite_session(
        &mut out,
        out_addr,
        req.flags.keep_origin,
        all_zero_hold,
        in_proto,
        &session_out_proto,
    )?;
    let session_has_connection = out.connection().is_some();

    let off_set = call.leg(off).ports;
    let ans_set = call.leg(ans).ports;
    let mut bundle_mids: Vec<String> = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        {
            let st = &mut call.leg_mut(off).streams[i];
            st.learn(f);
            // A new offer from this party replaces whatever was offered to it before.
            st.offered_disabled = false;
        }
        let out_proto = out_proto_of(f);
        let sec = &mut out.media_mut()[i];
        // A non-RTP DTLS stream (WebRTC data channel) cannot be carried to a non-DTLS leg.
        let cannot_carry = !f.rtp && f.proto.contains("DTLS") && req.flags.transport.is_some();
        if f.port == 0 || cannot_carry {
            rewrite::disable_media(sec, out_addr, &f.proto, &out_proto, cannot_carry)?;
            let st = &mut call.leg_mut(ans).streams[i];
            st.offered.clear();
            st.offered_proto = out_proto;
            st.offered_disabled = true;
            st.offered_mux = false;
            st.demuxed = false;
            continue;
        }
        // SRTP termination on the side that speaks it: SDES (RFC 4568) or WebRTC (ICE-lite +
        // DTLS-SRTP, see `webrtc`).
        let mut crypto_toward_receiver = None;
        let mut webrtc_toward_receiver = false;
        if f.rtp && rewrite::needs_crypto_termination(&f.proto, &out_proto) {
            let dtls = rewrite::is_dtls(&f.proto) || rewrite::is_dtls(&out_proto);
            let from_sdes = !dtls && rewrite::is_secure(&f.proto);
            let to_sdes = !dtls && rewrite::is_secure(&out_proto);
            let from_webrtc = rewrite::is_dtls(&f.proto) && !rewrite::is_secure(&out_proto);
            let to_webrtc = rewrite::is_dtls(&out_proto) && !rewrite::is_secure(&f.proto);
            if (from_webrtc || to_webrtc) && call.dtls_cert.is_none() {
                return Err(EngineError::Unsupported {
                    call_id: call_id.to_string(),
                    index: i,
                    what: "WebRTC termination without a DTLS certificate".into(),
                });
            }
            if from_webrtc {
                // The offerer is a WebRTC party: we answer it as ICE-lite DTLS endpoint.
                let peer = webrtc::read_peer(sdp, i);
                if peer.fingerprints.is_empty() {
                    return Err(EngineError::Unsupported {
                        call_id: call_id.to_string(),
                        index: i,
                        what: "DTLS-SRTP offer without a usable a=fingerprint".into(),
                    });
                }
                let st = &mut call.leg_mut(off).streams[i];
                let same = st.webrtc.as_ref().is_some_and(|w| {
                    w.remote_fingerprints == peer.fingerprints && w.remote_ice == peer.ice
                });
                if !same {
                    st.webrtc = Some(webrtc::WebrtcLeg::answering(peer));
                }
            } else if to_webrtc {
                // The receiver is a WebRTC party: we offer ICE-lite + DTLS to it.
                let st = &mut call.leg_mut(ans).streams[i];
                if st.webrtc.is_none() {
                    // A mid of its own per section (the section's index).
                    st.webrtc = Some(webrtc::WebrtcLeg::offering(i.to_string()));
                }
                webrtc_toward_receiver = true;
            } else if from_sdes && !rewrite::is_secure(&out_proto) {
                // The offerer speaks SRTP: pick its first usable key, answer it with ours.
                let remote = f
                    .crypto
                    .iter()
                    .find_map(|c| SdesCrypto::parse(c).ok())
                    .ok_or_else(|| EngineError::Unsupported {
                        call_id: call_id.to_string(),
                        index: i,
                        what: "RTP/SAVP offer without a usable a=crypto (RFC 4568)".into(),
                    })?;
                let st = &mut call.leg_mut(off).streams[i];
                // A re-offer with the same key keeps ours (the SRTP contexts go on).
                let keep_local = st.sdes_remote.as_ref() == Some(&remote)
                    && st
                        .sdes_local
                        .as_ref()
                        .is_some_and(|l| l.suite == remote.suite);
                if !keep_local {
                    st.sdes_local = Some(SdesCrypto::generate(remote.tag, remote.suite));
                }
                st.sdes_remote = Some(remote);
            } else if to_sdes && !rewrite::is_secure(&f.proto) {
                // The receiver is to get SRTP: offer it our key; its key comes in the answer.
                let st = &mut call.leg_mut(ans).streams[i];
                if st.sdes_local.is_none() {
                    st.sdes_local = Some(SdesCrypto::generate(1, SrtpProfile::AesCm128HmacSha1_80));
                }
                crypto_toward_receiver = st.sdes_local.as_ref().map(SdesCrypto::to_attr_value);
            } else if rewrite::is_secure(&out_proto) {
                return Err(EngineError::Unsupported {
                    call_id: call_id.to_string(),
                    index: i,
                    what: format!(
                        "converting {} to {} (DTLS-SRTP termination)",
                        f.proto, out_proto
                    ),
                });
            } else {
                tracing::warn!(call_id, index = i, from = %f.proto, to = %out_proto,
                    "SDP converted between DTLS-SRTP and SDES: not terminated (media will not flow)");
            }
        }

        // Ports facing the offerer.
        let off_ports_before = call.port_sets[off_set]
            .as_ref()
            .and_then(|s| s.streams.get(i).copied().flatten());
        let need_rtcp_a =
            !(f.mux_only || (f.mux && off_ports_before.is_some_and(|p| p.rtcp.is_none())));
        let set = call.port_sets[off_set]
            .as_mut()
            .ok_or_else(|| missing_set(call_id))?;
        ensure_ports(ifaces, txn, set, i, need_rtcp_a)?;
        if f.mux_only {
            call.leg_mut(off).streams[i].mux_active = true;
        }

        // Ports facing the receiver (a WebRTC receiver gets RTCP multiplexed, RFC 8829).
        let mux_b = (f.mux && req.flags.rtcp_mux == RtcpMuxPolicy::Pass) || webrtc_toward_receiver;
        let mux_only_b = (f.mux_only && mux_b) || webrtc_toward_receiver;
        let ans_ports_before = call.port_sets[ans_set]
            .as_ref()
            .and_then(|s| s.streams.get(i).copied().flatten());
        let need_rtcp_b =
            !(mux_only_b || (mux_b && ans_ports_before.is_some_and(|p| p.rtcp.is_none())));
        let set = call.port_sets[ans_set]
            .as_mut()
            .ok_or_else(|| missing_set(call_id))?;
        let b_ports = ensure_ports(ifaces, txn, set, i, need_rtcp_b)?;

        // Codecs offered onward.
        let offered: Vec<Codec> = f
            .codecs
            .iter()
            .filter(|c| {
                !c.name.as_deref().is_some_and(|n| {
                    req.flags
                        .strip_codecs
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(n))
                })
            })
            .cloned()
            .collect();
        if f.rtp
            && offered.len() != f.codecs.len()
            && (offered.is_empty()
                || (f.media == "audio" && offered.iter().all(Codec::is_auxiliary)))
        {
            return Err(EngineError::NoCommonCodec {
                call_id: call_id.to_string(),
                index: i,
            });
        }
        let keep: Vec<u8> = offered.iter().map(|c| c.payload_type).collect();
        rewrite::rewrite_media(
            sec,
            &MediaRewrite {
                ports: b_ports,
                addr: out_addr,
                in_proto: &f.proto,
                out_proto: &out_proto,
                keep_formats: f.rtp.then_some(keep.as_slice()),
                mux: mux_b,
                keep_zero: f.zero_hold,
                session_has_connection,
            },
        )?;
        if let Some(c) = &crypto_toward_receiver {
            sec.push_line(Line::attribute("crypto", Some(c)));
        }
        if webrtc_toward_receiver {
            if let (Some(w), Some(cert)) = (
                call.leg(ans).streams[i].webrtc.as_ref(),
                call.dtls_cert.as_ref(),
            ) {
                webrtc::write_media(sec, w, &cert.0, out_addr, b_ports.rtp, f.direction);
                if let Some(m) = &w.mid {
                    bundle_mids.push(m.clone());
                }
            }
        }
        let st = &mut call.leg_mut(ans).streams[i];
        st.offered = offered;
        st.offered_proto = out_proto;
        st.offered_mux = mux_b;
        st.demuxed = f.mux && !mux_b;
        st.offered_disabled = false;
        if st.media.is_empty() {
            st.media.clone_from(&f.media);
        }
    }

    if !bundle_mids.is_empty() {
        webrtc::write_session(&mut out, &bundle_mids);
    }
    let hold = facts.iter().any(StreamFacts::is_hold);
    Ok(OfferResponse {
        sdp: out.to_bytes(),
        streams: plans(ifaces, call, off, ans),
        hold,
    })
}

/// Whether an offer makes the relay a DTLS endpoint (WebRTC on one side, not the other).
fn needs_certificate(sdp: &Sdp<'_>, req: &OfferRequest<'_>) -> bool {
    let to_dtls = req.flags.transport.as_deref().is_some_and(rewrite::is_dtls);
    let from_dtls = sdp
        .media()
        .iter()
        .any(|m| m.media_line().is_ok_and(|l| rewrite::is_dtls(l.proto)));
    to_dtls || from_dtls
}

fn missing_set(call_id: &str) -> EngineError {
    // Port sets are only removed together with the last leg that uses them.
    EngineError::UnknownCall(call_id.to_string())
}

fn answer_apply(
    ifaces: &mut [Interface],
    call: &mut Call,
    sdp: &Sdp<'_>,
    req: &AnswerRequest<'_>,
    txn: &mut Txn,
) -> Result<AnswerResponse, EngineError> {
    let call_id = req.call_id;
    if req.to_tag == req.from_tag {
        return Err(EngineError::SameTags {
            call_id: call_id.to_string(),
            tag: req.from_tag.to_string(),
        });
    }
    let off = call
        .find_tag(req.from_tag)
        .ok_or_else(|| EngineError::UnknownTag {
            call_id: call_id.to_string(),
            tag: req.from_tag.to_string(),
        })?;
    let ans = match call.find_tag(req.to_tag) {
        Some(i) => i,
        None => {
            let candidates: Vec<(usize, bool)> = call
                .legs()
                .filter(|(i, l)| {
                    *i != off
                        && l.peer == Some(off)
                        && (req.via_branch.is_none() || l.via_branch.as_deref() == req.via_branch)
                })
                .map(|(i, l)| (i, l.tag.is_none()))
                .collect();
            let untagged: Vec<usize> = candidates.iter().filter(|c| c.1).map(|c| c.0).collect();
            if untagged.len() > 1 {
                return Err(EngineError::AmbiguousBranch {
                    call_id: call_id.to_string(),
                    from_tag: req.from_tag.to_string(),
                });
            }
            if let Some(&i) = untagged.first() {
                call.leg_mut(i).tag = Some(req.to_tag.to_string());
                i
            } else if let Some(&(i, _)) = candidates.first() {
                // Another fork answering on the same branch: own state, same relay ports.
                let mut leg = call.leg(i).clone();
                leg.tag = Some(req.to_tag.to_string());
                if let Some(Some(set)) = call.port_sets.get_mut(leg.ports) {
                    set.refs += 1;
                }
                call.legs.push(Some(leg));
                call.legs.len() - 1
            } else {
                return Err(EngineError::NoPendingOffer {
                    call_id: call_id.to_string(),
                    from_tag: req.from_tag.to_string(),
                });
            }
        }
    };
    if call.leg(ans).peer != Some(off) {
        return Err(EngineError::NoPendingOffer {
            call_id: call_id.to_string(),
            from_tag: req.from_tag.to_string(),
        });
    }

    let facts = rewrite::read_facts(sdp)?;
    let offered_n = call.leg(ans).streams.len();
    if facts.len() != offered_n || call.leg(off).streams.len() != offered_n {
        return Err(EngineError::MediaCountMismatch {
            call_id: call_id.to_string(),
            offer: offered_n,
            answer: facts.len(),
        });
    }

    let a_iface = call.leg(off).iface;
    let out_addr = ifaces[a_iface].cfg.sdp_address();
    let in_proto = first_proto(facts.iter().map(|f| (f.proto.as_str(), f.port != 0)));
    let a_streams = call.leg(off).streams.clone();
    let session_out_proto = first_proto(a_streams.iter().map(|s| (s.proto.as_str(), !s.disabled)));
    let all_zero_hold = facts.iter().all(|f| f.zero_hold || f.port == 0);
    let mut out = sdp.clone();
    rewrite::rewrite_session(
        &mut out,
        out_addr,
        req.flags.keep_origin,
        all_zero_hold,
        in_proto,
        session_out_proto,
    )?;
    let session_has_connection = out.connection().is_some();

    let off_set = call.leg(off).ports;
    let ans_set = call.leg(ans).ports;
    let mut bundle_mids: Vec<String> = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        let a = &a_streams[i];
        let offered_disabled = call.leg(ans).streams[i].offered_disabled;
        call.leg_mut(ans).streams[i].learn(f);
        let sec = &mut out.media_mut()[i];
        let a_proto = if a.proto.is_empty() {
            f.proto.clone()
        } else {
            a.proto.clone()
        };
        if f.port == 0 || a.disabled || offered_disabled {
            rewrite::disable_media(sec, out_addr, &f.proto, &a_proto, false)?;
            // A rejected section keeps the offerer's mid (RFC 5888 9.2, RFC 8843 7.3.3: it
            // only leaves the BUNDLE group); a browser matches answer sections by mid.
            if let Some(mid) = a.webrtc.as_ref().and_then(|w| w.mid.as_deref()) {
                if rewrite::is_dtls(&a_proto) {
                    sec.push_line(Line::attribute("mid", Some(mid)));
                }
            }
            call.leg_mut(ans).streams[i].disabled = true;
            continue;
        }
        // SDES terminated toward the offerer: answer with our key.
        let mut crypto_toward_offerer = None;
        let webrtc_toward_offerer = a.webrtc.is_some() && rewrite::is_dtls(&a_proto);
        if let Some(w) = call.leg_mut(ans).streams[i].webrtc.as_mut() {
            // We offered WebRTC to this party: its ICE/DTLS parameters are in the answer.
            w.learn_answer(webrtc::read_peer(sdp, i));
        }
        if f.rtp
            && f.proto != a_proto
            && !webrtc_toward_offerer
            && !rewrite::is_dtls(&f.proto)
            && (a_proto.contains("SAVP") || f.proto.contains("SAVP"))
        {
            let a_sdes = a.sdes_local.is_some() && a.sdes_remote.is_some();
            let b_offered_key = call.leg(ans).streams[i].sdes_local.clone();
            if a_proto.contains("SAVP") && a_sdes && !rewrite::is_dtls(&a_proto) {
                crypto_toward_offerer = a.sdes_local.as_ref().map(SdesCrypto::to_attr_value);
            } else if let Some(ours) =
                b_offered_key.filter(|_| f.proto.contains("SAVP") && !rewrite::is_dtls(&f.proto))
            {
                // The answerer speaks SRTP: its key for ours (same tag, RFC 4568 7.1.2).
                let remote = f
                    .crypto
                    .iter()
                    .filter_map(|c| SdesCrypto::parse(c).ok())
                    .find(|c| c.tag == ours.tag && c.suite == ours.suite)
                    .ok_or_else(|| EngineError::Unsupported {
                        call_id: call_id.to_string(),
                        index: i,
                        what: "SRTP answer without an a=crypto matching the offered one".into(),
                    })?;
                call.leg_mut(ans).streams[i].sdes_remote = Some(remote);
            } else if a_proto.contains("SAVP") {
                return Err(EngineError::Unsupported {
                    call_id: call_id.to_string(),
                    index: i,
                    what: format!(
                        "answering {a_proto} from a {} answer (SRTP/DTLS termination)",
                        f.proto
                    ),
                });
            } else {
                tracing::warn!(
                    call_id,
                    index = i,
                    "answer converted away from DTLS-SRTP; media needs the WebRTC gateway"
                );
            }
        }

        // Codecs: keep only answered formats that match an offered codec.
        let keep: Vec<u8> = {
            let st = &call.leg(ans).streams[i];
            let mut keep = Vec::with_capacity(f.codecs.len());
            for c in &f.codecs {
                if st.offered.iter().any(|o| o.matches(c)) {
                    keep.push(c.payload_type);
                } else {
                    tracing::warn!(call_id, index = i, pt = c.payload_type, codec = ?c.name,
                        "answered format was not offered; removed");
                }
            }
            keep
        };
        if f.rtp {
            let kept: Vec<&Codec> = f
                .codecs
                .iter()
                .filter(|c| keep.contains(&c.payload_type))
                .collect();
            if kept.is_empty() || (f.media == "audio" && kept.iter().all(|c| c.is_auxiliary())) {
                return Err(EngineError::NoCommonCodec {
                    call_id: call_id.to_string(),
                    index: i,
                });
            }
        }

        // rtcp-mux settles now.
        let (offered_mux, demuxed) = {
            let st = &call.leg(ans).streams[i];
            (st.offered_mux, st.demuxed)
        };
        let b_mux = f.mux && offered_mux;
        let a_mux = (a.mux_signalled && (b_mux || demuxed)) || webrtc_toward_offerer;
        call.leg_mut(ans).streams[i].mux_active = b_mux;
        call.leg_mut(off).streams[i].mux_active = a_mux;
        let set = call.port_sets[off_set]
            .as_mut()
            .ok_or_else(|| missing_set(call_id))?;
        if a_mux {
            drop_rtcp(txn, set, i);
        }
        let a_ports = ensure_ports(ifaces, txn, set, i, !a_mux)?;
        let set = call.port_sets[ans_set]
            .as_mut()
            .ok_or_else(|| missing_set(call_id))?;
        if b_mux {
            drop_rtcp(txn, set, i);
        }
        ensure_ports(ifaces, txn, set, i, !b_mux)?;

        rewrite::rewrite_media(
            sec,
            &MediaRewrite {
                ports: a_ports,
                addr: out_addr,
                in_proto: &f.proto,
                out_proto: &a_proto,
                keep_formats: f.rtp.then_some(keep.as_slice()),
                mux: a_mux,
                keep_zero: f.zero_hold,
                session_has_connection,
            },
        )?;
        if let Some(c) = &crypto_toward_offerer {
            sec.push_line(Line::attribute("crypto", Some(c)));
        }
        if webrtc_toward_offerer {
            if let (Some(w), Some(cert)) = (a.webrtc.as_ref(), call.dtls_cert.as_ref()) {
                webrtc::write_media(sec, w, &cert.0, out_addr, a_ports.rtp, f.direction);
                if let Some(m) = &w.mid {
                    bundle_mids.push(m.clone());
                }
            }
        }
    }
    if !bundle_mids.is_empty() {
        webrtc::write_session(&mut out, &bundle_mids);
    }

    let hold = facts.iter().any(StreamFacts::is_hold);
    Ok(AnswerResponse {
        sdp: out.to_bytes(),
        streams: plans(ifaces, call, off, ans),
        hold,
    })
}
