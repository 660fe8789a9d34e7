//! The Worker shell: the only module that touches `worker::*`. It implements the ports
//! (KV, fetch, clock and randomness, logs), converts requests and responses, and carries out
//! the gateway's decisions (answer, or stream the request to the origin).

use std::cell::OnceCell;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::{select, Either};
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::web_sys;
use worker::{event, Context, Delay, Env};

use crate::config::{self, Coordination, VarValue};
use crate::faults::DeadlineKv;
#[cfg(feature = "test-faults")]
use crate::faults::{self, Faults, FaultyKv};
use crate::gateway::{Action, Forward, Gateway};
use crate::http::{Headers, Inbound, Outbound, Request, Response};
use crate::ports::{Fetch, FetchError, Kv, KvError, LocalFuture, Ports, Runtime};
use crate::proxy;
use crate::secret::Secret;

mod durable;

const KV_BINDING: &str = "PORTCULLIS_KV";
/// The global the Worker's entry module (src/entry.mjs) sets to the configuration file
/// bundled at build time (`null` when none was).
const BUNDLED_CONFIG_GLOBAL: &str = "__PORTCULLIS_BUNDLED_CONFIG__";
/// Request header bytes above which the gateway refuses with 431.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// URL length above which the gateway refuses with 414.
const MAX_URL_BYTES: usize = 8 * 1024;

thread_local! {
    static GATEWAY: OnceCell<Rc<Gateway>> = const { OnceCell::new() };
    /// Imported WebCrypto keys by [`crypto_key_id`] (alg and every public JWK member), so a
    /// key is imported once per isolate.
    static CRYPTO_KEYS: std::cell::RefCell<std::collections::HashMap<String, JsValue>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    /// Scratch for [`crypto_key_id`], so a cache hit allocates nothing.
    static CRYPTO_KEY_ID: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The (importKey, verify) algorithm objects per JWS `alg`, built once per isolate.
    static CRYPTO_ALGS: std::cell::RefCell<std::collections::HashMap<&'static str, (JsValue, JsValue)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
    /// `crypto.subtle`, looked up once per isolate (`None`: the runtime has none).
    static SUBTLE: OnceCell<Option<Subtle>> = const { OnceCell::new() };
    /// The KV test switch (used only when `PORTCULLIS_TEST_FAULTS` is "1").
    #[cfg(feature = "test-faults")]
    static FAULTS: Rc<Faults> = Rc::new(Faults::default());
}

/// Most imported keys kept per isolate (a JWKS rotation adds a few).
const MAX_CRYPTO_KEYS: usize = 256;

fn env_string(env: &Env, name: &str) -> Option<String> {
    js_sys::Reflect::get(env, &JsValue::from_str(name)).ok().and_then(|v| v.as_string())
}

/// The configuration file bundled into the Worker at build time, if any.
fn bundled_config() -> Option<String> {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str(BUNDLED_CONFIG_GLOBAL)).ok().and_then(|v| v.as_string())
}

/// The `PORTCULLIS_CONFIG` binding: a string, or a `[vars]` table (an object), as JSON text.
fn config_var(env: &Env) -> VarValue {
    let Ok(v) = js_sys::Reflect::get(env, &JsValue::from_str(config::CONFIG_VAR)) else {
        return VarValue::Unset;
    };
    if v.is_undefined() || v.is_null() {
        VarValue::Unset
    } else if let Some(s) = v.as_string() {
        VarValue::Text(s)
    } else if v.is_object() && !js_sys::Array::is_array(&v) {
        match js_sys::JSON::stringify(&v).ok().and_then(|s| s.as_string()) {
            Some(json) => VarValue::Object(json),
            None => VarValue::Other("object that is not JSON".into()),
        }
    } else if js_sys::Array::is_array(&v) {
        VarValue::Other("list".into())
    } else {
        VarValue::Other(v.js_typeof().as_string().unwrap_or_default())
    }
}

/// The configuration document (bundled, or the `PORTCULLIS_CONFIG` binding) with the secrets
/// it names, loaded and validated.
fn load_config(env: &Env) -> Result<config::Loaded, config::ConfigErrors> {
    config::choose_document(bundled_config().as_deref(), config_var(env))
        .and_then(|document| config::Config::load(&document, &|name| env_secret(env, name)))
}

fn env_secret(env: &Env, name: &str) -> Option<Secret> {
    env_string(env, name).map(|s| Secret::new(s.into_bytes()))
}

