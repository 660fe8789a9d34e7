//! Policy for requests, not only users: deny rules (first match wins, with the tenant's
//! stated default), claim conditions, the request's edge context (`request.cf`: country,
//! ASN, mTLS client certificate, bot score), refusals that name their rule, and the admin
//! route that answers "would this request be allowed, and by which rule?".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::http::{EdgeContext, Request, Response};
use serde_json::{json, Value};

fn from(req: Request, edge: EdgeContext) -> Request {
    let mut req = req;
    req.edge = edge;
    req
}

fn country(c: &str) -> EdgeContext {
    EdgeContext { country: Some(c.into()), ..Default::default() }
}

fn refused_by(h: &Harness, r: &Response) -> String {
    assert_eq!(r.status, 403, "{}", r.text());
    let line = h.rt.events().into_iter().rfind(|e| e["code"] == "forbidden").unwrap();
    line["cause"].as_str().unwrap().to_owned()
}

#[test]
fn a_deny_rule_refuses_when_its_conditions_hold_and_passes_on_otherwise() {
    let h = Harness::new(&config(
        json!({"policy": [
            {"name": "no-embargoed-countries", "path": "/", "match": "prefix", "effect": "deny", "countries": ["KP", "IR"]},
            {"name": "finance-only", "path": "/finance", "match": "prefix", "allow_groups": ["finance"]},
        ]}),
        json!({}),
    ));
    let cookie = h.login();
    h.forward(&from(with_session(api("/reports"), &cookie), country("FR")));
    let r = h.respond(&from(with_session(api("/reports"), &cookie), country("KP")));
    assert_eq!(refused_by(&h, &r), "denied by policy rule 0 (no-embargoed-countries)");
    assert!(
        r.text().contains("no-embargoed-countries")
            || json_body(&r)["message"].as_str().unwrap().contains("no-embargoed-countries")
    );
    // Without a country from the edge a deny rule cannot know: it refuses (fails closed).
    let r = h.respond(&with_session(api("/reports"), &cookie));
    assert_eq!(refused_by(&h, &r), "denied by policy rule 0 (no-embargoed-countries)");
    // The allow rule behind it still decides its paths.
    let r = h.respond(&from(with_session(api("/finance/q1"), &cookie), country("FR")));
    assert_eq!(refused_by(&h, &r), "denied by policy rule 1 (finance-only)");
}

#[test]
fn the_tenants_default_decides_when_no_rule_does() {
    let h = Harness::new(&config(
        json!({"policy_default": "deny", "policy": [{"path": "/open", "match": "prefix"}]}),
        json!({}),
    ));
    let cookie = h.login();
    h.forward(&with_session(api("/open/x"), &cookie));
    let r = h.respond(&with_session(api("/elsewhere"), &cookie));
    assert_eq!(refused_by(&h, &r), "denied by the tenant's default (policy_default: deny)");
}

#[test]
fn claim_conditions_match_any_claim_path_by_equals_or_contains() {
    let h = Harness::new(&config(
        json!({"policy": [
            {"name": "verified-example", "path": "/a", "match": "prefix", "claims": [
                {"claim": "email_verified", "equals": true}, {"claim": "email", "equals": "alice@example.com"}]},
            {"name": "eng-group", "path": "/b", "match": "prefix", "claims": [{"claim": "groups", "contains": "eng"}]},
            {"name": "wrong-idp", "path": "/c", "match": "prefix", "claims": [{"claim": "idp", "equals": "other"}]},
            {"name": "block-admins", "path": "/d", "match": "prefix", "effect": "deny", "claims": [{"claim": "roles", "contains": "superuser"}]},
        ]}),
        json!({}),
    ));
    let cookie = h.login();
    h.forward(&with_session(api("/a"), &cookie));
    h.forward(&with_session(api("/b"), &cookie));
    assert!(refused_by(&h, &h.respond(&with_session(api("/c"), &cookie))).contains("wrong-idp"));
    assert!(refused_by(&h, &h.respond(&with_session(api("/d"), &cookie))).contains("block-admins"));
}

