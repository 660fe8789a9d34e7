//! ID token verification against OpenID Connect Core 1.0, section 3.1.3.7. Long because
//! each step of the section has its accepting and refusing tests here, in the section's order.
//!
//! Tokens are signed with jwt-compact and real keys; the provider's JWKS is written out as
//! JSON from the public key parts and read back through `parse_jwks`, so the JWKS parser is
//! exercised on every path. Each rejection test asserts the exact error variant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_compact::alg::{Ed25519, Es256, Hs256, Hs256Key, Rsa};
use jwt_compact::{Algorithm, AlgorithmExt, Claims, Header};
use portcullis::oidc::id_token::{Expectations, IdTokenError, UntrustedIdToken, VerifiedIdToken};
use portcullis::oidc::jwks::{parse_jwks, Jwk};
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://idp.test";
const CLIENT_ID: &str = "portcullis-client";
const SUBJECT: &str = "user-123";
const NONCE: &str = "n-0S6_WzA2Mj";
const NOW: u64 = 1_700_000_000;
const SKEW: u64 = 60;
const IAT_WINDOW: u64 = 600;
const RSA_KID: &str = "k1";
const EC_KID: &str = "ec1";
const ED_KID: &str = "ed1";
const CLIENT_SECRET: &[u8] = b"confidential-client-secret-0123456789";

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

// Fixed test-only RSA primes (1024 bits each): building a 2048-bit key from them is quick,
// whereas a random prime search in a debug build takes seconds and varies widely.
const PROVIDER_P: &str = concat!(
    "F78B02EE0501F2C08ABC8AC9F5EC5C646D9F7EFD9C2209E5DDBEBE863C991299",
    "C78903D06C088A21B87DB9ED200F221DEEDB2D8A3AA8CE19EB1E8DD77F692719",
    "19812E71DF0DAC2492B6A37D94FC22EADD2668798E52CF28BD0193017EB30B4A",
    "5595475C08323630635ED15683DD0E42785FA8F2457E9352292AB3D62DD16821",
);
const PROVIDER_Q: &str = concat!(
    "EDBD1C83710E8249F5E1DDC1C407028F5873F3E86DB0E35C69CA846753130D16",
    "3B9E27AF8248A8742A4F031028044F8381A4DBE87F36614AD4AC87E333F8255E",
    "D6D05F771E2711431561AC3B75954F1EA6A88B56FF7AEE763F42B5CB8FBE77DD",
    "C8B5D1DB732B878B01216DEE292BDD4AE07BA8BEE075D99C7E8D0D3E56CD6E7B",
);
const ATTACKER_P: &str = concat!(
    "D9792CC6748DFDA984388E9A297AC7DF9164453E9CBC46877043BB9E25FE2494",
    "62BEE0B08B98B51CCBB17B0FA5F5B74FB3CE48A24EAFB6A4539A46DF50E1D31A",
    "71E872FCD49EE7FC13EC1449AB75748063CF93F0281E5CABDD4E5A5F30381918",
    "7F218B2A2CDE7E4A71FA8E8D0975CD45BF5F25BB35855C78F8D8279193B2508F",
);
const ATTACKER_Q: &str = concat!(
    "D0B4577CDB3085C46561E93C30FCC9B75EC555A0F265D2C407A97379F3511C0F",
    "D5BA4D030C400984E4121DF692334BF66CCAA7DC589038AF51B8A5F8A302D31D",
    "CBF57F476881125033B1E3F9896243A848A2D6022234A77DC07428CDD34FCB41",
    "650497C26D36B726DB6BF5E259663447C3DA310FE6327E6668F2A93488CF9957",
);

fn rsa_from_primes(p: &str, q: &str) -> RsaPrivateKey {
    let prime = |hex: &str| BigUint::parse_bytes(hex.as_bytes(), 16).expect("hex prime");
    let key = RsaPrivateKey::from_p_q(prime(p), prime(q), BigUint::from(65_537_u32)).expect("RSA key from primes");
    key.validate().expect("consistent RSA key");
    assert_eq!(key.size() * 8, 2048);
    key
}

/// The provider's RSA key, built once per test binary.
fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa_from_primes(PROVIDER_P, PROVIDER_Q))
}

/// A key the provider never published, held by an attacker.
fn attacker_rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa_from_primes(ATTACKER_P, ATTACKER_Q))
}

fn ec_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x17; 32]).expect("P-256 key")
}

fn ed_key() -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([0x29; 32]))
}

// ---------------------------------------------------------------------------------------
// JWKS construction
// ---------------------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

