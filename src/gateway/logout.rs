//! OpenID Connect Back-Channel Logout 1.0 receiver: the IdP posts a signed logout token;
//! every session of that IdP session (`sid`), or of the user (`sub`) when there is no `sid`,
//! is revoked.

use super::{base_url, Gateway, Lookup};

use serde_json::json;

use super::context::Cx;
use crate::audit::AuditEvent;
use crate::config::{OidcProvider, Provider};
use crate::error::Refusal;
use crate::http::Response;
use crate::oidc::UntrustedIdToken;
use crate::pages::{self, Brand};
use crate::session::{self, SessionId, SessionRecord, SESSION_COOKIE};

use super::sessions::{sid_index_key, user_index_key};
use crate::oidc::id_token::{Expectations, VerifiedLogoutToken};

pub(super) fn unavailable() -> Response {
    let mut r = Response::json(503, &json!({"error": "temporarily_unavailable"}));
    r.headers.set("cache-control", "no-store");
    r
}

pub(super) fn refuse(description: &str) -> Response {
    let mut r = Response::json(400, &json!({"error": "invalid_request", "error_description": description}));
    r.headers.set("cache-control", "no-store");
    r
}

impl Gateway {
    pub(super) async fn verify_logout_token(
        &self,
        cx: &Cx<'_>,
        p: &OidcProvider,
        raw: &str,
    ) -> Result<VerifiedLogoutToken, String> {
        let loaded = self.config().ok_or("no configuration")?;
        let m = self.metadata(cx, p).await.map_err(|e| e.to_string())?;
        let secret = p.client_secret.as_deref().and_then(|n| loaded.secrets.get(n));
        let exp = Expectations {
            issuer: &m.issuer,
            client_id: &p.client_id,
            trusted_audiences: &p.audiences,
            hmac_secret: if p.allow_hmac_id_tokens { secret.map(|s| s.expose()) } else { None },
            now: cx.ports.now(),
            skew: p.clock_skew,
            iat_window: p.iat_window,
            nonce: None,
            access_token: None,
        };
        let token = UntrustedIdToken::new(raw);
        let keys = self.jwks(cx, p, &m, false).await.map_err(|e| e.to_string())?;
        match token.verify_logout(&keys, &exp) {
            Err(crate::oidc::IdTokenError::UnknownKey(_) | crate::oidc::IdTokenError::BadSignature) => {
                let keys = self.jwks(cx, p, &m, true).await.map_err(|e| e.to_string())?;
                token.verify_logout(&keys, &exp).map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }

    /// `POST {prefix}/oidc/backchannel-logout` (or `/oidc/NAME/backchannel-logout`).
    pub(super) async fn backchannel_logout(&self, cx: &Cx<'_>, path_provider: Option<&str>) -> Response {
        let Some(raw) = cx.req.form_value("logout_token").filter(|t| !t.is_empty()) else {
            return refuse("logout_token is missing");
        };
        // Candidates: the named provider, or every OIDC provider (the token's own issuer and
        // audience decide which one verifies it).
        let candidates: Vec<&OidcProvider> = cx
            .tenant
            .providers
            .iter()
            .filter_map(Provider::as_oidc)
            .filter(|p| path_provider.is_none_or(|n| n == p.name))
            .collect();
        let mut last_error = String::from("no OIDC provider");
        let mut verified = None;
        for p in candidates {
            match self.verify_logout_token(cx, p, &raw).await {
                Ok(t) => {
                    verified = Some((p, t));
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let Some((p, token)) = verified else {
            cx.audit(
                AuditEvent::BackchannelLogout,
                json!({"level": "warn", "tenant": cx.tenant.id, "outcome": "refused", "cause": last_error}),
            );
            return refuse("the logout token is not valid");
        };
        // Each logout token is accepted once.
        let jti_key = crate::keys::logout_token(&cx.tenant.id, &token.iss, &token.jti);
        let ttl = p.iat_window.saturating_add(p.clock_skew).max(60).saturating_mul(2);
        match self.first_use(cx, "jti", &jti_key, ttl).await {
            Ok(false) => {
                cx.audit(AuditEvent::BackchannelLogout, json!({"level": "warn", "tenant": cx.tenant.id, "provider": p.name, "outcome": "refused", "cause": "jti already used"}));
                return refuse("the logout token was already used");
            }
            Ok(true) => {}
            Err(e) => {
                cx.audit(
                    AuditEvent::BackchannelLogout,
                    json!({"level": "error", "tenant": cx.tenant.id, "outcome": "failed", "cause": e.to_string()}),
                );
                return unavailable();
            }
        }
        let result: Result<u32, crate::error::Refusal> = async {
            let key = match (&token.sid, &token.sub) {
                (Some(sid), _) => sid_index_key(&cx.tenant.id, &p.name, sid),
                (None, Some(sub)) => user_index_key(&cx.tenant.id, &format!("{}/{sub}", token.iss)),
                (None, None) => return Ok(0),
            };
            let user = token.sub.as_ref().map(|s| format!("{}/{s}", token.iss));
            let mut n = 0;
            for (hash, record) in self.indexed_sessions(cx, &key).await? {
                if record.provider != p.name || user.as_ref().is_some_and(|u| u != &record.user_id) {
                    continue;
                }
                n +=
                    u32::from(self.revoke_session(cx, &hash, &format!("idp:{}", p.name), "back-channel logout").await?);
            }
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                cx.audit(
                    AuditEvent::BackchannelLogout,
                    json!({"tenant": cx.tenant.id, "provider": p.name, "outcome": "ok",
                    "revoked": n, "user": token.sub.as_ref().map(|s| format!("{}/{s}", token.iss))}),
                );
                let mut r = Response::new(200);
                r.headers.set("cache-control", "no-store");
                r
            }
            Err(e) => {
                cx.audit(
                    AuditEvent::BackchannelLogout,
                    json!({"level": "error", "tenant": cx.tenant.id, "outcome": "failed", "cause": e.to_string()}),
                );
                unavailable()
            }
        }
    }
}

impl Gateway {
    /// `GET {prefix}/oidc/frontchannel-logout?iss=…&sid=…` (Front-Channel Logout 1.0): the
    /// IdP loads this in an iframe; sessions of that IdP session are revoked. The page may
    /// be framed by the IdP only.
    pub(super) async fn frontchannel_logout(&self, cx: &Cx<'_>) -> Response {
        let (Some(iss), Some(sid)) =
            (cx.req.query("iss").filter(|i| !i.is_empty()), cx.req.query("sid").filter(|s| !s.is_empty()))
        else {
            return refuse("iss and sid are required");
        };
        let provider = cx.tenant.providers.iter().filter_map(Provider::as_oidc).find(|p| p.issuer_id() == iss);
        let Some(p) = provider else {
            cx.log(json!({"level": "warn", "event": "frontchannel_logout", "tenant": cx.tenant.id, "outcome": "refused", "cause": "iss names no provider"}));
            return refuse("iss names no provider of this site");
        };
        let mut n = 0;
        let key = sid_index_key(&cx.tenant.id, &p.name, &sid);
        if let Ok(sessions) = self.indexed_sessions(cx, &key).await {
            for (hash, record) in sessions {
                if record.provider == p.name {
                    n += u32::from(
                        self.revoke_session(cx, &hash, &format!("idp:{}", p.name), "front-channel logout")
                            .await
                            .unwrap_or(false),
                    );
                }
            }
        }
        cx.log(json!({"event": "frontchannel_logout", "tenant": cx.tenant.id, "provider": p.name, "outcome": "ok", "revoked": n}));
        let origin = url::Url::parse(&iss).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        let mut r = Response::html(200, "<!doctype html><title>Signed out</title><p>Signed out.</p>".to_owned());
        r.headers.set("content-security-policy", format!("default-src 'none'; frame-ancestors {origin}"));
        r.headers.set("cache-control", "no-store");
        r.headers.append("set-cookie", crate::session::clear_cookie(crate::session::SESSION_COOKIE));
        r
    }
}

impl Gateway {
    pub(super) async fn logout_confirm(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
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

    pub(super) async fn logout(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
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
            self.sessions.remove(&key);
            cx.audit(AuditEvent::Logout, json!({"tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id, "provider": record.provider, "ip": cx.req.client_ip}));
            // One sign-in for a group of sites ends as one: at the sign-in host and at every
            // site, and at the IdP as the sign-in host's own sign-out would.
            if let Some(link) = &record.central {
                if let Some(url) = self.central_logout_url(cx, link).await {
                    location = url;
                }
                self.end_central(cx, link).await?;
            } else if !cx.tenant.sites.is_empty() {
                self.end_sites(cx, cx.tenant, &id.hash(), "user", "signed out at the sign-in host").await?;
            }
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
    pub(super) async fn rp_logout_url(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord) -> Option<String> {
        let post_logout = format!("{}{}/logged-out", base_url(cx.req), self.prefix());
        self.rp_logout_url_for(cx, &id.hash(), record, &post_logout).await
    }

    /// [`Gateway::rp_logout_url`] for the session of `cx.tenant` with hash `session_hash`
    /// (a site asks for its sign-in host's session), returning to `post_logout`.
    pub(super) async fn rp_logout_url_for(
        &self,
        cx: &Cx<'_>,
        session_hash: &str,
        record: &SessionRecord,
        post_logout: &str,
    ) -> Option<String> {
        let p = self.oidc_provider(cx.tenant, &record.provider).ok().filter(|p| p.rp_logout)?;
        let m = self.metadata(cx, p).await.ok()?;
        let end = m.end_session_endpoint.as_deref()?;
        let stored = self.open_tokens_for(session_hash, record)?;
        let mut params = vec![("client_id", p.client_id.as_str()), ("post_logout_redirect_uri", post_logout)];
        if let Some(t) = stored.id_token.as_deref() {
            params.push(("id_token_hint", t));
        }
        let sep = if end.contains('?') { '&' } else { '?' };
        Some(format!("{end}{sep}{}", crate::http::query_encode(&params)))
    }
}
