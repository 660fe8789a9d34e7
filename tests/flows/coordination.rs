//! The coordination object (a Durable Object in Workers) as the authority for what must
//! happen once: pre-login state, revocation, refresh. Each test stands in for "another
//! location" by putting back what a lagging KV replica would still return, and shows what KV
//! alone does there next to what the coordinator does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::coord::{self, Op, Reply};
use portcullis::gateway::Action;
use portcullis::ports::Coordinator;
use serde_json::json;

const USER: &str = "https://idp.test/alice";

fn harness(coordinated: bool) -> Harness {
    let h = Harness::new(&config(json!({}), json!({})));
    h.use_coord.set(coordinated);
    h
}

fn session_keys(h: &Harness) -> Vec<String> {
    h.kv.keys().into_iter().filter(|k| k.starts_with("sess:")).collect()
}

/// Replays a callback whose state a lagging KV replica still holds.
fn replay_with_stale_state(h: &Harness) -> portcullis::http::Response {
    let (auth, pending) = h.start_login("/dashboard");
    let state_key = h.kv.keys().into_iter().find(|k| k.starts_with("state:")).unwrap();
    let stale = h.kv.raw_get(&state_key).unwrap();
    let callback = h.callback_for(&auth, &pending);
    assert_eq!(h.respond(&callback).status, 302);
    h.kv.raw_put(&state_key, &stale);
    h.respond(&callback)
}

#[test]
fn a_state_is_consumed_once_even_where_kv_still_has_it() {
    // KV alone: the lagging replica lets the same state through a second time (the IdP's
    // single-use code is then the last line; this scripted IdP does not enforce it).
    let h = harness(false);
    assert_eq!(replay_with_stale_state(&h).status, 302);

    let h = harness(true);
    let r = replay_with_stale_state(&h);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        h.rt.logs.borrow().iter().any(|l| l.contains("state_replayed") || l.contains("already used")),
        "{:?}",
        h.rt.logs.borrow()
    );
    assert_eq!(session_keys(&h).len(), 1, "one session, not two: {:?}", h.kv.keys());
    let (shard, _) = h.coord.calls.borrow().iter().find(|(_, op)| matches!(op, Op::Claim { .. })).cloned().unwrap();
    assert!(shard.starts_with("b:acme:state:"), "{shard}");
}

