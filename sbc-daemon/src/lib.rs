//! sbcd: the Portcullis session border controller daemon.
//!
//! Layout (a newcomer finds a behaviour by its name):
//! - [`transaction`]: RFC 3261 17 client/server transactions (sans-IO).
//! - [`proxy`]: the stateful proxy core (RFC 3261 16), routing rules and trunk failover,
//!   addresses we own, locally generated messages (sans-IO).
//! - [`transport`]: UDP and TCP listeners, the connection (flow) table, stream framing.
//! - [`server`]: the IO layer that drives the proxy core with sockets and time.
//! - [`metrics`] and [`admin`]: Prometheus metrics and the `/metrics` + `/healthz` endpoint.
//! - [`cli`]: the `sbcd` command line (run, check-config, print-config).
//!
//! The SIP message model itself lives in the `portcullis-sip` crate (`sbc-daemon/sip`).

pub mod admin;
pub mod cli;
pub mod dns;
pub mod media_relay;
pub mod metrics;
pub mod proxy;
pub mod registrar;
pub mod server;
pub mod transaction;
pub mod transport;
mod xorshift;
