//! Session indexes: per user (for the admin API's listing and revocation) and per IdP
//! session id (for back-channel logout). Revocation deletes the session record; indexes are
//! pruned when read, so entries of sessions that expired by TTL disappear.

use super::context::Cx;
use crate::audit::AuditEvent;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Gateway;
use crate::coord;
use crate::crypto;
use crate::error::Refusal;
use crate::ports::Ports;
use crate::session::{SessionId, SessionRecord};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// SHA-256 of the session id (the record is `sess:{tenant}:{hash}`).
    pub session: String,
    pub created: u64,
    pub expires: u64,
}

/// The coordinator's key for one session's revocation (in the user's shard).
pub(super) fn revocation_key(session_key: &str) -> String {
    format!("s:{session_key}")
}

/// The KV tombstone of a revoked session (KV alone): an isolate that still holds the session
/// must not write it back, and a record written back anyway is not accepted.
pub(super) fn tombstone_key(session_key: &str) -> String {
    format!("revoked:{session_key}")
}

/// The coordinator's key for "every session of this user created before now".
pub(super) const USER_REVOCATION_KEY: &str = "user";

pub(super) fn user_index_key(tenant: &str, user_id: &str) -> String {
    format!("usess:{tenant}:{}", crypto::sha256_hex(user_id.as_bytes()))
}

pub(super) fn sid_index_key(tenant: &str, provider: &str, sid: &str) -> String {
    format!("bsid:{tenant}:{provider}:{}", crypto::sha256_hex(sid.as_bytes()))
}

pub(super) fn record_key(tenant: &str, session_hash: &str) -> String {
    format!("sess:{tenant}:{session_hash}")
}

impl Gateway {
    async fn read_index(&self, ports: Ports<'_>, key: &str) -> Result<Vec<IndexEntry>, Refusal> {
        Ok(ports.kv.get(key).await?.and_then(|raw| serde_json::from_str(&raw).ok()).unwrap_or_default())
    }

    async fn write_index(&self, ports: Ports<'_>, key: &str, entries: &[IndexEntry]) -> Result<(), Refusal> {
        if entries.is_empty() {
            ports.kv.delete(key).await?;
            return Ok(());
        }
        let now = ports.now();
        let ttl = entries.iter().map(|e| e.expires).max().unwrap_or(now).saturating_sub(now).max(60);
        let value = serde_json::to_string(entries).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        ports.kv.put(key, &value, Some(ttl)).await?;
        Ok(())
    }

    /// Adds a new session to the user's index (and the IdP-session index). KV has no
    /// compare-and-set, so two sign-ins of one user in the same second may lose an entry;
    /// the session itself is unaffected, only its listing.
    pub(super) async fn index_session(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord) {
        let entry = IndexEntry { session: id.hash(), created: record.created, expires: record.expires };
        let now = cx.ports.now();
        let mut keys = vec![user_index_key(&cx.tenant.id, &record.user_id)];
        if let Some(sid) = &record.idp_sid {
            keys.push(sid_index_key(&cx.tenant.id, &record.provider, sid));
        }
        for key in keys {
            let result = async {
                let mut entries = self.read_index(cx.ports, &key).await?;
                entries.retain(|e| e.expires > now);
                entries.push(entry.clone());
                self.write_index(cx.ports, &key, &entries).await
            }
            .await;
            if let Err(e) = result {
                cx.log(json!({"level": "warn", "event": "session_index_failed", "tenant": cx.tenant.id, "cause": e.to_string()}));
            }
        }
    }

    /// The live sessions of an index, pruning entries whose record is gone.
    pub(super) async fn indexed_sessions(
        &self,
        cx: &Cx<'_>,
        key: &str,
    ) -> Result<Vec<(String, SessionRecord)>, Refusal> {
        let entries = self.read_index(cx.ports, key).await?;
        let mut live = Vec::new();
        let mut kept = Vec::new();
        for e in &entries {
            if let Some(raw) = cx.ports.kv.get(&record_key(&cx.tenant.id, &e.session)).await? {
                if let Ok(r) = serde_json::from_str::<SessionRecord>(&raw) {
                    live.push((e.session.clone(), r));
                    kept.push(e.clone());
                }
            }
        }
        if kept.len() != entries.len() {
            self.write_index(cx.ports, key, &kept).await?;
        }
        Ok(live)
    }

