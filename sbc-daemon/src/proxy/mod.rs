//! Stateful proxy core (RFC 3261 section 16), sans-IO.
//!
//! [`Proxy`] owns the transaction state of every request it forwards. The IO layer feeds it
//! received messages ([`Proxy::handle_message`]), the passage of time
//! ([`Proxy::handle_timeout`]) and send failures ([`Proxy::handle_transport_error`]); it drains
//! what must be sent with [`Proxy::poll_transmit`] and sleeps until [`Proxy::next_deadline`].
//!
//! What happens to a request (16.3-16.6): validation (syntax, URI scheme, Max-Forwards, loop
//! detection, Proxy-Require), received/rport on the received Via (RFC 3581), a server
//! transaction and `100 Trying` for INVITE, Route preprocessing (strict-router fix-up, our own
//! Route entries consumed), target selection (pre-loaded or in-dialog Route, Request-URI, or
//! the routing rules' trunk group), Record-Route (two entries with `r2=on` when the request
//! changes interface or transport), our Via with an RFC 3261 branch, and a client
//! transaction per attempt. Responses (16.7) are matched to client transactions, 100 is
//! absorbed, provisionals and 2xx are forwarded at once, non-2xx finals fail over to the next
//! trunk on 408/5xx/timeout/connection failure and otherwise the best one is forwarded.
//! CANCEL (16.10) is answered and propagated to every pending branch; ACK for non-2xx is
//! hop-by-hop, ACK for 2xx is forwarded statelessly along the route set. Responses that match
//! no transaction and whose top Via is not ours are dropped (S-34).

pub mod addressing;
mod dialogs;
pub mod local;
pub mod media;
pub mod nat;
pub mod probing;
mod registration;
pub mod routing;
mod topology;
mod trunk_dns;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_config::{Config, InterfacePolicy};
use portcullis_sip::{HeaderName, Method, SipMessage, SipUri};
use tracing::{debug, info, warn};

use crate::metrics::{DropReason, Metrics, TxKind};
use crate::registrar::upstream::{RegistrationCache, TOKEN_PREFIX};
use crate::registrar::{Registrar, RegistrarSettings};
use crate::transaction::server::{AckDisposition, RetransmissionDisposition};
use crate::transaction::{
    ClientEvent, ClientKey, ClientTransaction, Reliability, ServerEvent, ServerKey,
    ServerTransaction, TimerConfig, TransactionKind,
};
use crate::transport::flow_token::FlowTokens;
use crate::transport::{
    ConnId, Destination, ListenerId, Source, Transmit, TransmitToken, Transport,
};
use registration::RegContext;

use addressing::{uri_destination, via_with_received, ListenerInfo, LocalAddresses};
use probing::{Transition, TrunkHealth};
use routing::{RouteQuery, Router};

/// Timer C (16.6 step 11): how long an INVITE may stay in Proceeding.
const TIMER_C: Duration = Duration::from_secs(180);
/// Our branch prefix after the magic cookie, so our own Vias are recognisable.
const BRANCH_PREFIX: &str = "z9hG4bKpc";

/// Settings of the proxy core, derived from the configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub timers: TimerConfig,
    pub udp_mtu_threshold: usize,
    pub server_name: String,
    pub policies: HashMap<String, InterfacePolicy>,
    /// `policy.hide_hosts` of each interface, parsed once.
    pub(crate) hidden_hosts: HashMap<String, topology::HostPatterns>,
}

impl ProxySettings {
    pub fn from_config(cfg: &Config) -> ProxySettings {
        ProxySettings {
            timers: TimerConfig::from_millis(
                cfg.sip.timers.t1_ms,
                cfg.sip.timers.t2_ms,
                cfg.sip.timers.t4_ms,
            ),
            udp_mtu_threshold: cfg.sip.udp_mtu_threshold,
            server_name: cfg.sip.user_agent.clone(),
            policies: cfg
                .interfaces
                .iter()
                .map(|i| (i.name.clone(), i.policy.clone()))
                .collect(),
            hidden_hosts: cfg
                .interfaces
                .iter()
                .map(|i| {
                    (
                        i.name.clone(),
                        topology::HostPatterns::parse(&i.policy.hide_hosts),
                    )
                })
                .collect(),
        }
    }
}

/// One place a request can be sent to.
#[derive(Debug, Clone)]
struct Hop {
    destination: Destination,
    transport: Transport,
    listener: ListenerId,
    /// Trunk name, for failover metrics and logs.
    trunk: Option<String>,
    /// The transport may be upgraded to a stream for large requests (RFC 3261 18.1.1).
    may_upgrade: bool,
    /// This hop is a TCP upgrade of a UDP hop: fall back to UDP on a transport error.
    upgraded_from: Option<ListenerId>,
    /// Request-URI for this branch (a registered contact), when it differs from the request's.
    request_uri: Option<String>,
    /// A registered client's flow: send over this connection only.
    flow: Option<FlowTarget>,
}

/// The flow of a registered binding a branch is delivered over.
#[derive(Debug, Clone)]
struct FlowTarget {
    conn: Option<ConnId>,
    /// The flow itself (for flow tokens in Record-Route).
    source: Source,
    /// Registration the flow belongs to (empty for flows learnt from Record-Route).
    aor: String,
    contact: String,
    /// The connection is the only way to the peer (a registered client): never reconnect.
    bound: bool,
}

impl Hop {
    /// A transmit of `payload` to this hop (over the registered flow, if any).
    fn transmit(&self, payload: Bytes, token: Option<TransmitToken>) -> Transmit {
        let conn = self.flow.as_ref().and_then(|f| f.conn);
        Transmit {
            listener: self.listener,
            transport: self.transport,
            destination: self.destination.clone(),
            conn,
            payload,
            token,
            flow_bound: conn.is_some() && self.flow.as_ref().is_some_and(|f| f.bound),
            trunk: self.trunk.clone(),
        }
    }

