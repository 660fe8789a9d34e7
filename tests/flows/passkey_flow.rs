//! Passkeys in the sign-in flow, through the gateway core with in-memory ports: registration
//! at the first sign-in and beside other factors, sign-in, and every refusal (wrong origin,
//! counter regression, removed passkey, replayed challenge, waiting sessions, the shared
//! lock), and a step-up rule that demands a passkey.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use crate::webauthn_support::{b64, unb64, Ceremony, Key};
use portcullis::http::{Request, Response};
use serde_json::{json, Value};

fn harness(mfa: Value) -> Harness {
    Harness::new(&config(json!({"mfa": mfa}), json!({})))
}

fn idp_login(h: &Harness) -> (String, String) {
    let (auth, pending) = h.start_login("/dashboard");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(r.status, 302, "{}", r.text());
    (set_cookie_value(&r, "__Host-portcullis_session").unwrap(), r.headers.get("location").unwrap().to_owned())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The WebAuthn options a page carries for its script.
fn options(html: &str) -> Value {
    let raw = html.split("data-options=\"").nth(1).expect("options on the page").split('"').next().unwrap();
    serde_json::from_str(&unescape(raw)).unwrap()
}

/// An authenticator: one credential (by its id byte) on the fixed ES256 key.
struct Authenticator {
    id: u8,
    counter: u32,
    origin: String,
}

impl Authenticator {
    fn new(id: u8) -> Self {
        Self { id, counter: 0, origin: format!("https://{HOST}") }
    }

    fn ceremony(&self, kind: &'static str, challenge: &str) -> Ceremony {
        let mut c = Ceremony::new(Key::es256(), kind);
        c.challenge = unb64(challenge);
        c.origin = self.origin.clone();
        c.rp_id = HOST.to_owned();
        c.cred_id = vec![self.id; 32];
        c.counter = self.counter;
        c
    }

    fn create(&self, options: &Value) -> String {
        assert_eq!(options["rp"]["id"], HOST);
        String::from_utf8(self.ceremony("webauthn.create", options["challenge"].as_str().unwrap()).registration_json())
            .unwrap()
    }

    fn get(&self, options: &Value) -> String {
        String::from_utf8(self.ceremony("webauthn.get", options["challenge"].as_str().unwrap()).authentication_json())
            .unwrap()
    }
}

/// Registers a passkey through the pages; returns the final answer (backup codes at the
/// first factor, a redirect to the list otherwise).
fn register(h: &Harness, cookie: &str, a: &Authenticator, name: &str) -> Response {
    let page = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register?rd=/dashboard"), cookie));
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    let csp = page.headers.get("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"));
    let credential = a.create(&options(&html));
    h.respond(&post_form(
        "/_portcullis/mfa/passkeys/register",
        cookie,
        &[("csrf", &form_field(&html, "csrf")), ("rd", "/dashboard"), ("name", name), ("credential", &credential)],
    ))
}