fn rsa_jwk(kid: &str, key: &RsaPublicKey) -> Value {
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "n": b64(&key.n().to_bytes_be()),
        "e": b64(&key.e().to_bytes_be()),
    })
}

fn ec_jwk(kid: &str, key: &p256::ecdsa::SigningKey) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC",
        "kid": kid,
        "use": "sig",
        "crv": "P-256",
        "x": b64(point.x().expect("x coordinate")),
        "y": b64(point.y().expect("y coordinate")),
    })
}

fn ed_jwk(kid: &str, key: &ed25519_compact::KeyPair) -> Value {
    json!({"kty": "OKP", "kid": kid, "use": "sig", "crv": "Ed25519", "x": b64(key.pk.as_ref())})
}

/// Serialises the keys as a JWKS document and parses it; every key must be accepted.
fn jwks(keys: Vec<Value>) -> Vec<Jwk> {
    let count = keys.len();
    let body = json!({ "keys": keys }).to_string();
    let parsed = parse_jwks(body.as_bytes()).expect("JWKS parses");
    assert!(parsed.skipped.is_empty(), "unexpected skipped keys: {:?}", parsed.skipped);
    assert_eq!(parsed.keys.len(), count);
    parsed.keys
}

/// The provider's usual JWKS: one RSA, one P-256 and one Ed25519 key.
fn provider_jwks() -> Vec<Jwk> {
    jwks(vec![rsa_jwk(RSA_KID, &rsa_key().to_public_key()), ec_jwk(EC_KID, &ec_key()), ed_jwk(ED_KID, &ed_key())])
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

fn base_claims() -> Map<String, Value> {
    json!({
        "iss": ISSUER,
        "sub": SUBJECT,
        "aud": CLIENT_ID,
        "exp": NOW + 300,
        "iat": NOW - 10,
        "nonce": NONCE,
        "email": "alice@example.test",
    })
    .as_object()
    .cloned()
    .expect("claims object")
}

fn claims_with(edit: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
    let mut claims = base_claims();
    edit(&mut claims);
    claims
}

fn sign<A: Algorithm>(
    alg: &A,
    header: &Header<impl Serialize>,
    claims: &Map<String, Value>,
    key: &A::SigningKey,
) -> String {
    alg.token(header, &Claims::new(claims.clone()), key).expect("token signs")
}

fn kid_header(kid: &str) -> Header {
    Header::empty().with_key_id(kid)
}

fn rs256(claims: &Map<String, Value>) -> String {
    sign(&Rsa::rs256(), &kid_header(RSA_KID), claims, rsa_key())
}

fn hs256(claims: &Map<String, Value>, secret: &[u8]) -> String {
    sign(&Hs256, &Header::empty(), claims, &Hs256Key::new(secret))
}

/// A compact token assembled by hand from a header and payload, with the given signature.
fn handmade(header: &Value, payload: &Map<String, Value>, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(Value::Object(payload.clone()).to_string().as_bytes()),
        b64(signature)
    )
}

fn segments(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    [parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned()]
}

fn expectations<'a>() -> Expectations<'a> {
    Expectations {
        issuer: ISSUER,
        client_id: CLIENT_ID,
        trusted_audiences: &[],
        hmac_secret: None,
        now: NOW,
        skew: SKEW,
        iat_window: IAT_WINDOW,
        nonce: Some(NONCE),
        access_token: None,
    }
}

fn verify(token: &str, keys: &[Jwk], exp: &Expectations<'_>) -> Result<VerifiedIdToken, IdTokenError> {
    UntrustedIdToken::new(token).verify(keys, exp)
}

fn accepted(token: &str, keys: &[Jwk], exp: &Expectations<'_>) -> VerifiedIdToken {
    verify(token, keys, exp).expect("token must be accepted")
}

fn refused(token: &str, keys: &[Jwk], exp: &Expectations<'_>) -> IdTokenError {
    verify(token, keys, exp).expect_err("token must be refused")
}

