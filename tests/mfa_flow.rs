//! The TOTP second factor in the sign-in flow: enrolment, prompt, replay, lockout, backup
//! codes, step-up and admin reset, through the gateway core with in-memory ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portcullis::mfa::{base32_decode, totp_code, TotpParams};
use serde_json::json;

fn mfa_harness(mfa: serde_json::Value, provider: serde_json::Value) -> Harness {
    Harness::new(&config(json!({"mfa": mfa}), provider))
}

/// Signs in at the IdP; returns the session cookie and where the gateway sent the browser.
fn idp_login(h: &Harness) -> (String, String) {
    let (auth, pending) = h.start_login("/dashboard");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(r.status, 302, "{}", r.text());
    (set_cookie_value(&r, "__Host-portcullis_session").unwrap(), r.headers.get("location").unwrap().to_owned())
}

fn code_at(secret: &[u8], now: u64) -> String {
    totp_code(secret, now, &TotpParams::default()).unwrap()
}

/// Enrols through the pages; returns the TOTP secret and the backup codes.
fn enrol(h: &Harness, cookie: &str) -> (Vec<u8>, Vec<String>) {
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll?rd=/dashboard"), cookie));
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains("<svg"), "QR code rendered by the gateway");
    assert!(html.contains("otpauth://totp/Acme:alice@example.com?secret="));
    let groups = html.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap();
    assert_eq!(groups.split(' ').count(), 8, "160-bit secret in groups of four");
    let secret = base32_decode(groups).unwrap();
    assert_eq!(secret.len(), 20);
    let csrf = form_field(&html, "csrf");
    let wrong = h.respond(&post_form(
        "/_portcullis/mfa/enroll",
        cookie,
        &[("csrf", &csrf), ("rd", "/dashboard"), ("code", "000000")],
    ));
    assert_eq!(wrong.status, 401);
    let ok = h.respond(&post_form(
        "/_portcullis/mfa/enroll",
        cookie,
        &[("csrf", &csrf), ("rd", "/dashboard"), ("code", &code_at(&secret, h.clock.now()))],
    ));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let codes: Vec<String> =
        ok.text().split("<li><code>").skip(1).map(|c| c.split('<').next().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

fn prompt_csrf(h: &Harness, cookie: &str) -> String {
    let page = h.respond(&with_session(get("/_portcullis/mfa?rd=/dashboard"), cookie));
    assert_eq!(page.status, 200, "{}", page.text());
    form_field(&page.text(), "csrf")
}

fn submit_code(h: &Harness, cookie: &str, field: &str, code: &str) -> portcullis::http::Response {
    let csrf = prompt_csrf(h, cookie);
    h.respond(&post_form("/_portcullis/mfa", cookie, &[("csrf", &csrf), ("rd", "/dashboard"), (field, code)]))
}

#[test]
fn required_mfa_enrols_first_and_the_origin_never_sees_a_pending_session() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (cookie, next) = idp_login(&h);
    assert_eq!(next, "/_portcullis/mfa/enroll?rd=%2Fdashboard");
    let blocked = h.respond(&with_session(get("/dashboard"), &cookie));
    assert_eq!(blocked.status, 302);
    assert!(blocked.headers.get("location").unwrap().starts_with("/_portcullis/mfa?rd=%2Fdashboard"));
    assert_eq!(h.respond(&with_session(api("/api"), &cookie)).status, 401);
    // Before enrolment the prompt sends the user to enrolment.
    let prompt = h.respond(&with_session(get("/_portcullis/mfa?rd=/dashboard"), &cookie));
    assert!(prompt.headers.get("location").unwrap().starts_with("/_portcullis/mfa/enroll"));
    enrol(&h, &cookie);
    let f = h.forward(&with_session(get("/dashboard"), &cookie));
    assert_eq!(f.headers.get("X-Portcullis-Amr"), Some("mfa,otp"));
    assert_eq!(h.events("mfa_enrolled").len(), 1);
    assert!(!h.rt.logs.borrow().iter().any(|l| l.contains("\"code\":\"0")), "codes are never logged");
}

#[test]
fn enrolled_users_are_prompted_replays_and_old_codes_are_refused() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (first, _) = idp_login(&h);
    let (secret, _) = enrol(&h, &first);
    let enrol_time = h.clock.now();
    let (cookie, next) = idp_login(&h);
    assert_eq!(next, "/_portcullis/mfa?rd=%2Fdashboard");
    // The code used for enrolment (same step) is a replay.
    let replay = submit_code(&h, &cookie, "code", &code_at(&secret, enrol_time));
    assert_eq!(replay.status, 401);
    assert!(replay.text().contains("already used"));
    // Two steps ago is outside the window.
    h.clock.advance(90);
    let old = submit_code(&h, &cookie, "code", &code_at(&secret, h.clock.now() - 60));
    assert_eq!(old.status, 401);
    assert!(old.text().contains("not correct"));
    let ok = submit_code(&h, &cookie, "code", &code_at(&secret, h.clock.now()));
    assert_eq!(ok.status, 302);
    assert_eq!(ok.headers.get("location"), Some("/dashboard"));
    h.forward(&with_session(get("/dashboard"), &cookie));
}

