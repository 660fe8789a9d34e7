#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Passkey ceremonies: recorded ones from real authenticators (tests/fixtures/webauthn/
//! recorded.json) and synthetic ones built here with ES256, RS256 and Ed25519 keys, each
//! refusal of §7.1 and §7.2 on a ceremony that is otherwise valid.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::pkcs8::DecodePrivateKey;
use portcullis::ports::{LocalFuture, SignatureVerifier};
use portcullis::webauthn::cbor;
use portcullis::webauthn::options::{creation_options, request_options, CreationParams, ResidentKey};
use portcullis::webauthn::{
    verify_authentication, verify_registration, AttestationPolicy, AttestationType, AuthenticationChallenge,
    AuthenticationExpectations, CoseAlg, CredentialKey, Passkey, RegistrationChallenge, RegistrationExpectations,
    UserVerification, VerifiedAuthentication, VerifiedRegistration, WebauthnError,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const RECORDED: &str = include_str!("fixtures/webauthn/recorded.json");
const ATTESTATION_CRT: &str = include_str!("fixtures/webauthn/attestation.crt");
const ATTESTATION_KEY: &str = include_str!("fixtures/webauthn/attestation.key");
const RSA_KEY: &str = include_str!("fixtures/saml/keys/other-rsa.key");
const NOT_AN_ATTESTATION_CRT: &str = include_str!("fixtures/saml/keys/idp-ec.crt");
const NOT_AN_ATTESTATION_KEY: &str = include_str!("fixtures/saml/keys/idp-ec.key");
const ATTESTATION_CA_CRT: &str = include_str!("fixtures/webauthn/attestation-ca.crt");
const ATTESTATION_CA_KEY: &str = include_str!("fixtures/webauthn/attestation-ca.key");

/// Unix seconds inside every certificate's validity.
const NOW: u64 = 1_800_000_000;
const ALL: &[CoseAlg] = &CoseAlg::ALL;
const ORIGIN: &str = "https://app.example.com";
const RP_ID: &str = "app.example.com";
const AAGUID: [u8; 16] =
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

fn reg_challenge(challenge_b64: &str, user_handle: &[u8], issued_at: u64) -> RegistrationChallenge {
    serde_json::from_value(json!({"challenge": challenge_b64, "user_handle": b64(user_handle), "issued_at": issued_at}))
        .unwrap()
}

fn auth_challenge(challenge_b64: &str, issued_at: u64) -> AuthenticationChallenge {
    serde_json::from_value(json!({"challenge": challenge_b64, "issued_at": issued_at})).unwrap()
}

fn reg_exp<'a>(challenge: &'a RegistrationChallenge, origin: &'a str, rp_id: &'a str) -> RegistrationExpectations<'a> {
    RegistrationExpectations {
        challenge,
        origin,
        rp_id,
        user_verification: UserVerification::Preferred,
        algorithms: ALL,
        attestation: AttestationPolicy::None,
        existing: &[],
        now: NOW,
    }
}

fn auth_exp<'a>(
    challenge: &'a AuthenticationChallenge,
    origin: &'a str,
    rp_id: &'a str,
    passkeys: &'a [Passkey],
) -> AuthenticationExpectations<'a> {
    AuthenticationExpectations {
        challenge,
        origin,
        rp_id,
        user_verification: UserVerification::Preferred,
        algorithms: ALL,
        passkeys,
        user_handle: None,
        now: NOW,
    }
}

fn passkey(id: &str, key: &CredentialKey, counter: u32) -> Passkey {
    Passkey {
        id: id.to_owned(),
        name: "test".into(),
        alg: key.alg(),
        jwk: key.jwk().clone(),
        counter,
        created: NOW - 100,
        last_used: None,
        uv_initialized: false,
        backup_eligible: false,
        backup_state: false,
        transports: vec![],
        aaguid: b64(&[0; 16]),
        discoverable: None,
    }
}

fn cose_key(b64_cose: &str) -> CredentialKey {
    let bytes = unb64(b64_cose);
    CredentialKey::from_cose(&cbor::decode(&bytes).unwrap()).unwrap()
}