/// An RS256 token with edited claims, checked against the provider's JWKS and default
/// expectations.
fn rs256_result(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<VerifiedIdToken, IdTokenError> {
    verify(&rs256(&claims_with(edit)), &provider_jwks(), &expectations())
}

fn rs256_refused(edit: impl FnOnce(&mut Map<String, Value>)) -> IdTokenError {
    rs256_result(edit).expect_err("token must be refused")
}

// ---------------------------------------------------------------------------------------
// Valid tokens
// ---------------------------------------------------------------------------------------

#[test]
fn valid_rs256_token_is_accepted() {
    let token = accepted(&rs256(&base_claims()), &provider_jwks(), &expectations());
    assert_eq!(token.iss, ISSUER);
    assert_eq!(token.sub, SUBJECT);
    assert_eq!(token.alg, "RS256");
    assert_eq!(token.kid.as_deref(), Some(RSA_KID));
    assert_eq!(token.exp, (NOW + 300) as i64);
    assert_eq!(token.iat, (NOW - 10) as i64);
    assert_eq!(token.str_claim("email"), Some("alice@example.test"));
    assert_eq!(token.str_claim("nonce"), Some(NONCE));
    assert_eq!(token.claims.get("aud"), Some(&json!(CLIENT_ID)));
}

#[test]
fn a_port_verdict_applies_only_to_the_token_it_was_given() {
    use portcullis::oidc::id_token::SignatureChecked;
    let keys = provider_jwks();
    let exp = expectations();
    let good = UntrustedIdToken::new(rs256(&base_claims()));
    let forged = UntrustedIdToken::new(rs256(&claims_with(|c| {
        c.insert("sub".into(), json!("mallory"));
    })));
    // The same token's parts: accepted, with the claims decoded from those parts.
    let parts = good.signing_parts().expect("parts");
    let key = good.key_for(&keys, &parts).expect("key");
    let checked = SignatureChecked::by_port(true).expect("valid");
    let token = good.verify_with_checked_signature(parts, key, checked, &exp).expect("accepted");
    assert_eq!(token.sub, SUBJECT);
    // Parts (and a verdict) from another token prove nothing about this one.
    let parts = good.signing_parts().expect("parts");
    let checked = SignatureChecked::by_port(true).expect("valid");
    assert_eq!(
        forged.verify_with_checked_signature(parts, key, checked, &exp).expect_err("refused"),
        IdTokenError::BadSignature
    );
    assert!(!format!("{:?}", forged.signing_parts().expect("parts")).contains("mallory"));
}

#[test]
fn the_port_path_decodes_tokens_as_strictly_as_the_rust_path() {
    let good = rs256(&base_claims());
    let [h, p, sig] = segments(&good);
    let cases = [
        format!("{h}=.{p}.{sig}"),
        format!("{h}.{p}.{sig}="),
        format!("{h}.{p}!.{sig}"),
        format!("{}.{p}.{sig}", b64(b"not json")),
        format!("{}.{p}.{sig}", b64(br#"{"kid":"k"}"#)),
        handmade(&json!({"alg": "RS256", "kid": RSA_KID, "cty": "cbor"}), &base_claims(), &unb64(&sig)),
    ];
    for raw in cases {
        let token = UntrustedIdToken::new(raw.clone());
        let rust = token.verify(&provider_jwks(), &expectations()).expect_err("refused");
        let port = token.signing_parts().expect_err("refused");
        assert!(matches!(rust, IdTokenError::Malformed(_)), "{raw}: {rust:?}");
        assert_eq!(port, rust, "{raw}");
    }
}

#[test]
fn valid_es256_token_is_accepted() {
    let raw = sign(&Es256, &kid_header(EC_KID), &base_claims(), &ec_key());
    let token = accepted(&raw, &provider_jwks(), &expectations());
    assert_eq!(token.alg, "ES256");
    assert_eq!(token.sub, SUBJECT);
    assert_eq!(token.kid.as_deref(), Some(EC_KID));
}

#[test]
fn valid_eddsa_token_is_accepted() {
    let raw = sign(&Ed25519, &kid_header(ED_KID), &base_claims(), &ed_key().sk);
    let token = accepted(&raw, &provider_jwks(), &expectations());
    assert_eq!(token.alg, "EdDSA");
    assert_eq!(token.sub, SUBJECT);
    assert_eq!(token.kid.as_deref(), Some(ED_KID));
}

#[test]
fn valid_ps256_token_is_accepted() {
    let raw = sign(&Rsa::ps256(), &kid_header(RSA_KID), &base_claims(), rsa_key());
    let token = accepted(&raw, &provider_jwks(), &expectations());
    assert_eq!(token.alg, "PS256");
    assert_eq!(token.sub, SUBJECT);
}

#[test]
fn jwk_alg_restricts_the_algorithm_used_with_the_key() {
    let mut jwk = rsa_jwk(RSA_KID, &rsa_key().to_public_key());
    jwk["alg"] = json!("RS256");
    let keys = jwks(vec![jwk]);
    accepted(&rs256(&base_claims()), &keys, &expectations());
    let ps256 = sign(&Rsa::ps256(), &kid_header(RSA_KID), &base_claims(), rsa_key());
    assert_eq!(
        refused(&ps256, &keys, &expectations()),
        IdTokenError::KeyAlgorithmMismatch { alg: "PS256".into(), kid: Some(RSA_KID.into()) }
    );
}

// ---------------------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------------------

#[test]
fn alg_none_is_refused() {
    let token = handmade(&json!({"alg": "none", "typ": "JWT", "kid": RSA_KID}), &base_claims(), b"");
    assert!(token.ends_with('.'));
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::AlgorithmNotAllowed("none".into()));
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused_without_hmac_opt_in() {
    let public = rsa_key().to_public_key();
    let der = public.to_public_key_der().expect("SPKI DER").as_bytes().to_vec();
    let modulus = public.n().to_bytes_be();
    let jwk_json = rsa_jwk(RSA_KID, &public).to_string().into_bytes();
    for key_bytes in [der, modulus, jwk_json] {
        let token = sign(&Hs256, &kid_header(RSA_KID), &base_claims(), &Hs256Key::new(&key_bytes));
        assert_eq!(
            refused(&token, &provider_jwks(), &expectations()),
            IdTokenError::AlgorithmNotAllowed("HS256".into())
        );
    }
}

#[test]
fn hs256_with_the_client_secret_is_accepted_when_opted_in() {
    let exp = Expectations { hmac_secret: Some(CLIENT_SECRET), ..expectations() };
    let token = accepted(&hs256(&base_claims(), CLIENT_SECRET), &provider_jwks(), &exp);
    assert_eq!(token.alg, "HS256");
    assert_eq!(token.sub, SUBJECT);
}

#[test]
fn hs256_with_another_secret_is_refused_when_opted_in() {
    let exp = Expectations { hmac_secret: Some(CLIENT_SECRET), ..expectations() };
    let token = hs256(&base_claims(), b"some-other-secret-0123456789abcdef");
    assert_eq!(refused(&token, &provider_jwks(), &exp), IdTokenError::BadSignature);
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused_when_opted_in() {
    let exp = Expectations { hmac_secret: Some(CLIENT_SECRET), ..expectations() };
    let der = rsa_key().to_public_key().to_public_key_der().expect("SPKI DER");
    let token = hs256(&base_claims(), der.as_bytes());
    assert_eq!(refused(&token, &provider_jwks(), &exp), IdTokenError::BadSignature);
}

// ---------------------------------------------------------------------------------------
// Issuer
// ---------------------------------------------------------------------------------------

#[test]
fn issuer_with_trailing_slash_is_refused() {
    let err = rs256_refused(|c| {
        c.insert("iss".into(), json!("https://idp.test/"));
    });
    assert_eq!(err, IdTokenError::IssuerMismatch { expected: ISSUER.into(), actual: "https://idp.test/".into() });
}

#[test]
fn issuer_with_different_case_is_refused() {
    let err = rs256_refused(|c| {
        c.insert("iss".into(), json!("https://IDP.test"));
    });
    assert_eq!(err, IdTokenError::IssuerMismatch { expected: ISSUER.into(), actual: "https://IDP.test".into() });
}

#[test]
fn missing_issuer_is_refused() {
    let err = rs256_refused(|c| {
        c.remove("iss");
    });
    assert_eq!(err, IdTokenError::IssuerMismatch { expected: ISSUER.into(), actual: String::new() });
}

// ---------------------------------------------------------------------------------------
// Audience and authorised party
// ---------------------------------------------------------------------------------------

fn api_audiences() -> Vec<regex_lite::Regex> {
    vec![regex_lite::Regex::new("^(?:api-.*)$").expect("regex")]
}

#[test]
fn audience_without_client_id_is_refused() {
    let err = rs256_refused(|c| {
        c.insert("aud".into(), json!(["another-client"]));
    });
    assert_eq!(err, IdTokenError::AudienceMissingClient);
}

#[test]
fn extra_untrusted_audience_is_refused() {
    let trusted = api_audiences();
    let exp = Expectations { trusted_audiences: &trusted, ..expectations() };
    let token = rs256(&claims_with(|c| {
        c.insert("aud".into(), json!([CLIENT_ID, "evil-service"]));
        c.insert("azp".into(), json!(CLIENT_ID));
    }));
    assert_eq!(refused(&token, &provider_jwks(), &exp), IdTokenError::UntrustedAudience("evil-service".into()));
}

#[test]
fn extra_trusted_audience_with_azp_is_accepted() {
    let trusted = api_audiences();
    let exp = Expectations { trusted_audiences: &trusted, ..expectations() };
    let token = rs256(&claims_with(|c| {
        c.insert("aud".into(), json!([CLIENT_ID, "api-orders"]));
        c.insert("azp".into(), json!(CLIENT_ID));
    }));
    let verified = accepted(&token, &provider_jwks(), &exp);
    assert_eq!(verified.str_claim("azp"), Some(CLIENT_ID));
}

#[test]
fn trusted_audience_pattern_is_anchored() {
    let trusted = api_audiences();
    let exp = Expectations { trusted_audiences: &trusted, ..expectations() };
    let token = rs256(&claims_with(|c| {
        c.insert("aud".into(), json!([CLIENT_ID, "evil-api-orders"]));
        c.insert("azp".into(), json!(CLIENT_ID));
    }));
    assert_eq!(refused(&token, &provider_jwks(), &exp), IdTokenError::UntrustedAudience("evil-api-orders".into()));
}

#[test]
fn several_audiences_without_azp_are_refused() {
    let trusted = api_audiences();
    let exp = Expectations { trusted_audiences: &trusted, ..expectations() };
    let token = rs256(&claims_with(|c| {
        c.insert("aud".into(), json!([CLIENT_ID, "api-orders"]));
    }));
    assert_eq!(refused(&token, &provider_jwks(), &exp), IdTokenError::AzpMissing);
}

#[test]
fn azp_other_than_client_id_is_refused() {
    let err = rs256_refused(|c| {
        c.insert("azp".into(), json!("another-client"));
    });
    assert_eq!(err, IdTokenError::AzpMismatch("another-client".into()));
}

// ---------------------------------------------------------------------------------------
// Time claims
// ---------------------------------------------------------------------------------------

#[test]
fn expired_beyond_skew_is_refused() {
    let exp_ts = (NOW - SKEW - 1) as i64;
    let err = rs256_refused(|c| {
        c.insert("exp".into(), json!(exp_ts));
        c.insert("iat".into(), json!(NOW - 300));
    });
    assert_eq!(err, IdTokenError::Expired { exp: exp_ts, now: NOW });
}

#[test]
fn expired_within_skew_is_accepted() {
    let exp_ts = (NOW - SKEW + 1) as i64;
    let token = rs256_result(|c| {
        c.insert("exp".into(), json!(exp_ts));
        c.insert("iat".into(), json!(NOW - 300));
    })
    .expect("token within the clock skew must be accepted");
    assert_eq!(token.exp, exp_ts);
}

#[test]
fn missing_exp_is_refused() {
    let err = rs256_refused(|c| {
        c.remove("exp");
    });
    assert_eq!(err, IdTokenError::MissingExp);
}

#[test]
fn nbf_in_the_future_beyond_skew_is_refused() {
    let nbf = (NOW + SKEW + 1) as i64;
    let err = rs256_refused(|c| {
        c.insert("nbf".into(), json!(nbf));
    });
    assert_eq!(err, IdTokenError::NotYetValid { nbf, now: NOW });
}

#[test]
fn nbf_within_skew_is_accepted() {
    rs256_result(|c| {
        c.insert("nbf".into(), json!(NOW + SKEW - 1));
    })
    .expect("nbf within the clock skew must be accepted");
}

#[test]
fn iat_older_than_window_is_refused() {
    let iat = (NOW - IAT_WINDOW - SKEW - 1) as i64;
    let err = rs256_refused(|c| {
        c.insert("iat".into(), json!(iat));
    });
    assert_eq!(err, IdTokenError::IatTooOld { iat, now: NOW });
}

#[test]
fn iat_in_the_future_is_refused() {
    let iat = (NOW + SKEW + 1) as i64;
    let err = rs256_refused(|c| {
        c.insert("iat".into(), json!(iat));
    });
    assert_eq!(err, IdTokenError::IatInFuture { iat, now: NOW });
}

#[test]
fn missing_iat_is_refused() {
    let err = rs256_refused(|c| {
        c.remove("iat");
    });
    assert_eq!(err, IdTokenError::MissingIat);
}

// ---------------------------------------------------------------------------------------
// Nonce, subject, at_hash
// ---------------------------------------------------------------------------------------

#[test]
fn missing_nonce_is_refused() {
    let err = rs256_refused(|c| {
        c.remove("nonce");
    });
    assert_eq!(err, IdTokenError::NonceMissing);
}

#[test]
fn wrong_nonce_is_refused() {
    let err = rs256_refused(|c| {
        c.insert("nonce".into(), json!("n-someone-elses"));
    });
    assert_eq!(err, IdTokenError::NonceMismatch);
}

#[test]
fn missing_sub_is_refused() {
    let err = rs256_refused(|c| {
        c.remove("sub");
    });
    assert_eq!(err, IdTokenError::MissingSub);
}

const ACCESS_TOKEN: &str = "ya29.a0AfH6SMBx-access-token";

fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    b64(&digest[..16])
}

#[test]
fn matching_at_hash_is_accepted() {
    let exp = Expectations { access_token: Some(ACCESS_TOKEN), ..expectations() };
    let token = rs256(&claims_with(|c| {
        c.insert("at_hash".into(), json!(at_hash(ACCESS_TOKEN)));
    }));
    accepted(&token, &provider_jwks(), &exp);
}

#[test]
fn wrong_at_hash_is_refused() {
    let exp = Expectations { access_token: Some(ACCESS_TOKEN), ..expectations() };
    let token = rs256(&claims_with(|c| {
        c.insert("at_hash".into(), json!(at_hash("a-different-access-token")));
    }));
    assert_eq!(refused(&token, &provider_jwks(), &exp), IdTokenError::AtHashMismatch);
}

// ---------------------------------------------------------------------------------------
// Key selection
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_kid_is_refused() {
    let token = sign(&Rsa::rs256(), &kid_header("k-unknown"), &base_claims(), rsa_key());
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::UnknownKey(Some("k-unknown".into())));
}

#[test]
fn no_kid_with_two_rsa_keys_is_refused() {
    let public = rsa_key().to_public_key();
    let keys = jwks(vec![rsa_jwk("k1", &public), rsa_jwk("k2", &public)]);
    let token = sign(&Rsa::rs256(), &Header::empty(), &base_claims(), rsa_key());
    assert_eq!(refused(&token, &keys, &expectations()), IdTokenError::UnknownKey(None));
}

#[test]
fn no_kid_with_exactly_one_fitting_key_is_accepted() {
    let token = sign(&Rsa::rs256(), &Header::empty(), &base_claims(), rsa_key());
    let verified = accepted(&token, &provider_jwks(), &expectations());
    assert_eq!(verified.kid, None);
    assert_eq!(verified.sub, SUBJECT);
}

#[test]
fn rs256_token_with_kid_of_an_ec_key_is_refused() {
    let token = sign(&Rsa::rs256(), &kid_header(EC_KID), &base_claims(), rsa_key());
    assert_eq!(
        refused(&token, &provider_jwks(), &expectations()),
        IdTokenError::KeyAlgorithmMismatch { alg: "RS256".into(), kid: Some(EC_KID.into()) }
    );
}

fn encryption_only_jwks() -> Vec<Jwk> {
    let mut jwk = rsa_jwk(RSA_KID, &rsa_key().to_public_key());
    jwk["use"] = json!("enc");
    jwks(vec![jwk])
}

#[test]
fn encryption_key_is_not_used_for_signatures_by_kid() {
    let token = rs256(&base_claims());
    assert_eq!(
        refused(&token, &encryption_only_jwks(), &expectations()),
        IdTokenError::KeyAlgorithmMismatch { alg: "RS256".into(), kid: Some(RSA_KID.into()) }
    );
}

#[test]
fn encryption_key_is_not_used_for_signatures_without_kid() {
    let token = sign(&Rsa::rs256(), &Header::empty(), &base_claims(), rsa_key());
    assert_eq!(refused(&token, &encryption_only_jwks(), &expectations()), IdTokenError::UnknownKey(None));
}

// ---------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------

#[test]
fn flipped_signature_bit_is_refused() {
    let [header, payload, signature] = segments(&rs256(&base_claims()));
    let mut sig = unb64(&signature);
    sig[17] ^= 0x01;
    let token = format!("{header}.{payload}.{}", b64(&sig));
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::BadSignature);
}

#[test]
fn changed_payload_is_refused() {
    let [header, _, signature] = segments(&rs256(&base_claims()));
    let forged = claims_with(|c| {
        c.insert("sub".into(), json!("user-124"));
    });
    let payload = b64(Value::Object(forged).to_string().as_bytes());
    let token = format!("{header}.{payload}.{signature}");
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::BadSignature);
}

