//! KV failure handling: the deadline every KV call gets in the Worker, and a test switch
//! that makes KV fail, hang or answer stale values, so the end-to-end tests can show that
//! every flow fails closed. The same switch lets tests set the request's edge context
//! ([`TEST_CF_HEADER`]).
//!
//! The switch exists only when the Worker variable `PORTCULLIS_TEST_FAULTS` is `"1"`: the
//! shell then answers `GET`/`POST {prefix}/_test/faults` with [`Faults::route`] and wraps
//! its KV port in [`FaultyKv`]. The state is isolate-wide (one `Faults` per isolate).
//!
//! ```json
//! {"kv": {"get": "ok|fail|timeout", "put": "…", "delete": "…", "list": "…"}, "kv_stale_ms": 0}
//! ```
//!
//! - `fail`: the operation returns a [`KvError`] at once ("injected failure").
//! - `timeout`: the operation never completes; the KV deadline ([`DeadlineKv`]) ends it.
//! - `kv_stale_ms` > 0: another location of an eventually consistent store. Each `get`
//!   result (value or absence) is remembered per key and returned again for that many
//!   milliseconds; puts and deletes still reach the store but do not update what was
//!   remembered.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::task::Poll;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::Response;
use crate::ports::{Kv, KvError, LocalFuture, Runtime};

/// The Worker variable that turns the switch on.
pub const ENV_VAR: &str = "PORTCULLIS_TEST_FAULTS";
/// The switch's route, under the gateway prefix.
pub const ROUTE: &str = "/_test/faults";
/// With the switch on, a request header whose JSON (an [`crate::http::EdgeContext`]:
/// `{"country": "FR", "asn": 64500, "client_cert_verified": true, "bot_score": 12}`) the
/// shell uses instead of `request.cf`, which local workerd does not fill. Ignored when the
/// switch is off; never forwarded (the gateway owns `X-Portcullis-*`).
pub const TEST_CF_HEADER: &str = "x-portcullis-test-cf";
/// Most keys whose reads are remembered in stale mode (bounded memory).
const MAX_REMEMBERED: usize = 10_000;

/// What one kind of KV operation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Ok,
    Fail,
    Timeout,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvFaults {
    pub get: Mode,
    pub put: Mode,
    pub delete: Mode,
    pub list: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultState {
    pub kv: KvFaults,
    pub kv_stale_ms: u64,
}

impl FaultState {
    /// Parses a request body; missing fields are `ok` / `0`, an empty body clears all.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

/// The isolate's fault state and the reads remembered in stale mode.
#[derive(Debug, Default)]
pub struct Faults {
    state: RefCell<FaultState>,
    remembered: RefCell<HashMap<String, (Option<String>, u64)>>,
}

impl Faults {
    pub fn state(&self) -> FaultState {
        *self.state.borrow()
    }

    /// Replaces the state; remembered reads are forgotten.
    pub fn set(&self, state: FaultState) {
        *self.state.borrow_mut() = state;
        self.remembered.borrow_mut().clear();
    }

    /// `GET` answers the state; `POST` sets it from the JSON body and answers it.
    pub fn route(&self, method: &str, body: &[u8]) -> Response {
        let mut r = match method {
            "GET" | "HEAD" => Response::json(200, &json!(self.state())),
            "POST" => match FaultState::parse(body) {
                Ok(s) => {
                    self.set(s);
                    Response::json(200, &json!(s))
                }
                Err(e) => Response::json(400, &json!({"error": "bad_input", "message": e})),
            },
            _ => {
                let mut r = Response::json(405, &json!({"error": "method_not_allowed"}));
                r.headers.set("allow", "GET, HEAD, POST");
                r
            }
        };
        r.headers.set("cache-control", "no-store");
        r
    }

    fn remembered(&self, key: &str, now_ms: u64) -> Option<Option<String>> {
        self.remembered.borrow().get(key).filter(|(_, until)| now_ms < *until).map(|(v, _)| v.clone())
    }

    fn remember(&self, key: &str, value: Option<String>, until: u64) {
        let mut m = self.remembered.borrow_mut();
        if m.len() >= MAX_REMEMBERED && !m.contains_key(key) {
            m.clear();
        }
        m.insert(key.to_owned(), (value, until));
    }
}

fn injected<'a, T: 'a>(mode: Mode, op: &'static str) -> Option<LocalFuture<'a, Result<T, KvError>>> {
    match mode {
        Mode::Ok => None,
        Mode::Fail => Some(Box::pin(async move { Err(KvError(format!("{op}: injected failure"))) })),
        Mode::Timeout => Some(Box::pin(std::future::pending())),
    }
}

/// A KV port that obeys the fault state before calling the real one.
pub struct FaultyKv<'a> {
    pub inner: &'a dyn Kv,
    pub faults: &'a Faults,
    pub rt: &'a dyn Runtime,
}

impl std::fmt::Debug for FaultyKv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyKv").field("state", &self.faults.state()).finish()
    }
}

impl Kv for FaultyKv<'_> {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<String>, KvError>> {
        let state = self.faults.state();
        if let Some(f) = injected(state.kv.get, "get") {
            return f;
        }
        Box::pin(async move {
            if state.kv_stale_ms == 0 {
                return self.inner.get(key).await;
            }
            let now = self.rt.now_ms();
            if let Some(v) = self.faults.remembered(key, now) {
                return Ok(v);
            }
            let v = self.inner.get(key).await?;
            self.faults.remember(key, v.clone(), now + state.kv_stale_ms);
            Ok(v)
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str, ttl: Option<u64>) -> LocalFuture<'a, Result<(), KvError>> {
        injected(self.faults.state().kv.put, "put").unwrap_or_else(|| self.inner.put(key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<(), KvError>> {
        injected(self.faults.state().kv.delete, "delete").unwrap_or_else(|| self.inner.delete(key))
    }

    fn list<'a>(&'a self, prefix: &'a str, limit: usize) -> LocalFuture<'a, Result<Vec<String>, KvError>> {
        injected(self.faults.state().kv.list, "list").unwrap_or_else(|| self.inner.list(prefix, limit))
    }
}

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
