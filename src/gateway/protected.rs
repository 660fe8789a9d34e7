//! Requests for the origin: public paths, bearer and service credentials, the session, policy
//! and step-up, then forwarding with identity headers and the signed assertion; and `/me`.

use super::{bearer, json_error, Action, Forward, Gateway, Lookup, Refresh};

use serde_json::json;

use super::context::Cx;
use crate::assertion::{self, AssertionClaims};
use crate::config::Tenant;
use crate::error::Refusal;
use crate::http::{Headers, Request, Response};
use crate::path::Decided;
use crate::policy;
use crate::proxy::{self, ClientInfo, IdentityHeaders};
use crate::session::{self, SessionId, SessionRecord, SESSION_COOKIE};

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

pub(super) fn base_url(req: &Request) -> String {
    format!("{}://{}", req.url.scheme(), req.host())
}

impl Gateway {
    pub(super) async fn protected(&self, cx: &Cx<'_>, decided: &Decided) -> Result<Action, Refusal> {
        // A sign-in host without an origin shows its sites.
        if cx.tenant.origin.is_empty() {
            return self.sites_page(cx).await.map(Action::Respond);
        }
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
            return self.mfa_needed(cx.req, None).map(Action::Respond);
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
        if let Some(factor) = self.step_up_due(cx, decided, record) {
            return self.mfa_needed(cx.req, Some(factor)).map(Action::Respond);
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
            assertion: self.assertion_for(cx, id, record)?,
            scopes: None,
            principal: Some("user"),
        };
        let headers = proxy::upstream_headers(&cx.req.headers, cx.tenant, &client, Some(&identity));
        Ok(to_origin(cx.req, cx.tenant, url, headers, Some(id.handle())))
    }

    /// No usable session: browsers go to the login page, other clients get a 401.
    pub(super) fn unauthenticated(&self, req: &Request, tenant: &Tenant, ended: bool) -> Response {
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

    /// The signed assertion for a session, from the cache while it is fresh. `None` when no
    /// signing key is configured; a configured key that cannot sign refuses the request.
    pub(super) fn assertion_for(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        record: &SessionRecord,
    ) -> Result<Option<String>, Refusal> {
        let (Some(loaded), Some(key)) = (self.config(), self.signing_keys().first()) else {
            return Ok(None);
        };
        let now = cx.ports.now();
        let cache_key = id.kv_key(&cx.tenant.id);
        if let Some((a, iat)) = self.sessions.assertion(&cache_key) {
            if now < iat + assertion::LIFETIME - 60 && now >= iat {
                return Ok(Some(a));
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
        let token = key.sign(&claims, now).ok_or_else(|| Refusal::SigningKeyUnusable(key.id.clone()))?;
        self.sessions.keep_assertion(&cache_key, &token, now);
        Ok(Some(token))
    }

    pub(super) async fn me(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
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
