//! ID token validation after OpenID Connect Core 1.0, section 3.1.3.7 ("ID Token
//! Validation"), plus `nbf` (RFC 7519 4.1.5) and `at_hash` (3.1.3.8 / 3.2.2.9).
//!
//! An [`UntrustedIdToken`] becomes a [`VerifiedIdToken`] only through
//! [`UntrustedIdToken::verify`]. The order of the checks differs from the spec's list
//! on purpose: the signature is verified before any claim is trusted, and the spec's step
//! numbers are kept in the comments so a reviewer can tick them off.
//!
//! Why one long file: the validation steps of Core 3.1.3.7, shared by ID, logout and access
//! tokens through `TokenProfile`, are kept in one place and in the spec's order.

use std::fmt;

use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa};
use jwt_compact::{AlgorithmExt, Claims, UntrustedToken};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::crypto::{b64url, ct_eq};
use crate::oidc::jwks::{Jwk, PublicKey};

pub use crate::crypto::ASYMMETRIC_JWS_ALGS as ASYMMETRIC_ALGS;
pub const HMAC_ALGS: &[&str] = &["HS256", "HS384", "HS512"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    Malformed(String),
    /// Step 1: an encrypted (JWE) token; not supported.
    Encrypted,
    /// Step 2.
    IssuerMismatch {
        expected: String,
        actual: String,
    },
    /// Step 3.
    AudienceMissingClient,
    UntrustedAudience(String),
    /// Step 4.
    AzpMissing,
    /// Step 5.
    AzpMismatch(String),
    /// Step 6.
    UnknownKey(Option<String>),
    BadSignature,
    /// Step 7/8.
    AlgorithmNotAllowed(String),
    KeyAlgorithmMismatch {
        alg: String,
        kid: Option<String>,
    },
    /// Step 9.
    Expired {
        exp: i64,
        now: u64,
    },
    MissingExp,
    NotYetValid {
        nbf: i64,
        now: u64,
    },
    /// Step 10.
    MissingIat,
    IatInFuture {
        iat: i64,
        now: u64,
    },
    IatTooOld {
        iat: i64,
        now: u64,
    },
    /// Step 11.
    NonceMissing,
    NonceMismatch,
    /// 3.1.3.8.
    AtHashMismatch,
    MissingSub,
    /// Back-Channel Logout 1.0, 2.6: the logout token's own rules.
    LogoutEventMissing,
    LogoutNonceForbidden,
    LogoutSubjectMissing,
    LogoutJtiMissing,
    /// RFC 7515 4.1.11: the header marks parameters as critical (none is understood here),
    /// or its `crit` is malformed.
    CriticalHeader(Vec<String>),
    /// Back-Channel Logout 1.0, 2.4: a `typ` other than `logout+jwt`.
    LogoutTokenType(String),
    /// RFC 9068 2.1 / 4: an access token must be typed `at+jwt` where that is required.
    WrongType(Option<String>),
    /// A token of the other kind: an ID token presented as an access token (it carries
    /// `nonce` or `at_hash`), or an access token (`typ: at+jwt`) presented as an ID token.
    WrongKind(&'static str),
    /// RFC 9068 4: `aud` names none of the resources the gateway accepts.
    AudienceNotAccepted(Vec<String>),
    /// The token lacks a scope the issuer's configuration requires.
    ScopeMissing(String),
}

impl fmt::Display for IdTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use IdTokenError::*;
        match self {
            Malformed(e) => write!(f, "malformed ID token: {e}"),
            Encrypted => f.write_str("encrypted ID tokens are not supported"),
            IssuerMismatch { expected, actual } => {
                write!(f, "iss {actual:?} is not the provider's issuer {expected:?}")
            }
            AudienceMissingClient => f.write_str("aud does not contain the client id"),
            UntrustedAudience(a) => write!(f, "aud contains untrusted audience {a:?}"),
            AzpMissing => f.write_str("several audiences but no azp"),
            AzpMismatch(a) => write!(f, "azp {a:?} is not the client id"),
            UnknownKey(kid) => write!(f, "no key in the provider's JWKS for kid {kid:?}"),
            BadSignature => f.write_str("signature does not verify"),
            AlgorithmNotAllowed(a) => write!(f, "signature algorithm {a:?} is not allowed"),
            KeyAlgorithmMismatch { alg, kid } => write!(f, "key {kid:?} cannot verify {alg}"),
            Expired { exp, now } => write!(f, "expired (exp {exp}, now {now})"),
            MissingExp => f.write_str("exp is missing"),
            NotYetValid { nbf, now } => write!(f, "not valid yet (nbf {nbf}, now {now})"),
            MissingIat => f.write_str("iat is missing"),
            IatInFuture { iat, now } => write!(f, "issued in the future (iat {iat}, now {now})"),
            IatTooOld { iat, now } => write!(f, "issued too long ago (iat {iat}, now {now})"),
            NonceMissing => f.write_str("nonce is missing"),
            NonceMismatch => f.write_str("nonce does not match the login's nonce"),
            AtHashMismatch => f.write_str("at_hash does not match the access token"),
            MissingSub => f.write_str("sub is missing"),
            LogoutEventMissing => f.write_str("events has no back-channel logout event"),
            LogoutNonceForbidden => f.write_str("a logout token must not contain a nonce"),
            LogoutSubjectMissing => f.write_str("a logout token needs sub or sid"),
            LogoutJtiMissing => f.write_str("jti is missing"),
            CriticalHeader(names) => {
                write!(f, "header marks parameters as critical that are not understood: {names:?}")
            }
            LogoutTokenType(t) => write!(f, "typ {t:?} is not logout+jwt"),
            WrongType(t) => write!(f, "typ {t:?} is not at+jwt"),
            WrongKind(what) => write!(f, "{what}"),
            AudienceNotAccepted(a) => write!(f, "aud {a:?} names no accepted audience"),
            ScopeMissing(s) => write!(f, "scope {s:?} is missing"),
        }
    }
}

