//! Thin libc wrappers for the userspace relay: epoll, eventfd, recvmmsg,
//! sendmmsg, CLOCK_MONOTONIC, sockaddr conversion.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// CLOCK_MONOTONIC in ns (the clock the XDP program's `last_seen_ns` uses).
pub fn monotonic_ns() -> u64 {
    // SAFETY: zeroed timespec is valid; clock_gettime writes into it.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An epoll instance (level-triggered).
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd and event pointer.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    pub fn del(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: valid epoll fd; a null event is allowed for DEL.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Waits up to `timeout_ms`; returns the number of events written.
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
        // SAFETY: events is a valid writable buffer of `max` entries.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}

/// An eventfd used to wake a worker.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: fd was just returned by the kernel.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Converts a socket address into a sockaddr_storage; returns its length.
pub fn to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            sin.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Converts a sockaddr_storage filled by the kernel; `None` for other families.
pub fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says it is a sockaddr_in.
            let sin = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says it is a sockaddr_in6.
            let sin6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            // A v4-mapped source on a dual-stack socket is reported as IPv4.
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::V4(SocketAddrV4::new(
                    v4,
                    u16::from_be(sin6.sin6_port),
                )));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Maximum datagram size the relay handles; larger ones are truncated and
/// dropped as garbage (RTP over UDP stays well below the MTU).
pub const BUF_SIZE: usize = 2048;

/// Receive/send batch buffers for recvmmsg/sendmmsg.
pub struct Batch {
    pub bufs: Vec<[u8; BUF_SIZE]>,
    pub addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    pub hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in iovs/hdrs only point into this struct's own
// heap buffers; the struct is moved between threads only as a whole.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(n: usize) -> Self {
        // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
        let mut b = Batch {
            bufs: vec![[0u8; BUF_SIZE]; n],
            addrs: vec![unsafe { zeroed() }; n],
            iovs: vec![unsafe { zeroed() }; n],
            hdrs: vec![unsafe { zeroed() }; n],
        };
        for i in 0..n {
            b.iovs[i].iov_base = b.bufs[i].as_mut_ptr().cast();
            b.iovs[i].iov_len = BUF_SIZE;
        }
        b
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// recvmmsg(MSG_DONTWAIT) into the batch. Returns how many datagrams
    /// were read (0 on EAGAIN). Lengths are in `hdrs[i].msg_len`, truncation
    /// in `hdrs[i].msg_hdr.msg_flags & MSG_TRUNC`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.capacity();
        for i in 0..n {
            self.iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            self.iovs[i].iov_len = BUF_SIZE;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: hdrs/iovs/addrs/bufs are valid for `n` entries.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        Ok(rc as usize)
    }

    /// Payload of received datagram `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let len = (self.hdrs[i].msg_len as usize).min(BUF_SIZE);
        &self.bufs[i][..len]
    }

    pub fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        from_sockaddr(&self.addrs[i])
    }
}

/// sendmmsg of `items` (payload, destination) from socket `fd`. Returns how
/// many were sent; the rest were dropped (socket buffer full, error).
pub fn send_batch(
    fd: RawFd,
    items: &[(&[u8], SocketAddr)],
    scratch_addrs: &mut Vec<libc::sockaddr_storage>,
    scratch_iovs: &mut Vec<libc::iovec>,
    scratch_hdrs: &mut Vec<libc::mmsghdr>,
) -> usize {
    let n = items.len();
    if n == 0 {
        return 0;
    }
    // SAFETY: all-zero values are valid for these C structs.
    scratch_addrs.resize(n, unsafe { zeroed() });
    scratch_iovs.resize(n, unsafe { zeroed() });
    scratch_hdrs.resize(n, unsafe { zeroed() });
    for (i, (data, to)) in items.iter().enumerate() {
        let len = to_sockaddr(*to, &mut scratch_addrs[i]);
        scratch_iovs[i].iov_base = data.as_ptr() as *mut libc::c_void;
        scratch_iovs[i].iov_len = data.len();
        let h = &mut scratch_hdrs[i].msg_hdr;
        h.msg_name = (&mut scratch_addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = len;
        h.msg_iov = &mut scratch_iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
        scratch_hdrs[i].msg_len = 0;
    }
    let mut sent = 0usize;
    let mut retries = 0;
    while sent < n {
        // SAFETY: the slices are valid for n - sent entries from `sent`; the
        // payload pointers are only read by the kernel.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                scratch_hdrs.as_mut_ptr().add(sent),
                (n - sent) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted && retries < 3 {
                retries += 1;
                continue;
            }
            // Skip the datagram that failed (e.g. unreachable) and go on.
            tracing::trace!(error = %e, "sendmmsg");
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            sent += 1;
            retries += 1;
            if retries > 8 {
                break;
            }
            continue;
        }
        if rc == 0 {
            break;
        }
        sent += rc as usize;
    }
    sent.min(n)
}

/// Sets SO_REUSEADDR on a bound UDP socket, so that [`connected_udp`] may bind a second
/// socket to its address. A socket without the option still cannot bind there (both must
/// have it), so port allocation by bind keeps detecting ports in use.
pub fn set_reuseaddr(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd and int option.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A non-blocking UDP socket bound to `local` beside the socket already there (which has
/// [`set_reuseaddr`]) and connected to `peer`. The kernel delivers `peer`'s datagrams to
/// it (an exact four-tuple match wins over the unconnected socket, and early demux finds it
/// without a route lookup); everything from other sources still reaches the unconnected
/// one. Sends on it without an address use the socket's cached route.
pub fn connected_udp(
    local: SocketAddr,
    peer: SocketAddr,
    buffers: i32,
) -> io::Result<std::net::UdpSocket> {
    let family = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call.
    let fd = cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = std::net::UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    set_reuseaddr(fd)?;
    set_buffers(fd, buffers);
    // SAFETY: all-zero is a valid sockaddr_storage; to_sockaddr fills it.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = to_sockaddr(local, &mut ss);
    // SAFETY: ss holds a sockaddr of length len.
    cvt(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
    let len = to_sockaddr(peer, &mut ss);
    // SAFETY: as above.
    cvt(unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(sock)
}

/// Whether a datagram is waiting in the receive queue of UDP socket `fd` (FIONREAD; an
/// error counts as none).
pub fn pending_datagram(fd: RawFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    rc == 0 && n > 0
}

/// SO_RCVBUF / SO_SNDBUF (best effort).
pub fn set_buffers(fd: RawFd, bytes: i32) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: valid fd and int option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                size_of::<i32>() as libc::socklen_t,
            )
        };
    }
}

/// Thread CPU time (user + system) of the calling process, in ns.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: zeroed timespec is valid.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for s in ["192.0.2.1:5004", "[2001:db8::7]:40000", "0.0.0.0:0"] {
            let a: SocketAddr = s.parse().unwrap();
            // SAFETY: zeroed storage is valid.
            let mut st: libc::sockaddr_storage = unsafe { zeroed() };
            to_sockaddr(a, &mut st);
            assert_eq!(from_sockaddr(&st), Some(a));
        }
    }
}
