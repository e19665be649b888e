//! Portcullis userspace media engine.
//!
//! - [`sdp`]: an RFC 8866 SDP model that keeps every line, its order and unknown lines, with
//!   typed views and a writer that changes only what it must.
//! - [`session`]: the offer/answer engine (RFC 3264) with rtpengine-NG-like `offer`, `answer`,
//!   `delete` and `query`, relay port allocation per interface ([`ports`]), SDP rewriting for
//!   anchoring (c=/o=/m=/a=rtcp, advertised addresses, ICE/DTLS/WebRTC attribute removal toward
//!   plain legs), codec matching, hold detection, forked answers, and per-stream plans
//!   ([`StreamPlan`]) for a datapath. Sans-IO.
//! - [`datapath`]: the relay itself: a userspace relay (epoll, recvmmsg/sendmmsg) with
//!   latching and RTP Bleed/Inject protection, and offload of latched flows to the XDP relay
//!   of `ebpf-relay`; `auto | xdp | userspace` selection.
//! - [`srtp`]: SRTP/SRTCP (RFC 3711, RFC 7714) for AES_CM_128_HMAC_SHA1_80/32 and
//!   AEAD_AES_128_GCM, interoperable with libsrtp. Sans-IO.
//! - [`ice`]: STUN (RFC 8489) and an ICE-lite agent (RFC 8445 lite, RFC 7675 consent). Sans-IO.
//! - [`dtls`]: DTLS-SRTP (RFC 5763/5764, RFC 8842): our certificate and `a=fingerprint`, the
//!   `a=setup` role matrix, and a DTLS endpoint (webrtc-rs `rtc-dtls`) that checks the peer's
//!   fingerprint and exports SRTP keys for [`srtp`]. Sans-IO.
//! - [`secure`]: the security of one media leg (SDES-SRTP, or DTLS-SRTP with optional
//!   ICE-lite) terminated for bridging to plain RTP: RFC 7983 demultiplexing, authenticated
//!   latching, DTLS source filtering against the ClientHello race (S-23). Sans-IO.
//!
//! SRTP termination is wired into sessions: SDES (`RTP/SAVP` + `a=crypto`) and WebRTC
//! (`UDP/TLS/RTP/SAVPF`: ICE-lite, DTLS-SRTP, rtcp-mux, one bundled audio section) toward
//! one party, plain RTP toward the other; the stream plans carry the keys/parameters and the
//! userspace relay runs a [`secure::SecureLeg`] per terminated side.
//!
//! **Not here yet:** transcoding, DTMF, recording, the NG wire protocol, several bundled
//! sections toward a WebRTC party, SRTP re-keying on re-offers (the relay re-creates its legs).

pub mod datapath;
pub mod dtls;
pub mod ice;
pub mod interface;
pub mod ports;
pub mod sdp;
pub mod secure;
pub mod session;
pub mod srtp;
#[cfg(test)]
mod test_support;

pub use interface::{MediaInterface, PortUsage};
pub use ports::{PortAllocator, RelayPorts};
pub use sdp::{Sdp, SdpError};
pub use session::{
    AnswerRequest, AnswerResponse, CallInfo, Codec, DeleteOutcome, DtlsKeys, EngineError,
    EngineStats, Flags, LegInfo, MediaEngine, OfferRequest, OfferResponse, RtcpMuxPolicy, SdesKeys,
    StreamPlan, StreamSide,
};
