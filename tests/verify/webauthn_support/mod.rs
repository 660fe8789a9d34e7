//! Builders and expectations shared by the WebAuthn tests: recorded ceremonies from
//! tests/fixtures/webauthn/recorded.json, and synthetic ones made here with a small CBOR
//! encoder and fixed ES256, RS256 and Ed25519 keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::pkcs8::DecodePrivateKey;
use portcullis::webauthn::cbor;
use portcullis::webauthn::{
    verify_authentication, verify_registration, AttestationPolicy, AuthenticationChallenge, AuthenticationExpectations,
    CoseAlg, CredentialKey, Passkey, RegistrationChallenge, RegistrationExpectations, UserVerification,
    VerifiedAuthentication, VerifiedRegistration, WebauthnError,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const RECORDED: &str = include_str!("../../fixtures/webauthn/recorded.json");
pub const ATTESTATION_CRT: &str = include_str!("../../fixtures/webauthn/attestation.crt");
pub const ATTESTATION_KEY: &str = include_str!("../../fixtures/webauthn/attestation.key");
pub const RSA_KEY: &str = include_str!("../../fixtures/saml/keys/other-rsa.key");
pub const NOT_AN_ATTESTATION_CRT: &str = include_str!("../../fixtures/saml/keys/idp-ec.crt");
pub const NOT_AN_ATTESTATION_KEY: &str = include_str!("../../fixtures/saml/keys/idp-ec.key");
pub const ATTESTATION_CA_CRT: &str = include_str!("../../fixtures/webauthn/attestation-ca.crt");
pub const ATTESTATION_CA_KEY: &str = include_str!("../../fixtures/webauthn/attestation-ca.key");

/// Unix seconds inside every certificate's validity.
pub const NOW: u64 = 1_800_000_000;
pub const ALL: &[CoseAlg] = &CoseAlg::ALL;
pub const ORIGIN: &str = "https://app.example.com";
pub const RP_ID: &str = "app.example.com";
pub const AAGUID: [u8; 16] =
    [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

pub fn run<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

pub fn reg_challenge(challenge_b64: &str, user_handle: &[u8], issued_at: u64) -> RegistrationChallenge {
    serde_json::from_value(json!({"challenge": challenge_b64, "user_handle": b64(user_handle), "issued_at": issued_at}))
        .unwrap()
}

pub fn auth_challenge(challenge_b64: &str, issued_at: u64) -> AuthenticationChallenge {
    serde_json::from_value(json!({"challenge": challenge_b64, "issued_at": issued_at})).unwrap()
}

pub fn reg_exp<'a>(
    challenge: &'a RegistrationChallenge,
    origin: &'a str,
    rp_id: &'a str,
) -> RegistrationExpectations<'a> {
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

pub fn auth_exp<'a>(
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

pub fn passkey(id: &str, key: &CredentialKey, counter: u32) -> Passkey {
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

pub fn cose_key(b64_cose: &str) -> CredentialKey {
    let bytes = unb64(b64_cose);
    CredentialKey::from_cose(&cbor::decode(&bytes).unwrap()).unwrap()
}

// ------------------------------------------------------------------------------------------
// Recorded ceremonies
// ------------------------------------------------------------------------------------------

pub fn recorded() -> Value {
    serde_json::from_str(RECORDED).unwrap()
}

pub fn recorded_registration(name: &str, policy: AttestationPolicy) -> Result<VerifiedRegistration, WebauthnError> {
    let r = recorded();
    let case = &r["registrations"][name];
    let challenge = reg_challenge(case["challenge"].as_str().unwrap(), b"user", NOW);
    let mut exp = reg_exp(&challenge, r["origin"].as_str().unwrap(), r["rp_id"].as_str().unwrap());
    exp.attestation = policy;
    run(verify_registration(case["response"].to_string().as_bytes(), &exp, None))
}

pub fn recorded_authentication(
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

// ------------------------------------------------------------------------------------------
// Synthetic ceremonies
// ------------------------------------------------------------------------------------------

/// A minimal CBOR encoder for building test inputs.
#[derive(Clone)]
pub enum C {
    U(u64),
    N(i64),
    B(Vec<u8>),
    T(&'static str),
    A(Vec<C>),
    M(Vec<(C, C)>),
}

pub fn head(out: &mut Vec<u8>, major: u8, n: u64) {
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

pub fn enc(c: &C, out: &mut Vec<u8>) {
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

pub fn cbor_bytes(c: &C) -> Vec<u8> {
    let mut out = Vec::new();
    enc(c, &mut out);
    out
}

pub enum Key {
    Es(p256::ecdsa::SigningKey),
    Rs(Box<rsa::RsaPrivateKey>),
    Ed(ed25519_compact::KeyPair),
}

impl Key {
    pub fn es256() -> Self {
        Key::Es(p256::ecdsa::SigningKey::from_bytes(&[0x42; 32].into()).unwrap())
    }
    pub fn rs256() -> Self {
        Key::Rs(Box::new(rsa::RsaPrivateKey::from_pkcs8_der(&der(RSA_KEY)).unwrap()))
    }
    pub fn eddsa() -> Self {
        Key::Ed(ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32])))
    }

    pub fn cose(&self, alg_override: Option<i64>) -> C {
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

    pub fn alg(&self) -> i64 {
        match self {
            Key::Es(_) => -7,
            Key::Rs(_) => -257,
            Key::Ed(_) => -8,
        }
    }

    /// As an authenticator signs: ES256 in DER.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
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
pub struct Ceremony {
    pub key: Key,
    pub kind: &'static str,
    pub challenge: Vec<u8>,
    pub origin: String,
    pub cross_origin: Option<bool>,
    pub top_origin: Option<&'static str>,
    pub rp_id: String,
    pub flags: u8,
    pub counter: u32,
    pub cred_id: Vec<u8>,
    pub cose_alg: Option<i64>,
    pub aaguid: [u8; 16],
    /// None: fmt "none"; Some(None): packed self attestation; Some(Some(..)): packed with x5c.
    pub packed: Option<Option<(Vec<u8>, p256::ecdsa::SigningKey)>>,
    /// Applied to the signature before it is sent.
    pub tamper_sig: fn(&mut Vec<u8>),
    /// Bytes appended to the authenticator data (outside any field).
    pub auth_data_suffix: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
    /// The `alg` a packed self attestation states (default: the key's).
    pub att_alg: Option<i64>,
}

pub const UP: u8 = 0x01;
pub const UV: u8 = 0x04;
pub const BE: u8 = 0x08;
pub const BS: u8 = 0x10;
pub const AT: u8 = 0x40;
pub const ED: u8 = 0x80;

impl Ceremony {
    pub fn new(key: Key, kind: &'static str) -> Self {
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

    pub fn client_data(&self) -> Vec<u8> {
        let mut c = json!({"type": self.kind, "challenge": b64(&self.challenge), "origin": self.origin});
        if let Some(x) = self.cross_origin {
            c["crossOrigin"] = json!(x);
        }
        if let Some(t) = self.top_origin {
            c["topOrigin"] = json!(t);
        }
        c.to_string().into_bytes()
    }

    pub fn auth_data(&self, attested: bool) -> Vec<u8> {
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

    pub fn signed(auth_data: &[u8], client_data: &[u8]) -> Vec<u8> {
        let mut m = auth_data.to_vec();
        m.extend(Sha256::digest(client_data));
        m
    }

    pub fn attestation_object(&self) -> Vec<u8> {
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

    pub fn registration_json_with(&self, attestation_object: &[u8]) -> Vec<u8> {
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

    pub fn registration_json(&self) -> Vec<u8> {
        self.registration_json_with(&self.attestation_object())
    }

    pub fn authentication_json(&self) -> Vec<u8> {
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

    pub fn register(&self, policy: AttestationPolicy) -> Result<VerifiedRegistration, WebauthnError> {
        self.register_json(&self.registration_json(), policy, UserVerification::Preferred, ALL, &[])
    }

    pub fn register_json(
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
    pub fn passkey(&self, counter: u32) -> Passkey {
        let key = CredentialKey::from_cose(&cbor::decode(&cbor_bytes(&self.key.cose(None))).unwrap()).unwrap();
        let mut p = passkey(&b64(&self.cred_id), &key, counter);
        p.backup_eligible = self.flags & BE != 0;
        p
    }

    pub fn authenticate(
        &self,
        stored: &Passkey,
        uv: UserVerification,
    ) -> Result<VerifiedAuthentication, WebauthnError> {
        let challenge = auth_challenge(&b64(&[0xc4; 32]), NOW - 10);
        let passkeys = [stored.clone()];
        let mut exp = auth_exp(&challenge, ORIGIN, RP_ID, &passkeys);
        exp.user_verification = uv;
        exp.user_handle = Some(b"user-handle");
        run(verify_authentication(&self.authentication_json(), &exp, None))
    }
}

pub fn der(pem: &str) -> Vec<u8> {
    portcullis::crypto::pem_or_base64_der(pem).unwrap()
}

pub fn attestation_cert(pem: &str) -> Vec<u8> {
    der(pem)
}
