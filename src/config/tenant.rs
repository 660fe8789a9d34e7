//! A tenant: its hosts, origin, rules, second factor, identity headers and machine clients.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::provider::*;

use super::*;

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
    /// A sign-in host (a tenant with `sites`) may leave it out: its other paths then show
    /// the sites the person can open.
    #[serde(default)]
    pub origin: String,
    /// Makes this tenant the **sign-in host** of these tenants (by id), its *sites*: people
    /// sign in here once (IdP and second factor), and each site gets its own host-only
    /// session through a single-use code of at most 60 seconds, redeemed server-side. A
    /// site has no providers of its own and takes its second-factor settings from here,
    /// except its `step_up` rules; its policy still decides who may use it.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Set at load: the tenant whose `sites` lists this one (its sign-in host).
    #[serde(skip)]
    pub sign_in_via: Option<String>,
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

pub(super) fn default_origin_timeout() -> u64 {
    100_000
}

pub(super) fn default_bearer_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}
pub(super) fn default_principals() -> Vec<PrincipalKind> {
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
    /// The second factors users may enrol and sign in with (backup codes always work
    /// as the recovery path). Default: both, passkey first.
    pub methods: Vec<MfaMethod>,
    pub passkey: PasskeySettings,
}

/// A second factor a tenant offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MfaMethod {
    Passkey,
    Totp,
}

/// Passkeys (WebAuthn) for a tenant.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeySettings {
    /// Whether the authenticator must verify the user (PIN, biometrics): `required`,
    /// `preferred` (default) or `discouraged`.
    pub user_verification: crate::webauthn::UserVerification,
    /// `none` (default) accepts any authenticator; `packed` verifies packed attestation.
    pub attestation: crate::webauthn::AttestationPolicy,
    /// Whether passkeys should be discoverable (`required`, `preferred`, `discouraged`).
    pub resident_key: crate::webauthn::options::ResidentKey,
    /// The relying party id; default: the host of the request. A registrable suffix of
    /// every host of the tenant (passkeys then work on all of them).
    pub rp_id: Option<String>,
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
            methods: vec![MfaMethod::Passkey, MfaMethod::Totp],
            passkey: PasskeySettings::default(),
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

    pub fn allows(&self, method: MfaMethod) -> bool {
        self.methods.contains(&method)
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
    /// Which factor counts: `any` (default) or `passkey` (phishing-resistant only).
    #[serde(default)]
    pub factor: StepUpFactor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StepUpFactor {
    #[default]
    Any,
    Passkey,
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
