#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TOTP/HOTP computation against the RFC vectors, verification rules, otpauth URIs, QR SVG.

use portcullis::mfa::{
    base32_decode, base32_encode, format_groups, hotp, otpauth_uri, qr_svg, secret_from_random, totp_code, verify_totp,
    TotpAlgorithm, TotpError, TotpParams,
};

const SEED_SHA1: &[u8] = b"12345678901234567890";
const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

fn params(algorithm: TotpAlgorithm, digits: u32) -> TotpParams {
    TotpParams { algorithm, digits, ..TotpParams::default() }
}

#[test]
fn rfc6238_appendix_b_vectors() {
    // (time, SHA-1, SHA-256, SHA-512)
    let vectors: [(u64, &str, &str, &str); 6] = [
        (59, "94287082", "46119246", "90693936"),
        (1111111109, "07081804", "68084774", "25091201"),
        (1111111111, "14050471", "67062674", "99943326"),
        (1234567890, "89005924", "91819424", "93441116"),
        (2000000000, "69279037", "90698825", "38618901"),
        (20000000000, "65353130", "77737706", "47863826"),
    ];
    assert_eq!(SEED_SHA256.len(), 32);
    assert_eq!(SEED_SHA512.len(), 64);
    for (time, sha1, sha256, sha512) in vectors {
        assert_eq!(totp_code(SEED_SHA1, time, &params(TotpAlgorithm::Sha1, 8)).unwrap(), sha1, "SHA-1 at {time}");
        assert_eq!(
            totp_code(SEED_SHA256, time, &params(TotpAlgorithm::Sha256, 8)).unwrap(),
            sha256,
            "SHA-256 at {time}"
        );
        assert_eq!(
            totp_code(SEED_SHA512, time, &params(TotpAlgorithm::Sha512, 8)).unwrap(),
            sha512,
            "SHA-512 at {time}"
        );
    }
}

#[test]
fn rfc4226_appendix_d_hotp_vectors() {
    let expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
    for (counter, want) in expected.iter().enumerate() {
        assert_eq!(hotp(TotpAlgorithm::Sha1, SEED_SHA1, counter as u64, 6).unwrap(), *want, "counter {counter}");
    }
    assert_eq!(hotp(TotpAlgorithm::Sha1, SEED_SHA1, 0, 5), None);
    assert_eq!(hotp(TotpAlgorithm::Sha1, SEED_SHA1, 0, 11), None);
}

#[test]
fn params_default_and_serde() {
    let p = TotpParams::default();
    assert_eq!((p.algorithm, p.digits, p.period, p.window), (TotpAlgorithm::Sha1, 6, 30, 1));
    assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"algorithm":"sha1","digits":6,"period":30,"window":1}"#);
    let p: TotpParams = serde_json::from_str(r#"{"algorithm":"sha512","digits":8}"#).unwrap();
    assert_eq!((p.algorithm, p.digits, p.period, p.window), (TotpAlgorithm::Sha512, 8, 30, 1));
    assert!(p.is_valid());
    for bad in [
        TotpParams { digits: 7, ..TotpParams::default() },
        TotpParams { period: 0, ..TotpParams::default() },
        TotpParams { window: 11, ..TotpParams::default() },
    ] {
        assert!(!bad.is_valid());
        assert_eq!(totp_code(SEED_SHA1, 59, &bad), Err(TotpError::InvalidParams));
        assert_eq!(verify_totp(SEED_SHA1, "123456", 59, &bad, None), Err(TotpError::InvalidParams));
    }
}

const NOW: u64 = 1_700_000_015; // step 56_666_667, 15 s into it
const STEP: u64 = NOW / 30;

fn code_at_step(step: u64, p: &TotpParams) -> String {
    totp_code(SEED_SHA1, step * p.period, p).unwrap()
}

#[test]
fn current_and_adjacent_steps_are_accepted() {
    let p = TotpParams::default();
    assert_eq!(verify_totp(SEED_SHA1, &code_at_step(STEP, &p), NOW, &p, None), Ok(STEP));
    assert_eq!(verify_totp(SEED_SHA1, &code_at_step(STEP - 1, &p), NOW, &p, None), Ok(STEP - 1));
    assert_eq!(verify_totp(SEED_SHA1, &code_at_step(STEP + 1, &p), NOW, &p, None), Ok(STEP + 1));
    // Spaces as apps display them are ignored.
    let code = code_at_step(STEP, &p);
    let spaced = format!(" {} {} ", &code[..3], &code[3..]);
    assert_eq!(verify_totp(SEED_SHA1, &spaced, NOW, &p, None), Ok(STEP));
}

