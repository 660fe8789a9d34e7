//! Work per input byte of every parser and verifier that reads untrusted input, on its
//! worst inputs next to a valid input of the same size: `cargo bench --bench parsers`.
//!
//! Each group prints the valid input's time per KiB, then each hostile input's, with the
//! ratio to the valid one measured in the same run. The budget is a ratio of at most 5:
//! an attacker gets no more work per byte out of the gateway than a real IdP does.
//! Inputs are up to 1 MiB, or the largest size the parser accepts when that is less
//! (an input above the size limit is refused before any parsing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use portcullis::config::Config;
use portcullis::http::Request;
use portcullis::oidc::id_token::Expectations;
use portcullis::oidc::jwks::parse_jwks;
use portcullis::oidc::UntrustedIdToken;
use portcullis::saml::c14n::canonicalize;
use portcullis::saml::response::SamlResponse;
use portcullis::saml::xml::{Document, XmlLimits};
use portcullis::secret::Secret;

const BUDGET: f64 = 5.0;
const MIB: usize = 1 << 20;

/// Median time of one run of `f`, in microseconds.
fn time_us(mut f: impl FnMut()) -> f64 {
    f();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(150) || n < 3 {
            f();
            n += 1;
        }
        runs.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
    }
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[2]
}

struct Group {
    name: &'static str,
    valid_per_kib: f64,
    worst: f64,
}

impl Group {
    fn new(name: &'static str, input: &[u8], f: impl FnMut()) -> Self {
        let per_kib = time_us(f) / (input.len() as f64 / 1024.0);
        println!("== {name}");
        println!("  {:<58} {:>8} KiB {:>10.3} µs/KiB", "valid", input.len() / 1024, per_kib);
        Self { name, valid_per_kib: per_kib, worst: 0.0 }
    }

    fn case(&mut self, what: &str, input: &[u8], f: impl FnMut()) {
        let per_kib = time_us(f) / (input.len() as f64 / 1024.0);
        let ratio = per_kib / self.valid_per_kib;
        self.worst = self.worst.max(ratio);
        let flag = if ratio > BUDGET { "  OVER BUDGET" } else { "" };
        println!("  {what:<58} {:>8} KiB {per_kib:>10.3} µs/KiB  x{ratio:.2}{flag}", input.len() / 1024);
    }

    fn end(self) -> (&'static str, f64) {
        (self.name, self.worst)
    }
}

/// Repeats `unit` (with `{i}` replaced by a counter) between `head` and `tail` until the
/// whole is about `size` bytes.
fn fill(head: &str, unit: &str, tail: &str, size: usize) -> String {
    let mut s = String::with_capacity(size + 256);
    s.push_str(head);
    let mut i = 0usize;
    while s.len() + unit.len() + 16 + tail.len() < size {
        s.push_str(&unit.replace("{i}", &i.to_string()));
        i += 1;
    }
    s.push_str(tail);
    s
}

const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

/// A Response with an AttributeStatement filling `size` bytes, within the parser's limits.
fn valid_xml(size: usize) -> String {
    fill(
        &format!(
            r#"<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="_r" Version="2.0" IssueInstant="2024-05-01T12:00:00Z"><saml:Assertion ID="_a" Version="2.0" IssueInstant="2024-05-01T12:00:00Z"><saml:Issuer>https://idp.example.com/metadata</saml:Issuer><saml:AttributeStatement>"#
        ),
        r#"<saml:Attribute Name="urn:oid:attribute-{i}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:uri"><saml:AttributeValue>value number {i} of the attribute statement, as IdPs send them</saml:AttributeValue></saml:Attribute>"#,
        "</saml:AttributeStatement></saml:Assertion></samlp:Response>",
        size,
    )
}

