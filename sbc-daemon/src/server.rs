//! The daemon's IO layer: binds listeners, runs the receive loops, drives the sans-IO proxy
//! core with received messages and time, and carries out its transmits (UDP sends, stream
//! connections, name resolution).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_config::Config;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::admin;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::transport::flows::{FlowTable, Outgoing};
use crate::transport::{
    tcp, tls, udp, ws, Destination, ListenerId, Source, Transmit, TransmitToken, Transport,
};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot bind {proto} listener {name} on {addr}: {source}")]
    Bind {
        proto: &'static str,
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener {name}: {source}")]
    Tls {
        name: String,
        source: crate::transport::tls::TlsSetupError,
    },
    #[error("trunk {name}: TLS: {source}")]
    TrunkTls {
        name: String,
        source: crate::transport::tls::TlsSetupError,
    },
    #[error("cannot bind the metrics listener on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// IO settings from the configuration.
#[derive(Debug, Clone)]
pub struct IoSettings {
    pub max_message_size: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle time before OS keepalive probes on stream connections (None: off).
    pub tcp_keepalive: Option<Duration>,
}

/// State shared by every IO task.
pub struct Shared {
    proxy: Mutex<Proxy>,
    wake: Notify,
    udp: Vec<Option<Arc<UdpSocket>>>,
    pub flows: FlowTable,
    pub metrics: Arc<Metrics>,
    pub io: IoSettings,
    interfaces: Vec<String>,
    local_ips: Vec<std::net::IpAddr>,
    media: Option<crate::media_relay::MediaRelay>,
    /// TLS client settings of the trunks with transport tls (or a TLS listener to send from,
    /// for NAPTR/SRV results that choose TLS), by trunk name.
    tls_trunks: HashMap<String, tls::TrunkClient>,
    /// Which trunk an address was last connected to over TLS: a reconnection for an
    /// in-dialog request (which names no trunk) takes that trunk's settings.
    tls_peers: Mutex<HashMap<SocketAddr, String>>,
}

impl Shared {
    fn proxy(&self) -> MutexGuard<'_, Proxy> {
        // The proxy core never panics on input; a poisoned lock would only follow a bug, and
        // carrying on with the state is better than stopping all signalling.
        self.proxy.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn interface_of(&self, l: ListenerId) -> String {
        self.interfaces.get(l.0).cloned().unwrap_or_default()
    }

    /// Feeds one received message to the proxy and sends what it produces.
    pub fn deliver(self: &Arc<Self>, raw: Bytes, src: Source) {
        let now = Instant::now();
        let (out, wake) = {
            let mut p = self.proxy();
            let before = p.next_deadline();
            p.handle_message(now, raw, src);
            let out = drain(&mut p);
            (out, deadline_moved_earlier(before, p.next_deadline()))
        };
        self.run_media();
        self.dispatch(out);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Reports that a message carrying `token` could not be sent.
    pub fn transport_error(self: &Arc<Self>, token: TransmitToken) {
        let now = Instant::now();
        let (out, wake) = {
            let mut p = self.proxy();
            let before = p.next_deadline();
            p.handle_transport_error(now, token);
            let out = drain(&mut p);
            (out, deadline_moved_earlier(before, p.next_deadline()))
        };
        self.run_media();
        self.dispatch(out);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Carries out the proxy's datapath commands (relay pairs created before the answer
    /// that triggered them is forwarded).
    fn run_media(&self) {
        let cmds: Vec<_> = {
            let mut p = self.proxy();
            std::iter::from_fn(|| p.poll_media()).collect()
        };
        if cmds.is_empty() {
            return;
        }
        match &self.media {
            Some(m) => {
                for c in cmds {
                    m.execute(c);
                }
            }
            None => debug!("media commands dropped: no datapath"),
        }
        let usage = self.proxy().media_port_usage();
        for u in usage {
            self.metrics
                .media_ports(&u.interface, u.used as u64, u.free as u64);
        }
    }

    /// Tells the proxy a call's relay has been idle; it may end the call.
    fn media_idle(self: &Arc<Self>, call_id: &str, idle: Duration) {
        let now = Instant::now();
        let out = {
            let mut p = self.proxy();
            if !p.handle_media_idle(now, call_id, idle) {
                return;
            }
            drain(&mut p)
        };
        self.run_media();
        self.dispatch(out);
        self.wake.notify_one();
    }

    /// A stream connection closed.
    pub fn flow_closed(self: &Arc<Self>, conn: crate::transport::ConnId) {
        self.flows.remove(conn);
        self.proxy().handle_flow_closed(conn);
    }

    fn dispatch(self: &Arc<Self>, out: Vec<Transmit>) {
        for t in out {
            match t.destination.clone() {
                Destination::Addr(addr) => self.send_to(t, addr),
                Destination::Name(host, port) => {
                    let shared = self.clone();
                    tokio::spawn(async move {
                        match tokio::net::lookup_host((host.as_str(), port)).await {
                            Ok(mut addrs) => match addrs.next() {
                                Some(addr) => shared.send_to(t, addr),
                                None => shared.send_failed(&t),
                            },
                            Err(e) => {
                                warn!(host, error = %e, "cannot resolve next hop");
                                shared.send_failed(&t);
                            }
                        }
                    });
                }
            }
        }
    }

    fn send_failed(self: &Arc<Self>, t: &Transmit) {
        if let Some(tok) = t.token {
            self.transport_error(tok);
        }
    }

    /// No open connection to `addr` for `t`: opens a TLS connection toward the trunk `t` goes
    /// to (or the trunk last connected at that address), with that trunk's TLS settings.
    /// Anything else (WebSocket, a TLS peer that is no trunk) fails: the SBC does not open
    /// those connections.
    fn open_tls(self: &Arc<Self>, t: Transmit, addr: SocketAddr, out: Outgoing) {
        let trunk = match (t.transport, &t.trunk) {
            (Transport::Tls, Some(name)) => Some(name.clone()),
            (Transport::Tls, None) => self.tls_peer_trunk(addr),
            _ => None,
        };
        let Some((trunk, client)) =
            trunk.and_then(|n| self.tls_trunks.get(&n).cloned().map(|c| (n, c)))
        else {
            debug!(transport = %t.transport, %addr, trunk = ?t.trunk, "no open connection, and none to open (the SBC opens TLS connections toward trunks only)");
            self.send_failed(&t);
            return;
        };
        let (handle, rx) = self.flows.register_tls_to_trunk(t.listener, addr, &trunk);
        let _ = handle.tx.send(out);
        tls::connect(
            self.clone(),
            handle,
            rx,
            self.listener_ip(t.listener),
            trunk,
            client,
        );
    }

    /// A TLS connection to `addr` opened toward `trunk` completed its handshake: a later
    /// reconnection there for a request that names no trunk takes that trunk's settings.
    pub(crate) fn tls_connected(&self, addr: SocketAddr, trunk: &str) {
        self.tls_peers_lock().insert(addr, trunk.to_string());
    }

    /// The address of `listener`, which outbound connections from it are bound to
    /// (unspecified when unknown: the kernel picks).
    fn listener_ip(&self, listener: ListenerId) -> std::net::IpAddr {
        self.local_ips
            .get(listener.0)
            .copied()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    fn tls_peers_lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, String>> {
        // Plain map updates only: a poisoned lock leaves a consistent map.
        self.tls_peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tls_peer_trunk(&self, addr: SocketAddr) -> Option<String> {
        self.tls_peers_lock().get(&addr).cloned()
    }

    fn send_to(self: &Arc<Self>, t: Transmit, addr: SocketAddr) {
        match t.transport {
            Transport::Udp => {
                let Some(sock) = self.udp.get(t.listener.0).cloned().flatten() else {
                    self.send_failed(&t);
                    return;
                };
                match sock.try_send_to(&t.payload, addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let shared = self.clone();
                        tokio::spawn(async move {
                            if sock.send_to(&t.payload, addr).await.is_err() {
                                shared.send_failed(&t);
                            }
                        });
                    }
                    Err(e) => {
                        debug!(%addr, error = %e, "UDP send failed");
                        self.send_failed(&t);
                    }
                }
            }
            Transport::Tcp => {
                // The connection the message belongs to, an open one to the peer, or a new one.
                let flow = t.conn.and_then(|c| self.flows.get(c));
                if flow.is_none() && t.flow_bound {
                    // A registered client's connection is gone: it cannot be reopened (S-02).
                    self.send_failed(&t);
                    return;
                }
                let flow = flow.or_else(|| self.flows.find_peer(Transport::Tcp, addr));
                let out = Outgoing {
                    payload: t.payload.clone(),
                    token: t.token,
                };
                match flow {
                    Some(f) => {
                        if let Err(e) = f.tx.send(out) {
                            self.flows.remove(f.id);
                            if let Some(tok) = e.0.token {
                                self.transport_error(tok);
                            }
                        }
                    }
                    None => {
                        let (handle, rx) = self.flows.register(t.listener, Transport::Tcp, addr);
                        let _ = handle.tx.send(out);
                        tcp::connect(self.clone(), handle, rx, self.listener_ip(t.listener));
                    }
                }
            }
            Transport::Tls | Transport::Ws | Transport::Wss => {
                // WebSocket connections are only ever opened by the peer (browsers); TLS ones
                // the SBC opens itself toward trunks.
                let flow = t.conn.and_then(|c| self.flows.get(c));
                if flow.is_none() && t.flow_bound {
                    // A registered client's connection is gone: it cannot be reopened (S-02).
                    self.send_failed(&t);
                    return;
                }
                // An open connection to the peer serves, unless the SBC opened it toward
                // another trunk: its certificate was checked for that trunk's name.
                let flow = flow.or_else(|| {
                    self.flows.find_peer(t.transport, addr).filter(|f| {
                        match (&f.tls_trunk, &t.trunk) {
                            (Some(opened_for), Some(wanted)) => **opened_for == **wanted,
                            _ => true,
                        }
                    })
                });
                let out = Outgoing {
                    payload: t.payload.clone(),
                    token: t.token,
                };
                match flow {
                    Some(f) => {
                        if let Err(e) = f.tx.send(out) {
                            self.flows.remove(f.id);
                            if let Some(tok) = e.0.token {
                                self.transport_error(tok);
                            }
                        }
                    }
                    None => self.open_tls(t, addr, out),
                }
            }
        }
    }

    /// Runs the proxy's timers forever.
    async fn timer_loop(self: Arc<Self>) {
        loop {
            let deadline = self.proxy().next_deadline();
            match deadline {
                Some(d) => {
                    let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(d));
                    tokio::select! {
                        _ = sleep => {}
                        _ = self.wake.notified() => continue,
                    }
                }
                None => {
                    self.wake.notified().await;
                    continue;
                }
            }
            let now = Instant::now();
            let out = {
                let mut p = self.proxy();
                p.handle_timeout(now);
                drain(&mut p)
            };
            self.run_media();
            self.dispatch(out);
        }
    }
}

fn drain(p: &mut Proxy) -> Vec<Transmit> {
    let mut out = Vec::new();
    while let Some(t) = p.poll_transmit() {
        out.push(t);
    }
    out
}

fn deadline_moved_earlier(before: Option<Instant>, after: Option<Instant>) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(a)) => a < b,
    }
}

