#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Backup codes, the stored MFA record (enrolment, lockout, reset) and the sealed secret.

use std::collections::HashSet;

use portcullis::crypto::{KeyWithId, SealError};
use portcullis::mfa::{
    backup_code_hash, find_backup_code, generate_backup_codes, open_secret, seal_secret, totp_code, verify_totp,
    FailureOutcome, LockoutPolicy, MfaRecord, TotpError, TotpParams, BACKUP_CODE_ALPHABET, BACKUP_CODE_RANDOM_BYTES,
    DEFAULT_BACKUP_CODES,
};
use portcullis::secret::Secret;

const HASH_KEY: &[u8] = b"backup-code-hash-key";

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).unwrap();
    buf
}

fn keys() -> Vec<KeyWithId> {
    vec![
        KeyWithId { id: "k2".into(), key: Secret::new(b"current key material".to_vec()) },
        KeyWithId { id: "k1".into(), key: Secret::new(b"previous key material".to_vec()) },
    ]
}

fn codes() -> Vec<String> {
    generate_backup_codes(&random_bytes(DEFAULT_BACKUP_CODES * BACKUP_CODE_RANDOM_BYTES), DEFAULT_BACKUP_CODES).unwrap()
}

#[test]
fn backup_codes_are_distinct_and_use_the_alphabet() {
    let codes = codes();
    assert_eq!(codes.len(), 10);
    assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 10);
    for code in &codes {
        assert_eq!(code.len(), 11, "{code}");
        assert_eq!(code.as_bytes()[5], b'-');
        for b in code.bytes().filter(|b| *b != b'-') {
            assert!(BACKUP_CODE_ALPHABET.contains(&b), "{code}");
        }
    }
    for look_alike in b"01oilOIL" {
        assert!(!BACKUP_CODE_ALPHABET.contains(look_alike));
    }
    // Deterministic in the randomness; short randomness is refused.
    let fixed = [7u8; 32];
    assert_eq!(generate_backup_codes(&fixed, 2).unwrap(), generate_backup_codes(&fixed, 2).unwrap());
    assert_eq!(generate_backup_codes(&fixed, 3), None);
    // All zero bytes give the first character throughout.
    assert_eq!(generate_backup_codes(&[0; 16], 1).unwrap(), vec!["22222-22222".to_owned()]);
}

#[test]
fn backup_code_hash_normalises_and_find_compares_all() {
    let codes = codes();
    let hashes: Vec<String> = codes.iter().map(|c| backup_code_hash(HASH_KEY, c)).collect();
    assert!(hashes.iter().all(|h| !h.contains(&codes[0])));
    let third = &codes[3];
    assert_eq!(find_backup_code(HASH_KEY, third, &hashes), Some(3));
    let typed = format!(" {} ", third.replace('-', "").to_uppercase());
    assert_eq!(find_backup_code(HASH_KEY, &typed, &hashes), Some(3));
    assert_eq!(find_backup_code(HASH_KEY, &third[..6], &hashes), None);
    assert_eq!(find_backup_code(b"another key", third, &hashes), None);
    assert_eq!(find_backup_code(HASH_KEY, "22222-22222", &hashes), None);
    assert_eq!(find_backup_code(HASH_KEY, "00000-00000", &hashes), None);
}

#[test]
fn sealed_secret_round_trip_and_user_binding() {
    let k = keys();
    let secret = [0x42u8; 20];
    let sealed = seal_secret(&k, "https://idp.example/|alice", &secret, [9; 12]).unwrap();
    assert!(sealed.starts_with("v1.k2."));
    assert_eq!(open_secret(&k, "https://idp.example/|alice", &sealed).unwrap().expose(), &secret);
    assert_eq!(open_secret(&k, "https://idp.example/|mallory", &sealed), Err(SealError::Decrypt));
    assert_eq!(open_secret(&k[1..], "https://idp.example/|alice", &sealed), Err(SealError::UnknownKey("k2".into())));
    assert_eq!(seal_secret(&[], "alice", &secret, [9; 12]), None);
}

