//! Verification of one enveloped XML-DSig signature (XML Signature Syntax and Processing,
//! section 3.2 "Core Validation"), restricted to the profile SAML 2.0 uses
//! (SAML core 5.4): exactly one `Reference` to the signature's parent element by its `ID`,
//! the enveloped-signature and Exclusive C14N transforms and nothing else.
//!
//! What is refused, and why:
//! - Any key but a configured IdP certificate's. A certificate in `KeyInfo` only selects among
//!   the configured ones when it equals one byte for byte; it is never trusted by itself.
//! - References to anything but the element that holds the signature, or to an ID that more
//!   than one element carries (signature wrapping moves the signed element and puts another
//!   one where the application reads; with this rule the verified element is exactly the
//!   signature's parent, and the caller reads only from the [`VerifiedElement`] returned).
//! - Several `SignedInfo`/`Reference` elements, other transforms (XPath, XSLT, inclusive
//!   C14N, `#WithComments`), HMAC and unknown algorithms; SHA-1 unless explicitly allowed.
//! - `DigestValue`/`SignatureValue` with comments or child elements inside (a reader that
//!   skips comments would see another value than the one that was digested).
//!
//! Why one long file: XML Signature Core 3.2's reference and signature validation, and the
//! structural checks that come before either, read best as one sequence.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use crate::crypto::{ct_eq, hex};
use crate::saml::c14n::{canonicalize, parse_prefix_list, C14nError, EXC_C14N, MAX_INCLUSIVE_PREFIXES};
use crate::saml::xml::{Document, IdLookup, NodeId, XmlError};

pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";

pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const RSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384";
pub const RSA_SHA512: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512";
pub const ECDSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256";

pub const SHA1: &str = "http://www.w3.org/2000/09/xmldsig#sha1";
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub const SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#sha384";
pub const SHA512: &str = "http://www.w3.org/2001/04/xmlenc#sha512";

/// RSA keys shorter than this are refused when a certificate is loaded.
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// Not PEM nor base64.
    Encoding,
    /// Not a DER X.509 certificate.
    Der(String),
    /// The subject public key is neither RSA nor EC P-256.
    UnsupportedKey,
    RsaKeyTooShort {
        bits: usize,
    },
}

impl fmt::Display for CertificateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateError::Encoding => f.write_str("certificate is neither PEM nor base64 DER"),
            CertificateError::Der(e) => write!(f, "certificate is not valid X.509 DER: {e}"),
            CertificateError::UnsupportedKey => f.write_str("certificate key is neither RSA nor EC P-256"),
            CertificateError::RsaKeyTooShort { bits } => {
                write!(f, "certificate RSA key has {bits} bits (at least {MIN_RSA_BITS} required)")
            }
        }
    }
}

impl std::error::Error for CertificateError {}

#[derive(Clone, Debug)]
enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// A configured IdP signing certificate: its DER bytes and the public key it carries.
/// Validity dates and issuer are not checked: the certificate is a container for a key the
/// operator chose to trust.
#[derive(Clone)]
pub struct IdpCertificate {
    der: Vec<u8>,
    key: PublicKey,
}

impl fmt::Debug for IdpCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpCertificate").field("sha256", &self.sha256_fingerprint()).finish()
    }
}

