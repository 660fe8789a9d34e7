//! `POST {prefix}/bench` (only with the `bench` feature): runs one core operation N times
//! inside the isolate so a client can time it in the real runtime (wall time of N runs
//! minus wall time of 0 runs). The inputs come in the request body.

use super::context::Cx;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Gateway;
use crate::error::Refusal;
use crate::http::{Request, Response};

#[derive(Deserialize)]
struct BenchRequest {
    op: String,
    n: u32,
    #[serde(default)]
    input: Value,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

impl Gateway {
    pub(super) async fn bench(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let b: BenchRequest = serde_json::from_slice(&cx.req.body).map_err(|e| Refusal::BadInput(e.to_string()))?;
        let i = &b.input;
        let now = i.get("now").and_then(Value::as_u64).unwrap_or(0);
        let bad = |e: String| Refusal::BadInput(e);
        match b.op.as_str() {
            "id_token" | "id_token_port" => {
                let keys = crate::oidc::jwks::parse_jwks(i["jwks"].to_string().as_bytes()).map_err(bad)?.keys;
                let token = crate::oidc::UntrustedIdToken::new(s(i, "token"));
                let exp = crate::oidc::id_token::Expectations {
                    issuer: s(i, "issuer"),
                    client_id: s(i, "client_id"),
                    trusted_audiences: &[],
                    hmac_secret: None,
                    now,
                    skew: 60,
                    iat_window: 3600,
                    nonce: Some(s(i, "nonce")),
                    access_token: None,
                };
                for _ in 0..b.n {
                    if b.op == "id_token_port" {
                        super::check_token(cx.ports, &token, &keys, &exp).await.map_err(|e| bad(e.to_string()))?;
                    } else {
                        token.verify(&keys, &exp).map_err(|e| bad(e.to_string()))?;
                    }
                }
            }
            "saml" | "saml_port" => {
                use crate::saml::response::{Expectations, SamlResponse};
                let cert = crate::saml::dsig::IdpCertificate::from_pem_or_base64(s(i, "cert"))
                    .map_err(|e| bad(e.to_string()))?;
                let certs = [cert];
                let exp = Expectations {
                    idp_entity_id: s(i, "idp"),
                    idp_certs: &certs,
                    sp_entity_id: s(i, "sp"),
                    acs_url: s(i, "acs"),
                    expected_in_response_to: Some(s(i, "in_response_to")),
                    allow_unsolicited: false,
                    now,
                    skew: 60,
                    legacy_sha1: false,
                    decryption_key: None,
                };
                let limits = crate::saml::xml::XmlLimits::default();
                for _ in 0..b.n {
                    let r =
                        SamlResponse::from_post_binding(s(i, "response"), &limits).map_err(|e| bad(e.to_string()))?;
                    if let (Some(verifier), "saml_port") = (cx.ports.verifier, b.op.as_str()) {
                        // Each run pays for the port's check, as a sign-in does.
                        crate::saml::dsig::forget_port_verdicts();
                        crate::saml::dsig::check_with_port(verifier, r.port_checks(&certs)).await;
                    }
                    r.verify(&exp).map_err(|e| bad(e.to_string()))?;
                }
            }
            // The parts of "saml" on their own, for the breakdown of its cost: decoding and
            // parsing; Exclusive C14N of the whole document; SHA-256 of that canonical form.
            "saml_parse" | "saml_c14n" | "saml_digest" => {
                use crate::saml::response::SamlResponse;
                let limits = crate::saml::xml::XmlLimits::default();
                let parsed = crate::saml::xml::Document::parse(
                    &crate::crypto::b64_decode(s(i, "response")).ok_or_else(|| bad("base64".into()))?,
                    &limits,
                )
                .map_err(|e| bad(e.to_string()))?;
                let c14n = |d: &crate::saml::xml::Document| crate::saml::c14n::canonicalize(d, d.root(), &[], None);
                let canonical = c14n(&parsed).map_err(|e| bad(e.to_string()))?;
                for _ in 0..b.n {
                    match b.op.as_str() {
                        "saml_parse" => drop(
                            SamlResponse::from_post_binding(s(i, "response"), &limits)
                                .map_err(|e| bad(e.to_string()))?,
                        ),
                        "saml_c14n" => drop(c14n(&parsed).map_err(|e| bad(e.to_string()))?),
                        _ => drop(std::hint::black_box(crate::crypto::sha256(std::hint::black_box(&canonical)))),
                    }
                }
            }
            "totp" => {
                let params = crate::mfa::TotpParams::default();
                let secret = [42u8; 20];
                let code = crate::mfa::totp_code(&secret, now, &params).map_err(|e| bad(format!("{e:?}")))?;
                for _ in 0..b.n {
                    crate::mfa::verify_totp(&secret, &code, now, &params, None).map_err(|e| bad(format!("{e:?}")))?;
                }
            }
            "cookie" => {
                let keys = self.config().map(|l| l.cookie_keys.clone()).unwrap_or_default();
                let id = crate::session::SessionId::from_random([3; 32]);
                let cookie = crate::session::sign_session_cookie(&keys, "bench", &id).unwrap_or_default();
                for _ in 0..b.n {
                    crate::session::verify_session_cookie(&keys, "bench", &cookie).map_err(|e| bad(e.to_string()))?;
                }
            }
            "request" => {
                // The core's part of a proxied request with a valid, cached session: cookie,
                // cache, policy, identity headers, cached assertion (no I/O once warm).
                let record: crate::session::SessionRecord =
                    serde_json::from_value(i["record"].clone()).map_err(|e| bad(e.to_string()))?;
                self.cache_session(s(i, "kv_key"), record, cx.ports.rt.now_ms());
                let mut r = Request::new("GET", s(i, "url")).map_err(|e| bad(e.to_string()))?;
                r.headers.append("host", s(i, "host"));
                r.headers.append("cookie", s(i, "cookie"));
                r.headers.append("accept", "text/html");
                for _ in 0..b.n {
                    // Boxed: `handle` reaches this function again (the bench route).
                    let handled: crate::ports::LocalFuture<'_, super::Outcome> = Box::pin(self.handle(cx.ports, &r));
                    if !matches!(handled.await.action, super::Action::Forward(_)) {
                        return Err(bad("the request was not forwarded".into()));
                    }
                }
            }
            // Nothing to run: the answer's wasm_memory_bytes is the point.
            "memory" => {}
            other => return Err(bad(format!("unknown op {other}"))),
        }
        #[cfg(target_arch = "wasm32")]
        let memory = core::arch::wasm32::memory_size(0) * 65536;
        #[cfg(not(target_arch = "wasm32"))]
        let memory = 0;
        Ok(Response::json(200, &json!({"op": b.op, "n": b.n, "ok": true, "wasm_memory_bytes": memory})))
    }
}