#[test]
fn embedded_jwk_header_is_never_used() {
    let attacker = attacker_rsa_key();
    let header = Header::new(json!({ "jwk": rsa_jwk(RSA_KID, &attacker.to_public_key()) })).with_key_id(RSA_KID);
    let token = sign(&Rsa::rs256(), &header, &base_claims(), attacker);
    let [encoded_header, _, _] = segments(&token);
    let decoded: Value = serde_json::from_slice(&unb64(&encoded_header)).expect("header JSON");
    assert!(decoded.get("jwk").is_some(), "the header carries the attacker's key");
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::BadSignature);
}

#[test]
fn jku_header_is_never_used() {
    let attacker = attacker_rsa_key();
    let header = Header::empty().with_key_set_url("https://attacker.test/jwks.json").with_key_id(RSA_KID);
    let token = sign(&Rsa::rs256(), &header, &base_claims(), attacker);
    let [encoded_header, _, _] = segments(&token);
    let decoded: Value = serde_json::from_slice(&unb64(&encoded_header)).expect("header JSON");
    assert_eq!(decoded.get("jku"), Some(&json!("https://attacker.test/jwks.json")));
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::BadSignature);
}

#[test]
fn all_zero_es256_signature_is_refused() {
    let [header, payload, _] = segments(&sign(&Es256, &kid_header(EC_KID), &base_claims(), &ec_key()));
    let token = format!("{header}.{payload}.{}", b64(&[0u8; 64]));
    assert_eq!(refused(&token, &provider_jwks(), &expectations()), IdTokenError::BadSignature);
}

