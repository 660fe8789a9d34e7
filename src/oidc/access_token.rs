//! JWT access tokens presented as `Authorization: Bearer` (RFC 6750), validated after RFC
//! 9068 section 4 ("Validating JWT Access Tokens") with the verifier ID tokens use: the same
//! decoding, `crit` refusal, algorithm and key rules and signature check
//! ([`UntrustedIdToken::verify`]), the same `iss` and time rules ([`check_issuer`],
//! [`check_times`]); only the claims that differ are checked here (`typ`, `aud` against the
//! accepted resources, scopes, the principal).

use std::fmt;

use serde_json::{Map, Value};

use super::id_token::{audience_list, check_issuer, check_times, IdTokenError, TokenClaims, TokenProfile};

/// What an access token from one issuer must satisfy.
#[derive(Debug, Clone)]
pub struct AccessTokenExpectations<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain at least one of these (RFC 9068 4, step 3).
    pub audiences: &'a [String],
    /// Every one of these must be granted (`scope`, space-separated, or `scp`).
    pub scopes: &'a [String],
    /// Accepted signature algorithms (a subset of the asymmetric allow-list; never HMAC).
    pub algorithms: &'a [String],
    /// RFC 9068 2.1: `typ` must be `at+jwt` (or `application/at+jwt`).
    pub require_typ: bool,
    pub now: u64,
    pub skew: u64,
}

/// Who an access token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A client acting for itself (client credentials: no end user, `sub` is the client).
    Machine,
    /// A client acting for a user (`sub` is someone other than the client).
    User,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Machine => "machine",
            PrincipalKind::User => "user",
        }
    }
}

/// What an access token (or a checked service token) says about its principal, as
/// [`VerifiedAccessToken`] holds it.
#[derive(Clone, PartialEq)]
pub struct AccessTokenClaims {
    pub iss: String,
    /// `sub`, or the client for a token without one.
    pub sub: String,
    /// `client_id` (RFC 9068), else `azp`, else `sub`.
    pub client_id: String,
    pub kind: PrincipalKind,
    pub scopes: Vec<String>,
    pub exp: i64,
    pub claims: Map<String, Value>,
}

/// An access token whose signature and claims passed every check: made only by the access-token profile of the shared verifier, so holding one is proof that
/// every check passed. Read what it says through [`AccessTokenClaims`] (`Deref`).
#[derive(Clone, PartialEq)]
pub struct VerifiedAccessToken(AccessTokenClaims);

impl std::ops::Deref for VerifiedAccessToken {
    type Target = AccessTokenClaims;
    fn deref(&self) -> &AccessTokenClaims {
        &self.0
    }
}

impl VerifiedAccessToken {
    /// What the verified token says, for keeping after the proof is no longer needed.
    pub fn into_claims(self) -> AccessTokenClaims {
        self.0
    }
}

impl PartialEq<AccessTokenClaims> for VerifiedAccessToken {
    fn eq(&self, other: &AccessTokenClaims) -> bool {
        &self.0 == other
    }
}

impl fmt::Debug for VerifiedAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for AccessTokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedAccessToken")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("client_id", &self.client_id)
            .field("kind", &self.kind)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The scopes a token grants: `scope` (RFC 9068 2.2.3, space-separated) or `scp` (a list or
/// a string, as several issuers write it).
pub fn granted_scopes(claims: &Map<String, Value>) -> Vec<String> {
    let split = |s: &str| s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect::<Vec<_>>();
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => split(s),
        (_, Some(Value::String(s))) => split(s),
        (_, Some(Value::Array(a))) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

impl TokenProfile for AccessTokenExpectations<'_> {
    type Verified = VerifiedAccessToken;

    fn accepts_alg(&self, alg: &str) -> bool {
        self.algorithms.iter().any(|a| a == alg)
    }

    fn check_header(&self, header: &Map<String, Value>) -> Result<(), IdTokenError> {
        if !self.require_typ {
            return Ok(());
        }
        let typ = header.get("typ").and_then(Value::as_str);
        match typ {
            Some(t) if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt") => Ok(()),
            other => Err(IdTokenError::WrongType(other.map(str::to_owned))),
        }
    }

    fn check_claims(
        &self,
        claims: TokenClaims,
        _alg: String,
        _kid: Option<String>,
    ) -> Result<VerifiedAccessToken, IdTokenError> {
        // Step 2 (as an ID token's): `iss` exactly the issuer.
        let iss = check_issuer(&claims, self.issuer)?.to_owned();
        // Step 3: `aud` names a resource this gateway stands for.
        let aud = audience_list(&claims);
        if !aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(IdTokenError::AudienceNotAccepted(aud));
        }
        // Step 7 (and `nbf`, `iat`), as for an ID token.
        let (exp, _) = check_times(&claims, self.now, self.skew)?;
        let c = claims.custom;
        // An ID token is no access token, even for an audience both share: `nonce` and
        // `at_hash` exist only in ID tokens (OIDC Core 2, 3.1.3.6).
        if c.contains_key("nonce") || c.contains_key("at_hash") {
            return Err(IdTokenError::WrongKind("an ID token (nonce or at_hash) is not an access token"));
        }
        let str_claim = |n: &str| c.get(n).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let client_id = str_claim("client_id").or_else(|| str_claim("azp"));
        let sub = str_claim("sub");
        // Some issuers name the client in `sub` with a suffix and mark the grant instead.
        let client_grant = str_claim("gty").is_some_and(|g| g == "client-credentials");
        let (sub, client_id, kind) = match (sub, client_id) {
            (Some(s), Some(c)) if s == c || client_grant => (s, c, PrincipalKind::Machine),
            (Some(s), Some(c)) => (s, c, PrincipalKind::User),
            // RFC 9068 requires `sub`; a client-credentials token without one speaks for
            // its client.
            (None, Some(c)) => (c.clone(), c, PrincipalKind::Machine),
            // Without a client, the token cannot say whether a user is behind it: only the
            // issuer's word that `sub` is a client would make it a machine, so it is a user.
            (Some(s), None) => (s.clone(), s, PrincipalKind::User),
            (None, None) => return Err(IdTokenError::MissingSub),
        };
        let scopes = granted_scopes(&c);
        if let Some(missing) = self.scopes.iter().find(|s| !scopes.contains(s)) {
            return Err(IdTokenError::ScopeMissing(missing.clone()));
        }
        Ok(VerifiedAccessToken(AccessTokenClaims { iss, sub, client_id, kind, scopes, exp, claims: c }))
    }
}
