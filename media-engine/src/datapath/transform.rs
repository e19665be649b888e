//! Per-leg packet transforms for the userspace relay: a leg whose party speaks SRTP
//! (SDES or DTLS-SRTP, with ICE) is bridged to a plain RTP leg by a [`LegTransform`]
//! (implemented by `crate::secure::SecureLeg`).
//!
//! On a transformed leg every datagram goes to the transform first: STUN and DTLS are
//! consumed there, SRTP/SRTCP is authenticated and decrypted, and only then does the flow
//! table see the packet (with the authenticated source). Packets relayed toward a
//! transformed leg are protected by it and sent to its [`LegTransform::destination`]
//! (ICE-selected pair or authenticated source), not to the table's idea of the party.
//! Transformed pairs are never offloaded to XDP.

use std::net::SocketAddr;
use std::time::Instant;

/// What the transform made of one inbound datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformInbound {
    /// Plain RTP/RTCP to relay to the other leg; `source` passed authentication.
    Media { plain: Vec<u8>, source: SocketAddr },
    /// STUN/DTLS handled inside (answers may be waiting in `poll_transmit`).
    Consumed,
    /// Not relayed (bad authentication, replay, no keys yet, wrong source, garbage).
    Dropped,
}

/// The security of one leg, driven by the relay worker that owns its socket.
pub trait LegTransform: Send {
    /// A datagram that arrived on the leg's relay socket from `src`.
    fn inbound(&mut self, now: Instant, src: SocketAddr, data: &[u8]) -> TransformInbound;
    /// Plain RTP/RTCP from the other leg, protected for this leg's party; `None` drops it
    /// (keys not ready, malformed).
    fn outbound(&mut self, plain: &[u8]) -> Option<Vec<u8>>;
    /// Where media to this leg's party goes now; `None` stops it.
    fn destination(&self) -> Option<SocketAddr>;
    /// Datagrams of the leg's own (STUN responses, DTLS flights).
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
}

impl LegTransform for crate::secure::SecureLeg {
    fn inbound(&mut self, now: Instant, src: SocketAddr, data: &[u8]) -> TransformInbound {
        match self.handle_inbound(now, src, data) {
            crate::secure::Inbound::Media { plain, source } => {
                TransformInbound::Media { plain, source }
            }
            crate::secure::Inbound::Consumed => TransformInbound::Consumed,
            crate::secure::Inbound::Dropped(_) => TransformInbound::Dropped,
        }
    }
    fn outbound(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        self.protect_outbound(plain)
    }
    fn destination(&self) -> Option<SocketAddr> {
        crate::secure::SecureLeg::destination(self)
    }
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        crate::secure::SecureLeg::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        crate::secure::SecureLeg::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::secure::SecureLeg::handle_timeout(self, now)
    }
}
