//! The TOTP second factor in the sign-in flow: the decision after the IdP, the prompt,
//! enrolment, backup codes, step-up, and the admin reset. The protocol pieces live in
//! [`crate::mfa`]; this module stores records and sessions and renders the pages.
//!
//! Every route that takes a code goes through one operation, [`Gateway::attempt`]: check
//! the lock, reserve the attempt, verify, record the outcome. Its success is a
//! [`FactorProof`], the only thing that turns a [`WaitingSession`] into a complete one or
//! refreshes a step-up. Which session state each route takes is in `state.rs`.

use super::context::Cx;
use super::routes::RouteId;
use crate::audit::AuditEvent;
use serde_json::json;

use super::state::{CompleteSession, Session};
use super::{base_url, Gateway, Lookup};
use crate::config::Tenant;
use crate::coord;
use crate::crypto::{self, KeyWithId};
use crate::error::Refusal;
use crate::http::{Request, Response};
use crate::mfa::{self, FailureOutcome, MfaRecord, TotpError, TotpParams};
use crate::pages::{self, Brand, EnrollView, Notice};
use crate::policy;
use crate::ports::Ports;
use crate::redirect::safe_return_path;
use crate::secret::Secret;
use crate::session::{self, MfaState, SessionId, SessionRecord};

/// The coordinator's key for a user's wrong-code count and lock.
const MFA_FAILURES_KEY: &str = "mfa-failures";
/// How long a used TOTP step or backup code is remembered at the coordinator: longer than
/// the codes' acceptance window and than KV's propagation delay for the record.
const CODE_CLAIM_TTL_MS: u64 = 300_000;
/// How long an enrolment secret waits for its first code (seconds).
pub const ENROLMENT_TTL: u64 = 600;
/// The `seal` purpose of an enrolment secret (bound to the user and the session).
const ENROLMENT_SEAL: &str = "totp-enrolment";

/// `amr` values that mean the IdP already did a second factor.
const IDP_MFA_AMR: &[&str] = &["mfa", "otp", "hwk"];
/// What a TOTP code or a backup code stands for in `amr`.
const TOTP_AMR: &[&str] = &["mfa", "otp"];

pub(super) fn mfa_key(tenant: &str, user_id: &str) -> String {
    format!("mfa:{tenant}:{}", crypto::sha256_hex(user_id.as_bytes()))
}

/// KV alone: the user's lock, in a key of its own that is only ever written with a lock
/// (never rewritten from a possibly stale MFA record), so a location whose replica still
/// holds the record from before the lock cannot erase it.
fn lock_key(tenant: &str, user_id: &str) -> String {
    format!("mfa-lock:{tenant}:{}", crypto::sha256_hex(user_id.as_bytes()))
}

/// The coordinator's key that lets one enrolment of a user through (until an admin reset).
const ENROLLED_KEY: &str = "mfa-enrolled";

/// Where a session's enrolment secret waits for its first code: per session, never per
/// user, so no other session of the user can see or confirm it.
fn enrolment_key(tenant: &str, id: &SessionId) -> String {
    format!("mfa-enrol:{tenant}:{}", id.hash())
}

fn backup_key(keys: &[KeyWithId], id: Option<&str>) -> Option<(String, [u8; 32])> {
    let key = match id {
        Some(id) => keys.iter().find(|k| k.id == id)?,
        None => keys.first()?,
    };
    Some((key.id.clone(), key.derive("backup-codes")))
}

/// Proof that a second-factor code was just verified for a user. Its fields are private to
/// this module: only [`Gateway::attempt`] makes one.
#[derive(Debug)]
pub(super) struct FactorProof {
    user_id: String,
    at: u64,
    amr: &'static [&'static str],
    event: AuditEvent,
}

impl FactorProof {
    pub(super) fn user_id(&self) -> &str {
        &self.user_id
    }
    pub(super) fn at(&self) -> u64 {
        self.at
    }
    pub(super) fn amr(&self) -> &'static [&'static str] {
        self.amr
    }
}

/// Proof that a user's first second factor was just enrolled (made only here).
#[derive(Debug)]
pub(super) struct EnrolmentProof {
    user_id: String,
    amr: &'static [&'static str],
}

