//! The KV fault switch: makes KV fail, hang or answer stale values, so the end-to-end tests
//! can show that every flow fails closed, and lets tests set the request's edge context
//! ([`TEST_CF_HEADER`]).
//!
//! Compiled only into the test build of the Worker (cargo feature `test-faults`, which
//! `scripts/build.sh --test-faults` passes; `make test` builds that way) and into this
//! crate's own unit tests. The deployed build has no switch: no route, no variable read, no
//! header read. In the test build the switch exists only when the Worker variable
//! `PORTCULLIS_TEST_FAULTS` is `"1"`: the shell then answers `GET`/`POST
//! {prefix}/_test/faults` with [`Faults::route`] and wraps its KV port in [`FaultyKv`]. The
//! state is isolate-wide (one `Faults` per isolate).
//!
//! ```json
//! {"kv": {"get": "ok|fail|timeout", "put": "…", "delete": "…", "list": "…"}, "kv_stale_ms": 0}
//! ```
//!
//! - `fail`: the operation returns a [`KvError`] at once ("injected failure").
//! - `timeout`: the operation never completes; the KV deadline ([`super::DeadlineKv`]) ends it.
//! - `kv_stale_ms` > 0: another location of an eventually consistent store. Each `get`
//!   result (value or absence) is remembered per key and returned again for that many
//!   milliseconds; puts and deletes still reach the store but do not update what was
//!   remembered.

use std::cell::RefCell;
use std::collections::HashMap;

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
