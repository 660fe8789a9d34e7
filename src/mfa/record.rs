//! The per-user MFA record kept in KV: the sealed TOTP secret, its parameters, the last
//! accepted step (replay protection), backup code hashes and the failure lockout.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::backup::find_in;
use super::totp::TotpParams;
use crate::crypto::{open, seal, KeyWithId, SealError};
use crate::secret::Secret;

/// Current version of the stored record.
pub const MFA_RECORD_VERSION: u8 = 1;

/// The `seal` purpose under which TOTP secrets are encrypted.
pub const SEAL_PURPOSE: &str = "totp";

/// Seals a TOTP secret for storage, bound to `user_id`, under the first (newest) key.
pub fn seal_secret(keys: &[KeyWithId], user_id: &str, secret: &[u8], nonce: [u8; 12]) -> Option<String> {
    seal(keys, SEAL_PURPOSE, user_id.as_bytes(), nonce, secret)
}

/// Opens a secret made by [`seal_secret`]; fails for another user id, an unknown key id or
/// tampering.
pub fn open_secret(keys: &[KeyWithId], user_id: &str, sealed: &str) -> Result<Secret, SealError> {
    open(keys, SEAL_PURPOSE, user_id.as_bytes(), sealed).map(Secret::new)
}

/// How many wrong codes are tolerated before the second factor is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Wrong codes within `window` that lock.
    pub max_failures: u32,
    /// Seconds a failure counts for.
    pub window: u64,
    /// Seconds the lock lasts.
    pub lockout: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self { max_failures: 5, window: 900, lockout: 900 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; `remaining` more wrong codes lock.
    Counted { remaining: u32 },
    /// Locked until this time (unix seconds).
    LockedUntil(u64),
}

/// The MFA record of one user. `Debug` never shows the sealed secret or the code hashes.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct MfaRecord {
    pub v: u8,
    /// Whether sign-ins must pass the second factor (false while enrolment is pending).
    #[serde(default)]
    pub enabled: bool,
    /// The TOTP secret sealed by [`seal_secret`]; the key id is part of the sealed string.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub params: TotpParams,
    /// The last accepted time step: codes for it or earlier steps are replays.
    #[serde(default)]
    pub last_step: Option<u64>,
    /// Backup code hashes; `None` marks a used code.
    #[serde(default)]
    pub backup_hashes: Vec<Option<String>>,
    #[serde(default)]
    pub enrolled_at: Option<u64>,
    /// Times of recent wrong codes.
    #[serde(default)]
    pub failures: Vec<u64>,
    #[serde(default)]
    pub locked_until: Option<u64>,
    /// Id of the gateway key whose derived HMAC key hashed the backup codes.
    #[serde(default)]
    pub backup_key: Option<String>,
    /// The user's passkeys (WebAuthn credentials), each named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passkeys: Vec<crate::webauthn::Passkey>,
    /// The opaque WebAuthn user handle (base64url random bytes) the user's passkeys share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_user: Option<String>,
}

impl fmt::Debug for MfaRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MfaRecord")
            .field("v", &self.v)
            .field("enabled", &self.enabled)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("key_id", &self.key_id())
            .field("params", &self.params)
            .field("last_step", &self.last_step)
            .field("backup_codes_left", &self.backup_codes_left())
            .field("enrolled_at", &self.enrolled_at)
            .field("failures", &self.failures.len())
            .field("locked_until", &self.locked_until)
            .field("passkeys", &self.passkeys.len())
            .finish()
    }
}

impl Default for MfaRecord {
    fn default() -> Self {
        Self {
            v: MFA_RECORD_VERSION,
            enabled: false,
            secret: None,
            params: TotpParams::default(),
            last_step: None,
            backup_hashes: Vec::new(),
            enrolled_at: None,
            failures: Vec::new(),
            locked_until: None,
            backup_key: None,
            passkeys: Vec::new(),
            webauthn_user: None,
        }
    }
}

impl MfaRecord {
    /// Completes enrolment once the first code verified at `step`. Returns `false` (and
    /// changes nothing) when there is no secret to enable.
    pub fn enable(&mut self, backup_hashes: Vec<String>, step: u64, now: u64) -> bool {
        if self.secret.is_none() {
            return false;
        }
        self.enabled = true;
        self.backup_hashes = backup_hashes.into_iter().map(Some).collect();
        self.last_step = Some(step);
        self.enrolled_at = Some(now);
        self.failures.clear();
        self.locked_until = None;
        true
    }

