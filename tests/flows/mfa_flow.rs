//! The TOTP second factor in the sign-in flow: enrolment, prompt, replay, lockout, backup
//! codes, step-up and admin reset, through the gateway core with in-memory ports.
//! Long because each refusal of the second factor is its own test, in the order a user
//! meets them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
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

/// The key shown on an enrolment page, in its groups of four.
fn key_groups(html: &str) -> String {
    html.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned()
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
    let groups = key_groups(&html);
    assert_eq!(groups.split(' ').count(), 8, "160-bit secret in groups of four");
    let secret = base32_decode(&groups).unwrap();
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
    // Adding the factor needs a fresh IdP sign-in, and enrolling is not a verification.
    let login =
        h.respond(&with_session(get("/_portcullis/mfa/enroll"), &cookie)).headers.get("location").unwrap().to_owned();
    let fresh = fresh_sign_in(&h, &login, Some(h.clock.now()));
    let cookie = set_cookie_value(&fresh, "__Host-portcullis_session").unwrap();
    let (secret, _) = enrol(&h, &cookie);
    h.clock.advance(30);
    assert_eq!(submit_code(&h, &cookie, "code", &code_at(&secret, h.clock.now())).status, 302);
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

/// The origin's view of a forwarded request's signed assertion: its claims.
fn assertion_claims(f: &portcullis::gateway::Forward) -> serde_json::Value {
    let jwt = f.headers.get("X-Portcullis-Assertion").expect("assertion");
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&portcullis::crypto::b64url_decode(payload).unwrap()).unwrap()
}

/// A user enrolled at a first sign-in; returns the secret and backup codes.
fn enrolled(h: &Harness) -> (Vec<u8>, Vec<String>) {
    let (first, _) = idp_login(h);
    enrol(h, &first)
}

/// A sign-in that finished its second factor; returns the complete session's cookie.
fn verified_login(h: &Harness, secret: &[u8]) -> String {
    h.clock.advance(30);
    let (cookie, _) = idp_login(h);
    assert_eq!(submit_code(h, &cookie, "code", &code_at(secret, h.clock.now())).status, 302);
    cookie
}

fn regenerate(h: &Harness, cookie: &str, code: &str) -> portcullis::http::Response {
    regenerate_with(h, cookie, &prompt_csrf(h, cookie), code)
}

fn regenerate_with(h: &Harness, cookie: &str, csrf: &str, code: &str) -> portcullis::http::Response {
    h.respond(&post_form("/_portcullis/mfa/backup-codes", cookie, &[("csrf", csrf), ("rd", "/"), ("code", code)]))
}

#[test]
fn a_session_waiting_for_its_second_factor_cannot_regenerate_backup_codes() {
    for coordinated in [false, true] {
        let h = mfa_harness(json!({"required": true}), json!({}));
        h.use_coord.set(coordinated);
        let (secret, codes) = enrolled(&h);
        h.clock.advance(30);
        // The attacker knows the IdP password only: the session waits for its factor.
        let (waiting, _) = idp_login(&h);
        let r = regenerate(&h, &waiting, &code_at(&secret, h.clock.now()));
        assert_ne!(r.status, 200, "coordinated: {coordinated}: {}", r.text());
        assert!(!r.text().contains("<li><code>"), "no backup codes shown to a waiting session");
        assert!(h.events("backup_codes_regenerated").is_empty());
        // The user's codes are unchanged and the session still waits.
        assert_eq!(h.respond(&with_session(get("/dashboard"), &waiting)).status, 302);
        let (other, _) = idp_login(&h);
        assert_eq!(submit_code(&h, &other, "backup_code", &codes[0]).status, 302, "old codes still work");
    }
}