/// The prompt's passkey options and CSRF token.
fn prompt(h: &Harness, cookie: &str) -> (Value, String) {
    let page = h.respond(&with_session(get("/_portcullis/mfa?rd=/dashboard"), cookie));
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(html.contains(r#"action="/_portcullis/mfa/passkey" id="passkey-form""#), "{html}");
    (options(&html), form_field(&html, "csrf"))
}

fn post_assertion(h: &Harness, cookie: &str, csrf: &str, credential: &str) -> Response {
    h.respond(&post_form(
        "/_portcullis/mfa/passkey",
        cookie,
        &[("csrf", csrf), ("rd", "/dashboard"), ("credential", credential)],
    ))
}

/// A first sign-in of a tenant that requires a factor, enrolling a passkey; returns the
/// complete session and the backup codes.
fn first_sign_in(h: &Harness, a: &Authenticator) -> (String, Vec<String>) {
    let (cookie, next) = idp_login(h);
    assert!(next.starts_with("/_portcullis/mfa/enroll"), "{next}");
    let enrol = h.respond(&with_session(get(&next), &cookie)).text();
    assert!(enrol.contains("/mfa/passkeys/register"), "the TOTP page offers a passkey instead");
    let done = register(h, &cookie, a, "Laptop");
    assert_eq!(done.status, 200, "{}", done.text());
    let codes: Vec<String> =
        done.text().split("<li><code>").skip(1).map(|c| c.split('<').next().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    (cookie, codes)
}

fn forwarded(h: &Harness, cookie: &str) -> bool {
    matches!(h.handle(&with_session(get("/dashboard"), cookie)), portcullis::gateway::Action::Forward(_))
}

#[test]
fn a_passkey_registered_at_the_first_sign_in_signs_in_later() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    let (first, _) = first_sign_in(&h, &a);
    assert!(forwarded(&h, &first), "the enrolling session is complete");
    assert_eq!(h.events("passkey_registered").len(), 1);
    assert_eq!(h.events("mfa_enrolled").len(), 1);
    // A later sign-in waits for the passkey; the prompt offers it first, and no TOTP form.
    h.clock.advance(60);
    let (second, next) = idp_login(&h);
    assert!(next.starts_with("/_portcullis/mfa?"), "{next}");
    assert!(!forwarded(&h, &second));
    let page = h.respond(&with_session(get(&next), &second)).text();
    assert!(page.contains("Use a passkey") && page.contains("backup_code") && !page.contains("name=\"code\""));
    let (opts, csrf) = prompt(&h, &second);
    assert_eq!(opts["rpId"], HOST);
    assert_eq!(opts["allowCredentials"][0]["id"], b64(&[1; 32]));
    a.counter = 1;
    let ok = post_assertion(&h, &second, &csrf, &a.get(&opts));
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert_eq!(ok.headers.get("location"), Some("/dashboard"));
    assert!(forwarded(&h, &second));
    let me = json_body(&h.respond(&with_session(api("/_portcullis/me"), &second)));
    let amr: Vec<&str> = me["amr"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for v in ["hwk", "user", "pop"] {
        assert!(amr.contains(&v), "{amr:?}");
    }
    // The list shows it, named, with its dates.
    let list = h.respond(&with_session(get("/_portcullis/mfa/passkeys"), &second));
    assert_eq!(list.status, 200);
    assert!(list.text().contains("Laptop") && !list.text().contains("never"), "{}", list.text());
}

#[test]
fn an_assertion_for_another_origin_is_refused() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    first_sign_in(&h, &a);
    let (waiting, _) = idp_login(&h);
    let (opts, csrf) = prompt(&h, &waiting);
    a.counter = 1;
    a.origin = "https://app.test.evil.example".into();
    let r = post_assertion(&h, &waiting, &csrf, &a.get(&opts));
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(!forwarded(&h, &waiting));
    assert!(
        h.events("passkey_failed").iter().any(|e| e["reason"] == "origin_mismatch"),
        "{:?}",
        h.events("passkey_failed")
    );
    assert_eq!(h.events("mfa_failed").len(), 1, "counted like a wrong code");
}

#[test]
fn a_counter_that_goes_backwards_is_refused_and_audited() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    first_sign_in(&h, &a);
    let (s1, _) = idp_login(&h);
    let (opts, csrf) = prompt(&h, &s1);
    a.counter = 5;
    assert_eq!(post_assertion(&h, &s1, &csrf, &a.get(&opts)).status, 302);
    // A clone of the authenticator, behind the original.
    let (s2, _) = idp_login(&h);
    let (opts, csrf) = prompt(&h, &s2);
    a.counter = 3;
    let r = post_assertion(&h, &s2, &csrf, &a.get(&opts));
    assert_eq!(r.status, 401);
    assert!(r.text().contains("counter went backwards"), "{}", r.text());
    assert!(!forwarded(&h, &s2));
    let regressed = h.events("passkey_counter_regressed");
    assert_eq!(regressed.len(), 1);
    assert_eq!((regressed[0]["stored"].as_u64(), regressed[0]["received"].as_u64()), (Some(5), Some(3)));
    assert_eq!(regressed[0]["level"], "warn");
}

#[test]
fn a_removed_passkey_is_refused() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    let mut b = Authenticator::new(2);
    let (first, _) = first_sign_in(&h, &a);
    // Another passkey beside the first needs a fresh IdP sign-in.
    let gate = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register"), &first));
    assert_eq!(gate.status, 302);
    let login = gate.headers.get("location").unwrap().to_owned();
    assert!(login.contains("reauth=passkey"), "{login}");
    let r = h.respond(&get(&login));
    let auth = url::Url::parse(r.headers.get("location").unwrap()).unwrap();
    let pending = set_cookie_value(&r, "__Host-portcullis_pending").unwrap();
    h.idp.borrow_mut().extra_claims = json!({"auth_time": h.clock.now()});
    let ok = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(ok.status, 302, "{}", ok.text());
    let fresh = set_cookie_value(&ok, "__Host-portcullis_session").unwrap();
    // The fresh sign-in passes the factor first, then adds the passkey.
    let (opts, csrf) = prompt(&h, &fresh);
    a.counter = 1;
    assert_eq!(post_assertion(&h, &fresh, &csrf, &a.get(&opts)).status, 302);
    let added = register(&h, &fresh, &b, "Phone");
    assert_eq!(added.status, 302, "{}", added.text());
    assert_eq!(added.headers.get("location"), Some("/_portcullis/mfa/passkeys"));
    assert!(!forwarded(&h, &first), "adding a factor ends the user's other sessions");
    // Remove the first one (a CSRF-protected post of a complete session).
    let list = h.respond(&with_session(get("/_portcullis/mfa/passkeys"), &fresh)).text();
    assert!(list.contains("Laptop") && list.contains("Phone"));
    let csrf = form_field(&list, "csrf");
    let no_csrf = h.respond(&post_form("/_portcullis/mfa/passkeys/remove", &fresh, &[("id", &b64(&[1; 32]))]));
    assert!(no_csrf.status == 403 || no_csrf.status == 400, "{}", no_csrf.status);
    let gone =
        h.respond(&post_form("/_portcullis/mfa/passkeys/remove", &fresh, &[("csrf", &csrf), ("id", &b64(&[1; 32]))]));
    assert_eq!(gone.status, 302, "{}", gone.text());
    assert_eq!(h.events("passkey_removed").len(), 1);
    // The last one stays: it is the only factor.
    let last =
        h.respond(&post_form("/_portcullis/mfa/passkeys/remove", &fresh, &[("csrf", &csrf), ("id", &b64(&[2; 32]))]));
    assert_eq!(last.status, 409);
    // The removed passkey no longer signs in; the other one does.
    let (waiting, _) = idp_login(&h);
    let (opts, csrf) = prompt(&h, &waiting);
    assert_eq!(opts["allowCredentials"].as_array().unwrap().len(), 1);
    a.counter = 2;
    let r = post_assertion(&h, &waiting, &csrf, &a.get(&opts));
    assert_eq!(r.status, 401);
    assert!(h.events("passkey_failed").iter().any(|e| e["reason"] == "credential_not_allowed"));
    assert!(!forwarded(&h, &waiting));
    let (opts, csrf) = prompt(&h, &waiting);
    b.counter = 1;
    assert_eq!(post_assertion(&h, &waiting, &csrf, &b.get(&opts)).status, 302);
    assert!(forwarded(&h, &waiting));
}