#[test]
fn steps_outside_the_window_are_wrong() {
    let p = TotpParams::default();
    for step in [STEP - 2, STEP + 2, STEP - 100] {
        let code = code_at_step(step, &p);
        // Guard against a chance collision with a code inside the window.
        if (STEP - 1..=STEP + 1).any(|s| code_at_step(s, &p) == code) {
            continue;
        }
        assert_eq!(verify_totp(SEED_SHA1, &code, NOW, &p, None), Err(TotpError::Wrong), "step {step}");
    }
    let wide = TotpParams { window: 2, ..p };
    assert_eq!(verify_totp(SEED_SHA1, &code_at_step(STEP - 2, &p), NOW, &wide, None), Ok(STEP - 2));
    // Another secret's code is wrong.
    assert_eq!(verify_totp(b"another secret", &code_at_step(STEP, &p), NOW, &p, None), Err(TotpError::Wrong));
}

#[test]
fn replays_are_refused() {
    let p = TotpParams::default();
    let code = code_at_step(STEP, &p);
    let accepted = verify_totp(SEED_SHA1, &code, NOW, &p, None).unwrap();
    assert_eq!(verify_totp(SEED_SHA1, &code, NOW, &p, Some(accepted)), Err(TotpError::Replayed));
    // An earlier step's code after a later one was used is a replay too.
    let earlier = code_at_step(STEP - 1, &p);
    assert_eq!(verify_totp(SEED_SHA1, &earlier, NOW, &p, Some(STEP)), Err(TotpError::Replayed));
    // The next step's code is still fine.
    let next = code_at_step(STEP + 1, &p);
    assert_eq!(verify_totp(SEED_SHA1, &next, NOW, &p, Some(STEP)), Ok(STEP + 1));
    // A wrong code stays wrong, not replayed.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    if !(STEP - 1..=STEP + 1).any(|s| code_at_step(s, &p) == wrong) {
        assert_eq!(verify_totp(SEED_SHA1, wrong, NOW, &p, Some(STEP)), Err(TotpError::Wrong));
    }
}

#[test]
fn malformed_codes() {
    let p = TotpParams::default();
    for bad in ["", "12345", "1234567", "12345a", "12-456", "１２３４５６", &"1".repeat(100)] {
        assert_eq!(verify_totp(SEED_SHA1, bad, NOW, &p, None), Err(TotpError::Malformed), "{bad:?}");
    }
    assert_eq!(verify_totp(b"", "123456", NOW, &p, None), Err(TotpError::InvalidParams));
}

#[test]
fn eight_digit_codes() {
    for alg in [TotpAlgorithm::Sha1, TotpAlgorithm::Sha256, TotpAlgorithm::Sha512] {
        let p = params(alg, 8);
        let code = code_at_step(STEP, &p);
        assert_eq!(code.len(), 8);
        assert_eq!(verify_totp(SEED_SHA1, &code, NOW, &p, None), Ok(STEP));
        assert_eq!(verify_totp(SEED_SHA1, &code[..6], NOW, &p, None), Err(TotpError::Malformed));
    }
    // RFC 6238 at 59 s: step 1 and its neighbours are checked with 8 digits and SHA-256.
    let p = params(TotpAlgorithm::Sha256, 8);
    assert_eq!(verify_totp(SEED_SHA256, "46119246", 59, &p, None), Ok(1));
    assert_eq!(verify_totp(SEED_SHA256, "46119246", 60, &p, None), Ok(1));
    assert_eq!(verify_totp(SEED_SHA256, "46119246", 0, &p, None), Ok(1));
}