#[test]
fn wrong_codes_on_every_route_count_toward_one_lock_and_a_right_code_while_locked_is_refused() {
    for coordinated in [false, true] {
        let h = mfa_harness(json!({"required": true}), json!({}));
        h.use_coord.set(coordinated);
        let (secret, codes) = enrolled(&h);
        let complete = verified_login(&h, &secret);
        let complete_csrf = prompt_csrf(&h, &complete);
        h.clock.advance(30);
        // Two wrong codes at regeneration, two at the prompt: one count.
        for _ in 0..2 {
            assert_eq!(regenerate(&h, &complete, "000000").status, 400, "coordinated: {coordinated}");
        }
        let (waiting, _) = idp_login(&h);
        let waiting_csrf = prompt_csrf(&h, &waiting);
        for _ in 0..2 {
            assert_eq!(submit_code(&h, &waiting, "code", "000000").status, 401);
        }
        // The fifth locks, wherever it is made.
        assert_eq!(regenerate_with(&h, &complete, &complete_csrf, "000000").status, 429, "coordinated: {coordinated}");
        // Now right codes are refused on every route, without being checked.
        let right = code_at(&secret, h.clock.now());
        assert_eq!(regenerate_with(&h, &complete, &complete_csrf, &right).status, 429, "coordinated: {coordinated}");
        for (field, code) in [("code", right.as_str()), ("backup_code", codes[0].as_str())] {
            let r = h.respond(&post_form(
                "/_portcullis/mfa",
                &waiting,
                &[("csrf", &waiting_csrf), ("rd", "/"), (field, code)],
            ));
            assert_eq!(r.status, 429, "coordinated: {coordinated}: {field}");
        }
        assert_eq!(h.respond(&with_session(get("/dashboard"), &waiting)).status, 302, "still waiting");
        assert_eq!(h.events("mfa_locked").len(), 1, "coordinated: {coordinated}");
        // The backup code was not spent by the refused attempt.
        h.clock.advance(901);
        let (later, _) = idp_login(&h);
        assert_eq!(submit_code(&h, &later, "backup_code", &codes[0]).status, 302, "coordinated: {coordinated}");
    }
}

#[test]
fn enrolment_secrets_belong_to_the_session_that_was_shown_them() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (a, _) = idp_login(&h);
    let (b, _) = idp_login(&h);
    let secret_of = |cookie: &str| {
        let page = h.respond(&with_session(get("/_portcullis/mfa/enroll?rd=/dashboard"), cookie));
        assert_eq!(page.status, 200, "{}", page.text());
        let html = page.text();
        let groups = key_groups(&html);
        (base32_decode(&groups).unwrap(), form_field(&html, "csrf"))
    };
    let (secret_a, csrf_a) = secret_of(&a);
    let (secret_b, csrf_b) = secret_of(&b);
    assert_ne!(secret_a, secret_b, "each session is shown its own secret");
    assert_eq!(secret_of(&a).0, secret_a, "a reload shows the same one");
    // B cannot confirm A's secret (whoever saw it first cannot plant it later).
    let code_a = code_at(&secret_a, h.clock.now());
    let r = h.respond(&post_form("/_portcullis/mfa/enroll", &b, &[("csrf", &csrf_b), ("rd", "/"), ("code", &code_a)]));
    assert_eq!(r.status, 401);
    let r = h.respond(&post_form("/_portcullis/mfa/enroll", &a, &[("csrf", &csrf_a), ("rd", "/"), ("code", &code_a)]));
    assert_eq!(r.status, 200, "{}", r.text());
    // Enrolled: the user's other sessions ended, and B's secret is void with its session.
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &b));
    assert!(
        page.headers.get("location").unwrap().starts_with("/_portcullis/login?"),
        "{:?}",
        page.headers.get("location")
    );
    let code_b = code_at(&secret_b, h.clock.now());
    let r = h.respond(&post_form("/_portcullis/mfa/enroll", &b, &[("csrf", &csrf_b), ("rd", "/"), ("code", &code_b)]));
    assert_eq!(r.status, 302);
    assert!(r.headers.get("location").unwrap().starts_with("/_portcullis/login?"));
    assert_eq!(h.respond(&with_session(get("/dashboard"), &b)).status, 302);
    assert!(h.events("session_revoked").iter().any(|e| e["cause"] == "a second factor was added"));
}

#[test]
fn an_enrolment_secret_expires_after_ten_minutes() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (a, _) = idp_login(&h);
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &a)).text();
    let groups = key_groups(&page);
    let secret = base32_decode(&groups).unwrap();
    h.clock.advance(601);
    let r = h.respond(&post_form(
        "/_portcullis/mfa/enroll",
        &a,
        &[("csrf", &form_field(&page, "csrf")), ("rd", "/"), ("code", &code_at(&secret, h.clock.now()))],
    ));
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(r.headers.get("location").unwrap().starts_with("/_portcullis/mfa/enroll"));
    assert!(h.events("mfa_enrolled").is_empty());
    let fresh = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &a)).text();
    assert!(!fresh.contains(&groups), "a new secret after expiry");
}

