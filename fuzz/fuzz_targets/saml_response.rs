//! SAML Response parsing and verification must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::saml::dsig::IdpCertificate;
use portcullis::saml::response::{Expectations, SamlResponse};
use portcullis::saml::xml::XmlLimits;

const IDP_CERT: &str = include_str!("../../tests/fixtures/saml/keys/idp-rsa.crt");

fn certs() -> &'static [IdpCertificate] {
    static CERTS: OnceLock<Vec<IdpCertificate>> = OnceLock::new();
    CERTS.get_or_init(|| IdpCertificate::from_pem_or_base64(IDP_CERT).into_iter().collect())
}

fuzz_target!(|data: &[u8]| {
    let Ok(response) = SamlResponse::parse(data, &XmlLimits::default()) else {
        return;
    };
    let _ = response.unverified_in_response_to();
    let certs = certs();
    assert!(!certs.is_empty(), "fixture certificate must load");
    for (expected_in_response_to, allow_unsolicited, legacy_sha1) in
        [(Some("_req-6c1e8f4a"), false, false), (None, true, true)]
    {
        let exp = Expectations {
            idp_entity_id: "https://idp.example.com/metadata",
            idp_certs: certs,
            sp_entity_id: "https://sp.example.com/saml/metadata",
            acs_url: "https://sp.example.com/saml/acs",
            expected_in_response_to,
            allow_unsolicited,
            // 2024-05-01T12:01:40Z, shortly after the fixtures' IssueInstant.
            now: 1_714_564_900,
            skew: 120,
            legacy_sha1,
            decryption_key: None,
        };
        let _ = response.verify(&exp);
    }
});
