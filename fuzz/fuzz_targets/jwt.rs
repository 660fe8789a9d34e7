//! ID token verification must never panic, whatever the token.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::oidc::id_token::Expectations;
use portcullis::oidc::jwks::{parse_jwks, Jwk};
use portcullis::oidc::UntrustedIdToken;

/// An EC P-256 key (private scalar SHA-256("portcullis-fuzz")); the ES256 seed tokens in
/// scripts/fuzz.sh are signed with it.
const JWKS: &str = r#"{"keys":[
 {"kty":"EC","crv":"P-256","kid":"fz1","alg":"ES256","use":"sig",
  "x":"CkUmjN1fjJssiE0lWD7UkWz6IG9NVinvMX6BNYn2PyQ","y":"Qoqi8mI_Ik0XmJAi2lhDaXAksmYcHFcTLUUCh_CCwuA"}
]}"#;

struct Fixed {
    keys: Vec<Jwk>,
    audiences: Vec<regex_lite::Regex>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        keys: parse_jwks(JWKS.as_bytes()).map(|j| j.keys).unwrap_or_default(),
        audiences: regex_lite::Regex::new("^api://acme-.*$").into_iter().collect(),
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    assert_eq!(f.keys.len(), 1, "fixed JWKS must parse");
    let token = UntrustedIdToken::new(String::from_utf8_lossy(data));
    let _ = token.kid();
    for (nonce, hmac_secret) in [(Some("n-0S6"), Some(&b"client-secret"[..])), (None, None)] {
        let exp = Expectations {
            issuer: "https://op.example",
            client_id: "portcullis-client",
            trusted_audiences: &f.audiences,
            hmac_secret,
            now: 1_714_564_900,
            skew: 60,
            iat_window: 600,
            nonce,
            access_token: Some("at-123"),
        };
        let _ = token.verify(&f.keys, &exp);
        let _ = token.verify_logout(&f.keys, &exp);
    }
});
