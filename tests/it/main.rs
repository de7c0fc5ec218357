//! Integration tests: the real gateway over real sockets and real TLS.

// A failed expectation in a test should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod bypass;
mod coach;
mod contract;
mod export;
mod faults;
mod fleet;
mod identity;
mod inspect;
mod lifecycle;
mod lockout;
mod management;
mod network;
mod policy;
mod proxy;
mod routing;
mod store;
mod timeseries;
mod transparent;
