//! OpenID Connect relying party: discovery, JWKS, the authorization request with PKCE, the
//! code exchange, ID token validation, userinfo and refresh. Everything here is pure: the
//! gateway passes in fetched documents and the clock, and performs the requests these
//! functions describe.

pub mod access_token;
pub mod id_token;
pub mod jwks;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{OidcProvider, TokenAuth};
use crate::crypto::{b64, b64url, sha256};
use crate::http::{Inbound, Outbound};
use crate::ports::FetchError;
use crate::secret::Secret;
pub use id_token::{IdTokenError, UntrustedIdToken, VerifiedIdToken};

/// Everything that can go wrong in an OIDC sign-in, with what is needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcError {
    /// Discovery document unusable (fetch failed, not JSON, wrong issuer, missing fields).
    Discovery(String),
    /// The discovery document offers only `none`/HMAC ID token algorithms.
    Downgrade(Vec<String>),
    Jwks(String),
    /// RFC 9207: the `iss` response parameter is not this provider's issuer.
    IssuerParamMismatch {
        expected: String,
        actual: Option<String>,
    },
    /// The IdP answered the authorization request with an error.
    IdpError {
        error: String,
        description: Option<String>,
    },
    MissingCode,
    TokenEndpoint {
        status: u16,
        error: Option<String>,
    },
    TokenEndpointUnreachable(FetchError),
    TokenResponse(String),
    IdToken(IdTokenError),
    Userinfo(String),
    EmailUnverified,
    EmailDomainNotAllowed(String),
    MalformedClaim(String),
}

impl fmt::Display for OidcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use OidcError::*;
        match self {
            Discovery(e) => write!(f, "discovery: {e}"),
            Downgrade(algs) => write!(f, "discovery offers only insecure ID token algorithms {algs:?}"),
            Jwks(e) => write!(f, "JWKS: {e}"),
            IssuerParamMismatch { expected, actual } => {
                write!(f, "iss parameter {actual:?} is not {expected:?}")
            }
            IdpError { error, description } => write!(f, "IdP error {error}: {}", description.as_deref().unwrap_or("")),
            MissingCode => f.write_str("callback without code"),
            TokenEndpoint { status, error } => {
                write!(f, "token endpoint answered {status} {}", error.as_deref().unwrap_or(""))
            }
            TokenEndpointUnreachable(e) => write!(f, "token endpoint {e}"),
            TokenResponse(e) => write!(f, "token response: {e}"),
            IdToken(e) => write!(f, "ID token: {e}"),
            Userinfo(e) => write!(f, "userinfo: {e}"),
            EmailUnverified => f.write_str("email not verified"),
            EmailDomainNotAllowed(d) => write!(f, "email domain {d} not allowed"),
            MalformedClaim(c) => write!(f, "malformed claim {c}"),
        }
    }
}

/// The parts of a discovery document the gateway uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

fn endpoint_ok(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.scheme() == "https"
            || (u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")))
    })
}

/// Parses and checks a discovery document (OpenID Connect Discovery 1.0, 4.3: the issuer
/// in the document must be exactly the one it was fetched for).
pub fn parse_discovery(body: &[u8], expected_issuer: &str) -> Result<ProviderMetadata, OidcError> {
    let m: ProviderMetadata =
        serde_json::from_slice(body).map_err(|e| OidcError::Discovery(format!("not a discovery document: {e}")))?;
    if m.issuer != expected_issuer {
        return Err(OidcError::Discovery(format!(
            "issuer {:?} does not equal the configured issuer {expected_issuer:?}",
            m.issuer
        )));
    }
    for (name, url) in [
        ("authorization_endpoint", Some(&m.authorization_endpoint)),
        ("token_endpoint", Some(&m.token_endpoint)),
        ("jwks_uri", Some(&m.jwks_uri)),
        ("userinfo_endpoint", m.userinfo_endpoint.as_ref()),
        ("end_session_endpoint", m.end_session_endpoint.as_ref()),
    ] {
        if let Some(u) = url {
            if !endpoint_ok(u) {
                return Err(OidcError::Discovery(format!("{name} {u:?} is not an https URL")));
            }
        }
    }
    // Downgrade defence: a provider that offers only `none` or HMAC algorithms cannot give
    // us a token we can check with a public key.
    if !m.id_token_signing_alg_values_supported.is_empty()
        && !m.id_token_signing_alg_values_supported.iter().any(|a| id_token::ASYMMETRIC_ALGS.contains(&a.as_str()))
    {
        return Err(OidcError::Downgrade(m.id_token_signing_alg_values_supported.clone()));
    }
    Ok(m)
}

