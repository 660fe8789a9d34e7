//! OIDC provider documents and keys: discovery and JWKS, cached in the isolate and in KV,
//! fetched with one retry; ID-token verification through the runtime's crypto when offered.

use super::caches::ProviderCache;
use super::{Gateway, JWKS_REFETCH_INTERVAL, MAX_IDP_BODY};
use std::rc::Rc;

use serde_json::{json, Value};

use super::context::{log_line, Cx};
use crate::config::{OidcProvider, Tenant};
use crate::http::{Inbound, Outbound};
use crate::oidc::{self, jwks::Jwk, OidcError, ProviderMetadata, UntrustedIdToken};
use crate::ports::{FetchError, Ports};

/// Verifies a signed token (ID token or access token, by the profile): the signature with the runtime's own crypto when the shell offers
/// it (WebCrypto), else with the pure-Rust verifier; the claim checks are the same either way.
pub(super) async fn check_token<P: oidc::id_token::TokenProfile>(
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

pub(super) fn cached_doc(raw: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(raw).ok()?;
    Some((v.get("body")?.as_str()?.to_owned(), v.get("at")?.as_u64()?))
}

impl Gateway {
    pub(super) fn provider_key(tenant: &Tenant, p: &OidcProvider) -> String {
        ProviderCache::key(&tenant.id, &p.name)
    }

    pub(super) async fn fetch_json(&self, ports: Ports<'_>, url: &str) -> Result<Inbound, FetchError> {
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

    pub(super) async fn metadata(&self, cx: &Cx<'_>, p: &OidcProvider) -> Result<ProviderMetadata, OidcError> {
        let key = Self::provider_key(cx.tenant, p);
        let now = cx.ports.now();
        if let Some((m, at)) = self.providers.discovery(&key) {
            if now < at.saturating_add(p.discovery_ttl) {
                return Ok(m);
            }
        }
        let kv_key = crate::keys::discovery(&key);
        if let Ok(Some(raw)) = cx.ports.kv.get(&kv_key).await {
            if let Some((body, at)) = cached_doc(&raw) {
                if now < at.saturating_add(p.discovery_ttl) {
                    if let Ok(m) = oidc::parse_discovery(body.as_bytes(), p.issuer_id()) {
                        self.providers.set_discovery(&key, m.clone(), at);
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
        self.providers.set_discovery(&key, m.clone(), now);
        Ok(m)
    }

    pub(super) async fn store_doc(&self, ports: Ports<'_>, kv_key: &str, body: &[u8], now: u64, ttl: u64) {
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
    pub(super) async fn jwks(
        &self,
        cx: &Cx<'_>,
        p: &OidcProvider,
        m: &ProviderMetadata,
        force: bool,
    ) -> Result<Rc<Vec<Jwk>>, OidcError> {
        let key = Self::provider_key(cx.tenant, p);
        let now = cx.ports.now();
        let kv_key = crate::keys::jwks(&key);
        let cached = self.providers.jwks(&key);
        if force {
            let last = self.providers.last_forced_jwks(&key);
            if now < last + JWKS_REFETCH_INTERVAL {
                if let Some((k, _)) = cached {
                    return Ok(k);
                }
            }
            self.providers.set_last_forced_jwks(&key, now);
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
                            self.providers.set_jwks(&key, keys.clone(), at);
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
        self.providers.set_jwks(&key, keys.clone(), now);
        Ok(keys)
    }

    /// Verifies an ID token, refetching the JWKS once when the key is unknown or the
    /// signature fails (the provider may have rotated its keys).
    pub(super) async fn verify_id_token(
        &self,
        cx: &Cx<'_>,
        (p, m): (&OidcProvider, &ProviderMetadata),
        raw: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<oidc::VerifiedIdToken, OidcError> {
        let loaded = self.config().ok_or_else(|| OidcError::Discovery("no configuration".into()))?;
        let secret = p.client_secret.as_deref().and_then(|n| loaded.secrets.get(n));
        let hmac_secret = if p.allow_hmac_id_tokens { secret.map(|s| s.expose()) } else { None };
        let token = UntrustedIdToken::new(raw);
        let expectations = oidc::id_token::Expectations {
            issuer: &m.issuer,
            client_id: &p.client_id,
            trusted_audiences: &p.audiences,
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
    pub(super) fn provider_status(&self, cx: &Cx<'_>) -> Vec<Value> {
        let now = cx.ports.now();
        cx.tenant
            .providers
            .iter()
            .map(|p| {
                let (discovery_age, jwks_age, kids) =
                    self.providers.status(&ProviderCache::key(&cx.tenant.id, p.name()), now);
                json!({
                    "name": p.name(),
                    "type": if p.as_oidc().is_some() { "oidc" } else { "saml" },
                    "discovery_age": discovery_age,
                    "jwks_age": jwks_age,
                    "kids": kids,
                })
            })
            .collect()
    }
}