// ------------------------------------------------------------------------------------------
// Recorded ceremonies
// ------------------------------------------------------------------------------------------

fn recorded() -> Value {
    serde_json::from_str(RECORDED).unwrap()
}

fn recorded_registration(name: &str, policy: AttestationPolicy) -> Result<VerifiedRegistration, WebauthnError> {
    let r = recorded();
    let case = &r["registrations"][name];
    let challenge = reg_challenge(case["challenge"].as_str().unwrap(), b"user", NOW);
    let mut exp = reg_exp(&challenge, r["origin"].as_str().unwrap(), r["rp_id"].as_str().unwrap());
    exp.attestation = policy;
    run(verify_registration(case["response"].to_string().as_bytes(), &exp, None))
}

fn recorded_authentication(
    name: &str,
    uv: UserVerification,
    response: Option<Value>,
) -> Result<VerifiedAuthentication, WebauthnError> {
    let r = recorded();
    let case = &r["authentications"][name];
    let key = cose_key(case["credential_public_key"].as_str().unwrap());
    let response = response.unwrap_or_else(|| case["response"].clone());
    let passkeys = [passkey(response["id"].as_str().unwrap(), &key, case["stored_count"].as_u64().unwrap() as u32)];
    let challenge = auth_challenge(case["challenge"].as_str().unwrap(), NOW);
    let handle = case["user_handle"].as_str().map(unb64);
    let mut exp = auth_exp(&challenge, r["origin"].as_str().unwrap(), r["rp_id"].as_str().unwrap(), &passkeys);
    exp.user_verification = uv;
    exp.user_handle = handle.as_deref();
    run(verify_authentication(response.to_string().as_bytes(), &exp, None))
}

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

// ------------------------------------------------------------------------------------------
// Synthetic ceremonies
// ------------------------------------------------------------------------------------------

/// A minimal CBOR encoder for building test inputs.
#[derive(Clone)]
enum C {
    U(u64),
    N(i64),
    B(Vec<u8>),
    T(&'static str),
    A(Vec<C>),
    M(Vec<(C, C)>),
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}

fn enc(c: &C, out: &mut Vec<u8>) {
    match c {
        C::U(n) => head(out, 0, *n),
        C::N(n) => head(out, 1, (-1 - n) as u64),
        C::B(b) => {
            head(out, 2, b.len() as u64);
            out.extend(b);
        }
        C::T(t) => {
            head(out, 3, t.len() as u64);
            out.extend(t.as_bytes());
        }
        C::A(items) => {
            head(out, 4, items.len() as u64);
            items.iter().for_each(|i| enc(i, out));
        }
        C::M(entries) => {
            head(out, 5, entries.len() as u64);
            for (k, v) in entries {
                enc(k, out);
                enc(v, out);
            }
        }
    }
}

fn cbor_bytes(c: &C) -> Vec<u8> {
    let mut out = Vec::new();
    enc(c, &mut out);
    out
}

enum Key {
    Es(p256::ecdsa::SigningKey),
    Rs(Box<rsa::RsaPrivateKey>),
    Ed(ed25519_compact::KeyPair),
}

impl Key {
    fn es256() -> Self {
        Key::Es(p256::ecdsa::SigningKey::from_bytes(&[0x42; 32].into()).unwrap())
    }
    fn rs256() -> Self {
        Key::Rs(Box::new(rsa::RsaPrivateKey::from_pkcs8_der(&der(RSA_KEY)).unwrap()))
    }
    fn eddsa() -> Self {
        Key::Ed(ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32])))
    }

    fn cose(&self, alg_override: Option<i64>) -> C {
        match self {
            Key::Es(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                C::M(vec![
                    (C::U(1), C::U(2)),
                    (C::U(3), C::N(alg_override.unwrap_or(-7))),
                    (C::N(-1), C::U(1)),
                    (C::N(-2), C::B(p.x().unwrap().to_vec())),
                    (C::N(-3), C::B(p.y().unwrap().to_vec())),
                ])
            }
            Key::Rs(k) => {
                use rsa::traits::PublicKeyParts;
                C::M(vec![
                    (C::U(1), C::U(3)),
                    (C::U(3), C::N(alg_override.unwrap_or(-257))),
                    (C::N(-1), C::B(k.n().to_bytes_be())),
                    (C::N(-2), C::B(k.e().to_bytes_be())),
                ])
            }
            Key::Ed(k) => C::M(vec![
                (C::U(1), C::U(1)),
                (C::U(3), C::N(alg_override.unwrap_or(-8))),
                (C::N(-1), C::U(6)),
                (C::N(-2), C::B(k.pk.to_vec())),
            ]),
        }
    }

    fn alg(&self) -> i64 {
        match self {
            Key::Es(_) => -7,
            Key::Rs(_) => -257,
            Key::Ed(_) => -8,
        }
    }

    /// As an authenticator signs: ES256 in DER.
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Key::Es(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            Key::Rs(k) => k.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg)).unwrap(),
            Key::Ed(k) => k.sk.sign(msg, None).to_vec(),
        }
    }
}

