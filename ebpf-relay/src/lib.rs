//! Portcullis in-kernel RTP relay (XDP).
//!
//! This crate will own the XDP program (C, built by build.rs with clang), its map
//! layout mirrored as `#[repr(C)]` Rust types, and the aya loader.
//!
//! **Status: nothing is implemented yet.** No program is built or attached.
