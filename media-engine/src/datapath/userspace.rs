//! Userspace relay: binds the relay sockets and relays between legs with the
//! [`FlowTable`] rules, using epoll + recvmmsg/sendmmsg on a fixed number of
//! worker threads (flow pairs are spread over them; a pair's two sockets live
//! on the same worker, whose table owns both legs).
//!
//! Each worker holds its state behind one mutex, taken once per wake-up (for a
//! whole batch) and by control calls; so when [`UserspaceRelay::remove_pair`]
//! returns, the sockets are closed and not one more packet is forwarded.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::sys::{self, Batch, Epoll, EventFd};
use super::table::{ControlKind, FlowPairSpec, FlowTable, PairId, PairInfo, TableEvent, Verdict};
use super::transform::{LegTransform, TransformInbound};
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
}

impl Default for UserspaceOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            batch: 32,
            socket_buffer: 256 * 1024,
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
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    send_failed: AtomicU64,
    no_flow: AtomicU64,
    control: AtomicU64,
    syscalls: AtomicU64,
}

struct Sock {
    sock: UdpSocket,
    local: SocketAddr,
}

#[derive(Default)]
struct WorkerState {
    table: FlowTable,
    socks: HashMap<u64, Sock>,
    by_local: HashMap<SocketAddr, u64>,
    /// Transforms of secure legs, by local socket.
    transforms: HashMap<SocketAddr, Box<dyn LegTransform>>,
}

