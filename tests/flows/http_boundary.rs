//! The HTTP boundary: one canonical path per request, decided the way every origin reads
//! it, used for public paths, policy, step-up and forwarding; headers the origin could read
//! as the gateway's own; methods and method overrides; reflected paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::*;
use portcullis::gateway::Action;
use portcullis::http::Request;
use serde_json::{json, Value};

fn harness_with(tenant_extra: Value) -> Harness {
    Harness::new(&config(tenant_extra, json!({})))
}

fn request(method: &str, path: &str) -> Request {
    Request::new(method, &format!("https://{HOST}{path}"))
        .unwrap()
        .header("host", HOST)
        .header("accept", "application/json")
}

/// Paths that origin servers resolve differently from the gateway's reading: each one,
/// with a public prefix in front, would reach `/admin` on some server.
const AMBIGUOUS: &[&str] = &[
    "/static/..;/admin",
    "/static/%2e%2e;/admin",
    "/static/..%3b/admin",
    "/static/..%3B/admin",
    "/static/..;x=1/admin",
    "/static/x/..;/..;/admin",
    "/static/%252e%252e/admin",
    "/static/..%252fadmin",
    "/static/%25252e%25252e/admin",
    "/static/..%2fadmin",
    "/static/..%2Fadmin",
    "/static/%2e%2e%2fadmin",
    "/static/..%5cadmin",
    "/static/%5c..%5cadmin",
    "/static/x%00.css",
    "/static/%c0%ae%c0%ae/admin",
    "/static/%c0%2e%c0%2e/admin",
    "/static/%e0%80%ae%e0%80%ae/admin",
    "/static/%ff/admin",
    "/static/app.js;jsessionid=0123",
    "/static//admin",
    "//static/admin",
    "/static/admin.",
    "/static/..%20/admin",
    "/static/x%20",
    "/static/x%09",
    "/static/%0d%0aX:1",
    "/static/%zz",
    "/static/%2",
    "/static/%u002e%u002e/admin",
    "/admin;x",
    "/admin.",
    "/admin..",
    "//admin",
];

#[test]
fn ambiguous_paths_are_refused_with_a_page_and_never_forwarded() {
    let h = harness_with(json!({}));
    let cookie = h.login();
    for path in AMBIGUOUS {
        // Refused whatever the session: the path cannot be decided.
        for (label, req) in [("api", api(path)), ("page", get(path)), ("session", with_session(api(path), &cookie))] {
            let r = match h.handle(&req) {
                Action::Respond(r) => r,
                Action::Forward(f) => panic!("{path} ({label}) was forwarded to {}", f.url),
            };
            assert_eq!(r.status, 400, "{path} ({label}): {}", r.text());
            let logged = h.events("refusal");
            let last = logged.last().unwrap();
            assert_eq!(last["code"], "ambiguous_path", "{path}");
            let reference = last["reference"].as_str().unwrap();
            assert!(r.text().contains(reference), "{path} ({label}): the answer names the reference");
            if label == "api" {
                assert_eq!(json_body(&r)["error"], "ambiguous_path");
            } else if label == "page" {
                assert!(r.headers.get("content-type").unwrap().starts_with("text/html"), "{path}");
            }
        }
    }
}

#[test]
fn ordinary_paths_are_forwarded_exactly_as_decided() {
    let h = harness_with(json!({}));
    for (path, url) in [
        ("/static/app.js", "https://origin.test/static/app.js"),
        ("/static/a%20b.css?v=1", "https://origin.test/static/a%20b.css?v=1"),
        ("/static/caf%C3%A9.png", "https://origin.test/static/caf%C3%A9.png"),
        ("/static/", "https://origin.test/static/"),
        ("/static/.well-known-ish/x", "https://origin.test/static/.well-known-ish/x"),
        ("/static/x?a=..;/admin&b=%2f", "https://origin.test/static/x?a=..;/admin&b=%2f"),
    ] {
        assert_eq!(h.forward(&api(path)).url, url, "{path}");
    }
}

