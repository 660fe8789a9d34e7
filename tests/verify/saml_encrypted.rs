#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Encrypted assertions (XML Encryption 1.1): responses encrypted by xmlsec1 and openssl for
//! the SP key (tests/fixtures/saml/make.sh) decrypt and then pass exactly the checks a plain
//! response passes; tampered, mis-keyed and refused-algorithm ones give the errors asserted.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use portcullis::saml::dsig::{DsigError, IdpCertificate};
use portcullis::saml::response::{AssertionContents, Expectations, SamlError, SamlResponse, VerifiedAssertion};
use portcullis::saml::xml::{XmlError, XmlLimits};
use portcullis::saml::xmlenc::XmlEncError;
use rsa::pkcs8::DecodePrivateKey;
use rsa::RsaPrivateKey;

/// 2024-05-01T12:01:40Z, shortly after the fixtures' IssueInstant.
const NOW: u64 = 1_714_564_900;
const IDP: &str = "https://idp.example.com/metadata";
const SP: &str = "https://sp.example.com/saml/metadata";
const ACS: &str = "https://sp.example.com/saml/acs";
const REQUEST_ID: &str = "_req-6c1e8f4a";
const RESPONSE_ID: &str = "_resp-1f0c2a9b";
const ASSERTION_ID: &str = "_assert-7d9e3c41";
const XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

/// Fixtures that decrypt with the SP key and verify, each a layout or algorithm pair.
const DECRYPTABLE: &[&str] = &[
    "gcm256-oaep",
    "cbc128-oaep",
    "cbc256-oaep-sibling-key",
    "gcm128-oaep11-sha256",
    "gcm256-oaep-sha256-sibling-key",
    "response-signed-gcm256",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(dir().join(path)).unwrap()
}

fn encrypted(name: &str) -> String {
    read(&format!("encrypted/{name}.xml"))
}

fn signed(name: &str) -> String {
    read(&format!("signed/{name}.xml"))
}

fn private_key(name: &str) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(&read(&format!("keys/{name}"))).unwrap()
}

fn idp_certs() -> Vec<IdpCertificate> {
    vec![IdpCertificate::from_pem_or_base64(&read("keys/idp-rsa.crt")).unwrap()]
}

fn expectations<'a>(certs: &'a [IdpCertificate], key: Option<&'a RsaPrivateKey>) -> Expectations<'a> {
    Expectations {
        idp_entity_id: IDP,
        idp_certs: certs,
        sp_entity_id: SP,
        acs_url: ACS,
        expected_in_response_to: Some(REQUEST_ID),
        allow_unsolicited: false,
        now: NOW,
        skew: 120,
        legacy_sha1: false,
        decryption_key: key,
    }
}

fn verify_with_key(xml: &str, key: Option<&RsaPrivateKey>) -> Result<VerifiedAssertion, SamlError> {
    let certs = idp_certs();
    SamlResponse::parse(xml.as_bytes(), &XmlLimits::default())?.verify(&expectations(&certs, key))
}

/// Verifies with the SP key.
fn verify(xml: &str) -> Result<VerifiedAssertion, SamlError> {
    verify_with_key(xml, Some(&private_key("sp-rsa.key")))
}

fn replace_once(xml: &str, from: &str, to: &str) -> String {
    assert_eq!(xml.matches(from).count(), 1, "{from:?} must occur once");
    xml.replacen(from, to, 1)
}

/// The text of the (first) element starting with `open` up to its matching `close`.
fn element_text(xml: &str, open: &str, close: &str) -> String {
    let start = xml.find(open).unwrap();
    let end = xml[start..].find(close).unwrap() + start + close.len();
    xml[start..end].to_owned()
}

fn encrypted_assertion_block(xml: &str) -> String {
    element_text(xml, "<saml:EncryptedAssertion", "</saml:EncryptedAssertion>")
}

/// The `n`-th (0-based) CipherValue's base64 text.
fn cipher_value(xml: &str, n: usize) -> String {
    let open = "<xenc:CipherValue>";
    let start = xml.match_indices(open).nth(n).unwrap().0 + open.len();
    let end = xml[start..].find("</xenc:CipherValue>").unwrap() + start;
    xml[start..end].to_owned()
}

