//! End-to-end test harness for Portcullis.
//!
//! Tests build private network namespaces ([`netns`]), start real peers in them
//! ([`process`], [`sipp`]), start the proxy under test ([`proxy`]: `sbcd` or Debian's
//! Kamailio as a known-good reference) and assert on what the peers saw, optionally with
//! packet captures ([`capture`]). Everything is torn down on drop, also when a test panics.

pub mod capture;
pub mod env;
pub mod error;
pub mod netns;
pub mod privileged;
pub mod process;
pub mod proxy;
pub mod python;
pub mod sipmsg;
pub mod sipp;

pub use env::TestEnv;
pub use error::{HarnessError, Result};
