//! The two ceremonies, verified after WebAuthn Level 3 §7.1 "Registering a New Credential"
//! and §7.2 "Verifying an Authentication Assertion"; the step numbers in comments are the
//! spec's. Both take the `PublicKeyCredential` as the browser serialises it
//! (`PublicKeyCredential.toJSON()`: base64url binary fields).
//!
//! Choices the spec leaves to the relying party:
//! - One origin, compared byte for byte: the tenant host's, with its scheme (and port when not
//!   the default). `crossOrigin: true` and any `topOrigin` are refused: the gateway's pages
//!   are never meant to run inside another site's frame.
//! - Signature counters (§6.1.1): when the stored or the received counter is non-zero, the
//!   received one must be larger; otherwise the ceremony is refused with
//!   [`WebauthnError::CounterWentBackwards`], for the audit log. A received zero after a
//!   non-zero stored value is refused too: a clone that reports 0 must not slip past.
//! - An assertion whose authenticator data carries attested credential data is refused.

use serde::Deserialize;

use super::attestation::{self, AttestationPolicy, Statement};
use super::authdata::{self, AuthenticatorData};
use super::cbor::{self, Value};
use super::cose::{CoseAlg, CredentialKey};
use super::{
    AuthenticationChallenge, Passkey, RegistrationChallenge, VerifiedAuthentication, VerifiedRegistration,
    WebauthnError, CHALLENGE_TTL,
};
use crate::crypto::{b64url, b64url_decode, ct_eq, sha256};
use crate::ports::SignatureVerifier;

/// Largest credential JSON accepted from the browser.
pub const MAX_RESPONSE_JSON: usize = 64 * 1024;
/// Largest `clientDataJSON`.
pub const MAX_CLIENT_DATA: usize = 4096;
/// Largest attestation object (a `packed` statement with a short certificate chain fits).
pub const MAX_ATTESTATION_OBJECT: usize = 24 * 1024;
/// Largest signature (an RSA-4096 signature is 512 bytes).
const MAX_SIGNATURE: usize = 512;
/// Largest user handle (§5.4.3: at most 64 bytes).
const MAX_USER_HANDLE: usize = 64;
/// The transports recorded (§5.8.4); others are dropped.
const TRANSPORTS: [&str; 6] = ["usb", "nfc", "ble", "smart-card", "hybrid", "internal"];

/// The tenant's user verification requirement (§5.8.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserVerification {
    Required,
    #[default]
    Preferred,
    Discouraged,
}

impl UserVerification {
    pub fn as_str(self) -> &'static str {
        match self {
            UserVerification::Required => "required",
            UserVerification::Preferred => "preferred",
            UserVerification::Discouraged => "discouraged",
        }
    }

    fn required(self) -> bool {
        self == UserVerification::Required
    }
}

/// What a registration must match.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationExpectations<'a> {
    /// The challenge issued for this ceremony (spent by the caller before verifying).
    pub challenge: &'a RegistrationChallenge,
    /// The tenant's origin, e.g. `https://app.example.com`.
    pub origin: &'a str,
    /// The RP ID (the tenant host, or a registrable suffix of it).
    pub rp_id: &'a str,
    pub user_verification: UserVerification,
    /// The algorithms offered in `pubKeyCredParams`.
    pub algorithms: &'a [CoseAlg],
    pub attestation: AttestationPolicy,
    /// The user's passkeys (their ids were sent as `excludeCredentials`).
    pub existing: &'a [Passkey],
    /// Unix seconds.
    pub now: u64,
}

