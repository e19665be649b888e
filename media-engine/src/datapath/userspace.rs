//! Userspace relay: binds the relay sockets and relays between legs with the
//! [`FlowTable`] rules, using epoll + recvmmsg/sendmmsg on a fixed number of
//! worker threads (flow pairs are spread over them; a pair's two sockets live
//! on the same worker, whose table owns both legs).
//!
//! Each worker holds its state behind one mutex, taken once per wake-up (for a
//! whole batch) and by control calls; so when [`UserspaceRelay::remove_pair`]
//! returns, the sockets are closed and not one more packet is forwarded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::sys::{self, Batch, Epoll, EventFd};
use super::table::{ControlKind, FlowPairSpec, FlowTable, PairId, PairInfo, TableEvent, Verdict};
use super::transform::{LegTransform, TransformInbound};
use super::uring;
use super::DatapathError;

/// A STUN or DTLS datagram that arrived on a relay socket (RFC 7983 first
/// byte); not relayed, handed to the ICE/DTLS code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    /// Relay socket it arrived on.
    pub local: SocketAddr,
    /// Its source.
    pub source: SocketAddr,
    pub kind: ControlKind,
    pub data: Vec<u8>,
}

/// Receives STUN/DTLS packets. Called on a worker thread after the batch (no
/// lock held); keep it short (e.g. push to a bounded channel).
pub type ControlCallback = Arc<dyn Fn(ControlPacket) + Send + Sync>;

/// Called by workers, with their table locked, after a batch or periodic tick
/// (every [`TICK`]), with the events of that batch (possibly none). The XDP
/// datapath installs latched flows from here.
pub(crate) type EventHook = Arc<dyn Fn(&FlowTable, &[TableEvent]) + Send + Sync>;

/// Learn windows are closed and hooks run at least this often.
pub const TICK: Duration = Duration::from_millis(50);

/// Options of the userspace relay.
#[derive(Clone, Debug)]
pub struct UserspaceOptions {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Datagrams per recvmmsg/sendmmsg.
    pub batch: usize,
    /// SO_RCVBUF/SO_SNDBUF of each relay socket, bytes.
    pub socket_buffer: i32,
    /// How workers do their socket I/O.
    pub io: RelayIo,
    /// io_uring only: after the first datagram of a wake-up, wait up to this long for more
    /// (up to `batch`) before handling them, so that one system call serves many (adds at
    /// most this much latency). Zero: handle what is there at once. Needs Linux 6.12.
    pub coalesce: Duration,
    /// io_uring only: once a leg's party is settled (a plain leg latched, a secure leg's
    /// transform sending to one address), its packets arrive on, and the relay sends to it
    /// from, a second socket on the relay address connected to the party: the kernel skips
    /// the route lookups of every send and receive. Packets from anyone else still reach
    /// the unconnected socket (and are counted, rejected, or authenticated there as
    /// before). Off under XDP, where latched flows leave userspace.
    pub connect_latched: bool,
}

/// Default [`UserspaceOptions::coalesce`]: far below what RTP jitter buffers absorb (a
/// packet every 20 ms), enough to serve tens of datagrams per system call under load.
pub const DEFAULT_COALESCE: Duration = Duration::from_micros(100);

/// Socket I/O of the userspace relay workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelayIo {
    /// io_uring when the kernel allows it (multishot receive, provided buffers: Linux
    /// 6.1+, not disabled by `kernel.io_uring_disabled` or seccomp), else epoll.
    #[default]
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// epoll + recvmmsg/sendmmsg.
    Epoll,
}

impl RelayIo {
    /// Name for logs and config (`auto`, `io_uring`, `epoll`).
    pub fn as_str(self) -> &'static str {
        match self {
            RelayIo::Auto => "auto",
            RelayIo::IoUring => "io_uring",
            RelayIo::Epoll => "epoll",
        }
    }
}

impl std::str::FromStr for RelayIo {
    type Err = String;