fn xml_group(limits: &XmlLimits) -> (&'static str, f64) {
    let size = limits.max_bytes - 64;
    let valid = valid_xml(size);
    assert!(Document::parse(valid.as_bytes(), limits).is_ok());
    let parse = |s: &str| {
        let b = s.as_bytes().to_vec();
        move || {
            let _ = black_box(Document::parse(black_box(&b), limits));
        }
    };
    let mut g = Group::new("XML parser (Document::parse, 512 KiB limit)", valid.as_bytes(), parse(&valid));
    let cases = [
        ("one start tag, distinct attributes (the 74,000-attribute bomb)", fill("<r", r#" a{i}="""#, "/>", size)),
        (
            "elements with 127 attributes each",
            fill(
                "<r>",
                &format!("<e{}/>", (0..127).map(|j| format!(r#" a{j}="v""#)).collect::<String>()).replace("{i}", "x"),
                "</r>",
                size,
            ),
        ),
        (
            "127 namespaces in scope, prefixed names below",
            fill(
                &format!("<r{}>", (0..127).map(|j| format!(r#" xmlns:p{j}="urn:{j}""#)).collect::<String>()),
                r#"<p7:e p9:a="1" p100:b="2"/>"#,
                "</r>",
                size,
            ),
        ),
        (
            "namespace declarations on every element",
            fill("<r>", r#"<p:e xmlns:p="urn:p{i}" xmlns:q="urn:q" q:a="1"/>"#, "</r>", size),
        ),
        ("character references", fill("<r>", "&#x41;&amp;", "</r>", size)),
        ("text split by comments", fill("<r>", "a<!---->", "</r>", size)),
        (
            "nesting at the depth limit",
            fill("<r>", &format!("{}{}", "<a>".repeat(38), "</a>".repeat(38)), "</r>", size),
        ),
        ("names of 256 bytes", fill("<r>", &format!("<{}/>", "n".repeat(256)), "</r>", size)),
        ("empty elements, refused at the node limit", fill("<r>", "<a/>", "</r>", size)),
        ("empty elements, 19,000 (under the node limit)", fill("<r>", "<a/>", "</r>", 76_000)),
        ("one-character text between comments, under the node limit", fill("<r>", "a<!---->", "</r>", 79_000)),
    ];
    for (what, input) in &cases {
        g.case(what, input.as_bytes(), parse(input));
    }
    g.end()
}

fn c14n_group(limits: &XmlLimits) -> (&'static str, f64) {
    let size = limits.max_bytes - 64;
    let valid = valid_xml(size);
    let run = |s: &str, prefixes: Vec<String>| {
        let doc = Document::parse(s.as_bytes(), limits).unwrap();
        move || {
            black_box(canonicalize(&doc, doc.root(), &prefixes, None).unwrap());
        }
    };
    let mut g = Group::new("Exclusive C14N (canonicalize)", valid.as_bytes(), run(&valid, vec!["xs".into()]));
    let all: Vec<String> = (0..32).map(|j| format!("p{j}")).collect();
    let decls: String = (0..127).map(|j| format!(r#" xmlns:p{j}="urn:{j}""#)).collect();
    let flat = fill(&format!("<r{decls}>"), "<b/>", "</r>", 70_000);
    g.case("PrefixList of 32, 127 namespaces in scope, 17,000 elements", flat.as_bytes(), run(&flat, all.clone()));
    let redeclared = fill(&format!("<r{decls}>"), r#"<b xmlns:p3="urn:x{i}"/>"#, "</r>", 190_000);
    g.case("PrefixList of 32, a redeclared prefix on every element", redeclared.as_bytes(), run(&redeclared, all));
    g.end()
}

fn saml_group() -> (&'static str, f64) {
    // The ACS path up to the signature check: base64 of the form field, then parsing (the
    // verification itself needs a configured key; tests/verify/saml_response.rs covers it).
    let limits = XmlLimits::default();
    let b64 = |s: &str| portcullis::crypto::b64(s.as_bytes());
    let valid = b64(&valid_xml(limits.max_bytes - 64));
    let run = |v: &str| {
        let v = v.to_owned();
        move || {
            let _ = black_box(SamlResponse::from_post_binding(black_box(&v), &limits));
        }
    };
    let mut g = Group::new("SAMLResponse form field (base64 + parse)", valid.as_bytes(), run(&valid));
    let bomb = b64(&fill("<samlp:Response", r#" a{i}="""#, "/>", limits.max_bytes - 64));
    g.case("518 KB start tag with distinct attributes, base64", bomb.as_bytes(), run(&bomb));
    let lines = valid.as_bytes().chunks(1).map(|c| format!("{}\n", c[0] as char)).collect::<String>();
    let lines = lines[..valid.len().min(lines.len())].to_owned();
    g.case("base64 with a line break after every character", lines.as_bytes(), run(&lines));
    g.end()
}

fn jwt_group() -> (&'static str, f64) {
    // The 64 KiB limit applies before anything else; tokens of that size with a valid
    // signature check and hostile ones.
    use jwt_compact::alg::Es256;
    use jwt_compact::{AlgorithmExt, Claims, Header};
    let ec = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let p = ec.verifying_key().to_encoded_point(false);
    let b64u = portcullis::crypto::b64url;
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": b64u(p.x().unwrap()), "y": b64u(p.y().unwrap())}]});
    let keys = parse_jwks(jwks.to_string().as_bytes()).unwrap().keys;
    let exp = Expectations {
        issuer: "https://idp.test",
        client_id: "client",
        trusted_audiences: &[],
        hmac_secret: None,
        now: 1_800_000_000,
        skew: 60,
        iat_window: 600,
        nonce: Some("n"),
        access_token: None,
    };
    let sign = |claims: serde_json::Value| {
        let mut c = Claims::new(claims);
        c.issued_at = chrono::DateTime::from_timestamp(1_800_000_000, 0);
        c.expiration = chrono::DateTime::from_timestamp(1_800_000_300, 0);
        Es256.token(&Header::empty().with_key_id("k"), &c, &ec).unwrap()
    };
    let groups: Vec<String> = (0..2000).map(|i| format!("group-{i:05}")).collect();
    let valid = sign(
        serde_json::json!({"iss": "https://idp.test", "aud": "client", "sub": "alice", "nonce": "n", "groups": groups}),
    );
    assert!(valid.len() <= 64 * 1024, "{}", valid.len());
    let run = |t: &str| {
        let t = UntrustedIdToken::new(t);
        let keys = keys.clone();
        let exp = exp.clone();
        move || {
            let _ = black_box(t.verify(&keys, &exp));
        }
    };
    let mut g = Group::new("ID token (UntrustedIdToken::verify, ES256, 64 KiB limit)", valid.as_bytes(), run(&valid));
    let size = valid.len();
    let deep = format!("{}{}", "[".repeat(size / 2), "]".repeat(size / 2));
    let nested = sign(serde_json::json!({"iss": "https://idp.test", "aud": "client", "sub": "alice", "nonce": "n"}));
    let (h, rest) = nested.split_once('.').unwrap();
    let deep_claims = format!("{h}.{}.{}", b64u(deep.as_bytes()), rest.split_once('.').unwrap().1);
    g.case("claims nested 30,000 deep (signature fails first)", deep_claims.as_bytes(), run(&deep_claims));
    let header = b64u(format!(r#"{{"alg":"ES256","kid":"k","x":"{}"}}"#, "a".repeat(size * 3 / 4 - 40)).as_bytes());
    let big_header = format!("{header}.{}", rest);
    g.case("a 48 KiB header", big_header.as_bytes(), run(&big_header));
    let many_aud: Vec<String> = (0..3000).map(|i| format!("aud-{i}")).collect();
    let audiences = sign(serde_json::json!({"iss": "https://idp.test", "aud": many_aud, "sub": "alice", "nonce": "n"}));
    g.case("3,000 audiences, validly signed", audiences.as_bytes(), run(&audiences));
    g.end()
}

fn jwks_group() -> (&'static str, f64) {
    // A JWKS holds at most 100 keys (`MAX_JWKS_KEYS`): the valid input is 100 RSA keys,
    // and every hostile one has the same size.
    let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap().to_public_key();
    use rsa::traits::PublicKeyParts;
    let b64u = portcullis::crypto::b64url;
    let key = |i: usize| {
        serde_json::json!({"kty": "RSA", "kid": format!("k{i}"), "use": "sig", "alg": "RS256", "n": b64u(&rsa.n().to_bytes_be()), "e": "AQAB"})
            .to_string()
    };
    let keys: Vec<String> = (0..100).map(key).collect();
    let valid = format!(r#"{{"keys":[{}]}}"#, keys.join(","));
    assert_eq!(parse_jwks(valid.as_bytes()).unwrap().keys.len(), 100);
    let size = valid.len();
    let run = |s: &str| {
        let b = s.as_bytes().to_vec();
        move || {
            let _ = black_box(parse_jwks(black_box(&b)));
        }
    };
    let mut g = Group::new("JWKS (parse_jwks, at most 100 keys)", valid.as_bytes(), run(&valid));
    let deep = format!(r#"{{"keys":{}{}}}"#, "[".repeat(size / 2 - 8), "]".repeat(size / 2 - 8));
    g.case("arrays nested deep", deep.as_bytes(), run(&deep));
    let tiny = fill(r#"{"keys":["#, r#"{"kty":"EC"},"#, "{}]}", size);
    g.case("thousands of unusable keys", tiny.as_bytes(), run(&tiny));
    let n4096 = b64u(&[0xff; 512]);
    let huge = fill(r#"{"keys":["#, &format!(r#"{{"kty":"RSA","n":"{n4096}","e":"AQAB"}},"#), "{}]}", size);
    g.case("4096-bit moduli, refused by count past 100", huge.as_bytes(), run(&huge));
    let unusable: Vec<String> =
        (0..100).map(|i| format!(r#"{{"kty":"RSA","kid":"u{i}","n":"{}","e":"AQAB"}}"#, b64u(&[0x01; 256]))).collect();
    let unusable =
        format!(r#"{{"keys":[{}],"pad":"{}"}}"#, unusable.join(","), "x".repeat(size.saturating_sub(40_000)));
    g.case("100 keys that fail to load, padded", unusable.as_bytes(), run(&unusable));
    let escapes = format!(r#"{{"keys":[],"x":"{}"}}"#, "\\u0041".repeat(size / 6 - 4));
    g.case("one string of \\u escapes", escapes.as_bytes(), run(&escapes));
    g.end()
}

fn request_group() -> (&'static str, f64) {
    // Cookies: the 32 KiB header limit; forms: the ACS's 1 MiB body limit.
    let req = |cookie: &str| {
        Request::new("GET", "https://app.test/").unwrap().header("host", "app.test").header("cookie", cookie)
    };
    let valid = fill("", "pref{i}=some-ordinary-cookie-value; ", "__Host-portcullis_session=v1.c1.x.y", 32 * 1024);
    let run = |c: &str| {
        let r = req(c);
        move || {
            black_box(r.headers.cookie("__Host-portcullis_session"));
        }
    };
    let mut g = Group::new("Cookie header (Headers::cookie, 32 KiB limit)", valid.as_bytes(), run(&valid));
    let semis = format!("{}__Host-portcullis_session=x", ";".repeat(32 * 1024 - 40));
    g.case("32,000 empty cookies", semis.as_bytes(), run(&semis));
    let quotes = format!("__Host-portcullis_session={}", "\"".repeat(32 * 1024 - 40));
    g.case("a value of quotes", quotes.as_bytes(), run(&quotes));
    let (_, worst_cookie) = g.end();

    let body = |s: String| Request::new("POST", "https://app.test/acs").unwrap().with_body(s.into_bytes());
    let saml = portcullis::crypto::b64(&vec![b'x'; MIB * 3 / 4 - 1024]);
    let valid = format!("RelayState=abc&SAMLResponse={}", saml.replace('+', "%2B").replace('/', "%2F"));
    let run = |r: Request| {
        move || {
            black_box(r.form_value("SAMLResponse"));
        }
    };
    let mut g =
        Group::new("Form body (Request::form_value, 1 MiB ACS limit)", valid.as_bytes(), run(body(valid.clone())));
    let pairs = fill("", "a=&", "SAMLResponse=x", MIB);
    g.case("260,000 empty pairs", pairs.as_bytes(), run(body(pairs.clone())));
    let escapes = format!("SAMLResponse={}", "%41".repeat(MIB / 3 - 8));
    g.case("percent escapes only", escapes.as_bytes(), run(body(escapes.clone())));
    let (_, worst_form) = g.end();
    ("Cookie header and form body", worst_cookie.max(worst_form))
}

fn config_group() -> (&'static str, f64) {
    let secrets = |n: &str| match n {
        "COOKIE" => Some(Secret::new(vec![1u8; 32])),
        "CS" => Some(Secret::new(b"client-secret".to_vec())),
        _ => None,
    };
    let tenant = r#"{"id":"t{i}","hosts":["t{i}.test"],"origin":"https://origin.test","groups":{"map":{"eng":["engineering"]}},"policy":[{"path":"/admin","match":"prefix","allow_groups":["eng"]}],"providers":[{"type":"oidc","name":"corp","label":"Corp","issuer":"https://idp.test","client_id":"c","client_secret":"CS","trusted_audiences":["api://t{i}-[a-z]+"]}]},"#;
    let head = r#"{"gateway":{"cookie_keys":[{"id":"c1","secret":"COOKIE"}]},"tenants":["#;
    let last = tenant.replace("{i}", "last");
    let valid = fill(head, tenant, &format!("{}]}}", last.trim_end_matches(',')), MIB);
    assert!(Config::load(&valid, &secrets).is_ok());
    let run = |s: &str| {
        let s = s.to_owned();
        move || {
            let _ = black_box(Config::load(black_box(&s), &secrets));
        }
    };
    let mut g = Group::new("Configuration document (Config::load, 1 MiB)", valid.as_bytes(), run(&valid));
    let deep = format!(r#"{{"gateway":{}{}}}"#, "[".repeat(MIB / 2 - 8), "]".repeat(MIB / 2 - 8));
    g.case("arrays nested 520,000 deep", deep.as_bytes(), run(&deep));
    let bad = fill(head, &tenant.replace("https://origin.test", "ftp://x").replace("[a-z]+", "(("), "{}]}", MIB);
    g.case("tenants that are all invalid (every error reported)", bad.as_bytes(), run(&bad));
    let regex = fill(
        head,
        &tenant.replace("api://t{i}-[a-z]+", &"(a|aa)*".repeat(20)),
        &format!("{}]}}", last.trim_end_matches(',')),
        MIB,
    );
    g.case("a long alternation regex in every trusted_audiences", regex.as_bytes(), run(&regex));
    g.end()
}

/// A benchmark group: its name and its worst ratio.
type GroupFn<'a> = dyn Fn() -> (&'static str, f64) + 'a;

fn main() {
    let limits = XmlLimits::default();
    // `cargo bench --bench parsers -- c14n` runs the groups whose name contains the word.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-')).map(|a| a.to_lowercase());
    let groups: [(&str, &GroupFn<'_>); 7] = [
        ("xml", &|| xml_group(&limits)),
        ("c14n", &|| c14n_group(&limits)),
        ("saml", &saml_group),
        ("jwt", &jwt_group),
        ("jwks", &jwks_group),
        ("request", &request_group),
        ("config", &config_group),
    ];
    let results: Vec<_> =
        groups.iter().filter(|(key, _)| only.as_deref().is_none_or(|o| key.contains(o))).map(|(_, g)| g()).collect();
    println!("== worst case per valid case, per KiB (budget x{BUDGET})");
    for (name, worst) in results {
        println!("  {name:<58} x{worst:.2}{}", if worst > BUDGET { "  OVER BUDGET" } else { "" });
    }
}
