//! Decryption of one encrypted element (XML Encryption Syntax and Processing 1.1), restricted
//! to what SAML 2.0 uses (saml-core 6): an `EncryptedData` of `Type` Element inside a container
//! such as `saml:EncryptedAssertion`, its content key carried by an `EncryptedKey` for the SP's
//! RSA key.
//!
//! Supported:
//! - key transport `xmlenc#rsa-oaep-mgf1p` (MGF1 with SHA-1, digest SHA-1 unless a
//!   `ds:DigestMethod` names another) and `xmlenc11#rsa-oaep` (`ds:DigestMethod` and
//!   `xenc11:MGF`, both SHA-1 by default);
//! - content encryption `aes128-gcm`/`aes256-gcm` (12-byte IV before the ciphertext, 16-byte tag
//!   after it) and `aes128-cbc`/`aes256-cbc` (16-byte IV, XML Encryption padding);
//! - the `EncryptedKey` inside `EncryptedData/ds:KeyInfo`, named there by a
//!   `ds:RetrievalMethod` to a sibling `EncryptedKey` of the `EncryptedData`, or, when the
//!   `KeyInfo` holds neither, the sibling `EncryptedKey` elements themselves.
//!
//! Refused: `rsa-1_5` key transport (Bleichenbacher's attack recovers the content key from the
//! error or timing differences of PKCS#1 v1.5 unpadding), key wrapping and agreement,
//! `CipherReference`, and every other algorithm.
//!
//! What a failure says: problems visible in the message before the private key is used
//! (structure, algorithms, base64) are reported precisely. Everything after that (RSA-OAEP
//! unwrapping, the content key's length, the GCM tag, CBC padding, and whether the plaintext is
//! exactly one expected element) gives the one [`XmlEncError::DecryptionFailed`], so a sender
//! of modified ciphertexts cannot tell a padding failure from a parse failure (the CBC padding
//! oracle of Jager and Somorovsky, "How to Break XML Encryption", 2011).
//!
//! The decrypted element is put back into the document text in place of its container and the
//! whole document is parsed again by [`Document::parse`] with the caller's limits, so every
//! later step reads one tree built by one parser.
//!
//! Why one long file: decryption (key transport, then the block cipher) is one path through
//! XML Encryption 1.1; about 50 of its lines are tests.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::cipher::consts::U16;
use aes_gcm::aes::cipher::{Block, BlockDecrypt, BlockSizeUser};
use aes_gcm::aes::{Aes128, Aes256};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use quick_xml::events::Event;
use quick_xml::Reader;
use rsa::rand_core::{self, CryptoRng, RngCore};
use rsa::traits::PrivateKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use sha1::Sha1;
use sha2::digest::DynDigest;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::saml::dsig::{DSIG_NS, SHA1, SHA256, SHA384, SHA512};
use crate::saml::xml::{Document, NodeData, NodeId, XmlError, XmlLimits};

pub const XMLENC_NS: &str = "http://www.w3.org/2001/04/xmlenc#";
pub const XMLENC11_NS: &str = "http://www.w3.org/2009/xmlenc11#";
/// `EncryptedData/@Type` of an encrypted element.
pub const TYPE_ELEMENT: &str = "http://www.w3.org/2001/04/xmlenc#Element";
/// `ds:RetrievalMethod/@Type` naming an `EncryptedKey`.
pub const TYPE_ENCRYPTED_KEY: &str = "http://www.w3.org/2001/04/xmlenc#EncryptedKey";

pub const RSA_OAEP_MGF1P: &str = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p";
pub const RSA_OAEP: &str = "http://www.w3.org/2009/xmlenc11#rsa-oaep";
pub const RSA_1_5: &str = "http://www.w3.org/2001/04/xmlenc#rsa-1_5";

pub const MGF1_SHA1: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha1";
pub const MGF1_SHA256: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha256";
pub const MGF1_SHA384: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha384";
pub const MGF1_SHA512: &str = "http://www.w3.org/2009/xmlenc11#mgf1sha512";