/// What the ID token must be checked against.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// Regexes (already anchored) of audiences trusted besides the client id.
    pub trusted_audiences: &'a [regex_lite::Regex],
    /// The client secret, when HMAC-signed tokens are allowed for this provider.
    pub hmac_secret: Option<&'a [u8]>,
    pub now: u64,
    pub skew: u64,
    pub iat_window: u64,
    /// The nonce sent in the authentication request (`None` for refresh-time tokens).
    pub nonce: Option<&'a str>,
    pub access_token: Option<&'a str>,
}

/// A token as received: nothing in it is trusted yet.
#[derive(Clone)]
pub struct UntrustedIdToken {
    raw: String,
}

impl fmt::Debug for UntrustedIdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UntrustedIdToken([redacted])")
    }
}

/// The claims of an ID token, as [`VerifiedIdToken`] holds them.
#[derive(Clone, PartialEq)]
pub struct IdTokenClaims {
    pub claims: Map<String, Value>,
    pub iss: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub alg: String,
    pub kid: Option<String>,
}

impl fmt::Debug for IdTokenClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedIdToken")
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("alg", &self.alg)
            .finish()
    }
}

/// An ID token whose signature and claims passed every check: made only by the verifier (`UntrustedIdToken::verify` and its port variant), so holding one is proof that
/// every check passed. Read what it says through [`IdTokenClaims`] (`Deref`).
#[derive(Clone, PartialEq)]
pub struct VerifiedIdToken(IdTokenClaims);

impl std::ops::Deref for VerifiedIdToken {
    type Target = IdTokenClaims;
    fn deref(&self) -> &IdTokenClaims {
        &self.0
    }
}

impl VerifiedIdToken {
    /// What the verified token says, for keeping after the proof is no longer needed.
    pub fn into_claims(self) -> IdTokenClaims {
        self.0
    }
}

impl PartialEq<IdTokenClaims> for VerifiedIdToken {
    fn eq(&self, other: &IdTokenClaims) -> bool {
        &self.0 == other
    }
}