/// Binds every listener and the metrics endpoint, then runs until `shutdown` completes.
pub async fn run(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let interfaces: Vec<String> = cfg.interfaces.iter().map(|i| i.name.clone()).collect();
    let metrics = Arc::new(Metrics::new(&interfaces));
    let mut proxy = Proxy::new(&cfg, metrics.clone());
    proxy.start(Instant::now());
    let listeners = proxy.listeners().to_vec();

    let mut udp_sockets = Vec::new();
    let mut tcp_listeners = Vec::new();
    let mut secure_listeners = Vec::new();
    // TLS settings by listener, in the order ListenerInfo::from_config numbers listeners.
    let tls_settings: Vec<Option<portcullis_config::TlsSettings>> = cfg
        .interfaces
        .iter()
        .flat_map(|i| i.listeners.iter().map(|l| l.tls.clone()))
        .collect();
    // Certificates of the TLS/WSS listeners, by listener id; re-read on SIGHUP.
    let mut cert_sources: Vec<Option<Arc<tls::CertSource>>> = Vec::new();
    for l in &listeners {
        let source = match tls_settings.get(l.id.0).and_then(Option::as_ref) {
            Some(settings) => {
                Some(
                    tls::CertSource::load(settings).map_err(|source| StartError::Tls {
                        name: l.name.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        cert_sources.push(source);
    }
    for l in &listeners {
        match l.transport {
            Transport::Udp => {
                let s = udp::bind(l.local).map_err(|source| StartError::Bind {
                    proto: "udp",
                    name: l.name.clone(),
                    addr: l.local,
                    source,
                })?;
                udp_sockets.push(Some(Arc::new(s)));
            }
            Transport::Tcp => {
                let s = tcp::bind(l.local).map_err(|source| StartError::Bind {
                    proto: "tcp",
                    name: l.name.clone(),
                    addr: l.local,
                    source,
                })?;
                tcp_listeners.push((l.id, s));
                udp_sockets.push(None);
            }
            Transport::Tls | Transport::Ws | Transport::Wss => {
                let acceptor = match (
                    tls_settings.get(l.id.0).and_then(Option::as_ref),
                    cert_sources.get(l.id.0).cloned().flatten(),
                ) {
                    (Some(settings), Some(source)) => Some(
                        tls::acceptor(settings, source).map_err(|source| StartError::Tls {
                            name: l.name.clone(),
                            source,
                        })?,
                    ),
                    _ => None,
                };
                let s = tcp::bind(l.local).map_err(|source| StartError::Bind {
                    proto: l.transport.param(),
                    name: l.name.clone(),
                    addr: l.local,
                    source,
                })?;
                secure_listeners.push((l.id, l.transport, s, acceptor));
                udp_sockets.push(None);
            }
        }
        info!(listener = %l.name, interface = %l.interface, transport = %l.transport, address = %l.local, advertised = %l.hostport(), "listening");
    }

    let tls_trunks = tls_trunk_clients(&cfg, &cert_sources)?;

    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .map_err(|source| StartError::Metrics {
            addr: cfg.metrics.listen,
            source,
        })?;
    info!(address = %cfg.metrics.listen, "metrics and health endpoint listening");

    let shared = Arc::new(Shared {
        proxy: Mutex::new(proxy),
        wake: Notify::new(),
        udp: udp_sockets.clone(),
        flows: FlowTable::default(),
        metrics: metrics.clone(),
        io: IoSettings {
            max_message_size: cfg.sip.max_message_size,
            idle_timeout: Duration::from_secs(cfg.sip.tcp_idle_timeout_s.max(1)),
            connect_timeout: Duration::from_millis(cfg.sip.tcp_connect_timeout_ms.max(1)),
            tcp_keepalive: (cfg.sip.tcp_keepalive_s > 0)
                .then(|| Duration::from_secs(cfg.sip.tcp_keepalive_s)),
        },
        interfaces: listeners.iter().map(|l| l.interface.clone()).collect(),
        local_ips: listeners.iter().map(|l| l.local.ip()).collect(),
        media: crate::media_relay::MediaRelay::start(&cfg, &metrics),
        tls_trunks,
        tls_peers: Mutex::new(HashMap::new()),
    });

    let mut tasks = Vec::new();
    for (i, s) in udp_sockets.into_iter().enumerate() {
        if let Some(sock) = s {
            tasks.push(tokio::spawn(udp::receive_loop(
                shared.clone(),
                ListenerId(i),
                sock,
            )));
        }
    }
    for (id, l) in tcp_listeners {
        tasks.push(tokio::spawn(tcp::accept_loop(shared.clone(), id, l)));
    }
    for (id, transport, l, acceptor) in secure_listeners {
        match (transport, acceptor) {
            (Transport::Tls, Some(a)) => {
                tasks.push(tokio::spawn(tls::accept_loop(shared.clone(), id, l, a)));
            }
            (Transport::Ws, _) => {
                tasks.push(tokio::spawn(ws::accept_loop(
                    shared.clone(),
                    id,
                    l,
                    Transport::Ws,
                    None,
                )));
            }
            (Transport::Wss, Some(a)) => {
                tasks.push(tokio::spawn(ws::accept_loop(
                    shared.clone(),
                    id,
                    l,
                    Transport::Wss,
                    Some(a),
                )));
            }
            (t, _) => {
                warn!(transport = %t, "listener without the TLS settings it needs; not started")
            }
        }
    }
    tasks.push(tokio::spawn(shared.clone().timer_loop()));
    if shared.media.is_some() {
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // Per call: packets seen at the last change and when that was.
            let mut seen: std::collections::HashMap<String, (u64, Instant)> = Default::default();
            loop {
                tick.tick().await;
                let Some(m) = &s.media else { continue };
                let (p, b) = m.relayed_totals();
                s.metrics.media_relayed(p, b);
                let (xdp, user) = m.pairs_by_datapath();
                s.metrics.media_streams(xdp, user);
                s.metrics.media_secure(m.secure_totals());
                for (outcome, n) in m.xdp_outcomes().unwrap_or_default() {
                    s.metrics.media_xdp(outcome, n);
                }
                let now = Instant::now();
                let activity = m.activity();
                seen.retain(|call, _| activity.iter().any(|(c, _)| c == call));
                for (call, total) in activity {
                    let entry = seen.entry(call.clone()).or_insert((total, now));
                    if entry.0 != total {
                        *entry = (total, now);
                        continue;
                    }
                    let idle = now.duration_since(entry.1);
                    s.media_idle(&call, idle);
                }
            }
        }));
    }
    tasks.extend(start_dns(&cfg, &shared));
    let metrics_for_tls = metrics.clone();
    tasks.push(tokio::spawn(admin::serve(metrics_listener, metrics)));
    let reloadable: Vec<(String, Arc<tls::CertSource>)> = listeners
        .iter()
        .filter_map(|l| {
            let s = cert_sources.get(l.id.0).cloned().flatten()?;
            Some((l.name.clone(), s))
        })
        .collect();
    for (listener, source) in &reloadable {
        publish_expiry(&metrics_for_tls, listener, source);
    }
    if !reloadable.is_empty() {
        tasks.push(tokio::spawn(reload_certificates_on_sighup(
            reloadable,
            metrics_for_tls,
        )));
    }

    shutdown.await;
    info!("shutting down");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Re-reads the TLS listeners' certificate and key files on every SIGHUP (`systemctl reload
/// sbcd`): new connections, accepted or opened toward trunks, use the renewed certificate,
/// open ones keep theirs. A file that cannot be used leaves the previous certificate in place.
/// Nothing else of the configuration is reloaded.
async fn reload_certificates_on_sighup(
    sources: Vec<(String, Arc<tls::CertSource>)>,
    metrics: Arc<Metrics>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "no SIGHUP handler: TLS certificates are not reloadable");
            return;
        }
    };
    while hup.recv().await.is_some() {
        for (listener, source) in &sources {
            match source.reload() {
                Ok(()) => {
                    info!(%listener, certificate = %source.path().display(), not_after = ?source.not_after(), "TLS certificate reloaded");
                    publish_expiry(&metrics, listener, source);
                }
                Err(e) => {
                    warn!(%listener, error = %e, "TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    }
}

fn publish_expiry(metrics: &Metrics, listener: &str, source: &tls::CertSource) {
    match source.not_after() {
        Some(t) => metrics.tls_certificate_expiry(listener, t),
        None => warn!(%listener, "cannot read the expiry of the TLS certificate"),
    }
}

/// The TLS client of every trunk that can be reached over TLS: transport tls, or a name
/// whose NAPTR/SRV records may choose TLS, on an interface with a TLS listener. The client
/// certificate is that of the listener the trunk is sent from (its `listener`, else the
/// interface's first TLS listener, as the proxy picks it).
fn tls_trunk_clients(
    cfg: &Config,
    cert_sources: &[Option<Arc<tls::CertSource>>],
) -> Result<HashMap<String, tls::TrunkClient>, StartError> {
    let mut out = HashMap::new();
    let mut system = tls::SystemRoots::default();
    for t in &cfg.trunks {
        let pinned = (t.transport == portcullis_config::TrunkTransport::Tls)
            .then_some(t.listener.as_deref())
            .flatten();
        // Listener ids number the listeners of all interfaces in config order.
        let Some(id) = cfg
            .interfaces
            .iter()
            .flat_map(|i| i.listeners.iter().map(move |l| (i, l)))
            .position(|(i, l)| {
                i.name == t.interface
                    && l.proto == portcullis_config::Proto::Tls
                    && pinned.is_none_or(|p| p == l.name)
            })
        else {
            continue;
        };
        let explicit = t.transport == portcullis_config::TrunkTransport::Tls;
        if !explicit
            && t.host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
        {
            continue; // an address with transport udp/tcp: never TLS
        }
        match tls::trunk_client(t, cert_sources.get(id).cloned().flatten(), &mut system) {
            Ok(client) => {
                out.insert(t.name.clone(), client);
            }
            Err(source) if explicit => {
                return Err(StartError::TrunkTls {
                    name: t.name.clone(),
                    source,
                })
            }
            Err(e) => {
                warn!(trunk = %t.name, error = %e, "no TLS client for this trunk: TLS records its name resolves to will fail")
            }
        }
    }
    Ok(out)
}

/// One task per trunk with a host name, keeping its RFC 3263 resolution in the proxy and in
/// `sbc_trunk_address`. A failed lookup keeps the previous addresses (and the IO layer's
/// send-time A/AAAA lookup covers a trunk never resolved yet).
fn start_dns(cfg: &Config, shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let queries = shared.proxy().dns_queries();
    if queries.is_empty() {
        return Vec::new();
    }
    let lookup = match crate::dns::hickory::HickoryLookup::new(&cfg.dns) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            warn!(error = %e, "no DNS resolver: trunk names are resolved at send time (A/AAAA only)");
            return Vec::new();
        }
    };
    let policy = crate::dns::refresh::RefreshPolicy::from_settings(&cfg.dns);
    queries
        .into_iter()
        .map(|(name, query)| {
            let s = shared.clone();
            let host = query.host.clone();
            tokio::spawn(crate::dns::refresh::run(
                lookup.clone(),
                query,
                policy,
                move |result| match result {
                    Ok(res) => {
                        s.metrics.dns_lookup(&name, true);
                        let addrs: Vec<(SocketAddr, String)> = res
                            .addresses()
                            .into_iter()
                            .map(|(a, t)| (a, t.param().to_string()))
                            .collect();
                        s.metrics.trunk_addresses(&name, &addrs);
                        s.proxy().set_trunk_resolution(&name, res);
                    }
                    Err(e) => {
                        s.metrics.dns_lookup(&name, false);
                        warn!(trunk = %name, host = %host, error = %e, "trunk name resolution failed; keeping the previous addresses");
                    }
                },
            ))
        })
        .collect()
}
