//! Native micro-benchmarks of the hot operations: `cargo bench --bench core`.
//! A small harness (no extra dependency): each case runs for about half a second after a
//! warm-up, five times; the median time per operation is reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::{AlgorithmExt, Claims, Header};
use portcullis::crypto::{b64url, KeyWithId};
use portcullis::gateway::{Action, Gateway};
use portcullis::http::Request;
use portcullis::oidc::id_token::Expectations;
use portcullis::oidc::jwks::parse_jwks;
use portcullis::oidc::UntrustedIdToken;
use portcullis::ports::Ports;
use portcullis::secret::Secret;
use portcullis::session::{sign_session_cookie, verify_session_cookie, SessionId};
use portcullis::testing::{MemoryKv, ScriptedFetch, TestClock, TestRuntime};
use rsa::traits::PublicKeyParts;
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn measure(name: &str, mut f: impl FnMut()) {
    for _ in 0..50 {
        f();
    }
    let mut per_op = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(500) {
            for _ in 0..16 {
                f();
            }
            n += 16;
        }
        per_op.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    per_op.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = per_op[2];
    let (value, unit) = if median > 10_000.0 { (median / 1000.0, "µs") } else { (median, "ns") };
    println!("{name:<48} {value:>10.2} {unit}/op");
}

fn claims() -> Claims<serde_json::Value> {
    let mut c = Claims::new(json!({
        "iss": "https://idp.test", "sub": "alice", "aud": "client", "nonce": "n-123",
        "email": "alice@example.com", "groups": ["a", "b", "c"],
    }));
    c.issued_at = chrono::DateTime::from_timestamp(NOW as i64, 0);
    c.expiration = chrono::DateTime::from_timestamp(NOW as i64 + 300, 0);
    c
}

fn expectations() -> Expectations<'static> {
    Expectations {
        issuer: "https://idp.test",
        client_id: "client",
        trusted_audiences: &[],
        hmac_secret: None,
        now: NOW,
        skew: 60,
        iat_window: 600,
        nonce: Some("n-123"),
        access_token: None,
    }
}

fn bench_id_tokens() {
    let header = Header::empty().with_key_id("k");
    // RS256, 2048-bit.
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let pk = rsa_key.to_public_key();
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "k", "n": b64url(&pk.n().to_bytes_be()), "e": b64url(&pk.e().to_bytes_be())}]});
    let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap().keys;
    let token = Rsa::rs256().token(&header, &claims(), &rsa_key).unwrap();
    let t = UntrustedIdToken::new(token);
    measure("ID token verify RS256 (2048-bit)", || {
        black_box(t.verify(&keys, &expectations()).unwrap());
    });
    // ES256.
    let ec = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let p = ec.verifying_key().to_encoded_point(false);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": b64url(p.x().unwrap()), "y": b64url(p.y().unwrap())}]});
    let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap().keys;
    let t = UntrustedIdToken::new(Es256.token(&header, &claims(), &ec).unwrap());
    measure("ID token verify ES256", || {
        black_box(t.verify(&keys, &expectations()).unwrap());
    });
    // EdDSA.
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": b64url(kp.pk.as_ref())}]});
    let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap().keys;
    let t = UntrustedIdToken::new(Ed25519.token(&header, &claims(), &kp.sk).unwrap());
    measure("ID token verify EdDSA", || {
        black_box(t.verify(&keys, &expectations()).unwrap());
    });
}

fn bench_cookies() {
    let keys = vec![KeyWithId { id: "c1".into(), key: Secret::new(vec![9u8; 32]) }];
    let id = SessionId::from_random([3; 32]);
    let cookie = sign_session_cookie(&keys, "acme", &id).unwrap();
    measure("session cookie verify (HMAC-SHA256)", || {
        black_box(verify_session_cookie(&keys, "acme", black_box(&cookie)).unwrap());
    });
}

const CONFIG: &str = r#"{"gateway":{"cookie_keys":[{"id":"c1","secret":"COOKIE"}],"assertion_keys":[{"id":"a1","secret":"ASSERT"}]},
 "tenants":[{"id":"acme","hosts":["app.test"],"origin":"https://origin.test",
   "groups":{"map":{"eng":["engineering"]},"roles":{"superuser":["admins"]}},
   "policy":[{"path":"/admin","match":"prefix","allow_roles":["superuser"]}],
   "providers":[{"type":"oidc","name":"corp","label":"Corp","issuer":"https://idp.test","client_id":"c","client_secret":"CS"}]}]}"#;

fn secrets(assertion: &str) -> impl Fn(&str) -> Option<Secret> + '_ {
    move |n| match n {
        "COOKIE" => Some(Secret::new(vec![1u8; 32])),
        "CS" => Some(Secret::new(b"cs".to_vec())),
        "ASSERT" => Some(Secret::new(assertion.as_bytes().to_vec())),
        _ => None,
    }
}