    /// The names of [`RelayIo::as_str`].
    fn from_str(s: &str) -> Result<Self, String> {
        [RelayIo::Auto, RelayIo::IoUring, RelayIo::Epoll]
            .into_iter()
            .find(|io| io.as_str() == s)
            .ok_or_else(|| format!("expected auto, io_uring or epoll, got '{s}'"))
    }
}

impl Default for UserspaceOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            batch: 32,
            socket_buffer: 256 * 1024,
            io: RelayIo::Auto,
            coalesce: DEFAULT_COALESCE,
            connect_latched: true,
        }
    }
}

/// Global counters of the userspace relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserspaceStats {
    /// Datagrams read from relay sockets.
    pub received: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Forward verdicts that the kernel did not accept (buffer full, error).
    pub send_failed: u64,
    /// Datagrams on a socket whose flow was gone (race with removal).
    pub no_flow: u64,
    /// STUN/DTLS datagrams handed to the callback.
    pub control: u64,
    /// recvmmsg/sendmmsg system calls.
    pub syscalls: u64,
    /// Datagrams sent from a latched leg's connected socket ([`UserspaceOptions::connect_latched`]).
    pub connected_sends: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    send_failed: AtomicU64,
    no_flow: AtomicU64,
    control: AtomicU64,
    syscalls: AtomicU64,
    connected_sends: AtomicU64,
}

pub(crate) struct Sock {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    /// The leg has a transform (looked up per datagram only then).
    pub secure: bool,
    /// io_uring worker, a relay socket whose leg is latched: a second socket on the same
    /// address connected to the party (see [`sys::connected_udp`]), which the party's
    /// packets reach and the relay sends to it from.
    pub connected: Option<Connected>,
}

/// A relay socket's connected twin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Connected {
    pub token: u64,
    pub fd: i32,
    pub peer: SocketAddr,
}

/// Hash maps of the per-packet path: foldhash (fast, seeded per map) instead of SipHash.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type TransformMap = FastMap<SocketAddr, Secure>;

/// A secure leg's transform, and where it sent to when the flow table last heard.
pub(crate) struct Secure {
    t: Box<dyn LegTransform>,
    dest: Option<SocketAddr>,
}

impl Secure {
    /// Tells the table where the transform sends now, when that changed (rarely: the table
    /// is not touched per packet); marks the socket for a new connected twin then.
    fn sync_destination(
        &mut self,
        local: SocketAddr,
        table: &mut FlowTable,
        connect: Option<&mut Vec<SocketAddr>>,
    ) {
        let d = self.t.destination();
        if d != self.dest {
            self.dest = d;
            if table.set_transform_destination(local, d) {
                if let Some(dirty) = connect {
                    dirty.push(local);
                }
            }
        }
    }
}

/// What a control call asks of an io_uring worker (which alone touches its ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingOp {
    /// Start receiving on the socket of this token.
    Arm(u64),
    /// Stop receiving on it; the socket (in `closing`) is closed when the ring lets go.
    Cancel(u64),
}

#[derive(Default)]
pub(crate) struct WorkerState {
    pub table: FlowTable,
    pub socks: FastMap<u64, Sock>,
    pub by_local: FastMap<SocketAddr, u64>,
    /// Transforms of secure legs, by local socket.
    pub transforms: TransformMap,
    /// io_uring worker: requests for the worker thread.
    pub ring_ops: Vec<RingOp>,
    /// io_uring worker: sockets of removed pairs until their receive is cancelled.
    pub closing: FastMap<u64, Sock>,
    /// Latched legs get a connected twin socket ([`UserspaceOptions::connect_latched`] on
    /// an io_uring worker).
    pub connect_latched: bool,
    /// Relay sockets whose twin may have to change (latching events, updates).
    pub connect_dirty: Vec<SocketAddr>,
}

impl WorkerState {
    /// The relay socket bound to `local` and its token.
    pub(crate) fn sock_at(&self, local: SocketAddr) -> Option<(u64, &Sock)> {
        let token = *self.by_local.get(&local)?;
        self.socks.get(&token).map(|s| (token, s))
    }