#[test]
fn five_wrong_codes_lock_the_second_factor() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (first, _) = idp_login(&h);
    let (secret, _) = enrol(&h, &first);
    let (cookie, _) = idp_login(&h);
    h.clock.advance(30);
    for i in 0..4 {
        let r = submit_code(&h, &cookie, "code", "123456");
        assert_eq!(r.status, 401);
        assert!(r.text().contains(&format!("{} attempt", 4 - i)));
    }
    let locked = submit_code(&h, &cookie, "code", "123456");
    assert_eq!(locked.status, 429);
    assert!(locked.text().contains("Too many wrong codes"));
    assert_eq!(h.events("mfa_locked").len(), 1);
    // Even the right code is refused while locked, and the prompt says so.
    let csrf = form_field(&h.respond(&with_session(get("/_portcullis/logout"), &cookie)).text(), "csrf");
    let right = h.respond(&post_form(
        "/_portcullis/mfa",
        &cookie,
        &[("csrf", &csrf), ("code", &code_at(&secret, h.clock.now()))],
    ));
    assert_eq!(right.status, 429);
    assert_eq!(h.respond(&with_session(get("/_portcullis/mfa"), &cookie)).status, 429);
    h.clock.advance(901);
    assert_eq!(submit_code(&h, &cookie, "code", &code_at(&secret, h.clock.now())).status, 302);
}

#[test]
fn a_backup_code_works_once_and_few_codes_left_are_warned_about() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (first, _) = idp_login(&h);
    let (_, codes) = enrol(&h, &first);
    let (cookie, _) = idp_login(&h);
    let ok = submit_code(&h, &cookie, "backup_code", &codes[0].to_uppercase().replace('-', " "));
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert_eq!(h.events("backup_code_used").len(), 1);
    let (again, _) = idp_login(&h);
    let reused = submit_code(&h, &again, "backup_code", &codes[0]);
    assert_eq!(reused.status, 401);
    assert!(reused.text().contains("not valid"));
    for c in &codes[1..8] {
        let (s, _) = idp_login(&h);
        assert_eq!(submit_code(&h, &s, "backup_code", c).status, 302);
    }
    let (s, _) = idp_login(&h);
    let page = h.respond(&with_session(get("/_portcullis/mfa?rd=/"), &s)).text();
    assert!(page.contains("You have 2 backup codes left"), "{page}");
}

