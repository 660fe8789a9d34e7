//! Strong consistency where KV is not enough: the state machine of the coordination object.
//!
//! Workers KV is eventually consistent (a write can take 60 s to reach another location) and
//! has no compare-and-set. What must happen exactly once — consuming pre-login state, used
//! SAML assertion ids, back-channel `jti`s, TOTP steps and backup codes, MFA failure counts,
//! refreshing a rotating refresh token, revoking a session everywhere — is decided by a
//! Durable Object when one is bound (`PORTCULLIS_COORDINATOR`). Each object is one *shard*:
//! per user (`u:`) for what concerns one person, per tenant and bucket (`b:`) for one-time
//! values, never one global object.
//!
//! This module is the object's whole logic, sans IO: [`apply`] takes an [`Op`], the current
//! time and the entries the op names, and returns the [`Reply`] plus the writes. The Worker
//! shell (`durable.rs`) loads and stores the entries in the object's storage, where the
//! runtime runs one event at a time (storage calls hold the input gate), which makes each op
//! atomic. [`crate::testing::MemoryCoordinator`] runs the same function in memory.
//!
//! Every entry carries an expiry; the object sets an alarm for the earliest one and
//! [`sweep`] removes what has expired, so nothing accumulates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::keys::{bucket_shard, user_shard, BUCKETS};

/// What the gateway asks an object to do. Each op is applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// First use wins: remembers `key` for `ttl_ms`; later claims answer `first: false`.
    Claim { key: String, ttl_ms: u64 },
    /// Reserves one attempt at a second-factor code before it is checked: refused while
    /// locked, and once `limit` attempts in the window are reserved (the reservation that
    /// finds the limit reached locks `key` for `lock_ms`). So however many requests race,
    /// no more than `limit` codes are checked before the lock. A right code then clears the
    /// key ([`Op::Clear`]); a wrong one settles with [`Op::AttemptFailed`].
    Attempt { key: String, window_ms: u64, limit: u64, lock_ms: u64 },
    /// Settles a reserved attempt whose code was wrong: locks `key` for `lock_ms` when the
    /// reserved attempts reached `limit`.
    AttemptFailed { key: String, window_ms: u64, limit: u64, lock_ms: u64 },
    /// Settles a reserved attempt whose code was right: the count is cleared but for the
    /// attempts still being checked; a lock stays.
    AttemptSucceeded { key: String },
    /// Whether `key` is locked by [`Op::Attempt`] or [`Op::AttemptFailed`].
    Locked { key: String },
    /// Forgets `key` (an admin's MFA reset).
    Clear { key: String },
    /// Records that `key` (a session, or a whole user) was revoked now; kept `ttl_ms`.
    Revoke { key: String, ttl_ms: u64 },
    /// Whether any of `keys` was revoked at or after `since_ms`.
    RevokedSince { keys: Vec<String>, since_ms: u64 },
    /// Takes the refresh lease on `key` for `lease_ms`, unless another request holds it or
    /// finished it recently (then its result is returned).
    RefreshBegin { key: String, lease_ms: u64 },
    /// Ends the lease. `Some(result)` is kept `retain_ms` for requests that arrive with the
    /// same (now rotated) refresh token; `None` releases the lease so another may try.
    RefreshEnd { key: String, result: Option<String>, retain_ms: u64 },
}

impl Op {
    /// The entries the op reads or writes.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Op::Claim { key, .. }
            | Op::Attempt { key, .. }
            | Op::AttemptFailed { key, .. }
            | Op::AttemptSucceeded { key }
            | Op::Locked { key }
            | Op::Clear { key }
            | Op::Revoke { key, .. }
            | Op::RefreshBegin { key, .. }
            | Op::RefreshEnd { key, .. } => {
                vec![key.as_str()]
            }
            Op::RevokedSince { keys, .. } => keys.iter().map(String::as_str).collect(),
        }
    }
}

/// The object's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Claimed {
        first: bool,
    },
    /// After [`Op::AttemptFailed`]: the failures in the window, and the lock if one is in force.
    Failed {
        count: u64,
        locked_until_ms: Option<u64>,
    },
    Locked {
        until_ms: Option<u64>,
    },
    /// After [`Op::Attempt`]: whether the code may be checked, the attempts reserved in the
    /// window, and the lock if one is in force.
    Attempt {
        granted: bool,
        count: u64,
        locked_until_ms: Option<u64>,
    },
    Done,
    Revoked {
        revoked: bool,
    },
    Lease(Lease),
}

