//! The configuration document: tenants, their origin, identity providers, policy and
//! session settings. Secrets never appear in it; it names Worker secrets instead.
//!
//! [`Config::load`] parses and validates the whole document once per isolate. Every problem
//! is reported with the path of the field and what is wrong, all at once, e.g.
//! `tenants[1].providers[0].issuer: not an https URL`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::KeyWithId;
use crate::secret::{Secret, Secrets};

/// One problem in the configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&parts.join("; "))
    }
}

// ---------------------------------------------------------------------------------------
// The document
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The JSON Schema an editor validates the file with (docs/config.schema.json); unused.
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema: Option<String>,
    #[serde(default)]
    pub gateway: GatewaySettings,
    pub tenants: Vec<Tenant>,
}

/// A reference to a Worker secret holding key material, with the id stored alongside
/// whatever the key protects (cookies, sealed tokens, assertions), so keys rotate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub id: String,
    /// Name of the Worker secret.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// Path prefix of the gateway's own routes.
    pub prefix: String,
    /// `iss` of the signed assertion sent to origins.
    pub issuer: String,
    /// Session and pending-login cookie MAC keys; the first signs, all verify.
    pub cookie_keys: Vec<KeyRef>,
    /// Keys that seal tokens at rest (AES-256-GCM); the first seals. Defaults to the
    /// cookie keys (with a separate derived key) when empty.
    pub encryption_keys: Vec<KeyRef>,
    /// ES256 or Ed25519 keys (PKCS#8, PEM or base64 DER) that sign the origin assertion;
    /// the first signs, all are published. Empty: no assertion header.
    pub assertion_keys: Vec<KeyRef>,
    /// Timeout for calls to identity providers.
    pub fetch_timeout_ms: u64,
    /// Timeout for each KV operation; a KV call that takes longer is a storage error (503).
    pub kv_timeout_ms: u64,
    /// Seconds an isolate may reuse a session it read from KV (the revocation delay).
    pub session_cache_ttl: u64,
    /// Upper bound of in-isolate cached sessions.
    pub session_cache_size: usize,
    /// Seconds before a session's last-seen time is written to KV again; `0` (the default):
    /// a quarter of the tenant's idle timeout. Idle expiry is exact to within this interval.
    pub last_seen_interval: u64,
    /// Lifetime of pre-login state (the time a person has to finish signing in at the IdP).
    pub login_state_ttl: u64,
    /// Per-client cap on sign-in starts (each stores pre-login state), per isolate.
    pub login_rate_limit: LoginRateLimit,
    /// Worker secret holding the admin API bearer token (none: token access is off).
    pub admin_token: Option<String>,
    /// Also store audit events in KV (one write per event), for `GET admin/audit`. Off by
    /// default: every audit event is a log line (Workers Logs) either way.
    pub audit_kv: bool,
    /// Days audit events are kept in KV (they are never deleted before).
    pub audit_retention_days: u64,
    /// Also send every audit event to this HTTP endpoint (a SIEM webhook), after the
    /// response, with retries.
    pub audit_webhook: Option<AuditWebhook>,
    /// `auto`: the Durable Object bound as `PORTCULLIS_COORDINATOR` decides what must happen
    /// once (single-use state, replay caches, MFA counts, refresh, revocation); without the
    /// binding, KV alone. `kv`: KV alone even when the binding exists.
    pub coordination: Coordination,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coordination {
    #[default]
    Auto,
    Kv,
}

/// A token bucket per client IP: `burst` sign-in starts at once, refilled at `per_minute`.
/// `per_minute: 0` turns the cap off.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginRateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Default for LoginRateLimit {
    fn default() -> Self {
        Self { burst: 60, per_minute: 60 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditWebhook {
    pub url: String,
    /// Worker secret sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
}

fn default_webhook_attempts() -> u32 {
    3
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            prefix: "/_portcullis".into(),
            issuer: "portcullis".into(),
            cookie_keys: Vec::new(),
            encryption_keys: Vec::new(),
            assertion_keys: Vec::new(),
            fetch_timeout_ms: 5000,
            kv_timeout_ms: 5000,
            session_cache_ttl: 10,
            session_cache_size: 10_000,
            last_seen_interval: 0,
            login_state_ttl: 600,
            login_rate_limit: LoginRateLimit::default(),
            admin_token: None,
            audit_kv: false,
            audit_retention_days: 90,
            audit_webhook: None,
            coordination: Coordination::Auto,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Stable id; the `aud` of the origin assertion and part of every KV key.
    pub id: String,
    /// Display name (login page, TOTP issuer).
    #[serde(default)]
    pub name: String,
    /// Hosts served (`example.com`, or `host:port`); a host without a port matches any port.
    pub hosts: Vec<String>,
    /// Where authenticated requests go (http or https URL, optionally with a base path).
    pub origin: String,
    #[serde(default)]
    pub logo_url: Option<String>,
    #[serde(default)]
    pub accent_color: Option<String>,
    /// With exactly one provider, go straight to it instead of showing the login page.
    #[serde(default)]
    pub auto_redirect: bool,
    #[serde(default)]
    pub public_paths: Vec<PathRule>,
    #[serde(default)]
    pub session: SessionSettings,
    #[serde(default)]
    pub headers: HeaderSettings,
    #[serde(default)]
    pub groups: GroupSettings,
    /// Access rules per path, first match wins; no match: `policy_default`.
    #[serde(default)]
    pub policy: Vec<AccessRule>,
    /// What happens when no rule decides: `allow` (any signed-in user or accepted bearer
    /// principal; the default) or `deny`.
    #[serde(default)]
    pub policy_default: Effect,
    #[serde(default)]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub mfa: MfaSettings,
    /// `insensitive` for origins that route paths case-insensitively: public paths,
    /// policy and step-up rules are then matched lower-cased.
    #[serde(default)]
    pub path_case: crate::path::PathCase,
    /// Path prefixes whose origin needs `;` path parameters or `%2F` in paths: such
    /// requests are forwarded verbatim and are never public.
    #[serde(default)]
    pub verbatim_paths: Vec<String>,
    /// Drop every client header whose name contains `_` (as nginx does by default).
    #[serde(default)]
    pub drop_underscore_headers: bool,
    /// `drop` (default) or `honour` the `X-HTTP-Method-Override` family of headers.
    #[serde(default)]
    pub method_override: crate::path::MethodOverride,
    /// Milliseconds to wait for the origin's response headers before answering 504 (the
    /// body then streams without a deadline). Default 100 s, as Cloudflare's own proxy.
    #[serde(default = "default_origin_timeout")]
    pub origin_timeout_ms: u64,
    /// Issuers whose JWT access tokens are accepted as `Authorization: Bearer` instead of a
    /// session (API clients, CI jobs, services). Empty: bearer tokens are not looked at.
    #[serde(default)]
    pub bearer: Vec<BearerIssuer>,
    /// Accept static service tokens (an id and secret pair created through the admin API,
    /// sent as `X-Portcullis-Client-Id`/`-Secret` or `CF-Access-Client-Id`/`-Secret`).
    #[serde(default)]
    pub service_tokens: bool,
}

/// Who may present a bearer token from an issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// A client for itself (client credentials).
    Machine,
    /// A client for a user (a delegated access token).
    User,
}

/// One issuer of JWT access tokens (RFC 9068) accepted as bearer tokens: one of the
/// tenant's OIDC providers (`provider`), or another issuer by its discovery URL (`issuer`
/// with `name`). Keys come from the issuer's JWKS through the same caches as sign-in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BearerIssuer {
    /// A provider of this tenant (type `oidc`): its issuer, discovery and key caches.
    #[serde(default)]
    pub provider: Option<String>,
    /// Another issuer: a name for logs and caches (`a-z 0-9 - _`)...
    #[serde(default)]
    pub name: Option<String>,
    /// ... and its issuer identifier or discovery URL.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The token's `aud` must contain one of these (the resource identifiers of this site).
    pub audiences: Vec<String>,
    /// Scopes every token must grant (`scope` or `scp`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Accepted signature algorithms (asymmetric only).
    #[serde(default = "default_bearer_algorithms")]
    pub algorithms: Vec<String>,
    /// Require the JOSE header `typ: at+jwt` (RFC 9068 2.1).
    #[serde(default)]
    pub require_typ: bool,
    /// Map the token's `groups` claim through the tenant's group mapping, as at sign-in.
    /// Off by default: a machine's token does not get people's roles unless the operator
    /// trusts this issuer's groups.
    #[serde(default)]
    pub groups: bool,
    /// Whose tokens are accepted: `machine` (client credentials, the default) and/or
    /// `user` (tokens a client holds for a user).
    #[serde(default = "default_principals")]
    pub principals: Vec<PrincipalKind>,
    #[serde(default = "default_skew")]
    pub clock_skew: u64,
    /// Cache lifetimes for an issuer given by `issuer` (a `provider` uses its own).
    #[serde(default = "default_cache_ttl")]
    pub discovery_ttl: u64,
    #[serde(default = "default_cache_ttl")]
    pub jwks_ttl: u64,
}

