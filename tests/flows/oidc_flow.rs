//! The OIDC sign-in, session and forwarding flows, end to end through the gateway core with
//! in-memory ports and a scripted provider that signs real tokens. Every refusal is checked
//! by its status, its machine code and the log line that names the cause.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use jwt_compact::alg::Es256;
use jwt_compact::{AlgorithmExt, UntrustedToken};
use portcullis::oidc::jwks::{parse_jwks, PublicKey};
use serde_json::{json, Value};

fn harness() -> Harness {
    Harness::new(&config(json!({}), json!({})))
}

fn assert_refusal(h: &Harness, r: &portcullis::http::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.text());
    let logged: Vec<Value> = h.rt.events().into_iter().filter(|e| e["code"] == code).collect();
    assert!(!logged.is_empty(), "no log line with code {code}: {:?}", h.rt.logs.borrow());
    let reference = logged.last().unwrap()["reference"].as_str().unwrap().to_owned();
    assert!(r.text().contains(&reference), "the page must show the logged reference id");
}

#[test]
fn login_reaches_origin_with_identity_headers_and_verifiable_assertion() {
    let h = harness();
    let (auth, _) = h.start_login("/dashboard?tab=1");
    // The authorization request carries PKCE S256, a nonce and the generic callback.
    let q: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
    assert_eq!(auth.as_str().split('?').next(), Some("https://idp.test/authorize"));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], "https://app.test/_portcullis/oidc/callback");
    assert_eq!(q["scope"], "openid profile email");
    assert_eq!(q["state"].len(), 43);
    let cookie = h.login();
    let f = h.forward(&with_session(get("/dashboard").header("X-Portcullis-User", "mallory"), &cookie));
    assert_eq!(f.url, "https://origin.test/dashboard");
    assert_eq!(f.headers.get("X-Portcullis-User"), Some("https://idp.test/alice"));
    assert_eq!(f.headers.get("X-Portcullis-Email"), Some("alice@example.com"));
    assert_eq!(f.headers.get("X-Portcullis-Groups"), Some("admins,eng"));
    assert_eq!(f.headers.get("X-Portcullis-Roles"), Some("superuser"));
    assert_eq!(f.headers.get("cookie"), None, "the gateway's cookie never reaches the origin");
    // The assertion verifies with the published JWKS.
    let assertion = f.headers.get("X-Portcullis-Assertion").unwrap().to_owned();
    let jwks = h.respond(&api("/.well-known/portcullis/jwks.json"));
    let keys = parse_jwks(&jwks.body).unwrap().keys;
    let PublicKey::P256(key) = &keys[0].key else { panic!("expected a P-256 key") };
    let token = Es256.validator::<Value>(key).validate(&UntrustedToken::new(&assertion).unwrap()).unwrap();
    let claims = &token.claims().custom;
    assert_eq!(claims["iss"], "https://gateway.test");
    assert_eq!(claims["aud"], "acme");
    assert_eq!(claims["sub"], "https://idp.test/alice");
    assert_eq!(claims["roles"], json!(["superuser"]));
    let exp = token.claims().expiration.unwrap().timestamp() - token.claims().issued_at.unwrap().timestamp();
    assert_eq!(exp, 300);
    assert_eq!(h.events("login_success").len(), 1);
}

#[test]
fn state_replay_is_refused() {
    let h = harness();
    let (auth, pending) = h.start_login("/");
    let cb = h.callback_for(&auth, &pending);
    assert_eq!(h.respond(&cb).status, 302);
    let again = h.respond(&cb);
    assert_refusal(&h, &again, 400, "state_replayed");
    assert!(again.text().contains("already used"));
}

#[test]
fn expired_state_is_refused() {
    let h = harness();
    let (auth, pending) = h.start_login("/");
    h.clock.advance(601);
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_refusal(&h, &r, 400, "state_expired");
}

#[test]
fn missing_or_foreign_pending_cookie_is_refused() {
    let h = harness();
    let (auth, _) = h.start_login("/");
    let mut cb = h.callback_for(&auth, "x");
    cb.headers.remove("cookie");
    assert_refusal(&h, &h.respond(&cb), 400, "login_not_started_here");
    // A pending cookie from another login in this browser.
    let (_, other_pending) = h.start_login("/");
    let cb = h.callback_for(&auth, &other_pending);
    let r = h.respond(&cb);
    assert_refusal(&h, &r, 400, "login_not_started_here");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("belongs to another login")));
}

