#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Synthetic ceremonies with ES256, RS256 and Ed25519 keys: a valid one for each, then each
//! refusal of §7.1 and §7.2 on a ceremony that is valid but for the one change.

use p256::pkcs8::DecodePrivateKey;
use portcullis::webauthn::cbor;
use portcullis::webauthn::{
    verify_authentication, verify_registration, AttestationPolicy, AttestationType, CoseAlg, Passkey, UserVerification,
    WebauthnError,
};
use serde_json::{json, Value};

use crate::webauthn_support::*;

#[test]
fn synthetic_round_trips_for_each_algorithm() {
    for (key, alg) in [(Key::es256(), CoseAlg::Es256), (Key::rs256(), CoseAlg::Rs256), (Key::eddsa(), CoseAlg::EdDsa)] {
        let mut c = Ceremony::new(key, "webauthn.create");
        c.packed = Some(None);
        let v = c.register(AttestationPolicy::Packed).unwrap();
        assert_eq!(v.alg(), alg);
        assert_eq!(v.attestation(), &AttestationType::SelfAttestation);
        assert_eq!(v.cred_props_rk(), Some(true));
        assert_eq!(v.transports(), ["internal".to_owned(), "hybrid".to_owned()]);
        assert!(v.user_verified());
        let mut stored = v.into_passkey("laptop", NOW);
        assert!(stored.uv_initialized);
        assert_eq!(stored.discoverable, Some(true));
        assert_eq!(stored.alg, alg);

        c.kind = "webauthn.get";
        c.counter = 5;
        let used = c.authenticate(&stored, UserVerification::Required).unwrap();
        assert_eq!(used.new_counter(), 5);
        assert!(stored.record_use(&used, NOW + 1));
        assert_eq!((stored.counter, stored.last_used), (5, Some(NOW + 1)));
        // The same counter again is a replayed or cloned authenticator.
        assert_eq!(
            c.authenticate(&stored, UserVerification::Required).err(),
            Some(WebauthnError::CounterWentBackwards { stored: 5, received: 5 })
        );
    }
}

#[test]
fn packed_attestation_with_an_attestation_certificate() {
    let att_key = p256::ecdsa::SigningKey::from_pkcs8_der(&der(ATTESTATION_KEY)).unwrap();
    let mut c = Ceremony::new(Key::eddsa(), "webauthn.create");
    c.aaguid = AAGUID;
    c.packed = Some(Some((attestation_cert(ATTESTATION_CRT), att_key.clone())));
    let v = c.register(AttestationPolicy::Packed).unwrap();
    assert!(matches!(v.attestation(), AttestationType::Basic { chain_len: 1, .. }));
    assert_eq!(v.aaguid(), AAGUID);

    // The certificate names another model than the authenticator data.
    c.aaguid = [9; 16];
    assert_eq!(c.register(AttestationPolicy::Packed).unwrap_err().code(), "attestation_invalid");
    c.aaguid = AAGUID;

    // A wrong signature by the attestation key.
    c.tamper_sig = |s| {
        let n = s.len();
        s[n - 3] ^= 1;
    };
    assert_eq!(c.register(AttestationPolicy::Packed).unwrap_err().code(), "attestation_invalid");

    // A certificate that is no attestation certificate (a CA, without the required subject),
    // though its key made the signature.
    let other = p256::ecdsa::SigningKey::from_pkcs8_der(&der(NOT_AN_ATTESTATION_KEY)).unwrap();
    c.tamper_sig = |_| {};
    c.packed = Some(Some((attestation_cert(NOT_AN_ATTESTATION_CRT), other)));
    assert_eq!(c.register(AttestationPolicy::Packed).unwrap_err().code(), "attestation_invalid");

    // The right subject on a CA certificate.
    let ca = p256::ecdsa::SigningKey::from_pkcs8_der(&der(ATTESTATION_CA_KEY)).unwrap();
    c.packed = Some(Some((attestation_cert(ATTESTATION_CA_CRT), ca)));
    assert_eq!(
        c.register(AttestationPolicy::Packed).err(),
        Some(WebauthnError::AttestationInvalid("attestation certificate is not marked CA=false"))
    );

    // A certificate that expired (or is not valid yet) at the time of the ceremony.
    c.packed = Some(Some((attestation_cert(ATTESTATION_CRT), att_key)));
    let challenge = reg_challenge(&b64(&[0xc4; 32]), b"user-handle", 1_700_000_000);
    let mut exp = reg_exp(&challenge, ORIGIN, RP_ID);
    exp.attestation = AttestationPolicy::Packed;
    exp.now = 1_700_000_000;
    assert_eq!(
        run(verify_registration(&c.registration_json(), &exp, None)).err(),
        Some(WebauthnError::AttestationInvalid("attestation certificate is outside its validity"))
    );
}