#[test]
fn enrolment_sign_in_backup_use_and_reset() {
    let k = keys();
    let p = TotpParams::default();
    let now = 1_700_000_000;
    let secret = random_bytes(20);
    let sealed = seal_secret(&k, "alice", &secret, [1; 12]).unwrap();
    let mut rec = MfaRecord { secret: Some(sealed), params: p, ..MfaRecord::default() };
    assert!(!rec.enabled);
    assert_eq!(rec.key_id(), Some("k2"));

    // First code confirms the enrolment.
    let opened = open_secret(&k, "alice", rec.secret.as_deref().unwrap()).unwrap();
    let code = totp_code(opened.expose(), now, &p).unwrap();
    let step = verify_totp(opened.expose(), &code, now, &rec.params, rec.last_step).unwrap();
    let codes = codes();
    assert!(rec.enable(codes.iter().map(|c| backup_code_hash(HASH_KEY, c)).collect(), step, now));
    assert!(rec.enabled);
    assert_eq!(rec.enrolled_at, Some(now));
    assert_eq!(rec.backup_codes_left(), 10);

    // The same code right after is a replay.
    assert_eq!(verify_totp(opened.expose(), &code, now + 5, &rec.params, rec.last_step), Err(TotpError::Replayed));

    // Store and load: the JSON round-trips and Debug shows neither secret nor hashes.
    let json = serde_json::to_string(&rec).unwrap();
    let mut rec: MfaRecord = serde_json::from_str(&json).unwrap();
    let dbg = format!("{rec:?}");
    assert!(!dbg.contains(rec.secret.as_deref().unwrap()));
    assert!(!dbg.contains(rec.backup_hashes[0].as_deref().unwrap()));
    assert!(dbg.contains("backup_codes_left: 10"));

    // A backup code works once.
    let index = rec.find_backup_code(HASH_KEY, &codes[7]).unwrap();
    assert_eq!(index, 7);
    assert!(rec.use_backup(index));
    assert_eq!(rec.backup_codes_left(), 9);
    assert_eq!(rec.find_backup_code(HASH_KEY, &codes[7]), None);
    assert!(!rec.use_backup(index));
    assert!(!rec.use_backup(99));
    assert_eq!(rec.find_backup_code(HASH_KEY, "zzzzz-zzzzz"), None);
    assert_eq!(rec.find_backup_code(HASH_KEY, &codes[8].replace('-', "").to_uppercase()), Some(8));

    // Later sign-in advances the replay floor.
    let later = now + 90;
    let code = totp_code(opened.expose(), later, &p).unwrap();
    let step = verify_totp(opened.expose(), &code, later, &rec.params, rec.last_step).unwrap();
    rec.record_success(step);
    assert_eq!(rec.last_step, Some(later / 30));
    rec.record_success(step - 5);
    assert_eq!(rec.last_step, Some(later / 30), "the replay floor never goes back");

    rec.reset();
    assert!(!rec.enabled);
    assert_eq!(rec.secret, None);
    assert_eq!(rec.backup_codes_left(), 0);
    assert_eq!(rec.last_step, None);
    assert!(!rec.enable(Vec::new(), 1, now), "nothing to enable without a secret");
}

/// A wrong code: the attempt is reserved, then settled as wrong.
fn wrong_code(rec: &mut MfaRecord, now: u64, policy: &LockoutPolicy) -> FailureOutcome {
    match rec.reserve_attempt(now, policy) {
        Err(until) => FailureOutcome::LockedUntil(until),
        Ok(_) => rec.attempt_failed(now, policy),
    }
}

#[test]
fn five_failures_within_the_window_lock() {
    let policy = LockoutPolicy::default();
    assert_eq!((policy.max_failures, policy.window, policy.lockout), (5, 900, 900));
    let mut rec = MfaRecord { secret: Some("v1.k.n.c".into()), ..MfaRecord::default() };
    let t0 = 10_000;
    for (i, remaining) in [4, 3, 2, 1].into_iter().enumerate() {
        assert_eq!(wrong_code(&mut rec, t0 + 60 * i as u64, &policy), FailureOutcome::Counted { remaining });
    }
    assert_eq!(rec.is_locked(t0 + 239), None);
    let until = t0 + 240 + 900;
    assert_eq!(wrong_code(&mut rec, t0 + 240, &policy), FailureOutcome::LockedUntil(until));
    assert!(rec.failures.is_empty());
    assert_eq!(rec.is_locked(t0 + 241), Some(until));
    // Failing while locked does not extend the lock.
    assert_eq!(wrong_code(&mut rec, t0 + 500, &policy), FailureOutcome::LockedUntil(until));
    assert_eq!(rec.is_locked(until - 1), Some(until));
    // The lock expires, and counting starts afresh.
    assert_eq!(rec.is_locked(until), None);
    assert_eq!(wrong_code(&mut rec, until + 1, &policy), FailureOutcome::Counted { remaining: 4 });
    assert_eq!(rec.locked_until, None);
}

#[test]
fn failures_spread_over_more_than_the_window_do_not_lock() {
    let policy = LockoutPolicy::default();
    let mut rec = MfaRecord { secret: Some("v1.k.n.c".into()), ..MfaRecord::default() };
    // One failure every 4 minutes: at most four fall within any 15 minutes.
    for i in 0..20u64 {
        let outcome = wrong_code(&mut rec, 50_000 + 240 * i, &policy);
        assert!(matches!(outcome, FailureOutcome::Counted { .. }), "failure {i}: {outcome:?}");
        assert!(rec.failures.len() <= 4);
    }
    assert_eq!(rec.is_locked(50_000 + 240 * 20), None);
    // Success clears the count.
    rec.record_success(3);
    assert!(rec.failures.is_empty());
    assert_eq!(wrong_code(&mut rec, 60_000, &policy), FailureOutcome::Counted { remaining: 4 });
}

#[test]
fn old_records_missing_fields_still_load() {
    let rec: MfaRecord = serde_json::from_str(r#"{"v":1,"enabled":true,"secret":"v1.k1.x.y"}"#).unwrap();
    assert_eq!(rec.params, TotpParams::default());
    assert_eq!(rec.key_id(), Some("k1"));
    assert_eq!(rec.backup_codes_left(), 0);
}