/// Stores `value` again under the session's challenge key, as a location whose KV has not
/// seen the deletion would still have it.
fn challenge_key(h: &Harness) -> String {
    h.kv.keys().into_iter().find(|k| k.starts_with("pk-chal:") && k.ends_with(":get")).expect("a stored challenge")
}

#[test]
fn a_challenge_is_used_once() {
    for coord in [false, true] {
        let h = harness(json!({"required": true}));
        h.use_coord.set(coord);
        let a = Authenticator::new(1); // no signature counter: only the challenge stops a replay
        first_sign_in(&h, &a);
        let (waiting, _) = idp_login(&h);
        let (opts, csrf) = prompt(&h, &waiting);
        let key = challenge_key(&h);
        let stored = pollster::block_on(portcullis::ports::Kv::get(&h.kv, &key)).unwrap().unwrap();
        let credential = a.get(&opts);
        assert_eq!(post_assertion(&h, &waiting, &csrf, &credential).status, 302);
        // The same response again: the challenge is gone from this session.
        let replay = post_assertion(&h, &waiting, &csrf, &credential);
        assert_eq!(replay.status, 401, "coord {coord}");
        // Another session's challenge does not match it either.
        let (other, _) = idp_login(&h);
        let (_, other_csrf) = prompt(&h, &other);
        assert_eq!(post_assertion(&h, &other, &other_csrf, &credential).status, 401);
        assert!(h.events("passkey_failed").iter().any(|e| e["reason"] == "challenge_mismatch"));
        // Where KV still has the challenge (not yet propagated), the coordination object
        // refuses it; KV alone accepts it within that window (the documented bound).
        pollster::block_on(portcullis::ports::Kv::put(&h.kv, &key, &stored, Some(300))).unwrap();
        let stale = post_assertion(&h, &waiting, &csrf, &credential);
        if coord {
            assert_eq!(stale.status, 401);
            assert!(h.events("passkey_failed").iter().any(|e| e["reason"] == "challenge_reused"));
        } else {
            assert_eq!(stale.status, 302);
        }
    }
}

