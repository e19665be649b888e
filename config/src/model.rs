//! Typed configuration model: what the rest of Portcullis consumes once a
//! file has been parsed, substituted and validated.
//!
//! Every struct here is plain data (all fields public). Defaults documented on
//! each field are applied by the loader when the key is absent.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub logging: Logging,
    pub metrics: Metrics,
    pub sip: SipSettings,
    pub interfaces: Vec<Interface>,
    pub trunks: Vec<Trunk>,
    pub routes: Vec<Route>,
    /// The standalone registrar (used when no upstream registrar is configured).
    pub registrar: Registrar,
    /// Media relay settings (datapath choice).
    pub media: MediaSettings,
    /// DNS resolution of trunk host names (RFC 3263).
    pub dns: DnsSettings,
    /// Key paths (e.g. `trunks[0].host`) whose value came from a `${file:...}`
    /// secret. Not part of the YAML schema; used to redact `print-config`.
    #[serde(skip)]
    pub secret_paths: Vec<String>,
}

impl Config {
    /// The interface with this name, if any.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Trunks belonging to a trunk group, in file order.
    pub fn trunks_in_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Trunk> + 'a {
        self.trunks.iter().filter(move |t| t.group == group)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Logging {
    /// Default `info`.
    pub level: LogLevel,
    /// Default `text`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    pub fn as_str(&self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Prometheus/admin HTTP listen address. Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
}

/// How trunk host names are resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsSettings {
    /// Name servers (`ip` or `ip:port`); empty (the default) means the system's
    /// `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// Per-query timeout. Default 2000 ms.
    pub timeout_ms: u64,
    /// Answers are cached for their TTL, clamped to [min_ttl_s, max_ttl_s]. Defaults 5 and
    /// 3600.
    pub min_ttl_s: u64,
    pub max_ttl_s: u64,
    /// After a failed lookup the last good answer is kept and the name asked again after
    /// this many seconds. Default 30.
    pub retry_s: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            resolvers: Vec::new(),
            timeout_ms: 2000,
            min_ttl_s: 5,
            max_ttl_s: 3600,
            retry_s: 30,
        }
    }
}

/// Media relay settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaSettings {
    /// auto (XDP when it can be attached, else userspace, with a warning), xdp or
    /// userspace. Default auto.
    pub datapath: DatapathChoice,
    /// Linux interfaces the XDP relay attaches to (for auto and xdp). Default none, so auto
    /// means userspace until interfaces are listed.
    pub xdp_interfaces: Vec<String>,
    /// NAT learning window on legs facing interfaces with `nat_fixing`: packets and
    /// milliseconds after the first packet during which the source may differ from the SDP.
    /// Defaults 10 packets, 3000 ms.
    pub learn_packets: u32,
    pub learn_ms: u64,
    /// A call whose relay saw no packet in either direction for this many seconds is ended
    /// (BYE to both legs). 0 disables. Default 60.
    pub timeout_s: u64,
    /// The same while the call is on hold. Default 3600.
    pub hold_timeout_s: u64,
    /// Socket I/O of the userspace relay: auto (io_uring where the kernel allows it, else
    /// epoll), io_uring or epoll. Default auto.
    pub relay_io: RelayIoChoice,
    /// Userspace relay worker threads. Default 1.
    pub relay_workers: u32,
    /// io_uring relay: microseconds a wake-up may wait for more datagrams. Default 100.
    pub relay_coalesce_us: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            datapath: DatapathChoice::Auto,
            xdp_interfaces: Vec::new(),
            learn_packets: 10,
            learn_ms: 3000,
            timeout_s: 60,
            hold_timeout_s: 3600,
            relay_io: RelayIoChoice::Auto,
            relay_workers: 1,
            relay_coalesce_us: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathChoice {
    Auto,
    Xdp,
    Userspace,
}