impl fmt::Debug for VerifiedIdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl IdTokenClaims {
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

fn audiences(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// Left half of the hash of `token` with the hash the algorithm uses, base64url.
pub fn half_hash(alg: &str, token: &str) -> Option<String> {
    let full: Vec<u8> = match alg {
        "RS256" | "PS256" | "ES256" | "HS256" => Sha256::digest(token).to_vec(),
        "RS384" | "PS384" | "ES384" | "HS384" => Sha384::digest(token).to_vec(),
        "RS512" | "PS512" | "HS512" | "EdDSA" => Sha512::digest(token).to_vec(),
        _ => return None,
    };
    Some(b64url(&full[..full.len() / 2]))
}

/// Registered claims parsed, the rest as JSON.
pub type TokenClaims = Claims<Map<String, Value>>;

/// What one kind of token must satisfy besides its signature. The verifier shared by every
/// JWT the gateway accepts ([`UntrustedIdToken::verify`] and
/// [`UntrustedIdToken::verify_with_checked_signature`]) decodes the token, refuses `crit`,
/// checks the algorithm, picks the key from the issuer's JWKS and verifies the signature the
/// same way for all of them; a profile adds its own header and claim rules (ID tokens:
/// [`Expectations`]; access tokens: [`crate::oidc::access_token::AccessTokenExpectations`]).
pub trait TokenProfile {
    type Verified;
    /// The HMAC key, for a profile that accepts HMAC-signed tokens.
    fn hmac_secret(&self) -> Option<&[u8]> {
        None
    }
    /// Whether `alg`, already on the asymmetric allow-list, is accepted by this profile.
    fn accepts_alg(&self, _alg: &str) -> bool {
        true
    }
    /// Header rules beyond `alg`, `kid` and `crit` (e.g. `typ`).
    fn check_header(&self, _header: &Map<String, Value>) -> Result<(), IdTokenError> {
        Ok(())
    }
    /// The claim rules, on claims whose signature verified.
    fn check_claims(
        &self,
        claims: TokenClaims,
        alg: String,
        kid: Option<String>,
    ) -> Result<Self::Verified, IdTokenError>;
}

impl TokenProfile for Expectations<'_> {
    type Verified = VerifiedIdToken;
    /// RFC 9068 2.1: an access token says `typ: at+jwt` precisely so that it is never taken
    /// for an ID token.
    fn check_header(&self, header: &Map<String, Value>) -> Result<(), IdTokenError> {
        match header.get("typ").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt") => {
                Err(IdTokenError::WrongKind("an access token (typ at+jwt) is not an ID token"))
            }
            _ => Ok(()),
        }
    }
    fn hmac_secret(&self) -> Option<&[u8]> {
        self.hmac_secret
    }
    fn check_claims(
        &self,
        claims: TokenClaims,
        alg: String,
        kid: Option<String>,
    ) -> Result<VerifiedIdToken, IdTokenError> {
        check_claims(claims, alg, kid, self)
    }
}

/// RFC 7519 4.1.1: `iss` exactly equals the expected issuer (byte for byte, no
/// normalisation of trailing slashes or case). Shared by every profile.
pub fn check_issuer<'c>(claims: &'c TokenClaims, expected: &str) -> Result<&'c str, IdTokenError> {
    let iss = claims.custom.get("iss").and_then(Value::as_str).unwrap_or_default();
    if iss != expected {
        return Err(IdTokenError::IssuerMismatch { expected: expected.to_owned(), actual: iss.to_owned() });
    }
    Ok(iss)
}

/// The time rules every profile shares: `exp` present and not past (plus skew), `nbf`
/// reached (minus skew), `iat` present and not in the future. Returns (`exp`, `iat`).
pub fn check_times(claims: &TokenClaims, now: u64, skew: u64) -> Result<(i64, i64), IdTokenError> {
    // Saturating: no configured duration or claimed time can overflow (or wrap) the checks.
    let n = i64::try_from(now).unwrap_or(i64::MAX);
    let sk = i64::try_from(skew).unwrap_or(i64::MAX);
    let exp = claims.expiration.map(|t| t.timestamp()).ok_or(IdTokenError::MissingExp)?;
    if n >= exp.saturating_add(sk) {
        return Err(IdTokenError::Expired { exp, now });
    }
    if let Some(nbf) = claims.not_before.map(|t| t.timestamp()) {
        if n.saturating_add(sk) < nbf {
            return Err(IdTokenError::NotYetValid { nbf, now });
        }
    }
    let iat = claims.issued_at.map(|t| t.timestamp()).ok_or(IdTokenError::MissingIat)?;
    if iat > n.saturating_add(sk) {
        return Err(IdTokenError::IatInFuture { iat, now });
    }
    Ok((exp, iat))
}

/// The `aud` claim as a list (a single string or an array of strings).
pub fn audience_list(claims: &TokenClaims) -> Vec<String> {
    audiences(claims.custom.get("aud"))
}

