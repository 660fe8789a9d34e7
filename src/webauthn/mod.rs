//! Passkeys (WebAuthn Level 3) as a second factor: the protocol core.
//!
//! - [`cbor`]: a bounded CBOR decoder; [`authdata`]: authenticator data; [`cose`]: COSE keys
//!   to public JWKs, and the signature check shared with ID tokens (the runtime's signature
//!   port first, pure Rust otherwise).
//! - [`ceremony`]: registration (§7.1) and authentication (§7.2) verification; only these
//!   make a [`VerifiedRegistration`] or a [`VerifiedAuthentication`].
//! - [`attestation`]: the `none` and `packed` attestation statement formats (§8.2, §8.7).
//! - [`options`]: the JSON options the browser's `navigator.credentials` calls take.
//!
//! Challenges are issued here ([`RegistrationChallenge::issue`],
//! [`AuthenticationChallenge::issue`]); keeping each single-use (spending it in the
//! coordination object, or in KV with its weaker bounds) is the caller's part.

pub mod attestation;
pub mod authdata;
pub mod cbor;
pub mod ceremony;
pub mod cose;
pub mod options;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use attestation::{AttestationPolicy, AttestationType};
pub use ceremony::{
    verify_authentication, verify_registration, AuthenticationExpectations, RegistrationExpectations, UserVerification,
};
pub use cose::{CoseAlg, CredentialKey};

/// Bytes of randomness in a challenge (§13.4.3 asks for at least 16).
pub const CHALLENGE_BYTES: usize = 32;
/// How long an issued challenge is accepted (seconds); the options' `timeout` is a little
/// shorter, so a ceremony the browser still runs never meets an expired challenge.
pub const CHALLENGE_TTL: u64 = 300;

/// Why a ceremony was refused. [`WebauthnError::code`] is a stable short code for audit
/// events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebauthnError {
    /// The response is not the JSON a browser sends, or a field is not what it must be.
    Malformed(&'static str),
    /// An input exceeds its size bound.
    TooLarge,
    Cbor(cbor::CborError),
    /// `clientDataJSON.type` is not the ceremony's (`webauthn.create` / `webauthn.get`).
    WrongType,
    ChallengeMismatch,
    ChallengeExpired,
    OriginMismatch,
    /// `crossOrigin` true or a `topOrigin`: the ceremony ran in a frame of another origin.
    CrossOrigin,
    RpIdMismatch,
    UserNotPresent,
    UserNotVerified,
    /// BS without BE, or BE changed since registration (§6.1.3).
    BackupFlagsInvalid,
    /// A COSE algorithm off the allowed list (its COSE identifier).
    AlgorithmNotAllowed(i64),
    /// A COSE key that is malformed, of an unsupported type, or refused by the key rules.
    UnsupportedKey,
    CredentialIdTooLong,
    /// The credential's `id`/`rawId` disagree with each other or with the authenticator data.
    CredentialIdMismatch,
    /// Authentication with a credential that is not among the user's passkeys.
    CredentialNotAllowed,
    /// Registration of a credential the user already has.
    CredentialAlreadyRegistered,
    UserHandleMismatch,
    /// An ES256 signature that is not strict DER.
    BadDer,
    BadSignature,
    /// The signature counter did not increase (§6.1.1): a sign the authenticator was cloned.
    CounterWentBackwards {
        stored: u32,
        received: u32,
    },
    /// An attestation format refused under the tenant's attestation policy.
    AttestationUnsupported(String),
    /// An attestation statement that does not verify.
    AttestationInvalid(&'static str),
}

impl WebauthnError {
    pub fn code(&self) -> &'static str {
        match self {
            WebauthnError::Malformed(_) => "malformed",
            WebauthnError::TooLarge => "too_large",
            WebauthnError::Cbor(_) => "cbor",
            WebauthnError::WrongType => "wrong_type",
            WebauthnError::ChallengeMismatch => "challenge_mismatch",
            WebauthnError::ChallengeExpired => "challenge_expired",
            WebauthnError::OriginMismatch => "origin_mismatch",
            WebauthnError::CrossOrigin => "cross_origin",
            WebauthnError::RpIdMismatch => "rp_id_mismatch",
            WebauthnError::UserNotPresent => "user_not_present",
            WebauthnError::UserNotVerified => "user_not_verified",
            WebauthnError::BackupFlagsInvalid => "backup_flags_invalid",
            WebauthnError::AlgorithmNotAllowed(_) => "alg_not_allowed",
            WebauthnError::UnsupportedKey => "unsupported_key",
            WebauthnError::CredentialIdTooLong => "credential_id_too_long",
            WebauthnError::CredentialIdMismatch => "credential_id_mismatch",
            WebauthnError::CredentialNotAllowed => "credential_not_allowed",
            WebauthnError::CredentialAlreadyRegistered => "credential_already_registered",
            WebauthnError::UserHandleMismatch => "user_handle_mismatch",
            WebauthnError::BadDer => "bad_der",
            WebauthnError::BadSignature => "bad_signature",
            WebauthnError::CounterWentBackwards { .. } => "counter_went_backwards",
            WebauthnError::AttestationUnsupported(_) => "attestation_unsupported",
            WebauthnError::AttestationInvalid(_) => "attestation_invalid",
        }
    }
}