    fn to(destination: Destination, transport: Transport, listener: ListenerId) -> Hop {
        Hop {
            destination,
            transport,
            listener,
            trunk: None,
            may_upgrade: false,
            upgraded_from: None,
            request_uri: None,
            flow: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(u64),
    Client(u64),
    /// Periodic clean-up (expired registrations).
    Housekeeping,
    /// OPTIONS probe of trunk number n (index into the probed trunks).
    Probe(usize),
    /// NAT keepalives toward registered clients.
    Keepalive,
}

/// How often expired registrations are purged.
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// A best final response candidate: a real response or one we synthesise.
#[derive(Debug)]
enum BestResponse {
    Received(u16, Box<SipMessage>),
    Local(u16, &'static str),
}

impl BestResponse {
    fn status(&self) -> u16 {
        match self {
            BestResponse::Received(s, _) | BestResponse::Local(s, _) => *s,
        }
    }
}

struct ServerEntry {
    key: ServerKey,
    tx: ServerTransaction,
    source: Source,
    response_dest: Destination,
    /// The request as received (with received/rport); dropped once a final response is sent.
    request: Option<SipMessage>,
    last_response: Option<Bytes>,
    to_tag: String,
    /// The request prepared for forwarding (without our Via and Record-Route).
    base: Option<SipMessage>,
    pending_hops: VecDeque<Hop>,
    branches: Vec<u64>,
    best: Option<BestResponse>,
    cancelled: bool,
    record_route: bool,
    ingress: ListenerId,
    loop_hash: u64,
    /// Send every hop at once (forking to all registered contacts) instead of one by one.
    parallel: bool,
    /// A REGISTER proxied to the upstream registrar.
    reg: Option<RegContext>,
    /// Vias of the request, removed when it was sent to a topology-hiding interface.
    hidden_vias: Option<Vec<String>>,
    /// The Record-Route set as it would have been sent without topology hiding.
    full_rr: Option<Vec<String>>,
}

struct ClientEntry {
    key: ClientKey,
    tx: ClientTransaction,
    server: Option<u64>,
    is_cancel: bool,
    /// The request as sent (for ACK and CANCEL); dropped when no longer needed.
    request: Option<SipMessage>,
    bytes: Bytes,
    hop: Hop,
    ack: Option<Bytes>,
    provisional: bool,
    final_seen: bool,
    cancel_wanted: bool,
    cancel_sent: bool,
    timer_c: Option<Instant>,
    token: TransmitToken,
    /// This transaction is an OPTIONS health probe of probed trunk n.
    probe: Option<usize>,
    /// This transaction is an OPTIONS NAT keepalive to a client flow.
    keepalive: Option<nat::FlowKey>,
    /// The request carried an SDP offer the media engine anchored.
    media_offer: bool,
    /// An INVITE without SDP between anchoring interfaces: a 2xx with SDP is a late offer.
    late_offer: Option<(String, String)>,
}

/// Why the SBC sends an OPTIONS of its own.
#[derive(Debug, Clone, Copy)]
enum OwnOptions {
    /// Health probe of probed trunk n.
    Probe(usize),
    /// NAT keepalive to a client flow.
    Keepalive(nat::FlowKey),
}

impl ClientEntry {
    /// A client transaction for `bytes` sent to `hop` at `now` (the caller fills in what
    /// it is for).
    fn new(
        key: ClientKey,
        kind: TransactionKind,
        hop: Hop,
        bytes: Bytes,
        token: TransmitToken,
        timers: TimerConfig,
        now: Instant,
    ) -> ClientEntry {
        let reliability = if hop.transport.is_reliable() {
            Reliability::Reliable
        } else {
            Reliability::Unreliable
        };
        ClientEntry {
            key,
            tx: ClientTransaction::new(kind, reliability, timers, now),
            server: None,
            is_cancel: false,
            request: None,
            bytes,
            hop,
            ack: None,
            provisional: false,
            final_seen: false,
            cancel_wanted: false,
            cancel_sent: false,
            timer_c: None,
            token,
            probe: None,
            keepalive: None,
            media_offer: false,
            late_offer: None,
        }
    }
}

/// Where the OPTIONS probes of a trunk go.
#[derive(Debug, Clone)]
struct ProbeTarget {
    hop: Hop,
    request_uri: String,
}

/// The stateful proxy.
pub struct Proxy {
    settings: ProxySettings,
    local: LocalAddresses,
    router: Router,
    metrics: Arc<Metrics>,
    servers: HashMap<u64, ServerEntry>,
    server_index: HashMap<ServerKey, u64>,
    clients: HashMap<u64, ClientEntry>,
    client_index: HashMap<ClientKey, u64>,
    tokens: HashMap<TransmitToken, u64>,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    next_id: u64,
    nonce: u64,
    out: VecDeque<Transmit>,
    registrar: Registrar,
    housekeeping: bool,
    health: TrunkHealth,
    probe_targets: Vec<Option<ProbeTarget>>,
    flow_tokens: FlowTokens,
    reg_cache: RegistrationCache,
    /// Trunk group and mode of the upstream registrar, when REGISTERs are proxied.
    upstream_registrar: Option<(String, portcullis_config::RegistrationMode)>,
    hidden: topology::HiddenDialogs,
    call_id_masks: topology::CallIdMasks,
    keepalive_cfg: portcullis_config::Keepalive,
    keepalives: nat::KeepaliveTable,
    /// Per-trunk request rewriting (S-36, S-38, header rules), by trunk name.
    trunk_rules: HashMap<String, portcullis_config::Trunk>,
    media: Option<media_engine::MediaEngine>,
    dialogs: dialogs::Dialogs,
    late_offers: HashMap<String, media::LateOffer>,
    /// Media session limit per interface (0: none) and the calls anchored on each.
    media_limits: HashMap<String, u32>,
    /// Media security profile of each interface with a media address.
    media_profiles: HashMap<String, portcullis_config::MediaProfile>,
    media_calls: HashMap<String, std::collections::HashSet<String>>,
    media_timeout: Duration,
    media_hold_timeout: Duration,
    /// Interfaces with a media address.
    media_interfaces: Vec<String>,
    media_out: VecDeque<media::MediaCommand>,
    /// RFC 3263 resolutions of trunks with host names, by trunk name.
    trunk_dns: HashMap<String, crate::dns::Resolution>,
}

enum Plan {
    /// Answer locally with this status.
    Reply(u16, &'static str),
    /// A REGISTER for the local registrar.
    Register(String),
    /// A REGISTER to proxy to the upstream registrar.
    RegisterUpstream,
    /// Forward to these hops: in order (failover), or all at once when `parallel`.
    Forward { hops: VecDeque<Hop>, parallel: bool },
}

impl Plan {
    fn one(hop: Hop) -> Plan {
        Plan::Forward {
            hops: VecDeque::from([hop]),
            parallel: false,
        }
    }
}

impl Proxy {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Proxy {
        let listeners = ListenerInfo::from_config(cfg);
        let local = LocalAddresses::new(listeners, cfg.sip.domain_aliases.clone());
        let health = TrunkHealth::from_config(cfg);
        let probe_targets = cfg
            .trunks
            .iter()
            .filter(|t| t.probe_interval_s > 0)
            .map(|t| {
                let transport = match t.transport {
                    portcullis_config::TrunkTransport::Udp => Transport::Udp,
                    portcullis_config::TrunkTransport::Tcp => Transport::Tcp,
                    portcullis_config::TrunkTransport::Tls => Transport::Tls,
                };
                let listener =
                    local.egress_listener(Some(&t.interface), transport, t.listener.as_deref())?;
                let destination = match addressing::parse_host_ip(&t.host) {
                    Some(ip) => Destination::Addr(std::net::SocketAddr::new(ip, t.port)),
                    None => Destination::Name(t.host.clone(), t.port),
                };
                let mut request_uri = format!("sip:{}:{}", t.host, t.port);
                if transport != Transport::Udp {
                    request_uri.push_str(";transport=");
                    request_uri.push_str(transport.param());
                }
                let mut hop = Hop::to(destination, transport, listener.id);
                // For the IO layer's TLS settings; own requests fail no branch over.
                hop.trunk = Some(t.name.clone());
                Some(ProbeTarget { hop, request_uri })
            })
            .collect();
        for i in 0..health.len() {
            if let Some(p) = health.get(i) {
                metrics.trunk_up(&p.name, true);
            }
        }
        Proxy {
            settings: ProxySettings::from_config(cfg),
            local,
            router: Router::from_config(cfg),
            metrics,
            servers: HashMap::new(),
            server_index: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            tokens: HashMap::new(),
            timers: BinaryHeap::new(),
            next_id: 1,
            nonce: rand::random::<u64>() & 0xffff_ffff,
            out: VecDeque::new(),
            registrar: registrar_from_config(cfg),
            housekeeping: false,
            health,
            probe_targets,
            flow_tokens: FlowTokens::random(),
            reg_cache: RegistrationCache::default(),
            upstream_registrar: cfg
                .registrar
                .upstream
                .clone()
                .map(|g| (g, cfg.registrar.mode)),
            hidden: topology::HiddenDialogs::default(),
            call_id_masks: topology::CallIdMasks::default(),
            keepalive_cfg: cfg.registrar.keepalive.clone(),
            keepalives: nat::KeepaliveTable::default(),
            trunk_rules: cfg
                .trunks
                .iter()
                .filter(|t| {
                    !t.request_uri_params.is_empty()
                        || t.disable_100rel
                        || !t.headers.is_empty()
                        || t.request_uri_form != portcullis_config::UriForm::Keep
                })
                .map(|t| (t.name.clone(), t.clone()))
                .collect(),
            media: media::engine_from_config(cfg),
            dialogs: dialogs::Dialogs::default(),
            late_offers: HashMap::new(),
            media_limits: cfg
                .interfaces
                .iter()
                .filter_map(|i| i.media.as_ref().map(|m| (i.name.clone(), m.max_sessions)))
                .collect(),
            media_profiles: cfg
                .interfaces
                .iter()
                .filter_map(|i| i.media.as_ref().map(|m| (i.name.clone(), m.profile)))
                .collect(),
            media_calls: HashMap::new(),
            media_timeout: Duration::from_secs(cfg.media.timeout_s),
            media_hold_timeout: Duration::from_secs(cfg.media.hold_timeout_s),
            media_interfaces: cfg
                .interfaces
                .iter()
                .filter(|i| i.media.is_some())
                .map(|i| i.name.clone())
                .collect(),
            media_out: VecDeque::new(),
            trunk_dns: HashMap::new(),
        }
    }

    /// Starts the periodic work (registration clean-up, trunk probes) at time `now`.
    pub fn start(&mut self, now: Instant) {
        if !self.housekeeping {
            self.housekeeping = true;
            self.timers
                .push(Reverse((now + HOUSEKEEPING, TimerRef::Housekeeping)));
        }
        for i in 0..self.health.len() {
            self.timers.push(Reverse((now, TimerRef::Probe(i))));
        }
        if self.keepalive_cfg.method != portcullis_config::KeepaliveMethod::None {
            let every = Duration::from_secs(self.keepalive_cfg.interval_s.max(1));
            self.timers
                .push(Reverse((now + every, TimerRef::Keepalive)));
        }
    }

    /// Sends a keepalive to every NATed UDP client flow with registrations, counting
    /// unanswered OPTIONS and dropping the registrations of flows that stopped answering.
    fn keepalive_tick(&mut self, now: Instant) {
        let every = Duration::from_secs(self.keepalive_cfg.interval_s.max(1));
        self.timers
            .push(Reverse((now + every, TimerRef::Keepalive)));
        let keys: Vec<nat::FlowKey> = self.keepalives.flows.keys().copied().collect();
        for key in keys {
            let Some(state) = self.keepalives.flows.get(&key).cloned() else {
                continue;
            };
            let flow = state.flow;
            if !self.registrar.has_flow(&flow) && !self.reg_cache.has_flow(&flow) {
                self.keepalives.flows.remove(&key);
                continue;
            }
            let mut failures = state.failures;
            if let Some(prev) = state.outstanding {
                if self.clients.contains_key(&prev) {
                    self.remove_client(prev);
                }
                failures += 1;
                self.metrics.keepalive_failure();
            }
            if failures >= self.keepalive_cfg.max_failures {
                let a = self.registrar.remove_flow_source(&flow);
                let b = self.reg_cache.remove_flow_source(&flow);
                self.keepalives.flows.remove(&key);
                self.metrics.registrar_bindings(self.registrar.bindings());
                warn!(peer = %flow.remote, bindings = a + b, "NAT keepalives unanswered, registrations dropped");
                continue;
            }
            let outstanding = match self.keepalive_cfg.method {
                portcullis_config::KeepaliveMethod::Crlf => {
                    self.out.push_back(
                        Hop::to(
                            Destination::Addr(flow.remote),
                            flow.transport,
                            flow.listener,
                        )
                        .transmit(Bytes::from_static(b"\r\n\r\n"), None),
                    );
                    None
                }
                _ => self.send_keepalive_options(now, flow, key),
            };
            if let Some(k) = self.keepalives.flows.get_mut(&key) {
                k.failures = failures;
                k.outstanding = outstanding;
            }
        }
    }

    fn send_keepalive_options(
        &mut self,
        now: Instant,
        flow: Source,
        key: nat::FlowKey,
    ) -> Option<u64> {
        let hop = Hop::to(
            Destination::Addr(flow.remote),
            flow.transport,
            flow.listener,
        );
        let target = format!("sip:{}", flow.remote);
        self.send_own_options(now, hop, &target, OwnOptions::Keepalive(key))
    }

    /// Whether a trunk is usable (not marked down by probing).
    pub fn trunk_is_up(&self, trunk: &str) -> bool {
        self.health.is_up(trunk)
    }

    /// Sends the next OPTIONS probe of probed trunk `i`; an unanswered previous probe
    /// counts as a failure.
    fn probe(&mut self, now: Instant, i: usize) {
        if let Some(prev) = self.health.due(i, now) {
            if self.clients.contains_key(&prev) {
                self.remove_client(prev);
                self.probe_result(i, false);
            }
        }
        let (Some(Some(target)), Some(p)) =
            (self.probe_targets.get(i).cloned(), self.health.get(i))
        else {
            return;
        };
        let interval = p.interval;
        let hop = self.resolved_probe_hop(&p.name.clone(), target.hop);
        self.timers
            .push(Reverse((now + interval, TimerRef::Probe(i))));
        let id = self.send_own_options(now, hop, &target.request_uri, OwnOptions::Probe(i));
        if let Some(p) = self.health.get_mut(i) {
            p.outstanding = id;
        }
    }

    /// Sends an OPTIONS of the SBC's own (trunk probe or NAT keepalive) as a client
    /// transaction; returns its id.
    fn send_own_options(
        &mut self,
        now: Instant,
        hop: Hop,
        request_uri: &str,
        purpose: OwnOptions,
    ) -> Option<u64> {
        let egress = self.local.listener(hop.listener).cloned()?;
        let user = match purpose {
            OwnOptions::Probe(_) => "probe",
            OwnOptions::Keepalive(_) => "keepalive",
        };
        let payload = Bytes::from(format!(
            "OPTIONS {request_uri} SIP/2.0\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{hp}>;tag={tag:x}\r\n\
             To: <{request_uri}>\r\n\
             Call-ID: {user}-{nonce:x}-{id:x}\r\n\
             CSeq: 1 OPTIONS\r\n\
             User-Agent: {ua}\r\n\
             Content-Length: 0\r\n\r\n",
            hp = egress.hostport(),
            tag = rand::random::<u64>(),
            nonce = self.nonce,
            id = self.next_id,
            ua = self.settings.server_name,
        ));
        self.send_own_request_as(now, hop, payload, Some(purpose))
    }

    /// Sends a request of the SBC's own (`payload` without Via; ours is added) as a client
    /// transaction; returns its id.
    fn send_own_request(&mut self, now: Instant, hop: Hop, payload: Bytes) -> Option<u64> {
        self.send_own_request_as(now, hop, payload, None)
    }

    fn send_own_request_as(
        &mut self,
        now: Instant,
        hop: Hop,
        payload: Bytes,
        purpose: Option<OwnOptions>,
    ) -> Option<u64> {
        let egress = self.local.listener(hop.listener).cloned()?;
        let id = self.next_id();
        let kind = match purpose {
            Some(OwnOptions::Probe(_)) => "p",
            Some(OwnOptions::Keepalive(_)) => "k",
            None => "o",
        };
        let branch = format!(
            "{BRANCH_PREFIX}{:016x}.{kind}{:x}{:x}",
            0u64, self.nonce, id
        );
        let mut msg = SipMessage::parse(payload).ok()?;
        if self.masks_call_id(&egress.interface) {
            self.mask_call_id(now, &mut msg);
        }
        let method = msg.method().cloned()?;
        msg.prepend_header(
            HeaderName::Via,
            &format!(
                "SIP/2.0/{} {};branch={branch}",
                hop.transport.via_token(),
                egress.hostport()
            ),
        );
        let payload = msg.to_bytes();
        let key = ClientKey { branch, method };
        let mut entry = ClientEntry::new(
            key,
            TransactionKind::NonInvite,
            hop,
            payload,
            TransmitToken(id),
            self.settings.timers,
            now,
        );
        match purpose {
            Some(OwnOptions::Probe(i)) => entry.probe = Some(i),
            Some(OwnOptions::Keepalive(k)) => entry.keepalive = Some(k),
            None => {}
        }
        self.start_client(id, entry);
        Some(id)
    }

    /// Sends the request of a new client transaction and registers it (index, transmit
    /// token for send failures, metrics, timers).
    fn start_client(&mut self, id: u64, entry: ClientEntry) {
        self.out
            .push_back(entry.hop.transmit(entry.bytes.clone(), Some(entry.token)));
        self.client_index.insert(entry.key.clone(), id);
        self.tokens.insert(entry.token, id);
        self.metrics.transactions(client_kind(entry.tx.kind()), 1);
        self.clients.insert(id, entry);
        self.schedule(TimerRef::Client(id));
    }

    fn probe_result(&mut self, i: usize, ok: bool) {
        let transition = self.health.record(i, ok);
        let Some(p) = self.health.get(i) else {
            return;
        };
        match transition {
            Transition::WentDown => {
                warn!(trunk = %p.name, failures = p.consecutive_failures, "trunk marked down by OPTIONS probing");
                self.metrics.trunk_up(&p.name, false);
            }
            Transition::WentUp => {
                info!(trunk = %p.name, "trunk answered OPTIONS again, marked up");
                self.metrics.trunk_up(&p.name, true);
            }
            Transition::None => {}
        }
    }

    /// Replaces the registrar (settings and authentication from the configuration).
    pub fn set_registrar(&mut self, registrar: Registrar) {
        self.registrar = registrar;
    }

    /// A stream connection closed: registrations bound to it are gone (S-02).
    pub fn handle_flow_closed(&mut self, conn: ConnId) {
        self.reg_cache.flow_closed(conn);
        let n = self.registrar.flow_closed(conn);
        if n > 0 {
            debug!(
                conn = conn.0,
                bindings = n,
                "flow closed, registrations removed"
            );
            self.metrics.registrar_bindings(self.registrar.bindings());
        }
    }

    pub fn listeners(&self) -> &[ListenerInfo] {
        self.local.listeners()
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`Proxy::handle_timeout`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Number of live server and client transactions.
    pub fn transaction_counts(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    fn iface_name(&self, l: ListenerId) -> &str {
        self.local
            .listener(l)
            .map(|l| l.interface.as_str())
            .unwrap_or("unknown")
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A received message (one datagram, or one framed message from a stream).
    pub fn handle_message(&mut self, now: Instant, raw: Bytes, src: Source) {
        let mut msg = match SipMessage::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.parse_error(self.iface_name(src.listener));
                debug!(peer = %src.remote, error = %e, "dropping unparseable SIP message");
                return;
            }
        };
        if self.masks_call_id(self.iface_name(src.listener)) {
            self.unmask_call_id(now, &mut msg);
        }
        if msg.is_request() {
            self.handle_request(now, msg, src);
        } else {
            self.handle_response(now, msg, src);
        }
    }

    // ---------------------------------------------------------------- requests

    fn handle_request(&mut self, now: Instant, mut msg: SipMessage, src: Source) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        self.metrics.request(self.iface_name(src.listener), &method);
        // RFC 3261 18.2.1 / RFC 3581: received and rport on the top Via.
        let new_via = match msg.top_via() {
            Ok(via) => {
                let first = msg
                    .header_values(HeaderName::Via)
                    .first()
                    .copied()
                    .unwrap_or("");
                via_with_received(first, src.remote, via.host)
            }
            Err(e) => {
                self.metrics.dropped(DropReason::NoVia);
                debug!(peer = %src.remote, error = %e, "dropping request without usable Via");
                return;
            }
        };
        if let Some(v) = new_via {
            msg.replace_first_value(HeaderName::Via, &v);
        }
        // NAT detection for the requests that set up registrations and calls.
        if matches!(
            method,
            Method::Register | Method::Invite | Method::Subscribe
        ) {
            let verdict = nat::detect(&msg, src.remote);
            if verdict.nated {
                self.metrics.nat_detected(self.iface_name(src.listener));
            }
            if verdict.alg_suspected {
                self.metrics.alg_suspected(self.iface_name(src.listener));
            }
        }
        match method {
            Method::Ack => self.handle_ack(now, msg, src),
            Method::Cancel => self.handle_cancel(now, msg, src),
            _ => {
                let Some(key) = ServerKey::for_request(&msg, None) else {
                    self.metrics.parse_error(self.iface_name(src.listener));
                    return;
                };
                if let Some(&id) = self.server_index.get(&key) {
                    self.retransmitted_request(id);
                    return;
                }
                self.new_request(now, msg, src, key, method);
            }
        }
    }

    fn retransmitted_request(&mut self, id: u64) {
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        if s.tx.on_request_retransmission() == RetransmissionDisposition::ResendLastResponse {
            if let Some(resp) = s.last_response.clone() {
                let t = Transmit {
                    listener: s.source.listener,
                    transport: s.source.transport,
                    destination: s.response_dest.clone(),
                    conn: s.source.conn,
                    payload: resp,
                    token: None,
                    flow_bound: false,
                    trunk: None,
                };
                self.out.push_back(t);
            }
        }
    }

    /// Answers a request statelessly (no transaction): for requests we reject before
    /// creating one.
    fn reply_stateless(
        &mut self,
        now: Instant,
        msg: &SipMessage,
        src: &Source,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let via = msg.top_via().ok();
        let (port, rport) = via
            .as_ref()
            .map(|v| (v.port, v.rport().is_some()))
            .unwrap_or((None, false));
        let tag = format!("{:x}", rand::random::<u64>());
        let payload = local::response(
            msg,
            code,
            Some(reason),
            Some(&tag),
            &self.settings.server_name,
            extra,
        );
        let iface = self.iface_name(src.listener).to_string();
        let payload = self.mask_payload_for(now, &iface, payload);
        self.out.push_back(Transmit {
            listener: src.listener,
            transport: src.transport,
            destination: addressing::response_destination(src, port, rport),
            conn: src.conn,
            payload,
            token: None,
            flow_bound: false,
            trunk: None,
        });
    }

    fn new_request(
        &mut self,
        now: Instant,
        mut msg: SipMessage,
        src: Source,
        key: ServerKey,
        method: Method,
    ) {
        if let Err(e) = msg.validate_request() {
            debug!(peer = %src.remote, error = %e, "rejecting invalid request");
            self.reply_stateless(now, &msg, &src, 400, "Bad Request", &[]);
            return;
        }
        let ruri_ok = msg
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .is_some();
        if !ruri_ok {
            self.reply_stateless(now, &msg, &src, 416, "Unsupported URI Scheme", &[]);
            return;
        }
        match msg.max_forwards() {
            Ok(Some(0)) => {
                self.reply_stateless(now, &msg, &src, 483, "Too Many Hops", &[]);
                return;
            }
            Ok(_) => {}
            Err(_) => {
                self.reply_stateless(now, &msg, &src, 400, "Bad Max-Forwards", &[]);
                return;
            }
        }
        let proxy_require = msg.header_values(HeaderName::ProxyRequire);
        if !proxy_require.is_empty() {
            let unsupported = proxy_require.join(", ");
            self.reply_stateless(
                now,
                &msg,
                &src,
                420,
                "Bad Extension",
                &[("Unsupported", &unsupported)],
            );
            return;
        }
        let loop_hash = loop_hash(&msg);
        if self.is_loop(&msg, loop_hash) {
            self.reply_stateless(now, &msg, &src, 482, "Loop Detected", &[]);
            return;
        }

        let kind = if method == Method::Invite {
            TransactionKind::Invite
        } else {
            TransactionKind::NonInvite
        };
        let reliability = if src.transport.is_reliable() {
            Reliability::Reliable
        } else {
            Reliability::Unreliable
        };
        let (via_port, via_rport) = msg
            .top_via()
            .map(|v| (v.port, v.rport().is_some()))
            .unwrap_or((None, false));
        let id = self.next_id();
        let entry = ServerEntry {
            key: key.clone(),
            tx: ServerTransaction::new(kind, reliability, self.settings.timers),
            source: src,
            response_dest: addressing::response_destination(&src, via_port, via_rport),
            request: Some(msg.clone()),
            last_response: None,
            to_tag: format!("{:x}", rand::random::<u64>()),
            base: None,
            pending_hops: VecDeque::new(),
            branches: Vec::new(),
            best: None,
            cancelled: false,
            record_route: false,
            ingress: src.listener,
            loop_hash,
            parallel: false,
            reg: None,
            hidden_vias: None,
            full_rr: None,
        };
        self.servers.insert(id, entry);
        self.server_index.insert(key, id);
        self.metrics.transactions(server_kind(kind), 1);
        if kind == TransactionKind::Invite {
            self.respond_local(now, id, 100, "Trying", &[]);
        }

        // Route preprocessing and target selection.
        let in_dialog = msg.to().map(|t| t.tag().is_some()).unwrap_or(false);
        if in_dialog {
            self.dialog_request_seen(&msg);
        }
        if method == Method::Bye {
            let (call_id, from_tag, to_tag) = dialog_ids(&msg);
            self.forget_dialog(&call_id);
            self.media_release(&call_id, &from_tag, Some(&to_tag));
        }
        self.unhide_request(now, &mut msg);
        match self.plan(now, &mut msg, &src, in_dialog, &method) {
            Plan::Reply(code, reason) => {
                if code == 200 && method == Method::Options {
                    self.respond_local(now, id, 200, reason, &[("Allow", ALLOW)]);
                } else {
                    self.respond_local(now, id, code, reason, &[]);
                }
            }
            Plan::Register(aor) => {
                let Some(req) = self.servers.get(&id).and_then(|s| s.request.clone()) else {
                    return;
                };
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let reply = self.registrar.register(now, unix, &req, &aor, src);
                if reply.code == 200
                    && src.transport == Transport::Udp
                    && nat::detect(&req, src.remote).nated
                    && self.registrar.has_flow(&src)
                {
                    self.keepalives.add(src);
                }
                self.metrics.registrar_bindings(self.registrar.bindings());
                let extra: Vec<(&str, &str)> = reply
                    .headers
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect();
                self.respond_local(now, id, reply.code, reply.reason, &extra);
            }
            Plan::RegisterUpstream => self.register_upstream(now, id, msg, src),
            Plan::Forward { hops, parallel } => {
                let record_route = !in_dialog
                    && matches!(
                        method,
                        Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
                    );
                self.start_forwarding(now, id, msg, hops, parallel, record_route);
            }
        }
    }

    /// Forwards the request of server transaction `id` to `hops` (16.6).
    fn start_forwarding(
        &mut self,
        now: Instant,
        id: u64,
        mut msg: SipMessage,
        hops: VecDeque<Hop>,
        parallel: bool,
        record_route: bool,
    ) {
        // 16.6 step 3: Max-Forwards.
        let mf = msg.max_forwards().ok().flatten().unwrap_or(70);
        msg.set_header(
            HeaderName::MaxForwards,
            &mf.saturating_sub(1).min(70).to_string(),
        );
        if let Some(s) = self.servers.get_mut(&id) {
            s.base = Some(msg);
            s.pending_hops = hops;
            s.record_route = record_route;
            s.parallel = parallel;
        }
        self.try_next_hop(now, id);
    }

    /// Loop detection (16.3 step 4): a Via of ours whose branch carries the same loop hash.
    fn is_loop(&self, msg: &SipMessage, hash: u64) -> bool {
        let Ok(vias) = msg.vias() else {
            return false;
        };
        let needle = format!("{BRANCH_PREFIX}{hash:016x}");
        vias.iter().any(|v| {
            v.branch().is_some_and(|b| b.starts_with(&needle))
                && self.local.is_own_sent_by(v.host, v.port)
        })
    }

    /// Route preprocessing (16.4) and target determination (16.5, 16.6 steps 6-7).
    fn plan(
        &self,
        now: Instant,
        msg: &mut SipMessage,
        src: &Source,
        in_dialog: bool,
        method: &Method,
    ) -> Plan {
        let ingress = self.local.listener(src.listener).cloned();
        let ingress_iface = ingress
            .as_ref()
            .map(|l| l.interface.clone())
            .unwrap_or_default();
        // Strict-router fix-up: the Request-URI is ours (a strict router put our Record-Route
        // there): the real target is the last Route value.
        let ruri_is_ours = msg
            .request_uri()
            .and_then(|u| SipUri::parse(u).ok())
            .and_then(|u| self.local.own_listener_for(&u))
            .is_some();
        if ruri_is_ours {
            let routes: Vec<String> = msg
                .header_values(HeaderName::Route)
                .iter()
                .map(|s| s.to_string())
                .collect();
            if let Some(last) = routes.last() {
                if let Ok(na) = portcullis_sip::NameAddr::parse(last, "Route") {
                    let uri = na.uri.to_string();
                    msg.set_request_uri(&uri);
                    rewrite_routes(msg, &routes[..routes.len() - 1]);
                }
            }
        }
        // Consume our own Route entries (both of a double Record-Route), collecting the flows
        // their tokens designate (Record-Route `ft`/`ft2` parameters, Path user part).
        let mut hint: Option<ListenerId> = None;
        let mut flows: Vec<Source> = Vec::new();
        loop {
            let own = match msg.routes() {
                Ok(r) => r.first().and_then(|na| na.parse_uri().ok()).and_then(|u| {
                    let l = self.local.own_listener_for(&u)?;
                    let tokens = [
                        u.user,
                        u.params.get("ft").flatten(),
                        u.params.get("ft2").flatten(),
                    ];
                    for t in tokens.into_iter().flatten() {
                        if let Some(f) = self.flow_tokens.decode(t) {
                            flows.push(f);
                        }
                    }
                    Some(l)
                }),
                Err(_) => return Plan::Reply(400, "Bad Route"),
            };
            match own {
                Some(l) => {
                    hint = Some(l);
                    msg.pop_first_value(HeaderName::Route);
                }
                None => break,
            }
        }
        let egress_for = |transport: Transport, iface: Option<&str>| -> Option<ListenerId> {
            if let Some(h) = hint.and_then(|h| self.local.listener(h)) {
                if h.transport == transport {
                    return Some(h.id);
                }
                if let Some(l) = self
                    .local
                    .egress_listener(Some(&h.interface), transport, None)
                {
                    return Some(l.id);
                }
            }
            self.local
                .egress_listener(iface.or(Some(ingress_iface.as_str())), transport, None)
                .or_else(|| self.local.egress_listener(None, transport, None))
                .map(|l| l.id)
        };

        // A remaining Route: loose routing to it (or strict-router handling, 16.6 step 7).
        let top_route = match msg.routes() {
            Ok(r) => r.first().map(|na| na.uri.to_string()),
            Err(_) => return Plan::Reply(400, "Bad Route"),
        };
        // Our Route entries named the flow of the other party (NAT traversal for in-dialog
        // requests, Path-routed requests to a client): deliver over it.
        if top_route.is_none() {
            let same = |f: &Source| {
                f.listener == src.listener && f.remote == src.remote && f.conn == src.conn
            };
            if let Some(flow) = flows.iter().find(|f| !same(f)).copied() {
                // The flow's own address, whatever the Request-URI (the party's Contact, e.g.
                // a browser's `.invalid` host) says (S-01). A WebSocket client cannot be
                // connected to: if its connection is gone the request fails promptly.
                let mut hop = Hop::to(
                    Destination::Addr(flow.remote),
                    flow.transport,
                    flow.listener,
                );
                hop.flow = Some(FlowTarget {
                    conn: flow.conn,
                    source: flow,
                    aor: String::new(),
                    contact: String::new(),
                    bound: matches!(flow.transport, Transport::Ws | Transport::Wss),
                });
                return Plan::one(hop);
            }
        }
        if let Some(route_uri) = top_route {
            let Ok(uri) = SipUri::parse(&route_uri) else {
                return Plan::Reply(400, "Bad Route");
            };
            let (dest, transport) = uri_destination(&uri);
            let explicit = uri.transport().is_some();
            if !uri.is_loose_route() {
                // Strict next hop: the Request-URI goes to the end of the Route set.
                let ruri = msg.request_uri().unwrap_or_default().to_string();
                msg.pop_first_value(HeaderName::Route);
                let mut routes: Vec<String> = msg
                    .header_values(HeaderName::Route)
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                routes.push(format!("<{ruri}>"));
                rewrite_routes(msg, &routes);
                msg.set_request_uri(&route_uri);
            }
            let Some(listener) = egress_for(transport, None) else {
                return Plan::Reply(503, "No Listener For Transport");
            };
            let mut hop = Hop::to(dest, transport, listener);
            hop.may_upgrade = !explicit;
            return Plan::one(hop);
        }

        let Some(ruri) = msg.request_uri().map(str::to_string) else {
            return Plan::Reply(400, "Bad Request-URI");
        };
        let Ok(uri) = SipUri::parse(&ruri) else {
            return Plan::Reply(416, "Unsupported URI Scheme");
        };
        let uri_is_ours = self.local.own_listener_for(&uri).is_some();

        if !in_dialog && *method == Method::Register && self.upstream_registrar.is_some() {
            return Plan::RegisterUpstream;
        }
        if !in_dialog && uri_is_ours {
            if let Some(plan) = self.plan_local_domain(now, msg, &uri, method) {
                return plan;
            }
        }
        if !in_dialog {
            let query = RouteQuery {
                user: uri.user,
                domain: uri.host,
                ingress_interface: &ingress_iface,
            };
            if let Some(decision) = self.router.route(query) {
                let mut hops = VecDeque::new();
                let mut skipped_down = 0;
                for t in decision.targets {
                    if !self.health.is_up(&t.name) {
                        skipped_down += 1;
                        continue;
                    }
                    let expanded = self.trunk_hops(&t);
                    if expanded.is_empty() {
                        warn!(trunk = %t.name, "no listener for the trunk's transport on its interface");
                    }
                    hops.extend(expanded);
                }
                if hops.is_empty() {
                    return if skipped_down > 0 {
                        Plan::Reply(503, "All Trunks Down")
                    } else {
                        Plan::Reply(503, "No Usable Trunk")
                    };
                }
                return Plan::Forward {
                    hops,
                    parallel: false,
                };
            }
            if uri_is_ours {
                return if *method == Method::Options {
                    Plan::Reply(200, "OK")
                } else {
                    Plan::Reply(404, "Not Found")
                };
            }
            let allow = self
                .settings
                .policies
                .get(&ingress_iface)
                .is_some_and(|p| p.allow_request_uri_routing);
            if !allow {
                return Plan::Reply(404, "No Route");
            }
        } else if uri_is_ours {
            return Plan::Reply(404, "Not Found");
        }
        let (dest, transport) = uri_destination(&uri);
        let Some(listener) = egress_for(transport, None) else {
            return Plan::Reply(503, "No Listener For Transport");
        };
        let mut hop = Hop::to(dest, transport, listener);
        hop.may_upgrade = uri.transport().is_none();
        Plan::one(hop)
    }

    /// Requests for our own domain that are not in-dialog: REGISTER goes to the local
    /// registrar, anything else to the contacts registered for the Request-URI's user (all
    /// at once, each over the flow it registered from).
    ///
    /// The standalone registrar serves one domain: the AOR key is the user part (of the To
    /// URI for REGISTER, of the Request-URI otherwise).
    fn plan_local_domain(
        &self,
        now: Instant,
        msg: &SipMessage,
        uri: &SipUri<'_>,
        method: &Method,
    ) -> Option<Plan> {
        if *method == Method::Register {
            let to = msg.to().ok()?;
            let to_uri = to.parse_uri().ok()?;
            if to_uri.user.is_none() {
                return Some(Plan::Reply(400, "Bad To: no user"));
            }
            return Some(Plan::Register(aor_key(to_uri.user)));
        }
        // A Contact we registered upstream on a client's behalf.
        if let Some(b) = uri
            .user
            .filter(|u| u.starts_with(TOKEN_PREFIX))
            .and_then(|u| self.reg_cache.get(u))
        {
            let mut hop = Hop::to(
                Destination::Addr(b.flow.remote),
                b.flow.transport,
                b.flow.listener,
            );
            hop.request_uri = Some(b.contact_uri.clone());
            hop.flow = Some(FlowTarget {
                conn: b.flow.conn,
                source: b.flow,
                aor: b.aor.clone(),
                contact: b.contact_uri.clone(),
                bound: true,
            });
            return Some(Plan::one(hop));
        }
        let aor = aor_key(uri.user);
        let bindings = self.registrar.lookup(now, &aor);
        if bindings.is_empty() {
            return None;
        }
        let hops = bindings
            .into_iter()
            .map(|b| {
                // Stream flows are the only way back to the client (S-01); over UDP the
                // flow is used for clients behind NAT, the Contact otherwise (so that a
                // registration made on another party's behalf still reaches the Contact).
                let use_flow = b.flow.transport.is_reliable() || b.nated;
                let destination = if use_flow {
                    Destination::Addr(b.flow.remote)
                } else {
                    SipUri::parse(&b.uri)
                        .ok()
                        .map(|u| uri_destination(&u).0)
                        .unwrap_or(Destination::Addr(b.flow.remote))
                };
                let mut hop = Hop::to(destination, b.flow.transport, b.flow.listener);
                hop.request_uri = Some(b.uri.clone());
                if use_flow {
                    hop.flow = Some(FlowTarget {
                        conn: b.flow.conn,
                        source: b.flow,
                        aor: aor.clone(),
                        contact: b.uri,
                        bound: true,
                    });
                }
                hop
            })
            .collect();
        Some(Plan::Forward {
            hops,
            parallel: true,
        })
    }

    /// Sends a locally generated response on server transaction `id`.
    fn respond_local(
        &mut self,
        now: Instant,
        id: u64,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let Some(s) = self.servers.get(&id) else {
            return;
        };
        let Some(req) = s.request.as_ref() else {
            return;
        };
        let payload = local::response(
            req,
            code,
            Some(reason),
            Some(&s.to_tag),
            &self.settings.server_name,
            extra,
        );
        self.send_response(now, id, code, payload);
    }

    /// Sends a response through server transaction `id` if the transaction allows it.
    fn send_response(&mut self, now: Instant, id: u64, code: u16, payload: Bytes) {
        let Some(s) = self.servers.get(&id) else {
            return;
        };
        // A response leaving on an interface that masks Call-IDs carries the masked one.
        let iface = self
            .local
            .listener(s.source.listener)
            .map(|l| l.interface.clone())
            .unwrap_or_default();
        let payload = self.mask_payload_for(now, &iface, payload);
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        if !s.tx.send_response(now, code) {
            return;
        }
        let is_retransmission_of_2xx =
            s.last_response.is_some() && (200..300).contains(&code) && !s.tx.is_pending();
        if !is_retransmission_of_2xx || s.last_response.is_none() {
            s.last_response = Some(payload.clone());
        }
        if code >= 200 {
            // The request is no longer needed once a final response went out.
            s.request = None;
            s.base = None;
            s.pending_hops.clear();
        }
        self.out.push_back(Transmit {
            listener: s.source.listener,
            transport: s.source.transport,
            destination: s.response_dest.clone(),
            conn: s.source.conn,
            payload,
            token: None,
            flow_bound: false,
            trunk: None,
        });
        self.schedule(TimerRef::Server(id));
    }

    /// Sends the request of server `id` to its next hop, or answers with the best response
    /// when no hop is left.
    fn try_next_hop(&mut self, now: Instant, id: u64) {
        loop {
            let Some(s) = self.servers.get_mut(&id) else {
                return;
            };
            if s.cancelled || !s.tx.is_pending() {
                s.pending_hops.clear();
            }
            let Some(hop) = s.pending_hops.pop_front() else {
                if s.branches.is_empty() {
                    self.finalize(now, id);
                }
                return;
            };
            let Some(base) = s.base.clone() else {
                return;
            };
            let record_route = s.record_route;
            let ingress = s.ingress;
            let loop_hash = s.loop_hash;
            let parallel = s.parallel;
            let sent = self.send_branch(now, id, base, hop, record_route, ingress, loop_hash);
            if sent && !parallel {
                return;
            }
        }
    }

    /// Builds and sends one branch. Returns false if it could not be sent at all.
    #[allow(clippy::too_many_arguments)]
    fn send_branch(
        &mut self,
        now: Instant,
        server: u64,
        mut msg: SipMessage,
        mut hop: Hop,
        record_route: bool,
        ingress: ListenerId,
        loop_hash: u64,
    ) -> bool {
        // RFC 3261 18.1.1: large requests go over a congestion-controlled transport.
        if hop.transport == Transport::Udp
            && hop.may_upgrade
            && msg.raw().len() + 200 > self.settings.udp_mtu_threshold
        {
            let iface = self
                .local
                .listener(hop.listener)
                .map(|l| l.interface.clone());
            if let Some(tcp) = self
                .local
                .egress_listener(iface.as_deref(), Transport::Tcp, None)
            {
                let estimated = msg.to_bytes().len() + 250;
                if estimated > self.settings.udp_mtu_threshold {
                    hop.upgraded_from = Some(hop.listener);
                    hop.listener = tcp.id;
                    hop.transport = Transport::Tcp;
                }
            }
        }
        if let Some(ruri) = &hop.request_uri {
            msg.set_request_uri(ruri);
        }
        if let Some(rules) = hop.trunk.as_ref().and_then(|t| self.trunk_rules.get(t)) {
            apply_trunk_rules(&mut msg, rules);
        }
        let Some(egress) = self.local.listener(hop.listener).cloned() else {
            return false;
        };
        let Some(ingress_l) = self.local.listener(ingress).cloned() else {
            return false;
        };
        if record_route {
            // Flow tokens let in-dialog requests reach each party over its flow (NAT).
            let ingress_token = self
                .servers
                .get(&server)
                .filter(|_| {
                    self.settings
                        .policies
                        .get(&ingress_l.interface)
                        .is_some_and(|p| p.nat_fixing)
                })
                .map(|s| self.flow_tokens.encode(&s.source));
            let egress_token = hop
                .flow
                .as_ref()
                .map(|f| self.flow_tokens.encode(&f.source));
            let double =
                ingress_l.interface != egress.interface || ingress_l.transport != egress.transport;
            if double {
                insert_record_route(
                    &mut msg,
                    &record_route_value(&ingress_l, true, &[ingress_token.as_deref()]),
                );
                insert_record_route(
                    &mut msg,
                    &record_route_value(&egress, true, &[egress_token.as_deref()]),
                );
            } else {
                insert_record_route(
                    &mut msg,
                    &record_route_value(
                        &egress,
                        false,
                        &[ingress_token.as_deref(), egress_token.as_deref()],
                    ),
                );
            }
        }
        let id = self.next_id();
        let branch = format!("{BRANCH_PREFIX}{loop_hash:016x}.{:x}{:x}", self.nonce, id);
        let media_offer = if matches!(msg.method(), Some(Method::Invite | Method::Update)) {
            match self.media_offer(&mut msg, &branch, &ingress_l.interface, &egress.interface) {
                Ok(anchored) => anchored,
                Err(code) => {
                    let reason = if code == 503 {
                        "Media Ports Exhausted"
                    } else {
                        "Not Acceptable Here"
                    };
                    self.record_best(server, BestResponse::Local(code, reason));
                    return false;
                }
            }
        } else {
            false
        };
        // (callee interface, caller interface) for a late offer in the 2xx.
        let late_offer = (msg.method() == Some(&Method::Invite)
            && msg.body().is_empty()
            && self.anchors(&ingress_l.interface, &egress.interface))
        .then(|| (egress.interface.clone(), ingress_l.interface.clone()));
        if egress.interface != ingress_l.interface && self.hides(&egress.interface) {
            self.hide_request(now, server, &mut msg, &egress);
        }
        let via = format!(
            "SIP/2.0/{} {};branch={}",
            hop.transport.via_token(),
            egress.hostport(),
            branch
        );
        msg.prepend_header(HeaderName::Via, &via);
        let bytes = msg.to_bytes();
        let method = msg
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));
        let kind = if method == Method::Invite {
            TransactionKind::Invite
        } else {
            TransactionKind::NonInvite
        };
        let key = ClientKey { branch, method };
        debug!(to = %hop.destination, transport = %hop.transport, trunk = ?hop.trunk, "forwarding request");
        let mut entry = ClientEntry::new(
            key,
            kind,
            hop,
            bytes,
            TransmitToken(id),
            self.settings.timers,
            now,
        );
        entry.server = Some(server);
        entry.request = Some(msg);
        entry.media_offer = media_offer;
        entry.late_offer = late_offer;
        self.start_client(id, entry);
        if let Some(s) = self.servers.get_mut(&server) {
            s.branches.push(id);
        }
        true
    }

    /// Answers with the best final response once every branch is done (16.7 step 6).
    fn finalize(&mut self, now: Instant, id: u64) {
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        if !s.tx.is_pending() {
            return;
        }
        let cancelled = s.cancelled;
        let best = s.best.take();
        if s.tx.kind() == TransactionKind::Invite {
            if let Some(req) = s.request.clone() {
                let (call_id, from_tag, to_tag) = dialog_ids(&req);
                if to_tag.is_empty() {
                    self.media_release(&call_id, &from_tag, None);
                }
            }
        }
        match best {
            Some(BestResponse::Received(code, resp)) => {
                if code == 503 {
                    // 16.7 step 6: a selected 503 is converted to 500.
                    self.respond_local(now, id, 500, "Server Internal Error", &[]);
                } else {
                    let payload = resp.to_bytes();
                    self.send_response(now, id, code, payload);
                }
            }
            Some(BestResponse::Local(code, reason)) => {
                if cancelled {
                    self.respond_local(now, id, 487, "Request Terminated", &[]);
                } else {
                    self.respond_local(now, id, code, reason, &[]);
                }
            }
            None => {
                if cancelled {
                    self.respond_local(now, id, 487, "Request Terminated", &[]);
                } else {
                    self.respond_local(now, id, 503, "Service Unavailable", &[]);
                }
            }
        }
    }

    fn handle_ack(&mut self, now: Instant, mut msg: SipMessage, src: Source) {
        if let Some(key) = ServerKey::for_request(&msg, None) {
            if let Some(&id) = self.server_index.get(&key) {
                if let Some(s) = self.servers.get_mut(&id) {
                    let disposition = s.tx.on_ack(now);
                    self.schedule(TimerRef::Server(id));
                    if disposition == AckDisposition::Absorb {
                        return;
                    }
                }
            }
        }
        // An ACK for a 2xx: forwarded statelessly along the route set (16.11). An ACK that
        // matches no transaction and carries no Route is the ACK of a non-2xx whose
        // transaction is gone: it ends here (as Kamailio's t_check_trans).
        if msg.header(HeaderName::Route).is_none() {
            return;
        }
        match msg.max_forwards() {
            Ok(Some(0)) | Err(_) => return,
            _ => {}
        }
        let in_dialog = msg.to().map(|t| t.tag().is_some()).unwrap_or(false);
        self.media_late_answer(&mut msg);
        self.unhide_request(now, &mut msg);
        let Plan::Forward { mut hops, .. } =
            self.plan(now, &mut msg, &src, in_dialog, &Method::Ack)
        else {
            return;
        };
        let Some(hop) = hops.pop_front() else {
            return;
        };
        let mf = msg.max_forwards().ok().flatten().unwrap_or(70);
        msg.set_header(
            HeaderName::MaxForwards,
            &mf.saturating_sub(1).min(70).to_string(),
        );
        let Some(egress) = self.local.listener(hop.listener).cloned() else {
            return;
        };
        // Deterministic branch so that ACK retransmissions look the same (16.11).
        let incoming = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let branch = format!(
            "{BRANCH_PREFIX}{:016x}.a",
            fnv1a(&[incoming.as_bytes(), &self.nonce.to_be_bytes()])
        );
        let ingress_iface = self.iface_name(src.listener).to_string();
        if egress.interface != ingress_iface && self.hides(&egress.interface) {
            msg.remove_headers(HeaderName::Via);
            self.mask_informational_headers(&mut msg, &egress);
            if self.masks_call_id(&egress.interface) {
                self.mask_call_id(now, &mut msg);
            }
        }
        let via = format!(
            "SIP/2.0/{} {};branch={}",
            hop.transport.via_token(),
            egress.hostport(),
            branch
        );
        msg.prepend_header(HeaderName::Via, &via);
        self.out.push_back(Transmit {
            listener: hop.listener,
            transport: hop.transport,
            destination: hop.destination,
            conn: None,
            payload: msg.to_bytes(),
            token: None,
            flow_bound: false,
            trunk: hop.trunk,
        });
    }

    fn handle_cancel(&mut self, now: Instant, msg: SipMessage, src: Source) {
        let Some(key) = ServerKey::for_request(&msg, None) else {
            return;
        };
        if let Some(&id) = self.server_index.get(&key) {
            self.retransmitted_request(id);
            return;
        }
        let invite = ServerKey::for_request(&msg, Some(Method::Invite))
            .and_then(|k| self.server_index.get(&k).copied());
        let Some(invite_id) = invite else {
            self.reply_stateless(now, &msg, &src, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        // A server transaction for the CANCEL itself absorbs its retransmissions.
        let reliability = if src.transport.is_reliable() {
            Reliability::Reliable
        } else {
            Reliability::Unreliable
        };
        let (via_port, via_rport) = msg
            .top_via()
            .map(|v| (v.port, v.rport().is_some()))
            .unwrap_or((None, false));
        let id = self.next_id();
        let to_tag = self
            .servers
            .get(&invite_id)
            .map(|s| s.to_tag.clone())
            .unwrap_or_default();
        self.servers.insert(
            id,
            ServerEntry {
                key: key.clone(),
                tx: ServerTransaction::new(
                    TransactionKind::NonInvite,
                    reliability,
                    self.settings.timers,
                ),
                source: src,
                response_dest: addressing::response_destination(&src, via_port, via_rport),
                request: Some(msg),
                last_response: None,
                to_tag,
                base: None,
                pending_hops: VecDeque::new(),
                branches: Vec::new(),
                best: None,
                cancelled: false,
                record_route: false,
                ingress: src.listener,
                loop_hash: 0,
                parallel: false,
                reg: None,
                hidden_vias: None,
                full_rr: None,
            },
        );
        self.server_index.insert(key, id);
        self.metrics.transactions(TxKind::ServerNonInvite, 1);
        self.respond_local(now, id, 200, "OK", &[]);

        let Some(inv) = self.servers.get_mut(&invite_id) else {
            return;
        };
        if !inv.tx.is_pending() {
            return;
        }
        inv.cancelled = true;
        inv.pending_hops.clear();
        if let Some(req) = inv.request.clone() {
            let (call_id, from_tag, _) = dialog_ids(&req);
            self.media_release(&call_id, &from_tag, None);
        }
        let Some(inv) = self.servers.get_mut(&invite_id) else {
            return;
        };
        let branches = inv.branches.clone();
        for b in branches {
            self.cancel_branch(now, b);
        }
        if self
            .servers
            .get(&invite_id)
            .is_some_and(|s| s.branches.is_empty())
        {
            self.finalize(now, invite_id);
        }
    }

    /// Cancels one INVITE branch (16.10): at once if it had a provisional response, otherwise
    /// as soon as one arrives (9.1).
    fn cancel_branch(&mut self, now: Instant, cid: u64) {
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        if c.final_seen || c.cancel_sent || c.is_cancel {
            return;
        }
        if c.provisional {
            self.send_cancel(now, cid);
        } else {
            c.cancel_wanted = true;
        }
    }

    fn send_cancel(&mut self, now: Instant, cid: u64) {
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        let Some(req) = c.request.as_ref() else {
            return;
        };
        let Some(bytes) = local::cancel_for(req, &self.settings.server_name) else {
            return;
        };
        c.cancel_sent = true;
        let hop = c.hop.clone();
        let key = ClientKey {
            branch: c.key.branch.clone(),
            method: Method::Cancel,
        };
        let server = c.server;
        let id = self.next_id();
        let mut entry = ClientEntry::new(
            key,
            TransactionKind::NonInvite,
            hop,
            bytes,
            TransmitToken(id),
            self.settings.timers,
            now,
        );
        entry.server = server;
        entry.is_cancel = true;
        self.start_client(id, entry);
    }

    // --------------------------------------------------------------- responses

    fn handle_response(&mut self, now: Instant, mut msg: SipMessage, src: Source) {
        let Some(status) = msg.status() else {
            return;
        };
        self.metrics.response(self.iface_name(src.listener), status);
        let ours = match msg.top_via() {
            Ok(v) => {
                self.local.is_own_sent_by(v.host, v.port)
                    && v.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX))
            }
            Err(_) => false,
        };
        if !ours {
            self.metrics.dropped(DropReason::StrayResponse);
            debug!(peer = %src.remote, status, "dropping response whose top Via is not ours");
            return;
        }
        let cid = ClientKey::for_response(&msg).and_then(|k| self.client_index.get(&k).copied());
        let Some(cid) = cid else {
            // 16.7: a 2xx to INVITE whose transaction is gone is still forwarded statelessly.
            let is_invite = msg
                .cseq()
                .map(|c| c.method == Method::Invite)
                .unwrap_or(false);
            if (200..300).contains(&status) && is_invite {
                self.forward_stateless_response(msg);
            } else {
                self.metrics.dropped(DropReason::StrayResponse);
            }
            return;
        };
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        let disposition = c.tx.on_response(now, status);
        if disposition.send_ack {
            if c.ack.is_none() {
                c.ack = c
                    .request
                    .as_ref()
                    .and_then(|req| local::ack_for_non_2xx(req, &msg));
            }
            if let Some(ack) = c.ack.clone() {
                self.out.push_back(c.hop.transmit(ack, None));
            }
        }
        self.schedule(TimerRef::Client(cid));
        if !disposition.pass_to_tu {
            return;
        }
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        if c.is_cancel {
            return;
        }
        if let Some(i) = c.probe {
            if status >= 200 {
                self.probe_result(i, probing::response_is_alive(status));
            }
            return;
        }
        if let Some(key) = c.keepalive {
            // Any response proves the NAT binding and the client are alive.
            self.keepalives.answered(&key);
            return;
        }
        let server = c.server;
        if status < 200 {
            c.provisional = true;
            if c.tx.kind() == TransactionKind::Invite {
                c.timer_c = Some(now + TIMER_C);
                self.schedule(TimerRef::Client(cid));
            }
            let Some(c) = self.clients.get(&cid) else {
                return;
            };
            let cancel_now = c.cancel_wanted && !c.cancel_sent;
            let media_branch = c.media_offer.then(|| c.key.branch.clone());
            if cancel_now {
                self.send_cancel(now, cid);
            }
            if status == 100 {
                return;
            }
            if let Some(branch) = media_branch {
                self.media_answer(&mut msg, &branch);
            }
            if let Some(sid) = server {
                self.forward_response(now, sid, msg, status, src.listener);
            }
            return;
        }
        c.final_seen = true;
        c.timer_c = None;
        if (200..300).contains(&status) {
            let invite = c.request.take();
            let callee_hop = c.hop.clone();
            if let Some((callee_iface, caller_iface)) = c.late_offer.take() {
                if let Some(inv) = invite.as_ref() {
                    if let Some(caller) = server
                        .and_then(|sid| self.servers.get(&sid))
                        .map(|s| s.source)
                    {
                        self.record_dialog(
                            inv,
                            &msg,
                            dialogs::hop_to_source(&caller),
                            callee_hop.clone(),
                        );
                    }
                }
                self.media_late_offer(&mut msg, &callee_iface, &caller_iface);
            } else if c.media_offer {
                let branch = c.key.branch.clone();
                if let Some(inv) = invite.as_ref().filter(|i| {
                    i.method() == Some(&Method::Invite)
                        && i.to().map(|t| t.tag().is_none()).unwrap_or(false)
                }) {
                    if let Some(caller) = server
                        .and_then(|sid| self.servers.get(&sid))
                        .map(|s| s.source)
                    {
                        self.record_dialog(inv, &msg, dialogs::hop_to_source(&caller), callee_hop);
                    }
                }
                self.media_answer(&mut msg, &branch);
            }
            if let Some(sid) = server {
                self.branch_done(sid, cid);
                // A 2xx ends the search: cancel other branches, stop failover.
                if let Some(s) = self.servers.get_mut(&sid) {
                    s.pending_hops.clear();
                    let others: Vec<u64> = s.branches.clone();
                    for b in others {
                        self.cancel_branch(now, b);
                    }
                }
                self.forward_response(now, sid, msg, status, src.listener);
            }
            return;
        }
        // Non-2xx final.
        let trunk = c.hop.trunk.clone();
        c.request = None;
        let Some(sid) = server else {
            return;
        };
        self.branch_done(sid, cid);
        msg.pop_first_value(HeaderName::Via);
        self.restore_response(sid, &mut msg);
        if msg.header(HeaderName::Via).is_none() {
            return;
        }
        self.hide_response_if_needed(now, sid, &mut msg, src.listener);
        let failover = status == 408 || (500..600).contains(&status);
        self.record_best(sid, BestResponse::Received(status, Box::new(msg)));
        if status >= 600 {
            if let Some(s) = self.servers.get_mut(&sid) {
                s.pending_hops.clear();
                let others: Vec<u64> = s.branches.clone();
                for b in others {
                    self.cancel_branch(now, b);
                }
            }
        }
        self.after_branch_failure(now, sid, failover, trunk.as_deref());
    }

    fn branch_done(&mut self, sid: u64, cid: u64) {
        if let Some(s) = self.servers.get_mut(&sid) {
            s.branches.retain(|b| *b != cid);
        }
    }

    /// After a branch failed: fail over to the next hop if allowed, else answer when no
    /// branch is left.
    fn after_branch_failure(
        &mut self,
        now: Instant,
        sid: u64,
        failover: bool,
        trunk: Option<&str>,
    ) {
        let Some(s) = self.servers.get_mut(&sid) else {
            return;
        };
        if failover && !s.pending_hops.is_empty() && !s.cancelled && s.tx.is_pending() {
            if let Some(t) = trunk {
                self.metrics.failover(t);
                info!(
                    trunk = t,
                    "trunk failed, trying the next member of the group"
                );
            }
            self.try_next_hop(now, sid);
            return;
        }
        s.pending_hops.clear();
        if s.branches.is_empty() {
            self.finalize(now, sid);
        }
    }

    /// Keeps the best final response (16.7 step 6): 6xx wins, otherwise the lowest class; a
    /// received response beats one we synthesised in the same class.
    fn record_best(&mut self, sid: u64, candidate: BestResponse) {
        let Some(s) = self.servers.get_mut(&sid) else {
            return;
        };
        let better = match &s.best {
            None => true,
            Some(cur) => {
                let (c, n) = (cur.status(), candidate.status());
                if c >= 600 {
                    false
                } else if n >= 600 {
                    true
                } else if n / 100 != c / 100 {
                    n / 100 < c / 100
                } else {
                    matches!(cur, BestResponse::Local(..))
                        && matches!(candidate, BestResponse::Received(..))
                }
            }
        };
        if better {
            s.best = Some(candidate);
        }
    }

    /// Forwards a provisional or 2xx response upstream (16.7 steps 8-9).
    fn forward_response(
        &mut self,
        now: Instant,
        sid: u64,
        mut msg: SipMessage,
        status: u16,
        from: ListenerId,
    ) {
        msg.pop_first_value(HeaderName::Via);
        self.restore_response(sid, &mut msg);
        if msg.header(HeaderName::Via).is_none() {
            return;
        }
        self.hide_response_if_needed(now, sid, &mut msg, from);
        if (200..300).contains(&status) {
            if let Some(ctx) = self.servers.get(&sid).and_then(|s| s.reg.clone()) {
                self.rewrite_register_ok(now, &ctx, &mut msg);
            }
        }
        let payload = msg.to_bytes();
        self.send_response(now, sid, status, payload);
    }

    /// Hides the topology in a response going back out on a hiding interface that came from
    /// another one.
    fn hide_response_if_needed(
        &mut self,
        now: Instant,
        sid: u64,
        msg: &mut SipMessage,
        from: ListenerId,
    ) {
        let Some(x) = self
            .servers
            .get(&sid)
            .and_then(|s| self.local.listener(s.source.listener))
            .cloned()
        else {
            return;
        };
        if self.iface_name(from) != x.interface && self.hides(&x.interface) {
            self.hide_response(now, msg, &x);
        }
    }

    /// A response with no transaction (2xx retransmission after the transaction ended):
    /// popped and sent to the next Via.
    fn forward_stateless_response(&mut self, mut msg: SipMessage) {
        msg.pop_first_value(HeaderName::Via);
        let Ok(via) = msg.top_via() else {
            return;
        };
        let Some(transport) = Transport::parse(via.transport) else {
            return;
        };
        let host = via.received().unwrap_or(via.host);
        let port = match via.rport() {
            Some(Some(p)) => p,
            _ => via.port.unwrap_or(transport.default_port()),
        };
        let destination = match addressing::parse_host_ip(host) {
            Some(ip) => Destination::Addr(std::net::SocketAddr::new(ip, port)),
            None => Destination::Name(host.to_string(), port),
        };
        let Some(listener) = self
            .local
            .egress_listener(None, transport, None)
            .map(|l| l.id)
        else {
            return;
        };
        self.out.push_back(Transmit {
            listener,
            transport,
            destination,
            conn: None,
            payload: msg.to_bytes(),
            token: None,
            flow_bound: false,
            trunk: None,
        });
    }

    // ------------------------------------------------------------------ timers

    fn schedule(&mut self, r: TimerRef) {
        let deadline = match r {
            TimerRef::Server(id) => self.servers.get(&id).and_then(|s| s.tx.next_deadline()),
            TimerRef::Housekeeping | TimerRef::Probe(_) | TimerRef::Keepalive => None,
            TimerRef::Client(id) => {
                self.clients
                    .get(&id)
                    .and_then(|c| match (c.tx.next_deadline(), c.timer_c) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    })
            }
        };
        if let Some(d) = deadline {
            self.timers.push(Reverse((d, r)));
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, r))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match r {
                TimerRef::Server(id) => self.server_timer(now, id),
                TimerRef::Client(id) => self.client_timer(now, id),
                TimerRef::Probe(i) => self.probe(now, i),
                TimerRef::Keepalive => self.keepalive_tick(now),
                TimerRef::Housekeeping => {
                    self.reg_cache.purge(now);
                    self.hidden.purge(now);
                    self.call_id_masks.purge(now);
                    if self.registrar.purge(now) > 0 {
                        self.metrics.registrar_bindings(self.registrar.bindings());
                    }
                    self.timers
                        .push(Reverse((now + HOUSEKEEPING, TimerRef::Housekeeping)));
                }
            }
        }
    }

    fn server_timer(&mut self, now: Instant, id: u64) {
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        if s.tx.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        for ev in s.tx.on_timer(now) {
            match ev {
                ServerEvent::Retransmit => {
                    if let Some(resp) = s.last_response.clone() {
                        self.out.push_back(Transmit {
                            listener: s.source.listener,
                            transport: s.source.transport,
                            destination: s.response_dest.clone(),
                            conn: s.source.conn,
                            payload: resp,
                            token: None,
                            flow_bound: false,
                            trunk: None,
                        });
                    }
                }
                ServerEvent::Timeout => {
                    debug!(peer = %s.source.remote, "no ACK for a non-2xx final response (timer H)");
                }
                ServerEvent::Terminated => {}
            }
        }
        if s.tx.is_terminated() {
            self.remove_server(id);
        } else {
            self.schedule(TimerRef::Server(id));
        }
    }

    fn remove_server(&mut self, id: u64) {
        if let Some(s) = self.servers.remove(&id) {
            self.server_index.remove(&s.key);
            self.metrics.transactions(server_kind(s.tx.kind()), -1);
        }
    }

    fn remove_client(&mut self, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            self.client_index.remove(&c.key);
            self.tokens.remove(&c.token);
            self.metrics.transactions(client_kind(c.tx.kind()), -1);
        }
    }

    fn client_timer(&mut self, now: Instant, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.timer_c.is_some_and(|t| t <= now) {
            // Timer C (16.6 step 11): CANCEL a branch that rang too long.
            c.timer_c = None;
            let provisional = c.provisional;
            let server = c.server;
            if provisional {
                self.send_cancel(now, id);
            } else if let Some(sid) = server {
                self.client_failed(now, id, sid, 408);
                return;
            }
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.tx.next_deadline().is_some_and(|d| d <= now) {
            for ev in c.tx.on_timer(now) {
                match ev {
                    ClientEvent::Retransmit => {
                        self.out
                            .push_back(c.hop.transmit(c.bytes.clone(), Some(c.token)));
                    }
                    ClientEvent::SendAck => {}
                    ClientEvent::Timeout => {
                        if let Some(i) = c.probe {
                            self.remove_client(id);
                            self.probe_result(i, false);
                            return;
                        }
                        if c.keepalive.is_some() {
                            // Counted as a failure at the next keepalive round.
                            self.remove_client(id);
                            return;
                        }
                        if !c.is_cancel && !c.final_seen {
                            if let Some(sid) = c.server {
                                self.client_failed(now, id, sid, 408);
                                return;
                            }
                        }
                    }
                    ClientEvent::Terminated => {}
                }
            }
        }
        let terminated = self.clients.get(&id).is_some_and(|c| c.tx.is_terminated());
        if terminated {
            self.remove_client(id);
        } else {
            self.schedule(TimerRef::Client(id));
        }
    }

    /// A branch ended without a response (timeout, transport failure): synthesise `code`
    /// (408 for timeouts, 503 for transport errors) and fail over.
    fn client_failed(&mut self, now: Instant, cid: u64, sid: u64, code: u16) {
        let Some(mut c) = self.clients.remove(&cid) else {
            return;
        };
        self.client_index.remove(&c.key);
        self.tokens.remove(&c.token);
        self.metrics.transactions(client_kind(c.tx.kind()), -1);
        c.tx.terminate();
        self.branch_done(sid, cid);
        // RFC 3261 18.1.1: a TCP upgrade that failed is retried over UDP.
        if code == 503 {
            if let Some(udp_listener) = c.hop.upgraded_from {
                if let Some(s) = self.servers.get_mut(&sid) {
                    if s.tx.is_pending() && !s.cancelled {
                        let mut hop = c.hop.clone();
                        hop.listener = udp_listener;
                        hop.transport = Transport::Udp;
                        hop.may_upgrade = false;
                        hop.upgraded_from = None;
                        s.pending_hops.push_front(hop);
                        self.try_next_hop(now, sid);
                        return;
                    }
                }
            }
        }
        let (code, reason) = match (&c.hop.flow, code) {
            // A registered client's flow is dead (S-02): answer 480 at once, drop the binding.
            (Some(flow), 503) => {
                self.registrar.remove_binding(&flow.aor, &flow.contact);
                self.metrics.dead_flow();
                self.metrics.registrar_bindings(self.registrar.bindings());
                (480, "Temporarily Unavailable")
            }
            (_, 408) => (408, "Request Timeout"),
            _ => (code, "Service Unavailable"),
        };
        self.record_best(sid, BestResponse::Local(code, reason));
        self.after_branch_failure(now, sid, true, c.hop.trunk.as_deref());
    }

    /// The IO layer could not send a message that carried `token`.
    pub fn handle_transport_error(&mut self, now: Instant, token: TransmitToken) {
        let Some(&cid) = self.tokens.get(&token) else {
            return;
        };
        let Some(c) = self.clients.get_mut(&cid) else {
            return;
        };
        warn!(to = %c.hop.destination, transport = %c.hop.transport, "could not send request");
        let _ = c.tx.on_transport_error();
        if let Some(i) = c.probe {
            self.remove_client(cid);
            self.probe_result(i, false);
            return;
        }
        if c.keepalive.is_some() {
            self.remove_client(cid);
            return;
        }
        if c.is_cancel || c.final_seen {
            self.remove_client(cid);
            return;
        }
        match c.server {
            Some(sid) => self.client_failed(now, cid, sid, 503),
            None => self.remove_client(cid),
        }
    }
}

