//! Adding a factor: the per-session enrolment secret, the enrolment page and its
//! confirmation, backup codes (issued and regenerated), and the admin reset.

use serde_json::json;

use super::super::context::Cx;
use super::super::state::{CompleteSession, Session};
use super::super::Gateway;
use super::attempt::AttemptRefused;
use super::*;
use crate::audit::AuditEvent;
use crate::config::Tenant;
use crate::coord;
use crate::crypto;
use crate::error::Refusal;
use crate::http::Response;
use crate::mfa::{self, MfaRecord, TotpParams};
use crate::pages::{self, Brand, EnrollView, Notice};
use crate::ports::Ports;
use crate::redirect::safe_return_path;
use crate::secret::Secret;
use crate::session::SessionId;

/// An enrolment in progress, stored under [`enrolment_key`].
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct PendingEnrolment {
    /// The secret, sealed with the user id and the session's hash as associated data.
    secret: String,
    params: TotpParams,
    created: u64,
}

impl Gateway {
    /// Whether this session may enrol a factor now; otherwise the answer to give. A waiting
    /// session may enrol the user's first factor (the first sign-in of a tenant that
    /// requires one); a complete session only within `mfa.fresh_sign_in` of a sign-in the
    /// IdP confirmed as fresh — a stolen session cookie cannot plant its own authenticator.
    /// `another`: the factor may be added beside those the user has (a passkey); a TOTP
    /// authenticator is the user's only one.
    pub(in crate::gateway) async fn enrolment_gate(
        &self,
        cx: &Cx<'_>,
        session: &Session,
        rd: &str,
        another: bool,
    ) -> Result<Option<Response>, Refusal> {
        let prefix = self.prefix();
        let record = session.record();
        let beside = another && matches!(session, Session::Complete(_));
        if !beside && self.has_factor(cx, &record.user_id).await? {
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
                // A page load (GET, or HEAD answered as GET) is sent to sign in again; a
                // confirmation without a fresh sign-in is refused.
                if cx.req.method == "POST" {
                    return Err(Refusal::FreshSignInNotConfirmed { provider: record.provider.clone() });
                }
                // After the fresh sign-in the gateway comes back to enrolment by itself.
                let reauth = if another { "passkey" } else { "1" };
                let login = format!(
                    "{prefix}/login?{}",
                    crate::http::query_encode(&[
                        ("provider", record.provider.as_str()),
                        ("reauth", reauth),
                        ("rd", rd)
                    ])
                );
                Ok(Some(self.no_store_redirect(&login)))
            }
        }
    }

    /// This session's enrolment secret: the one it was shown (until it expires), or a new
    /// one. Sealed with the user id and the session's hash, stored under the session.
    pub(in crate::gateway) async fn enrolment_secret(
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
    pub(in crate::gateway) async fn mfa_enroll_page(
        &self,
        cx: &Cx<'_>,
        session: Session,
        notice: Option<Notice<'_>>,
    ) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd_raw = cx.req.query("rd").or_else(|| cx.req.form_value("rd")).unwrap_or_default();
        let rd = safe_return_path(&rd_raw, prefix);
        if !cx.tenant.mfa.allows(crate::config::MfaMethod::Totp) {
            // Passkeys only: enrolment is a passkey's.
            let q = crate::http::query_encode(&[("rd", &rd)]);
            return Ok(self.no_store_redirect(&format!("{prefix}/mfa/passkeys/register?{q}")));
        }
        if let Some(r) = self.enrolment_gate(cx, &session, &rd, false).await? {
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
                passkey: cx.tenant.mfa.allows(crate::config::MfaMethod::Passkey),
            },
        ))
    }

    /// `POST {prefix}/mfa/enroll`: the first code of this session's enrolment secret turns
    /// the second factor on and shows the backup codes.
    pub(in crate::gateway) async fn mfa_enroll_confirm(
        &self,
        cx: &Cx<'_>,
        session: Session,
    ) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        if !cx.tenant.mfa.allows(crate::config::MfaMethod::Totp) {
            return Err(Refusal::NotFound);
        }
        if let Some(r) = self.enrolment_gate(cx, &session, &rd, false).await? {
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
                let shard = coord::user_shard(cx.factors(), &user_id);
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
                let _ = c.clear(&coord::user_shard(cx.factors(), &user_id), ENROLLED_KEY).await;
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
    pub(in crate::gateway) fn new_backup_codes(
        &self,
        ports: Ports<'_>,
        record: &mut MfaRecord,
    ) -> Result<Vec<String>, Refusal> {
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
    /// code or passkey assertion (through the attempt operation, a passkey against this
    /// session's single-use challenge); the old codes stop working. A request that offers
    /// no factor the user has is refused without counting as a wrong code.
    pub(in crate::gateway) async fn mfa_regenerate_codes(
        &self,
        cx: &Cx<'_>,
        session: CompleteSession,
    ) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        let user_id = session.record().user_id.clone();
        let Some(mut record) = self.load_mfa(cx, &user_id).await?.filter(|m| m.enabled) else {
            return Err(Refusal::NotFound);
        };
        let code = cx.req.form_value("code").filter(|c| !c.trim().is_empty());
        let credential = cx.req.form_value("credential").filter(|c| !c.trim().is_empty());
        let check = match (credential.as_deref(), code.as_deref()) {
            (Some(response), _) if !record.passkeys.is_empty() => {
                let challenge = self.take_challenge(cx, session.id(), super::passkey::GET).await?;
                Check::Passkey { response: response.as_bytes(), challenge }
            }
            (_, Some(code)) if record.has_totp() => Check::Totp(code),
            _ => {
                let how = match (record.passkeys.is_empty(), record.has_totp()) {
                    (false, true) => "a passkey or a code from your authenticator app",
                    (false, false) => "one of your passkeys",
                    (true, _) => "a code from your authenticator app",
                };
                let text = format!("New backup codes need confirmation with {how}.");
                return self.passkeys_page(cx, &session, Some(Notice::Error(&text)), 400).await;
            }
        };
        match self.attempt(cx, session.record(), &mut record, check).await? {
            Ok(Passed::Enrolment { .. }) => Err(Refusal::MfaRequired { step_up: false }),
            Ok(Passed::Factor(_)) => {
                let codes = self.new_backup_codes(cx.ports, &mut record)?;
                self.save_mfa(cx, &user_id, &record).await?;
                self.audit_mfa(cx, session.record(), AuditEvent::BackupCodesRegenerated, "ok");
                Ok(pages::backup_codes_page(Brand { tenant: Some(cx.tenant), prefix }, &codes, &rd))
            }
            Err(AttemptRefused::Locked(until)) => Err(Self::lockout(until, cx.ports.now())),
            Err(AttemptRefused::Wrong(text)) => self.passkeys_page(cx, &session, Some(Notice::Error(&text)), 400).await,
        }
    }

    /// Clears a user's second factor: secret, enabled flag and backup codes. The user enrols
    /// again at the next sign-in (when the tenant requires MFA) or whenever they choose.
    pub(in crate::gateway) async fn reset_mfa(&self, cx: &Cx<'_>, user_id: &str, actor: &str) -> Result<bool, Refusal> {
        let Some(mut record) = self.load_mfa(cx, user_id).await? else {
            return Ok(false);
        };
        record.reset();
        self.mfa_local.borrow_mut().forget(&mfa_key(cx.factors(), user_id));
        match cx.ports.coord() {
            Some(c) => {
                let shard = coord::user_shard(cx.factors(), user_id);
                c.clear(&shard, MFA_FAILURES_KEY).await?;
                c.clear(&shard, ENROLLED_KEY).await?;
            }
            None => cx.ports.kv.delete(&lock_key(cx.factors(), user_id)).await?,
        }
        self.save_mfa(cx, user_id, &record).await?;
        cx.audit(
            AuditEvent::MfaReset,
            // Filed where the factors live (a site's are its sign-in host's), naming the site.
            json!({"level": "warn", "tenant": cx.factors(), "via": (cx.factors() != cx.tenant.id).then_some(&cx.tenant.id),
                   "actor": actor, "user": user_id}),
        );
        Ok(true)
    }

    pub(in crate::gateway) fn totp_issuer(tenant: &Tenant) -> String {
        tenant.mfa.issuer.clone().unwrap_or_else(|| {
            if tenant.name.is_empty() {
                tenant.id.clone()
            } else {
                tenant.name.clone()
            }
        })
    }
}
