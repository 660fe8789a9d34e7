//! Verifiers of what arrives from outside, each against its specification and real signed
//! inputs: ID tokens, SAML responses (plain and encrypted), canonicalization, the runtime's
//! signature port, AuthnRequest encoding, TOTP, the sealed MFA record and passkey ceremonies. One binary for the
//! theme; each module is the file of the same name.

mod id_token;
mod mfa_record;
mod mfa_totp;
mod saml_authn_request;
mod saml_c14n;
mod saml_encrypted;
mod saml_port;
mod saml_response;
mod webauthn;
mod webauthn_refusals;
mod webauthn_support;
