//! The io_uring worker of the userspace relay: one ring per worker thread, a multishot
//! `recvmsg` per relay socket filling buffers from a provided-buffer ring, and `send`
//! requests (with destination address) straight from those buffers. One `io_uring_enter`
//! submits every send of a wake-up and collects every datagram that arrived on any of the
//! worker's sockets, where epoll costs a wait, a `recvmmsg` per ready socket and a send per
//! datagram (at 50 packets/s per stream, sockets rarely have more than one datagram).
//!
//! The ring is `SINGLE_ISSUER | DEFER_TASKRUN`: completions are produced only when the
//! worker asks for them, so control calls from other threads never touch it; they queue
//! [`RingOp`]s under the worker lock and wake the worker through its eventfd (a multishot
//! poll on the ring). The per-datagram decisions are the epoll loop's
//! ([`super::userspace::on_datagram`]).
//!
//! Connected twins ([`super::UserspaceOptions::connect_latched`]): once the party of a relay
//! socket is settled ([`super::FlowTable::fixed_peer`]: a latched plain leg, a secure leg's
//! current destination), the worker binds a second socket to the same address and connects
//! it to the party. The kernel hands the party's datagrams to it (early demux, no input
//! route lookup) and the relay's sends to the party leave from it without an address (the
//! socket's cached route: no output route lookup), about a fifth of the relay's CPU per
//! packet. Everyone else still reaches the unconnected socket, which is handled exactly as
//! before (rejected and counted, authenticated, answered), so nothing about latching
//! changes; when the party moves the twin is retired and, if settled again, remade. A twin
//! still reports each datagram's source (it is bound before it is connected, and a stranger's
//! datagram can land on it in between), and starts receiving only once the relay socket's
//! queue has drained, so that the switch does not reorder the party's stream.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tracing::{debug, warn};

use super::sys::{self, BUF_SIZE};
use super::userspace::{
    after_batch, deliver_control, on_datagram, Connected, ControlCallback, ControlPacket, Counters,
    EventHook, FastMap, OwnedSend, RingOp, Sock, Tally, UserspaceOptions, Worker, WorkerState,
    TICK,
};

/// Provided receive buffers per worker (each [`BUF_SIZE`] bytes).
const BUFFERS: u16 = 4096;
/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;
/// Sends in flight per worker (their buffers and addresses must stay put until completion).
const SEND_SLOTS: usize = 4096;

const KIND_SHIFT: u32 = 56;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
const ID_MASK: u64 = (1 << KIND_SHIFT) - 1;

fn user_data(kind: u64, id: u64) -> u64 {
    (kind << KIND_SHIFT) | (id & ID_MASK)
}