fn bench_request_path() {
    use p256::pkcs8::EncodePrivateKey;
    let der = p256::SecretKey::random(&mut rand_core::OsRng).to_pkcs8_der().unwrap();
    let assertion = portcullis::crypto::b64(der.as_bytes());
    measure("config load and validation (1 tenant)", || {
        black_box(Gateway::new(CONFIG, &secrets(&assertion)));
    });
    let gw = Gateway::new(CONFIG, &secrets(&assertion));
    let clock = TestClock::at(NOW);
    let kv = MemoryKv::new(clock.clone());
    let fetch = ScriptedFetch::new(|_| Err(portcullis::ports::FetchError::Timeout));
    let rt = TestRuntime::new(clock.clone());
    let ports = Ports { kv: &kv, fetch: &fetch, rt: &rt, verifier: None, coord: None };
    // A stored session, as a sign-in leaves it.
    let id = SessionId::from_random([5; 32]);
    let record = json!({"v":1,"tenant":"acme","user_id":"https://idp.test/alice","user":"alice","provider":"corp",
        "email":"alice@example.com","email_verified":true,"name":"Alice","given_name":null,"family_name":null,
        "preferred_username":"alice","groups":["engineering"],"roles":["superuser"],"created":NOW,"last_seen":NOW,
        "expires":NOW + 28800});
    kv.raw_put(&id.kv_key("acme"), &record.to_string());
    let keys = gw.config().unwrap().cookie_keys.clone();
    let cookie = sign_session_cookie(&keys, "acme", &id).unwrap();
    let req = Request::new("GET", "https://app.test/admin/page")
        .unwrap()
        .header("host", "app.test")
        .header("cookie", &format!("__Host-portcullis_session={cookie}; other=1"))
        .header("x-portcullis-user", "spoofed")
        .header("accept", "text/html");
    let mut run = || match pollster::block_on(gw.handle(ports, &req)).action {
        Action::Forward(f) => {
            black_box(f);
        }
        Action::Respond(r) => panic!("unexpected {} {}", r.status, r.text()),
    };
    run();
    let reads = kv.reads.get();
    measure("authenticated request (cached session, headers, cached assertion)", &mut run);
    assert_eq!(kv.reads.get(), reads, "the hot path reads no KV while the session is cached");
    // With the in-isolate cache off: one KV read per request (in memory here).
    let uncached =
        Gateway::new(&CONFIG.replace(r#""gateway":{"#, r#""gateway":{"session_cache_ttl":0,"#), &secrets(&assertion));
    let mut cold = || match pollster::block_on(uncached.handle(ports, &req)).action {
        Action::Forward(f) => {
            black_box(f);
        }
        Action::Respond(r) => panic!("unexpected {} {}", r.status, r.text()),
    };
    measure("authenticated request (session read from KV each time)", &mut cold);
    let key = portcullis::assertion::SigningKey::parse("a1", &Secret::new(assertion.as_bytes().to_vec())).unwrap();
    let claims =
        json!({"iss": "portcullis", "aud": "acme", "sub": "https://idp.test/alice", "groups": ["engineering"]});
    measure("origin assertion signing (ES256)", || {
        black_box(key.sign(&claims, NOW).unwrap());
    });
}

fn bench_saml() {
    use portcullis::saml::dsig::IdpCertificate;
    use portcullis::saml::response::{Expectations, SamlResponse};
    use portcullis::saml::xml::{Document, XmlLimits};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/saml");
    let cert = IdpCertificate::from_pem_or_base64(&std::fs::read_to_string(format!("{dir}/keys/idp-rsa.crt")).unwrap())
        .unwrap();
    let certs = [cert];
    let exp = Expectations {
        idp_entity_id: "https://idp.example.com/metadata",
        idp_certs: &certs,
        sp_entity_id: "https://sp.example.com/saml/metadata",
        acs_url: "https://sp.example.com/saml/acs",
        expected_in_response_to: Some("_req-6c1e8f4a"),
        allow_unsolicited: false,
        now: 1_900_000_000,
        skew: 60,
        legacy_sha1: false,
        decryption_key: None,
    };
    for name in ["bench-8k.xml", "bench-40k.xml"] {
        let xml = std::fs::read(format!("{dir}/signed/{name}")).unwrap();
        let limits = XmlLimits::default();
        SamlResponse::parse(&xml, &limits).unwrap().verify(&exp).unwrap();
        measure(&format!("SAML Response parse+verify, RSA-SHA256, {} KB", xml.len() / 1024), || {
            black_box(SamlResponse::parse(&xml, &limits).unwrap().verify(&exp).unwrap());
        });
        let doc = Document::parse(&xml, &limits).unwrap();
        measure(&format!("exclusive C14N of the whole document, {} KB", xml.len() / 1024), || {
            black_box(portcullis::saml::c14n::canonicalize(&doc, doc.root(), &[], None).unwrap());
        });
    }
}

fn bench_totp() {
    use portcullis::mfa::{totp_code, verify_totp, TotpParams};
    let secret = [42u8; 20];
    let params = TotpParams::default();
    let code = totp_code(&secret, NOW, &params).unwrap();
    measure("TOTP verification (SHA-1, window ±1, constant time)", || {
        black_box(verify_totp(&secret, black_box(&code), NOW, &params, None).unwrap());
    });
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("portcullis native benchmarks ({}), median of 5", std::env::consts::ARCH);
    bench_id_tokens();
    bench_cookies();
    bench_request_path();
    bench_saml();
    bench_totp();
}