fn default_origin_timeout() -> u64 {
    100_000
}

fn default_bearer_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}
fn default_principals() -> Vec<PrincipalKind> {
    vec![PrincipalKind::Machine]
}

impl BearerIssuer {
    /// What this issuer is called in logs and the principal's `idp`.
    pub fn label(&self) -> &str {
        self.provider.as_deref().or(self.name.as_deref()).unwrap_or_default()
    }

    /// The discovery and key source: the tenant's provider, or one made for the issuer
    /// (named `bearer:NAME`, which no provider name can be, so caches never mix).
    pub fn source(&self, tenant: &Tenant) -> Option<std::borrow::Cow<'_, OidcProvider>> {
        if let Some(p) = &self.provider {
            return tenant
                .providers
                .iter()
                .find(|x| x.name() == p)
                .and_then(Provider::as_oidc)
                .map(|o| std::borrow::Cow::Owned(o.clone()));
        }
        let issuer = self.issuer.clone()?;
        Some(std::borrow::Cow::Owned(OidcProvider {
            audiences: Vec::new(),
            name: format!("bearer:{}", self.name.as_deref().unwrap_or_default()),
            button: Button::default(),
            issuer,
            client_id: String::new(),
            client_secret: None,
            token_auth: TokenAuth::None,
            scopes: Vec::new(),
            extra_params: BTreeMap::new(),
            pkce: true,
            trusted_audiences: Vec::new(),
            clock_skew: self.clock_skew,
            iat_window: default_iat_window(),
            discovery_ttl: self.discovery_ttl,
            jwks_ttl: self.jwks_ttl,
            claims: ClaimMap::default(),
            require_verified_email: false,
            allowed_email_domains: Vec::new(),
            allow_hmac_id_tokens: false,
            refresh: false,
            rp_logout: false,
            accept_idp_mfa: false,
            per_provider_callback: false,
        }))
    }
}

/// The TOTP second factor for a tenant.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaSettings {
    /// Every user must use a second factor; those without one enrol at their next sign-in.
    pub required: bool,
    /// Issuer shown in authenticator apps (default: the tenant's name).
    pub issuer: Option<String>,
    pub algorithm: crate::mfa::TotpAlgorithm,
    pub digits: u32,
    pub period: u64,
    /// Steps accepted on either side of the current one.
    pub window: u32,
    /// Wrong codes within `failure_window` seconds that lock the user out for `lockout`.
    pub max_failures: u32,
    pub failure_window: u64,
    pub lockout: u64,
    /// Paths that need a second factor within the last `max_age` seconds.
    pub step_up: Vec<StepUpRule>,
    /// How recent (seconds) an IdP sign-in must be to add a second factor outside the
    /// first sign-in; an older session is sent to sign in again (`prompt=login`,
    /// `max_age=0`; SAML `ForceAuthn`).
    pub fresh_sign_in: u64,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            required: false,
            issuer: None,
            algorithm: crate::mfa::TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
            window: 1,
            max_failures: 5,
            failure_window: 900,
            lockout: 900,
            step_up: Vec::new(),
            fresh_sign_in: 300,
        }
    }
}

impl MfaSettings {
    pub fn params(&self) -> crate::mfa::TotpParams {
        crate::mfa::TotpParams {
            algorithm: self.algorithm,
            digits: self.digits,
            period: self.period,
            window: self.window,
        }
    }