/// The gateway for this isolate: configuration loaded and validated once.
#[inline(never)]
fn gateway(env: &Env) -> Rc<Gateway> {
    GATEWAY.with(|cell| {
        cell.get_or_init(|| {
            let gw = Gateway::from_loaded(load_config(env));
            if let Some(line) = gw.startup_log() {
                worker::console_error!("{line}");
            }
            #[cfg(feature = "test-faults")]
            if test_faults_enabled(env) {
                worker::console_error!(
                    "{}",
                    serde_json::json!({"level": "error", "event": "test_faults_enabled",
                        "message": format!("KV FAULT INJECTION IS ENABLED ({}=1, route {}{}): anyone can make storage fail. Never set this outside tests.",
                            faults::ENV_VAR, gw.prefix(), faults::ROUTE)})
                );
            }
            Rc::new(gw)
        })
        .clone()
    })
}

#[cfg(feature = "test-faults")]
fn test_faults_enabled(env: &Env) -> bool {
    env_string(env, faults::ENV_VAR).as_deref() == Some("1")
}

/// The deployed build has no fault switch (src/faults/switch.rs).
#[cfg(not(feature = "test-faults"))]
fn test_faults_enabled(_: &Env) -> bool {
    false
}

fn sleep_ms(ms: u64) -> LocalFuture<'static, ()> {
    Box::pin(Delay::from(Duration::from_millis(ms)))
}

struct WorkerKv(Option<worker::KvStore>);

fn kv_err(e: impl std::fmt::Display) -> KvError {
    KvError(e.to_string())
}

impl WorkerKv {
    fn store(&self) -> Result<&worker::KvStore, KvError> {
        self.0.as_ref().ok_or_else(|| KvError(format!("KV binding {KV_BINDING} is missing")))
    }
}

impl Kv for WorkerKv {
    fn get<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<Option<String>, KvError>> {
        Box::pin(async move { self.store()?.get(key).text().await.map_err(kv_err) })
    }

    fn put<'a>(&'a self, key: &'a str, value: &'a str, ttl: Option<u64>) -> LocalFuture<'a, Result<(), KvError>> {
        Box::pin(async move {
            let mut b = self.store()?.put(key, value).map_err(kv_err)?;
            if let Some(t) = ttl {
                b = b.expiration_ttl(t.max(60));
            }
            b.execute().await.map_err(kv_err)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> LocalFuture<'a, Result<(), KvError>> {
        Box::pin(async move { self.store()?.delete(key).await.map_err(kv_err) })
    }

    fn list<'a>(&'a self, prefix: &'a str, limit: usize) -> LocalFuture<'a, Result<Vec<String>, KvError>> {
        Box::pin(async move {
            let r =
                self.store()?.list().prefix(prefix.to_owned()).limit(limit as u64).execute().await.map_err(kv_err)?;
            Ok(r.keys.into_iter().map(|k| k.name).collect())
        })
    }
}

/// A `Headers` object for the runtime, built in two calls into JavaScript whatever the
/// number of fields (the pairs as one JSON text, parsed there and handed to the constructor)
/// instead of one call per field.
#[inline(never)]
fn js_headers(h: &Headers) -> web_sys::Headers {
    let pairs: Vec<(&str, &str)> = h.iter().collect();
    if let Some(built) = serde_json::to_string(&pairs)
        .ok()
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .and_then(|init| web_sys::Headers::new_with_str_sequence_sequence(&init).ok())
    {
        return built;
    }
    // A value the runtime refuses (not a ByteString) fails the constructor: field by field,
    // that value is dropped rather than failing the whole answer.
    let out = web_sys::Headers::new().unwrap_or_else(|_| JsValue::from(js_sys::Object::new()).unchecked_into());
    for (n, v) in h.iter() {
        let _ = out.append(n, v);
    }
    out
}

/// The fields of a `Headers` object in the runtime's order, read in three calls into
/// JavaScript whatever their number (`Array.from(headers)` as one JSON text) instead of
/// several calls per field.
#[inline(never)]
fn read_js_headers(h: &web_sys::Headers) -> Vec<(String, String)> {
    let pairs = js_sys::Array::from(h.as_ref());
    if let Some(pairs) = js_sys::JSON::stringify(&pairs)
        .ok()
        .and_then(|text| text.as_string())
        .and_then(|text| serde_json::from_str::<Vec<(String, String)>>(&text).ok())
    {
        return pairs;
    }
    worker::Headers(h.clone()).entries().collect()
}

