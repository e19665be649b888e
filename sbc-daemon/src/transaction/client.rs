//! Client transactions (RFC 3261 17.1) with the RFC 6026 "Accepted" state.
//!
//! The transaction keeps no message bytes: it tells its owner when to retransmit the request
//! ([`ClientEvent::Retransmit`]), when to (re)send the ACK for a non-2xx final response
//! ([`ClientEvent::SendAck`]), and when the transaction timed out or ended.

use std::time::{Duration, Instant};

use super::{Reliability, TimerConfig, TransactionKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet (17.1.1.2).
    Calling,
    /// Non-INVITE sent, no response yet (17.1.2.2).
    Trying,
    /// A provisional response was received.
    Proceeding,
    /// A final response was received; absorbing retransmissions (timer D or K).
    Completed,
    /// RFC 6026: a 2xx to an INVITE was received; further 2xx are passed up (timer M).
    Accepted,
    Terminated,
}

/// What the owner must do after feeding a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// Send the original request again (timers A and E).
    Retransmit,
    /// Send (or send again) the ACK for the non-2xx final response (17.1.1.3).
    SendAck,
    /// No final response in time (timers B and F): the TU treats it as a 408.
    Timeout,
    /// The transaction is over and can be forgotten.
    Terminated,
}

/// The outcome of a response fed to a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseDisposition {
    /// Hand the response to the TU (false: a retransmission the transaction absorbs).
    pub pass_to_tu: bool,
    /// Send (or resend) the ACK for a non-2xx final response.
    pub send_ack: bool,
}

#[derive(Debug, Clone)]
pub struct ClientTransaction {
    kind: TransactionKind,
    state: ClientState,
    reliability: Reliability,
    timers: TimerConfig,
    retransmit_at: Option<Instant>,
    retransmit_interval: Duration,
    timeout_at: Option<Instant>,
    end_at: Option<Instant>,
    last_final: Option<u16>,
}

impl ClientTransaction {
    /// Creates the transaction at the moment the request is first sent.
    pub fn new(
        kind: TransactionKind,
        reliability: Reliability,
        timers: TimerConfig,
        now: Instant,
    ) -> Self {
        let retransmit_at = (!reliability.is_reliable()).then(|| now + timers.t1);
        ClientTransaction {
            kind,
            state: match kind {
                TransactionKind::Invite => ClientState::Calling,
                TransactionKind::NonInvite => ClientState::Trying,
            },
            reliability,
            timers,
            retransmit_at,
            retransmit_interval: timers.t1,
            timeout_at: Some(now + timers.t1x64()),
            end_at: None,
            last_final: None,
        }
    }

    pub fn kind(&self) -> TransactionKind {
        self.kind
    }
    pub fn state(&self) -> ClientState {
        self.state
    }
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
    /// The final status received, if any.
    pub fn final_status(&self) -> Option<u16> {
        self.last_final
    }

    /// Earliest time at which [`ClientTransaction::on_timer`] has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit_at, self.timeout_at, self.end_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds a response that matched this transaction (17.1.3).
    pub fn on_response(&mut self, now: Instant, status: u16) -> ResponseDisposition {
        let provisional = status < 200;
        let success = (200..300).contains(&status);
        match (self.kind, self.state) {
            (_, ClientState::Terminated) => ResponseDisposition::default(),
            (TransactionKind::Invite, ClientState::Calling | ClientState::Proceeding) => {
                if provisional {
                    self.state = ClientState::Proceeding;
                    // Timer A stops once a provisional response arrives; timer B too
                    // (the proxy's timer C takes over).
                    self.retransmit_at = None;
                    self.timeout_at = None;
                    ResponseDisposition {
                        pass_to_tu: true,
                        send_ack: false,
                    }
                } else if success {
                    self.enter_final(ClientState::Accepted, now + self.timers.t1x64(), status);
                    ResponseDisposition {
                        pass_to_tu: true,
                        send_ack: false,
                    }
                } else {
                    let reliable = self.reliability.is_reliable();
                    self.enter_final(
                        ClientState::Completed,
                        now + self.timers.timer_d(reliable),
                        status,
                    );
                    ResponseDisposition {
                        pass_to_tu: true,
                        send_ack: true,
                    }
                }
            }
            (TransactionKind::Invite, ClientState::Completed) => ResponseDisposition {
                // Retransmitted final response: ACK again, do not pass up.
                pass_to_tu: false,
                send_ack: status >= 300,
            },
            (TransactionKind::Invite, ClientState::Accepted) => ResponseDisposition {
                // RFC 6026 7.2: further 2xx (retransmissions, other forks) go to the TU.
                pass_to_tu: success,
                send_ack: false,
            },
            (TransactionKind::NonInvite, ClientState::Trying | ClientState::Proceeding) => {
                if provisional {
                    if self.state == ClientState::Trying && !self.reliability.is_reliable() {
                        // 17.1.2.2: in Proceeding, retransmit at T2.
                        self.retransmit_interval = self.timers.t2;
                        if let Some(at) = self.retransmit_at {
                            self.retransmit_at = Some(at.min(now + self.timers.t2));
                        }
                    }
                    self.state = ClientState::Proceeding;
                    ResponseDisposition {
                        pass_to_tu: true,
                        send_ack: false,
                    }
                } else {
                    let reliable = self.reliability.is_reliable();
                    self.enter_final(
                        ClientState::Completed,
                        now + self.timers.timer_i_k(reliable),
                        status,
                    );
                    ResponseDisposition {
                        pass_to_tu: true,
                        send_ack: false,
                    }
                }
            }
            (TransactionKind::NonInvite, _) => ResponseDisposition::default(),
            (TransactionKind::Invite, ClientState::Trying) => ResponseDisposition::default(),
        }
    }

