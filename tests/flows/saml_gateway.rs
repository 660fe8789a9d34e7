//! SAML connections in the gateway core: metadata import, the AuthnRequest redirect, SP
//! metadata, and ACS refusals that do not need a live signer (the live flows are in
//! tests/e2e/saml.test.mjs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
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
    assert_eq!(c.ready.idp_certificates.len(), 1);
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

// ---------------------------------------------------------------------------------------
// Single Logout (HTTP-Redirect, signed by the IdP)
// ---------------------------------------------------------------------------------------

const SLO_URL: &str = "https://app.test/_portcullis/saml/slo?ws=corp-saml";
const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const IDP: &str = "https://idp.example.com/metadata";

fn idp_key() -> rsa::RsaPrivateKey {
    portcullis::crypto::rsa_private_key(&std::fs::read_to_string("tests/fixtures/saml/keys/idp-rsa.key").unwrap())
        .unwrap()
}

/// `GET /saml/slo` with `xml` under `param`, signed with the IdP's key as the binding says.
fn slo(h: &Harness, param: &str, xml: &str) -> portcullis::http::Response {
    let url = portcullis::saml::authn_request::redirect_binding_url(
        "https://idp.example.com/slo",
        param,
        xml,
        None,
        Some(&idp_key()),
    )
    .unwrap();
    let query = url.split_once('?').unwrap().1;
    h.respond(&get(&format!("/_portcullis/saml/slo?ws=corp-saml&{query}")).header("accept", "application/json"))
}