/// Follows the gateway to a fresh IdP sign-in; the IdP confirms it with `auth_time` unless
/// told otherwise. Returns the callback's answer.
fn fresh_sign_in(h: &Harness, login: &str, auth_time: Option<u64>) -> portcullis::http::Response {
    let r = h.respond(&get(login));
    assert_eq!(r.status, 302, "{}", r.text());
    let auth = url::Url::parse(r.headers.get("location").unwrap()).unwrap();
    let q: Vec<(String, String)> = auth.query_pairs().into_owned().collect();
    assert!(q.contains(&("prompt".into(), "login".into())) && q.contains(&("max_age".into(), "0".into())), "{q:?}");
    let pending = set_cookie_value(&r, "__Host-portcullis_pending").unwrap();
    h.idp.borrow_mut().extra_claims = match auth_time {
        Some(t) => json!({"auth_time": t}),
        None => json!({}),
    };
    h.respond(&h.callback_for(&auth, &pending))
}

#[test]
fn adding_a_factor_outside_the_first_sign_in_needs_a_fresh_idp_sign_in() {
    let h = mfa_harness(json!({"step_up": [{"path": "/admin", "match": "prefix", "max_age": 60}]}), json!({}));
    let (stolen, next) = idp_login(&h);
    assert_eq!(next, "/dashboard", "MFA optional, none enrolled: a complete session");
    // A stolen session cookie cannot see or plant an authenticator.
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll?rd=/admin"), &stolen));
    assert_eq!(page.status, 302);
    let login = page.headers.get("location").unwrap().to_owned();
    assert!(login.starts_with("/_portcullis/login?provider=corp&reauth=1&rd="), "{login}");
    assert!(!page.text().contains("otpauth"));
    let csrf =
        json_body(&h.respond(&with_session(api("/_portcullis/me"), &stolen)))["csrf"].as_str().unwrap().to_owned();
    let post = h.respond(&post_form("/_portcullis/mfa/enroll", &stolen, &[("csrf", &csrf), ("code", "123456")]));
    assert_eq!(post.status, 401, "{}", post.text());
    assert!(!h.kv.keys().iter().any(|k| k.starts_with("mfa")), "nothing stored: {:?}", h.kv.keys());
    // An IdP that does not confirm a fresh sign-in (no auth_time, or an old one) is refused.
    assert_eq!(fresh_sign_in(&h, &login, None).status, 401);
    assert_eq!(fresh_sign_in(&h, &login, Some(h.clock.now() - 3600)).status, 401);
    assert!(h.events("login_failure").iter().any(|e| e["code"] == "fresh_sign_in_required"));
    // A confirmed fresh sign-in may enrol, within `mfa.fresh_sign_in`.
    let ok = fresh_sign_in(&h, &login, Some(h.clock.now()));
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert!(
        ok.headers.get("location").unwrap().starts_with("/_portcullis/mfa/enroll?rd=%2Fadmin"),
        "{:?}",
        ok.headers.get("location")
    );
    let fresh = set_cookie_value(&ok, "__Host-portcullis_session").unwrap();
    let (secret, _) = enrol(&h, &fresh);
    // Enrolling is not a verification: the step-up rule still asks for a code.
    let r = h.respond(&with_session(get("/admin"), &fresh));
    assert_eq!(r.headers.get("location"), Some("/_portcullis/mfa?rd=%2Fadmin&reason=step_up"));
    h.clock.advance(30);
    assert_eq!(submit_code(&h, &fresh, "code", &code_at(&secret, h.clock.now())).status, 302);
    h.forward(&with_session(get("/admin"), &fresh));
    // Later than `fresh_sign_in` after that sign-in, a new factor would need another one
    // (here: enrolled already, so the prompt).
    h.clock.advance(301);
    let again = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &fresh));
    assert!(again.headers.get("location").unwrap().starts_with("/_portcullis/mfa?"));
}