// ---------------------------------------------------------------------------------------
// Token shape
// ---------------------------------------------------------------------------------------

#[test]
fn jwe_shaped_token_is_refused_as_encrypted() {
    let token = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a2V5.aXY.Y2lwaGVydGV4dA.dGFn";
    assert_eq!(refused(token, &provider_jwks(), &expectations()), IdTokenError::Encrypted);
}

#[test]
fn garbage_is_refused_as_malformed() {
    for token in ["", "garbage", "not.a-valid.token!", "a.b", "a.b.c.d"] {
        let err = refused(token, &provider_jwks(), &expectations());
        assert!(matches!(err, IdTokenError::Malformed(_)), "{token:?} gave {err:?}");
    }
}

#[test]
fn oversized_token_is_refused_as_malformed() {
    let padding = "x".repeat(70_000);
    let token = rs256(&claims_with(|c| {
        c.insert("padding".into(), json!(padding));
    }));
    let err = refused(&token, &provider_jwks(), &expectations());
    assert!(matches!(err, IdTokenError::Malformed(_)), "got {err:?}");
}

// ---------------------------------------------------------------------------------------
// JWKS parsing
// ---------------------------------------------------------------------------------------

#[test]
fn jwks_skips_rsa_key_shorter_than_2048_bits() {
    // A 1024-bit modulus (top and bottom bits set); the size check runs before any use.
    let mut modulus = vec![0x5a_u8; 128];
    modulus[0] = 0xc3;
    modulus[127] = 0x5b;
    let body = json!({"keys": [
        {"kty": "RSA", "kid": "weak", "use": "sig", "n": b64(&modulus), "e": "AQAB"},
        rsa_jwk(RSA_KID, &rsa_key().to_public_key()),
    ]})
    .to_string();
    let parsed = parse_jwks(body.as_bytes()).expect("JWKS parses");
    assert_eq!(parsed.keys.len(), 1);
    assert_eq!(parsed.keys[0].kid.as_deref(), Some(RSA_KID));
    assert_eq!(parsed.skipped.len(), 1);
    assert!(parsed.skipped[0].starts_with("weak: RSA key shorter than 2048 bits"), "{:?}", parsed.skipped);
}