impl DatapathChoice {
    pub const ALL: [DatapathChoice; 3] = [
        DatapathChoice::Auto,
        DatapathChoice::Xdp,
        DatapathChoice::Userspace,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            DatapathChoice::Auto => "auto",
            DatapathChoice::Xdp => "xdp",
            DatapathChoice::Userspace => "userspace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayIoChoice {
    Auto,
    IoUring,
    Epoll,
}

impl RelayIoChoice {
    pub const ALL: [RelayIoChoice; 3] = [
        RelayIoChoice::Auto,
        RelayIoChoice::IoUring,
        RelayIoChoice::Epoll,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            RelayIoChoice::Auto => "auto",
            RelayIoChoice::IoUring => "io_uring",
            RelayIoChoice::Epoll => "epoll",
        }
    }
}

/// Standalone registrar settings (RFC 3261 10.3) and digest users (RFC 8760).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registrar {
    /// Digest realm. Default "portcullis".
    pub realm: String,
    /// Shorter non-zero expiries are refused with 423. Default 60.
    pub min_expires: u32,
    /// Longer expiries are shortened. Default 3600.
    pub max_expires: u32,
    /// Expiry when a REGISTER names none. Default 3600.
    pub default_expires: u32,
    /// Contacts per address-of-record. Default 10.
    pub max_contacts: usize,
    /// Digest users; authentication is required when this list is not empty.
    pub users: Vec<User>,
    /// Digest algorithms offered, in order of preference, one challenge each (RFC 8760):
    /// `SHA-256` and/or `MD5`. Default [SHA-256, MD5]. Clients that only read the first
    /// challenge and only know MD5 need MD5 first.
    pub algorithms: Vec<String>,
    /// Trunk group of an upstream registrar. When set, REGISTERs are proxied there (the
    /// SBC keeps the client's flow and hides the Contact) instead of answered locally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// How the upstream registrar reaches the client through the SBC: `contact` (the
    /// Contact is replaced by an SBC URI carrying a flow token) or `path` (RFC 3327: a Path
    /// header with the token is added). Default contact.
    pub mode: RegistrationMode,
    /// Keepalives toward registered clients behind NAT (UDP).
    pub keepalive: Keepalive,
}

/// NAT keepalives toward registered UDP clients detected behind NAT (S-10).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keepalive {
    /// options (an OPTIONS request; unanswered ones count as failures), crlf (a CRLF
    /// datagram that only refreshes the NAT binding) or none. Default options.
    pub method: KeepaliveMethod,
    /// Seconds between keepalives. Default 30.
    pub interval_s: u64,
    /// Failed OPTIONS keepalives in a row after which the client's bindings are dropped.
    /// Default 3.
    pub max_failures: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            method: KeepaliveMethod::Options,
            interval_s: 30,
            max_failures: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepaliveMethod {
    Options,
    Crlf,
    None,
}

impl KeepaliveMethod {
    pub const ALL: [KeepaliveMethod; 3] = [
        KeepaliveMethod::Options,
        KeepaliveMethod::Crlf,
        KeepaliveMethod::None,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            KeepaliveMethod::Options => "options",
            KeepaliveMethod::Crlf => "crlf",
            KeepaliveMethod::None => "none",
        }
    }
}

/// See [`Registrar::mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    Contact,
    Path,
}

impl RegistrationMode {
    pub const ALL: [RegistrationMode; 2] = [RegistrationMode::Contact, RegistrationMode::Path];
    pub fn as_str(&self) -> &'static str {
        match self {
            RegistrationMode::Contact => "contact",
            RegistrationMode::Path => "path",
        }
    }
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar {
            realm: "portcullis".to_string(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            users: Vec::new(),
            algorithms: vec!["SHA-256".to_string(), "MD5".to_string()],
            upstream: None,
            mode: RegistrationMode::Contact,
            keepalive: Keepalive::default(),
        }
    }
}

