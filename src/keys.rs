//! Every Workers KV key and coordination-object name the gateway uses, in one place.
//!
//! Identifiers that come from outside (user ids, IdP session ids, state values, tokens) are
//! hashed before they become part of a key, so listing keys reveals none of them and no
//! value can reach into another key's shape. Each key starts with its kind and, where it
//! belongs to a tenant, the tenant id.

use crate::crypto::{hex, sha256, sha256_hex};

// --- Sessions -----------------------------------------------------------------------------

/// A session record, by the SHA-256 of the session id (the id itself is never a key).
pub fn session(tenant: &str, session_hash: &str) -> String {
    format!("sess:{tenant}:{session_hash}")
}

/// The prefix of a tenant's session records (the admin API lists them).
pub fn sessions_of_tenant(tenant: &str) -> String {
    format!("sess:{tenant}:")
}

/// The index of a user's sessions.
pub fn user_sessions(tenant: &str, user_id: &str) -> String {
    format!("usess:{tenant}:{}", sha256_hex(user_id.as_bytes()))
}

/// The index of the sessions an IdP session (OIDC `sid`, SAML `SessionIndex`) signed in.
pub fn idp_sessions(tenant: &str, provider: &str, sid: &str) -> String {
    format!("bsid:{tenant}:{provider}:{}", sha256_hex(sid.as_bytes()))
}

/// KV alone: the tombstone of a revoked session (by its record key).
pub fn tombstone(session_key: &str) -> String {
    format!("revoked:{session_key}")
}

/// The lease of one refresh of a session's tokens (in the user's object).
pub fn refresh_lease(session_key: &str, refresh_token: &str) -> String {
    format!("r:{session_key}:{}", &sha256_hex(refresh_token.as_bytes())[..32])
}

/// The coordination object's key for one session's revocation (in the user's object).
pub fn revocation(session_key: &str) -> String {
    format!("s:{session_key}")
}

/// The coordination object's key for "every session of this user created before now".
pub const USER_REVOCATION: &str = "user";

// --- Pre-login state and one-time values --------------------------------------------------

/// OIDC pre-login state, by the hash of the `state` value.
pub fn oidc_state(tenant: &str, state: &str) -> String {
    format!("state:{tenant}:{}", sha256_hex(state.as_bytes()))
}

/// SAML pre-login state, by the hash of the RelayState.
pub fn saml_state(tenant: &str, relay_state: &str) -> String {
    format!("samlstate:{tenant}:{}", sha256_hex(relay_state.as_bytes()))
}

/// A site's pending hand-off from its sign-in host, by the hash of its `state`.
pub fn handoff_state(site: &str, state: &str) -> String {
    format!("sso-state:{site}:{}", sha256_hex(state.as_bytes()))
}

/// A hand-off code a sign-in host issued for one site, by the hash of the code.
pub fn handoff_code(sign_in_tenant: &str, code: &str) -> String {
    format!("sso-code:{sign_in_tenant}:{}", sha256_hex(code.as_bytes()))
}

/// The site sessions a sign-in host's session has handed out (by the central session's
/// hash), so that ending it ends them.
pub fn central_sites(sign_in_tenant: &str, session_hash: &str) -> String {
    format!("sso-sites:{sign_in_tenant}:{session_hash}")
}

/// When a site last saw the person of a central session (by its hash): use of the sites
/// keeps the sign-in host's session from idling out.
pub fn central_activity(sign_in_tenant: &str, session_hash: &str) -> String {
    format!("sso-active:{sign_in_tenant}:{session_hash}")
}

/// KV alone: the marker that a one-time value (by its key) was spent.
pub fn used(key: &str) -> String {
    format!("used:{key}")
}

/// A back-channel logout token, by issuer and `jti`.
pub fn logout_token(tenant: &str, issuer: &str, jti: &str) -> String {
    format!("jti:{tenant}:{}", sha256_hex(format!("{issuer}\n{jti}").as_bytes()))
}

/// A SAML assertion, by issuer and ID: each is accepted once (profile 4.1.4.5).
pub fn saml_assertion(tenant: &str, issuer: &str, assertion_id: &str) -> String {
    format!("samlid:{tenant}:{}", sha256_hex(format!("{issuer}\n{assertion_id}").as_bytes()))
}

/// A SAML LogoutRequest, by connection, issuer and ID: each is acted on once.
pub fn saml_logout_request(tenant: &str, connection: &str, issuer: &str, id: &str) -> String {
    format!("slo:{tenant}:{}", sha256_hex(format!("{connection}\n{issuer}\n{id}").as_bytes()))
}

// --- Second factor ------------------------------------------------------------------------

/// A user's second-factor record.
pub fn mfa(tenant: &str, user_id: &str) -> String {
    format!("mfa:{tenant}:{}", sha256_hex(user_id.as_bytes()))
}

/// KV alone: a user's lock, in a key of its own that is only ever written with a lock.
pub fn mfa_lock(tenant: &str, user_id: &str) -> String {
    format!("mfa-lock:{tenant}:{}", sha256_hex(user_id.as_bytes()))
}

/// A session's pending enrolment secret (per session, never per user).
pub fn mfa_enrolment(tenant: &str, session_hash: &str) -> String {
    format!("mfa-enrol:{tenant}:{session_hash}")
}

