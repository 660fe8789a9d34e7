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
mod caches;
mod central;
mod context;
mod logout;
mod mfa;
mod protected;
mod providers;
mod refresh;
mod respond;
pub mod routes;
mod saml;
mod sessions;
mod signin;
mod state;
pub use crate::audit::AuditEvent;
pub use context::Outcome;
pub use routes::{route_sessions, RouteId, ROUTES};
pub use state::Accepts;

use caches::{ProviderCache, SessionCache};
use context::{log_line, Cx};
use protected::{base_url, to_origin};
use providers::{cached_doc, check_token};
use refresh::Refresh;
use respond::{css, json_error, options_response};
pub use routes::{MAX_ACS_BODY, MAX_FORM_BODY};
use sessions::Lookup;
use signin::SignedIn;

use std::cell::RefCell;

use serde_json::{json, Value};

use crate::assertion::{self, SigningKey};
use crate::config::{Config, ConfigErrors, Loaded, Tenant};
use crate::error::Refusal;
use crate::http::{Headers, Outbound, Request, Response};
use crate::pages::{self, Brand};
use crate::path::{self, Undecidable};
use crate::ports::Ports;
use crate::redirect::safe_return_path;
use crate::secret::Secret;

/// Largest IdP response body read (discovery, JWKS, token, userinfo).
pub const MAX_IDP_BODY: usize = 512 * 1024;
/// Minimum seconds between forced JWKS refetches for one provider.
pub const JWKS_REFETCH_INTERVAL: u64 = 60;
/// Refresh the access token when it expires within this many seconds.
pub const REFRESH_MARGIN: u64 = 60;
/// A refresh lease's result when the IdP refused the refresh (the session ended).
const REFRESH_ENDED: &str = "ended";

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

/// One per isolate: the validated configuration and the in-isolate caches.
#[derive(Debug)]
pub struct Gateway {
    loaded: Result<Loaded, ConfigErrors>,
    providers: ProviderCache,
    sessions: SessionCache,
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

impl Gateway {
    /// Loads and validates the configuration. An invalid one does not stop the isolate:
    /// every request is then refused with a configuration error page.
    pub fn new(document: &str, secrets: &dyn Fn(&str) -> Option<Secret>) -> Self {
        Self::from_loaded(Config::load(document, secrets))
    }

    /// A gateway over an already loaded configuration, or over the reasons it was refused
    /// (then every request gets the "configuration invalid" answer).
    pub fn from_loaded(loaded: Result<Loaded, ConfigErrors>) -> Self {
        Self {
            loaded,
            providers: ProviderCache::default(),
            sessions: SessionCache::default(),
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

    /// The assertion signing keys (parsed at load): the first signs, all are published.
    fn signing_keys(&self) -> &[SigningKey] {
        self.config().map_or(&[], |l| &l.signing_keys)
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
            let key = crate::keys::audit_event(tenant, day, ms, ports.random::<4>());
            if let Err(err) = ports.kv.put(&key, &e.to_string(), Some(days * 86400)).await {
                log_line(ports, json!({"level": "error", "event": "audit_write_failed", "cause": err.to_string()}));
            }
        }
        deferred
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
                let mut r = Response::json(200, &assertion::jwks(self.signing_keys()));
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
            RouteId::Mfa
            | RouteId::MfaEnroll
            | RouteId::MfaBackupCodes
            | RouteId::MfaPasskey
            | RouteId::MfaPasskeys
            | RouteId::MfaPasskeyRegister
            | RouteId::MfaPasskeyRemove => self.mfa_route(cx, route.id, post).await,
            RouteId::Logout if post => self.logout(cx).await,
            RouteId::Logout => self.logout_confirm(cx).await,
            RouteId::SsoAuthorize if tenant.sites.is_empty() => Err(Refusal::NotFound),
            RouteId::SsoAuthorize => self.sso_authorize(cx).await,
            RouteId::SsoCallback => self.sso_callback(cx).await,
            #[cfg(feature = "bench")]
            RouteId::Bench => self.bench(cx).await,
            #[cfg(not(feature = "bench"))]
            RouteId::Bench => Err(Refusal::NotFound),
            RouteId::Admin => Err(Refusal::NotFound),
        }
    }
}
