//! The options the browser's `navigator.credentials.create()` / `.get()` take, in their JSON
//! form (`PublicKeyCredentialCreationOptionsJSON` / `PublicKeyCredentialRequestOptionsJSON`,
//! §5.1.8-5.1.9: binary members base64url), ready for `PublicKeyCredential.parseCreationOptionsFromJSON`.

use serde_json::{json, Value};

use super::attestation::AttestationPolicy;
use super::ceremony::UserVerification;
use super::cose::CoseAlg;
use super::{AuthenticationChallenge, Passkey, RegistrationChallenge, CHALLENGE_TTL};
use crate::crypto::b64url;

/// The `timeout` hint (milliseconds): a minute inside the challenge's lifetime.
pub const TIMEOUT_MS: u64 = (CHALLENGE_TTL - 60) * 1000;

/// Whether the credential should be discoverable (§5.4.6). A discoverable credential lets a
/// later usernameless sign-in find the user; as a second factor either kind works.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResidentKey {
    Required,
    #[default]
    Preferred,
    Discouraged,
}

impl ResidentKey {
    pub fn as_str(self) -> &'static str {
        match self {
            ResidentKey::Required => "required",
            ResidentKey::Preferred => "preferred",
            ResidentKey::Discouraged => "discouraged",
        }
    }
}

/// What the creation options say.
#[derive(Debug, Clone, Copy)]
pub struct CreationParams<'a> {
    pub rp_id: &'a str,
    /// Shown by the authenticator (the tenant's display name).
    pub rp_name: &'a str,
    /// The account name shown when choosing a passkey (e.g. the e-mail address).
    pub user_name: &'a str,
    pub user_display_name: &'a str,
    pub challenge: &'a RegistrationChallenge,
    /// In order of preference.
    pub algorithms: &'a [CoseAlg],
    /// The user's passkeys, listed in `excludeCredentials` so an authenticator does not
    /// register twice.
    pub existing: &'a [Passkey],
    pub user_verification: UserVerification,
    pub resident_key: ResidentKey,
    pub attestation: AttestationPolicy,
}

fn descriptors(passkeys: &[Passkey]) -> Vec<Value> {
    passkeys
        .iter()
        .map(|p| {
            let mut d = json!({"type": "public-key", "id": p.id});
            if !p.transports.is_empty() {
                d["transports"] = json!(p.transports);
            }
            d
        })
        .collect()
}

/// `PublicKeyCredentialCreationOptionsJSON`, with `extensions: {credProps: true}`.
pub fn creation_options(p: &CreationParams<'_>) -> Value {
    let params: Vec<Value> = p.algorithms.iter().map(|a| json!({"type": "public-key", "alg": a.cose()})).collect();
    json!({
        "rp": {"id": p.rp_id, "name": p.rp_name},
        "user": {"id": b64url(p.challenge.user_handle()), "name": p.user_name, "displayName": p.user_display_name},
        "challenge": b64url(p.challenge.challenge()),
        "pubKeyCredParams": params,
        "timeout": TIMEOUT_MS,
        "excludeCredentials": descriptors(p.existing),
        "authenticatorSelection": {
            "residentKey": p.resident_key.as_str(),
            "requireResidentKey": p.resident_key == ResidentKey::Required,
            "userVerification": p.user_verification.as_str(),
        },
        "attestation": p.attestation.conveyance(),
        "extensions": {"credProps": true},
    })
}

/// `PublicKeyCredentialRequestOptionsJSON` for a known user: `allowCredentials` lists the
/// user's passkeys. An empty list would let any discoverable credential answer; for a second
/// factor the caller offers passkeys only to a user who has some.
pub fn request_options(
    rp_id: &str,
    challenge: &AuthenticationChallenge,
    passkeys: &[Passkey],
    user_verification: UserVerification,
) -> Value {
    json!({
        "challenge": b64url(challenge.challenge()),
        "timeout": TIMEOUT_MS,
        "rpId": rp_id,
        "allowCredentials": descriptors(passkeys),
        "userVerification": user_verification.as_str(),
    })
}
