//! The second factor in the sign-in flow (TOTP, passkeys in `passkey.rs`, backup codes):
//! the decision after the IdP, the prompt, enrolment, step-up, and the admin reset. The
//! protocol pieces live in [`crate::mfa`] and [`crate::webauthn`]; this module stores
//! records and sessions and renders the pages.
//!
//! Every route that takes a code or a passkey assertion goes through one operation,
//! [`Gateway::attempt`]: check the lock, reserve the attempt, verify, record the outcome. Its success is a
//! [`FactorProof`], the only thing that turns a [`WaitingSession`] into a complete one or
//! refreshes a step-up. Which session state each route takes is in `state.rs`.

use super::context::Cx;
use super::routes::RouteId;
use crate::audit::AuditEvent;
use serde_json::json;

use super::state::Session;
use super::{base_url, Gateway, Lookup};
use crate::config::{MfaMethod, StepUpFactor, Tenant};
use crate::crypto::KeyWithId;
use crate::error::Refusal;
use crate::http::{Request, Response};
use crate::mfa::{self, MfaRecord};
use crate::pages::{self, Brand, Notice};
use crate::policy;
use crate::redirect::safe_return_path;
use crate::secret::Secret;
use crate::session::{self, MfaState, SessionId, SessionRecord};

mod attempt;
mod enrol;
mod passkey;
pub(super) use attempt::LocalAttempts;
use attempt::{AttemptRefused, Check, Passed};

use crate::keys::MFA_FAILURES as MFA_FAILURES_KEY;
/// How long a used TOTP step or backup code is remembered at the coordinator: longer than
/// the codes' acceptance window and than KV's propagation delay for the record.
const CODE_CLAIM_TTL_MS: u64 = 300_000;
/// How long an enrolment secret waits for its first code (seconds).
pub const ENROLMENT_TTL: u64 = 600;
/// The `seal` purpose of an enrolment secret (bound to the user and the session).
const ENROLMENT_SEAL: &str = "totp-enrolment";

/// `amr` values that mean the IdP already did a second factor.
const IDP_MFA_AMR: &[&str] = &["mfa", "otp", "hwk"];
/// The `then` of a prompt after a fresh sign-in for adding a passkey: after the factor, the
/// passkey registration page.
pub(in crate::gateway) const THEN_ADD_PASSKEY: &str = "add_passkey";
/// The `reason` of a prompt for a step-up rule that demands a passkey.
const STEP_UP_PASSKEY: &str = "step_up_passkey";
/// What a TOTP code or a backup code stands for in `amr`.
const TOTP_AMR: &[&str] = &["mfa", "otp"];

pub(super) use crate::keys::mfa as mfa_key;

use crate::keys::mfa_lock as lock_key;

use crate::keys::MFA_ENROLLED as ENROLLED_KEY;

/// Where a session's enrolment secret waits for its first code: per session, never per
/// user, so no other session of the user can see or confirm it.
fn enrolment_key(tenant: &str, id: &SessionId) -> String {
    crate::keys::mfa_enrolment(tenant, &id.hash())
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
    /// A passkey was verified (what step-up rules demanding a passkey need).
    passkey: bool,
}

impl FactorProof {
    pub(super) fn passkey(&self) -> bool {
        self.passkey
    }
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

impl Gateway {
    pub(super) async fn load_mfa(&self, cx: &Cx<'_>, user_id: &str) -> Result<Option<MfaRecord>, Refusal> {
        match cx.ports.kv.get(&mfa_key(cx.factors(), user_id)).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_str(&raw)
                .map(Some)
                .map_err(|e| Refusal::Storage(crate::ports::KvError(format!("MFA record unreadable: {e}")))),
        }
    }

    async fn save_mfa(&self, cx: &Cx<'_>, user_id: &str, record: &MfaRecord) -> Result<(), Refusal> {
        let value = serde_json::to_string(record).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&mfa_key(cx.factors(), user_id), &value, None).await?;
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

    /// Whether the request needs a fresher second factor than the session has, and which:
    /// a rule demanding a passkey counts only passkey verifications.
    pub(super) fn step_up_due(
        &self,
        cx: &Cx<'_>,
        request: &crate::path::Decided,
        record: &SessionRecord,
    ) -> Option<StepUpFactor> {
        let now = cx.ports.now();
        let stale = |at: Option<u64>, max_age: u64| at.is_none_or(|at| now > at.saturating_add(max_age));
        let due: Vec<StepUpFactor> = cx
            .tenant
            .mfa
            .step_up
            .iter()
            .filter(|r| request.methods.iter().any(|m| policy::rule_matches(&r.as_path_rule(), m, &request.path)))
            .filter(|r| match r.factor {
                StepUpFactor::Any => stale(record.mfa_at, r.max_age),
                StepUpFactor::Passkey => stale(record.passkey_at, r.max_age),
            })
            .map(|r| r.factor)
            .collect();
        due.iter().copied().find(|f| *f == StepUpFactor::Passkey).or(due.first().copied())
    }