/// The coordination object's claim of one TOTP time step.
pub fn totp_step(step: u64) -> String {
    format!("totp:{step}")
}

/// The coordination object's claim of one backup code, by its stored hash.
pub fn backup_code(hash: &str) -> String {
    format!("backup:{}", &sha256_hex(hash.as_bytes())[..32])
}

/// A session's outstanding WebAuthn challenge of one ceremony (`create` or `get`): per
/// session, stored with the challenge's lifetime as TTL and deleted when it is used.
pub fn passkey_challenge(tenant: &str, session_hash: &str, ceremony: &str) -> String {
    format!("pk-chal:{tenant}:{session_hash}:{ceremony}")
}

/// The coordination object's claim of one WebAuthn challenge (each is used once).
pub fn webauthn_challenge(challenge: &[u8]) -> String {
    format!("webauthn:{}", &sha256_hex(challenge)[..32])
}

/// The coordination object's failure count of a user.
pub const MFA_FAILURES: &str = "mfa-failures";

/// The coordination object's claim that lets one enrolment of a user through.
pub const MFA_ENROLLED: &str = "mfa-enrolled";

// --- Providers ----------------------------------------------------------------------------

/// A provider's discovery document (by tenant and provider).
pub fn discovery(provider: &str) -> String {
    format!("disc:{provider}")
}

/// A provider's JWKS.
pub fn jwks(provider: &str) -> String {
    format!("jwks:{provider}")
}

/// A SAML IdP's metadata.
pub fn saml_metadata(provider: &str) -> String {
    format!("samlmd:{provider}")
}

// --- Machines and audit -------------------------------------------------------------------

/// The prefix of a tenant's service tokens.
pub fn service_tokens_of_tenant(tenant: &str) -> String {
    format!("svc:{tenant}:")
}

/// A service token, by client id.
pub fn service_token(tenant: &str, client_id: &str) -> String {
    format!("svc:{tenant}:{client_id}")
}

/// An audit event, ordered by time: `day` is `YYYY-MM-DD`, `ms` the event's time.
pub fn audit_event(tenant: &str, day: &str, ms: u64, random: [u8; 4]) -> String {
    format!("audit:{tenant}:{day}:{ms:013}:{}", hex(&random))
}

/// The prefix of a tenant's audit events of one day.
pub fn audit_day(tenant: &str, day: &str) -> String {
    format!("audit:{tenant}:{day}:")
}

// --- Coordination objects -----------------------------------------------------------------

/// One-time values of a tenant are spread over this many objects.
pub const BUCKETS: u32 = 64;

/// The object that holds what concerns one user: session and user revocations, refresh
/// leases, TOTP steps, backup codes and the MFA failure count.
pub fn user_shard(tenant: &str, user_id: &str) -> String {
    format!("u:{tenant}:{}", &sha256_hex(user_id.as_bytes())[..32])
}

/// The object for a one-time value of `kind` (`state`, `saml`, `jti`): a tenant's values are
/// spread over [`BUCKETS`] objects by hash.
pub fn bucket_shard(tenant: &str, kind: &str, value: &str) -> String {
    let h = sha256(value.as_bytes());
    let bucket = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % BUCKETS;
    format!("b:{tenant}:{kind}:{bucket}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored data outlives a deployment: a key shape that changes strands what is stored
    /// under the old one (sessions, second-factor records). These are the shapes in use.
    #[test]
    fn key_shapes_stay_as_stored() {
        let h = sha256_hex(b"u1");
        assert_eq!(mfa("t", "u1"), format!("mfa:t:{h}"));
        assert_eq!(user_sessions("t", "u1"), format!("usess:t:{h}"));
        assert_eq!(session("t", "abc"), "sess:t:abc");
        assert!(session("t", "abc").starts_with(&sessions_of_tenant("t")));
        assert!(service_token("t", "c").starts_with(&service_tokens_of_tenant("t")));
        assert!(audit_event("t", "2026-01-02", 5, [0, 1, 2, 3]).starts_with(&audit_day("t", "2026-01-02")));
        assert_eq!(audit_event("t", "2026-01-02", 5, [0, 1, 2, 3]), "audit:t:2026-01-02:0000000000005:00010203");
        assert_eq!(user_shard("t", "u1"), format!("u:t:{}", &h[..32]));
        assert!(bucket_shard("t", "state", "x").starts_with("b:t:state:"));
        assert_eq!(passkey_challenge("t", "abc", "get"), "pk-chal:t:abc:get");
        assert_eq!(saml_assertion("t", "i", "a"), format!("samlid:t:{}", sha256_hex(b"i\na")));
        assert_eq!(saml_logout_request("t", "c", "i", "r"), format!("slo:t:{}", sha256_hex(b"c\ni\nr")));
        assert_eq!(handoff_code("t", "c"), format!("sso-code:t:{}", sha256_hex(b"c")));
        assert_eq!(handoff_state("t", "s"), format!("sso-state:t:{}", sha256_hex(b"s")));
        assert_eq!(central_sites("t", "abc"), "sso-sites:t:abc");
        assert_eq!(central_activity("t", "abc"), "sso-active:t:abc");
    }
}
