//! Shared core of the envelope workspace.
//!
//! Layout:
//! - [`jwk`]: JWK/JWKS files in go-jose's `jwk-keygen` format — parsed with
//!   jsonwebtoken's `Jwk` plus the load-time checks of SPEC §3, key generation, and
//!   the public part of a private key.
//! - [`claims`]: the token claims and the audience (string or array).
//! - [`sign`]: [`Signer`], which turns claims into a compact JWS (jsonwebtoken).
//! - [`verify`]: [`Verifier`], our policy around `jsonwebtoken::decode`: it accepts
//!   a token only if every rule of SPEC §3 holds, and [`Rejection`] is the closed
//!   set of reasons it gives otherwise.
//! - [`provider`]: the jsonwebtoken `CryptoProvider` installed by the signer and
//!   verifier: aws-lc, with EdDSA verified by ed25519-dalek's `verify_strict`.
//! - [`goflags`]: Go-style single-dash flags and Go durations, for drop-in CLIs.
//! - [`files`]: reading an operator's key or certificate file safely (regular
//!   files only, bounded, never blocking on a FIFO).
//! - [`chain`]: an error and its causes on one line, for logs and API errors.
//! - [`admin`]: wire types of the admin API, shared by `envelope` and `envelopectl`.
//! - [`build_info`]: the version, commit and compiler of this build (`build.rs`),
//!   shown by every binary.
//! - `filters` (feature `warp`): the access checks as warp filters other services
//!   can mount — token, custom claims, transmit-rate gate (see `docs/library.md`).

pub mod admin;
pub mod build_info;
pub mod chain;
pub mod claims;
pub mod files;
#[cfg(feature = "warp")]
pub mod filters;
pub mod goflags;
pub mod jwk;
pub mod provider;
pub mod sign;
pub mod verify;

pub use claims::{Audience, Claims};
pub use jwk::{Algorithm, KeyError, PrivateKey, PublicKey};
pub use sign::{SignError, Signer};
pub use verify::{Clock, Rejection, SystemClock, Verifier};
