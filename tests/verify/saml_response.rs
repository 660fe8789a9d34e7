#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SAML Response verification against real responses signed by xmlsec1
//! (tests/fixtures/saml/make.sh), and refusal of tampered, wrapped and misdirected ones.
//! Each refusal test asserts the exact error, so removing the check it targets fails it.
//! Long because every wrapping variant and every profile rule has its own test.

use std::path::PathBuf;

use portcullis::saml::dsig::{DsigError, IdpCertificate};
use portcullis::saml::response::{AssertionContents, Expectations, SamlError, SamlResponse, VerifiedAssertion};
use portcullis::saml::xml::{XmlError, XmlLimits};

/// 2024-05-01T12:01:40Z, shortly after the fixtures' IssueInstant.
const NOW: u64 = 1_714_564_900;
const SKEW: u64 = 120;
const IDP: &str = "https://idp.example.com/metadata";
const SP: &str = "https://sp.example.com/saml/metadata";
const ACS: &str = "https://sp.example.com/saml/acs";
const REQUEST_ID: &str = "_req-6c1e8f4a";
const RESPONSE_ID: &str = "_resp-1f0c2a9b";
const ASSERTION_ID: &str = "_assert-7d9e3c41";
/// Conditions NotBefore 2024-05-01T11:55:00Z.
const NOT_BEFORE: i64 = 1_714_564_500;
/// Conditions NotOnOrAfter 2099-01-01T00:05:00Z.
const CONDITIONS_END: i64 = 4_070_909_100;
/// SubjectConfirmationData NotOnOrAfter 2099-01-01T00:10:00Z.
const CONFIRMATION_END: i64 = 4_070_909_400;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(dir().join("signed").join(format!("{name}.xml"))).unwrap()
}

fn cert(name: &str) -> IdpCertificate {
    IdpCertificate::from_pem_or_base64(&std::fs::read_to_string(dir().join("keys").join(name)).unwrap()).unwrap()
}

fn idp_certs() -> Vec<IdpCertificate> {
    vec![cert("idp-rsa.crt"), cert("idp-ec.crt")]
}

fn expectations(certs: &[IdpCertificate]) -> Expectations<'_> {
    Expectations {
        idp_entity_id: IDP,
        idp_certs: certs,
        sp_entity_id: SP,
        acs_url: ACS,
        expected_in_response_to: Some(REQUEST_ID),
        allow_unsolicited: false,
        now: NOW,
        skew: SKEW,
        legacy_sha1: false,
        decryption_key: None,
    }
}

fn verify_with(xml: &str, exp: &Expectations<'_>) -> Result<VerifiedAssertion, SamlError> {
    SamlResponse::parse(xml.as_bytes(), &XmlLimits::default())?.verify(exp)
}

fn verify(xml: &str) -> Result<VerifiedAssertion, SamlError> {
    let certs = idp_certs();
    verify_with(xml, &expectations(&certs))
}

/// Replaces exactly one occurrence of `from`.
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

fn signature_block(xml: &str) -> String {
    element_text(xml, "<ds:Signature", "</ds:Signature>")
}

fn assertion_block(xml: &str) -> String {
    element_text(xml, "<saml:Assertion ", "</saml:Assertion>")
}

