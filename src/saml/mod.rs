//! SAML 2.0 service provider: XML parsing, Exclusive XML Canonicalization, XML-DSig
//! verification and the Web SSO profile checks.
//!
//! - [`xml`]: one strict parser and tree for untrusted messages (no DTDs, no entities, no
//!   processing instructions; comments never read as part of a value).
//! - [`c14n`]: Exclusive XML Canonicalization 1.0 with the enveloped-signature transform.
//! - [`dsig`]: verification of one enveloped signature with configured IdP certificates.
//! - [`response`]: `samlp:Response` checks after the Web Browser SSO profile; the only way
//!   to a [`response::VerifiedAssertion`].
//! - [`xmlenc`]: XML Encryption 1.1 decryption of an `EncryptedAssertion` with the SP's RSA
//!   key (RSA-OAEP key transport, AES-GCM or AES-CBC content).
//! - [`authn_request`]: the SP's AuthnRequest and its HTTP-Redirect encoding.
//! - [`time`]: SAML `xs:dateTime` values.

pub mod authn_request;
pub mod c14n;
pub mod dsig;
pub mod logout;
pub mod metadata;
pub mod response;
pub mod time;
pub mod xml;
pub mod xmlenc;