#[test]
fn a_fresh_sign_in_grant_lapses_after_the_configured_time() {
    let h = mfa_harness(json!({}), json!({}));
    let (s, _) = idp_login(&h);
    let login =
        h.respond(&with_session(get("/_portcullis/mfa/enroll"), &s)).headers.get("location").unwrap().to_owned();
    let ok = fresh_sign_in(&h, &login, Some(h.clock.now()));
    let fresh = set_cookie_value(&ok, "__Host-portcullis_session").unwrap();
    assert_eq!(h.respond(&with_session(get("/_portcullis/mfa/enroll"), &fresh)).status, 200);
    h.clock.advance(301);
    let late = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &fresh));
    assert!(late.headers.get("location").unwrap().contains("reauth=1"), "{:?}", late.headers.get("location"));
}

#[test]
fn a_step_up_reaches_the_origin_at_once() {
    let h = mfa_harness(
        json!({"required": true, "step_up": [{"path": "/admin", "match": "prefix", "max_age": 60}]}),
        json!({"accept_idp_mfa": true}),
    );
    let (secret, _) = enrolled(&h);
    // Later sign-ins carry the IdP's own MFA.
    h.idp.borrow_mut().extra_claims = json!({"amr": ["pwd", "mfa"]});
    let (cookie, next) = idp_login(&h);
    assert_eq!(next, "/dashboard");
    let before = assertion_claims(&h.forward(&with_session(get("/admin"), &cookie)));
    assert_eq!(before["amr"], json!(["pwd", "mfa"]));
    h.clock.advance(61);
    assert_eq!(h.respond(&with_session(get("/admin"), &cookie)).status, 302, "step-up due");
    assert_eq!(submit_code(&h, &cookie, "code", &code_at(&secret, h.clock.now())).status, 302);
    let after = h.forward(&with_session(get("/admin"), &cookie));
    assert_eq!(after.headers.get("X-Portcullis-Amr"), Some("pwd,mfa,otp"));
    assert_eq!(assertion_claims(&after)["amr"], json!(["pwd", "mfa", "otp"]), "not the cached assertion");
}

#[test]
fn with_kv_alone_a_revoked_session_is_not_written_back_by_an_isolate_that_still_holds_it() {
    let mut doc: serde_json::Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    doc["gateway"]["session_cache_ttl"] = json!(120);
    doc["gateway"]["last_seen_interval"] = json!(60);
    let h = Harness::new(&doc.to_string());
    let here = h.isolate();
    let cookie = h.login();
    // This isolate holds the session in its cache.
    assert!(matches!(h.handle_in(&here, &with_session(api("/x"), &cookie)), portcullis::gateway::Action::Forward(_)));
    // Signed out in another isolate.
    let csrf =
        json_body(&h.respond(&with_session(api("/_portcullis/me"), &cookie)))["csrf"].as_str().unwrap().to_owned();
    assert_eq!(h.respond(&post_form("/_portcullis/logout", &cookie, &[("csrf", &csrf)])).status, 302);
    // Within its cache bound this isolate still serves it (the documented bound), and its
    // last-seen write is due: it must not bring the record back.
    h.clock.advance(61);
    let writes = h.kv.writes.get();
    assert!(matches!(h.handle_in(&here, &with_session(api("/x"), &cookie)), portcullis::gateway::Action::Forward(_)));
    assert_eq!(h.kv.writes.get(), writes, "the due last-seen write was not made");
    assert!(!h.kv.keys().iter().any(|k| k.starts_with("sess:")), "written back: {:?}", h.kv.keys());
    // After the bound, refused in every isolate.
    h.clock.advance(120);
    for gw in [&here, &h.gw] {
        match h.handle_in(gw, &with_session(api("/x"), &cookie)) {
            portcullis::gateway::Action::Respond(r) => assert_eq!(r.status, 401),
            portcullis::gateway::Action::Forward(f) => panic!("revoked session forwarded to {}", f.url),
        }
    }
}