impl fmt::Display for WebauthnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebauthnError::Malformed(what) => write!(f, "malformed WebAuthn response: {what}"),
            WebauthnError::Cbor(e) => write!(f, "{e}"),
            WebauthnError::AlgorithmNotAllowed(alg) => write!(f, "COSE algorithm {alg} not allowed"),
            WebauthnError::CounterWentBackwards { stored, received } => {
                write!(f, "signature counter went backwards (stored {stored}, received {received})")
            }
            WebauthnError::AttestationUnsupported(fmt) => write!(f, "attestation format {fmt:?} not accepted"),
            WebauthnError::AttestationInvalid(what) => write!(f, "attestation statement invalid: {what}"),
            other => f.write_str(other.code()),
        }
    }
}

impl std::error::Error for WebauthnError {}

/// A challenge issued for one registration ceremony, with the user handle the options carry.
/// Stored (serialised) until the response comes back; a registration challenge is never
/// accepted where an authentication one is expected, nor the other way round.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationChallenge {
    #[serde(with = "b64")]
    challenge: Vec<u8>,
    #[serde(with = "b64")]
    user_handle: Vec<u8>,
    issued_at: u64,
}

/// A challenge issued for one authentication ceremony.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationChallenge {
    #[serde(with = "b64")]
    challenge: Vec<u8>,
    issued_at: u64,
}

impl fmt::Debug for RegistrationChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationChallenge").field("issued_at", &self.issued_at).finish_non_exhaustive()
    }
}

impl fmt::Debug for AuthenticationChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticationChallenge").field("issued_at", &self.issued_at).finish_non_exhaustive()
    }
}

impl RegistrationChallenge {
    /// `random` comes from the runtime's secure source; `user_handle` is the opaque,
    /// non-identifying WebAuthn user id (§14.6.1) the passkeys of this user share.
    pub fn issue(random: [u8; CHALLENGE_BYTES], user_handle: &[u8], now: u64) -> Self {
        Self { challenge: random.to_vec(), user_handle: user_handle.to_vec(), issued_at: now }
    }
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }
    pub fn user_handle(&self) -> &[u8] {
        &self.user_handle
    }
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
}

impl AuthenticationChallenge {
    pub fn issue(random: [u8; CHALLENGE_BYTES], now: u64) -> Self {
        Self { challenge: random.to_vec(), issued_at: now }
    }
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
}

/// A registration that passed every check of §7.1. Made only by [`verify_registration`].
#[derive(Debug, Clone)]
pub struct VerifiedRegistration {
    credential_id: Vec<u8>,
    key: CredentialKey,
    sign_count: u32,
    uv: bool,
    backup_eligible: bool,
    backup_state: bool,
    transports: Vec<String>,
    aaguid: [u8; 16],
    cred_props_rk: Option<bool>,
    attestation: AttestationType,
}

