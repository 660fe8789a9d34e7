//! Verification of a `<samlp:Response>` received at the assertion consumer service, after the
//! SAML 2.0 Web Browser SSO profile (saml-profiles-2.0-os, 4.1.4.2 "<Response> Usage" and
//! 4.1.4.3 "<Response> Message Processing Rules"), SAML core (2.5 Conditions, 3.2.2 Status)
//! and the HTTP-POST binding (saml-bindings-2.0-os 3.5.5.2).
//!
//! A [`SamlResponse`] is untrusted; a [`VerifiedAssertion`] comes only out of
//! [`SamlResponse::verify`], and every value in it is read from the one assertion element
//! that a verified signature covers, by walking down from that element (never by searching
//! the document again), so a second, unsigned copy placed elsewhere can never be read.
//!
//! Deliberately stricter than the specifications:
//! - exactly one `Assertion` element in the whole document (assertions nested in `Advice`
//!   are refused too), and it must be a child of the `Response`;
//! - no two elements may share an `ID`;
//! - every signature present on the Response or the Assertion must verify.
//!
//! An `EncryptedAssertion` is decrypted with the SP key ([`Expectations::decryption_key`]):
//! the plaintext must be exactly one `Assertion`, which is put in the document text in place of
//! the `EncryptedAssertion` before the whole document is parsed again with the same parser and
//! limits; every check above then runs on that document. A Response signature covers the
//! encrypted form, so it is verified on the received document, before decrypting.
//!
//! The replay cache is the caller's: store `assertion_id` until `not_on_or_after` and refuse
//! an assertion whose ID is already stored (profile 4.1.4.5).
//!
//! Why one long file: the profile's processing rules (4.1.4.2-4.1.4.5) run in one order over
//! one parsed tree; the steps are kept together so a reviewer can tick them off in order.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::saml::dsig::{verify_enveloped, DsigError, IdpCertificate, DSIG_NS};
use crate::saml::time;
use crate::saml::xml::{Document, NodeData, NodeId, XmlError, XmlLimits};
use crate::saml::xmlenc::{decrypt_in_place, XmlEncError};

