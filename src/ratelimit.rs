//! An in-isolate token bucket per client key (the client IP), used to cap how fast one
//! client can start sign-ins. Each start stores pre-login state in KV, so an unbounded rate
//! would let one client fill storage and spend the KV write budget. The buckets live in one
//! isolate: a client spread over many isolates or locations gets each one's allowance, so
//! this bounds floods from one address, not a distributed attack (the platform's own rate
//! limiting rules are the tool for that).

use std::collections::HashMap;

/// Most clients tracked per isolate (bounded memory).
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Key → (tokens in thousandths, last refill in ms).
    buckets: HashMap<String, (u64, u64)>,
}

impl RateLimiter {
    /// Takes one token for `key`. `burst` tokens at most, refilled at `per_minute`. On
    /// refusal, the seconds until a token is available (at least 1).
    pub fn take(&mut self, key: &str, now_ms: u64, burst: u32, per_minute: u32) -> Result<(), u64> {
        if per_minute == 0 || burst == 0 {
            return Ok(());
        }
        let full = u64::from(burst) * 1000;
        let per_ms = |ms: u64| ms.saturating_mul(u64::from(per_minute)) / 60;
        if self.buckets.len() >= MAX_CLIENTS && !self.buckets.contains_key(key) {
            // Drop the clients whose bucket has refilled: they lose nothing.
            self.buckets.retain(|_, (tokens, at)| tokens.saturating_add(per_ms(now_ms.saturating_sub(*at))) < full);
            if self.buckets.len() >= MAX_CLIENTS {
                self.buckets.clear();
            }
        }
        let (tokens, at) = self.buckets.entry(key.to_owned()).or_insert((full, now_ms));
        *tokens = tokens.saturating_add(per_ms(now_ms.saturating_sub(*at))).min(full);
        *at = now_ms;
        if *tokens >= 1000 {
            *tokens -= 1000;
            return Ok(());
        }
        let missing_ms = (1000 - *tokens) * 60 / u64::from(per_minute);
        Err(missing_ms.div_ceil(1000).max(1))
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut l = RateLimiter::default();
        for _ in 0..5 {
            l.take("1.2.3.4", 0, 5, 60).unwrap();
        }
        assert_eq!(l.take("1.2.3.4", 0, 5, 60), Err(1));
        // Another client has its own bucket.
        l.take("5.6.7.8", 0, 5, 60).unwrap();
        // 60 per minute: one token a second.
        assert_eq!(l.take("1.2.3.4", 500, 5, 60), Err(1));
        l.take("1.2.3.4", 1000, 5, 60).unwrap();
        assert!(l.take("1.2.3.4", 1000, 5, 60).is_err());
        // A slow rate names a longer wait.
        let mut slow = RateLimiter::default();
        slow.take("a", 0, 1, 2).unwrap();
        assert_eq!(slow.take("a", 0, 1, 2), Err(30));
        // Refill is capped at the burst.
        l.take("9", 0, 2, 60).unwrap();
        for _ in 0..2 {
            l.take("9", 3_600_000, 2, 60).unwrap();
        }
        assert!(l.take("9", 3_600_000, 2, 60).is_err());
    }

    #[test]
    fn zero_disables_and_memory_is_bounded() {
        let mut l = RateLimiter::default();
        for _ in 0..1000 {
            l.take("x", 0, 0, 60).unwrap();
            l.take("x", 0, 10, 0).unwrap();
        }
        assert!(l.is_empty());
        for i in 0..(MAX_CLIENTS + 10) {
            let _ = l.take(&format!("c{i}"), 0, 3, 60);
        }
        assert!(l.len() <= MAX_CLIENTS);
    }
}
