//! Server transactions (RFC 3261 17.2) with the RFC 6026 "Accepted" state.
//!
//! The owner keeps the last response it sent; the transaction decides when that response is
//! sent again (request retransmissions, timer G), whether an ACK is absorbed, and when the
//! transaction ends.

use std::time::{Duration, Instant};

use super::{Reliability, TimerConfig, TransactionKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, nothing sent yet (17.2.2).
    Trying,
    /// A provisional response was sent (INVITE transactions start here: the proxy sends 100).
    Proceeding,
    /// A final response was sent (non-2xx for INVITE); waiting for ACK or absorbing retransmissions.
    Completed,
    /// RFC 6026: a 2xx to an INVITE was sent; INVITE retransmissions are absorbed (timer L).
    Accepted,
    /// INVITE only: the ACK for the non-2xx final response arrived (timer I).
    Confirmed,
    Terminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// Send the last response again (timer G).
    Retransmit,
    /// Timer H fired: the ACK for a non-2xx final response never came.
    Timeout,
    /// The transaction is over and can be forgotten.
    Terminated,
}

/// What to do with a retransmitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetransmissionDisposition {
    /// Send the last response again.
    ResendLastResponse,
    /// Absorb silently.
    Absorb,
}

/// What to do with an ACK that matched an INVITE server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckDisposition {
    /// ACK for our non-2xx final response: hop-by-hop, ends here.
    Absorb,
    /// ACK in the Accepted state (an end-to-end ACK that reused the INVITE branch): the TU
    /// forwards it.
    PassToTu,
}

#[derive(Debug, Clone)]
pub struct ServerTransaction {
    kind: TransactionKind,
    state: ServerState,
    reliability: Reliability,
    timers: TimerConfig,
    has_response: bool,
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    timeout_at: Option<Instant>,
    end_at: Option<Instant>,
    final_status: Option<u16>,
}

impl ServerTransaction {
    /// Creates the transaction for a request just received.
    pub fn new(kind: TransactionKind, reliability: Reliability, timers: TimerConfig) -> Self {
        ServerTransaction {
            kind,
            state: match kind {
                TransactionKind::Invite => ServerState::Proceeding,
                TransactionKind::NonInvite => ServerState::Trying,
            },
            reliability,
            timers,
            has_response: false,
            retransmit_at: None,
            retransmit_interval: timers.t1,
            timeout_at: None,
            end_at: None,
            final_status: None,
        }
    }