struct Worker {
    state: Mutex<WorkerState>,
    epoll: Epoll,
    wake: EventFd,
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, WorkerState> {
        // A panic on a worker while holding the lock leaves consistent data
        // (the table is updated in place); keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        for n in 0..opts.workers {
            let w = Arc::new(Worker {
                state: Mutex::new(WorkerState::default()),
                epoll: Epoll::new().map_err(DatapathError::Io)?,
                wake: EventFd::new().map_err(DatapathError::Io)?,
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
            let batch = opts.batch;
            let t = std::thread::Builder::new()
                .name(format!("relay-{n}"))
                .spawn(move || worker_loop(&w2, &stop2, &c2, cb.as_ref(), hk.as_ref(), batch))
                .map_err(DatapathError::Io)?;
            workers.push(w);
            threads.push(t);
        }
        info!(
            workers = opts.workers,
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
        })
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
        let sa = self.bind(spec.a.local)?;
        let sb = self.bind(spec.b.local)?;
        let w = self.worker_of(id);
        let mut st = w.lock();
        st.table.insert(id, spec)?;
        let [ta, tb] = transforms;
        for (local, t) in [(spec.a.local, ta), (spec.b.local, tb)] {
            if let Some(t) = t {
                st.table.set_transformed(local);
                st.transforms.insert(local, t);
            }
        }
        for (sock, local) in [(sa, spec.a.local), (sb, spec.b.local)] {
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = w.epoll.add(sock.as_raw_fd(), token) {
                // Undo: nothing of this pair stays behind.
                drop(sock);
                remove_locked(&w.epoll, &mut st, id);
                return Err(DatapathError::Io(e));
            }
            st.socks.insert(token, Sock { sock, local });
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
        let info = remove_locked(&w.epoll, &mut st, id);
        if let Some(i) = &info {
            then(i);
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
            if let Some(s) = st.by_local.get(&local).and_then(|t| st.socks.get(t)) {
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
        }
    }
}

fn remove_locked(epoll: &Epoll, st: &mut WorkerState, id: PairId) -> Option<PairInfo> {
    let info = st.table.pair(id);
    st.table.remove(id);
    if let Some(info) = info {
        for local in [info.a.spec.local, info.b.spec.local] {
            st.transforms.remove(&local);
            if let Some(token) = st.by_local.remove(&local) {
                if let Some(s) = st.socks.remove(&token) {
                    if let Err(e) = epoll.del(s.sock.as_raw_fd()) {
                        warn!(%local, error = %e, "epoll del");
                    }
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

fn worker_loop(
    w: &Worker,
    stop: &AtomicBool,
    counters: &Counters,
    control: Option<&ControlCallback>,
    hook: Option<&EventHook>,
    batch_size: usize,
) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut batch = Batch::new(batch_size);
    let mut out: Vec<(usize, SocketAddr)> = Vec::with_capacity(batch_size);
    let mut addrs = Vec::new();
    let mut iovs = Vec::new();
    let mut hdrs = Vec::new();
    let mut ctl: Vec<ControlPacket> = Vec::new();
    let mut owned: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    let mut last_tick = sys::monotonic_ns();
    let tick_ns = TICK.as_nanos() as u64;
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
        let (mut received, mut sent, mut failed, mut no_flow, mut syscalls) = (0, 0, 0, 0, 0);
        for ev in &events[..n] {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                w.wake.drain();
                continue;
            }
            let WorkerState {
                table,
                socks,
                by_local,
                transforms,
            } = &mut *st;
            let Some(s) = socks.get(&token) else { continue };
            let (fd, local) = (s.sock.as_raw_fd(), s.local);
            for _ in 0..MAX_ROUNDS {
                let got = match batch.recv(fd) {
                    Ok(g) => g,
                    Err(e) => {
                        debug!(%local, error = %e, "recvmmsg");
                        0
                    }
                };
                syscalls += 1;
                if got == 0 {
                    break;
                }
                received += got as u64;
                out.clear();
                owned.clear();
                let mut egress = None;
                let now_i = Instant::now();
                for i in 0..got {
                    let Some(src) = batch.source(i) else { continue };
                    let payload: &[u8] = if batch.truncated(i) {
                        &[]
                    } else {
                        batch.payload(i)
                    };
                    // A secure leg: its transform sees the datagram first; the table only
                    // sees authenticated, decrypted media.
                    if let Some(t) = transforms.get_mut(&local) {
                        let verdict = t.inbound(now_i, src, payload);
                        table.set_transform_destination(local, t.destination());
                        // Its answers (STUN, DTLS flights) go out at once.
                        while let Some((to, data)) = t.poll_transmit() {
                            match s.sock.send_to(&data, to) {
                                Ok(_) => sent += 1,
                                Err(_) => failed += 1,
                            }
                        }
                        if let TransformInbound::Media { plain, source } = verdict {
                            match table.handle(local, source, &plain, now) {
                                Verdict::Forward { from, to } => owned.push((from, to, plain)),
                                Verdict::NoFlow => no_flow += 1,
                                _ => {}
                            }
                        }
                        continue;
                    }
                    match table.handle(local, src, payload, now) {
                        Verdict::Forward { from, to } if transforms.contains_key(&from) => {
                            owned.push((from, to, payload.to_vec()));
                        }
                        Verdict::Forward { from, to } => {
                            egress = Some(from);
                            out.push((i, to));
                        }
                        Verdict::Control(kind) => {
                            if control.is_some() {
                                ctl.push(ControlPacket {
                                    local,
                                    source: src,
                                    kind,
                                    data: payload.to_vec(),
                                });
                            }
                        }
                        Verdict::NoFlow => no_flow += 1,
                        Verdict::Drop(_) => {}
                    }
                }
                if let Some(from) = egress {
                    let esock = by_local.get(&from).and_then(|t| socks.get(t));
                    let efd = esock.map(|s| s.sock.as_raw_fd());
                    match efd {
                        // One datagram (the common case at tens of packets/s per stream):
                        // sendto is cheaper than building a sendmmsg vector for one.
                        Some(_) if out.len() == 1 => {
                            let (i, to) = out[0];
                            match esock.map(|s| s.sock.send_to(batch.payload(i), to)) {
                                Some(Ok(_)) => sent += 1,
                                _ => failed += 1,
                            }
                            syscalls += 1;
                        }
                        Some(efd) => {
                            let items: Vec<(&[u8], SocketAddr)> =
                                out.iter().map(|(i, to)| (batch.payload(*i), *to)).collect();
                            let ok = sys::send_batch(efd, &items, &mut addrs, &mut iovs, &mut hdrs);
                            syscalls += 1;
                            sent += ok as u64;
                            failed += (items.len() - ok) as u64;
                        }
                        None => failed += out.len() as u64,
                    }
                }
                // Packets that were decrypted or must be protected: one send each.
                for (from, to, data) in owned.drain(..) {
                    let (data, to) = match transforms.get_mut(&from) {
                        Some(t) => match (t.outbound(&data), t.destination()) {
                            (Some(d), Some(dest)) => (d, dest),
                            _ => {
                                failed += 1;
                                continue;
                            }
                        },
                        None => (data, to),
                    };
                    let sock = by_local.get(&from).and_then(|t| socks.get(t));
                    match sock.map(|s| s.sock.send_to(&data, to)) {
                        Some(Ok(_)) => sent += 1,
                        _ => failed += 1,
                    }
                    syscalls += 1;
                }
                if got < batch.capacity() {
                    break;
                }
            }
        }
        // Timers of the secure legs (DTLS retransmissions, ICE consent: second-scale, so the
        // relay tick is fine-grained enough) and what they queued meanwhile. Not per batch:
        // that would visit every secure leg per packet.
        let ticked = now.saturating_sub(last_tick) >= tick_ns;
        if ticked && !st.transforms.is_empty() {
            let now_i = Instant::now();
            let WorkerState {
                table,
                socks,
                by_local,
                transforms,
            } = &mut *st;
            for (local, t) in transforms.iter_mut() {
                if t.poll_timeout().is_some_and(|d| d <= now_i) {
                    t.handle_timeout(now_i);
                    table.set_transform_destination(*local, t.destination());
                }
                let sock = by_local.get(local).and_then(|k| socks.get(k));
                while let Some((to, data)) = t.poll_transmit() {
                    match sock.map(|s| s.sock.send_to(&data, to)) {
                        Some(Ok(_)) => sent += 1,
                        _ => failed += 1,
                    }
                }
            }
        }
        if ticked {
            st.table.tick(now);
            last_tick = now;
        }
        let evs = st.table.take_events();
        if let Some(h) = hook {
            if ticked || !evs.is_empty() {
                h(&st.table, &evs);
            }
        }
        // Before unlocking: whoever sees the table after this batch sees
        // these counters too.
        counters.received.fetch_add(received, Ordering::Relaxed);
        counters.sent.fetch_add(sent, Ordering::Relaxed);
        counters.send_failed.fetch_add(failed, Ordering::Relaxed);
        counters.no_flow.fetch_add(no_flow, Ordering::Relaxed);
        counters.syscalls.fetch_add(syscalls, Ordering::Relaxed);
        drop(st);
        if let Some(cb) = control {
            counters
                .control
                .fetch_add(ctl.len() as u64, Ordering::Relaxed);
            for p in ctl.drain(..) {
                cb(p);
            }
        }
    }
}