#[test]
fn jwks_skips_unknown_key_type() {
    let body = json!({"keys": [
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
        ed_jwk(ED_KID, &ed_key()),
    ]})
    .to_string();
    let parsed = parse_jwks(body.as_bytes()).expect("JWKS parses");
    assert_eq!(parsed.keys.len(), 1);
    assert_eq!(parsed.keys[0].kid.as_deref(), Some(ED_KID));
    assert_eq!(parsed.skipped.len(), 1);
    assert!(parsed.skipped[0].starts_with("sym: unsupported key type"), "{:?}", parsed.skipped);
}

#[test]
fn jwks_ignores_private_members() {
    let mut jwk = ec_jwk(EC_KID, &ec_key());
    jwk["d"] = json!(b64(&[0x17; 32]));
    let keys = jwks(vec![jwk]);
    let token = sign(&Es256, &kid_header(EC_KID), &base_claims(), &ec_key());
    accepted(&token, &keys, &expectations());
}

#[test]
fn jwks_that_is_not_json_is_an_error() {
    assert!(parse_jwks(b"<html>not a key set</html>").is_err());
    assert!(parse_jwks(b"{\"no_keys\": []}").is_err());
}

// ---------------------------------------------------------------------------------------
// JOSE header: `crit` (RFC 7515 4.1.11) and the logout token's `typ`
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Extension {
    #[serde(skip_serializing_if = "Option::is_none")]
    crit: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64: Option<bool>,
}