#[test]
fn a_waiting_session_cannot_manage_passkeys() {
    let h = harness(json!({"required": true}));
    let a = Authenticator::new(1);
    first_sign_in(&h, &a);
    let (waiting, _) = idp_login(&h);
    let (_, csrf) = prompt(&h, &waiting);
    let list = h.respond(&with_session(get("/_portcullis/mfa/passkeys"), &waiting));
    assert!(!(200..300).contains(&list.status), "{}", list.status);
    assert!(!list.text().contains("Laptop"));
    let remove =
        h.respond(&post_form("/_portcullis/mfa/passkeys/remove", &waiting, &[("csrf", &csrf), ("id", &b64(&[1; 32]))]));
    assert!(!(200..400).contains(&remove.status), "{}", remove.status);
    let add = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register"), &waiting));
    assert_eq!(add.status, 302);
    assert!(add.headers.get("location").unwrap().starts_with("/_portcullis/mfa?"));
    let b = Authenticator::new(2);
    let planted = h.respond(&post_form(
        "/_portcullis/mfa/passkeys/register",
        &waiting,
        &[("csrf", &csrf), ("credential", &b.create(&json!({"rp": {"id": HOST}, "challenge": b64(&[9; 32])})))],
    ));
    assert!(!(200..300).contains(&planted.status));
    assert!(h.events("passkey_removed").is_empty() && h.events("passkey_registered").len() == 1);
    assert!(!forwarded(&h, &waiting));
}