    pub fn lockout_policy(&self) -> crate::mfa::LockoutPolicy {
        crate::mfa::LockoutPolicy {
            max_failures: self.max_failures,
            window: self.failure_window,
            lockout: self.lockout,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpRule {
    pub path: String,
    #[serde(default, rename = "match")]
    pub kind: PathMatch,
    #[serde(default)]
    pub methods: Vec<String>,
    /// Seconds a completed second factor counts as recent.
    pub max_age: u64,
}

impl StepUpRule {
    pub fn as_path_rule(&self) -> PathRule {
        PathRule { path: self.path.clone(), kind: self.kind, methods: self.methods.clone() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    #[default]
    Exact,
    Prefix,
    Glob,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub path: String,
    #[serde(default, rename = "match")]
    pub kind: PathMatch,
    /// Methods this rule covers; empty means all.
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    pub path: String,
    #[serde(default, rename = "match")]
    pub kind: PathMatch,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    #[serde(default)]
    pub allow_roles: Vec<String>,
    #[serde(default)]
    pub allow_emails: Vec<String>,
    #[serde(default)]
    pub allow_email_domains: Vec<String>,
    /// Scopes the request's bearer token must grant (a session grants none).
    #[serde(default)]
    pub require_scopes: Vec<String>,
    /// The kind of principal the rule admits: `user` (a person: a session, or a bearer
    /// token held for a user) or `machine` (a client for itself). Unset: either.
    #[serde(default)]
    pub principal: Option<PrincipalKind>,
    /// A name for refusals and logs (default: the rule's index).
    #[serde(default)]
    pub name: Option<String>,
    /// `allow` (default): the first allow rule whose path matches decides, allowing when its
    /// conditions hold. `deny`: refuses when its path matches and its conditions hold, and
    /// otherwise lets the next rule decide.
    #[serde(default)]
    pub effect: Effect,
    /// Claim conditions, all of which must hold.
    #[serde(default)]
    pub claims: Vec<ClaimMatch>,
    /// The request's country (`request.cf.country`) is one of these.
    #[serde(default)]
    pub countries: Vec<String>,
    /// The request's autonomous system (`request.cf.asn`) is one of these.
    #[serde(default)]
    pub asns: Vec<u64>,
    /// `true`: the client presented a TLS certificate that verified (mTLS); `false`: it did
    /// not.
    #[serde(default)]
    pub client_cert_verified: Option<bool>,
    /// The Bot Management score is present and at least / at most this.
    #[serde(default)]
    pub min_bot_score: Option<u64>,
    #[serde(default)]
    pub max_bot_score: Option<u64>,
}

/// What a policy rule does when it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

/// A condition on one claim of the principal (a dotted path or a whole key, as the claim
/// mapping reads them): `equals` a value, or `contains` one (an item of a list, or a
/// substring of a string).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatch {
    pub claim: String,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default)]
    pub contains: Option<serde_json::Value>,
}

impl AccessRule {
    pub fn as_path_rule(&self) -> PathRule {
        PathRule { path: self.path.clone(), kind: self.kind, methods: self.methods.clone() }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    /// Seconds without a request before the session ends.
    pub idle_timeout: u64,
    /// Seconds after sign-in when the session ends regardless of activity.
    pub absolute_timeout: u64,
}

impl GatewaySettings {
    /// Seconds between KV writes of a session's last-seen time for a tenant's sessions.
    pub fn last_seen_interval_for(&self, session: &SessionSettings) -> u64 {
        if self.last_seen_interval == 0 {
            // At least 15 s (KV takes one write per second per key); short idle timeouts
            // still get several writes per idle period.
            (session.idle_timeout / 4).max(15)
        } else {
            self.last_seen_interval
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self { idle_timeout: 3600, absolute_timeout: 8 * 3600 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderPreset {
    #[default]
    Portcullis,
    /// `X-Auth-Request-*`, as oauth2-proxy sends them.
    Oauth2Proxy,
}

/// Names of the identity headers sent to the origin. Unset fields come from the preset;
/// an empty string turns a header off.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderSettings {
    pub preset: HeaderPreset,
    pub user_id: Option<String>,
    pub user: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Option<String>,
    pub roles: Option<String>,
    pub amr: Option<String>,
    pub assertion: Option<String>,
    /// Scopes of a bearer token (default `X-Portcullis-Scopes`).
    pub scopes: Option<String>,
    /// `user` or `machine` (default `X-Portcullis-Principal`).
    pub principal: Option<String>,
}

/// The identity header names after applying the preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub user_id: Option<String>,
    pub user: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Option<String>,
    pub roles: Option<String>,
    pub amr: Option<String>,
    pub assertion: Option<String>,
    pub scopes: Option<String>,
    pub principal: Option<String>,
}

impl HeaderNames {
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [
            &self.user_id,
            &self.user,
            &self.email,
            &self.name,
            &self.preferred_username,
            &self.groups,
            &self.roles,
            &self.amr,
            &self.assertion,
            &self.scopes,
            &self.principal,
        ]
        .into_iter()
        .filter_map(|h| h.as_deref())
    }
}

impl HeaderSettings {
    pub fn names(&self) -> HeaderNames {
        fn pick(v: &Option<String>, preset: Option<&str>) -> Option<String> {
            match v {
                Some(s) if s.is_empty() => None,
                Some(s) => Some(s.clone()),
                None => preset.map(str::to_owned),
            }
        }
        let p = match self.preset {
            HeaderPreset::Portcullis => [
                Some("X-Portcullis-User"),
                None,
                Some("X-Portcullis-Email"),
                Some("X-Portcullis-Name"),
                Some("X-Portcullis-Preferred-Username"),
                Some("X-Portcullis-Groups"),
                Some("X-Portcullis-Roles"),
                Some("X-Portcullis-Amr"),
            ],
            HeaderPreset::Oauth2Proxy => [
                None,
                Some("X-Auth-Request-User"),
                Some("X-Auth-Request-Email"),
                None,
                Some("X-Auth-Request-Preferred-Username"),
                Some("X-Auth-Request-Groups"),
                None,
                None,
            ],
        };
        HeaderNames {
            user_id: pick(&self.user_id, p[0]),
            user: pick(&self.user, p[1]),
            email: pick(&self.email, p[2]),
            name: pick(&self.name, p[3]),
            preferred_username: pick(&self.preferred_username, p[4]),
            groups: pick(&self.groups, p[5]),
            roles: pick(&self.roles, p[6]),
            amr: pick(&self.amr, p[7]),
            assertion: pick(&self.assertion, Some("X-Portcullis-Assertion")),
            scopes: pick(&self.scopes, Some("X-Portcullis-Scopes")),
            principal: pick(&self.principal, Some("X-Portcullis-Principal")),
        }
    }
}

/// Group mapping shared by every provider of a tenant.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GroupSettings {
    /// Groups every signed-in user gets.
    pub default: Vec<String>,
    /// External (IdP) group -> internal groups.
    pub map: BTreeMap<String, Vec<String>>,
    /// Only default and mapped groups count; unmapped IdP groups are dropped.
    pub mirror: bool,
    /// Role -> groups (external or internal) that grant it, e.g. `superuser`, `staff`.
    pub roles: BTreeMap<String, Vec<String>>,
    /// Refuse users to whom no mapped group applies ("no roles assigned").
    pub require_mapped_group: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Provider {
    Oidc(Box<OidcProvider>),
    Saml(Box<SamlConnection>),
}

impl Provider {
    pub fn name(&self) -> &str {
        match self {
            Provider::Oidc(p) => &p.name,
            Provider::Saml(p) => &p.name,
        }
    }

    pub fn button(&self) -> &Button {
        match self {
            Provider::Oidc(p) => &p.button,
            Provider::Saml(p) => &p.button,
        }
    }

    pub fn as_oidc(&self) -> Option<&OidcProvider> {
        match self {
            Provider::Oidc(p) => Some(p),
            Provider::Saml(_) => None,
        }
    }

    pub fn as_saml(&self) -> Option<&SamlConnection> {
        match self {
            Provider::Saml(p) => Some(p),
            Provider::Oidc(_) => None,
        }
    }
}

/// A SAML 2.0 identity provider (SP-initiated Web SSO, HTTP-Redirect out, HTTP-POST back).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConnection {
    /// Used in URLs (`?ws=NAME` at the ACS and metadata); unique within the tenant.
    pub name: String,
    #[serde(flatten)]
    pub button: Button,
    /// The IdP's metadata XML; fills `idp_entity_id`, `idp_sso_url` and
    /// `idp_certificates` where those are not given.
    #[serde(default)]
    pub idp_metadata: Option<String>,
    /// Where to fetch the IdP's metadata (cached for `metadata_ttl`); it fills the same
    /// fields at run time, so certificate rollovers at the IdP need no redeploy.
    #[serde(default)]
    pub idp_metadata_url: Option<String>,
    #[serde(default = "default_metadata_ttl")]
    pub metadata_ttl: u64,
    #[serde(default)]
    pub idp_entity_id: String,
    /// SSO endpoint for the HTTP-Redirect binding.
    #[serde(default)]
    pub idp_sso_url: String,
    /// Single Logout endpoint (HTTP-Redirect); with it, signing out also signs out at the IdP.
    #[serde(default)]
    pub idp_slo_url: Option<String>,
    /// Signing certificates (PEM or base64 DER); several during a rollover.
    #[serde(default)]
    pub idp_certificates: Vec<String>,
    /// Our entity id (default `https://HOST{prefix}/saml/metadata?ws=NAME`).
    #[serde(default)]
    pub sp_entity_id: Option<String>,
    /// Attribute names for the identity fields; a missing `email` falls back to the NameID
    /// when it is an email address.
    #[serde(default)]
    pub attributes: SamlAttributeMap,
    #[serde(default = "default_name_id_format")]
    pub name_id_format: String,
    #[serde(default = "default_skew")]
    pub clock_skew: u64,
    /// Accept responses no request of ours asked for (IdP-initiated login).
    #[serde(default)]
    pub allow_idp_initiated: bool,
    /// Accept SHA-1 digests and RSA-SHA1 signatures (old IdPs only).
    #[serde(default)]
    pub legacy_sha1: bool,
    /// AuthnContextClassRef values that count as the IdP's own second factor.
    #[serde(default)]
    pub mfa_authn_contexts: Vec<String>,
    /// Sign AuthnRequests (HTTP-Redirect query signature, RSA-SHA256) with `sp_private_key`.
    #[serde(default)]
    pub sign_requests: bool,
    /// Worker secret with the SP's RSA private key (PKCS#8): signs requests and decrypts
    /// encrypted assertions.
    #[serde(default)]
    pub sp_private_key: Option<String>,
    /// The SP's certificate (PEM or base64 DER) for the metadata, matching `sp_private_key`.
    #[serde(default)]
    pub sp_certificate: Option<String>,
    /// The certificates and keys above, parsed at load.
    #[serde(skip)]
    pub ready: SamlReady,
}

/// A SAML connection's certificates and key, parsed once when the configuration loads.
#[derive(Clone, Default)]
pub struct SamlReady {
    /// `idp_certificates` (empty where the IdP's metadata URL supplies them at run time).
    pub idp_certificates: Vec<crate::saml::dsig::IdpCertificate>,
    /// The key named by `sp_private_key`.
    pub sp_key: Option<std::rc::Rc<rsa::RsaPrivateKey>>,
    /// `sp_certificate` as base64 DER, as the SP metadata carries it.
    pub sp_certificate: Option<String>,
}

impl fmt::Debug for SamlReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlReady")
            .field("idp_certificates", &self.idp_certificates.len())
            .field("sp_key", &self.sp_key.as_ref().map(|_| "[redacted]"))
            .field("sp_certificate", &self.sp_certificate.is_some())
            .finish()
    }
}

fn default_metadata_ttl() -> u64 {
    86400
}

fn default_name_id_format() -> String {
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamlAttributeMap {
    pub email: String,
    pub display_name: String,
    pub first_name: String,
    pub last_name: String,
    pub groups: String,
    pub username: String,
    /// Any further name -> SAML attribute name; the values travel in the session and in
    /// the origin assertion's `attributes` claim.
    pub extra: BTreeMap<String, String>,
}

impl Default for SamlAttributeMap {
    fn default() -> Self {
        Self {
            email: "email".into(),
            display_name: "displayName".into(),
            first_name: "givenName".into(),
            last_name: "surname".into(),
            groups: "groups".into(),
            username: "uid".into(),
            extra: BTreeMap::new(),
        }
    }
}

/// How a provider's button looks on the login page.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Button {
    pub label: String,
    /// Icon URL (https, or a path on the tenant's own host).
    pub icon: Option<String>,
    pub background: Option<String>,
    pub color: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Used in URLs; unique within the tenant.
    pub name: String,
    #[serde(flatten)]
    pub button: Button,
    /// The issuer, or its discovery URL (`…/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Worker secret holding the client secret (not needed with `token_auth: none`).
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub token_auth: TokenAuth,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Extra authorization request parameters, e.g. `prompt=consent`.
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub pkce: bool,
    /// Regexes (whole-value match) of audiences trusted besides the client id.
    #[serde(default)]
    pub trusted_audiences: Vec<String>,
    /// `trusted_audiences`, compiled at load.
    #[serde(skip)]
    pub audiences: Vec<regex_lite::Regex>,
    /// Allowed clock difference in seconds for `exp`, `nbf`, `iat`.
    #[serde(default = "default_skew")]
    pub clock_skew: u64,
    /// Oldest acceptable `iat`, in seconds before now.
    #[serde(default = "default_iat_window")]
    pub iat_window: u64,
    #[serde(default = "default_cache_ttl")]
    pub discovery_ttl: u64,
    #[serde(default = "default_cache_ttl")]
    pub jwks_ttl: u64,
    #[serde(default)]
    pub claims: ClaimMap,
    /// Refuse sign-in when `email_verified` is not true.
    #[serde(default)]
    pub require_verified_email: bool,
    /// When non-empty, only these email domains may sign in.
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    /// Accept HS256/384/512 ID tokens keyed with the client secret (confidential clients).
    #[serde(default)]
    pub allow_hmac_id_tokens: bool,
    /// Refresh tokens to keep the session alive (and detect revocation at the IdP).
    #[serde(default = "yes")]
    pub refresh: bool,
    /// RP-initiated logout at the IdP's `end_session_endpoint` after local logout.
    #[serde(default = "yes")]
    pub rp_logout: bool,
    /// Accept the IdP's own second factor (`amr` with `mfa`, `otp` or `hwk`) instead of
    /// asking for a TOTP code again.
    #[serde(default)]
    pub accept_idp_mfa: bool,
    /// Send `{prefix}/oidc/NAME/callback` as the redirect URI (for IdPs registered with one
    /// callback per provider) instead of the shared `{prefix}/oidc/callback`.
    #[serde(default)]
    pub per_provider_callback: bool,
}

fn yes() -> bool {
    true
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_skew() -> u64 {
    60
}
fn default_iat_window() -> u64 {
    600
}
fn default_cache_ttl() -> u64 {
    3600
}

/// Which claims hold which piece of identity. Paths may be dotted (`realm_access.roles`) or
/// whole namespaced keys (`https://example.com/groups`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMap {
    pub user: String,
    pub email: String,
    pub name: String,
    pub given_name: String,
    pub family_name: String,
    pub preferred_username: String,
    pub groups: String,
    /// Field holding the group name when the groups claim is a list of objects.
    pub group_name_field: String,
}

impl Default for ClaimMap {
    fn default() -> Self {
        Self {
            user: "sub".into(),
            email: "email".into(),
            name: "name".into(),
            given_name: "given_name".into(),
            family_name: "family_name".into(),
            preferred_username: "preferred_username".into(),
            groups: "groups".into(),
            group_name_field: "name".into(),
        }
    }
}

pub const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

impl OidcProvider {
    /// The issuer identifier (the configured value without the discovery suffix).
    pub fn issuer_id(&self) -> &str {
        self.issuer.strip_suffix(DISCOVERY_SUFFIX).unwrap_or(&self.issuer)
    }