/// Pre-login state kept in KV between the redirect to the IdP and the callback.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreLogin {
    pub tenant: String,
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: Option<String>,
    pub return_to: String,
    pub redirect_uri: String,
    pub created: u64,
    /// A fresh sign-in is asked for (`prompt=login`, `max_age=0`), and the callback checks
    /// `auth_time`.
    #[serde(default)]
    pub reauth: bool,
    /// The fresh sign-in is for adding a passkey: the gateway goes on with that after it.
    #[serde(default)]
    pub add_passkey: bool,
}

impl fmt::Debug for PreLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreLogin")
            .field("tenant", &self.tenant)
            .field("provider", &self.provider)
            .field("return_to", &self.return_to)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

pub fn state_key(tenant: &str, state: &str) -> String {
    crate::keys::oidc_state(tenant, state)
}

/// PKCE S256 challenge for a verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    b64url(&sha256(verifier.as_bytes()))
}

/// The authorization request URL.
pub fn authorization_url(
    p: &OidcProvider,
    m: &ProviderMetadata,
    redirect_uri: &str,
    state: &str,
    pre: &PreLogin,
) -> String {
    let scope = p.scopes.join(" ");
    let challenge = pre.pkce_verifier.as_deref().map(pkce_challenge);
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &p.client_id),
        ("redirect_uri", redirect_uri),
        ("scope", &scope),
        ("state", state),
        ("nonce", &pre.nonce),
    ];
    if let Some(c) = &challenge {
        params.push(("code_challenge", c));
        params.push(("code_challenge_method", "S256"));
    }
    for (k, v) in &p.extra_params {
        params.push((k, v));
    }
    if pre.reauth {
        params.retain(|(k, _)| *k != "prompt" && *k != "max_age");
        params.push(("prompt", "login"));
        params.push(("max_age", "0"));
    }
    let sep = if m.authorization_endpoint.contains('?') { '&' } else { '?' };
    format!("{}{sep}{}", m.authorization_endpoint, crate::http::query_encode(&params))
}

fn with_client_auth(
    mut req: Outbound,
    p: &OidcProvider,
    secret: Option<&Secret>,
    form: &mut Vec<(String, String)>,
) -> Outbound {
    match (p.token_auth, secret) {
        (TokenAuth::ClientSecretBasic, Some(s)) => {
            // RFC 6749 2.3.1: client id and secret are form-urlencoded before base64.
            let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let creds = format!("{}:{}", enc(&p.client_id), enc(s.expose_str()));
            req.headers.set("authorization", format!("Basic {}", b64(creds.as_bytes())));
        }
        (TokenAuth::ClientSecretPost, Some(s)) => {
            form.push(("client_id".into(), p.client_id.clone()));
            form.push(("client_secret".into(), s.expose_str().to_owned()));
        }
        _ => form.push(("client_id".into(), p.client_id.clone())),
    }
    req
}

fn form_request(url: &str, form: &[(String, String)], req: Outbound) -> Outbound {
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Outbound::post_form(url, &pairs);
    for (n, v) in req.headers.iter() {
        out.headers.set(n, v);
    }
    out
}

/// The code exchange request (RFC 6749 4.1.3 with RFC 7636 4.5).
pub fn token_request(
    p: &OidcProvider,
    m: &ProviderMetadata,
    secret: Option<&Secret>,
    code: &str,
    pre: &PreLogin,
) -> Outbound {
    let mut form = vec![
        ("grant_type".to_string(), "authorization_code".to_string()),
        ("code".into(), code.into()),
        ("redirect_uri".into(), pre.redirect_uri.clone()),
    ];
    if let Some(v) = &pre.pkce_verifier {
        form.push(("code_verifier".into(), v.clone()));
    }
    let base = with_client_auth(Outbound::get(&m.token_endpoint), p, secret, &mut form);
    form_request(&m.token_endpoint, &form, base)
}

/// A refresh request (RFC 6749 6).
pub fn refresh_request(
    p: &OidcProvider,
    m: &ProviderMetadata,
    secret: Option<&Secret>,
    refresh_token: &str,
) -> Outbound {
    let mut form =
        vec![("grant_type".to_string(), "refresh_token".to_string()), ("refresh_token".into(), refresh_token.into())];
    let base = with_client_auth(Outbound::get(&m.token_endpoint), p, secret, &mut form);
    form_request(&m.token_endpoint, &form, base)
}

/// A successful token response.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

