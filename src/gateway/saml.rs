//! SAML 2.0 Web SSO at the edge: the AuthnRequest (HTTP-Redirect), the ACS (HTTP-POST)
//! with the replay cache, and the SP metadata. Verification itself is in [`crate::saml`].

use super::context::Cx;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{base_url, Gateway, SignedIn};
use crate::config::{SamlConnection, Tenant};
use crate::crypto::{self, b64url};
use crate::error::{PreLoginError, Refusal};
use crate::http::{Request, Response};
use crate::oidc::Identity;
use crate::redirect::safe_return_path;
use crate::saml::authn_request::{self, AuthnRequestParams};
use crate::saml::response::{Expectations, SamlResponse};
use crate::saml::xml::XmlLimits;
use crate::session::{self, SessionId};

/// The pending-login cookie for SAML: the ACS is a cross-site POST from the IdP, which
/// `SameSite=Lax` cookies do not accompany, so this one is `SameSite=None` (still
/// `__Host-`, `Secure`, `HttpOnly`, and only a keyed hash of the RelayState).
pub const SAML_PENDING_COOKIE: &str = "__Host-portcullis_saml_pending";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SamlPreLogin {
    tenant: String,
    connection: String,
    request_id: String,
    return_to: String,
    created: u64,
    /// Sent with `ForceAuthn`: the IdP was asked to authenticate the person afresh.
    #[serde(default)]
    reauth: bool,
    /// The fresh sign-in is for adding a passkey.
    #[serde(default)]
    add_passkey: bool,
}

fn state_key(tenant: &str, relay_state: &str) -> String {
    crate::keys::saml_state(tenant, relay_state)
}

/// The IdP side of a connection after metadata: configured values win, the rest comes
/// from the fetched metadata.
struct SamlIdp {
    entity_id: String,
    sso_url: String,
    certs: Vec<crate::saml::dsig::IdpCertificate>,
}

fn first<'a>(attrs: &'a std::collections::BTreeMap<String, Vec<String>>, name: &str) -> Option<&'a String> {
    if name.is_empty() {
        return None;
    }
    attrs.get(name).and_then(|v| v.first())
}

