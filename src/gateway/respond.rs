//! How a refusal is answered: a page or JSON error with a reference id, and a log line
//! (an audit event where the refusal is one).

use super::{bearer, routes, Gateway};

use serde_json::json;

use super::context::{log_line, Cx};
use super::routes::Route;
use crate::config::Tenant;
use crate::error::{Refusal, Retry};
use crate::http::{Request, Response};
use crate::pages::{self, Brand, ErrorView};
use crate::path::{self};
use crate::ports::Ports;
use crate::redirect::{safe_return_path, safe_same_site_path};

pub(super) fn json_error(status: u16, code: &str, message: &str, reference: &str) -> Response {
    let mut r = Response::json(status, &json!({ "error": code, "message": message, "reference": reference }));
    r.headers.set("cache-control", "no-store");
    r
}

pub(super) fn reference_id(ports: Ports<'_>) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    ports.random::<8>().iter().map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char).collect()
}

pub(super) fn wants_json(req: &Request) -> bool {
    !req.headers.get("accept").is_some_and(|a| a.contains("text/html"))
}

/// A preflight or OPTIONS answer: the route's methods, and no CORS grant.
pub(super) fn options_response(route: &Route) -> Response {
    let mut r = Response::new(204);
    r.headers.set("allow", route.allow());
    r.headers.set("cache-control", "no-store");
    r
}

pub(super) fn css(body: String) -> Response {
    let mut r = Response::new(200);
    r.headers.set("content-type", "text/css; charset=utf-8");
    r.headers.set("cache-control", "public, max-age=300");
    r.headers.set("x-content-type-options", "nosniff");
    r.body = body.into_bytes();
    r
}

impl Gateway {
    /// Renders a refusal (HTML page or JSON) and writes its log line; a refusal that is an
    /// audit event (a failed sign-in, a refused admin call) goes to the request's trail.
    pub(super) fn refuse(&self, cx: &Cx<'_>, refusal: &Refusal) -> Response {
        self.refusal_response(cx.ports, cx.req, Some(cx.tenant), Some(cx), refusal)
    }

    /// A refusal before a tenant is known, or after the request's context has ended (the
    /// origin failed): a log line only.
    pub(super) fn refuse_bare(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: Option<&Tenant>,
        refusal: &Refusal,
    ) -> Response {
        self.refusal_response(ports, req, tenant, None, refusal)
    }

    pub(super) fn refusal_response(
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
            Refusal::Oidc { provider, .. }
            | Refusal::PreLogin { provider, .. }
            | Refusal::ProviderUnavailable { provider, .. } => Some(provider.as_str()),
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

    pub(super) fn present_refusal(
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
}
