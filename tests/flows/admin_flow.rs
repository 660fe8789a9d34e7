//! Admin API (sessions, providers, keys, config, audit) and back-channel logout, through
//! the gateway core with in-memory ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, Claims, Header};
use portcullis::http::{Request, Response};
use serde_json::{json, Value};

fn harness() -> Harness {
    Harness::new(&config(json!({}), json!({})))
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

const USER: &str = "https://idp.test/alice";

#[test]
fn an_admin_lists_a_users_sessions_and_revokes_one() {
    let h = harness();
    let a = h.login();
    let b = h.login();
    let list = admin(&h, "GET", &format!("/sessions?user_id={}", urlencode(USER)), Value::Null);
    assert_eq!(list.status, 200, "{}", list.text());
    let sessions = json_body(&list)["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["provider"], "corp");
    let first = sessions[0]["session"].as_str().unwrap().to_owned();
    let revoked = admin(&h, "POST", "/sessions/revoke", json!({"session": first}));
    assert_eq!(revoked.status, 200);
    // Exactly one of the two browsers is out.
    let forwarded = [&a, &b]
        .iter()
        .filter(|c| matches!(h.handle(&with_session(api("/x"), c)), portcullis::gateway::Action::Forward(_)))
        .count();
    assert_eq!(forwarded, 1);
    assert_eq!(admin(&h, "POST", "/sessions/revoke", json!({"session": first})).status, 404);
    let line = h.events("session_revoked").pop().unwrap();
    assert_eq!(line["actor"], "api-token");
    assert_eq!(line["user"], USER);
}

#[test]
fn revoke_all_of_a_user_and_all_of_a_provider() {
    let h = harness();
    let a = h.login();
    h.login();
    let r = admin(&h, "POST", "/sessions/revoke-user", json!({"user_id": USER}));
    assert_eq!(json_body(&r)["revoked"], 2);
    assert_eq!(h.respond(&with_session(api("/x"), &a)).status, 401);
    assert_eq!(admin(&h, "GET", &format!("/sessions?user_id={}", urlencode(USER)), Value::Null).status, 404);
    h.login();
    let r = admin(&h, "POST", "/sessions/revoke-provider", json!({"provider": "corp"}));
    assert_eq!(json_body(&r)["revoked"], 1);
    let bad = admin(&h, "POST", "/sessions/revoke-provider", json!({"provider": "nope"}));
    assert_eq!(bad.status, 400);
    assert_eq!(json_body(&bad)["message"], "no provider named \"nope\" in this tenant");
}

#[test]
fn the_index_forgets_sessions_that_expired_by_ttl() {
    let h = harness();
    h.login();
    h.clock.advance(3601);
    h.login();
    let list = admin(&h, "GET", &format!("/sessions?user_id={}", urlencode(USER)), Value::Null);
    assert_eq!(json_body(&list)["sessions"].as_array().unwrap().len(), 1);
}

#[test]
fn keys_config_and_providers_show_no_secret() {
    let h = harness();
    h.login();
    let keys = json_body(&admin(&h, "GET", "/keys", Value::Null));
    assert_eq!(keys["cookie_keys"]["signing"], "c1");
    assert_eq!(keys["assertion_keys"]["published"], json!(["a1"]));
    let cfg = admin(&h, "GET", "/config", Value::Null);
    let text = cfg.text();
    assert!(text.contains("\"client_secret\":\"CLIENT_SECRET\""), "secrets appear by name");
    assert!(!text.contains("client-secret"), "never by value");
    let providers = json_body(&admin(&h, "GET", "/providers", Value::Null));
    assert_eq!(providers["providers"][0]["kids"], json!(["key-1"]));
    h.idp.borrow_mut().rotate();
    let refreshed = json_body(&admin(&h, "POST", "/providers/refresh", json!({"provider": "corp"})));
    assert_eq!(refreshed["kids"], json!(["key-1-next"]));
}

#[test]
fn audit_trail_lists_events_by_day_user_and_event() {
    let mut doc: Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    doc["gateway"]["audit_kv"] = json!(true);
    let h = Harness::new(&doc.to_string());
    h.login();
    admin(&h, "POST", "/sessions/revoke-user", json!({"user_id": USER}));
    let day = &portcullis::saml::time::format(h.clock.now())[..10];
    let all = json_body(&admin(&h, "GET", &format!("/audit?date={day}"), Value::Null));
    let events: Vec<&str> = all["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(
        events.contains(&"login_success") && events.contains(&"session_revoked") && events.contains(&"admin_call"),
        "{events:?}"
    );
    let revoked = json_body(&admin(&h, "GET", &format!("/audit?date={day}&event=session_revoked"), Value::Null));
    assert_eq!(revoked["events"].as_array().unwrap().len(), 1);
    assert!(h.kv.ttl_of(&h.kv.keys().into_iter().find(|k| k.starts_with("audit:")).unwrap()).unwrap() > 89 * 86400);
    assert_eq!(admin(&h, "GET", "/audit?date=yesterday", Value::Null).status, 400);
}

#[test]
fn audit_listing_says_when_events_are_log_lines_only() {
    let h = harness();
    h.login();
    let day = &portcullis::saml::time::format(h.clock.now())[..10];
    let r = json_body(&admin(&h, "GET", &format!("/audit?date={day}"), Value::Null));
    assert_eq!(r["stored"], json!(false));
    assert!(r["message"].as_str().unwrap().contains("gateway.audit_kv"), "{r}");
}

fn logout_token(h: &Harness, claims: Value) -> String {
    let idp = h.idp.borrow();
    let mut c = Claims::new(claims);
    c.issued_at = chrono::DateTime::from_timestamp(h.clock.now() as i64, 0);
    Es256.token(&Header::empty().with_key_id(idp.kid.clone()).with_token_type("logout+jwt"), &c, &idp.key).unwrap()
}

fn backchannel(h: &Harness, token: &str) -> Response {
    let body = format!("logout_token={}", urlencode(token));
    h.respond(
        &Request::new("POST", &format!("https://{HOST}/_portcullis/oidc/backchannel-logout"))
            .unwrap()
            .header("host", HOST)
            .header("content-type", "application/x-www-form-urlencoded")
            .with_body(body),
    )
}

#[test]
fn back_channel_logout_revokes_the_idp_session_once() {
    let h = harness();
    let cookie = h.login();
    let events = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    let good = json!({"iss": ISSUER, "aud": "gateway-client", "jti": "j-1", "sid": "idp-session-1", "sub": "alice", "events": events});
    let r = backchannel(&h, &logout_token(&h, good.clone()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(h.respond(&with_session(api("/x"), &cookie)).status, 401);
    // The same token again is a replay.
    let again = backchannel(&h, &logout_token(&h, good.clone()));
    assert_eq!(again.status, 400);
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("jti already used")));
    // Refusals: a nonce, no event, no sub/sid, wrong audience, and a forged signature.
    for (bad, why) in [
        (
            json!({"iss": ISSUER, "aud": "gateway-client", "jti": "j-2", "sid": "s", "events": events, "nonce": "n"}),
            "nonce",
        ),
        (json!({"iss": ISSUER, "aud": "gateway-client", "jti": "j-3", "sid": "s"}), "back-channel logout event"),
        (json!({"iss": ISSUER, "aud": "gateway-client", "jti": "j-4", "events": events}), "sub or sid"),
        (json!({"iss": ISSUER, "aud": "someone-else", "jti": "j-5", "sid": "s", "events": events}), "client id"),
    ] {
        let r = backchannel(&h, &logout_token(&h, bad));
        assert_eq!(r.status, 400);
        assert!(h.rt.logs.borrow().last().unwrap().contains(why), "{why}: {:?}", h.rt.logs.borrow().last());
    }
    let mut forged =
        logout_token(&h, json!({"iss": ISSUER, "aud": "gateway-client", "jti": "j-6", "sid": "s", "events": events}));
    // Change one character in the middle of the signature (the last one may only carry
    // padding bits).
    let at = forged.len() - 20;
    let c = if &forged[at..at + 1] == "A" { "B" } else { "A" };
    forged.replace_range(at..at + 1, c);
    assert_eq!(backchannel(&h, &forged).status, 400);
}

#[test]
fn back_channel_logout_by_sub_revokes_all_of_the_users_sessions() {
    let h = harness();
    let a = h.login();
    let b = h.login();
    let events = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    let r = backchannel(
        &h,
        &logout_token(
            &h,
            json!({"iss": ISSUER, "aud": "gateway-client", "jti": "k-1", "sub": "alice", "events": events}),
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(h.respond(&with_session(api("/x"), &a)).status, 401);
    assert_eq!(h.respond(&with_session(api("/x"), &b)).status, 401);
    let line = h.events("backchannel_logout").pop().unwrap();
    assert_eq!(line["revoked"], 2);
}

#[test]
fn front_channel_logout_revokes_the_idp_session() {
    let h = harness();
    let cookie = h.login();
    let bad = h.respond(&api("/_portcullis/oidc/frontchannel-logout?iss=https%3A%2F%2Fevil.test&sid=idp-session-1"));
    assert_eq!(bad.status, 400);
    h.forward(&with_session(api("/x"), &cookie));
    let r =
        h.respond(&api(&format!("/_portcullis/oidc/frontchannel-logout?iss={}&sid=idp-session-1", urlencode(ISSUER))));
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-security-policy"), Some("default-src 'none'; frame-ancestors https://idp.test"));
    assert_eq!(h.respond(&with_session(api("/x"), &cookie)).status, 401);
}

#[test]
fn audit_events_go_to_the_webhook_after_the_response_with_retries() {
    let mut doc: Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    doc["gateway"]["audit_webhook"] = json!({"url": "https://siem.test/hook", "token": "ADMIN_TOKEN", "attempts": 3});
    let h = Harness::new(&doc.to_string());
    h.login();
    let jobs = h.take_deferred();
    assert_eq!(jobs.len(), 1, "one delivery per request, after the response");
    let body: Value = serde_json::from_slice(jobs[0].request.body.as_ref().unwrap()).unwrap();
    assert_eq!(body["events"][0]["event"], "login_success");
    assert_eq!(jobs[0].request.headers.get("authorization"), Some(&*format!("Bearer {ADMIN_TOKEN}")));
    // The SIEM fails twice, then accepts: three attempts, no failure logged.
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let c = calls.clone();
    let idp = h.idp.clone();
    h.fetch.set(move |r| {
        if r.url == "https://siem.test/hook" {
            c.set(c.get() + 1);
            let status = if c.get() < 3 { 503 } else { 204 };
            return Ok(portcullis::testing::json_response(status, &json!({})));
        }
        idp.borrow().answer(r)
    });
    pollster::block_on(h.gw.run_deferred(h.ports(), jobs[0].clone(), |_| async {}));
    assert_eq!(calls.get(), 3);
    assert!(!h.rt.logs.borrow().iter().any(|l| l.contains("audit_webhook_failed")));
    // Always failing: the failure is logged after the last attempt.
    h.fetch.set(|_| Err(portcullis::ports::FetchError::Timeout));
    pollster::block_on(h.gw.run_deferred(h.ports(), jobs[0].clone(), |_| async {}));
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("audit_webhook_failed") && l.contains("timed out")));
}

#[test]
fn a_logout_token_is_used_once_even_where_kv_lags_when_the_object_decides() {
    for coordinated in [false, true] {
        let h = harness();
        h.use_coord.set(coordinated);
        h.login();
        let events = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
        let claims =
            json!({"iss": ISSUER, "aud": "gateway-client", "jti": "j-1", "sid": "idp-session-1", "events": events});
        assert_eq!(backchannel(&h, &logout_token(&h, claims.clone())).status, 200);
        // Another location: its KV replica has not seen the use yet.
        for key in h.kv.keys().into_iter().filter(|k| k.starts_with("jti:")) {
            h.kv.raw_delete(&key);
        }
        let again = backchannel(&h, &logout_token(&h, claims)).status;
        assert_eq!(again, if coordinated { 400 } else { 200 }, "coordinated: {coordinated}");
    }
}

/// A KV that makes every read wait one turn, as a real store does: requests in one isolate
/// then interleave.
struct TakingTurnsKv<'a>(&'a portcullis::testing::MemoryKv);

impl portcullis::ports::Kv for TakingTurnsKv<'_> {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> portcullis::ports::LocalFuture<'a, Result<Option<String>, portcullis::ports::KvError>> {
        Box::pin(async move {
            let mut waited = false;
            std::future::poll_fn(|cx| {
                if std::mem::replace(&mut waited, true) {
                    std::task::Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            self.0.get(key).await
        })
    }
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Option<u64>,
    ) -> portcullis::ports::LocalFuture<'a, Result<(), portcullis::ports::KvError>> {
        self.0.put(key, value, ttl)
    }
    fn delete<'a>(
        &'a self,
        key: &'a str,
    ) -> portcullis::ports::LocalFuture<'a, Result<(), portcullis::ports::KvError>> {
        self.0.delete(key)
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        limit: usize,
    ) -> portcullis::ports::LocalFuture<'a, Result<Vec<String>, portcullis::ports::KvError>> {
        self.0.list(prefix, limit)
    }
}