impl EnrolmentProof {
    pub(super) fn user_id(&self) -> &str {
        &self.user_id
    }
    pub(super) fn amr(&self) -> &'static [&'static str] {
        self.amr
    }
}

/// What a code is checked against.
enum Check<'a> {
    /// A TOTP code of the enrolled authenticator.
    Totp(&'a str),
    /// One of the user's backup codes.
    Backup(&'a str),
    /// The first code of an authenticator being enrolled.
    Enrolment { code: &'a str, secret: &'a Secret, params: &'a TotpParams },
}

/// What a verified attempt proves: a code of the user's factor, or the first code of a
/// factor being enrolled (which is no verification: it never satisfies a step-up).
enum Passed {
    Factor(FactorProof),
    Enrolment { proof: EnrolmentProof, step: u64 },
}

/// Why an attempt did not verify.
enum AttemptRefused {
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
pub(super) struct LocalAttempts {
    users: std::collections::HashMap<String, LocalUser>,
}

#[derive(Debug, Default)]
struct LocalUser {
    in_flight: u32,
    failures: Vec<u64>,
    locked_until: Option<u64>,
}

/// Most users an isolate keeps attempts for (bounded memory under a flood of users).
const MAX_LOCAL_USERS: usize = 10_000;

impl LocalAttempts {
    fn merge_into(&self, key: &str, record: &mut MfaRecord, now: u64, window: u64) {
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

    fn in_flight(&self, key: &str) -> u32 {
        self.users.get(key).map_or(0, |l| l.in_flight)
    }

    fn locked(&self, key: &str, now: u64) -> Option<u64> {
        self.users.get(key).and_then(|l| l.locked_until).filter(|u| *u > now)
    }

    fn entry(&mut self, key: &str, now: u64, window: u64) -> &mut LocalUser {
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
    fn succeeded(&mut self, key: &str) {
        if let Some(l) = self.users.get_mut(key) {
            l.failures.clear();
            l.locked_until = None;
        }
    }

    fn forget(&mut self, key: &str) {
        self.users.remove(key);
    }
}

/// An attempt reserved in this isolate (KV alone) until its outcome is recorded.
struct InFlight<'a> {
    local: &'a std::cell::RefCell<LocalAttempts>,
    user: String,
}

impl<'a> InFlight<'a> {
    fn enter(local: &'a std::cell::RefCell<LocalAttempts>, user: &str, now: u64, window: u64) -> Self {
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

/// An enrolment in progress, stored under [`enrolment_key`].
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingEnrolment {
    /// The secret, sealed with the user id and the session's hash as associated data.
    secret: String,
    params: TotpParams,
    created: u64,
}

impl Gateway {
    pub(super) async fn load_mfa(&self, cx: &Cx<'_>, user_id: &str) -> Result<Option<MfaRecord>, Refusal> {
        match cx.ports.kv.get(&mfa_key(&cx.tenant.id, user_id)).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_str(&raw)
                .map(Some)
                .map_err(|e| Refusal::Storage(crate::ports::KvError(format!("MFA record unreadable: {e}")))),
        }
    }

    async fn save_mfa(&self, cx: &Cx<'_>, user_id: &str, record: &MfaRecord) -> Result<(), Refusal> {
        let value = serde_json::to_string(record).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&mfa_key(&cx.tenant.id, user_id), &value, None).await?;
        Ok(())
    }

    /// Whether the user has a second factor that sign-ins must pass.
    async fn has_factor(&self, cx: &Cx<'_>, user_id: &str) -> Result<bool, Refusal> {
        Ok(self.load_mfa(cx, user_id).await?.is_some_and(|m| m.enabled))
    }

    /// After the IdP signed the person in: decide whether a second factor is due, and
    /// where the browser goes next.
    pub(super) async fn decide_mfa(
        &self,
        cx: &Cx<'_>,
        accept_idp_mfa: bool,
        record: &mut SessionRecord,
        return_to: &str,
    ) -> Result<String, Refusal> {
        let prefix = self.prefix();
        let rd = crate::http::query_encode(&[("rd", return_to)]);
        if accept_idp_mfa && record.amr.iter().any(|a| IDP_MFA_AMR.contains(&a.as_str())) {
            record.mfa = MfaState::Verified;
            record.mfa_at = Some(record.created);
            return Ok(return_to.to_owned());
        }
        if self.has_factor(cx, &record.user_id).await? {
            record.mfa = MfaState::Pending;
            Ok(format!("{prefix}/mfa?{rd}"))
        } else if cx.tenant.mfa.required {
            record.mfa = MfaState::Pending;
            Ok(format!("{prefix}/mfa/enroll?{rd}"))
        } else {
            record.mfa = MfaState::NotRequired;
            Ok(return_to.to_owned())
        }
    }

    /// Whether the request needs a fresher second factor than the session has.
    pub(super) fn step_up_due(&self, cx: &Cx<'_>, request: &crate::path::Decided, record: &SessionRecord) -> bool {
        let now = cx.ports.now();
        cx.tenant
            .mfa
            .step_up
            .iter()
            .filter(|r| request.methods.iter().any(|m| policy::rule_matches(&r.as_path_rule(), m, &request.path)))
            .any(|r| record.mfa_at.is_none_or(|at| now > at.saturating_add(r.max_age)))
    }

    /// Answer for a request that needs the second factor first: browsers navigating go
    /// through the prompt and come back; anything else is refused with an explanation
    /// (a form post is never replayed silently).
    pub(super) fn mfa_needed(&self, req: &Request, step_up: bool) -> Result<Response, Refusal> {
        let rd = match req.url.query() {
            Some(q) => format!("{}?{q}", req.url.path()),
            None => req.url.path().to_owned(),
        };
        if req.is_navigation() {
            let mut q = vec![("rd", rd.as_str())];
            if step_up {
                q.push(("reason", "step_up"));
            }
            return Ok(self.no_store_redirect(&format!("{}/mfa?{}", self.prefix(), crate::http::query_encode(&q))));
        }
        Err(Refusal::MfaRequired { step_up })
    }

    fn no_store_redirect(&self, location: &str) -> Response {
        let mut r = Response::redirect(location);
        r.headers.set("cache-control", "no-store");
        r
    }

    /// The second-factor routes. The session is looked up once here; each handler takes
    /// the state it accepts (see `state.rs`).
    pub(super) async fn mfa_route(&self, cx: &Cx<'_>, route: RouteId, post: bool) -> Result<Response, Refusal> {
        let session = match self.lookup_session(cx).await? {
            Lookup::Active(s) => *s,
            Lookup::Ended | Lookup::NoSession { .. } => {
                let rd = safe_return_path(&cx.req.query("rd").unwrap_or_default(), self.prefix());
                let login = format!("{}/login?{}", self.prefix(), crate::http::query_encode(&[("rd", &rd)]));
                return Ok(self.no_store_redirect(&login));
            }
        };
        if post {
            self.check_csrf(cx.req, cx.tenant, session.id())?;
        }
        match (post, route) {
            (false, RouteId::Mfa) => self.mfa_prompt(cx, session).await,
            (true, RouteId::Mfa) => self.mfa_verify(cx, session).await,
            (false, RouteId::MfaEnroll) => self.mfa_enroll_page(cx, session, None).await,
            (true, RouteId::MfaEnroll) => self.mfa_enroll_confirm(cx, session).await,
            (true, RouteId::MfaBackupCodes) => match session {
                Session::Complete(s) => self.mfa_regenerate_codes(cx, s).await,
                // Managing factors is for complete sessions only.
                Session::Waiting(_) => Err(Refusal::MfaRequired { step_up: false }),
            },
            _ => Err(Refusal::MethodNotAllowed),
        }
    }

    fn csrf_for(&self, tenant: &Tenant, id: &SessionId) -> String {
        self.config().and_then(|l| session::csrf_token(&l.cookie_keys, &tenant.id, id)).unwrap_or_default()
    }

    fn check_csrf(&self, req: &Request, tenant: &Tenant, id: &SessionId) -> Result<(), Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        // `Origin: null` is what browsers send under `Referrer-Policy: no-referrer`: it
        // proves nothing either way, so only the CSRF token decides then.
        if let Some(origin) = req.headers.get("origin").filter(|o| *o != "null") {
            if origin != base_url(req) {
                return Err(Refusal::Csrf);
            }
        }
        let token = req.form_value("csrf").unwrap_or_default();
        if session::csrf_matches(&loaded.cookie_keys, &tenant.id, id, &token) {
            Ok(())
        } else {
            Err(Refusal::Csrf)
        }
    }

    /// The user's TOTP secret, opened from the record (sealed and bound to the user id).
    fn totp_secret(&self, record: &MfaRecord, user_id: &str) -> Result<Secret, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        record
            .secret
            .as_deref()
            .and_then(|s| mfa::open_secret(&loaded.encryption_keys, user_id, s).ok())
            .ok_or_else(|| Refusal::Storage(crate::ports::KvError("MFA secret cannot be opened".into())))
    }

    fn lockout(until: u64, now: u64) -> Refusal {
        Refusal::MfaLocked { minutes: until.saturating_sub(now).div_ceil(60).max(1) }
    }

    fn prompt_lead(record: &MfaRecord, step_up: bool) -> String {
        let mut lead = if step_up {
            "This page needs a recent confirmation of your identity. Enter the code from your authenticator app."
                .to_owned()
        } else {
            "Enter the 6-digit code from your authenticator app.".to_owned()
        };
        if record.params.digits == 8 {
            lead = lead.replace("6-digit", "8-digit");
        }
        lead
    }

    fn backup_warning(record: &MfaRecord) -> Option<String> {
        let left = record.backup_codes_left();
        (left <= 2).then(|| {
            format!(
                "You have {left} backup code{} left. Generate new ones after signing in.",
                if left == 1 { "" } else { "s" }
            )
        })
    }

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
    async fn attempt(
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
        let coord = cx.ports.coord().map(|c| (c, coord::user_shard(&cx.tenant.id, user_id)));
        let local_key = mfa_key(&cx.tenant.id, user_id);
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
        let verdict: Result<AuditEvent, &'static str> = match check {
            Check::Totp(code) if record.enabled => {
                let secret = self.totp_secret(record, user_id)?;
                match mfa::verify_totp(secret.expose(), code, now, &record.params, record.last_step) {
                    Ok(step) => {
                        let first = match &coord {
                            Some((c, shard)) => c.claim(shard, &format!("totp:{step}"), CODE_CLAIM_TTL_MS).await?,
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
                        let claim_key = format!("backup:{}", &crypto::sha256_hex(hash.as_bytes())[..32]);
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
            // No enrolled factor to check against: counted like a wrong code.
            Check::Totp(_) | Check::Backup(_) => Err(WRONG),
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
                    None => Passed::Factor(FactorProof { user_id: user_id.to_owned(), at: now, amr: TOTP_AMR, event }),
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
    async fn kv_lock(&self, cx: &Cx<'_>, user_id: &str) -> Result<Option<u64>, Refusal> {
        let now = cx.ports.now();
        let local = self.mfa_local.borrow().locked(&mfa_key(&cx.tenant.id, user_id), now);
        let stored = cx.ports.kv.get(&lock_key(&cx.tenant.id, user_id)).await?.and_then(|v| v.parse::<u64>().ok());
        Ok(local.max(stored).filter(|u| *u > now))
    }

    /// KV alone: records a lock in its own key (and in this isolate).
    async fn kv_lock_set(
        &self,
        cx: &Cx<'_>,
        user_id: &str,
        until: u64,
        policy: &mfa::LockoutPolicy,
    ) -> Result<(), Refusal> {
        let now = cx.ports.now();
        self.mfa_local.borrow_mut().entry(&mfa_key(&cx.tenant.id, user_id), now, policy.window).locked_until =
            Some(until);
        let ttl = until.saturating_sub(now).max(60);
        cx.ports.kv.put(&lock_key(&cx.tenant.id, user_id), &until.to_string(), Some(ttl)).await?;
        Ok(())
    }

    /// `GET {prefix}/mfa`: the prompt (waiting sessions, and complete ones for step-up).
    async fn mfa_prompt(&self, cx: &Cx<'_>, session: Session) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.query("rd").unwrap_or_default(), prefix);
        let user_id = &session.record().user_id;
        let Some(record) = self.load_mfa(cx, user_id).await?.filter(|m| m.enabled) else {
            return Ok(
                self.no_store_redirect(&format!("{prefix}/mfa/enroll?{}", crate::http::query_encode(&[("rd", &rd)])))
            );
        };
        if let Some(until) = self.mfa_locked(cx, user_id, &record).await? {
            return Err(Self::lockout(until, cx.ports.now()));
        }
        let step_up = cx.req.query("reason").as_deref() == Some("step_up");
        let warning = Self::backup_warning(&record);
        Ok(pages::mfa_page(
            Brand { tenant: Some(cx.tenant), prefix },
            &Self::prompt_lead(&record, step_up),
            warning.as_deref().map(Notice::Info),
            &self.csrf_for(cx.tenant, session.id()),
            &rd,
        ))
    }

    /// `POST {prefix}/mfa`: a TOTP code or a backup code. Completes a waiting session, or
    /// refreshes a complete one's step-up time.
    async fn mfa_verify(&self, cx: &Cx<'_>, session: Session) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        let Some(mut record) = self.load_mfa(cx, &session.record().user_id).await?.filter(|m| m.enabled) else {
            return Ok(Response::redirect(&format!(
                "{prefix}/mfa/enroll?{}",
                crate::http::query_encode(&[("rd", &rd)])
            )));
        };
        let backup = cx.req.form_value("backup_code").filter(|c| !c.trim().is_empty());
        let code = cx.req.form_value("code").unwrap_or_default();
        let check = match &backup {
            Some(b) => Check::Backup(b),
            None => Check::Totp(&code),
        };
        match self.attempt(cx, session.record(), &mut record, check).await? {
            Ok(Passed::Enrolment { .. }) => Err(Refusal::MfaRequired { step_up: false }),
            Ok(Passed::Factor(proof)) => {
                let event = proof.event;
                let complete = match session {
                    Session::Waiting(w) => w.verified(proof).ok_or(Refusal::MfaRequired { step_up: false })?,
                    Session::Complete(mut c) => {
                        if !c.stepped_up(proof) {
                            return Err(Refusal::MfaRequired { step_up: true });
                        }
                        c
                    }
                };
                if !self.update_session(cx, complete.id(), complete.record()).await? {
                    return Ok(self.unauthenticated(cx.req, cx.tenant, true));
                }
                self.audit_mfa(cx, complete.record(), event, "ok");
                Ok(self.no_store_redirect(&rd))
            }
            Err(AttemptRefused::Locked(until)) => Err(Self::lockout(until, cx.ports.now())),
            Err(AttemptRefused::Wrong(text)) => {
                let mut r = pages::mfa_page(
                    Brand { tenant: Some(cx.tenant), prefix },
                    &Self::prompt_lead(&record, false),
                    Some(Notice::Error(&text)),
                    &self.csrf_for(cx.tenant, session.id()),
                    &rd,
                );
                r.status = 401;
                Ok(r)
            }
        }
    }

    fn audit_mfa(&self, cx: &Cx<'_>, session: &SessionRecord, event: AuditEvent, outcome: &str) {
        let warn = matches!(event, AuditEvent::MfaLocked | AuditEvent::MfaFailed);
        cx.audit(
            event,
            json!({"tenant": cx.tenant.id, "user": session.user_id, "provider": session.provider, "outcome": outcome,
                   "level": if warn { "warn" } else { "info" }}),
        );
    }

    fn totp_issuer(tenant: &Tenant) -> String {
        tenant.mfa.issuer.clone().unwrap_or_else(|| {
            if tenant.name.is_empty() {
                tenant.id.clone()
            } else {
                tenant.name.clone()
            }
        })
    }

    /// Whether this session may enrol a factor now; otherwise the answer to give. A waiting
    /// session may enrol the user's first factor (the first sign-in of a tenant that
    /// requires one); a complete session only within `mfa.fresh_sign_in` of a sign-in the
    /// IdP confirmed as fresh — a stolen session cookie cannot plant its own authenticator.
    async fn enrolment_gate(&self, cx: &Cx<'_>, session: &Session, rd: &str) -> Result<Option<Response>, Refusal> {
        let prefix = self.prefix();
        let record = session.record();
        if self.has_factor(cx, &record.user_id).await? {
            // Enrolled already: a new device goes through an admin reset.
            return Ok(Some(
                self.no_store_redirect(&format!("{prefix}/mfa?{}", crate::http::query_encode(&[("rd", rd)]))),
            ));
        }
        let fresh = record.reauth_at.is_some_and(|at| cx.ports.now() <= at.saturating_add(cx.tenant.mfa.fresh_sign_in));
        match session {
            Session::Waiting(_) if cx.tenant.mfa.required => Ok(None),
            Session::Waiting(_) => Err(Refusal::MfaRequired { step_up: false }),
            Session::Complete(_) if fresh => Ok(None),
            Session::Complete(_) => {
                if cx.req.method != "GET" {
                    return Err(Refusal::FreshSignInNotConfirmed { provider: record.provider.clone() });
                }
                // After the fresh sign-in the gateway comes back to enrolment by itself.
                let login = format!(
                    "{prefix}/login?{}",
                    crate::http::query_encode(&[("provider", record.provider.as_str()), ("reauth", "1"), ("rd", rd)])
                );
                Ok(Some(self.no_store_redirect(&login)))
            }
        }
    }

    /// This session's enrolment secret: the one it was shown (until it expires), or a new
    /// one. Sealed with the user id and the session's hash, stored under the session.
    async fn enrolment_secret(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        user_id: &str,
        create: bool,
    ) -> Result<Option<(Secret, TotpParams)>, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let key = enrolment_key(&cx.tenant.id, id);
        let aad = format!("{user_id}\n{}", id.hash());
        let now = cx.ports.now();
        let params = cx.tenant.mfa.params();
        if let Some(raw) = cx.ports.kv.get(&key).await? {
            if let Ok(p) = serde_json::from_str::<PendingEnrolment>(&raw) {
                let live = now < p.created.saturating_add(ENROLMENT_TTL) && p.params == params;
                if let (true, Ok(plain)) =
                    (live, crypto::open(&loaded.encryption_keys, ENROLMENT_SEAL, aad.as_bytes(), &p.secret))
                {
                    return Ok(Some((Secret::new(plain), p.params)));
                }
            }
        }
        if !create {
            return Ok(None);
        }
        let secret = mfa::secret_from_random(cx.ports.random::<20>());
        let sealed = crypto::seal(
            &loaded.encryption_keys,
            ENROLMENT_SEAL,
            aad.as_bytes(),
            cx.ports.random::<12>(),
            secret.expose(),
        )
        .ok_or(Refusal::ConfigInvalid)?;
        let pending = PendingEnrolment { secret: sealed, params, created: now };
        let value = serde_json::to_string(&pending).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&key, &value, Some(ENROLMENT_TTL)).await?;
        Ok(Some((secret, params)))
    }

    /// `GET {prefix}/mfa/enroll`: this session's enrolment secret and its QR code.
    async fn mfa_enroll_page(
        &self,
        cx: &Cx<'_>,
        session: Session,
        notice: Option<Notice<'_>>,
    ) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd_raw = cx.req.query("rd").or_else(|| cx.req.form_value("rd")).unwrap_or_default();
        let rd = safe_return_path(&rd_raw, prefix);
        if let Some(r) = self.enrolment_gate(cx, &session, &rd).await? {
            return Ok(r);
        }
        let record = session.record();
        let Some((secret, params)) = self.enrolment_secret(cx, session.id(), &record.user_id, true).await? else {
            return Err(Refusal::ConfigInvalid);
        };
        let b32 = mfa::base32_encode(secret.expose());
        let account = record.email.clone().unwrap_or_else(|| record.user.clone());
        let uri = mfa::otpauth_uri(&Self::totp_issuer(cx.tenant), &account, &b32, &params);
        let qr = mfa::qr_svg(&uri).unwrap_or_default();
        let lead = match session {
            Session::Waiting(_) => "This site requires two-step verification. Set it up now to continue.",
            Session::Complete(_) => "Add a second step to your sign-in with an authenticator app.",
        };
        Ok(pages::enroll_page(
            Brand { tenant: Some(cx.tenant), prefix },
            &EnrollView {
                lead,
                notice,
                qr_svg: &qr,
                secret_groups: &mfa::format_groups(&b32),
                uri: &uri,
                csrf: &self.csrf_for(cx.tenant, session.id()),
                rd: &rd,
            },
        ))
    }

    /// `POST {prefix}/mfa/enroll`: the first code of this session's enrolment secret turns
    /// the second factor on and shows the backup codes.
    async fn mfa_enroll_confirm(&self, cx: &Cx<'_>, session: Session) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        if let Some(r) = self.enrolment_gate(cx, &session, &rd).await? {
            return Ok(r);
        }
        let user_id = session.record().user_id.clone();
        let Some((secret, params)) = self.enrolment_secret(cx, session.id(), &user_id, false).await? else {
            // Expired, or never shown to this session.
            return Ok(
                self.no_store_redirect(&format!("{prefix}/mfa/enroll?{}", crate::http::query_encode(&[("rd", &rd)])))
            );
        };
        let mut record = self.load_mfa(cx, &user_id).await?.unwrap_or_default();
        let code = cx.req.form_value("code").unwrap_or_default();
        let check = Check::Enrolment { code: &code, secret: &secret, params: &params };
        let (proof, step) = match self.attempt(cx, session.record(), &mut record, check).await? {
            Ok(Passed::Enrolment { proof, step }) => (proof, step),
            Ok(Passed::Factor(_)) => return Err(Refusal::MfaRequired { step_up: false }),
            Err(AttemptRefused::Locked(until)) => return Err(Self::lockout(until, cx.ports.now())),
            Err(AttemptRefused::Wrong(text)) => {
                let mut r = self.mfa_enroll_page(cx, session, Some(Notice::Error(&text))).await?;
                r.status = 401;
                return Ok(r);
            }
        };
        // One enrolment per user: a second session confirming at the same time, or in a
        // location whose KV has not seen the first, must not replace the first factor.
        let already = match cx.ports.coord() {
            Some(c) => {
                let shard = coord::user_shard(&cx.tenant.id, &user_id);
                !c.claim(&shard, ENROLLED_KEY, ENROLMENT_TTL.saturating_mul(1000)).await?
            }
            None => false,
        };
        if already || self.has_factor(cx, &user_id).await? {
            return Ok(self.no_store_redirect(&format!("{prefix}/mfa?{}", crate::http::query_encode(&[("rd", &rd)]))));
        }
        let now = cx.ports.now();
        record.secret = Some(
            mfa::seal_secret(&loaded.encryption_keys, &user_id, secret.expose(), cx.ports.random::<12>())
                .ok_or(Refusal::ConfigInvalid)?,
        );
        record.params = params;
        let codes = self.new_backup_codes(cx.ports, &mut record)?;
        let hashes = record.backup_hashes.iter().flatten().cloned().collect();
        record.enable(hashes, step, now);
        if let Err(e) = self.save_mfa(cx, &user_id, &record).await {
            // Not enrolled after all: let a retry through.
            if let Some(c) = cx.ports.coord() {
                let _ = c.clear(&coord::user_shard(&cx.tenant.id, &user_id), ENROLLED_KEY).await;
            }
            return Err(e);
        }
        cx.ports.kv.delete(&enrolment_key(&cx.tenant.id, session.id())).await?;
        // Sessions that never passed this factor end: one signed in with a phished password
        // before the user added it must not go on without it.
        self.revoke_other_sessions(cx, &user_id, session.id(), "a second factor was added").await?;
        let audited = match session {
            Session::Waiting(w) => {
                let complete = w.enrolled(proof).ok_or(Refusal::MfaRequired { step_up: false })?;
                if !self.update_session(cx, complete.id(), complete.record()).await? {
                    return Ok(self.unauthenticated(cx.req, cx.tenant, true));
                }
                complete.into_parts().1
            }
            // A complete session stays as it is: enrolling is not a verification.
            Session::Complete(c) => c.into_parts().1,
        };
        self.audit_mfa(cx, &audited, AuditEvent::MfaEnrolled, "ok");
        Ok(pages::backup_codes_page(Brand { tenant: Some(cx.tenant), prefix }, &codes, &rd))
    }

    /// Fresh backup codes: the plain codes to show once; the record keeps only their hashes.
    fn new_backup_codes(&self, ports: Ports<'_>, record: &mut MfaRecord) -> Result<Vec<String>, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let mut random = vec![0u8; mfa::DEFAULT_BACKUP_CODES * mfa::BACKUP_CODE_RANDOM_BYTES];
        ports.rt.fill_random(&mut random);
        let codes = mfa::generate_backup_codes(&random, mfa::DEFAULT_BACKUP_CODES).ok_or(Refusal::ConfigInvalid)?;
        let (key_id, key) = backup_key(&loaded.encryption_keys, None).ok_or(Refusal::ConfigInvalid)?;
        record.backup_hashes = codes.iter().map(|c| Some(mfa::backup_code_hash(&key, c))).collect();
        record.backup_key = Some(key_id);
        Ok(codes)
    }

    /// `POST {prefix}/mfa/backup-codes`: new codes for a complete session and a fresh TOTP
    /// code (through the attempt operation); the old codes stop working.
    async fn mfa_regenerate_codes(&self, cx: &Cx<'_>, session: CompleteSession) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        let user_id = session.record().user_id.clone();
        let Some(mut record) = self.load_mfa(cx, &user_id).await?.filter(|m| m.enabled) else {
            return Err(Refusal::NotFound);
        };
        let code = cx.req.form_value("code").unwrap_or_default();
        match self.attempt(cx, session.record(), &mut record, Check::Totp(&code)).await? {
            Ok(Passed::Enrolment { .. }) => Err(Refusal::MfaRequired { step_up: false }),
            Ok(Passed::Factor(_)) => {
                let codes = self.new_backup_codes(cx.ports, &mut record)?;
                self.save_mfa(cx, &user_id, &record).await?;
                self.audit_mfa(cx, session.record(), AuditEvent::BackupCodesRegenerated, "ok");
                Ok(pages::backup_codes_page(Brand { tenant: Some(cx.tenant), prefix }, &codes, &rd))
            }
            Err(AttemptRefused::Locked(until)) => Err(Self::lockout(until, cx.ports.now())),
            Err(AttemptRefused::Wrong(_)) => Err(Refusal::BadRequest("wrong code for backup code regeneration".into())),
        }
    }

    /// Until when the user's second factor is locked (unix seconds), from the coordinator
    /// when there is one, else from the KV record.
    pub(super) async fn mfa_locked(
        &self,
        cx: &Cx<'_>,
        user_id: &str,
        record: &MfaRecord,
    ) -> Result<Option<u64>, Refusal> {
        match cx.ports.coord() {
            Some(c) => {
                Ok(c.locked(&coord::user_shard(&cx.tenant.id, user_id), MFA_FAILURES_KEY).await?.map(|ms| ms / 1000))
            }
            None => Ok(record.is_locked(cx.ports.now()).max(self.kv_lock(cx, user_id).await?)),
        }
    }

    /// Clears a user's second factor: secret, enabled flag and backup codes. The user enrols
    /// again at the next sign-in (when the tenant requires MFA) or whenever they choose.
    pub(super) async fn reset_mfa(&self, cx: &Cx<'_>, user_id: &str, actor: &str) -> Result<bool, Refusal> {
        let Some(mut record) = self.load_mfa(cx, user_id).await? else {
            return Ok(false);
        };
        record.reset();
        self.mfa_local.borrow_mut().forget(&mfa_key(&cx.tenant.id, user_id));
        match cx.ports.coord() {
            Some(c) => {
                let shard = coord::user_shard(&cx.tenant.id, user_id);
                c.clear(&shard, MFA_FAILURES_KEY).await?;
                c.clear(&shard, ENROLLED_KEY).await?;
            }
            None => cx.ports.kv.delete(&lock_key(&cx.tenant.id, user_id)).await?,
        }
        self.save_mfa(cx, user_id, &record).await?;
        cx.audit(
            AuditEvent::MfaReset,
            json!({"level": "warn", "tenant": cx.tenant.id, "actor": actor, "user": user_id}),
        );
        Ok(true)
    }
}
