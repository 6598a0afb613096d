//! The envelope's integration tests, one binary (`cargo test -p envelope --test
//! integration`): each module drives the real `envelope` binary from one side,
//! and `support` holds what they share (test keys and tokens, the daemon launcher
//! over `testbed::launcher`, TLS and WebSocket clients). Run one module with a
//! filter, e.g. `cargo test -p envelope --test integration firewall_netns::`.
//!
//! The helpers are `support`, not `common` as in ripgrep's layout: `common` is
//! the workspace's library crate, which these tests also use.

mod support;

mod admin;
mod browser;
mod client_recipes;
mod daemon;
mod deploy_recipes;
mod firewall_netns;
mod nftables_netns;
mod reload;
