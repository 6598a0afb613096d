//! The envelope daemon: verifies access tokens on a WebSocket and opens the
//! firewall for the client's subnet while the WebSocket is held.
//!
//! Layout:
//! - [`config`]: flags, env vars and Go-style aliases → a validated [`config::Config`]
//!   (the firewall as one [`firewall::FirewallChoice`]), one file per concern.
//! - [`daemon`]: `bind(&Config) -> Bound` (admin socket lock, firewall guard, ports)
//!   apart from `run(bound, shutdown)` (serving, the ordered shutdown, `finalize`).
//! - [`server`]: accept loops with TLS, timeouts and a connection cap, serving
//!   warp filters (`warp::service`) with the peer address as a request extension.
//! - [`access`]: the access endpoint as warp filters — `common::filters` for the
//!   token and the transmit-rate gate — in SPEC order, our own 101, and every
//!   refusal as one [`access::Refusal`].
//! - [`session`]: one held WebSocket.
//! - [`grants`]: the grant owner: a synchronous table, the commit step
//!   (group-committed firewall changes, failures isolated per subnet) and the
//!   loop that routes commands.
//! - [`admin`]: the admin API on a unix socket (list and revoke grants, status, reload).
//! - [`keys`]: the verify keys, reloaded whole without a restart.
//! - [`firewall`]: the policy-level firewall trait and its backends.
//! - [`metrics`], [`tls`], [`logging`].
//!
//! [`command`] is the clap definition of the `envelope` binary, for tools that
//! write its man page and shell completions (the workspace's `xtask`).

pub mod access;
pub mod admin;
pub mod config;
pub mod daemon;
pub mod firewall;
/// Entry points for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod session;
pub mod tls;

/// The clap definition of the `envelope` binary, exactly as it parses its flags
/// (before [`common::goflags`] rewrites Go-style spellings).
pub fn command() -> clap::Command {
    <config::Flags as clap::CommandFactory>::command()
}
