//! Timer values of RFC 3261 section 17 and table 4, derived from T1, T2 and T4.

use std::time::Duration;

/// Configured base timers. Every transaction timer (A-M) derives from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            t4: Duration::from_millis(5000),
        }
    }
}

impl TimerConfig {
    pub fn from_millis(t1: u64, t2: u64, t4: u64) -> Self {
        TimerConfig {
            t1: Duration::from_millis(t1.max(1)),
            t2: Duration::from_millis(t2.max(1)),
            t4: Duration::from_millis(t4.max(1)),
        }
    }
    /// 64*T1: timers B, F, H, J (unreliable), L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer D: > 32 s for unreliable transports, 0 for reliable.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1x64())
        }
    }
    /// Timers I and K: T4 for unreliable, 0 for reliable.
    pub fn timer_i_k(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }
    /// Timer J: 64*T1 for unreliable, 0 for reliable.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t1x64()
        }
    }
    /// Next retransmission interval: doubles, capped at T2 (timers E and G), or uncapped
    /// (timer A) when `cap` is false.
    pub fn next_interval(&self, current: Duration, cap: bool) -> Duration {
        let doubled = current * 2;
        if cap {
            doubled.min(self.t2)
        } else {
            doubled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_follow_table_4() {
        let t = TimerConfig::default();
        assert_eq!(t.t1x64(), Duration::from_secs(32));
        assert_eq!(t.timer_d(false), Duration::from_secs(32));
        assert_eq!(t.timer_d(true), Duration::ZERO);
        assert_eq!(t.timer_i_k(false), Duration::from_secs(5));
        assert_eq!(t.timer_j(true), Duration::ZERO);
        let mut iv = t.t1;
        let mut seen = vec![];
        for _ in 0..5 {
            iv = t.next_interval(iv, true);
            seen.push(iv.as_millis());
        }
        assert_eq!(seen, vec![1000, 2000, 4000, 4000, 4000]);
        // Timer D is at least 64*T1 when T1 is raised.
        let slow = TimerConfig::from_millis(1000, 4000, 5000);
        assert_eq!(slow.timer_d(false), Duration::from_secs(64));
    }
}