    /// io_uring worker: takes the socket of `token` out of service. Its receive is
    /// cancelled (a [`RingOp::Cancel`] for the worker thread) and it is closed once the
    /// ring has let go of it (`closing`). Returns its connected twin, if it had one, for
    /// the caller to retire as well.
    pub(crate) fn retire(&mut self, token: u64) -> Option<Connected> {
        let s = self.socks.remove(&token)?;
        let twin = s.connected;
        self.ring_ops.push(RingOp::Cancel(token));
        self.closing.insert(token, s);
        twin
    }
}

pub(crate) struct Worker {
    state: Mutex<WorkerState>,
    /// Signalled by an io_uring worker when sockets in `closing` are closed.
    closed: Condvar,
    pub epoll: Epoll,
    pub wake: EventFd,
    /// This worker runs io_uring (else epoll); set before the worker reports ready.
    uring: AtomicBool,
}

impl Worker {
    pub(crate) fn lock(&self) -> MutexGuard<'_, WorkerState> {
        // A panic on a worker while holding the lock leaves consistent data
        // (the table is updated in place); keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn notify_closed(&self) {
        self.closed.notify_all();
    }
}

const WAKE_TOKEN: u64 = u64::MAX;

/// The userspace relay. Dropping it stops the workers and closes every socket.
pub struct UserspaceRelay {
    workers: Vec<Arc<Worker>>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next_pair: AtomicU64,
    next_token: AtomicU64,
    counters: Arc<Counters>,
    opts: UserspaceOptions,
    uring_workers: usize,
}