/// What an authentication must match.
#[derive(Debug, Clone, Copy)]
pub struct AuthenticationExpectations<'a> {
    pub challenge: &'a AuthenticationChallenge,
    pub origin: &'a str,
    pub rp_id: &'a str,
    pub user_verification: UserVerification,
    pub algorithms: &'a [CoseAlg],
    /// The signed-in user's passkeys: the credential must be one of them.
    pub passkeys: &'a [Passkey],
    /// The user's WebAuthn user handle; a `userHandle` in the response must equal it.
    pub user_handle: Option<&'a [u8]>,
    pub now: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationJson {
    id: String,
    raw_id: String,
    #[serde(rename = "type")]
    kind: String,
    response: AttestationResponseJson,
    #[serde(default)]
    client_extension_results: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestationResponseJson {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    attestation_object: String,
    #[serde(default)]
    transports: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationJson {
    id: String,
    raw_id: String,
    #[serde(rename = "type")]
    kind: String,
    response: AssertionResponseJson,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssertionResponseJson {
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    authenticator_data: String,
    signature: String,
    #[serde(default)]
    user_handle: Option<String>,
}

/// `CollectedClientData` (§5.8.1); other members are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(default)]
    cross_origin: Option<bool>,
    #[serde(default)]
    top_origin: Option<String>,
}

fn decode_field(s: &str, max: usize, what: &'static str) -> Result<Vec<u8>, WebauthnError> {
    if s.len() > max.div_ceil(3) * 4 {
        return Err(WebauthnError::TooLarge);
    }
    b64url_decode(s).ok_or(WebauthnError::Malformed(what))
}

fn parse_json<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, WebauthnError> {
    if json.len() > MAX_RESPONSE_JSON {
        return Err(WebauthnError::TooLarge);
    }
    serde_json::from_slice(json).map_err(|_| WebauthnError::Malformed("credential JSON"))
}

/// The raw credential id, after `id` and `rawId` agree and `type` is `public-key`.
fn credential_id(id: &str, raw_id: &str, kind: &str) -> Result<Vec<u8>, WebauthnError> {
    if kind != "public-key" {
        return Err(WebauthnError::Malformed("credential type is not public-key"));
    }
    // Step 25 of §7.1, checked first: the id is at most 1023 bytes.
    if raw_id.len() > authdata::MAX_CREDENTIAL_ID.div_ceil(3) * 4 {
        return Err(WebauthnError::CredentialIdTooLong);
    }
    let raw = b64url_decode(raw_id).ok_or(WebauthnError::Malformed("rawId"))?;
    if raw.len() > authdata::MAX_CREDENTIAL_ID {
        return Err(WebauthnError::CredentialIdTooLong);
    }
    if b64url_decode(id).as_deref() != Some(&raw[..]) {
        return Err(WebauthnError::CredentialIdMismatch);
    }
    Ok(raw)
}

/// Steps 5-10 of §7.1 (11-14 of §7.2): parse the client data and check type, challenge,
/// origin and the cross-origin members. Returns SHA-256 of the bytes as received.
fn check_client_data(
    raw: &[u8],
    kind: &str,
    challenge: &[u8],
    issued_at: u64,
    origin: &str,
    now: u64,
) -> Result<[u8; 32], WebauthnError> {
    // Steps 5-6 (9-10): UTF-8 decode and parse.
    let c: ClientData = serde_json::from_slice(raw).map_err(|_| WebauthnError::Malformed("clientDataJSON"))?;
    // Step 7 (11): the ceremony's type.
    if c.kind != kind {
        return Err(WebauthnError::WrongType);
    }
    // Step 8 (12): the challenge, compared in constant time, and still within its lifetime.
    let got = b64url_decode(&c.challenge).ok_or(WebauthnError::ChallengeMismatch)?;
    if !ct_eq(&got, challenge) {
        return Err(WebauthnError::ChallengeMismatch);
    }
    if now > issued_at.saturating_add(CHALLENGE_TTL) {
        return Err(WebauthnError::ChallengeExpired);
    }
    // Step 9 (13): the origin is the tenant's, exactly.
    if c.origin != origin {
        return Err(WebauthnError::OriginMismatch);
    }
    // Step 10 (14): no cross-origin embedding.
    if c.cross_origin == Some(true) || c.top_origin.is_some() {
        return Err(WebauthnError::CrossOrigin);
    }
    // Step 11 (20): the hash of the client data as received.
    Ok(sha256(raw))
}

/// Steps 13-16 of §7.1 (15-18 of §7.2): RP ID hash, user presence, user verification and
/// the backup flags (BS without BE is refused while parsing).
fn check_flags(data: &AuthenticatorData<'_>, rp_id: &str, uv: UserVerification) -> Result<(), WebauthnError> {
    if !ct_eq(&data.rp_id_hash, &sha256(rp_id.as_bytes())) {
        return Err(WebauthnError::RpIdMismatch);
    }
    if !data.flags.up() {
        return Err(WebauthnError::UserNotPresent);
    }
    if uv.required() && !data.flags.uv() {
        return Err(WebauthnError::UserNotVerified);
    }
    Ok(())
}

/// Verifies a registration response (§7.1). `port` is the runtime's signature verifier.
pub async fn verify_registration(
    response_json: &[u8],
    exp: &RegistrationExpectations<'_>,
    port: Option<&dyn SignatureVerifier>,
) -> Result<VerifiedRegistration, WebauthnError> {
    // Steps 1-4: the credential as the browser returned it.
    let cred: RegistrationJson = parse_json(response_json)?;
    let raw_id = credential_id(&cred.id, &cred.raw_id, &cred.kind)?;
    let client_data = decode_field(&cred.response.client_data_json, MAX_CLIENT_DATA, "clientDataJSON")?;
    let challenge = exp.challenge;
    // Steps 5-11.
    let hash = check_client_data(
        &client_data,
        "webauthn.create",
        challenge.challenge(),
        challenge.issued_at(),
        exp.origin,
        exp.now,
    )?;
    // Step 12: decode the attestation object: fmt, attStmt, authData.
    let att_obj_bytes = decode_field(&cred.response.attestation_object, MAX_ATTESTATION_OBJECT, "attestationObject")?;
    let att_obj = cbor::decode(&att_obj_bytes).map_err(WebauthnError::Cbor)?;
    let fmt = att_obj.get_text("fmt").and_then(Value::as_text).ok_or(WebauthnError::Malformed("fmt"))?;
    let att_stmt = att_obj.get_text("attStmt").ok_or(WebauthnError::Malformed("attStmt"))?;
    if att_stmt.as_map().is_none() {
        return Err(WebauthnError::Malformed("attStmt"));
    }
    let auth_data_raw =
        att_obj.get_text("authData").and_then(Value::as_bytes).ok_or(WebauthnError::Malformed("authData"))?;
    let data = authdata::parse(auth_data_raw)?;
    // Steps 13-16.
    check_flags(&data, exp.rp_id, exp.user_verification)?;
    let attested = data.attested.as_ref().ok_or(WebauthnError::Malformed("no attested credential data"))?;
    // Step 19: the credential key's algorithm is one the options offered.
    let key = CredentialKey::from_cose(&attested.public_key)?;
    if !exp.algorithms.contains(&key.alg()) {
        return Err(WebauthnError::AlgorithmNotAllowed(key.alg().cose()));
    }
    // The credential id the browser reported is the one the authenticator attested.
    if attested.credential_id != raw_id.as_slice() {
        return Err(WebauthnError::CredentialIdMismatch);
    }
    // Step 20: the only extension requested is credProps (a client extension); its output
    // is recorded, authenticator extension outputs are ignored.
    let cred_props_rk =
        cred.client_extension_results.get("credProps").and_then(|p| p.get("rk")).and_then(serde_json::Value::as_bool);
    // Steps 21-24: the attestation statement, under the tenant's policy.
    let statement = Statement {
        fmt,
        att_stmt,
        auth_data: auth_data_raw,
        client_data_hash: hash,
        credential: &key,
        aaguid: attested.aaguid,
        now: exp.now,
    };
    let attestation = attestation::verify(exp.attestation, &statement, port).await?;
    // Step 25: the credential id is at most 1023 bytes (checked with rawId and in authData).
    // Step 26: not registered yet — for this user here; across users it is the store's part.
    let id_text = b64url(&raw_id);
    if exp.existing.iter().any(|p| p.id == id_text) {
        return Err(WebauthnError::CredentialAlreadyRegistered);
    }
    let mut transports: Vec<String> = Vec::new();
    for t in cred.response.transports.iter().take(16) {
        if TRANSPORTS.contains(&t.as_str()) && !transports.contains(t) {
            transports.push(t.clone());
        }
    }
    // Step 27: what the caller stores.
    Ok(VerifiedRegistration {
        credential_id: raw_id,
        key,
        sign_count: data.sign_count,
        uv: data.flags.uv(),
        backup_eligible: data.flags.be(),
        backup_state: data.flags.bs(),
        transports,
        aaguid: attested.aaguid,
        cred_props_rk,
        attestation,
    })
}

/// Verifies an authentication response (§7.2) against the user's passkeys.
pub async fn verify_authentication(
    response_json: &[u8],
    exp: &AuthenticationExpectations<'_>,
    port: Option<&dyn SignatureVerifier>,
) -> Result<VerifiedAuthentication, WebauthnError> {
    // Steps 1-4.
    let cred: AuthenticationJson = parse_json(response_json)?;
    let raw_id = credential_id(&cred.id, &cred.raw_id, &cred.kind)?;
    // Steps 5-7: the credential is one of this user's (allowCredentials lists exactly those).
    let id_text = b64url(&raw_id);
    let passkey = exp.passkeys.iter().find(|p| p.id == id_text).ok_or(WebauthnError::CredentialNotAllowed)?;
    // Step 6: a user handle, when the authenticator returns one, is this user's.
    if let (Some(handle), Some(expected)) = (&cred.response.user_handle, exp.user_handle) {
        let handle = decode_field(handle, MAX_USER_HANDLE, "userHandle")?;
        if !ct_eq(&handle, expected) {
            return Err(WebauthnError::UserHandleMismatch);
        }
    }
    // Step 8.
    let client_data = decode_field(&cred.response.client_data_json, MAX_CLIENT_DATA, "clientDataJSON")?;
    let auth_data_raw = decode_field(&cred.response.authenticator_data, authdata::MAX_AUTH_DATA, "authenticatorData")?;
    let signature = decode_field(&cred.response.signature, MAX_SIGNATURE, "signature")?;
    // Steps 9-14 and 20.
    let challenge = exp.challenge;
    let hash = check_client_data(
        &client_data,
        "webauthn.get",
        challenge.challenge(),
        challenge.issued_at(),
        exp.origin,
        exp.now,
    )?;
    let data = authdata::parse(&auth_data_raw)?;
    if data.attested.is_some() {
        return Err(WebauthnError::Malformed("assertion carries attested credential data"));
    }
    // Steps 15-17.
    check_flags(&data, exp.rp_id, exp.user_verification)?;
    // Step 18: backup eligibility is fixed at registration.
    if data.flags.be() != passkey.backup_eligible {
        return Err(WebauthnError::BackupFlagsInvalid);
    }
    // Step 19: extension outputs are not used.
    // Step 21: the signature over authData || hash, with the stored key.
    if !exp.algorithms.contains(&passkey.alg) {
        return Err(WebauthnError::AlgorithmNotAllowed(passkey.alg.cose()));
    }
    let key = CredentialKey::from_jwk(passkey.alg, &passkey.jwk)?;
    let mut signed = Vec::with_capacity(auth_data_raw.len() + 32);
    signed.extend_from_slice(&auth_data_raw);
    signed.extend_from_slice(&hash);
    key.verify(port, &signed, &signature).await?;
    // Step 22: the signature counter.
    let (stored, received) = (passkey.counter, data.sign_count);
    if (stored != 0 || received != 0) && received <= stored {
        return Err(WebauthnError::CounterWentBackwards { stored, received });
    }
    // Step 24: what the caller stores (Passkey::record_use).
    Ok(VerifiedAuthentication {
        credential_id: id_text,
        counter: received.max(stored),
        uv: data.flags.uv(),
        backup_state: data.flags.bs(),
    })
}