pub const PROTOCOL_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub const ASSERTION_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
pub const NAMEID_ENTITY: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamlError {
    /// The form value is not base64.
    Base64,
    Xml(XmlError),
    /// The document element is not a protocol-namespace `Response`.
    NotAResponse(String),
    UnsupportedVersion(String),
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    MissingElement(&'static str),
    InvalidTime {
        attribute: &'static str,
        value: String,
    },
    /// Several elements carry this `ID`.
    DuplicateId(String),
    /// The IdP answered with a status other than Success. Unauthenticated unless the
    /// Response was signed: show it, never act on it.
    Status {
        codes: Vec<String>,
        message: Option<String>,
    },
    NoAssertion,
    /// More than one assertion (plain or encrypted) in the document.
    MultipleAssertions(usize),
    /// The only assertion is not a child of the Response.
    AssertionMisplaced,
    /// An `EncryptedAssertion`, and no SP decryption key is configured.
    EncryptedAssertionNeedsKey,
    /// The `EncryptedAssertion` could not be decrypted. Failures that depend on the key or
    /// the plaintext are all [`XmlEncError::DecryptionFailed`].
    Decryption(XmlEncError),
    /// An `EncryptedID` in the subject, which needs the SP's private key as well.
    EncryptedNameIdNeedsKey,
    /// Neither the Response nor the Assertion carries a signature.
    NotSigned,
    /// An element carries more than one `ds:Signature` child.
    MultipleSignatures,
    Signature(DsigError),
    IssuerMismatch {
        expected: String,
        actual: String,
    },
    IssuerFormat(String),
    DestinationMismatch {
        expected: String,
        actual: String,
    },
    /// A signed Response without `Destination` (bindings 3.5.5.2).
    MissingDestination,
    /// Unsolicited responses are not allowed and no request is pending.
    Unsolicited,
    MissingInResponseTo,
    InResponseToMismatch {
        expected: String,
        actual: String,
    },
    /// The response answers a request although none was expected (unsolicited flow).
    UnexpectedInResponseTo(String),
    /// No `SubjectConfirmation` with the bearer method.
    NoBearerConfirmation,
    RecipientMismatch {
        expected: String,
        actual: Option<String>,
    },
    ConfirmationExpired {
        not_on_or_after: i64,
        now: u64,
    },
    ConfirmationNotYetValid {
        not_before: i64,
        now: u64,
    },
    NotYetValid {
        not_before: i64,
        now: u64,
    },
    Expired {
        not_on_or_after: i64,
        now: u64,
    },
    SessionExpired {
        session_not_on_or_after: i64,
        now: u64,
    },
    MissingAudienceRestriction,
    AudienceMismatch {
        expected: String,
        audiences: Vec<String>,
    },
    /// A condition this implementation does not understand (core 2.5.1.5: the assertion is
    /// then not valid).
    UnsupportedCondition(String),
    MissingAuthnStatement,
}

impl fmt::Display for SamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SamlError::*;
        match self {
            Base64 => f.write_str("SAMLResponse is not valid base64"),
            Xml(e) => write!(f, "SAML response: {e}"),
            NotAResponse(n) => write!(f, "document element {n:?} is not a samlp:Response"),
            UnsupportedVersion(v) => write!(f, "SAML version {v:?} is not 2.0"),
            MissingAttribute { element, attribute } => write!(f, "{element} lacks the {attribute} attribute"),
            MissingElement(e) => write!(f, "missing {e}"),
            InvalidTime { attribute, value } => write!(f, "{attribute} {value:?} is not a valid SAML time"),
            DuplicateId(id) => write!(f, "several elements have the ID {id:?}"),
            Status { codes, message } => {
                write!(f, "IdP returned status {}", codes.join(" / "))?;
                if let Some(m) = message {
                    write!(f, ": {m:?}")?;
                }
                Ok(())
            }
            NoAssertion => f.write_str("response contains no assertion"),
            MultipleAssertions(n) => write!(f, "response contains {n} assertions (exactly one allowed)"),
            AssertionMisplaced => f.write_str("the assertion is not a child of the response"),
            EncryptedAssertionNeedsKey => {
                f.write_str("the assertion is encrypted and no SP decryption key is configured")
            }
            Decryption(e) => write!(f, "encrypted assertion: {e}"),
            EncryptedNameIdNeedsKey => f.write_str("encrypted NameIDs need the SP key (not supported yet)"),
            NotSigned => f.write_str("neither the response nor the assertion is signed"),
            MultipleSignatures => f.write_str("an element carries several signatures"),
            Signature(e) => write!(f, "signature: {e}"),
            IssuerMismatch { expected, actual } => write!(f, "issuer {actual:?} is not the IdP {expected:?}"),
            IssuerFormat(fmt) => write!(f, "issuer format {fmt:?} is not the entity format"),
            DestinationMismatch { expected, actual } => {
                write!(f, "Destination {actual:?} is not this ACS URL {expected:?}")
            }
            MissingDestination => f.write_str("signed response lacks Destination"),
            Unsolicited => f.write_str("unsolicited response, and unsolicited responses are not allowed"),
            MissingInResponseTo => f.write_str("InResponseTo is missing"),
            InResponseToMismatch { expected, actual } => {
                write!(f, "InResponseTo {actual:?} is not the pending request {expected:?}")
            }
            UnexpectedInResponseTo(id) => write!(f, "InResponseTo {id:?} but no request is pending"),
            NoBearerConfirmation => f.write_str("no bearer SubjectConfirmation"),
            RecipientMismatch { expected, actual } => {
                write!(f, "Recipient {actual:?} is not this ACS URL {expected:?}")
            }
            ConfirmationExpired { not_on_or_after, now } => {
                write!(f, "subject confirmation expired (NotOnOrAfter {not_on_or_after}, now {now})")
            }
            ConfirmationNotYetValid { not_before, now } => {
                write!(f, "subject confirmation not valid yet (NotBefore {not_before}, now {now})")
            }
            NotYetValid { not_before, now } => write!(f, "assertion not valid yet (NotBefore {not_before}, now {now})"),
            Expired { not_on_or_after, now } => {
                write!(f, "assertion expired (NotOnOrAfter {not_on_or_after}, now {now})")
            }
            SessionExpired { session_not_on_or_after, now } => {
                write!(f, "session already ended (SessionNotOnOrAfter {session_not_on_or_after}, now {now})")
            }
            MissingAudienceRestriction => f.write_str("assertion has no AudienceRestriction"),
            AudienceMismatch { expected, audiences } => {
                write!(f, "audiences {audiences:?} do not include this SP {expected:?}")
            }
            UnsupportedCondition(c) => write!(f, "unsupported condition {c:?}"),
            MissingAuthnStatement => f.write_str("assertion has no AuthnStatement"),
        }
    }
}

