//! Fetches from identity providers: an idempotent GET (discovery, JWKS, SAML metadata) that
//! fails with a network error is tried once more (a peer that closes a connection the
//! runtime meant to reuse fails the first try only); anything else is not repeated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::rc::Rc;

use crate::common::*;
use portcullis::ports::FetchError;
use serde_json::json;

/// Makes the next `n` requests whose URL ends with `suffix` fail with `error`; the others
/// reach the test IdP.
fn fail_next(h: &Harness, suffix: &'static str, n: usize, error: FetchError) {
    let idp = h.idp.clone();
    let left = Rc::new(Cell::new(n));
    h.fetch.set(move |r| {
        if r.url.ends_with(suffix) && left.get() > 0 {
            left.set(left.get() - 1);
            return Err(error.clone());
        }
        idp.borrow().answer(r)
    });
}

fn lost() -> FetchError {
    FetchError::Unreachable("Network connection lost.".into())
}

#[test]
fn discovery_and_jwks_are_retried_once_after_a_network_error() {
    let h = Harness::new(&config(json!({}), json!({})));
    fail_next(&h, "/.well-known/openid-configuration", 1, lost());
    let (auth, pending) = h.start_login("/");
    assert_eq!(h.fetch.count("/.well-known/openid-configuration"), 2);
    fail_next(&h, "/jwks", 1, lost());
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(set_cookie_value(&r, "__Host-portcullis_session").is_some());
    assert_eq!(h.fetch.count("/jwks"), 2);
}

#[test]
fn a_second_network_error_is_refused_and_nothing_else_is_repeated() {
    // Twice in a row: two attempts, then the refusal page.
    let h = Harness::new(&config(json!({}), json!({})));
    fail_next(&h, "/.well-known/openid-configuration", 2, lost());
    assert_eq!(h.respond(&get("/_portcullis/login?provider=corp")).status, 502);
    assert_eq!(h.fetch.count("/.well-known/openid-configuration"), 2);
    // A timeout already used the whole budget: not repeated.
    let h = Harness::new(&config(json!({}), json!({})));
    fail_next(&h, "/.well-known/openid-configuration", 1, FetchError::Timeout);
    assert_eq!(h.respond(&get("/_portcullis/login?provider=corp")).status, 502);
    assert_eq!(h.fetch.count("/.well-known/openid-configuration"), 1);
    // The token request is a POST that spends the code: never sent twice.
    let h = Harness::new(&config(json!({}), json!({})));
    let (auth, pending) = h.start_login("/");
    fail_next(&h, "/token", 1, lost());
    let r = h.respond(&h.callback_for(&auth, &pending));
    assert_ne!(r.status, 302, "{}", r.text());
    assert_eq!(h.fetch.count("/token"), 1);
}
