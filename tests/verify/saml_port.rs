#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The XML-DSig signature over SignedInfo checked by the runtime's signature port (WebCrypto
//! in Workers) ahead of `SamlResponse::verify`: which checks are handed to it, that its
//! verdicts are used for exactly the bytes it checked, and that without a verdict the
//! pure-Rust verification still decides.

use std::cell::Cell;
use std::path::PathBuf;

use portcullis::ports::{LocalFuture, SignatureVerifier};
use portcullis::saml::dsig::{check_with_port, DsigError, IdpCertificate};
use portcullis::saml::response::{Expectations, SamlError, SamlResponse, VerifiedAssertion};
use portcullis::saml::xml::XmlLimits;
use rsa::pkcs1v15::Pkcs1v15Sign;
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(dir().join("signed").join(format!("{name}.xml"))).unwrap()
}

fn certs() -> Vec<IdpCertificate> {
    ["idp-rsa.crt", "idp-ec.crt"]
        .iter()
        .map(|n| {
            IdpCertificate::from_pem_or_base64(&std::fs::read_to_string(dir().join("keys").join(n)).unwrap()).unwrap()
        })
        .collect()
}

fn expectations(certs: &[IdpCertificate]) -> Expectations<'_> {
    Expectations {
        idp_entity_id: "https://idp.example.com/metadata",
        idp_certs: certs,
        sp_entity_id: "https://sp.example.com/saml/metadata",
        acs_url: "https://sp.example.com/saml/acs",
        expected_in_response_to: Some("_req-6c1e8f4a"),
        allow_unsolicited: false,
        now: 1_714_564_900,
        skew: 120,
        legacy_sha1: false,
        decryption_key: None,
    }
}

/// A port that verifies RS256 and ES256 from the JWK, as WebCrypto would, and counts calls;
/// or one that never answers (`honest: false`), as a runtime without the algorithm.
struct Port {
    honest: bool,
    calls: Cell<usize>,
}

fn verify_jwk(alg: &str, jwk: &serde_json::Value, signed: &[u8], signature: &[u8]) -> bool {
    let b = |k: &str| portcullis::crypto::b64url_decode(jwk[k].as_str().unwrap()).unwrap();
    match alg {
        "RS256" => {
            let key =
                rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&b("n")), rsa::BigUint::from_bytes_be(&b("e")))
                    .unwrap();
            key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(signed), signature).is_ok()
        }
        "ES256" => {
            use p256::ecdsa::signature::Verifier;
            let key = p256::PublicKey::from_jwk_str(&jwk.to_string()).unwrap();
            let sig = p256::ecdsa::Signature::from_slice(signature).unwrap();
            p256::ecdsa::VerifyingKey::from(key).verify(signed, &sig).is_ok()
        }
        other => panic!("unexpected algorithm {other}"),
    }
}

impl SignatureVerifier for Port {
    fn verify<'a>(
        &'a self,
        alg: &'a str,
        jwk: &'a serde_json::Value,
        signed: &'a [u8],
        signature: &'a [u8],
    ) -> LocalFuture<'a, Option<bool>> {
        self.calls.set(self.calls.get() + 1);
        let verdict = self.honest.then(|| verify_jwk(alg, jwk, signed, signature));
        Box::pin(async move { verdict })
    }
}

fn verify_via(port: &Port, xml: &str) -> Result<VerifiedAssertion, SamlError> {
    let certs = certs();
    let parsed = SamlResponse::parse(xml.as_bytes(), &XmlLimits::default())?;
    pollster::block_on(check_with_port(port, parsed.port_checks(&certs)));
    parsed.verify(&expectations(&certs))
}

