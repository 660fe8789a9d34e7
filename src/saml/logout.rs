//! SAML 2.0 Single Logout over the HTTP-Redirect binding: the IdP's LogoutRequest
//! (query signature required), our LogoutResponse, and our LogoutRequest on sign-out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::pages::escape;
use crate::saml::dsig::IdpCertificate;
use crate::saml::response::{ASSERTION_NS, PROTOCOL_NS};
use crate::saml::xml::{Document, XmlLimits};

/// Largest inflated message accepted.
const MAX_INFLATED: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    pub session_indexes: Vec<String>,
    pub destination: Option<String>,
    pub not_on_or_after: Option<i64>,
}

/// The raw (still percent-encoded) value of a query parameter, as the signature covers it.
fn raw_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
}

fn decode(raw: &str) -> String {
    url::form_urlencoded::parse(format!("v={raw}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// Checks the query signature of a redirect-bound message (bindings 3.4.4.1) against the
/// configured certificates and returns the inflated message. Unsigned messages are refused.
pub fn verify_redirect(query: &str, param: &str, certs: &[IdpCertificate]) -> Result<Vec<u8>, String> {
    let message = raw_param(query, param).ok_or_else(|| format!("{param} is missing"))?;
    let sig_alg = raw_param(query, "SigAlg").ok_or("the message is not signed (no SigAlg)")?;
    let signature = raw_param(query, "Signature").ok_or("the message is not signed (no Signature)")?;
    let mut octets = format!("{param}={message}");
    if let Some(rs) = raw_param(query, "RelayState") {
        octets.push_str(&format!("&RelayState={rs}"));
    }
    octets.push_str(&format!("&SigAlg={sig_alg}"));
    let signature = STANDARD.decode(decode(signature)).map_err(|_| "Signature is not base64")?;
    let alg = decode(sig_alg);
    if !certs.iter().any(|c| c.verify_detached(&alg, octets.as_bytes(), &signature)) {
        return Err(format!("query signature does not verify with a configured certificate ({alg})"));
    }
    let deflated = STANDARD.decode(decode(message)).map_err(|_| format!("{param} is not base64"))?;
    miniz_oxide::inflate::decompress_to_vec_with_limit(&deflated, MAX_INFLATED)
        .map_err(|_| format!("{param} does not inflate"))
}

/// Parses a LogoutRequest with the hardened parser.
pub fn parse_logout_request(xml: &[u8]) -> Result<LogoutRequest, String> {
    let doc = Document::parse(xml, &XmlLimits::default()).map_err(|e| e.to_string())?;
    let root = doc.root();
    if !doc.is_element(root, PROTOCOL_NS, "LogoutRequest") {
        return Err("not a samlp:LogoutRequest".into());
    }
    let id = doc.attribute(root, "ID").filter(|i| !i.is_empty()).ok_or("LogoutRequest has no ID")?.to_owned();
    let issuer = doc.children_named(root, ASSERTION_NS, "Issuer").next().ok_or("no Issuer")?;
    let name_id = doc
        .children_named(root, ASSERTION_NS, "NameID")
        .next()
        .ok_or("no NameID (encrypted NameIDs are not supported)")?;
    let session_indexes = doc
        .children_named(root, PROTOCOL_NS, "SessionIndex")
        .map(|s| doc.text(s).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LogoutRequest {
        id,
        issuer: doc.text(issuer).map_err(|e| e.to_string())?,
        name_id: doc.text(name_id).map_err(|e| e.to_string())?,
        session_indexes,
        destination: doc.attribute(root, "Destination").map(str::to_owned),
        not_on_or_after: doc.attribute(root, "NotOnOrAfter").and_then(crate::saml::time::parse),
    })
}

/// Our answer to the IdP's LogoutRequest.
pub fn logout_response_xml(id: &str, in_response_to: &str, issuer: &str, destination: &str, now: u64) -> String {
    format!(
        r#"<samlp:LogoutResponse xmlns:samlp="{PROTOCOL_NS}" xmlns:saml="{ASSERTION_NS}" ID="{}" Version="2.0" IssueInstant="{}" Destination="{}" InResponseTo="{}"><saml:Issuer>{}</saml:Issuer><samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:LogoutResponse>"#,
        escape(id),
        crate::saml::time::format(now),
        escape(destination),
        escape(in_response_to),
        escape(issuer)
    )
}

/// Our LogoutRequest when a person signs out of a SAML session.
pub fn logout_request_xml(
    id: &str,
    issuer: &str,
    destination: &str,
    name_id: &str,
    name_id_format: &str,
    session_index: Option<&str>,
    now: u64,
) -> String {
    let session =
        session_index.map(|s| format!("<samlp:SessionIndex>{}</samlp:SessionIndex>", escape(s))).unwrap_or_default();
    format!(
        r#"<samlp:LogoutRequest xmlns:samlp="{PROTOCOL_NS}" xmlns:saml="{ASSERTION_NS}" ID="{}" Version="2.0" IssueInstant="{}" Destination="{}"><saml:Issuer>{}</saml:Issuer><saml:NameID Format="{}">{}</saml:NameID>{session}</samlp:LogoutRequest>"#,
        escape(id),
        crate::saml::time::format(now),
        escape(destination),
        escape(issuer),
        escape(name_id_format),
        escape(name_id)
    )
}