/// Methods in our Allow header.
const ALLOW: &str =
    "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE";

fn server_kind(k: TransactionKind) -> TxKind {
    match k {
        TransactionKind::Invite => TxKind::ServerInvite,
        TransactionKind::NonInvite => TxKind::ServerNonInvite,
    }
}

fn client_kind(k: TransactionKind) -> TxKind {
    match k {
        TransactionKind::Invite => TxKind::ClientInvite,
        TransactionKind::NonInvite => TxKind::ClientNonInvite,
    }
}

/// Record-Route value for a listener (`r2=on` for the double Record-Route of RFC 5658),
/// with flow tokens as `ft` / `ft2` parameters.
fn record_route_value(l: &ListenerInfo, r2: bool, tokens: &[Option<&str>]) -> String {
    let mut v = format!("<sip:{}", l.hostport());
    if l.transport != Transport::Udp {
        v.push_str(";transport=");
        v.push_str(l.transport.param());
    }
    if r2 {
        v.push_str(";r2=on");
    }
    v.push_str(";lr");
    for (i, t) in tokens.iter().flatten().enumerate() {
        v.push_str(if i == 0 { ";ft=" } else { ";ft2=" });
        v.push_str(t);
    }
    v.push('>');
    v
}

/// Replaces every Route header with `routes` (one line each, in order).
fn rewrite_routes(msg: &mut SipMessage, routes: &[String]) {
    msg.remove_headers(HeaderName::Route);
    for r in routes.iter().rev() {
        msg.insert_before_first(HeaderName::Route, r);
    }
}

