//! Minimal rtnetlink client: which XDP program is attached to an interface, and
//! detach (or, for tests, attach) one through `IFLA_XDP`. aya keeps its own
//! netlink code private, and stale-program cleanup needs both operations.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLA_F_NESTED: u16 = 0x8000;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;

/// `XDP_FLAGS_SKB_MODE`.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 2;
/// `XDP_FLAGS_DRV_MODE`.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 4;

/// XDP programs attached to one interface, as the kernel reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpAttachment {
    /// Program id in native (driver) mode, if any.
    pub native_prog_id: Option<u32>,
    /// Program id in generic (skb) mode, if any.
    pub generic_prog_id: Option<u32>,
}

impl XdpAttachment {
    /// True if no XDP program is attached.
    pub fn is_empty(&self) -> bool {
        self.native_prog_id.is_none() && self.generic_prog_id.is_none()
    }
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: valid pointer and length for SO_RCVTIMEO.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, seq: 1 })
    }

    fn send(&mut self, msg_type: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + 16 + attrs.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct ifinfomsg
        buf.push(libc::AF_UNSPEC as u8);
        buf.push(0);
        buf.extend_from_slice(&0u16.to_ne_bytes());
        buf.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(attrs);
        // SAFETY: zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and sa are valid for the given lengths.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Receives messages until one with `seq` is found; returns (type, payload).
    fn recv(&mut self, seq: u32) -> io::Result<(u16, Vec<u8>)> {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let data = &buf[..n as usize];
            let mut off = 0usize;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(read4(data, off)) as usize;
                if len < 16 || off + len > data.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink length",
                    ));
                }
                let ty = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                let mseq = u32::from_ne_bytes(read4(data, off + 8));
                if mseq == seq {
                    return Ok((ty, data[off + 16..off + len].to_vec()));
                }
                off += align4(len);
            }
        }
    }

    fn expect_ack(&mut self, seq: u32) -> io::Result<()> {
        let (ty, payload) = self.recv(seq)?;
        if ty != NLMSG_ERROR || payload.len() < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "expected a netlink ack",
            ));
        }
        let err = i32::from_ne_bytes(read4(&payload, 0));
        if err == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-err))
        }
    }
}

fn read4(d: &[u8], off: usize) -> [u8; 4] {
    [d[off], d[off + 1], d[off + 2], d[off + 3]]
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// Iterates `(type, payload)` over a block of netlink attributes.
fn attrs(mut d: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if d.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([d[0], d[1]]) as usize;
        let ty = u16::from_ne_bytes([d[2], d[3]]) & !NLA_F_NESTED;
        if len < 4 || len > d.len() {
            return None;
        }
        let item = (ty, &d[4..len]);
        d = &d[align4(len).min(d.len())..];
        Some(item)
    })
}

fn u32_attr(p: &[u8]) -> Option<u32> {
    (p.len() >= 4).then(|| u32::from_ne_bytes(read4(p, 0)))
}

/// Which XDP programs are attached to `ifindex` (in the caller's network namespace).
pub fn xdp_attachment(ifindex: u32) -> io::Result<XdpAttachment> {
    let mut s = Socket::open()?;
    let seq = s.send(RTM_GETLINK, NLM_F_REQUEST, ifindex, &[])?;
    let (ty, payload) = s.recv(seq)?;
    if ty == NLMSG_ERROR {
        let err = if payload.len() >= 4 {
            i32::from_ne_bytes(read4(&payload, 0))
        } else {
            -libc::EIO
        };
        return Err(io::Error::from_raw_os_error(-err));
    }
    if ty != RTM_NEWLINK || payload.len() < 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected netlink reply",
        ));
    }
    let mut out = XdpAttachment::default();
    for (ty, p) in attrs(&payload[16..]) {
        if ty != IFLA_XDP {
            continue;
        }
        let mut attached = 0u8;
        let mut prog_id = None;
        for (xty, xp) in attrs(p) {
            match xty {
                IFLA_XDP_ATTACHED => attached = xp.first().copied().unwrap_or(0),
                IFLA_XDP_PROG_ID => prog_id = u32_attr(xp),
                IFLA_XDP_DRV_PROG_ID => out.native_prog_id = u32_attr(xp),
                IFLA_XDP_SKB_PROG_ID => out.generic_prog_id = u32_attr(xp),
                _ => {}
            }
        }
        // With a single program the kernel reports only IFLA_XDP_PROG_ID.
        match (attached, prog_id) {
            (1, Some(id)) => out.native_prog_id = Some(id),
            (2, Some(id)) => out.generic_prog_id = Some(id),
            _ => {}
        }
    }
    Ok(out)
}

/// Sets (fd >= 0) or clears (fd = -1) the XDP program of `ifindex` in the mode
/// given by `mode_flags` (`XDP_FLAGS_SKB_MODE` or `XDP_FLAGS_DRV_MODE`).
/// Clearing fails with EBUSY if the program was attached through a bpf_link.
pub(crate) fn set_xdp_fd(ifindex: u32, fd: i32, mode_flags: u32) -> io::Result<()> {
    let mut inner = Vec::new();
    push_attr(&mut inner, IFLA_XDP_FD, &fd.to_ne_bytes());
    push_attr(&mut inner, IFLA_XDP_FLAGS, &mode_flags.to_ne_bytes());
    let mut outer = Vec::new();
    push_attr(&mut outer, IFLA_XDP | NLA_F_NESTED, &inner);
    let mut s = Socket::open()?;
    let seq = s.send(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex, &outer)?;
    s.expect_ack(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_parse_nested_and_aligned() {
        let mut inner = Vec::new();
        push_attr(&mut inner, IFLA_XDP_ATTACHED, &[2]);
        push_attr(&mut inner, IFLA_XDP_PROG_ID, &77u32.to_ne_bytes());
        let mut outer = Vec::new();
        push_attr(&mut outer, 3, b"veth0\0");
        push_attr(&mut outer, IFLA_XDP | NLA_F_NESTED, &inner);
        let got: Vec<_> = attrs(&outer).map(|(t, p)| (t, p.len())).collect();
        assert_eq!(got, vec![(3, 6), (IFLA_XDP, inner.len())]);
        let (_, p) = attrs(&outer).nth(1).unwrap();
        let x: Vec<_> = attrs(p).collect();
        assert_eq!(x[0], (IFLA_XDP_ATTACHED, &[2u8][..]));
        assert_eq!(u32_attr(x[1].1), Some(77));
    }

    #[test]
    fn attrs_stop_on_truncated_input() {
        let bad = [8u8, 0, 1, 0, 0];
        assert_eq!(attrs(&bad).count(), 0);
        assert_eq!(attrs(&[]).count(), 0);
    }
}
