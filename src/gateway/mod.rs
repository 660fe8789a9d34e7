//! The gateway: routes a request, runs the sign-in flows and the session check, and decides
//! what happens — answer directly, or forward to the origin with identity attached. It talks
//! to the world only through [`Ports`]; the Worker shell executes forwards and stores logs.
//!
//! Phases for a protected request, in the manner of a proxy's filters:
//! 1. request filter: tenant by host, gateway routes, public paths, session, policy;
//! 2. upstream request: [`proxy::upstream_headers`] strips what the client must not send and
//!    adds identity;
//! 3. response filter: [`proxy::downstream_headers`] on the origin's answer.

mod admin;
mod bearer;
#[cfg(feature = "bench")]
mod bench;
mod context;
mod logout;
mod mfa;
pub mod routes;
mod saml;
mod sessions;
mod state;
pub use crate::audit::AuditEvent;
pub use context::Outcome;
pub use routes::{route_sessions, RouteId, ROUTES};
pub use state::Accepts;

use context::{log_line, Cx};
use routes::Route;
pub use routes::{MAX_ACS_BODY, MAX_FORM_BODY};

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{json, Value};

use crate::assertion::{self, AssertionClaims, SigningKey};
use crate::config::{Config, ConfigErrors, Loaded, OidcProvider, Provider, Tenant};
use crate::coord::{self, Lease};
use crate::crypto::{self, b64url};
use crate::error::{Refusal, Retry};
use crate::http::{Headers, Inbound, Outbound, Request, Response};
use crate::oidc::{self, jwks::Jwk, OidcError, PreLogin, ProviderMetadata, UntrustedIdToken};
use crate::pages::{self, Brand, ButtonView, ErrorView};
use crate::path::{self, Decided, Undecidable};
use crate::policy;
use crate::ports::{FetchError, Ports};
use crate::proxy::{self, ClientInfo, IdentityHeaders};
use crate::redirect::{safe_return_path, safe_same_site_path};
use crate::secret::Secret;
use crate::session::{self, MfaState, SessionId, SessionRecord, StoredTokens, PENDING_COOKIE, SESSION_COOKIE};
use state::{CompleteSession, Session};

/// Largest IdP response body read (discovery, JWKS, token, userinfo).
pub const MAX_IDP_BODY: usize = 512 * 1024;
/// Minimum seconds between forced JWKS refetches for one provider.
pub const JWKS_REFETCH_INTERVAL: u64 = 60;
/// Refresh the access token when it expires within this many seconds.
pub const REFRESH_MARGIN: u64 = 60;
/// A refresh lease's result when the IdP refused the refresh (the session ended).
const REFRESH_ENDED: &str = "ended";

/// A successful sign-in at an IdP, before the session exists.
struct SignedIn<'a> {
    provider: &'a str,
    user_id: String,
    identity: oidc::Identity,
    tokens: Option<String>,
    access_expires: Option<u64>,
    /// The IdP's own session limit (SAML `SessionNotOnOrAfter`).
    expires_cap: Option<u64>,
    /// Whether the IdP's own second factor counts (per the provider's settings).
    idp_mfa: bool,
    return_to: &'a str,
    /// Extra fields for the audit line.
    detail: Value,
    /// The sign-in was asked to be fresh (`reauth=1`) and the IdP confirmed it.
    fresh: bool,
    pending_cookie: &'static str,
}

/// What the shell should do with a request.
#[derive(Debug)]
pub enum Action {
    Respond(Response),
    Forward(Forward),
}

/// A request to pass to the origin: the shell streams the original body along.
#[derive(Debug, Clone)]
pub struct Forward {
    pub url: String,
    pub headers: Headers,
    pub tenant: String,
    /// Session handle for log lines (never the id).
    pub session: Option<String>,
    /// A WebSocket upgrade, passed to the origin after the checks; the shell hands the
    /// origin's WebSocket back to the client.
    pub websocket: bool,
    /// How long to wait for the origin's response headers (the tenant's
    /// `origin_timeout_ms`); the body then streams through without a deadline.
    pub timeout_ms: u64,
}

#[derive(Debug, Default)]
struct ProviderState {
    meta: Option<(ProviderMetadata, u64)>,
    saml_meta: Option<(crate::saml::metadata::IdpMetadata, u64)>,
    jwks: Option<(Rc<Vec<Jwk>>, u64)>,
    last_forced_jwks: u64,
}

#[derive(Debug, Clone)]
struct CachedSession {
    record: SessionRecord,
    cached_at_ms: u64,
    assertion: Option<(String, u64)>,
}

/// One per isolate: the validated configuration and the in-isolate caches.
#[derive(Debug)]
pub struct Gateway {
    loaded: Result<Loaded, ConfigErrors>,
    signing_keys: Vec<SigningKey>,
    providers: RefCell<HashMap<String, ProviderState>>,
    sessions: RefCell<HashMap<String, CachedSession>>,
    /// Sign-in starts per client IP (`gateway.login_rate_limit`).
    login_limiter: RefCell<crate::ratelimit::RateLimiter>,
    /// KV alone: this isolate's view of second-factor attempts (in flight, failures,
    /// locks) that racing writes to the record could lose.
    mfa_local: RefCell<mfa::LocalAttempts>,
}

/// An outbound call made after the response, retried up to `attempts` times with backoff.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub request: Outbound,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    NotDue,
    Done,
    Ended,
}

/// The outcome of reading the session cookie.
#[derive(Debug)]
enum Lookup {
    NoSession {
        cause: Option<String>,
    },
    /// A genuine session cookie whose session is over (expired, revoked, signed out).
    Ended,
    /// A live session, in the state its record says (waiting for its second factor, or
    /// complete).
    Active(Box<Session>),
}

impl Lookup {
    /// The session if it is complete: what every route but the second factor's needs.
    fn into_complete(self) -> Option<CompleteSession> {
        match self {
            Lookup::Active(s) => s.into_complete(),
            Lookup::Ended | Lookup::NoSession { .. } => None,
        }
    }
}

fn json_error(status: u16, code: &str, message: &str, reference: &str) -> Response {
    let mut r = Response::json(status, &json!({ "error": code, "message": message, "reference": reference }));
    r.headers.set("cache-control", "no-store");
    r
}

fn reference_id(ports: Ports<'_>) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    ports.random::<8>().iter().map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char).collect()
}

fn wants_json(req: &Request) -> bool {
    !req.headers.get("accept").is_some_and(|a| a.contains("text/html"))
}

fn base_url(req: &Request) -> String {
    format!("{}://{}", req.url.scheme(), req.host())
}

impl Gateway {
    /// Loads and validates the configuration. An invalid one does not stop the isolate:
    /// every request is then refused with a configuration error page.
    pub fn new(document: &str, secrets: &dyn Fn(&str) -> Option<Secret>) -> Self {
        Self::from_loaded(Config::load(document, secrets))
    }

    /// A gateway over an already loaded configuration, or over the reasons it was refused
    /// (then every request gets the "configuration invalid" answer).
    pub fn from_loaded(loaded: Result<Loaded, ConfigErrors>) -> Self {
        let signing_keys = match &loaded {
            Ok(l) => l.assertion_keys.iter().filter_map(|k| SigningKey::parse(&k.id, &k.key).ok()).collect(),
            Err(_) => Vec::new(),
        };
        Self {
            loaded,
            signing_keys,
            providers: RefCell::default(),
            sessions: RefCell::default(),
            login_limiter: RefCell::default(),
            mfa_local: RefCell::default(),
        }
    }

    /// The configuration errors as a log line, if the document was refused.
    pub fn startup_log(&self) -> Option<String> {
        self.loaded.as_ref().err().map(|e| {
            json!({
                "level": "error",
                "event": "config_invalid",
                "errors": e.0.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            })
            .to_string()
        })
    }

    pub fn config(&self) -> Option<&Loaded> {
        self.loaded.as_ref().ok()
    }

    pub fn prefix(&self) -> &str {
        self.config().map(|l| l.config.gateway.prefix.as_str()).unwrap_or("/_portcullis")
    }

    pub fn fetch_timeout_ms(&self) -> u64 {
        self.config().map(|l| l.config.gateway.fetch_timeout_ms).unwrap_or(5000)
    }

    /// Runs one deferred call with retries and backoff (1 s, 2 s, …); the outcome is logged,
    /// never shown to the user. `sleep_ms` is the runtime's timer.
    pub async fn run_deferred<F, Fut>(&self, ports: Ports<'_>, job: Deferred, sleep_ms: F)
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut last = String::new();
        for attempt in 1..=job.attempts.max(1) {
            match ports.fetch.fetch(job.request.clone(), self.fetch_timeout_ms(), 64 * 1024).await {
                Ok(r) if (200..300).contains(&r.status) => return,
                Ok(r) => last = format!("answered {}", r.status),
                Err(e) => last = e.to_string(),
            }
            if attempt < job.attempts {
                sleep_ms(1000 << (attempt - 1)).await;
            }
        }
        ports.rt.log(&json!({"level": "error", "event": "audit_webhook_failed", "url": job.request.url, "cause": last, "attempts": job.attempts}).to_string());
    }