fn revoke_everywhere_but_here(h: &Harness, cookie: &str) -> Action {
    assert!(matches!(h.handle(&with_session(api("/x"), cookie)), Action::Forward(_)));
    let key = session_keys(h).pop().unwrap();
    let stale = h.kv.raw_get(&key).unwrap();
    let r = h.respond(
        &portcullis::http::Request::new("POST", &format!("https://{HOST}/_portcullis/admin/sessions/revoke-user"))
            .unwrap()
            .header("host", HOST)
            .header("accept", "application/json")
            .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .with_body(json!({"user_id": USER}).to_string().into_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Another location: its KV replica still has the record (and not yet the tombstone KV
    // alone leaves), and its isolate cache expired.
    h.kv.raw_put(&key, &stale);
    h.kv.raw_delete(&format!("revoked:{key}"));
    h.clock.advance(11);
    h.handle(&with_session(api("/x"), cookie))
}

#[test]
fn a_revocation_reaches_every_location_through_the_coordinator() {
    let h = harness(false);
    let cookie = h.login();
    assert!(
        matches!(revoke_everywhere_but_here(&h, &cookie), Action::Forward(_)),
        "KV alone: accepted until KV converges"
    );

    let h = harness(true);
    let cookie = h.login();
    match revoke_everywhere_but_here(&h, &cookie) {
        Action::Respond(r) => assert_eq!(r.status, 401),
        Action::Forward(f) => panic!("revoked session forwarded to {}", f.url),
    }
    assert!(h.events("session_refused").iter().any(|e| e["cause"] == "session revoked (coordinator)"));
    // A new sign-in after the revocation works.
    let again = h.login();
    assert!(matches!(h.handle(&with_session(api("/x"), &again)), Action::Forward(_)));
}

#[test]
fn logout_revokes_at_the_coordinator() {
    let h = harness(true);
    let cookie = h.login();
    let key = session_keys(&h).pop().unwrap();
    let stale = h.kv.raw_get(&key).unwrap();
    let page = h.respond(&with_session(get("/_portcullis/logout"), &cookie)).text();
    let csrf = form_field(&page, "csrf");
    assert_eq!(h.respond(&post_form("/_portcullis/logout", &cookie, &[("csrf", &csrf)])).status, 302);
    h.kv.raw_put(&key, &stale);
    h.clock.advance(11);
    assert_eq!(h.respond(&with_session(api("/x"), &cookie)).status, 401);
}

fn refresh_calls(h: &Harness) -> usize {
    h.events("session_refreshed").len()
}

#[test]
fn a_refresh_happens_once_and_a_lagging_location_adopts_its_result() {
    for coordinated in [false, true] {
        let h = harness(coordinated);
        h.idp.borrow_mut().access_token_ttl = 120;
        let cookie = h.login();
        let key = session_keys(&h).pop().unwrap();
        let before = h.kv.raw_get(&key).unwrap();
        h.clock.advance(90);
        h.forward(&with_session(api("/x"), &cookie));
        assert_eq!(refresh_calls(&h), 1);
        // Another location still reads the record with the old (rotated) refresh token.
        h.kv.raw_put(&key, &before);
        h.clock.advance(11);
        h.forward(&with_session(api("/x"), &cookie));
        let expected = if coordinated { 1 } else { 2 };
        assert_eq!(refresh_calls(&h), expected, "coordinated: {coordinated}");
    }
}

#[test]
fn a_held_refresh_lease_waits_then_fails_closed_once_the_token_expired() {
    let h = harness(true);
    h.idp.borrow_mut().access_token_ttl = 120;
    let cookie = h.login();
    let session_key = session_keys(&h).pop().unwrap();
    // Another request holds the lease for the current refresh token and does not finish.
    let refresh_token = format!("rt-{T0}");
    let lease_key = format!("r:{session_key}:{}", &portcullis::crypto::sha256_hex(refresh_token.as_bytes())[..32]);
    let shard = coord::user_shard("acme", USER);
    let begin = Op::RefreshBegin { key: lease_key.clone(), lease_ms: 3_600_000 };
    assert_eq!(pollster::block_on(h.coord.call(&shard, &begin)).unwrap(), Reply::Lease(coord::Lease::Acquired));
    // Refresh due but the access token still valid: wait for the other request, then go on.
    h.clock.advance(90);
    h.forward(&with_session(api("/x"), &cookie));
    assert_eq!(refresh_calls(&h), 0);
    // Access token expired and the lease still held: refused after the wait, never a
    // second refresh with the same token.
    h.clock.advance(30);
    let r = h.respond(&with_session(api("/x"), &cookie));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(refresh_calls(&h), 0);
    // Once the other request lets go without a result, this one refreshes.
    let end = Op::RefreshEnd { key: lease_key, result: None, retain_ms: 1 };
    pollster::block_on(h.coord.call(&shard, &end)).unwrap();
    h.forward(&with_session(api("/x"), &cookie));
    assert_eq!(refresh_calls(&h), 1);
}

#[test]
fn a_coordinator_outage_fails_closed() {
    let h = harness(true);
    h.coord.fail.set(true);
    let (auth, pending) = h.start_login("/dashboard");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(session_keys(&h).is_empty(), "no session half way");
    h.coord.fail.set(false);
    let cookie = h.login();
    h.clock.advance(11);
    h.coord.fail.set(true);
    assert_eq!(h.respond(&with_session(api("/x"), &cookie)).status, 503);
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("coordinator: injected failure")));
}

#[test]
fn the_hot_path_asks_the_coordinator_once_per_cache_interval() {
    let h = harness(true);
    let cookie = h.login();
    let checks = || h.coord.calls.borrow().iter().filter(|(_, op)| matches!(op, Op::RevokedSince { .. })).count();
    h.clock.advance(11);
    for _ in 0..50 {
        h.forward(&with_session(api("/x"), &cookie));
    }
    assert_eq!(checks(), 1);
    h.clock.advance(11);
    h.forward(&with_session(api("/x"), &cookie));
    assert_eq!(checks(), 2);
}
