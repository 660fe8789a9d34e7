//! Shared harness for native tests: the gateway driven through in-memory ports, with a
//! scripted OpenID Provider that signs real ES256 tokens.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::rc::Rc;

use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, Claims, Header};
use portcullis::crypto::b64url;
use portcullis::gateway::{Action, Forward, Gateway};
use portcullis::http::{Inbound, Outbound, Request, Response};
use portcullis::ports::{FetchError, Ports};
use portcullis::secret::Secret;
use portcullis::testing::{json_response, MemoryKv, ScriptedFetch, TestClock, TestRuntime};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://idp.test";
pub const HOST: &str = "app.test";
pub const T0: u64 = 1_800_000_000;
pub const ADMIN_TOKEN: &str = "admin-token-0123456789-0123456789-abcdef";

/// What the scripted IdP does at each endpoint.
#[derive(Clone)]
pub enum Mode {
    Ok,
    Status(u16),
    Timeout,
    Down,
}

pub struct Idp {
    pub key: p256::ecdsa::SigningKey,
    pub kid: String,
    /// Claims added to (or overriding) the ID token's.
    pub extra_claims: Value,
    pub nonce: Option<String>,
    pub discovery: Mode,
    pub jwks: Mode,
    pub token: Mode,
    /// Body the token endpoint returns for refresh requests (None: a fresh token set).
    pub refresh_status: u16,
    pub access_token_ttl: u64,
    pub clock: TestClock,
    pub issuer_in_token: String,
}

impl Idp {
    pub fn new(clock: TestClock) -> Self {
        Self {
            key: p256::ecdsa::SigningKey::random(&mut rand_core::OsRng),
            kid: "key-1".into(),
            extra_claims: json!({}),
            nonce: None,
            discovery: Mode::Ok,
            jwks: Mode::Ok,
            token: Mode::Ok,
            refresh_status: 200,
            access_token_ttl: 3600,
            clock,
            issuer_in_token: ISSUER.into(),
        }
    }

    pub fn rotate(&mut self) {
        self.key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        self.kid = format!("{}-next", self.kid);
    }

