//! KV writes per sign-in and per active user-hour, counted at the in-memory KV port. The
//! Workers Free plan allows 1,000 KV writes a day (README, "Plan limits"); these figures are
//! the ones the README's budget is computed from, so a change that adds writes fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use serde_json::{json, Value};

/// Writes of one whole OIDC sign-in (login start, callback), after a first one has cached
/// the provider's discovery document and keys (written to KV once per `discovery_ttl` and
/// `jwks_ttl` per provider, not per sign-in).
fn sign_in_writes(h: &Harness) -> (u64, String) {
    h.login();
    let before = h.kv.writes.get();
    let cookie = h.login();
    (h.kv.writes.get() - before, cookie)
}

/// Writes of one person browsing for an hour: a request every 30 seconds.
fn active_hour_writes(h: &Harness, cookie: &str) -> u64 {
    let before = h.kv.writes.get();
    for _ in 0..120 {
        h.clock.advance(30);
        h.forward(&with_session(get("/dashboard"), cookie));
    }
    h.kv.writes.get() - before
}

fn harness_with(gateway: Value) -> Harness {
    let mut doc: Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    for (k, v) in gateway.as_object().unwrap() {
        doc["gateway"][k] = v.clone();
    }
    Harness::new(&doc.to_string())
}

#[test]
fn default_configuration_kv_writes_per_sign_in_and_per_active_hour() {
    let h = harness_with(json!({}));
    let (sign_in, cookie) = sign_in_writes(&h);
    let hour = active_hour_writes(&h, &cookie);
    println!("KV writes (KV alone): sign-in {sign_in}, active user-hour {hour}");
    // Pre-login state, its "used" marker, the session record, the per-user session index and
    // the IdP-session index (for back-channel logout).
    assert_eq!(sign_in, 5, "KV writes of one sign-in");
    // Last-seen reaches KV once per `last_seen_interval` (default: a quarter of the 1 h idle
    // timeout): 4; the refresh of the IdP's access token (1 h here) rewrites the record: 1.
    // With the former interval of 60 s this was 61.
    assert_eq!(hour, 5, "KV writes of one active user-hour");
}

#[test]
fn with_the_coordinator_the_budget_is_the_same() {
    let h = harness_with(json!({}));
    h.use_coord.set(true);
    let (sign_in, cookie) = sign_in_writes(&h);
    let hour = active_hour_writes(&h, &cookie);
    println!("KV writes (coordinator bound): sign-in {sign_in}, active user-hour {hour}");
    assert_eq!(sign_in, 5, "KV writes of one sign-in with the coordinator");
    assert_eq!(hour, 5, "KV writes of one active user-hour with the coordinator");
}

#[test]
fn audit_events_reach_kv_only_when_asked() {
    let off = harness_with(json!({}));
    off.login();
    assert!(off.kv.keys().iter().all(|k| !k.starts_with("audit:")), "audit events stay in the log by default");
    assert_eq!(off.events("login_success").len(), 1, "the audit event is still a log line");

    let on = harness_with(json!({"audit_kv": true}));
    let (sign_in, _) = sign_in_writes(&on);
    assert_eq!(on.kv.keys().iter().filter(|k| k.starts_with("audit:")).count(), 2);
    assert_eq!(sign_in, 6, "one more write per audit event with gateway.audit_kv");
}

#[test]
fn idle_expiry_still_holds_with_coarse_last_seen_writes() {
    let h = harness_with(json!({}));
    let cookie = h.login();
    assert!(h.kv.deletes.get() >= 1, "the pre-login state is deleted at the callback");
    // Active for two hours, longer than the idle timeout: never signed out.
    for _ in 0..240 {
        h.clock.advance(30);
        h.forward(&with_session(get("/dashboard"), &cookie));
    }
    // Then idle for longer than the idle timeout: signed out.
    h.clock.advance(3600 + 1);
    let r = h.respond(&with_session(api("/dashboard"), &cookie));
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn a_last_seen_interval_as_long_as_the_idle_timeout_is_refused() {
    let mut doc: Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    doc["gateway"]["last_seen_interval"] = json!(3600);
    let errors = portcullis::config::Config::load(&doc.to_string(), &|_| None).unwrap_err();
    assert!(
        errors.0.iter().any(|e| e.path == "gateway.last_seen_interval" && e.message.contains("idle_timeout")),
        "{errors}"
    );
}

#[test]
fn a_session_in_use_outlives_a_short_idle_timeout() {
    let mut doc: Value =
        serde_json::from_str(&config(json!({"session": {"idle_timeout": 60, "absolute_timeout": 3600}}), json!({})))
            .unwrap();
    doc["gateway"]["session_cache_ttl"] = json!(0);
    let h = Harness::new(&doc.to_string());
    let cookie = h.login();
    // A request every 10 s for 5 minutes: last-seen must reach KV often enough (every 15 s
    // here) that the 60 s idle timeout never ends a session in use.
    for _ in 0..30 {
        h.clock.advance(10);
        h.forward(&with_session(get("/dashboard"), &cookie));
    }
}