#[test]
fn case_insensitive_tenants_match_policy_public_paths_and_step_up_lower_cased() {
    let rules = json!({
        "policy": [{"path": "/admin", "match": "prefix", "allow_roles": ["auditor"]}],
        "public_paths": [{"path": "/Static/", "match": "prefix"}],
        "mfa": {"step_up": [{"path": "/Billing", "match": "prefix", "max_age": 300}]},
    });
    // Case-sensitive (the default): `/ADMIN` is another path, as on a case-sensitive origin.
    let h = harness_with(rules.clone());
    let cookie = h.login();
    assert_eq!(h.respond(&with_session(api("/admin/x"), &cookie)).status, 403);
    assert!(matches!(h.handle(&with_session(api("/ADMIN/x"), &cookie)), Action::Forward(_)));

    let mut insensitive = rules;
    insensitive["path_case"] = json!("insensitive");
    let h = harness_with(insensitive);
    let cookie = h.login();
    for path in ["/admin/x", "/ADMIN/x", "/Admin", "/aDmIn/users"] {
        assert_eq!(h.respond(&with_session(api(path), &cookie)).status, 403, "{path}");
    }
    for path in ["/billing", "/BILLING/x"] {
        assert_eq!(h.respond(&with_session(api(path), &cookie)).status, 403, "{path} needs step-up");
        assert_eq!(h.events("refusal").last().unwrap()["code"], "step_up_required", "{path}");
    }
    // Public paths too, and the path is forwarded as the client wrote it.
    assert_eq!(h.forward(&api("/STATIC/a.js")).url, "https://origin.test/STATIC/a.js");
    assert_eq!(h.forward(&api("/static/a.js")).url, "https://origin.test/static/a.js");
}

#[test]
fn verbatim_prefixes_pass_path_parameters_and_encoded_slashes_but_are_never_public() {
    let h = harness_with(json!({
        "public_paths": [{"path": "/", "match": "prefix"}],
        "verbatim_paths": ["/files/"],
    }));
    let cookie = h.login();
    // Never public: no session, no forward.
    assert_eq!(h.respond(&api("/files/a%2Fb;v=1")).status, 401);
    let f = h.forward(&with_session(api("/files/a%2Fb;v=1"), &cookie));
    assert_eq!(f.url, "https://origin.test/files/a%2Fb;v=1");
    // Everything else is still refused under the prefix, and the prefix must match exactly.
    for path in [
        "/files/..;/admin",
        "/files/a%2F..%2Fadmin",
        "/files/%252f",
        "/files/a%5cb",
        "/static/..;/files/x",
        "/FILES/a;b",
    ] {
        assert_eq!(h.respond(&with_session(api(path), &cookie)).status, 400, "{path}");
    }
}

#[test]
fn verbatim_prefixes_must_be_plain_paths() {
    let key = assertion_key_pem();
    let secrets = |name: &str| match name {
        "ASSERTION_KEY" => Some(portcullis::secret::Secret::new(key.clone().into_bytes())),
        _ => Some(portcullis::secret::Secret::new(vec![7u8; 64])),
    };
    let good = portcullis::gateway::Gateway::new(
        &config(json!({"verbatim_paths": ["/files/", "/api/blobs"]}), json!({})),
        &secrets,
    );
    assert_eq!(good.startup_log(), None);
    for bad in ["files/", "/files/..;/", "/a%2fb/", "/a//b/", "/x;y/"] {
        let doc = config(json!({"verbatim_paths": [bad]}), json!({}));
        let gw = portcullis::gateway::Gateway::new(&doc, &secrets);
        let log = gw.startup_log().unwrap_or_default();
        assert!(log.contains("verbatim_paths"), "{bad}: {log}");
    }
}

#[test]
fn unknown_methods_get_405_instead_of_being_forwarded() {
    let h = harness_with(json!({"public_paths": [{"path": "/", "match": "prefix"}]}));
    let cookie = h.login();
    for method in ["TRACE", "TRACK", "CONNECT", "PROPFIND", "FOO", "G3T", "DEBUG"] {
        for req in [request(method, "/static/x"), with_session(request(method, "/admin"), &cookie)] {
            let r = match h.handle(&req) {
                Action::Respond(r) => r,
                Action::Forward(f) => panic!("{method} was forwarded to {}", f.url),
            };
            assert_eq!(r.status, 405, "{method}");
            assert_eq!(r.headers.get("allow"), Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"), "{method}");
        }
    }
    for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert!(matches!(h.handle(&request(method, "/static/x")), Action::Forward(_)), "{method}");
    }
}