impl std::fmt::Debug for UserspaceRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceRelay")
            .field("workers", &self.workers.len())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl UserspaceRelay {
    /// Starts the workers. `control` receives STUN/DTLS packets (dropped and
    /// counted if `None`).
    pub fn start(
        opts: UserspaceOptions,
        control: Option<ControlCallback>,
    ) -> Result<Self, DatapathError> {
        Self::start_with_hook(opts, control, None)
    }

    pub(crate) fn start_with_hook(
        opts: UserspaceOptions,
        control: Option<ControlCallback>,
        hook: Option<EventHook>,
    ) -> Result<Self, DatapathError> {
        let opts = UserspaceOptions {
            workers: opts.workers.max(1),
            batch: opts.batch.clamp(1, 1024),
            ..opts
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        let mut uring_workers = 0;
        for n in 0..opts.workers {
            let w = Arc::new(Worker {
                state: Mutex::new(WorkerState::default()),
                closed: Condvar::new(),
                epoll: Epoll::new().map_err(DatapathError::Io)?,
                wake: EventFd::new().map_err(DatapathError::Io)?,
                uring: AtomicBool::new(false),
            });
            w.epoll
                .add(w.wake.raw(), WAKE_TOKEN)
                .map_err(DatapathError::Io)?;
            let (w2, stop2, c2, cb, hk) = (
                w.clone(),
                stop.clone(),
                counters.clone(),
                control.clone(),
                hook.clone(),
            );
            let o = opts.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let t = std::thread::Builder::new()
                .name(format!("relay-{n}"))
                .spawn(move || {
                    // The ring is made on the thread that drives it (single issuer).
                    let ring = match o.io {
                        RelayIo::Epoll => None,
                        RelayIo::Auto | RelayIo::IoUring => match uring::Ring::new(&o) {
                            Ok(r) => Some(r),
                            Err(e) if o.io == RelayIo::Auto => {
                                warn!(error = %e, "io_uring unavailable; relay worker uses epoll");
                                None
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(std::io::Error::new(
                                    e.kind(),
                                    format!("io_uring relay I/O unavailable: {e}"),
                                )));
                                return;
                            }
                        },
                    };
                    w2.uring.store(ring.is_some(), Ordering::SeqCst);
                    w2.lock().connect_latched = ring.is_some() && o.connect_latched;
                    let _ = ready_tx.send(Ok(ring.is_some()));
                    match ring {
                        Some(r) => uring::run(r, &w2, &stop2, &c2, cb.as_ref(), hk.as_ref()),
                        None => epoll_loop(&w2, &stop2, &c2, cb.as_ref(), hk.as_ref(), o.batch),
                    }
                })
                .map_err(DatapathError::Io)?;
            let ready = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("relay worker exited during start")));
            workers.push(w);
            threads.push(t);
            match ready {
                Ok(u) => uring_workers += usize::from(u),
                Err(e) => {
                    // Stop the workers already started.
                    stop.store(true, Ordering::SeqCst);
                    for w in &workers {
                        w.wake.notify();
                    }
                    for t in threads.drain(..) {
                        let _ = t.join();
                    }
                    return Err(DatapathError::Io(e));
                }
            }
        }
        info!(
            workers = opts.workers,
            io_uring = uring_workers,
            batch = opts.batch,
            "userspace relay started"
        );
        Ok(Self {
            workers,
            threads,
            stop,
            next_pair: AtomicU64::new(1),
            next_token: AtomicU64::new(1),
            counters,
            opts,
            uring_workers,
        })
    }

    /// The I/O the workers use: [`RelayIo::IoUring`] or [`RelayIo::Epoll`] (never `Auto`).
    pub fn io(&self) -> RelayIo {
        if self.uring_workers > 0 {
            RelayIo::IoUring
        } else {
            RelayIo::Epoll
        }
    }

    fn worker_of(&self, id: PairId) -> &Arc<Worker> {
        &self.workers[(id.0 as usize) % self.workers.len()]
    }

    fn bind(&self, local: SocketAddr) -> Result<UdpSocket, DatapathError> {
        let s = UdpSocket::bind(local).map_err(|source| DatapathError::Bind { local, source })?;
        s.set_nonblocking(true)
            .map_err(|source| DatapathError::Bind { local, source })?;
        sys::set_buffers(s.as_raw_fd(), self.opts.socket_buffer);
        Ok(s)
    }

    /// Binds both legs' sockets and starts relaying between them.
    pub fn create_pair(&self, spec: FlowPairSpec) -> Result<PairId, DatapathError> {
        self.create_pair_with(spec, [None, None])
    }

    /// Like [`Self::create_pair`], with transforms for leg a and/or b in place before the
    /// first packet is read (a secure leg never relays unprotected).
    pub fn create_pair_with(
        &self,
        spec: FlowPairSpec,
        transforms: [Option<Box<dyn LegTransform>>; 2],
    ) -> Result<PairId, DatapathError> {
        let id = PairId(self.next_pair.fetch_add(1, Ordering::Relaxed));
        let locals = spec.locals();
        let mut bound = Vec::with_capacity(locals.len());
        for l in &locals {
            bound.push((self.bind(*l)?, *l));
        }
        let w = self.worker_of(id);
        let mut st = w.lock();
        st.table.insert(id, spec)?;
        let [ta, tb] = transforms;
        for (local, t) in [(spec.a.local, ta), (spec.b.local, tb)] {
            if let Some(t) = t {
                st.table.set_transformed(local);
                st.transforms.insert(local, Secure { t, dest: None });
            }
        }
        let uring = w.uring.load(Ordering::SeqCst);
        for (sock, local) in bound {
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            if uring {
                st.ring_ops.push(RingOp::Arm(token));
            } else if let Err(e) = w.epoll.add(sock.as_raw_fd(), token) {
                // Undo: nothing of this pair stays behind.
                drop(sock);
                remove_locked(w, &mut st, id);
                return Err(DatapathError::Io(e));
            }
            let secure = st.transforms.contains_key(&local);
            st.socks.insert(
                token,
                Sock {
                    sock,
                    local,
                    secure,
                    connected: None,
                },
            );
            st.by_local.insert(local, token);
        }
        drop(st);
        // Legs final at creation are reported (XDP install) without waiting for a tick.
        w.wake.notify();
        debug!(pair = id.0, a = %spec.a.local, b = %spec.b.local, "flow pair created");
        Ok(id)
    }

    /// Changes peers/learning (re-INVITE); local sockets must stay the same.
    pub fn update_pair(&self, id: PairId, spec: FlowPairSpec) -> Result<(), DatapathError> {
        self.update_pair_then(id, spec, |_| {})
    }

    /// Update, then `then` with the worker's table still locked.
    pub(crate) fn update_pair_then(
        &self,
        id: PairId,
        spec: FlowPairSpec,
        then: impl FnOnce(&FlowTable),
    ) -> Result<(), DatapathError> {
        let w = self.worker_of(id);
        let mut st = w.lock();
        st.table.update(id, spec)?;
        if st.connect_latched {
            // A leg whose address changed may have unlatched (no event says so).
            st.connect_dirty.extend(spec.locals());
        }
        then(&st.table);
        drop(st);
        w.wake.notify();
        Ok(())
    }

    /// Removes a pair and closes its sockets; when this returns nothing more
    /// is forwarded. Returns the final state, `None` if unknown.
    pub fn remove_pair(&self, id: PairId) -> Option<PairInfo> {
        self.remove_pair_then(id, |_| {})
    }

    /// Remove, then `then` with the worker's table still locked.
    pub(crate) fn remove_pair_then(
        &self,
        id: PairId,
        then: impl FnOnce(&PairInfo),
    ) -> Option<PairInfo> {
        let w = self.worker_of(id);
        let mut st = w.lock();
        let info = remove_locked(w, &mut st, id);
        if let Some(i) = &info {
            then(i);
        }
        if info.is_some() && w.uring.load(Ordering::SeqCst) {
            // The io_uring worker closes the sockets once their receive is cancelled; wait
            // for that (bounded) so the ports are free when this returns. Packets arriving
            // meanwhile find no flow in the table and are not forwarded.
            w.wake.notify();
            let deadline = Instant::now() + REMOVE_WAIT;
            while !st.closing.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!(pair = id.0, "relay sockets not released in time");
                    break;
                }
                st = match w.closed.wait_timeout(st, left) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
        }
        drop(st);
        if info.is_some() {
            debug!(pair = id.0, "flow pair removed");
        }
        info
    }

    /// One pair's state and counters.
    pub fn pair(&self, id: PairId) -> Option<PairInfo> {
        self.worker_of(id).lock().table.pair(id)
    }

    /// Every pair.
    pub fn pairs(&self) -> Vec<PairInfo> {
        let mut v: Vec<PairInfo> = self
            .workers
            .iter()
            .flat_map(|w| w.lock().table.pairs())
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Sends `data` from the relay socket `local` to `to` (STUN responses,
    /// DTLS records of the ICE/DTLS code). Fails if no pair owns `local`.
    /// May be called from the control callback.
    pub fn send_from(
        &self,
        local: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) -> Result<(), DatapathError> {
        for w in &self.workers {
            let st = w.lock();
            if let Some((_, s)) = st.sock_at(local) {
                s.sock.send_to(data, to).map_err(DatapathError::Io)?;
                return Ok(());
            }
        }
        Err(DatapathError::NoSocket(local))
    }

    /// Global counters.
    pub fn stats(&self) -> UserspaceStats {
        let c = &self.counters;
        UserspaceStats {
            received: c.received.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            send_failed: c.send_failed.load(Ordering::Relaxed),
            no_flow: c.no_flow.load(Ordering::Relaxed),
            control: c.control.load(Ordering::Relaxed),
            syscalls: c.syscalls.load(Ordering::Relaxed),
            connected_sends: c.connected_sends.load(Ordering::Relaxed),
        }
    }
}

/// How long `remove_pair` waits for an io_uring worker to release the sockets.
const REMOVE_WAIT: Duration = Duration::from_secs(1);

fn remove_locked(w: &Worker, st: &mut WorkerState, id: PairId) -> Option<PairInfo> {
    let info = st.table.pair(id);
    st.table.remove(id);
    let uring = w.uring.load(Ordering::SeqCst);
    if let Some(info) = info {
        let rtcp = info.rtcp.map(|(_, c)| c.spec.local);
        for local in [Some(info.a.spec.local), Some(info.b.spec.local), rtcp]
            .into_iter()
            .flatten()
        {
            st.transforms.remove(&local);
            let Some(token) = st.by_local.remove(&local) else {
                continue;
            };
            if uring {
                if let Some(twin) = st.retire(token) {
                    st.retire(twin.token);
                }
            } else if let Some(s) = st.socks.remove(&token) {
                if let Err(e) = w.epoll.del(s.sock.as_raw_fd()) {
                    warn!(%local, error = %e, "epoll del");
                }
            }
        }
    }
    info
}

impl Drop for UserspaceRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.workers {
            w.wake.notify();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                warn!("relay worker panicked");
            }
        }
    }
}