#[test]
fn packed_self_attestation_with_a_wrong_signature_or_alg() {
    let mut c = Ceremony::new(Key::es256(), "webauthn.create");
    c.packed = Some(None);
    c.tamper_sig = |s| {
        let n = s.len();
        s[n - 1] ^= 1;
    };
    assert_eq!(c.register(AttestationPolicy::Packed).unwrap_err().code(), "attestation_invalid");
    // The same statement is not examined when the tenant does not ask for attestation.
    assert_eq!(c.register(AttestationPolicy::None).unwrap().attestation(), &AttestationType::None);

    // A correct signature, stated under another algorithm than the credential's.
    c.tamper_sig = |_| {};
    assert!(c.register(AttestationPolicy::Packed).is_ok());
    c.att_alg = Some(-257);
    assert_eq!(
        c.register(AttestationPolicy::Packed).err(),
        Some(WebauthnError::AttestationInvalid("self attestation alg differs from the credential's"))
    );
}

/// A named change to a valid ceremony and the error it must cause.
type Refusal = (&'static str, fn(&mut Ceremony), WebauthnError);

/// Each refusal on a registration that is valid but for the one change.
#[test]
fn registration_refusals() {
    let cases: Vec<Refusal> = vec![
        ("wrong type", |c| c.kind = "webauthn.get", WebauthnError::WrongType),
        ("wrong challenge", |c| c.challenge[0] ^= 1, WebauthnError::ChallengeMismatch),
        ("other origin", |c| c.origin = "https://evil.example.com".into(), WebauthnError::OriginMismatch),
        ("origin with slash", |c| c.origin = format!("{ORIGIN}/"), WebauthnError::OriginMismatch),
        ("origin with port", |c| c.origin = format!("{ORIGIN}:8443"), WebauthnError::OriginMismatch),
        ("http origin", |c| c.origin = "http://app.example.com".into(), WebauthnError::OriginMismatch),
        ("cross origin", |c| c.cross_origin = Some(true), WebauthnError::CrossOrigin),
        ("top origin", |c| c.top_origin = Some("https://evil.example"), WebauthnError::CrossOrigin),
        ("rp id", |c| c.rp_id = "example.com".into(), WebauthnError::RpIdMismatch),
        ("no user presence", |c| c.flags = UV, WebauthnError::UserNotPresent),
        ("BS without BE", |c| c.flags = UP | BS, WebauthnError::BackupFlagsInvalid),
        ("ES384 key", |c| c.cose_alg = Some(-35), WebauthnError::AlgorithmNotAllowed(-35)),
        ("alg and key disagree", |c| c.cose_alg = Some(-8), WebauthnError::UnsupportedKey),
        ("credential id too long", |c| c.cred_id = vec![1; 1024], WebauthnError::CredentialIdTooLong),
        (
            "trailing bytes in authData",
            |c| c.auth_data_suffix = vec![0],
            WebauthnError::Cbor(cbor::CborError::TrailingBytes),
        ),
    ];
    for (name, change, expected) in cases {
        let mut c = Ceremony::new(Key::es256(), "webauthn.create");
        change(&mut c);
        assert_eq!(c.register(AttestationPolicy::None).err(), Some(expected), "{name}");
    }
}

#[test]
fn registration_policy_refusals() {
    let c = Ceremony::new(Key::eddsa(), "webauthn.create");
    let body = c.registration_json();
    let refuse = |uv, algs: &[CoseAlg], existing: &[Passkey]| {
        c.register_json(&body, AttestationPolicy::None, uv, algs, existing).err()
    };
    assert_eq!(refuse(UserVerification::Preferred, ALL, &[]), None);
    // UV required: the flag is set here; without it, refused.
    let mut no_uv = Ceremony::new(Key::eddsa(), "webauthn.create");
    no_uv.flags = UP;
    assert_eq!(
        no_uv
            .register_json(&no_uv.registration_json(), AttestationPolicy::None, UserVerification::Required, ALL, &[])
            .err(),
        Some(WebauthnError::UserNotVerified)
    );
    assert_eq!(
        refuse(UserVerification::Preferred, &[CoseAlg::Es256], &[]),
        Some(WebauthnError::AlgorithmNotAllowed(-8))
    );
    assert_eq!(
        refuse(UserVerification::Preferred, ALL, &[c.passkey(0)]),
        Some(WebauthnError::CredentialAlreadyRegistered)
    );
    // The expired challenge.
    let challenge = reg_challenge(&b64(&[0xc4; 32]), b"user-handle", NOW - 301);
    let exp = reg_exp(&challenge, ORIGIN, RP_ID);
    assert_eq!(run(verify_registration(&body, &exp, None)).err(), Some(WebauthnError::ChallengeExpired));
}

#[test]
fn registration_with_mismatched_ids() {
    let c = Ceremony::new(Key::es256(), "webauthn.create");
    let mut body: Value = serde_json::from_slice(&c.registration_json()).unwrap();
    body["id"] = json!(b64(b"another"));
    let err =
        c.register_json(body.to_string().as_bytes(), AttestationPolicy::None, UserVerification::Preferred, ALL, &[]);
    assert_eq!(err.err(), Some(WebauthnError::CredentialIdMismatch));
    body["id"] = json!(b64(b"another"));
    body["rawId"] = json!(b64(b"another"));
    let err =
        c.register_json(body.to_string().as_bytes(), AttestationPolicy::None, UserVerification::Preferred, ALL, &[]);
    assert_eq!(err.err(), Some(WebauthnError::CredentialIdMismatch), "not the attested credential");
}

#[test]
fn malformed_attestation_objects() {
    let c = Ceremony::new(Key::es256(), "webauthn.create");
    let obj = c.attestation_object();
    let try_obj = |o: &[u8]| {
        c.register_json(&c.registration_json_with(o), AttestationPolicy::None, UserVerification::Preferred, ALL, &[])
            .err()
    };
    assert_eq!(try_obj(&obj[..obj.len() - 1]), Some(WebauthnError::Cbor(cbor::CborError::Truncated)));
    let mut trailing = obj.clone();
    trailing.push(0x00);
    assert_eq!(try_obj(&trailing), Some(WebauthnError::Cbor(cbor::CborError::TrailingBytes)));
    // Depth bomb: attStmt nested 10 000 arrays deep — refused at the depth limit.
    let mut deep = vec![0xa3, 0x63];
    deep.extend(b"fmt");
    deep.extend([0x64]);
    deep.extend(b"none");
    deep.extend([0x67]);
    deep.extend(b"attStmt");
    deep.extend(std::iter::repeat_n(0x81, 10_000));
    deep.push(0xa0);
    let started = std::time::Instant::now();
    assert_eq!(try_obj(&deep), Some(WebauthnError::Cbor(cbor::CborError::TooDeep)));
    // Size bombs: claimed lengths far beyond the input, and an input past the bound.
    let claims_huge = [0xa1, 0x63, b'f', b'm', b't', 0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(try_obj(&claims_huge), Some(WebauthnError::Cbor(cbor::CborError::Truncated)));
    let claims_many = [0x9b, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(try_obj(&claims_many), Some(WebauthnError::Cbor(cbor::CborError::Truncated)));
    let many_items = {
        let mut v = vec![0x9a, 0x00, 0x00, 0x20, 0x00]; // 8192 items
        v.extend(std::iter::repeat_n(0x00, 8192));
        v
    };
    assert_eq!(try_obj(&many_items), Some(WebauthnError::Cbor(cbor::CborError::TooManyItems)));
    assert_eq!(try_obj(&[0u8; 64 * 1024][..]), Some(WebauthnError::TooLarge));
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "bounded inputs are refused quickly");
    // Not the shape of an attestation object.
    assert_eq!(try_obj(&cbor_bytes(&C::A(vec![]))), Some(WebauthnError::Malformed("fmt")));
    // Malformed credential JSON.
    let err = c.register_json(b"{\"id\": 1}", AttestationPolicy::None, UserVerification::Preferred, ALL, &[]);
    assert_eq!(err.err(), Some(WebauthnError::Malformed("credential JSON")));
}

/// Each refusal on an authentication that is valid but for the one change.
#[test]
fn authentication_refusals() {
    let cases: Vec<Refusal> = vec![
        ("wrong type", |c| c.kind = "webauthn.create", WebauthnError::WrongType),
        ("wrong challenge", |c| c.challenge = vec![0xc4; 31], WebauthnError::ChallengeMismatch),
        ("other origin", |c| c.origin = "https://app.example.com.evil.test".into(), WebauthnError::OriginMismatch),
        ("cross origin", |c| c.cross_origin = Some(true), WebauthnError::CrossOrigin),
        ("rp id", |c| c.rp_id = "evil.example.com".into(), WebauthnError::RpIdMismatch),
        ("no user presence", |c| c.flags = UV, WebauthnError::UserNotPresent),
        ("no user verification", |c| c.flags = UP, WebauthnError::UserNotVerified),
        ("backup eligibility changed", |c| c.flags = UP | UV | BE, WebauthnError::BackupFlagsInvalid),
        ("tampered signature", |c| c.tamper_sig = |s| s[10] ^= 1, WebauthnError::BadSignature),
        ("counter went backwards", |c| c.counter = 9, WebauthnError::CounterWentBackwards { stored: 10, received: 9 }),
        ("counter reset to zero", |c| c.counter = 0, WebauthnError::CounterWentBackwards { stored: 10, received: 0 }),
        ("unknown credential", |c| c.cred_id = vec![0xcd; 16], WebauthnError::CredentialNotAllowed),
        ("other user handle", |c| c.user_handle = Some(b"x".to_vec()), WebauthnError::UserHandleMismatch),
        (
            "extension data announced, absent",
            |c| c.flags = UP | UV | ED,
            WebauthnError::Cbor(cbor::CborError::Truncated),
        ),
    ];
    for key in [Key::es256, Key::rs256, Key::eddsa] {
        let base = Ceremony::new(key(), "webauthn.get");
        let stored = base.passkey(10);
        for (name, change, expected) in &cases {
            let mut c = Ceremony::new(key(), "webauthn.get");
            c.counter = 11;
            c.user_handle = Some(b"user-handle".to_vec());
            change(&mut c);
            assert_eq!(c.authenticate(&stored, UserVerification::Required).err(), Some(expected.clone()), "{name}");
        }
    }
}

#[test]
fn counters_that_are_not_used() {
    // An authenticator without a counter (always 0) is accepted, the stored value stays 0.
    let c = Ceremony::new(Key::es256(), "webauthn.get");
    let v = c.authenticate(&c.passkey(0), UserVerification::Preferred).unwrap();
    assert_eq!(v.new_counter(), 0);
}

#[test]
fn ecdsa_signatures_must_be_der() {
    let mut c = Ceremony::new(Key::es256(), "webauthn.get");
    c.counter = 1;
    // A raw r||s signature where the authenticator must send DER.
    c.tamper_sig = |s| {
        let sig = p256::ecdsa::Signature::from_der(s).unwrap();
        *s = sig.to_bytes().to_vec();
    };
    assert_eq!(c.authenticate(&c.passkey(0), UserVerification::Preferred).err(), Some(WebauthnError::BadDer));
}

#[test]
fn assertion_with_attested_credential_data_is_refused() {
    let mut c = Ceremony::new(Key::es256(), "webauthn.get");
    c.flags = UP | UV | AT;
    c.counter = 1;
    let err = c.authenticate(&c.passkey(0), UserVerification::Preferred).unwrap_err();
    assert_eq!(err.code(), "malformed");
}

#[test]
fn stored_algorithm_no_longer_allowed() {
    let mut c = Ceremony::new(Key::rs256(), "webauthn.get");
    c.counter = 1;
    let passkeys = [c.passkey(0)];
    let challenge = auth_challenge(&b64(&[0xc4; 32]), NOW);
    let mut exp = auth_exp(&challenge, ORIGIN, RP_ID, &passkeys);
    exp.algorithms = &[CoseAlg::Es256];
    assert_eq!(
        run(verify_authentication(&c.authentication_json(), &exp, None)).err(),
        Some(WebauthnError::AlgorithmNotAllowed(-257))
    );
}

#[test]
fn record_use_only_updates_its_own_passkey() {
    let mut c = Ceremony::new(Key::es256(), "webauthn.get");
    c.counter = 3;
    let used = c.authenticate(&c.passkey(1), UserVerification::Preferred).unwrap();
    let mut other = Ceremony::new(Key::eddsa(), "webauthn.get");
    other.cred_id = vec![1; 16];
    let mut other_key = other.passkey(1);
    assert!(!other_key.record_use(&used, NOW));
    assert_eq!((other_key.counter, other_key.last_used), (1, None));
}
