//! Trunk health probing with SIP OPTIONS (S-28), sans-IO bookkeeping.
//!
//! Each trunk with a probe interval gets an OPTIONS every interval. A probe that gets no
//! final response before the next one is due, or that is answered 408 or 503, or that cannot
//! be sent, is a failure; `probe_failures` failures in a row mark the trunk down. Any other
//! final response marks it up again. Down trunks are skipped by routing.

use std::time::{Duration, Instant};

use portcullis_config::Config;

/// Probe state of one trunk.
#[derive(Debug, Clone)]
pub struct TrunkProbe {
    pub name: String,
    pub interval: Duration,
    pub failures_to_down: u32,
    pub up: bool,
    pub consecutive_failures: u32,
    /// Client transaction of the probe in flight.
    pub outstanding: Option<u64>,
}

/// What a probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    WentDown,
    WentUp,
}

#[derive(Debug, Default)]
pub struct TrunkHealth {
    probes: Vec<TrunkProbe>,
}

impl TrunkHealth {
    pub fn from_config(cfg: &Config) -> TrunkHealth {
        TrunkHealth {
            probes: cfg
                .trunks
                .iter()
                .filter(|t| t.probe_interval_s > 0)
                .map(|t| TrunkProbe {
                    name: t.name.clone(),
                    interval: Duration::from_secs(t.probe_interval_s),
                    failures_to_down: t.probe_failures.max(1),
                    up: true,
                    consecutive_failures: 0,
                    outstanding: None,
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&TrunkProbe> {
        self.probes.get(i)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut TrunkProbe> {
        self.probes.get_mut(i)
    }

    /// Whether routing may use this trunk (unprobed trunks are always up).
    pub fn is_up(&self, trunk: &str) -> bool {
        self.probes
            .iter()
            .find(|p| p.name == trunk)
            .is_none_or(|p| p.up)
    }

    /// Records a probe outcome.
    pub fn record(&mut self, i: usize, ok: bool) -> Transition {
        let Some(p) = self.probes.get_mut(i) else {
            return Transition::None;
        };
        p.outstanding = None;
        if ok {
            p.consecutive_failures = 0;
            if !p.up {
                p.up = true;
                return Transition::WentUp;
            }
        } else {
            p.consecutive_failures = p.consecutive_failures.saturating_add(1);
            if p.up && p.consecutive_failures >= p.failures_to_down {
                p.up = false;
                return Transition::WentDown;
            }
        }
        Transition::None
    }

    /// The next probe for trunk `i` is due; returns true if the previous one was still
    /// unanswered (a failure).
    pub fn due(&mut self, i: usize, _now: Instant) -> Option<u64> {
        self.probes.get_mut(i).and_then(|p| p.outstanding.take())
    }
}

/// Whether a final response to a probe counts as alive.
pub fn response_is_alive(status: u16) -> bool {
    status >= 200 && status != 408 && status != 503
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_mark_down_one_success_marks_up() {
        let mut h = TrunkHealth {
            probes: vec![TrunkProbe {
                name: "a".into(),
                interval: Duration::from_secs(1),
                failures_to_down: 2,
                up: true,
                consecutive_failures: 0,
                outstanding: None,
            }],
        };
        assert!(h.is_up("a") && h.is_up("unprobed"));
        assert_eq!(h.record(0, false), Transition::None);
        assert_eq!(
            h.record(0, true),
            Transition::None,
            "a success resets the count"
        );
        assert_eq!(h.record(0, false), Transition::None);
        assert_eq!(h.record(0, false), Transition::WentDown);
        assert!(!h.is_up("a"));
        assert_eq!(h.record(0, false), Transition::None);
        assert_eq!(h.record(0, true), Transition::WentUp);
        assert!(response_is_alive(200) && response_is_alive(404) && response_is_alive(405));
        assert!(!response_is_alive(503) && !response_is_alive(408) && !response_is_alive(180));
    }
}
