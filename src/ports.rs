//! The four effects the core needs from its environment, as traits: KV storage, outbound
//! HTTP, the clock and randomness (plus the log sink). The Worker shell implements them
//! with the platform's bindings; [`crate::testing`] implements them in memory for native tests.
//!
//! Futures are boxed and not `Send`: the Workers runtime is single-threaded, and boxing keeps
//! the traits object-safe so the core takes `&dyn Kv` rather than growing type parameters.

use std::future::Future;
use std::pin::Pin;

use crate::http::{Inbound, Outbound};

pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KV error: {}", self.0)
    }
}

/// Workers KV (or a stand-in). Values are text. `ttl` is in seconds; the platform's minimum
/// is 60, so callers pass at least that.
pub trait Kv {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<String>, KvError>>;
    fn put<'a>(&'a self, key: &'a str, value: &'a str, ttl: Option<u64>) -> LocalFuture<'a, Result<(), KvError>>;
    fn delete<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<(), KvError>>;
    fn list<'a>(&'a self, prefix: &'a str, limit: usize) -> LocalFuture<'a, Result<Vec<String>, KvError>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Connection refused, DNS failure, TLS failure.
    Unreachable(String),
    /// No complete answer within the timeout.
    Timeout,
    /// The body exceeded the size limit.
    TooLarge,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(e) => write!(f, "unreachable: {e}"),
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::TooLarge => f.write_str("response body too large"),
        }
    }
}

/// Outbound HTTP. Implementations never follow redirects, enforce `timeout_ms`, and stop
/// reading a body past `max_body` bytes ([`FetchError::TooLarge`]).
pub trait Fetch {
    fn fetch<'a>(
        &'a self,
        req: Outbound,
        timeout_ms: u64,
        max_body: usize,
    ) -> LocalFuture<'a, Result<Inbound, FetchError>>;
}

/// Signature verification by the runtime's own crypto (WebCrypto in Workers, where RSA and
/// ECDSA run natively, many times faster than the same arithmetic in wasm). `None` means
/// "not available here": the core then verifies with its pure-Rust code.
pub trait SignatureVerifier {
    /// Verifies a JWS signature (`alg` from the JWS allow-list) with a public JWK.
    fn verify<'a>(
        &'a self,
        alg: &'a str,
        jwk: &'a serde_json::Value,
        signed: &'a [u8],
        signature: &'a [u8],
    ) -> LocalFuture<'a, Option<bool>>;
}

/// The coordination object (a Durable Object in Workers): applies one [`crate::coord::Op`]
/// atomically in the object named `shard`. Errors read like KV errors: the request fails
/// closed with a 503.
pub trait Coordinator {
    fn call<'a>(
        &'a self,
        shard: &'a str,
        op: &'a crate::coord::Op,
    ) -> LocalFuture<'a, Result<crate::coord::Reply, KvError>>;
    /// Waits `ms` milliseconds (between polls of a refresh lease).
    fn pause(&self, ms: u64) -> LocalFuture<'_, ()>;
}

/// Clock, randomness and the log sink.
pub trait Runtime {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Fills `buf` from a cryptographically secure source.
    fn fill_random(&self, buf: &mut [u8]);
    /// Writes one structured log line (already JSON).
    fn log(&self, line: &str);

    fn now(&self) -> u64 {
        self.now_ms() / 1000
    }

    fn random_bytes<const N: usize>(&self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut b = [0u8; N];
        self.fill_random(&mut b);
        b
    }
}

/// The ports bundled, as the gateway receives them per request.
#[derive(Clone, Copy)]
pub struct Ports<'a> {
    pub kv: &'a dyn Kv,
    pub fetch: &'a dyn Fetch,
    pub rt: &'a dyn Runtime,
    /// The runtime's signature verifier, where it has one.
    pub verifier: Option<&'a dyn SignatureVerifier>,
    /// The coordination object, when one is bound; without it KV alone decides, with the
    /// weaker guarantees the README states.
    pub coord: Option<&'a dyn Coordinator>,
}

impl std::fmt::Debug for Ports<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ports")
    }
}

impl Ports<'_> {
    pub fn now(&self) -> u64 {
        self.rt.now_ms() / 1000
    }

    pub fn random<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rt.fill_random(&mut b);
        b
    }
}
