//! The envelope daemon: verifies access tokens on a WebSocket and opens the
//! firewall for the client's subnet while the WebSocket is held.
//!
//! Layout, from the top down (a module uses only those below it):
//! - [`daemon`]: `bind(&Config) -> Bound` (the files the configuration names,
//!   admin socket lock, firewall guard, ports) apart from `run(bound, shutdown)`
//!   (supervised listeners, the ordered shutdown, every task joined).
//! - [`config`]: flags, env vars and Go-style aliases → a plain-data
//!   [`config::Config`] (the firewall as one [`firewall::FirewallChoice`]).
//! - [`access`]: the access endpoint as warp filters — `common::filters` for the
//!   token and the transmit-rate gate — in SPEC order, our own 101, and every
//!   refusal as one [`access::Refusal`]; [`session`]: one held WebSocket.
//! - [`admin`]: the admin API on a unix socket (grants, status, reload);
//!   [`exporter`]: what the metrics listener serves.
//! - [`reload`]: what reloads the verify keys (SIGHUP, a changed file, the
//!   admin API), logged and counted; [`keys`]: the key set itself.
//! - [`grants`]: the grant owner: a synchronous table, the commit step
//!   (group-committed firewall changes, failures isolated per subnet) and the
//!   loop that routes commands.
//! - [`firewall`]: the policy-level firewall trait, its backends, and the
//!   choice among them.
//! - [`server`]: the one accept loop (TCP, TLS, unix socket) with its bounds.
//! - [`events`]: one place where happenings become events: the log line, the
//!   metrics, and the stream `/v1/events` serves.
//! - Leaves: [`http`] (reply types, peer extensions, path matching),
//!   [`lifecycle`] (serving, draining or stopping, shared by everyone who
//!   asks), [`metrics`] (the registry), [`tls`], [`logging`].
//!
//! [`command`] is the clap definition of the `envelope` binary, for tools that
//! write its man page and shell completions (the workspace's `xtask`).

pub mod access;
pub mod admin;
pub mod config;
pub mod daemon;
pub mod events;
pub mod exporter;
pub mod firewall;
/// Entry points for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod heap;
pub mod http;
pub mod keys;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod session;
pub mod tls;

/// The clap definition of the `envelope` binary, exactly as it parses its flags
/// (before [`common::goflags`] rewrites Go-style spellings).
pub fn command() -> clap::Command {
    <config::Flags as clap::CommandFactory>::command()
}
