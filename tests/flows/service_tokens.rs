//! Static service tokens (an id and secret pair, as Cloudflare Access's
//! `CF-Access-Client-Id`/`-Secret`): created, listed and revoked through the admin API,
//! stored only as a hash, accepted as a machine principal under the tenant's policy, and
//! never passed to the origin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::http::{Request, Response};
use serde_json::{json, Value};

fn harness() -> Harness {
    Harness::new(&config(
        json!({"service_tokens": true, "policy": [{"name": "deploy", "path": "/deploy", "match": "prefix", "require_scopes": ["deploy"]}]}),
        json!({}),
    ))
}

fn admin(h: &Harness, method: &str, path: &str, body: Value) -> Response {
    let r = Request::new(method, &format!("https://{HOST}/_portcullis/admin{path}"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "application/json")
        .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .with_body(if body.is_null() { Vec::new() } else { body.to_string().into_bytes() });
    h.respond(&r)
}

fn create(h: &Harness, body: Value) -> (String, String) {
    let r = admin(h, "POST", "/service-tokens", body);
    assert_eq!(r.status, 200, "{}", r.text());
    let b = json_body(&r);
    (b["client_id"].as_str().unwrap().to_owned(), b["client_secret"].as_str().unwrap().to_owned())
}

fn with_service(req: Request, id: &str, secret: &str) -> Request {
    req.header("cf-access-client-id", id).header("cf-access-client-secret", secret)
}

#[test]
fn a_service_token_reaches_the_origin_as_a_machine_and_its_secret_does_not() {
    let h = harness();
    let (id, secret) = create(&h, json!({"name": "ci", "scopes": ["deploy"]}));
    // Stored as a hash only.
    let stored = h.kv.keys().into_iter().find(|k| k.starts_with("svc:acme:")).unwrap();
    let raw = h.kv.raw_get(&stored).unwrap();
    assert!(!raw.contains(&secret), "{raw}");
    let f = h.forward(&with_service(api("/deploy/now"), &id, &secret));
    assert_eq!(f.headers.get("X-Portcullis-Principal"), Some("machine"));
    assert_eq!(f.headers.get("X-Portcullis-User"), Some(format!("service-token/{id}").as_str()));
    assert_eq!(f.headers.get("X-Portcullis-Scopes"), Some("deploy"));
    assert_eq!(f.headers.get("cf-access-client-secret"), None, "the secret stays at the gateway");
    assert_eq!(f.headers.get("cf-access-client-id"), None);
    // The gateway's own header names work too.
    let f = h.forward(
        &api("/deploy/now").header("x-portcullis-client-id", &id).header("x-portcullis-client-secret", &secret),
    );
    assert_eq!(f.headers.get("x-portcullis-client-secret"), None);
}

#[test]
fn a_wrong_secret_an_unknown_id_an_expired_or_revoked_token_is_refused() {
    let h = harness();
    let (id, secret) = create(&h, json!({"name": "ci", "scopes": ["deploy"], "ttl_days": 1}));
    let refused = |req: Request| {
        let r = h.respond(&req);
        assert_eq!((r.status, json_body(&r)["error"].as_str()), (401, Some("invalid_client")), "{}", r.text());
    };
    refused(with_service(api("/deploy"), &id, "wrong"));
    refused(with_service(api("/deploy"), "st-0000000000000000", &secret));
    h.forward(&with_service(api("/deploy"), &id, &secret));
    let listed = json_body(&admin(&h, "GET", "/service-tokens", Value::Null));
    assert_eq!(listed["service_tokens"][0]["client_id"], id.as_str());
    assert!(!listed.to_string().contains(&secret));
    assert_eq!(admin(&h, "POST", "/service-tokens/revoke", json!({"client_id": id})).status, 200);
    refused(with_service(api("/deploy"), &id, &secret));
    assert_eq!(admin(&h, "POST", "/service-tokens/revoke", json!({"client_id": id})).status, 404);
    let (id, secret) = create(&h, json!({"name": "short", "scopes": ["deploy"], "ttl_days": 1}));
    h.clock.advance(86_401);
    refused(with_service(api("/deploy"), &id, &secret));
    // KV removes an expired entry lazily; a record still read after its expiry is refused.
    let (id, secret) = create(&h, json!({"name": "lazy", "scopes": ["deploy"], "ttl_days": 1}));
    let key = format!("svc:acme:{id}");
    let raw = h.kv.raw_get(&key).unwrap();
    h.clock.advance(86_401);
    h.kv.raw_put(&key, &raw);
    refused(with_service(api("/deploy"), &id, &secret));
}

#[test]
fn policy_applies_to_service_tokens_and_tenants_must_opt_in() {
    let h = harness();
    let (id, secret) = create(&h, json!({"name": "reader", "scopes": ["read"]}));
    let r = h.respond(&with_service(api("/deploy/now"), &id, &secret));
    assert_eq!(r.status, 403, "{}", r.text());
    h.forward(&with_service(api("/reports"), &id, &secret));
    // A tenant without service_tokens neither makes nor reads them.
    let h = Harness::new(&config(json!({}), json!({})));
    assert_eq!(admin(&h, "POST", "/service-tokens", json!({"name": "x"})).status, 400);
    let r = h.respond(&with_service(api("/reports"), "st-1", "s"));
    assert_eq!((r.status, json_body(&r)["error"].as_str()), (401, Some("unauthenticated")));
}