/// Everything a synthetic ceremony can vary; `new` makes a valid one.
struct Ceremony {
    key: Key,
    kind: &'static str,
    challenge: Vec<u8>,
    origin: String,
    cross_origin: Option<bool>,
    top_origin: Option<&'static str>,
    rp_id: String,
    flags: u8,
    counter: u32,
    cred_id: Vec<u8>,
    cose_alg: Option<i64>,
    aaguid: [u8; 16],
    /// None: fmt "none"; Some(None): packed self attestation; Some(Some(..)): packed with x5c.
    packed: Option<Option<(Vec<u8>, p256::ecdsa::SigningKey)>>,
    /// Applied to the signature before it is sent.
    tamper_sig: fn(&mut Vec<u8>),
    /// Bytes appended to the authenticator data (outside any field).
    auth_data_suffix: Vec<u8>,
    user_handle: Option<Vec<u8>>,
    /// The `alg` a packed self attestation states (default: the key's).
    att_alg: Option<i64>,
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;
const ED: u8 = 0x80;

impl Ceremony {
    fn new(key: Key, kind: &'static str) -> Self {
        Ceremony {
            key,
            kind,
            challenge: vec![0xc4; 32],
            origin: ORIGIN.into(),
            cross_origin: Some(false),
            top_origin: None,
            rp_id: RP_ID.into(),
            flags: UP | UV,
            counter: 0,
            cred_id: vec![0xab; 48],
            cose_alg: None,
            aaguid: [0; 16],
            packed: None,
            tamper_sig: |_| {},
            auth_data_suffix: vec![],
            user_handle: None,
            att_alg: None,
        }
    }

    fn client_data(&self) -> Vec<u8> {
        let mut c = json!({"type": self.kind, "challenge": b64(&self.challenge), "origin": self.origin});
        if let Some(x) = self.cross_origin {
            c["crossOrigin"] = json!(x);
        }
        if let Some(t) = self.top_origin {
            c["topOrigin"] = json!(t);
        }
        c.to_string().into_bytes()
    }

    fn auth_data(&self, attested: bool) -> Vec<u8> {
        let mut d = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        d.push(self.flags | if attested { AT } else { 0 });
        d.extend(self.counter.to_be_bytes());
        if attested {
            d.extend(self.aaguid);
            d.extend((self.cred_id.len() as u16).to_be_bytes());
            d.extend(&self.cred_id);
            d.extend(cbor_bytes(&self.key.cose(self.cose_alg)));
        }
        d.extend(&self.auth_data_suffix);
        d
    }

    fn signed(auth_data: &[u8], client_data: &[u8]) -> Vec<u8> {
        let mut m = auth_data.to_vec();
        m.extend(Sha256::digest(client_data));
        m
    }