    /// Most body bytes the shell reads for a gateway route (from the route table).
    pub fn body_limit(&self, path: &str) -> usize {
        routes::find(self.prefix(), path).map_or(MAX_FORM_BODY, |(r, _)| r.body_limit)
    }

    /// Whether the path is one of the gateway's own routes (the shell reads their bodies).
    pub fn is_gateway_route(&self, path: &str) -> bool {
        let p = self.prefix();
        path == p || path.starts_with(&format!("{p}/")) || path.starts_with("/.well-known/portcullis/")
    }

    /// Writes a request's audit events under time-ordered keys
    /// (`audit:{tenant}:{YYYY-MM-DD}:{ms}:{random}`) with the retention TTL, and returns the
    /// webhook delivery to run after the response. A failed write is logged; the event is
    /// in the log line already.
    async fn flush_audit(&self, ports: Ports<'_>, events: Vec<Value>) -> Vec<Deferred> {
        let mut deferred = Vec::new();
        if events.is_empty() {
            return deferred;
        }
        let days = self.config().map(|l| l.config.gateway.audit_retention_days).unwrap_or(90);
        let to_kv = self.config().is_some_and(|l| l.config.gateway.audit_kv);
        if let Some((w, loaded)) = self.config().and_then(|l| l.config.gateway.audit_webhook.as_ref().map(|w| (w, l))) {
            let mut request = Outbound::get(&w.url);
            request.method = "POST";
            request.headers.set("content-type", "application/json");
            if let Some(token) = w.token.as_deref().and_then(|n| loaded.secrets.get(n)) {
                request.headers.set("authorization", format!("Bearer {}", token.expose_str()));
            }
            request.body = Some(json!({ "events": events }).to_string().into_bytes());
            deferred.push(Deferred { request, attempts: w.attempts });
        }
        // The log line is the audit trail by default; KV only with `gateway.audit_kv`.
        if !to_kv {
            return deferred;
        }
        for e in events {
            let tenant = e.get("tenant").and_then(Value::as_str).unwrap_or_default();
            let ms = ports.rt.now_ms();
            let day = &crate::saml::time::format(ms / 1000)[..10];
            let key = format!("audit:{tenant}:{day}:{ms:013}:{}", crypto::hex(&ports.random::<4>()));
            if let Err(err) = ports.kv.put(&key, &e.to_string(), Some(days * 86400)).await {
                log_line(ports, json!({"level": "error", "event": "audit_write_failed", "cause": err.to_string()}));
            }
        }
        deferred
    }

    /// Renders a refusal (HTML page or JSON) and writes its log line; a refusal that is an
    /// audit event (a failed sign-in, a refused admin call) goes to the request's trail.
    fn refuse(&self, cx: &Cx<'_>, refusal: &Refusal) -> Response {
        self.refusal_response(cx.ports, cx.req, Some(cx.tenant), Some(cx), refusal)
    }

    /// A refusal before a tenant is known, or after the request's context has ended (the
    /// origin failed): a log line only.
    fn refuse_bare(&self, ports: Ports<'_>, req: &Request, tenant: Option<&Tenant>, refusal: &Refusal) -> Response {
        self.refusal_response(ports, req, tenant, None, refusal)
    }

    fn refusal_response(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: Option<&Tenant>,
        cx: Option<&Cx<'_>>,
        refusal: &Refusal,
    ) -> Response {
        let reference = reference_id(ports);
        let label = |name: &str| {
            tenant
                .and_then(|t| t.providers.iter().find(|p| p.name() == name))
                .map(|p| p.button().label.clone())
                .unwrap_or_else(|| name.to_owned())
        };
        let pres = refusal.present_with(&label);
        let provider = match refusal {
            Refusal::Oidc { provider, .. } => Some(provider.as_str()),
            _ => None,
        };
        let line = json!({
            "level": if pres.status >= 500 { "error" } else { "warn" },
            "event": "refusal",
            "code": pres.code,
            "cause": refusal.to_string(),
            "status": pres.status,
            "reference": reference,
            "tenant": tenant.map(|t| t.id.as_str()),
            "provider": provider,
            "method": req.method,
            "path": req.url.path(),
            "ip": req.client_ip,
        });
        match (cx, refusal.audit_event()) {
            (Some(cx), Some(event)) => cx.audit(event, line),
            (_, event) => {
                let mut line = line;
                if let Some(e) = event {
                    line["event"] = json!(e.name());
                }
                log_line(ports, line)
            }
        }
        let mut r = self.present_refusal(req, tenant, &pres, &reference);
        match refusal {
            Refusal::MethodNotAllowed => match routes::find(self.prefix(), req.url.path()) {
                Some((route, _)) => r.headers.set("allow", route.allow()),
                None if self.is_gateway_route(req.url.path()) => r.headers.set("allow", "GET, HEAD, OPTIONS"),
                None => r.headers.set("allow", path::ALLOW),
            },
            Refusal::RateLimited { retry_after } => r.headers.set("retry-after", retry_after.to_string()),
            Refusal::Bearer(e) => {
                r.headers.set("www-authenticate", bearer::challenge(tenant.map(|t| t.id.as_str()).unwrap_or(""), e))
            }
            _ => {}
        }
        r
    }