fn logout_request(id: &str, issue_instant: Option<u64>, destination: Option<&str>) -> String {
    let instant =
        issue_instant.map(|t| format!(r#" IssueInstant="{}""#, portcullis::saml::time::format(t))).unwrap_or_default();
    let destination = destination.map(|d| format!(r#" Destination="{}""#, d.replace('&', "&amp;"))).unwrap_or_default();
    format!(
        r#"<samlp:LogoutRequest xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="{id}" Version="2.0"{instant}{destination}><saml:Issuer>{IDP}</saml:Issuer><saml:NameID>alice@example.com</saml:NameID></samlp:LogoutRequest>"#
    )
}

/// A LogoutRequest is accepted once, only while fresh (IssueInstant within the window and
/// the clock skew), and only with a Destination naming this endpoint (bindings 3.4.5.2: a
/// signed message must carry one).
#[test]
fn logout_requests_are_fresh_addressed_and_accepted_once() {
    let h = saml_harness(json!({}));
    let now = h.clock.now();
    let ok = logout_request("_lr-1", Some(now), Some(SLO_URL));
    assert_eq!(slo(&h, "SAMLRequest", &ok).status, 200);
    let again = slo(&h, "SAMLRequest", &ok);
    assert_eq!(again.status, 400, "a replayed LogoutRequest is refused");
    assert!(again.text().contains("already"), "{}", again.text());
    for (what, xml) in [
        ("an hour old", logout_request("_lr-2", Some(now - 3600), Some(SLO_URL))),
        ("an hour ahead", logout_request("_lr-3", Some(now + 3600), Some(SLO_URL))),
        ("without IssueInstant", logout_request("_lr-4", None, Some(SLO_URL))),
        ("without Destination", logout_request("_lr-5", Some(now), None)),
        ("for another endpoint", logout_request("_lr-6", Some(now), Some("https://app.test/elsewhere"))),
    ] {
        assert_eq!(slo(&h, "SAMLRequest", &xml).status, 400, "{what}");
    }
    // Within the skew either way is fine.
    assert_eq!(slo(&h, "SAMLRequest", &logout_request("_lr-7", Some(now + 30), Some(SLO_URL))).status, 200);
    assert_eq!(slo(&h, "SAMLRequest", &logout_request("_lr-8", Some(now - 200), Some(SLO_URL))).status, 200);
}

fn logout_response(in_response_to: &str, issuer: &str, status: &str, extra: &str, now: u64) -> String {
    format!(
        r#"<samlp:LogoutResponse xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="_resp-1" Version="2.0" IssueInstant="{}" Destination="{}" InResponseTo="{in_response_to}"><saml:Issuer>{issuer}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:{status}"/>{extra}</samlp:Status></samlp:LogoutResponse>"#,
        portcullis::saml::time::format(now),
        SLO_URL.replace('&', "&amp;")
    )
}

/// A LogoutResponse is read as XML and checked: from the IdP, answering a LogoutRequest
/// this gateway sent, with a Success status. Finding the IdP's entity id somewhere in the
/// text is not enough.
#[test]
fn logout_responses_are_parsed_and_checked() {
    let h = saml_harness(json!({}));
    let now = h.clock.now();
    let stranger = logout_response("_not-ours", IDP, "Success", "", now);
    assert_eq!(slo(&h, "SAMLResponse", &stranger).status, 400, "InResponseTo names no request of ours");
    let hidden = logout_response(
        "_not-ours",
        "https://other.example",
        "Success",
        &format!("<samlp:StatusMessage>{IDP}</samlp:StatusMessage>"),
        now,
    );
    assert_eq!(slo(&h, "SAMLResponse", &hidden).status, 400, "the IdP's name in a message is not the Issuer");
    assert_eq!(slo(&h, "SAMLResponse", "<samlp:LogoutRequest/>").status, 400);

    // An answer to a request of ours (its ID is keyed with the cookie key, as the
    // gateway makes it when a person signs out) ends on the signed-out page.
    let keys = [portcullis::crypto::KeyWithId { id: "c1".into(), key: portcullis::secret::Secret::new(vec![7u8; 32]) }];
    let ours = portcullis::saml::logout::request_id(&keys, "acme", "corp-saml", [3; 16]).unwrap();
    let ok = slo(&h, "SAMLResponse", &logout_response(&ours, IDP, "Success", "", now));
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert!(ok.headers.get("location").unwrap().ends_with("/_portcullis/logged-out"));
    // The same request ID for another connection or tenant is not ours.
    let other = portcullis::saml::logout::request_id(&keys, "acme", "other", [3; 16]).unwrap();
    assert_eq!(slo(&h, "SAMLResponse", &logout_response(&other, IDP, "Success", "", now)).status, 400);
    // A failure status, a stale answer and one without Destination are refused.
    assert_eq!(slo(&h, "SAMLResponse", &logout_response(&ours, IDP, "Responder", "", now)).status, 400);
    assert_eq!(slo(&h, "SAMLResponse", &logout_response(&ours, IDP, "Success", "", now - 3600)).status, 400);
    let undirected = logout_response(&ours, IDP, "Success", "", now).replace(" Destination=", " Elsewhere=");
    assert_eq!(slo(&h, "SAMLResponse", &undirected).status, 400);
}

/// Metadata fetched from `idp_metadata_url` gets the checks a configured connection gets at
/// load: an https SSO endpoint and at least one usable signing certificate.
#[test]
fn fetched_metadata_is_validated_like_configuration() {
    let answer = |xml: String| {
        move |r: &portcullis::http::Outbound| {
            assert_eq!(r.url, "https://idp.example.com/md");
            Ok(portcullis::http::Inbound { status: 200, headers: Default::default(), body: xml.clone().into_bytes() })
        }
    };
    let cases = [
        ("an http SSO URL", metadata_xml().replace("https://idp.example.com/sso", "http://idp.example.com/sso")),
        ("no usable certificate", metadata_xml().replace("<ds:X509Certificate>", "<ds:X509Certificate>AAAA")),
    ];
    for (what, xml) in cases {
        let h = saml_harness(json!({"idp_metadata": null, "idp_metadata_url": "https://idp.example.com/md"}));
        h.fetch.set(answer(xml));
        let r = h.respond(&get("/_portcullis/login?provider=corp-saml"));
        assert_eq!(r.status, 502, "{what}: {}", r.text());
    }
    let h = saml_harness(json!({"idp_metadata": null, "idp_metadata_url": "https://idp.example.com/md"}));
    h.fetch.set(answer(metadata_xml()));
    assert_eq!(h.respond(&get("/_portcullis/login?provider=corp-saml")).status, 302);
}