pub fn parse_token_response(resp: &Inbound) -> Result<TokenResponse, OidcError> {
    if resp.status != 200 {
        let error = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(|s| truncate(s, 64)));
        return Err(OidcError::TokenEndpoint { status: resp.status, error });
    }
    let t: TokenResponse = serde_json::from_slice(&resp.body)
        .map_err(|e| OidcError::TokenResponse(format!("not a token response: {e}")))?;
    if let Some(tt) = &t.token_type {
        if !tt.eq_ignore_ascii_case("bearer") && !tt.eq_ignore_ascii_case("dpop") {
            return Err(OidcError::TokenResponse(format!("unexpected token_type {tt:?}")));
        }
    }
    Ok(t)
}

pub fn truncate(s: &str, max: usize) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).collect();
    if clean.len() <= max {
        clean
    } else {
        let mut end = max;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &clean[..end])
    }
}

/// The identity read from the claims (ID token first, userinfo for what it lacks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Vec<String>,
    pub amr: Vec<String>,
    pub sid: Option<String>,
    /// Further mapped attributes (SAML `attributes.extra`).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// Looks up a claim by path: the whole path as one key first (namespaced URL claims such as
/// `https://example.com/groups`), then as a dotted path.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

fn string_claim(claims: &Map<String, Value>, path: &str) -> Result<Option<String>, OidcError> {
    match claim(claims, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(OidcError::MalformedClaim(path.to_owned())),
    }
}

fn groups_claim(claims: &Map<String, Value>, path: &str, name_field: &str) -> Result<Option<Vec<String>>, OidcError> {
    let bad = || OidcError::MalformedClaim(path.to_owned());
    match claim(claims, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => o.get(name_field).and_then(Value::as_str).map(str::to_owned).ok_or_else(bad),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// Which mapped claims the ID token lacks (to be read from userinfo).
pub fn missing_claims(p: &OidcProvider, claims: &Map<String, Value>) -> Vec<String> {
    let c = &p.claims;
    [&c.email, &c.name, &c.preferred_username, &c.groups]
        .into_iter()
        .filter(|path| claim(claims, path).is_none())
        .cloned()
        .collect()
}

/// Checks a userinfo response (Core 5.3.2: its `sub` must equal the ID token's).
pub fn parse_userinfo(resp: &Inbound, sub: &str) -> Result<Map<String, Value>, OidcError> {
    if resp.status != 200 {
        return Err(OidcError::Userinfo(format!("answered {}", resp.status)));
    }
    let v: Value = serde_json::from_slice(&resp.body)
        .map_err(|_| OidcError::Userinfo("not JSON (signed userinfo is not supported)".into()))?;
    let Value::Object(m) = v else {
        return Err(OidcError::Userinfo("not a JSON object".into()));
    };
    if m.get("sub").and_then(Value::as_str) != Some(sub) {
        return Err(OidcError::Userinfo("sub differs from the ID token's".into()));
    }
    Ok(m)
}

/// Builds the identity from the verified ID token's claims, filling gaps from userinfo, and
/// applies the provider's email rules.
pub fn identity(
    p: &OidcProvider,
    token: &VerifiedIdToken,
    userinfo: Option<&Map<String, Value>>,
) -> Result<Identity, OidcError> {
    let mut merged = token.claims.clone();
    if let Some(u) = userinfo {
        for (k, v) in u {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let c = &p.claims;
    let user = string_claim(&merged, &c.user)?.ok_or_else(|| OidcError::MalformedClaim(c.user.clone()))?;
    let email = string_claim(&merged, &c.email)?;
    let email_verified = match merged.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let preferred_username = match string_claim(&merged, &c.preferred_username)? {
        Some(u) => Some(u),
        None => string_claim(&merged, "nickname")?,
    };
    let amr = match merged.get("amr") {
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let id = Identity {
        user,
        email_verified,
        name: string_claim(&merged, &c.name)?,
        given_name: string_claim(&merged, &c.given_name)?,
        family_name: string_claim(&merged, &c.family_name)?,
        preferred_username,
        groups: groups_claim(&merged, &c.groups, &c.group_name_field)?.unwrap_or_default(),
        amr,
        sid: token.str_claim("sid").map(str::to_owned),
        email,
        extra: Default::default(),
    };
    if p.require_verified_email && !(id.email.is_some() && id.email_verified) {
        return Err(OidcError::EmailUnverified);
    }
    if !p.allowed_email_domains.is_empty() {
        let domain = id.email.as_deref().and_then(|e| e.rsplit_once('@')).map(|(_, d)| d.to_ascii_lowercase());
        match domain {
            Some(d) if p.allowed_email_domains.iter().any(|a| a.eq_ignore_ascii_case(&d)) => {}
            other => return Err(OidcError::EmailDomainNotAllowed(other.unwrap_or_default())),
        }
    }
    Ok(id)
}