/// Hash of the fields that decide routing (16.6 step 8), for loop detection.
fn loop_hash(msg: &SipMessage) -> u64 {
    let from_tag = msg
        .from()
        .ok()
        .and_then(|f| f.tag().map(str::to_string))
        .unwrap_or_default();
    let to_tag = msg
        .to()
        .ok()
        .and_then(|f| f.tag().map(str::to_string))
        .unwrap_or_default();
    let cseq = msg.cseq().map(|c| c.seq).unwrap_or(0);
    let routes = msg.header_values(HeaderName::Route).join(",");
    fnv1a(&[
        msg.request_uri().unwrap_or("").as_bytes(),
        from_tag.as_bytes(),
        to_tag.as_bytes(),
        msg.call_id().unwrap_or("").as_bytes(),
        &cseq.to_be_bytes(),
        routes.as_bytes(),
        msg.header_values(HeaderName::ProxyRequire)
            .join(",")
            .as_bytes(),
    ])
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;

/// Location-service key of a Request-URI/To user in our own domain.
fn aor_key(user: Option<&str>) -> String {
    user.unwrap_or("").to_string()
}

/// The standalone registrar as configured: expiry policy, and digest authentication when
/// users are configured (nonces signed with a per-process random key).
fn registrar_from_config(cfg: &Config) -> Registrar {
    let r = &cfg.registrar;
    let settings = RegistrarSettings {
        min_expires: r.min_expires,
        max_expires: r.max_expires,
        default_expires: r.default_expires,
        max_bindings_per_aor: r.max_contacts,
    };
    let auth = (!r.users.is_empty()).then(|| {
        let users = r
            .users
            .iter()
            .map(|u| (u.user.clone(), u.password.clone()))
            .collect();
        let secret: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        crate::registrar::digest::DigestAuth::new(&r.realm, users, secret, 300)
            .with_algorithms(&r.algorithms)
    });
    Registrar::new(settings, auth)
}

/// Per-trunk rewriting of a request about to be sent to the trunk: Request-URI parameters
/// (S-36), 100rel stripped from Supported (S-38), header rules.
fn apply_trunk_rules(msg: &mut SipMessage, t: &portcullis_config::Trunk) {
    // Request-URI form (S-37): the number moves between sip:...;user=phone and tel:.
    if t.request_uri_form != portcullis_config::UriForm::Keep {
        if let Some(uri) = msg.request_uri().map(str::to_string) {
            if let Ok(u) = SipUri::parse(&uri) {
                let is_tel = u.scheme.eq_ignore_ascii_case("tel");
                let number = u.user.map(str::to_string);
                match (t.request_uri_form, is_tel, number) {
                    (portcullis_config::UriForm::Sip, true, Some(n)) => {
                        msg.set_request_uri(&format!("sip:{n}@{}:{};user=phone", t.host, t.port));
                    }
                    (portcullis_config::UriForm::Tel, false, Some(n))
                        if n.starts_with('+') || n.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        msg.set_request_uri(&format!("tel:{n}"));
                    }
                    _ => {}
                }
            }
        }
    }
    if !t.request_uri_params.is_empty() && t.request_uri_form != portcullis_config::UriForm::Tel {
        if let Some(uri) = msg.request_uri().map(str::to_string) {
            msg.set_request_uri(&set_uri_params(&uri, &t.request_uri_params));
        }
    }
    if t.disable_100rel {
        let kept: Vec<String> = msg
            .supported()
            .iter()
            .filter(|v| !v.eq_ignore_ascii_case("100rel"))
            .map(|v| v.to_string())
            .collect();
        if msg.header(HeaderName::Supported).is_some() {
            msg.remove_headers(HeaderName::Supported);
            if !kept.is_empty() {
                msg.set_header(HeaderName::Supported, &kept.join(", "));
            }
        }
    }
    for rule in &t.headers {
        let value = match (&rule.from_header, &rule.value) {
            (Some(from), _) => msg.header_by_name(from).map(str::to_string),
            (None, Some(v)) => Some(v.clone()),
            (None, None) => None,
        };
        match rule.action {
            portcullis_config::HeaderAction::Remove => {
                msg.remove_headers_by_name(&rule.name);
            }
            portcullis_config::HeaderAction::Replace => {
                if let Some(v) = value {
                    msg.remove_headers_by_name(&rule.name);
                    msg.set_header_by_name(&rule.name, &v);
                }
            }
            portcullis_config::HeaderAction::Add => {
                if let Some(v) = value {
                    let end = msg.headers().count();
                    msg.insert_header_raw(end, &rule.name, &v);
                }
            }
        }
    }
}