    pub fn discovery_url(&self) -> String {
        format!("{}{}", self.issuer_id().trim_end_matches('/'), DISCOVERY_SUFFIX)
    }
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

/// The validated configuration together with the secrets it names.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub cookie_keys: Vec<KeyWithId>,
    pub encryption_keys: Vec<KeyWithId>,
    /// `gateway.assertion_keys`, parsed: the first signs, all are published.
    pub signing_keys: Vec<crate::assertion::SigningKey>,
    pub admin_token: Option<Secret>,
    pub secrets: Secrets,
}

/// What validating one provider parsed.
enum Ready {
    Oidc(Vec<regex_lite::Regex>),
    Saml(SamlReady),
}

struct Check {
    errors: Vec<ConfigError>,
}

impl Check {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { path: path.into(), message: message.into() });
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host == "127.0.0.1" || host == "[::1]" || host.ends_with(".localhost")
}

/// An issuer/endpoint must be https, except on loopback where local peers speak http.
fn check_idp_url(c: &mut Check, path: &str, value: &str) {
    match url::Url::parse(value) {
        Err(e) => c.err(path, format!("not a URL ({e})")),
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            if u.scheme() != "https" && !(u.scheme() == "http" && is_loopback(host)) {
                c.err(path, "not an https URL");
            }
            if u.query().is_some() || u.fragment().is_some() {
                c.err(path, "must not have a query or fragment");
            }
        }
    }
}

fn check_secret(c: &mut Check, secrets: &dyn Fn(&str) -> Option<Secret>, path: &str, name: &str, out: &mut Secrets) {
    match secrets(name) {
        Some(s) if !s.is_empty() => out.insert(name, s),
        _ => c.err(path, format!("Worker secret {name} is not set")),
    }
}

fn check_keys(
    c: &mut Check,
    secrets: &dyn Fn(&str) -> Option<Secret>,
    path: &str,
    keys: &[KeyRef],
    min_len: usize,
) -> Vec<KeyWithId> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, k) in keys.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !is_name(&k.id) && !k.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            c.err(format!("{p}.id"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
        }
        if !seen.insert(k.id.clone()) {
            c.err(format!("{p}.id"), format!("duplicate key id {}", k.id));
        }
        match secrets(&k.secret) {
            Some(s) if s.expose().len() >= min_len => out.push(KeyWithId { id: k.id.clone(), key: s }),
            Some(_) => {
                c.err(format!("{p}.secret"), format!("Worker secret {} is shorter than {min_len} bytes", k.secret))
            }
            None => c.err(format!("{p}.secret"), format!("Worker secret {} is not set", k.secret)),
        }
    }
    out
}

fn check_path_rule(c: &mut Check, path: &str, rule: &PathRule) {
    if !rule.path.starts_with('/') {
        c.err(format!("{path}.path"), "must start with '/'");
    }
    for (i, m) in rule.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            c.err(format!("{path}.methods[{i}]"), "must be an upper-case HTTP method");
        }
    }
}

/// The Worker variable that may hold the configuration document.
pub const CONFIG_VAR: &str = "PORTCULLIS_CONFIG";

/// What the Worker finds in its `PORTCULLIS_CONFIG` binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue {
    /// No such binding.
    Unset,
    /// A string: a `wrangler secret`, `--var`, an env file, or a `[vars]` string.
    Text(String),
    /// A table under `[vars]` in wrangler.toml (the platform passes it as an object), here as
    /// its JSON text.
    Object(String),
    /// Anything else (a number, a boolean, an array), by its JavaScript type name.
    Other(String),
}

