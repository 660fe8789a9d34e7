//! Machine clients and request policy at their edges: what a token, an absent edge fact, a
//! claim that merely resembles the rule, or a WebSocket from another site must not get.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::gateway::Action;
use portcullis::http::{EdgeContext, Request};
use serde_json::json;

const API: &str = "https://api.acme.test";

fn with_bearer(req: Request, token: &str) -> Request {
    req.header("authorization", &format!("Bearer {token}"))
}

/// A browser's WebSocket upgrade to `/chat` with the session cookie, sent from `origin`.
fn websocket_upgrade(cookie: &str, origin: &str) -> Request {
    with_session(get("/chat"), cookie)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("origin", origin)
}

fn status(h: &Harness, req: &Request) -> u16 {
    match h.handle(req) {
        Action::Forward(_) => 200,
        Action::Respond(r) => r.status,
    }
}

/// `groups.require_mapped_group` refuses a bearer principal with no mapped group, as it
/// refuses a person at sign-in.
#[test]
fn require_mapped_group_applies_to_bearer_principals() {
    let h = Harness::new(&config(
        json!({
            "groups": {"map": {"engineering": ["eng"]}, "require_mapped_group": true},
            "bearer": [{"provider": "corp", "audiences": [API]}],
        }),
        json!({}),
    ));
    let token = h.idp.borrow().access_token(json!({}), json!({}));
    assert_ne!(status(&h, &with_bearer(api("/api/items"), &token)), 200, "unmapped machine principal let through");
}

/// A token's `groups` claim does not go through the people's group->role mapping unless
/// the issuer is trusted for it: "admins" in a token does not make a `superuser`.
#[test]
fn token_groups_do_not_grant_person_roles() {
    let h = Harness::new(&config(
        json!({
            "bearer": [{"provider": "corp", "audiences": [API]}],
            "policy": [{"path": "/admin-ui", "match": "prefix", "allow_roles": ["superuser"]}],
        }),
        json!({}),
    ));
    let token = h.idp.borrow().access_token(json!({"groups": ["admins"]}), json!({}));
    assert_ne!(
        status(&h, &with_bearer(api("/admin-ui/x"), &token)),
        200,
        "machine token got superuser via groups claim"
    );
}

/// A deny rule on an edge fact the edge does not report (Bot Management off, no country)
/// refuses: deny rules fail closed.
#[test]
fn deny_rule_on_unreported_edge_fact_fails_closed() {
    let h = Harness::new(&config(
        json!({"policy": [{"name": "no-bots", "path": "/", "match": "prefix", "effect": "deny", "max_bot_score": 29}]}),
        json!({}),
    ));
    let cookie = h.login();
    let mut known_bot = with_session(api("/reports"), &cookie);
    known_bot.edge = EdgeContext { bot_score: Some(1), ..Default::default() };
    assert_eq!(status(&h, &known_bot), 403);
    // No bot score reported: the deny rule is skipped and the default allows.
    assert_eq!(status(&h, &with_session(api("/reports"), &cookie)), 403, "deny rule failed open");
}

/// `contains` on a string claim is word membership, not a substring test: an unverified
/// mallory@acme.test.evil.example does not pass a rule written as `contains @acme.test`.
#[test]
fn claim_contains_is_not_a_domain_check() {
    let h = Harness::new(&config(
        json!({"policy": [{"path": "/", "match": "prefix", "claims": [{"claim": "email", "contains": "@acme.test"}]}]}),
        json!({}),
    ));
    h.idp.borrow_mut().extra_claims = json!({"email": "mallory@acme.test.evil.example", "email_verified": false});
    let cookie = h.login();
    assert_eq!(status(&h, &with_session(api("/reports"), &cookie)), 403, "substring claim match let mallory in");
}

/// Even with `require_typ: false` (the default) and a `user` principal, an ID token whose
/// `aud` is on the list is no access token (it carries `nonce`/`at_hash`).
#[test]
fn id_token_is_not_an_access_token_without_require_typ() {
    let h = Harness::new(&config(
        json!({"bearer": [{"provider": "corp", "audiences": ["gateway-client"], "principals": ["machine", "user"]}]}),
        json!({}),
    ));
    let id_token = h.idp.borrow().id_token(Some("n-1"));
    assert_ne!(status(&h, &with_bearer(api("/api/items"), &id_token)), 200, "ID token accepted as bearer access token");
}

/// A cookie-authenticated WebSocket upgrade from another site's page is refused
/// (cross-site WebSocket hijacking, e.g. from another tenant's host).
#[test]
fn cookie_websocket_from_a_foreign_origin_is_refused() {
    let h = Harness::new(&config(json!({}), json!({})));
    let cookie = h.login();
    let req = websocket_upgrade(&cookie, "https://evil.example");
    match h.handle(&req) {
        Action::Forward(f) => panic!("forwarded (websocket={}) with a foreign Origin", f.websocket),
        Action::Respond(r) => assert_eq!(r.status, 403),
    }
}

/// An issuer the operator trusts for groups (`bearer[].groups`) has them mapped as at
/// sign-in; and an access token (`typ: at+jwt`) is never taken for an ID token.
#[test]
fn an_issuer_trusted_for_groups_maps_them() {
    let h = Harness::new(&config(
        json!({"bearer": [{"provider": "corp", "audiences": [API], "groups": true}],
            "policy": [{"path": "/admin-ui", "match": "prefix", "allow_roles": ["superuser"]}]}),
        json!({}),
    ));
    let token = h.idp.borrow().access_token(json!({"groups": ["admins"]}), json!({}));
    assert_eq!(status(&h, &with_bearer(api("/admin-ui/x"), &token)), 200);
}

#[test]
fn a_cookie_websocket_from_this_site_is_forwarded() {
    let h = Harness::new(&config(json!({}), json!({})));
    let cookie = h.login();
    let req = websocket_upgrade(&cookie, &format!("https://{HOST}"));
    match h.handle(&req) {
        Action::Forward(f) => assert!(f.websocket),
        Action::Respond(r) => panic!("refused {} {}", r.status, r.text()),
    }
}

#[test]
fn service_token_ids_that_are_not_the_gateways_are_refused_before_storage() {
    let h = Harness::new(&config(json!({"service_tokens": true}), json!({})));
    let reads = h.kv.reads.get();
    let req = api("/x").header("cf-access-client-id", &"x".repeat(600)).header("cf-access-client-secret", "s");
    assert_eq!(status(&h, &req), 401);
    assert_eq!(h.kv.reads.get(), reads, "no KV read for an id the gateway never issues");
}
