#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! AuthnRequest construction and its HTTP-Redirect encoding, decoded back the way an IdP does.

use base64::Engine;
use portcullis::saml::authn_request::{build, redirect_url, AuthnRequestError, AuthnRequestParams, BINDING_HTTP_POST};
use portcullis::saml::response::{ASSERTION_NS, PROTOCOL_NS};
use portcullis::saml::xml::{Document, XmlLimits};

const NOW: u64 = 1_714_564_800; // 2024-05-01T12:00:00Z

fn params() -> AuthnRequestParams<'static> {
    AuthnRequestParams {
        sp_entity_id: "https://sp.example.com/saml/metadata",
        acs_url: "https://sp.example.com/saml/acs?tenant=a&x=<y>",
        idp_sso_url: "https://idp.example.com/sso?app=42",
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"),
        force_authn: false,
    }
}

#[test]
fn builds_a_well_formed_request() {
    let req = build(&params(), NOW, &[0xab; 16]).unwrap();
    assert_eq!(req.id, format!("_{}", "ab".repeat(16)));
    assert_eq!(req.issue_instant, "2024-05-01T12:00:00Z");
    let doc = Document::parse(req.xml.as_bytes(), &XmlLimits::default()).unwrap();
    let root = doc.root();
    assert!(doc.is_element(root, PROTOCOL_NS, "AuthnRequest"));
    assert_eq!(doc.attribute(root, "ID"), Some(req.id.as_str()));
    assert_eq!(doc.attribute(root, "Version"), Some("2.0"));
    assert_eq!(doc.attribute(root, "IssueInstant"), Some("2024-05-01T12:00:00Z"));
    assert_eq!(doc.attribute(root, "Destination"), Some("https://idp.example.com/sso?app=42"));
    // Special characters survive escaping.
    assert_eq!(
        doc.attribute(root, "AssertionConsumerServiceURL"),
        Some("https://sp.example.com/saml/acs?tenant=a&x=<y>")
    );
    assert_eq!(doc.attribute(root, "ProtocolBinding"), Some(BINDING_HTTP_POST));
    assert_eq!(doc.attribute(root, "ForceAuthn"), None);
    let issuer = doc.children_named(root, ASSERTION_NS, "Issuer").next().unwrap();
    assert_eq!(doc.text(issuer).unwrap(), "https://sp.example.com/saml/metadata");
    let policy = doc.children_named(root, PROTOCOL_NS, "NameIDPolicy").next().unwrap();
    assert_eq!(doc.attribute(policy, "Format"), Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"));
    assert_eq!(doc.attribute(policy, "AllowCreate"), Some("true"));

    let forced =
        build(&AuthnRequestParams { force_authn: true, name_id_format: None, ..params() }, NOW, &[1; 32]).unwrap();
    let doc = Document::parse(forced.xml.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(doc.attribute(doc.root(), "ForceAuthn"), Some("true"));
    let policy = doc.children_named(doc.root(), PROTOCOL_NS, "NameIDPolicy").next().unwrap();
    assert_eq!(doc.attribute(policy, "Format"), None);
}

#[test]
fn ids_differ_with_the_random_bytes() {
    let a = build(&params(), NOW, &[1; 16]).unwrap();
    let b = build(&params(), NOW, &[2; 16]).unwrap();
    assert_ne!(a.id, b.id);
}

#[test]
fn refuses_short_randomness() {
    assert_eq!(build(&params(), NOW, &[0; 8]).unwrap_err(), AuthnRequestError::RandomTooShort { got: 8 });
}

#[test]
fn redirect_url_round_trips() {
    let req = build(&params(), NOW, &[7; 16]).unwrap();
    let url = redirect_url(params().idp_sso_url, &req, Some("/app/page?q=1&r=2")).unwrap();
    let parsed = url::Url::parse(&url).unwrap();
    assert_eq!(parsed.host_str(), Some("idp.example.com"));
    assert_eq!(parsed.path(), "/sso");
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    assert_eq!(pairs[0], ("app".to_owned(), "42".to_owned()));
    assert_eq!(pairs[1].0, "SAMLRequest");
    assert_eq!(pairs[2], ("RelayState".to_owned(), "/app/page?q=1&r=2".to_owned()));
    // What an IdP does: base64-decode, raw-inflate.
    let deflated = base64::engine::general_purpose::STANDARD.decode(&pairs[1].1).unwrap();
    let inflated = miniz_oxide::inflate::decompress_to_vec(&deflated).unwrap();
    assert_eq!(String::from_utf8(inflated).unwrap(), req.xml);

    let without = redirect_url("https://idp.example.com/sso", &req, None).unwrap();
    assert!(without.starts_with("https://idp.example.com/sso?SAMLRequest="));
    assert!(!without.contains("RelayState"));
}

#[test]
fn redirect_url_refuses_bad_input() {
    let req = build(&params(), NOW, &[7; 16]).unwrap();
    assert_eq!(
        redirect_url("https://idp.example.com/sso", &req, Some(&"x".repeat(81))).unwrap_err(),
        AuthnRequestError::RelayStateTooLong { len: 81 }
    );
    assert_eq!(redirect_url("not a url", &req, None).unwrap_err(), AuthnRequestError::InvalidUrl("not a url".into()));
    assert_eq!(
        redirect_url("javascript:alert(1)", &req, None).unwrap_err(),
        AuthnRequestError::InvalidUrl("javascript:alert(1)".into())
    );
}

#[test]
fn signed_redirect_carries_a_verifiable_rsa_sha256_signature() {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use rsa::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/saml/keys/other-rsa.key"))
        .unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
    let params = portcullis::saml::authn_request::AuthnRequestParams {
        sp_entity_id: "https://sp.test/metadata",
        acs_url: "https://sp.test/acs",
        idp_sso_url: "https://idp.test/sso?tenant=1",
        name_id_format: None,
        force_authn: false,
    };
    let req = portcullis::saml::authn_request::build(&params, 1_800_000_000, &[7u8; 20]).unwrap();
    let url = portcullis::saml::authn_request::redirect_url_signed(
        "https://idp.test/sso?tenant=1",
        &req,
        Some("rs-1"),
        Some(&key),
    )
    .unwrap();
    let query = url.split_once('?').unwrap().1;
    assert!(query.starts_with("tenant=1&SAMLRequest="), "the IdP's own query parameters stay first");
    // The signed octets are the query as sent, from SAMLRequest up to SigAlg.
    let (signed, signature) = query.split_once("&Signature=").unwrap();
    let signed = signed.strip_prefix("tenant=1&").unwrap();
    assert!(signed.ends_with("&SigAlg=http%3A%2F%2Fwww.w3.org%2F2001%2F04%2Fxmldsig-more%23rsa-sha256"));
    let sig_b64: String =
        url::form_urlencoded::parse(format!("s={signature}").as_bytes()).next().unwrap().1.into_owned();
    let sig = STANDARD.decode(sig_b64).unwrap();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(signed.as_bytes());
    let public = key.to_public_key();
    public.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig).unwrap();
    // Changing RelayState breaks it.
    let tampered = signed.replace("RelayState=rs-1", "RelayState=rs-2");
    let digest = <sha2::Sha256 as sha2::Digest>::digest(tampered.as_bytes());
    assert!(public.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest, &sig).is_err());
}
