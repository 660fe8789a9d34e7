#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Passkey ceremonies recorded from real authenticators (tests/fixtures/webauthn/
//! recorded.json), the signature port, stored challenges, error codes, browser options, and
//! properties over changed and corrupted inputs. One-change refusals on synthetic ceremonies
//! are in webauthn_refusals.rs.

use std::cell::RefCell;

use portcullis::ports::{LocalFuture, SignatureVerifier};
use portcullis::webauthn::cbor;
use portcullis::webauthn::options::{creation_options, request_options, CreationParams, ResidentKey};
use portcullis::webauthn::{
    verify_authentication, verify_registration, AttestationPolicy, AttestationType, AuthenticationChallenge, CoseAlg,
    CredentialKey, Passkey, RegistrationChallenge, UserVerification, WebauthnError,
};
use serde_json::{json, Value};

use crate::webauthn_support::*;

#[test]
fn recorded_none_registration() {
    let v = recorded_registration("none_es256", AttestationPolicy::None).unwrap();
    let r = recorded();
    let case = &r["registrations"]["none_es256"];
    assert_eq!(b64(v.credential_id()), case["response"]["rawId"].as_str().unwrap());
    assert_eq!(v.alg(), CoseAlg::Es256);
    assert_eq!(v.sign_count(), 23);
    assert_eq!(v.aaguid(), [0; 16]);
    assert_eq!(v.attestation(), &AttestationType::None);
    assert_eq!(v.public_key().jwk(), cose_key(case["credential_public_key"].as_str().unwrap()).jwk());
    assert_eq!(v.cred_props_rk(), None);
    let stored = v.into_passkey("YubiKey", NOW);
    assert_eq!(stored.counter, 23);
    assert_eq!(stored.created, NOW);
    assert_eq!(stored.jwk["kty"], "EC");
    // The stored record survives its JSON form.
    let back: Passkey = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
    assert_eq!(back, stored);
}

#[test]
fn recorded_packed_attestation_with_certificate() {
    for (name, alg, count) in
        [("packed_x5c_yubikey_es256", CoseAlg::Es256, 52), ("packed_x5c_yubikey_eddsa", CoseAlg::EdDsa, 2)]
    {
        let v = recorded_registration(name, AttestationPolicy::Packed).unwrap();
        assert_eq!(v.alg(), alg, "{name}");
        assert_eq!(v.sign_count(), count, "{name}");
        assert!(matches!(v.attestation(), AttestationType::Basic { chain_len: 1, .. }), "{name}");
        // Not asked for: the statement is not examined.
        let v = recorded_registration(name, AttestationPolicy::None).unwrap();
        assert_eq!(v.attestation(), &AttestationType::None);
    }
}

#[test]
fn attestation_none_is_refused_when_the_tenant_requires_packed() {
    assert_eq!(
        recorded_registration("none_es256", AttestationPolicy::Packed).err(),
        Some(WebauthnError::AttestationUnsupported("none".into()))
    );
}

/// The recorded `packed` statement with one byte of its signature changed (the CBOR stays
/// valid: the byte is inside the `sig` byte string).
#[test]
fn recorded_packed_attestation_with_a_wrong_signature() {
    let r = recorded();
    let case = &r["registrations"]["packed_x5c_yubikey_es256"];
    let mut obj = unb64(case["response"]["response"]["attestationObject"].as_str().unwrap());
    let sig_at = obj.windows(3).position(|w| w == b"sig").unwrap() + 3 + 2; // "sig", 0x58 0x47
    obj[sig_at + 40] ^= 0x01;
    let mut response = case["response"].clone();
    response["response"]["attestationObject"] = json!(b64(&obj));
    let challenge = reg_challenge(case["challenge"].as_str().unwrap(), b"user", NOW);
    let mut exp = reg_exp(&challenge, "http://localhost:5000", "localhost");
    exp.attestation = AttestationPolicy::Packed;
    let err = run(verify_registration(response.to_string().as_bytes(), &exp, None)).unwrap_err();
    assert_eq!(err.code(), "attestation_invalid", "{err}");
}

#[test]
fn recorded_authentications() {
    let v = recorded_authentication("es256", UserVerification::Preferred, None).unwrap();
    assert_eq!(v.new_counter(), 78);
    assert!(!v.user_verified());
    let v = recorded_authentication("rs256", UserVerification::Required, None).unwrap();
    assert_eq!(v.new_counter(), 1);
    assert!(v.user_verified());
    let v = recorded_authentication("eddsa", UserVerification::Preferred, None).unwrap();
    assert_eq!(v.new_counter(), 7);
}

#[test]
fn recorded_authentication_without_uv_when_required() {
    assert!(recorded_authentication("es256_without_uv", UserVerification::Preferred, None).is_ok());
    assert_eq!(
        recorded_authentication("es256_without_uv", UserVerification::Required, None).err(),
        Some(WebauthnError::UserNotVerified)
    );
}

