//! Passkeys in the sign-in flow: the challenge each ceremony is given, the assertion the
//! attempt operation checks, registration (first factor or another passkey), the list, and
//! removal. The protocol is in [`crate::webauthn`].
//!
//! Every challenge is single-use. It is stored per session and ceremony under
//! [`crate::keys::passkey_challenge`] with the challenge's lifetime as TTL, and deleted
//! when a response comes back; with the coordination object bound it is also claimed there
//! ([`crate::keys::webauthn_challenge`]), so a response is accepted once everywhere. With
//! KV alone the deletion may take up to KV's propagation delay to reach other locations: a
//! response captured from this session could be replayed there within that delay and the
//! challenge's five minutes, by the holder of the same session cookie only, and the
//! signature counter refuses it when the authenticator keeps one.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::super::context::Cx;
use super::super::state::{CompleteSession, Session};
use super::super::Gateway;
use super::*;
use crate::audit::AuditEvent;
use crate::config::MfaMethod;
use crate::coord;
use crate::crypto::{b64url, b64url_decode};
use crate::error::Refusal;
use crate::http::Response;
use crate::mfa::MfaRecord;
use crate::pages::{self, Brand, Notice, PasskeyRegisterView, PasskeyRow};
use crate::redirect::safe_return_path;
use crate::session::SessionId;
use crate::webauthn::options::{creation_options, request_options, CreationParams};
use crate::webauthn::{
    verify_authentication, verify_registration, AuthenticationChallenge, AuthenticationExpectations, CoseAlg,
    RegistrationChallenge, RegistrationExpectations, WebauthnError, CHALLENGE_BYTES, CHALLENGE_TTL,
};

/// What a passkey stands for in `amr` (RFC 8176): a hardware-bound key, proof of possession,
/// and the user's verification by the authenticator when it was performed.
const PASSKEY_AMR: &[&str] = &["mfa", "hwk", "pop"];
const PASSKEY_UV_AMR: &[&str] = &["mfa", "hwk", "user", "pop"];

pub(super) const GET: &str = "get";
const CREATE: &str = "create";
/// Longest passkey name kept (characters).
const MAX_NAME: usize = 64;

const EXPIRED: &str = "That passkey request expired or was already used. Try again.";

impl Gateway {
    /// The relying party id: the tenant's, or the host of the request (without a port).
    fn rp_id(cx: &Cx<'_>) -> String {
        match &cx.tenant.mfa.passkey.rp_id {
            Some(rp) => rp.clone(),
            None => {
                let host = cx.req.host();
                host.split(':').next().unwrap_or_default().to_owned()
            }
        }
    }

    async fn put_challenge<T: Serialize>(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        ceremony: &str,
        value: &T,
    ) -> Result<(), Refusal> {
        let raw = serde_json::to_string(value).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let key = crate::keys::passkey_challenge(&cx.tenant.id, &id.hash(), ceremony);
        cx.ports.kv.put(&key, &raw, Some(CHALLENGE_TTL)).await?;
        Ok(())
    }

    /// The session's challenge for a ceremony, deleted as it is read.
    pub(super) async fn take_challenge<T: DeserializeOwned>(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        ceremony: &str,
    ) -> Result<Option<T>, Refusal> {
        let key = crate::keys::passkey_challenge(&cx.tenant.id, &id.hash(), ceremony);
        let Some(raw) = cx.ports.kv.get(&key).await? else {
            return Ok(None);
        };
        cx.ports.kv.delete(&key).await?;
        Ok(serde_json::from_str(&raw).ok())
    }

    /// Claims a challenge at the coordination object; `false` when it was used already.
    async fn claim_challenge(&self, cx: &Cx<'_>, user_id: &str, challenge: &[u8]) -> Result<bool, Refusal> {
        match cx.ports.coord() {
            Some(c) => {
                let shard = coord::user_shard(cx.factors(), user_id);
                Ok(c.claim(&shard, &crate::keys::webauthn_challenge(challenge), CHALLENGE_TTL.saturating_mul(1000))
                    .await?)
            }
            None => Ok(true),
        }
    }