/// Rounds of recvmmsg per ready socket per wake-up (fairness between sockets).
const MAX_ROUNDS: usize = 4;

/// Per-wake-up counts, added to the global [`Counters`] once per batch.
#[derive(Default)]
pub(crate) struct Tally {
    pub received: u64,
    pub sent: u64,
    pub failed: u64,
    pub no_flow: u64,
    pub syscalls: u64,
    pub connected_sends: u64,
}

impl Tally {
    pub(crate) fn publish(&mut self, c: &Counters) {
        c.received.fetch_add(self.received, Ordering::Relaxed);
        c.sent.fetch_add(self.sent, Ordering::Relaxed);
        c.send_failed.fetch_add(self.failed, Ordering::Relaxed);
        c.no_flow.fetch_add(self.no_flow, Ordering::Relaxed);
        c.syscalls.fetch_add(self.syscalls, Ordering::Relaxed);
        c.connected_sends
            .fetch_add(self.connected_sends, Ordering::Relaxed);
        *self = Tally::default();
    }
}

/// A datagram to send that is not the received buffer itself: decrypted media
/// re-protected for a secure leg, STUN/DTLS answers. (from local, to, bytes)
pub(crate) type OwnedSend = (SocketAddr, SocketAddr, Vec<u8>);

/// What the relay makes of one datagram that arrived on `local` from `src`;
/// the I/O loops (epoll, io_uring) differ only in how they receive and send.
/// Returns `Some((from, to))` when the received bytes go out unchanged from
/// the relay socket `from` to `to`; other output (protected media, STUN/DTLS
/// answers) is appended to `owned`, STUN/DTLS for the control callback to
/// `ctl` (when `want_ctl`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn on_datagram(
    st: &mut WorkerState,
    (local, secure): (SocketAddr, bool),
    src: SocketAddr,
    payload: &[u8],
    now: u64,
    now_i: Instant,
    want_ctl: bool,
    ctl: &mut Vec<ControlPacket>,
    owned: &mut Vec<OwnedSend>,
    tally: &mut Tally,
) -> Option<(SocketAddr, SocketAddr)> {
    let WorkerState {
        table,
        transforms,
        connect_latched,
        connect_dirty,
        ..
    } = st;
    // A secure leg: its transform sees the datagram first; the table only sees
    // authenticated, decrypted media.
    if let Some(sec) = secure.then(|| transforms.get_mut(&local)).flatten() {
        let verdict = sec.t.inbound(now_i, src, payload);
        sec.sync_destination(local, table, connect_latched.then_some(connect_dirty));
        // Its answers (STUN, DTLS flights) go out at once.
        while let Some((to, data)) = sec.t.poll_transmit() {
            owned.push((local, to, data));
        }
        if let TransformInbound::Media { plain, source } = verdict {
            match table.handle(local, source, &plain, now) {
                Verdict::Forward { from, to } => {
                    protect_into(transforms, from, to, Cow::Owned(plain), owned)
                }
                Verdict::NoFlow => tally.no_flow += 1,
                _ => {}
            }
        }
        return None;
    }
    match table.handle(local, src, payload, now) {
        Verdict::Forward { from, to } if transforms.is_empty() => Some((from, to)),
        Verdict::Forward { from, to } => match transforms.get_mut(&from) {
            // Toward a secure leg.
            Some(sec) => {
                protect_with(sec, from, payload, owned);
                None
            }
            None => Some((from, to)),
        },
        Verdict::Control(kind) => {
            if want_ctl {
                ctl.push(ControlPacket {
                    local,
                    source: src,
                    kind,
                    data: payload.to_vec(),
                });
            }
            None
        }
        Verdict::NoFlow => {
            tally.no_flow += 1;
            None
        }
        Verdict::Drop(_) => None,
    }
}