fn rs256_with_header(claims: &Map<String, Value>, crit: Option<Value>, typ: Option<&str>) -> String {
    let mut header = Header::new(Extension { crit, b64: Some(true) }).with_key_id(RSA_KID);
    if let Some(t) = typ {
        header = header.with_token_type(t);
    }
    sign(&Rsa::rs256(), &header, claims, rsa_key())
}

/// The verifier understands no header extension, so a token that marks any as critical is
/// refused, on the Rust path and on the runtime-crypto (port) path alike; so is an empty or
/// malformed `crit`.
#[test]
fn critical_header_extensions_are_refused() {
    for crit in [json!(["b64"]), json!(["exp_ext"]), json!([]), json!("b64"), json!(null)] {
        let token = UntrustedIdToken::new(rs256_with_header(&base_claims(), Some(crit.clone()), None));
        let rust = token.verify(&provider_jwks(), &expectations()).expect_err("refused");
        assert!(matches!(rust, IdTokenError::CriticalHeader(_)), "{crit}: {rust:?}");
        assert_eq!(token.signing_parts().expect_err("refused"), rust, "{crit}");
    }
    // Without `crit` the same header is accepted (unknown non-critical parameters are ignored).
    accepted(&rs256_with_header(&base_claims(), None, None), &provider_jwks(), &expectations());
    let logout = UntrustedIdToken::new(rs256_with_header(&logout_claims(), Some(json!(["b64"])), None));
    assert!(matches!(
        logout.verify_logout(&provider_jwks(), &logout_expectations()),
        Err(IdTokenError::CriticalHeader(_))
    ));
}