/// Picks the configuration document: the file bundled into the Worker at build time
/// (`scripts/build.sh --config FILE`), or the `PORTCULLIS_CONFIG` binding. Both at once is
/// refused, so a forgotten variable never silently overrides the reviewed file.
pub fn choose_document(bundled: Option<&str>, var: VarValue) -> Result<String, ConfigErrors> {
    let refuse = |message: String| Err(ConfigErrors(vec![ConfigError { path: CONFIG_VAR.into(), message }]));
    let bundled = bundled.filter(|b| !b.trim().is_empty());
    let var_set = match &var {
        VarValue::Unset => false,
        VarValue::Text(t) => !t.trim().is_empty(),
        VarValue::Object(_) | VarValue::Other(_) => true,
    };
    match (bundled, var) {
        (Some(_), _) if var_set => refuse(
            "is set, but a configuration file is also bundled into the Worker (scripts/build.sh --config): \
             remove the variable (wrangler secret delete / [vars]) or build without the file"
                .into(),
        ),
        (Some(doc), _) => Ok(doc.to_owned()),
        (None, VarValue::Text(t)) if var_set => Ok(t),
        (None, VarValue::Object(json)) => Ok(json),
        (None, VarValue::Other(kind)) => refuse(format!(
            "is a {kind}: set it to the configuration document (JSON text, or a table under [vars] in wrangler.toml)"
        )),
        (None, _) => refuse(
            "is not set and no configuration file is bundled: build with `bash scripts/build.sh --config FILE` \
             (docs/deploying.md), or set the variable to the document (JSON)"
                .into(),
        ),
    }
}