impl std::error::Error for SamlError {}

impl From<XmlError> for SamlError {
    fn from(e: XmlError) -> Self {
        SamlError::Xml(e)
    }
}

impl From<XmlEncError> for SamlError {
    fn from(e: XmlEncError) -> Self {
        SamlError::Decryption(e)
    }
}

impl From<DsigError> for SamlError {
    fn from(e: DsigError) -> Self {
        SamlError::Signature(e)
    }
}

/// What the response must be checked against. `Debug` leaves the decryption key out.
#[derive(Clone)]
pub struct Expectations<'a> {
    pub idp_entity_id: &'a str,
    /// The IdP's signing certificates (several during a rollover). The only source of keys.
    pub idp_certs: &'a [IdpCertificate],
    pub sp_entity_id: &'a str,
    pub acs_url: &'a str,
    /// ID of the AuthnRequest this login started with; `None` for IdP-initiated logins.
    pub expected_in_response_to: Option<&'a str>,
    pub allow_unsolicited: bool,
    /// Unix seconds.
    pub now: u64,
    /// Allowed clock difference, seconds.
    pub skew: u64,
    /// Accept SHA-1 digests and RSA-SHA1 signatures.
    pub legacy_sha1: bool,
    /// The SP's RSA key for `EncryptedAssertion`s (RSA-OAEP key transport; AES-GCM or
    /// AES-CBC content). `None`: encrypted assertions are refused with
    /// [`SamlError::EncryptedAssertionNeedsKey`].
    pub decryption_key: Option<&'a rsa::RsaPrivateKey>,
}

impl fmt::Debug for Expectations<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expectations")
            .field("idp_entity_id", &self.idp_entity_id)
            .field("idp_certs", &self.idp_certs)
            .field("sp_entity_id", &self.sp_entity_id)
            .field("acs_url", &self.acs_url)
            .field("expected_in_response_to", &self.expected_in_response_to)
            .field("allow_unsolicited", &self.allow_unsolicited)
            .field("now", &self.now)
            .field("skew", &self.skew)
            .field("legacy_sha1", &self.legacy_sha1)
            .field("decryption_key", &self.decryption_key.map(|_| "[redacted]"))
            .finish()
    }
}

/// The identity an IdP asserted, as [`VerifiedAssertion`] holds it. `Debug` leaves the
/// attribute values out (they are personal data).
#[derive(Clone, PartialEq, Eq)]
pub struct AssertionContents {
    pub assertion_id: String,
    pub issuer: String,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    /// Unix seconds.
    pub session_not_on_or_after: Option<i64>,
    /// When the IdP authenticated the subject (`AuthnStatement/@AuthnInstant`), Unix seconds.
    pub authn_instant: Option<i64>,
    /// When the assertion stops being acceptable (earliest of the bearer confirmation's and
    /// the conditions' NotOnOrAfter), Unix seconds: how long to keep `assertion_id` in the
    /// replay cache.
    pub not_on_or_after: i64,
    pub authn_context_class_ref: Option<String>,
    /// Attribute name to its simple values, in document order. Values that are XML
    /// structures rather than text are left out.
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// An assertion read from a Response whose signature and conditions passed every check: made only by `SamlResponse::verify`, so holding one is proof that
/// every check passed. Read what it says through [`AssertionContents`] (`Deref`).
#[derive(Clone, PartialEq)]
pub struct VerifiedAssertion(AssertionContents);

impl std::ops::Deref for VerifiedAssertion {
    type Target = AssertionContents;
    fn deref(&self) -> &AssertionContents {
        &self.0
    }
}

impl VerifiedAssertion {
    /// What the verified assertion says, for keeping after the proof is no longer needed.
    pub fn into_contents(self) -> AssertionContents {
        self.0
    }
}

impl PartialEq<AssertionContents> for VerifiedAssertion {
    fn eq(&self, other: &AssertionContents) -> bool {
        &self.0 == other
    }
}

impl fmt::Debug for VerifiedAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for AssertionContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedAssertion")
            .field("assertion_id", &self.assertion_id)
            .field("issuer", &self.issuer)
            .field("name_id", &self.name_id)
            .field("name_id_format", &self.name_id_format)
            .field("session_index", &self.session_index)
            .field("not_on_or_after", &self.not_on_or_after)
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A decoded `SAMLResponse`, parsed but not trusted.
#[derive(Clone)]
pub struct SamlResponse {
    doc: Document,
    /// The text `doc` was parsed from (byte order mark removed), for putting a decrypted
    /// assertion in place of the encrypted one.
    source: String,
    limits: XmlLimits,
}

impl fmt::Debug for SamlResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SamlResponse([unverified])")
    }
}

