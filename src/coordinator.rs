//! The gateway's client of the coordination object: one typed method per operation of
//! [`crate::coord`], over the [`Coordinator`] port. The protocol itself (operations,
//! replies, how an object applies them) stays in `coord`, which depends on no port.

use crate::coord::*;
use crate::ports::{Coordinator, KvError, Ports};

impl Ports<'_> {
    /// The coordination object, where the deployment has one.
    pub fn coord(&self) -> Option<Coord<'_>> {
        self.coord.map(Coord)
    }
}

/// The gateway's view of the coordinator port: typed calls over [`Coordinator::call`].
#[derive(Clone, Copy)]
pub struct Coord<'a>(pub &'a dyn Coordinator);

impl std::fmt::Debug for Coord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coord")
    }
}

fn unexpected(reply: &Reply) -> KvError {
    KvError(format!("coordinator: unexpected reply {reply:?}"))
}

/// How long a request waits for another request's refresh before giving up.
pub const REFRESH_WAIT_MS: u64 = 10_000;
/// How long one request may hold the refresh lease.
pub const REFRESH_LEASE_MS: u64 = 15_000;
/// How long a refresh result stays available to requests that still hold the old refresh
/// token (longer than KV's propagation delay).
pub const REFRESH_RETAIN_MS: u64 = 300_000;

impl Coord<'_> {
    /// `true` for the first claim of `key` in `shard`.
    pub async fn claim(&self, shard: &str, key: &str, ttl_ms: u64) -> Result<bool, KvError> {
        match self.0.call(shard, &Op::Claim { key: key.to_owned(), ttl_ms }).await? {
            Reply::Claimed { first } => Ok(first),
            other => Err(unexpected(&other)),
        }
    }

    /// Reserves an attempt ([`Op::Attempt`]): `Ok(count)` when the code may be checked,
    /// `Err(until_ms)` while locked.
    pub async fn attempt(
        &self,
        shard: &str,
        key: &str,
        window_ms: u64,
        limit: u64,
        lock_ms: u64,
    ) -> Result<Result<u64, u64>, KvError> {
        let op = Op::Attempt { key: key.to_owned(), window_ms, limit, lock_ms };
        match self.0.call(shard, &op).await? {
            Reply::Attempt { granted: true, count, .. } => Ok(Ok(count)),
            Reply::Attempt { granted: false, locked_until_ms: Some(until), .. } => Ok(Err(until)),
            other => Err(unexpected(&other)),
        }
    }

    /// Settles a reserved attempt whose code was wrong; `Some(until_ms)` when it locked.
    pub async fn attempt_failed(
        &self,
        shard: &str,
        key: &str,
        window_ms: u64,
        limit: u64,
        lock_ms: u64,
    ) -> Result<(u64, Option<u64>), KvError> {
        let op = Op::AttemptFailed { key: key.to_owned(), window_ms, limit, lock_ms };
        match self.0.call(shard, &op).await? {
            Reply::Failed { count, locked_until_ms } => Ok((count, locked_until_ms)),
            other => Err(unexpected(&other)),
        }
    }

    /// Settles a reserved attempt whose code was right ([`Op::AttemptSucceeded`]).
    pub async fn attempt_succeeded(&self, shard: &str, key: &str) -> Result<(), KvError> {
        self.0.call(shard, &Op::AttemptSucceeded { key: key.to_owned() }).await.map(|_| ())
    }

    pub async fn locked(&self, shard: &str, key: &str) -> Result<Option<u64>, KvError> {
        match self.0.call(shard, &Op::Locked { key: key.to_owned() }).await? {
            Reply::Locked { until_ms } => Ok(until_ms),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn clear(&self, shard: &str, key: &str) -> Result<(), KvError> {
        self.0.call(shard, &Op::Clear { key: key.to_owned() }).await.map(|_| ())
    }

    pub async fn revoke(&self, shard: &str, key: &str, ttl_ms: u64) -> Result<(), KvError> {
        self.0.call(shard, &Op::Revoke { key: key.to_owned(), ttl_ms }).await.map(|_| ())
    }

    pub async fn revoked_since(&self, shard: &str, keys: &[String], since_ms: u64) -> Result<bool, KvError> {
        match self.0.call(shard, &Op::RevokedSince { keys: keys.to_vec(), since_ms }).await? {
            Reply::Revoked { revoked } => Ok(revoked),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes the refresh lease, waiting (polling) while another request holds it. `Held`
    /// comes back only when the wait ran out.
    pub async fn refresh_begin(&self, shard: &str, key: &str) -> Result<Lease, KvError> {
        let op = Op::RefreshBegin { key: key.to_owned(), lease_ms: REFRESH_LEASE_MS };
        let mut waited = 0;
        loop {
            match self.0.call(shard, &op).await? {
                Reply::Lease(Lease::Held) if waited < REFRESH_WAIT_MS => {
                    let step = if waited < 1000 { 50 } else { 200 };
                    self.0.pause(step).await;
                    waited += step;
                }
                Reply::Lease(lease) => return Ok(lease),
                other => return Err(unexpected(&other)),
            }
        }
    }

    pub async fn refresh_end(&self, shard: &str, key: &str, result: Option<String>) -> Result<(), KvError> {
        let op = Op::RefreshEnd { key: key.to_owned(), result, retain_ms: REFRESH_RETAIN_MS };
        self.0.call(shard, &op).await.map(|_| ())
    }
}
