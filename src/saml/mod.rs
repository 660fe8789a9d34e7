//! SAML 2.0 service provider: XML parsing, Exclusive XML Canonicalization, XML-DSig
//! verification and the Web SSO profile checks.
