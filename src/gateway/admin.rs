//! The admin API (JSON under `{prefix}/admin/`): authenticated by a bearer token (a Worker
//! secret, compared by hash in constant time) or by a session with the `superuser` role;
//! cookie-authenticated writes also need the session's CSRF token.

use serde_json::{json, Value};

use super::{Gateway, Lookup};
use crate::config::Tenant;
use crate::crypto;
use crate::error::Refusal;
use crate::http::{Request, Response};
use crate::ports::Ports;
use crate::session;

pub const ADMIN_ROLE: &str = "superuser";

impl Gateway {
    /// Who is calling, for the audit trail; refuses anyone who is not an admin.
    async fn admin_actor(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
        write: bool,
    ) -> Result<String, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        if let Some(auth) = req.headers.get("authorization") {
            let presented = auth.strip_prefix("Bearer ").unwrap_or_default().trim();
            let ok = loaded
                .admin_token
                .as_ref()
                .is_some_and(|t| crypto::ct_eq(&crypto::sha256(t.expose()), &crypto::sha256(presented.as_bytes())));
            return if ok { Ok("api-token".to_owned()) } else { Err(Refusal::AdminUnauthenticated) };
        }
        match self.lookup_session(ports, req, tenant).await? {
            Lookup::Active(id, record) => {
                if !record.roles.iter().any(|r| r == ADMIN_ROLE) || record.mfa == session::MfaState::Pending {
                    return Err(Refusal::AdminForbidden);
                }
                if write {
                    let token = req.headers.get("x-csrf-token").unwrap_or_default();
                    if !session::csrf_matches(&loaded.cookie_keys, &tenant.id, &id, token) {
                        return Err(Refusal::Csrf);
                    }
                }
                Ok(record.user_id.clone())
            }
            _ => Err(Refusal::AdminUnauthenticated),
        }
    }

    pub(super) async fn admin_route(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
        route: &str,
    ) -> Result<Response, Refusal> {
        let write = req.method != "GET" && req.method != "HEAD";
        let actor = self.admin_actor(ports, req, tenant, write).await?;
        let result = match (req.method.as_str(), route) {
            ("GET", "/mfa") => {
                let user_id = req
                    .query("user_id")
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| Refusal::BadInput("query parameter user_id is required".into()))?;
                let record = self.load_mfa(ports, tenant, &user_id).await?.ok_or(Refusal::UnknownUser)?;
                Ok(json!({
                    "user_id": user_id, "enrolled": record.enabled, "enrolled_at": record.enrolled_at,
                    "backup_codes_left": record.backup_codes_left(), "locked_until": record.is_locked(ports.now()),
                }))
            }
            ("POST", "/mfa/reset") => {
                let body: Value = serde_json::from_slice(&req.body)
                    .map_err(|e| Refusal::BadInput(format!("body is not JSON: {e}")))?;
                let user_id = body
                    .get("user_id")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| Refusal::BadInput("field user_id (string) is required".into()))?;
                if self.reset_mfa(ports, tenant, user_id, &actor).await? {
                    Ok(json!({ "user_id": user_id, "reset": true }))
                } else {
                    Err(Refusal::UnknownUser)
                }
            }
            _ => Err(Refusal::NotFound),
        };
        self.log(
            ports,
            json!({"event": "admin_call", "tenant": tenant.id, "actor": actor, "method": req.method, "route": route,
                   "outcome": if result.is_ok() { "ok" } else { "refused" }}),
        );
        let mut r = Response::json(200, &result?);
        r.headers.set("cache-control", "no-store");
        Ok(r)
    }
}
