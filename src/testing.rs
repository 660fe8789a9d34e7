//! In-memory implementations of the ports, for native tests and benchmarks: a KV store with
//! TTLs on a controllable clock, a scripted HTTP peer, and a runtime that records log lines.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::http::{Inbound, Outbound};
use crate::ports::{Fetch, FetchError, Kv, KvError, LocalFuture, Runtime};

/// A clock tests move by hand.
#[derive(Debug, Clone, Default)]
pub struct TestClock(Rc<Cell<u64>>);

impl TestClock {
    pub fn at(secs: u64) -> Self {
        Self(Rc::new(Cell::new(secs * 1000)))
    }
    pub fn now(&self) -> u64 {
        self.0.get() / 1000
    }
    pub fn advance(&self, secs: u64) {
        self.0.set(self.0.get() + secs * 1000);
    }
}

/// KV in memory. Failure switches let tests inject KV outages.
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: RefCell<BTreeMap<String, (String, Option<u64>)>>,
    clock: TestClock,
    pub fail_get: Cell<bool>,
    pub fail_put: Cell<bool>,
    pub fail_delete: Cell<bool>,
    pub reads: Cell<u64>,
    pub writes: Cell<u64>,
    /// Deletes (the platform counts them apart from writes, with the same daily limit).
    pub deletes: Cell<u64>,
}

impl MemoryKv {
    pub fn new(clock: TestClock) -> Self {
        Self { clock, ..Default::default() }
    }

    pub fn keys(&self) -> Vec<String> {
        let now = self.clock.now();
        self.data.borrow().iter().filter(|(_, (_, exp))| exp.is_none_or(|e| e > now)).map(|(k, _)| k.clone()).collect()
    }

    pub fn raw_get(&self, key: &str) -> Option<String> {
        let now = self.clock.now();
        self.data.borrow().get(key).filter(|(_, exp)| exp.is_none_or(|e| e > now)).map(|(v, _)| v.clone())
    }

    pub fn raw_put(&self, key: &str, value: &str) {
        self.data.borrow_mut().insert(key.to_owned(), (value.to_owned(), None));
    }

    pub fn raw_delete(&self, key: &str) {
        self.data.borrow_mut().remove(key);
    }

    pub fn ttl_of(&self, key: &str) -> Option<u64> {
        self.data.borrow().get(key).and_then(|(_, e)| *e).map(|e| e.saturating_sub(self.clock.now()))
    }
}

impl Kv for MemoryKv {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<String>, KvError>> {
        Box::pin(async move {
            self.reads.set(self.reads.get() + 1);
            if self.fail_get.get() {
                return Err(KvError("injected get failure".into()));
            }
            Ok(self.raw_get(key))
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str, ttl: Option<u64>) -> LocalFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            self.writes.set(self.writes.get() + 1);
            if self.fail_put.get() {
                return Err(KvError("injected put failure".into()));
            }
            if let Some(t) = ttl {
                if t < 60 {
                    return Err(KvError(format!("expiration_ttl {t} is below the minimum of 60")));
                }
            }
            let exp = ttl.map(|t| self.clock.now() + t);
            self.data.borrow_mut().insert(key.to_owned(), (value.to_owned(), exp));
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            self.deletes.set(self.deletes.get() + 1);
            if self.fail_delete.get() {
                return Err(KvError("injected delete failure".into()));
            }
            self.data.borrow_mut().remove(key);
            Ok(())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str, limit: usize) -> LocalFuture<'a, Result<Vec<String>, KvError>> {
        Box::pin(async move {
            if self.fail_get.get() {
                return Err(KvError("injected list failure".into()));
            }
            Ok(self.keys().into_iter().filter(|k| k.starts_with(prefix)).take(limit).collect())
        })
    }
}

type Handler = Box<dyn Fn(&Outbound) -> Result<Inbound, FetchError>>;

/// An HTTP peer answered by a closure; records every request.
pub struct ScriptedFetch {
    handler: RefCell<Handler>,
    pub requests: RefCell<Vec<Outbound>>,
}

impl std::fmt::Debug for ScriptedFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedFetch")
    }
}

impl ScriptedFetch {
    pub fn new(handler: impl Fn(&Outbound) -> Result<Inbound, FetchError> + 'static) -> Self {
        Self { handler: RefCell::new(Box::new(handler)), requests: RefCell::new(Vec::new()) }
    }

    pub fn set(&self, handler: impl Fn(&Outbound) -> Result<Inbound, FetchError> + 'static) {
        *self.handler.borrow_mut() = Box::new(handler);
    }

    pub fn count(&self, url_part: &str) -> usize {
        self.requests.borrow().iter().filter(|r| r.url.contains(url_part)).count()
    }
}