impl Gateway {
    fn saml_connection<'t>(&self, tenant: &'t Tenant, name: &str) -> Result<&'t SamlConnection, Refusal> {
        tenant
            .providers
            .iter()
            .find(|p| p.name() == name)
            .and_then(|p| p.as_saml())
            .ok_or_else(|| Refusal::UnknownProvider(name.to_owned()))
    }

    /// Resolves the IdP's entity id, SSO URL and certificates, fetching `idp_metadata_url`
    /// when configured (cached in the isolate and in KV for `metadata_ttl`).
    async fn saml_idp(&self, cx: &Cx<'_>, c: &SamlConnection) -> Result<SamlIdp, Refusal> {
        let configured = SamlIdp {
            entity_id: c.idp_entity_id.clone(),
            sso_url: c.idp_sso_url.clone(),
            certs: c.ready.idp_certificates.clone(),
        };
        let Some(url) = &c.idp_metadata_url else {
            return Ok(configured);
        };
        let unavailable = |e: String| Refusal::ProviderUnavailable {
            provider: c.name.clone(),
            cause: format!("SAML metadata {url}: {e}"),
        };
        let key = super::caches::ProviderCache::key(&cx.tenant.id, &c.name);
        let now = cx.ports.now();
        let cached = self.providers.saml_metadata(&key).filter(|(_, at)| now < at.saturating_add(c.metadata_ttl));
        let meta = match cached {
            Some((m, _)) => m,
            None => {
                let kv_key = crate::keys::saml_metadata(&key);
                let from_kv = match cx.ports.kv.get(&kv_key).await {
                    Ok(Some(raw)) => super::cached_doc(&raw)
                        .filter(|(_, at)| now < at.saturating_add(c.metadata_ttl))
                        .and_then(|(body, at)| {
                            crate::saml::metadata::parse_idp_metadata(body.as_bytes()).ok().map(|m| (m, at))
                        }),
                    _ => None,
                };
                let (m, at) = match from_kv {
                    Some(hit) => hit,
                    None => {
                        let resp = self.idp_get(cx.ports, url).await.map_err(|e| unavailable(e.to_string()))?;
                        if resp.status != 200 {
                            return Err(unavailable(format!("answered {}", resp.status)));
                        }
                        let m = crate::saml::metadata::parse_idp_metadata(&resp.body).map_err(unavailable)?;
                        self.store_doc(cx.ports, &kv_key, &resp.body, now, c.metadata_ttl).await;
                        (m, now)
                    }
                };
                self.providers.set_saml_metadata(&key, m.clone(), at);
                m
            }
        };
        let idp = SamlIdp {
            entity_id: if configured.entity_id.is_empty() { meta.entity_id.clone() } else { configured.entity_id },
            sso_url: if configured.sso_url.is_empty() {
                meta.sso_redirect_url.clone().unwrap_or_default()
            } else {
                configured.sso_url
            },
            certs: if configured.certs.is_empty() {
                meta.signing_certificates
                    .iter()
                    .filter_map(|c| crate::saml::dsig::IdpCertificate::from_pem_or_base64(c).ok())
                    .collect()
            } else {
                configured.certs
            },
        };
        // What the metadata filled in gets the checks the configuration gets at load.
        if !crate::config::is_idp_url(&idp.sso_url) {
            return Err(unavailable(format!("SSO URL {:?} is not an https URL", idp.sso_url)));
        }
        if idp.certs.is_empty() {
            return Err(unavailable("no usable signing certificate".into()));
        }
        Ok(idp)
    }

    /// The SP's RSA key, when the connection names one (parsed at load).
    fn sp_key<'c>(&self, c: &'c SamlConnection) -> Result<Option<&'c rsa::RsaPrivateKey>, Refusal> {
        Ok(c.ready.sp_key.as_deref())
    }

    fn sp_entity_id(&self, req: &Request, c: &SamlConnection) -> String {
        c.sp_entity_id
            .clone()
            .unwrap_or_else(|| format!("{}{}/saml/metadata?ws={}", base_url(req), self.prefix(), c.name))
    }

    fn slo_url(&self, req: &Request, c: &SamlConnection) -> String {
        format!("{}{}/saml/slo?ws={}", base_url(req), self.prefix(), c.name)
    }

    fn acs_url(&self, req: &Request, c: &SamlConnection) -> String {
        format!("{}{}/saml/acs?ws={}", base_url(req), self.prefix(), c.name)
    }

    /// `GET {prefix}/login?provider=NAME` for a SAML connection: AuthnRequest out.
    pub(super) async fn saml_login_start(
        &self,
        cx: &Cx<'_>,
        c: &SamlConnection,
        rd: String,
        reauth: bool,
        add_passkey: bool,
    ) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let idp = self.saml_idp(cx, c).await?;
        let sp_entity_id = self.sp_entity_id(cx.req, c);
        let acs_url = self.acs_url(cx.req, c);
        let params = AuthnRequestParams {
            sp_entity_id: &sp_entity_id,
            acs_url: &acs_url,
            idp_sso_url: &idp.sso_url,
            name_id_format: Some(&c.name_id_format),
            force_authn: reauth,
        };
        let authn = authn_request::build(&params, cx.ports.now(), &cx.ports.random::<20>())
            .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let relay_state = b64url(&cx.ports.random::<32>());
        let pre = SamlPreLogin {
            tenant: cx.tenant.id.clone(),
            connection: c.name.clone(),
            request_id: authn.id.clone(),
            return_to: rd,
            created: cx.ports.now(),
            reauth,
            add_passkey,
        };
        let ttl = loaded.config.gateway.login_state_ttl;
        let value = serde_json::to_string(&pre).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&state_key(&cx.tenant.id, &relay_state), &value, Some(ttl)).await?;
        let key = self.sp_key(c)?;
        let location = authn_request::redirect_url_signed(
            &idp.sso_url,
            &authn,
            Some(&relay_state),
            key.filter(|_| c.sign_requests),
        )
        .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let pending =
            session::pending_cookie(&loaded.cookie_keys, &cx.tenant.id, &relay_state).ok_or(Refusal::ConfigInvalid)?;
        cx.log(json!({"event": "login_start", "tenant": cx.tenant.id, "provider": c.name, "protocol": "saml", "ip": cx.req.client_ip}));
        let mut r = Response::redirect(&location);
        r.headers.set("cache-control", "no-store");
        r.headers.append("set-cookie", session::set_cookie(SAML_PENDING_COOKIE, &pending, Some(ttl + 300), "None"));
        Ok(r)
    }

    /// `POST {prefix}/saml/acs[?ws=NAME]`: the Response, verified after SAML profiles
    /// 4.1.4.3 (see `crate::saml::response`), then the replay cache and the session.
    pub(super) async fn saml_acs(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let form = cx.req.form();
        let value = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let ws = cx.req.query("ws");
        let hint = ws.clone().unwrap_or_else(|| "saml".into());
        let saml_response = value("SAMLResponse")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Refusal::BadInput("SAMLResponse is missing".into()))?;
        let relay_state = value("RelayState").filter(|r| !r.is_empty());
        let limits = XmlLimits::default();
        let parsed = SamlResponse::from_post_binding(&saml_response, &limits)
            .map_err(|error| Refusal::Saml { connection: hint.clone(), error: Box::new(error) })?;
        let state_error = |error: PreLoginError, who: &str| Refusal::PreLogin { provider: who.to_owned(), error };

        // The pending login this answers, if any (single use, bound to this browser).
        let ttl = loaded.config.gateway.login_state_ttl;
        let mut pre: Option<SamlPreLogin> = None;
        if let Some(relay) = relay_state.as_deref().filter(|r| r.len() <= 128) {
            let key = state_key(&cx.tenant.id, relay);
            let used_key = crate::keys::used(&key);
            match cx.ports.kv.get(&key).await? {
                Some(raw) => {
                    let cookie = cx
                        .req
                        .headers
                        .cookie(SAML_PENDING_COOKIE)
                        .ok_or_else(|| state_error(PreLoginError::PendingCookieMissing, &hint))?;
                    if !session::pending_cookie_matches(&loaded.cookie_keys, &cx.tenant.id, cookie, relay) {
                        return Err(state_error(PreLoginError::PendingCookieMismatch, &hint));
                    }
                    if !self.claim_state(cx, relay, &key).await? {
                        return Err(state_error(PreLoginError::StateReplayed, &hint));
                    }
                    cx.ports.kv.delete(&key).await?;
                    cx.ports.kv.put(&used_key, "1", Some(ttl)).await?;
                    let p: SamlPreLogin =
                        serde_json::from_str(&raw).map_err(|_| state_error(PreLoginError::StateUnknown, &hint))?;
                    if cx.ports.now() > p.created + ttl {
                        return Err(state_error(PreLoginError::StateUnknown, &p.connection));
                    }
                    pre = Some(p);
                }
                None if cx.ports.kv.get(&used_key).await?.is_some() => {
                    return Err(state_error(PreLoginError::StateReplayed, &hint))
                }
                // A RelayState we never issued: an expired login, or an IdP-initiated
                // login's own RelayState (checked below).
                None if parsed.unverified_in_response_to().is_some() => {
                    return Err(state_error(PreLoginError::StateUnknown, &hint))
                }
                None => {}
            }
        }
        let name = match (&pre, &ws) {
            (Some(p), Some(w)) if &p.connection != w => return Err(state_error(PreLoginError::ProviderMismatch, w)),
            (Some(p), _) => p.connection.clone(),
            (None, Some(w)) => w.clone(),
            (None, None) => {
                let mut saml = cx.tenant.providers.iter().filter_map(|p| p.as_saml());
                match (saml.next(), saml.next()) {
                    (Some(only), None) => only.name.clone(),
                    _ => return Err(Refusal::BadInput("several SAML connections: the ACS URL needs ?ws=NAME".into())),
                }
            }
        };
        let c = self.saml_connection(cx.tenant, &name)?;
        let idp = self.saml_idp(cx, c).await?;
        let decryption_key = self.sp_key(c)?;
        // The ACS URL is the address this response was posted to.
        let acs_url = match &ws {
            Some(w) => format!("{}{}/saml/acs?ws={}", base_url(cx.req), self.prefix(), w),
            None => format!("{}{}/saml/acs", base_url(cx.req), self.prefix()),
        };
        let sp_entity_id = self.sp_entity_id(cx.req, c);
        let expectations = Expectations {
            idp_entity_id: &idp.entity_id,
            idp_certs: &idp.certs,
            sp_entity_id: &sp_entity_id,
            acs_url: &acs_url,
            expected_in_response_to: pre.as_ref().map(|p| p.request_id.as_str()),
            allow_unsolicited: c.allow_idp_initiated,
            now: cx.ports.now(),
            skew: c.clock_skew,
            legacy_sha1: c.legacy_sha1,
            decryption_key,
        };
        if let Some(verifier) = cx.ports.verifier {
            crate::saml::dsig::check_with_port(verifier, parsed.port_checks(&idp.certs)).await;
        }
        let assertion = parsed
            .verify(&expectations)
            .map_err(|error| Refusal::Saml { connection: name.clone(), error: Box::new(error) })?;

        // Replay: each assertion is accepted once, remembered until it expires.
        let now = cx.ports.now();
        let replay_key = crate::keys::saml_assertion(&cx.tenant.id, &assertion.issuer, &assertion.assertion_id);
        let keep = (assertion.not_on_or_after.max(0) as u64).saturating_sub(now) + c.clock_skew;
        if !self.first_use(cx, "saml", &replay_key, keep.max(60)).await? {
            return Err(Refusal::SamlReplay { connection: name });
        }

        let a = &assertion.attributes;
        let map = &c.attributes;
        let email = first(a, &map.email)
            .cloned()
            .or_else(|| assertion.name_id.contains('@').then(|| assertion.name_id.clone()));
        let idp_mfa = assertion.authn_context_class_ref.as_ref().is_some_and(|r| c.mfa_authn_contexts.contains(r));
        let identity = Identity {
            user: assertion.name_id.clone(),
            email_verified: email.is_some(),
            email,
            name: first(a, &map.display_name).cloned(),
            given_name: first(a, &map.first_name).cloned(),
            family_name: first(a, &map.last_name).cloned(),
            preferred_username: first(a, &map.username).cloned(),
            groups: a.get(&map.groups).cloned().unwrap_or_default(),
            amr: if idp_mfa { vec!["mfa".to_owned()] } else { Vec::new() },
            sid: assertion.session_index.clone(),
            extra: map.extra.iter().filter_map(|(name, attr)| a.get(attr).map(|v| (name.clone(), v.clone()))).collect(),
        };
        let return_to = match &pre {
            Some(p) => p.return_to.clone(),
            None => safe_return_path(relay_state.as_deref().unwrap_or("/"), self.prefix()),
        };
        // Asked with ForceAuthn (the Response answers that AuthnRequest): the IdP must also
        // say it authenticated the person after the sign-in started (`AuthnInstant`), as an
        // OIDC IdP must with `auth_time`.
        let fresh = pre.as_ref().is_some_and(|p| p.reauth);
        if let Some(p) = pre.as_ref().filter(|p| p.reauth) {
            let started = p.created.saturating_sub(c.clock_skew);
            if assertion.authn_instant.is_none_or(|t| t < 0 || (t as u64) < started) {
                return Err(Refusal::FreshSignInNotConfirmed { provider: name.clone() });
            }
        }
        let login = SignedIn {
            provider: &name,
            user_id: format!("{}/{}", assertion.issuer, assertion.name_id),
            identity,
            tokens: None,
            access_expires: None,
            expires_cap: assertion.session_not_on_or_after.map(|t| t.max(0) as u64),
            idp_mfa,
            return_to: &return_to,
            detail: json!({"protocol": "saml", "solicited": pre.is_some(), "authn_context": assertion.authn_context_class_ref}),
            fresh,
            add_passkey: fresh && pre.as_ref().is_some_and(|p| p.add_passkey),
            pending_cookie: SAML_PENDING_COOKIE,
        };
        let id = SessionId::from_random(cx.ports.random::<32>());
        self.finish_login(cx, id, login).await
    }

    /// `GET {prefix}/saml/slo?ws=NAME`: Single Logout over HTTP-Redirect. A signed
    /// LogoutRequest from the IdP revokes the user's sessions of that connection (matching
    /// SessionIndex when given) and is answered with a LogoutResponse; a LogoutResponse
    /// (the answer to our own request) ends on the signed-out page.
    pub(super) async fn saml_slo(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let name = cx
            .req
            .query("ws")
            .ok_or_else(|| Refusal::BadInput("query parameter ws (the connection name) is required".into()))?;
        let c = self.saml_connection(cx.tenant, &name)?;
        let idp = self.saml_idp(cx, c).await?;
        let query = cx.req.url.query().unwrap_or_default();
        let bad = |e: String| Refusal::BadInput(format!("SAML logout: {e}"));
        let slo_url = self.slo_url(cx.req, c);
        // Bindings 3.4.5.2: a signed message (every one here) names its recipient.
        let addressed = |d: Option<&str>| match d {
            Some(d) if d == slo_url => Ok(()),
            Some(_) => Err(bad("Destination is not this SLO endpoint".into())),
            None => Err(bad("a signed message must have a Destination".into())),
        };
        if cx.req.query("SAMLResponse").is_some() {
            let xml = crate::saml::logout::verify_redirect(query, "SAMLResponse", &idp.certs).map_err(bad)?;
            let lr = crate::saml::logout::parse_logout_response(&xml).map_err(bad)?;
            if lr.issuer != idp.entity_id {
                return Err(bad(format!("LogoutResponse Issuer {:?} is not the IdP", lr.issuer)));
            }
            addressed(lr.destination.as_deref())?;
            crate::saml::logout::check_fresh(lr.issue_instant, cx.ports.now(), c.clock_skew).map_err(bad)?;
            let keys = self.config().map(|l| l.cookie_keys.clone()).unwrap_or_default();
            let ours = lr
                .in_response_to
                .as_deref()
                .is_some_and(|id| crate::saml::logout::is_request_id(&keys, &cx.tenant.id, &c.name, id));
            if !ours {
                return Err(bad("LogoutResponse does not answer a LogoutRequest of this gateway".into()));
            }
            if lr.status.first().map(String::as_str) != Some(crate::saml::logout::STATUS_SUCCESS) {
                cx.log(json!({"level": "warn", "event": "saml_logout_response", "tenant": cx.tenant.id, "provider": c.name, "status": lr.status}));
                return Err(bad(format!("the IdP could not end its session (status {:?})", lr.status)));
            }
            cx.log(json!({"event": "saml_logout_response", "tenant": cx.tenant.id, "provider": c.name}));
            let mut r = Response::redirect(&format!("{}/logged-out", self.prefix()));
            r.headers.set("cache-control", "no-store");
            return Ok(r);
        }
        let xml = crate::saml::logout::verify_redirect(query, "SAMLRequest", &idp.certs).map_err(bad)?;
        let lr = crate::saml::logout::parse_logout_request(&xml).map_err(bad)?;
        if lr.issuer != idp.entity_id {
            return Err(bad(format!("Issuer {:?} is not the IdP", lr.issuer)));
        }
        addressed(lr.destination.as_deref())?;
        let now = cx.ports.now();
        crate::saml::logout::check_fresh(lr.issue_instant, now, c.clock_skew).map_err(bad)?;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let skew_i = i64::try_from(c.clock_skew).unwrap_or(i64::MAX);
        if lr.not_on_or_after.is_some_and(|t| now_i >= t.saturating_add(skew_i)) {
            return Err(bad("LogoutRequest expired".into()));
        }
        // Each LogoutRequest is acted on once: its ID is remembered while it could be fresh.
        let replay_key = crate::keys::saml_logout_request(&cx.tenant.id, &c.name, &lr.issuer, &lr.id);
        let keep = crate::saml::logout::MESSAGE_LIFETIME.saturating_add(c.clock_skew.saturating_mul(2)).max(60);
        if !self.first_use(cx, "slo", &replay_key, keep).await? {
            return Err(bad(format!("LogoutRequest {:?} was already used", lr.id)));
        }
        let user_id = format!("{}/{}", lr.issuer, lr.name_id);
        let mut n = 0;
        for (hash, record) in
            self.indexed_sessions(cx, &super::sessions::user_index_key(&cx.tenant.id, &user_id)).await?
        {
            let index_matches = lr.session_indexes.is_empty()
                || record.idp_sid.as_ref().is_some_and(|s| lr.session_indexes.contains(s));
            if record.provider == c.name && index_matches {
                n += u32::from(self.revoke_session(cx, &hash, &format!("idp:{}", c.name), "SAML single logout").await?);
            }
        }
        cx.log(
            json!({"event": "saml_logout", "tenant": cx.tenant.id, "provider": c.name, "user": user_id, "revoked": n}),
        );
        let Some(slo) = c.idp_slo_url.as_deref() else {
            let mut r = Response::new(200);
            r.headers.set("cache-control", "no-store");
            return Ok(r);
        };
        let id = format!("_{}", crypto::hex(&cx.ports.random::<16>()));
        let response =
            crate::saml::logout::logout_response_xml(&id, &lr.id, &self.sp_entity_id(cx.req, c), slo, cx.ports.now());
        let key = self.sp_key(c)?;
        let relay = cx.req.query("RelayState");
        let location = authn_request::redirect_binding_url(
            slo,
            "SAMLResponse",
            &response,
            relay.as_deref(),
            key.filter(|_| c.sign_requests),
        )
        .map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let mut r = Response::redirect(&location);
        r.headers.set("cache-control", "no-store");
        Ok(r)
    }

    /// Where to send the browser after a local sign-out of a SAML session: the IdP's SLO
    /// endpoint with our LogoutRequest, when the connection has one.
    pub(super) fn saml_logout_url(&self, cx: &Cx<'_>, record: &crate::session::SessionRecord) -> Option<String> {
        let c = self.saml_connection(cx.tenant, &record.provider).ok()?;
        let slo = c.idp_slo_url.as_deref()?;
        let keys = &self.config()?.cookie_keys;
        let id = crate::saml::logout::request_id(keys, &cx.tenant.id, &c.name, cx.ports.random::<16>())?;
        let xml = crate::saml::logout::logout_request_xml(
            &id,
            &self.sp_entity_id(cx.req, c),
            slo,
            &record.user,
            &c.name_id_format,
            record.idp_sid.as_deref(),
            cx.ports.now(),
        );
        let key = self.sp_key(c).ok()?;
        authn_request::redirect_binding_url(slo, "SAMLRequest", &xml, None, key.filter(|_| c.sign_requests)).ok()
    }

    /// `GET {prefix}/saml/metadata?ws=NAME`: the SP metadata for one connection.
    pub(super) fn saml_metadata(&self, req: &Request, tenant: &Tenant) -> Result<Response, Refusal> {
        let name = req
            .query("ws")
            .ok_or_else(|| Refusal::BadInput("query parameter ws (the connection name) is required".into()))?;
        let c = self.saml_connection(tenant, &name)?;
        let cert = c.ready.sp_certificate.clone();
        let xml = crate::saml::metadata::sp_metadata(
            &self.sp_entity_id(req, c),
            &self.acs_url(req, c),
            &self.slo_url(req, c),
            &c.name_id_format,
            cert.as_deref(),
            c.sign_requests,
        );
        let mut r = Response::new(200);
        r.headers.set("content-type", "application/samlmetadata+xml; charset=utf-8");
        r.headers.set("cache-control", "public, max-age=300");
        r.body = xml.into_bytes();
        Ok(r)
    }
}