    pub fn jwks_doc(&self) -> Value {
        let p = self.key.verifying_key().to_encoded_point(false);
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
            "x": b64url(p.x().unwrap()), "y": b64url(p.y().unwrap())}]})
    }

    pub fn id_token(&self, nonce: Option<&str>) -> String {
        let now = self.clock.now();
        let mut claims = json!({
            "iss": self.issuer_in_token, "sub": "alice", "aud": "gateway-client",
            "email": "alice@example.com", "email_verified": true, "name": "Alice Example",
            "preferred_username": "alice", "groups": ["engineering", "admins"], "sid": "idp-session-1",
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        for (k, v) in self.extra_claims.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let mut c = Claims::new(claims);
        c.issued_at = chrono::DateTime::from_timestamp(now as i64, 0);
        c.expiration = chrono::DateTime::from_timestamp(now as i64 + 300, 0);
        Es256.token(&Header::empty().with_key_id(self.kid.clone()), &c, &self.key).unwrap()
    }

    /// A client-credentials JWT access token (RFC 9068) for `ci-client` with `scope` and
    /// `aud`, signed with the IdP's key; `claims` overrides (null removes), `header` sets
    /// JOSE header fields (`typ` defaults to `at+jwt`).
    pub fn access_token(&self, claims: Value, header: Value) -> String {
        self.access_token_with(&self.key, claims, header)
    }

    /// As [`Idp::access_token`], signed with `key` (a forger's) under the IdP's `kid`.
    pub fn access_token_with(&self, key: &p256::ecdsa::SigningKey, claims: Value, header: Value) -> String {
        let now = self.clock.now();
        let mut body = json!({
            "iss": self.issuer_in_token, "sub": "ci-client", "client_id": "ci-client",
            "aud": "https://api.acme.test", "scope": "api read", "jti": format!("at-{now}"),
        });
        for (k, v) in claims.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let mut c = Claims::new(body);
        c.issued_at = chrono::DateTime::from_timestamp(now as i64, 0);
        c.expiration = chrono::DateTime::from_timestamp(now as i64 + 300, 0);
        let mut fields = json!({"typ": "at+jwt"});
        for (k, v) in header.as_object().unwrap() {
            if v.is_null() {
                fields.as_object_mut().unwrap().remove(k);
            } else {
                fields[k] = v.clone();
            }
        }
        let h = Header::new(fields).with_key_id(self.kid.clone());
        Es256.token(&h, &c, key).unwrap()
    }

    fn mode(&self, m: &Mode, ok: impl FnOnce() -> Inbound) -> Result<Inbound, FetchError> {
        match m {
            Mode::Ok => Ok(ok()),
            Mode::Status(s) => Ok(json_response(*s, &json!({"error": "server_error"}))),
            Mode::Timeout => Err(FetchError::Timeout),
            Mode::Down => Err(FetchError::Unreachable("connection refused".into())),
        }
    }

    pub fn answer(&self, req: &Outbound) -> Result<Inbound, FetchError> {
        let url = req.url.as_str();
        if url == format!("{ISSUER}/.well-known/openid-configuration") {
            return self.mode(&self.discovery, || {
                json_response(
                    200,
                    &json!({
                        "issuer": ISSUER,
                        "authorization_endpoint": format!("{ISSUER}/authorize"),
                        "token_endpoint": format!("{ISSUER}/token"),
                        "jwks_uri": format!("{ISSUER}/jwks"),
                        "userinfo_endpoint": format!("{ISSUER}/userinfo"),
                        "end_session_endpoint": format!("{ISSUER}/logout"),
                        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
                        "authorization_response_iss_parameter_supported": true,
                    }),
                )
            });
        }
        if url == format!("{ISSUER}/jwks") {
            return self.mode(&self.jwks, || json_response(200, &self.jwks_doc()));
        }
        if url == format!("{ISSUER}/token") {
            let body = String::from_utf8(req.body.clone().unwrap_or_default()).unwrap();
            let refresh = body.contains("grant_type=refresh_token");
            if refresh && self.refresh_status != 200 {
                return Ok(json_response(self.refresh_status, &json!({"error": "invalid_grant"})));
            }
            let nonce = if refresh { None } else { self.nonce.clone() };
            return self.mode(&self.token, || {
                json_response(
                    200,
                    &json!({
                        "access_token": format!("at-{}", self.clock.now()), "token_type": "Bearer",
                        "expires_in": self.access_token_ttl, "refresh_token": format!("rt-{}", self.clock.now()),
                        "id_token": self.id_token(nonce.as_deref()),
                    }),
                )
            });
        }
        if url == format!("{ISSUER}/userinfo") {
            return Ok(json_response(200, &json!({"sub": "alice", "nickname": "ally"})));
        }
        Err(FetchError::Unreachable(format!("no route for {url}")))
    }
}

pub fn config(tenant_extra: Value, provider_extra: Value) -> String {
    let mut provider = json!({
        "type": "oidc", "name": "corp", "label": "Corp SSO", "issuer": ISSUER,
        "client_id": "gateway-client", "client_secret": "CLIENT_SECRET",
    });
    for (k, v) in provider_extra.as_object().unwrap() {
        provider[k] = v.clone();
    }
    let mut tenant = json!({
        "id": "acme", "name": "Acme", "hosts": [HOST], "origin": "https://origin.test",
        "public_paths": [{"path": "/health", "match": "exact"}, {"path": "/static/", "match": "prefix", "methods": ["GET"]}],
        "groups": {"map": {"engineering": ["eng"]}, "roles": {"superuser": ["admins"]}},
        "providers": [provider],
    });
    for (k, v) in tenant_extra.as_object().unwrap() {
        tenant[k] = v.clone();
    }
    json!({
        "gateway": {
            "cookie_keys": [{"id": "c1", "secret": "COOKIE_KEY"}],
            "assertion_keys": [{"id": "a1", "secret": "ASSERTION_KEY"}],
            "issuer": "https://gateway.test",
            "admin_token": "ADMIN_TOKEN",
        },
        "tenants": [tenant],
    })
    .to_string()
}

/// A P-256 PKCS#8 key for the assertion, generated per harness.
pub fn assertion_key_pem() -> String {
    use p256::pkcs8::EncodePrivateKey;
    let k = p256::SecretKey::random(&mut rand_core::OsRng);
    let der = k.to_pkcs8_der().unwrap();
    portcullis::crypto::b64(der.as_bytes())
}

pub struct Harness {
    pub clock: TestClock,
    pub kv: MemoryKv,
    pub fetch: ScriptedFetch,
    pub rt: TestRuntime,
    pub gw: Gateway,
    pub idp: Rc<RefCell<Idp>>,
    /// The runtime's signature port, when a test sets `use_verifier`.
    pub verifier: portcullis::testing::ScriptedVerifier,
    pub use_verifier: std::cell::Cell<bool>,
    /// The coordination object, used when a test sets `use_coord`.
    pub coord: portcullis::testing::MemoryCoordinator,
    pub use_coord: std::cell::Cell<bool>,
    /// Work the requests handled so far left for after their responses.
    pub deferred: RefCell<Vec<portcullis::gateway::Deferred>>,
    document: String,
    assertion: String,
}

fn gateway(document: &str, assertion: &str) -> Gateway {
    Gateway::new(document, &|name| match name {
        "COOKIE_KEY" => Some(Secret::new(vec![7u8; 32])),
        "CLIENT_SECRET" => Some(Secret::new(b"client-secret".to_vec())),
        "ASSERTION_KEY" => Some(Secret::new(assertion.as_bytes().to_vec())),
        "ADMIN_TOKEN" => Some(Secret::new(ADMIN_TOKEN.as_bytes().to_vec())),
        _ => None,
    })
}

impl Harness {
    pub fn new(document: &str) -> Self {
        Self::with_assertion_key(document, assertion_key_pem())
    }

    /// A gateway whose assertion signing key is the given secret (PKCS#8, base64).
    pub fn with_assertion_key(document: &str, assertion: String) -> Self {
        let clock = TestClock::at(T0);
        let idp = Rc::new(RefCell::new(Idp::new(clock.clone())));
        let idp2 = idp.clone();
        let fetch = ScriptedFetch::new(move |r| idp2.borrow().answer(r));
        let gw = gateway(document, &assertion);
        Self {
            document: document.to_owned(),
            assertion,
            kv: MemoryKv::new(clock.clone()),
            coord: portcullis::testing::MemoryCoordinator::new(clock.clone()),
            use_coord: Default::default(),
            rt: TestRuntime::new(clock.clone()),
            clock,
            fetch,
            gw,
            idp,
            verifier: Default::default(),
            use_verifier: Default::default(),
            deferred: Default::default(),
        }
    }

    /// The deferred work of the requests handled so far (the shell runs it with `waitUntil`).
    pub fn take_deferred(&self) -> Vec<portcullis::gateway::Deferred> {
        std::mem::take(&mut *self.deferred.borrow_mut())
    }

    pub fn ports(&self) -> Ports<'_> {
        let verifier: Option<&dyn portcullis::ports::SignatureVerifier> =
            if self.use_verifier.get() { Some(&self.verifier) } else { None };
        let coord: Option<&dyn portcullis::ports::Coordinator> =
            if self.use_coord.get() { Some(&self.coord) } else { None };
        Ports { kv: &self.kv, fetch: &self.fetch, rt: &self.rt, verifier, coord }
    }

    pub fn handle(&self, req: &Request) -> Action {
        self.handle_in(&self.gw, req)
    }

    /// Another isolate of the same deployment: same configuration and secrets, same KV,
    /// its own caches.
    pub fn isolate(&self) -> Gateway {
        gateway(&self.document, &self.assertion)
    }

    /// Handles a request in another isolate.
    pub fn handle_in(&self, gw: &Gateway, req: &Request) -> Action {
        let outcome = pollster::block_on(gw.handle(self.ports(), req));
        self.deferred.borrow_mut().extend(outcome.deferred);
        outcome.action
    }

    pub fn respond(&self, req: &Request) -> Response {
        match self.handle(req) {
            Action::Respond(r) => r,
            Action::Forward(f) => panic!("expected a response, got a forward to {}", f.url),
        }
    }

    pub fn forward(&self, req: &Request) -> Forward {
        match self.handle(req) {
            Action::Forward(f) => f,
            Action::Respond(r) => panic!("expected a forward, got {} {}", r.status, r.text()),
        }
    }

    /// Starts a login and returns (authorize URL, pending cookie value).
    pub fn start_login(&self, rd: &str) -> (url::Url, String) {
        let req = get(&format!("/_portcullis/login?provider=corp&rd={}", urlencode(rd)));
        let r = self.respond(&req);
        assert_eq!(r.status, 302, "{}", r.text());
        let loc = url::Url::parse(r.headers.get("location").unwrap()).unwrap();
        let pending = set_cookie_value(&r, "__Host-portcullis_pending").expect("pending cookie");
        (loc, pending)
    }

    /// The callback request the IdP would send the browser to.
    pub fn callback_for(&self, authorize: &url::Url, pending: &str) -> Request {
        let q = |n: &str| authorize.query_pairs().find(|(k, _)| k == n).map(|(_, v)| v.into_owned()).unwrap();
        self.idp.borrow_mut().nonce = Some(q("nonce"));
        let state = q("state");
        get(&format!("/_portcullis/oidc/callback?code=the-code&state={}&iss={}", urlencode(&state), urlencode(ISSUER)))
            .header("cookie", &format!("__Host-portcullis_pending={pending}"))
    }

    /// A whole login; returns the session cookie value.
    pub fn login(&self) -> String {
        let (auth, pending) = self.start_login("/dashboard");
        let r = self.respond(&self.callback_for(&auth, &pending));
        assert_eq!(r.status, 302, "{}", r.text());
        assert_eq!(r.headers.get("location"), Some("/dashboard"));
        set_cookie_value(&r, "__Host-portcullis_session").expect("session cookie")
    }

    pub fn events(&self, event: &str) -> Vec<Value> {
        self.rt.events().into_iter().filter(|e| e["event"] == event).collect()
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn get(path: &str) -> Request {
    Request::new("GET", &format!("https://{HOST}{path}")).unwrap().header("host", HOST).header("accept", "text/html")
}

pub fn api(path: &str) -> Request {
    Request::new("GET", &format!("https://{HOST}{path}"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "application/json")
}

pub fn with_session(req: Request, cookie: &str) -> Request {
    req.header("cookie", &format!("__Host-portcullis_session={cookie}"))
}

pub fn set_cookie_value(r: &Response, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .filter_map(|c| c.split(';').next())
        .filter_map(|c| c.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

pub fn json_body(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

pub fn post_form(path: &str, cookie: &str, form: &[(&str, &str)]) -> Request {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    with_session(
        Request::new("POST", &format!("https://{HOST}{path}"))
            .unwrap()
            .header("host", HOST)
            .header("accept", "text/html")
            .header("content-type", "application/x-www-form-urlencoded")
            .with_body(body),
        cookie,
    )
}

/// The value of `<input ... name="NAME" value="...">` on a page.
pub fn form_field(html: &str, name: &str) -> String {
    html.split(&format!("name=\"{name}\" value=\"")).nth(1).unwrap().split('"').next().unwrap().to_owned()
}