/// Media relayed from the relay socket `from`: protected by that leg's transform (and sent to
/// where the transform says) when it has one.
fn protect_into(
    transforms: &mut TransformMap,
    from: SocketAddr,
    to: SocketAddr,
    plain: Cow<'_, [u8]>,
    owned: &mut Vec<OwnedSend>,
) {
    match transforms.get_mut(&from) {
        Some(sec) => protect_with(sec, from, &plain, owned),
        None => owned.push((from, to, plain.into_owned())),
    }
}

/// Media protected by a secure leg's transform, sent from its socket `from` to where the
/// transform says.
fn protect_with(sec: &mut Secure, from: SocketAddr, plain: &[u8], owned: &mut Vec<OwnedSend>) {
    if let (Some(d), Some(dest)) = (sec.t.outbound(plain), sec.t.destination()) {
        owned.push((from, dest, d));
    }
}

/// Periodic work of a worker, after a batch: secure legs' timers (DTLS retransmissions,
/// ICE consent: second-scale, so the relay tick is fine-grained enough; not per batch,
/// that would visit every secure leg per packet), learn windows, the event hook. What
/// the timers want to send is appended to `owned`. Returns whether this was a tick.
pub(crate) fn after_batch(
    st: &mut WorkerState,
    now: u64,
    last_tick: &mut u64,
    hook: Option<&EventHook>,
    owned: &mut Vec<OwnedSend>,
) {
    let ticked = now.saturating_sub(*last_tick) >= TICK.as_nanos() as u64;
    if ticked && !st.transforms.is_empty() {
        let now_i = Instant::now();
        let WorkerState {
            table,
            transforms,
            connect_latched,
            connect_dirty,
            ..
        } = st;
        for (local, sec) in transforms.iter_mut() {
            if sec.t.poll_timeout().is_some_and(|d| d <= now_i) {
                sec.t.handle_timeout(now_i);
                sec.sync_destination(
                    *local,
                    table,
                    connect_latched.then_some(&mut *connect_dirty),
                );
            }
            while let Some((to, data)) = sec.t.poll_transmit() {
                owned.push((*local, to, data));
            }
        }
    }
    if ticked {
        st.table.tick(now);
        *last_tick = now;
    }
    let evs = st.table.take_events();
    if st.connect_latched {
        st.connect_dirty.extend(evs.iter().map(|e| match e {
            TableEvent::Latched { local, .. } => *local,
        }));
    }
    if let Some(h) = hook {
        if ticked || !evs.is_empty() {
            h(&st.table, &evs);
        }
    }
}

