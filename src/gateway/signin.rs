//! Sign-in: the start (OIDC code + PKCE, or SAML), the OIDC callback, and the session a
//! successful sign-in becomes (shared with SAML's ACS). Pre-login state is claimed once.

use super::{base_url, Gateway, MAX_IDP_BODY};

use serde_json::{json, Value};

use super::context::Cx;
use crate::audit::AuditEvent;
use crate::config::{OidcProvider, Provider, Tenant};
use crate::coord::{self};
use crate::crypto::{self, b64url};
use crate::error::{PreLoginError, Refusal};
use crate::http::{Outbound, Response};
use crate::oidc::{self, OidcError, PreLogin};
use crate::pages::{self, Brand, ButtonView};
use crate::policy;
use crate::ports::Ports;
use crate::redirect::safe_return_path;
use crate::session::{self, MfaState, SessionId, SessionRecord, StoredTokens, PENDING_COOKIE, SESSION_COOKIE};

/// A successful sign-in at an IdP, before the session exists.
pub(super) struct SignedIn<'a> {
    pub(super) provider: &'a str,
    pub(super) user_id: String,
    pub(super) identity: oidc::Identity,
    pub(super) tokens: Option<String>,
    pub(super) access_expires: Option<u64>,
    /// The IdP's own session limit (SAML `SessionNotOnOrAfter`).
    pub(super) expires_cap: Option<u64>,
    /// Whether the IdP's own second factor counts (per the provider's settings).
    pub(super) idp_mfa: bool,
    pub(super) return_to: &'a str,
    /// Extra fields for the audit line.
    pub(super) detail: Value,
    /// The sign-in was asked to be fresh (`reauth=1`) and the IdP confirmed it.
    pub(super) fresh: bool,
    /// The fresh sign-in was asked for to add a passkey (`reauth=passkey`).
    pub(super) add_passkey: bool,
    pub(super) pending_cookie: &'static str,
}