/// An attacker's assertion: the signed one with its signature removed, another subject and,
/// unless told otherwise, another ID.
fn evil_assertion(signed: &str, id: &str) -> String {
    let mut a = assertion_block(signed);
    if a.contains("<ds:Signature") {
        a = a.replace(&signature_block(&a), "");
    }
    let a = a.replace("admin@evil.com", "ceo@example.com");
    a.replace(&format!("ID=\"{ASSERTION_ID}\""), &format!("ID=\"{id}\""))
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
        not_on_or_after: CONDITIONS_END,
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

// ---------------------------------------------------------------------------------------
// Accepted responses.

#[test]
fn accepts_response_signed_with_rsa() {
    assert_eq!(verify(&fixture("response-signed-rsa")).unwrap(), expected_assertion());
}

#[test]
fn accepts_assertion_signed_with_rsa() {
    assert_eq!(verify(&fixture("assertion-signed-rsa")).unwrap(), expected_assertion());
}

#[test]
fn accepts_response_and_assertion_signed() {
    assert_eq!(verify(&fixture("both-signed-rsa")).unwrap(), expected_assertion());
}

#[test]
fn accepts_response_signed_with_ecdsa_p256() {
    assert_eq!(verify(&fixture("response-signed-ec")).unwrap(), expected_assertion());
}

#[test]
fn accepts_assertion_signed_with_ecdsa_p256() {
    assert_eq!(verify(&fixture("assertion-signed-ec")).unwrap(), expected_assertion());
}

#[test]
fn accepts_rsa_sha512() {
    assert_eq!(verify(&fixture("assertion-signed-rsa-sha512")).unwrap(), expected_assertion());
}

#[test]
fn accepts_sha1_only_with_the_legacy_flag() {
    let certs = idp_certs();
    let exp = Expectations { legacy_sha1: true, ..expectations(&certs) };
    assert_eq!(verify_with(&fixture("assertion-signed-rsa-sha1"), &exp).unwrap(), expected_assertion());
}

#[test]
fn accepts_post_binding_form_value() {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(fixture("response-signed-rsa"));
    // Line-wrapped, as some IdPs post it.
    let wrapped: String =
        encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
    let certs = idp_certs();
    let r = SamlResponse::from_post_binding(&wrapped, &XmlLimits::default()).unwrap();
    assert_eq!(r.unverified_in_response_to(), Some(REQUEST_ID));
    assert_eq!(r.verify(&expectations(&certs)).unwrap(), expected_assertion());
    assert_eq!(SamlResponse::from_post_binding("not base64!", &XmlLimits::default()).unwrap_err(), SamlError::Base64);
}

#[test]
fn accepts_unsolicited_response_only_when_allowed() {
    let certs = idp_certs();
    let exp = Expectations { expected_in_response_to: None, allow_unsolicited: true, ..expectations(&certs) };
    assert_eq!(verify_with(&fixture("unsolicited-signed-rsa"), &exp).unwrap(), expected_assertion());
}

/// Key rollover: several configured certificates, the signing one not first.
#[test]
fn picks_the_signing_certificate_among_configured_ones() {
    let certs = vec![cert("other-rsa.crt"), cert("idp-ec.crt"), cert("idp-rsa.crt")];
    assert_eq!(verify_with(&fixture("assertion-signed-rsa"), &expectations(&certs)).unwrap(), expected_assertion());
}

/// The KeyInfo certificate need not be the configured one: a re-issued certificate for the
/// same key verifies (the key, not the embedded certificate, is what is trusted).
#[test]
fn configured_key_verifies_whatever_keyinfo_carries() {
    let certs = vec![cert("idp-rsa-reissued.crt")];
    assert_eq!(verify_with(&fixture("assertion-signed-rsa"), &expectations(&certs)).unwrap(), expected_assertion());
}

#[test]
fn skew_allows_small_clock_differences() {
    let certs = idp_certs();
    // Exactly at NotBefore minus the skew: still valid.
    let exp = Expectations { now: (NOT_BEFORE - SKEW as i64) as u64, ..expectations(&certs) };
    assert!(verify_with(&fixture("response-signed-rsa"), &exp).is_ok());
    // Just before Conditions NotOnOrAfter plus the skew: still valid.
    let exp = Expectations { now: (CONDITIONS_END + SKEW as i64 - 1) as u64, ..expectations(&certs) };
    assert!(verify_with(&fixture("response-signed-rsa"), &exp).is_ok());
}

// ---------------------------------------------------------------------------------------
// Signatures.

#[test]
fn refuses_unsigned_response() {
    assert_eq!(verify(&fixture("unsigned")), Err(SamlError::NotSigned));
}

#[test]
fn refuses_signature_by_another_key() {
    // Its KeyInfo carries the attacker's certificate: never trusted by itself.
    assert_eq!(verify(&fixture("assertion-signed-other-key")), Err(SamlError::Signature(DsigError::BadSignature)));
}

#[test]
fn refuses_ecdsa_signature_without_a_configured_ec_key() {
    let certs = vec![cert("idp-rsa.crt")];
    assert_eq!(
        verify_with(&fixture("response-signed-ec"), &expectations(&certs)),
        Err(SamlError::Signature(DsigError::NoKeyForAlgorithm(
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256".into()
        )))
    );
}

#[test]
fn refuses_when_no_certificate_is_configured() {
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &expectations(&[])),
        Err(SamlError::Signature(DsigError::NoCertificates))
    );
}