#[test]
fn edge_conditions_asn_client_certificate_and_bot_score() {
    let h = Harness::new(&config(
        json!({"policy": [
            {"name": "mtls", "path": "/mtls", "match": "prefix", "client_cert_verified": true},
            {"name": "office", "path": "/office", "match": "prefix", "asns": [64500]},
            {"name": "bots-out", "path": "/", "match": "prefix", "effect": "deny", "max_bot_score": 29},
        ]}),
        json!({}),
    ));
    let cookie = h.login();
    let verified = EdgeContext { client_cert_verified: Some(true), ..Default::default() };
    h.forward(&from(with_session(api("/mtls/x"), &cookie), verified));
    let unverified = EdgeContext { client_cert_verified: Some(false), ..Default::default() };
    assert!(refused_by(&h, &h.respond(&from(with_session(api("/mtls/x"), &cookie), unverified))).contains("mtls"));
    assert!(
        refused_by(&h, &h.respond(&with_session(api("/mtls/x"), &cookie))).contains("mtls"),
        "absent means not verified"
    );
    h.forward(&from(with_session(api("/office"), &cookie), EdgeContext { asn: Some(64500), ..Default::default() }));
    let elsewhere = EdgeContext { asn: Some(13335), ..Default::default() };
    assert!(refused_by(&h, &h.respond(&from(with_session(api("/office"), &cookie), elsewhere))).contains("office"));
    let bot = EdgeContext { bot_score: Some(5), ..Default::default() };
    assert!(refused_by(&h, &h.respond(&from(with_session(api("/x"), &cookie), bot))).contains("bots-out"));
    h.forward(&from(with_session(api("/x"), &cookie), EdgeContext { bot_score: Some(80), ..Default::default() }));
}

#[test]
fn rules_are_checked_when_the_configuration_loads() {
    let h = Harness::new(&config(
        json!({"policy": [
            {"path": "/a", "claims": [{"claim": "x", "equals": 1, "contains": 1}]},
            {"path": "/b", "countries": ["fr"]},
        ]}),
        json!({}),
    ));
    let log = h.gw.startup_log().unwrap();
    assert!(log.contains("tenants[0].policy[0].claims[0]"), "{log}");
    assert!(log.contains("tenants[0].policy[1].countries[0]"), "{log}");
}

fn check(h: &Harness, q: Value) -> Value {
    let r = Request::new("POST", &format!("https://{HOST}/_portcullis/admin/policy/check"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "application/json")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .with_body(q.to_string().into_bytes());
    let r = h.respond(&r);
    assert_eq!(r.status, 200, "{}", r.text());
    json_body(&r)
}

#[test]
fn the_admin_check_route_says_whether_and_by_which_rule() {
    let h = Harness::new(&config(
        json!({"policy": [
            {"name": "no-kp", "path": "/", "match": "prefix", "effect": "deny", "countries": ["KP"]},
            {"name": "eng", "path": "/eng", "match": "prefix", "allow_groups": ["eng"]},
            {"name": "api-writers", "path": "/api", "match": "prefix", "principal": "machine", "require_scopes": ["write"]},
        ]}),
        json!({}),
    ));
    let fr = json!({"country": "FR"});
    let a = check(&h, json!({"path": "/eng/x", "groups": ["engineering"], "edge": fr}));
    assert_eq!((a["allowed"].as_bool(), a["rule"].as_u64(), a["name"].as_str()), (Some(true), Some(1), Some("eng")));
    // Without the country the deny rule cannot know, and refuses.
    let a = check(&h, json!({"path": "/eng/x", "groups": ["engineering"]}));
    assert_eq!((a["allowed"].as_bool(), a["name"].as_str()), (Some(false), Some("no-kp")));
    assert_eq!(a["groups"], json!(["eng"]));
    let a = check(&h, json!({"path": "/eng/x", "groups": ["engineering"], "edge": {"country": "KP"}}));
    assert_eq!(
        (a["allowed"].as_bool(), a["name"].as_str(), a["effect"].as_str()),
        (Some(false), Some("no-kp"), Some("deny"))
    );
    let a =
        check(&h, json!({"path": "/api/x", "method": "post", "principal": "machine", "scopes": ["read"], "edge": fr}));
    assert_eq!(
        (a["allowed"].as_bool(), a["name"].as_str(), a["method"].as_str()),
        (Some(false), Some("api-writers"), Some("POST"))
    );
    let a = check(&h, json!({"path": "/api/x", "principal": "machine", "scopes": ["write"], "edge": fr}));
    assert_eq!(a["allowed"], true);
    let a = check(&h, json!({"path": "/health"}));
    assert_eq!((a["allowed"].as_bool(), a["public"].as_bool()), (Some(true), Some(true)));
    let a = check(&h, json!({"path": "/static/..;/admin"}));
    assert_eq!(a["allowed"], false);
    assert!(a["ambiguous_path"].is_string());
    let a = check(&h, json!({"path": "/other", "edge": fr}));
    assert_eq!((a["allowed"].as_bool(), a["rule"].clone()), (Some(true), Value::Null));
}
