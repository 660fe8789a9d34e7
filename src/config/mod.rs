//! The configuration document: tenants, their origin, identity providers, policy and
//! session settings. Secrets never appear in it; it names Worker secrets instead.
//!
//! [`Config::load`] parses and validates the whole document once per isolate. Every problem
//! is reported with the path of the field and what is wrong, all at once, e.g.
//! `tenants[1].providers[0].issuer: not an https URL`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::KeyWithId;
use crate::secret::{Secret, Secrets};

#[cfg(any(target_arch = "wasm32", test))]
mod json_path;
mod provider;
mod tenant;
#[cfg(test)]
mod tests;
mod validate;

pub use provider::*;
pub use tenant::*;
pub use validate::is_idp_url;

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
        let config = parse(document).map_err(|e| ConfigErrors(vec![e]))?;
        config.validate(secrets)
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

/// Deserialises the document (validation follows), a refusal naming the field's path. The
/// native build (`portcullis check`, which the build runs on a bundled document) tracks the
/// path while deserialising; the Worker finds it from the error's position afterwards
/// ([`json_path`]), without the tracking code in its wasm.
fn parse(document: &str) -> Result<Config, ConfigError> {
    #[cfg(not(target_arch = "wasm32"))]
    return parse_tracked(document);
    #[cfg(target_arch = "wasm32")]
    return parse_located(document);
}

#[cfg(not(target_arch = "wasm32"))]
fn parse_tracked(document: &str) -> Result<Config, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(document);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json appends " at line L column C"; keep it, it helps find the spot.
        ConfigError { path: if path == "." { String::new() } else { path }, message: inner.to_string() }
    })
}

#[cfg(any(target_arch = "wasm32", test))]
fn parse_located(document: &str) -> Result<Config, ConfigError> {
    // As parse_tracked: the same deserializer, and nothing checked after the document's value.
    let de = &mut serde_json::Deserializer::from_str(document);
    Config::deserialize(de)
        .map_err(|e| ConfigError { path: json_path::error_path(document, &e), message: e.to_string() })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map(|(h, _)| &host[..h.len() + 1]).unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}