#[test]
fn method_override_headers_are_dropped_or_decide_the_policy_when_honoured() {
    let rules =
        json!({"policy": [{"path": "/items", "match": "prefix", "methods": ["DELETE"], "allow_roles": ["auditor"]}]});
    let h = harness_with(rules.clone());
    let cookie = h.login();
    for name in ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x_http_method_override"] {
        let req = with_session(request("POST", "/items/1"), &cookie).header(name, "DELETE");
        let f = h.forward(&req);
        let names: Vec<String> = f.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        assert!(!names.iter().any(|n| n.contains("method")), "{name} reached the origin: {names:?}");
    }
    assert_eq!(h.respond(&with_session(request("DELETE", "/items/1"), &cookie)).status, 403);

    let mut honour = rules;
    honour["method_override"] = json!("honour");
    let h = harness_with(honour);
    let cookie = h.login();
    let req = with_session(request("POST", "/items/1"), &cookie).header("X-HTTP-Method-Override", "delete");
    assert_eq!(h.respond(&req).status, 403, "the overridden method decides the policy");
    let req = with_session(request("POST", "/items/1"), &cookie).header("X-HTTP-Method-Override", "TRACE");
    assert_eq!(h.respond(&req).status, 405, "an override to an unknown method is refused");
    let req = with_session(request("POST", "/items/1"), &cookie).header("X-HTTP-Method-Override", "PATCH");
    let f = h.forward(&req);
    assert_eq!(f.headers.get("x-http-method-override"), Some("PATCH"), "honoured overrides are passed on");
}

