//! Sessions: the signed `__Host-` cookie that names a session, the KV record behind it,
//! and the idle/absolute expiry rules. Revoking a session is deleting its record.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::SessionSettings;
use crate::crypto::{b64url, b64url_decode, ct_eq, hmac_sha256, sha256_hex, KeyWithId};

pub const SESSION_COOKIE: &str = "__Host-portcullis_session";
pub const PENDING_COOKIE: &str = "__Host-portcullis_pending";

/// A session id: 256 random bits, base64url. `Debug` shows only a short hash (the handle).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.handle())
    }
}

impl SessionId {
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(b64url(&bytes))
    }

    /// The KV key of the record. The id itself is never a key, so reading KV keys (an
    /// admin listing) does not reveal usable session ids.
    pub fn kv_key(&self, tenant: &str) -> String {
        crate::keys::session(tenant, &self.hash())
    }

    /// Full SHA-256 of the id, hex: the session's public identifier.
    pub fn hash(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }

    /// Short identifier for log lines.
    pub fn handle(&self) -> String {
        self.hash()[..16].to_owned()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    Malformed,
    UnknownKey,
    BadSignature,
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CookieError::Malformed => "malformed cookie",
            CookieError::UnknownKey => "cookie signed with an unknown key id",
            CookieError::BadSignature => "cookie signature does not verify",
        })
    }
}

fn mac(key: &KeyWithId, purpose: &str, tenant: &str, value: &str) -> String {
    b64url(&hmac_sha256(&key.derive("cookie"), &[purpose.as_bytes(), tenant.as_bytes(), value.as_bytes()]))
}

/// `v1.{kid}.{id}.{mac}`: signed with the first (newest) key.
pub fn sign_session_cookie(keys: &[KeyWithId], tenant: &str, id: &SessionId) -> Option<String> {
    let key = keys.first()?;
    Some(format!("v1.{}.{}.{}", key.id, id.0, mac(key, "session", tenant, &id.0)))
}

/// Verifies with whichever configured key the cookie names, so keys rotate without logouts.
pub fn verify_session_cookie(keys: &[KeyWithId], tenant: &str, value: &str) -> Result<SessionId, CookieError> {
    if value.len() > 256 {
        return Err(CookieError::Malformed);
    }
    let mut it = value.split('.');
    let (Some("v1"), Some(kid), Some(id), Some(sig), None) = (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(CookieError::Malformed);
    };
    if b64url_decode(id).map(|b| b.len()) != Some(32) {
        return Err(CookieError::Malformed);
    }
    let key = keys.iter().find(|k| k.id == kid).ok_or(CookieError::UnknownKey)?;
    if ct_eq(mac(key, "session", tenant, id).as_bytes(), sig.as_bytes()) {
        Ok(SessionId(id.to_owned()))
    } else {
        Err(CookieError::BadSignature)
    }
}

/// The pending-login cookie: a keyed hash of the login's `state`, binding it to this browser.
pub fn pending_cookie(keys: &[KeyWithId], tenant: &str, state: &str) -> Option<String> {
    let key = keys.first()?;
    Some(format!("v1.{}.{}", key.id, mac(key, "pending", tenant, state)))
}

/// Whether the pending cookie was made for `state` (constant-time comparison).
pub fn pending_cookie_matches(keys: &[KeyWithId], tenant: &str, cookie: &str, state: &str) -> bool {
    let mut it = cookie.split('.');
    let (Some("v1"), Some(kid), Some(sig), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return false;
    };
    keys.iter()
        .find(|k| k.id == kid)
        .is_some_and(|k| ct_eq(mac(k, "pending", tenant, state).as_bytes(), sig.as_bytes()))
}

/// A CSRF token for forms of a session (logout, MFA, admin writes).
pub fn csrf_token(keys: &[KeyWithId], tenant: &str, id: &SessionId) -> Option<String> {
    keys.first().map(|k| mac(k, "csrf", tenant, &id.0))
}

pub fn csrf_matches(keys: &[KeyWithId], tenant: &str, id: &SessionId, token: &str) -> bool {
    keys.iter().any(|k| ct_eq(mac(k, "csrf", tenant, &id.0).as_bytes(), token.as_bytes()))
}