    pub fn kind(&self) -> TransactionKind {
        self.kind
    }
    pub fn state(&self) -> ServerState {
        self.state
    }
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
    /// The final status sent, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.final_status
    }
    /// True until a final response has been sent.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The TU wants to send a response with `status`. Returns whether it may be sent; the
    /// owner then stores it as the last response.
    pub fn send_response(&mut self, now: Instant, status: u16) -> bool {
        let reliable = self.reliability.is_reliable();
        match (self.kind, self.state) {
            (_, ServerState::Terminated) => false,
            (TransactionKind::Invite, ServerState::Proceeding) => {
                self.has_response = true;
                if status < 200 {
                } else if status < 300 {
                    self.enter_final(ServerState::Accepted, status);
                    self.end_at = Some(now + self.timers.t1x64()); // timer L
                } else {
                    self.enter_final(ServerState::Completed, status);
                    if !reliable {
                        self.retransmit_interval = self.timers.t1;
                        self.retransmit_at = Some(now + self.timers.t1); // timer G
                    }
                    self.timeout_at = Some(now + self.timers.t1x64()); // timer H
                }
                true
            }
            // RFC 6026 8.5: 2xx retransmissions from the TU are sent in Accepted.
            (TransactionKind::Invite, ServerState::Accepted) => (200..300).contains(&status),
            (TransactionKind::Invite, _) => false,
            (TransactionKind::NonInvite, ServerState::Trying | ServerState::Proceeding) => {
                self.has_response = true;
                if status < 200 {
                    self.state = ServerState::Proceeding;
                } else {
                    self.enter_final(ServerState::Completed, status);
                    self.end_at = Some(now + self.timers.timer_j(reliable));
                }
                true
            }
            (TransactionKind::NonInvite, _) => false,
        }
    }

    fn enter_final(&mut self, state: ServerState, status: u16) {
        self.state = state;
        self.final_status = Some(status);
    }

    /// A retransmission of the request arrived.
    pub fn on_request_retransmission(&mut self) -> RetransmissionDisposition {
        match self.state {
            ServerState::Proceeding | ServerState::Completed if self.has_response => {
                RetransmissionDisposition::ResendLastResponse
            }
            _ => RetransmissionDisposition::Absorb,
        }
    }

    /// An ACK matched this (INVITE) transaction.
    pub fn on_ack(&mut self, now: Instant) -> AckDisposition {
        match self.state {
            ServerState::Completed => {
                self.state = ServerState::Confirmed;
                self.retransmit_at = None;
                self.timeout_at = None;
                self.end_at = Some(now + self.timers.timer_i_k(self.reliability.is_reliable()));
                AckDisposition::Absorb
            }
            ServerState::Accepted => AckDisposition::PassToTu,
            _ => AckDisposition::Absorb,
        }
    }

    pub fn on_timer(&mut self, now: Instant) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        if self.state == ServerState::Terminated {
            return out;
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            self.terminate();
            out.push(ServerEvent::Timeout);
            out.push(ServerEvent::Terminated);
            return out;
        }
        if self.end_at.is_some_and(|t| t <= now) {
            self.terminate();
            out.push(ServerEvent::Terminated);
            return out;
        }
        if let Some(at) = self.retransmit_at {
            if at <= now {
                self.retransmit_interval =
                    self.timers.next_interval(self.retransmit_interval, true);
                self.retransmit_at = Some(now + self.retransmit_interval);
                out.push(ServerEvent::Retransmit);
            }
        }
        out
    }

    pub fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.end_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TimerConfig {
        TimerConfig::default()
    }

    #[test]
    fn invite_non_2xx_retransmits_with_timer_g_until_ack() {
        let now = Instant::now();
        let mut tx = ServerTransaction::new(TransactionKind::Invite, Reliability::Unreliable, t());
        assert_eq!(
            tx.on_request_retransmission(),
            RetransmissionDisposition::Absorb
        );
        assert!(tx.send_response(now, 100));
        assert_eq!(
            tx.on_request_retransmission(),
            RetransmissionDisposition::ResendLastResponse
        );
        assert!(tx.send_response(now, 486));
        assert!(!tx.send_response(now, 500), "only one final response");
        let mut at = vec![];
        for _ in 0..5 {
            let d = tx.next_deadline().unwrap();
            assert_eq!(tx.on_timer(d), vec![ServerEvent::Retransmit]);
            at.push((d - now).as_millis());
        }
        // Timer G: T1, then doubling capped at T2.
        assert_eq!(at, vec![500, 1500, 3500, 7500, 11500]);
        assert_eq!(tx.on_ack(now), AckDisposition::Absorb);
        assert_eq!(tx.state(), ServerState::Confirmed);
        assert_eq!(
            tx.on_request_retransmission(),
            RetransmissionDisposition::Absorb
        );
        assert_eq!(
            tx.on_timer(now + Duration::from_secs(5)),
            vec![ServerEvent::Terminated]
        );
    }

    #[test]
    fn invite_timer_h_fires_without_ack() {
        let now = Instant::now();
        let mut tx = ServerTransaction::new(TransactionKind::Invite, Reliability::Reliable, t());
        tx.send_response(now, 603);
        assert_eq!(tx.next_deadline(), Some(now + Duration::from_secs(32)));
        assert_eq!(
            tx.on_timer(now + Duration::from_secs(32)),
            vec![ServerEvent::Timeout, ServerEvent::Terminated]
        );
    }

    #[test]
    fn rfc6026_accepted_absorbs_invite_and_sends_2xx_retransmissions() {
        let now = Instant::now();
        let mut tx = ServerTransaction::new(TransactionKind::Invite, Reliability::Unreliable, t());
        tx.send_response(now, 100);
        assert!(tx.send_response(now, 200));
        assert_eq!(tx.state(), ServerState::Accepted);
        assert_eq!(
            tx.on_request_retransmission(),
            RetransmissionDisposition::Absorb
        );
        assert!(tx.send_response(now, 200), "2xx retransmission passes");
        assert!(!tx.send_response(now, 486));
        assert_eq!(tx.on_ack(now), AckDisposition::PassToTu);
        assert_eq!(
            tx.on_timer(now + Duration::from_secs(32)),
            vec![ServerEvent::Terminated]
        );
    }

    #[test]
    fn non_invite_trying_absorbs_then_resends_final_until_timer_j() {
        let now = Instant::now();
        let mut tx =
            ServerTransaction::new(TransactionKind::NonInvite, Reliability::Unreliable, t());
        assert_eq!(tx.state(), ServerState::Trying);
        assert_eq!(
            tx.on_request_retransmission(),
            RetransmissionDisposition::Absorb
        );
        tx.send_response(now, 200);
        assert_eq!(
            tx.on_request_retransmission(),
            RetransmissionDisposition::ResendLastResponse
        );
        assert_eq!(tx.next_deadline(), Some(now + Duration::from_secs(32)));
        let mut rel =
            ServerTransaction::new(TransactionKind::NonInvite, Reliability::Reliable, t());
        rel.send_response(now, 200);
        assert_eq!(rel.on_timer(now), vec![ServerEvent::Terminated]);
    }
}
