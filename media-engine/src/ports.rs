//! Relay port allocation per media interface.
//!
//! A bitmap over the interface's RTP port range. Pairs are an even RTP port with RTCP on the
//! next (odd) port (RFC 3550 11); a single port is used when RTCP is multiplexed (RFC 5761).
//! Allocation walks round-robin from a cursor so a released port is not handed out again at
//! once (late packets of a finished call do not land in a new one). No sockets are opened
//! here: the datapath binds the ports it is given.

/// RTP port and (unless RTCP is multiplexed) RTCP port of one relay endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayPorts {
    pub rtp: u16,
    pub rtcp: Option<u16>,
}

/// Port bitmap for one interface.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    /// First port (even).
    base: u16,
    /// Number of ports managed (`base..base+len`).
    len: usize,
    used: Vec<u64>,
    in_use: usize,
    /// Next pair index to try.
    cursor: usize,
}

impl PortAllocator {
    /// Ports `min..=max`; an odd `min` is rounded up so RTP ports are even. An empty range
    /// gives an allocator that always reports exhaustion.
    pub fn new(min: u16, max: u16) -> Self {
        let base = if min % 2 == 1 {
            min.saturating_add(1)
        } else {
            min
        };
        let len = if max >= base {
            usize::from(max - base) + 1
        } else {
            0
        };
        PortAllocator {
            base,
            len,
            used: vec![0; len.div_ceil(64)],
            in_use: 0,
            cursor: 0,
        }
    }

    /// Ports in the range.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// Ports currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Ports not allocated.
    pub fn free(&self) -> usize {
        self.len - self.in_use
    }

    fn is_set(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.used[i / 64] |= 1 << (i % 64);
        self.in_use += 1;
    }

    fn clear(&mut self, i: usize) {
        self.used[i / 64] &= !(1 << (i % 64));
        self.in_use -= 1;
    }

    fn port(&self, i: usize) -> u16 {
        // i < len <= 65536 - base, so this cannot overflow.
        self.base + i as u16
    }

    /// An even RTP port with its odd RTCP neighbour.
    pub fn allocate_pair(&mut self) -> Option<RelayPorts> {
        let pairs = self.len / 2;
        if pairs == 0 {
            return None;
        }
        for step in 0..pairs {
            let p = (self.cursor + step) % pairs;
            let i = p * 2;
            // Fast skip of fully used words.
            if self.used[i / 64] == u64::MAX {
                continue;
            }
            if !self.is_set(i) && !self.is_set(i + 1) {
                self.set(i);
                self.set(i + 1);
                self.cursor = (p + 1) % pairs;
                return Some(RelayPorts {
                    rtp: self.port(i),
                    rtcp: Some(self.port(i + 1)),
                });
            }
        }
        None
    }

    /// One port for RTP with multiplexed RTCP. Prefers odd ports whose even neighbour is taken
    /// so that free pairs are kept for non-multiplexed streams.
    pub fn allocate_single(&mut self) -> Option<RelayPorts> {
        if self.len == 0 {
            return None;
        }
        let pick = (0..self.len)
            .filter(|&i| i % 2 == 1)
            .find(|&i| !self.is_set(i) && self.is_set(i - 1))
            .or_else(|| (0..self.len).find(|&i| !self.is_set(i)))?;
        self.set(pick);
        Some(RelayPorts {
            rtp: self.port(pick),
            rtcp: None,
        })
    }

    /// Take exactly `port` if it is in range and free.
    pub fn take(&mut self, port: u16) -> bool {
        let Some(i) = self.index(port) else {
            return false;
        };
        if self.is_set(i) {
            return false;
        }
        self.set(i);
        true
    }

    fn index(&self, port: u16) -> Option<usize> {
        let i = usize::from(port.checked_sub(self.base)?);
        (i < self.len).then_some(i)
    }

    /// Give one port back; releasing a port that is not allocated is ignored (and logged).
    pub fn release_port(&mut self, port: u16) {
        match self.index(port) {
            Some(i) if self.is_set(i) => self.clear(i),
            _ => tracing::warn!(port, "release of a relay port that is not allocated"),
        }
    }

    /// Give back both ports of `ports`.
    pub fn release(&mut self, ports: RelayPorts) {
        self.release_port(ports.rtp);
        if let Some(rtcp) = ports.rtcp {
            self.release_port(rtcp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_exhaust_cleanly() {
        let mut a = PortAllocator::new(30000, 30009);
        assert_eq!(a.capacity(), 10);
        let mut got = Vec::new();
        while let Some(p) = a.allocate_pair() {
            assert_eq!(p.rtp % 2, 0);
            assert_eq!(p.rtcp, Some(p.rtp + 1));
            assert!((30000..=30008).contains(&p.rtp));
            got.push(p);
        }
        assert_eq!(got.len(), 5);
        assert_eq!(a.free(), 0);
        assert!(a.allocate_single().is_none());
        a.release(got[2]);
        assert_eq!(a.free(), 2);
        assert_eq!(a.allocate_pair(), Some(got[2]));
    }

    #[test]
    fn odd_min_rounds_up_and_odd_tail_is_not_a_pair() {
        let mut a = PortAllocator::new(30001, 30004);
        assert_eq!(a.capacity(), 3); // 30002, 30003, 30004
        assert_eq!(a.allocate_pair().map(|p| p.rtp), Some(30002));
        assert!(a.allocate_pair().is_none());
        assert_eq!(a.allocate_single().map(|p| p.rtp), Some(30004));
        assert!(a.allocate_single().is_none());
    }

    #[test]
    fn round_robin_does_not_reuse_at_once() {
        let mut a = PortAllocator::new(40000, 40099);
        let p1 = a.allocate_pair().unwrap();
        a.release(p1);
        let p2 = a.allocate_pair().unwrap();
        assert_ne!(p1, p2);
    }

    #[test]
    fn single_prefers_orphan_odd_ports() {
        let mut a = PortAllocator::new(40000, 40003);
        let p = a.allocate_pair().unwrap();
        a.release_port(p.rtcp.unwrap());
        let s = a.allocate_single().unwrap();
        assert_eq!(s.rtp, p.rtp + 1);
        // the other pair is still intact
        assert!(a.allocate_pair().is_some());
    }

    #[test]
    fn take_and_bogus_release() {
        let mut a = PortAllocator::new(40000, 40003);
        assert!(a.take(40001));
        assert!(!a.take(40001));
        assert!(!a.take(39999));
        assert!(!a.take(40004));
        a.release_port(50000); // ignored
        a.release_port(40002); // not allocated: ignored
        assert_eq!(a.in_use(), 1);
        let empty = PortAllocator::new(5000, 4000);
        assert_eq!(empty.capacity(), 0);
    }
}