#[test]
fn secrets_and_base32() {
    let secret = secret_from_random([0xA5; 20]);
    assert_eq!(secret.expose().len(), 20);
    assert!(!format!("{secret:?}").contains("165"));
    let b32 = base32_encode(secret.expose());
    assert_eq!(b32.len(), 32);
    assert!(!b32.contains('='));
    assert_eq!(base32_decode(&b32).unwrap(), secret.expose());
    assert_eq!(base32_decode(&format_groups(&b32).to_lowercase()).unwrap(), secret.expose());
    assert_eq!(base32_encode(b"Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP");
    assert_eq!(format_groups("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
}

#[test]
fn otpauth_uri_exact() {
    let p = TotpParams::default();
    assert_eq!(
        otpauth_uri("Example Co", "alice@example.com", "JBSW Y3DP EHPK 3PXP", &p),
        "otpauth://totp/Example%20Co:alice@example.com?secret=JBSWY3DPEHPK3PXP&issuer=Example%20Co\
         &algorithm=SHA1&digits=6&period=30"
    );
    // Colons and query characters inside issuer or account cannot break the label or query.
    let p8 = TotpParams { algorithm: TotpAlgorithm::Sha512, digits: 8, period: 60, window: 1 };
    assert_eq!(
        otpauth_uri("A:B&C", "x:y?z=1#f/g", "jbswy3dpehpk3pxp", &p8),
        "otpauth://totp/A%3AB%26C:x%3Ay%3Fz%3D1%23f%2Fg?secret=JBSWY3DPEHPK3PXP&issuer=A%3AB%26C\
         &algorithm=SHA512&digits=8&period=60"
    );
    assert_eq!(
        otpauth_uri("Ünïcode+", "bob", "MZXW6", &p),
        "otpauth://totp/%C3%9Cn%C3%AFcode%2B:bob?secret=MZXW6&issuer=%C3%9Cn%C3%AFcode%2B\
         &algorithm=SHA1&digits=6&period=30"
    );
    assert_eq!(
        otpauth_uri("", "bob", "MZXW6", &p),
        "otpauth://totp/bob?secret=MZXW6&algorithm=SHA1&digits=6&period=30"
    );
}

/// Reads the dark modules back out of the SVG path (runs `M{x},{y}h{n}v1h-{n}z`).
fn modules_from_svg(svg: &str) -> (usize, Vec<Vec<bool>>) {
    let view = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
    let full: usize = view.split(' ').next().unwrap().parse().unwrap();
    let d = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
    let mut grid = vec![vec![false; full]; full];
    for run in d.split('M').filter(|r| !r.is_empty()) {
        let (xy, rest) = run.split_once('h').unwrap();
        let (x, y) = xy.split_once(',').unwrap();
        let (x, y): (usize, usize) = (x.parse().unwrap(), y.parse().unwrap());
        let (n, tail) = rest.split_once('v').unwrap();
        let n: usize = n.parse().unwrap();
        assert_eq!(tail, format!("1h-{n}z"));
        for cell in &mut grid[y][x..x + n] {
            assert!(!*cell, "overlapping runs");
            *cell = true;
        }
    }
    (full, grid)
}

/// Smallest QR version holding `len` bytes in byte mode at ECC level M.
fn version_for_bytes(len: usize) -> i32 {
    const CAPACITY_M: [usize; 10] = [14, 26, 42, 62, 84, 106, 122, 152, 180, 213];
    CAPACITY_M.iter().position(|c| len <= *c).unwrap() as i32 + 1
}

#[test]
fn qr_svg_is_self_contained_and_matches_the_symbol() {
    let uri =
        otpauth_uri("Example Co", "alice@example.com", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", &TotpParams::default());
    for text in [uri.as_str(), "otpauth://a", "otpauth://abcdef", &"x".repeat(200)] {
        let svg = qr_svg(text).unwrap();
        assert!(svg.starts_with("<svg "));
        assert!(svg.ends_with("</svg>"));
        let lower = svg.to_lowercase();
        for banned in ["<script", "href", "<image", "<foreignobject", "url(", "javascript:", " on"] {
            assert!(!lower.contains(banned), "{banned} in {svg}");
        }
        assert!(svg.contains(r#"role="img""#) && svg.contains("aria-label=\""));
        assert!(!svg.contains("secret="), "the label must not repeat the secret");
        assert_eq!(svg.matches("<path").count(), 1);

        let version = version_for_bytes(text.len());
        let size = (17 + 4 * version) as usize;
        let (full, grid) = modules_from_svg(&svg);
        assert_eq!(full, size + 8, "{} bytes: version {version}", text.len());

        // Quiet zone of four light modules all round; the symbol matches the encoder's.
        let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium).unwrap();
        assert_eq!(qr.version().value() as i32, version);
        assert!(matches!(
            qr.error_correction_level(),
            qrcodegen::QrCodeEcc::Medium | qrcodegen::QrCodeEcc::Quartile | qrcodegen::QrCodeEcc::High
        ));
        for (y, row) in grid.iter().enumerate() {
            for (x, dark) in row.iter().enumerate() {
                let inside = (4..4 + size).contains(&x) && (4..4 + size).contains(&y);
                let want = inside && qr.get_module(x as i32 - 4, y as i32 - 4);
                assert_eq!(*dark, want, "module ({x},{y})");
            }
        }
        // Finder pattern corner: 7 dark modules across the top of the top-left finder.
        assert!(grid[4][4..11].iter().all(|d| *d) && !grid[4][11]);
    }
    assert!(svg_size_is_reasonable(&qr_svg(&uri).unwrap()));
    assert_eq!(qr_svg(&"x".repeat(3000)), None);
}

fn svg_size_is_reasonable(svg: &str) -> bool {
    svg.len() < 12_000
}
