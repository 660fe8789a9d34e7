//! Machine clients with JWT access tokens (`Authorization: Bearer`, RFC 6750 / RFC 9068),
//! through the gateway core with the scripted provider: what is accepted and forwarded,
//! every refusal with its status, RFC 6750 challenge and log line, and that a bearer
//! principal never gets a session.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, UntrustedToken};
use portcullis::http::Request;
use portcullis::oidc::jwks::{parse_jwks, PublicKey};
use serde_json::{json, Value};

const API: &str = "https://api.acme.test";

fn bearer_config(issuer_extra: Value, tenant_extra: Value) -> String {
    let mut issuer = json!({"provider": "corp", "audiences": [API], "scopes": ["api"], "require_typ": true});
    for (k, v) in issuer_extra.as_object().unwrap() {
        issuer[k] = v.clone();
    }
    let mut tenant = json!({"bearer": [issuer]});
    for (k, v) in tenant_extra.as_object().unwrap() {
        tenant[k] = v.clone();
    }
    config(tenant, json!({}))
}

fn harness() -> Harness {
    Harness::new(&bearer_config(json!({}), json!({})))
}

fn with_bearer(req: Request, token: &str) -> Request {
    req.header("authorization", &format!("Bearer {token}"))
}

/// Refused with `status`, the RFC 6750 `error` in `WWW-Authenticate`, the machine `code`
/// in the JSON body, and a log line naming `cause`.
fn assert_bearer_refusal(h: &Harness, token: &str, status: u16, error: &str, cause: &str) {
    let r = h.respond(&with_bearer(api("/api/items"), token));
    assert_eq!(r.status, status, "{}", r.text());
    let challenge = r.headers.get("www-authenticate").unwrap_or_default().to_owned();
    assert!(challenge.starts_with(r#"Bearer realm="acme""#), "{challenge}");
    assert!(challenge.contains(&format!(r#"error="{error}""#)), "{challenge}");
    assert_eq!(json_body(&r)["error"], error, "{}", r.text());
    let logged = h.rt.events().into_iter().rfind(|e| e["event"] == "refusal").expect("a refusal log line");
    assert!(logged["cause"].as_str().unwrap().contains(cause), "{logged}");
    assert!(r.headers.get("set-cookie").is_none());
}

#[test]
fn a_client_credentials_token_reaches_the_origin_as_a_machine_principal() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    let f = h.forward(&with_bearer(api("/api/items").header("X-Portcullis-Principal", "user"), &token));
    assert_eq!(f.url, "https://origin.test/api/items");
    assert_eq!(f.session, None);
    assert_eq!(f.headers.get("X-Portcullis-User"), Some("https://idp.test/ci-client"));
    assert_eq!(f.headers.get("X-Portcullis-Principal"), Some("machine"));
    assert_eq!(f.headers.get("X-Portcullis-Scopes"), Some("api,read"));
    assert_eq!(f.headers.get("X-Portcullis-Email"), None);
    // The signed assertion names the machine principal, its client and scopes.
    let assertion = f.headers.get("X-Portcullis-Assertion").unwrap().to_owned();
    let keys = parse_jwks(&h.respond(&api("/.well-known/portcullis/jwks.json")).body).unwrap().keys;
    let PublicKey::P256(key) = &keys[0].key else { panic!("expected a P-256 key") };
    let token = Es256.validator::<Value>(key).validate(&UntrustedToken::new(&assertion).unwrap()).unwrap();
    let claims = &token.claims().custom;
    assert_eq!(claims["sub"], "https://idp.test/ci-client");
    assert_eq!(claims["principal"], "machine");
    assert_eq!(claims["client_id"], "ci-client");
    assert_eq!(claims["scope"], "api read");
    assert_eq!(claims["idp"], "corp");
    // No session: nothing stored, no cookie.
    assert!(h.kv.keys().iter().all(|k| k.starts_with("disc:") || k.starts_with("jwks:")), "{:?}", h.kv.keys());
    assert_eq!(h.events("bearer_accepted").len(), 1);
}

#[test]
fn a_forged_token_is_refused_as_invalid_token() {
    let h = harness();
    let forger = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let token = h.idp.borrow().access_token_with(&forger, json!({}), json!({}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "signature does not verify");
}

#[test]
fn an_expired_token_is_refused() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    h.clock.advance(300 + 61);
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "expired");
    let r = h.respond(&with_bearer(api("/api/items"), &token));
    assert!(r.headers.get("www-authenticate").unwrap().contains(r#"error_description="token expired""#));
}

#[test]
fn a_token_for_another_audience_is_refused() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({"aud": "https://other.test"}), json!({}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "names no accepted audience");
    // An ID token (audience: the gateway's client id) is not an access token here.
    let id_token = h.idp.borrow().id_token(None);
    assert_bearer_refusal(&h, &id_token, 401, "invalid_token", "is not at+jwt");
}

#[test]
fn a_token_without_the_required_scope_is_refused_with_insufficient_scope() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({"scope": "read"}), json!({}));
    assert_bearer_refusal(&h, &token, 403, "insufficient_scope", r#"scope "api" is missing"#);
    let r = h.respond(&with_bearer(api("/api/items"), &token));
    assert!(r.headers.get("www-authenticate").unwrap().contains(r#"scope="api""#));
    // `scp` as a list counts as well.
    let token = h.idp.borrow().access_token(json!({"scope": null, "scp": ["api"]}), json!({}));
    h.forward(&with_bearer(api("/api/items"), &token));
}

#[test]
fn the_header_must_say_at_jwt_carry_no_crit_and_use_an_accepted_algorithm() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({}), json!({"typ": "JWT"}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "is not at+jwt");
    let token = h.idp.borrow().access_token(json!({}), json!({"typ": null}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "is not at+jwt");
    let token = h.idp.borrow().access_token(json!({}), json!({"typ": "application/at+jwt"}));
    h.forward(&with_bearer(api("/api/items"), &token));
    let token = h.idp.borrow().access_token(json!({}), json!({"crit": ["x-ext"], "x-ext": true}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "marks parameters as critical");
    // ES256 is not on this issuer's list.
    let h = Harness::new(&bearer_config(json!({"algorithms": ["RS256"]}), json!({})));
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "ES256");
}

#[test]
fn without_require_typ_a_plain_jwt_is_accepted() {
    let h = Harness::new(&bearer_config(json!({"require_typ": false}), json!({})));
    let token = h.idp.borrow().access_token(json!({}), json!({"typ": "JWT"}));
    h.forward(&with_bearer(api("/api/items"), &token));
}

#[test]
fn tokens_from_other_issuers_or_a_wrong_issuer_are_refused() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({"iss": "https://evil.test"}), json!({}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "issuer that is not accepted");
    assert_bearer_refusal(&h, "not-a-jwt", 401, "invalid_token", "issuer that is not accepted");
    assert_eq!(h.fetch.count("evil.test"), 0, "an unknown issuer is never fetched");
}

#[test]
fn a_token_held_for_a_user_needs_the_issuer_to_accept_users() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({"sub": "alice"}), json!({}));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "user tokens are not accepted");
    let h = Harness::new(&bearer_config(json!({"principals": ["machine", "user"]}), json!({})));
    let token = h.idp.borrow().access_token(json!({"sub": "alice"}), json!({}));
    let f = h.forward(&with_bearer(api("/api/items"), &token));
    assert_eq!(f.headers.get("X-Portcullis-User"), Some("https://idp.test/alice"));
    assert_eq!(f.headers.get("X-Portcullis-Principal"), Some("user"));
}

#[test]
fn policy_rules_can_require_scopes_or_a_machine_principal() {
    let policy = json!({"policy": [
        {"path": "/api/write", "match": "prefix", "require_scopes": ["write"]},
        {"path": "/people", "match": "prefix", "principal": "user"},
        {"path": "/api", "match": "prefix", "principal": "machine"},
    ]});
    let h = Harness::new(&bearer_config(json!({}), policy));
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    let r = h.respond(&with_bearer(api("/api/write/x"), &token));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.headers.get("www-authenticate").unwrap().contains(r#"error="insufficient_scope", scope="write""#));
    let logged = h.rt.events().into_iter().rfind(|e| e["event"] == "refusal").unwrap();
    assert!(logged["cause"].as_str().unwrap().contains("policy rule 0"), "{logged}");
    let r = h.respond(&with_bearer(api("/people/x"), &token));
    assert_eq!((r.status, json_body(&r)["error"].as_str()), (403, Some("forbidden")), "{}", r.text());
    h.forward(&with_bearer(api("/api/x"), &token));
    let token = h.idp.borrow().access_token(json!({"scope": "api write"}), json!({}));
    h.forward(&with_bearer(api("/api/write/x"), &token));
    // A person's session is not a machine: the machine-only rule refuses it.
    let cookie = h.login();
    let r = h.respond(&with_session(api("/api/x"), &cookie));
    assert_eq!(r.status, 403, "{}", r.text());
    h.forward(&with_session(api("/people/x"), &cookie));
}

#[test]
fn a_bearer_principal_gets_no_session_and_cookie_only_routes_stay_closed() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    // `/me` and the admin API are for sessions (and the admin token), not bearer principals.
    let r = h.respond(&with_bearer(api("/_portcullis/me"), &token));
    assert_eq!(r.status, 401, "{}", r.text());
    let r = h.respond(&with_bearer(api("/_portcullis/admin/keys"), &token));
    assert_eq!(r.status, 401, "{}", r.text());
    // A step-up path needs the gateway's second factor, which a token cannot carry.
    let h = Harness::new(&bearer_config(
        json!({}),
        json!({"mfa": {"step_up": [{"path": "/api/admin", "match": "prefix", "max_age": 300}]}}),
    ));
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    let r = h.respond(&with_bearer(api("/api/admin/x"), &token));
    assert_eq!((r.status, json_body(&r)["error"].as_str()), (403, Some("step_up_required")), "{}", r.text());
}

#[test]
fn a_bearer_token_decides_even_when_a_session_cookie_comes_along() {
    let h = harness();
    let cookie = h.login();
    let forger = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let forged = h.idp.borrow().access_token_with(&forger, json!({}), json!({}));
    let r = h.respond(&with_bearer(with_session(api("/api/items"), &cookie), &forged));
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn without_bearer_issuers_tokens_are_not_looked_at_and_the_401_offers_the_scheme_only_when_accepted() {
    let h = Harness::new(&config(json!({}), json!({})));
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    let r = h.respond(&with_bearer(api("/api/items"), &token));
    assert_eq!((r.status, json_body(&r)["error"].as_str()), (401, Some("unauthenticated")));
    assert!(!r.headers.get_all("www-authenticate").any(|c| c.starts_with("Bearer")));
    let h = harness();
    let r = h.respond(&api("/api/items"));
    assert_eq!(r.status, 401);
    assert!(r.headers.get_all("www-authenticate").any(|c| c == r#"Bearer realm="acme""#));
}

#[test]
fn a_rotated_issuer_key_is_fetched_once_then_the_token_passes() {
    let h = harness();
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    h.forward(&with_bearer(api("/api/items"), &token));
    h.idp.borrow_mut().rotate();
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    h.forward(&with_bearer(api("/api/items"), &token));
    assert_eq!(h.fetch.count("/jwks"), 2);
}

#[test]
fn with_the_runtimes_signature_port_the_same_checks_apply() {
    let h = harness();
    h.use_verifier.set(true);
    h.verifier.answer.set(Some(true));
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    h.forward(&with_bearer(api("/api/items"), &token));
    let expired = h.idp.borrow().access_token(json!({"aud": "https://other.test"}), json!({}));
    assert_bearer_refusal(&h, &expired, 401, "invalid_token", "names no accepted audience");
    let untyped = h.idp.borrow().access_token(json!({}), json!({"typ": "JWT"}));
    assert_bearer_refusal(&h, &untyped, 401, "invalid_token", "is not at+jwt");
    h.verifier.answer.set(Some(false));
    assert_bearer_refusal(&h, &token, 401, "invalid_token", "signature does not verify");
    assert!(h.verifier.calls.get() >= 3);
}

#[test]
fn issuers_are_checked_when_the_configuration_loads() {
    let errors = |issuer: Value, tenant_extra: Value| {
        let mut t = json!({"bearer": [issuer]});
        for (k, v) in tenant_extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        let doc = config(t, json!({}));
        let g = portcullis::gateway::Gateway::new(&doc, &|n| {
            Some(portcullis::secret::Secret::new(if n == "ASSERTION_KEY" {
                assertion_key_pem().into_bytes()
            } else {
                vec![7u8; 40]
            }))
        });
        g.startup_log().unwrap_or_default()
    };
    let e = errors(json!({"provider": "nope", "audiences": [API]}), json!({}));
    assert!(e.contains("tenants[0].bearer[0].provider"), "{e}");
    let e = errors(json!({"provider": "corp", "audiences": []}), json!({}));
    assert!(e.contains("tenants[0].bearer[0].audiences"), "{e}");
    let e = errors(json!({"provider": "corp", "audiences": [API], "algorithms": ["HS256"]}), json!({}));
    assert!(e.contains("tenants[0].bearer[0].algorithms[0]"), "{e}");
    let e = errors(json!({"name": "ci", "audiences": [API]}), json!({}));
    assert!(e.contains("tenants[0].bearer[0]: needs either"), "{e}");
    let e = errors(json!({"name": "ci", "issuer": "http://ci.example", "audiences": [API]}), json!({}));
    assert!(e.contains("tenants[0].bearer[0].issuer: not an https URL"), "{e}");
    let e = errors(
        json!({"provider": "corp", "audiences": [API], "principals": ["user"]}),
        json!({"mfa": {"required": true}}),
    );
    assert!(e.contains("tenants[0].bearer[0].principals"), "{e}");
    let ok = errors(json!({"name": "ci", "issuer": "https://ci.example", "audiences": [API]}), json!({}));
    assert!(!ok.contains("bearer"), "{ok}");
}
