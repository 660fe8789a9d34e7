//! JWKS parsing must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::oidc::jwks::parse_jwks;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_jwks(data) {
        for k in &parsed.keys {
            let _ = k.usable_for_signatures();
            for alg in ["ES256", "RS256", "PS512", "EdDSA", "none"] {
                let _ = k.key.fits(alg);
            }
        }
    }
});
