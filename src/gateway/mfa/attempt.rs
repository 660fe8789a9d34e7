//! The one operation every code goes through ([`Gateway::attempt`]): check the lock, reserve
//! the attempt (atomically at the coordination object, or counted against the record and
//! this isolate's attempts in flight with KV alone), verify, record the outcome.

use super::super::context::Cx;
use super::super::Gateway;
use super::*;
use crate::audit::AuditEvent;
use crate::coord;
use crate::error::Refusal;
use crate::mfa::{self, FailureOutcome, MfaRecord, TotpError, TotpParams};
use crate::secret::Secret;
use crate::session::SessionRecord;
use crate::webauthn::AuthenticationChallenge;

/// What a code is checked against.
pub(super) enum Check<'a> {
    /// A TOTP code of the enrolled authenticator.
    Totp(&'a str),
    /// One of the user's backup codes.
    Backup(&'a str),
    /// The first code of an authenticator being enrolled.
    Enrolment { code: &'a str, secret: &'a Secret, params: &'a TotpParams },
    /// A passkey assertion (the browser's JSON), against the challenge this session was
    /// given (`None`: expired, used, or never issued).
    Passkey { response: &'a [u8], challenge: Option<AuthenticationChallenge> },
}

/// What a verified attempt proves: a code of the user's factor, or the first code of a
/// factor being enrolled (which is no verification: it never satisfies a step-up).
pub(super) enum Passed {
    Factor(FactorProof),
    Enrolment { proof: EnrolmentProof, step: u64 },
}

/// Why an attempt did not verify.
pub(super) enum AttemptRefused {
    /// Locked (before or by this attempt) until this time (unix seconds).
    Locked(u64),
    /// Wrong, replayed or malformed: the sentence to show, with the attempts left.
    Wrong(String),
}

/// KV alone: what this isolate knows of a user's attempts beyond the record it reads,
/// which may miss the writes of requests racing in the same isolate. Keyed like the record
/// (tenant and user). Merged into the record before each reservation and each write, so in
/// one isolate no more than the limit of codes are checked before the lock, and a racing
/// write cannot erase a failure.
#[derive(Debug, Default)]
pub(in crate::gateway) struct LocalAttempts {
    users: std::collections::HashMap<String, LocalUser>,
}

#[derive(Debug, Default)]
pub(in crate::gateway) struct LocalUser {
    in_flight: u32,
    failures: Vec<u64>,
    locked_until: Option<u64>,
}

/// Most users an isolate keeps attempts for (bounded memory under a flood of users).
const MAX_LOCAL_USERS: usize = 10_000;

impl LocalAttempts {
    pub(in crate::gateway) fn merge_into(&self, key: &str, record: &mut MfaRecord, now: u64, window: u64) {
        let Some(l) = self.users.get(key) else {
            return;
        };
        if let Some(until) = l.locked_until.filter(|u| *u > now) {
            if record.locked_until.is_none_or(|r| r < until) {
                record.locked_until = Some(until);
                record.failures.clear();
                return;
            }
        }
        let in_window = |t: &&u64| **t <= now && now - **t < window;
        let local: Vec<u64> = l.failures.iter().filter(in_window).copied().collect();
        if local.len() > record.failures.iter().filter(in_window).count() {
            record.failures = local;
        }
    }

    pub(in crate::gateway) fn in_flight(&self, key: &str) -> u32 {
        self.users.get(key).map_or(0, |l| l.in_flight)
    }

    pub(in crate::gateway) fn locked(&self, key: &str, now: u64) -> Option<u64> {
        self.users.get(key).and_then(|l| l.locked_until).filter(|u| *u > now)
    }

    pub(in crate::gateway) fn entry(&mut self, key: &str, now: u64, window: u64) -> &mut LocalUser {
        if !self.users.contains_key(key) {
            // Bounded: users with nothing in flight and nothing current are forgotten, and
            // past the cap the idle ones go first.
            self.users.retain(|_, l| {
                l.failures.retain(|t| *t <= now && now - *t < window);
                l.in_flight > 0 || !l.failures.is_empty() || l.locked_until.is_some_and(|u| u > now)
            });
            if self.users.len() >= MAX_LOCAL_USERS {
                self.users.retain(|_, l| l.in_flight > 0);
            }
        }
        self.users.entry(key.to_owned()).or_default()
    }

    /// A right code: this isolate's count and lock for the user are over.
    pub(in crate::gateway) fn succeeded(&mut self, key: &str) {
        if let Some(l) = self.users.get_mut(key) {
            l.failures.clear();
            l.locked_until = None;
        }
    }

    pub(in crate::gateway) fn forget(&mut self, key: &str) {
        self.users.remove(key);
    }
}

/// An attempt reserved in this isolate (KV alone) until its outcome is recorded.
pub(super) struct InFlight<'a> {
    local: &'a std::cell::RefCell<LocalAttempts>,
    user: String,
}

impl<'a> InFlight<'a> {
    pub(in crate::gateway) fn enter(
        local: &'a std::cell::RefCell<LocalAttempts>,
        user: &str,
        now: u64,
        window: u64,
    ) -> Self {
        local.borrow_mut().entry(user, now, window).in_flight += 1;
        Self { local, user: user.to_owned() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.local.borrow_mut().users.get_mut(&self.user) {
            l.in_flight = l.in_flight.saturating_sub(1);
        }
    }
}

impl Gateway {
    /// The one operation for a second-factor code, used by every route that takes one:
    /// 1. refuse while the user's factor is locked;
    /// 2. reserve the attempt (the coordination object counts it atomically before the code
    ///    is checked; KV alone counts it against the record's failures and the attempts in
    ///    flight in this isolate), so racing requests get no more than `max_failures`
    ///    checks (KV alone: per isolate);
    /// 3. verify the code (a used TOTP step or backup code is claimed once, everywhere when
    ///    the object is bound);
    /// 4. record the outcome: a right code clears the count, a wrong one keeps it and the
    ///    `max_failures`-th locks; audit events either way.
    ///
    /// The user's MFA record is saved here; `record` is what was loaded (a user without
    /// one gets an empty record to count failures in).
    pub(super) async fn attempt(
        &self,
        cx: &Cx<'_>,
        session: &SessionRecord,
        record: &mut MfaRecord,
        check: Check<'_>,
    ) -> Result<Result<Passed, AttemptRefused>, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let user_id = session.user_id.as_str();
        let now = cx.ports.now();
        let policy = cx.tenant.mfa.lockout_policy();
        let coord = cx.ports.coord().map(|c| (c, coord::user_shard(cx.factors(), user_id)));
        let local_key = mfa_key(cx.factors(), user_id);
        // Steps 1 and 2: the lock, and the reservation.
        let reserved = match &coord {
            Some((c, shard)) => c
                .attempt(
                    shard,
                    MFA_FAILURES_KEY,
                    policy.window.saturating_mul(1000),
                    u64::from(policy.max_failures),
                    policy.lockout.saturating_mul(1000),
                )
                .await?
                .map_err(|ms| ms / 1000),
            None => match self.kv_lock(cx, user_id).await? {
                Some(until) => Err(until),
                None => {
                    let local = self.mfa_local.borrow();
                    local.merge_into(&local_key, record, now, policy.window);
                    record.reserve_attempt_among(now, &policy, local.in_flight(&local_key)).map(u64::from)
                }
            },
        };
        if let Err(until) = reserved {
            if coord.is_none() {
                self.kv_lock_set(cx, user_id, until, &policy).await?;
            }
            self.audit_mfa(cx, session, AuditEvent::MfaFailed, "locked out");
            return Ok(Err(AttemptRefused::Locked(until)));
        }
        let _in_flight = coord.is_none().then(|| InFlight::enter(&self.mfa_local, &local_key, now, policy.window));
        // Step 3: the check.
        const USED: &str = "That code was already used. Wait for the next code and enter it.";
        const WRONG: &str = "That code is not correct. Check the time on your device and try again.";
        let mut enrolled_step = None;
        let mut passkey_amr = None;
        let verdict: Result<AuditEvent, &'static str> = match check {
            Check::Totp(code) if record.has_totp() => {
                let secret = self.totp_secret(record, user_id)?;
                match mfa::verify_totp(secret.expose(), code, now, &record.params, record.last_step) {
                    Ok(step) => {
                        let first = match &coord {
                            Some((c, shard)) => {
                                c.claim(shard, &crate::keys::totp_step(step), CODE_CLAIM_TTL_MS).await?
                            }
                            None => true,
                        };
                        if first {
                            record.record_success(step);
                            Ok(AuditEvent::MfaVerified)
                        } else {
                            Err(USED)
                        }
                    }
                    Err(TotpError::Replayed) => Err(USED),
                    Err(TotpError::Malformed) => Err("Enter the digits shown in your authenticator app."),
                    Err(_) => Err(WRONG),
                }
            }
            Check::Backup(code) if record.enabled => {
                let key = backup_key(&loaded.encryption_keys, record.backup_key.as_deref());
                let found = key.and_then(|(_, k)| record.find_backup_code(&k, code));
                let claimed = match (&coord, found.and_then(|i| record.backup_hashes.get(i).cloned().flatten())) {
                    (Some((c, shard)), Some(hash)) => {
                        let claim_key = crate::keys::backup_code(&hash);
                        c.claim(shard, &claim_key, CODE_CLAIM_TTL_MS).await?
                    }
                    _ => true,
                };
                match found {
                    Some(i) if claimed && record.use_backup(i) => Ok(AuditEvent::BackupCodeUsed),
                    _ => Err("That backup code is not valid (each code works once)."),
                }
            }
            Check::Enrolment { code, secret, params } => {
                match mfa::verify_totp(secret.expose(), code, now, params, None) {
                    Ok(step) => {
                        enrolled_step = Some(step);
                        record.failures.clear();
                        Ok(AuditEvent::MfaEnrolled)
                    }
                    Err(TotpError::Malformed) => Err("Enter the digits shown in your authenticator app."),
                    Err(_) => Err(WRONG),
                }
            }
            Check::Passkey { response, challenge } if record.enabled && !record.passkeys.is_empty() => {
                match self.passkey_assertion(cx, session, record, response, challenge.as_ref()).await? {
                    Ok(amr) => {
                        passkey_amr = Some(amr);
                        Ok(AuditEvent::PasskeyVerified)
                    }
                    Err(sentence) => Err(sentence),
                }
            }
            // No enrolled factor to check against: counted like a wrong code.
            Check::Totp(_) | Check::Backup(_) => Err(WRONG),
            Check::Passkey { .. } => Err("You have no passkey here. Use another way to confirm."),
        };
        // Step 4: the outcome.
        match verdict {
            Ok(event) => {
                self.save_mfa(cx, user_id, record).await?;
                match &coord {
                    Some((c, shard)) => c.attempt_succeeded(shard, MFA_FAILURES_KEY).await?,
                    None => self.mfa_local.borrow_mut().succeeded(&local_key),
                }
                Ok(Ok(match enrolled_step {
                    Some(step) => {
                        Passed::Enrolment { proof: EnrolmentProof { user_id: user_id.to_owned(), amr: TOTP_AMR }, step }
                    }
                    None => Passed::Factor(FactorProof {
                        user_id: user_id.to_owned(),
                        at: now,
                        amr: passkey_amr.unwrap_or(TOTP_AMR),
                        event,
                        passkey: passkey_amr.is_some(),
                    }),
                }))
            }
            Err(sentence) => {
                let counted = match &coord {
                    Some((c, shard)) => {
                        let limit = u64::from(policy.max_failures);
                        match c
                            .attempt_failed(
                                shard,
                                MFA_FAILURES_KEY,
                                policy.window.saturating_mul(1000),
                                limit,
                                policy.lockout.saturating_mul(1000),
                            )
                            .await?
                        {
                            (_, Some(ms)) => FailureOutcome::LockedUntil(ms / 1000),
                            (count, None) => FailureOutcome::Counted {
                                remaining: policy.max_failures.saturating_sub(u32::try_from(count).unwrap_or(u32::MAX)),
                            },
                        }
                    }
                    None => {
                        // Read again: attempts that raced this one may have been recorded.
                        let mut fresh = self.load_mfa(cx, user_id).await?.unwrap_or_else(|| record.clone());
                        fresh.failures.retain(|t| *t <= now && now - *t < policy.window);
                        fresh.failures.push(now);
                        self.mfa_local.borrow_mut().entry(&local_key, now, policy.window).failures.push(now);
                        self.mfa_local.borrow().merge_into(&local_key, &mut fresh, now, policy.window);
                        let outcome = fresh.attempt_failed(now, &policy);
                        self.save_mfa(cx, user_id, &fresh).await?;
                        if let FailureOutcome::LockedUntil(until) = outcome {
                            self.kv_lock_set(cx, user_id, until, &policy).await?;
                        }
                        *record = fresh;
                        outcome
                    }
                };
                self.audit_mfa(cx, session, AuditEvent::MfaFailed, "wrong code");
                match counted {
                    FailureOutcome::LockedUntil(until) => {
                        self.audit_mfa(cx, session, AuditEvent::MfaLocked, &format!("locked until {until}"));
                        Ok(Err(AttemptRefused::Locked(until)))
                    }
                    FailureOutcome::Counted { remaining } => Ok(Err(AttemptRefused::Wrong(format!(
                        "{sentence} {remaining} attempt{} left.",
                        if remaining == 1 { "" } else { "s" }
                    )))),
                }
            }
        }
    }

    /// KV alone: the user's lock from its own key, or this isolate's memory of one.
    pub(super) async fn kv_lock(&self, cx: &Cx<'_>, user_id: &str) -> Result<Option<u64>, Refusal> {
        let now = cx.ports.now();
        let local = self.mfa_local.borrow().locked(&mfa_key(cx.factors(), user_id), now);
        let stored = cx.ports.kv.get(&lock_key(cx.factors(), user_id)).await?.and_then(|v| v.parse::<u64>().ok());
        Ok(local.max(stored).filter(|u| *u > now))
    }

    /// KV alone: records a lock in its own key (and in this isolate).
    pub(super) async fn kv_lock_set(
        &self,
        cx: &Cx<'_>,
        user_id: &str,
        until: u64,
        policy: &mfa::LockoutPolicy,
    ) -> Result<(), Refusal> {
        let now = cx.ports.now();
        self.mfa_local.borrow_mut().entry(&mfa_key(cx.factors(), user_id), now, policy.window).locked_until =
            Some(until);
        let ttl = until.saturating_sub(now).max(60);
        cx.ports.kv.put(&lock_key(cx.factors(), user_id), &until.to_string(), Some(ttl)).await?;
        Ok(())
    }

    /// Until when the user's second factor is locked (unix seconds), from the coordinator
    /// when there is one, else from the KV record.
    pub(in crate::gateway) async fn mfa_locked(
        &self,
        cx: &Cx<'_>,
        user_id: &str,
        record: &MfaRecord,
    ) -> Result<Option<u64>, Refusal> {
        match cx.ports.coord() {
            Some(c) => {
                Ok(c.locked(&coord::user_shard(cx.factors(), user_id), MFA_FAILURES_KEY).await?.map(|ms| ms / 1000))
            }
            None => Ok(record.is_locked(cx.ports.now()).max(self.kv_lock(cx, user_id).await?)),
        }
    }

    pub(super) fn lockout(until: u64, now: u64) -> Refusal {
        Refusal::MfaLocked { minutes: until.saturating_sub(now).div_ceil(60).max(1) }
    }
}
