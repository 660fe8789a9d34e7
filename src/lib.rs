//! Portcullis: an authentication gateway that runs as a Cloudflare Worker.
//!
//! The crate is a sans-IO core (everything but [`shell`]) driven by a thin Worker shell.
//! The core takes the clock, randomness, fetched documents and stored values through the
//! [`ports`] traits and returns decisions; only `shell` touches the `worker` crate, and it is
//! compiled for `wasm32` only, so `cargo test` exercises the whole core natively.

pub mod assertion;
pub mod audit;
pub mod check;
pub mod config;
pub mod coord;
pub mod coordinator;
pub mod crypto;
pub mod error;
pub mod faults;
pub mod gateway;
pub mod http;
pub mod keys;
pub mod markup;
pub mod mfa;
pub mod oidc;
pub mod pages;
pub mod path;
pub mod policy;
pub mod ports;
pub mod proxy;
pub mod ratelimit;
pub mod redirect;
pub mod saml;
pub mod secret;
pub mod session;
/// In-memory ports for native tests and benchmarks (cargo feature `testing`, which the
/// integration tests and benchmarks enable through the crate's dev-dependency on itself).
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod webauthn;

#[cfg(target_arch = "wasm32")]
mod shell;
