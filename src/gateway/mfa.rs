//! The TOTP second factor in the sign-in flow: the decision after the IdP, the prompt,
//! enrolment, backup codes, step-up, and the admin reset. The protocol pieces live in
//! [`crate::mfa`]; this module stores records and sessions and renders the pages.

use serde_json::json;

use super::{base_url, Gateway, Lookup};
use crate::config::Tenant;
use crate::coord;
use crate::crypto::{self, KeyWithId};
use crate::error::Refusal;
use crate::http::{Request, Response};
use crate::mfa::{self, FailureOutcome, MfaRecord, TotpError};
use crate::pages::{self, Brand, EnrollView, Notice};
use crate::policy;
use crate::ports::Ports;
use crate::redirect::safe_return_path;
use crate::session::{self, MfaState, SessionId, SessionRecord};

/// `amr` values that mean the IdP already did a second factor.
/// The coordinator's key for a user's wrong-code count and lock.
const MFA_FAILURES_KEY: &str = "mfa-failures";
/// How long a used TOTP step or backup code is remembered at the coordinator: longer than
/// the codes' acceptance window and than KV's propagation delay for the record.
const CODE_CLAIM_TTL_MS: u64 = 300_000;

const IDP_MFA_AMR: &[&str] = &["mfa", "otp", "hwk"];

pub(super) fn mfa_key(tenant: &str, user_id: &str) -> String {
    format!("mfa:{tenant}:{}", crypto::sha256_hex(user_id.as_bytes()))
}

fn backup_key(keys: &[KeyWithId], id: Option<&str>) -> Option<(String, [u8; 32])> {
    let key = match id {
        Some(id) => keys.iter().find(|k| k.id == id)?,
        None => keys.first()?,
    };
    Some((key.id.clone(), key.derive("backup-codes")))
}

fn add_amr(record: &mut SessionRecord, values: &[&str]) {
    for v in values {
        if !record.amr.iter().any(|a| a == v) {
            record.amr.push((*v).to_owned());
        }
    }
}