/// The state of a refresh lease as seen by the asking request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "lease", rename_all = "snake_case")]
pub enum Lease {
    /// This request refreshes; it must end the lease.
    Acquired,
    /// Another request is refreshing now.
    Held,
    /// Another request refreshed; this is its result.
    Finished { result: String },
}

/// A stored entry: the value and when it expires (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Value,
    pub exp_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Value {
    Used,
    /// Failures in the window. `pending` of them are attempts reserved by [`Op::Attempt`]
    /// whose outcome is not settled yet.
    Failures {
        count: u64,
        #[serde(default)]
        pending: u64,
    },
    LockedUntil {
        until_ms: u64,
    },
    RevokedAt {
        at_ms: u64,
    },
    Leased {
        until_ms: u64,
    },
    Refreshed {
        result: String,
    },
}

/// The result of applying an op: the reply and the entries to write (`None` deletes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Reply,
    pub writes: Vec<(String, Option<Entry>)>,
}

impl Outcome {
    fn reply(reply: Reply) -> Self {
        Self { reply, writes: Vec::new() }
    }

    fn write(mut self, key: &str, value: Value, exp_ms: u64) -> Self {
        self.writes.push((key.to_owned(), Some(Entry { value, exp_ms })));
        self
    }

    fn delete(mut self, key: &str) -> Self {
        self.writes.push((key.to_owned(), None));
        self
    }

    /// The earliest expiry among the written entries (for the object's alarm).
    pub fn earliest_expiry(&self) -> Option<u64> {
        self.writes.iter().filter_map(|(_, e)| e.as_ref().map(|e| e.exp_ms)).min()
    }
}

