//! KV failure handling: the deadline every KV call gets in the Worker ([`DeadlineKv`]), and,
//! in the test build only, a switch that makes KV fail, hang or answer stale values
//! (`faults::switch`, cargo feature `test-faults`).

use std::future::Future;
use std::task::Poll;

use crate::ports::{Kv, KvError, LocalFuture};

#[cfg(any(test, feature = "test-faults"))]
pub mod switch;
#[cfg(any(test, feature = "test-faults"))]
pub use switch::{FaultState, Faults, FaultyKv, KvFaults, Mode, ENV_VAR, ROUTE, TEST_CF_HEADER};

/// Ends `op` with "timed out" when `sleep` completes first.
pub async fn with_deadline<T>(
    op: impl Future<Output = Result<T, KvError>>,
    sleep: impl Future<Output = ()>,
    what: &str,
    ms: u64,
) -> Result<T, KvError> {
    let mut op = std::pin::pin!(op);
    let mut sleep = std::pin::pin!(sleep);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = op.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(KvError(format!("{what} timed out after {ms} ms"))));
        }
        Poll::Pending
    })
    .await
}

/// A KV port whose every operation ends within `timeout_ms` (`sleep` is the runtime's timer).
pub struct DeadlineKv<'a, S> {
    pub inner: &'a dyn Kv,
    pub timeout_ms: u64,
    pub sleep: S,
}

impl<S> std::fmt::Debug for DeadlineKv<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineKv").field("timeout_ms", &self.timeout_ms).finish()
    }
}