#[test]
fn refuses_one_changed_character_in_a_signed_assertion_attribute() {
    let xml = replace_once(&fixture("assertion-signed-rsa"), "Ada Lovelace", "Ada Lovelacf");
    assert_eq!(verify(&xml), Err(SamlError::Signature(DsigError::DigestMismatch)));
}

#[test]
fn refuses_one_changed_character_in_a_signed_response() {
    let xml = replace_once(&fixture("response-signed-rsa"), "Ada Lovelace", "Ada Lovelacf");
    assert_eq!(verify(&xml), Err(SamlError::Signature(DsigError::DigestMismatch)));
}

#[test]
fn refuses_changed_signed_info() {
    // Re-pointing the digest at another value breaks the signature over SignedInfo.
    let xml = fixture("assertion-signed-rsa");
    let dv = element_text(&xml, "<ds:DigestValue>", "</ds:DigestValue>");
    let xml = replace_once(&xml, &dv, "<ds:DigestValue>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</ds:DigestValue>");
    assert_eq!(verify(&xml), Err(SamlError::Signature(DsigError::BadSignature)));
}

#[test]
fn refuses_sha1_when_legacy_is_off() {
    assert_eq!(verify(&fixture("assertion-signed-rsa-sha1")), Err(SamlError::Signature(DsigError::Sha1NotAllowed)));
}

#[test]
fn refuses_sha1_digest_when_legacy_is_off() {
    assert_eq!(verify(&fixture("assertion-signed-sha1-digest")), Err(SamlError::Signature(DsigError::Sha1NotAllowed)));
    let certs = idp_certs();
    let exp = Expectations { legacy_sha1: true, ..expectations(&certs) };
    assert_eq!(verify_with(&fixture("assertion-signed-sha1-digest"), &exp).unwrap(), expected_assertion());
}

#[test]
fn refuses_rsa_sha1_signature_when_legacy_is_off() {
    assert_eq!(
        verify(&fixture("assertion-signed-rsa-sha1-signature")),
        Err(SamlError::Signature(DsigError::Sha1NotAllowed))
    );
    let certs = idp_certs();
    let exp = Expectations { legacy_sha1: true, ..expectations(&certs) };
    assert_eq!(verify_with(&fixture("assertion-signed-rsa-sha1-signature"), &exp).unwrap(), expected_assertion());
}

#[test]
fn refuses_hmac_signature_method() {
    let xml = replace_once(
        &fixture("assertion-signed-rsa"),
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
    );
    assert_eq!(
        verify(&xml),
        Err(SamlError::Signature(DsigError::UnsupportedSignatureMethod(
            "http://www.w3.org/2000/09/xmldsig#hmac-sha1".into()
        )))
    );
}

#[test]
fn refuses_a_second_reference() {
    let xml = fixture("assertion-signed-rsa");
    let reference = element_text(&xml, "<ds:Reference ", "</ds:Reference>");
    let xml = replace_once(&xml, &reference, &format!("{reference}{reference}"));
    assert_eq!(verify(&xml), Err(SamlError::Signature(DsigError::ReferenceCount(2))));
}

#[test]
fn refuses_extra_transforms() {
    let xml = replace_once(
        &fixture("assertion-signed-rsa"),
        "<ds:Transforms>",
        r#"<ds:Transforms><ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"/>"#,
    );
    assert!(matches!(verify(&xml), Err(SamlError::Signature(DsigError::UnsupportedTransforms(_)))));
}

/// xml-crypto CVE-2025-29775 class: a comment inside DigestValue. A reader that skips
/// comments would use another value than the one the signature covers; it is refused.
#[test]
fn refuses_comment_inside_digest_value() {
    let xml = replace_once(&fixture("assertion-signed-rsa"), "<ds:DigestValue>", "<ds:DigestValue><!--x-->");
    assert_eq!(
        verify(&xml),
        Err(SamlError::Signature(DsigError::Xml(XmlError::NotSimpleText { element: "ds:DigestValue".into() })))
    );
}

// ---------------------------------------------------------------------------------------
// Signature wrapping (XSW). The attacker holds one genuinely signed response for
// admin@evil.com and wants to be read as ceo@example.com.

/// XSW: the signed assertion moved under samlp:Extensions, an evil unsigned assertion (with
/// a new ID) put where the application reads. Its signature still verifies where it now is;
/// refused because the document holds two assertions.
#[test]
fn xsw_signed_assertion_moved_under_extensions() {
    let signed = fixture("assertion-signed-rsa");
    let original = assertion_block(&signed);
    let evil = evil_assertion(&signed, "_evil-1");
    let xml = replace_once(&signed, &original, &format!("<samlp:Extensions>{original}</samlp:Extensions>{evil}"));
    assert_eq!(verify(&xml), Err(SamlError::MultipleAssertions(2)));
}