/// Applies `op` at `now_ms` to the entries it names (`entries` holds those present; expired
/// ones count as absent).
pub fn apply(op: &Op, now_ms: u64, entries: &BTreeMap<String, Entry>) -> Outcome {
    let live = |key: &str| entries.get(key).filter(|e| e.exp_ms > now_ms).map(|e| &e.value);
    match op {
        Op::Claim { key, ttl_ms } => match live(key) {
            Some(_) => Outcome::reply(Reply::Claimed { first: false }),
            None => Outcome::reply(Reply::Claimed { first: true }).write(
                key,
                Value::Used,
                now_ms.saturating_add(*ttl_ms.max(&1)),
            ),
        },
        Op::Attempt { key, window_ms, limit, lock_ms } => {
            let entry = entries.get(key).filter(|e| e.exp_ms > now_ms);
            match entry.map(|e| (&e.value, e.exp_ms)) {
                Some((Value::LockedUntil { until_ms }, _)) => {
                    Outcome::reply(Reply::Attempt { granted: false, count: *limit, locked_until_ms: Some(*until_ms) })
                }
                Some((Value::Failures { count, .. }, _)) if count >= limit => {
                    let until_ms = now_ms.saturating_add(*lock_ms);
                    Outcome::reply(Reply::Attempt { granted: false, count: *count, locked_until_ms: Some(until_ms) })
                        .write(key, Value::LockedUntil { until_ms }, until_ms.max(now_ms.saturating_add(1)))
                }
                Some((Value::Failures { count, pending }, exp)) => {
                    Outcome::reply(Reply::Attempt { granted: true, count: count + 1, locked_until_ms: None }).write(
                        key,
                        Value::Failures { count: count + 1, pending: pending + 1 },
                        exp,
                    )
                }
                _ => Outcome::reply(Reply::Attempt { granted: true, count: 1, locked_until_ms: None }).write(
                    key,
                    Value::Failures { count: 1, pending: 1 },
                    now_ms.saturating_add(*window_ms.max(&1)),
                ),
            }
        }
        Op::AttemptFailed { key, window_ms, limit, lock_ms } => match live(key) {
            Some(Value::LockedUntil { until_ms }) => {
                Outcome::reply(Reply::Failed { count: *limit, locked_until_ms: Some(*until_ms) })
            }
            Some(Value::Failures { count, .. }) if count >= limit => {
                let until_ms = now_ms.saturating_add(*lock_ms);
                Outcome::reply(Reply::Failed { count: *count, locked_until_ms: Some(until_ms) }).write(
                    key,
                    Value::LockedUntil { until_ms },
                    until_ms.max(now_ms.saturating_add(1)),
                )
            }
            // Counted when it was reserved: now it is settled.
            Some(Value::Failures { count, pending }) => {
                let exp = entries.get(key).map_or(now_ms, |e| e.exp_ms);
                Outcome::reply(Reply::Failed { count: *count, locked_until_ms: None }).write(
                    key,
                    Value::Failures { count: *count, pending: pending.saturating_sub(1) },
                    exp,
                )
            }
            // The window ran out while this code was checked: it counts, as the first of a new
            // window.
            _ => Outcome::reply(Reply::Failed { count: 1, locked_until_ms: None }).write(
                key,
                Value::Failures { count: 1, pending: 0 },
                now_ms.saturating_add(*window_ms.max(&1)),
            ),
        },
        Op::AttemptSucceeded { key } => match live(key) {
            // A right code clears the count, except the attempts still being checked: they
            // were reserved and stay counted (wrong codes racing a right one are not free).
            Some(Value::Failures { pending, .. }) if *pending > 1 => {
                let exp = entries.get(key).map_or(now_ms, |e| e.exp_ms);
                let left = pending - 1;
                Outcome::reply(Reply::Done).write(key, Value::Failures { count: left, pending: left }, exp)
            }
            Some(Value::Failures { .. }) => Outcome::reply(Reply::Done).delete(key),
            // A lock set while this attempt was checked stays.
            _ => Outcome::reply(Reply::Done),
        },
        Op::Locked { key } => Outcome::reply(Reply::Locked {
            until_ms: match live(key) {
                Some(Value::LockedUntil { until_ms }) => Some(*until_ms),
                _ => None,
            },
        }),
        Op::Clear { key } => Outcome::reply(Reply::Done).delete(key),
        Op::Revoke { key, ttl_ms } => Outcome::reply(Reply::Done).write(
            key,
            Value::RevokedAt { at_ms: now_ms },
            now_ms.saturating_add(*ttl_ms.max(&1)),
        ),
        Op::RevokedSince { keys, since_ms } => Outcome::reply(Reply::Revoked {
            revoked: keys.iter().any(|k| matches!(live(k), Some(Value::RevokedAt { at_ms }) if at_ms >= since_ms)),
        }),
        Op::RefreshBegin { key, lease_ms } => match live(key) {
            Some(Value::Leased { .. }) => Outcome::reply(Reply::Lease(Lease::Held)),
            Some(Value::Refreshed { result }) => {
                Outcome::reply(Reply::Lease(Lease::Finished { result: result.clone() }))
            }
            _ => {
                let until_ms = now_ms.saturating_add(*lease_ms.max(&1));
                Outcome::reply(Reply::Lease(Lease::Acquired)).write(key, Value::Leased { until_ms }, until_ms)
            }
        },
        Op::RefreshEnd { key, result, retain_ms } => match result {
            Some(result) => Outcome::reply(Reply::Done).write(
                key,
                Value::Refreshed { result: result.clone() },
                now_ms.saturating_add(*retain_ms.max(&1)),
            ),
            None => Outcome::reply(Reply::Done).delete(key),
        },
    }
}