impl VerifiedRegistration {
    pub fn credential_id(&self) -> &[u8] {
        &self.credential_id
    }
    pub fn public_key(&self) -> &CredentialKey {
        &self.key
    }
    pub fn alg(&self) -> CoseAlg {
        self.key.alg()
    }
    pub fn sign_count(&self) -> u32 {
        self.sign_count
    }
    pub fn user_verified(&self) -> bool {
        self.uv
    }
    pub fn backup_eligible(&self) -> bool {
        self.backup_eligible
    }
    pub fn backup_state(&self) -> bool {
        self.backup_state
    }
    /// The transports the browser reported (`getTransports()`), recognised values only.
    pub fn transports(&self) -> &[String] {
        &self.transports
    }
    pub fn aaguid(&self) -> [u8; 16] {
        self.aaguid
    }
    /// The `credProps` extension's `rk`: whether the credential is discoverable, when the
    /// client said.
    pub fn cred_props_rk(&self) -> Option<bool> {
        self.cred_props_rk
    }
    pub fn attestation(&self) -> &AttestationType {
        &self.attestation
    }

    /// The record to store for this passkey.
    pub fn into_passkey(self, name: &str, now: u64) -> Passkey {
        Passkey {
            id: crate::crypto::b64url(&self.credential_id),
            name: name.to_owned(),
            alg: self.key.alg(),
            jwk: self.key.jwk().clone(),
            counter: self.sign_count,
            created: now,
            last_used: None,
            uv_initialized: self.uv,
            backup_eligible: self.backup_eligible,
            backup_state: self.backup_state,
            transports: self.transports,
            aaguid: crate::crypto::b64url(&self.aaguid),
            discoverable: self.cred_props_rk,
        }
    }
}

/// An authentication that passed every check of §7.2. Made only by [`verify_authentication`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAuthentication {
    credential_id: String,
    counter: u32,
    uv: bool,
    backup_state: bool,
}

impl VerifiedAuthentication {
    /// The passkey's id (base64url credential id, as in [`Passkey::id`]).
    pub fn credential_id(&self) -> &str {
        &self.credential_id
    }
    /// The counter to store (the larger of the stored and the received one).
    pub fn new_counter(&self) -> u32 {
        self.counter
    }
    pub fn user_verified(&self) -> bool {
        self.uv
    }
    pub fn backup_state(&self) -> bool {
        self.backup_state
    }
}

/// A stored passkey: everything authentication needs and what the user's list shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passkey {
    /// The credential id, base64url.
    pub id: String,
    /// The name the user gave it.
    pub name: String,
    pub alg: CoseAlg,
    /// The public key (`kty` and `crv`/`x`/`y` or `n`/`e`).
    pub jwk: serde_json::Value,
    pub counter: u32,
    /// Unix seconds.
    pub created: u64,
    pub last_used: Option<u64>,
    /// Whether user verification was performed at registration (§4 "uvInitialized").
    pub uv_initialized: bool,
    pub backup_eligible: bool,
    pub backup_state: bool,
    #[serde(default)]
    pub transports: Vec<String>,
    /// The authenticator model's AAGUID, base64url (all zero with `none` attestation).
    pub aaguid: String,
    /// `credProps.rk` as the client reported it.
    #[serde(default)]
    pub discoverable: Option<bool>,
}

impl Passkey {
    /// Records a verified use of this passkey; does nothing for another passkey's result.
    pub fn record_use(&mut self, used: &VerifiedAuthentication, now: u64) -> bool {
        if used.credential_id != self.id {
            return false;
        }
        self.counter = used.counter;
        self.last_used = Some(now);
        self.backup_state = used.backup_state;
        self.uv_initialized |= used.uv;
        true
    }
}

/// Bytes as base64url in serialised challenges.
mod b64 {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::crypto::b64url(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        crate::crypto::b64url_decode(&text).ok_or_else(|| serde::de::Error::custom("not base64url"))
    }
}
