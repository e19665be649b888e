//! Portcullis configuration (work in progress).