fn logout_claims() -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("iss".into(), json!(ISSUER));
    c.insert("aud".into(), json!(CLIENT_ID));
    c.insert("iat".into(), json!(NOW - 10));
    c.insert("jti".into(), json!("jti-1"));
    c.insert("sid".into(), json!("sid-1"));
    c.insert("events".into(), json!({"http://schemas.openid.net/event/backchannel-logout": {}}));
    c
}

fn logout_expectations<'a>() -> Expectations<'a> {
    Expectations { nonce: None, ..expectations() }
}

/// Back-Channel Logout 1.0 section 2.4: a logout token's `typ`, when present, is
/// `logout+jwt` (media type names compare case-insensitively, and `application/` may be
/// written out, RFC 7515 4.1.9); any other type is refused, so an ID token or another JWT
/// signed by the same IdP is never taken for a logout token.
#[test]
fn logout_token_type_is_checked_when_present() {
    let check = |typ: Option<&str>| {
        UntrustedIdToken::new(rs256_with_header(&logout_claims(), None, typ))
            .verify_logout(&provider_jwks(), &logout_expectations())
    };
    for ok in
        [None, Some("logout+jwt"), Some("Logout+JWT"), Some("application/logout+jwt"), Some("APPLICATION/logout+JWT")]
    {
        assert_eq!(check(ok).expect("accepted").jti, "jti-1", "{ok:?}");
    }
    for bad in ["JWT", "at+jwt", "application/jwt", "logout+jwt2", "xapplication/logout+jwt", ""] {
        assert_eq!(check(Some(bad)).expect_err("refused"), IdTokenError::LogoutTokenType(bad.into()), "{bad}");
    }
}

/// Time checks saturate: a window or skew too large for the signed arithmetic (the
/// configuration bounds them, this is the second line) neither panics nor wraps into a
/// negative window that refuses every token.
#[test]
fn huge_windows_neither_panic_nor_wrap() {
    let token = rs256(&claims_with(|c| {
        c.insert("iat".into(), json!(NOW - 3000));
    }));
    let exp = Expectations { iat_window: u64::MAX, ..expectations() };
    accepted(&token, &provider_jwks(), &exp);
    let exp = Expectations { skew: u64::MAX, iat_window: u64::MAX, ..expectations() };
    accepted(&token, &provider_jwks(), &exp);
    let logout = UntrustedIdToken::new(rs256_with_header(&logout_claims(), None, None));
    assert!(logout
        .verify_logout(&provider_jwks(), &Expectations { iat_window: u64::MAX, ..logout_expectations() })
        .is_ok());
}