#[test]
fn recorded_authentication_with_another_key() {
    // The ES256 assertion checked against the RS256 credential's key.
    let r = recorded();
    let response = r["authentications"]["es256"]["response"].clone();
    let mut case = r["authentications"]["rs256"].clone();
    case["challenge"] = r["authentications"]["es256"]["challenge"].clone();
    let key = cose_key(case["credential_public_key"].as_str().unwrap());
    let passkeys = [passkey(response["id"].as_str().unwrap(), &key, 0)];
    let challenge = auth_challenge(case["challenge"].as_str().unwrap(), NOW);
    let exp = auth_exp(&challenge, "http://localhost:5000", "localhost", &passkeys);
    assert_eq!(
        run(verify_authentication(response.to_string().as_bytes(), &exp, None)).err(),
        Some(WebauthnError::BadSignature)
    );
}

#[test]
fn recorded_authentication_with_a_changed_user_handle() {
    let r = recorded();
    let mut response = r["authentications"]["rs256"]["response"].clone();
    response["response"]["userHandle"] = json!(b64(b"someone else"));
    assert_eq!(
        recorded_authentication("rs256", UserVerification::Required, Some(response)).err(),
        Some(WebauthnError::UserHandleMismatch)
    );
}

/// The runtime's signature port gets the JWS form (ES256: r||s) and its verdict decides.
#[derive(Default)]
struct RecordingPort {
    answer: Option<bool>,
    seen: RefCell<Vec<(String, Value, usize)>>,
}

impl SignatureVerifier for RecordingPort {
    fn verify<'a>(
        &'a self,
        alg: &'a str,
        jwk: &'a Value,
        _signed: &'a [u8],
        signature: &'a [u8],
    ) -> LocalFuture<'a, Option<bool>> {
        Box::pin(async move {
            self.seen.borrow_mut().push((alg.to_owned(), jwk.clone(), signature.len()));
            self.answer
        })
    }
}

#[test]
fn signatures_go_through_the_runtime_port_first() {
    let r = recorded();
    let case = &r["authentications"]["es256"];
    let key = cose_key(case["credential_public_key"].as_str().unwrap());
    let passkeys = [passkey(case["response"]["id"].as_str().unwrap(), &key, 77)];
    let challenge = auth_challenge(case["challenge"].as_str().unwrap(), NOW);
    let exp = auth_exp(&challenge, "http://localhost:5000", "localhost", &passkeys);
    let body = case["response"].to_string();
    for (answer, ok) in [(Some(true), true), (Some(false), false), (None, true)] {
        let port = RecordingPort { answer, ..Default::default() };
        let got = run(verify_authentication(body.as_bytes(), &exp, Some(&port)));
        assert_eq!(got.is_ok(), ok, "{answer:?}");
        let seen = port.seen.borrow();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "ES256");
        assert_eq!(&seen[0].1, key.jwk());
        assert_eq!(seen[0].2, 64, "DER converted to r||s");
    }
}

#[test]
fn challenges_keep_their_kind_when_stored() {
    let reg = RegistrationChallenge::issue([1; 32], b"handle", NOW);
    let auth = AuthenticationChallenge::issue([2; 32], NOW);
    let reg_json = serde_json::to_string(&reg).unwrap();
    let auth_json = serde_json::to_string(&auth).unwrap();
    assert_eq!(serde_json::from_str::<RegistrationChallenge>(&reg_json).unwrap(), reg);
    assert_eq!(serde_json::from_str::<AuthenticationChallenge>(&auth_json).unwrap(), auth);
    assert!(serde_json::from_str::<AuthenticationChallenge>(&reg_json).is_err());
    assert!(serde_json::from_str::<RegistrationChallenge>(&auth_json).is_err());
    assert!(!format!("{reg:?}").contains("challenge: ["), "Debug does not print the challenge");
}

#[test]
fn error_codes_are_distinct() {
    let all = [
        WebauthnError::Malformed("x"),
        WebauthnError::TooLarge,
        WebauthnError::Cbor(cbor::CborError::Truncated),
        WebauthnError::WrongType,
        WebauthnError::ChallengeMismatch,
        WebauthnError::ChallengeExpired,
        WebauthnError::OriginMismatch,
        WebauthnError::CrossOrigin,
        WebauthnError::RpIdMismatch,
        WebauthnError::UserNotPresent,
        WebauthnError::UserNotVerified,
        WebauthnError::BackupFlagsInvalid,
        WebauthnError::AlgorithmNotAllowed(-35),
        WebauthnError::UnsupportedKey,
        WebauthnError::CredentialIdTooLong,
        WebauthnError::CredentialIdMismatch,
        WebauthnError::CredentialNotAllowed,
        WebauthnError::CredentialAlreadyRegistered,
        WebauthnError::UserHandleMismatch,
        WebauthnError::BadDer,
        WebauthnError::BadSignature,
        WebauthnError::CounterWentBackwards { stored: 2, received: 1 },
        WebauthnError::AttestationUnsupported("tpm".into()),
        WebauthnError::AttestationInvalid("x"),
    ];
    let codes: std::collections::BTreeSet<&str> = all.iter().map(WebauthnError::code).collect();
    assert_eq!(codes.len(), all.len());
    assert!(WebauthnError::CounterWentBackwards { stored: 2, received: 1 }.to_string().contains("went backwards"));
}

