//! Access-token refresh at the IdP for sessions whose tokens are due, under a lease so that
//! one request per session refreshes and the others adopt its result.

use super::{Gateway, MAX_IDP_BODY, REFRESH_ENDED, REFRESH_MARGIN};

use serde_json::json;

use super::context::Cx;
use super::state::CompleteSession;
use crate::config::OidcProvider;
use crate::coord::{self, Lease};
use crate::error::Refusal;
use crate::oidc::{self};
use crate::session::{SessionId, SessionRecord, StoredTokens};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refresh {
    NotDue,
    Done,
    Ended,
}

impl Gateway {
    /// Refreshes the access token when it is about to expire. If the IdP refuses, the
    /// session ends; if it cannot be reached, the session goes on until the access token
    /// has actually expired, then requests are refused until it answers again.
    pub(super) async fn maybe_refresh(&self, cx: &Cx<'_>, session: &mut CompleteSession) -> Result<Refresh, Refusal> {
        let id = &session.id().clone();
        let record = session.record_mut();
        let Some(access_exp) = record.access_expires else {
            return Ok(Refresh::NotDue);
        };
        let now = cx.ports.now();
        // A site's session holds no tokens: its sign-in host refreshes them. When the access
        // token it was handed out with has run out, the session is over here; the browser
        // goes through the sign-in host again, which refreshes (or ends) its own session.
        if record.central.is_some() {
            if now < access_exp {
                return Ok(Refresh::NotDue);
            }
            cx.log(json!({"event": "session_renewal_due", "tenant": cx.tenant.id, "session": id.handle(),
                "cause": "the access token the sign-in host handed this session out with has expired"}));
            return Ok(Refresh::Ended);
        }
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
        let lease_key = crate::keys::refresh_lease(&id.kv_key(&cx.tenant.id), &refresh_token);
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
    pub(super) fn adopt_refresh(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        record: &mut SessionRecord,
        result: &str,
    ) -> Refresh {
        match serde_json::from_str::<SessionRecord>(result) {
            Ok(fresh) if fresh.user_id == record.user_id && fresh.tenant == record.tenant => {
                *record = fresh;
                self.cache_session(&id.kv_key(&cx.tenant.id), record.clone(), cx.ports.rt.now_ms());
                Refresh::Done
            }
            // REFRESH_ENDED, or anything else: the session is over.
            _ => {
                self.sessions.remove(&id.kv_key(&cx.tenant.id));
                Refresh::Ended
            }
        }
    }

    /// The refresh itself: the token request, the refreshed ID token's checks, the new record.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn refresh_with_idp(
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
}
