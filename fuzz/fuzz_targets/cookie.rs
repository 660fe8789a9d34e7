//! Session and pending-login cookie checks must never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::crypto::KeyWithId;
use portcullis::secret::Secret;
use portcullis::session::{pending_cookie_matches, verify_session_cookie};

fn keys() -> &'static [KeyWithId] {
    static KEYS: OnceLock<Vec<KeyWithId>> = OnceLock::new();
    KEYS.get_or_init(|| {
        vec![
            KeyWithId { id: "k1".into(), key: Secret::new(vec![7u8; 48]) },
            KeyWithId { id: "k0".into(), key: Secret::new(vec![9u8; 32]) },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    let keys = keys();
    let _ = verify_session_cookie(keys, "t", &value);
    let _ = pending_cookie_matches(keys, "t", &value, "st");
    // The input also as the state, against a cookie for a fixed state.
    let _ = pending_cookie_matches(keys, "t", "v1.k1.fEP4wIQYuFNaHS4rfYc3RHeealc-NgH42t-LonUjR4E", &value);
});