/// XSW: the signed assertion moved inside the ds:Object of a signature copied into the evil
/// assertion (the copied signature's Reference still names the signed assertion's ID).
#[test]
fn xsw_signed_assertion_moved_under_ds_object() {
    let signed = fixture("assertion-signed-rsa");
    let original = assertion_block(&signed);
    let sig = signature_block(&original);
    let wrapper = sig.replace("</ds:Signature>", &format!("<ds:Object>{original}</ds:Object></ds:Signature>"));
    let evil = evil_assertion(&signed, "_evil-2").replacen("</saml:Issuer>", &format!("</saml:Issuer>{wrapper}"), 1);
    let xml = replace_once(&signed, &original, &evil);
    assert_eq!(verify(&xml), Err(SamlError::MultipleAssertions(2)));
}

/// XSW: an evil assertion beside the signed one, first in document order.
#[test]
fn xsw_evil_assertion_beside_the_signed_one() {
    let signed = fixture("assertion-signed-rsa");
    let original = assertion_block(&signed);
    let evil = evil_assertion(&signed, "_evil-3");
    let xml = replace_once(&signed, &original, &format!("{evil}{original}"));
    assert_eq!(verify(&xml), Err(SamlError::MultipleAssertions(2)));
}

/// XSW with duplicate IDs: the evil assertion carries the signed one's ID, hoping ID lookup
/// finds the signed copy (under Extensions) while the application reads the evil one.
#[test]
fn xsw_duplicate_ids() {
    let signed = fixture("assertion-signed-rsa");
    let original = assertion_block(&signed);
    let evil = evil_assertion(&signed, ASSERTION_ID);
    let xml = replace_once(&signed, &original, &format!("{evil}<samlp:Extensions>{original}</samlp:Extensions>"));
    assert_eq!(verify(&xml), Err(SamlError::DuplicateId(ASSERTION_ID.into())));
}

/// The Response's valid signature moved into the assertion: it still references (and
/// verifies over) the Response, but a signature must cover the element that contains it.
/// Refused because the Reference URI points to another element than its parent.
#[test]
fn xsw_reference_uri_pointing_to_another_element() {
    let signed = fixture("response-signed-rsa");
    let sig = signature_block(&signed);
    let xml = replace_once(&signed, &sig, "");
    let xml = replace_once(
        &xml,
        "<saml:Issuer>https://idp.example.com/metadata</saml:Issuer>",
        &format!("<saml:Issuer>https://idp.example.com/metadata</saml:Issuer>{sig}"),
    );
    assert_eq!(verify(&xml), Err(SamlError::Signature(DsigError::ReferenceNotParent(RESPONSE_ID.into()))));
}

/// Response signed, an unsigned evil assertion injected beside the real one: the Response's
/// digest covers its whole content, and the document has two assertions. The count is
/// checked first.
#[test]
fn xsw_signed_response_with_injected_assertion() {
    let signed = fixture("response-signed-rsa");
    let original = assertion_block(&signed);
    let evil = evil_assertion(&signed, "_evil-4");
    let xml = replace_once(&signed, &original, &format!("{evil}{original}"));
    assert_eq!(verify(&xml), Err(SamlError::MultipleAssertions(2)));
}

/// Response signed, its only assertion replaced by an evil one: the Response's digest no
/// longer matches.
#[test]
fn xsw_signed_response_with_replaced_assertion() {
    let signed = fixture("response-signed-rsa");
    let original = assertion_block(&signed);
    let evil = evil_assertion(&signed, ASSERTION_ID);
    let xml = replace_once(&signed, &original, &evil);
    assert_eq!(verify(&xml), Err(SamlError::Signature(DsigError::DigestMismatch)));
}

/// The whole signed Response wrapped in an evil Response (under Extensions), whose own
/// assertion is the attacker's.
#[test]
fn xsw_signed_response_wrapped_in_evil_response() {
    let signed = fixture("response-signed-rsa");
    let body = signed.trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let evil = evil_assertion(&fixture("assertion-signed-rsa"), "_evil-5");
    let xml = format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="_evil-resp" Version="2.0" IssueInstant="2024-05-01T12:00:00Z" Destination="{ACS}" InResponseTo="{REQUEST_ID}"><saml:Issuer>{IDP}</saml:Issuer><samlp:Extensions>{body}</samlp:Extensions><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{evil}</samlp:Response>"#
    );
    assert_eq!(verify(&xml), Err(SamlError::MultipleAssertions(2)));
}

