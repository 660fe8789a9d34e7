//! The coordination Durable Object and the gateway's port to it. The object runs
//! [`crate::coord::apply`] on the entries an op names; the runtime delivers no other event
//! to the object while its storage calls are pending (the input gate), so read, decide and
//! write form one atomic step. An alarm at the earliest expiry sweeps expired entries.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::{select, Either};
use wasm_bindgen::JsValue;
use worker::{durable_object, Date, Delay, DurableObject, Env, Method, ObjectNamespace, RequestInit, State};

use crate::coord::{self, Entry, Op, Reply};
use crate::ports::{Coordinator as CoordinatorPort, KvError, LocalFuture};

/// The binding name; without it the gateway runs on KV alone.
pub const COORDINATOR_BINDING: &str = "PORTCULLIS_COORDINATOR";
/// How long the gateway waits for one answer from the object.
const CALL_TIMEOUT_MS: u64 = 5_000;

fn err(e: impl std::fmt::Display) -> KvError {
    KvError(format!("coordinator: {e}"))
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn parse_entry(v: &JsValue) -> Option<Entry> {
    v.as_string().and_then(|s| serde_json::from_str(&s).ok())
}

#[durable_object]
pub struct Coordinator {
    state: State,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coordinator")
    }
}

impl Coordinator {
    async fn apply(&self, op: &Op) -> worker::Result<Reply> {
        let storage = self.state.storage();
        let keys: Vec<String> = op.keys().into_iter().map(str::to_owned).collect();
        let found = storage.get_multiple(keys.clone()).await?;
        let mut entries = BTreeMap::new();
        for k in keys {
            if let Some(e) = parse_entry(&found.get(&JsValue::from_str(&k))) {
                entries.insert(k, e);
            }
        }
        let now = now_ms();
        let out = coord::apply(op, now, &entries);
        for (k, e) in &out.writes {
            match e {
                Some(e) => storage.put(k, serde_json::to_string(e)?).await?,
                None => {
                    storage.delete(k).await?;
                }
            }
        }
        if let Some(exp) = out.earliest_expiry() {
            let current = storage.get_alarm().await?.and_then(|a| u64::try_from(a).ok());
            if current.is_none_or(|a| a > exp) {
                let offset = i64::try_from(exp.saturating_sub(now)).unwrap_or(i64::MAX);
                storage.set_alarm(offset).await?;
            }
        }
        Ok(out.reply)
    }
}

impl DurableObject for Coordinator {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: worker::Request) -> worker::Result<worker::Response> {
        let op: Op = match req.json().await {
            Ok(op) => op,
            Err(e) => return worker::Response::error(format!("unreadable op: {e}"), 400),
        };
        match self.apply(&op).await {
            Ok(reply) => worker::Response::from_json(&reply),
            Err(e) => worker::Response::error(format!("storage: {e}"), 503),
        }
    }

    async fn alarm(&self) -> worker::Result<worker::Response> {
        let storage = self.state.storage();
        let all = storage.list().await?;
        let mut entries = BTreeMap::new();
        for pair in all.entries() {
            let pair = js_sys::Array::from(&pair?);
            if let (Some(k), Some(e)) = (pair.get(0).as_string(), parse_entry(&pair.get(1))) {
                entries.insert(k, e);
            }
        }
        let now = now_ms();
        let (expired, next) = coord::sweep(now, &entries);
        for k in expired {
            storage.delete(&k).await?;
        }
        if let Some(next) = next {
            storage.set_alarm(i64::try_from(next.saturating_sub(now)).unwrap_or(i64::MAX)).await?;
        }
        worker::Response::empty()
    }
}

/// The port: one object per shard name.
#[derive(Debug)]
pub struct DoCoordinator(pub ObjectNamespace);

impl DoCoordinator {
    async fn send(&self, shard: &str, op: &Op) -> Result<Reply, KvError> {
        let stub = self.0.id_from_name(shard).and_then(|id| id.get_stub()).map_err(err)?;
        let body = serde_json::to_string(op).map_err(err)?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_body(Some(JsValue::from_str(&body)));
        let req = worker::Request::new_with_init("https://coordinator.internal/op", &init).map_err(err)?;
        let mut resp = stub.fetch_with_request(req).await.map_err(err)?;
        if resp.status_code() != 200 {
            let text = resp.text().await.unwrap_or_default();
            return Err(err(format!("answered {}: {}", resp.status_code(), crate::oidc::truncate(&text, 200))));
        }
        resp.json::<Reply>().await.map_err(err)
    }
}

impl CoordinatorPort for DoCoordinator {
    fn call<'a>(&'a self, shard: &'a str, op: &'a Op) -> LocalFuture<'a, Result<Reply, KvError>> {
        Box::pin(async move {
            let work = Box::pin(self.send(shard, op));
            let timeout = Delay::from(Duration::from_millis(CALL_TIMEOUT_MS));
            match select(work, timeout).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(err(format!("no answer within {CALL_TIMEOUT_MS} ms"))),
            }
        })
    }

    fn pause(&self, ms: u64) -> LocalFuture<'_, ()> {
        Box::pin(async move { Delay::from(Duration::from_millis(ms)).await })
    }
}