/// Where the assertion to use is.
enum AssertionSource {
    Plain(NodeId),
    Encrypted(NodeId),
}

/// How the Response's own signature is handled for the document being checked.
#[derive(Clone, Copy)]
enum ResponseSignature {
    /// Verify it, if present, in this document.
    Verify,
    /// Already verified (over the encrypted form, in the received document) when `true`;
    /// absent when `false`.
    VerifiedBeforeDecryption(bool),
}

fn attr<'d>(doc: &'d Document, id: NodeId, element: &'static str, name: &'static str) -> Result<&'d str, SamlError> {
    doc.attribute(id, name).ok_or(SamlError::MissingAttribute { element, attribute: name })
}

fn time_attr(doc: &Document, id: NodeId, attribute: &'static str) -> Result<Option<i64>, SamlError> {
    match doc.attribute(id, attribute) {
        None => Ok(None),
        Some(v) => time::parse(v).map(Some).ok_or_else(|| SamlError::InvalidTime { attribute, value: v.to_owned() }),
    }
}

fn saml_child(doc: &Document, id: NodeId, local: &'static str) -> Option<NodeId> {
    doc.children_named(id, ASSERTION_NS, local).next()
}

fn now_i64(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// The issuer of a Response or Assertion must be the IdP, in the entity format (profile
/// 4.1.4.2).
fn check_issuer(doc: &Document, issuer: NodeId, expected: &str) -> Result<String, SamlError> {
    if let Some(format) = doc.attribute(issuer, "Format") {
        if format != NAMEID_ENTITY {
            return Err(SamlError::IssuerFormat(format.to_owned()));
        }
    }
    let actual = doc.text(issuer)?;
    if actual != expected {
        return Err(SamlError::IssuerMismatch { expected: expected.to_owned(), actual });
    }
    Ok(actual)
}

fn check_in_response_to(value: Option<&str>, exp: &Expectations<'_>) -> Result<(), SamlError> {
    match (exp.expected_in_response_to, value) {
        (Some(want), Some(got)) if got == want => Ok(()),
        (Some(want), Some(got)) => {
            Err(SamlError::InResponseToMismatch { expected: want.to_owned(), actual: got.to_owned() })
        }
        (Some(_), None) => Err(SamlError::MissingInResponseTo),
        (None, Some(got)) => Err(SamlError::UnexpectedInResponseTo(got.to_owned())),
        (None, None) => Ok(()),
    }
}

/// The one `ds:Signature` child of `id`, if any.
fn signature_child(doc: &Document, id: NodeId) -> Result<Option<NodeId>, SamlError> {
    let mut sigs = doc.children_named(id, DSIG_NS, "Signature");
    let first = sigs.next();
    if sigs.next().is_some() {
        return Err(SamlError::MultipleSignatures);
    }
    Ok(first)
}

impl SamlResponse {
    /// Parses the decoded (XML) bytes of a `SAMLResponse`.
    pub fn parse(bytes: &[u8], limits: &XmlLimits) -> Result<Self, SamlError> {
        let (doc, text) = Document::parse_with_text(bytes, limits)?;
        Ok(Self { doc, source: text.to_owned(), limits: *limits })
    }

    /// Decodes the `SAMLResponse` form field of the HTTP-POST binding (base64, line breaks
    /// allowed) and parses it. The size limit applies before decoding too.
    pub fn from_post_binding(form_value: &str, limits: &XmlLimits) -> Result<Self, SamlError> {
        let max_encoded = limits.max_bytes.saturating_mul(4) / 3 + 4 + limits.max_bytes / 32;
        if form_value.len() > max_encoded {
            return Err(SamlError::Xml(XmlError::TooLarge { size: form_value.len() * 3 / 4, max: limits.max_bytes }));
        }
        // Line breaks (and other ASCII whitespace) are dropped; a field without any, the
        // usual case, is decoded as it is. Bytes, not characters: no byte of a multi-byte
        // character is ASCII whitespace, so the same bytes remain.
        let field = form_value.as_bytes();
        let bytes = if field.iter().any(u8::is_ascii_whitespace) {
            let clean: Vec<u8> = field.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            STANDARD.decode(clean)
        } else {
            STANDARD.decode(field)
        }
        .map_err(|_| SamlError::Base64)?;
        Self::parse(&bytes, limits)
    }

    /// The Response's `InResponseTo`, UNVERIFIED: only to find the pending request whose ID
    /// is then passed to [`SamlResponse::verify`].
    pub fn unverified_in_response_to(&self) -> Option<&str> {
        self.doc.attribute(self.doc.root(), "InResponseTo")
    }

    /// The signature checks the runtime's crypto can do before [`SamlResponse::verify`]
    /// (see [`crate::saml::dsig::check_with_port`]); they only spare `verify` the same work.
    /// Only the signatures `verify` checks are considered: the Response's own and its
    /// assertion's (one each at most); any other `ds:Signature` in the document is ignored.
    pub fn port_checks(&self, certs: &[IdpCertificate]) -> Vec<crate::saml::dsig::PortCheck> {
        let doc = &self.doc;
        let response = doc.root();
        let mut signatures = Vec::new();
        if let Ok(Some(sig)) = signature_child(doc, response) {
            signatures.push(sig);
        }
        if let Ok(AssertionSource::Plain(assertion)) = locate_assertion(doc, response) {
            if let Ok(Some(sig)) = signature_child(doc, assertion) {
                signatures.push(sig);
            }
        }
        crate::saml::dsig::port_checks(doc, &signatures, certs)
    }

    /// Runs every check and returns the asserted identity.
    pub fn verify(&self, exp: &Expectations<'_>) -> Result<VerifiedAssertion, SamlError> {
        let doc = &self.doc;
        let response = check_envelope(doc)?;
        // Profile 4.1.4.2: the assertion. Exactly one in the whole document, a child of the
        // Response; an assertion hidden elsewhere (Extensions, ds:Object, Advice) is refused.
        match locate_assertion(doc, response)? {
            AssertionSource::Plain(assertion) => verify_located(doc, assertion, exp, ResponseSignature::Verify),
            AssertionSource::Encrypted(encrypted) => {
                let key = exp.decryption_key.ok_or(SamlError::EncryptedAssertionNeedsKey)?;
                // The Response's signature covers the EncryptedAssertion as received: verify it
                // here, before the private key touches anything an attacker may have changed.
                let response_signed = match signature_child(doc, response)? {
                    Some(sig) => {
                        let verified = verify_enveloped(doc, sig, exp.idp_certs, exp.legacy_sha1)?;
                        verified.node() == response
                    }
                    None => false,
                };
                let decrypted =
                    decrypt_in_place(doc, &self.source, encrypted, key, &self.limits, ASSERTION_NS, "Assertion")?;
                // The same checks on the document with the assertion in place; only the
                // Response signature is not verified again (its digest is over the ciphertext).
                let response = check_envelope(&decrypted)?;
                let AssertionSource::Plain(assertion) = locate_assertion(&decrypted, response)? else {
                    return Err(SamlError::Decryption(XmlEncError::DecryptionFailed));
                };
                verify_located(&decrypted, assertion, exp, ResponseSignature::VerifiedBeforeDecryption(response_signed))
            }
        }
    }
}

/// Core 3.2.2: the document element is a protocol Response, version 2.0, with an ID, no two
/// elements share an ID, and the status is Success. Returns the Response element.
fn check_envelope(doc: &Document) -> Result<NodeId, SamlError> {
    let response = doc.root();
    if !doc.is_element(response, PROTOCOL_NS, "Response") {
        return Err(SamlError::NotAResponse(doc.element(response).map(|e| e.qname()).unwrap_or_default()));
    }
    let version = attr(doc, response, "Response", "Version")?;
    if version != "2.0" {
        return Err(SamlError::UnsupportedVersion(version.to_owned()));
    }
    attr(doc, response, "Response", "ID")?;
    time_attr(doc, response, "IssueInstant")?
        .ok_or(SamlError::MissingAttribute { element: "Response", attribute: "IssueInstant" })?;

    // Signature wrapping relies on two elements with one ID; no document may have them.
    if let Some(id) = doc.duplicate_id() {
        return Err(SamlError::DuplicateId(id));
    }

    // Core 3.2.2.1: anything but a top-level Success status ends processing here.
    let status =
        doc.children_named(response, PROTOCOL_NS, "Status").next().ok_or(SamlError::MissingElement("Status"))?;
    let mut codes = Vec::new();
    let mut code = doc.children_named(status, PROTOCOL_NS, "StatusCode").next();
    while let Some(c) = code {
        codes.push(attr(doc, c, "StatusCode", "Value")?.to_owned());
        code = doc.children_named(c, PROTOCOL_NS, "StatusCode").next();
    }
    if codes.first().map(String::as_str) != Some(STATUS_SUCCESS) {
        let message = match doc.children_named(status, PROTOCOL_NS, "StatusMessage").next() {
            Some(m) => Some(doc.text(m)?),
            None => None,
        };
        return Err(SamlError::Status { codes, message });
    }
    Ok(response)
}

/// Every check after the assertion is found: signatures, the Response's fields, then the
/// assertion itself.
fn verify_located(
    doc: &Document,
    assertion: NodeId,
    exp: &Expectations<'_>,
    response_signature: ResponseSignature,
) -> Result<VerifiedAssertion, SamlError> {
    let now = now_i64(exp.now);
    let skew = now_i64(exp.skew);
    let response = doc.root();

    // Profile 4.1.4.3 / core 5: the assertion must be covered by a verified signature:
    // the Response's (which covers its children) or its own. Every signature present on
    // either must verify.
    let mut covered = false;
    let response_signed = match response_signature {
        ResponseSignature::Verify => {
            let response_sig = signature_child(doc, response)?;
            if let Some(sig) = response_sig {
                let verified = verify_enveloped(doc, sig, exp.idp_certs, exp.legacy_sha1)?;
                covered |= verified.node() == response && doc.parent(assertion) == Some(response);
            }
            response_sig.is_some()
        }
        ResponseSignature::VerifiedBeforeDecryption(signed) => {
            // It covered the EncryptedAssertion, whose plaintext is now in its place.
            covered |= signed && doc.parent(assertion) == Some(response);
            signed
        }
    };
    if let Some(sig) = signature_child(doc, assertion)? {
        let verified = verify_enveloped(doc, sig, exp.idp_certs, exp.legacy_sha1)?;
        covered |= verified.node() == assertion;
    }
    if !covered {
        return Err(SamlError::NotSigned);
    }

    // Profile 4.1.4.2: the Response's Issuer, when present, is the IdP.
    if let Some(issuer) = saml_child(doc, response, "Issuer") {
        check_issuer(doc, issuer, exp.idp_entity_id)?;
    }
    // Bindings 3.5.5.2: Destination, when present (and always when signed), is this ACS.
    match doc.attribute(response, "Destination") {
        Some(d) if d != exp.acs_url => {
            return Err(SamlError::DestinationMismatch { expected: exp.acs_url.to_owned(), actual: d.to_owned() })
        }
        None if response_signed => return Err(SamlError::MissingDestination),
        _ => {}
    }
    // Profile 4.1.4.3 / 4.1.5: InResponseTo names the pending request; unsolicited
    // responses only when allowed, and then they must not name a request.
    if exp.expected_in_response_to.is_none() && !exp.allow_unsolicited {
        return Err(SamlError::Unsolicited);
    }
    check_in_response_to(doc.attribute(response, "InResponseTo"), exp)?;

    // From here on everything is read below the verified assertion element.
    verify_assertion(doc, assertion, exp, now, skew)
}

fn locate_assertion(doc: &Document, response: NodeId) -> Result<AssertionSource, SamlError> {
    let all = doc.elements_named(ASSERTION_NS, "Assertion");
    let encrypted = doc.elements_named(ASSERTION_NS, "EncryptedAssertion");
    let total = all.len() + encrypted.len();
    if total > 1 {
        return Err(SamlError::MultipleAssertions(total));
    }
    let (node, plain) = match (all.first(), encrypted.first()) {
        (Some(a), _) => (*a, true),
        (None, Some(e)) => (*e, false),
        (None, None) => return Err(SamlError::NoAssertion),
    };
    if doc.parent(node) != Some(response) {
        return Err(SamlError::AssertionMisplaced);
    }
    Ok(if plain { AssertionSource::Plain(node) } else { AssertionSource::Encrypted(node) })
}

fn verify_assertion(
    doc: &Document,
    assertion: NodeId,
    exp: &Expectations<'_>,
    now: i64,
    skew: i64,
) -> Result<VerifiedAssertion, SamlError> {
    // Core 2.3.3: Version 2.0, ID, IssueInstant.
    let version = attr(doc, assertion, "Assertion", "Version")?;
    if version != "2.0" {
        return Err(SamlError::UnsupportedVersion(version.to_owned()));
    }
    let assertion_id = attr(doc, assertion, "Assertion", "ID")?.to_owned();
    time_attr(doc, assertion, "IssueInstant")?
        .ok_or(SamlError::MissingAttribute { element: "Assertion", attribute: "IssueInstant" })?;

    // Profile 4.1.4.2: the assertion's Issuer is the IdP.
    let issuer_el = saml_child(doc, assertion, "Issuer").ok_or(SamlError::MissingElement("Assertion/Issuer"))?;
    let issuer = check_issuer(doc, issuer_el, exp.idp_entity_id)?;

    // Profile 4.1.4.2: the Subject, its NameID, and a bearer SubjectConfirmation.
    let subject = saml_child(doc, assertion, "Subject").ok_or(SamlError::MissingElement("Subject"))?;
    if saml_child(doc, subject, "EncryptedID").is_some() {
        return Err(SamlError::EncryptedNameIdNeedsKey);
    }
    let name_id_el = saml_child(doc, subject, "NameID").ok_or(SamlError::MissingElement("Subject/NameID"))?;
    // Exact text or refusal: a comment inside the NameID must not shorten it.
    let name_id = doc.text(name_id_el)?;
    let name_id_format = doc.attribute(name_id_el, "Format").map(str::to_owned);
    let confirmation_not_on_or_after = check_bearer_confirmation(doc, subject, exp, now, skew)?;

    // Core 2.5.1 / profile 4.1.4.2: Conditions with the validity window and an
    // AudienceRestriction naming this SP.
    let conditions = saml_child(doc, assertion, "Conditions").ok_or(SamlError::MissingElement("Conditions"))?;
    let conditions_not_on_or_after = check_conditions(doc, conditions, exp, now, skew)?;

    // Profile 4.1.4.2: at least one AuthnStatement; the first gives the session data.
    let authn = saml_child(doc, assertion, "AuthnStatement").ok_or(SamlError::MissingAuthnStatement)?;
    let session_index = doc.attribute(authn, "SessionIndex").map(str::to_owned);
    let session_not_on_or_after = time_attr(doc, authn, "SessionNotOnOrAfter")?;
    let authn_instant = time_attr(doc, authn, "AuthnInstant")?;
    if let Some(s) = session_not_on_or_after {
        if now >= s.saturating_add(skew) {
            return Err(SamlError::SessionExpired { session_not_on_or_after: s, now: exp.now });
        }
    }
    let authn_context_class_ref =
        match saml_child(doc, authn, "AuthnContext").and_then(|c| saml_child(doc, c, "AuthnContextClassRef")) {
            Some(r) => Some(doc.text(r)?),
            None => None,
        };

    // Core 2.7.3: attributes, from the AttributeStatements of this assertion only.
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in doc.children_named(assertion, ASSERTION_NS, "AttributeStatement") {
        for a in doc.children_named(statement, ASSERTION_NS, "Attribute") {
            let name = attr(doc, a, "Attribute", "Name")?.to_owned();
            let values = attributes.entry(name).or_default();
            for v in doc.children_named(a, ASSERTION_NS, "AttributeValue") {
                let structured =
                    doc.children(v).iter().any(|c| matches!(doc.node(*c).map(|n| &n.data), Some(NodeData::Element(_))));
                if !structured {
                    values.push(doc.text(v)?);
                }
            }
        }
    }

    let not_on_or_after = match conditions_not_on_or_after {
        Some(c) => c.min(confirmation_not_on_or_after),
        None => confirmation_not_on_or_after,
    };
    Ok(VerifiedAssertion(AssertionContents {
        assertion_id,
        issuer,
        name_id,
        name_id_format,
        session_index,
        session_not_on_or_after,
        authn_instant,
        not_on_or_after,
        authn_context_class_ref,
        attributes,
    }))
}

/// Profile 4.1.4.2: a bearer SubjectConfirmation whose data names this ACS as Recipient, has
/// a NotOnOrAfter still in the future, answers the pending request, and no NotBefore in the
/// future. Returns that NotOnOrAfter. When several bearer confirmations exist, one that
/// passes is enough; otherwise the first one's failure is reported.
fn check_bearer_confirmation(
    doc: &Document,
    subject: NodeId,
    exp: &Expectations<'_>,
    now: i64,
    skew: i64,
) -> Result<i64, SamlError> {
    let mut first_error = None;
    for sc in doc.children_named(subject, ASSERTION_NS, "SubjectConfirmation") {
        if doc.attribute(sc, "Method") != Some(CM_BEARER) {
            continue;
        }
        match check_one_confirmation(doc, sc, exp, now, skew) {
            Ok(t) => return Ok(t),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(SamlError::NoBearerConfirmation))
}

fn check_one_confirmation(
    doc: &Document,
    sc: NodeId,
    exp: &Expectations<'_>,
    now: i64,
    skew: i64,
) -> Result<i64, SamlError> {
    let data =
        saml_child(doc, sc, "SubjectConfirmationData").ok_or(SamlError::MissingElement("SubjectConfirmationData"))?;
    let recipient = doc.attribute(data, "Recipient");
    if recipient != Some(exp.acs_url) {
        return Err(SamlError::RecipientMismatch {
            expected: exp.acs_url.to_owned(),
            actual: recipient.map(str::to_owned),
        });
    }
    let not_on_or_after = time_attr(doc, data, "NotOnOrAfter")?
        .ok_or(SamlError::MissingAttribute { element: "SubjectConfirmationData", attribute: "NotOnOrAfter" })?;
    if now >= not_on_or_after.saturating_add(skew) {
        return Err(SamlError::ConfirmationExpired { not_on_or_after, now: exp.now });
    }
    if let Some(not_before) = time_attr(doc, data, "NotBefore")? {
        if now.saturating_add(skew) < not_before {
            return Err(SamlError::ConfirmationNotYetValid { not_before, now: exp.now });
        }
    }
    check_in_response_to(doc.attribute(data, "InResponseTo"), exp)?;
    Ok(not_on_or_after)
}

/// Core 2.5.1: the validity window and every condition. Returns the NotOnOrAfter, if any.
fn check_conditions(
    doc: &Document,
    conditions: NodeId,
    exp: &Expectations<'_>,
    now: i64,
    skew: i64,
) -> Result<Option<i64>, SamlError> {
    if let Some(not_before) = time_attr(doc, conditions, "NotBefore")? {
        if now.saturating_add(skew) < not_before {
            return Err(SamlError::NotYetValid { not_before, now: exp.now });
        }
    }
    let not_on_or_after = time_attr(doc, conditions, "NotOnOrAfter")?;
    if let Some(t) = not_on_or_after {
        if now >= t.saturating_add(skew) {
            return Err(SamlError::Expired { not_on_or_after: t, now: exp.now });
        }
    }
    // Core 2.5.1.4: every AudienceRestriction must name this SP (they are ANDed).
    let mut restrictions = 0;
    for c in doc.child_elements(conditions) {
        let el = doc.element(c).ok_or(SamlError::MissingElement("condition"))?;
        let local = el.local.as_str();
        if el.namespace.as_deref() != Some(ASSERTION_NS) {
            return Err(SamlError::UnsupportedCondition(el.qname()));
        }
        match local {
            "AudienceRestriction" => {
                restrictions += 1;
                let mut audiences = Vec::new();
                for a in doc.children_named(c, ASSERTION_NS, "Audience") {
                    audiences.push(doc.text(a)?);
                }
                if !audiences.iter().any(|a| a == exp.sp_entity_id) {
                    return Err(SamlError::AudienceMismatch { expected: exp.sp_entity_id.to_owned(), audiences });
                }
            }
            // OneTimeUse is what the caller's replay cache enforces; ProxyRestriction limits
            // what this SP may issue, which it never does.
            "OneTimeUse" | "ProxyRestriction" => {}
            _ => return Err(SamlError::UnsupportedCondition(el.qname())),
        }
    }
    if restrictions == 0 {
        return Err(SamlError::MissingAudienceRestriction);
    }
    Ok(not_on_or_after)
}