#[test]
fn idp_error_is_shown_with_its_description() {
    let h = harness();
    let (auth, pending) = h.start_login("/");
    let state = auth.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let cb = get(&format!(
        "/_portcullis/oidc/callback?error=access_denied&error_description=User+said+no&state={}&iss={}",
        urlencode(&state),
        urlencode(ISSUER)
    ))
    .header("cookie", &format!("__Host-portcullis_pending={pending}"));
    let r = h.respond(&cb);
    assert_refusal(&h, &r, 403, "idp_error");
    assert!(r.text().contains("access_denied: User said no"));
}

#[test]
fn issuer_parameter_mismatch_is_refused_as_mix_up() {
    let h = harness();
    let (auth, pending) = h.start_login("/");
    let mut cb = h.callback_for(&auth, &pending);
    let evil = cb.url.as_str().replace(&urlencode(ISSUER), &urlencode("https://evil.test"));
    cb.url = url::Url::parse(&evil).unwrap();
    assert_refusal(&h, &h.respond(&cb), 400, "idp_mixup");
}

#[test]
fn token_endpoint_failures_are_refused() {
    for (mode, status, code) in [
        (Mode::Status(500), 502, "idp_unavailable"),
        (Mode::Timeout, 502, "idp_unavailable"),
        (Mode::Status(400), 400, "code_rejected"),
    ] {
        let h = harness();
        h.idp.borrow_mut().token = mode;
        let (auth, pending) = h.start_login("/");
        let r = h.respond(&h.callback_for(&auth, &pending));
        assert_refusal(&h, &r, status, code);
        assert!(h.kv.keys().iter().all(|k| !k.starts_with("sess:")), "no session may be created");
    }
}

#[test]
fn discovery_and_jwks_outages_are_refused() {
    let h = harness();
    h.idp.borrow_mut().discovery = Mode::Down;
    let r = h.respond(&get("/_portcullis/login?provider=corp"));
    assert_refusal(&h, &r, 502, "idp_unavailable");
    let h = harness();
    h.idp.borrow_mut().jwks = Mode::Status(503);
    let (auth, pending) = h.start_login("/");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_refusal(&h, &r, 502, "idp_unavailable");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("JWKS") && l.contains("503")));
}

#[test]
fn forged_id_token_is_refused() {
    let h = harness();
    let (auth, pending) = h.start_login("/");
    let cb = h.callback_for(&auth, &pending);
    // Signed by a key the IdP does not publish, under the published kid.
    let published = h.idp.borrow().jwks_doc();
    h.idp.borrow_mut().key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let stale = published.clone();
    let idp = h.idp.clone();
    h.fetch.set(move |r| {
        if r.url.ends_with("/jwks") {
            Ok(portcullis::testing::json_response(200, &stale))
        } else {
            idp.borrow().answer(r)
        }
    });
    let r = h.respond(&cb);
    assert_refusal(&h, &r, 401, "invalid_token");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("signature does not verify")));
}

#[test]
fn wrong_audience_and_nonce_are_refused() {
    let h = harness();
    h.idp.borrow_mut().extra_claims = json!({"aud": ["gateway-client", "other"], "azp": "gateway-client"});
    let (auth, pending) = h.start_login("/");
    assert_refusal(&h, &h.respond(&h.callback_for(&auth, &pending)), 401, "invalid_token");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("untrusted audience")));
    let h = harness();
    let (auth, pending) = h.start_login("/");
    let cb = h.callback_for(&auth, &pending);
    h.idp.borrow_mut().nonce = Some("another-login".into());
    assert_refusal(&h, &h.respond(&cb), 401, "invalid_token");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("nonce does not match")));
}

#[test]
fn key_rotation_at_the_idp_triggers_one_jwks_refetch() {
    let h = harness();
    h.login();
    let before = h.fetch.count("/jwks");
    h.idp.borrow_mut().rotate();
    h.login();
    assert_eq!(h.fetch.count("/jwks"), before + 1, "exactly one refetch");
    // A token with an unknown kid right after: refetch is rate limited.
    h.idp.borrow_mut().rotate();
    let (auth, pending) = h.start_login("/");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_refusal(&h, &r, 401, "invalid_token");
    assert_eq!(h.fetch.count("/jwks"), before + 1);
    h.clock.advance(61);
    h.login();
    assert_eq!(h.fetch.count("/jwks"), before + 2);
}