impl Gateway {
    pub(super) fn oidc_provider<'t>(&self, tenant: &'t Tenant, name: &str) -> Result<&'t OidcProvider, Refusal> {
        tenant
            .providers
            .iter()
            .find(|p| p.name() == name)
            .and_then(Provider::as_oidc)
            .ok_or_else(|| Refusal::UnknownProvider(name.to_owned()))
    }

    pub(super) async fn login_start(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        // A site of a sign-in host: people sign in there.
        if let Some(central) = cx.tenant.sign_in_via.as_deref().and_then(|id| self.tenant_by_id(id)) {
            return self.handoff_start(cx, central).await;
        }
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
        // `reauth=1`: the IdP must authenticate the person afresh (adding a second factor);
        // `reauth=passkey`: the same, and the gateway goes on with adding a passkey after it.
        let asked = cx.req.query("reauth");
        let add_passkey = asked.as_deref() == Some("passkey");
        let reauth = add_passkey || asked.as_deref() == Some("1");
        if let Some(c) = cx.tenant.providers.iter().find(|p| p.name() == provider).and_then(|p| p.as_saml()) {
            return self.saml_login_start(cx, c, rd, reauth, add_passkey).await;
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
            add_passkey,
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
    pub(super) fn login_allowed(&self, cx: &Cx<'_>) -> Result<(), Refusal> {
        let limit = self.config().map(|l| l.config.gateway.login_rate_limit).unwrap_or_default();
        let client = cx.req.client_ip.as_deref().unwrap_or("unknown");
        self.login_limiter
            .borrow_mut()
            .take(client, cx.ports.rt.now_ms(), limit.burst, limit.per_minute)
            .map_err(|retry_after| Refusal::RateLimited { retry_after })
    }

    pub(super) async fn oidc_callback(&self, cx: &Cx<'_>, path_provider: Option<&str>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let provider_hint = path_provider.unwrap_or("unknown").to_owned();
        let fail = |error: OidcError, provider: &str| Refusal::Oidc { provider: provider.to_owned(), error };
        let pre_login =
            |error: PreLoginError, provider: &str| Refusal::PreLogin { provider: provider.to_owned(), error };
        if let Some(name) = path_provider {
            self.oidc_provider(cx.tenant, name)?;
        }
        // The state parameter must be present and match this browser's pending cookie.
        let state = cx
            .req
            .query("state")
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| pre_login(PreLoginError::StateMissing, &provider_hint))?;
        let key = oidc::state_key(&cx.tenant.id, &state);
        let raw = self.take_pre_login(cx, &state, &key, &provider_hint).await?;
        let state_ttl = loaded.config.gateway.login_state_ttl;
        let pre: PreLogin =
            serde_json::from_str(&raw).map_err(|_| pre_login(PreLoginError::StateUnknown, &provider_hint))?;
        let name = pre.provider.clone();
        if pre.tenant != cx.tenant.id || path_provider.is_some_and(|p| p != name) {
            return Err(pre_login(PreLoginError::ProviderMismatch, &name));
        }
        // KV's TTL is the upper bound; the record's own time is checked too.
        if cx.ports.now() > pre.created + state_ttl {
            return Err(pre_login(PreLoginError::StateUnknown, &name));
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
            add_passkey: pre.reauth && pre.add_passkey,
            pending_cookie: PENDING_COOKIE,
        };
        self.finish_login(cx, id, login).await
    }

    /// Takes the pre-login state `state` (stored at `key`) for this browser: the pending
    /// cookie must match it, and it is claimed once. With a coordinator the first claim wins
    /// atomically, everywhere; without one, read-then-delete in KV (a replay within KV's
    /// propagation delay, or a race in one location, is then decided by the single-use
    /// value the response carries: the IdP's code, the hand-off code). A marker remembers
    /// the use so a replay is named. The claim comes after the read, so a failed read
    /// leaves the state usable. Returns the stored record.
    pub(super) async fn take_pre_login(
        &self,
        cx: &Cx<'_>,
        state: &str,
        key: &str,
        provider_hint: &str,
    ) -> Result<String, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let pre_login = |error: PreLoginError| Refusal::PreLogin { provider: provider_hint.to_owned(), error };
        let used_key = crate::keys::used(key);
        let unknown_state =
            |replay: bool| pre_login(if replay { PreLoginError::StateReplayed } else { PreLoginError::StateUnknown });
        let Some(cookie) = cx.req.headers.cookie(PENDING_COOKIE) else {
            // Without the cookie, an expired or used state explains more than "not started
            // here"; a live state is left untouched for the browser it belongs to.
            if cx.ports.kv.get(key).await?.is_none() {
                return Err(unknown_state(cx.ports.kv.get(&used_key).await?.is_some()));
            }
            return Err(pre_login(PreLoginError::PendingCookieMissing));
        };
        if !session::pending_cookie_matches(&loaded.cookie_keys, &cx.tenant.id, cookie, state) {
            return Err(pre_login(PreLoginError::PendingCookieMismatch));
        }
        let state_ttl = loaded.config.gateway.login_state_ttl;
        let Some(raw) = cx.ports.kv.get(key).await? else {
            return Err(unknown_state(cx.ports.kv.get(&used_key).await?.is_some()));
        };
        if !self.claim_state(cx, state, key).await? {
            return Err(unknown_state(true));
        }
        cx.ports.kv.delete(key).await?;
        cx.ports.kv.put(&used_key, "1", Some(state_ttl)).await?;
        Ok(raw)
    }

    /// Common end of every sign-in (OIDC or SAML): group mapping and the "no roles" check,
    /// the session record, the second-factor decision, the cookie and the audit line.
    pub(super) async fn finish_login(
        &self,
        cx: &Cx<'_>,
        id: SessionId,
        login: SignedIn<'_>,
    ) -> Result<Response, Refusal> {
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
            passkey_at: None,
            central: None,
        };
        let mut next = self.decide_mfa(cx, login.idp_mfa, &mut record, login.return_to).await?;
        let rd = crate::http::query_encode(&[("rd", login.return_to)]);
        if login.add_passkey && next.starts_with(&format!("{}/mfa?", self.prefix())) {
            // The fresh sign-in was asked for to add a passkey beside the user's factors: the
            // prompt first, then the passkey.
            let q = [("rd", login.return_to), ("then", crate::gateway::mfa::THEN_ADD_PASSKEY)];
            next = format!("{}/mfa?{}", self.prefix(), crate::http::query_encode(&q));
        } else if login.add_passkey {
            next = format!("{}/mfa/passkeys/register?{rd}", self.prefix());
        } else if login.fresh && record.mfa != MfaState::Pending {
            // The fresh sign-in was asked for to add a second factor: go on with that.
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
    pub(super) fn seal_tokens(&self, ports: Ports<'_>, id: &SessionId, tokens: &StoredTokens) -> Option<String> {
        if tokens.refresh_token.is_none() && tokens.id_token.is_none() {
            return None;
        }
        let loaded = self.config()?;
        let plain = serde_json::to_vec(tokens).ok()?;
        crypto::seal(&loaded.encryption_keys, "tokens", id.hash().as_bytes(), ports.random::<12>(), &plain)
    }

    /// The tokens sealed in a session record, if they open.
    pub(super) fn open_tokens(&self, id: &SessionId, record: &SessionRecord) -> Option<StoredTokens> {
        self.open_tokens_for(&id.hash(), record)
    }

    /// [`Gateway::open_tokens`] by the session's hash (what they are sealed to).
    pub(super) fn open_tokens_for(&self, session_hash: &str, record: &SessionRecord) -> Option<StoredTokens> {
        let loaded = self.config()?;
        let plain =
            crypto::open(&loaded.encryption_keys, "tokens", session_hash.as_bytes(), record.tokens.as_deref()?).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Ends a session the IdP no longer backs (refresh refused): record and cache gone.
    /// Records the first use of a one-time value of `kind` (`saml` assertion ids, logout
    /// `jti`s); `false` when it was used before. With the coordination object the claim is
    /// atomic everywhere; with KV alone a marker is read, then written, so a use in another
    /// location within KV's propagation delay is not seen.
    pub(super) async fn first_use(
        &self,
        cx: &Cx<'_>,
        kind: &str,
        key: &str,
        ttl: u64,
    ) -> Result<bool, crate::ports::KvError> {
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
    pub(super) async fn claim_state(&self, cx: &Cx<'_>, state: &str, key: &str) -> Result<bool, Refusal> {
        let Some(c) = cx.ports.coord() else {
            return Ok(true);
        };
        let ttl_ms = self.config().map_or(600, |l| l.config.gateway.login_state_ttl) * 1000;
        Ok(c.claim(&coord::bucket_shard(&cx.tenant.id, "state", state), key, ttl_ms).await?)
    }
}