impl IdpCertificate {
    /// Loads a certificate given as PEM (`-----BEGIN CERTIFICATE-----`) or as bare base64 DER
    /// (as in IdP metadata), whitespace allowed anywhere.
    pub fn from_pem_or_base64(text: &str) -> Result<Self, CertificateError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let body = match text.find(BEGIN) {
            Some(start) => {
                let rest = text.get(start + BEGIN.len()..).unwrap_or_default();
                let end = rest.find(END).ok_or(CertificateError::Encoding)?;
                rest.get(..end).unwrap_or_default()
            }
            None => text,
        };
        let der = decode_base64(body).ok_or(CertificateError::Encoding)?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let cert = Certificate::from_der(der).map_err(|e| CertificateError::Der(e.to_string()))?;
        let spki =
            cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| CertificateError::Der(e.to_string()))?;
        let key = if let Ok(k) = RsaPublicKey::from_public_key_der(&spki) {
            let bits = k.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(CertificateError::RsaKeyTooShort { bits });
            }
            PublicKey::Rsa(k)
        } else if let Ok(k) = p256::PublicKey::from_public_key_der(&spki) {
            PublicKey::P256(p256::ecdsa::VerifyingKey::from(k))
        } else {
            return Err(CertificateError::UnsupportedKey);
        };
        Ok(Self { der: der.to_vec(), key })
    }

    /// Verifies a detached signature such as the HTTP-Redirect binding's query signature
    /// (bindings 3.4.4.1): RSA-SHA256/384/512 or ECDSA-SHA256 (DER or raw r||s). SHA-1 is
    /// refused.
    pub fn verify_detached(&self, sig_alg: &str, data: &[u8], signature: &[u8]) -> bool {
        use sha2::Digest;
        match (sig_alg, &self.key) {
            (RSA_SHA256, PublicKey::Rsa(k)) => {
                k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &sha2::Sha256::digest(data), signature).is_ok()
            }
            (RSA_SHA384, PublicKey::Rsa(k)) => {
                k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), &sha2::Sha384::digest(data), signature).is_ok()
            }
            (RSA_SHA512, PublicKey::Rsa(k)) => {
                k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), &sha2::Sha512::digest(data), signature).is_ok()
            }
            (ECDSA_SHA256, PublicKey::P256(k)) => {
                use p256::ecdsa::signature::Verifier;
                let sig = p256::ecdsa::Signature::from_slice(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_der(signature));
                sig.is_ok_and(|s| k.verify(data, &s).is_ok())
            }
            _ => false,
        }
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Hex SHA-256 of the DER, for logs and configuration checks.
    pub fn sha256_fingerprint(&self) -> String {
        hex(&Sha256::digest(&self.der))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DsigError {
    /// An element the profile requires is missing.
    Missing(&'static str),
    /// An element the profile does not allow here (or a second one where one is allowed).
    Unexpected(String),
    UnsupportedCanonicalization(String),
    UnsupportedSignatureMethod(String),
    UnsupportedDigestMethod(String),
    /// SHA-1 digest or signature while `legacy_sha1` is off.
    Sha1NotAllowed,
    /// Transforms other than exactly enveloped-signature followed by Exclusive C14N.
    UnsupportedTransforms(Vec<String>),
    /// `SignedInfo` holds a number of `Reference` elements other than one.
    ReferenceCount(usize),
    /// The reference URI is not a same-document `#ID`.
    ReferenceUri(String),
    /// The referenced ID is carried by no element.
    ReferenceNotFound(String),
    /// The referenced ID is carried by several elements.
    DuplicateId(String),
    /// The referenced element is not the one that contains the signature.
    ReferenceNotParent(String),
    InvalidBase64(&'static str),
    DigestMismatch,
    NoCertificates,
    /// No configured certificate has a key for the signature algorithm.
    NoKeyForAlgorithm(String),
    /// The signature value does not verify with any configured key.
    BadSignature,
    Xml(XmlError),
    C14n(C14nError),
}

impl fmt::Display for DsigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DsigError::*;
        match self {
            Missing(e) => write!(f, "signature lacks {e}"),
            Unexpected(e) => write!(f, "unexpected element {e:?} in signature"),
            UnsupportedCanonicalization(a) => write!(f, "canonicalization {a:?} is not supported"),
            UnsupportedSignatureMethod(a) => write!(f, "signature method {a:?} is not supported"),
            UnsupportedDigestMethod(a) => write!(f, "digest method {a:?} is not supported"),
            Sha1NotAllowed => f.write_str("SHA-1 signatures and digests are not allowed"),
            UnsupportedTransforms(t) => write!(f, "transforms {t:?} are not supported"),
            ReferenceCount(n) => write!(f, "signature has {n} references (exactly one required)"),
            ReferenceUri(u) => write!(f, "reference URI {u:?} is not a same-document ID reference"),
            ReferenceNotFound(id) => write!(f, "no element has the referenced ID {id:?}"),
            DuplicateId(id) => write!(f, "several elements have the ID {id:?}"),
            ReferenceNotParent(id) => write!(f, "referenced element {id:?} is not the signature's parent"),
            InvalidBase64(what) => write!(f, "{what} is not valid base64"),
            DigestMismatch => f.write_str("digest of the signed element does not match"),
            NoCertificates => f.write_str("no IdP certificate is configured"),
            NoKeyForAlgorithm(a) => write!(f, "no configured certificate has a key for {a:?}"),
            BadSignature => f.write_str("signature does not verify with any configured certificate"),
            Xml(e) => write!(f, "signature: {e}"),
            C14n(e) => write!(f, "signature: {e}"),
        }
    }
}

impl std::error::Error for DsigError {}

impl From<XmlError> for DsigError {
    fn from(e: XmlError) -> Self {
        DsigError::Xml(e)
    }
}

impl From<C14nError> for DsigError {
    fn from(e: C14nError) -> Self {
        DsigError::C14n(e)
    }
}

/// An element whose enveloped signature verified with a configured certificate. Only
/// [`verify_enveloped`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedElement {
    node: NodeId,
    certificate_index: usize,
}