fn check_signature(token: &UntrustedToken<'_>, alg: &str, key: &PublicKey) -> Result<TokenClaims, IdTokenError> {
    let result = match (alg, key) {
        ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", PublicKey::Rsa(k)) => {
            let rsa = match alg {
                "RS256" => Rsa::rs256(),
                "RS384" => Rsa::rs384(),
                "RS512" => Rsa::rs512(),
                "PS256" => Rsa::ps256(),
                "PS384" => Rsa::ps384(),
                _ => Rsa::ps512(),
            };
            rsa.validator::<Map<String, Value>>(k).validate(token)
        }
        ("ES256", PublicKey::P256(k)) => Es256.validator(k).validate(token),
        ("EdDSA", PublicKey::Ed25519(k)) => Ed25519.validator(k).validate(token),
        _ => return Err(IdTokenError::BadSignature),
    };
    result.map(|t| t.into_parts().1).map_err(map_validation_error)
}

fn map_validation_error(e: jwt_compact::ValidationError) -> IdTokenError {
    use jwt_compact::ValidationError as V;
    match e {
        V::InvalidSignature | V::InvalidSignatureLen { .. } | V::MalformedSignature(_) => IdTokenError::BadSignature,
        V::AlgorithmMismatch { actual, .. } => IdTokenError::AlgorithmNotAllowed(actual),
        other => IdTokenError::Malformed(other.to_string()),
    }
}

fn check_hmac(token: &UntrustedToken<'_>, alg: &str, secret: &[u8]) -> Result<TokenClaims, IdTokenError> {
    let r = match alg {
        "HS256" => Hs256.validator(&Hs256Key::new(secret)).validate(token),
        "HS384" => Hs384.validator(&Hs384Key::new(secret)).validate(token),
        "HS512" => Hs512.validator(&Hs512Key::new(secret)).validate(token),
        other => return Err(IdTokenError::AlgorithmNotAllowed(other.to_owned())),
    };
    r.map(|t| t.into_parts().1).map_err(map_validation_error)
}

impl UntrustedIdToken {
    /// Steps 6-8: the claims of a token whose signature verified with an allowed algorithm
    /// and a key from the JWKS (or the client secret for opted-in HMAC). The header's
    /// `jwk`, `jku`, `x5u` and `x5c` are never used: keys come only from the provider's
    /// JWKS, fetched from its discovery document over TLS.
    fn signed_claims<P: TokenProfile + ?Sized>(
        &self,
        keys: &[Jwk],
        profile: &P,
        kind: TokenKind,
    ) -> Result<(TokenClaims, String, Option<String>), IdTokenError> {
        let token = UntrustedToken::new(&self.raw).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
        let header = self.raw.split('.').next().unwrap_or_default();
        let header = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
            .map_err(|_| IdTokenError::Malformed(jwt_compact::ParseError::InvalidBase64Encoding.to_string()))?;
        check_header(&header, kind)?;
        let alg = token.algorithm().to_owned();
        let kid = token.header().key_id.clone();
        profile.check_header(&self.header()?)?;
        // Steps 7 and 8: the algorithm must be on the allow-list; `none` never is; HMAC only
        // when configured, keyed with the client secret.
        let claims = if HMAC_ALGS.contains(&alg.as_str()) {
            let secret = profile.hmac_secret().ok_or_else(|| IdTokenError::AlgorithmNotAllowed(alg.clone()))?;
            check_hmac(&token, &alg, secret)?
        } else if ASYMMETRIC_ALGS.contains(&alg.as_str()) && profile.accepts_alg(&alg) {
            // Step 6: the signature, with the key the JWKS has under `kid`.
            let key = select_key(keys, &alg, kid.as_deref())?;
            check_signature(&token, &alg, &key.key)?
        } else {
            return Err(IdTokenError::AlgorithmNotAllowed(alg));
        };
        Ok((claims, alg, kid))
    }

    pub fn new(raw: impl Into<String>) -> Self {
        Self { raw: raw.into() }
    }