/// The only assertion (signed) moved under Extensions of an unsigned response: it verifies,
/// but it is not the Response's assertion.
#[test]
fn refuses_assertion_that_is_not_a_child_of_the_response() {
    let signed = fixture("assertion-signed-rsa");
    let original = assertion_block(&signed);
    let xml = replace_once(&signed, &original, &format!("<samlp:Extensions>{original}</samlp:Extensions>"));
    assert_eq!(verify(&xml), Err(SamlError::AssertionMisplaced));
}

/// Signed assertion, its signature removed: nothing covers it any more.
#[test]
fn refuses_assertion_with_signature_stripped() {
    let signed = fixture("assertion-signed-rsa");
    let xml = replace_once(&signed, &signature_block(&signed), "");
    assert_eq!(verify(&xml), Err(SamlError::NotSigned));
}

// ---------------------------------------------------------------------------------------
// Parser-level attacks.

/// CVE-2017-11427 family: a comment splits the NameID. Comments are not signed (Exclusive
/// C14N drops them), so the signature still verifies; the NameID must not be read as
/// "admin". It is refused.
#[test]
fn refuses_comment_inside_name_id() {
    for name in ["assertion-signed-rsa", "response-signed-rsa"] {
        let xml = replace_once(&fixture(name), ">admin@evil.com</saml:NameID>", ">admin<!---->@evil.com</saml:NameID>");
        assert_eq!(
            verify(&xml),
            Err(SamlError::Xml(XmlError::NotSimpleText { element: "saml:NameID".into() })),
            "{name}"
        );
    }
}

#[test]
fn refuses_comment_inside_attribute_value() {
    let xml = replace_once(&fixture("response-signed-rsa"), ">Ada Lovelace<", ">Ada<!-- --> Lovelace<");
    assert_eq!(verify(&xml), Err(SamlError::Xml(XmlError::NotSimpleText { element: "saml:AttributeValue".into() })));
}

#[test]
fn refuses_doctype() {
    let xml = fixture("response-signed-rsa").replacen(
        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
        r#"<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE samlp:Response [<!ENTITY name "admin@evil.com">]>"#,
        1,
    );
    assert_eq!(verify(&xml), Err(SamlError::Xml(XmlError::DocType)));
}

#[test]
fn refuses_entity_expansion_bomb() {
    let mut dtd = String::from(r#"<!ENTITY l0 "lol">"#);
    for i in 1..10 {
        let prev = format!("&l{};", i - 1);
        dtd.push_str(&format!(r#"<!ENTITY l{i} "{}">"#, prev.repeat(10)));
    }
    let xml = format!(
        r#"<?xml version="1.0"?><!DOCTYPE samlp:Response [{dtd}]><samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">&l9;</samlp:Response>"#
    );
    assert_eq!(verify(&xml), Err(SamlError::Xml(XmlError::DocType)));
}

#[test]
fn refuses_undeclared_entity_reference() {
    let xml = replace_once(&fixture("response-signed-rsa"), ">Ada Lovelace<", ">&ext;<");
    assert_eq!(verify(&xml), Err(SamlError::Xml(XmlError::UndeclaredEntity("ext".into()))));
}

#[test]
fn refuses_processing_instruction() {
    // A processing instruction splitting a value (OneUptime #2988 class).
    let xml = replace_once(
        &fixture("response-signed-rsa"),
        ">admin@evil.com</saml:NameID>",
        "><?x y?>admin@evil.com</saml:NameID>",
    );
    assert_eq!(verify(&xml), Err(SamlError::Xml(XmlError::ProcessingInstruction)));
}

#[test]
fn refuses_ten_megabyte_body() {
    let padding = " ".repeat(10 * 1024 * 1024);
    let xml =
        replace_once(&fixture("response-signed-rsa"), "</samlp:Response>", &format!("{padding}</samlp:Response>"));
    let size = xml.len();
    assert_eq!(verify(&xml), Err(SamlError::Xml(XmlError::TooLarge { size, max: XmlLimits::default().max_bytes })));
    // The POST binding refuses it before decoding.
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&xml);
    assert!(matches!(
        SamlResponse::from_post_binding(&encoded, &XmlLimits::default()),
        Err(SamlError::Xml(XmlError::TooLarge { .. }))
    ));
}

// ---------------------------------------------------------------------------------------
// Profile checks.

#[test]
fn refuses_expired_assertion() {
    let certs = idp_certs();
    // After Conditions NotOnOrAfter (+ skew) but before the confirmation's.
    let now = (CONDITIONS_END + SKEW as i64) as u64;
    let exp = Expectations { now, ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::Expired { not_on_or_after: CONDITIONS_END, now })
    );
}

#[test]
fn refuses_expired_subject_confirmation() {
    let certs = idp_certs();
    let now = (CONFIRMATION_END + SKEW as i64) as u64;
    let exp = Expectations { now, ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::ConfirmationExpired { not_on_or_after: CONFIRMATION_END, now })
    );
}

