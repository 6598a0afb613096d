//! The envelope's access checks as [warp] filters any Rust service can mount
//! (SPEC §8; the port of the Go `controller` package). Enabled by the `warp`
//! feature of `common`.
//!
//! - [`access_token`] / [`optional_access_token`]: require (or accept) an
//!   `access_token` query parameter holding a token the [`Verifier`](crate::Verifier)
//!   accepts, whose subject is the service's own or `monitoring`; they yield
//!   [`Verified`]: the standard [`Claims`](crate::Claims) plus a caller-defined
//!   custom-claims type that can never override a standard claim.
//! - [`transmit_rate`] / [`transmit_rate_unless_exempt`]: the transmit-rate gate
//!   (503 while the guarded device sends more than its limit; `monitoring` is exempt).
//! - [`ReplayCache`]: single-use tokens (each `jti` accepted once until its `exp`),
//!   bounded and failing closed.
//! - [`Denied`]: every refusal, with its status, a stable label and the one-line
//!   message; [`handle_rejection`] turns it into the response.
//!
//! ```no_run
//! use common::filters::{self, AccessPolicy, Verified};
//! use warp::Filter;
//! # fn demo(verifier: std::sync::Arc<common::Verifier>) {
//! #[derive(serde::Deserialize)]
//! struct Integration { int_id: Option<String> }
//!
//! let policy = AccessPolicy::new(verifier, "ndt");
//! let hello = warp::path!("hello")
//!     .and(filters::access_token::<Integration>(policy))
//!     .map(|v: Verified<Integration>| format!("hello {} ({:?})", v.claims.sub, v.custom.int_id))
//!     .recover(filters::handle_rejection);
//! # let _ = hello; }
//! ```
//!
//! The filters read only the request (query string); serving — TLS, timeouts,
//! the peer address — is the caller's (see `docs/library.md`).

mod custom;
mod denied;
mod replay;
mod token;
mod txrate;

pub use custom::NoCustomClaims;
pub use denied::{handle_rejection, Denied};
pub use replay::{ReplayCache, Reservation, DEFAULT_CAP as DEFAULT_REPLAY_CAP};
pub use token::{
    access_token, optional_access_token, raw_query, token_in_query, AccessPolicy, Verified,
    VerifierSource, MONITORING_SUBJECT,
};
pub use txrate::{
    read_tx_bytes, transmit_rate, transmit_rate_unless_exempt, TxError, TxExempt, TxGate,
};