/// Hands STUN/DTLS packets to the control callback (after the worker lock is released).
pub(crate) fn deliver_control(
    control: Option<&ControlCallback>,
    counters: &Counters,
    ctl: &mut Vec<ControlPacket>,
) {
    if let Some(cb) = control {
        counters
            .control
            .fetch_add(ctl.len() as u64, Ordering::Relaxed);
        for p in ctl.drain(..) {
            cb(p);
        }
    }
}

/// The epoll worker: level-triggered readiness, recvmmsg per ready socket, sendmmsg (or
/// sendto for one datagram) per egress socket.
fn epoll_loop(
    w: &Worker,
    stop: &AtomicBool,
    counters: &Counters,
    control: Option<&ControlCallback>,
    hook: Option<&EventHook>,
    batch_size: usize,
) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut batch = Batch::new(batch_size);
    let mut out: Vec<(usize, SocketAddr, SocketAddr)> = Vec::with_capacity(batch_size);
    let mut addrs = Vec::new();
    let mut iovs = Vec::new();
    let mut hdrs = Vec::new();
    let mut ctl: Vec<ControlPacket> = Vec::new();
    let mut owned: Vec<OwnedSend> = Vec::new();
    let mut tally = Tally::default();
    let mut last_tick = sys::monotonic_ns();
    while !stop.load(Ordering::Relaxed) {
        let n = match w.epoll.wait(&mut events, TICK.as_millis() as i32) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "epoll_wait failed; worker stops");
                return;
            }
        };
        let mut st = w.lock();
        let now = sys::monotonic_ns();
        for ev in &events[..n] {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                w.wake.drain();
                continue;
            }
            let Some((fd, leg)) = st
                .socks
                .get(&token)
                .map(|s| (s.sock.as_raw_fd(), (s.local, s.secure)))
            else {
                continue;
            };
            for _ in 0..MAX_ROUNDS {
                let got = match batch.recv(fd) {
                    Ok(g) => g,
                    Err(e) => {
                        debug!(local = %leg.0, error = %e, "recvmmsg");
                        0
                    }
                };
                tally.syscalls += 1;
                if got == 0 {
                    break;
                }
                tally.received += got as u64;
                out.clear();
                let now_i = Instant::now();
                for i in 0..got {
                    let Some(src) = batch.source(i) else { continue };
                    let payload: &[u8] = if batch.truncated(i) {
                        &[]
                    } else {
                        batch.payload(i)
                    };
                    if let Some((from, to)) = on_datagram(
                        &mut st,
                        leg,
                        src,
                        payload,
                        now,
                        now_i,
                        control.is_some(),
                        &mut ctl,
                        &mut owned,
                        &mut tally,
                    ) {
                        out.push((i, from, to));
                    }
                }
                // Runs of datagrams leaving from the same socket (all of them, unless RTCP
                // is split off a muxed leg) go out in one system call.
                for run in out.chunk_by(|x, y| x.1 == y.1) {
                    let from = run[0].1;
                    let esock = st.sock_at(from).map(|(_, s)| s);
                    match esock {
                        // One datagram (the common case at tens of packets/s per stream):
                        // sendto is cheaper than building a sendmmsg vector for one.
                        Some(s) if run.len() == 1 => {
                            let (i, _, to) = run[0];
                            match s.sock.send_to(batch.payload(i), to) {
                                Ok(_) => tally.sent += 1,
                                Err(_) => tally.failed += 1,
                            }
                            tally.syscalls += 1;
                        }
                        Some(s) => {
                            let items: Vec<(&[u8], SocketAddr)> = run
                                .iter()
                                .map(|(i, _, to)| (batch.payload(*i), *to))
                                .collect();
                            let ok = sys::send_batch(
                                s.sock.as_raw_fd(),
                                &items,
                                &mut addrs,
                                &mut iovs,
                                &mut hdrs,
                            );
                            tally.syscalls += 1;
                            tally.sent += ok as u64;
                            tally.failed += (items.len() - ok) as u64;
                        }
                        None => tally.failed += run.len() as u64,
                    }
                }
                send_owned(&st, &mut owned, &mut tally);
                if got < batch.capacity() {
                    break;
                }
            }
        }
        after_batch(&mut st, now, &mut last_tick, hook, &mut owned);
        send_owned(&st, &mut owned, &mut tally);
        // Before unlocking: whoever sees the table after this batch sees
        // these counters too.
        tally.publish(counters);
        drop(st);
        deliver_control(control, counters, &mut ctl);
    }
}

/// Sends (one sendto each) what `on_datagram`/`after_batch` produced.
fn send_owned(st: &WorkerState, owned: &mut Vec<OwnedSend>, tally: &mut Tally) {
    for (from, to, data) in owned.drain(..) {
        let sock = st.sock_at(from).map(|(_, s)| s);
        match sock.map(|s| s.sock.send_to(&data, to)) {
            Some(Ok(_)) => tally.sent += 1,
            _ => tally.failed += 1,
        }
        tally.syscalls += 1;
    }
}