impl<S> Kv for DeadlineKv<'_, S>
where
    S: Fn(u64) -> LocalFuture<'static, ()>,
{
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<String>, KvError>> {
        Box::pin(with_deadline(self.inner.get(key), (self.sleep)(self.timeout_ms), "get", self.timeout_ms))
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str, ttl: Option<u64>) -> LocalFuture<'a, Result<(), KvError>> {
        Box::pin(with_deadline(self.inner.put(key, value, ttl), (self.sleep)(self.timeout_ms), "put", self.timeout_ms))
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<(), KvError>> {
        Box::pin(with_deadline(self.inner.delete(key), (self.sleep)(self.timeout_ms), "delete", self.timeout_ms))
    }

    fn list<'a>(&'a self, prefix: &'a str, limit: usize) -> LocalFuture<'a, Result<Vec<String>, KvError>> {
        Box::pin(with_deadline(self.inner.list(prefix, limit), (self.sleep)(self.timeout_ms), "list", self.timeout_ms))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::testing::{MemoryKv, TestClock, TestRuntime};
    use pollster::block_on;
    use serde_json::json;

    fn setup() -> (TestClock, MemoryKv, TestRuntime, Faults) {
        let clock = TestClock::at(1_000);
        (clock.clone(), MemoryKv::new(clock.clone()), TestRuntime::new(clock), Faults::default())
    }

    fn is_pending<T>(f: LocalFuture<'_, T>) -> bool {
        let mut f = f;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        f.as_mut().poll(&mut cx).is_pending()
    }

    #[test]
    fn parses_partial_documents_and_refuses_unknown_modes() {
        let s = FaultState::parse(br#"{"kv":{"put":"fail","get":"timeout"},"kv_stale_ms":1500}"#).unwrap();
        assert_eq!(s.kv.get, Mode::Timeout);
        assert_eq!(s.kv.put, Mode::Fail);
        assert_eq!(s.kv.delete, Mode::Ok);
        assert_eq!(s.kv_stale_ms, 1500);
        assert_eq!(FaultState::parse(b"").unwrap(), FaultState::default());
        assert_eq!(FaultState::parse(b"{}").unwrap(), FaultState::default());
        assert!(FaultState::parse(br#"{"kv":{"get":"slow"}}"#).is_err());
        assert!(FaultState::parse(br#"{"kv":{"gets":"fail"}}"#).is_err());
        assert!(FaultState::parse(br#"{"kv_stale_ms":-1}"#).is_err());
    }

    #[test]
    fn route_sets_and_reports_the_state() {
        let f = Faults::default();
        let r = f.route("POST", br#"{"kv":{"delete":"fail"}}"#);
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, json!({"kv": {"get": "ok", "put": "ok", "delete": "fail", "list": "ok"}, "kv_stale_ms": 0}));
        assert_eq!(f.route("GET", b"").body, r.body);
        assert_eq!(f.route("POST", b"{nope").status, 400);
        assert_eq!(f.state().kv.delete, Mode::Fail, "a bad document changes nothing");
        let t = f.route("TRACE", b"");
        assert_eq!((t.status, t.headers.get("allow")), (405, Some("GET, HEAD, POST")));
    }

    #[test]
    fn fail_errors_at_once_and_timeout_never_completes() {
        let (_, kv, rt, faults) = setup();
        kv.raw_put("k", "v");
        let fk = FaultyKv { inner: &kv, faults: &faults, rt: &rt };
        assert_eq!(block_on(fk.get("k")).unwrap().as_deref(), Some("v"));
        faults.set(FaultState { kv: KvFaults { get: Mode::Fail, ..Default::default() }, kv_stale_ms: 0 });
        assert!(block_on(fk.get("k")).unwrap_err().0.contains("injected failure"));
        block_on(fk.put("k", "w", None)).unwrap();
        faults.set(FaultState { kv: KvFaults { put: Mode::Timeout, ..Default::default() }, kv_stale_ms: 0 });
        assert!(is_pending(fk.put("k", "x", None)));
        assert_eq!(kv.raw_get("k").as_deref(), Some("w"), "a hanging put writes nothing");
        faults.set(FaultState {
            kv: KvFaults { delete: Mode::Fail, list: Mode::Fail, ..Default::default() },
            kv_stale_ms: 0,
        });
        assert!(block_on(fk.delete("k")).is_err());
        assert!(block_on(fk.list("", 10)).is_err());
        assert_eq!(kv.raw_get("k").as_deref(), Some("w"));
    }

    #[test]
    fn the_deadline_ends_a_hanging_operation() {
        let (_, kv, rt, faults) = setup();
        faults.set(FaultState { kv: KvFaults { get: Mode::Timeout, ..Default::default() }, kv_stale_ms: 0 });
        let fk = FaultyKv { inner: &kv, faults: &faults, rt: &rt };
        let ready: fn(u64) -> LocalFuture<'static, ()> = |_| Box::pin(async {});
        let dk = DeadlineKv { inner: &fk, timeout_ms: 250, sleep: ready };
        assert_eq!(block_on(dk.get("k")).unwrap_err().0, "get timed out after 250 ms");
        // An operation that completes wins over a timer that never fires.
        let never: fn(u64) -> LocalFuture<'static, ()> = |_| Box::pin(std::future::pending());
        let dk = DeadlineKv { inner: &kv, timeout_ms: 250, sleep: never };
        block_on(dk.put("k", "v", None)).unwrap();
        assert_eq!(block_on(dk.get("k")).unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn stale_mode_returns_remembered_reads_until_they_age_out() {
        let (clock, kv, rt, faults) = setup();
        faults.set(FaultState { kv_stale_ms: 30_000, ..Default::default() });
        let fk = FaultyKv { inner: &kv, faults: &faults, rt: &rt };
        kv.raw_put("a", "1");
        assert_eq!(block_on(fk.get("a")).unwrap().as_deref(), Some("1"));
        assert_eq!(block_on(fk.get("b")).unwrap(), None);
        // Writes reach the store, but this "location" keeps answering what it saw.
        block_on(fk.delete("a")).unwrap();
        block_on(fk.put("b", "2", None)).unwrap();
        assert_eq!(kv.raw_get("a"), None);
        assert_eq!(block_on(fk.get("a")).unwrap().as_deref(), Some("1"));
        assert_eq!(block_on(fk.get("b")).unwrap(), None);
        clock.advance(31);
        assert_eq!(block_on(fk.get("a")).unwrap(), None);
        assert_eq!(block_on(fk.get("b")).unwrap().as_deref(), Some("2"));
        // Clearing the state forgets what was remembered.
        kv.raw_put("a", "3");
        faults.set(FaultState::default());
        assert_eq!(block_on(fk.get("a")).unwrap().as_deref(), Some("3"));
    }
}