    /// The JOSE header as JSON, for a profile's own header rules (the shared ones, `crit`
    /// among them, are [`check_header`]'s).
    fn header(&self) -> Result<Map<String, Value>, IdTokenError> {
        let first = self.raw.split('.').next().unwrap_or_default();
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, first)
            .map_err(|_| IdTokenError::Malformed("header is not base64url".into()))?;
        serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed("header is not a JSON object".into()))
    }

    /// The `iss` claim, unverified: only to choose which issuer's keys and rules to verify
    /// the token with.
    pub fn unverified_issuer(&self) -> Option<String> {
        let payload = self.raw.split('.').nth(1)?;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).ok()?;
        let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
        claims.get("iss").and_then(Value::as_str).map(str::to_owned)
    }

    /// The `kid` from the header, unverified (to decide whether the JWKS needs a refetch).
    pub fn kid(&self) -> Option<String> {
        UntrustedToken::new(&self.raw).ok().and_then(|t| t.header().key_id.clone())
    }

    /// Runs every check of the profile (an ID token's [`Expectations`], or an access
    /// token's); `keys` is the issuer's JWKS.
    pub fn verify<P: TokenProfile + ?Sized>(&self, keys: &[Jwk], exp: &P) -> Result<P::Verified, IdTokenError> {
        // Step 1: encrypted ID tokens (JWE, five segments) are not accepted.
        let segments = self.raw.split('.').count();
        if segments == 5 {
            return Err(IdTokenError::Encrypted);
        }
        if segments != 3 || self.raw.len() > 64 * 1024 {
            return Err(IdTokenError::Malformed("not a compact JWS".into()));
        }
        // ID and access tokens share the header rules; only logout tokens add their `typ`.
        let (claims, alg, kid) = self.signed_claims(keys, exp, TokenKind::IdToken)?;
        exp.check_claims(claims, alg, kid)
    }

    /// For a signature already verified by the runtime's own crypto (the Worker shell's
    /// WebCrypto port) against `key` from the provider's JWKS: the same algorithm and key
    /// rules, then every claim check of [`UntrustedIdToken::verify`]. `parts` are this
    /// token's own [`UntrustedIdToken::signing_parts`], so the token is decoded only once.
    pub fn verify_with_checked_signature<P: TokenProfile + ?Sized>(
        &self,
        parts: SigningParts<'_>,
        key: &Jwk,
        checked: SignatureChecked,
        exp: &P,
    ) -> Result<P::Verified, IdTokenError> {
        let SignatureChecked(()) = checked;
        let SigningParts { alg, kid, signed, claims, .. } = parts;
        // The parts must be this token's: a proof for other bytes proves nothing here.
        if signed.as_ptr() != self.raw.as_ptr() {
            return Err(IdTokenError::BadSignature);
        }
        if !exp.accepts_alg(&alg) {
            return Err(IdTokenError::AlgorithmNotAllowed(alg));
        }
        if !key.key.fits(&alg) || key.alg.as_deref().is_some_and(|a| a != alg) || !key.usable_for_signatures() {
            return Err(IdTokenError::KeyAlgorithmMismatch { alg, kid });
        }
        exp.check_header(&self.header()?)?;
        // As `UntrustedToken::deserialize_claims_unchecked` (JSON claims).
        let claims: TokenClaims = serde_json::from_slice(&claims)
            .map_err(|e| map_validation_error(jwt_compact::ValidationError::MalformedClaims(e)))?;
        exp.check_claims(claims, alg, kid)
    }

    /// What an external verifier needs: algorithm, key id, the signed bytes and the
    /// signature, from one decoding of the token (kept for the claims). Refuses JWE,
    /// malformed tokens and algorithms off the asymmetric allow-list.
    pub fn signing_parts(&self) -> Result<SigningParts<'_>, IdTokenError> {
        let segments = self.raw.split('.').count();
        if segments == 5 {
            return Err(IdTokenError::Encrypted);
        }
        if segments != 3 || self.raw.len() > 64 * 1024 {
            return Err(IdTokenError::Malformed("not a compact JWS".into()));
        }
        // The same decoding and header rules as `jwt_compact::UntrustedToken::new` (used by
        // `verify`), with the `base64` crate: the token is public, and jwt-compact's
        // constant-time decoder made up most of the cost of this path.
        let malformed = |e: jwt_compact::ParseError| IdTokenError::Malformed(e.to_string());
        let mut segments = self.raw.split('.');
        let (header, payload, signature) = match (segments.next(), segments.next(), segments.next()) {
            (Some(h), Some(p), Some(s)) => (h, p, s),
            _ => return Err(IdTokenError::Malformed("not a compact JWS".into())),
        };
        let b64 = |s: &str| {
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
                .map_err(|_| malformed(jwt_compact::ParseError::InvalidBase64Encoding))
        };
        let header = b64(header)?;
        let claims = b64(payload)?;
        let signature = b64(signature)?;
        let header_json = header;
        let header: PortHeader =
            serde_json::from_slice(&header_json).map_err(|e| malformed(jwt_compact::ParseError::MalformedHeader(e)))?;
        match header.content_type {
            None => {}
            Some(cty) if cty.eq_ignore_ascii_case("json") => {}
            Some(cty) => return Err(malformed(jwt_compact::ParseError::UnsupportedContentType(cty))),
        }
        check_header(&header_json, TokenKind::IdToken)?;
        let alg = header.algorithm;
        if !ASYMMETRIC_ALGS.contains(&alg.as_str()) {
            return Err(IdTokenError::AlgorithmNotAllowed(alg));
        }
        let signed = self.raw.rsplit_once('.').map(|(s, _)| s).unwrap_or_default();
        Ok(SigningParts { kid: header.inner.key_id, signed: signed.as_bytes(), signature, claims, alg })
    }

    /// Step 6's key choice for an external verifier.
    pub fn key_for<'k>(&self, keys: &'k [Jwk], parts: &SigningParts<'_>) -> Result<&'k Jwk, IdTokenError> {
        select_key(keys, &parts.alg, parts.kid.as_deref())
    }
}