/// The ring of provided receive buffers (kernel-shared descriptor ring + the buffers).
struct BufRing {
    /// Page-aligned descriptor ring (mmap), `BUFFERS` entries.
    ring: *mut types::BufRingEntry,
    ring_bytes: usize,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<Self> {
        let ring_bytes = usize::from(BUFFERS) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping, checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut r = BufRing {
            ring: p.cast(),
            ring_bytes,
            bufs: vec![0u8; usize::from(BUFFERS) * BUF_SIZE],
            tail: 0,
        };
        for bid in 0..BUFFERS {
            r.give_back(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Returns buffer `bid` to the kernel (visible after [`Self::publish`]).
    fn give_back(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: idx < BUFFERS entries of the mapping; only this thread writes entries.
        let e = unsafe { &mut *self.ring.add(idx) };
        let addr = self.bufs.as_ptr() as u64 + (usize::from(bid) * BUF_SIZE) as u64;
        e.set_addr(addr);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field of the ring's first entry; the kernel reads it atomically.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.ring) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let start = usize::from(bid) * BUF_SIZE;
        &self.bufs[start..start + len.min(BUF_SIZE)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); the ring (which referenced it) is gone by now
        // (Ring drops its IoUring first).
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

/// One in-flight send: its destination and what keeps its bytes alive.
struct Slot {
    addr: libc::sockaddr_storage,
    /// Receive buffer being sent (returned to the buffer ring on completion).
    bid: Option<u16>,
    /// Or bytes of our own.
    data: Vec<u8>,
}

/// A worker's ring and the memory it points into. Fields drop in order: the ring (which
/// cancels everything in flight) before the buffers.
pub(crate) struct Ring {
    ring: IoUring,
    bufs: BufRing,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Only `msg_namelen` matters to the multishot receive.
    msghdr: Box<libc::msghdr>,
    min_wait_us: u32,
    want: usize,
    /// Multishot receives in flight.
    armed: usize,
    /// Receive buffers held by sends in flight.
    held: usize,
    files: Option<FixedFiles>,
    /// SO_RCVBUF/SO_SNDBUF of the connected twins this worker makes.
    socket_buffer: i32,
    /// Tokens of connected twins: [`TWIN_TOKEN`] set, counting up (the pair tokens made by
    /// control calls never reach that bit).
    next_twin: u64,
    /// Twins made but not yet receiving, until their relay socket has no datagram left
    /// (twin token, relay socket, deadline ns).
    twins_waiting: Vec<(u64, i32, u64)>,
}

/// A new twin waits at most this long for its relay socket's queue to drain (a stranger
/// flooding that socket must not keep the party's own datagrams waiting).
const TWIN_ARM_WAIT_NS: u64 = 5_000_000;

/// Token bit of the connected twin sockets a worker makes for latched legs.
const TWIN_TOKEN: u64 = 1 << 55;

// SAFETY: the raw pointers (descriptor ring, msghdr) point into memory owned by this
// struct; a Ring is created on and used by one thread (moved there before use).
unsafe impl Send for Ring {}

impl Ring {
    /// Sets up a ring with a provided-buffer ring; fails where io_uring or the features the
    /// relay needs are missing (old kernel, `kernel.io_uring_disabled`, seccomp).
    pub(crate) fn new(opts: &UserspaceOptions) -> io::Result<Self> {
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(u32::from(BUFFERS) * 2 + 1024)
            .build(1024)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::other("io_uring lacks EXT_ARG (Linux 5.11+)"));
        }
        let bufs = BufRing::new()?;
        let files = FixedFiles::register(&ring);
        // SAFETY: the descriptor ring stays mapped until after the IoUring is dropped.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring as u64, BUFFERS, BGID, 0)?;
        }
        let min_wait_us = if opts.coalesce.is_zero() || !ring.params().is_feature_min_timeout() {
            0
        } else {
            u32::try_from(opts.coalesce.as_micros()).unwrap_or(u32::MAX)
        };
        // SAFETY: all-zero is a valid msghdr / sockaddr_storage.
        let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msghdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let slots = (0..SEND_SLOTS)
            .map(|_| Slot {
                addr: unsafe { std::mem::zeroed() },
                bid: None,
                data: Vec::new(),
            })
            .collect();
        Ok(Ring {
            ring,
            bufs,
            slots,
            free: (0..SEND_SLOTS).rev().collect(),
            msghdr,
            min_wait_us,
            want: if min_wait_us > 0 { opts.batch } else { 1 },
            armed: 0,
            held: 0,
            files,
            socket_buffer: opts.socket_buffer,
            next_twin: TWIN_TOKEN,
            twins_waiting: Vec::new(),
        })
    }
}

/// Queues an SQE, flushing the submission queue to the kernel when it is full.
fn push(ring: &mut IoUring, e: &squeue::Entry) {
    loop {
        // SAFETY: every entry points into memory that outlives the request (buffers,
        // slots, msghdr owned by Ring; sockets kept until their final completion).
        if unsafe { ring.submission().push(e) }.is_ok() {
            return;
        }
        if let Err(err) = ring.submit() {
            warn!(error = %err, "io_uring submit");
            return;
        }
    }
}

/// What a send carries: (part of) a receive buffer, or bytes of our own.
enum Bytes {
    Buffer { bid: u16, off: usize, len: usize },
    Owned(Vec<u8>),
}

/// Relay sockets registered with the ring (requests name a table slot: no file lookup and
/// reference count per request).
struct FixedFiles {
    free: Vec<u32>,
    by_token: FastMap<u64, u32>,
}

/// Largest registered-file table per worker.
const MAX_FIXED_FILES: u32 = 65_536;

impl FixedFiles {
    /// A sparse table as large as the open-file limit allows; `None` if the kernel refuses.
    fn register(ring: &IoUring) -> Option<Self> {
        // SAFETY: all-zero is a valid rlimit; getrlimit fills it.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to an rlimit.
        let n = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            u32::try_from(lim.rlim_cur.min(u64::from(MAX_FIXED_FILES))).unwrap_or(0)
        } else {
            0
        };
        if n < 64 {
            return None;
        }
        match ring.submitter().register_files_sparse(n) {
            Ok(()) => Some(FixedFiles {
                free: (0..n).rev().collect(),
                by_token: FastMap::default(),
            }),
            Err(e) => {
                debug!(error = %e, "io_uring registered files unavailable");
                None
            }
        }
    }
}

/// How a request names its socket.
#[derive(Clone, Copy)]
enum Target {
    Fixed(u32),
    Fd(i32),
}

fn target(r: &Ring, token: u64, fd: i32) -> Target {
    match r.files.as_ref().and_then(|f| f.by_token.get(&token)) {
        Some(&slot) => Target::Fixed(slot),
        None => Target::Fd(fd),
    }
}

/// Registers the socket of `token` (once); on failure requests use its descriptor.
fn register_file(r: &mut Ring, token: u64, fd: i32) {
    let Some(f) = r.files.as_mut() else { return };
    if f.by_token.contains_key(&token) {
        return;
    }
    let Some(slot) = f.free.pop() else { return };
    match r.ring.submitter().register_files_update(slot, &[fd]) {
        Ok(_) => {
            f.by_token.insert(token, slot);
        }
        Err(e) => {
            f.free.push(slot);
            debug!(error = %e, "registering relay socket");
        }
    }
}

/// Drops the ring's reference to the socket of `token` (before the socket is closed).
fn release_file(r: &mut Ring, token: u64) {
    let Some(f) = r.files.as_mut() else { return };
    if let Some(slot) = f.by_token.remove(&token) {
        if let Err(e) = r.ring.submitter().register_files_update(slot, &[-1]) {
            warn!(error = %e, "unregistering relay socket");
        }
        f.free.push(slot);
    }
}

/// Builds an SQE for a socket named either way.
macro_rules! on_target {
    ($t:expr, |$x:ident| $build:expr) => {
        match $t {
            Target::Fixed(i) => {
                let $x = types::Fixed(i);
                $build
            }
            Target::Fd(fd) => {
                let $x = types::Fd(fd);
                $build
            }
        }
    };
}

/// Queues a send from the socket `t` to `to` (without the address when `t` is connected
/// to `to`). False (counted as failed) when every slot is in flight; a receive buffer is
/// then still the caller's.
fn queue_send(
    r: &mut Ring,
    (t, connected): (Target, bool),
    to: SocketAddr,
    bytes: Bytes,
    tally: &mut Tally,
) -> bool {
    let Some(i) = r.free.pop() else {
        tally.failed += 1;
        return false;
    };
    let s = &mut r.slots[i];
    let alen = sys::to_sockaddr(to, &mut s.addr);
    let (ptr, len) = match bytes {
        Bytes::Buffer { bid, off, len } => {
            s.bid = Some(bid);
            r.held += 1;
            let bytes = r.bufs.buf(bid, off + len).get(off..).unwrap_or_default();
            (bytes.as_ptr(), bytes.len())
        }
        Bytes::Owned(d) => {
            s.data = d;
            (s.data.as_ptr(), s.data.len())
        }
    };
    let addr = (&s.addr as *const libc::sockaddr_storage).cast();
    let e = if connected {
        tally.connected_sends += 1;
        on_target!(t, |f| opcode::Send::new(f, ptr, len as u32).build())
    } else {
        on_target!(t, |f| opcode::Send::new(f, ptr, len as u32)
            .dest_addr(addr)
            .dest_addr_len(alen)
            .build())
    }
    .user_data(user_data(KIND_SEND, i as u64));
    push(&mut r.ring, &e);
    true
}

/// A multishot `recvmsg` on the socket of `token`. Connected twins too: the source of every
/// datagram is the kernel's word, never assumed (a twin is bound before it is connected, and
/// a stranger's datagram can reach it in between).
fn arm_recv(r: &mut Ring, fd: i32, token: u64) {
    r.armed += 1;
    register_file(r, token, fd);
    let msghdr: *const libc::msghdr = &*r.msghdr;
    let e = on_target!(target(r, token, fd), |f| opcode::RecvMsgMulti::new(
        f, msghdr, BGID
    )
    .build())
    .user_data(user_data(KIND_RECV, token));
    push(&mut r.ring, &e);
}

fn cancel_recv(r: &mut Ring, token: u64) {
    let e = opcode::AsyncCancel::new(user_data(KIND_RECV, token))
        .build()
        .user_data(user_data(KIND_CANCEL, token));
    push(&mut r.ring, &e);
}

/// Gives the relay sockets in `connect_dirty` the connected twin their leg calls for now
/// ([`WorkerState::connect_latched`]): made when the leg is latched, replaced when its
/// party moved, retired (receive cancelled, closed once the ring lets go) when it is no
/// longer latched. A twin that cannot be made is not: the unconnected socket serves.
fn reconcile_twins(r: &mut Ring, st: &mut WorkerState) {
    let dirty = std::mem::take(&mut st.connect_dirty);
    for local in dirty {
        let Some(&token) = st.by_local.get(&local) else {
            continue;
        };
        let want = st.table.fixed_peer(local);
        let Some((have, primary_fd, secure)) = st
            .socks
            .get(&token)
            .map(|s| (s.connected, s.sock.as_raw_fd(), s.secure))
        else {
            continue;
        };
        if have.map(|c| c.peer) == want {
            continue;
        }
        if let Some(c) = have {
            st.retire(c.token);
        }
        let mut made = None;
        if let Some(peer) = want {
            let twin = sys::set_reuseaddr(primary_fd)
                .and_then(|()| sys::connected_udp(local, peer, r.socket_buffer));
            match twin {
                Ok(sock) => {
                    let t = r.next_twin;
                    r.next_twin = TWIN_TOKEN | (r.next_twin.wrapping_add(1) & (TWIN_TOKEN - 1));
                    let fd = sock.as_raw_fd();
                    st.socks.insert(
                        t,
                        Sock {
                            sock,
                            local,
                            secure,
                            connected: None,
                        },
                    );
                    // The party's datagrams now queue on the twin. Those already queued on
                    // the relay socket go first: the twin starts receiving once that queue
                    // is empty, so that the switch does not reorder the stream.
                    r.twins_waiting
                        .push((t, primary_fd, sys::monotonic_ns() + TWIN_ARM_WAIT_NS));
                    made = Some(Connected { token: t, fd, peer });
                }
                Err(e) => {
                    debug!(%local, %peer, error = %e, "no connected socket for a latched leg")
                }
            }
        }
        if let Some(s) = st.socks.get_mut(&token) {
            s.connected = made;
        }
    }
}

/// Starts receiving on the waiting twins whose relay socket has drained (or waited long
/// enough). Called between wake-ups, when every datagram the ring took from a socket has
/// been handled: what is left is in the socket's queue.
fn arm_waiting_twins(r: &mut Ring, st: &WorkerState, now: u64) {
    let mut waiting = std::mem::take(&mut r.twins_waiting);
    waiting.retain(|&(twin, primary_fd, deadline)| {
        let Some(fd) = st.socks.get(&twin).map(|s| s.sock.as_raw_fd()) else {
            return false; // retired meanwhile
        };
        if now < deadline && sys::pending_datagram(primary_fd) {
            return true;
        }
        arm_recv(r, fd, twin);
        false
    });
    r.twins_waiting = waiting;
}

fn arm_wake(r: &mut Ring, w: &Worker) {
    let e = opcode::PollAdd::new(types::Fd(w.wake.raw()), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(user_data(KIND_WAKE, 0));
    push(&mut r.ring, &e);
}

/// The worker loop; returns when `stop` is set (or the ring fails).
pub(crate) fn run(
    mut r: Ring,
    w: &Worker,
    stop: &AtomicBool,
    counters: &Counters,
    control: Option<&ControlCallback>,
    hook: Option<&EventHook>,
) {
    arm_wake(&mut r, w);
    let mut ctl: Vec<ControlPacket> = Vec::new();
    let mut owned: Vec<OwnedSend> = Vec::new();
    let mut tally = Tally::default();
    let mut rearm: Vec<u64> = Vec::new();
    // Receives that ended for want of buffers: re-armed once sends have given some back,
    // not at once (that would spin while every buffer is in flight).
    let mut starved: Vec<u64> = Vec::new();
    let mut wake_rearm = false;
    let mut last_tick = sys::monotonic_ns();
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        // Wait for completions, up to the next tick.
        let since = sys::monotonic_ns().saturating_sub(last_tick);
        let left = (TICK.as_nanos() as u64)
            .saturating_sub(since)
            .max(1_000_000);
        let ts = types::Timespec::from(Duration::from_nanos(left));
        let mut args = types::SubmitArgs::new().timespec(&ts);
        if r.min_wait_us > 0 {
            args = args.min_wait_usec(r.min_wait_us);
        }
        match r.ring.submitter().submit_with_args(r.want, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => {
                warn!(error = %e, "io_uring_enter failed; relay worker stops");
                return;
            }
        }
        tally.syscalls += 1;
        cqes.clear();
        cqes.extend(r.ring.completion());
        let mut st = w.lock();
        let now = sys::monotonic_ns();
        let now_i = Instant::now();
        let mut closed_any = false;
        for cqe in &cqes {
            let ud = cqe.user_data();
            let id = ud & ID_MASK;
            let res = cqe.result();
            let more = cqueue::more(cqe.flags());
            match ud >> KIND_SHIFT {
                KIND_SEND => {
                    let i = id as usize;
                    if let Some(s) = r.slots.get_mut(i) {
                        if res >= 0 {
                            tally.sent += 1;
                        } else {
                            tally.failed += 1;
                        }
                        if let Some(b) = s.bid.take() {
                            r.bufs.give_back(b);
                            r.held = r.held.saturating_sub(1);
                            rearm.append(&mut starved);
                        }
                        s.data = Vec::new();
                        r.free.push(i);
                    }
                }
                KIND_RECV => {
                    let bid = cqueue::buffer_select(cqe.flags());
                    if res >= 0 {
                        if let Some(b) = bid {
                            let kept = on_recv(
                                &mut r,
                                &mut st,
                                id,
                                b,
                                res as usize,
                                (now, now_i),
                                control.is_some(),
                                &mut ctl,
                                &mut owned,
                                &mut tally,
                            );
                            if !kept {
                                r.bufs.give_back(b);
                            }
                        }
                    } else if let Some(b) = bid {
                        r.bufs.give_back(b);
                    }
                    if !more {
                        r.armed = r.armed.saturating_sub(1);
                        if st.closing.contains_key(&id) {
                            release_file(&mut r, id);
                            st.closing.remove(&id);
                            closed_any = true;
                        } else if st.socks.contains_key(&id) {
                            if res == -libc::ENOBUFS {
                                starved.push(id);
                            } else {
                                if res < 0 {
                                    debug!(token = id, error = %io::Error::from_raw_os_error(-res), "relay receive ended; re-armed");
                                }
                                rearm.push(id);
                            }
                        }
                    }
                }
                // Cancellation running concurrently with the receive: ask again.
                KIND_CANCEL if res == -libc::EALREADY => st.ring_ops.push(RingOp::Cancel(id)),
                // The receive was not armed (ENOENT): the socket can go now.
                KIND_CANCEL if res < 0 && st.closing.contains_key(&id) => {
                    release_file(&mut r, id);
                    st.closing.remove(&id);
                    closed_any = true;
                }
                KIND_WAKE => {
                    w.wake.drain();
                    tally.syscalls += 1;
                    if !more {
                        wake_rearm = true;
                    }
                }
                _ => {}
            }
        }
        after_batch(&mut st, now, &mut last_tick, hook, &mut owned);
        if !st.connect_dirty.is_empty() {
            reconcile_twins(&mut r, &mut st);
        }
        // Control requests (from control calls, the hook, and twins retired just now).
        for op in std::mem::take(&mut st.ring_ops) {
            match op {
                RingOp::Arm(token) => rearm.push(token),
                RingOp::Cancel(token) => cancel_recv(&mut r, token),
            }
        }
        // No send holds a buffer (a burst used them all, and they are back now): re-arm now.
        if !starved.is_empty() && r.held == 0 {
            rearm.append(&mut starved);
        }
        for token in rearm.drain(..) {
            if let Some(fd) = st.socks.get(&token).map(|s| s.sock.as_raw_fd()) {
                arm_recv(&mut r, fd, token);
            }
        }
        if wake_rearm {
            arm_wake(&mut r, w);
            wake_rearm = false;
        }
        if !r.twins_waiting.is_empty() {
            arm_waiting_twins(&mut r, &st, now);
        }
        for (from, to, data) in owned.drain(..) {
            match egress(&r, &st, from, to) {
                Some(t) => {
                    queue_send(&mut r, t, to, Bytes::Owned(data), &mut tally);
                }
                None => tally.failed += 1,
            }
        }
        r.bufs.publish();
        tally.publish(counters);
        drop(st);
        if closed_any {
            w.notify_closed();
        }
        deliver_control(control, counters, &mut ctl);
    }
    shutdown(&mut r);
}

/// Cancels every request and waits (bounded) until the kernel no longer refers to the
/// buffers, so that dropping them is safe.
fn shutdown(r: &mut Ring) {
    let e = opcode::AsyncCancel2::new(types::CancelBuilder::any())
        .build()
        .user_data(user_data(KIND_CANCEL, ID_MASK));
    push(&mut r.ring, &e);
    let ts = types::Timespec::from(Duration::from_millis(50));
    for _ in 0..40 {
        if r.armed == 0 && r.free.len() == SEND_SLOTS {
            // The registered-file table holds the sockets open: let go now, not when the
            // kernel gets round to tearing the ring down, so their ports are free at once.
            if r.files.take().is_some() {
                if let Err(e) = r.ring.submitter().unregister_files() {
                    warn!(error = %e, "unregistering relay sockets");
                }
            }
            return;
        }
        let args = types::SubmitArgs::new().timespec(&ts);
        // The kernel runs at most about `want` completions' worth of deferred work per call.
        let want = (r.armed + SEND_SLOTS - r.free.len()).clamp(1, usize::from(BUFFERS));
        if let Err(e) = r.ring.submitter().submit_with_args(want, &args) {
            if !matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) {
                break;
            }
        }
        let done: Vec<cqueue::Entry> = r.ring.completion().collect();
        for cqe in done {
            let ud = cqe.user_data();
            match ud >> KIND_SHIFT {
                KIND_RECV if !cqueue::more(cqe.flags()) => r.armed = r.armed.saturating_sub(1),
                KIND_SEND => r.free.push((ud & ID_MASK) as usize),
                _ => {}
            }
        }
    }
    // Still referenced: leak the buffers rather than free memory the kernel may write.
    warn!(
        receives = r.armed,
        sends = SEND_SLOTS - r.free.len(),
        "io_uring requests outstanding at relay shutdown; buffers leaked"
    );
    std::mem::forget(std::mem::take(&mut r.bufs.bufs));
}