#[test]
fn unmapped_groups_are_refused_when_a_mapped_group_is_required() {
    let h = Harness::new(&config(
        json!({"groups": {"map": {"engineering": ["eng"]}, "mirror": true, "require_mapped_group": true}}),
        json!({}),
    ));
    h.idp.borrow_mut().extra_claims = json!({"groups": ["marketing"]});
    let (auth, pending) = h.start_login("/");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_refusal(&h, &r, 403, "no_roles");
    assert!(r.text().contains("no roles assigned"));
}

#[test]
fn missing_claims_come_from_userinfo() {
    let h = harness();
    h.idp.borrow_mut().extra_claims = json!({"preferred_username": null});
    let cookie = h.login();
    let f = h.forward(&with_session(get("/"), &cookie));
    assert_eq!(f.headers.get("X-Portcullis-Preferred-Username"), Some("ally"));
    assert_eq!(h.fetch.count("/userinfo"), 1);
}

#[test]
fn revoked_session_is_refused_after_the_cache_bound() {
    let h = harness();
    let cookie = h.login();
    h.forward(&with_session(get("/"), &cookie));
    for k in h.kv.keys().into_iter().filter(|k| k.starts_with("sess:")) {
        h.kv.raw_delete(&k);
    }
    h.clock.advance(11);
    let r = h.respond(&with_session(get("/"), &cookie));
    assert_eq!(r.status, 302);
    assert!(r.headers.get("location").unwrap().starts_with("/_portcullis/login?rd=%2F"));
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("session not found")));
}

#[test]
fn idle_and_absolute_expiry_end_the_session() {
    let h = Harness::new(&config(json!({}), json!({"refresh": false})));
    let cookie = h.login();
    h.clock.advance(3599);
    h.forward(&with_session(get("/"), &cookie));
    h.clock.advance(3601);
    let r = h.respond(&with_session(api("/x"), &cookie));
    assert_eq!(r.status, 401);
    assert_eq!(json_body(&r)["error"], "session_expired");
    // The record's KV TTL follows the idle timeout, so an idle session disappears by itself.
    assert!(h.kv.keys().iter().all(|k| !k.starts_with("sess:")));
    // Absolute: active every 30 minutes, still ends after 8 hours.
    let h = Harness::new(&config(json!({}), json!({"refresh": false})));
    let cookie = h.login();
    for _ in 0..15 {
        h.clock.advance(1800);
        h.forward(&with_session(get("/"), &cookie));
    }
    h.clock.advance(1801);
    let r = h.respond(&with_session(get("/"), &cookie));
    assert_eq!(r.status, 302);
    assert!(r.headers.get("location").unwrap().ends_with("reason=expired"));
}

#[test]
fn tampered_cookie_is_refused_and_logged() {
    let h = harness();
    let cookie = h.login();
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let r = h.respond(&with_session(api("/x"), &tampered));
    assert_eq!(r.status, 401);
    assert!(r.headers.get("www-authenticate").is_some());
    assert!(h
        .rt
        .logs
        .borrow()
        .iter()
        .any(|l| l.contains("session_refused") && l.contains("signature does not verify")));
}

#[test]
fn refresh_keeps_the_session_and_a_refused_refresh_ends_it() {
    let h = harness();
    h.idp.borrow_mut().access_token_ttl = 120;
    let cookie = h.login();
    h.clock.advance(90);
    h.forward(&with_session(get("/"), &cookie));
    assert_eq!(h.events("session_refreshed").len(), 1);
    h.idp.borrow_mut().refresh_status = 400;
    h.clock.advance(100);
    let r = h.respond(&with_session(get("/"), &cookie));
    assert_eq!(r.status, 302);
    assert!(h.events("session_revoked").iter().any(|e| e["cause"].as_str().unwrap().contains("refresh refused")));
    assert!(h.kv.keys().iter().all(|k| !k.starts_with("sess:")));
}

