//! Prometheus metrics (prometheus-client). Naming follows `../shared/design/architecture.md`:
//! `sbc_` prefix, `_total` counters, low-cardinality labels.
//!
//! Hot-path counters are resolved once per (interface, label) at start-up so that counting a
//! message never allocates.

use std::collections::HashMap;

use portcullis_sip::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceMethod {
    interface: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceClass {
    interface: String,
    code_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IfaceLabel {
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IoLabel {
    io: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfo {
    version: String,
    /// SIP over TLS/WSS and TLS trunks (S-35).
    tls_library: String,
    /// DTLS-SRTP toward WebRTC peers.
    dtls_library: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkLabel {
    trunk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatapathLabel {
    datapath: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkAddressLabel {
    trunk: String,
    address: String,
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrunkResultLabel {
    trunk: String,
    result: String,
}

/// Brings a counter that mirrors a monotonic total kept elsewhere (datapath, XDP program,
/// secure legs) up to that total.
fn follow(c: &Counter, total: u64) {
    let cur = c.get();
    if total > cur {
        c.inc_by(total - cur);
    }
}

/// Methods with their own label value; everything else counts as `OTHER`.
const METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Kinds of transactions in `sbc_sip_transactions{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    ServerInvite,
    ServerNonInvite,
    ClientInvite,
    ClientNonInvite,
}

impl TxKind {
    const ALL: [TxKind; 4] = [
        TxKind::ServerInvite,
        TxKind::ServerNonInvite,
        TxKind::ClientInvite,
        TxKind::ClientNonInvite,
    ];
    fn label(self) -> &'static str {
        match self {
            TxKind::ServerInvite => "server_invite",
            TxKind::ServerNonInvite => "server_non_invite",
            TxKind::ClientInvite => "client_invite",
            TxKind::ClientNonInvite => "client_non_invite",
        }
    }
}

/// Why a message was dropped without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A response whose top Via is not ours, or that matches no transaction (S-34).
    StrayResponse,
    /// A message without a usable top Via.
    NoVia,
    /// A message over the configured maximum size.
    TooLarge,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::StrayResponse => "stray_response",
            DropReason::NoVia => "no_via",
            DropReason::TooLarge => "too_large",
        }
    }
}

struct IfaceCounters {
    requests: Vec<Counter>,
    responses: Vec<Counter>,
    parse_errors: Counter,
}

pub struct Metrics {
    registry: Registry,
    by_iface: HashMap<String, IfaceCounters>,
    requests: Family<IfaceMethod, Counter>,
    responses: Family<IfaceClass, Counter>,
    parse_errors: Family<IfaceLabel, Counter>,
    tx_gauges: [Gauge; 4],
    dropped: Family<ReasonLabel, Counter>,
    failovers: Family<TrunkLabel, Counter>,
    tcp_connections: Gauge,
    tcp_connect_failures: Counter,
    tls_client_failures: Family<TrunkLabel, Counter>,
    tls_certificate_expiry: Family<ListenerLabel, Gauge>,
    registrar_bindings: Gauge,
    dead_flows: Counter,
    trunk_up: Family<TrunkLabel, Gauge>,
    media_streams: Family<DatapathLabel, Gauge>,
    dtls_handshakes: Family<ResultLabel, Counter>,
    secure_drops: Family<ReasonLabel, Counter>,
    hellos_rejected: Counter,
    consent_expired: Counter,
    media_streams_ended: Family<KindLabel, Counter>,
    trunk_address: Family<TrunkAddressLabel, Gauge>,
    dns_lookups: Family<TrunkResultLabel, Counter>,
    known_trunk_addresses: std::sync::Mutex<HashMap<String, Vec<TrunkAddressLabel>>>,
    registrations: Family<ReasonLabel, Counter>,
    nat_detected: Family<IfaceLabel, Counter>,
    alg_suspected: Family<IfaceLabel, Counter>,
    keepalive_failures: Counter,
    media_sessions: Gauge,
    media_answer_failed: Counter,
    media_datapath: Family<KindLabel, Gauge>,
    media_relay_io: Family<IoLabel, Gauge>,
    media_ports: Family<PortLabel, Gauge>,
    media_packets: Counter,
    media_bytes: Counter,
    media_timeouts: Counter,
    media_xdp: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    interface: String,
    state: String,
}

impl Metrics {
    /// Creates the registry with one label set per configured interface.
    pub fn new(interfaces: &[String]) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<IfaceMethod, Counter>::default();
        let responses = Family::<IfaceClass, Counter>::default();
        let parse_errors = Family::<IfaceLabel, Counter>::default();
        let transactions = Family::<KindLabel, Gauge>::default();
        let dropped = Family::<ReasonLabel, Counter>::default();
        let failovers = Family::<TrunkLabel, Counter>::default();
        let build_info = Family::<BuildInfo, Gauge>::default();
        let tcp_connections = Gauge::default();
        let tcp_connect_failures = Counter::default();
        let tls_client_failures = Family::<TrunkLabel, Counter>::default();
        let tls_certificate_expiry = Family::<ListenerLabel, Gauge>::default();
        let registrar_bindings = Gauge::default();
        let dead_flows = Counter::default();
        let trunk_up = Family::<TrunkLabel, Gauge>::default();
        let trunk_address = Family::<TrunkAddressLabel, Gauge>::default();
        let dns_lookups = Family::<TrunkResultLabel, Counter>::default();
        let registrations = Family::<ReasonLabel, Counter>::default();
        let nat_detected = Family::<IfaceLabel, Counter>::default();
        let alg_suspected = Family::<IfaceLabel, Counter>::default();
        let keepalive_failures = Counter::default();
        let media_sessions = Gauge::default();
        let media_answer_failed = Counter::default();
        let media_datapath = Family::<KindLabel, Gauge>::default();
        let media_relay_io = Family::<IoLabel, Gauge>::default();
        let media_ports = Family::<PortLabel, Gauge>::default();
        let media_packets = Counter::default();
        let media_timeouts = Counter::default();
        let media_xdp = Family::<OutcomeLabel, Counter>::default();
        let media_streams = Family::<DatapathLabel, Gauge>::default();
        let dtls_handshakes = Family::<ResultLabel, Counter>::default();
        let secure_drops = Family::<ReasonLabel, Counter>::default();
        let hellos_rejected = Counter::default();
        let consent_expired = Counter::default();
        registry.register(
            "sbc_media_dtls_handshakes",
            "DTLS-SRTP handshakes of the relay's WebRTC legs by result (connected, failed: wrong fingerprint, timeout, alert)",
            dtls_handshakes.clone(),
        );
        registry.register(
            "sbc_media_secure_drops",
            "Packets dropped by the relay's SRTP legs: reason=auth_failed (bad SRTP/SRTCP tag), replay, dtls_source (DTLS from a source that did not pass ICE or is not the SDP address, S-23)",
            secure_drops.clone(),
        );
        registry.register(
            "sbc_media_dtls_hellos_rejected",
            "DTLS ClientHellos dropped because of their source (S-23 hello race)",
            hellos_rejected.clone(),
        );
        registry.register(
            "sbc_media_ice_consent_expired",
            "WebRTC legs whose ICE consent expired (RFC 7675): media to them stopped",
            consent_expired.clone(),
        );
        let media_streams_ended = Family::<KindLabel, Counter>::default();
        registry.register(
            "sbc_media_streams",
            "Relay pairs (one RTP or RTCP stream, both directions) in use: datapath=xdp when both directions are forwarded in the kernel, userspace otherwise",
            media_streams.clone(),
        );
        registry.register(
            "sbc_media_streams_ended",
            "Relay pairs released at the end of a call by what they carried: kind=two_way, one_way (packets in one direction only) or zero_packet",
            media_streams_ended.clone(),
        );
        registry.register(
            "sbc_media_xdp_packets",
            "Packets seen by the XDP relay program, by outcome (forwarded_tx, forwarded_redirect, pass_*, drop_*)",
            media_xdp.clone(),
        );
        registry.register(
            "sbc_media_timeouts",
            "Calls ended by the SBC because their relay saw no media (BYE to both legs)",
            media_timeouts.clone(),
        );
        let media_bytes = Counter::default();
        registry.register(
            "sbc_media_relayed_packets",
            "RTP/RTCP packets relayed (both directions, XDP and userspace)",
            media_packets.clone(),
        );
        registry.register(
            "sbc_media_relayed_bytes",
            "Bytes relayed, counted from the IP header (both directions, XDP and userspace)",
            media_bytes.clone(),
        );
        registry.register(
            "sbc_media_sessions",
            "Calls with anchored media (media engine sessions)",
            media_sessions.clone(),
        );
        registry.register(
            "sbc_media_answers_unanchored",
            "SDP answers the media engine could not process (forwarded unchanged), e.g. no common codec (S-14)",
            media_answer_failed.clone(),
        );
        registry.register(
            "sbc_media_datapath",
            "Media datapath in use (kind=xdp or userspace)",
            media_datapath.clone(),
        );
        registry.register(
            "sbc_media_relay_io",
            "Socket I/O of the userspace relay (io=io_uring, or epoll where io_uring is unavailable or configured off)",
            media_relay_io.clone(),
        );
        registry.register(
            "sbc_media_ports",
            "Relay ports per interface (state=used or free)",
            media_ports.clone(),
        );
        registry.register(
            "sbc_nat_detected",
            "Requests from clients detected behind NAT (Via or Contact differs from the source)",
            nat_detected.clone(),
        );
        registry.register(
            "sbc_nat_alg_suspected",
            "Requests whose Via matches the public source while Contact or SDP stay private (a SIP ALG rewrote part of the message)",
            alg_suspected.clone(),
        );
        registry.register(
            "sbc_nat_keepalive_failures",
            "NAT keepalive OPTIONS left unanswered",
            keepalive_failures.clone(),
        );
        registry.register(
            "sbc_registrations",
            "REGISTERs for the upstream registrar: reason=forwarded (sent upstream) or cached (refresh answered by the SBC)",
            registrations.clone(),
        );
        registry.register(
            "sbc_trunk_up",
            "1 while an OPTIONS-probed trunk answers, 0 while it is marked down",
            trunk_up.clone(),
        );
        registry.register(
            "sbc_trunk_address",
            "1 for every address a trunk host name currently resolves to (RFC 3263), in failover order of rank",
            trunk_address.clone(),
        );
        registry.register(
            "sbc_dns_lookups",
            "Trunk host name resolutions: result=ok, or error (the previous addresses are kept)",
            dns_lookups.clone(),
        );
        registry.register(
            "sbc_registrar_bindings",
            "Contacts registered with the standalone registrar",
            registrar_bindings.clone(),
        );
        registry.register(
            "sbc_flow_dead",
            "Requests to a registered client that failed because its flow was gone",
            dead_flows.clone(),
        );
        registry.register(
            "sbc_sip_requests",
            "SIP requests received, by interface and method",
            requests.clone(),
        );
        registry.register(
            "sbc_sip_responses",
            "SIP responses received, by interface and status class",
            responses.clone(),
        );
        registry.register(
            "sbc_sip_parse_errors",
            "SIP messages that could not be parsed, by interface",
            parse_errors.clone(),
        );
        registry.register(
            "sbc_sip_transactions",
            "SIP transactions currently held, by kind",
            transactions.clone(),
        );
        registry.register(
            "sbc_sip_dropped",
            "SIP messages dropped without a response, by reason",
            dropped.clone(),
        );
        registry.register(
            "sbc_sip_trunk_failovers",
            "Requests moved to the next trunk of a group after this trunk failed",
            failovers.clone(),
        );
        registry.register(
            "sbc_sip_tcp_connections",
            "Open SIP stream connections (flows)",
            tcp_connections.clone(),
        );
        registry.register(
            "sbc_sip_tcp_connect_failures",
            "Outbound SIP stream connections that could not be established",
            tcp_connect_failures.clone(),
        );
        registry.register(
            "sbc_sip_tls_client_failures",
            "Outbound TLS connections to a trunk whose handshake failed (certificate not \
             trusted or not valid for the trunk's name, protocol error, timeout)",
            tls_client_failures.clone(),
        );
        registry.register(
            "sbc_tls_certificate_expiry_timestamp_seconds",
            "When the certificate a TLS/WSS listener serves (and presents to TLS trunks) \
             expires, Unix time; follows `systemctl reload sbcd`",
            tls_certificate_expiry.clone(),
        );
        registry.register(
            "sbc_build_info",
            "Build information (value is always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                tls_library: concat!("rustls ", env!("PORTCULLIS_RUSTLS_VERSION")).to_string(),
                dtls_library: concat!("rtc-dtls ", env!("PORTCULLIS_DTLS_VERSION")).to_string(),
            })
            .set(1);
        let tx_gauges = TxKind::ALL.map(|k| {
            transactions
                .get_or_create(&KindLabel {
                    kind: k.label().to_string(),
                })
                .clone()
        });
        let mut by_iface = HashMap::new();
        for iface in interfaces {
            let mut req = Vec::new();
            for m in METHODS.iter().chain(std::iter::once(&"OTHER")) {
                req.push(
                    requests
                        .get_or_create(&IfaceMethod {
                            interface: iface.clone(),
                            method: (*m).to_string(),
                        })
                        .clone(),
                );
            }
            let resp = CLASSES
                .iter()
                .map(|c| {
                    responses
                        .get_or_create(&IfaceClass {
                            interface: iface.clone(),
                            code_class: (*c).to_string(),
                        })
                        .clone()
                })
                .collect();
            let pe = parse_errors
                .get_or_create(&IfaceLabel {
                    interface: iface.clone(),
                })
                .clone();
            by_iface.insert(
                iface.clone(),
                IfaceCounters {
                    requests: req,
                    responses: resp,
                    parse_errors: pe,
                },
            );
        }
        Metrics {
            registry,
            by_iface,
            requests,
            responses,
            parse_errors,
            tx_gauges,
            dropped,
            failovers,
            tcp_connections,
            tcp_connect_failures,
            tls_client_failures,
            tls_certificate_expiry,
            registrar_bindings,
            dead_flows,
            trunk_up,
            media_streams,
            dtls_handshakes,
            secure_drops,
            hellos_rejected,
            consent_expired,
            media_streams_ended,
            trunk_address,
            dns_lookups,
            known_trunk_addresses: Default::default(),
            registrations,
            nat_detected,
            alg_suspected,
            keepalive_failures,
            media_sessions,
            media_answer_failed,
            media_datapath,
            media_relay_io,
            media_ports,
            media_packets,
            media_bytes,
            media_timeouts,
            media_xdp,
        }
    }

    pub fn request(&self, iface: &str, method: &Method) {
        let idx = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len());
        match self.by_iface.get(iface) {
            Some(c) => {
                c.requests[idx].inc();
            }
            None => {
                self.requests
                    .get_or_create(&IfaceMethod {
                        interface: iface.to_string(),
                        method: METHODS.get(idx).copied().unwrap_or("OTHER").to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn response(&self, iface: &str, status: u16) {
        let idx = usize::from((status / 100).clamp(1, 6) - 1);
        match self.by_iface.get(iface) {
            Some(c) => {
                c.responses[idx].inc();
            }
            None => {
                self.responses
                    .get_or_create(&IfaceClass {
                        interface: iface.to_string(),
                        code_class: CLASSES[idx].to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn parse_error(&self, iface: &str) {
        match self.by_iface.get(iface) {
            Some(c) => {
                c.parse_errors.inc();
            }
            None => {
                self.parse_errors
                    .get_or_create(&IfaceLabel {
                        interface: iface.to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn transactions(&self, kind: TxKind, delta: i64) {
        self.tx_gauges[kind as usize].inc_by(delta);
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.label().to_string(),
            })
            .inc();
    }

    pub fn failover(&self, trunk: &str) {
        self.failovers
            .get_or_create(&TrunkLabel {
                trunk: trunk.to_string(),
            })
            .inc();
    }

    pub fn tcp_connections(&self, delta: i64) {
        self.tcp_connections.inc_by(delta);
    }

    pub fn registrar_bindings(&self, n: usize) {
        self.registrar_bindings
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn trunk_up(&self, trunk: &str, up: bool) {
        self.trunk_up
            .get_or_create(&TrunkLabel {
                trunk: trunk.to_string(),
            })
            .set(i64::from(up));
    }

    /// The addresses trunk `trunk` resolves to now (replacing the previous set).
    pub fn trunk_addresses(&self, trunk: &str, addrs: &[(std::net::SocketAddr, String)]) {
        let keep: Vec<TrunkAddressLabel> = addrs
            .iter()
            .map(|(a, t)| TrunkAddressLabel {
                trunk: trunk.to_string(),
                address: a.to_string(),
                transport: t.clone(),
            })
            .collect();
        // Drop the series of addresses that are gone.
        let mut known = self
            .known_trunk_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let prev = known
            .insert(trunk.to_string(), keep.clone())
            .unwrap_or_default();
        for l in prev.iter().filter(|l| !keep.contains(l)) {
            self.trunk_address.remove(l);
        }
        for l in keep {
            self.trunk_address.get_or_create(&l).set(1);
        }
    }

    /// One trunk name resolution finished.
    pub fn dns_lookup(&self, trunk: &str, ok: bool) {
        self.dns_lookups
            .get_or_create(&TrunkResultLabel {
                trunk: trunk.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// A REGISTER toward the upstream registrar was answered from the cache (true) or
    /// forwarded (false).
    pub fn registration(&self, cached: bool) {
        self.registrations
            .get_or_create(&ReasonLabel {
                reason: if cached { "cached" } else { "forwarded" }.to_string(),
            })
            .inc();
    }

    pub fn nat_detected(&self, iface: &str) {
        self.nat_detected
            .get_or_create(&IfaceLabel {
                interface: iface.to_string(),
            })
            .inc();
    }

    pub fn alg_suspected(&self, iface: &str) {
        self.alg_suspected
            .get_or_create(&IfaceLabel {
                interface: iface.to_string(),
            })
            .inc();
    }

    pub fn media_sessions(&self, n: usize) {
        self.media_sessions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn media_answer_failed(&self) {
        self.media_answer_failed.inc();
    }

    pub fn media_datapath(&self, kind: &str) {
        self.media_datapath
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .set(1);
    }

    pub fn media_relay_io(&self, io: &str) {
        self.media_relay_io
            .get_or_create(&IoLabel { io: io.to_string() })
            .set(1);
    }

    pub fn media_ports(&self, interface: &str, used: u64, free: u64) {
        for (state, v) in [("used", used), ("free", free)] {
            self.media_ports
                .get_or_create(&PortLabel {
                    interface: interface.to_string(),
                    state: state.to_string(),
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// Brings the relayed packet/byte counters up to the datapath's totals.
    pub fn media_relayed(&self, packets: u64, bytes: u64) {
        follow(&self.media_packets, packets);
        follow(&self.media_bytes, bytes);
    }

    /// Brings an XDP outcome counter up to the program's total.
    pub fn media_xdp(&self, outcome: &str, total: u64) {
        let c = self.media_xdp.get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        });
        follow(&c, total);
    }

    /// Relay pairs in use, by datapath.
    pub fn media_streams(&self, xdp: usize, userspace: usize) {
        for (d, n) in [("xdp", xdp), ("userspace", userspace)] {
            self.media_streams
                .get_or_create(&DatapathLabel {
                    datapath: d.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Totals of the relay's secure legs (monotonic; counters follow them).
    pub fn media_secure(&self, t: crate::media_relay::SecureSnapshot) {
        let result = |r: &str| {
            self.dtls_handshakes.get_or_create(&ResultLabel {
                result: r.to_string(),
            })
        };
        follow(&result("connected"), t.dtls_connected);
        follow(&result("failed"), t.dtls_failed);
        let reason = |r: &str| {
            self.secure_drops.get_or_create(&ReasonLabel {
                reason: r.to_string(),
            })
        };
        follow(&reason("auth_failed"), t.auth_failures);
        follow(&reason("replay"), t.replays);
        follow(&reason("dtls_source"), t.dtls_rejected);
        follow(&self.hellos_rejected, t.hello_rejected);
        follow(&self.consent_expired, t.consent_expired);
    }

    /// A relay pair was released at the end of its call.
    pub fn media_stream_ended(&self, kind: crate::media_relay::StreamKind) {
        self.media_streams_ended
            .get_or_create(&KindLabel {
                kind: kind.as_str().to_string(),
            })
            .inc();
    }

    pub fn media_timeout(&self) {
        self.media_timeouts.inc();
    }

    pub fn keepalive_failure(&self) {
        self.keepalive_failures.inc();
    }

    pub fn dead_flow(&self) {
        self.dead_flows.inc();
    }

    pub fn tcp_connect_failure(&self) {
        self.tcp_connect_failures.inc();
    }

    /// The certificate of `listener` expires at `not_after` (Unix time).
    pub fn tls_certificate_expiry(&self, listener: &str, not_after: i64) {
        self.tls_certificate_expiry
            .get_or_create(&ListenerLabel {
                listener: listener.to_string(),
            })
            .set(not_after);
    }

    pub fn tls_client_failure(&self, trunk: &str) {
        self.tls_client_failures
            .get_or_create(&TrunkLabel {
                trunk: trunk.to_string(),
            })
            .inc();
    }

    /// Text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_contains_required_families() {
        let m = Metrics::new(&["outside".to_string()]);
        m.request("outside", &Method::Invite);
        m.request("outside", &Method::Other("FOO".into()));
        m.response("outside", 486);
        m.parse_error("outside");
        m.transactions(TxKind::ServerInvite, 1);
        let text = m.encode();
        assert!(
            text.contains("sbc_sip_requests_total{interface=\"outside\",method=\"INVITE\"} 1"),
            "{text}"
        );
        assert!(text.contains("sbc_sip_requests_total{interface=\"outside\",method=\"OTHER\"} 1"));
        assert!(
            text.contains("sbc_sip_responses_total{interface=\"outside\",code_class=\"4xx\"} 1")
        );
        assert!(text.contains("sbc_sip_parse_errors_total{interface=\"outside\"} 1"));
        assert!(text.contains("sbc_sip_transactions{kind=\"server_invite\"} 1"));
        assert!(text.contains(&format!(
            "sbc_build_info{{version=\"{}\",tls_library=\"rustls {}\",dtls_library=\"rtc-dtls {}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("PORTCULLIS_RUSTLS_VERSION"),
            env!("PORTCULLIS_DTLS_VERSION"),
        )), "{text}");
        assert!(
            env!("PORTCULLIS_RUSTLS_VERSION") != "unknown"
                && env!("PORTCULLIS_RUSTLS_VERSION").contains('.'),
            "the TLS library version comes from Cargo.lock"
        );
    }
}
