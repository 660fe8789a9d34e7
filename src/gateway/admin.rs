//! The admin API (JSON under `{prefix}/admin/`): authenticated by a bearer token (a Worker
//! secret, compared by hash in constant time) or by a session with the `superuser` role;
//! cookie-authenticated writes also need the session's CSRF token.

use super::context::Cx;
use crate::audit::AuditEvent;
use serde_json::{json, Value};

use super::sessions::user_index_key;
use super::{Gateway, Lookup};
use crate::crypto;
use crate::error::Refusal;
use crate::http::{Request, Response};
use crate::session;

pub const ADMIN_ROLE: &str = "superuser";

impl Gateway {
    /// Who is calling, for the audit trail; refuses anyone who is not an admin.
    async fn admin_actor(&self, cx: &Cx<'_>, write: bool) -> Result<String, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        if let Some(auth) = cx.req.headers.get("authorization") {
            let presented = auth.strip_prefix("Bearer ").unwrap_or_default().trim();
            let ok = loaded
                .admin_token
                .as_ref()
                .is_some_and(|t| crypto::ct_eq(&crypto::sha256(t.expose()), &crypto::sha256(presented.as_bytes())));
            return if ok { Ok("api-token".to_owned()) } else { Err(Refusal::AdminUnauthenticated) };
        }
        match self.lookup_session(cx).await? {
            Lookup::Active(s) => {
                // A session waiting for its second factor is nobody's admin yet.
                let Some(s) = s.into_complete() else {
                    return Err(Refusal::AdminForbidden);
                };
                let (id, record) = (s.id(), s.record());
                if !record.roles.iter().any(|r| r == ADMIN_ROLE) {
                    return Err(Refusal::AdminForbidden);
                }
                if write {
                    let token = cx.req.headers.get("x-csrf-token").unwrap_or_default();
                    if !session::csrf_matches(&loaded.cookie_keys, &cx.tenant.id, id, token) {
                        return Err(Refusal::Csrf);
                    }
                }
                Ok(record.user_id.clone())
            }
            _ => Err(Refusal::AdminUnauthenticated),
        }
    }

    pub(super) async fn admin_route(&self, cx: &Cx<'_>, route: &str) -> Result<Response, Refusal> {
        let write = cx.req.method != "GET" && cx.req.method != "HEAD";
        let actor = self.admin_actor(cx, write).await?;
        let result = match (cx.req.method.as_str(), route) {
            ("GET", "/mfa") => {
                let user_id = cx
                    .req
                    .query("user_id")
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| Refusal::BadInput("query parameter user_id is required".into()))?;
                let record = self.load_mfa(cx, &user_id).await?.ok_or(Refusal::UnknownUser)?;
                let locked_until = self.mfa_locked(cx, &user_id, &record).await?;
                Ok(json!({
                    "user_id": user_id, "enrolled": record.enabled, "enrolled_at": record.enrolled_at,
                    "backup_codes_left": record.backup_codes_left(), "locked_until": locked_until,
                    "totp": record.has_totp(),
                    "passkeys": record.passkeys.iter().map(|p| json!({"name": p.name, "created": p.created, "last_used": p.last_used})).collect::<Vec<_>>(),
                }))
            }
            ("POST", "/mfa/reset") => {
                let body: Value = serde_json::from_slice(&cx.req.body)
                    .map_err(|e| Refusal::BadInput(format!("body is not JSON: {e}")))?;
                let user_id = body
                    .get("user_id")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| Refusal::BadInput("field user_id (string) is required".into()))?;
                if self.reset_mfa(cx, user_id, &actor).await? {
                    Ok(json!({ "user_id": user_id, "reset": true }))
                } else {
                    Err(Refusal::UnknownUser)
                }
            }
            ("GET", "/sessions") => {
                let user_id = required_query(cx.req, "user_id")?;
                let live = self.indexed_sessions(cx, &user_index_key(&cx.tenant.id, &user_id)).await?;
                if live.is_empty() {
                    return Err(Refusal::UnknownUser);
                }
                let mut list: Vec<Value> = Vec::with_capacity(live.len());
                for (h, r) in &live {
                    let mut entry = json!({"session": h, "created": r.created, "last_seen": r.last_seen, "expires": r.expires,
                           "provider": r.provider, "user_agent": r.user_agent, "country": r.country, "mfa": r.mfa});
                    // A sign-in host's session lists the site sessions it handed out; a site's
                    // session names the sign-in host's session it came from.
                    if !cx.tenant.sites.is_empty() {
                        let sites = self.site_entries(cx.ports, &cx.tenant.id, h).await?;
                        entry["sites"] = json!(sites
                            .iter()
                            .map(|s| json!({"tenant": s.tenant, "session": s.session, "host": s.host, "created": s.created, "expires": s.expires}))
                            .collect::<Vec<_>>());
                    }
                    if let Some(link) = &r.central {
                        entry["central"] = json!({"tenant": link.tenant, "session": link.session});
                    }
                    list.push(entry);
                }
                Ok(json!({ "user_id": user_id, "sessions": list }))
            }
            ("POST", "/sessions/revoke") => {
                let session = body_field(cx.req, "session")?;
                if self.revoke_session(cx, &session, &actor, "revoked by an admin").await? {
                    Ok(json!({ "revoked": 1 }))
                } else {
                    Err(Refusal::UnknownSession)
                }
            }
            ("POST", "/sessions/revoke-user") => {
                let user_id = body_field(cx.req, "user_id")?;
                // With a coordinator, one entry revokes every session of the user at once,
                // including any the (eventually consistent) index does not list yet.
                let everywhere = self.mark_user_revoked(cx, &user_id).await?;
                let live = self.indexed_sessions(cx, &user_index_key(&cx.tenant.id, &user_id)).await?;
                if live.is_empty() && !everywhere {
                    return Err(Refusal::UnknownUser);
                }
                let mut n = 0;
                for (h, _) in live {
                    n += u32::from(
                        self.revoke_session(cx, &h, &actor, "all of the user's sessions revoked by an admin").await?,
                    );
                }
                Ok(json!({ "user_id": user_id, "revoked": n }))
            }
            ("POST", "/sessions/revoke-provider") => {
                let provider = body_field(cx.req, "provider")?;
                if !cx.tenant.providers.iter().any(|p| p.name() == provider) {
                    return Err(Refusal::BadInput(format!("no provider named {provider:?} in this tenant")));
                }
                // An incident tool: walks the tenant's sessions (up to 1000 per call; call
                // again until it reports 0).
                let prefix = crate::keys::sessions_of_tenant(&cx.tenant.id);
                let mut n = 0;
                for key in cx.ports.kv.list(&prefix, 1000).await? {
                    let Some(raw) = cx.ports.kv.get(&key).await? else { continue };
                    if serde_json::from_str::<crate::session::SessionRecord>(&raw).is_ok_and(|r| r.provider == provider)
                    {
                        let hash = key.trim_start_matches(&prefix).to_owned();
                        n += u32::from(
                            self.revoke_session(cx, &hash, &actor, "provider's sessions revoked by an admin").await?,
                        );
                    }
                }
                Ok(json!({ "provider": provider, "revoked": n }))
            }
            ("GET", "/providers") => Ok(json!({ "providers": self.provider_status(cx) })),
            ("POST", "/providers/refresh") => {
                let name = body_field(cx.req, "provider")?;
                let p = self
                    .oidc_provider(cx.tenant, &name)
                    .map_err(|_| Refusal::BadInput(format!("no OIDC provider named {name:?}")))?;
                self.providers.forget(&super::caches::ProviderCache::key(&cx.tenant.id, &p.name));
                let m = self.metadata(cx, p).await.map_err(|e| Refusal::IdpUnavailable(e.to_string()))?;
                let keys = self.jwks(cx, p, &m, true).await.map_err(|e| Refusal::IdpUnavailable(e.to_string()))?;
                Ok(
                    json!({ "provider": name, "issuer": m.issuer, "kids": keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>() }),
                )
            }
            ("GET", "/service-tokens") => {
                let prefix = super::bearer::service_token_prefix(&cx.tenant.id);
                let mut list = Vec::new();
                for key in cx.ports.kv.list(&prefix, 1000).await? {
                    if let Some(t) = cx
                        .ports
                        .kv
                        .get(&key)
                        .await?
                        .and_then(|raw| serde_json::from_str::<super::bearer::ServiceToken>(&raw).ok())
                    {
                        list.push(json!({"client_id": &key[prefix.len()..], "name": t.name, "scopes": t.scopes,
                                         "created": t.created, "expires": t.expires}));
                    }
                }
                Ok(json!({ "service_tokens": list }))
            }
            ("POST", "/service-tokens") => {
                if !cx.tenant.service_tokens {
                    return Err(Refusal::BadInput(
                        "this tenant does not accept service tokens (service_tokens)".into(),
                    ));
                }
                let body: Value = serde_json::from_slice(&cx.req.body)
                    .map_err(|e| Refusal::BadInput(format!("body is not JSON: {e}")))?;
                let name = body
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty() && n.len() <= 64)
                    .ok_or_else(|| Refusal::BadInput("field name (1-64 characters) is required".into()))?;
                let scopes: Vec<String> = match body.get("scopes") {
                    None => Vec::new(),
                    Some(v) => serde_json::from_value(v.clone())
                        .map_err(|_| Refusal::BadInput("field scopes must be a list of strings".into()))?,
                };
                let ttl_days = body.get("ttl_days").and_then(Value::as_u64).filter(|d| (1..=3650).contains(d));
                let now = cx.ports.now();
                let expires = ttl_days.map(|d| now + d * 86400);
                let client_id = format!("st-{}", crypto::hex(&cx.ports.random::<8>()));
                let secret = crate::crypto::b64url(&cx.ports.random::<32>());
                let stored = super::bearer::ServiceToken {
                    name: name.to_owned(),
                    secret_sha256: crypto::sha256_hex(secret.as_bytes()),
                    scopes: scopes.clone(),
                    created: now,
                    expires,
                };
                let key = crate::keys::service_token(&cx.tenant.id, &client_id);
                let value = serde_json::to_string(&stored).map_err(|e| Refusal::BadInput(e.to_string()))?;
                cx.ports.kv.put(&key, &value, ttl_days.map(|d| d * 86400)).await?;
                // The secret is shown once, in this answer only.
                Ok(
                    json!({"client_id": client_id, "client_secret": secret, "name": name, "scopes": scopes, "expires": expires}),
                )
            }
            ("POST", "/service-tokens/revoke") => {
                let client_id = body_field(cx.req, "client_id")?;
                let key = crate::keys::service_token(&cx.tenant.id, &client_id);
                if cx.ports.kv.get(&key).await?.is_none() {
                    return Err(Refusal::NotFound);
                }
                cx.ports.kv.delete(&key).await?;
                Ok(json!({ "client_id": client_id, "revoked": true }))
            }
            ("POST", "/policy/check") => {
                let query: crate::policy::CheckQuery = serde_json::from_slice(&cx.req.body)
                    .map_err(|e| Refusal::BadInput(format!("body is not a policy check: {e}")))?;
                if query.path.is_empty() {
                    return Err(Refusal::BadInput("field path (string) is required".into()));
                }
                Ok(crate::policy::check(cx.tenant, &query))
            }
            ("GET", "/keys") => {
                let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
                let ids = |keys: &[crate::crypto::KeyWithId]| keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>();
                Ok(json!({
                    "cookie_keys": { "signing": loaded.cookie_keys.first().map(|k| k.id.clone()), "verifying": ids(&loaded.cookie_keys) },
                    "encryption_keys": { "sealing": loaded.encryption_keys.first().map(|k| k.id.clone()), "opening": ids(&loaded.encryption_keys) },
                    "assertion_keys": { "signing": self.signing_keys().first().map(|k| k.id.clone()),
                                        "published": self.signing_keys().iter().map(|k| k.id.clone()).collect::<Vec<_>>() },
                }))
            }
            ("GET", "/config") => {
                // The document holds secret names only, never values.
                let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
                Ok(json!({ "gateway": loaded.config.gateway, "tenant": cx.tenant }))
            }
            ("GET", "/audit") => {
                let day = required_query(cx.req, "date")?;
                if day.len() != 10 || crate::saml::time::parse(&format!("{day}T00:00:00Z")).is_none() {
                    return Err(Refusal::BadInput("date must be YYYY-MM-DD".into()));
                }
                if !self.config().is_some_and(|l| l.config.gateway.audit_kv) {
                    Ok(json!({ "date": day, "events": [], "stored": false,
                        "message": "Audit events are log lines only (Workers Logs, `wrangler tail`); set gateway.audit_kv to also keep them in KV." }))
                } else {
                    let user = cx.req.query("user");
                    let event = cx.req.query("event");
                    let mut out = Vec::new();
                    for key in cx.ports.kv.list(&crate::keys::audit_day(&cx.tenant.id, &day), 1000).await? {
                        let Some(raw) = cx.ports.kv.get(&key).await? else { continue };
                        let Ok(v) = serde_json::from_str::<Value>(&raw) else { continue };
                        let matches = |field: &str, want: &Option<String>| {
                            want.as_deref().is_none_or(|w| v.get(field).and_then(Value::as_str) == Some(w))
                        };
                        if matches("user", &user) && matches("event", &event) {
                            out.push(v);
                        }
                    }
                    Ok(json!({ "date": day, "events": out, "stored": true }))
                }
            }
            _ => Err(Refusal::NotFound),
        };
        cx.audit(
            AuditEvent::AdminCall,
            json!({"tenant": cx.tenant.id, "actor": actor, "method": cx.req.method, "route": route,
                   "outcome": if result.is_ok() { "ok" } else { "refused" }}),
        );
        let mut r = Response::json(200, &result?);
        r.headers.set("cache-control", "no-store");
        Ok(r)
    }
}

fn required_query(req: &Request, name: &str) -> Result<String, Refusal> {
    req.query(name)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Refusal::BadInput(format!("query parameter {name} is required")))
}

fn body_field(req: &Request, name: &str) -> Result<String, Refusal> {
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| Refusal::BadInput(format!("body is not JSON: {e}")))?;
    body.get(name)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| Refusal::BadInput(format!("field {name} (string) is required")))
}