#[test]
fn kv_outage_fails_closed_with_503() {
    let h = harness();
    h.kv.fail_put.set(true);
    let r = h.respond(&get("/_portcullis/login?provider=corp"));
    assert_refusal(&h, &r, 503, "storage_unavailable");
    let h = harness();
    let cookie = h.login();
    h.clock.advance(11);
    h.kv.fail_get.set(true);
    let r = h.respond(&with_session(get("/"), &cookie));
    assert_refusal(&h, &r, 503, "storage_unavailable");
}

#[test]
fn logout_needs_csrf_and_deletes_the_session() {
    let h = harness();
    let cookie = h.login();
    let post = |csrf: &str| {
        with_session(
            portcullis::http::Request::new("POST", &format!("https://{HOST}/_portcullis/logout"))
                .unwrap()
                .header("host", HOST)
                .header("accept", "text/html")
                .header("content-type", "application/x-www-form-urlencoded")
                .with_body(format!("csrf={}", urlencode(csrf))),
            &cookie,
        )
    };
    assert_refusal(&h, &h.respond(&post("wrong")), 403, "csrf");
    // Another site's Origin is refused even with a token; `Origin: null` (sent by browsers
    // under Referrer-Policy: no-referrer) leaves the decision to the token.
    let page = h.respond(&with_session(get("/_portcullis/logout"), &cookie)).text();
    let token = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert_refusal(&h, &h.respond(&post(&token).header("origin", "https://evil.test")), 403, "csrf");
    assert_refusal(&h, &h.respond(&post("wrong").header("origin", "null")), 403, "csrf");
    let page = h.respond(&with_session(get("/_portcullis/logout"), &cookie)).text();
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let r = h.respond(&post(&csrf).header("origin", "null"));
    assert_eq!(r.status, 302);
    // RP-initiated logout at the IdP, with the ID token as hint.
    let loc = r.headers.get("location").unwrap();
    assert!(loc.starts_with("https://idp.test/logout?client_id=gateway-client&post_logout_redirect_uri="), "{loc}");
    assert!(loc.contains("id_token_hint="));
    assert!(h.kv.keys().iter().all(|k| !k.starts_with("sess:")));
    assert!(r.headers.get_all("set-cookie").any(|c| c.starts_with("__Host-portcullis_session=;")));
    assert_eq!(h.respond(&with_session(api("/x"), &cookie)).status, 401);
}

#[test]
fn public_paths_pass_without_session_but_never_with_spoofed_identity() {
    let h = harness();
    let f = h.forward(&api("/static/app.js").header("X-Portcullis-Email", "ceo@example.com"));
    assert_eq!(f.headers.get("X-Portcullis-Email"), None);
    // Method-restricted public path.
    let post =
        portcullis::http::Request::new("POST", &format!("https://{HOST}/static/app.js")).unwrap().header("host", HOST);
    assert_eq!(h.respond(&post).status, 401);
    // Traversal out of a public prefix is not public.
    assert_eq!(h.respond(&api("/static/%2e%2e/admin")).status, 401);
}

#[test]
fn me_returns_identity_as_json() {
    let h = harness();
    let cookie = h.login();
    let r = h.respond(&with_session(api("/_portcullis/me"), &cookie));
    assert_eq!(r.status, 200);
    let me = json_body(&r);
    assert_eq!(me["user_id"], "https://idp.test/alice");
    assert_eq!(me["roles"], json!(["superuser"]));
    assert_eq!(h.respond(&api("/_portcullis/me")).status, 401);
}

#[test]
fn open_redirects_in_rd_fall_back_to_root() {
    let h = harness();
    let (auth, pending) = h.start_login("//evil.test/x");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(r.headers.get("location"), Some("/"));
}

#[test]
fn unknown_host_and_bad_config_are_explained() {
    let h = harness();
    let req = portcullis::http::Request::new("GET", "https://other.test/")
        .unwrap()
        .header("host", "other.test")
        .header("accept", "text/html");
    let r = h.respond(&req);
    assert_refusal(&h, &r, 404, "unknown_host");
    let bad = Harness::new(&config(json!({"origin": "ftp://x"}), json!({})));
    let line = bad.gw.startup_log().unwrap();
    assert!(line.contains("tenants[0].origin: not an http(s) URL"), "{line}");
    let r = bad.respond(&get("/"));
    assert_refusal(&bad, &r, 500, "config_error");
    assert!(!r.text().contains("tenants[0]"), "config details stay in the logs");
}