/// The inputs of a signature check done outside this module, and the decoded token they
/// came from, decoded once (its claims are read only after the check).
#[derive(Clone)]
pub struct SigningParts<'t> {
    pub alg: String,
    pub kid: Option<String>,
    signed: &'t [u8],
    signature: Vec<u8>,
    /// The decoded payload, deserialised only after the signature check.
    claims: Vec<u8>,
}

/// The JOSE header as `jwt_compact` reads it (`alg`, `cty`, then the registered fields).
#[derive(serde::Deserialize)]
struct PortHeader {
    #[serde(rename = "alg")]
    algorithm: String,
    #[serde(rename = "cty", default)]
    content_type: Option<String>,
    #[serde(flatten)]
    inner: jwt_compact::Header,
}

impl fmt::Debug for SigningParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningParts").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningParts<'_> {
    /// The JWS signing input: `header.payload` as received.
    pub fn signed(&self) -> &[u8] {
        self.signed
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// Proof, for [`UntrustedIdToken::verify_with_checked_signature`], that a signature port
/// returned "valid" for these signing parts. Only [`SignatureChecked::by_port`] makes one.
#[derive(Debug)]
pub struct SignatureChecked(());

impl SignatureChecked {
    /// To be called only with the `true` answer of a signature port.
    pub fn by_port(valid: bool) -> Option<Self> {
        valid.then_some(Self(()))
    }
}

/// Steps 2-5 and 9-11 of Core 3.1.3.7 (plus `nbf` and `at_hash`) on claims whose signature
/// verified.
fn check_claims(
    claims: TokenClaims,
    alg: String,
    kid: Option<String>,
    exp: &Expectations<'_>,
) -> Result<VerifiedIdToken, IdTokenError> {
    let c = &claims.custom;

    // Step 2: `iss` exactly equals the issuer from discovery (byte-for-byte, no
    // normalisation of trailing slashes or case).
    let iss = check_issuer(&claims, exp.issuer)?;
    // Step 3: `aud` contains the client id; every other audience must be trusted.
    let aud = audiences(c.get("aud"));
    if !aud.iter().any(|a| a == exp.client_id) {
        return Err(IdTokenError::AudienceMissingClient);
    }
    if let Some(untrusted) =
        aud.iter().find(|a| *a != exp.client_id && !exp.trusted_audiences.iter().any(|r| r.is_match(a)))
    {
        return Err(IdTokenError::UntrustedAudience(untrusted.clone()));
    }
    // Steps 4 and 5: with several audiences, `azp` must be present; when present it
    // must be the client id.
    let azp = c.get("azp").and_then(Value::as_str);
    if aud.len() > 1 && azp.is_none() {
        return Err(IdTokenError::AzpMissing);
    }
    if let Some(azp) = azp {
        if azp != exp.client_id {
            return Err(IdTokenError::AzpMismatch(azp.to_owned()));
        }
    }
    // Saturating: no configured duration or claimed time can overflow (or wrap) the checks.
    let now = i64::try_from(exp.now).unwrap_or(i64::MAX);
    let skew = i64::try_from(exp.skew).unwrap_or(i64::MAX);
    let iat_window = i64::try_from(exp.iat_window).unwrap_or(i64::MAX);
    // Step 9: the current time is before `exp` (plus the allowed skew); RFC 7519 4.1.5: not
    // before `nbf` (minus skew); step 10: `iat` is present, not in the future...
    let (exp_ts, iat) = check_times(&claims, exp.now, exp.skew)?;
    // ... and not older than the window.
    if now.saturating_sub(iat) > iat_window.saturating_add(skew) {
        return Err(IdTokenError::IatTooOld { iat, now: exp.now });
    }
    // Step 11: the nonce equals the one sent in the request (constant-time compare).
    if let Some(expected) = exp.nonce {
        let got = c.get("nonce").and_then(Value::as_str).ok_or(IdTokenError::NonceMissing)?;
        if !ct_eq(got.as_bytes(), expected.as_bytes()) {
            return Err(IdTokenError::NonceMismatch);
        }
    }
    // Steps 12 and 13 (acr, auth_time) apply only when requested; the gateway requests
    // neither.
    // 3.1.3.8: `at_hash`, when present, matches the access token.
    if let (Some(at_hash), Some(access_token)) = (c.get("at_hash").and_then(Value::as_str), exp.access_token) {
        let expected = half_hash(&alg, access_token).ok_or(IdTokenError::AtHashMismatch)?;
        if !ct_eq(expected.as_bytes(), at_hash.as_bytes()) {
            return Err(IdTokenError::AtHashMismatch);
        }
    }
    let sub = c.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(IdTokenError::MissingSub)?;
    Ok(VerifiedIdToken(IdTokenClaims {
        iss: iss.to_owned(),
        sub: sub.to_owned(),
        exp: exp_ts,
        iat,
        alg,
        kid,
        claims: claims.custom,
    }))
}

/// The claims of a back-channel logout token, as [`VerifiedLogoutToken`] holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTokenClaims {
    pub iss: String,
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
}