#[test]
fn with_kv_alone_a_record_written_back_in_a_race_is_refused() {
    let h = Harness::new(&config(json!({}), json!({})));
    let cookie = h.login();
    assert!(matches!(h.handle(&with_session(api("/x"), &cookie)), portcullis::gateway::Action::Forward(_)));
    let key = h.kv.keys().into_iter().find(|k| k.starts_with("sess:")).unwrap();
    let record = h.kv.raw_get(&key).unwrap();
    let csrf =
        json_body(&h.respond(&with_session(api("/_portcullis/me"), &cookie)))["csrf"].as_str().unwrap().to_owned();
    assert_eq!(h.respond(&post_form("/_portcullis/logout", &cookie, &[("csrf", &csrf)])).status, 302);
    // An isolate that read no tombstone yet wrote the record back.
    h.kv.raw_put(&key, &record);
    h.clock.advance(11);
    match h.handle_in(&h.isolate(), &with_session(api("/x"), &cookie)) {
        portcullis::gateway::Action::Respond(r) => assert_eq!(r.status, 401),
        portcullis::gateway::Action::Forward(f) => panic!("revoked session forwarded to {}", f.url),
    }
    assert!(h.events("session_refused").iter().any(|e| e["cause"] == "session revoked (tombstone)"));
}

fn submit_code_in(h: &Harness, gw: &portcullis::gateway::Gateway, cookie: &str, csrf: &str, code: &str) -> u16 {
    match h
        .handle_in(gw, &post_form("/_portcullis/mfa", cookie, &[("csrf", csrf), ("rd", "/dashboard"), ("code", code)]))
    {
        portcullis::gateway::Action::Respond(r) => r.status,
        portcullis::gateway::Action::Forward(f) => panic!("forwarded to {}", f.url),
    }
}

#[test]
fn with_kv_alone_a_location_with_a_stale_record_cannot_erase_the_lock() {
    let h = mfa_harness(json!({"required": true}), json!({}));
    let (secret, _) = enrolled(&h);
    let key = h.kv.keys().into_iter().find(|k| k.starts_with("mfa:")).unwrap();
    let before_attack = h.kv.raw_get(&key).unwrap();
    h.clock.advance(30);
    let (waiting, _) = idp_login(&h);
    let csrf = prompt_csrf(&h, &waiting);
    let here = h.isolate();
    for _ in 0..4 {
        assert_eq!(submit_code_in(&h, &here, &waiting, &csrf, "000000"), 401);
    }
    assert_eq!(submit_code_in(&h, &here, &waiting, &csrf, "000000"), 429, "locked here");
    // Another location's replica still holds the record from before the lock; a wrong code
    // there writes it back.
    h.kv.raw_put(&key, &before_attack);
    assert_eq!(submit_code_in(&h, &h.isolate(), &waiting, &csrf, "000000"), 429, "the lock has a key of its own");
    let right = code_at(&secret, h.clock.now());
    assert_eq!(submit_code_in(&h, &h.isolate(), &waiting, &csrf, &right), 429, "a fresh isolate still sees the lock");
}

#[test]
fn adding_a_factor_ends_the_sessions_that_never_passed_it() {
    let h = mfa_harness(json!({}), json!({}));
    // Signed in with a phished password while the user had no factor: a complete session.
    let (attacker, _) = idp_login(&h);
    assert!(matches!(h.handle(&with_session(get("/dashboard"), &attacker)), portcullis::gateway::Action::Forward(_)));
    let login =
        h.respond(&with_session(get("/_portcullis/mfa/enroll"), &attacker)).headers.get("location").unwrap().to_owned();
    let fresh = set_cookie_value(&fresh_sign_in(&h, &login, Some(h.clock.now())), "__Host-portcullis_session").unwrap();
    enrol(&h, &fresh);
    h.clock.advance(11);
    assert!(
        !matches!(h.handle(&with_session(get("/dashboard"), &attacker)), portcullis::gateway::Action::Forward(_)),
        "a session that never passed the new factor goes on"
    );
    assert!(matches!(h.handle(&with_session(get("/dashboard"), &fresh)), portcullis::gateway::Action::Forward(_)));
}

