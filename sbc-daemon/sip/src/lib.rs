//! Zero-copy SIP message layer (work in progress).