    fn enter_final(&mut self, state: ClientState, end_at: Instant, status: u16) {
        self.state = state;
        self.retransmit_at = None;
        self.timeout_at = None;
        self.end_at = Some(end_at);
        self.last_final = Some(status);
    }

    /// Runs every timer that is due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<ClientEvent> {
        let mut out = Vec::new();
        if self.state == ClientState::Terminated {
            return out;
        }
        if self.timeout_at.is_some_and(|t| t <= now) {
            // Timer B or F.
            self.terminate();
            out.push(ClientEvent::Timeout);
            out.push(ClientEvent::Terminated);
            return out;
        }
        if self.end_at.is_some_and(|t| t <= now) {
            // Timer D, K or M.
            self.terminate();
            out.push(ClientEvent::Terminated);
            return out;
        }
        if let Some(at) = self.retransmit_at {
            if at <= now {
                let cap = self.kind == TransactionKind::NonInvite;
                self.retransmit_interval = if self.state == ClientState::Proceeding {
                    self.timers.t2
                } else {
                    self.timers.next_interval(self.retransmit_interval, cap)
                };
                self.retransmit_at = Some(now + self.retransmit_interval);
                out.push(ClientEvent::Retransmit);
            }
        }
        out
    }

    /// The transport reported that the request could not be sent (17.1.4): the TU treats it
    /// like a 503.
    pub fn on_transport_error(&mut self) -> Vec<ClientEvent> {
        if self.state == ClientState::Terminated {
            return Vec::new();
        }
        self.terminate();
        vec![ClientEvent::Timeout, ClientEvent::Terminated]
    }

    /// Ends the transaction at once (e.g. the owner gave up on it).
    pub fn terminate(&mut self) {
        self.state = ClientState::Terminated;
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

    /// Drives the transaction with `on_timer` at every deadline up to `until`, returning the
    /// (offset in ms, event) pairs.
    fn run_until(
        tx: &mut ClientTransaction,
        start: Instant,
        until: Duration,
    ) -> Vec<(u128, ClientEvent)> {
        let mut seen = vec![];
        while let Some(d) = tx.next_deadline() {
            if d > start + until {
                break;
            }
            for e in tx.on_timer(d) {
                seen.push(((d - start).as_millis(), e));
            }
        }
        seen
    }

    #[test]
    fn invite_over_udp_retransmits_with_timer_a_and_times_out_with_timer_b() {
        let now = Instant::now();
        let mut tx =
            ClientTransaction::new(TransactionKind::Invite, Reliability::Unreliable, t(), now);
        let events = run_until(&mut tx, now, Duration::from_secs(40));
        let retrans: Vec<u128> = events
            .iter()
            .filter(|(_, e)| *e == ClientEvent::Retransmit)
            .map(|(t, _)| *t)
            .collect();
        // Timer A doubles without cap: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
        assert_eq!(retrans, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(events.last(), Some(&(32000, ClientEvent::Terminated)));
        assert!(events.contains(&(32000, ClientEvent::Timeout)));
        assert!(tx.is_terminated());
    }

    #[test]
    fn invite_over_tcp_does_not_retransmit() {
        let now = Instant::now();
        let mut tx =
            ClientTransaction::new(TransactionKind::Invite, Reliability::Reliable, t(), now);
        let events = run_until(&mut tx, now, Duration::from_secs(40));
        assert_eq!(
            events,
            vec![
                (32000, ClientEvent::Timeout),
                (32000, ClientEvent::Terminated)
            ]
        );
    }

    #[test]
    fn provisional_stops_timers_a_and_b() {
        let now = Instant::now();
        let mut tx =
            ClientTransaction::new(TransactionKind::Invite, Reliability::Unreliable, t(), now);
        let d = tx.on_response(now + Duration::from_millis(100), 180);
        assert!(d.pass_to_tu && !d.send_ack);
        assert_eq!(tx.state(), ClientState::Proceeding);
        assert_eq!(tx.next_deadline(), None);
    }

    #[test]
    fn non_2xx_final_is_acked_and_retransmissions_absorbed_until_timer_d() {
        let now = Instant::now();
        let mut tx =
            ClientTransaction::new(TransactionKind::Invite, Reliability::Unreliable, t(), now);
        tx.on_response(now, 180);
        let d = tx.on_response(now, 486);
        assert_eq!(
            d,
            ResponseDisposition {
                pass_to_tu: true,
                send_ack: true
            }
        );
        assert_eq!(tx.state(), ClientState::Completed);
        let again = tx.on_response(now + Duration::from_secs(1), 486);
        assert_eq!(
            again,
            ResponseDisposition {
                pass_to_tu: false,
                send_ack: true
            }
        );
        assert_eq!(tx.next_deadline(), Some(now + Duration::from_secs(32)));
        assert_eq!(
            tx.on_timer(now + Duration::from_secs(32)),
            vec![ClientEvent::Terminated]
        );
    }

    #[test]
    fn rfc6026_accepted_passes_further_2xx_and_ends_on_timer_m() {
        let now = Instant::now();
        let mut tx =
            ClientTransaction::new(TransactionKind::Invite, Reliability::Unreliable, t(), now);
        assert!(tx.on_response(now, 200).pass_to_tu);
        assert_eq!(tx.state(), ClientState::Accepted);
        assert!(
            tx.on_response(now, 200).pass_to_tu,
            "2xx retransmission goes to the TU"
        );
        assert!(
            !tx.on_response(now, 486).pass_to_tu,
            "non-2xx after 2xx is absorbed"
        );
        assert_eq!(
            tx.on_timer(now + Duration::from_secs(32)),
            vec![ClientEvent::Terminated]
        );
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_uses_t2_in_proceeding() {
        let now = Instant::now();
        let mut tx = ClientTransaction::new(
            TransactionKind::NonInvite,
            Reliability::Unreliable,
            t(),
            now,
        );
        let events = run_until(&mut tx, now, Duration::from_millis(7600));
        let retrans: Vec<u128> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(retrans, vec![500, 1500, 3500, 7500]);
        tx.on_response(now + Duration::from_millis(7600), 100);
        assert_eq!(tx.state(), ClientState::Proceeding);
        let events = run_until(&mut tx, now, Duration::from_millis(20_000));
        let retrans: Vec<u128> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(retrans, vec![11500, 15500, 19500]);
        let rest = run_until(&mut tx, now, Duration::from_secs(40));
        assert!(rest.contains(&(32000, ClientEvent::Timeout)));
    }

    #[test]
    fn non_invite_final_then_timer_k() {
        let now = Instant::now();
        let mut tx = ClientTransaction::new(
            TransactionKind::NonInvite,
            Reliability::Unreliable,
            t(),
            now,
        );
        assert!(tx.on_response(now, 200).pass_to_tu);
        assert!(!tx.on_response(now, 200).pass_to_tu);
        assert_eq!(tx.next_deadline(), Some(now + Duration::from_secs(5)));
        let mut rel =
            ClientTransaction::new(TransactionKind::NonInvite, Reliability::Reliable, t(), now);
        rel.on_response(now, 200);
        assert_eq!(rel.on_timer(now), vec![ClientEvent::Terminated]);
    }

    #[test]
    fn transport_error_is_a_timeout_once() {
        let now = Instant::now();
        let mut tx =
            ClientTransaction::new(TransactionKind::Invite, Reliability::Reliable, t(), now);
        assert_eq!(
            tx.on_transport_error(),
            vec![ClientEvent::Timeout, ClientEvent::Terminated]
        );
        assert!(tx.on_transport_error().is_empty());
    }
}