/// A digest user of the standalone registrar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub user: String,
    /// Always redacted by `print-config`.
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SipSettings {
    pub timers: SipTimers,
    /// Largest SIP message accepted, bytes. Default 65535, range 1024..=1048576.
    pub max_message_size: usize,
    /// Requests larger than this go over a stream transport (RFC 3261 18.1.1).
    /// Default 1300.
    pub udp_mtu_threshold: usize,
    /// Default 600.
    pub tcp_idle_timeout_s: u64,
    /// Default 2000.
    pub tcp_connect_timeout_ms: u64,
    /// OS TCP keepalive on every SIP stream connection (TCP, TLS, WS, WSS): probes start
    /// after this many idle seconds (then every 10 s, 3 unanswered probes close it), so a
    /// peer that vanished without a FIN (NAT timeout, power loss) is noticed. 0 disables.
    /// Default 60.
    pub tcp_keepalive_s: u64,
    /// Host names / addresses the SBC treats as itself (besides listener addresses).
    pub domain_aliases: Vec<String>,
    /// Worker threads; 0 = number of CPUs. Default 0.
    pub workers: usize,
    /// Server/User-Agent header value for locally generated messages. Default "Portcullis".
    pub user_agent: String,
}

/// RFC 3261 17.1.1.1 timer values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SipTimers {
    /// Default 500.
    pub t1_ms: u64,
    /// Default 4000.
    pub t2_ms: u64,
    /// Default 5000.
    pub t4_ms: u64,
}