/// A request's or a response's fields; several `Set-Cookie` lines stay separate.
fn from_js_headers(h: &web_sys::Headers) -> Headers {
    let mut out = Headers::new();
    let mut cookies = false;
    for (n, v) in read_js_headers(h) {
        if n.eq_ignore_ascii_case("set-cookie") {
            cookies = true;
            continue;
        }
        out.append(n, v);
    }
    if cookies {
        if let Ok(list) = js_sys::Reflect::get(h.as_ref(), &JsValue::from_str("getSetCookie"))
            .and_then(|f| js_sys::Function::from(f).call0(h.as_ref()))
        {
            for c in js_sys::Array::from(&list).iter() {
                if let Some(c) = c.as_string() {
                    out.append("set-cookie", c);
                }
            }
        }
    }
    out
}

/// A JavaScript exception as text, as the `worker` crate words it.
fn js_error(e: JsValue) -> String {
    worker::Error::from(e).to_string()
}

/// A request's whole body.
async fn read_body(req: &web_sys::Request) -> Result<Vec<u8>, JsValue> {
    let buffer = wasm_bindgen_futures::JsFuture::from(req.array_buffer()?).await?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// `fetch` on the Worker's global scope.
fn global_fetch(request: &web_sys::Request) -> js_sys::Promise {
    js_sys::global().unchecked_into::<web_sys::WorkerGlobalScope>().fetch_with_request(request)
}

struct WorkerFetch;

impl Fetch for WorkerFetch {
    fn fetch<'a>(
        &'a self,
        req: Outbound,
        timeout_ms: u64,
        max_body: usize,
    ) -> LocalFuture<'a, Result<Inbound, FetchError>> {
        Box::pin(async move {
            let controller = web_sys::AbortController::new().ok();
            let signal = controller.as_ref().map(web_sys::AbortController::signal);
            let work = async {
                let init = web_sys::RequestInit::new();
                init.set_method(req.method);
                init.set_headers(&js_headers(&req.headers));
                init.set_redirect(web_sys::RequestRedirect::Manual);
                init.set_signal(signal.as_ref());
                if let Some(body) = &req.body {
                    init.set_body(&js_sys::Uint8Array::from(body.as_slice()).into());
                }
                let unreachable = |e: JsValue| FetchError::Unreachable(js_error(e));
                let request = web_sys::Request::new_with_str_and_init(&req.url, &init).map_err(unreachable)?;
                let resp: web_sys::Response = wasm_bindgen_futures::JsFuture::from(global_fetch(&request))
                    .await
                    .and_then(JsCast::dyn_into)
                    .map_err(unreachable)?;
                let headers = resp.headers();
                let declared = headers.get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok());
                if declared.is_some_and(|l| l > max_body) {
                    return Err(FetchError::TooLarge);
                }
                let bytes = resp.array_buffer().map_err(unreachable)?;
                let body = wasm_bindgen_futures::JsFuture::from(bytes).await.map_err(unreachable)?;
                let body = js_sys::Uint8Array::new(&body).to_vec();
                if body.len() > max_body {
                    return Err(FetchError::TooLarge);
                }
                Ok(Inbound { status: resp.status(), headers: from_js_headers(&headers), body })
            };
            let timeout = Delay::from(Duration::from_millis(timeout_ms));
            futures_util::pin_mut!(work);
            match select(work, timeout).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => {
                    if let Some(c) = &controller {
                        c.abort();
                    }
                    Err(FetchError::Timeout)
                }
            }
        })
    }
}

/// JWS signature checks with the runtime's WebCrypto (`crypto.subtle`), where RSA, ECDSA
/// and Ed25519 run natively instead of in wasm.
struct WebCrypto;

fn js_obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