/// The fixture with the EncryptedData's ciphertext (the last CipherValue) changed by `f`.
fn with_ciphertext(xml: &str, f: impl Fn(&mut Vec<u8>)) -> String {
    let n = xml.matches("<xenc:CipherValue>").count() - 1;
    let b64 = cipher_value(xml, n);
    let mut bytes = STANDARD.decode(b64.replace(['\n', '\r', ' '], "")).unwrap();
    f(&mut bytes);
    replace_once(xml, &b64, &STANDARD.encode(bytes))
}

fn expected_assertion() -> AssertionContents {
    AssertionContents {
        assertion_id: ASSERTION_ID.into(),
        issuer: IDP.into(),
        name_id: "admin@evil.com".into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        session_index: Some("_session-42".into()),
        session_not_on_or_after: Some(4_070_937_600),
        authn_instant: Some(1_714_564_800),
        not_on_or_after: 4_070_909_100,
        authn_context_class_ref: Some("urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport".into()),
        attributes: [
            ("displayName", vec!["Ada Lovelace"]),
            ("email", vec!["admin@evil.com"]),
            ("groups", vec!["staff", "ops & on-call"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect(),
    }
}

/// What anyone holding the SP's certificate can make: `plaintext` encrypted (AES-256-GCM,
/// RSA-OAEP with SHA-1) in a `saml:EncryptedAssertion`.
fn encrypt_for_sp(plaintext: &str) -> String {
    use aes_gcm::aead::{Aead, KeyInit};
    use rand_core::{OsRng, RngCore};
    let public = private_key("sp-rsa.key").to_public_key();
    let mut cek = [0u8; 32];
    OsRng.fill_bytes(&mut cek);
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let sealed = aes_gcm::Aes256Gcm::new_from_slice(&cek).unwrap().encrypt(&iv.into(), plaintext.as_bytes()).unwrap();
    let wrapped = public.encrypt(&mut OsRng, rsa::Oaep::new::<sha1::Sha1>(), &cek).unwrap();
    format!(
        r#"<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc="{XENC}" Type="{XENC}Element"><xenc:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="{XENC}rsa-oaep-mgf1p"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>"#,
        STANDARD.encode(wrapped),
        STANDARD.encode([iv.as_slice(), &sealed].concat())
    )
}

/// The signed (plain) fixture with its assertion replaced by `plaintext`, encrypted.
fn response_with_encrypted(plaintext: &str) -> String {
    let xml = signed("assertion-signed-rsa");
    let assertion = element_text(&xml, "<saml:Assertion ", "</saml:Assertion>");
    replace_once(&xml, &assertion, &encrypt_for_sp(plaintext))
}

fn signed_assertion() -> String {
    element_text(&signed("assertion-signed-rsa"), "<saml:Assertion ", "</saml:Assertion>")
}

// ---------------------------------------------------------------------------------------
// Accepted.

#[test]
fn decrypts_and_verifies_every_layout_and_algorithm() {
    for name in DECRYPTABLE {
        assert_eq!(verify(&encrypted(name)).map(VerifiedAssertion::into_contents), Ok(expected_assertion()), "{name}");
    }
}

#[test]
fn decrypts_aes256_gcm_with_rsa_oaep_mgf1p() {
    let xml = encrypted("gcm256-oaep");
    assert!(xml.contains("xmlenc11#aes256-gcm") && xml.contains("xmlenc#rsa-oaep-mgf1p"));
    let a = verify(&xml).unwrap();
    assert_eq!(a.name_id, "admin@evil.com");
    assert_eq!(a.attributes["groups"], ["staff", "ops & on-call"]);
}

#[test]
fn decrypts_aes128_cbc_with_rsa_oaep_mgf1p() {
    let xml = encrypted("cbc128-oaep");
    assert!(xml.contains("xmlenc#aes128-cbc") && xml.contains("xmlenc#rsa-oaep-mgf1p"));
    let a = verify(&xml).unwrap();
    assert_eq!(a.name_id, "admin@evil.com");
    assert_eq!(a.attributes["displayName"], ["Ada Lovelace"]);
}

/// EncryptedKey beside the EncryptedData, named by ds:RetrievalMethod (aes256-cbc).
#[test]
fn decrypts_with_sibling_key_named_by_retrieval_method() {
    let xml = encrypted("cbc256-oaep-sibling-key");
    assert!(xml.contains("<ds:RetrievalMethod") && xml.contains("xmlenc#aes256-cbc"));
    assert_eq!(verify(&xml).unwrap().attributes["email"], ["admin@evil.com"]);
    // A RetrievalMethod naming nothing is refused before the key is used.
    let broken = replace_once(&xml, r##"URI="#_enckey-8c2f""##, r##"URI="#_nothing""##);
    assert_eq!(verify(&broken), Err(SamlError::Decryption(XmlEncError::KeyReference("#_nothing".into()))));
}

/// xmlenc11#rsa-oaep with SHA-256 digest and MGF1-SHA-256 (aes128-gcm).
#[test]
fn decrypts_xmlenc11_rsa_oaep_with_sha256_and_mgf1_sha256() {
    let xml = encrypted("gcm128-oaep11-sha256");
    assert!(xml.contains("xmlenc11#rsa-oaep\"") && xml.contains("xmlenc11#mgf1sha256"));
    assert_eq!(verify(&xml).unwrap().name_id, "admin@evil.com");
    // The MGF is part of the padding: claiming another one fails like a wrong key.
    let wrong_mgf = replace_once(&xml, "xmlenc11#mgf1sha256", "xmlenc11#mgf1sha1");
    assert_eq!(verify(&wrong_mgf), Err(SamlError::Decryption(XmlEncError::DecryptionFailed)));
}

/// rsa-oaep-mgf1p with a SHA-256 DigestMethod (MGF1 stays SHA-1); the EncryptedKey beside
/// the EncryptedData without any KeyInfo pointing at it.
#[test]
fn decrypts_mgf1p_with_sha256_digest_and_unreferenced_sibling_key() {
    let xml = encrypted("gcm256-oaep-sha256-sibling-key");
    assert!(!xml.contains("<ds:KeyInfo") && xml.contains("xmlenc#sha256"));
    assert_eq!(verify(&xml).unwrap().name_id, "admin@evil.com");
}

/// The Response is signed over the EncryptedAssertion; the decrypted assertion is unsigned
/// and covered by that signature.
#[test]
fn accepts_response_signature_over_the_encrypted_assertion() {
    let xml = encrypted("response-signed-gcm256");
    assert_eq!(xml.matches("<ds:SignatureValue>").count(), 1);
    assert_eq!(verify(&xml).map(VerifiedAssertion::into_contents), Ok(expected_assertion()));
}

/// Prefixes the assertion uses may be declared on the EncryptedAssertion (or its ancestors)
/// rather than on the Response: they resolve for the decrypted assertion as they did where it
/// was encrypted, and its signature still verifies.
#[test]
fn namespaces_declared_on_the_encrypted_assertion_resolve() {
    let xml = encrypted("gcm256-oaep");
    let decls = format!(
        r#" xmlns:saml="{SAML_NS}" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#
    );
    let xml = replace_once(&xml, &decls, "");
    let xml = replace_once(&xml, "<saml:Issuer ", &format!(r#"<saml:Issuer xmlns:saml="{SAML_NS}" "#));
    let xml = replace_once(&xml, "<saml:EncryptedAssertion>", &format!("<saml:EncryptedAssertion{decls}>"));
    assert_eq!(verify(&xml).map(VerifiedAssertion::into_contents), Ok(expected_assertion()));
    // And a default namespace on the Response does not leak into unprefixed content.
    let xml =
        replace_once(&encrypted("gcm256-oaep"), "<samlp:Response ", r#"<samlp:Response xmlns="urn:example:default" "#);
    assert_eq!(verify(&xml).map(VerifiedAssertion::into_contents), Ok(expected_assertion()));
}

#[test]
fn decrypted_plaintext_may_be_surrounded_by_whitespace_and_the_document_by_a_bom() {
    let xml = response_with_encrypted(&format!("\n  {}\r\n", signed_assertion()));
    assert_eq!(verify(&xml).map(VerifiedAssertion::into_contents), Ok(expected_assertion()));
    let with_bom = format!("\u{feff}{}", encrypted("cbc128-oaep"));
    assert_eq!(verify(&with_bom).map(VerifiedAssertion::into_contents), Ok(expected_assertion()));
}

#[test]
fn post_binding_form_value_decrypts() {
    let certs = idp_certs();
    let key = private_key("sp-rsa.key");
    let r = SamlResponse::from_post_binding(&STANDARD.encode(encrypted("gcm256-oaep")), &XmlLimits::default()).unwrap();
    assert_eq!(
        r.verify(&expectations(&certs, Some(&key))).map(VerifiedAssertion::into_contents),
        Ok(expected_assertion())
    );
}

// ---------------------------------------------------------------------------------------
// Refused.

#[test]
fn without_a_key_encrypted_assertions_need_one() {
    for name in DECRYPTABLE.iter().chain(&["gcm256-rsa15"]) {
        assert_eq!(verify_with_key(&encrypted(name), None), Err(SamlError::EncryptedAssertionNeedsKey), "{name}");
    }
}

#[test]
fn wrong_sp_key_gives_the_generic_error() {
    let other = private_key("other-rsa.key");
    for name in DECRYPTABLE {
        assert_eq!(
            verify_with_key(&encrypted(name), Some(&other)),
            Err(SamlError::Decryption(XmlEncError::DecryptionFailed)),
            "{name}"
        );
    }
}

#[test]
fn flipped_gcm_ciphertext_or_tag_byte_gives_the_generic_error() {
    let xml = encrypted("gcm256-oaep");
    for at in [12, 100] {
        let bad = with_ciphertext(&xml, |b| b[at] ^= 0x01);
        assert_eq!(verify(&bad), Err(SamlError::Decryption(XmlEncError::DecryptionFailed)), "byte {at}");
    }
    let bad_tag = with_ciphertext(&xml, |b| *b.last_mut().unwrap() ^= 0x80);
    assert_eq!(verify(&bad_tag), Err(SamlError::Decryption(XmlEncError::DecryptionFailed)));
    let truncated = with_ciphertext(&xml, |b| b.truncate(20));
    assert_eq!(verify(&truncated), Err(SamlError::Decryption(XmlEncError::DecryptionFailed)));
}

/// CBC is not authenticated: a bad padding byte, a garbled first block and a garbled last
/// block all give the same error as a wrong key, so no padding oracle is exposed.
#[test]
fn tampered_cbc_ciphertext_gives_the_same_generic_error() {
    let xml = encrypted("cbc128-oaep");
    let generic = Err(SamlError::Decryption(XmlEncError::DecryptionFailed));
    // The previous block's last byte flips the final (padding length) byte.
    let bad_padding = with_ciphertext(&xml, |b| {
        let n = b.len();
        b[n - 17] ^= 0x40;
    });
    assert_eq!(verify(&bad_padding), generic);
    let bad_iv = with_ciphertext(&xml, |b| b[0] ^= 0x1c); // '<' becomes ' ': not an element
    assert_eq!(verify(&bad_iv), generic);
    let bad_last = with_ciphertext(&xml, |b| *b.last_mut().unwrap() ^= 0x01);
    assert_eq!(verify(&bad_last), generic);
    let not_blocks = with_ciphertext(&xml, |b| b.truncate(b.len() - 3));
    assert_eq!(verify(&not_blocks), generic);
}

#[test]
fn refuses_rsa_1_5_key_transport() {
    let xml = encrypted("gcm256-rsa15");
    assert!(xml.contains("xmlenc#rsa-1_5"));
    let err = verify(&xml).unwrap_err();
    assert_eq!(err, SamlError::Decryption(XmlEncError::RsaPkcs1v15Refused));
    assert!(err.to_string().contains("rsa-1_5"), "{err}");
    assert!(err.to_string().contains("RSA-OAEP"), "{err}");
}

#[test]
fn refuses_inner_signature_by_another_idp_key() {
    assert_eq!(verify(&encrypted("gcm256-oaep-other-idp-key")), Err(SamlError::Signature(DsigError::BadSignature)));
}

/// Anyone can encrypt for the SP (its certificate is public): encryption proves nothing, and
/// an unsigned assertion stays unsigned.
#[test]
fn encryption_is_not_authentication() {
    let unsigned = element_text(&signed("unsigned"), "<saml:Assertion ", "</saml:Assertion>");
    assert_eq!(verify(&response_with_encrypted(&unsigned)), Err(SamlError::NotSigned));
    // A signed assertion changed before encryption fails its digest.
    let changed = signed_assertion().replace("Ada Lovelace", "Ada Lovelacf");
    assert_eq!(verify(&response_with_encrypted(&changed)), Err(SamlError::Signature(DsigError::DigestMismatch)));
}

/// The Response signature is verified on the received document, before decryption: a
/// replaced EncryptedAssertion breaks its digest.
#[test]
fn response_signature_covers_the_ciphertext() {
    let xml = encrypted("response-signed-gcm256");
    let bad = with_ciphertext(&xml, |b| b[40] ^= 0x01);
    assert_eq!(verify(&bad), Err(SamlError::Signature(DsigError::DigestMismatch)));
    let swapped = replace_once(&xml, &encrypted_assertion_block(&xml), &encrypt_for_sp(&signed_assertion()));
    assert_eq!(verify(&swapped), Err(SamlError::Signature(DsigError::DigestMismatch)));
}

#[test]
fn plaintext_must_be_exactly_one_assertion() {
    let generic = Err(SamlError::Decryption(XmlEncError::DecryptionFailed));
    let a = signed_assertion();
    let issuer = format!(r#"<saml:Issuer xmlns:saml="{SAML_NS}">{IDP}</saml:Issuer>"#);
    let cases = [
        format!("<!DOCTYPE x [<!ENTITY e \"x\">]>{a}"),
        format!(r#"<?xml version="1.0" encoding="UTF-8"?>{a}"#),
        format!("{a}{a}"),
        format!("<!-- c -->{a}"),
        format!("{a}text"),
        issuer,
        format!("{a}</saml:EncryptedAssertion><saml:EncryptedAssertion>"),
        format!("{a}</samlp:Response><samlp:Response>"),
        a.replacen("<saml:Assertion ", "<saml:Assertion xmlns:saml=\"urn:example:other\" ", 1),
        String::from_utf8_lossy(&[0xff, 0xfe]).into_owned(),
        String::new(),
    ];
    for (i, plaintext) in cases.iter().enumerate() {
        assert_eq!(verify(&response_with_encrypted(plaintext)), generic, "case {i}");
    }
}

/// The decrypted document goes through every check a plain one does.
#[test]
fn decrypted_assertion_gets_the_usual_checks() {
    // Duplicate IDs across the Response and the decrypted assertion.
    let dup = signed_assertion().replace(&format!("ID=\"{ASSERTION_ID}\""), &format!("ID=\"{RESPONSE_ID}\""));
    assert_eq!(verify(&response_with_encrypted(&dup)), Err(SamlError::DuplicateId(RESPONSE_ID.into())));
    // A comment splitting the NameID (not covered by the signature) is refused.
    let split = signed_assertion().replace(">admin@evil.com</saml:NameID>", ">admin<!---->@evil.com</saml:NameID>");
    assert_eq!(
        verify(&response_with_encrypted(&split)),
        Err(SamlError::Xml(XmlError::NotSimpleText { element: "saml:NameID".into() }))
    );
    // An assertion nested in Advice is a second assertion.
    let nested = signed_assertion().replacen(
        "</saml:Conditions>",
        &format!(
            "</saml:Conditions><saml:Advice>{}</saml:Advice>",
            signed_assertion().replace(ASSERTION_ID, "_nested")
        ),
        1,
    );
    assert_eq!(verify(&response_with_encrypted(&nested)), Err(SamlError::MultipleAssertions(2)));
    // Profile checks still apply.
    let certs = idp_certs();
    let key = private_key("sp-rsa.key");
    let exp = Expectations { sp_entity_id: "https://other-sp.example.com", ..expectations(&certs, Some(&key)) };
    let r = SamlResponse::parse(encrypted("cbc128-oaep").as_bytes(), &XmlLimits::default()).unwrap();
    assert!(matches!(r.verify(&exp), Err(SamlError::AudienceMismatch { .. })));
    // The limits apply to the plaintext too (as part of the generic error: a parse that
    // stops early would otherwise tell well-formed from malformed plaintext apart).
    let xml = encrypted("gcm256-oaep");
    let limits = XmlLimits { max_nodes: 80, ..XmlLimits::default() };
    let r = SamlResponse::parse(xml.as_bytes(), &limits).unwrap();
    let exp = expectations(&certs, Some(&key));
    assert_eq!(r.verify(&exp), Err(SamlError::Decryption(XmlEncError::DecryptionFailed)));
    let r = SamlResponse::parse(xml.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(r.verify(&exp).map(VerifiedAssertion::into_contents), Ok(expected_assertion()));
}

#[test]
fn an_encrypted_and_a_plain_assertion_are_two_assertions() {
    let xml = encrypted("gcm256-oaep");
    let block = encrypted_assertion_block(&xml);
    let xml = replace_once(&xml, &block, &format!("{block}{}", signed_assertion()));
    assert_eq!(verify(&xml), Err(SamlError::MultipleAssertions(2)));
}

#[test]
fn structural_problems_are_reported_before_the_key_is_used() {
    let xml = encrypted("gcm256-oaep");
    let unknown = replace_once(&xml, "xmlenc11#aes256-gcm", "xmlenc11#aes192-gcm");
    assert_eq!(
        verify(&unknown),
        Err(SamlError::Decryption(XmlEncError::UnsupportedContentAlgorithm(
            "http://www.w3.org/2009/xmlenc11#aes192-gcm".into()
        )))
    );
    let content = replace_once(&xml, "xmlenc#Element", "xmlenc#Content");
    assert_eq!(
        verify(&content),
        Err(SamlError::Decryption(XmlEncError::UnsupportedType("http://www.w3.org/2001/04/xmlenc#Content".into())))
    );
    let wrap = replace_once(&xml, "xmlenc#rsa-oaep-mgf1p", "xmlenc#kw-aes256");
    assert!(matches!(verify(&wrap), Err(SamlError::Decryption(XmlEncError::UnsupportedKeyTransport(_)))));
    let bad_b64 = xml.replacen("<xenc:CipherValue>", "<xenc:CipherValue>!", 1);
    assert!(matches!(verify(&bad_b64), Err(SamlError::Decryption(XmlEncError::InvalidBase64(_)))));
}

#[test]
fn expectations_debug_leaves_the_key_out() {
    let certs = idp_certs();
    let key = private_key("sp-rsa.key");
    let text = format!("{:?}", expectations(&certs, Some(&key)));
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains("BigUint") && !text.contains("primes"), "{text}");
}

/// No input makes verification panic: truncations and byte corruptions of an encrypted
/// response give an error (or, for harmless changes, the same result).
#[test]
fn never_panics_on_truncated_or_corrupted_encrypted_input() {
    let certs = idp_certs();
    let key = private_key("sp-rsa.key");
    let exp = expectations(&certs, Some(&key));
    let xml = encrypted("cbc256-oaep-sibling-key").into_bytes();
    for end in (0..xml.len() - 1).step_by(3) {
        let r = SamlResponse::parse(&xml[..end], &XmlLimits::default()).and_then(|r| r.verify(&exp));
        assert!(r.is_err(), "truncated at {end}");
    }
    for (i, replacement) in
        (0..xml.len()).step_by(61).zip([b'<', b'&', b'"', b'x', 0xff, b'>', b'/', b'A'].into_iter().cycle())
    {
        let mut bad = xml.clone();
        bad[i] = replacement;
        let _ = SamlResponse::parse(&bad, &XmlLimits::default()).and_then(|r| r.verify(&exp));
    }
}

/// Candidate keys are counted as they are found: hundreds of sibling EncryptedKeys each
/// named by its own RetrievalMethod (a lookup of every reference among every sibling) are
/// refused at the first key past the limit, before any lookup or key use.
#[test]
fn encrypted_key_candidates_are_counted_as_they_are_found() {
    use portcullis::saml::xmlenc::MAX_ENCRYPTED_KEYS;
    let xml = encrypted("cbc256-oaep-sibling-key");
    let start = xml.find("<xenc:EncryptedKey ").unwrap();
    let end = xml.find("</xenc:EncryptedKey>").unwrap() + "</xenc:EncryptedKey>".len();
    let key = &xml[start..end];
    let n = 600;
    let keys: String = (0..n).map(|i| key.replace(r#"Id="_enckey-8c2f""#, &format!(r#"Id="_k{i}""#))).collect();
    let references: String = (0..n)
        .map(|i| {
            format!(r##"<ds:RetrievalMethod Type="http://www.w3.org/2001/04/xmlenc#EncryptedKey" URI="#_k{i}"/>"##)
        })
        .collect();
    let many = replace_once(
        &replace_once(&xml, key, &keys),
        r##"<ds:RetrievalMethod Type="http://www.w3.org/2001/04/xmlenc#EncryptedKey" URI="#_enckey-8c2f"/>"##,
        &references,
    );
    assert_eq!(verify(&many), Err(SamlError::Decryption(XmlEncError::TooManyKeys(MAX_ENCRYPTED_KEYS + 1))));
}
