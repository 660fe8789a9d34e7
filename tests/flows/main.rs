//! Gateway flows: the gateway core driven end to end through in-memory ports and a scripted
//! identity provider (tests/common). One binary for the theme, as one link is cheaper than
//! one per file; each module is the file of the same name.

#[path = "../common/mod.rs"]
mod common;

mod admin_flow;
mod bearer;
mod central;
mod coordination;
mod forwarding;
mod http_boundary;
mod idp_fetch;
mod kv_budget;
mod machine_bounds;
mod mfa_flow;
mod oidc_flow;
mod passkey_flow;
mod policy_rules;
mod saml_gateway;
mod service_tokens;
mod session_states;
/// The passkey ceremony builder shared with the verifier tests.
#[path = "../verify/webauthn_support/mod.rs"]
mod webauthn_support;