/// (importKey algorithm, verify algorithm) for a JWS `alg`.
fn webcrypto_algorithms(alg: &str) -> Option<(JsValue, JsValue)> {
    let s = JsValue::from_str;
    let hash = match alg {
        "RS256" | "PS256" | "ES256" => "SHA-256",
        "RS384" | "PS384" => "SHA-384",
        "RS512" | "PS512" => "SHA-512",
        "EdDSA" => "",
        _ => return None,
    };
    Some(match alg {
        "RS256" | "RS384" | "RS512" => {
            let a = js_obj(&[("name", s("RSASSA-PKCS1-v1_5")), ("hash", s(hash))]);
            (a.clone(), a)
        }
        "PS256" | "PS384" | "PS512" => {
            let salt = match hash {
                "SHA-256" => 32.0,
                "SHA-384" => 48.0,
                _ => 64.0,
            };
            (
                js_obj(&[("name", s("RSA-PSS")), ("hash", s(hash))]),
                js_obj(&[("name", s("RSA-PSS")), ("saltLength", JsValue::from_f64(salt))]),
            )
        }
        "ES256" => (
            js_obj(&[("name", s("ECDSA")), ("namedCurve", s("P-256"))]),
            js_obj(&[("name", s("ECDSA")), ("hash", s(hash))]),
        ),
        _ => (js_obj(&[("name", s("Ed25519"))]), js_obj(&[("name", s("Ed25519"))])),
    })
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The runtime's `SubtleCrypto`: the two methods used here, bound directly so a call
    /// crosses into JavaScript once (the byte slices are passed as views, which WebCrypto
    /// copies when called).
    #[derive(Clone)]
    type Subtle;
    #[wasm_bindgen(method, catch, js_name = importKey)]
    fn import_key(
        this: &Subtle,
        format: &str,
        key: &JsValue,
        algorithm: &JsValue,
        extractable: bool,
        usages: &JsValue,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn verify(
        this: &Subtle,
        algorithm: &JsValue,
        key: &JsValue,
        signature: &[u8],
        data: &[u8],
    ) -> Result<js_sys::Promise, JsValue>;
}

fn subtle() -> Option<Subtle> {
    SUBTLE.with(|cell| {
        cell.get_or_init(|| {
            let crypto = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok()?;
            let subtle = js_sys::Reflect::get(&crypto, &JsValue::from_str("subtle")).ok()?;
            subtle.is_object().then(|| subtle.unchecked_into())
        })
        .as_ref()
        .cloned()
    })
}

/// (importKey algorithm, verify algorithm) for a JWS `alg`, from the per-isolate cache.
fn cached_webcrypto_algorithms(alg: &str) -> Option<(JsValue, JsValue)> {
    let alg = *crate::oidc::id_token::ASYMMETRIC_ALGS.iter().find(|a| **a == alg)?;
    CRYPTO_ALGS.with(|c| {
        if let Some(found) = c.borrow().get(alg) {
            return Some(found.clone());
        }
        let built = webcrypto_algorithms(alg)?;
        c.borrow_mut().insert(alg, built.clone());
        Some(built)
    })
}

/// Writes the cache id of an imported key into `out`: the `alg` and every member of the
/// public JWK (which holds only `kty`, `n`/`e`, `crv`/`x`/`y`), each length-prefixed so
/// distinct keys never share an id. The key material is part of the id, never the `kid`
/// alone: a provider may rotate keys under the same `kid`.
fn crypto_key_id(out: &mut String, alg: &str, jwk: &serde_json::Value) -> Option<()> {
    use std::fmt::Write;
    out.clear();
    let _ = write!(out, "{}:{alg}", alg.len());
    for (name, value) in jwk.as_object()? {
        let value = value.as_str()?;
        let _ = write!(out, "|{}:{name}{}:{value}", name.len(), value.len());
    }
    Some(())
}

impl crate::ports::SignatureVerifier for WebCrypto {
    fn verify<'a>(
        &'a self,
        alg: &'a str,
        jwk: &'a serde_json::Value,
        signed: &'a [u8],
        signature: &'a [u8],
    ) -> LocalFuture<'a, Option<bool>> {
        Box::pin(async move {
            let (import_alg, verify_alg) = cached_webcrypto_algorithms(alg)?;
            let subtle = subtle()?;
            let cached = CRYPTO_KEY_ID.with(|id| {
                let mut id = id.borrow_mut();
                crypto_key_id(&mut id, alg, jwk)?;
                CRYPTO_KEYS.with(|c| c.borrow().get(id.as_str()).cloned())
            });
            let key = match cached {
                Some(k) => k,
                None => {
                    let key_data = js_sys::JSON::parse(&jwk.to_string()).ok()?;
                    let usages: js_sys::Array = [JsValue::from_str("verify")].iter().collect();
                    let import = subtle.import_key("jwk", &key_data, &import_alg, false, &usages).ok()?;
                    // A key WebCrypto refuses to import: let the pure-Rust verifier decide.
                    let key = wasm_bindgen_futures::JsFuture::from(import).await.ok()?;
                    let mut id = String::new();
                    crypto_key_id(&mut id, alg, jwk)?;
                    CRYPTO_KEYS.with(|c| {
                        let mut c = c.borrow_mut();
                        if c.len() >= MAX_CRYPTO_KEYS {
                            c.clear();
                        }
                        c.insert(id, key.clone());
                    });
                    key
                }
            };
            // `signed` and `signature` stay borrowed (and unchanged) until the answer.
            let verify = subtle.verify(&verify_alg, &key, signature, signed).ok()?;
            wasm_bindgen_futures::JsFuture::from(verify).await.ok()?.as_bool()
        })
    }
}