impl Gateway {
    pub(super) async fn load_mfa(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
        user_id: &str,
    ) -> Result<Option<MfaRecord>, Refusal> {
        match ports.kv.get(&mfa_key(&tenant.id, user_id)).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_str(&raw)
                .map(Some)
                .map_err(|e| Refusal::Storage(crate::ports::KvError(format!("MFA record unreadable: {e}")))),
        }
    }

    async fn save_mfa(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
        user_id: &str,
        record: &MfaRecord,
    ) -> Result<(), Refusal> {
        let value = serde_json::to_string(record).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        ports.kv.put(&mfa_key(&tenant.id, user_id), &value, None).await?;
        Ok(())
    }

    /// After the IdP signed the person in: decide whether a second factor is due, and
    /// where the browser goes next.
    pub(super) async fn decide_mfa(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
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
        let enrolled = self.load_mfa(ports, tenant, &record.user_id).await?.is_some_and(|m| m.enabled);
        if enrolled {
            record.mfa = MfaState::Pending;
            Ok(format!("{prefix}/mfa?{rd}"))
        } else if tenant.mfa.required {
            record.mfa = MfaState::Pending;
            Ok(format!("{prefix}/mfa/enroll?{rd}"))
        } else {
            record.mfa = MfaState::NotRequired;
            Ok(return_to.to_owned())
        }
    }

    /// Whether the request needs a fresher second factor than the session has.
    pub(super) fn step_up_due(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
        request: &crate::path::Decided,
        record: &SessionRecord,
    ) -> bool {
        let now = ports.now();
        tenant
            .mfa
            .step_up
            .iter()
            .filter(|r| request.methods.iter().any(|m| policy::rule_matches(&r.as_path_rule(), m, &request.path)))
            .any(|r| record.mfa_at.is_none_or(|at| now > at + r.max_age))
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
            let mut r = Response::redirect(&format!("{}/mfa?{}", self.prefix(), crate::http::query_encode(&q)));
            r.headers.set("cache-control", "no-store");
            return Ok(r);
        }
        Err(Refusal::MfaRequired { step_up })
    }

    /// The session the MFA pages act for (any MFA state), or a redirect to sign in.
    async fn mfa_session(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
    ) -> Result<Result<(SessionId, SessionRecord), Response>, Refusal> {
        match self.lookup_session(ports, req, tenant).await? {
            Lookup::Active(id, record) => Ok(Ok((id, *record))),
            Lookup::Ended | Lookup::NoSession { .. } => {
                let rd = safe_return_path(&req.query("rd").unwrap_or_default(), self.prefix());
                let login = format!("{}/login?{}", self.prefix(), crate::http::query_encode(&[("rd", &rd)]));
                let mut r = Response::redirect(&login);
                r.headers.set("cache-control", "no-store");
                Ok(Err(r))
            }
        }
    }

    /// A posted MFA form: its session (CSRF-checked) and its safe return path.
    #[allow(clippy::type_complexity)]
    async fn mfa_form(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
    ) -> Result<Result<(SessionId, SessionRecord, String), Response>, Refusal> {
        let (id, session) = match self.mfa_session(ports, req, tenant).await? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        self.check_csrf(req, tenant, &id)?;
        let rd = safe_return_path(&req.form_value("rd").unwrap_or_default(), self.prefix());
        Ok(Ok((id, session, rd)))
    }

    /// The user's TOTP secret, opened from the record (sealed and bound to the user id).
    fn totp_secret(&self, record: &MfaRecord, user_id: &str) -> Result<crate::secret::Secret, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        record
            .secret
            .as_deref()
            .and_then(|s| mfa::open_secret(&loaded.encryption_keys, user_id, s).ok())
            .ok_or_else(|| Refusal::Storage(crate::ports::KvError("MFA secret cannot be opened".into())))
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

    fn lockout_response(&self, tenant: &Tenant, until: u64, now: u64) -> Refusal {
        let _ = tenant;
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

    /// `GET {prefix}/mfa`: the prompt.
    pub(super) async fn mfa_prompt(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
    ) -> Result<Response, Refusal> {
        let (id, _session) = match self.mfa_session(ports, req, tenant).await? {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let prefix = self.prefix();
        let rd = safe_return_path(&req.query("rd").unwrap_or_default(), prefix);
        let Some(record) = self.load_mfa(ports, tenant, &_session.user_id).await?.filter(|m| m.enabled) else {
            let mut r =
                Response::redirect(&format!("{prefix}/mfa/enroll?{}", crate::http::query_encode(&[("rd", &rd)])));
            r.headers.set("cache-control", "no-store");
            return Ok(r);
        };
        let now = ports.now();
        if let Some(until) = self.mfa_locked(ports, tenant, &_session.user_id, &record).await? {
            return Err(self.lockout_response(tenant, until, now));
        }
        let step_up = req.query("reason").as_deref() == Some("step_up");
        let warning = Self::backup_warning(&record);
        Ok(pages::mfa_page(
            Brand { tenant: Some(tenant), prefix },
            &Self::prompt_lead(&record, step_up),
            warning.as_deref().map(Notice::Info),
            &self.csrf_for(tenant, &id),
            &rd,
        ))
    }

    /// `POST {prefix}/mfa`: a TOTP code or a backup code.
    pub(super) async fn mfa_verify(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
    ) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let (id, mut session, rd) = match self.mfa_form(ports, req, tenant).await? {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let prefix = self.prefix();
        let Some(mut record) = self.load_mfa(ports, tenant, &session.user_id).await?.filter(|m| m.enabled) else {
            return Ok(Response::redirect(&format!(
                "{prefix}/mfa/enroll?{}",
                crate::http::query_encode(&[("rd", &rd)])
            )));
        };
        let now = ports.now();
        // With a coordinator, the failure count, the lock and each used code live there:
        // atomic, and the same in every location (KV's copy can lag by up to 60 s).
        let coord = ports.coord().map(|c| (c, coord::user_shard(&tenant.id, &session.user_id)));
        if let Some(until) = self.mfa_locked(ports, tenant, &session.user_id, &record).await? {
            self.audit_mfa(ports, tenant, &session, "mfa_failed", "locked out");
            return Err(self.lockout_response(tenant, until, now));
        }
        let outcome: Result<&str, Notice<'static>> = if let Some(code) =
            req.form_value("backup_code").filter(|c| !c.trim().is_empty())
        {
            let key = backup_key(&loaded.encryption_keys, record.backup_key.as_deref());
            let found = key.and_then(|(_, k)| record.find_backup_code(&k, &code));
            let claimed = match (&coord, found.and_then(|i| record.backup_hashes.get(i).cloned().flatten())) {
                (Some((c, shard)), Some(hash)) => {
                    let claim_key = format!("backup:{}", &crypto::sha256_hex(hash.as_bytes())[..32]);
                    c.claim(shard, &claim_key, CODE_CLAIM_TTL_MS).await?
                }
                _ => true,
            };
            match found {
                Some(i) if claimed && record.use_backup(i) => Ok("backup_code_used"),
                _ => Err(Notice::Error("That backup code is not valid (each code works once).")),
            }
        } else {
            let code = req.form_value("code").unwrap_or_default();
            let secret = self.totp_secret(&record, &session.user_id)?;
            match mfa::verify_totp(secret.expose(), &code, now, &record.params, record.last_step) {
                Ok(step) => {
                    let first = match &coord {
                        Some((c, shard)) => c.claim(shard, &format!("totp:{step}"), CODE_CLAIM_TTL_MS).await?,
                        None => true,
                    };
                    if first {
                        record.record_success(step);
                        Ok("mfa_verified")
                    } else {
                        Err(Notice::Error("That code was already used. Wait for the next code and enter it."))
                    }
                }
                Err(TotpError::Replayed) => {
                    Err(Notice::Error("That code was already used. Wait for the next code and enter it."))
                }
                Err(TotpError::Malformed) => Err(Notice::Error("Enter the digits shown in your authenticator app.")),
                Err(_) => Err(Notice::Error("That code is not correct. Check the time on your device and try again.")),
            }
        };
        match outcome {
            Ok(event) => {
                self.save_mfa(ports, tenant, &session.user_id, &record).await?;
                // A right code clears the count of wrong ones, as the KV record does.
                if let Some((c, shard)) = &coord {
                    c.clear(shard, MFA_FAILURES_KEY).await?;
                }
                session.mfa = MfaState::Verified;
                session.mfa_at = Some(now);
                add_amr(&mut session, &["mfa", "otp"]);
                self.save_session(ports, tenant, &id, &session).await?;
                self.audit_mfa(ports, tenant, &session, event, "ok");
                let mut r = Response::redirect(&rd);
                r.headers.set("cache-control", "no-store");
                Ok(r)
            }
            Err(notice) => {
                let policy = tenant.mfa.lockout_policy();
                let counted = match &coord {
                    Some((c, shard)) => {
                        let (count, locked) = c
                            .fail(
                                shard,
                                MFA_FAILURES_KEY,
                                policy.window * 1000,
                                u64::from(policy.max_failures),
                                policy.lockout * 1000,
                            )
                            .await?;
                        match locked {
                            Some(ms) => FailureOutcome::LockedUntil(ms / 1000),
                            None => FailureOutcome::Counted {
                                remaining: policy.max_failures.saturating_sub(u32::try_from(count).unwrap_or(u32::MAX)),
                            },
                        }
                    }
                    None => record.record_failure(now, &policy),
                };
                let (text, locked) = match counted {
                    FailureOutcome::LockedUntil(until) => (String::new(), Some(until)),
                    FailureOutcome::Counted { remaining } => {
                        let base = match notice {
                            Notice::Error(t) | Notice::Info(t) => t,
                        };
                        (format!("{base} {remaining} attempt{} left.", if remaining == 1 { "" } else { "s" }), None)
                    }
                };
                if coord.is_none() {
                    self.save_mfa(ports, tenant, &session.user_id, &record).await?;
                }
                self.audit_mfa(ports, tenant, &session, "mfa_failed", "wrong code");
                if let Some(until) = locked {
                    self.audit_mfa(ports, tenant, &session, "mfa_locked", &format!("locked until {until}"));
                    return Err(self.lockout_response(tenant, until, now));
                }
                let mut r = pages::mfa_page(
                    Brand { tenant: Some(tenant), prefix },
                    &Self::prompt_lead(&record, false),
                    Some(Notice::Error(&text)),
                    &self.csrf_for(tenant, &id),
                    &rd,
                );
                r.status = 401;
                Ok(r)
            }
        }
    }

    fn audit_mfa(&self, ports: Ports<'_>, tenant: &Tenant, session: &SessionRecord, event: &str, outcome: &str) {
        self.log(
            ports,
            json!({"event": event, "tenant": tenant.id, "user": session.user_id, "provider": session.provider, "outcome": outcome,
                   "level": if event == "mfa_locked" || event == "mfa_failed" { "warn" } else { "info" }}),
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

    /// `GET {prefix}/mfa/enroll`: a pending secret (kept across reloads) and its QR code.
    pub(super) async fn mfa_enroll_page(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
        notice: Option<Notice<'_>>,
    ) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let (id, session) = match self.mfa_session(ports, req, tenant).await? {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let prefix = self.prefix();
        let rd_raw = req.query("rd").or_else(|| req.form_value("rd")).unwrap_or_default();
        let rd = safe_return_path(&rd_raw, prefix);
        let existing = self.load_mfa(ports, tenant, &session.user_id).await?;
        if existing.as_ref().is_some_and(|m| m.enabled) {
            // Enrolled already: changing the device goes through an admin reset.
            let mut r = Response::redirect(&format!("{prefix}/mfa?{}", crate::http::query_encode(&[("rd", &rd)])));
            r.headers.set("cache-control", "no-store");
            return Ok(r);
        }
        let params = tenant.mfa.params();
        let (record, secret) = match existing.filter(|m| m.secret.is_some() && m.params == params) {
            Some(m) => {
                let secret = self.totp_secret(&m, &session.user_id)?;
                (m, secret)
            }
            None => {
                let secret = mfa::secret_from_random(ports.random::<20>());
                let sealed =
                    mfa::seal_secret(&loaded.encryption_keys, &session.user_id, secret.expose(), ports.random::<12>())
                        .ok_or(Refusal::ConfigInvalid)?;
                let record = MfaRecord::pending_enrolment(sealed, params, ports.now());
                self.save_mfa(ports, tenant, &session.user_id, &record).await?;
                (record, secret)
            }
        };
        let b32 = mfa::base32_encode(secret.expose());
        let account = session.email.clone().unwrap_or_else(|| session.user.clone());
        let uri = mfa::otpauth_uri(&Self::totp_issuer(tenant), &account, &b32, &record.params);
        let qr = mfa::qr_svg(&uri).unwrap_or_default();
        let lead = if tenant.mfa.required && session.mfa == MfaState::Pending {
            "This site requires two-step verification. Set it up now to continue."
        } else {
            "Add a second step to your sign-in with an authenticator app."
        };
        Ok(pages::enroll_page(
            Brand { tenant: Some(tenant), prefix },
            &EnrollView {
                lead,
                notice,
                qr_svg: &qr,
                secret_groups: &mfa::format_groups(&b32),
                uri: &uri,
                csrf: &self.csrf_for(tenant, &id),
                rd: &rd,
            },
        ))
    }

    /// `POST {prefix}/mfa/enroll`: the first code turns MFA on and shows the backup codes.
    pub(super) async fn mfa_enroll_confirm(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
    ) -> Result<Response, Refusal> {
        let (id, mut session, rd) = match self.mfa_form(ports, req, tenant).await? {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let prefix = self.prefix();
        let Some(mut record) =
            self.load_mfa(ports, tenant, &session.user_id).await?.filter(|m| !m.enabled && m.secret.is_some())
        else {
            return Ok(Response::redirect(&format!(
                "{prefix}/mfa/enroll?{}",
                crate::http::query_encode(&[("rd", &rd)])
            )));
        };
        let secret = self.totp_secret(&record, &session.user_id)?;
        let now = ports.now();
        let code = req.form_value("code").unwrap_or_default();
        let step = match mfa::verify_totp(secret.expose(), &code, now, &record.params, None) {
            Ok(step) => step,
            Err(_) => {
                let mut r = self
                    .mfa_enroll_page(
                        ports,
                        req,
                        tenant,
                        Some(Notice::Error("That code is not correct. Check the time on your device and try again.")),
                    )
                    .await?;
                r.status = 401;
                return Ok(r);
            }
        };
        let codes = self.new_backup_codes(ports, &mut record)?;
        let hashes = std::mem::take(&mut record.backup_hashes).into_iter().flatten().collect();
        record.enable(hashes, step, now);
        self.save_mfa(ports, tenant, &session.user_id, &record).await?;
        session.mfa = MfaState::Verified;
        session.mfa_at = Some(now);
        add_amr(&mut session, &["mfa", "otp"]);
        self.save_session(ports, tenant, &id, &session).await?;
        self.audit_mfa(ports, tenant, &session, "mfa_enrolled", "ok");
        Ok(pages::backup_codes_page(Brand { tenant: Some(tenant), prefix }, &codes, &rd))
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

    /// `POST {prefix}/mfa/backup-codes`: new codes for a fresh TOTP code; the old ones stop
    /// working.
    pub(super) async fn mfa_regenerate_codes(
        &self,
        ports: Ports<'_>,
        req: &Request,
        tenant: &Tenant,
    ) -> Result<Response, Refusal> {
        let (_, session, rd) = match self.mfa_form(ports, req, tenant).await? {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        let prefix = self.prefix();
        let Some(mut record) = self.load_mfa(ports, tenant, &session.user_id).await?.filter(|m| m.enabled) else {
            return Err(Refusal::NotFound);
        };
        let now = ports.now();
        if let Some(until) = self.mfa_locked(ports, tenant, &session.user_id, &record).await? {
            return Err(self.lockout_response(tenant, until, now));
        }
        let secret = self.totp_secret(&record, &session.user_id)?;
        match mfa::verify_totp(
            secret.expose(),
            &req.form_value("code").unwrap_or_default(),
            now,
            &record.params,
            record.last_step,
        ) {
            Ok(step) => {
                record.record_success(step);
                let codes = self.new_backup_codes(ports, &mut record)?;
                self.save_mfa(ports, tenant, &session.user_id, &record).await?;
                self.audit_mfa(ports, tenant, &session, "backup_codes_regenerated", "ok");
                Ok(pages::backup_codes_page(Brand { tenant: Some(tenant), prefix }, &codes, &rd))
            }
            Err(_) => {
                if let FailureOutcome::LockedUntil(until) = record.record_failure(now, &tenant.mfa.lockout_policy()) {
                    self.save_mfa(ports, tenant, &session.user_id, &record).await?;
                    self.audit_mfa(ports, tenant, &session, "mfa_locked", &format!("locked until {until}"));
                    return Err(self.lockout_response(tenant, until, now));
                }
                self.save_mfa(ports, tenant, &session.user_id, &record).await?;
                self.audit_mfa(ports, tenant, &session, "mfa_failed", "wrong code");
                Err(Refusal::BadRequest("wrong code for backup code regeneration".into()))
            }
        }
    }

    /// Clears a user's second factor: secret, enabled flag and backup codes. The user enrols
    /// again at the next sign-in (when the tenant requires MFA) or whenever they choose.
    /// Until when the user's second factor is locked (unix seconds), from the coordinator
    /// when there is one, else from the KV record.
    pub(super) async fn mfa_locked(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
        user_id: &str,
        record: &MfaRecord,
    ) -> Result<Option<u64>, Refusal> {
        match ports.coord() {
            Some(c) => {
                Ok(c.locked(&coord::user_shard(&tenant.id, user_id), MFA_FAILURES_KEY).await?.map(|ms| ms / 1000))
            }
            None => Ok(record.is_locked(ports.now())),
        }
    }

    pub(super) async fn reset_mfa(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
        user_id: &str,
        actor: &str,
    ) -> Result<bool, Refusal> {
        let Some(mut record) = self.load_mfa(ports, tenant, user_id).await? else {
            return Ok(false);
        };
        record.reset();
        if let Some(c) = ports.coord() {
            c.clear(&coord::user_shard(&tenant.id, user_id), MFA_FAILURES_KEY).await?;
        }
        self.save_mfa(ports, tenant, user_id, &record).await?;
        self.log(
            ports,
            json!({"level": "warn", "event": "mfa_reset", "tenant": tenant.id, "actor": actor, "user": user_id}),
        );
        Ok(true)
    }
}