/// `Set-Cookie` value for a `__Host-` cookie (Secure, Path=/, no Domain).
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, same_site: &str) -> String {
    let mut c = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MfaState {
    /// No second factor is asked for this session.
    #[default]
    NotRequired,
    /// Signed in at the IdP, second factor still due: the origin never sees this session.
    Pending,
    /// Second factor done (`mfa_at` says when).
    Verified,
}

/// Where a site's session came from: its sign-in host (tenant id) and that session's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentralLink {
    pub tenant: String,
    pub session: String,
}

/// The session record stored in KV.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionRecord {
    pub v: u8,
    pub tenant: String,
    /// Stable user id: `{iss}/{sub}` (OIDC) or `{idp entity id}/{NameID}` (SAML).
    pub user_id: String,
    /// The mapped user claim (default `sub`).
    pub user: String,
    pub provider: String,
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    #[serde(default)]
    pub amr: Vec<String>,
    pub created: u64,
    pub last_seen: u64,
    /// Absolute expiry (unix seconds).
    pub expires: u64,
    #[serde(default)]
    pub mfa: MfaState,
    #[serde(default)]
    pub mfa_at: Option<u64>,
    /// The IdP's session id (`sid`), for back-channel logout.
    #[serde(default)]
    pub idp_sid: Option<String>,
    /// Tokens needed later (refresh token, ID token for logout), sealed with AES-GCM.
    #[serde(default)]
    pub tokens: Option<String>,
    /// When the access token expires (refresh is due shortly before).
    #[serde(default)]
    pub access_expires: Option<u64>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    /// Further mapped attributes (name -> values).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, Vec<String>>,
    /// Sign-in time in milliseconds, for revocation checks at the coordinator (a user-wide
    /// revocation applies to sessions created before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
    /// When the IdP confirmed a fresh sign-in that the gateway asked for (`prompt=login`
    /// with `max_age=0`, SAML `ForceAuthn`): what adding a second factor needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth_at: Option<u64>,
    /// When a passkey was last verified in this session (for step-up rules that demand one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_at: Option<u64>,
    /// A site's session: the sign-in host's session it was handed out from. It ends when
    /// that one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<CentralLink>,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("tenant", &self.tenant)
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("mfa", &self.mfa)
            .field("tokens", &self.tokens.as_ref().map(|_| "[sealed]"))
            .finish_non_exhaustive()
    }
}