struct WorkerRuntime;

impl Runtime for WorkerRuntime {
    fn now_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }

    fn fill_random(&self, buf: &mut [u8]) {
        // crypto.getRandomValues; if it ever failed, refuse to continue with weak bytes.
        if getrandom::getrandom(buf).is_err() {
            worker::console_error!("{{\"level\":\"error\",\"event\":\"random_failed\"}}");
            #[allow(clippy::panic)]
            {
                panic!("no secure randomness");
            }
        }
    }

    fn log(&self, line: &str) {
        worker::console_log!("{line}");
    }
}

/// The runtime's response for one of the gateway's own.
#[inline(never)]
fn js_response(r: Response) -> worker::Result<web_sys::Response> {
    let init = web_sys::ResponseInit::new();
    init.set_status(r.status);
    init.set_headers(&js_headers(&r.headers));
    // A null-body status takes no body at all, not even an empty one.
    let body = (!(r.body.is_empty() && matches!(r.status, 101 | 204 | 205 | 304)))
        .then(|| js_sys::Object::from(js_sys::Uint8Array::from(r.body.as_slice())));
    Ok(web_sys::Response::new_with_opt_buffer_source_and_init(body.as_ref(), &init)?)
}

fn simple(status: u16, text: &str) -> worker::Result<web_sys::Response> {
    let mut r = Response::new(status);
    r.headers.set("content-type", "text/plain; charset=utf-8");
    r.headers.set("cache-control", "no-store");
    r.body = text.as_bytes().to_vec();
    js_response(r)
}

/// The request's edge context from `request.cf`. With the test switch on (never in a
/// deployment: `PORTCULLIS_TEST_FAULTS`), a JSON `X-Portcullis-Test-Cf` header stands in for
/// it, so tests can be a request from another country or with a client certificate; the
/// header is one the gateway owns and never reaches the origin.
#[cfg_attr(not(feature = "test-faults"), allow(unused_variables))]
#[inline(never)]
fn edge_context(req: &web_sys::Request, headers: &Headers, test_switch: bool) -> crate::http::EdgeContext {
    use worker::worker_sys::ext::RequestExt;
    #[cfg(feature = "test-faults")]
    if test_switch {
        if let Some(e) = headers.get(faults::TEST_CF_HEADER).and_then(|v| serde_json::from_str(v).ok()) {
            return e;
        }
    }
    let Some(cf) = req.cf().map(worker::Cf::from) else {
        return Default::default();
    };
    crate::http::EdgeContext {
        country: cf.country(),
        asn: cf.asn().map(u64::from),
        client_cert_verified: cf.tls_client_auth().map(|t| t.cert_verified() == "SUCCESS"),
        bot_score: cf.bot_management().map(|b| u64::from(b.score())),
    }
}

/// Why a forward produced no response.
enum ForwardError {
    Unreachable(String),
    TimedOut(u64),
}