    /// Answer for a request that needs the second factor first: browsers navigating go
    /// through the prompt and come back; anything else is refused with an explanation
    /// (a form post is never replayed silently).
    pub(super) fn mfa_needed(&self, req: &Request, step_up: Option<StepUpFactor>) -> Result<Response, Refusal> {
        let rd = match req.url.query() {
            Some(q) => format!("{}?{q}", req.url.path()),
            None => req.url.path().to_owned(),
        };
        if req.is_navigation() {
            let mut q = vec![("rd", rd.as_str())];
            match step_up {
                Some(StepUpFactor::Any) => q.push(("reason", "step_up")),
                Some(StepUpFactor::Passkey) => q.push(("reason", STEP_UP_PASSKEY)),
                None => {}
            }
            return Ok(self.no_store_redirect(&format!("{}/mfa?{}", self.prefix(), crate::http::query_encode(&q))));
        }
        Err(Refusal::MfaRequired { step_up: step_up.is_some() })
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
            (true, RouteId::MfaPasskey) => self.mfa_passkey_verify(cx, session).await,
            (false, RouteId::MfaPasskeyRegister) => self.passkey_register_page(cx, session, None).await,
            (true, RouteId::MfaPasskeyRegister) => self.passkey_register(cx, session).await,
            // Managing factors is for complete sessions only.
            (_, RouteId::MfaBackupCodes | RouteId::MfaPasskeys | RouteId::MfaPasskeyRemove)
                if matches!(session, Session::Waiting(_)) =>
            {
                Err(Refusal::MfaRequired { step_up: false })
            }
            (true, RouteId::MfaBackupCodes) => match session.into_complete() {
                Some(s) => self.mfa_regenerate_codes(cx, s).await,
                None => Err(Refusal::MfaRequired { step_up: false }),
            },
            (false, RouteId::MfaPasskeys) => match session.into_complete() {
                Some(s) => self.passkeys_page(cx, &s, None, 200).await,
                None => Err(Refusal::MfaRequired { step_up: false }),
            },
            (true, RouteId::MfaPasskeyRemove) => match session.into_complete() {
                Some(s) => self.passkey_remove(cx, s).await,
                None => Err(Refusal::MfaRequired { step_up: false }),
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

    fn prompt_lead(record: &MfaRecord, step_up: bool, passkeys: bool) -> String {
        let how = match (passkeys, record.has_totp()) {
            (true, true) => "Use your passkey, or enter the 6-digit code from your authenticator app.",
            (true, false) => "Use your passkey.",
            (false, _) => "Enter the 6-digit code from your authenticator app.",
        };
        let mut lead = if step_up {
            format!("This page needs a recent confirmation of your identity. {how}")
        } else {
            how.to_owned()
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
        let warning = Self::backup_warning(&record);
        self.prompt(cx, &session, &record, &rd, warning.as_deref().map(Notice::Info), 200).await
    }

    /// The prompt: a passkey first (a fresh challenge for this session), then a TOTP code,
    /// then a backup code — what the user has. A step-up that demands a passkey offers
    /// only that.
    async fn prompt(
        &self,
        cx: &Cx<'_>,
        session: &Session,
        record: &MfaRecord,
        rd: &str,
        notice: Option<Notice<'_>>,
        status: u16,
    ) -> Result<Response, Refusal> {
        let reason = cx.req.query("reason").or_else(|| cx.req.form_value("reason")).unwrap_or_default();
        let passkey_only = reason == STEP_UP_PASSKEY && cx.tenant.mfa.allows(MfaMethod::Passkey);
        let options = self.passkey_request_options(cx, session.id(), record).await?;
        let no_passkey = passkey_only && options.is_none();
        let lead = if no_passkey {
            "This page needs a passkey, and you have none yet. Add one under Passkeys after signing in.".to_owned()
        } else {
            Self::prompt_lead(record, !reason.is_empty(), options.is_some())
        };
        let mut r = pages::mfa_page(
            Brand { tenant: Some(cx.tenant), prefix: self.prefix() },
            &pages::MfaView {
                lead: &lead,
                notice,
                csrf: &self.csrf_for(cx.tenant, session.id()),
                rd,
                passkey_options: options.as_deref(),
                totp: record.has_totp() && !passkey_only,
                backup: !passkey_only,
                reason: &reason,
                then: if Self::then_add_passkey(cx) { THEN_ADD_PASSKEY } else { "" },
            },
        );
        r.status = status;
        Ok(r)
    }

    /// Whether the prompt goes on to add a passkey (after a fresh sign-in asked for that).
    fn then_add_passkey(cx: &Cx<'_>) -> bool {
        cx.req.query("then").or_else(|| cx.req.form_value("then")).as_deref() == Some(THEN_ADD_PASSKEY)
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
        let outcome = self.attempt(cx, session.record(), &mut record, check).await?;
        self.factor_outcome(cx, session, &record, &rd, outcome).await
    }

    /// What follows an attempt on the prompt: a verified factor completes the waiting session
    /// (or refreshes a step-up) and goes back; a refusal shows the prompt again.
    async fn factor_outcome(
        &self,
        cx: &Cx<'_>,
        session: Session,
        record: &MfaRecord,
        rd: &str,
        outcome: Result<Passed, AttemptRefused>,
    ) -> Result<Response, Refusal> {
        match outcome {
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
                if Self::then_add_passkey(cx) {
                    let q = crate::http::query_encode(&[("rd", rd)]);
                    return Ok(self.no_store_redirect(&format!("{}/mfa/passkeys/register?{q}", self.prefix())));
                }
                Ok(self.no_store_redirect(rd))
            }
            Err(AttemptRefused::Locked(until)) => Err(Self::lockout(until, cx.ports.now())),
            Err(AttemptRefused::Wrong(text)) => {
                self.prompt(cx, &session, record, rd, Some(Notice::Error(&text)), 401).await
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
}