#[test]
fn refuses_not_yet_valid_assertion() {
    let certs = idp_certs();
    let now = (NOT_BEFORE - SKEW as i64 - 1) as u64;
    let exp = Expectations { now, ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::NotYetValid { not_before: NOT_BEFORE, now })
    );
}

#[test]
fn refuses_wrong_audience() {
    let certs = idp_certs();
    let exp = Expectations { sp_entity_id: "https://other-sp.example.com", ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::AudienceMismatch {
            expected: "https://other-sp.example.com".into(),
            audiences: vec![SP.into()],
        })
    );
}

/// Only the assertion is signed, so the attacker rewrites the unsigned Response's
/// Destination to the other SP's ACS: the signed Recipient still names ours.
#[test]
fn refuses_wrong_recipient() {
    let other = "https://other-sp.example.com/acs";
    let xml = replace_once(
        &fixture("assertion-signed-rsa"),
        &format!("Destination=\"{ACS}\""),
        &format!("Destination=\"{other}\""),
    );
    let certs = idp_certs();
    let exp = Expectations { acs_url: other, ..expectations(&certs) };
    assert_eq!(
        verify_with(&xml, &exp),
        Err(SamlError::RecipientMismatch { expected: other.into(), actual: Some(ACS.into()) })
    );
}

#[test]
fn refuses_wrong_destination() {
    let other = "https://other-sp.example.com/acs";
    let certs = idp_certs();
    let exp = Expectations { acs_url: other, ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::DestinationMismatch { expected: other.into(), actual: ACS.into() })
    );
}

#[test]
fn refuses_wrong_in_response_to() {
    let certs = idp_certs();
    let exp = Expectations { expected_in_response_to: Some("_req-other"), ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::InResponseToMismatch { expected: "_req-other".into(), actual: REQUEST_ID.into() })
    );
}

/// Only the assertion is signed: rewriting the Response's InResponseTo to the victim's
/// pending request is caught by the signed SubjectConfirmationData's InResponseTo.
#[test]
fn refuses_in_response_to_rewritten_on_unsigned_envelope() {
    let xml = replace_once(
        &fixture("assertion-signed-rsa"),
        &format!("Destination=\"{ACS}\" InResponseTo=\"{REQUEST_ID}\""),
        &format!("Destination=\"{ACS}\" InResponseTo=\"_req-victim\""),
    );
    let certs = idp_certs();
    let exp = Expectations { expected_in_response_to: Some("_req-victim"), ..expectations(&certs) };
    assert_eq!(
        verify_with(&xml, &exp),
        Err(SamlError::InResponseToMismatch { expected: "_req-victim".into(), actual: REQUEST_ID.into() })
    );
}

/// Only the assertion is signed: a Response envelope naming another request is refused even
/// though the signed confirmation names the right one.
#[test]
fn refuses_response_in_response_to_differing_from_the_request() {
    let xml = replace_once(
        &fixture("assertion-signed-rsa"),
        &format!("Destination=\"{ACS}\" InResponseTo=\"{REQUEST_ID}\""),
        &format!("Destination=\"{ACS}\" InResponseTo=\"_req-other\""),
    );
    assert_eq!(
        verify(&xml),
        Err(SamlError::InResponseToMismatch { expected: REQUEST_ID.into(), actual: "_req-other".into() })
    );
}

/// Bindings 3.5.5.2: a signed Response must carry Destination.
#[test]
fn refuses_signed_response_without_destination() {
    assert_eq!(verify(&fixture("response-signed-no-destination")), Err(SamlError::MissingDestination));
}

