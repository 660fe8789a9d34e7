//! Identity providers: OIDC providers and SAML connections, and what loading parses for them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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

pub(super) fn default_metadata_ttl() -> u64 {
    86400
}

pub(super) fn default_name_id_format() -> String {
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

pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
pub(super) fn default_skew() -> u64 {
    60
}
pub(super) fn default_iat_window() -> u64 {
    600
}
pub(super) fn default_cache_ttl() -> u64 {
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

impl SamlConnection {
    /// Fills entity id, SSO URL and certificates from `idp_metadata` where not set.
    pub(super) fn import_metadata(&mut self) -> Result<(), String> {
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
