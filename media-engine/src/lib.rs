//! Portcullis userspace media engine: the control plane of media anchoring.
//!
//! What is here (sans-IO, no sockets, no async runtime):
//! - [`sdp`]: an RFC 8866 SDP model that keeps every line, its order and unknown lines, with
//!   typed views and a writer that changes only what it must.
//! - [`session`]: the offer/answer engine (RFC 3264) with rtpengine-NG-like `offer`, `answer`,
//!   `delete` and `query`, relay port allocation per interface ([`ports`]), SDP rewriting for
//!   anchoring (c=/o=/m=/a=rtcp, advertised addresses, ICE/DTLS/WebRTC attribute removal toward
//!   plain legs), codec matching, hold detection, forked answers, and per-stream plans
//!   ([`StreamPlan`]) for a datapath.
//!
//! **Not here yet:** packet relaying (XDP or userspace datapath), latching, media timeouts,
//! ICE-lite, DTLS-SRTP/SDES termination, transcoding, DTMF, recording, the NG wire protocol.
//! Converting a WebRTC offer to plain RTP/AVP is done at the SDP level only; answering a
//! WebRTC (DTLS-SRTP) offerer is refused with [`EngineError::Unsupported`].

pub mod datapath;
pub mod ice;
pub mod interface;
pub mod ports;
pub mod sdp;
pub mod session;
pub mod srtp;

pub use interface::{MediaInterface, PortUsage};
pub use ports::{PortAllocator, RelayPorts};
pub use sdp::{Sdp, SdpError};
pub use session::{
    AnswerRequest, AnswerResponse, CallInfo, Codec, DeleteOutcome, EngineError, EngineStats, Flags,
    LegInfo, MediaEngine, OfferRequest, OfferResponse, RtcpMuxPolicy, StreamPlan, StreamSide,
};
