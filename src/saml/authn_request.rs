//! The SP's `<samlp:AuthnRequest>` (SAML core 3.4.1, profile 4.1.4.1) and its encoding for
//! the HTTP-Redirect binding (saml-bindings-2.0-os 3.4.4.1: raw DEFLATE, base64, URL-encoded
//! `SAMLRequest`, optional `RelayState`).
//!
//! The request asks for the response to come back over HTTP-POST to the ACS URL. Its `ID` is
//! what the caller stores with the pending login and later passes as
//! `Expectations::expected_in_response_to`.
//!
//! TODO: signed redirect requests (bindings 3.4.4.1: `SigAlg` and `Signature` over the
//! exact query string) for IdPs that require them; this needs an SP signing key in the
//! configuration.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::crypto::hex;
use crate::saml::response::{ASSERTION_NS, PROTOCOL_NS};
use crate::saml::time;

pub const BINDING_HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
/// Fewest random bytes accepted for a request ID (SAML core 1.3.4 asks for at least 128 bits).
pub const MIN_ID_RANDOM_BYTES: usize = 16;
/// Bindings 3.4.3: RelayState MUST NOT exceed 80 bytes.
pub const MAX_RELAY_STATE: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthnRequestError {
    RandomTooShort { got: usize },
    InvalidUrl(String),
    RelayStateTooLong { len: usize },
    Signing(String),
}

impl fmt::Display for AuthnRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthnRequestError::RandomTooShort { got } => {
                write!(f, "request ID needs at least {MIN_ID_RANDOM_BYTES} random bytes, got {got}")
            }
            AuthnRequestError::InvalidUrl(u) => write!(f, "invalid IdP SSO URL {u:?}"),
            AuthnRequestError::Signing(e) => write!(f, "signing the request failed: {e}"),
            AuthnRequestError::RelayStateTooLong { len } => {
                write!(f, "RelayState of {len} bytes exceeds {MAX_RELAY_STATE}")
            }
        }
    }
}

impl std::error::Error for AuthnRequestError {}

/// What the request says.
#[derive(Debug, Clone)]
pub struct AuthnRequestParams<'a> {
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    /// The IdP's SSO endpoint for the HTTP-Redirect binding (the request's Destination).
    pub idp_sso_url: &'a str,
    /// `NameIDPolicy/@Format`, e.g. `urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress`.
    pub name_id_format: Option<&'a str>,
    /// Ask the IdP to authenticate the user again even with a session.
    pub force_authn: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthnRequest {
    /// The request ID, to keep with the pending login.
    pub id: String,
    pub issue_instant: String,
    pub xml: String,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Builds an AuthnRequest. `random` (at least 16 bytes from the caller's CSPRNG) makes the
/// ID; `now` (Unix seconds) the IssueInstant.
pub fn build(params: &AuthnRequestParams<'_>, now: u64, random: &[u8]) -> Result<AuthnRequest, AuthnRequestError> {
    if random.len() < MIN_ID_RANDOM_BYTES {
        return Err(AuthnRequestError::RandomTooShort { got: random.len() });
    }
    // xs:ID is an NCName: it may not start with a digit, hence the prefix.
    let id = format!("_{}", hex(random));
    let issue_instant = time::format(now);
    let mut xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="{PROTOCOL_NS}" xmlns:saml="{ASSERTION_NS}" ID="{id}" Version="2.0" IssueInstant="{issue_instant}" Destination="{}" AssertionConsumerServiceURL="{}" ProtocolBinding="{BINDING_HTTP_POST}""#,
        escape(params.idp_sso_url),
        escape(params.acs_url),
    );
    if params.force_authn {
        xml.push_str(r#" ForceAuthn="true""#);
    }
    xml.push('>');
    xml.push_str(&format!("<saml:Issuer>{}</saml:Issuer>", escape(params.sp_entity_id)));
    match params.name_id_format {
        Some(f) => xml.push_str(&format!(r#"<samlp:NameIDPolicy Format="{}" AllowCreate="true"/>"#, escape(f))),
        None => xml.push_str(r#"<samlp:NameIDPolicy AllowCreate="true"/>"#),
    }
    xml.push_str("</samlp:AuthnRequest>");
    Ok(AuthnRequest { id, issue_instant, xml })
}

/// The HTTP-Redirect binding (bindings 3.4.4): `param` (`SAMLRequest` or `SAMLResponse`)
/// carries the DEFLATEd, base64 message; with `key`, the query is signed (3.4.4.1).
pub fn redirect_binding_url(
    base: &str,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    key: Option<&rsa::RsaPrivateKey>,
) -> Result<String, AuthnRequestError> {
    let url = url::Url::parse(base).map_err(|_| AuthnRequestError::InvalidUrl(base.to_owned()))?;
    if url.cannot_be_a_base() || !matches!(url.scheme(), "https" | "http") {
        return Err(AuthnRequestError::InvalidUrl(base.to_owned()));
    }
    binding_url(url, param, xml, relay_state, key)
}

fn binding_url(
    mut url: url::Url,
    param: &str,
    xml: &str,
    relay_state: Option<&str>,
    key: Option<&rsa::RsaPrivateKey>,
) -> Result<String, AuthnRequestError> {
    let deflated = miniz_oxide::deflate::compress_to_vec(xml.as_bytes(), 6);
    let encoded = STANDARD.encode(deflated);
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let mut signed = format!("{param}={}", enc(&encoded));
    if let Some(rs) = relay_state {
        signed.push_str(&format!("&RelayState={}", enc(rs)));
    }
    if let Some(key) = key {
        signed.push_str(&format!("&SigAlg={}", enc(SIG_ALG_RSA_SHA256)));
        let digest = <sha2::Sha256 as sha2::Digest>::digest(signed.as_bytes());
        let sig = key
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
            .map_err(|e| AuthnRequestError::Signing(e.to_string()))?;
        signed.push_str(&format!("&Signature={}", enc(&STANDARD.encode(sig))));
    }
    let query = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{signed}"),
        _ => signed,
    };
    url.set_query(Some(&query));
    Ok(url.into())
}

/// Signature algorithm of signed redirects.
pub const SIG_ALG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// The URL that sends the browser to the IdP with `request` over HTTP-Redirect: the IdP SSO
/// URL (its own query kept) plus `SAMLRequest` and, when given, `RelayState`.
pub fn redirect_url(
    idp_sso_url: &str,
    request: &AuthnRequest,
    relay_state: Option<&str>,
) -> Result<String, AuthnRequestError> {
    redirect_url_signed(idp_sso_url, request, relay_state, None)
}

/// As [`redirect_url`], signed per SAML bindings 3.4.4.1 when `key` is given: RSA-SHA256
/// over the octets `SAMLRequest=…&RelayState=…&SigAlg=…` exactly as they appear
/// URL-encoded in the query, added as `SigAlg` and `Signature` parameters.
pub fn redirect_url_signed(
    idp_sso_url: &str,
    request: &AuthnRequest,
    relay_state: Option<&str>,
    key: Option<&rsa::RsaPrivateKey>,
) -> Result<String, AuthnRequestError> {
    if let Some(rs) = relay_state {
        if rs.len() > MAX_RELAY_STATE {
            return Err(AuthnRequestError::RelayStateTooLong { len: rs.len() });
        }
    }
    redirect_binding_url(idp_sso_url, "SAMLRequest", &request.xml, relay_state, key)
}