#[test]
fn step_up_asks_again_for_recent_mfa_and_never_replays_a_post() {
    let h = mfa_harness(json!({"step_up": [{"path": "/admin", "match": "prefix", "max_age": 60}]}), json!({}));
    let (cookie, next) = idp_login(&h);
    assert_eq!(next, "/dashboard", "MFA not required, not enrolled: straight in");
    // Step-up needs enrolment first.
    let r = h.respond(&with_session(get("/admin/users"), &cookie));
    assert_eq!(r.headers.get("location"), Some("/_portcullis/mfa?rd=%2Fadmin%2Fusers&reason=step_up"));
    let (secret, _) = enrol(&h, &cookie);
    h.forward(&with_session(get("/admin/users"), &cookie));
    h.clock.advance(61);
    h.forward(&with_session(get("/dashboard"), &cookie));
    let again = h.respond(&with_session(get("/admin/users"), &cookie));
    assert_eq!(again.status, 302);
    let post = portcullis::http::Request::new("POST", &format!("https://{HOST}/admin/users/delete"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "text/html")
        .header("referer", &format!("https://{HOST}/admin/users"));
    let refused = h.respond(&with_session(post, &cookie));
    assert_eq!(refused.status, 403);
    assert!(refused.text().contains("repeat the action"));
    assert!(refused.text().contains("/_portcullis/mfa?rd=%2Fadmin%2Fusers&amp;reason=step_up"));
    let prompt = h.respond(&with_session(get("/_portcullis/mfa?rd=/admin/users&reason=step_up"), &cookie));
    assert!(prompt.text().contains("recent confirmation"));
    let csrf = form_field(&prompt.text(), "csrf");
    let ok = h.respond(&post_form(
        "/_portcullis/mfa",
        &cookie,
        &[("csrf", &csrf), ("rd", "/admin/users"), ("code", &code_at(&secret, h.clock.now()))],
    ));
    assert_eq!(ok.headers.get("location"), Some("/admin/users"));
    h.forward(&with_session(get("/admin/users"), &cookie));
}

#[test]
fn admin_reset_clears_mfa_and_the_user_enrols_again() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (first, _) = idp_login(&h);
    enrol(&h, &first);
    let user = "https://idp.test/alice";
    let call = |method: &str, path: &str, auth: Option<&str>, body: &str| {
        let mut r = portcullis::http::Request::new(method, &format!("https://{HOST}/_portcullis/admin{path}"))
            .unwrap()
            .header("host", HOST)
            .header("accept", "application/json")
            .with_body(body.as_bytes().to_vec());
        if let Some(a) = auth {
            r = r.header("authorization", &format!("Bearer {a}"));
        }
        h.respond(&r)
    };
    let q = format!("/mfa?user_id={}", urlencode(user));
    assert_eq!(call("GET", &q, Some("wrong-token"), "").status, 401);
    assert_eq!(call("GET", &q, None, "").status, 401);
    let status = call("GET", &q, Some(ADMIN_TOKEN), "");
    assert_eq!(json_body(&status)["enrolled"], true);
    assert_eq!(json_body(&status)["backup_codes_left"], 10);
    let bad = call("POST", "/mfa/reset", Some(ADMIN_TOKEN), "{}");
    assert_eq!(bad.status, 400);
    assert_eq!(json_body(&bad)["message"], "field user_id (string) is required");
    assert_eq!(call("POST", "/mfa/reset", Some(ADMIN_TOKEN), r#"{"user_id":"https://idp.test/nobody"}"#).status, 404);
    let reset = call("POST", "/mfa/reset", Some(ADMIN_TOKEN), &json!({"user_id": user}).to_string());
    assert_eq!(reset.status, 200);
    let line = h.events("mfa_reset").pop().unwrap();
    assert_eq!(line["actor"], "api-token");
    assert_eq!(line["user"], user);
    assert_eq!(json_body(&call("GET", &q, Some(ADMIN_TOKEN), ""))["enrolled"], false);
    let (_, next) = idp_login(&h);
    assert_eq!(next, "/_portcullis/mfa/enroll?rd=%2Fdashboard", "re-enrolment after reset");
}

#[test]
fn a_session_without_the_superuser_role_is_not_an_admin() {
    let h = mfa_harness(json!({}), json!({}));
    h.idp.borrow_mut().extra_claims = json!({"groups": ["engineering"]});
    let (cookie, _) = idp_login(&h);
    let r = h.respond(&with_session(api("/_portcullis/admin/mfa?user_id=x"), &cookie));
    assert_eq!(r.status, 403);
    assert_eq!(json_body(&r)["error"], "admin_forbidden");
}

#[test]
fn idp_mfa_is_accepted_when_configured() {
    let h = mfa_harness(json!({"required": true}), json!({"accept_idp_mfa": true}));
    h.idp.borrow_mut().extra_claims = json!({"amr": ["pwd", "mfa"]});
    let (cookie, next) = idp_login(&h);
    assert_eq!(next, "/dashboard");
    let f = h.forward(&with_session(get("/dashboard"), &cookie));
    assert_eq!(f.headers.get("X-Portcullis-Amr"), Some("pwd,mfa"));
}

#[test]
fn regenerating_backup_codes_needs_a_fresh_code_and_voids_the_old_ones() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (first, _) = idp_login(&h);
    let (secret, old_codes) = enrol(&h, &first);
    h.clock.advance(30);
    let csrf = form_field(&h.respond(&with_session(get("/_portcullis/logout"), &first)).text(), "csrf");
    let wrong = h.respond(&post_form("/_portcullis/mfa/backup-codes", &first, &[("csrf", &csrf), ("code", "000000")]));
    assert_eq!(wrong.status, 400);
    let r = h.respond(&post_form(
        "/_portcullis/mfa/backup-codes",
        &first,
        &[("csrf", &csrf), ("code", &code_at(&secret, h.clock.now()))],
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let new_codes: Vec<String> =
        r.text().split("<li><code>").skip(1).map(|c| c.split('<').next().unwrap().to_owned()).collect();
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
    let (s1, _) = idp_login(&h);
    assert_eq!(submit_code(&h, &s1, "backup_code", &old_codes[1]).status, 401, "old codes are void");
    let (s2, _) = idp_login(&h);
    assert_eq!(submit_code(&h, &s2, "backup_code", &new_codes[0]).status, 302);
    assert_eq!(h.events("backup_codes_regenerated").len(), 1);
}

#[test]
fn with_a_coordinator_a_used_code_is_refused_where_the_record_lags() {
    for coordinated in [false, true] {
        let h = mfa_harness(json!({"required": true}), json!({}));
        h.use_coord.set(coordinated);
        let (first, _) = idp_login(&h);
        let (secret, _) = enrol(&h, &first);
        h.clock.advance(30);
        let mfa_key = h.kv.keys().into_iter().find(|k| k.starts_with("mfa:")).unwrap();
        let stale = h.kv.raw_get(&mfa_key).unwrap();
        let code = code_at(&secret, h.clock.now());
        let (a, _) = idp_login(&h);
        assert_eq!(submit_code(&h, &a, "code", &code).status, 302);
        // Another location still reads the record from before that code was used.
        h.kv.raw_put(&mfa_key, &stale);
        let (b, _) = idp_login(&h);
        let again = submit_code(&h, &b, "code", &code);
        if coordinated {
            assert_eq!(again.status, 401);
            assert!(again.text().contains("already used"));
        } else {
            assert_eq!(again.status, 302, "KV alone cannot see the use yet");
        }
    }
}

#[test]
fn with_a_coordinator_wrong_codes_lock_everywhere_and_an_admin_reset_unlocks() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    h.use_coord.set(true);
    let (first, _) = idp_login(&h);
    let (secret, _) = enrol(&h, &first);
    let (cookie, _) = idp_login(&h);
    h.clock.advance(30);
    // A right code clears earlier wrong ones.
    let (early, _) = idp_login(&h);
    assert_eq!(submit_code(&h, &early, "code", "123456").status, 401);
    assert_eq!(submit_code(&h, &early, "code", &code_at(&secret, h.clock.now())).status, 302);
    h.clock.advance(30);
    for i in 0..4 {
        let r = submit_code(&h, &cookie, "code", "123456");
        assert_eq!(r.status, 401);
        assert!(r.text().contains(&format!("{} attempt", 4 - i)), "{}", r.text());
    }
    assert_eq!(submit_code(&h, &cookie, "code", "123456").status, 429);
    // The count lives at the coordinator: the KV record (what a lagging location reads)
    // has no failures, and the lock still holds.
    let mfa_key = h.kv.keys().into_iter().find(|k| k.starts_with("mfa:")).unwrap();
    assert!(!h.kv.raw_get(&mfa_key).unwrap().contains("\"locked_until\":1"));
    let (other, _) = idp_login(&h);
    assert_eq!(h.respond(&with_session(get("/_portcullis/mfa"), &other)).status, 429);
    let admin = |method: &str, path: &str, body: &str| {
        h.respond(
            &portcullis::http::Request::new(method, &format!("https://{HOST}/_portcullis/admin{path}"))
                .unwrap()
                .header("host", HOST)
                .header("accept", "application/json")
                .header("authorization", &format!("Bearer {ADMIN_TOKEN}"))
                .with_body(body.as_bytes().to_vec()),
        )
    };
    let user = urlencode("https://idp.test/alice");
    let status = admin("GET", &format!("/mfa?user_id={user}"), "");
    assert!(json_body(&status)["locked_until"].as_u64().unwrap() > h.clock.now());
    let reset = admin("POST", "/mfa/reset", r#"{"user_id":"https://idp.test/alice"}"#);
    assert_eq!(reset.status, 200, "{}", reset.text());
    let status = admin("GET", &format!("/mfa?user_id={user}"), "");
    assert_eq!(json_body(&status)["locked_until"], serde_json::Value::Null);
}

#[test]
fn with_a_coordinator_a_used_backup_code_is_refused_where_the_record_lags() {
    for coordinated in [false, true] {
        let h = mfa_harness(json!({"required": true}), json!({}));
        h.use_coord.set(coordinated);
        let (first, _) = idp_login(&h);
        let (_, codes) = enrol(&h, &first);
        let mfa_key = h.kv.keys().into_iter().find(|k| k.starts_with("mfa:")).unwrap();
        let stale = h.kv.raw_get(&mfa_key).unwrap();
        let (a, _) = idp_login(&h);
        assert_eq!(submit_code(&h, &a, "backup_code", &codes[0]).status, 302);
        // Another location still reads the record from before the code was used.
        h.kv.raw_put(&mfa_key, &stale);
        let (b, _) = idp_login(&h);
        let again = submit_code(&h, &b, "backup_code", &codes[0]).status;
        assert_eq!(again, if coordinated { 401 } else { 302 }, "coordinated: {coordinated}");
    }
}