    /// Turns the second factor on with a passkey as its first factor (no TOTP secret).
    pub fn enable_passkey(&mut self, backup_hashes: Vec<String>, now: u64) {
        self.enabled = true;
        self.backup_hashes = backup_hashes.into_iter().map(Some).collect();
        self.enrolled_at = Some(now);
        self.failures.clear();
        self.locked_until = None;
    }

    /// Whether a TOTP authenticator is enrolled.
    pub fn has_totp(&self) -> bool {
        self.enabled && self.secret.is_some()
    }

    /// The id of the key that sealed the secret (to re-seal under a newer key).
    pub fn key_id(&self) -> Option<&str> {
        let mut it = self.secret.as_deref()?.split('.');
        match (it.next(), it.next()) {
            (Some("v1"), Some(kid)) => Some(kid),
            _ => None,
        }
    }

    pub fn backup_codes_left(&self) -> usize {
        self.backup_hashes.iter().filter(|h| h.is_some()).count()
    }

    /// `Some(until)` while locked.
    pub fn is_locked(&self, now: u64) -> Option<u64> {
        self.locked_until.filter(|until| *until > now)
    }

    /// Reserves an attempt before a code is checked (KV alone's counterpart of the
    /// coordination object's reservation): `Err(until)` while locked, and when
    /// `max_failures` attempts in the window are already reserved (which locks now).
    /// Returns the attempts reserved in the window, this one included.
    pub fn reserve_attempt(&mut self, now: u64, policy: &LockoutPolicy) -> Result<u32, u64> {
        self.reserve_attempt_among(now, policy, 0)
    }

    /// As [`MfaRecord::reserve_attempt`], counting `in_flight` attempts reserved elsewhere
    /// (in this isolate) whose outcome is not recorded yet.
    pub fn reserve_attempt_among(&mut self, now: u64, policy: &LockoutPolicy, in_flight: u32) -> Result<u32, u64> {
        if let Some(until) = self.is_locked(now) {
            return Err(until);
        }
        self.locked_until = None;
        self.failures.retain(|t| *t <= now && now - *t < policy.window);
        let count = u32::try_from(self.failures.len()).unwrap_or(u32::MAX).saturating_add(in_flight);
        if count >= policy.max_failures {
            let until = now.saturating_add(policy.lockout);
            self.locked_until = Some(until);
            self.failures.clear();
            return Err(until);
        }
        self.failures.push(now);
        Ok(count + 1)
    }

    /// Settles a reserved attempt whose code was wrong: the reservation stays counted, and
    /// the `max_failures`-th locks for `lockout` seconds.
    pub fn attempt_failed(&mut self, now: u64, policy: &LockoutPolicy) -> FailureOutcome {
        if let Some(until) = self.is_locked(now) {
            return FailureOutcome::LockedUntil(until);
        }
        let count = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        if count >= policy.max_failures {
            let until = now.saturating_add(policy.lockout);
            self.locked_until = Some(until);
            self.failures.clear();
            FailureOutcome::LockedUntil(until)
        } else {
            FailureOutcome::Counted { remaining: policy.max_failures - count }
        }
    }

    /// Records an accepted TOTP code: its step becomes the replay floor, failures are cleared.
    pub fn record_success(&mut self, step: u64) {
        self.last_step = Some(self.last_step.map_or(step, |l| l.max(step)));
        self.failures.clear();
    }

    /// Index of the unused backup code matching `code` (constant time across all entries).
    pub fn find_backup_code(&self, key: &[u8], code: &str) -> Option<usize> {
        find_in(key, code, self.backup_hashes.iter().map(Option::as_deref))
    }

    /// Marks backup code `index` used and clears failures. Returns `false` if it was already
    /// used or does not exist.
    pub fn use_backup(&mut self, index: usize) -> bool {
        match self.backup_hashes.get_mut(index) {
            Some(slot @ Some(_)) => {
                *slot = None;
                self.failures.clear();
                true
            }
            _ => false,
        }
    }

    /// Removes the second factor: secret, backup codes and state are cleared and the user
    /// enrols again.
    pub fn reset(&mut self) {
        self.enabled = false;
        self.secret = None;
        self.last_step = None;
        self.backup_hashes.clear();
        self.enrolled_at = None;
        self.failures.clear();
        self.locked_until = None;
        self.passkeys.clear();
        self.webauthn_user = None;
    }
}