/// The tokens kept sealed in a session record.
#[derive(Clone, Serialize, Deserialize, Default)]
pub struct StoredTokens {
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

impl fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredTokens([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Absolute,
}

impl SessionRecord {
    /// The session's identity as claims, for policy rules' claim conditions: `sub` (the
    /// user id), `user`, `idp`, `email`, `email_verified`, `name`, `given_name`,
    /// `family_name`, `preferred_username`, `groups`, `roles`, `amr`, and the mapped
    /// attributes by name.
    pub fn claims(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut m = serde_json::Map::new();
        for (k, v) in &self.attributes {
            m.insert(k.clone(), json!(v));
        }
        let mut put = |k: &str, v: serde_json::Value| {
            if !v.is_null() {
                m.insert(k.to_owned(), v);
            }
        };
        put("sub", json!(self.user_id));
        put("user", json!(self.user));
        put("idp", json!(self.provider));
        put("email", json!(self.email));
        put("email_verified", json!(self.email_verified));
        put("name", json!(self.name));
        put("given_name", json!(self.given_name));
        put("family_name", json!(self.family_name));
        put("preferred_username", json!(self.preferred_username));
        put("groups", json!(self.groups));
        put("roles", json!(self.roles));
        put("amr", json!(self.amr));
        m
    }

    /// When the session was created, in milliseconds.
    pub fn created_ms(&self) -> u64 {
        self.created_ms.unwrap_or(self.created.saturating_mul(1000))
    }

    /// Idle and absolute expiry, checked on every request.
    pub fn check_times(&self, now: u64, settings: &SessionSettings) -> Result<(), Expiry> {
        if now >= self.expires {
            return Err(Expiry::Absolute);
        }
        if now >= self.last_seen.saturating_add(settings.idle_timeout) {
            return Err(Expiry::Idle);
        }
        Ok(())
    }

    /// KV TTL for a write at `now`: the record disappears by itself when it would expire.
    pub fn kv_ttl(&self, now: u64, settings: &SessionSettings) -> u64 {
        let idle_left = settings.idle_timeout;
        let abs_left = self.expires.saturating_sub(now);
        idle_left.min(abs_left).max(60)
    }

    /// Whether the last-seen time should be written again (KV takes about one write per
    /// second per key; sessions only need minute precision).
    pub fn touch_due(&self, now: u64, interval: u64) -> bool {
        now >= self.last_seen.saturating_add(interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn keys() -> Vec<KeyWithId> {
        vec![
            KeyWithId { id: "k2".into(), key: Secret::new(vec![2u8; 32]) },
            KeyWithId { id: "k1".into(), key: Secret::new(vec![1u8; 32]) },
        ]
    }

    #[test]
    fn cookie_round_trip_and_rotation() {
        let id = SessionId::from_random([9; 32]);
        let k = keys();
        let c = sign_session_cookie(&k, "acme", &id).unwrap();
        assert!(c.starts_with("v1.k2."));
        assert_eq!(verify_session_cookie(&k, "acme", &c).unwrap(), id);
        // Made with the older key: still valid while that key is configured.
        let old = sign_session_cookie(&k[1..], "acme", &id).unwrap();
        assert_eq!(verify_session_cookie(&k, "acme", &old).unwrap(), id);
        assert_eq!(verify_session_cookie(&k[..1], "acme", &old), Err(CookieError::UnknownKey));
    }

    #[test]
    fn tampered_or_foreign_cookies_are_refused() {
        let id = SessionId::from_random([9; 32]);
        let k = keys();
        let c = sign_session_cookie(&k, "acme", &id).unwrap();
        assert_eq!(verify_session_cookie(&k, "other-tenant", &c), Err(CookieError::BadSignature));
        let other = SessionId::from_random([8; 32]);
        let swapped = c.replace(id.expose(), other.expose());
        assert_eq!(verify_session_cookie(&k, "acme", &swapped), Err(CookieError::BadSignature));
        let mut flipped = c.clone();
        flipped.pop();
        flipped.push(if c.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(verify_session_cookie(&k, "acme", &flipped), Err(CookieError::BadSignature));
        assert_eq!(verify_session_cookie(&k, "acme", "garbage"), Err(CookieError::Malformed));
        assert_eq!(verify_session_cookie(&k, "acme", "v1.k2.short.sig"), Err(CookieError::Malformed));
    }

    #[test]
    fn pending_cookie_binds_state() {
        let k = keys();
        let c = pending_cookie(&k, "acme", "state-1").unwrap();
        assert!(pending_cookie_matches(&k, "acme", &c, "state-1"));
        assert!(!pending_cookie_matches(&k, "acme", &c, "state-2"));
        assert!(!pending_cookie_matches(&k, "beta", &c, "state-1"));
    }

    #[test]
    fn idle_and_absolute_expiry() {
        let s = SessionSettings { idle_timeout: 3600, absolute_timeout: 8 * 3600 };
        let mut r: SessionRecord = serde_json::from_value(serde_json::json!({
            "v":1,"tenant":"t","user_id":"u","user":"u","provider":"p","email":null,"name":null,
            "given_name":null,"family_name":null,"preferred_username":null,"groups":[],"roles":[],
            "created":1000,"last_seen":1000,"expires":1000 + 8*3600
        }))
        .unwrap();
        assert_eq!(r.check_times(1000 + 3599, &s), Ok(()));
        assert_eq!(r.check_times(1000 + 3600, &s), Err(Expiry::Idle));
        r.last_seen = 1000 + 8 * 3600 - 10;
        assert_eq!(r.check_times(1000 + 8 * 3600, &s), Err(Expiry::Absolute));
        assert_eq!(r.kv_ttl(1000 + 8 * 3600 - 100, &s), 100);
        assert_eq!(r.kv_ttl(1000, &s), 3600);
    }
}