/// Sets URI parameters (`name` or `name=value`), replacing a parameter of the same name
/// instead of adding a second one.
fn set_uri_params(uri: &str, params: &[String]) -> String {
    let (base, headers) = match uri.find('?') {
        Some(i) => (&uri[..i], &uri[i..]),
        None => (uri, ""),
    };
    // Parameters start after the host part: the first ';' after the '@' (or the scheme).
    let host_start = base
        .find('@')
        .map(|i| i + 1)
        .or_else(|| base.find(':').map(|i| i + 1))
        .unwrap_or(0);
    let (head, existing) = match base[host_start..].find(';') {
        Some(i) => (&base[..host_start + i], &base[host_start + i + 1..]),
        None => (base, ""),
    };
    let mut list: Vec<String> = existing
        .split(';')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    for p in params {
        let name = p.split('=').next().unwrap_or("");
        match list
            .iter_mut()
            .find(|q| q.split('=').next().unwrap_or("").eq_ignore_ascii_case(name))
        {
            Some(q) => *q = p.clone(),
            None => list.push(p.clone()),
        }
    }
    let mut out = head.to_string();
    for p in &list {
        out.push(';');
        out.push_str(p);
    }
    out.push_str(headers);
    out
}

/// Call-ID, From tag and To tag of a message (empty when absent).
fn dialog_ids(msg: &SipMessage) -> (String, String, String) {
    (
        msg.call_id().unwrap_or("").to_string(),
        msg.from()
            .ok()
            .and_then(|f| f.tag().map(str::to_string))
            .unwrap_or_default(),
        msg.to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
            .unwrap_or_default(),
    )
}

/// Adds a Record-Route value on top of the existing ones; the first one goes right after
/// the Via headers (where peers expect it) rather than at the very top.
fn insert_record_route(msg: &mut SipMessage, value: &str) {
    if msg.header(HeaderName::RecordRoute).is_some() {
        msg.insert_before_first(HeaderName::RecordRoute, value);
        return;
    }
    let after_vias = msg
        .headers()
        .enumerate()
        .filter(|(_, h)| h.name == HeaderName::Via)
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or(0);
    msg.insert_header_raw(after_vias, "Record-Route", value);
}