    /// Records a session's revocation. With a coordinator, there: every location refuses the
    /// session at its next session-cache miss instead of when KV's delete reaches it (up to
    /// 60 s). With KV alone, as a tombstone beside the record (kept as long as the session
    /// could live): an isolate that still holds the session does not write it back (touch,
    /// refresh, step-up check the tombstone first), and a record written back in a race is
    /// refused on read.
    pub(super) async fn mark_revoked(&self, cx: &Cx<'_>, user_id: &str, session_key: &str) -> Result<(), Refusal> {
        if let Some(c) = cx.ports.coord() {
            let ttl_ms = cx.tenant.session.absolute_timeout.saturating_mul(1000);
            c.revoke(&coord::user_shard(&cx.tenant.id, user_id), &revocation_key(session_key), ttl_ms).await?;
        } else {
            cx.ports.kv.put(&tombstone_key(session_key), "1", Some(cx.tenant.session.absolute_timeout.max(60))).await?;
        }
        Ok(())
    }

    /// Whether a session was revoked, as far as KV alone can tell (its tombstone).
    pub(super) async fn tombstoned(&self, ports: Ports<'_>, session_key: &str) -> Result<bool, Refusal> {
        Ok(ports.kv.get(&tombstone_key(session_key)).await?.is_some())
    }

    /// With a coordinator, revokes every session of the user created until now, including
    /// any a stale index does not list.
    pub(super) async fn mark_user_revoked(&self, cx: &Cx<'_>, user_id: &str) -> Result<bool, Refusal> {
        let Some(c) = cx.ports.coord() else {
            return Ok(false);
        };
        let ttl_ms = cx.tenant.session.absolute_timeout.saturating_mul(1000);
        c.revoke(&coord::user_shard(&cx.tenant.id, user_id), USER_REVOCATION_KEY, ttl_ms).await?;
        Ok(true)
    }

    /// Revokes every session of the user the index lists, except `keep` (the session that
    /// asked). Sessions a stale index does not list yet end at their next refresh or expiry.
    pub(super) async fn revoke_other_sessions(
        &self,
        cx: &Cx<'_>,
        user_id: &str,
        keep: &SessionId,
        cause: &str,
    ) -> Result<u32, Refusal> {
        let keep = keep.hash();
        let mut n = 0;
        for (hash, _) in self.indexed_sessions(cx, &user_index_key(&cx.tenant.id, user_id)).await? {
            if hash != keep {
                n += u32::from(self.revoke_session(cx, &hash, "gateway", cause).await?);
            }
        }
        Ok(n)
    }

    /// Revokes one session by its hash; `false` if it did not exist.
    pub(super) async fn revoke_session(
        &self,
        cx: &Cx<'_>,
        session_hash: &str,
        actor: &str,
        cause: &str,
    ) -> Result<bool, Refusal> {
        let key = record_key(&cx.tenant.id, session_hash);
        let Some(raw) = cx.ports.kv.get(&key).await? else {
            return Ok(false);
        };
        let user = serde_json::from_str::<SessionRecord>(&raw).map(|r| r.user_id).unwrap_or_default();
        // The coordinator first: once it has the revocation, no location accepts the session.
        self.mark_revoked(cx, &user, &key).await?;
        cx.ports.kv.delete(&key).await?;
        self.sessions.borrow_mut().remove(&key);
        cx.audit(
            AuditEvent::SessionRevoked,
            json!({"level": "warn", "tenant": cx.tenant.id, "actor": actor, "user": user,
                   "session": &session_hash[..16.min(session_hash.len())], "cause": cause}),
        );
        Ok(true)
    }
}