pub const AES128_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes128-gcm";
pub const AES256_GCM: &str = "http://www.w3.org/2009/xmlenc11#aes256-gcm";
pub const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
pub const AES256_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";

/// Most `EncryptedKey` candidates tried for one `EncryptedData` (one per recipient).
pub const MAX_ENCRYPTED_KEYS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlEncError {
    /// An element or attribute the syntax requires is missing.
    Missing(&'static str),
    /// An element not allowed here (or a second one where one is allowed).
    Unexpected(String),
    /// `EncryptedData/@Type` is not Element.
    UnsupportedType(String),
    UnsupportedContentAlgorithm(String),
    UnsupportedKeyTransport(String),
    /// `rsa-1_5` key transport, refused.
    RsaPkcs1v15Refused,
    UnsupportedDigest(String),
    UnsupportedMgf(String),
    /// `OAEPparams` that are not UTF-8 text.
    UnsupportedOaepParams,
    /// The cipher data is referenced rather than included.
    CipherReference,
    InvalidBase64(&'static str),
    /// A `ds:RetrievalMethod` that names no sibling `EncryptedKey` (or several).
    KeyReference(String),
    TooManyKeys(usize),
    /// The one answer for anything that depends on the private key or on the plaintext: no
    /// key unwraps, wrong content key length, bad tag, bad padding, or a plaintext that is not
    /// exactly one expected element (parsed under the caller's limits).
    DecryptionFailed,
    /// The document with the decrypted element in place does not parse under the limits.
    Xml(XmlError),
}

impl fmt::Display for XmlEncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use XmlEncError::*;
        match self {
            Missing(e) => write!(f, "encrypted element lacks {e}"),
            Unexpected(e) => write!(f, "unexpected element {e:?} in encrypted element"),
            UnsupportedType(t) => write!(f, "EncryptedData type {t:?} is not Element"),
            UnsupportedContentAlgorithm(a) => write!(f, "content encryption {a:?} is not supported"),
            UnsupportedKeyTransport(a) => write!(f, "key transport {a:?} is not supported"),
            RsaPkcs1v15Refused => f.write_str(
                "RSA PKCS#1 v1.5 key transport (rsa-1_5) is refused as open to Bleichenbacher's attack; \
                 the IdP must use RSA-OAEP",
            ),
            UnsupportedDigest(a) => write!(f, "OAEP digest {a:?} is not supported"),
            UnsupportedMgf(a) => write!(f, "OAEP mask generation function {a:?} is not supported"),
            UnsupportedOaepParams => f.write_str("OAEPparams that are not UTF-8 are not supported"),
            CipherReference => f.write_str("CipherReference is not supported (cipher data must be included)"),
            InvalidBase64(what) => write!(f, "{what} is not valid base64"),
            KeyReference(uri) => write!(f, "RetrievalMethod {uri:?} names no single EncryptedKey beside the data"),
            TooManyKeys(n) => write!(f, "{n} EncryptedKey candidates (at most {MAX_ENCRYPTED_KEYS})"),
            DecryptionFailed => f.write_str("the encrypted element could not be decrypted with the SP key"),
            Xml(e) => write!(f, "decrypted document: {e}"),
        }
    }
}