    fn audit_passkey_failure(&self, cx: &Cx<'_>, user_id: &str, ceremony: &str, error: &WebauthnError, body: &[u8]) {
        let credential = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(|i| i.chars().take(128).collect::<String>()));
        if let WebauthnError::CounterWentBackwards { stored, received } = error {
            cx.audit(
                AuditEvent::PasskeyCounterRegressed,
                json!({"level": "warn", "user": user_id, "credential": credential, "stored": stored, "received": received}),
            );
        }
        cx.audit(
            AuditEvent::PasskeyFailed,
            json!({"level": "warn", "user": user_id, "ceremony": ceremony, "reason": error.code(), "credential": credential}),
        );
    }

    /// The request options for the prompt, with a fresh challenge stored for this session;
    /// `None` when the user has no passkey. A `HEAD` stores none: it spends and writes
    /// nothing, and its body is never seen.
    pub(super) async fn passkey_request_options(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        record: &MfaRecord,
    ) -> Result<Option<String>, Refusal> {
        if record.passkeys.is_empty() {
            return Ok(None);
        }
        let challenge = AuthenticationChallenge::issue(cx.ports.random::<CHALLENGE_BYTES>(), cx.ports.now());
        if cx.req.method != "HEAD" {
            self.put_challenge(cx, id, GET, &challenge).await?;
        }
        let options =
            request_options(&Self::rp_id(cx), &challenge, &record.passkeys, cx.tenant.mfa.passkey.user_verification);
        Ok(Some(options.to_string()))
    }

    /// Step 3 of the attempt operation for a passkey: the assertion verified against this
    /// session's challenge, the user's passkeys, the request's origin and the tenant's RP
    /// id; the challenge claimed once; the passkey's counter and last use recorded in
    /// `record` (saved by the attempt). The `amr` to add, or the sentence to show.
    pub(super) async fn passkey_assertion(
        &self,
        cx: &Cx<'_>,
        session: &SessionRecord,
        record: &mut MfaRecord,
        response: &[u8],
        challenge: Option<&AuthenticationChallenge>,
    ) -> Result<Result<&'static [&'static str], &'static str>, Refusal> {
        let user_id = session.user_id.as_str();
        let Some(challenge) = challenge else {
            cx.audit(
                AuditEvent::PasskeyFailed,
                json!({"level": "warn", "user": user_id, "ceremony": GET, "reason": "no_challenge"}),
            );
            return Ok(Err(EXPIRED));
        };
        let now = cx.ports.now();
        let origin = base_url(cx.req);
        let rp_id = Self::rp_id(cx);
        let handle = record.webauthn_user.as_deref().and_then(b64url_decode);
        let exp = AuthenticationExpectations {
            challenge,
            origin: &origin,
            rp_id: &rp_id,
            user_verification: cx.tenant.mfa.passkey.user_verification,
            algorithms: &CoseAlg::ALL,
            passkeys: &record.passkeys,
            user_handle: handle.as_deref(),
            now,
        };
        let verified = match verify_authentication(response, &exp, cx.ports.verifier).await {
            Ok(v) => v,
            Err(e) => {
                self.audit_passkey_failure(cx, user_id, GET, &e, response);
                return Ok(Err(match e {
                    WebauthnError::CounterWentBackwards { .. } => {
                        "This passkey was refused: its signature counter went backwards, a sign it may have been copied."
                    }
                    WebauthnError::ChallengeExpired => EXPIRED,
                    WebauthnError::CredentialNotAllowed => "That passkey is not registered for your account.",
                    _ => "The passkey could not be verified.",
                }));
            }
        };
        if !self.claim_challenge(cx, user_id, challenge.challenge()).await? {
            cx.audit(
                AuditEvent::PasskeyFailed,
                json!({"level": "warn", "user": user_id, "ceremony": GET, "reason": "challenge_reused"}),
            );
            return Ok(Err(EXPIRED));
        }
        for p in &mut record.passkeys {
            p.record_use(&verified, now);
        }
        Ok(Ok(if verified.user_verified() { PASSKEY_UV_AMR } else { PASSKEY_AMR }))
    }

    /// `POST {prefix}/mfa/passkey`: a passkey assertion, through the attempt operation like
    /// every code (same lock, same audit); completes a waiting session or refreshes a step-up.
    pub(super) async fn mfa_passkey_verify(&self, cx: &Cx<'_>, session: Session) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        let Some(mut record) = self.load_mfa(cx, &session.record().user_id).await?.filter(|m| m.enabled) else {
            return Ok(
                self.no_store_redirect(&format!("{prefix}/mfa/enroll?{}", crate::http::query_encode(&[("rd", &rd)])))
            );
        };
        let challenge = self.take_challenge::<AuthenticationChallenge>(cx, session.id(), GET).await?;
        let response = cx.req.form_value("credential").unwrap_or_default();
        let check = Check::Passkey { response: response.as_bytes(), challenge };
        let outcome = self.attempt(cx, session.record(), &mut record, check).await?;
        self.factor_outcome(cx, session, &record, &rd, outcome).await
    }

    /// `GET {prefix}/mfa/passkeys/register`: the creation options, with a fresh challenge for
    /// this session. The same gate as TOTP enrolment, except that a complete session may
    /// add a passkey beside the factors it has (after a fresh IdP sign-in).
    pub(super) async fn passkey_register_page(
        &self,
        cx: &Cx<'_>,
        session: Session,
        notice: Option<Notice<'_>>,
    ) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.query("rd").or_else(|| cx.req.form_value("rd")).unwrap_or_default(), prefix);
        if !cx.tenant.mfa.allows(MfaMethod::Passkey) {
            return Err(Refusal::NotFound);
        }
        if let Some(r) = self.enrolment_gate(cx, &session, &rd, true).await? {
            return Ok(r);
        }
        let record = session.record();
        let mfa = self.load_mfa(cx, &record.user_id).await?.unwrap_or_default();
        let handle =
            mfa.webauthn_user.as_deref().and_then(b64url_decode).unwrap_or_else(|| cx.ports.random::<32>().to_vec());
        let challenge = RegistrationChallenge::issue(cx.ports.random::<CHALLENGE_BYTES>(), &handle, cx.ports.now());
        self.put_challenge(cx, session.id(), CREATE, &challenge).await?;
        let account = record.email.clone().unwrap_or_else(|| record.user.clone());
        let display = record.name.clone().unwrap_or_else(|| account.clone());
        let settings = &cx.tenant.mfa.passkey;
        let options = creation_options(&CreationParams {
            rp_id: &Self::rp_id(cx),
            rp_name: &Self::totp_issuer(cx.tenant),
            user_name: &account,
            user_display_name: &display,
            challenge: &challenge,
            algorithms: &CoseAlg::ALL,
            existing: &mfa.passkeys,
            user_verification: settings.user_verification,
            resident_key: settings.resident_key,
            attestation: settings.attestation,
        });
        let lead = match session {
            Session::Waiting(_) => {
                "This site requires two-step verification. Create a passkey to continue: your device asks for its screen lock or a security key."
            }
            Session::Complete(_) => "Add a passkey: your device asks for its screen lock or a security key.",
        };
        let name = format!("Passkey {}", mfa.passkeys.len() + 1);
        Ok(pages::passkey_register_page(
            Brand { tenant: Some(cx.tenant), prefix },
            &PasskeyRegisterView {
                lead,
                notice,
                options: &options.to_string(),
                name: &name,
                csrf: &self.csrf_for(cx.tenant, session.id()),
                rd: &rd,
                totp: cx.tenant.mfa.allows(MfaMethod::Totp) && !mfa.enabled,
            },
        ))
    }

    async fn register_refused(&self, cx: &Cx<'_>, session: Session, text: &str) -> Result<Response, Refusal> {
        let mut r = self.passkey_register_page(cx, session, Some(Notice::Error(text))).await?;
        r.status = 400;
        Ok(r)
    }

    /// `POST {prefix}/mfa/passkeys/register`: the new credential, verified (§7.1) against
    /// this session's challenge. As the first factor it turns the second factor on and shows
    /// backup codes; either way the user's other sessions end.
    pub(super) async fn passkey_register(&self, cx: &Cx<'_>, session: Session) -> Result<Response, Refusal> {
        let prefix = self.prefix();
        let rd = safe_return_path(&cx.req.form_value("rd").unwrap_or_default(), prefix);
        if !cx.tenant.mfa.allows(MfaMethod::Passkey) {
            return Err(Refusal::NotFound);
        }
        if let Some(r) = self.enrolment_gate(cx, &session, &rd, true).await? {
            return Ok(r);
        }
        let user_id = session.record().user_id.clone();
        let mut record = self.load_mfa(cx, &user_id).await?.unwrap_or_default();
        let Some(challenge) = self.take_challenge::<RegistrationChallenge>(cx, session.id(), CREATE).await? else {
            return self.register_refused(cx, session, EXPIRED).await;
        };
        let now = cx.ports.now();
        let settings = &cx.tenant.mfa.passkey;
        let origin = base_url(cx.req);
        let rp_id = Self::rp_id(cx);
        let exp = RegistrationExpectations {
            challenge: &challenge,
            origin: &origin,
            rp_id: &rp_id,
            user_verification: settings.user_verification,
            algorithms: &CoseAlg::ALL,
            attestation: settings.attestation,
            existing: &record.passkeys,
            now,
        };
        let response = cx.req.form_value("credential").unwrap_or_default();
        let verified = match verify_registration(response.as_bytes(), &exp, cx.ports.verifier).await {
            Ok(v) => v,
            Err(e) => {
                self.audit_passkey_failure(cx, &user_id, CREATE, &e, response.as_bytes());
                let text = match e {
                    WebauthnError::ChallengeExpired => EXPIRED,
                    WebauthnError::CredentialAlreadyRegistered => "That passkey is registered already.",
                    _ => "The passkey could not be registered. Try again, or use another authenticator.",
                };
                return self.register_refused(cx, session, text).await;
            }
        };
        if !self.claim_challenge(cx, &user_id, challenge.challenge()).await? {
            return self.register_refused(cx, session, EXPIRED).await;
        }
        let first = !record.enabled;
        // One first enrolment per user, as for TOTP.
        if first {
            let already = match cx.ports.coord() {
                Some(c) => {
                    let shard = coord::user_shard(cx.factors(), &user_id);
                    !c.claim(&shard, ENROLLED_KEY, ENROLMENT_TTL.saturating_mul(1000)).await?
                }
                None => false,
            };
            if already {
                return Ok(
                    self.no_store_redirect(&format!("{prefix}/mfa?{}", crate::http::query_encode(&[("rd", &rd)])))
                );
            }
        }
        let name = passkey_name(&cx.req.form_value("name").unwrap_or_default(), record.passkeys.len() + 1);
        if record.webauthn_user.is_none() {
            record.webauthn_user = Some(b64url(challenge.user_handle()));
        }
        let passkey = verified.into_passkey(&name, now);
        let credential = passkey.id.clone();
        record.passkeys.push(passkey);
        let codes = if first {
            let codes = self.new_backup_codes(cx.ports, &mut record)?;
            let hashes = record.backup_hashes.iter().flatten().cloned().collect();
            record.enable_passkey(hashes, now);
            Some(codes)
        } else {
            None
        };
        if let Err(e) = self.save_mfa(cx, &user_id, &record).await {
            if let (true, Some(c)) = (first, cx.ports.coord()) {
                let _ = c.clear(&coord::user_shard(cx.factors(), &user_id), ENROLLED_KEY).await;
            }
            return Err(e);
        }
        // As for TOTP: sessions that never passed this factor end.
        self.revoke_other_sessions(cx, &user_id, session.id(), "a passkey was added").await?;
        cx.audit(AuditEvent::PasskeyRegistered, json!({"user": user_id, "name": name, "credential": credential}));
        let audited = match session {
            Session::Waiting(w) => {
                let proof = EnrolmentProof { user_id: user_id.clone(), amr: PASSKEY_AMR };
                let complete = w.enrolled(proof).ok_or(Refusal::MfaRequired { step_up: false })?;
                if !self.update_session(cx, complete.id(), complete.record()).await? {
                    return Ok(self.unauthenticated(cx.req, cx.tenant, true));
                }
                complete.into_parts().1
            }
            Session::Complete(c) => c.into_parts().1,
        };
        match codes {
            Some(codes) => {
                self.audit_mfa(cx, &audited, AuditEvent::MfaEnrolled, "ok");
                Ok(pages::backup_codes_page(Brand { tenant: Some(cx.tenant), prefix }, &codes, &rd))
            }
            None => Ok(self.no_store_redirect(&format!("{prefix}/mfa/passkeys"))),
        }
    }

    /// `GET {prefix}/mfa/passkeys`: the user's passkeys, named, with their dates.
    pub(super) async fn passkeys_page(
        &self,
        cx: &Cx<'_>,
        session: &CompleteSession,
        notice: Option<Notice<'_>>,
        status: u16,
    ) -> Result<Response, Refusal> {
        let record = self.load_mfa(cx, &session.record().user_id).await?.unwrap_or_default();
        let rows: Vec<PasskeyRow<'_>> = record
            .passkeys
            .iter()
            .map(|p| PasskeyRow { id: &p.id, name: &p.name, created: p.created, last_used: p.last_used })
            .collect();
        // New backup codes are offered with what the user has (a passkey: a fresh challenge).
        let options =
            if record.enabled { self.passkey_request_options(cx, session.id(), &record).await? } else { None };
        let mut r = pages::passkeys_page(
            Brand { tenant: Some(cx.tenant), prefix: self.prefix() },
            &rows,
            notice,
            &self.csrf_for(cx.tenant, session.id()),
            &pages::RegenerateView { passkey_options: options.as_deref(), totp: record.enabled && record.has_totp() },
        );
        r.status = status;
        Ok(r)
    }

    /// `POST {prefix}/mfa/passkeys/remove`: removes one passkey. The last factor is not
    /// removed here (that turns the second factor off: an admin reset).
    pub(super) async fn passkey_remove(&self, cx: &Cx<'_>, session: CompleteSession) -> Result<Response, Refusal> {
        let user_id = session.record().user_id.clone();
        let id = cx.req.form_value("id").unwrap_or_default();
        let mut record = self.load_mfa(cx, &user_id).await?.unwrap_or_default();
        let Some(pos) = record.passkeys.iter().position(|p| p.id == id) else {
            let text = "That passkey was not found; it may have been removed already.";
            return self.passkeys_page(cx, &session, Some(Notice::Error(text)), 404).await;
        };
        if record.passkeys.len() == 1 && !record.has_totp() {
            let text = "This passkey is your only second factor. Add another before removing it.";
            return self.passkeys_page(cx, &session, Some(Notice::Error(text)), 409).await;
        }
        let removed = record.passkeys.remove(pos);
        self.save_mfa(cx, &user_id, &record).await?;
        cx.audit(
            AuditEvent::PasskeyRemoved,
            json!({"level": "warn", "user": user_id, "name": removed.name, "credential": removed.id}),
        );
        Ok(self.no_store_redirect(&format!("{}/mfa/passkeys", self.prefix())))
    }
}

/// The name a user gave a passkey: trimmed, without control characters, bounded.
fn passkey_name(raw: &str, n: usize) -> String {
    let name: String = raw.chars().filter(|c| !c.is_control()).take(MAX_NAME).collect();
    let name = name.trim();
    if name.is_empty() {
        format!("Passkey {n}")
    } else {
        name.to_owned()
    }
}
