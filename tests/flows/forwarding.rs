//! What the shell is told to do with a request that passed every check: WebSocket upgrades
//! (kept only after the session or bearer check, and only for a real upgrade), the tenant's
//! origin deadline, and the 504 page when the origin misses it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::http::Request;
use serde_json::json;

fn upgrade(req: Request) -> Request {
    req.header("upgrade", "websocket")
        .header("connection", "keep-alive, Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
}

#[test]
fn a_websocket_upgrade_is_forwarded_only_after_the_session_check() {
    let h = Harness::new(&config(json!({}), json!({})));
    // Without a session: refused like any API client, nothing forwarded.
    let r = h.respond(&upgrade(api("/socket")));
    assert_eq!(r.status, 401, "{}", r.text());
    let cookie = h.login();
    let f = h.forward(&upgrade(with_session(api("/socket"), &cookie)));
    assert!(f.websocket);
    assert_eq!(f.headers.get("upgrade"), Some("websocket"));
    assert_eq!(f.headers.get("sec-websocket-key"), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    assert_eq!(f.headers.get("X-Portcullis-User"), Some("https://idp.test/alice"));
    assert_eq!(f.headers.get("connection"), None, "the runtime sets the hop's own Connection");
    // The session's revocation is honoured at the next upgrade.
    for k in h.kv.keys().into_iter().filter(|k| k.starts_with("sess:")) {
        h.kv.raw_delete(&k);
    }
    h.clock.advance(11);
    let r = h.respond(&upgrade(with_session(api("/socket"), &cookie)));
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn only_a_get_with_both_upgrade_tokens_is_an_upgrade() {
    let h = Harness::new(&config(json!({}), json!({})));
    let cookie = h.login();
    let plain = h.forward(&with_session(api("/x").header("upgrade", "websocket"), &cookie));
    assert!(!plain.websocket);
    assert_eq!(plain.headers.get("upgrade"), None, "Upgrade stays hop-by-hop without Connection: Upgrade");
    let other = h.forward(&with_session(api("/x").header("upgrade", "h2c").header("connection", "Upgrade"), &cookie));
    assert!(!other.websocket);
    assert_eq!(other.headers.get("upgrade"), None);
    let post = Request::new("POST", &format!("https://{HOST}/x")).unwrap().header("host", HOST);
    let post = h.forward(&upgrade(with_session(post, &cookie)));
    assert!(!post.websocket);
    assert_eq!(post.headers.get("upgrade"), None);
}

#[test]
fn the_tenants_origin_deadline_goes_with_every_forward_and_is_checked_at_load() {
    let h = Harness::new(&config(json!({"origin_timeout_ms": 2500}), json!({})));
    let cookie = h.login();
    assert_eq!(h.forward(&with_session(api("/x"), &cookie)).timeout_ms, 2500);
    assert_eq!(h.forward(&get("/health")).timeout_ms, 2500, "public paths too");
    let h = Harness::new(&config(json!({}), json!({})));
    assert_eq!(h.forward(&get("/health")).timeout_ms, 100_000);
    let h = Harness::new(&config(json!({"origin_timeout_ms": 0}), json!({})));
    assert!(h.gw.startup_log().unwrap().contains("tenants[0].origin_timeout_ms"));
}

#[test]
fn an_origin_that_misses_its_deadline_gets_a_504_page_with_a_reference() {
    let h = Harness::new(&config(json!({"origin_timeout_ms": 2500}), json!({})));
    let r = h.gw.origin_timed_out(h.ports(), &get("/slow"), 2500);
    assert_eq!(r.status, 504);
    assert!(r.text().contains("did not answer within 3 seconds"), "{}", r.text());
    let line = h.rt.events().into_iter().rfind(|e| e["code"] == "origin_timeout").unwrap();
    assert!(r.text().contains(line["reference"].as_str().unwrap()));
    let r = h.gw.origin_timed_out(h.ports(), &api("/slow"), 2500);
    assert_eq!(json_body(&r)["error"], "origin_timeout");
}

/// A configured assertion key that cannot sign (its PKCS#8 document carries another public
/// key) refuses the request with a configuration error and says why in the log, rather than
/// forwarding the identity unsigned.
#[test]
fn an_assertion_key_that_cannot_sign_refuses_rather_than_forwarding_unsigned() {
    use p256::pkcs8::EncodePrivateKey;
    let mut der = p256::SecretKey::random(&mut rand_core::OsRng).to_pkcs8_der().unwrap().as_bytes().to_vec();
    let last = der.len() - 1; // the carried public key's last byte
    der[last] ^= 1;
    let h = Harness::with_assertion_key(&config(json!({}), json!({})), portcullis::crypto::b64(&der));
    let cookie = h.login();
    let r = h.respond(&with_session(api("/dashboard"), &cookie));
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(json_body(&r)["error"], "config_error");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("is unusable")), "the log says why");
}