impl std::error::Error for XmlEncError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn boxed(self) -> Box<dyn DynDigest + Send + Sync> {
        match self {
            Hash::Sha1 => Box::new(Sha1::new()),
            Hash::Sha256 => Box::new(Sha256::new()),
            Hash::Sha384 => Box::new(Sha384::new()),
            Hash::Sha512 => Box::new(Sha512::new()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentAlgorithm {
    Aes128Gcm,
    Aes256Gcm,
    Aes128Cbc,
    Aes256Cbc,
}

impl ContentAlgorithm {
    fn from_uri(uri: &str) -> Result<Self, XmlEncError> {
        match uri {
            AES128_GCM => Ok(Self::Aes128Gcm),
            AES256_GCM => Ok(Self::Aes256Gcm),
            AES128_CBC => Ok(Self::Aes128Cbc),
            AES256_CBC => Ok(Self::Aes256Cbc),
            other => Err(XmlEncError::UnsupportedContentAlgorithm(other.to_owned())),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm | Self::Aes128Cbc => 16,
            Self::Aes256Gcm | Self::Aes256Cbc => 32,
        }
    }

    /// The plaintext, or `None` on any failure (never more detail than that).
    fn decrypt(self, key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        if key.len() != self.key_len() {
            return None;
        }
        match self {
            Self::Aes128Gcm => gcm_decrypt(&Aes128Gcm::new_from_slice(key).ok()?, data),
            Self::Aes256Gcm => gcm_decrypt(&Aes256Gcm::new_from_slice(key).ok()?, data),
            Self::Aes128Cbc => cbc_decrypt(&Aes128::new_from_slice(key).ok()?, data),
            Self::Aes256Cbc => cbc_decrypt(&Aes256::new_from_slice(key).ok()?, data),
        }
    }
}

/// XML Encryption 1.1 5.2.4: IV (12 bytes) || ciphertext || tag (16 bytes), no additional data.
fn gcm_decrypt<A: Aead<NonceSize = aes_gcm::aead::consts::U12>>(cipher: &A, data: &[u8]) -> Option<Vec<u8>> {
    let (iv, rest) = data.split_at_checked(12)?;
    if rest.len() < 16 {
        return None;
    }
    let iv: [u8; 12] = iv.try_into().ok()?;
    cipher.decrypt(&iv.into(), rest).ok()
}

/// XML Encryption 1.1 5.2.1 and 5.2.2: IV (16 bytes) || CBC ciphertext; the last plaintext byte
/// is the number of padding bytes (1 to 16), whose other values are arbitrary.
fn cbc_decrypt<C: BlockDecrypt + BlockSizeUser<BlockSize = U16>>(cipher: &C, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 32 || !data.len().is_multiple_of(16) {
        return None;
    }
    let (iv, body) = data.split_at_checked(16)?;
    let mut previous: [u8; 16] = iv.try_into().ok()?;
    let mut out = Vec::with_capacity(body.len());
    for chunk in body.chunks_exact(16) {
        let block_bytes: [u8; 16] = chunk.try_into().ok()?;
        let mut block: Block<C> = block_bytes.into();
        cipher.decrypt_block(&mut block);
        out.extend(block.iter().zip(previous.iter()).map(|(b, p)| b ^ p));
        previous = block_bytes;
    }
    let pad = usize::from(*out.last()?);
    if pad == 0 || pad > 16 {
        return None;
    }
    out.truncate(out.len().saturating_sub(pad));
    Some(out)
}

/// An `EncryptedKey` for RSA-OAEP, read before the private key is used.
struct KeyTransport {
    digest: Hash,
    mgf: Hash,
    label: Option<String>,
    cipher: Vec<u8>,
}

impl KeyTransport {
    fn unwrap_key(&self, key: &RsaPrivateKey) -> Option<Vec<u8>> {
        let padding = Oaep { digest: self.digest.boxed(), mgf_digest: self.mgf.boxed(), label: self.label.clone() };
        let mut rng = BlindingRng::new(key, &self.cipher);
        key.decrypt_blinded(&mut rng, padding, &self.cipher).ok()
    }
}

/// Randomness for RSA blinding without an I/O source: SHA-256 in counter mode over a seed
/// derived from the private exponent and the ciphertext. The blinding factor is then
/// unpredictable to anyone without the private key, which is what blinding needs, and the
/// core stays free of I/O.
struct BlindingRng {
    seed: [u8; 32],
    counter: u64,
}

impl BlindingRng {
    fn new(key: &RsaPrivateKey, ciphertext: &[u8]) -> Self {
        let seed = Sha256::new()
            .chain_update(b"portcullis xmlenc rsa blinding\0")
            .chain_update(key.d().to_bytes_be())
            .chain_update(ciphertext)
            .finalize()
            .into();
        Self { seed, counter: 0 }
    }
}

impl RngCore for BlindingRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let block = Sha256::new().chain_update(self.seed).chain_update(self.counter.to_be_bytes()).finalize();
            self.counter = self.counter.wrapping_add(1);
            for (d, s) in chunk.iter_mut().zip(block.iter()) {
                *d = *s;
            }
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for BlindingRng {}

/// Strict base64 (standard alphabet, canonical padding), XML whitespace ignored.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let clean: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n')).collect();
    STANDARD.decode(clean).ok()
}

fn qname(doc: &Document, id: NodeId) -> String {
    doc.element(id).map(|e| e.qname()).unwrap_or_default()
}

/// The only child of `parent` with this name, if any; a second one is refused.
fn only_child(doc: &Document, parent: NodeId, ns: &str, local: &str) -> Result<Option<NodeId>, XmlEncError> {
    let mut it = doc.children_named(parent, ns, local);
    let first = it.next();
    if let Some(second) = it.next() {
        return Err(XmlEncError::Unexpected(qname(doc, second)));
    }
    Ok(first)
}

/// `CipherData/CipherValue`, decoded.
fn cipher_value(doc: &Document, parent: NodeId, what: &'static str) -> Result<Vec<u8>, XmlEncError> {
    let data = only_child(doc, parent, XMLENC_NS, "CipherData")?.ok_or(XmlEncError::Missing("xenc:CipherData"))?;
    if doc.children_named(data, XMLENC_NS, "CipherReference").next().is_some() {
        return Err(XmlEncError::CipherReference);
    }
    let value = only_child(doc, data, XMLENC_NS, "CipherValue")?.ok_or(XmlEncError::Missing("xenc:CipherValue"))?;
    let text = doc.text(value).map_err(XmlEncError::Xml)?;
    decode_base64(&text).ok_or(XmlEncError::InvalidBase64(what))
}

fn digest_method(uri: &str) -> Result<Hash, XmlEncError> {
    match uri {
        SHA1 => Ok(Hash::Sha1),
        SHA256 => Ok(Hash::Sha256),
        SHA384 => Ok(Hash::Sha384),
        SHA512 => Ok(Hash::Sha512),
        other => Err(XmlEncError::UnsupportedDigest(other.to_owned())),
    }
}

fn mgf_method(uri: &str) -> Result<Hash, XmlEncError> {
    match uri {
        MGF1_SHA1 => Ok(Hash::Sha1),
        MGF1_SHA256 => Ok(Hash::Sha256),
        MGF1_SHA384 => Ok(Hash::Sha384),
        MGF1_SHA512 => Ok(Hash::Sha512),
        other => Err(XmlEncError::UnsupportedMgf(other.to_owned())),
    }
}

fn algorithm<'d>(doc: &'d Document, id: NodeId, what: &'static str) -> Result<&'d str, XmlEncError> {
    doc.attribute(id, "Algorithm").ok_or(XmlEncError::Missing(what))
}

/// Reads an `EncryptedKey` (XML Encryption 1.1 3.5.1) with its OAEP parameters (5.5.2).
fn key_transport(doc: &Document, encrypted_key: NodeId) -> Result<KeyTransport, XmlEncError> {
    let method = only_child(doc, encrypted_key, XMLENC_NS, "EncryptionMethod")?
        .ok_or(XmlEncError::Missing("EncryptedKey/EncryptionMethod"))?;
    let xenc11 = match algorithm(doc, method, "EncryptedKey/EncryptionMethod/@Algorithm")? {
        RSA_OAEP_MGF1P => false,
        RSA_OAEP => true,
        RSA_1_5 => return Err(XmlEncError::RsaPkcs1v15Refused),
        other => return Err(XmlEncError::UnsupportedKeyTransport(other.to_owned())),
    };
    let (mut digest, mut mgf, mut label) = (None, None, None);
    for c in doc.child_elements(method) {
        if doc.is_element(c, DSIG_NS, "DigestMethod") && digest.is_none() {
            digest = Some(digest_method(algorithm(doc, c, "DigestMethod/@Algorithm")?)?);
        } else if xenc11 && doc.is_element(c, XMLENC11_NS, "MGF") && mgf.is_none() {
            mgf = Some(mgf_method(algorithm(doc, c, "MGF/@Algorithm")?)?);
        } else if doc.is_element(c, XMLENC_NS, "OAEPparams") && label.is_none() {
            let bytes = decode_base64(&doc.text(c).map_err(XmlEncError::Xml)?)
                .ok_or(XmlEncError::InvalidBase64("OAEPparams"))?;
            label = Some(String::from_utf8(bytes).map_err(|_| XmlEncError::UnsupportedOaepParams)?);
        } else if !doc.is_element(c, XMLENC_NS, "KeySize") {
            return Err(XmlEncError::Unexpected(qname(doc, c)));
        }
    }
    Ok(KeyTransport {
        digest: digest.unwrap_or(Hash::Sha1),
        // rsa-oaep-mgf1p is MGF1 with SHA-1 whatever the digest; rsa-oaep names its MGF.
        mgf: mgf.unwrap_or(Hash::Sha1),
        label: label.filter(|l| !l.is_empty()),
        cipher: cipher_value(doc, encrypted_key, "EncryptedKey CipherValue")?,
    })
}

/// The `EncryptedKey` elements that may hold the content key, most specific first.
fn candidate_keys(doc: &Document, data: NodeId, siblings: &[NodeId]) -> Result<Vec<NodeId>, XmlEncError> {
    let mut out = Vec::new();
    if let Some(key_info) = only_child(doc, data, DSIG_NS, "KeyInfo")? {
        for c in doc.child_elements(key_info) {
            if out.len() >= MAX_ENCRYPTED_KEYS
                && (doc.is_element(c, XMLENC_NS, "EncryptedKey") || doc.is_element(c, DSIG_NS, "RetrievalMethod"))
            {
                return Err(XmlEncError::TooManyKeys(out.len() + 1));
            }
            if doc.is_element(c, XMLENC_NS, "EncryptedKey") {
                out.push(c);
            } else if doc.is_element(c, DSIG_NS, "RetrievalMethod") {
                let uri = doc.attribute(c, "URI").ok_or(XmlEncError::Missing("RetrievalMethod/@URI"))?;
                let bad = || XmlEncError::KeyReference(uri.to_owned());
                if doc.attribute(c, "Type").is_some_and(|t| t != TYPE_ENCRYPTED_KEY) {
                    return Err(bad());
                }
                if let Some(t) = doc.child_elements(c).next() {
                    return Err(XmlEncError::Unexpected(qname(doc, t)));
                }
                let id = uri.strip_prefix('#').filter(|id| !id.is_empty()).ok_or_else(bad)?;
                let mut found = siblings.iter().filter(|k| doc.attribute(**k, "Id") == Some(id));
                match (found.next(), found.next()) {
                    (Some(k), None) => out.push(*k),
                    _ => return Err(bad()),
                }
            }
            // KeyName, X509Data and the like only name the SP key, which is the configured one.
        }
    }
    if out.is_empty() {
        out = siblings.to_vec();
    }
    if out.is_empty() {
        return Err(XmlEncError::Missing("xenc:EncryptedKey"));
    }
    if out.len() > MAX_ENCRYPTED_KEYS {
        return Err(XmlEncError::TooManyKeys(out.len()));
    }
    Ok(out)
}

/// Decrypts the `xenc:EncryptedData` child of `container` (whose other children may only be
/// `xenc:EncryptedKey` elements) and returns the plaintext bytes.
pub fn decrypt_element(doc: &Document, container: NodeId, key: &RsaPrivateKey) -> Result<Vec<u8>, XmlEncError> {
    let mut data = None;
    let mut siblings = Vec::new();
    for c in doc.child_elements(container) {
        if doc.is_element(c, XMLENC_NS, "EncryptedData") && data.is_none() {
            data = Some(c);
        } else if doc.is_element(c, XMLENC_NS, "EncryptedKey") {
            // Counted as found: every later step looks through the siblings.
            if siblings.len() >= MAX_ENCRYPTED_KEYS {
                return Err(XmlEncError::TooManyKeys(siblings.len() + 1));
            }
            siblings.push(c);
        } else {
            return Err(XmlEncError::Unexpected(qname(doc, c)));
        }
    }
    let data = data.ok_or(XmlEncError::Missing("xenc:EncryptedData"))?;
    if let Some(t) = doc.attribute(data, "Type") {
        if t != TYPE_ELEMENT {
            return Err(XmlEncError::UnsupportedType(t.to_owned()));
        }
    }
    let method =
        only_child(doc, data, XMLENC_NS, "EncryptionMethod")?.ok_or(XmlEncError::Missing("xenc:EncryptionMethod"))?;
    let content = ContentAlgorithm::from_uri(algorithm(doc, method, "EncryptionMethod/@Algorithm")?)?;
    if let Some(c) = doc.child_elements(method).find(|c| !doc.is_element(*c, XMLENC_NS, "KeySize")) {
        return Err(XmlEncError::Unexpected(qname(doc, c)));
    }
    let ciphertext = cipher_value(doc, data, "EncryptedData CipherValue")?;
    // Every candidate is read (and its algorithm checked) before the private key is used.
    let transports = candidate_keys(doc, data, &siblings)?
        .into_iter()
        .map(|k| key_transport(doc, k))
        .collect::<Result<Vec<_>, _>>()?;
    let session_key = transports.iter().find_map(|t| t.unwrap_key(key)).ok_or(XmlEncError::DecryptionFailed)?;
    content.decrypt(&session_key, &ciphertext).ok_or(XmlEncError::DecryptionFailed)
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// An attribute value with the characters that would change it escaped.
fn escape_attribute(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

fn namespace_attributes(decls: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (prefix, uri) in decls {
        if prefix.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            out.push_str(" xmlns:");
            out.push_str(prefix);
            out.push_str("=\"");
        }
        out.push_str(&escape_attribute(uri));
        out.push('"');
    }
    out
}

/// The byte range, in `source`, of the `index`-th child element of the document element.
/// `source` must be the text `Document::parse` accepted (after any byte order mark).
fn child_element_span(source: &str, index: usize) -> Option<(usize, usize)> {
    let mut reader = Reader::from_str(source);
    let cfg = reader.config_mut();
    cfg.check_comments = true;
    cfg.check_end_names = true;
    cfg.allow_unmatched_ends = false;
    cfg.expand_empty_elements = false;
    cfg.trim_text(false);
    let mut depth = 0usize;
    let mut seen = 0usize;
    let mut start = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let event = reader.read_event().ok()?;
        let after = usize::try_from(reader.buffer_position()).ok()?;
        match event {
            Event::Start(_) => {
                if depth == 1 {
                    if seen == index {
                        start = Some(before);
                    }
                    seen += 1;
                }
                depth += 1;
            }
            Event::Empty(_) if depth == 1 => {
                if seen == index {
                    return Some((before, after));
                }
                seen += 1;
            }
            Event::End(_) => {
                depth = depth.checked_sub(1)?;
                if depth == 1 {
                    if let Some(s) = start {
                        return Some((s, after));
                    }
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// What the plaintext was checked to be: one element of the expected name, nothing else but
/// whitespace around it.
struct Plaintext<'p> {
    /// The element's text, surrounding whitespace removed.
    text: &'p str,
    /// Prefixes ("" for the default) the element declares itself.
    own_prefixes: Vec<String>,
    /// Nodes in the element's subtree.
    nodes: usize,
}

/// Parses the plaintext where it belongs: inside the namespace context of `container`, as
/// XML Encryption 4.3 says (the decrypted element replaces `EncryptedData`, a child of the
/// container). `None` when it is anything but exactly one `{ns}local` element.
fn check_plaintext<'p>(
    doc: &Document,
    container: NodeId,
    plaintext: &'p [u8],
    limits: &XmlLimits,
    ns: &str,
    local: &str,
) -> Option<Plaintext<'p>> {
    let text = std::str::from_utf8(plaintext).ok()?.trim_matches(is_xml_space);
    let context = namespace_attributes(&doc.in_scope_namespaces(container));
    let wrapped = format!("<decrypted{context}>{text}</decrypted>");
    let wdoc = Document::parse(wrapped.as_bytes(), limits).ok()?;
    let mut element = None;
    for &c in wdoc.children(wdoc.root()) {
        match wdoc.node(c).map(|n| &n.data) {
            Some(NodeData::Element(_)) if element.is_none() && wdoc.is_element(c, ns, local) => element = Some(c),
            Some(NodeData::Text(t)) if t.chars().all(is_xml_space) => {}
            _ => return None,
        }
    }
    let element = element?;
    let el = wdoc.element(element)?;
    let name = el.qname();
    // The text starts with exactly this start tag (`text` was trimmed and only whitespace may
    // surround the element).
    let after_name = text.strip_prefix('<')?.strip_prefix(name.as_str())?;
    if !after_name.starts_with(|c: char| is_xml_space(c) || c == '/' || c == '>') {
        return None;
    }
    Some(Plaintext {
        text,
        own_prefixes: el.namespace_decls.iter().map(|d| d.prefix.clone().unwrap_or_default()).collect(),
        nodes: wdoc.descendants_or_self(element).len(),
    })
}

/// Decrypts `container` (an element child of the document element, such as
/// `saml:EncryptedAssertion`), checks that the plaintext is exactly one `{ns}local` element,
/// and returns the document re-parsed, under `limits`, with that element in place of
/// `container`. `source` is the text `doc` was parsed from (after any byte order mark).
///
/// Namespace declarations in scope at `container` that its parent does not provide are
/// written on the decrypted element, so every prefix resolves as it did where the element was
/// encrypted; the declarations of the document element (and of every other ancestor) are
/// inherited as they are.
pub fn decrypt_in_place(
    doc: &Document,
    source: &str,
    container: NodeId,
    key: &RsaPrivateKey,
    limits: &XmlLimits,
    ns: &str,
    local: &str,
) -> Result<Document, XmlEncError> {
    let root = doc.root();
    let index =
        doc.child_elements(root).position(|c| c == container).ok_or(XmlEncError::Unexpected(qname(doc, container)))?;
    let plaintext = decrypt_element(doc, container, key)?;
    let checked =
        check_plaintext(doc, container, &plaintext, limits, ns, local).ok_or(XmlEncError::DecryptionFailed)?;

    // Declarations the decrypted element needs beyond what the document element provides.
    let context = doc.in_scope_namespaces(container);
    let inherited = doc.in_scope_namespaces(root);
    let mut extra: BTreeMap<String, String> = context
        .iter()
        .filter(|(p, uri)| inherited.get(*p) != Some(*uri) && !checked.own_prefixes.contains(p))
        .map(|(p, uri)| (p.clone(), uri.clone()))
        .collect();
    if inherited.contains_key("") && !context.contains_key("") && !checked.own_prefixes.iter().any(|p| p.is_empty()) {
        // The container undeclared the default namespace: `xmlns=""` on the element does too.
        extra.insert(String::new(), String::new());
    }
    let name_end =
        checked.text.find(|c: char| is_xml_space(c) || c == '/' || c == '>').ok_or(XmlEncError::DecryptionFailed)?;
    let (start_of_tag, rest_of_element) =
        checked.text.split_at_checked(name_end).ok_or(XmlEncError::DecryptionFailed)?;

    let bad_span = || XmlEncError::Xml(XmlError::Syntax("encrypted element not found in the document text".into()));
    let (start, end) = child_element_span(source, index).ok_or_else(bad_span)?;
    let before = source.get(..start).ok_or_else(bad_span)?;
    let after = source.get(end..).ok_or_else(bad_span)?;
    let container_name = qname(doc, container);
    let original = source.get(start..end).ok_or_else(bad_span)?;
    if !original.strip_prefix('<').is_some_and(|r| r.starts_with(container_name.as_str())) || !original.ends_with('>') {
        return Err(bad_span());
    }
    let extra_attributes = namespace_attributes(&extra);
    let mut text = String::with_capacity(before.len() + checked.text.len() + extra_attributes.len() + after.len());
    text.push_str(before);
    text.push_str(start_of_tag);
    text.push_str(&extra_attributes);
    text.push_str(rest_of_element);
    text.push_str(after);
    let decrypted = Document::parse(text.as_bytes(), limits).map_err(XmlEncError::Xml)?;

    // The new tree is the old one with the container's subtree replaced by the element's.
    let expected_nodes = doc
        .descendants_or_self(root)
        .len()
        .saturating_sub(doc.descendants_or_self(container).len())
        .saturating_add(checked.nodes);
    let placed = decrypted.child_elements(decrypted.root()).nth(index);
    if decrypted.descendants_or_self(decrypted.root()).len() != expected_nodes
        || !placed.is_some_and(|p| decrypted.is_element(p, ns, local))
    {
        return Err(XmlEncError::DecryptionFailed);
    }
    Ok(decrypted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_element_span_finds_start_and_empty_elements() {
        let src = r#"<?xml version="1.0"?><r a="1"><x>t<y/></x> <z/><w k=">">&amp;</w></r>"#;
        let span = |i| child_element_span(src, i).map(|(s, e)| &src[s..e]);
        assert_eq!(span(0), Some("<x>t<y/></x>"));
        assert_eq!(span(1), Some("<z/>"));
        assert_eq!(span(2), Some(r#"<w k=">">&amp;</w>"#));
        assert_eq!(span(3), None);
    }

    #[test]
    fn cbc_padding_is_checked() {
        use aes_gcm::aes::cipher::BlockEncrypt;
        let key = [7u8; 16];
        let cipher = Aes128::new_from_slice(&key).unwrap();
        let encrypt = |plain: [u8; 16]| {
            let iv = [3u8; 16];
            let mut block: Block<Aes128> = plain.into();
            for (b, i) in block.iter_mut().zip(iv.iter()) {
                *b ^= i;
            }
            cipher.encrypt_block(&mut block);
            [iv.to_vec(), block.to_vec()].concat()
        };
        let mut plain = [b'a'; 16];
        plain[15] = 4;
        assert_eq!(cbc_decrypt(&cipher, &encrypt(plain)), Some(vec![b'a'; 12]));
        plain[15] = 16;
        assert_eq!(cbc_decrypt(&cipher, &encrypt(plain)), Some(vec![]));
        for bad in [0, 17, 255] {
            plain[15] = bad;
            assert_eq!(cbc_decrypt(&cipher, &encrypt(plain)), None, "{bad}");
        }
        assert_eq!(cbc_decrypt(&cipher, &[0u8; 16]), None);
        assert_eq!(cbc_decrypt(&cipher, &[0u8; 40]), None);
    }

    #[test]
    fn gcm_needs_iv_and_tag() {
        let cipher = Aes128Gcm::new_from_slice(&[1u8; 16]).unwrap();
        assert_eq!(gcm_decrypt(&cipher, &[0u8; 27]), None);
        let sealed = cipher.encrypt(&[9u8; 12].into(), b"x".as_slice()).unwrap();
        let data = [[9u8; 12].to_vec(), sealed].concat();
        assert_eq!(gcm_decrypt(&cipher, &data), Some(b"x".to_vec()));
        let mut flipped = data.clone();
        flipped[12] ^= 1;
        assert_eq!(gcm_decrypt(&cipher, &flipped), None);
    }
}