/// Sends the request to the origin and hands its answer back: the body as a stream (never
/// read into memory), a WebSocket as the client's new connection. Only the wait for the
/// response headers has a deadline.
async fn forward(original: &web_sys::Request, method: &str, f: Forward) -> Result<web_sys::Response, ForwardError> {
    let unreachable = |e: JsValue| ForwardError::Unreachable(js_error(e));
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    init.set_headers(&js_headers(&f.headers));
    init.set_redirect(web_sys::RequestRedirect::Manual);
    if !matches!(method, "GET" | "HEAD") {
        if let Some(body) = original.body() {
            init.set_body(&body);
        }
    }
    let request = web_sys::Request::new_with_str_and_init(&f.url, &init).map_err(unreachable)?;
    let send = wasm_bindgen_futures::JsFuture::from(global_fetch(&request));
    let deadline = Box::pin(Delay::from(Duration::from_millis(f.timeout_ms)));
    let resp: web_sys::Response = match futures_util::future::select(send, deadline).await {
        futures_util::future::Either::Left((sent, _)) => sent.and_then(JsCast::dyn_into).map_err(unreachable)?,
        futures_util::future::Either::Right(_) => return Err(ForwardError::TimedOut(f.timeout_ms)),
    };
    let headers = proxy::downstream_headers(&from_js_headers(&resp.headers()));
    let status = resp.status();
    if status == 101 {
        let resp = worker::Response::from(resp);
        let Some(ws) = resp.websocket() else {
            return Err(ForwardError::Unreachable("101 from the origin without a WebSocket".into()));
        };
        return Ok(worker::Response::from_websocket(ws)
            .map_err(|e| ForwardError::Unreachable(e.to_string()))?
            .with_headers(worker::Headers(js_headers(&headers)))
            .into());
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    init.set_headers(&js_headers(&headers));
    web_sys::Response::new_with_opt_readable_stream_and_init(resp.body().as_ref(), &init).map_err(unreachable)
}

#[event(fetch)]
pub async fn main(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    // The handler's own future stays small: the engine compiles a function when it first
    // runs, and the cost of compiling grows faster than the function's size, so the work is
    // in functions of their own (see BENCHMARKS.md, cold start).
    (Box::pin(serve(req, env, ctx)) as LocalFuture<'static, worker::Result<web_sys::Response>>).await
}

/// What the shell reads of a request before the core sees it, or the answer to a request
/// refused at the door.
enum Incoming {
    Read { url: url::Url, headers: Headers, method: String, body_limit: Option<usize> },
    Refused(worker::Result<web_sys::Response>),
}

/// The request's URL, fields and method, and the body limit when the body is to be read
/// (a gateway route other than GET and HEAD); refused when a limit is passed.
#[inline(never)]
fn incoming(gw: &Gateway, req: &web_sys::Request) -> Incoming {
    let url = match url::Url::parse(&req.url()) {
        Ok(u) => u,
        Err(e) => return Incoming::Refused(Err(worker::Error::RustError(e.to_string()))),
    };
    if url.as_str().len() > MAX_URL_BYTES {
        return Incoming::Refused(simple(414, "URI too long"));
    }
    let mut headers = Headers::new();
    for (n, v) in read_js_headers(&req.headers()) {
        headers.append(n, v);
    }
    if headers.byte_size() > MAX_HEADER_BYTES {
        return Incoming::Refused(simple(431, "Request header fields too large"));
    }
    // The method as sent (the `worker` crate's `Method` would read every unknown token as GET).
    let method = req.method();
    let mut body_limit = None;
    if gw.is_gateway_route(url.path()) && !matches!(method.as_str(), "GET" | "HEAD") {
        let declared = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        let limit = gw.body_limit(url.path());
        if declared > limit {
            return Incoming::Refused(simple(413, "Request body too large"));
        }
        body_limit = Some(limit);
    }
    Incoming::Read { url, headers, method, body_limit }
}

/// The bench build's breakdown of a new isolate's first request (`BENCH_COLD_PROBE` in
/// scripts/bench-serve.mjs): the request stops after one stage of loading the
/// configuration and answers a redirect, so that the cost of each stage on a first request
/// can be measured. `None`: not a probe (every request of a deployed build).
#[cfg(feature = "bench")]
fn bench_probe(req: &web_sys::Request, env: &Env) -> Option<worker::Result<web_sys::Response>> {
    let stage = req.headers().get("x-portcullis-bench-probe").ok().flatten()?;
    let document = || config::choose_document(bundled_config().as_deref(), config_var(env));
    match stage.as_str() {
        // The bare handler.
        "handler" => {}
        // Reading the document and the secrets it names from the environment.
        "environment" => {
            let _ = std::hint::black_box((document(), env_secret(env, "COOKIE_KEY"), env_secret(env, "ASSERTION_KEY")));
        }
        // The document as untyped JSON.
        "json" => {
            let _ =
                std::hint::black_box(document().ok().map(|d| serde_json::from_str::<serde_json::Value>(&d).is_ok()));
        }
        // The document deserialised into the configuration's types, not validated.
        "deserialise" => {
            let _ = std::hint::black_box(document().ok().map(|d| serde_json::from_str::<config::Config>(&d).is_ok()));
        }
        // The whole load: deserialised and validated.
        "load" => {
            let _ = std::hint::black_box(load_config(env).is_ok());
        }
        _ => return None,
    }
    let mut r = Response::new(302);
    r.headers.set("location", "/_portcullis/login?rd=%2F");
    Some(js_response(r))
}

async fn serve(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    #[cfg(feature = "bench")]
    if let Some(answer) = bench_probe(&req, &env) {
        return answer;
    }
    let gw = gateway(&env);
    let (url, headers, method, body_limit) = match incoming(&gw, &req) {
        Incoming::Read { url, headers, method, body_limit } => (url, headers, method, body_limit),
        Incoming::Refused(answer) => return answer,
    };
    let mut body = Vec::new();
    if let Some(limit) = body_limit {
        body = read_body(&req).await.unwrap_or_default();
        if body.len() > limit {
            return simple(413, "Request body too large");
        }
    }
    let client_ip = headers.get("cf-connecting-ip").map(str::to_owned);
    let edge = edge_context(&req, &headers, test_faults_enabled(&env));
    let core_req = Request { method, url, headers, body, client_ip, edge };

    #[cfg(feature = "test-faults")]
    let fault_switch = test_faults_enabled(&env).then(|| FAULTS.with(Rc::clone));
    #[cfg(feature = "test-faults")]
    if let Some(f) = &fault_switch {
        if core_req.url.path() == format!("{}{}", gw.prefix(), faults::ROUTE) {
            return js_response(f.route(&core_req.method, &core_req.body));
        }
    }
    let store = WorkerKv(env.kv(KV_BINDING).ok());
    #[cfg(feature = "test-faults")]
    let faulty = fault_switch.as_deref().map(|faults| FaultyKv { inner: &store, faults, rt: &WorkerRuntime });
    #[cfg(feature = "test-faults")]
    let kv_inner = faulty.as_ref().map_or(&store as &dyn Kv, |f| f as &dyn Kv);
    #[cfg(not(feature = "test-faults"))]
    let kv_inner: &dyn Kv = &store;
    let kv = DeadlineKv {
        inner: kv_inner,
        timeout_ms: gw.config().map_or(5000, |l| l.config.gateway.kv_timeout_ms),
        sleep: sleep_ms,
    };
    let coordinator = gw
        .config()
        .filter(|l| l.config.gateway.coordination == Coordination::Auto)
        .and_then(|_| env.durable_object(durable::COORDINATOR_BINDING).ok())
        .map(durable::DoCoordinator);
    let ports = Ports {
        kv: &kv,
        fetch: &WorkerFetch,
        rt: &WorkerRuntime,
        verifier: Some(&WebCrypto),
        coord: coordinator.as_ref().map(|c| c as &dyn crate::ports::Coordinator),
    };
    // Polled through a `dyn` future, as is `forward`: each stays a function of its own that
    // the engine compiles when first run, instead of part of this one (see BENCHMARKS.md,
    // cold start).
    let outcome = (Box::pin(gw.handle(ports, &core_req)) as LocalFuture<'_, crate::gateway::Outcome>).await;
    let response = match outcome.action {
        Action::Respond(r) => js_response(r),
        Action::Forward(f) => {
            match (Box::pin(forward(&req, &core_req.method, f)) as LocalFuture<'_, Result<_, ForwardError>>).await {
                Ok(r) => Ok(r),
                Err(ForwardError::Unreachable(e)) => js_response(gw.origin_failed(ports, &core_req, &e)),
                Err(ForwardError::TimedOut(ms)) => js_response(gw.origin_timed_out(ports, &core_req, ms)),
            }
        }
    };
    let jobs = outcome.deferred;
    if !jobs.is_empty() {
        let gw = gw.clone();
        ctx.wait_until(async move {
            let kv = WorkerKv(None);
            let ports = Ports { kv: &kv, fetch: &WorkerFetch, rt: &WorkerRuntime, verifier: None, coord: None };
            for job in jobs {
                gw.run_deferred(ports, job, |ms| Delay::from(Duration::from_millis(ms))).await;
            }
        });
    }
    response
}