/// A back-channel logout token that passed every check: made only by `UntrustedIdToken::verify_logout`, so holding one is proof that
/// every check passed. Read what it says through [`LogoutTokenClaims`] (`Deref`).
#[derive(Clone, PartialEq)]
pub struct VerifiedLogoutToken(LogoutTokenClaims);

impl std::ops::Deref for VerifiedLogoutToken {
    type Target = LogoutTokenClaims;
    fn deref(&self) -> &LogoutTokenClaims {
        &self.0
    }
}

impl VerifiedLogoutToken {
    /// What the verified token says, for keeping after the proof is no longer needed.
    pub fn into_claims(self) -> LogoutTokenClaims {
        self.0
    }
}

impl PartialEq<LogoutTokenClaims> for VerifiedLogoutToken {
    fn eq(&self, other: &LogoutTokenClaims) -> bool {
        &self.0 == other
    }
}

impl fmt::Debug for VerifiedLogoutToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl UntrustedIdToken {
    /// Validates a logout token after OpenID Connect Back-Channel Logout 1.0, section 2.6:
    /// signature, `iss`, `aud` and `iat` as for an ID token (steps 2, 3, 6-10 of Core
    /// 3.1.3.7), then `events`, no `nonce`, `sub` or `sid`, `jti`.
    pub fn verify_logout(&self, keys: &[Jwk], exp: &Expectations<'_>) -> Result<VerifiedLogoutToken, IdTokenError> {
        let segments = self.raw.split('.').count();
        if segments != 3 || self.raw.len() > 64 * 1024 {
            return Err(IdTokenError::Malformed("not a compact JWS".into()));
        }
        let (claims, _, _) = self.signed_claims(keys, exp, TokenKind::Logout)?;
        let c = &claims.custom;
        let iss = check_issuer(&claims, exp.issuer)?;
        let aud = audiences(c.get("aud"));
        if !aud.iter().any(|a| a == exp.client_id) {
            return Err(IdTokenError::AudienceMissingClient);
        }
        let now = i64::try_from(exp.now).unwrap_or(i64::MAX);
        let skew = i64::try_from(exp.skew).unwrap_or(i64::MAX);
        let iat_window = i64::try_from(exp.iat_window).unwrap_or(i64::MAX);
        let iat = claims.issued_at.map(|t| t.timestamp()).ok_or(IdTokenError::MissingIat)?;
        if iat > now.saturating_add(skew) {
            return Err(IdTokenError::IatInFuture { iat, now: exp.now });
        }
        if now.saturating_sub(iat) > iat_window.saturating_add(skew) {
            return Err(IdTokenError::IatTooOld { iat, now: exp.now });
        }
        if let Some(e) = claims.expiration.map(|t| t.timestamp()) {
            if now >= e.saturating_add(skew) {
                return Err(IdTokenError::Expired { exp: e, now: exp.now });
            }
        }
        let event_ok = c
            .get("events")
            .and_then(Value::as_object)
            .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
            .is_some_and(Value::is_object);
        if !event_ok {
            return Err(IdTokenError::LogoutEventMissing);
        }
        if c.contains_key("nonce") {
            return Err(IdTokenError::LogoutNonceForbidden);
        }
        let sub = c.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let sid = c.get("sid").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        if sub.is_none() && sid.is_none() {
            return Err(IdTokenError::LogoutSubjectMissing);
        }
        let jti =
            c.get("jti").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(IdTokenError::LogoutJtiMissing)?;
        Ok(VerifiedLogoutToken(LogoutTokenClaims { iss: iss.to_owned(), sub, sid, jti: jti.to_owned() }))
    }
}