#[test]
fn login_page_lists_providers_and_escapes_labels() {
    let h = Harness::new(&config(json!({}), json!({"label": "Corp <SSO>", "background": "#112233"})));
    let r = h.respond(&get("/_portcullis/login?rd=/x"));
    assert_eq!(r.status, 200);
    let body = r.text();
    assert!(body.contains("Sign in with Corp &lt;SSO&gt;"));
    assert!(body.contains("/_portcullis/login?provider=corp&amp;rd=%2Fx"));
    let css = h.respond(&get("/_portcullis/assets/tenant.css")).text();
    assert!(css.contains(".provider-corp { background: #112233;"));
}

#[test]
fn downgrade_discovery_is_a_configuration_error() {
    let h = harness();
    let idp = h.idp.clone();
    h.fetch.set(move |r| {
        if r.url.ends_with("openid-configuration") {
            let mut doc: Value = serde_json::from_slice(&idp.borrow().answer(r).unwrap().body).unwrap();
            doc["id_token_signing_alg_values_supported"] = json!(["none", "HS256"]);
            Ok(portcullis::testing::json_response(200, &doc))
        } else {
            idp.borrow().answer(r)
        }
    });
    let r = h.respond(&get("/_portcullis/login?provider=corp"));
    assert_refusal(&h, &r, 500, "config_error");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("only insecure ID token algorithms")));
}

#[test]
fn per_provider_callback_paths() {
    let h = Harness::new(&config(json!({}), json!({"per_provider_callback": true})));
    let (auth, pending) = h.start_login("/p");
    let q: std::collections::HashMap<_, _> = auth.query_pairs().into_owned().collect();
    assert_eq!(q["redirect_uri"], "https://app.test/_portcullis/oidc/corp/callback");
    let cb = h.callback_for(&auth, &pending);
    // The state names provider `corp`; a callback on another provider's path is refused.
    let wrong = url::Url::parse(&cb.url.as_str().replace("/oidc/callback", "/oidc/other/callback")).unwrap();
    let mut wrong_req = cb.clone();
    wrong_req.url = wrong;
    assert_refusal(&h, &h.respond(&wrong_req), 404, "unknown_provider");
    let mut right = cb.clone();
    right.url = url::Url::parse(&cb.url.as_str().replace("/oidc/callback", "/oidc/corp/callback")).unwrap();
    let r = h.respond(&right);
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.headers.get("location"), Some("/p"));
}

#[test]
fn claim_paths_group_objects_and_namespaced_keys() {
    let h = Harness::new(&config(
        json!({}),
        json!({"claims": {"groups": "https://example.com/groups", "user": "preferred_username", "email": "contact.mail"}}),
    ));
    h.idp.borrow_mut().extra_claims = json!({
        "https://example.com/groups": [{"name": "engineering", "id": 1}, {"name": "qa", "id": 2}],
        "contact": {"mail": "alice.work@example.com"},
    });
    let cookie = h.login();
    let f = h.forward(&with_session(get("/"), &cookie));
    assert_eq!(f.headers.get("X-Portcullis-Groups"), Some("eng,qa"));
    assert_eq!(f.headers.get("X-Portcullis-Email"), Some("alice.work@example.com"));
    // A groups claim of the wrong shape is refused with the claim named.
    h.idp.borrow_mut().extra_claims = json!({"https://example.com/groups": {"not": "a list"}});
    let (auth, pending) = h.start_login("/");
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_refusal(&h, &r, 502, "bad_claims");
    assert!(r.text().contains("malformed https://example.com/groups claim"));
}

#[test]
fn unverified_email_and_foreign_domains_are_refused_when_configured() {
    let h = Harness::new(&config(json!({}), json!({"require_verified_email": true})));
    h.idp.borrow_mut().extra_claims = json!({"email_verified": false});
    let (auth, pending) = h.start_login("/");
    assert_refusal(&h, &h.respond(&h.callback_for(&auth, &pending)), 403, "email_unverified");
    let h = Harness::new(&config(json!({}), json!({"allowed_email_domains": ["corp.example"]})));
    let (auth, pending) = h.start_login("/");
    assert_refusal(&h, &h.respond(&h.callback_for(&auth, &pending)), 403, "email_domain");
    let h = Harness::new(&config(json!({}), json!({"allowed_email_domains": ["EXAMPLE.com"]})));
    h.login();
}