#[test]
fn refuses_missing_in_response_to() {
    assert_eq!(verify(&fixture("unsolicited-signed-rsa")), Err(SamlError::MissingInResponseTo));
}

#[test]
fn refuses_unsolicited_response_when_not_allowed() {
    let certs = idp_certs();
    let exp = Expectations { expected_in_response_to: None, ..expectations(&certs) };
    assert_eq!(verify_with(&fixture("unsolicited-signed-rsa"), &exp), Err(SamlError::Unsolicited));
}

#[test]
fn refuses_in_response_to_when_no_request_is_pending() {
    let certs = idp_certs();
    let exp = Expectations { expected_in_response_to: None, allow_unsolicited: true, ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::UnexpectedInResponseTo(REQUEST_ID.into()))
    );
}

#[test]
fn refuses_wrong_issuer() {
    let certs = idp_certs();
    let exp = Expectations { idp_entity_id: "https://other-idp.example.com", ..expectations(&certs) };
    assert_eq!(
        verify_with(&fixture("response-signed-rsa"), &exp),
        Err(SamlError::IssuerMismatch { expected: "https://other-idp.example.com".into(), actual: IDP.into() })
    );
}

#[test]
fn reports_responder_status_with_message() {
    assert_eq!(
        verify(&fixture("status-responder")),
        Err(SamlError::Status {
            codes: vec![
                "urn:oasis:names:tc:SAML:2.0:status:Responder".into(),
                "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed".into(),
            ],
            message: Some("User account is disabled".into()),
        })
    );
}

#[test]
fn refuses_encrypted_assertion_with_a_clear_error() {
    let unsigned = fixture("unsigned");
    let original = assertion_block(&unsigned);
    let encrypted = r#"<saml:EncryptedAssertion><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#"><xenc:CipherData><xenc:CipherValue>AAAA</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:EncryptedAssertion>"#;
    let xml = replace_once(&unsigned, &original, encrypted);
    assert_eq!(verify(&xml), Err(SamlError::EncryptedAssertionNeedsKey));
}

#[test]
fn refuses_response_in_another_namespace_or_version() {
    let xml = fixture("response-signed-rsa")
        .replace("urn:oasis:names:tc:SAML:2.0:protocol", "urn:oasis:names:tc:SAML:1.0:protocol");
    assert_eq!(verify(&xml), Err(SamlError::NotAResponse("samlp:Response".into())));
    let xml = replace_once(
        &fixture("assertion-signed-rsa"),
        r#"Version="2.0" IssueInstant="2024-05-01T12:00:00Z" Destination"#,
        r#"Version="1.1" IssueInstant="2024-05-01T12:00:00Z" Destination"#,
    );
    assert_eq!(verify(&xml), Err(SamlError::UnsupportedVersion("1.1".into())));
}

#[test]
fn refuses_bad_certificates() {
    use portcullis::saml::dsig::CertificateError;
    assert_eq!(IdpCertificate::from_pem_or_base64("not a cert!").unwrap_err(), CertificateError::Encoding);
    assert!(matches!(IdpCertificate::from_pem_or_base64("AAAA"), Err(CertificateError::Der(_))));
    // Bare base64 DER (as in metadata) loads like PEM.
    let pem = std::fs::read_to_string(dir().join("keys/idp-rsa.crt")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(IdpCertificate::from_pem_or_base64(&b64).unwrap().der(), cert("idp-rsa.crt").der());
}

/// No input makes verification panic: every truncation of a signed response, and many
/// single-byte corruptions, give an error (or, for harmless changes, the same result).
#[test]
fn never_panics_on_truncated_or_corrupted_input() {
    let certs = idp_certs();
    let exp = expectations(&certs);
    let xml = fixture("both-signed-rsa").into_bytes();
    for end in 0..xml.len() - 1 {
        let r = SamlResponse::parse(&xml[..end], &XmlLimits::default()).and_then(|r| r.verify(&exp));
        assert!(r.is_err(), "truncated at {end}");
    }
    for (i, replacement) in
        (0..xml.len()).step_by(5).zip([b'<', b'&', b'"', b'x', 0xff, b'>', b'/', b':'].into_iter().cycle())
    {
        let mut bad = xml.clone();
        bad[i] = replacement;
        let _ = SamlResponse::parse(&bad, &XmlLimits::default()).and_then(|r| r.verify(&exp));
    }
}