#[test]
fn each_request_delivers_its_own_audit_events_when_requests_interleave() {
    let mut doc: Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    doc["gateway"]["audit_webhook"] = json!({"url": "https://siem.test/hook", "attempts": 1});
    let h = Harness::new(&doc.to_string());
    h.login();
    h.login();
    h.take_deferred();
    let kv = TakingTurnsKv(&h.kv);
    let ports = portcullis::ports::Ports { kv: &kv, fetch: &h.fetch, rt: &h.rt, verifier: None, coord: None };
    let mut revoke = Request::new("POST", "https://app.test/_portcullis/admin/sessions/revoke-user").unwrap();
    revoke.headers.append("host", "app.test");
    revoke.headers.append("authorization", format!("Bearer {ADMIN_TOKEN}"));
    revoke.headers.append("content-type", "application/json");
    revoke.body = json!({"user_id": USER}).to_string().into_bytes();
    let mut refused = Request::new("GET", "https://app.test/_portcullis/admin/providers").unwrap();
    refused.headers.append("host", "app.test");
    refused.headers.append("authorization", "Bearer wrong");
    // The revocation runs until it has revoked the first of two sessions and waits on KV…
    let mut first = Box::pin(h.gw.handle(ports, &revoke));
    let mut turn = std::task::Context::from_waker(std::task::Waker::noop());
    while !h.rt.logs.borrow().iter().any(|l| l.contains("session_revoked")) {
        assert!(std::future::Future::poll(first.as_mut(), &mut turn).is_pending());
    }
    // …while a refused admin call runs to its end in the same isolate.
    let second = pollster::block_on(h.gw.handle(ports, &refused));
    let first = pollster::block_on(first);
    let events = |o: &portcullis::gateway::Outcome| -> Vec<String> {
        o.deferred
            .iter()
            .flat_map(|d| {
                let body: Value = serde_json::from_slice(d.request.body.as_ref().unwrap()).unwrap();
                body["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["event"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(events(&second), ["admin_refused"]);
    assert_eq!(events(&first), ["session_revoked", "session_revoked", "admin_call"]);
}
