//! The envelope's integration tests, one binary (`cargo test -p envelope --test
//! integration`): each module drives the real `envelope` binary from one side,
//! and `support` holds what they share over `testbed`'s test kit (tokens, the
//! daemon started from `testbed::envelope::EnvelopeCmd`, waits, TLS and
//! WebSocket clients). Run one module with a filter, e.g. `cargo test -p
//! envelope --test integration firewall_netns::`; build envelopectl first
//! (`cargo build -p envelopectl`) when only this package's tests are asked for.
//!
//! The helpers are `support`, not `common` as in ripgrep's layout: `common` is
//! the workspace's library crate, which these tests also use.

mod support;

mod admin;
mod browser;
mod client_recipes;
mod daemon;
mod deploy_recipes;
mod events;
mod firewall_netns;
mod fleet;
mod hardening;
mod nftables_netns;
mod reload;
