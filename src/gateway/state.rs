//! The two states of a session, as types.
//!
//! A session whose second factor is still due is a [`WaitingSession`]; any other is a
//! [`CompleteSession`]. They are different types so that a route states which it takes and
//! the compiler holds it to that: forwarding to the origin, refresh, the admin API, `/me`,
//! and managing factors take a `CompleteSession`; the second-factor prompt takes either.
//! A waiting session becomes complete only by consuming a proof that a code was verified
//! ([`FactorProof`], made only by the attempt operation in `mfa/attempt.rs`: a TOTP code, a
//! backup code or a passkey assertion) or that the first
//! factor was enrolled ([`EnrolmentProof`]).
//!
//! | route | no session | waiting | complete |
//! |---|---|---|---|
//! | protected paths (the origin) | sign in | prompt | forwarded |
//! | `GET/POST {prefix}/mfa` | sign in | verify | step-up |
//! | `GET/POST {prefix}/mfa/enroll` | sign in | first factor only | after a fresh IdP sign-in |
//! | `POST {prefix}/mfa/passkey` | sign in | verify | step-up |
//! | `GET/POST {prefix}/mfa/passkeys/register` | sign in | first factor only | after a fresh IdP sign-in |
//! | `GET {prefix}/mfa/passkeys`, `POST …/remove` | sign in | refused | yes |
//! | `POST {prefix}/mfa/backup-codes` | sign in | refused | with a fresh code or passkey |
//! | `GET {prefix}/me`, session admin | 401 | 401 | yes |
//! | `GET/POST {prefix}/logout` | page | ends it | ends it |
//!
//! The route table (`routes.rs`) names the state each route acts for; `route_sessions`
//! lists it for `tests/flows/session_states.rs`.

use super::mfa::{EnrolmentProof, FactorProof};

/// Which session a gateway route acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// None: the route answers the same with or without a session cookie.
    NoSession,
    /// A complete session only; a waiting one is treated as not signed in (or sent to its
    /// second factor).
    Complete,
    /// Either state (the prompt, a code, signing out).
    Either,
    /// A waiting session enrolling the user's first factor (when the tenant requires one),
    /// or a complete session after a fresh IdP sign-in.
    Enrolment,
}

use crate::session::{MfaState, SessionId, SessionRecord};

/// A session signed in at the IdP whose second factor is still due. The origin never sees
/// it; it can only see the prompt, submit a code, enrol a first factor, or sign out.
#[derive(Debug)]
pub(super) struct WaitingSession {
    id: SessionId,
    record: SessionRecord,
}

/// A session with nothing left to prove at sign-in (step-up rules may still ask again).
#[derive(Debug)]
pub(super) struct CompleteSession {
    id: SessionId,
    record: SessionRecord,
}

/// A stored session, in whichever state its record says.
#[derive(Debug)]
pub(super) enum Session {
    Waiting(WaitingSession),
    Complete(CompleteSession),
}

fn add_amr(record: &mut SessionRecord, values: &[&str]) {
    for v in values {
        if !record.amr.iter().any(|a| a == v) {
            record.amr.push((*v).to_owned());
        }
    }
}

impl Session {
    /// The state is read from the stored record, once, here.
    pub(super) fn from_record(id: SessionId, record: SessionRecord) -> Self {
        match record.mfa {
            MfaState::Pending => Session::Waiting(WaitingSession { id, record }),
            MfaState::NotRequired | MfaState::Verified => Session::Complete(CompleteSession { id, record }),
        }
    }

    pub(super) fn id(&self) -> &SessionId {
        match self {
            Session::Waiting(s) => &s.id,
            Session::Complete(s) => &s.id,
        }
    }

    pub(super) fn record(&self) -> &SessionRecord {
        match self {
            Session::Waiting(s) => &s.record,
            Session::Complete(s) => &s.record,
        }
    }

    pub(super) fn into_complete(self) -> Option<CompleteSession> {
        match self {
            Session::Complete(s) => Some(s),
            Session::Waiting(_) => None,
        }
    }
}

impl WaitingSession {
    /// The second factor was verified: the session is complete, and fresh for step-up.
    /// A proof for another user completes nothing.
    pub(super) fn verified(self, proof: FactorProof) -> Option<CompleteSession> {
        if proof.user_id() != self.record.user_id {
            return None;
        }
        let WaitingSession { id, mut record } = self;
        record.mfa = MfaState::Verified;
        record.mfa_at = Some(proof.at());
        if proof.passkey() {
            record.passkey_at = Some(proof.at());
        }
        add_amr(&mut record, proof.amr());
        Some(CompleteSession { id, record })
    }

    /// The first factor was enrolled: the session is complete, but enrolling is not a
    /// verification, so no step-up rule counts it (`mfa_at` stays unset).
    pub(super) fn enrolled(self, proof: EnrolmentProof) -> Option<CompleteSession> {
        if proof.user_id() != self.record.user_id {
            return None;
        }
        let WaitingSession { id, mut record } = self;
        record.mfa = MfaState::Verified;
        record.mfa_at = None;
        add_amr(&mut record, proof.amr());
        Some(CompleteSession { id, record })
    }
}

impl CompleteSession {
    pub(super) fn id(&self) -> &SessionId {
        &self.id
    }

    pub(super) fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// For refresh and last-seen: the identity and token fields. The state field is not
    /// for changing here; it is re-read whenever the record is loaded.
    pub(super) fn record_mut(&mut self) -> &mut SessionRecord {
        &mut self.record
    }

    /// A step-up: the second factor was verified again now.
    pub(super) fn stepped_up(&mut self, proof: FactorProof) -> bool {
        if proof.user_id() != self.record.user_id {
            return false;
        }
        self.record.mfa = MfaState::Verified;
        self.record.mfa_at = Some(proof.at());
        if proof.passkey() {
            self.record.passkey_at = Some(proof.at());
        }
        add_amr(&mut self.record, proof.amr());
        true
    }

    pub(super) fn into_parts(self) -> (SessionId, SessionRecord) {
        (self.id, self.record)
    }
}