#[test]
fn passkey_failures_count_toward_the_same_lock() {
    let h = harness(json!({"required": true, "max_failures": 5}));
    let mut a = Authenticator::new(1);
    let (_, codes) = first_sign_in(&h, &a);
    let (waiting, _) = idp_login(&h);
    a.counter = 1;
    for _ in 0..4 {
        let (opts, csrf) = prompt(&h, &waiting);
        let mut bad = a.ceremony("webauthn.get", opts["challenge"].as_str().unwrap());
        bad.tamper_sig = |s| s[10] ^= 1;
        let r = post_assertion(&h, &waiting, &csrf, &String::from_utf8(bad.authentication_json()).unwrap());
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // The fifth wrong attempt, a backup code this time, locks.
    let (opts, csrf) = prompt(&h, &waiting);
    let wrong = h.respond(&post_form(
        "/_portcullis/mfa",
        &waiting,
        &[("csrf", &csrf), ("rd", "/dashboard"), ("backup_code", "AAAA-BBBB")],
    ));
    assert!(wrong.status >= 400);
    assert_eq!(h.events("mfa_locked").len(), 1);
    // Locked: a right passkey is refused too, and so is a right backup code.
    let r = post_assertion(&h, &waiting, &csrf, &a.get(&opts));
    assert!(r.status == 429 || r.status == 403, "{}", r.status);
    let r = h.respond(&post_form(
        "/_portcullis/mfa",
        &waiting,
        &[("csrf", &csrf), ("rd", "/dashboard"), ("backup_code", &codes[0])],
    ));
    assert!(r.status >= 400);
    assert!(!forwarded(&h, &waiting));
}

#[test]
fn a_step_up_rule_can_demand_a_passkey() {
    let h = harness(json!({
        "required": true,
        "step_up": [{"path": "/vault", "match": "prefix", "max_age": 60, "factor": "passkey"}],
    }));
    let mut a = Authenticator::new(1);
    let (first, codes) = first_sign_in(&h, &a);
    // Enrolling is no verification: the rule asks for the passkey.
    let r = h.respond(&with_session(get("/vault/keys"), &first));
    assert_eq!(r.headers.get("location"), Some("/_portcullis/mfa?rd=%2Fvault%2Fkeys&reason=step_up_passkey"));
    // A session completed with a backup code does not satisfy it either.
    let (backup, _) = idp_login(&h);
    let (_, csrf) = prompt(&h, &backup);
    let r = h.respond(&post_form(
        "/_portcullis/mfa",
        &backup,
        &[("csrf", &csrf), ("rd", "/dashboard"), ("backup_code", &codes[0])],
    ));
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(forwarded(&h, &backup));
    let r = h.respond(&with_session(get("/vault/keys"), &backup));
    assert!(r.headers.get("location").unwrap().ends_with("reason=step_up_passkey"));
    // The step-up prompt offers the passkey only.
    let page = h.respond(&with_session(get("/_portcullis/mfa?rd=/vault/keys&reason=step_up_passkey"), &backup)).text();
    assert!(page.contains("Use a passkey") && !page.contains("backup_code"), "{page}");
    // A refusal shows the passkey-only prompt again.
    let bad = h.respond(&post_form(
        "/_portcullis/mfa/passkey",
        &backup,
        &[
            ("csrf", &form_field(&page, "csrf")),
            ("rd", "/vault/keys"),
            ("reason", "step_up_passkey"),
            ("credential", "{}"),
        ],
    ));
    assert_eq!(bad.status, 401);
    assert!(bad.text().contains("Use a passkey") && !bad.text().contains("backup_code"));
    let page = h.respond(&with_session(get("/_portcullis/mfa?rd=/vault/keys&reason=step_up_passkey"), &backup)).text();
    let opts = options(&page);
    a.counter = 1;
    let ok = post_assertion(&h, &backup, &form_field(&page, "csrf"), &a.get(&opts));
    assert_eq!(ok.status, 302, "{}", ok.text());
    assert!(matches!(h.handle(&with_session(get("/vault/keys"), &backup)), portcullis::gateway::Action::Forward(_)));
    // Later than max_age, again.
    h.clock.advance(61);
    assert_eq!(h.respond(&with_session(get("/vault/keys"), &backup)).status, 302);
}

#[test]
fn a_passkey_only_tenant_enrols_passkeys_and_refuses_a_step_up_rule_without_them() {
    let h = harness(json!({"required": true, "methods": ["passkey"]}));
    let (cookie, next) = idp_login(&h);
    let r = h.respond(&with_session(get(&next), &cookie));
    assert_eq!(r.status, 302);
    assert!(r.headers.get("location").unwrap().starts_with("/_portcullis/mfa/passkeys/register"));
    let bad = Harness::new(&config(
        json!({"mfa": {"methods": ["totp"], "step_up": [{"path": "/v", "max_age": 60, "factor": "passkey"}]}}),
        json!({}),
    ));
    let r = bad.respond(&get("/_portcullis/login"));
    assert!(r.status >= 500, "an invalid configuration serves nothing: {}", r.status);
    // An RP id must be the tenant's host or a parent domain of it.
    for (rp, ok) in [("app.test", true), ("example.com", false), ("pp.test", false)] {
        let h = Harness::new(&config(json!({"mfa": {"passkey": {"rp_id": rp}}}), json!({})));
        assert_eq!(h.respond(&get("/_portcullis/login")).status < 500, ok, "{rp}");
    }
}

#[test]
fn an_admin_reset_removes_every_passkey() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    first_sign_in(&h, &a);
    let user = "https://idp.test/alice";
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
    let status = json_body(&admin("GET", &format!("/mfa?user_id={}", urlencode(user)), ""));
    assert_eq!(status["passkeys"][0]["name"], "Laptop");
    assert_eq!(status["totp"], false);
    assert_eq!(admin("POST", "/mfa/reset", &json!({"user_id": user}).to_string()).status, 200);
    assert_eq!(h.events("mfa_reset").len(), 1);
    let status = json_body(&admin("GET", &format!("/mfa?user_id={}", urlencode(user)), ""));
    assert_eq!(status["passkeys"], json!([]));
    // The next sign-in enrols again; the old passkey signs in nothing.
    let (waiting, next) = idp_login(&h);
    assert!(next.starts_with("/_portcullis/mfa/enroll"), "{next}");
    a.counter = 1;
    let csrf = form_field(&h.respond(&with_session(get(&next), &waiting)).text(), "csrf");
    let r = post_assertion(&h, &waiting, &csrf, &a.get(&json!({"challenge": b64(&[7; 32])})));
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(r.headers.get("location").unwrap().starts_with("/_portcullis/mfa/enroll"));
    assert!(!forwarded(&h, &waiting));
}

