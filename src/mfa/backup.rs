//! One-time backup codes: generated from caller-supplied randomness, stored only as keyed
//! hashes, looked up in constant time.

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::crypto::{b64url, hmac_sha256};

/// Characters of a backup code: digits and lower-case letters without the look-alikes
/// `0 o 1 i l` (31 characters, so 10 of them carry about 49.5 bits).
pub const BACKUP_CODE_ALPHABET: &[u8; 31] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// Characters per code (shown as two groups of five: `xxxxx-xxxxx`).
pub const BACKUP_CODE_LEN: usize = 10;

/// Random bytes consumed per code. 128 bits reduced modulo 31^10 leaves a bias below 2^-78.
pub const BACKUP_CODE_RANDOM_BYTES: usize = 16;

/// How many codes a user gets by default.
pub const DEFAULT_BACKUP_CODES: usize = 10;

/// `count` codes of the form `xxxxx-xxxxx` from `count * 16` random bytes; `None` if
/// `random` is shorter than that.
pub fn generate_backup_codes(random: &[u8], count: usize) -> Option<Vec<String>> {
    let needed = count.checked_mul(BACKUP_CODE_RANDOM_BYTES)?;
    let random = random.get(..needed)?;
    let base = BACKUP_CODE_ALPHABET.len() as u128;
    let codes = random
        .chunks_exact(BACKUP_CODE_RANDOM_BYTES)
        .map(|chunk| {
            let mut bytes = [0u8; BACKUP_CODE_RANDOM_BYTES];
            bytes.copy_from_slice(chunk);
            let mut n = u128::from_be_bytes(bytes);
            let mut code = String::with_capacity(BACKUP_CODE_LEN + 1);
            for i in 0..BACKUP_CODE_LEN {
                if i == BACKUP_CODE_LEN / 2 {
                    code.push('-');
                }
                code.push(char::from(BACKUP_CODE_ALPHABET[(n % base) as usize]));
                n /= base;
            }
            code
        })
        .collect();
    Some(codes)
}

/// The canonical form of a typed code: lower case, without dashes or spaces.
pub fn normalise_backup_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect()
}

fn is_well_formed(normalised: &str) -> bool {
    normalised.len() == BACKUP_CODE_LEN && normalised.bytes().all(|b| BACKUP_CODE_ALPHABET.contains(&b))
}

/// The stored form of a code: HMAC-SHA256 under `key` of its normalised form, base64url.
/// `key` should be dedicated to this purpose (e.g. `KeyWithId::derive("backup-codes")`) and
/// stay the same as long as the codes are valid.
pub fn backup_code_hash(key: &[u8], code: &str) -> String {
    let normalised = normalise_backup_code(code);
    b64url(&hmac_sha256(key, &[b"portcullis-backup-code", normalised.as_bytes()]))
}

/// Index of the entry matching `code`, comparing against every entry in constant time.
/// Used entries (`None`) are skipped by value, not by timing.
pub(crate) fn find_in<'a>(key: &[u8], code: &str, hashes: impl Iterator<Item = Option<&'a str>>) -> Option<usize> {
    let normalised = normalise_backup_code(code);
    if !is_well_formed(&normalised) {
        return None;
    }
    let candidate = backup_code_hash(key, &normalised);
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, stored) in hashes.enumerate() {
        let live = Choice::from(u8::from(stored.is_some()));
        let stored = stored.unwrap_or(candidate.as_str());
        let eq = if stored.len() == candidate.len() {
            stored.as_bytes().ct_eq(candidate.as_bytes())
        } else {
            Choice::from(0)
        };
        let hit = eq & live & !found;
        index.conditional_assign(&(i as u64), hit);
        found |= hit;
    }
    if bool::from(found) {
        usize::try_from(index).ok()
    } else {
        None
    }
}

/// Index in `hashes` of the hash of `code`, if any. Every entry is compared, in constant time.
pub fn find_backup_code(key: &[u8], code: &str, hashes: &[String]) -> Option<usize> {
    find_in(key, code, hashes.iter().map(|h| Some(h.as_str())))
}