impl Fetch for ScriptedFetch {
    fn fetch<'a>(
        &'a self,
        req: Outbound,
        _timeout_ms: u64,
        max_body: usize,
    ) -> LocalFuture<'a, Result<Inbound, FetchError>> {
        Box::pin(async move {
            let r = (self.handler.borrow())(&req);
            self.requests.borrow_mut().push(req);
            let r = r?;
            if r.body.len() > max_body {
                return Err(FetchError::TooLarge);
            }
            Ok(r)
        })
    }
}

/// Clock, randomness (real, from the OS) and captured log lines.
#[derive(Debug, Default)]
pub struct TestRuntime {
    pub clock: TestClock,
    pub logs: RefCell<Vec<String>>,
}

impl TestRuntime {
    pub fn new(clock: TestClock) -> Self {
        Self { clock, logs: RefCell::new(Vec::new()) }
    }

    /// Log lines parsed as JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.logs.borrow().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Runtime for TestRuntime {
    fn now_ms(&self) -> u64 {
        self.clock.0.get()
    }

    fn fill_random(&self, buf: &mut [u8]) {
        // Tests use the OS generator too: nothing random is predictable, even in tests.
        if getrandom::getrandom(buf).is_err() {
            buf.fill(0);
        }
    }

    fn log(&self, line: &str) {
        self.logs.borrow_mut().push(line.to_owned());
    }
}

pub fn json_response(status: u16, v: &serde_json::Value) -> Inbound {
    Inbound { status, headers: Default::default(), body: v.to_string().into_bytes() }
}

/// A signature port that answers what the test says (`None`: "not available here").
#[derive(Debug, Default)]
pub struct ScriptedVerifier {
    pub answer: Cell<Option<bool>>,
    pub calls: Cell<u32>,
}

impl crate::ports::SignatureVerifier for ScriptedVerifier {
    fn verify<'a>(
        &'a self,
        _alg: &'a str,
        _jwk: &'a serde_json::Value,
        _signed: &'a [u8],
        _signature: &'a [u8],
    ) -> LocalFuture<'a, Option<bool>> {
        Box::pin(async move {
            self.calls.set(self.calls.get() + 1);
            self.answer.get()
        })
    }
}

/// The coordination object in memory: [`crate::coord::apply`] over one map per shard, on the
/// test clock. `fail` switches simulate an unreachable object; `calls` counts calls per shard.
#[derive(Debug, Default)]
pub struct MemoryCoordinator {
    shards: RefCell<BTreeMap<String, BTreeMap<String, crate::coord::Entry>>>,
    clock: TestClock,
    pub fail: Cell<bool>,
    pub calls: RefCell<Vec<(String, crate::coord::Op)>>,
}

impl MemoryCoordinator {
    pub fn new(clock: TestClock) -> Self {
        Self { clock, ..Default::default() }
    }

    /// The live entries of a shard (for assertions).
    pub fn entries(&self, shard: &str) -> BTreeMap<String, crate::coord::Entry> {
        let now_ms = self.clock.now() * 1000;
        self.shards
            .borrow()
            .get(shard)
            .map(|m| m.iter().filter(|(_, e)| e.exp_ms > now_ms).map(|(k, e)| (k.clone(), e.clone())).collect())
            .unwrap_or_default()
    }

    pub fn shard_names(&self) -> Vec<String> {
        self.shards.borrow().keys().cloned().collect()
    }
}

impl crate::ports::Coordinator for MemoryCoordinator {
    fn call<'a>(
        &'a self,
        shard: &'a str,
        op: &'a crate::coord::Op,
    ) -> LocalFuture<'a, Result<crate::coord::Reply, KvError>> {
        Box::pin(async move {
            self.calls.borrow_mut().push((shard.to_owned(), op.clone()));
            if self.fail.get() {
                return Err(KvError("coordinator: injected failure".into()));
            }
            let mut shards = self.shards.borrow_mut();
            let store = shards.entry(shard.to_owned()).or_default();
            let view: BTreeMap<String, crate::coord::Entry> =
                op.keys().into_iter().filter_map(|k| store.get(k).map(|e| (k.to_owned(), e.clone()))).collect();
            let out = crate::coord::apply(op, self.clock.0.get(), &view);
            for (k, e) in out.writes {
                match e {
                    Some(e) => store.insert(k, e),
                    None => store.remove(&k),
                };
            }
            Ok(out.reply)
        })
    }

    fn pause(&self, ms: u64) -> LocalFuture<'_, ()> {
        self.clock.0.set(self.clock.0.get() + ms);
        Box::pin(async {})
    }
}