/// KV cost of the second factor with a passkey (docs/deploying.md, "Plan limits"): the
/// challenge (one write, one delete), the record with the new counter, the session.
#[test]
fn a_passkey_sign_in_costs_three_writes_and_one_delete_beyond_the_idp_sign_in() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    first_sign_in(&h, &a);
    let (waiting, _) = idp_login(&h);
    let (writes, deletes) = (h.kv.writes.get(), h.kv.deletes.get());
    let (opts, csrf) = prompt(&h, &waiting);
    a.counter = 1;
    assert_eq!(post_assertion(&h, &waiting, &csrf, &a.get(&opts)).status, 302);
    assert_eq!((h.kv.writes.get() - writes, h.kv.deletes.get() - deletes), (3, 1));
}

/// `HEAD` on the prompt spends and writes nothing (the route table's promise); a `GET` of a
/// user with passkeys writes the one challenge it shows.
#[test]
fn a_head_of_the_prompt_writes_no_challenge() {
    let h = harness(json!({"required": true}));
    let a = Authenticator::new(1);
    first_sign_in(&h, &a);
    let (waiting, _) = idp_login(&h);
    let head = Request::new("HEAD", &format!("https://{HOST}/_portcullis/mfa?rd=/dashboard"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "text/html");
    let writes = h.kv.writes.get();
    let r = h.respond(&with_session(head, &waiting));
    assert_eq!(r.status, 200);
    assert_eq!(h.kv.writes.get() - writes, 0, "a HEAD writes nothing");
    assert!(!h.kv.keys().iter().any(|k| k.starts_with("pk-chal:")), "no challenge stored");
    let writes = h.kv.writes.get();
    prompt(&h, &waiting);
    assert_eq!(h.kv.writes.get() - writes, 1, "a GET writes its one challenge");
}

/// A user with passkeys only regenerates backup codes with a passkey (the attempt
/// operation, a single-use challenge); a request offering no factor the user has is refused
/// with a sentence and counts as no wrong code.
#[test]
fn a_passkey_only_user_regenerates_backup_codes_with_a_passkey() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    let (cookie, old) = first_sign_in(&h, &a);
    let page = h.respond(&with_session(get("/_portcullis/mfa/passkeys"), &cookie));
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains(r#"action="/_portcullis/mfa/backup-codes" id="passkey-form""#), "{html}");
    assert!(!html.contains(r#"name="code""#), "no TOTP field without TOTP");
    assert!(page.headers.get("content-security-policy").unwrap().contains("script-src 'sha256-"));
    let csrf = form_field(&html, "csrf");
    // A TOTP code, or nothing: not a factor of this user's; refused, not counted.
    let mut html = html;
    for form in [vec![("csrf", csrf.as_str()), ("code", "123456")], vec![("csrf", csrf.as_str())]] {
        let r = h.respond(&post_form("/_portcullis/mfa/backup-codes", &cookie, &form));
        assert_eq!(r.status, 400, "{}", r.text());
        html = r.text();
        assert!(html.contains("need confirmation with one of your passkeys"), "{html}");
    }
    assert!(h.events("mfa_failed").is_empty(), "no wrong code counted");
    // The page shown with the refusal carries a fresh challenge.
    a.counter = 1;
    let credential = a.get(&options(&html));
    let r = h.respond(&post_form(
        "/_portcullis/mfa/backup-codes",
        &cookie,
        &[("csrf", &csrf), ("credential", &credential)],
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let codes: Vec<String> =
        r.text().split("<li><code>").skip(1).map(|c| c.split('<').next().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    assert_ne!(codes, old);
    assert_eq!(h.events("backup_codes_regenerated").len(), 1);
    // The challenge was single-use: the same assertion again is refused.
    let again = h.respond(&post_form(
        "/_portcullis/mfa/backup-codes",
        &cookie,
        &[("csrf", &csrf), ("credential", &credential)],
    ));
    assert_eq!(again.status, 400);
    assert_eq!(h.events("backup_codes_regenerated").len(), 1);
}

/// The fresh IdP sign-in that adding a passkey asks for: the session it makes, and where the
/// gateway sends the browser after it.
fn fresh_sign_in(h: &Harness, gate: &Response) -> (String, String) {
    assert_eq!(gate.status, 302, "{}", gate.text());
    let login = gate.headers.get("location").unwrap().to_owned();
    assert!(login.contains("reauth="), "{login}");
    let r = h.respond(&get(&login));
    let auth = url::Url::parse(r.headers.get("location").unwrap()).unwrap();
    let pending = set_cookie_value(&r, "__Host-portcullis_pending").unwrap();
    h.idp.borrow_mut().extra_claims = json!({"auth_time": h.clock.now()});
    let ok = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(ok.status, 302, "{}", ok.text());
    (set_cookie_value(&ok, "__Host-portcullis_session").unwrap(), ok.headers.get("location").unwrap().to_owned())
}

/// After the fresh sign-in for adding a passkey the gateway goes on with that, as it does
/// for TOTP enrolment: through the prompt when the user has a factor, straight to the
/// registration page otherwise; the return path is kept.
#[test]
fn the_fresh_sign_in_for_a_passkey_comes_back_to_its_registration() {
    let h = harness(json!({"required": true}));
    let mut a = Authenticator::new(1);
    let (first, _) = first_sign_in(&h, &a);
    let gate = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register?rd=/dashboard"), &first));
    let (fresh, next) = fresh_sign_in(&h, &gate);
    assert!(next.starts_with("/_portcullis/mfa?") && next.contains("then=add_passkey"), "{next}");
    let page = h.respond(&with_session(get(&next), &fresh));
    let html = page.text();
    assert!(html.contains(r#"name="then" value="add_passkey""#), "{html}");
    a.counter = 1;
    let r = h.respond(&post_form(
        "/_portcullis/mfa/passkey",
        &fresh,
        &[
            ("csrf", &form_field(&html, "csrf")),
            ("rd", "/dashboard"),
            ("then", "add_passkey"),
            ("credential", &a.get(&options(&html))),
        ],
    ));
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.headers.get("location"), Some("/_portcullis/mfa/passkeys/register?rd=%2Fdashboard"));
    let register = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register?rd=/dashboard"), &fresh));
    assert_eq!(register.status, 200, "{}", register.text());
    assert!(register.text().contains(r#"data-ceremony="create""#));

    // A user without a factor, in a tenant that does not require one: straight there.
    let h = harness(json!({}));
    let (cookie, next) = idp_login(&h);
    assert_eq!(next, "/dashboard");
    let gate = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register?rd=/dashboard"), &cookie));
    let (_, next) = fresh_sign_in(&h, &gate);
    assert_eq!(next, "/_portcullis/mfa/passkeys/register?rd=%2Fdashboard");
}