    fn attestation_object(&self) -> Vec<u8> {
        let cd = self.client_data();
        let ad = self.auth_data(true);
        let (fmt, stmt) = match &self.packed {
            None => ("none", C::M(vec![])),
            Some(None) => {
                let mut sig = self.key.sign(&Self::signed(&ad, &cd));
                (self.tamper_sig)(&mut sig);
                let alg = self.att_alg.unwrap_or(self.key.alg());
                ("packed", C::M(vec![(C::T("alg"), C::N(alg)), (C::T("sig"), C::B(sig))]))
            }
            Some(Some((cert, att_key))) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = att_key.sign(&Self::signed(&ad, &cd));
                let mut sig = s.to_der().as_bytes().to_vec();
                (self.tamper_sig)(&mut sig);
                (
                    "packed",
                    C::M(vec![
                        (C::T("alg"), C::N(-7)),
                        (C::T("sig"), C::B(sig)),
                        (C::T("x5c"), C::A(vec![C::B(cert.clone())])),
                    ]),
                )
            }
        };
        cbor_bytes(&C::M(vec![(C::T("fmt"), C::T(fmt)), (C::T("attStmt"), stmt), (C::T("authData"), C::B(ad))]))
    }

    fn registration_json_with(&self, attestation_object: &[u8]) -> Vec<u8> {
        json!({
            "id": b64(&self.cred_id),
            "rawId": b64(&self.cred_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&self.client_data()),
                "attestationObject": b64(attestation_object),
                "transports": ["internal", "hybrid", "internal", "carrier-pigeon"],
            },
            "clientExtensionResults": {"credProps": {"rk": true}},
            "authenticatorAttachment": "platform",
        })
        .to_string()
        .into_bytes()
    }

    fn registration_json(&self) -> Vec<u8> {
        self.registration_json_with(&self.attestation_object())
    }

    fn authentication_json(&self) -> Vec<u8> {
        let cd = self.client_data();
        let ad = self.auth_data(false);
        let mut sig = self.key.sign(&Self::signed(&ad, &cd));
        (self.tamper_sig)(&mut sig);
        let mut response = json!({
            "clientDataJSON": b64(&cd),
            "authenticatorData": b64(&ad),
            "signature": b64(&sig),
        });
        if let Some(h) = &self.user_handle {
            response["userHandle"] = json!(b64(h));
        }
        json!({"id": b64(&self.cred_id), "rawId": b64(&self.cred_id), "type": "public-key", "response": response})
            .to_string()
            .into_bytes()
    }

    fn register(&self, policy: AttestationPolicy) -> Result<VerifiedRegistration, WebauthnError> {
        self.register_json(&self.registration_json(), policy, UserVerification::Preferred, ALL, &[])
    }

    fn register_json(
        &self,
        body: &[u8],
        policy: AttestationPolicy,
        uv: UserVerification,
        algorithms: &[CoseAlg],
        existing: &[Passkey],
    ) -> Result<VerifiedRegistration, WebauthnError> {
        let challenge = reg_challenge(&b64(&[0xc4; 32]), b"user-handle", NOW - 10);
        let mut exp = reg_exp(&challenge, ORIGIN, RP_ID);
        exp.attestation = policy;
        exp.user_verification = uv;
        exp.algorithms = algorithms;
        exp.existing = existing;
        run(verify_registration(body, &exp, None))
    }

    /// The passkey this ceremony's key would have been registered as.
    fn passkey(&self, counter: u32) -> Passkey {
        let key = CredentialKey::from_cose(&cbor::decode(&cbor_bytes(&self.key.cose(None))).unwrap()).unwrap();
        let mut p = passkey(&b64(&self.cred_id), &key, counter);
        p.backup_eligible = self.flags & BE != 0;
        p
    }

    fn authenticate(&self, stored: &Passkey, uv: UserVerification) -> Result<VerifiedAuthentication, WebauthnError> {
        let challenge = auth_challenge(&b64(&[0xc4; 32]), NOW - 10);
        let passkeys = [stored.clone()];
        let mut exp = auth_exp(&challenge, ORIGIN, RP_ID, &passkeys);
        exp.user_verification = uv;
        exp.user_handle = Some(b"user-handle");
        run(verify_authentication(&self.authentication_json(), &exp, None))
    }
}

fn der(pem: &str) -> Vec<u8> {
    portcullis::crypto::pem_or_base64_der(pem).unwrap()
}

fn attestation_cert(pem: &str) -> Vec<u8> {
    der(pem)
}

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