impl VerifiedElement {
    /// The signed element (the signature's parent).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Index, in the configured list, of the certificate whose key verified the signature.
    pub fn certificate_index(&self) -> usize {
        self.certificate_index
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// The JWS name of RSA PKCS#1 v1.5 with this hash, as the signature port knows it.
    fn jws_rsa(self) -> Option<&'static str> {
        match self {
            Hash::Sha1 => None,
            Hash::Sha256 => Some("RS256"),
            Hash::Sha384 => Some("RS384"),
            Hash::Sha512 => Some("RS512"),
        }
    }

    /// DER prefix of the PKCS#1 v1.5 DigestInfo (RFC 8017 section 9.2, note 1).
    fn pkcs1v15(self) -> Pkcs1v15Sign {
        let (len, prefix): (usize, &[u8]) = match self {
            Hash::Sha1 => {
                (20, &[0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14])
            }
            Hash::Sha256 => (
                32,
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
                    0x00, 0x04, 0x20,
                ],
            ),
            Hash::Sha384 => (
                48,
                &[
                    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
                    0x00, 0x04, 0x30,
                ],
            ),
            Hash::Sha512 => (
                64,
                &[
                    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
                    0x00, 0x04, 0x40,
                ],
            ),
        };
        Pkcs1v15Sign { hash_len: Some(len), prefix: prefix.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureMethod {
    Rsa(Hash),
    EcdsaP256Sha256,
}

fn digest_method(uri: &str, legacy_sha1: bool) -> Result<Hash, DsigError> {
    match uri {
        SHA256 => Ok(Hash::Sha256),
        SHA384 => Ok(Hash::Sha384),
        SHA512 => Ok(Hash::Sha512),
        SHA1 if legacy_sha1 => Ok(Hash::Sha1),
        SHA1 => Err(DsigError::Sha1NotAllowed),
        other => Err(DsigError::UnsupportedDigestMethod(other.to_owned())),
    }
}

fn signature_method(uri: &str, legacy_sha1: bool) -> Result<SignatureMethod, DsigError> {
    match uri {
        RSA_SHA256 => Ok(SignatureMethod::Rsa(Hash::Sha256)),
        RSA_SHA384 => Ok(SignatureMethod::Rsa(Hash::Sha384)),
        RSA_SHA512 => Ok(SignatureMethod::Rsa(Hash::Sha512)),
        ECDSA_SHA256 => Ok(SignatureMethod::EcdsaP256Sha256),
        RSA_SHA1 if legacy_sha1 => Ok(SignatureMethod::Rsa(Hash::Sha1)),
        RSA_SHA1 => Err(DsigError::Sha1NotAllowed),
        other => Err(DsigError::UnsupportedSignatureMethod(other.to_owned())),
    }
}

/// Strict base64 (standard alphabet, canonical padding), XML whitespace ignored.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
    STANDARD.decode(clean).ok()
}

/// The element children of `id`, each required to be a `ds:` element; text (whitespace)
/// and comments between them are ignored.
fn ds_children(doc: &Document, id: NodeId) -> Result<Vec<(NodeId, String)>, DsigError> {
    let mut out = Vec::new();
    for c in doc.child_elements(id) {
        let el = doc.element(c).ok_or(DsigError::Missing("element"))?;
        if el.namespace.as_deref() != Some(DSIG_NS) {
            return Err(DsigError::Unexpected(el.qname()));
        }
        out.push((c, el.local.clone()));
    }
    Ok(out)
}

fn algorithm(doc: &Document, id: NodeId, what: &'static str) -> Result<String, DsigError> {
    doc.attribute(id, "Algorithm").map(str::to_owned).ok_or(DsigError::Missing(what))
}

/// Reads the optional `ec:InclusiveNamespaces` child of a canonicalization element; any other
/// child is refused.
fn inclusive_prefixes(doc: &Document, method: NodeId) -> Result<Vec<String>, DsigError> {
    let mut prefixes = Vec::new();
    let mut seen = false;
    for c in doc.child_elements(method) {
        if doc.is_element(c, EXC_C14N, "InclusiveNamespaces") && !seen {
            seen = true;
            prefixes = parse_prefix_list(doc.attribute(c, "PrefixList").unwrap_or_default());
            if prefixes.len() > MAX_INCLUSIVE_PREFIXES {
                return Err(DsigError::C14n(C14nError::TooManyPrefixes { max: MAX_INCLUSIVE_PREFIXES }));
            }
        } else {
            return Err(DsigError::Unexpected(doc.element(c).map(|e| e.qname()).unwrap_or_default()));
        }
    }
    Ok(prefixes)
}

fn qname(doc: &Document, id: NodeId) -> String {
    doc.element(id).map(|e| e.qname()).unwrap_or_default()
}

/// A signature whose every structural rule of the profile holds: what is left to do is
/// cryptography. [`verify_enveloped`] and the runtime's pre-check ([`port_checks`]) both
/// start here, so the runtime is never handed a signature the verifier would refuse.
struct CheckedSignature {
    /// The signature's parent, which its one reference names.
    signed: NodeId,
    signed_info: NodeId,
    sig_method: NodeId,
    key_info: Option<NodeId>,
    si_prefixes: Vec<String>,
    ref_prefixes: Vec<String>,
    method: SignatureMethod,
    digest_hash: Hash,
    digest_value: Vec<u8>,
    signature_bytes: Vec<u8>,
}

/// Every check of the profile on the signature's structure, algorithms and reference.
fn check_structure(doc: &Document, signature: NodeId, legacy_sha1: bool) -> Result<CheckedSignature, DsigError> {
    if !doc.is_element(signature, DSIG_NS, "Signature") {
        return Err(DsigError::Missing("ds:Signature"));
    }
    let signed = doc.parent(signature).ok_or(DsigError::Missing("a signed parent element"))?;

    // Signature (XML-DSig 4.1): SignedInfo, SignatureValue, KeyInfo?, Object*, in this order.
    let kids = ds_children(doc, signature)?;
    let mut it = kids.iter();
    let signed_info = match it.next() {
        Some((n, l)) if l == "SignedInfo" => *n,
        _ => return Err(DsigError::Missing("ds:SignedInfo")),
    };
    let signature_value = match it.next() {
        Some((n, l)) if l == "SignatureValue" => *n,
        _ => return Err(DsigError::Missing("ds:SignatureValue")),
    };
    let mut key_info = None;
    for (n, l) in it {
        match l.as_str() {
            "KeyInfo" if key_info.is_none() => key_info = Some(*n),
            "Object" => {}
            _ => return Err(DsigError::Unexpected(qname(doc, *n))),
        }
    }

    // SignedInfo (4.4): CanonicalizationMethod, SignatureMethod, Reference+ (exactly one here).
    let si = ds_children(doc, signed_info)?;
    let (c14n_method, sig_method) = match (si.first(), si.get(1)) {
        (Some((c, cl)), Some((s, sl))) if cl == "CanonicalizationMethod" && sl == "SignatureMethod" => (*c, *s),
        _ => return Err(DsigError::Missing("ds:CanonicalizationMethod and ds:SignatureMethod")),
    };
    let refs: Vec<NodeId> = si.iter().skip(2).map(|(n, _)| *n).collect();
    if let Some((n, _)) = si.iter().skip(2).find(|(_, l)| l != "Reference") {
        return Err(DsigError::Unexpected(qname(doc, *n)));
    }
    let [reference] = refs[..] else {
        return Err(DsigError::ReferenceCount(refs.len()));
    };

    let c14n_alg = algorithm(doc, c14n_method, "CanonicalizationMethod/@Algorithm")?;
    if c14n_alg != EXC_C14N {
        return Err(DsigError::UnsupportedCanonicalization(c14n_alg));
    }
    let si_prefixes = inclusive_prefixes(doc, c14n_method)?;
    let method = signature_method(&algorithm(doc, sig_method, "SignatureMethod/@Algorithm")?, legacy_sha1)?;
    // No parameters (HMACOutputLength and the like) are accepted on the signature method.
    if let Some(c) = doc.child_elements(sig_method).next() {
        return Err(DsigError::Unexpected(qname(doc, c)));
    }

    // Reference (4.4.3): URI="#ID" naming the signature's parent, and that ID unique.
    let uri = doc.attribute(reference, "URI").ok_or(DsigError::Missing("Reference/@URI"))?;
    let id =
        uri.strip_prefix('#').filter(|id| !id.is_empty()).ok_or_else(|| DsigError::ReferenceUri(uri.to_owned()))?;
    match doc.find_by_id(id) {
        IdLookup::NotFound => return Err(DsigError::ReferenceNotFound(id.to_owned())),
        IdLookup::Duplicate => return Err(DsigError::DuplicateId(id.to_owned())),
        IdLookup::Found(target) if target != signed => return Err(DsigError::ReferenceNotParent(id.to_owned())),
        IdLookup::Found(_) => {}
    }

    // Transforms (4.4.3.4 / 6.6): exactly enveloped-signature, then Exclusive C14N.
    let rk = ds_children(doc, reference)?;
    let (transforms, digest_method_el, digest_value_el) = match &rk[..] {
        [(t, tl), (m, ml), (v, vl)] if tl == "Transforms" && ml == "DigestMethod" && vl == "DigestValue" => {
            (*t, *m, *v)
        }
        _ => return Err(DsigError::Missing("ds:Transforms, ds:DigestMethod and ds:DigestValue")),
    };
    let mut algs = Vec::new();
    let mut ref_prefixes = Vec::new();
    for (t, tl) in ds_children(doc, transforms)? {
        if tl != "Transform" {
            return Err(DsigError::Unexpected(qname(doc, t)));
        }
        let alg = algorithm(doc, t, "Transform/@Algorithm")?;
        if alg == EXC_C14N {
            ref_prefixes = inclusive_prefixes(doc, t)?;
        } else if let Some(c) = doc.child_elements(t).next() {
            return Err(DsigError::Unexpected(qname(doc, c)));
        }
        algs.push(alg);
        if algs.len() > 2 {
            break;
        }
    }
    if algs != [ENVELOPED_SIGNATURE, EXC_C14N] {
        return Err(DsigError::UnsupportedTransforms(algs));
    }
    let digest_hash = digest_method(&algorithm(doc, digest_method_el, "DigestMethod/@Algorithm")?, legacy_sha1)?;
    // No parameters on the digest method either.
    if let Some(c) = doc.child_elements(digest_method_el).next() {
        return Err(DsigError::Unexpected(qname(doc, c)));
    }
    let digest_value = decode_base64(&doc.text(digest_value_el)?).ok_or(DsigError::InvalidBase64("DigestValue"))?;
    let signature_bytes =
        decode_base64(&doc.text(signature_value)?).ok_or(DsigError::InvalidBase64("SignatureValue"))?;
    Ok(CheckedSignature {
        signed,
        signed_info,
        sig_method,
        key_info,
        si_prefixes,
        ref_prefixes,
        method,
        digest_hash,
        digest_value,
        signature_bytes,
    })
}

/// Verifies the enveloped signature `signature` (a `ds:Signature` element) with the
/// configured certificates and returns the element it covers: the signature's parent.
pub fn verify_enveloped(
    doc: &Document,
    signature: NodeId,
    certs: &[IdpCertificate],
    legacy_sha1: bool,
) -> Result<VerifiedElement, DsigError> {
    if certs.is_empty() {
        return Err(DsigError::NoCertificates);
    }
    let CheckedSignature {
        signed,
        signed_info,
        sig_method,
        key_info,
        si_prefixes,
        ref_prefixes,
        method,
        digest_hash,
        digest_value,
        signature_bytes,
    } = check_structure(doc, signature, legacy_sha1)?;

    // Core validation 3.2.2: the signature over the canonical SignedInfo, with a configured
    // key. A KeyInfo certificate only narrows the choice when it is one of the configured.
    let signed_info_c14n = canonicalize(doc, signed_info, &si_prefixes, None)?;
    let candidates: Vec<usize> = match key_info.and_then(|k| key_info_certificate(doc, k, certs)) {
        Some(i) => vec![i],
        None => (0..certs.len()).collect(),
    };
    let mut any_key = false;
    let mut verified_by = None;
    for i in candidates {
        let Some(cert) = certs.get(i) else { continue };
        // A check the runtime's crypto already passed for these exact bytes and this key
        // (see `check_with_port`) stands; otherwise the pure-Rust verification decides.
        let by_port =
            |alg| any_port_verdict() && port_verified(&port_token(cert, alg, &signed_info_c14n, &signature_bytes));
        let ok = match (method, &cert.key) {
            (SignatureMethod::Rsa(h), PublicKey::Rsa(k)) => {
                any_key = true;
                h.jws_rsa().is_some_and(by_port)
                    || k.verify(h.pkcs1v15(), &h.digest(&signed_info_c14n), &signature_bytes).is_ok()
            }
            (SignatureMethod::EcdsaP256Sha256, PublicKey::P256(k)) => {
                any_key = true;
                // XML-DSig 1.1 6.4.3: the value is r || s, each 32 bytes for P-256.
                by_port("ES256")
                    || p256::ecdsa::Signature::from_slice(&signature_bytes)
                        .map(|s| k.verify(&signed_info_c14n, &s).is_ok())
                        .unwrap_or(false)
            }
            _ => false,
        };
        if ok {
            verified_by = Some(i);
            break;
        }
    }
    let Some(certificate_index) = verified_by else {
        if !any_key {
            let alg = algorithm(doc, sig_method, "SignatureMethod/@Algorithm")?;
            return Err(DsigError::NoKeyForAlgorithm(alg));
        }
        return Err(DsigError::BadSignature);
    };

    // Core validation 3.2.1: the digest of the canonical signed element, without this
    // signature, compared in constant time.
    let content = canonicalize(doc, signed, &ref_prefixes, Some(signature))?;
    if !ct_eq(&digest_hash.digest(&content), &digest_value) {
        return Err(DsigError::DigestMismatch);
    }
    Ok(VerifiedElement { node: signed, certificate_index })
}

/// Index of the configured certificate equal to one in `KeyInfo/X509Data/X509Certificate`.
fn key_info_certificate(doc: &Document, key_info: NodeId, certs: &[IdpCertificate]) -> Option<usize> {
    for data in doc.children_named(key_info, DSIG_NS, "X509Data") {
        for c in doc.children_named(data, DSIG_NS, "X509Certificate") {
            let Some(der) = doc.text(c).ok().and_then(|t| decode_base64(&t)) else { continue };
            if let Some(i) = certs.iter().position(|k| k.der == der) {
                return Some(i);
            }
        }
    }
    None
}

// -----------------------------------------------------------------------------------------
// The runtime's crypto (WebCrypto in Workers) for the signature over SignedInfo
// -----------------------------------------------------------------------------------------

/// Most signatures per document handed to the signature port (a Response and its
/// assertion have two); any others are left to the pure-Rust verification.
const MAX_PORT_SIGNATURES: usize = 4;
/// Port verdicts remembered per isolate (one or two per sign-in, consumed at once).
const MAX_PORT_VERDICTS: usize = 64;

thread_local! {
    /// Tokens of (certificate, algorithm, canonical SignedInfo, signature) that the
    /// signature port verified. Only positive verdicts are kept: each is a fact about those
    /// exact bytes, true whenever it is read, so the cache can never make a signature pass
    /// that would not verify.
    static PORT_VERIFIED: std::cell::RefCell<Vec<[u8; 32]>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn port_token(cert: &IdpCertificate, alg: &str, signed: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [&cert.der[..], alg.as_bytes(), signed, signature] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// Whether any verdict is held (without one, no token needs computing).
fn any_port_verdict() -> bool {
    PORT_VERIFIED.with(|v| !v.borrow().is_empty())
}

fn port_verified(token: &[u8; 32]) -> bool {
    PORT_VERIFIED.with(|v| v.borrow().iter().any(|t| t == token))
}

/// One signature check for the runtime's crypto: the canonical `SignedInfo` of a
/// signature in the document, with one configured key that could have made it.
#[derive(Debug, Clone)]
pub struct PortCheck {
    pub alg: &'static str,
    pub jwk: serde_json::Value,
    pub signed: Vec<u8>,
    pub signature: Vec<u8>,
    token: [u8; 32],
}

fn public_jwk(key: &PublicKey) -> serde_json::Value {
    use crate::crypto::b64url;
    match key {
        PublicKey::Rsa(k) => {
            serde_json::json!({"kty": "RSA", "n": b64url(&k.n().to_bytes_be()), "e": b64url(&k.e().to_bytes_be())})
        }
        PublicKey::P256(k) => {
            let point = k.to_encoded_point(false);
            let coordinate = |c: Option<&p256::FieldBytes>| c.map(|c| b64url(c)).unwrap_or_default();
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": coordinate(point.x()), "y": coordinate(point.y())})
        }
    }
}

/// The signature checks the runtime's crypto can do ahead of [`verify_enveloped`]: for each
/// of `signatures` (the ones the caller will verify, at most [`MAX_PORT_SIGNATURES`]) that
/// passes every structural check [`verify_enveloped`] makes, its canonical `SignedInfo`
/// with every configured key of the right type (or the one `KeyInfo` names). Nothing is
/// decided here: a signature refused here yields no check and is refused by
/// [`verify_enveloped`] with its reason.
pub fn port_checks(doc: &Document, signatures: &[NodeId], certs: &[IdpCertificate]) -> Vec<PortCheck> {
    let mut out = Vec::new();
    for sig in signatures.iter().take(MAX_PORT_SIGNATURES) {
        // SHA-1 is never handed over: it stays behind the legacy flag, in Rust.
        let Ok(checked) = check_structure(doc, *sig, false) else { continue };
        let Ok(signed) = canonicalize(doc, checked.signed_info, &checked.si_prefixes, None) else { continue };
        let signature = checked.signature_bytes;
        let candidates: Vec<usize> = match checked.key_info.and_then(|k| key_info_certificate(doc, k, certs)) {
            Some(i) => vec![i],
            None => (0..certs.len()).collect(),
        };
        for cert in candidates.into_iter().filter_map(|i| certs.get(i)) {
            let alg = match (checked.method, &cert.key) {
                (SignatureMethod::Rsa(h), PublicKey::Rsa(_)) => h.jws_rsa(),
                (SignatureMethod::EcdsaP256Sha256, PublicKey::P256(_)) => Some("ES256"),
                _ => None,
            };
            let Some(alg) = alg else { continue };
            let token = port_token(cert, alg, &signed, &signature);
            out.push(PortCheck {
                alg,
                jwk: public_jwk(&cert.key),
                signed: signed.clone(),
                signature: signature.clone(),
                token,
            });
        }
    }
    out
}

/// Forgets the port's verdicts (the benchmark route measures each run in full).
#[cfg(feature = "bench")]
pub fn forget_port_verdicts() {
    PORT_VERIFIED.with(|v| v.borrow_mut().clear());
}

/// Runs the checks with the runtime's signature port and remembers those that passed, so
/// that [`verify_enveloped`] does not repeat them in wasm. A check the port cannot do or
/// refuses leaves the decision to the pure-Rust verification.
pub async fn check_with_port(verifier: &dyn crate::ports::SignatureVerifier, checks: Vec<PortCheck>) {
    for c in checks {
        if port_verified(&c.token) {
            continue;
        }
        if verifier.verify(c.alg, &c.jwk, &c.signed, &c.signature).await == Some(true) {
            PORT_VERIFIED.with(|v| {
                let mut v = v.borrow_mut();
                if v.len() >= MAX_PORT_VERDICTS {
                    v.clear();
                }
                v.push(c.token);
            });
        }
    }
}
