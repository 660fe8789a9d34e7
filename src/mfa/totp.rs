//! TOTP parameters, code computation (through `totp-lite`) and constant-time verification.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use totp_lite::{totp_custom, Sha1, Sha256, Sha512};

use crate::secret::Secret;

/// Length of a generated TOTP secret: 160 bits, as RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;

/// Longest code input looked at; anything longer is refused before any work.
const MAX_CODE_INPUT: usize = 64;

/// Largest accepted `window` (steps either side of now).
const MAX_WINDOW: u32 = 10;

/// Longest accepted `period`, in seconds.
const MAX_PERIOD: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TotpAlgorithm {
    #[default]
    Sha1,
    Sha256,
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in `otpauth://` URIs.
    pub fn uri_name(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }
}

/// How codes are made and how much clock drift is tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TotpParams {
    pub algorithm: TotpAlgorithm,
    /// 6 or 8.
    pub digits: u32,
    /// Time step in seconds.
    pub period: u64,
    /// Steps accepted either side of the current one.
    pub window: u32,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self { algorithm: TotpAlgorithm::Sha1, digits: 6, period: 30, window: 1 }
    }
}

impl TotpParams {
    /// Whether the parameters are usable: 6 or 8 digits, a period of 1 s to 1 h, a window of
    /// at most 10 steps.
    pub fn is_valid(&self) -> bool {
        matches!(self.digits, 6 | 8) && (1..=MAX_PERIOD).contains(&self.period) && self.window <= MAX_WINDOW
    }

    /// The time step that `now` falls in.
    pub fn step(&self, now: u64) -> u64 {
        now / self.period.max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpError {
    /// Not a code of the expected length made of digits.
    Malformed,
    /// Well-formed, but no step in the window produces it.
    Wrong,
    /// Right code, but for a step already used: a replay.
    Replayed,
    /// The stored parameters or secret are unusable.
    InvalidParams,
}

impl fmt::Display for TotpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TotpError::Malformed => "malformed code",
            TotpError::Wrong => "wrong code",
            TotpError::Replayed => "code already used",
            TotpError::InvalidParams => "invalid TOTP parameters",
        })
    }
}

impl std::error::Error for TotpError {}

/// A new TOTP secret from 20 random bytes.
pub fn secret_from_random(random: [u8; SECRET_LEN]) -> Secret {
    Secret::new(random.to_vec())
}

/// HOTP (RFC 4226) value for `counter`, zero-padded to `digits` (6 to 10). TOTP is HOTP of
/// the time step, so this is `totp-lite` with a one-second step at time `counter`.
pub fn hotp(algorithm: TotpAlgorithm, secret: &[u8], counter: u64, digits: u32) -> Option<String> {
    if !(6..=10).contains(&digits) {
        return None;
    }
    Some(match algorithm {
        TotpAlgorithm::Sha1 => totp_custom::<Sha1>(1, digits, secret, counter),
        TotpAlgorithm::Sha256 => totp_custom::<Sha256>(1, digits, secret, counter),
        TotpAlgorithm::Sha512 => totp_custom::<Sha512>(1, digits, secret, counter),
    })
}

/// The TOTP code for the step `now` falls in.
pub fn totp_code(secret: &[u8], now: u64, params: &TotpParams) -> Result<String, TotpError> {
    if !params.is_valid() {
        return Err(TotpError::InvalidParams);
    }
    hotp(params.algorithm, secret, params.step(now), params.digits).ok_or(TotpError::InvalidParams)
}

/// Checks `code` against every step from `now - window` to `now + window`.
///
/// Spaces in the input are ignored. Every step in the window is computed and compared in
/// constant time, so the time taken does not depend on whether or where the code matched.
/// A code whose step is not after `last_step` is refused as [`TotpError::Replayed`]. On
/// success, returns the step to store as the new `last_step`: the latest matching step.
pub fn verify_totp(
    secret: &[u8],
    code: &str,
    now: u64,
    params: &TotpParams,
    last_step: Option<u64>,
) -> Result<u64, TotpError> {
    if !params.is_valid() || secret.is_empty() {
        return Err(TotpError::InvalidParams);
    }
    if code.len() > MAX_CODE_INPUT {
        return Err(TotpError::Malformed);
    }
    let code: Vec<u8> = code.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if code.len() != params.digits as usize || !code.iter().all(u8::is_ascii_digit) {
        return Err(TotpError::Malformed);
    }

    let current = params.step(now);
    let first = current.saturating_sub(u64::from(params.window));
    let last = current.saturating_add(u64::from(params.window));
    let mut matched = Choice::from(0);
    let mut fresh_match = Choice::from(0);
    let mut accepted = 0u64;
    for step in first..=last {
        let expected = hotp(params.algorithm, secret, step, params.digits).ok_or(TotpError::InvalidParams)?;
        let eq = expected.as_bytes().ct_eq(&code);
        // Whether a step is fresh depends only on public values (the clock and last_step).
        let fresh = Choice::from(u8::from(last_step.is_none_or(|l| step > l)));
        let take = eq & fresh;
        matched |= eq;
        fresh_match |= take;
        accepted.conditional_assign(&step, take);
    }
    if bool::from(fresh_match) {
        Ok(accepted)
    } else if bool::from(matched) {
        Err(TotpError::Replayed)
    } else {
        Err(TotpError::Wrong)
    }
}
