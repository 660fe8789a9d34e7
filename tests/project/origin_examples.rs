//! The origin-side examples in examples/verify-assertion/ (Node.js, Python, Go) accept the
//! assertions this gateway signs (ES256 and EdDSA) and refuse forged, expired, foreign and
//! unknown-key ones. Each runs where its toolchain is installed: Node.js with `jose` after
//! `scripts/setup.sh`, Python with PyJWT and cryptography, Go; a missing one is reported as
//! skipped on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use p256::pkcs8::EncodePrivateKey;
use portcullis::assertion::{jwks, AssertionClaims, SigningKey};
use portcullis::secret::Secret;

const ISSUER: &str = "https://auth.example.com";
const TENANT: &str = "acme";

fn dir() -> String {
    format!("{}/examples/verify-assertion", env!("CARGO_MANIFEST_DIR"))
}

fn es256_key(id: &str) -> SigningKey {
    let k = p256::SecretKey::random(&mut rand_core::OsRng);
    let der = portcullis::crypto::b64(k.to_pkcs8_der().unwrap().as_bytes());
    SigningKey::parse(id, &Secret::new(der.into_bytes())).unwrap()
}

fn ed25519_key(id: &str) -> SigningKey {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).unwrap();
    der.extend_from_slice(&seed);
    SigningKey::parse(id, &Secret::new(portcullis::crypto::b64(&der).into_bytes())).unwrap()
}

fn sign(key: &SigningKey, aud: &str, iat: u64) -> String {
    let groups = vec!["eng".to_owned()];
    let claims = AssertionClaims {
        iss: ISSUER,
        aud,
        sub: "https://idp.example.com/alice",
        email: Some("alice@example.com"),
        name: Some("Alice"),
        preferred_username: None,
        groups: &groups,
        roles: &[],
        amr: &[],
        idp: "corp",
        attributes: &Default::default(),
        principal: "user",
        client_id: None,
        scope: None,
    };
    key.sign(&claims, iat).unwrap()
}

struct Cases {
    jwks_file: String,
    accepted: Vec<(&'static str, String)>,
    refused: Vec<(&'static str, String)>,
}

fn cases(runner: &str) -> Cases {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (es, ed, other) = (es256_key("a1"), ed25519_key("a2"), es256_key("a1"));
    let dir = std::env::temp_dir().join(format!("portcullis-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks_file = dir.join(format!("jwks-{runner}.json"));
    std::fs::write(&jwks_file, jwks(&[es.clone(), ed.clone()]).to_string()).unwrap();
    let valid = sign(&es, TENANT, now);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(portcullis::crypto::b64url_decode(&parts[1]).unwrap()).unwrap();
    parts[1] = portcullis::crypto::b64url(payload.replace("alice", "admin1").as_bytes());
    Cases {
        jwks_file: jwks_file.to_string_lossy().into_owned(),
        accepted: vec![("ES256", valid.clone()), ("EdDSA", sign(&ed, TENANT, now))],
        refused: vec![
            ("another tenant's", sign(&es, "beta", now)),
            ("expired", sign(&es, TENANT, now - 3600)),
            ("tampered", parts.join(".")),
            ("signed by a key not in the JWKS", sign(&other, TENANT, now)),
            ("empty", String::new()),
        ],
    }
}

fn check(name: &str, mut cmd: impl FnMut() -> Command) {
    let c = cases(name);
    for (what, token) in &c.accepted {
        let out =
            cmd().args(["--jwks", &c.jwks_file, "--issuer", ISSUER, "--audience", TENANT, token]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: a valid assertion ({what}) was refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("\"sub\":\"https://idp.example.com/alice\""), "{name}: {stdout}");
    }
    for (what, token) in &c.refused {
        let out =
            cmd().args(["--jwks", &c.jwks_file, "--issuer", ISSUER, "--audience", TENANT, token]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: an assertion ({what}) was not refused");
        assert!(String::from_utf8_lossy(&out.stderr).contains("refused:"), "{name}");
    }
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).current_dir(dir()).output().is_ok_and(|o| o.status.success())
}

#[test]
fn node_example_verifies_the_assertion() {
    if !works("node", &["-e", "import('jose')"]) {
        eprintln!("skipped: Node.js with jose (scripts/setup.sh installs it) is not available");
        return;
    }
    check("node", || {
        let mut c = Command::new("node");
        c.arg(format!("{}/node.mjs", dir()));
        c
    });
}

#[test]
fn python_example_verifies_the_assertion() {
    // The first Python 3 with both modules: the one on PATH, or Debian's (scripts/setup.sh
    // installs python3-jwt and python3-cryptography for the tests).
    let Some(python) =
        ["python3", "/usr/bin/python3"].into_iter().find(|p| works(p, &["-c", "import jwt, cryptography"]))
    else {
        eprintln!("skipped: Python 3 with PyJWT and cryptography (pip install 'pyjwt[crypto]') is not available");
        return;
    };
    check("python", || {
        let mut c = Command::new(python);
        c.arg(format!("{}/python.py", dir()));
        c
    });
}

#[test]
fn go_example_verifies_the_assertion() {
    if !works("go", &["version"]) {
        eprintln!("skipped: Go is not installed");
        return;
    }
    let bin = std::env::temp_dir().join(format!("portcullis-verify-go-{}", std::process::id()));
    let built = Command::new("go")
        .args(["build", "-o", bin.to_str().unwrap(), "."])
        .current_dir(format!("{}/go", dir()))
        .status()
        .unwrap();
    assert!(built.success(), "go build failed");
    check("go", || Command::new(&bin));
}