/// One received datagram in buffer `bid` (`len` bytes of recvmsg output) on the socket of
/// `token`. Returns true when the buffer went out in a send (returned on its completion).
#[allow(clippy::too_many_arguments)]
fn on_recv(
    r: &mut Ring,
    st: &mut WorkerState,
    token: u64,
    bid: u16,
    len: usize,
    (now, now_i): (u64, Instant),
    want_ctl: bool,
    ctl: &mut Vec<ControlPacket>,
    owned: &mut Vec<OwnedSend>,
    tally: &mut Tally,
) -> bool {
    tally.received += 1;
    let Some(leg) = st.socks.get(&token).map(|s| (s.local, s.secure)) else {
        // Removed pair: not forwarded.
        tally.no_flow += 1;
        return false;
    };
    let buf = r.bufs.buf(bid, len);
    let Ok(msg) = types::RecvMsgOut::parse(buf, &r.msghdr) else {
        return false;
    };
    let Some(src) = sockaddr_from_name(msg.name_data()) else {
        return false;
    };
    let payload: &[u8] = if msg.is_payload_truncated() {
        &[]
    } else {
        msg.payload_data()
    };
    // The payload's place in the buffer: it is sent from there.
    let (poff, plen) = (
        (payload.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize),
        payload.len(),
    );
    let fwd = on_datagram(
        st, leg, src, payload, now, now_i, want_ctl, ctl, owned, tally,
    );
    let Some((from, to)) = fwd else {
        return false;
    };
    let Some(t) = egress(r, st, from, to) else {
        tally.failed += 1;
        return false;
    };
    // Send the payload in place: the slot keeps the buffer until the send completes.
    queue_send(
        r,
        t,
        to,
        Bytes::Buffer {
            bid,
            off: poff,
            len: plen,
        },
        tally,
    )
}

/// The socket to send from `local` to `to`: its connected twin when that is connected to
/// `to` (true: send without an address), else the relay socket itself.
fn egress(r: &Ring, st: &WorkerState, local: SocketAddr, to: SocketAddr) -> Option<(Target, bool)> {
    let (token, s) = st.sock_at(local)?;
    Some(match s.connected {
        Some(c) if c.peer == to => (target(r, c.token, c.fd), true),
        _ => (target(r, token, s.sock.as_raw_fd()), false),
    })
}

/// The source address the kernel wrote into the recvmsg output.
fn sockaddr_from_name(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = name
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies n <= size_of(sockaddr_storage) bytes into it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            n,
        );
    }
    if n < 2 {
        return None;
    }
    sys::from_sockaddr(&ss)
}
