//! aigate: an inline enforcement gateway for AI usage.
//!
//! Modules follow the data flow: `front` accepts connections and routes them (tunnel or
//! intercept), `tls` holds the CA and mints leaves, `proxy` drives pingora, `pipeline` decides,
//! `upstream` says where connections may go, `admin` serves the management listener, `state`
//! holds what they share (and the one reloader that replaces it), `coaching` signs and spends the
//! review pages' justification tokens the state keeps, `serving` runs the threads that serve
//! clients, and `server` wires them together. No module imports `server`; the front hands
//! connections to pingora's application without naming the proxy, which reads the front's
//! connection facts.

pub mod admin;
pub mod audit;
pub mod busy_poll;
pub mod catalog;
pub mod coaching;
pub mod config;
pub mod decision;
pub mod export;
pub mod front;
pub mod host;
pub mod identity;
pub mod inspect;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod serving;
pub mod state;
pub mod store;
pub mod tls;
pub mod upstream;

/// The property tests' settings: a bounded case count so CI stays fast, and no failure files
/// written into the source tree.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: 256,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
