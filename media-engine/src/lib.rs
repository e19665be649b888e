//! Portcullis userspace media engine.
//!
//! This crate will own SDP offer/answer (RFC 3264/8866), relay port allocation,
//! the userspace datapath, ICE-lite, DTLS-SRTP/SDES-SRTP bridging, transcoding,
//! DTMF and recording (see `../shared/design/architecture.md`).
//!
//! **Status: nothing is implemented yet.** The crate is intentionally empty so that
//! no caller can mistake it for a working media path. sbcd currently proxies
//! signalling only and does not anchor media.
