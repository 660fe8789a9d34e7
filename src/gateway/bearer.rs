//! Machine clients: JWT access tokens presented as `Authorization: Bearer` (RFC 6750),
//! from the issuers a tenant lists in `bearer`. A token is verified with the issuer's
//! discovery document and JWKS from the same caches as sign-in, by the verifier ID tokens
//! use ([`check_token`] with an access-token profile), then the principal goes through the
//! same policy as a person and is forwarded with identity headers and a signed assertion.
//! A bearer principal never gets a session: nothing is written to KV, no cookie is set.

use super::context::Cx;
use serde_json::json;

use super::{check_token, Action, Gateway};
use crate::assertion::AssertionClaims;
use crate::config::{PrincipalKind, Tenant};
use crate::crypto;
use crate::error::{BearerError, Refusal};
use crate::http::{Request, Response};
use crate::oidc::access_token::{AccessTokenClaims, AccessTokenExpectations};
use crate::oidc::{self, IdTokenError, UntrustedIdToken};
use crate::path::Decided;
use crate::policy;
use crate::proxy::{self, ClientInfo, IdentityHeaders};

/// A machine credential a request carries.
pub(super) enum Credential<'r> {
    Bearer(&'r str),
    Service((&'r str, &'r str)),
}

/// The token of an `Authorization: Bearer` header (RFC 6750 2.1; the scheme in any case).
pub(super) fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers.get("authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// `WWW-Authenticate` for a refused bearer token (RFC 6750 3).
pub(super) fn challenge(tenant: &str, error: &BearerError) -> String {
    let quote = |s: &str| s.replace(['"', '\\'], "");
    let mut c = format!(r#"Bearer realm="{}""#, quote(tenant));
    if let Some(code) = error.rfc6750_error() {
        c.push_str(&format!(r#", error="{code}""#));
        let description = match error {
            BearerError::Token { error, .. } => short_description(error),
            BearerError::UnknownIssuer(_) => "issuer not accepted",
            BearerError::Principal { .. } => "principal not accepted",
            _ => "",
        };
        if !description.is_empty() {
            c.push_str(&format!(r#", error_description="{description}""#));
        }
    }
    if let Some(scope) = error.scope() {
        c.push_str(&format!(r#", scope="{}""#, quote(&scope)));
    }
    c
}

/// A fixed description per check: what failed, never a value from the token.
fn short_description(e: &IdTokenError) -> &'static str {
    use IdTokenError::*;
    match e {
        Expired { .. } => "token expired",
        NotYetValid { .. } | IatInFuture { .. } => "token not yet valid",
        IssuerMismatch { .. } => "issuer mismatch",
        AudienceNotAccepted(_) => "audience not accepted",
        WrongType(_) => "typ is not at+jwt",
        CriticalHeader(_) => "unsupported crit header",
        AlgorithmNotAllowed(_) | KeyAlgorithmMismatch { .. } => "algorithm not accepted",
        UnknownKey(_) | BadSignature => "signature invalid",
        ScopeMissing(_) => "scope missing",
        _ => "token invalid",
    }
}

/// A verified machine credential: a bearer token (with the name of the issuer entry that
/// accepted it) or a service token (`service-token`).
/// A client a bearer credential was verified for: made only after the token's verifier
/// (`bearer_principal`) or the service token's secret check (`service_principal`).
struct Principal {
    label: String,
    token: AccessTokenClaims,
    /// Whether the issuer's `groups` are mapped (`bearer[].groups`).
    groups: bool,
}

/// KV key prefix of a tenant's service tokens.
pub(super) use crate::keys::service_tokens_of_tenant as service_token_prefix;

/// A static service token as stored: never the secret, only its SHA-256 (the secret is 256
/// random bits, so a plain hash cannot be searched).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct ServiceToken {
    pub name: String,
    pub secret_sha256: String,
    pub scopes: Vec<String>,
    pub created: u64,
    pub expires: Option<u64>,
}

/// The service-token credentials of a request (`X-Portcullis-Client-Id`/`-Secret`, or
/// Cloudflare Access's `CF-Access-Client-Id`/`-Secret`).
pub(super) fn service_credentials(req: &Request) -> Option<(&str, &str)> {
    let pick = |a: &str, b: &str| req.headers.get(a).or_else(|| req.headers.get(b)).map(str::trim);
    let id = pick("x-portcullis-client-id", "cf-access-client-id")?;
    let secret = pick("x-portcullis-client-secret", "cf-access-client-secret")?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

impl Gateway {
    /// Verifies a bearer token against the tenant's issuer whose identifier its `iss` names
    /// (read unverified only to choose the issuer; the verifier checks it again).
    async fn bearer_principal(&self, cx: &Cx<'_>, raw: &str) -> Result<Principal, BearerError> {
        let token = UntrustedIdToken::new(raw);
        let claimed = token.unverified_issuer();
        let found = cx.tenant.bearer.iter().find_map(|b| {
            let source = b.source(cx.tenant)?;
            (Some(source.issuer_id()) == claimed.as_deref()).then_some((b, source))
        });
        let Some((b, source)) = found else {
            return Err(BearerError::UnknownIssuer(claimed));
        };
        let label = b.label().to_owned();
        let unavailable = |e: oidc::OidcError| BearerError::Unavailable { issuer: label.clone(), cause: e.to_string() };
        let m = self.metadata(cx, source.as_ref()).await.map_err(unavailable)?;
        let expectations = AccessTokenExpectations {
            issuer: &m.issuer,
            audiences: &b.audiences,
            scopes: &b.scopes,
            algorithms: &b.algorithms,
            require_typ: b.require_typ,
            now: cx.ports.now(),
            skew: b.clock_skew,
        };
        let keys = self.jwks(cx, source.as_ref(), &m, false).await.map_err(unavailable)?;
        let verified = match check_token(cx.ports, &token, &keys, &expectations).await {
            // The issuer may have rotated its keys: refetch (at most once a minute).
            Err(IdTokenError::UnknownKey(_) | IdTokenError::BadSignature) => {
                cx.log(json!({"event": "jwks_refetch", "tenant": cx.tenant.id, "provider": label, "kid": token.kid()}));
                let keys = self.jwks(cx, source.as_ref(), &m, true).await.map_err(unavailable)?;
                check_token(cx.ports, &token, &keys, &expectations).await
            }
            other => other,
        }
        .map_err(|error| BearerError::Token { issuer: label.clone(), error })?;
        let kind = match verified.kind {
            oidc::access_token::PrincipalKind::Machine => PrincipalKind::Machine,
            oidc::access_token::PrincipalKind::User => PrincipalKind::User,
        };
        if !b.principals.contains(&kind) {
            return Err(BearerError::Principal { issuer: label, kind: verified.kind.as_str() });
        }
        Ok(Principal { label, token: verified.into_claims(), groups: b.groups })
    }

    /// Checks service-token credentials against the tenant's stored tokens (one KV read;
    /// the secret's hash compared in constant time).
    async fn service_principal(&self, cx: &Cx<'_>, (id, secret): (&str, &str)) -> Result<Principal, Refusal> {
        // Ids are the gateway's own (`st-` and hex): anything else is refused before KV.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Refusal::Bearer(BearerError::ServiceToken));
        }
        let key = crate::keys::service_token(&cx.tenant.id, id);
        let Some(raw) = cx.ports.kv.get(&key).await? else {
            return Err(Refusal::Bearer(BearerError::ServiceToken));
        };
        let stored: ServiceToken =
            serde_json::from_str(&raw).map_err(|_| Refusal::Bearer(BearerError::ServiceToken))?;
        let presented = crypto::sha256_hex(secret.as_bytes());
        let live = stored.expires.is_none_or(|e| cx.ports.now() < e);
        if !crypto::ct_eq(presented.as_bytes(), stored.secret_sha256.as_bytes()) || !live {
            return Err(Refusal::Bearer(BearerError::ServiceToken));
        }
        let token = AccessTokenClaims {
            iss: "service-token".to_owned(),
            sub: id.to_owned(),
            client_id: id.to_owned(),
            kind: oidc::access_token::PrincipalKind::Machine,
            scopes: stored.scopes,
            exp: stored.expires.unwrap_or(0) as i64,
            claims: json!({"sub": id, "client_id": id, "name": stored.name}).as_object().cloned().unwrap_or_default(),
        };
        Ok(Principal { label: "service-token".to_owned(), token, groups: false })
    }

    /// A protected request with a bearer token: verified, authorised by the tenant's policy
    /// like a person, and forwarded with the principal's identity. No session is read or
    /// made.
    pub(super) async fn protected_bearer(
        &self,
        cx: &Cx<'_>,
        decided: &Decided,
        (url, client): (String, &ClientInfo<'_>),
        credential: Credential<'_>,
    ) -> Result<Action, Refusal> {
        let principal = match credential {
            Credential::Bearer(raw) => self.bearer_principal(cx, raw).await.map_err(Refusal::Bearer)?,
            Credential::Service(pair) => self.service_principal(cx, pair).await?,
        };
        let t = &principal.token;
        let machine = t.kind == oidc::access_token::PrincipalKind::Machine;
        let groups: Vec<String> = match t.claims.get("groups").filter(|_| principal.groups) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        };
        let mapped = policy::map_groups(&cx.tenant.groups, &groups);
        // The tenant's "no mapped group, no access" holds for machines as for people.
        if cx.tenant.groups.require_mapped_group && !mapped.any_mapped {
            let denied = policy::Denied {
                rule: None,
                name: Some("require_mapped_group".to_owned()),
                path: decided.path.matching.clone(),
            };
            return Err(Refusal::Bearer(BearerError::Denied { denied, scopes: Vec::new() }));
        }
        let subject = policy::Subject {
            email: None,
            email_verified: false,
            groups: &mapped.groups,
            roles: &mapped.roles,
            scopes: &t.scopes,
            machine,
            claims: &t.claims,
            edge: &cx.req.edge,
        };
        if let Err(denied) = policy::authorize(cx.tenant, decided, &subject) {
            let rule = denied.rule.and_then(|i| cx.tenant.policy.get(i));
            let missing = rule.is_some_and(|r| r.require_scopes.iter().any(|s| !t.scopes.contains(s)));
            let scopes = if missing { rule.map(|r| r.require_scopes.clone()).unwrap_or_default() } else { Vec::new() };
            return Err(Refusal::Bearer(BearerError::Denied { denied, scopes }));
        }
        // A step-up path needs this gateway's second factor, which only a person can give.
        let step_up = cx
            .tenant
            .mfa
            .step_up
            .iter()
            .any(|r| decided.methods.iter().any(|m| policy::rule_matches(&r.as_path_rule(), m, &decided.path)));
        if step_up {
            return Err(Refusal::Bearer(BearerError::StepUp));
        }
        let kind = t.kind.as_str();
        let user_id = format!("{}/{}", t.iss, t.sub);
        let user = if machine { t.client_id.clone() } else { t.sub.clone() };
        let scope = t.scopes.join(" ");
        let assertion = match self.config().zip(self.signing_keys().first()) {
            None => None,
            Some((loaded, key)) => {
                let claims = AssertionClaims {
                    iss: &loaded.config.gateway.issuer,
                    aud: &cx.tenant.id,
                    sub: &user_id,
                    email: None,
                    name: None,
                    preferred_username: None,
                    groups: &mapped.groups,
                    roles: &mapped.roles,
                    amr: &[],
                    idp: &principal.label,
                    attributes: &Default::default(),
                    principal: kind,
                    client_id: Some(&t.client_id),
                    scope: Some(&scope),
                };
                Some(key.sign(&claims, cx.ports.now()).ok_or_else(|| Refusal::SigningKeyUnusable(key.id.clone()))?)
            }
        };
        cx.log(json!({"event": "bearer_accepted", "tenant": cx.tenant.id, "issuer": principal.label,
            "client_id": t.client_id, "principal": kind, "path": decided.path.matching}));
        let identity = IdentityHeaders {
            user_id,
            user,
            email: None,
            name: None,
            preferred_username: None,
            groups: mapped.groups.clone(),
            roles: mapped.roles.clone(),
            amr: Vec::new(),
            assertion,
            scopes: Some(t.scopes.clone()),
            principal: Some(kind),
        };
        let headers = proxy::upstream_headers(&cx.req.headers, cx.tenant, client, Some(&identity));
        Ok(super::to_origin(cx.req, cx.tenant, url, headers, None))
    }
}

/// Adds the bearer challenge to a 401 for a tenant that accepts bearer tokens (RFC 6750 3:
/// no error code when no token was sent).
pub(super) fn add_challenge(r: &mut Response, tenant: &Tenant) {
    if !tenant.bearer.is_empty() {
        r.headers.append("www-authenticate", format!(r#"Bearer realm="{}""#, tenant.id));
    }
}
