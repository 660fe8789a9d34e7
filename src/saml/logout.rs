//! SAML 2.0 Single Logout over the HTTP-Redirect binding: the IdP's LogoutRequest
//! (query signature required), our LogoutResponse, and our LogoutRequest on sign-out.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::crypto::{ct_eq, hex, hmac_sha256, KeyWithId};
use crate::markup::escape;
use crate::saml::dsig::IdpCertificate;
use crate::saml::response::{ASSERTION_NS, PROTOCOL_NS};
use crate::saml::xml::{Document, XmlLimits};

/// Largest inflated message accepted.
const MAX_INFLATED: usize = 64 * 1024;

/// How long after its IssueInstant a logout message is accepted (plus the connection's
/// clock skew either way). Replayed LogoutRequest IDs are remembered at least this long.
pub const MESSAGE_LIFETIME: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub id: String,
    pub issuer: String,
    pub name_id: String,
    pub session_indexes: Vec<String>,
    pub destination: Option<String>,
    pub issue_instant: Option<i64>,
    pub not_on_or_after: Option<i64>,
}

/// The IdP's answer to our LogoutRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub issuer: String,
    pub in_response_to: Option<String>,
    pub destination: Option<String>,
    pub issue_instant: Option<i64>,
    /// Top-level status code first, then nested ones.
    pub status: Vec<String>,
}

pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

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
        issue_instant: doc.attribute(root, "IssueInstant").and_then(crate::saml::time::parse),
        not_on_or_after: doc.attribute(root, "NotOnOrAfter").and_then(crate::saml::time::parse),
    })
}

/// Parses a LogoutResponse (core 3.7.2, a StatusResponseType) with the hardened parser.
pub fn parse_logout_response(xml: &[u8]) -> Result<LogoutResponse, String> {
    let doc = Document::parse(xml, &XmlLimits::default()).map_err(|e| e.to_string())?;
    let root = doc.root();
    if !doc.is_element(root, PROTOCOL_NS, "LogoutResponse") {
        return Err("not a samlp:LogoutResponse".into());
    }
    if doc.attribute(root, "Version") != Some("2.0") {
        return Err("LogoutResponse is not version 2.0".into());
    }
    let issuer = doc.children_named(root, ASSERTION_NS, "Issuer").next().ok_or("no Issuer")?;
    let status = doc.children_named(root, PROTOCOL_NS, "Status").next().ok_or("no Status")?;
    let mut codes = Vec::new();
    let mut code = doc.children_named(status, PROTOCOL_NS, "StatusCode").next();
    while let Some(c) = code {
        codes.push(doc.attribute(c, "Value").ok_or("StatusCode has no Value")?.to_owned());
        code = doc.children_named(c, PROTOCOL_NS, "StatusCode").next();
    }
    if codes.is_empty() {
        return Err("no StatusCode".into());
    }
    Ok(LogoutResponse {
        issuer: doc.text(issuer).map_err(|e| e.to_string())?,
        in_response_to: doc.attribute(root, "InResponseTo").map(str::to_owned),
        destination: doc.attribute(root, "Destination").map(str::to_owned),
        issue_instant: doc.attribute(root, "IssueInstant").and_then(crate::saml::time::parse),
        status: codes,
    })
}

/// Whether a message issued at `issue_instant` is fresh at `now`: not later than `now`
/// plus the skew, not older than [`MESSAGE_LIFETIME`] plus the skew. A message without an
/// IssueInstant (required by core 3.2.1) is not.
pub fn check_fresh(issue_instant: Option<i64>, now: u64, skew: u64) -> Result<(), String> {
    let t = issue_instant.ok_or("IssueInstant is missing or not a time")?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let skew = i64::try_from(skew).unwrap_or(i64::MAX);
    let lifetime = i64::try_from(MESSAGE_LIFETIME).unwrap_or(i64::MAX);
    if t > now.saturating_add(skew) {
        return Err("IssueInstant is in the future".into());
    }
    if now.saturating_sub(t) > lifetime.saturating_add(skew) {
        return Err("the message is too old (IssueInstant)".into());
    }
    Ok(())
}

fn request_mac(key: &KeyWithId, tenant: &str, connection: &str, nonce: &str) -> String {
    let mac =
        hmac_sha256(&key.derive("saml-logout-request"), &[tenant.as_bytes(), connection.as_bytes(), nonce.as_bytes()]);
    hex(mac.get(..16).unwrap_or_default())
}

/// The ID of our LogoutRequest: a random part and a keyed hash of it, so the IdP's
/// LogoutResponse can be matched to a request of ours without storing anything
/// (`saml_logout_url` runs where nothing can be stored).
pub fn request_id(keys: &[KeyWithId], tenant: &str, connection: &str, random: [u8; 16]) -> Option<String> {
    let key = keys.first()?;
    let nonce = hex(&random);
    Some(format!("_{nonce}{}", request_mac(key, tenant, connection, &nonce)))
}

/// Whether `id` was made by [`request_id`] for this tenant and connection, with any key.
pub fn is_request_id(keys: &[KeyWithId], tenant: &str, connection: &str, id: &str) -> bool {
    let Some(rest) = id.strip_prefix('_') else { return false };
    let (Some(nonce), Some(mac)) = (rest.get(..32), rest.get(32..)) else { return false };
    keys.iter().any(|k| ct_eq(request_mac(k, tenant, connection, nonce).as_bytes(), mac.as_bytes()))
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