/// A network realm: SIP listeners, a media address and policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interface {
    pub name: String,
    pub listeners: Vec<Listener>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    pub policy: InterfacePolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub name: String,
    pub proto: Proto,
    pub address: IpAddr,
    /// Default: 5060 udp/tcp, 5061 tls, 8080 ws, 8443 wss.
    pub port: u16,
    /// Address written into Via/Record-Route/Contact (1:1 NAT); IP or host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_port: Option<u16>,
    /// Required for tls and wss, rejected for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Proto {
    pub const ALL: [Proto; 5] = [Proto::Udp, Proto::Tcp, Proto::Tls, Proto::Ws, Proto::Wss];

    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
            Proto::Ws => "ws",
            Proto::Wss => "wss",
        }
    }

    /// True for connection-oriented transports (everything but UDP).
    pub fn is_stream(&self) -> bool {
        !matches!(self, Proto::Udp)
    }

    /// True when the listener needs TLS certificate settings.
    pub fn is_secure(&self) -> bool {
        matches!(self, Proto::Tls | Proto::Wss)
    }

    /// Port used when the listener does not set one.
    pub fn default_port(&self) -> u16 {
        match self {
            Proto::Udp | Proto::Tcp => 5060,
            Proto::Tls => 5061,
            Proto::Ws => 8080,
            Proto::Wss => 8443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsSettings {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Default false.
    pub verify_client: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Media {
    pub address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<IpAddr>,
    /// Even, within 1024..=65535. Default 20000.
    pub port_min: u16,
    /// Default 29999.
    pub port_max: u16,
    /// Calls with media anchored on this interface at most (0: only the port range
    /// limits). Beyond it new calls get 503. Default 0.
    pub max_sessions: u32,
    /// Media security of the SDP offered toward this interface: `keep` (the offerer's
    /// protocol passes through, the default), `plain` (RTP/AVP: SRTP with SDES keys from
    /// the other side is terminated by the relay) or `sdes` (RTP/SAVP with the relay's own
    /// a=crypto key; plain RTP from the other side is encrypted by the relay) or `webrtc`
    /// (UDP/TLS/RTP/SAVPF: the relay is an ICE-lite DTLS-SRTP endpoint toward this side,
    /// rtcp-mux, one bundled audio section).
    pub profile: MediaProfile,
}

/// See [`Media::profile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaProfile {
    Keep,
    Plain,
    Sdes,
    Webrtc,
}

impl MediaProfile {
    pub const ALL: [MediaProfile; 4] = [
        MediaProfile::Keep,
        MediaProfile::Plain,
        MediaProfile::Sdes,
        MediaProfile::Webrtc,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            MediaProfile::Keep => "keep",
            MediaProfile::Plain => "plain",
            MediaProfile::Sdes => "sdes",
            MediaProfile::Webrtc => "webrtc",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterfacePolicy {
    /// Default true.
    pub anchor_media: bool,
    /// Default false.
    pub topology_hiding: bool,
    /// With topology hiding: the Call-ID is replaced by an opaque one on this interface.
    /// Default false.
    pub call_id_masking: bool,
    /// Default true.
    pub nat_fixing: bool,
    /// Default false: when no route matches, forward by Request-URI host instead of 404.
    pub allow_request_uri_routing: bool,
    /// Registration throttling (S-10): when > 0, clients registering on this interface
    /// through the upstream registrar get this expiry (seconds) while the registrar sees
    /// `registration_upstream_expires`; refreshes in between are answered from the cache.
    /// Default 0 (off).
    pub registration_client_expires: u32,
    /// Expiry the upstream registrar sees for throttled clients. Default 3600.
    pub registration_upstream_expires: u32,
    /// With topology hiding: host names (a name also covers its subdomains) and IP
    /// networks (`10.0.0.0/8`, `2001:db8::/32`, or single addresses) of the other side that
    /// must never appear on this interface. Occurrences in the Request-URI, From, To and
    /// every header other than the routing ones (Via, Route, Record-Route, Path, Contact,
    /// which topology hiding replaces as a whole) are replaced by the SBC's address on this
    /// interface. Default none.
    pub hide_hosts: Vec<String>,
}

impl Default for InterfacePolicy {
    fn default() -> Self {
        InterfacePolicy {
            anchor_media: true,
            topology_hiding: false,
            call_id_masking: false,
            nat_fixing: true,
            registration_client_expires: 0,
            registration_upstream_expires: 3600,
            allow_request_uri_routing: false,
            hide_hosts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trunk {
    pub name: String,
    /// IP address or host name (FQDN).
    pub host: String,
    /// Default 5060 (5061 for tls).
    pub port: u16,
    /// Default udp.
    pub transport: TrunkTransport,
    /// How a host name is resolved (RFC 3263). When absent it follows from what is given:
    /// an explicit port means `a`, an explicit transport without a port `srv`, neither
    /// `naptr`. IP literals are never looked up.
    pub dns: TrunkDns,
    pub group: String,
    /// Interface the trunk is reached through.
    pub interface: String,
    /// Listener of that interface to send from (default: first matching one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// Default 1, at least 1.
    pub weight: u32,
    /// Default 1, lower is preferred.
    pub priority: u32,
    /// Seconds between OPTIONS health probes; 0 (the default) disables probing.
    pub probe_interval_s: u64,
    /// Consecutive failed probes (no answer within the interval, 408 or 503) that mark the
    /// trunk down; one answered probe marks it up again. Default 1.
    pub probe_failures: u32,
    /// Parameters added to the Request-URI of requests sent to this trunk, e.g.
    /// `user=phone` (S-36); a parameter already present is replaced, never duplicated.
    pub request_uri_params: Vec<String>,
    /// Remove `100rel` from Supported toward this trunk (S-38). Default false.
    pub disable_100rel: bool,
    /// Request-URI form toward this trunk (S-37): keep (default), sip
    /// (`sip:<number>@<trunk host>;user=phone`) or tel (`tel:<number>`).
    pub request_uri_form: UriForm,
    /// Header manipulation on requests sent to this trunk, applied in order.
    pub headers: Vec<HeaderRule>,
    /// How the trunk's TLS certificate is checked (transport tls only; when absent, against
    /// the system's CA store and the trunk's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TrunkTls>,
}

/// The TLS client side toward a trunk. The SBC always verifies the trunk's certificate
/// (there is no switch to turn that off: a lab trunk with a self-signed certificate gets that
/// certificate as its `ca`). When the trunk asks for a client certificate (mutual TLS, e.g.
/// a carrier or Teams Direct Routing), the SBC presents the certificate of the TLS listener
/// it sends from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrunkTls {
    /// PEM file of the CA certificates the trunk's certificate must chain to; default the
    /// system's store (Debian `ca-certificates`; `SSL_CERT_FILE` / `SSL_CERT_DIR` override).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The name the certificate must be valid for, also sent as SNI; default the trunk's host
    /// (an IP address is checked against the certificate's IP addresses, with no SNI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// RFC 3263 resolution of a trunk host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkDns {
    /// A/AAAA records of the host, at the trunk's port and transport.
    A,
    /// SRV records for the trunk's transport (`_sip._udp`, `_sip._tcp`, `_sips._tcp`),
    /// then A/AAAA of the host if there are none.
    Srv,
    /// NAPTR records choosing the transport, then SRV, then A/AAAA.
    Naptr,
}

impl TrunkDns {
    pub const ALL: [TrunkDns; 3] = [TrunkDns::A, TrunkDns::Srv, TrunkDns::Naptr];

    pub fn as_str(&self) -> &'static str {
        match self {
            TrunkDns::A => "a",
            TrunkDns::Srv => "srv",
            TrunkDns::Naptr => "naptr",
        }
    }
}

/// Request-URI form toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UriForm {
    Keep,
    Sip,
    Tel,
}

impl UriForm {
    pub const ALL: [UriForm; 3] = [UriForm::Keep, UriForm::Sip, UriForm::Tel];
    pub fn as_str(&self) -> &'static str {
        match self {
            UriForm::Keep => "keep",
            UriForm::Sip => "sip",
            UriForm::Tel => "tel",
        }
    }
}

/// A header manipulation rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeaderRule {
    pub action: HeaderAction,
    /// Header name (case-insensitive).
    pub name: String,
    /// Fixed value for add/replace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Take the value from this header of the request instead (add/replace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_header: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderAction {
    Add,
    Remove,
    Replace,
}

impl HeaderAction {
    pub const ALL: [HeaderAction; 3] = [
        HeaderAction::Add,
        HeaderAction::Remove,
        HeaderAction::Replace,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderAction::Add => "add",
            HeaderAction::Remove => "remove",
            HeaderAction::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    Udp,
    Tcp,
    Tls,
}

impl TrunkTransport {
    pub const ALL: [TrunkTransport; 3] = [
        TrunkTransport::Udp,
        TrunkTransport::Tcp,
        TrunkTransport::Tls,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TrunkTransport::Udp => "udp",
            TrunkTransport::Tcp => "tcp",
            TrunkTransport::Tls => "tls",
        }
    }

    /// The listener protocol this transport sends from.
    pub fn proto(&self) -> Proto {
        match self {
            TrunkTransport::Udp => Proto::Udp,
            TrunkTransport::Tcp => Proto::Tcp,
            TrunkTransport::Tls => Proto::Tls,
        }
    }

    pub fn default_port(&self) -> u16 {
        self.proto().default_port()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub name: String,
    /// All present criteria must match; an empty match matches every request.
    #[serde(rename = "match")]
    pub r#match: RouteMatch,
    /// Trunk group to send to.
    pub group: String,
    /// Default priority.
    pub selection: Selection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteMatch {
    /// Request-URI user part starts with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_prefix: Option<String>,
    /// Request-URI host equals this (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Request arrived on this interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    RoundRobin,
    Weighted,
    Priority,
}

impl Selection {
    pub const ALL: [Selection; 3] = [
        Selection::RoundRobin,
        Selection::Weighted,
        Selection::Priority,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Selection::RoundRobin => "round_robin",
            Selection::Weighted => "weighted",
            Selection::Priority => "priority",
        }
    }
}
