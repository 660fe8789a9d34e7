//! TOTP second factor (RFC 6238): enrolment secrets, `otpauth://` URIs and their QR codes,
//! code verification with replay protection, backup codes, and the per-user record stored
//! in KV with its failure lockout.
//!
//! Everything here is pure: the clock (`now`, unix seconds), randomness (byte arrays) and
//! keys are arguments, and the functions return decisions and the values to store.

mod backup;
mod base32;
mod qr;
mod record;
mod totp;
mod uri;

pub use backup::{
    backup_code_hash, find_backup_code, generate_backup_codes, normalise_backup_code, BACKUP_CODE_ALPHABET,
    BACKUP_CODE_LEN, BACKUP_CODE_RANDOM_BYTES, DEFAULT_BACKUP_CODES,
};
pub use base32::{base32_decode, base32_encode, format_groups};
pub use qr::qr_svg;
pub use record::{
    open_secret, seal_secret, FailureOutcome, LockoutPolicy, MfaRecord, MFA_RECORD_VERSION, SEAL_PURPOSE,
};
pub use totp::{hotp, secret_from_random, totp_code, verify_totp, TotpAlgorithm, TotpError, TotpParams, SECRET_LEN};
pub use uri::otpauth_uri;