#[test]
fn policy_rules_allow_by_group_role_email_and_domain() {
    let h = Harness::new(&config(
        json!({"policy": [
            {"path": "/finance", "match": "prefix", "allow_groups": ["finance"]},
            {"path": "/ops", "match": "prefix", "allow_roles": ["superuser"]},
            {"path": "/ceo", "match": "exact", "allow_emails": ["ceo@example.com"]},
            {"path": "/staff", "match": "prefix", "allow_email_domains": ["example.com"]},
        ]}),
        json!({}),
    ));
    let cookie = h.login();
    assert_refusal(&h, &h.respond(&with_session(get("/finance/q3"), &cookie)), 403, "forbidden");
    h.forward(&with_session(get("/ops/deploy"), &cookie));
    assert_eq!(h.respond(&with_session(get("/ceo"), &cookie)).status, 403);
    h.forward(&with_session(get("/staff/wiki"), &cookie));
    h.forward(&with_session(get("/anything-else"), &cookie));
}

#[test]
fn one_provider_with_auto_redirect_skips_the_login_page_and_branding_applies() {
    let h = Harness::new(&config(
        json!({"auto_redirect": true, "logo_url": "/static/logo.svg", "accent_color": "#aa3300"}),
        json!({}),
    ));
    let r = h.respond(&get("/_portcullis/login?rd=/x"));
    assert_eq!(r.status, 302);
    assert!(r.headers.get("location").unwrap().starts_with("https://idp.test/authorize?"));
    // Error pages carry the tenant's name, logo and stylesheet with its accent colour.
    let page = h.respond(&get("/_portcullis/nope")).text();
    assert!(page.contains(r#"<img src="/static/logo.svg" alt="">"#));
    assert!(page.contains("<p class=\"tenant\">Acme</p>"));
    assert!(h.respond(&get("/_portcullis/assets/tenant.css")).text().contains(":root { --accent: #aa3300; }"));
}

#[test]
fn providers_are_listed_in_configured_order() {
    let mut doc: serde_json::Value = serde_json::from_str(&config(json!({}), json!({}))).unwrap();
    let mut second = doc["tenants"][0]["providers"][0].clone();
    second["name"] = json!("aaa-first-alphabetically");
    second["label"] = json!("Second");
    doc["tenants"][0]["providers"].as_array_mut().unwrap().push(second);
    let h = Harness::new(&doc.to_string());
    let page = h.respond(&get("/_portcullis/login")).text();
    let corp = page.find("Sign in with Corp SSO").unwrap();
    let other = page.find("Sign in with Second").unwrap();
    assert!(corp < other, "configured order, not alphabetical");
}

#[test]
fn a_runtime_signature_port_decides_the_signature_but_never_the_claims() {
    let h = harness();
    h.use_verifier.set(true);
    // The port says valid: the login succeeds through it.
    h.verifier.answer.set(Some(true));
    h.login();
    assert_eq!(h.verifier.calls.get(), 1);
    // The port says invalid: refused, even though the pure-Rust check would pass (after one
    // JWKS refetch, as for any bad signature).
    h.verifier.answer.set(Some(false));
    let (auth, pending) = h.start_login("/");
    assert_refusal(&h, &h.respond(&h.callback_for(&auth, &pending)), 401, "invalid_token");
    // Valid per the port, but the claims are still checked: a wrong nonce is refused.
    h.verifier.answer.set(Some(true));
    let (auth, pending) = h.start_login("/");
    let cb = h.callback_for(&auth, &pending);
    h.idp.borrow_mut().nonce = Some("another".into());
    assert_refusal(&h, &h.respond(&cb), 401, "invalid_token");
    assert!(h.rt.logs.borrow().iter().any(|l| l.contains("nonce does not match")));
    // No answer from the port: the pure-Rust verifier decides.
    h.verifier.answer.set(None);
    h.login();
}