#[test]
fn hands_each_signature_to_the_port_with_the_keys_of_its_type() {
    let certs = certs();
    let checks = |name: &str| {
        let parsed = SamlResponse::parse(fixture(name).as_bytes(), &XmlLimits::default()).unwrap();
        parsed
            .port_checks(&certs)
            .iter()
            .map(|c| (c.alg, c.jwk["kty"].as_str().unwrap().to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(checks("response-signed-rsa"), [("RS256", "RSA".to_owned())]);
    assert_eq!(checks("assertion-signed-ec"), [("ES256", "EC".to_owned())]);
    assert_eq!(checks("both-signed-rsa").len(), 2);
    // SHA-1 is never handed over (it stays behind the legacy flag, in Rust).
    assert!(checks("assertion-signed-rsa-sha1-signature").is_empty());
    assert!(checks("unsigned").is_empty());
}

#[test]
fn an_honest_port_gives_the_same_results() {
    for name in ["response-signed-rsa", "assertion-signed-rsa", "both-signed-rsa", "assertion-signed-ec"] {
        let port = Port { honest: true, calls: Cell::new(0) };
        let xml = fixture(name);
        let certs = certs();
        let expected =
            SamlResponse::parse(xml.as_bytes(), &XmlLimits::default()).unwrap().verify(&expectations(&certs));
        assert!(expected.is_ok(), "{name}");
        assert_eq!(verify_via(&port, &xml), expected, "{name}");
        assert!(port.calls.get() >= 1, "{name}");
    }
    let port = Port { honest: true, calls: Cell::new(0) };
    assert_eq!(
        verify_via(&port, &fixture("assertion-signed-other-key")),
        Err(SamlError::Signature(DsigError::BadSignature))
    );
}

#[test]
fn without_a_verdict_rust_decides() {
    let port = Port { honest: false, calls: Cell::new(0) };
    assert!(verify_via(&port, &fixture("assertion-signed-rsa")).is_ok());
    assert!(port.calls.get() >= 1);
    // A verdict for one signature says nothing about another: change SignedInfo after an
    // honest port has passed the original.
    let honest = Port { honest: true, calls: Cell::new(0) };
    let xml = fixture("assertion-signed-rsa");
    assert!(verify_via(&honest, &xml).is_ok());
    let start = xml.find("<ds:DigestValue>").unwrap() + "<ds:DigestValue>".len();
    let end = xml.find("</ds:DigestValue>").unwrap();
    let changed = format!("{}{}{}", &xml[..start], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", &xml[end..]);
    assert_ne!(changed, xml);
    assert_eq!(verify_via(&port, &changed), Err(SamlError::Signature(DsigError::BadSignature)));
}

fn port_check_count(xml: &str) -> usize {
    SamlResponse::parse(xml.as_bytes(), &XmlLimits::default()).unwrap().port_checks(&certs()).len()
}

/// The runtime's crypto is handed only the signatures `verify` itself checks (the
/// Response's and its assertion's), and only when they pass the same structural checks:
/// a `ds:Signature` anywhere else, or one the verifier refuses, costs nothing.
#[test]
fn only_signatures_the_verifier_checks_are_handed_over() {
    let xml = fixture("response-signed-rsa");
    assert_eq!(port_check_count(&xml), 1);
    let start = xml.find("<ds:Signature").unwrap();
    let end = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let signature = &xml[start..end];
    let hidden =
        xml.replacen("</saml:Issuer>", &format!("</saml:Issuer><samlp:Extensions>{signature}</samlp:Extensions>"), 1);
    assert_eq!(port_check_count(&hidden), 1);
    let xpath = xml.replacen(
        "<ds:Transforms>",
        r#"<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"/>"#,
        1,
    );
    assert_eq!(port_check_count(&xpath), 0);
    let elsewhere = xml.replacen(r##"URI="#_resp-1f0c2a9b""##, r##"URI="#_other""##, 1);
    assert_eq!(port_check_count(&elsewhere), 0);
    let many_prefixes = xml.replacen(r#"PrefixList="xs""#, &format!("PrefixList=\"{}\"", "xs ".repeat(40)), 1);
    assert_eq!(port_check_count(&many_prefixes), 0);
}

/// `DigestMethod` takes no parameters in the profile: a child element is refused by the
/// verifier (before any key is tried) and never reaches the runtime's crypto.
#[test]
fn digest_method_children_are_refused() {
    let xml = fixture("response-signed-rsa");
    let sha256 = r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>"#;
    assert!(xml.contains(sha256));
    let with_child = xml.replacen(
        sha256,
        r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"><ds:HMACOutputLength>8</ds:HMACOutputLength></ds:DigestMethod>"#,
        1,
    );
    assert_eq!(port_check_count(&with_child), 0);
    let certs = certs();
    let parsed = SamlResponse::parse(with_child.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(
        parsed.verify(&expectations(&certs)),
        Err(SamlError::Signature(DsigError::Unexpected("ds:HMACOutputLength".into())))
    );
}
