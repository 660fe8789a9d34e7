//! SAML connections in the gateway core: metadata import, the AuthnRequest redirect, SP
//! metadata, and ACS refusals that do not need a live signer (the live flows are in
//! tests/e2e/saml.test.mjs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

fn idp_cert() -> String {
    std::fs::read_to_string("tests/fixtures/saml/keys/idp-rsa.crt").unwrap()
}

fn metadata_xml() -> String {
    let body: String = idp_cert().lines().filter(|l| !l.starts_with("-----")).collect();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.com/metadata">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

fn saml_harness(extra: serde_json::Value) -> Harness {
    let mut conn = json!({"type": "saml", "name": "corp-saml", "label": "Corp SAML", "idp_metadata": metadata_xml()});
    for (k, v) in extra.as_object().unwrap() {
        conn[k] = v.clone();
    }
    let doc: serde_json::Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    let mut doc = doc;
    doc["tenants"][0]["providers"].as_array_mut().unwrap().push(conn);
    Harness::new(&doc.to_string())
}

#[test]
fn metadata_import_fills_the_connection() {
    let h = saml_harness(json!({}));
    let cfg = h.gw.config().unwrap();
    let c = cfg.config.tenants[0].providers[1].as_saml().unwrap();
    assert_eq!(c.idp_entity_id, "https://idp.example.com/metadata");
    assert_eq!(c.idp_sso_url, "https://idp.example.com/sso");
    assert_eq!(c.certificates().len(), 1);
}

#[test]
fn bad_metadata_is_a_configuration_error_with_its_path() {
    let h = saml_harness(json!({"idp_metadata": "<!DOCTYPE x [<!ENTITY a 'b'>]><x/>"}));
    let line = h.gw.startup_log().unwrap();
    assert!(line.contains("tenants[0].providers[1].idp_metadata: not usable metadata XML"), "{line}");
}

#[test]
fn login_sends_an_authn_request_with_relay_state_and_a_cross_site_pending_cookie() {
    let h = saml_harness(json!({}));
    let r = h.respond(&get("/_portcullis/login?provider=corp-saml&rd=/reports"));
    assert_eq!(r.status, 302, "{}", r.text());
    let loc = url::Url::parse(r.headers.get("location").unwrap()).unwrap();
    assert_eq!(loc.as_str().split('?').next(), Some("https://idp.example.com/sso"));
    let q: std::collections::HashMap<_, _> = loc.query_pairs().into_owned().collect();
    assert!(q.contains_key("SAMLRequest"));
    assert_eq!(q["RelayState"].len(), 43);
    let cookie = r.headers.get_all("set-cookie").find(|c| c.starts_with("__Host-portcullis_saml_pending=")).unwrap();
    assert!(cookie.contains("SameSite=None") && cookie.contains("Secure") && cookie.contains("HttpOnly"));
    assert!(h.kv.keys().iter().any(|k| k.starts_with("samlstate:acme:")));
}

#[test]
fn sp_metadata_names_entity_id_and_acs() {
    let h = saml_harness(json!({}));
    let r = h.respond(&get("/_portcullis/saml/metadata?ws=corp-saml"));
    assert_eq!(r.status, 200);
    let xml = r.text();
    assert!(xml.contains(r#"entityID="https://app.test/_portcullis/saml/metadata?ws=corp-saml""#));
    assert!(xml.contains(r#"Location="https://app.test/_portcullis/saml/acs?ws=corp-saml""#));
    assert_eq!(h.respond(&get("/_portcullis/saml/metadata?ws=nope")).status, 404);
}

fn acs_post(path: &str, form: &[(&str, &str)]) -> portcullis::http::Request {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    portcullis::http::Request::new("POST", &format!("https://{HOST}{path}"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "text/html")
        .header("content-type", "application/x-www-form-urlencoded")
        .with_body(body)
}

#[test]
fn acs_refusals_without_a_live_idp() {
    let h = saml_harness(json!({"allow_idp_initiated": true}));
    let fixture = std::fs::read("tests/fixtures/saml/signed/unsolicited-signed-rsa.xml").unwrap();
    let encoded = portcullis::crypto::b64(&fixture);
    // Posted to another ACS than the response names: wrong Destination, refused before
    // anything else about the response is believed.
    let r = h.respond(&acs_post("/_portcullis/saml/acs?ws=corp-saml", &[("SAMLResponse", &encoded)]));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("invalid_saml_response") && l.contains("Destination")));
    // Not base64, missing, and a RelayState that answers no pending login.
    assert_eq!(h.respond(&acs_post("/_portcullis/saml/acs?ws=corp-saml", &[("SAMLResponse", "%%%")])).status, 401);
    assert_eq!(h.respond(&acs_post("/_portcullis/saml/acs?ws=corp-saml", &[])).status, 400);
    assert!(h.kv.keys().iter().all(|k| !k.starts_with("sess:")), "no session from any of these");
}