#[test]
fn underscore_and_mixed_spellings_of_owned_headers_never_reach_the_origin() {
    let h = harness_with(json!({"headers": {"email": "X-Custom-Email"}}));
    let spoofed = [
        ("X_Portcullis_User", "someone-else"),
        ("X_Portcullis_Roles", "superuser"),
        ("X-Portcullis_Groups", "admins"),
        ("x_portcullis-email", "ceo@example.com"),
        ("X_Auth_Request_Email", "ceo@example.com"),
        ("X_Auth-Request_User", "admin"),
        ("X_Forwarded_For", "10.0.0.1"),
        ("X-Forwarded_Host", "evil.test"),
        ("X-Real-IP", "10.0.0.1"),
        ("X_Real_IP", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("X_Custom_Email", "ceo@example.com"),
        ("X-Custom-Email-Verified", "true"),
        // httpoxy: CGI turns `Proxy` into HTTP_PROXY, which HTTP clients read as their proxy.
        ("Proxy", "http://evil.test:8080"),
    ];
    let mut req = api("/static/x");
    for (n, v) in spoofed {
        req = req.header(n, v);
    }
    let f = h.forward(&req.header("X-Kept", "1").header("My_Header", "1"));
    for (n, _) in spoofed {
        assert_eq!(f.headers.get(n), None, "{n} reached the origin");
    }
    assert_eq!(f.headers.get("x-kept"), Some("1"));
    assert_eq!(f.headers.get("my_header"), Some("1"), "other underscore names pass by default");

    let h = harness_with(json!({"drop_underscore_headers": true}));
    let f = h.forward(&api("/static/x").header("My_Header", "1").header("X-Kept", "1"));
    assert_eq!(f.headers.get("my_header"), None);
    assert_eq!(f.headers.get("x-kept"), Some("1"));
}

#[test]
fn paths_reflected_into_pages_go_through_the_return_url_rule() {
    let h = harness_with(json!({}));
    for (path, expected) in [("//evil.test/x", r#"href="/""#), ("/ok/page?a=1", r#"href="/ok/page?a=1""#)] {
        let r = h.gw.origin_failed(h.ports(), &get(path), "connection refused");
        assert_eq!(r.status, 502);
        let text = r.text();
        assert!(!text.contains("evil.test"), "{path}: {text}");
        assert!(text.contains(expected), "{path}: {text}");
    }
}

#[test]
fn under_a_verbatim_prefix_path_parameters_do_not_take_a_path_out_of_its_rules() {
    let h = Harness::new(&config(
        json!({
            "verbatim_paths": ["/blobs", "/files/"],
            "policy": [
                {"path": "/blobs", "match": "prefix", "allow_roles": ["auditor"]},
                {"path": "/files/private/", "match": "prefix", "allow_roles": ["auditor"]},
                {"path": "/files/report.pdf", "match": "exact", "allow_roles": ["auditor"]},
            ],
        }),
        json!({}),
    ));
    let cookie = h.login();
    // Tomcat, Jetty and Spring read each of these as a path of the rules above.
    for p in [
        "/blobs",
        "/blobs/x",
        "/files/private/doc",
        "/files/report.pdf",
        "/blobs;x",
        "/blobs;x/y",
        "/files/private;x/doc",
        "/files/report.pdf;v=1",
    ] {
        assert_eq!(h.respond(&with_session(api(p), &cookie)).status, 403, "{p}");
    }
}

#[test]
fn an_encoded_query_or_fragment_delimiter_in_the_path_is_refused() {
    // nginx (`proxy_pass http://app$uri`) and Apache mod_rewrite decode and split again:
    // `/static/..%3F` becomes `/static/..` = `/` there.
    let h = Harness::new(&config(json!({}), json!({})));
    for p in ["/static/..%3F", "/static/..%3f", "/static/x/..%3F", "/static/..%23", "/static/admin.php%3F"] {
        match h.handle(&api(p)) {
            Action::Respond(r) => assert_eq!(r.status, 400, "{p}"),
            Action::Forward(f) => panic!("{p} forwarded to {}", f.url),
        }
    }
}

#[test]
fn mount_point_and_scheme_headers_of_wsgi_middleware_never_reach_the_origin() {
    let h = Harness::new(&config(json!({}), json!({})));
    let f = h.forward(
        &api("/static/admin")
            .header("X-Script-Name", "/static")
            .header("X_Scheme", "http")
            .header("X-Envoy-Original-Path", "/admin"),
    );
    for n in ["x-script-name", "x_scheme", "x-scheme", "x-envoy-original-path"] {
        assert_eq!(f.headers.get(n), None, "{n}");
    }
}

#[test]
fn globs_cost_at_most_pattern_times_path() {
    use portcullis::config::PathMatch;
    // Backtracking takes minutes here (three `**` over a 3 KB path); memoised, it is instant.
    let path = format!("/{}", "a/".repeat(1500));
    assert!(!portcullis::policy::path_matches(PathMatch::Glob, "/**/a/**/a/**/b", &path));
    assert!(portcullis::policy::path_matches(PathMatch::Glob, "/**/a/**/a/**/a/", &path));
    let segment = format!("/{}", "a".repeat(3000));
    assert!(!portcullis::policy::path_matches(PathMatch::Glob, "/*a*a*a*a*b", &segment));
}

#[test]
fn case_insensitive_tenants_refuse_letters_that_fold_onto_ascii() {
    // U+212A KELVIN SIGN lower-cases to `k` in Unicode; IIS and .NET do not fold it.
    let h = Harness::new(&config(
        json!({"path_case": "insensitive", "public_paths": [{"path": "/kiosk/", "match": "prefix"}]}),
        json!({}),
    ));
    match h.handle(&api("/%E2%84%AAiosk/x")) {
        Action::Respond(r) => assert_eq!(r.status, 400),
        Action::Forward(f) => panic!("forwarded as public: {}", f.url),
    }
    assert!(matches!(h.handle(&api("/KIOSK/x")), Action::Forward(_)));
}

#[test]
fn a_nameless_set_cookie_spelling_a_gateway_cookie_is_dropped() {
    let h = portcullis::http::Headers::from_pairs([
        ("Set-Cookie", "=__Host-portcullis_session=x; Path=/; Secure"),
        ("Set-Cookie", "theme=dark; Path=/"),
    ]);
    let out = portcullis::proxy::downstream_headers(&h);
    assert_eq!(out.get_all("set-cookie").collect::<Vec<_>>(), vec!["theme=dark; Path=/"]);
}