impl Config {
    /// Parses and validates a configuration document. `secrets` looks up Worker secrets by
    /// name; every secret the document names must exist.
    pub fn load(document: &str, secrets: &dyn Fn(&str) -> Option<Secret>) -> Result<Loaded, ConfigErrors> {
        if document.trim().is_empty() {
            return Err(ConfigErrors(vec![ConfigError {
                path: CONFIG_VAR.into(),
                message: "is empty: set it to the configuration document (JSON)".into(),
            }]));
        }
        let de = &mut serde_json::Deserializer::from_str(document);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json appends " at line L column C"; keep it, it helps find the spot.
            ConfigErrors(vec![ConfigError {
                path: if path == "." { String::new() } else { path },
                message: inner.to_string(),
            }])
        })?;
        config.validate(secrets)
    }

    fn validate(mut self, secrets: &dyn Fn(&str) -> Option<Secret>) -> Result<Loaded, ConfigErrors> {
        // Metadata import first, so the checks below see the filled-in fields.
        let mut import_errors = Vec::new();
        for (ti, t) in self.tenants.iter_mut().enumerate() {
            for (pi, p) in t.providers.iter_mut().enumerate() {
                if let Provider::Saml(s) = p {
                    if let Err(e) = s.import_metadata() {
                        import_errors.push(ConfigError {
                            path: format!("tenants[{ti}].providers[{pi}].idp_metadata"),
                            message: e,
                        });
                    }
                }
            }
        }
        let mut c = Check { errors: import_errors };
        let mut named = Secrets::new();
        let g = &self.gateway;
        if !g.prefix.starts_with('/') || g.prefix.ends_with('/') || g.prefix.len() < 2 {
            c.err("gateway.prefix", "must start with '/' and not end with '/' (e.g. /_portcullis)");
        }
        if g.cookie_keys.is_empty() {
            c.err("gateway.cookie_keys", "at least one key is required");
        }
        let cookie_keys = check_keys(&mut c, secrets, "gateway.cookie_keys", &g.cookie_keys, 32);
        let mut encryption_keys = check_keys(&mut c, secrets, "gateway.encryption_keys", &g.encryption_keys, 32);
        if encryption_keys.is_empty() {
            encryption_keys = cookie_keys.clone();
        }
        let assertion_keys = check_keys(&mut c, secrets, "gateway.assertion_keys", &g.assertion_keys, 1);
        let mut signing_keys = Vec::with_capacity(assertion_keys.len());
        for (i, k) in assertion_keys.iter().enumerate() {
            match crate::assertion::SigningKey::parse(&k.id, &k.key) {
                Ok(key) => signing_keys.push(key),
                Err(e) => c.err(format!("gateway.assertion_keys[{i}].secret"), e),
            }
        }
        // Values parsed while validating, stored in the providers once the walk is over.
        let mut ready: Vec<(usize, usize, Ready)> = Vec::new();
        let admin_token = match &g.admin_token {
            Some(name) => match secrets(name) {
                Some(s) if s.expose().len() >= 32 => Some(s),
                Some(_) => {
                    c.err("gateway.admin_token", format!("Worker secret {name} is shorter than 32 bytes"));
                    None
                }
                None => {
                    c.err("gateway.admin_token", format!("Worker secret {name} is not set"));
                    None
                }
            },
            None => None,
        };
        if g.fetch_timeout_ms == 0 || g.fetch_timeout_ms > 30_000 {
            c.err("gateway.fetch_timeout_ms", "must be between 1 and 30000");
        }
        if g.login_rate_limit.per_minute > 0 && !(1..=100_000).contains(&g.login_rate_limit.burst) {
            c.err("gateway.login_rate_limit.burst", "must be between 1 and 100000");
        }
        if g.kv_timeout_ms == 0 || g.kv_timeout_ms > 30_000 {
            c.err("gateway.kv_timeout_ms", "must be between 1 and 30000");
        }
        if !(60..=3600).contains(&g.login_state_ttl) {
            c.err("gateway.login_state_ttl", "must be between 60 (the KV minimum) and 3600 seconds");
        }
        if let Some(w) = &g.audit_webhook {
            match url::Url::parse(&w.url) {
                Ok(u)
                    if u.scheme() == "https"
                        || (u.scheme() == "http" && is_loopback(u.host_str().unwrap_or_default())) => {}
                _ => c.err("gateway.audit_webhook.url", "not an https URL"),
            }
            if let Some(t) = &w.token {
                check_secret(&mut c, secrets, "gateway.audit_webhook.token", t, &mut named);
            }
            if !(1..=10).contains(&w.attempts) {
                c.err("gateway.audit_webhook.attempts", "must be between 1 and 10");
            }
        }
        if !(1..=3650).contains(&g.audit_retention_days) {
            c.err("gateway.audit_retention_days", "must be between 1 and 3650");
        }
        check_duration(&mut c, "gateway.last_seen_interval", g.last_seen_interval, 86400);
        if g.session_cache_ttl > 300 {
            c.err("gateway.session_cache_ttl", "must be at most 300 seconds (it is the revocation delay)");
        }

        if self.tenants.is_empty() {
            c.err("tenants", "at least one tenant is required");
        }
        let mut hosts = BTreeMap::new();
        let mut ids = std::collections::BTreeSet::new();
        for (ti, t) in self.tenants.iter().enumerate() {
            let tp = format!("tenants[{ti}]");
            if !is_name(&t.id) {
                c.err(format!("{tp}.id"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
            }
            if !ids.insert(t.id.clone()) {
                c.err(format!("{tp}.id"), format!("duplicate tenant id {}", t.id));
            }
            if t.hosts.is_empty() {
                c.err(format!("{tp}.hosts"), "at least one host is required");
            }
            for (hi, h) in t.hosts.iter().enumerate() {
                let norm = h.to_ascii_lowercase();
                if norm.is_empty() || norm.contains('/') || norm.contains(' ') {
                    c.err(format!("{tp}.hosts[{hi}]"), "must be a host name, optionally with :port");
                }
                if let Some(prev) = hosts.insert(norm.clone(), ti) {
                    c.err(format!("{tp}.hosts[{hi}]"), format!("host {norm} is already used by tenants[{prev}]"));
                }
            }
            match url::Url::parse(&t.origin) {
                Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                    if u.query().is_some() || u.fragment().is_some() {
                        c.err(format!("{tp}.origin"), "must not have a query or fragment");
                    }
                }
                Ok(_) => c.err(format!("{tp}.origin"), "not an http(s) URL"),
                Err(e) => c.err(format!("{tp}.origin"), format!("not a URL ({e})")),
            }
            if let Some(logo) = &t.logo_url {
                let on_tenant_host = logo.starts_with('/') && !logo.starts_with("//");
                if !on_tenant_host && !logo.starts_with("https://") {
                    c.err(format!("{tp}.logo_url"), "must be a path on the tenant's host or an https URL");
                }
            }
            if let Some(color) = &t.accent_color {
                if !is_css_color(color) {
                    c.err(format!("{tp}.accent_color"), "must be a hex colour like #1f6feb");
                }
            }
            for (i, r) in t.public_paths.iter().enumerate() {
                check_path_rule(&mut c, &format!("{tp}.public_paths[{i}]"), r);
            }
            for (i, r) in t.policy.iter().enumerate() {
                check_path_rule(&mut c, &format!("{tp}.policy[{i}]"), &r.as_path_rule());
                for (ci, m) in r.claims.iter().enumerate() {
                    if m.claim.is_empty() || m.equals.is_some() == m.contains.is_some() {
                        c.err(
                            format!("{tp}.policy[{i}].claims[{ci}]"),
                            "needs a claim and exactly one of equals, contains",
                        );
                    }
                }
                for (ci, country) in r.countries.iter().enumerate() {
                    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                        c.err(
                            format!("{tp}.policy[{i}].countries[{ci}]"),
                            "must be an upper-case ISO 3166-1 alpha-2 code",
                        );
                    }
                }
                if r.name.as_deref().is_some_and(|n| n.is_empty() || n.len() > 64) {
                    c.err(format!("{tp}.policy[{i}].name"), "must be 1-64 characters");
                }
            }
            for (i, p) in t.verbatim_paths.iter().enumerate() {
                if let Err(e) = crate::path::check_verbatim_prefix(p) {
                    c.err(format!("{tp}.verbatim_paths[{i}]"), e);
                }
            }
            let s = &t.session;
            if s.idle_timeout < 60 {
                c.err(format!("{tp}.session.idle_timeout"), "must be at least 60 seconds");
            }
            if s.absolute_timeout < s.idle_timeout {
                c.err(format!("{tp}.session.absolute_timeout"), "must be at least the idle timeout");
            }
            if s.absolute_timeout > 30 * 86400 {
                c.err(format!("{tp}.session.absolute_timeout"), "must be at most 30 days");
            }
            if g.last_seen_interval != 0 && g.last_seen_interval >= s.idle_timeout {
                c.err(
                    "gateway.last_seen_interval",
                    format!("must be shorter than {tp}.session.idle_timeout, or 0 (a quarter of it)"),
                );
            }
            let m = &t.mfa;
            if m.digits != 6 && m.digits != 8 {
                c.err(format!("{tp}.mfa.digits"), "must be 6 or 8");
            }
            if !(15..=120).contains(&m.period) {
                c.err(format!("{tp}.mfa.period"), "must be between 15 and 120 seconds");
            }
            if m.window > 3 {
                c.err(format!("{tp}.mfa.window"), "must be at most 3 steps");
            }
            if m.max_failures == 0 || m.failure_window < 60 || m.lockout < 60 {
                c.err(
                    format!("{tp}.mfa"),
                    "max_failures must be positive; failure_window and lockout at least 60 seconds",
                );
            }
            check_duration(&mut c, &format!("{tp}.mfa.failure_window"), m.failure_window, 86_400);
            check_duration(&mut c, &format!("{tp}.mfa.lockout"), m.lockout, 86_400);
            if !(30..=3600).contains(&m.fresh_sign_in) {
                c.err(
                    format!("{tp}.mfa.fresh_sign_in"),
                    "must be between 30 and 3600 seconds: the time from a fresh IdP sign-in to adding a factor",
                );
            }
            for (i, r) in m.step_up.iter().enumerate() {
                check_path_rule(&mut c, &format!("{tp}.mfa.step_up[{i}]"), &r.as_path_rule());
                if r.max_age < 30 {
                    c.err(format!("{tp}.mfa.step_up[{i}].max_age"), "must be at least 30 seconds");
                }
                check_duration(&mut c, &format!("{tp}.mfa.step_up[{i}].max_age"), r.max_age, 30 * 86400);
            }
            let names = t.headers.names();
            for n in names.all() {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    c.err(format!("{tp}.headers"), format!("invalid header name {n:?}"));
                }
            }
            validate_bearer(&mut c, &tp, t);
            if !(1..=600_000).contains(&t.origin_timeout_ms) {
                c.err(format!("{tp}.origin_timeout_ms"), "must be between 1 and 600000 milliseconds");
            }
            let mut pnames = std::collections::BTreeSet::new();
            for (pi, p) in t.providers.iter().enumerate() {
                let pp = format!("{tp}.providers[{pi}]");
                if !is_name(p.name()) {
                    c.err(format!("{pp}.name"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
                }
                if !pnames.insert(p.name().to_owned()) {
                    c.err(format!("{pp}.name"), format!("duplicate provider name {}", p.name()));
                }
                if p.button().label.trim().is_empty() {
                    c.err(format!("{pp}.label"), "is required (the login button's text)");
                }
                for (field, v) in [("background", &p.button().background), ("color", &p.button().color)] {
                    if let Some(v) = v {
                        if !is_css_color(v) {
                            c.err(format!("{pp}.{field}"), "must be a hex colour like #1f6feb");
                        }
                    }
                }
                let parsed = match p {
                    Provider::Oidc(o) => Ready::Oidc(validate_oidc(&mut c, &pp, o, secrets, &mut named)),
                    Provider::Saml(s) => Ready::Saml(validate_saml(&mut c, &pp, s, secrets, &mut named)),
                };
                ready.push((ti, pi, parsed));
            }
        }
        for (ti, pi, parsed) in ready {
            match (&mut self.tenants[ti].providers[pi], parsed) {
                (Provider::Oidc(o), Ready::Oidc(audiences)) => o.audiences = audiences,
                (Provider::Saml(s), Ready::Saml(r)) => s.ready = r,
                _ => {}
            }
        }
        if c.errors.is_empty() {
            Ok(Loaded { config: self, cookie_keys, encryption_keys, signing_keys, admin_token, secrets: named })
        } else {
            Err(ConfigErrors(c.errors))
        }
    }

    /// The tenant serving `host` (`name` or `name:port`): an exact entry first, then an
    /// entry without a port matching the host name.
    pub fn tenant_for_host(&self, host: &str) -> Option<&Tenant> {
        let host = host.to_ascii_lowercase();
        let bare = strip_port(&host);
        self.tenants.iter().find(|t| t.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host))).or_else(|| {
            self.tenants.iter().find(|t| t.hosts.iter().any(|h| !h.contains(':') && h.eq_ignore_ascii_case(bare)))
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

fn is_css_color(v: &str) -> bool {
    let hex = v.strip_prefix('#').unwrap_or("");
    matches!(hex.len(), 3 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn validate_bearer(c: &mut Check, tp: &str, t: &Tenant) {
    let mut names = std::collections::BTreeSet::new();
    for (i, b) in t.bearer.iter().enumerate() {
        let bp = format!("{tp}.bearer[{i}]");
        match (&b.provider, &b.name, &b.issuer) {
            (Some(p), None, None) => {
                if !t.providers.iter().any(|x| x.name() == p && x.as_oidc().is_some()) {
                    c.err(format!("{bp}.provider"), format!("no OIDC provider {p:?} in this tenant"));
                }
            }
            (None, Some(n), Some(issuer)) => {
                if !is_name(n) {
                    c.err(format!("{bp}.name"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
                }
                check_idp_url(c, &format!("{bp}.issuer"), issuer);
            }
            _ => c.err(&bp, "needs either \"provider\", or \"name\" and \"issuer\""),
        }
        if !names.insert(b.label().to_owned()) {
            c.err(&bp, format!("{} is listed twice", b.label()));
        }
        if b.audiences.is_empty() || b.audiences.iter().any(String::is_empty) {
            c.err(format!("{bp}.audiences"), "at least one audience is required (the resource this site is)");
        }
        if b.algorithms.is_empty() {
            c.err(format!("{bp}.algorithms"), "at least one algorithm is required");
        }
        for (ai, a) in b.algorithms.iter().enumerate() {
            if !crate::oidc::id_token::ASYMMETRIC_ALGS.contains(&a.as_str()) {
                c.err(format!("{bp}.algorithms[{ai}]"), format!("{a:?} is not an accepted asymmetric algorithm"));
            }
        }
        if b.principals.is_empty() {
            c.err(format!("{bp}.principals"), "at least one of \"machine\" and \"user\" is required");
        }
        if b.principals.contains(&PrincipalKind::User) && t.mfa.required {
            c.err(
                format!("{bp}.principals"),
                "\"user\" tokens cannot pass a second factor, and this tenant requires one (mfa.required)",
            );
        }
        if b.clock_skew > 600 {
            c.err(format!("{bp}.clock_skew"), "must be at most 600 seconds");
        }
        if b.discovery_ttl < 60 || b.jwks_ttl < 60 {
            c.err(format!("{bp}.discovery_ttl"), "cache TTLs must be at least 60 seconds (the KV minimum)");
        }
    }
}

fn validate_oidc(
    c: &mut Check,
    pp: &str,
    o: &OidcProvider,
    secrets: &dyn Fn(&str) -> Option<Secret>,
    named: &mut Secrets,
) -> Vec<regex_lite::Regex> {
    check_idp_url(c, &format!("{pp}.issuer"), &o.issuer);
    if o.client_id.is_empty() {
        c.err(format!("{pp}.client_id"), "is required");
    }
    match (&o.client_secret, o.token_auth) {
        (None, TokenAuth::ClientSecretBasic | TokenAuth::ClientSecretPost) => {
            c.err(format!("{pp}.client_secret"), "is required unless token_auth is \"none\"")
        }
        (Some(name), _) => check_secret(c, secrets, &format!("{pp}.client_secret"), name, named),
        (None, TokenAuth::None) => {}
    }
    if o.token_auth == TokenAuth::None && !o.pkce {
        c.err(format!("{pp}.pkce"), "a public client (token_auth none) must use PKCE");
    }
    if o.allow_hmac_id_tokens && o.client_secret.is_none() {
        c.err(format!("{pp}.allow_hmac_id_tokens"), "needs a client secret");
    }
    if !o.scopes.iter().any(|s| s == "openid") {
        c.err(format!("{pp}.scopes"), "must include \"openid\"");
    }
    for (k, _) in o.extra_params.iter() {
        const RESERVED: &[&str] = &[
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
        ];
        if RESERVED.contains(&k.as_str()) {
            c.err(format!("{pp}.extra_params.{k}"), "is set by the gateway and cannot be overridden");
        }
    }
    let mut audiences = Vec::with_capacity(o.trusted_audiences.len());
    for (i, re) in o.trusted_audiences.iter().enumerate() {
        match regex_lite::Regex::new(&format!("^(?:{re})$")) {
            Ok(r) => audiences.push(r),
            Err(e) => c.err(format!("{pp}.trusted_audiences[{i}]"), format!("invalid regex: {e}")),
        }
    }
    if o.clock_skew > 600 {
        c.err(format!("{pp}.clock_skew"), "must be at most 600 seconds");
    }
    if o.iat_window == 0 {
        c.err(format!("{pp}.iat_window"), "must be positive");
    }
    check_duration(c, &format!("{pp}.iat_window"), o.iat_window, 86400);
    check_duration(c, &format!("{pp}.discovery_ttl"), o.discovery_ttl, MAX_CACHE_TTL);
    check_duration(c, &format!("{pp}.jwks_ttl"), o.jwks_ttl, MAX_CACHE_TTL);
    if o.discovery_ttl < 60 || o.jwks_ttl < 60 {
        c.err(format!("{pp}.discovery_ttl"), "cache TTLs must be at least 60 seconds (the KV minimum)");
    }
    audiences
}

impl SamlConnection {
    /// Fills entity id, SSO URL and certificates from `idp_metadata` where not set.
    fn import_metadata(&mut self) -> Result<(), String> {
        let Some(xml) = self.idp_metadata.as_deref() else {
            return Ok(());
        };
        let m = crate::saml::metadata::parse_idp_metadata(xml.as_bytes())?;
        if self.idp_entity_id.is_empty() {
            self.idp_entity_id = m.entity_id;
        }
        if self.idp_sso_url.is_empty() {
            self.idp_sso_url = m.sso_redirect_url.ok_or("no SingleSignOnService with the HTTP-Redirect binding")?;
        }
        if self.idp_certificates.is_empty() {
            self.idp_certificates = m.signing_certificates;
        }
        if self.idp_slo_url.is_none() {
            self.idp_slo_url = m.slo_redirect_url;
        }
        Ok(())
    }
}

fn validate_saml(
    c: &mut Check,
    pp: &str,
    s: &SamlConnection,
    secrets: &dyn Fn(&str) -> Option<Secret>,
    named: &mut Secrets,
) -> SamlReady {
    let mut ready = SamlReady::default();
    match &s.sp_private_key {
        Some(name) => match secrets(name) {
            Some(secret) => match crate::crypto::rsa_private_key(secret.expose_str()) {
                Ok(key) => {
                    ready.sp_key = Some(std::rc::Rc::new(key));
                    named.insert(name, secret)
                }
                Err(e) => c.err(format!("{pp}.sp_private_key"), format!("Worker secret {name}: {e}")),
            },
            None => c.err(format!("{pp}.sp_private_key"), format!("Worker secret {name} is not set")),
        },
        None if s.sign_requests => c.err(format!("{pp}.sign_requests"), "needs sp_private_key"),
        None => {}
    }
    if let Some(cert) = &s.sp_certificate {
        match crate::saml::dsig::IdpCertificate::from_pem_or_base64(cert) {
            Ok(_) => ready.sp_certificate = crate::crypto::pem_or_base64_der(cert).map(|d| crate::crypto::b64(&d)),
            Err(_) => c.err(format!("{pp}.sp_certificate"), "not a usable certificate"),
        }
    }
    // With `idp_metadata_url` the fetched metadata fills what is left out, so nothing is
    // required here; whatever is given is checked all the same.
    let from_metadata = s.idp_metadata_url.is_some();
    if let Some(u) = &s.idp_metadata_url {
        check_idp_url(c, &format!("{pp}.idp_metadata_url"), u);
        if s.metadata_ttl < 60 {
            c.err(format!("{pp}.metadata_ttl"), "must be at least 60 seconds (the KV minimum)");
        }
    }
    check_duration(c, &format!("{pp}.metadata_ttl"), s.metadata_ttl, MAX_CACHE_TTL);
    if s.idp_entity_id.is_empty() && !from_metadata {
        c.err(format!("{pp}.idp_entity_id"), "is required (or give idp_metadata or idp_metadata_url)");
    }
    let sso_left_to_metadata = s.idp_sso_url.is_empty() && from_metadata;
    if !sso_left_to_metadata && !is_idp_url(&s.idp_sso_url) {
        c.err(format!("{pp}.idp_sso_url"), "not an https URL");
    }
    if let Some(slo) = &s.idp_slo_url {
        if !is_idp_url(slo) {
            c.err(format!("{pp}.idp_slo_url"), "not an https URL");
        }
    }
    if s.idp_certificates.is_empty() && !from_metadata {
        c.err(format!("{pp}.idp_certificates"), "at least one signing certificate is required");
    }
    for (i, cert) in s.idp_certificates.iter().enumerate() {
        match crate::saml::dsig::IdpCertificate::from_pem_or_base64(cert) {
            Ok(parsed) => ready.idp_certificates.push(parsed),
            Err(e) => c.err(format!("{pp}.idp_certificates[{i}]"), format!("not a usable certificate: {e}")),
        }
    }
    if s.clock_skew > 600 {
        c.err(format!("{pp}.clock_skew"), "must be at most 600 seconds");
    }
    ready
}

/// An IdP endpoint: https, or http on loopback (local peers in development and tests).
pub fn is_idp_url(value: &str) -> bool {
    url::Url::parse(value)
        .map(|u| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u.host_str().unwrap_or_default())))
        == Ok(true)
}

/// Longest cache lifetime accepted (discovery, JWKS, SAML metadata): 30 days.
const MAX_CACHE_TTL: u64 = 30 * 86400;

/// Refuses a duration above `max` seconds. Every duration in the document has an upper
/// bound, so none of the time arithmetic on them (to milliseconds, added to the current
/// time) can overflow, whatever the document says.
fn check_duration(c: &mut Check, path: &str, value: u64, max: u64) {
    if value > max {
        c.err(path, format!("must be at most {max} seconds"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(name: &str) -> Option<Secret> {
        match name {
            "COOKIE_KEY" => Some(Secret::new(vec![1u8; 32])),
            "SHORT" => Some(Secret::new(vec![1u8; 8])),
            "CLIENT_SECRET" => Some(Secret::new(b"s3cret".to_vec())),
            _ => None,
        }
    }

    fn doc(tenant_extra: &str, provider_extra: &str) -> String {
        format!(
            r#"{{"gateway":{{"cookie_keys":[{{"id":"k1","secret":"COOKIE_KEY"}}]}},
            "tenants":[{{"id":"acme","name":"Acme","hosts":["acme.test"],"origin":"https://origin.acme.test"{tenant_extra},
              "providers":[{{"type":"oidc","name":"corp","label":"Corp SSO","issuer":"https://idp.test","client_id":"c","client_secret":"CLIENT_SECRET"{provider_extra}}}]}}]}}"#
        )
    }

    fn errors(d: &str) -> Vec<String> {
        match Config::load(d, &secrets) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_good_document_loads_with_defaults() {
        let l = Config::load(&doc("", ""), &secrets).unwrap();
        let t = &l.config.tenants[0];
        assert_eq!(l.config.gateway.prefix, "/_portcullis");
        assert_eq!(t.session.idle_timeout, 3600);
        assert_eq!(t.session.absolute_timeout, 28800);
        let o = t.providers[0].as_oidc().unwrap();
        assert_eq!(o.scopes, vec!["openid", "profile", "email"]);
        assert!(o.pkce);
        assert_eq!(o.clock_skew, 60);
        assert_eq!(l.secrets.get("CLIENT_SECRET").unwrap().expose(), b"s3cret");
        assert_eq!(l.encryption_keys[0].id, "k1");
    }

    #[test]
    fn errors_name_the_field_path() {
        assert_eq!(
            errors(&doc("", "").replace("https://idp.test", "ftp://idp.test")),
            vec!["tenants[0].providers[0].issuer: not an https URL"]
        );
        assert_eq!(
            errors(&doc("", "").replace("CLIENT_SECRET", "MISSING")),
            vec!["tenants[0].providers[0].client_secret: Worker secret MISSING is not set"]
        );
        assert_eq!(
            errors(&doc("", "").replace("COOKIE_KEY", "SHORT")),
            vec!["gateway.cookie_keys[0].secret: Worker secret SHORT is shorter than 32 bytes"]
        );
        assert!(errors(&doc("", r#","trusted_audiences":["(unclosed"]"#))[0]
            .starts_with("tenants[0].providers[0].trusted_audiences[0]: invalid regex"));
        let unknown = errors(&doc(r#","bogus":1"#, ""));
        assert!(unknown[0].starts_with("tenants[0].bogus: unknown field `bogus`"), "{unknown:?}");
        let wrong_type = errors(&doc(r#","session":{"idle_timeout":"soon"}"#, ""));
        assert!(wrong_type[0].starts_with("tenants[0].session.idle_timeout: invalid type"), "{wrong_type:?}");
    }

    #[test]
    fn several_errors_are_reported_at_once() {
        let d = doc(r#","session":{"idle_timeout":10}"#, r#","scopes":["profile"]"#).replace("acme.test", "");
        let e = errors(&d);
        assert!(e.contains(&"tenants[0].hosts[0]: must be a host name, optionally with :port".to_string()), "{e:?}");
        assert!(e.contains(&"tenants[0].session.idle_timeout: must be at least 60 seconds".to_string()));
        assert!(e.contains(&"tenants[0].providers[0].scopes: must include \"openid\"".to_string()));
    }

    fn saml_doc(connection_extra: &str) -> String {
        doc("", "").replace(
            r#"]}]}"#,
            &format!(
                r#",{{"type":"saml","name":"corp-saml","label":"Corp SAML","idp_metadata_url":"https://idp.test/metadata"{connection_extra}}}]}}]}}"#
            ),
        )
    }

    /// A connection that fetches its metadata still has every field it gives checked
    /// (the metadata only fills what is left out).
    #[test]
    fn metadata_url_connections_are_validated_too() {
        assert_eq!(errors(&saml_doc("")), Vec::<String>::new());
        let e = errors(&saml_doc(
            r#","clock_skew":100000,"idp_certificates":["not a certificate"],"idp_sso_url":"http://idp.test/sso","idp_slo_url":"ftp://idp.test/slo""#,
        ));
        let p = "tenants[0].providers[1]";
        assert!(e.contains(&format!("{p}.clock_skew: must be at most 600 seconds")), "{e:?}");
        assert!(
            e.iter().any(|m| m.starts_with(&format!("{p}.idp_certificates[0]: not a usable certificate"))),
            "{e:?}"
        );
        assert!(e.contains(&format!("{p}.idp_sso_url: not an https URL")), "{e:?}");
        assert!(e.contains(&format!("{p}.idp_slo_url: not an https URL")), "{e:?}");
        assert!(errors(&saml_doc(r#","idp_metadata_url":"http://idp.test/metadata""#))
            .iter()
            .any(|m| m.contains("idp_metadata_url")));
    }

    /// Durations far beyond any use are configuration errors, so no time arithmetic on
    /// them (seconds to milliseconds, now plus a TTL) can overflow.
    #[test]
    fn huge_durations_are_refused() {
        let huge = u64::MAX;
        let e = errors(&doc(
            &format!(
                r#","mfa":{{"failure_window":{huge},"lockout":{huge},"step_up":[{{"path":"/a","max_age":{huge}}}]}}"#
            ),
            &format!(r#","iat_window":{huge},"discovery_ttl":{huge},"jwks_ttl":{huge}"#),
        ));
        for field in ["mfa.failure_window", "mfa.lockout", "mfa.step_up[0].max_age"] {
            assert!(e.iter().any(|m| m.starts_with(&format!("tenants[0].{field}: must be at most"))), "{field}: {e:?}");
        }
        for field in ["iat_window", "discovery_ttl", "jwks_ttl"] {
            assert!(
                e.iter().any(|m| m.starts_with(&format!("tenants[0].providers[0].{field}: must be at most"))),
                "{field}: {e:?}"
            );
        }
        let e = errors(&saml_doc(&format!(r#","metadata_ttl":{huge},"clock_skew":{huge}"#)));
        assert!(e.iter().any(|m| m.starts_with("tenants[0].providers[1].metadata_ttl: must be at most")), "{e:?}");
        assert!(e.iter().any(|m| m.starts_with("tenants[0].providers[1].clock_skew: must be at most")), "{e:?}");
        let e =
            errors(&doc("", "").replace(r#""cookie_keys""#, &format!(r#""last_seen_interval":{huge},"cookie_keys""#)));
        assert!(e.iter().any(|m| m.starts_with("gateway.last_seen_interval: must be at most")), "{e:?}");
    }

    #[test]
    fn second_factor_durations_are_bounded() {
        assert_eq!(
            errors(&doc(r#","mfa":{"fresh_sign_in":0}"#, "")),
            vec!["tenants[0].mfa.fresh_sign_in: must be between 30 and 3600 seconds: the time from a fresh IdP sign-in to adding a factor"]
        );
        assert_eq!(errors(&doc(r#","mfa":{"fresh_sign_in":30}"#, "")), Vec::<String>::new());
        assert_eq!(
            errors(&doc(r#","mfa":{"lockout":18446744073709551615}"#, "")),
            vec!["tenants[0].mfa.lockout: must be at most 86400 seconds"]
        );
    }

    #[test]
    fn empty_document_is_explained() {
        assert_eq!(errors("  "), vec!["PORTCULLIS_CONFIG: is empty: set it to the configuration document (JSON)"]);
    }

    #[test]
    fn tenants_are_selected_by_host() {
        let d = doc("", "").replace(r#""hosts":["acme.test"]"#, r#""hosts":["acme.test","127.0.0.1:8787"]"#);
        let l = Config::load(&d, &secrets).unwrap();
        assert!(l.config.tenant_for_host("acme.test").is_some());
        assert!(l.config.tenant_for_host("ACME.test:443").is_some());
        assert!(l.config.tenant_for_host("127.0.0.1:8787").is_some());
        assert!(l.config.tenant_for_host("127.0.0.1:9999").is_none());
        assert!(l.config.tenant_for_host("evil.test").is_none());
    }

    #[test]
    fn header_presets() {
        let mut h = HeaderSettings::default();
        assert_eq!(h.names().email.as_deref(), Some("X-Portcullis-Email"));
        h.preset = HeaderPreset::Oauth2Proxy;
        assert_eq!(h.names().user.as_deref(), Some("X-Auth-Request-User"));
        assert_eq!(h.names().name, None);
        h.email = Some(String::new());
        assert_eq!(h.names().email, None);
    }
}
