//! Packet index estimation (RFC 3711 3.3.1, Appendix A) and the replay list (RFC 3711 3.3.2).

/// Size of the sliding replay window in packets (RFC 3711 requires at least 64; libsrtp uses 128).
pub const REPLAY_WINDOW: u64 = 128;

/// Largest SRTP packet index (48 bits).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;

/// Why a packet index is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayVerdict {
    /// Index already seen.
    Replayed,
    /// Index older than the window.
    TooOld,
}

/// Highest index seen plus a bitmap of the `REPLAY_WINDOW` indexes below and including it
/// (bit `k` set = index `highest - k` received).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayWindow {
    highest: u64,
    bitmap: u128,
}

impl ReplayWindow {
    /// A window whose highest index is `index` (not yet marked as received).
    pub(crate) fn starting_at(index: u64) -> Self {
        Self {
            highest: index,
            bitmap: 0,
        }
    }

    pub(crate) fn highest(&self) -> u64 {
        self.highest
    }

    pub(crate) fn check(&self, index: u64) -> Result<(), ReplayVerdict> {
        if index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= REPLAY_WINDOW {
            return Err(ReplayVerdict::TooOld);
        }
        if self.bitmap & (1u128 << delta) != 0 {
            return Err(ReplayVerdict::Replayed);
        }
        Ok(())
    }

    /// Marks `index` received; call only after `check` passed and the packet authenticated.
    pub(crate) fn accept(&mut self, index: u64) {
        if index > self.highest {
            let shift = index - self.highest;
            self.bitmap = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.bitmap << shift
            };
            self.highest = index;
            self.bitmap |= 1;
        } else {
            let delta = self.highest - index;
            if delta < REPLAY_WINDOW {
                self.bitmap |= 1u128 << delta;
            }
        }
    }
}

/// Estimates the 48-bit packet index of sequence number `seq` given the highest index seen
/// (RFC 3711 Appendix A). `None` when the estimate would be negative (a sequence number from
/// before the first packet, across a ROC of 0) or beyond 2^48.
pub(crate) fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = (highest >> 16) as i64;
    let s_l = (highest & 0xffff) as i64;
    let seq_i = i64::from(seq);
    let v = if s_l < 32768 {
        if seq_i - s_l > 32768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32768 > seq_i {
        roc + 1
    } else {
        roc
    };
    if v < 0 {
        return None;
    }
    let index = ((v as u64) << 16) | u64::from(seq);
    (index <= MAX_RTP_INDEX).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimation_follows_appendix_a() {
        // In order.
        assert_eq!(estimate_index(100, 101), Some(101));
        // Rollover forward.
        assert_eq!(estimate_index(65535, 0), Some(65536));
        assert_eq!(
            estimate_index((3 << 16) | 65000, 200),
            Some((4 << 16) | 200)
        );
        // Late packet from before a rollover.
        assert_eq!(
            estimate_index((4 << 16) | 10, 65530),
            Some((3 << 16) | 65530)
        );
        // Before the first ROC: no valid index.
        assert_eq!(estimate_index(10, 65530), None);
        // Jump of just under half the space stays in the same ROC.
        assert_eq!(estimate_index(1000, 1000 + 32767), Some(1000 + 32767));
    }

    #[test]
    fn window_rejects_replays_and_old() {
        let mut w = ReplayWindow::starting_at(1000);
        assert!(w.check(1000).is_ok());
        w.accept(1000);
        assert_eq!(w.check(1000), Err(ReplayVerdict::Replayed));
        assert!(w.check(999).is_ok());
        w.accept(999);
        assert_eq!(w.check(999), Err(ReplayVerdict::Replayed));
        w.accept(1200);
        assert_eq!(w.check(1000), Err(ReplayVerdict::TooOld));
        assert!(w.check(1200 - 127).is_ok());
        assert_eq!(w.check(1200 - 128), Err(ReplayVerdict::TooOld));
        w.accept(1150);
        assert_eq!(w.check(1150), Err(ReplayVerdict::Replayed));
        assert!(w.check(1151).is_ok());
        assert_eq!(w.highest(), 1200);
    }
}