#[test]
fn options_for_the_browser() {
    let c = Ceremony::new(Key::es256(), "webauthn.create");
    let mut existing = c.passkey(0);
    existing.transports = vec!["usb".into()];
    let challenge = RegistrationChallenge::issue([3; 32], b"opaque-handle", NOW);
    let o = creation_options(&CreationParams {
        rp_id: RP_ID,
        rp_name: "Example",
        user_name: "ada@example.com",
        user_display_name: "Ada",
        challenge: &challenge,
        algorithms: &[CoseAlg::Es256, CoseAlg::EdDsa, CoseAlg::Rs256],
        existing: std::slice::from_ref(&existing),
        user_verification: UserVerification::Required,
        resident_key: ResidentKey::Preferred,
        attestation: AttestationPolicy::None,
    });
    assert_eq!(o["rp"], json!({"id": RP_ID, "name": "Example"}));
    assert_eq!(o["user"]["id"], b64(b"opaque-handle"));
    assert_eq!(o["challenge"], b64(&[3; 32]));
    assert_eq!(o["pubKeyCredParams"][0], json!({"type": "public-key", "alg": -7}));
    assert_eq!(o["pubKeyCredParams"][2]["alg"], -257);
    assert_eq!(o["excludeCredentials"], json!([{"type": "public-key", "id": existing.id, "transports": ["usb"]}]));
    assert_eq!(o["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(o["authenticatorSelection"]["residentKey"], "preferred");
    assert_eq!(o["authenticatorSelection"]["requireResidentKey"], false);
    assert_eq!(o["attestation"], "none");
    assert_eq!(o["extensions"], json!({"credProps": true}));
    assert!(o["timeout"].as_u64().unwrap() < 300_000);

    let challenge = AuthenticationChallenge::issue([4; 32], NOW);
    let o = request_options(RP_ID, &challenge, &[existing.clone()], UserVerification::Preferred);
    assert_eq!(o["rpId"], RP_ID);
    assert_eq!(o["challenge"], b64(&[4; 32]));
    assert_eq!(o["allowCredentials"][0]["id"], existing.id);
    assert_eq!(o["userVerification"], "preferred");
}

/// Every single-byte change to what an assertion signs — authenticator data or client data —
/// is refused, whatever check catches it first.
#[test]
fn every_changed_byte_of_an_assertion_is_refused() {
    let r = recorded();
    let case = &r["authentications"]["es256"];
    for field in ["authenticatorData", "clientDataJSON"] {
        let original = unb64(case["response"]["response"][field].as_str().unwrap());
        for i in 0..original.len() {
            let mut changed = original.clone();
            changed[i] ^= 0x01;
            let mut response = case["response"].clone();
            response["response"][field] = json!(b64(&changed));
            assert!(
                recorded_authentication("es256", UserVerification::Preferred, Some(response)).is_err(),
                "{field} byte {i}"
            );
        }
    }
}

/// The parsers never panic and stay bounded on corrupted inputs: deterministic mutations
/// (byte changes, truncations, insertions) of real attestation objects.
#[test]
fn corrupted_attestation_objects_never_panic() {
    let r = recorded();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for name in ["none_es256", "packed_x5c_yubikey_es256", "packed_x5c_yubikey_eddsa"] {
        let obj = unb64(r["registrations"][name]["response"]["response"]["attestationObject"].as_str().unwrap());
        for _ in 0..3000 {
            let mut m = obj.clone();
            for _ in 0..(next() % 4 + 1) {
                if m.is_empty() {
                    m.push(next() as u8);
                }
                let at = (next() as usize) % m.len();
                match next() % 3 {
                    0 => m[at] = next() as u8,
                    1 => m.truncate(at),
                    _ => m.insert(at, next() as u8),
                }
            }
            if let Ok(v) = cbor::decode(&m) {
                if let Some(ad) = v.get_text("authData").and_then(cbor::Value::as_bytes) {
                    if let Ok(data) = portcullis::webauthn::authdata::parse(ad) {
                        if let Some(att) = data.attested {
                            let _ = CredentialKey::from_cose(&att.public_key);
                        }
                    }
                }
            }
        }
    }
}
