//! Every gateway route against every session state (none, waiting for the second factor,
//! complete), from the table the gateway publishes (`route_sessions`, from the route table): a route acts only for
//! the states it names, and no route makes a waiting session forwardable without a code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::gateway::{route_sessions, Accepts, Action};
use portcullis::http::Request;
use portcullis::mfa::{base32_decode, totp_code, TotpParams};
use serde_json::json;

fn request(method: &str, route: &str, cookie: Option<&str>, csrf: &str) -> Request {
    let path = format!("/_portcullis{}", route.replace("NAME", "corp"));
    let mut req = if method == "POST" {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("csrf", csrf), ("rd", "/dashboard"), ("code", "000000")])
            .finish();
        Request::new("POST", &format!("https://{HOST}{path}"))
            .unwrap()
            .header("host", HOST)
            .header("accept", "text/html")
            .header("content-type", "application/x-www-form-urlencoded")
            .with_body(body)
    } else {
        get(&path)
    };
    if let Some(c) = cookie {
        req = with_session(req, c);
    }
    req
}

fn status(h: &Harness, req: &Request) -> u16 {
    match h.handle(req) {
        Action::Respond(r) => r.status,
        Action::Forward(f) => panic!("a gateway route forwarded to {}", f.url),
    }
}

/// Whether the session is forwarded to the origin.
fn forwarded(h: &Harness, cookie: &str) -> bool {
    matches!(h.handle(&with_session(get("/dashboard"), cookie)), Action::Forward(_))
}

#[test]
fn every_route_acts_only_for_the_session_states_it_names() {
    let h = Harness::new(&config(json!({"mfa": {"required": true}}), json!({})));
    // First sign-in: enrol; that session is complete.
    let (auth, pending) = h.start_login("/dashboard");
    let r = h.respond(&h.callback_for(&auth, &pending));
    let complete = set_cookie_value(&r, "__Host-portcullis_session").unwrap();
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &complete)).text();
    let groups = page.split("id=\"totp-secret\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let secret = base32_decode(&groups).unwrap();
    let code = totp_code(&secret, h.clock.now(), &TotpParams::default()).unwrap();
    let enrol = h.respond(&post_form(
        "/_portcullis/mfa/enroll",
        &complete,
        &[("csrf", &form_field(&page, "csrf")), ("code", &code)],
    ));
    assert_eq!(enrol.status, 200);
    assert!(forwarded(&h, &complete));
    let complete_csrf =
        json_body(&h.respond(&with_session(api("/_portcullis/me"), &complete)))["csrf"].as_str().unwrap().to_owned();
    // Second sign-in: waits for its code.
    let (auth, pending) = h.start_login("/dashboard");
    let r = h.respond(&h.callback_for(&auth, &pending));
    let waiting = set_cookie_value(&r, "__Host-portcullis_session").unwrap();
    let prompt = h.respond(&with_session(get("/_portcullis/mfa"), &waiting)).text();
    let waiting_csrf = form_field(&prompt, "csrf");
    assert!(!forwarded(&h, &waiting));

    let rows: Vec<_> = route_sessions().collect();
    for (method, route, accepts) in &rows {
        let none = status(&h, &request(method, route, None, ""));
        let w = status(&h, &request(method, route, Some(&waiting), &waiting_csrf));
        let c = status(&h, &request(method, route, Some(&complete), &complete_csrf));
        let case = format!("{method} {route} ({accepts:?}): none {none}, waiting {w}, complete {c}");
        // No route lets a waiting session through without a right code, and none fails.
        assert!(!forwarded(&h, &waiting), "{case} made the waiting session forwardable");
        assert!(none < 500 && w < 500 && c < 500, "{case}");
        match accepts {
            Accepts::NoSession => assert!(none == w && w == c, "{case}: a session changed the answer"),
            Accepts::Complete => {
                assert!(!(200..300).contains(&w), "{case}: served a waiting session");
                if *method == "GET" && !route.starts_with("/admin/") {
                    assert_eq!(c, 200, "{case}");
                }
            }
            Accepts::Either => assert!(w != none || *route == "/logout", "{case}: waiting treated as none"),
            Accepts::Enrolment => {
                // Enrolled already: both states are sent to the prompt, never shown a secret.
                assert!(!(200..300).contains(&w) && !(200..300).contains(&c), "{case}");
            }
        }
        if *route == "/logout" && *method == "POST" {
            break; // the sessions are gone from here on
        }
    }
}

#[test]
fn the_enrolment_routes_take_a_first_factor_or_a_fresh_sign_in_only() {
    let enrol_rows: Vec<_> = route_sessions().filter(|(_, _, a)| *a == Accepts::Enrolment).collect();
    assert_eq!(enrol_rows.len(), 4, "TOTP enrolment and passkey registration, GET and POST");
    // A waiting session of a user without a factor, where the tenant requires one.
    let h = Harness::new(&config(json!({"mfa": {"required": true}}), json!({})));
    let (auth, pending) = h.start_login("/dashboard");
    let waiting = set_cookie_value(&h.respond(&h.callback_for(&auth, &pending)), "__Host-portcullis_session").unwrap();
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &waiting));
    assert_eq!(page.status, 200);
    let csrf = form_field(&page.text(), "csrf");
    assert_eq!(status(&h, &request("POST", "/mfa/enroll", Some(&waiting), &csrf)), 401, "a wrong first code");
    assert!(!forwarded(&h, &waiting));
    // A complete session without a fresh sign-in, where the factor is optional.
    let h = Harness::new(&config(json!({}), json!({})));
    let complete = h.login();
    let csrf =
        json_body(&h.respond(&with_session(api("/_portcullis/me"), &complete)))["csrf"].as_str().unwrap().to_owned();
    let page = h.respond(&with_session(get("/_portcullis/mfa/enroll"), &complete));
    assert_eq!(page.status, 302);
    assert!(page.headers.get("location").unwrap().contains("reauth=1"));
    assert_eq!(status(&h, &request("POST", "/mfa/enroll", Some(&complete), &csrf)), 401);
    let page = h.respond(&with_session(get("/_portcullis/mfa/passkeys/register"), &complete));
    assert_eq!(page.status, 302);
    assert!(page.headers.get("location").unwrap().contains("reauth=passkey"));
    assert_eq!(status(&h, &request("POST", "/mfa/passkeys/register", Some(&complete), &csrf)), 401);
    assert!(!h.kv.keys().iter().any(|k| k.starts_with("mfa")), "nothing stored: {:?}", h.kv.keys());
}