/// The alarm's work: the keys that have expired, and when to run next (the earliest
/// remaining expiry), given every entry of the object.
pub fn sweep(now_ms: u64, entries: &BTreeMap<String, Entry>) -> (Vec<String>, Option<u64>) {
    let expired = entries.iter().filter(|(_, e)| e.exp_ms <= now_ms).map(|(k, _)| k.clone()).collect();
    let next = entries.values().map(|e| e.exp_ms).filter(|exp| *exp > now_ms).min();
    (expired, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &mut BTreeMap<String, Entry>, op: Op, now: u64) -> Reply {
        let keys: Vec<String> = op.keys().into_iter().map(str::to_owned).collect();
        let view: BTreeMap<String, Entry> =
            keys.iter().filter_map(|k| store.get(k).map(|e| (k.clone(), e.clone()))).collect();
        let out = apply(&op, now, &view);
        for (k, e) in out.writes {
            match e {
                Some(e) => store.insert(k, e),
                None => store.remove(&k),
            };
        }
        out.reply
    }

    #[test]
    fn claim_is_first_use_wins_until_expiry() {
        let mut s = BTreeMap::new();
        let claim = || Op::Claim { key: "state:x".into(), ttl_ms: 1000 };
        assert_eq!(run(&mut s, claim(), 0), Reply::Claimed { first: true });
        assert_eq!(run(&mut s, claim(), 999), Reply::Claimed { first: false });
        assert_eq!(run(&mut s, claim(), 1000), Reply::Claimed { first: true });
    }

    #[test]
    fn attempts_are_reserved_before_the_check_so_racing_requests_get_no_more_than_the_limit() {
        let mut s = BTreeMap::new();
        let attempt = || Op::Attempt { key: "mfa".into(), window_ms: 10_000, limit: 3, lock_ms: 5000 };
        let failed = || Op::AttemptFailed { key: "mfa".into(), window_ms: 10_000, limit: 3, lock_ms: 5000 };
        // Three requests reserve before any of them is settled; the fourth is refused and locks.
        for n in 1..=3 {
            assert_eq!(run(&mut s, attempt(), n), Reply::Attempt { granted: true, count: n, locked_until_ms: None });
        }
        assert_eq!(run(&mut s, attempt(), 4), Reply::Attempt { granted: false, count: 3, locked_until_ms: Some(5004) });
        assert_eq!(
            run(&mut s, attempt(), 5),
            Reply::Attempt { granted: false, count: 3, locked_until_ms: Some(5004) },
            "the lock is not extended"
        );
        // Settling a wrong code while locked keeps the lock as it is.
        assert_eq!(run(&mut s, failed(), 6), Reply::Failed { count: 3, locked_until_ms: Some(5004) });
        // After the lock: a fresh window.
        assert_eq!(run(&mut s, attempt(), 5004), Reply::Attempt { granted: true, count: 1, locked_until_ms: None });
    }

    #[test]
    fn the_limit_th_wrong_attempt_locks_and_a_right_one_clears() {
        let mut s = BTreeMap::new();
        let attempt = || Op::Attempt { key: "mfa".into(), window_ms: 10_000, limit: 2, lock_ms: 5000 };
        let failed = || Op::AttemptFailed { key: "mfa".into(), window_ms: 10_000, limit: 2, lock_ms: 5000 };
        run(&mut s, attempt(), 0);
        assert_eq!(run(&mut s, failed(), 1), Reply::Failed { count: 1, locked_until_ms: None });
        run(&mut s, attempt(), 2);
        assert_eq!(run(&mut s, failed(), 3), Reply::Failed { count: 2, locked_until_ms: Some(5003) });
        assert_eq!(run(&mut s, Op::Locked { key: "mfa".into() }, 4), Reply::Locked { until_ms: Some(5003) });
        run(&mut s, Op::Clear { key: "mfa".into() }, 5);
        run(&mut s, attempt(), 6);
        assert_eq!(run(&mut s, failed(), 7), Reply::Failed { count: 1, locked_until_ms: None });
        // A right code alone clears the count.
        run(&mut s, attempt(), 8);
        run(&mut s, Op::AttemptSucceeded { key: "mfa".into() }, 9);
        assert_eq!(run(&mut s, attempt(), 10), Reply::Attempt { granted: true, count: 1, locked_until_ms: None });
    }

    #[test]
    fn wrong_codes_reserved_before_a_right_one_still_count() {
        let mut s = BTreeMap::new();
        let attempt = || Op::Attempt { key: "mfa".into(), window_ms: 10_000, limit: 5, lock_ms: 5000 };
        let failed = || Op::AttemptFailed { key: "mfa".into(), window_ms: 10_000, limit: 5, lock_ms: 5000 };
        // Three wrong codes and the user's right one are checked at once.
        for t in 0..4 {
            assert!(matches!(run(&mut s, attempt(), t), Reply::Attempt { granted: true, .. }));
        }
        // The right one settles first; the three wrong ones after it stay counted.
        run(&mut s, Op::AttemptSucceeded { key: "mfa".into() }, 4);
        for t in 5..8 {
            run(&mut s, failed(), t);
        }
        let mut granted = 0;
        while matches!(run(&mut s, attempt(), 10), Reply::Attempt { granted: true, .. }) {
            granted += 1;
        }
        assert_eq!(granted, 2, "five checks in the window in all, the right one not counted");
    }

    #[test]
    fn huge_durations_saturate_instead_of_wrapping_into_the_past() {
        let mut s = BTreeMap::new();
        let attempt = || Op::Attempt { key: "mfa".into(), window_ms: u64::MAX, limit: 1, lock_ms: u64::MAX };
        run(&mut s, attempt(), 10);
        assert_eq!(
            run(&mut s, attempt(), 20),
            Reply::Attempt { granted: false, count: 1, locked_until_ms: Some(u64::MAX) }
        );
        assert_eq!(run(&mut s, Op::Locked { key: "mfa".into() }, 30), Reply::Locked { until_ms: Some(u64::MAX) });
    }

    #[test]
    fn attempts_outside_the_window_start_a_new_count() {
        let mut s = BTreeMap::new();
        let attempt = || Op::Attempt { key: "mfa".into(), window_ms: 100, limit: 2, lock_ms: 5000 };
        assert_eq!(run(&mut s, attempt(), 0), Reply::Attempt { granted: true, count: 1, locked_until_ms: None });
        assert_eq!(run(&mut s, attempt(), 100), Reply::Attempt { granted: true, count: 1, locked_until_ms: None });
    }

    #[test]
    fn revocation_applies_to_sessions_created_before_it() {
        let mut s = BTreeMap::new();
        let keys = vec!["s:one".to_owned(), "user".to_owned()];
        let check = |since| Op::RevokedSince { keys: keys.clone(), since_ms: since };
        assert_eq!(run(&mut s, check(0), 50), Reply::Revoked { revoked: false });
        run(&mut s, Op::Revoke { key: "user".into(), ttl_ms: 10_000 }, 100);
        assert_eq!(run(&mut s, check(99), 150), Reply::Revoked { revoked: true });
        assert_eq!(run(&mut s, check(101), 150), Reply::Revoked { revoked: false });
        assert_eq!(run(&mut s, check(99), 10_100), Reply::Revoked { revoked: false }, "expired with the session");
    }

    #[test]
    fn one_refresh_at_a_time_and_the_result_is_shared() {
        let mut s = BTreeMap::new();
        let begin = || Op::RefreshBegin { key: "r".into(), lease_ms: 1000 };
        assert_eq!(run(&mut s, begin(), 0), Reply::Lease(Lease::Acquired));
        assert_eq!(run(&mut s, begin(), 10), Reply::Lease(Lease::Held));
        run(&mut s, Op::RefreshEnd { key: "r".into(), result: Some("new".into()), retain_ms: 500 }, 20);
        assert_eq!(run(&mut s, begin(), 30), Reply::Lease(Lease::Finished { result: "new".into() }));
        assert_eq!(run(&mut s, begin(), 520), Reply::Lease(Lease::Acquired), "result retained 500 ms");
        run(&mut s, Op::RefreshEnd { key: "r".into(), result: None, retain_ms: 500 }, 530);
        assert_eq!(run(&mut s, begin(), 540), Reply::Lease(Lease::Acquired), "released without a result");
        assert_eq!(run(&mut s, begin(), 1540), Reply::Lease(Lease::Acquired), "an abandoned lease lapses");
    }

    #[test]
    fn sweep_removes_expired_entries_and_schedules_the_next() {
        let mut s = BTreeMap::new();
        run(&mut s, Op::Claim { key: "a".into(), ttl_ms: 100 }, 0);
        run(&mut s, Op::Claim { key: "b".into(), ttl_ms: 300 }, 0);
        let (expired, next) = sweep(150, &s);
        assert_eq!(expired, vec!["a".to_owned()]);
        assert_eq!(next, Some(300));
        assert_eq!(sweep(300, &s), (vec!["a".to_owned(), "b".to_owned()], None));
    }

    #[test]
    fn ops_and_replies_round_trip_as_json() {
        let op = Op::Attempt { key: "k".into(), window_ms: 1, limit: 2, lock_ms: 3 };
        let text = serde_json::to_string(&op).unwrap();
        assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), op);
        let reply = Reply::Lease(Lease::Finished { result: "x".into() });
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), reply);
    }

    #[test]
    fn shards_are_per_user_and_per_bucket() {
        assert_eq!(user_shard("t", "alice"), user_shard("t", "alice"));
        assert_ne!(user_shard("t", "alice"), user_shard("t", "bob"));
        assert_ne!(user_shard("t", "alice"), user_shard("u", "alice"));
        let buckets: std::collections::BTreeSet<String> =
            (0..2000).map(|i| bucket_shard("t", "state", &format!("s{i}"))).collect();
        assert_eq!(buckets.len(), BUCKETS as usize);
    }
}