    fn present_refusal(
        &self,
        req: &Request,
        tenant: Option<&Tenant>,
        pres: &crate::error::Presentation,
        reference: &str,
    ) -> Response {
        if wants_json(req) && !req.is_navigation() {
            return json_error(pres.status, pres.code, &pres.message, reference);
        }
        let prefix = self.prefix();
        let login = format!("{prefix}/login");
        // The path is the client's: reflected only once it is a safe same-site path.
        let reload = safe_same_site_path(&match req.url.query() {
            Some(q) => format!("{}?{q}", req.url.path()),
            None => req.url.path().to_owned(),
        });
        let back = req
            .headers
            .get("referer")
            .and_then(|r| url::Url::parse(r).ok())
            .filter(|r| r.host_str() == req.url.host_str())
            .map(|r| r.path().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let verify = format!(
            "{prefix}/mfa?{}",
            crate::http::query_encode(&[("rd", &safe_return_path(&back, prefix)), ("reason", "step_up")])
        );
        let retry = match pres.retry {
            Retry::None => None,
            Retry::Login => Some((login.as_str(), "Sign in again")),
            Retry::Reload => Some((reload.as_str(), "Try again")),
            Retry::Verify => Some((verify.as_str(), "Verify now")),
        };
        pages::error_page(
            Brand { tenant, prefix },
            &ErrorView { status: pres.status, title: pres.title, message: &pres.message, retry, reference },
        )
    }

    /// The 502 page when the origin cannot be reached (the shell calls this).
    pub fn origin_failed(&self, ports: Ports<'_>, req: &Request, cause: &str) -> Response {
        let tenant = self.config().and_then(|l| l.config.tenant_for_host(&req.host()));
        self.refuse_bare(ports, req, tenant, &Refusal::OriginUnreachable(cause.to_owned()))
    }

    /// The 504 page when the origin did not answer within the tenant's
    /// `origin_timeout_ms` (the shell calls this).
    pub fn origin_timed_out(&self, ports: Ports<'_>, req: &Request, after_ms: u64) -> Response {
        let tenant = self.config().and_then(|l| l.config.tenant_for_host(&req.host()));
        self.refuse_bare(ports, req, tenant, &Refusal::OriginTimeout { after_ms })
    }

    /// Entry point: everything a request can lead to, and the work to run after the
    /// response (see `context.rs` for the order the shell calls the core in).
    pub async fn handle(&self, ports: Ports<'_>, req: &Request) -> Outcome {
        let (mut action, events) = match self.tenant_of(ports, req) {
            Ok(tenant) => {
                let cx = Cx::new(ports, req, tenant);
                let action = self.handle_for_tenant(&cx).await;
                (action, cx.take_audit())
            }
            Err(answer) => (Action::Respond(answer), Vec::new()),
        };
        let deferred = self.flush_audit(ports, events).await;
        if let (Action::Respond(r), "HEAD") = (&mut action, req.method.as_str()) {
            r.body.clear();
        }
        Outcome { action, deferred }
    }

    /// The request's tenant, or the answer when there is none: the health check (answered
    /// for every host), an invalid configuration, an unknown host.
    fn tenant_of<'g>(&'g self, ports: Ports<'_>, req: &Request) -> Result<&'g Tenant, Response> {
        if let Some((route, _)) = routes::find(self.prefix(), req.url.path()).filter(|(r, _)| r.id == RouteId::Health) {
            return Err(match req.method.as_str() {
                "GET" | "HEAD" => self.health(),
                "OPTIONS" => options_response(route),
                _ => self.refuse_bare(ports, req, None, &Refusal::MethodNotAllowed),
            });
        }
        let Ok(loaded) = &self.loaded else {
            return Err(self.refuse_bare(ports, req, None, &Refusal::ConfigInvalid));
        };
        let host = req.host();
        loaded
            .config
            .tenant_for_host(&host)
            .ok_or_else(|| self.refuse_bare(ports, req, None, &Refusal::UnknownHost(host)))
    }

    async fn handle_for_tenant(&self, cx: &Cx<'_>) -> Action {
        let (req, tenant) = (cx.req, cx.tenant);
        if self.is_gateway_route(req.url.path()) {
            let r = self.gateway_route(cx).await;
            return Action::Respond(r.unwrap_or_else(|e| self.refuse(cx, &e)));
        }
        // One reading of the request for every rule and for forwarding (`path.rs`).
        let decided = match path::decide(req, tenant.path_case, &tenant.verbatim_paths, tenant.method_override) {
            Ok(d) => d,
            Err(why) => {
                let refusal = match why {
                    Undecidable::Method(_) => Refusal::MethodNotAllowed,
                    Undecidable::ConflictingOverrides => {
                        Refusal::BadRequest("method override headers name different methods".into())
                    }
                    Undecidable::Path(why) => Refusal::AmbiguousPath(why),
                };
                return Action::Respond(self.refuse(cx, &refusal));
            }
        };
        match self.protected(cx, &decided).await {
            Ok(action) => action,
            Err(e) => Action::Respond(self.refuse(cx, &e)),
        }
    }

    fn health(&self) -> Response {
        let (status, body) = match &self.loaded {
            Ok(_) => (200, json!({ "status": "ok" })),
            Err(_) => (503, json!({ "status": "config_invalid" })),
        };
        let mut r = Response::json(status, &body);
        r.headers.set("cache-control", "no-store");
        r
    }

    /// A gateway route, dispatched from the route table (`routes.rs`): unknown paths are
    /// 404, methods the route does not answer 405 with its `Allow`, OPTIONS its `Allow` and
    /// no CORS grant, and HEAD is answered as GET where the table allows it.
    async fn gateway_route(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let (req, tenant, prefix) = (cx.req, cx.tenant, self.prefix());
        let Some((route, name)) = routes::find(prefix, req.url.path()) else {
            return Err(Refusal::NotFound);
        };
        // The admin API authenticates its caller first, then reads the rest of the path.
        if route.id == RouteId::Admin {
            let rest = req.url.path().strip_prefix(prefix).unwrap_or_default();
            return self.admin_route(cx, &rest["/admin".len()..]).await;
        }
        if req.method == "OPTIONS" {
            return Ok(options_response(route));
        }
        if !route.answers(&req.method) {
            return Err(Refusal::MethodNotAllowed);
        }
        let post = req.method == "POST";
        match route.id {
            RouteId::Health => Ok(self.health()),
            RouteId::Jwks => {
                let mut r = Response::json(200, &assertion::jwks(&self.signing_keys));
                r.headers.set("cache-control", "public, max-age=300");
                Ok(r)
            }
            RouteId::StyleCss => Ok(css(pages::STYLE_CSS.to_owned())),
            RouteId::TenantCss => Ok(css(pages::tenant_css(tenant))),
            RouteId::Login => self.login_start(cx).await,
            RouteId::OidcCallback => self.oidc_callback(cx, name).await,
            RouteId::SamlAcs => self.saml_acs(cx).await,
            RouteId::SamlMetadata => self.saml_metadata(req, tenant),
            RouteId::SamlSlo => self.saml_slo(cx).await,
            RouteId::BackchannelLogout => Ok(self.backchannel_logout(cx, name).await),
            RouteId::FrontchannelLogout => Ok(self.frontchannel_logout(cx).await),
            RouteId::LoggedOut => Ok(pages::logged_out_page(Brand { tenant: Some(tenant), prefix })),
            RouteId::Continue => {
                let mut r = Response::redirect(&safe_return_path(&req.query("rd").unwrap_or_default(), prefix));
                r.headers.set("cache-control", "no-store");
                Ok(r)
            }
            RouteId::Me => self.me(cx).await,
            RouteId::Mfa | RouteId::MfaEnroll | RouteId::MfaBackupCodes => self.mfa_route(cx, route.id, post).await,
            RouteId::Logout if post => self.logout(cx).await,
            RouteId::Logout => self.logout_confirm(cx).await,
            #[cfg(feature = "bench")]
            RouteId::Bench => self.bench(cx).await,
            #[cfg(not(feature = "bench"))]
            RouteId::Bench => Err(Refusal::NotFound),
            RouteId::Admin => Err(Refusal::NotFound),
        }
    }

    // -----------------------------------------------------------------------------------
    // Protected requests
    // -----------------------------------------------------------------------------------

    async fn protected(&self, cx: &Cx<'_>, decided: &Decided) -> Result<Action, Refusal> {
        let client = ClientInfo { ip: cx.req.client_ip.as_deref(), proto: cx.req.url.scheme(), host: &cx.req.host() };
        // Forwarded exactly as decided on.
        let url = proxy::upstream_url(&cx.tenant.origin, &decided.path.raw, cx.req.url.query());
        if policy::is_public(cx.tenant, decided) {
            let headers = proxy::upstream_headers(&cx.req.headers, cx.tenant, &client, None);
            return Ok(to_origin(cx.req, cx.tenant, url, headers, None));
        }
        // A bearer token, where the tenant accepts them, decides alone: a client that sends
        // one is judged by it, never by a cookie that came along.
        if !cx.tenant.bearer.is_empty() {
            if let Some(raw) = bearer::bearer_token(cx.req) {
                let credential = bearer::Credential::Bearer(raw);
                return self.protected_bearer(cx, decided, (url, &client), credential).await;
            }
        }
        if cx.tenant.service_tokens {
            if let Some(pair) = bearer::service_credentials(cx.req) {
                let credential = bearer::Credential::Service(pair);
                return self.protected_bearer(cx, decided, (url, &client), credential).await;
            }
        }
        let session = match self.lookup_session(cx).await? {
            Lookup::Active(session) => *session,
            Lookup::Ended => return Ok(Action::Respond(self.unauthenticated(cx.req, cx.tenant, true))),
            Lookup::NoSession { cause } => {
                if let Some(cause) = cause {
                    cx.log(json!({"level": "warn", "event": "session_refused", "tenant": cx.tenant.id, "cause": cause, "ip": cx.req.client_ip}));
                }
                return Ok(Action::Respond(self.unauthenticated(cx.req, cx.tenant, false)));
            }
        };
        // Only a complete session is forwarded; a waiting one goes to its second factor.
        let Some(mut session) = session.into_complete() else {
            return self.mfa_needed(cx.req, false).map(Action::Respond);
        };
        if self.maybe_refresh(cx, &mut session).await? == Refresh::Ended {
            return Ok(Action::Respond(self.unauthenticated(cx.req, cx.tenant, true)));
        }
        let record = session.record();
        let subject = policy::Subject {
            email: record.email.as_deref(),
            email_verified: record.email_verified,
            groups: &record.groups,
            roles: &record.roles,
            scopes: &[],
            machine: false,
            claims: &record.claims(),
            edge: &cx.req.edge,
        };
        if let Err(denied) = policy::authorize(cx.tenant, decided, &subject) {
            return Err(Refusal::Forbidden { denied });
        }
        if self.step_up_due(cx, decided, record) {
            return self.mfa_needed(cx.req, true).map(Action::Respond);
        }
        // A page on another origin can open a WebSocket with the browser's cookies
        // (cross-site WebSocket hijacking): a cookie-authenticated upgrade must come from
        // this site's own pages.
        if proxy::is_websocket_upgrade(&cx.req.method, &cx.req.headers)
            && cx.req.headers.get("origin").is_some_and(|o| o != base_url(cx.req))
        {
            return Err(Refusal::Csrf);
        }
        self.touch(cx, &mut session).await;
        let (id, record) = (session.id(), session.record());
        let identity = IdentityHeaders {
            user_id: record.user_id.clone(),
            user: record.user.clone(),
            email: record.email.clone(),
            name: record.name.clone(),
            preferred_username: record.preferred_username.clone(),
            groups: record.groups.clone(),
            roles: record.roles.clone(),
            amr: record.amr.clone(),
            assertion: self.assertion_for(cx, id, record),
            scopes: None,
            principal: Some("user"),
        };
        let headers = proxy::upstream_headers(&cx.req.headers, cx.tenant, &client, Some(&identity));
        Ok(to_origin(cx.req, cx.tenant, url, headers, Some(id.handle())))
    }

    /// No usable session: browsers go to the login page, other clients get a 401.
    fn unauthenticated(&self, req: &Request, tenant: &Tenant, ended: bool) -> Response {
        let prefix = self.prefix();
        let rd = match req.url.query() {
            Some(q) => format!("{}?{q}", req.url.path()),
            None => req.url.path().to_owned(),
        };
        let mut login = format!("{prefix}/login?{}", crate::http::query_encode(&[("rd", &rd)]));
        if ended {
            login.push_str("&reason=expired");
        }
        let mut r = if req.is_navigation() {
            let mut r = Response::redirect(&login);
            r.headers.set("cache-control", "no-store");
            r
        } else {
            let mut r =
                json_error(401, if ended { "session_expired" } else { "unauthenticated" }, "Sign-in required.", "");
            r.headers.set("www-authenticate", format!(r#"Portcullis realm="{}", login="{prefix}/login""#, tenant.id));
            bearer::add_challenge(&mut r, tenant);
            r
        };
        if req.headers.cookie(SESSION_COOKIE).is_some() {
            r.headers.append("set-cookie", session::clear_cookie(SESSION_COOKIE));
        }
        r
    }

    async fn lookup_session(&self, cx: &Cx<'_>) -> Result<Lookup, Refusal> {
        let Some(loaded) = self.config() else {
            return Err(Refusal::ConfigInvalid);
        };
        let Some(cookie) = cx.req.headers.cookie(SESSION_COOKIE) else {
            return Ok(Lookup::NoSession { cause: None });
        };
        let id = match session::verify_session_cookie(&loaded.cookie_keys, &cx.tenant.id, cookie) {
            Ok(id) => id,
            Err(e) => return Ok(Lookup::NoSession { cause: Some(e.to_string()) }),
        };
        let key = id.kv_key(&cx.tenant.id);
        let now_ms = cx.ports.rt.now_ms();
        let ttl_ms = loaded.config.gateway.session_cache_ttl * 1000;
        let cached =
            self.sessions.borrow().get(&key).filter(|c| now_ms < c.cached_at_ms + ttl_ms).map(|c| c.record.clone());
        let record = match cached {
            Some(r) => r,
            None => {
                let Some(raw) = cx.ports.kv.get(&key).await? else {
                    self.sessions.borrow_mut().remove(&key);
                    cx.log(json!({"event": "session_refused", "tenant": cx.tenant.id, "session": id.handle(),
                        "cause": "session not found (signed out, revoked or expired)", "ip": cx.req.client_ip}));
                    return Ok(Lookup::Ended);
                };
                let Ok(record) = serde_json::from_str::<SessionRecord>(&raw) else {
                    return Ok(Lookup::NoSession { cause: Some("session record unreadable".into()) });
                };
                // A revocation made anywhere. With a coordinator it is seen here now, not when
                // KV's delete arrives (checked once per session cache interval); with KV alone,
                // a record an isolate wrote back after a revocation is refused by its tombstone.
                let revoked_by = match cx.ports.coord() {
                    Some(c) => {
                        let keys = [sessions::revocation_key(&key), sessions::USER_REVOCATION_KEY.to_owned()];
                        let shard = coord::user_shard(&cx.tenant.id, &record.user_id);
                        c.revoked_since(&shard, &keys, record.created_ms()).await?.then_some("coordinator")
                    }
                    None => self.tombstoned(cx.ports, &key).await?.then_some("tombstone"),
                };
                if let Some(by) = revoked_by {
                    self.sessions.borrow_mut().remove(&key);
                    cx.log(json!({"event": "session_refused", "tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id,
                        "cause": format!("session revoked ({by})"), "ip": cx.req.client_ip}),
                    );
                    return Ok(Lookup::Ended);
                }
                self.cache_session(&key, record.clone(), now_ms);
                record
            }
        };
        if record.tenant != cx.tenant.id {
            return Ok(Lookup::NoSession { cause: Some("session belongs to another tenant".into()) });
        }
        if let Err(why) = record.check_times(cx.ports.now(), &cx.tenant.session) {
            self.sessions.borrow_mut().remove(&key);
            // Best effort: the record's KV TTL removes it anyway.
            let _ = cx.ports.kv.delete(&key).await;
            cx.audit(AuditEvent::SessionExpired, json!({"tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id, "cause": format!("{why:?}").to_lowercase()}));
            return Ok(Lookup::Ended);
        }
        Ok(Lookup::Active(Box::new(Session::from_record(id, record))))
    }

    fn cache_session(&self, key: &str, record: SessionRecord, now_ms: u64) {
        let max = self.config().map(|l| l.config.gateway.session_cache_size).unwrap_or(10_000);
        let mut cache = self.sessions.borrow_mut();
        if cache.len() >= max && !cache.contains_key(key) {
            // Bounded memory: drop the oldest half.
            let mut ages: Vec<(u64, String)> = cache.iter().map(|(k, v)| (v.cached_at_ms, k.clone())).collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(max / 2 + 1) {
                cache.remove(&k);
            }
        }
        // A cached assertion stays only while what it asserts is unchanged: a step-up's new
        // `amr` (or refreshed groups) reaches the origin with the next request.
        let assertion = cache.get(key).filter(|c| same_claims(&c.record, &record)).and_then(|c| c.assertion.clone());
        cache.insert(key.to_owned(), CachedSession { record, cached_at_ms: now_ms, assertion });
    }

    async fn save_session(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord) -> Result<(), Refusal> {
        let key = id.kv_key(&cx.tenant.id);
        let value = serde_json::to_string(record).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&key, &value, Some(record.kv_ttl(cx.ports.now(), &cx.tenant.session))).await?;
        self.cache_session(&key, record.clone(), cx.ports.rt.now_ms());
        Ok(())
    }

    /// Writes a change to an existing session (last-seen, refresh, step-up). With KV alone a
    /// revoked session is not written back (its tombstone is checked first): `false`, and
    /// the isolate forgets it. With a coordinator a written-back record is refused on read.
    async fn update_session(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord) -> Result<bool, Refusal> {
        let key = id.kv_key(&cx.tenant.id);
        if cx.ports.coord().is_none() && self.tombstoned(cx.ports, &key).await? {
            self.sessions.borrow_mut().remove(&key);
            return Ok(false);
        }
        self.save_session(cx, id, record).await?;
        Ok(true)
    }

    /// Writes last-seen at most once per `gateway.last_seen_interval` (by default a quarter of
    /// the idle timeout: an active session is written about four times per idle period, which
    /// keeps it alive and KV within the Free plan's daily writes). A failed write is logged
    /// and does not fail the request.
    async fn touch(&self, cx: &Cx<'_>, session: &mut CompleteSession) {
        let interval = self.config().map(|l| l.config.gateway.last_seen_interval_for(&cx.tenant.session)).unwrap_or(60);
        let now = cx.ports.now();
        if !session.record().touch_due(now, interval) {
            return;
        }
        session.record_mut().last_seen = now;
        let (id, record) = (session.id(), session.record());
        if let Err(e) = self.update_session(cx, id, record).await {
            cx.log(json!({"level": "warn", "event": "session_touch_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
    }

    fn assertion_for(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord) -> Option<String> {
        let loaded = self.config()?;
        let key = self.signing_keys.first()?;
        let now = cx.ports.now();
        let cache_key = id.kv_key(&cx.tenant.id);
        if let Some((a, iat)) = self.sessions.borrow().get(&cache_key).and_then(|c| c.assertion.clone()) {
            if now < iat + assertion::LIFETIME - 60 && now >= iat {
                return Some(a);
            }
        }
        let claims = AssertionClaims {
            iss: &loaded.config.gateway.issuer,
            aud: &cx.tenant.id,
            sub: &record.user_id,
            email: record.email.as_deref(),
            name: record.name.as_deref(),
            preferred_username: record.preferred_username.as_deref(),
            groups: &record.groups,
            roles: &record.roles,
            amr: &record.amr,
            idp: &record.provider,
            attributes: &record.attributes,
            principal: "user",
            client_id: None,
            scope: None,
        };
        let token = key.sign(&claims, now)?;
        if let Some(c) = self.sessions.borrow_mut().get_mut(&cache_key) {
            c.assertion = Some((token.clone(), now));
        }
        Some(token)
    }

    // -----------------------------------------------------------------------------------
    // Provider metadata and keys (KV + in-isolate caches)
    // -----------------------------------------------------------------------------------

    fn provider_key(tenant: &Tenant, p: &OidcProvider) -> String {
        format!("{}:{}", tenant.id, p.name)
    }

    async fn fetch_json(&self, ports: Ports<'_>, url: &str) -> Result<Inbound, FetchError> {
        self.idp_get(ports, url).await
    }

    /// An idempotent GET to an identity provider (discovery, JWKS, SAML metadata). A
    /// network error is tried once more, on a new connection: the runtime may have reused
    /// one the peer had already closed (an HTTP/1.0 server without keep-alive), which fails
    /// that attempt only. Timeouts (the budget is spent) and answers of any status are not
    /// repeated, and nothing that is not an idempotent GET comes through here.
    pub(crate) async fn idp_get(&self, ports: Ports<'_>, url: &str) -> Result<Inbound, FetchError> {
        match ports.fetch.fetch(Outbound::get(url), self.fetch_timeout_ms(), MAX_IDP_BODY).await {
            Err(FetchError::Unreachable(cause)) => {
                log_line(ports, json!({"level": "warn", "event": "idp_fetch_retry", "url": url, "cause": cause}));
                ports.fetch.fetch(Outbound::get(url), self.fetch_timeout_ms(), MAX_IDP_BODY).await
            }
            other => other,
        }
    }

    async fn metadata(&self, cx: &Cx<'_>, p: &OidcProvider) -> Result<ProviderMetadata, OidcError> {
        let key = Self::provider_key(cx.tenant, p);
        let now = cx.ports.now();
        if let Some((m, at)) = self.providers.borrow().get(&key).and_then(|s| s.meta.clone()) {
            if now < at.saturating_add(p.discovery_ttl) {
                return Ok(m);
            }
        }
        let kv_key = format!("disc:{key}");
        if let Ok(Some(raw)) = cx.ports.kv.get(&kv_key).await {
            if let Some((body, at)) = cached_doc(&raw) {
                if now < at.saturating_add(p.discovery_ttl) {
                    if let Ok(m) = oidc::parse_discovery(body.as_bytes(), p.issuer_id()) {
                        self.providers.borrow_mut().entry(key).or_default().meta = Some((m.clone(), at));
                        return Ok(m);
                    }
                }
            }
        }
        let resp = self
            .fetch_json(cx.ports, &p.discovery_url())
            .await
            .map_err(|e| OidcError::Discovery(format!("{} {e}", p.discovery_url())))?;
        if resp.status != 200 {
            return Err(OidcError::Discovery(format!("{} answered {}", p.discovery_url(), resp.status)));
        }
        let m = oidc::parse_discovery(&resp.body, p.issuer_id())?;
        self.store_doc(cx.ports, &kv_key, &resp.body, now, p.discovery_ttl).await;
        self.providers.borrow_mut().entry(key).or_default().meta = Some((m.clone(), now));
        Ok(m)
    }

    async fn store_doc(&self, ports: Ports<'_>, kv_key: &str, body: &[u8], now: u64, ttl: u64) {
        let doc = json!({ "at": now, "body": String::from_utf8_lossy(body) }).to_string();
        if let Err(e) = ports.kv.put(kv_key, &doc, Some(ttl.max(60))).await {
            log_line(
                ports,
                json!({"level": "warn", "event": "cache_write_failed", "key": kv_key, "cause": e.to_string()}),
            );
        }
    }

    /// The provider's keys. `force` refetches (at most once per interval per provider),
    /// after an unknown `kid` or a failed signature.
    async fn jwks(
        &self,
        cx: &Cx<'_>,
        p: &OidcProvider,
        m: &ProviderMetadata,
        force: bool,
    ) -> Result<Rc<Vec<Jwk>>, OidcError> {
        let key = Self::provider_key(cx.tenant, p);
        let now = cx.ports.now();
        let kv_key = format!("jwks:{key}");
        let cached = self.providers.borrow().get(&key).and_then(|s| s.jwks.clone());
        if force {
            let last = self.providers.borrow().get(&key).map(|s| s.last_forced_jwks).unwrap_or(0);
            if now < last + JWKS_REFETCH_INTERVAL {
                if let Some((k, _)) = cached {
                    return Ok(k);
                }
            }
            self.providers.borrow_mut().entry(key.clone()).or_default().last_forced_jwks = now;
        } else {
            if let Some((k, at)) = cached {
                if now < at.saturating_add(p.jwks_ttl) {
                    return Ok(k);
                }
            }
            if let Ok(Some(raw)) = cx.ports.kv.get(&kv_key).await {
                if let Some((body, at)) = cached_doc(&raw) {
                    if now < at.saturating_add(p.jwks_ttl) {
                        if let Ok(parsed) = oidc::jwks::parse_jwks(body.as_bytes()) {
                            let keys = Rc::new(parsed.keys);
                            self.providers.borrow_mut().entry(key).or_default().jwks = Some((keys.clone(), at));
                            return Ok(keys);
                        }
                    }
                }
            }
        }
        let resp =
            self.fetch_json(cx.ports, &m.jwks_uri).await.map_err(|e| OidcError::Jwks(format!("{} {e}", m.jwks_uri)))?;
        if resp.status != 200 {
            return Err(OidcError::Jwks(format!("{} answered {}", m.jwks_uri, resp.status)));
        }
        let parsed = oidc::jwks::parse_jwks(&resp.body).map_err(OidcError::Jwks)?;
        if !parsed.skipped.is_empty() {
            cx.log(json!({"level": "warn", "event": "jwks_keys_skipped", "tenant": cx.tenant.id, "provider": p.name, "skipped": parsed.skipped}));
        }
        self.store_doc(cx.ports, &kv_key, &resp.body, now, p.jwks_ttl).await;
        let keys = Rc::new(parsed.keys);
        self.providers.borrow_mut().entry(key).or_default().jwks = Some((keys.clone(), now));
        Ok(keys)
    }

    /// Verifies an ID token, refetching the JWKS once when the key is unknown or the
    /// signature fails (the provider may have rotated its keys).
    async fn verify_id_token(
        &self,
        cx: &Cx<'_>,
        (p, m): (&OidcProvider, &ProviderMetadata),
        raw: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<oidc::VerifiedIdToken, OidcError> {
        let loaded = self.config().ok_or_else(|| OidcError::Discovery("no configuration".into()))?;
        let audiences = oidc::audience_patterns(p);
        let secret = p.client_secret.as_deref().and_then(|n| loaded.secrets.get(n));
        let hmac_secret = if p.allow_hmac_id_tokens { secret.map(|s| s.expose()) } else { None };
        let token = UntrustedIdToken::new(raw);
        let expectations = oidc::id_token::Expectations {
            issuer: &m.issuer,
            client_id: &p.client_id,
            trusted_audiences: &audiences,
            hmac_secret,
            now: cx.ports.now(),
            skew: p.clock_skew,
            iat_window: p.iat_window,
            nonce,
            access_token,
        };
        let keys = self.jwks(cx, p, m, false).await?;
        match check_token(cx.ports, &token, &keys, &expectations).await {
            Err(oidc::IdTokenError::UnknownKey(_) | oidc::IdTokenError::BadSignature) => {
                cx.log(
                    json!({"event": "jwks_refetch", "tenant": cx.tenant.id, "provider": p.name, "kid": token.kid()}),
                );
                let keys = self.jwks(cx, p, m, true).await?;
                check_token(cx.ports, &token, &keys, &expectations).await.map_err(OidcError::IdToken)
            }
            other => other.map_err(OidcError::IdToken),
        }
    }

    /// Cached discovery and key state of the tenant's OIDC providers (admin API).
    fn provider_status(&self, cx: &Cx<'_>) -> Vec<Value> {
        let now = cx.ports.now();
        let cache = self.providers.borrow();
        cx.tenant
            .providers
            .iter()
            .map(|p| {
                let state = cache.get(&format!("{}:{}", cx.tenant.id, p.name()));
                json!({
                    "name": p.name(),
                    "type": if p.as_oidc().is_some() { "oidc" } else { "saml" },
                    "discovery_age": state.and_then(|s| s.meta.as_ref()).map(|(_, at)| now.saturating_sub(*at)),
                    "jwks_age": state.and_then(|s| s.jwks.as_ref()).map(|(_, at)| now.saturating_sub(*at)),
                    "kids": state.and_then(|s| s.jwks.as_ref()).map(|(k, _)| k.iter().map(|k| k.kid.clone()).collect::<Vec<_>>()),
                })
            })
            .collect()
    }

    fn oidc_provider<'t>(&self, tenant: &'t Tenant, name: &str) -> Result<&'t OidcProvider, Refusal> {
        tenant
            .providers
            .iter()
            .find(|p| p.name() == name)
            .and_then(Provider::as_oidc)
            .ok_or_else(|| Refusal::UnknownProvider(name.to_owned()))
    }

    // -----------------------------------------------------------------------------------
    // Sign-in
    // -----------------------------------------------------------------------------------

    async fn login_start(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.query("rd").unwrap_or_default(), prefix);
        let provider = match cx.req.query("provider") {
            Some(p) => p,
            None if cx.tenant.auto_redirect && cx.tenant.providers.len() == 1 => {
                cx.tenant.providers[0].name().to_owned()
            }
            None => {
                let buttons: Vec<ButtonView<'_>> = cx
                    .tenant
                    .providers
                    .iter()
                    .map(|p| ButtonView {
                        name: p.name(),
                        href: format!(
                            "{prefix}/login?{}",
                            crate::http::query_encode(&[("provider", p.name()), ("rd", &rd)])
                        ),
                        label: &p.button().label,
                        icon: p.button().icon.as_deref(),
                    })
                    .collect();
                let notice = (cx.req.query("reason").as_deref() == Some("expired"))
                    .then_some("Your session has ended. Please sign in again.");
                return Ok(pages::login_page(Brand { tenant: Some(cx.tenant), prefix }, &buttons, notice));
            }
        };
        self.login_allowed(cx)?;
        // `reauth=1`: the IdP must authenticate the person afresh (adding a second factor).
        let reauth = cx.req.query("reauth").as_deref() == Some("1");
        if let Some(c) = cx.tenant.providers.iter().find(|p| p.name() == provider).and_then(|p| p.as_saml()) {
            return self.saml_login_start(cx, c, rd, reauth).await;
        }
        let p = self.oidc_provider(cx.tenant, &provider)?;
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let wrap = |error| Refusal::Oidc { provider: p.name.clone(), error };
        let m = self.metadata(cx, p).await.map_err(wrap)?;
        let state = b64url(&cx.ports.random::<32>());
        let redirect_uri = if p.per_provider_callback {
            format!("{}{prefix}/oidc/{}/callback", base_url(cx.req), p.name)
        } else {
            format!("{}{prefix}/oidc/callback", base_url(cx.req))
        };
        let pre = PreLogin {
            tenant: cx.tenant.id.clone(),
            provider: p.name.clone(),
            nonce: b64url(&cx.ports.random::<32>()),
            pkce_verifier: p.pkce.then(|| b64url(&cx.ports.random::<32>())),
            return_to: rd,
            redirect_uri: redirect_uri.clone(),
            created: cx.ports.now(),
            reauth,
        };
        let value = serde_json::to_string(&pre).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports
            .kv
            .put(&oidc::state_key(&cx.tenant.id, &state), &value, Some(loaded.config.gateway.login_state_ttl))
            .await?;
        let pending =
            session::pending_cookie(&loaded.cookie_keys, &cx.tenant.id, &state).ok_or(Refusal::ConfigInvalid)?;
        let location = oidc::authorization_url(p, &m, &redirect_uri, &state, &pre);
        cx.log(json!({"event": "login_start", "tenant": cx.tenant.id, "provider": p.name, "ip": cx.req.client_ip}));
        let mut r = Response::redirect(&location);
        r.headers.set("cache-control", "no-store");
        r.headers.append(
            "set-cookie",
            session::set_cookie(PENDING_COOKIE, &pending, Some(loaded.config.gateway.login_state_ttl + 300), "Lax"),
        );
        Ok(r)
    }

    /// The per-client cap on sign-in starts (`gateway.login_rate_limit`).
    fn login_allowed(&self, cx: &Cx<'_>) -> Result<(), Refusal> {
        let limit = self.config().map(|l| l.config.gateway.login_rate_limit).unwrap_or_default();
        let client = cx.req.client_ip.as_deref().unwrap_or("unknown");
        self.login_limiter
            .borrow_mut()
            .take(client, cx.ports.rt.now_ms(), limit.burst, limit.per_minute)
            .map_err(|retry_after| Refusal::RateLimited { retry_after })
    }

    async fn oidc_callback(&self, cx: &Cx<'_>, path_provider: Option<&str>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let provider_hint = path_provider.unwrap_or("unknown").to_owned();
        let fail = |error: OidcError, provider: &str| Refusal::Oidc { provider: provider.to_owned(), error };
        if let Some(name) = path_provider {
            self.oidc_provider(cx.tenant, name)?;
        }
        // The state parameter must be present and match this browser's pending cookie.
        let state = cx
            .req
            .query("state")
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| fail(OidcError::StateMissing, &provider_hint))?;
        let key = oidc::state_key(&cx.tenant.id, &state);
        let used_key = format!("used:{key}");
        let unknown_state = |replay: bool| {
            fail(if replay { OidcError::StateReplayed } else { OidcError::StateUnknown }, &provider_hint)
        };
        let Some(cookie) = cx.req.headers.cookie(PENDING_COOKIE) else {
            // Without the cookie, an expired or used state explains more than "not started
            // here"; a live state is left untouched for the browser it belongs to.
            if cx.ports.kv.get(&key).await?.is_none() {
                return Err(unknown_state(cx.ports.kv.get(&used_key).await?.is_some()));
            }
            return Err(fail(OidcError::PendingCookieMissing, &provider_hint));
        };
        if !session::pending_cookie_matches(&loaded.cookie_keys, &cx.tenant.id, cookie, &state) {
            return Err(fail(OidcError::PendingCookieMismatch, &provider_hint));
        }
        // Single use. With a coordinator the first claim wins atomically, everywhere; without
        // one, read-then-delete in KV (a replay within KV's propagation delay, or a race in
        // one location, is then decided by the IdP's single-use code). A marker remembers
        // the use so a replay is named.
        // The claim comes after the read, so a failed read leaves the state usable.
        let state_ttl = loaded.config.gateway.login_state_ttl;
        let Some(raw) = cx.ports.kv.get(&key).await? else {
            return Err(unknown_state(cx.ports.kv.get(&used_key).await?.is_some()));
        };
        if !self.claim_state(cx, &state, &key).await? {
            return Err(unknown_state(true));
        }
        cx.ports.kv.delete(&key).await?;
        cx.ports.kv.put(&used_key, "1", Some(state_ttl)).await?;
        let pre: PreLogin = serde_json::from_str(&raw).map_err(|_| fail(OidcError::StateUnknown, &provider_hint))?;
        let name = pre.provider.clone();
        if pre.tenant != cx.tenant.id || path_provider.is_some_and(|p| p != name) {
            return Err(fail(OidcError::ProviderMismatch, &name));
        }
        // KV's TTL is the upper bound; the record's own time is checked too.
        if cx.ports.now() > pre.created + state_ttl {
            return Err(fail(OidcError::StateUnknown, &name));
        }
        let p = self.oidc_provider(cx.tenant, &name)?;
        let m = self.metadata(cx, p).await.map_err(|e| fail(e, &name))?;
        // RFC 9207: the `iss` parameter, when present or promised, names this provider.
        let iss = cx.req.query("iss");
        if (iss.is_some() || m.authorization_response_iss_parameter_supported)
            && iss.as_deref() != Some(m.issuer.as_str())
        {
            return Err(fail(OidcError::IssuerParamMismatch { expected: m.issuer.clone(), actual: iss }, &name));
        }
        if let Some(error) = cx.req.query("error") {
            let description = cx.req.query("error_description").map(|d| oidc::truncate(&d, 200));
            return Err(fail(OidcError::IdpError { error: oidc::truncate(&error, 64), description }, &name));
        }
        let code = cx.req.query("code").filter(|c| !c.is_empty()).ok_or_else(|| fail(OidcError::MissingCode, &name))?;

        // Code exchange.
        let secret = p.client_secret.as_deref().and_then(|n| loaded.secrets.get(n));
        let token_req = oidc::token_request(p, &m, secret, &code, &pre);
        let resp = cx
            .ports
            .fetch
            .fetch(token_req, self.fetch_timeout_ms(), MAX_IDP_BODY)
            .await
            .map_err(|e| fail(OidcError::TokenEndpointUnreachable(e), &name))?;
        let tokens = oidc::parse_token_response(&resp).map_err(|e| fail(e, &name))?;
        let id_token =
            tokens.id_token.as_deref().ok_or_else(|| fail(OidcError::TokenResponse("no id_token".into()), &name))?;
        let verified = self
            .verify_id_token(cx, (p, &m), id_token, Some(&pre.nonce), Some(&tokens.access_token))
            .await
            .map_err(|e| fail(e, &name))?;

        // Claims missing from the ID token come from userinfo.
        let missing = oidc::missing_claims(p, &verified.claims);
        let userinfo = match (&m.userinfo_endpoint, missing.is_empty()) {
            (Some(endpoint), false) => {
                let mut r = Outbound::get(endpoint);
                r.headers.set("authorization", format!("Bearer {}", tokens.access_token));
                let resp = cx
                    .ports
                    .fetch
                    .fetch(r, self.fetch_timeout_ms(), MAX_IDP_BODY)
                    .await
                    .map_err(|e| fail(OidcError::Userinfo(e.to_string()), &name))?;
                Some(oidc::parse_userinfo(&resp, &verified.sub).map_err(|e| fail(e, &name))?)
            }
            _ => None,
        };
        let identity = oidc::identity(p, &verified, userinfo.as_ref()).map_err(|e| fail(e, &name))?;
        // A fresh sign-in was asked for (`max_age=0`): the IdP must say when it
        // authenticated the person (Core 3.1.2.1, `auth_time` required with `max_age`), and
        // that must be after the sign-in started.
        if pre.reauth {
            let auth_time = verified.claims.get("auth_time").and_then(Value::as_u64);
            let started = pre.created.saturating_sub(p.clock_skew);
            if auth_time.is_none_or(|t| t < started) {
                return Err(Refusal::FreshSignInNotConfirmed { provider: name.clone() });
            }
        }
        let user_id = format!("{}/{}", verified.iss, verified.sub);
        let id = SessionId::from_random(cx.ports.random::<32>());
        let stored = StoredTokens {
            refresh_token: tokens.refresh_token.clone().filter(|_| p.refresh),
            id_token: p.rp_logout.then(|| id_token.to_owned()),
        };
        let sealed = self.seal_tokens(cx.ports, &id, &stored);
        let now = cx.ports.now();
        let login = SignedIn {
            provider: &name,
            user_id,
            identity,
            tokens: sealed,
            access_expires: tokens.expires_in.map(|e| now + e).filter(|_| stored.refresh_token.is_some()),
            expires_cap: None,
            idp_mfa: p.accept_idp_mfa,
            return_to: &pre.return_to,
            detail: json!({"alg": verified.alg, "kid": verified.kid}),
            fresh: pre.reauth,
            pending_cookie: PENDING_COOKIE,
        };
        self.finish_login(cx, id, login).await
    }

    /// Common end of every sign-in (OIDC or SAML): group mapping and the "no roles" check,
    /// the session record, the second-factor decision, the cookie and the audit line.
    async fn finish_login(&self, cx: &Cx<'_>, id: SessionId, login: SignedIn<'_>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let identity = login.identity;
        let mapped = policy::map_groups(&cx.tenant.groups, &identity.groups);
        if cx.tenant.groups.require_mapped_group && !mapped.any_mapped {
            cx.audit(AuditEvent::LoginFailure, json!({"level": "warn", "code": "no_roles", "tenant": cx.tenant.id, "provider": login.provider, "user": login.user_id, "idp_groups": identity.groups}));
            return Err(Refusal::NoRoles);
        }
        let now = cx.ports.now();
        let absolute = now + cx.tenant.session.absolute_timeout;
        let mut record = SessionRecord {
            v: 1,
            tenant: cx.tenant.id.clone(),
            user_id: login.user_id.clone(),
            user: identity.user.clone(),
            provider: login.provider.to_owned(),
            email: identity.email.clone(),
            email_verified: identity.email_verified,
            name: identity.name.clone(),
            given_name: identity.given_name.clone(),
            family_name: identity.family_name.clone(),
            preferred_username: identity.preferred_username.clone(),
            groups: mapped.groups,
            roles: mapped.roles,
            amr: identity.amr.clone(),
            created: now,
            last_seen: now,
            expires: login.expires_cap.map_or(absolute, |cap| cap.min(absolute)),
            mfa: MfaState::NotRequired,
            mfa_at: None,
            idp_sid: identity.sid.clone(),
            tokens: login.tokens,
            access_expires: login.access_expires,
            user_agent: cx.req.headers.get("user-agent").map(|u| oidc::truncate(u, 200)),
            country: cx.req.headers.get("cf-ipcountry").map(|c| oidc::truncate(c, 8)),
            attributes: identity.extra.clone(),
            created_ms: Some(cx.ports.rt.now_ms()),
            reauth_at: login.fresh.then_some(now),
        };
        let mut next = self.decide_mfa(cx, login.idp_mfa, &mut record, login.return_to).await?;
        if login.fresh && record.mfa != MfaState::Pending {
            // The fresh sign-in was asked for to add a second factor: go on with that.
            let rd = crate::http::query_encode(&[("rd", login.return_to)]);
            next = format!("{}/mfa/enroll?{rd}", self.prefix());
        }
        self.save_session(cx, &id, &record).await?;
        self.index_session(cx, &id, &record).await;
        let cookie =
            session::sign_session_cookie(&loaded.cookie_keys, &cx.tenant.id, &id).ok_or(Refusal::ConfigInvalid)?;
        let mut line = json!({"tenant": cx.tenant.id, "provider": login.provider, "user": login.user_id,
                   "session": id.handle(), "groups": record.groups, "roles": record.roles, "mfa": record.mfa, "ip": cx.req.client_ip});
        if let (Some(m), serde_json::Value::Object(extra)) = (line.as_object_mut(), login.detail) {
            m.extend(extra);
        }
        cx.audit(AuditEvent::LoginSuccess, line);
        let mut r = Response::redirect(&next);
        r.headers.set("cache-control", "no-store");
        r.headers.append("set-cookie", session::set_cookie(SESSION_COOKIE, &cookie, None, "Lax"));
        r.headers.append("set-cookie", session::clear_cookie(login.pending_cookie));
        Ok(r)
    }

    /// Seals the tokens a session keeps (bound to the session id); `None` when there is
    /// nothing to keep.
    fn seal_tokens(&self, ports: Ports<'_>, id: &SessionId, tokens: &StoredTokens) -> Option<String> {
        if tokens.refresh_token.is_none() && tokens.id_token.is_none() {
            return None;
        }
        let loaded = self.config()?;
        let plain = serde_json::to_vec(tokens).ok()?;
        crypto::seal(&loaded.encryption_keys, "tokens", id.hash().as_bytes(), ports.random::<12>(), &plain)
    }

    /// The tokens sealed in a session record, if they open.
    fn open_tokens(&self, id: &SessionId, record: &SessionRecord) -> Option<StoredTokens> {
        let loaded = self.config()?;
        let plain =
            crypto::open(&loaded.encryption_keys, "tokens", id.hash().as_bytes(), record.tokens.as_deref()?).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Ends a session the IdP no longer backs (refresh refused): record and cache gone.
    /// Records the first use of a one-time value of `kind` (`saml` assertion ids, logout
    /// `jti`s); `false` when it was used before. With the coordination object the claim is
    /// atomic everywhere; with KV alone a marker is read, then written, so a use in another
    /// location within KV's propagation delay is not seen.
    async fn first_use(&self, cx: &Cx<'_>, kind: &str, key: &str, ttl: u64) -> Result<bool, crate::ports::KvError> {
        if let Some(c) = cx.ports.coord() {
            return c.claim(&coord::bucket_shard(&cx.tenant.id, kind, key), key, ttl * 1000).await;
        }
        if cx.ports.kv.get(key).await?.is_some() {
            return Ok(false);
        }
        cx.ports.kv.put(key, "1", Some(ttl)).await?;
        Ok(true)
    }

    /// Claims pre-login state (OIDC `state`, SAML `RelayState`) at the coordination object;
    /// `false` when another request claimed it first. Without the object KV's read-then-
    /// delete decides and this is always `true`.
    async fn claim_state(&self, cx: &Cx<'_>, state: &str, key: &str) -> Result<bool, Refusal> {
        let Some(c) = cx.ports.coord() else {
            return Ok(true);
        };
        let ttl_ms = self.config().map_or(600, |l| l.config.gateway.login_state_ttl) * 1000;
        Ok(c.claim(&coord::bucket_shard(&cx.tenant.id, "state", state), key, ttl_ms).await?)
    }

    async fn end_session(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord, cause: String) {
        let key = id.kv_key(&cx.tenant.id);
        self.sessions.borrow_mut().remove(&key);
        if let Err(e) = self.mark_revoked(cx, &record.user_id, &key).await {
            cx.log(json!({"level": "warn", "event": "session_revoke_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
        if let Err(e) = cx.ports.kv.delete(&key).await {
            cx.log(json!({"level": "warn", "event": "session_delete_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
        cx.audit(AuditEvent::SessionRevoked, json!({"level": "warn", "actor": "idp", "tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id, "cause": cause}));
    }

    /// Refreshes the access token when it is about to expire. If the IdP refuses, the
    /// session ends; if it cannot be reached, the session goes on until the access token
    /// has actually expired, then requests are refused until it answers again.
    async fn maybe_refresh(&self, cx: &Cx<'_>, session: &mut CompleteSession) -> Result<Refresh, Refusal> {
        let id = &session.id().clone();
        let record = session.record_mut();
        let Some(access_exp) = record.access_expires else {
            return Ok(Refresh::NotDue);
        };
        let now = cx.ports.now();
        if now + REFRESH_MARGIN < access_exp {
            return Ok(Refresh::NotDue);
        }
        let Ok(p) = self.oidc_provider(cx.tenant, &record.provider) else {
            self.end_session(cx, id, record, "provider no longer configured".into()).await;
            return Ok(Refresh::Ended);
        };
        let stored = self.open_tokens(id, record);
        let Some(refresh_token) = stored.as_ref().and_then(|s| s.refresh_token.clone()) else {
            return Ok(Refresh::NotDue);
        };
        // With a coordinator, one request refreshes and the others wait for its result: an
        // IdP that rotates refresh tokens ends the whole session when an old one is used
        // twice. The lease is per refresh token, so a location still reading the old record
        // from KV gets the new one instead of reusing the rotated token.
        let Some(c) = cx.ports.coord() else {
            return self.refresh_with_idp(cx, id, record, p, stored, refresh_token, access_exp).await;
        };
        let shard = coord::user_shard(&cx.tenant.id, &record.user_id);
        let lease_key =
            format!("r:{}:{}", id.kv_key(&cx.tenant.id), &crypto::sha256_hex(refresh_token.as_bytes())[..32]);
        match c.refresh_begin(&shard, &lease_key).await? {
            Lease::Acquired => {}
            Lease::Finished { result } => return Ok(self.adopt_refresh(cx, id, record, &result)),
            Lease::Held if now < access_exp => return Ok(Refresh::NotDue),
            Lease::Held => return Err(Refusal::IdpUnavailable("another request is still refreshing".into())),
        }
        let outcome = self.refresh_with_idp(cx, id, record, p, stored, refresh_token, access_exp).await;
        let result = match &outcome {
            Ok(Refresh::Done) => serde_json::to_string(&*record).ok(),
            Ok(Refresh::Ended) => Some(REFRESH_ENDED.to_owned()),
            _ => None,
        };
        if let Err(e) = c.refresh_end(&shard, &lease_key, result).await {
            cx.log(json!({"level": "warn", "event": "refresh_lease_end_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
        outcome
    }

    /// Takes over the result of another request's refresh.
    fn adopt_refresh(&self, cx: &Cx<'_>, id: &SessionId, record: &mut SessionRecord, result: &str) -> Refresh {
        match serde_json::from_str::<SessionRecord>(result) {
            Ok(fresh) if fresh.user_id == record.user_id && fresh.tenant == record.tenant => {
                *record = fresh;
                self.cache_session(&id.kv_key(&cx.tenant.id), record.clone(), cx.ports.rt.now_ms());
                Refresh::Done
            }
            // REFRESH_ENDED, or anything else: the session is over.
            _ => {
                self.sessions.borrow_mut().remove(&id.kv_key(&cx.tenant.id));
                Refresh::Ended
            }
        }
    }

    /// The refresh itself: the token request, the refreshed ID token's checks, the new record.
    #[allow(clippy::too_many_arguments)]
    async fn refresh_with_idp(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        record: &mut SessionRecord,
        p: &OidcProvider,
        stored: Option<StoredTokens>,
        refresh_token: String,
        access_exp: u64,
    ) -> Result<Refresh, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let now = cx.ports.now();
        let unavailable = |e: String| {
            if now < access_exp {
                Ok(Refresh::NotDue)
            } else {
                Err(Refusal::IdpUnavailable(e))
            }
        };
        let m = match self.metadata(cx, p).await {
            Ok(m) => m,
            Err(e) => return unavailable(e.to_string()),
        };
        let secret = p.client_secret.as_deref().and_then(|n| loaded.secrets.get(n));
        let request = oidc::refresh_request(p, &m, secret, &refresh_token);
        let resp = match cx.ports.fetch.fetch(request, self.fetch_timeout_ms(), MAX_IDP_BODY).await {
            Ok(r) if r.status >= 500 => return unavailable(format!("token endpoint answered {}", r.status)),
            Ok(r) => r,
            Err(e) => return unavailable(e.to_string()),
        };
        let tokens = match oidc::parse_token_response(&resp) {
            Ok(t) => t,
            Err(e) => {
                self.end_session(cx, id, record, format!("refresh refused: {e}")).await;
                return Ok(Refresh::Ended);
            }
        };
        if let Some(new_id_token) = &tokens.id_token {
            // Core 12.2: a refreshed ID token must name the same issuer and subject.
            let verified = self.verify_id_token(cx, (p, &m), new_id_token, None, Some(&tokens.access_token)).await;
            let problem = match verified {
                Ok(v) if format!("{}/{}", v.iss, v.sub) == record.user_id => None,
                Ok(_) => Some("refreshed ID token names another subject".to_owned()),
                Err(e) => Some(format!("refreshed ID token invalid: {e}")),
            };
            if let Some(cause) = problem {
                self.end_session(cx, id, record, cause).await;
                return Ok(Refresh::Ended);
            }
        }
        let old = stored.unwrap_or_default();
        let new_stored = StoredTokens {
            refresh_token: tokens.refresh_token.clone().or(old.refresh_token),
            id_token: tokens.id_token.clone().or(old.id_token),
        };
        record.tokens = self.seal_tokens(cx.ports, id, &new_stored);
        record.access_expires = Some(now + tokens.expires_in.unwrap_or(300));
        if !self.update_session(cx, id, record).await? {
            return Ok(Refresh::Ended);
        }
        cx.log(json!({"event": "session_refreshed", "tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id}),
        );
        Ok(Refresh::Done)
    }

    // -----------------------------------------------------------------------------------
    // Sign-out and identity
    // -----------------------------------------------------------------------------------

    async fn logout_confirm(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let (who, csrf) = match self.lookup_session(cx).await? {
            Lookup::Active(s) => (
                s.record().email.clone().or(Some(s.record().user.clone())),
                session::csrf_token(&loaded.cookie_keys, &cx.tenant.id, s.id()).unwrap_or_default(),
            ),
            _ => (None, String::new()),
        };
        Ok(pages::logout_page(Brand { tenant: Some(cx.tenant), prefix: self.prefix() }, who.as_deref(), &csrf))
    }

    async fn logout(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        // A cross-site form post is refused by Origin (when sent) and by the CSRF token.
        // `Origin: null` is what browsers send under `Referrer-Policy: no-referrer`: it
        // proves nothing either way, so only the CSRF token decides then.
        if let Some(origin) = cx.req.headers.get("origin").filter(|o| *o != "null") {
            if origin != base_url(cx.req) {
                return Err(Refusal::Csrf);
            }
        }
        let prefix = self.prefix();
        let mut location = format!("{prefix}/logged-out");
        if let Lookup::Active(s) = self.lookup_session(cx).await? {
            let (id, record) = (s.id(), s.record());
            let token = cx.req.form_value("csrf").unwrap_or_default();
            if !session::csrf_matches(&loaded.cookie_keys, &cx.tenant.id, id, &token) {
                return Err(Refusal::Csrf);
            }
            let key = id.kv_key(&cx.tenant.id);
            self.mark_revoked(cx, &record.user_id, &key).await?;
            cx.ports.kv.delete(&key).await?;
            self.sessions.borrow_mut().remove(&key);
            cx.audit(AuditEvent::Logout, json!({"tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id, "provider": record.provider, "ip": cx.req.client_ip}));
            if let Some(url) = self.rp_logout_url(cx, id, record).await {
                location = url;
            } else if let Some(url) = self.saml_logout_url(cx, record) {
                location = url;
            }
        }
        let mut r = Response::redirect(&location);
        r.headers.set("cache-control", "no-store");
        r.headers.append("set-cookie", session::clear_cookie(SESSION_COOKIE));
        Ok(r)
    }

    /// RP-initiated logout at the IdP, when it offers it and the provider wants it.
    async fn rp_logout_url(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord) -> Option<String> {
        let p = self.oidc_provider(cx.tenant, &record.provider).ok().filter(|p| p.rp_logout)?;
        let m = self.metadata(cx, p).await.ok()?;
        let end = m.end_session_endpoint.as_deref()?;
        let stored = self.open_tokens(id, record)?;
        let post_logout = format!("{}{}/logged-out", base_url(cx.req), self.prefix());
        let mut params = vec![("client_id", p.client_id.as_str()), ("post_logout_redirect_uri", post_logout.as_str())];
        if let Some(t) = stored.id_token.as_deref() {
            params.push(("id_token_hint", t));
        }
        let sep = if end.contains('?') { '&' } else { '?' };
        Some(format!("{end}{sep}{}", crate::http::query_encode(&params)))
    }

    async fn me(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        match self.lookup_session(cx).await?.into_complete() {
            Some(s) => {
                let (id, r) = (s.id(), s.record());
                let mut resp = Response::json(
                    200,
                    &json!({
                        "user_id": r.user_id, "user": r.user, "email": r.email, "email_verified": r.email_verified,
                        "name": r.name, "given_name": r.given_name, "family_name": r.family_name,
                        "preferred_username": r.preferred_username, "groups": r.groups, "roles": r.roles,
                        "amr": r.amr, "provider": r.provider, "session": id.handle(), "mfa_at": r.mfa_at,
                        "csrf": session::csrf_token(&self.config().map(|l| l.cookie_keys.clone()).unwrap_or_default(), &cx.tenant.id, id),
                        "created": r.created, "expires": r.expires,
                    }),
                );
                resp.headers.set("cache-control", "no-store");
                Ok(resp)
            }
            None => {
                let mut r = json_error(401, "unauthenticated", "Sign-in required.", "");
                r.headers.set("www-authenticate", format!(r#"Portcullis realm="{}""#, cx.tenant.id));
                Ok(r)
            }
        }
    }
}

/// The forward of a request that passed every check: a WebSocket upgrade keeps its
/// `Upgrade` (dropped as hop-by-hop otherwise), and the tenant's origin deadline goes along.
pub(crate) fn to_origin(
    req: &Request,
    tenant: &Tenant,
    url: String,
    mut headers: Headers,
    session: Option<String>,
) -> Action {
    let websocket = proxy::is_websocket_upgrade(&req.method, &req.headers);
    if websocket {
        headers.set("upgrade", "websocket");
    }
    Action::Forward(Forward {
        url,
        headers,
        tenant: tenant.id.clone(),
        session,
        websocket,
        timeout_ms: tenant.origin_timeout_ms,
    })
}

/// Verifies a signed token (ID token or access token, by the profile): the signature with the runtime's own crypto when the shell offers
/// it (WebCrypto), else with the pure-Rust verifier; the claim checks are the same either way.
async fn check_token<P: oidc::id_token::TokenProfile>(
    ports: Ports<'_>,
    token: &UntrustedIdToken,
    keys: &[Jwk],
    exp: &P,
) -> Result<P::Verified, oidc::IdTokenError> {
    if let (Some(verifier), Ok(parts)) = (ports.verifier, token.signing_parts()) {
        let key = token.key_for(keys, &parts)?;
        if let Some(valid) = verifier.verify(&parts.alg, &key.public_jwk, parts.signed(), parts.signature()).await {
            let checked = oidc::id_token::SignatureChecked::by_port(valid).ok_or(oidc::IdTokenError::BadSignature)?;
            return token.verify_with_checked_signature(parts, key, checked, exp);
        }
    }
    token.verify(keys, exp)
}

/// A preflight or OPTIONS answer: the route's methods, and no CORS grant.
fn options_response(route: &Route) -> Response {
    let mut r = Response::new(204);
    r.headers.set("allow", route.allow());
    r.headers.set("cache-control", "no-store");
    r
}

fn css(body: String) -> Response {
    let mut r = Response::new(200);
    r.headers.set("content-type", "text/css; charset=utf-8");
    r.headers.set("cache-control", "public, max-age=300");
    r.headers.set("x-content-type-options", "nosniff");
    r.body = body.into_bytes();
    r
}

/// Whether two records assert the same identity to the origin (the signed assertion's
/// claims and the identity headers).
fn same_claims(a: &SessionRecord, b: &SessionRecord) -> bool {
    a.user_id == b.user_id
        && a.user == b.user
        && a.provider == b.provider
        && a.email == b.email
        && a.name == b.name
        && a.preferred_username == b.preferred_username
        && a.groups == b.groups
        && a.roles == b.roles
        && a.amr == b.amr
        && a.attributes == b.attributes
}

fn cached_doc(raw: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(raw).ok()?;
    Some((v.get("body")?.as_str()?.to_owned(), v.get("at")?.as_u64()?))
}