/// Which rules of the JOSE header apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    IdToken,
    Logout,
}

/// The header rules every verified token obeys, on the decoded header JSON (already
/// accepted by the decoder): no `crit` (RFC 7515 4.1.11: this verifier understands no
/// extension, so every critical parameter is one it does not understand; an empty or
/// malformed list is invalid as well), and for a logout token a `typ`, when present, of
/// `logout+jwt` (Back-Channel Logout 1.0, 2.4), compared as a media type (RFC 7515 4.1.9:
/// case-insensitive, `application/` optional).
fn check_header(header: &[u8], kind: TokenKind) -> Result<(), IdTokenError> {
    let header: Map<String, Value> = serde_json::from_slice(header)
        .map_err(|e| IdTokenError::Malformed(jwt_compact::ParseError::MalformedHeader(e).to_string()))?;
    if let Some(crit) = header.get("crit") {
        let names = match crit {
            Value::Array(a) => a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect(),
            other => vec![other.to_string()],
        };
        return Err(IdTokenError::CriticalHeader(names));
    }
    if kind == TokenKind::Logout {
        if let Some(typ) = header.get("typ") {
            let t = typ.as_str().map_or_else(|| typ.to_string(), str::to_owned);
            let bare = match t.get(..12) {
                Some(p) if p.eq_ignore_ascii_case("application/") => t.get(12..).unwrap_or_default(),
                _ => t.as_str(),
            };
            if !bare.eq_ignore_ascii_case("logout+jwt") {
                return Err(IdTokenError::LogoutTokenType(t));
            }
        }
    }
    Ok(())
}

/// Step 6's key choice: by `kid`; without one, the only key that fits the algorithm.
fn select_key<'k>(keys: &'k [Jwk], alg: &str, kid: Option<&str>) -> Result<&'k Jwk, IdTokenError> {
    let fits = |k: &&Jwk| k.key.fits(alg) && k.alg.as_deref().is_none_or(|a| a == alg) && k.usable_for_signatures();
    match kid {
        Some(kid) => {
            let k = keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| IdTokenError::UnknownKey(Some(kid.to_owned())))?;
            if fits(&k) {
                Ok(k)
            } else {
                Err(IdTokenError::KeyAlgorithmMismatch { alg: alg.to_owned(), kid: Some(kid.to_owned()) })
            }
        }
        None => {
            let mut candidates = keys.iter().filter(fits);
            match (candidates.next(), candidates.next()) {
                (Some(k), None) => Ok(k),
                _ => Err(IdTokenError::UnknownKey(None)),
            }
        }
    }
}
