//! SIP transaction layer (RFC 3261 section 17, RFC 6026).
//!
//! Sans-IO state machines: a transaction never touches a socket or a clock. The owner (the
//! proxy core) feeds it events with the current time (`on_response`, `on_request_retransmission`,
//! `on_ack`, `on_timer`, `on_transport_error`) and gets back what must be sent and what the
//! transaction user (TU) must learn. `next_deadline` tells the owner when to call `on_timer`.
//!
//! - [`client`]: INVITE client transaction (17.1.1, with the RFC 6026 "Accepted" state and
//!   timers A, B, D, M) and non-INVITE client transaction (17.1.2, timers E, F, K).
//! - [`server`]: INVITE server transaction (17.2.1, with "Accepted" and timers G, H, I, L) and
//!   non-INVITE server transaction (17.2.2, timer J).
//! - [`key`]: transaction matching (17.1.3, 17.2.3).
//! - [`timers`]: T1/T2/T4 and the derived timer values.

pub mod client;
pub mod key;
pub mod server;
pub mod timers;

pub use client::{ClientEvent, ClientState, ClientTransaction};
pub use key::{ClientKey, ServerKey};
pub use server::{ServerEvent, ServerState, ServerTransaction};
pub use timers::TimerConfig;

/// Whether a transaction runs over a reliable transport (TCP, TLS, WS): retransmission timers
/// are only used over unreliable ones (UDP), and the "wait" timers D, I, J, K are zero over
/// reliable ones (RFC 3261 17.1.1.2, 17.1.2.2, 17.2.1, 17.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Reliable,
    Unreliable,
}

impl Reliability {
    pub fn is_reliable(self) -> bool {
        matches!(self, Reliability::Reliable)
    }
}

/// INVITE transactions follow 17.1.1/17.2.1, all others 17.1.2/17.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    Invite,
    NonInvite,
}