#[test]
fn a_racing_second_enrolment_cannot_replace_the_first() {
    for coordinated in [false, true] {
        let h = mfa_harness(json!({"required": true}), json!({}));
        h.use_coord.set(coordinated);
        let (victim, _) = idp_login(&h);
        let (attacker, _) = idp_login(&h);
        let enrol_page = |cookie: &str| {
            let html = h.respond(&with_session(get("/_portcullis/mfa/enroll"), cookie)).text();
            let groups = key_groups(&html);
            (base32_decode(&groups).unwrap(), form_field(&html, "csrf"))
        };
        let (vs, vc) = enrol_page(&victim);
        let (atk_secret, atk_csrf) = enrol_page(&attacker);
        let confirm = |cookie: &str, csrf: &str, code: &str| {
            h.respond(&post_form("/_portcullis/mfa/enroll", cookie, &[("csrf", csrf), ("rd", "/"), ("code", code)]))
        };
        // The attacker confirms first in a location whose KV has not seen the victim's
        // record yet: simulated by confirming the victim, then hiding the record.
        assert_eq!(confirm(&victim, &vc, &code_at(&vs, h.clock.now())).status, 200);
        let key = h.kv.keys().into_iter().find(|k| k.starts_with("mfa:")).unwrap();
        let enrolled_record = h.kv.raw_get(&key).unwrap();
        h.kv.raw_delete(&key);
        // The victim's enrolment ended the attacker's session; a racing request that read it
        // before that still holds it, so put it back.
        let planted = confirm(&attacker, &atk_csrf, &code_at(&atk_secret, h.clock.now()));
        let replaced = h.kv.raw_get(&key).is_some_and(|r| r != enrolled_record);
        if coordinated {
            assert_ne!(planted.status, 200, "the attacker's authenticator was enrolled");
            assert!(!replaced);
        } else {
            // KV alone cannot see the first enrolment there: the attacker's session was
            // already ended by it, which is what stops this.
            assert_ne!(planted.status, 200, "the attacker's ended session enrolled");
        }
    }
}

#[test]
fn with_kv_alone_a_lock_in_one_tenant_does_not_lock_another() {
    let acme: serde_json::Value = serde_json::from_str(&config(json!({"mfa": {"required": true}}), json!({}))).unwrap();
    let mut doc = acme.clone();
    let mut beta = acme["tenants"][0].clone();
    beta["id"] = json!("beta");
    beta["hosts"] = json!(["beta.test"]);
    doc["tenants"].as_array_mut().unwrap().push(beta);
    let h = Harness::new(&doc.to_string());
    let on_beta = |mut req: portcullis::http::Request| {
        req.headers.set("host", "beta.test");
        req.url.set_host(Some("beta.test")).unwrap();
        req
    };
    // alice has a factor in acme and one in beta.
    enrolled(&h);
    let beta_login = || {
        let r = h.respond(&on_beta(get("/_portcullis/login?provider=corp&rd=/dashboard")));
        let auth = url::Url::parse(r.headers.get("location").unwrap()).unwrap();
        let pending = set_cookie_value(&r, "__Host-portcullis_pending").unwrap();
        set_cookie_value(&h.respond(&on_beta(h.callback_for(&auth, &pending))), "__Host-portcullis_session").unwrap()
    };
    let beta_first = beta_login();
    let page = h.respond(&on_beta(with_session(get("/_portcullis/mfa/enroll"), &beta_first))).text();
    let groups = key_groups(&page);
    let beta_secret = base32_decode(&groups).unwrap();
    let form =
        [("csrf", form_field(&page, "csrf")), ("rd", "/".into()), ("code", code_at(&beta_secret, h.clock.now()))];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(h.respond(&on_beta(post_form("/_portcullis/mfa/enroll", &beta_first, &form))).status, 200);
    // Five wrong codes lock alice in acme.
    h.clock.advance(30);
    let (waiting, _) = idp_login(&h);
    for _ in 0..4 {
        assert_eq!(submit_code(&h, &waiting, "code", "000000").status, 401);
    }
    assert_eq!(submit_code(&h, &waiting, "code", "000000").status, 429);
    // In beta, in the same isolate, her prompt is not locked.
    let beta_second = beta_login();
    let again = h.respond(&on_beta(with_session(get("/_portcullis/mfa"), &beta_second)));
    assert_eq!(again.status, 200, "acme's lock reached beta");
}

#[test]
fn a_head_request_for_the_enrolment_page_spends_and_records_nothing() {
    let h = mfa_harness(json!({}), json!({}));
    let (complete, _) = idp_login(&h);
    let mut head = with_session(get("/_portcullis/mfa/enroll?rd=/admin"), &complete);
    head.method = "HEAD".into();
    let r = h.respond(&head);
    assert_eq!(r.status, 302, "answered as the page's GET: off to a fresh sign-in");
    assert!(r.body.is_empty());
    assert!(h.events("login_failure").is_empty(), "a HEAD is no failed sign-in");
}
