//! Session indexes: per user (for the admin API's listing and revocation) and per IdP
//! session id (for back-channel logout). Revocation deletes the session record; indexes are
//! pruned when read, so entries of sessions that expired by TTL disappear.

use super::Gateway;

use serde_json::json;

use super::context::Cx;
use super::state::{CompleteSession, Session};
use crate::audit::AuditEvent;
use crate::config::Tenant;
use crate::coord::{self};
use crate::error::Refusal;
use crate::ports::Ports;
use crate::session::{self, SessionId, SessionRecord, SESSION_COOKIE};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct IndexEntry {
    /// SHA-256 of the session id (the record is `sess:{tenant}:{hash}`).
    pub session: String,
    pub created: u64,
    pub expires: u64,
}

pub(super) use crate::keys::{
    idp_sessions as sid_index_key, revocation as revocation_key, session as record_key, tombstone as tombstone_key,
    user_sessions as user_index_key, USER_REVOCATION as USER_REVOCATION_KEY,
};

impl Gateway {
    pub(super) async fn read_index(&self, ports: Ports<'_>, key: &str) -> Result<Vec<IndexEntry>, Refusal> {
        Ok(ports.kv.get(key).await?.and_then(|raw| serde_json::from_str(&raw).ok()).unwrap_or_default())
    }

    pub(super) async fn write_index(&self, ports: Ports<'_>, key: &str, entries: &[IndexEntry]) -> Result<(), Refusal> {
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
        self.mark_revoked_in(cx.ports, cx.tenant, user_id, session_key).await
    }

    /// [`Gateway::mark_revoked`] for a session of `tenant` (a sign-in host ends its sites').
    pub(super) async fn mark_revoked_in(
        &self,
        ports: Ports<'_>,
        tenant: &Tenant,
        user_id: &str,
        session_key: &str,
    ) -> Result<(), Refusal> {
        if let Some(c) = ports.coord() {
            let ttl_ms = tenant.session.absolute_timeout.saturating_mul(1000);
            c.revoke(&coord::user_shard(&tenant.id, user_id), &revocation_key(session_key), ttl_ms).await?;
        } else {
            ports.kv.put(&tombstone_key(session_key), "1", Some(tenant.session.absolute_timeout.max(60))).await?;
        }
        Ok(())
    }

    /// Whether a session record read from KV was revoked anywhere, and by what: with a
    /// coordinator its answer (the session's or all of the user's sessions), with KV alone
    /// the tombstone.
    pub(super) async fn revoked_by(
        &self,
        ports: Ports<'_>,
        tenant: &str,
        session_key: &str,
        record: &SessionRecord,
    ) -> Result<Option<&'static str>, Refusal> {
        Ok(match ports.coord() {
            Some(c) => {
                let keys = [revocation_key(session_key), USER_REVOCATION_KEY.to_owned()];
                let shard = coord::user_shard(tenant, &record.user_id);
                c.revoked_since(&shard, &keys, record.created_ms()).await?.then_some("coordinator")
            }
            None => self.tombstoned(ports, session_key).await?.then_some("tombstone"),
        })
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

    /// Revokes one session by its hash; `false` if it did not exist. A sign-in host's
    /// session takes the site sessions it handed out with it.
    pub(super) async fn revoke_session(
        &self,
        cx: &Cx<'_>,
        session_hash: &str,
        actor: &str,
        cause: &str,
    ) -> Result<bool, Refusal> {
        let revoked = self.revoke_in(cx, cx.tenant, session_hash, actor, cause).await?;
        if !cx.tenant.sites.is_empty() {
            self.end_sites(cx, cx.tenant, session_hash, actor, cause).await?;
        }
        Ok(revoked)
    }

    /// Revokes one session of `tenant` by its hash, alone; `false` if it did not exist.
    pub(super) async fn revoke_in(
        &self,
        cx: &Cx<'_>,
        tenant: &Tenant,
        session_hash: &str,
        actor: &str,
        cause: &str,
    ) -> Result<bool, Refusal> {
        let key = record_key(&tenant.id, session_hash);
        let Some(raw) = cx.ports.kv.get(&key).await? else {
            return Ok(false);
        };
        let user = serde_json::from_str::<SessionRecord>(&raw).map(|r| r.user_id).unwrap_or_default();
        // The coordinator first: once it has the revocation, no location accepts the session.
        self.mark_revoked_in(cx.ports, tenant, &user, &key).await?;
        cx.ports.kv.delete(&key).await?;
        self.sessions.remove(&key);
        cx.audit(
            AuditEvent::SessionRevoked,
            json!({"level": "warn", "tenant": tenant.id, "actor": actor, "user": user,
                   "session": &session_hash[..16.min(session_hash.len())], "cause": cause}),
        );
        Ok(true)
    }
}

/// The outcome of reading the session cookie.
#[derive(Debug)]
pub(super) enum Lookup {
    NoSession {
        cause: Option<String>,
    },
    /// A genuine session cookie whose session is over (expired, revoked, signed out).
    Ended,
    /// A live session, in the state its record says (waiting for its second factor, or
    /// complete).
    Active(Box<Session>),
}

impl Lookup {
    /// The session if it is complete: what every route but the second factor's needs.
    pub(super) fn into_complete(self) -> Option<CompleteSession> {
        match self {
            Lookup::Active(s) => s.into_complete(),
            Lookup::Ended | Lookup::NoSession { .. } => None,
        }
    }
}

impl Gateway {
    pub(super) async fn lookup_session(&self, cx: &Cx<'_>) -> Result<Lookup, Refusal> {
        let Some(loaded) = self.config() else {
            return Err(Refusal::ConfigInvalid);
        };
        let Some(cookie) = cx.req.headers.cookie(SESSION_COOKIE) else {
            return Ok(Lookup::NoSession { cause: None });
        };
        let id = match session::verify_session_cookie(&loaded.cookie_keys, &cx.tenant.id, cookie) {
            Ok(id) => id,
            Err(e) => return Ok(Lookup::NoSession { cause: Some(e.to_string()) }),
        };
        let key = id.kv_key(&cx.tenant.id);
        let now_ms = cx.ports.rt.now_ms();
        let ttl_ms = loaded.config.gateway.session_cache_ttl * 1000;
        let cached = self.sessions.fresh(&key, now_ms, ttl_ms);
        let record = match cached {
            Some(r) => r,
            None => {
                let Some(raw) = cx.ports.kv.get(&key).await? else {
                    self.sessions.remove(&key);
                    cx.log(json!({"event": "session_refused", "tenant": cx.tenant.id, "session": id.handle(),
                        "cause": "session not found (signed out, revoked or expired)", "ip": cx.req.client_ip}));
                    return Ok(Lookup::Ended);
                };
                let Ok(record) = serde_json::from_str::<SessionRecord>(&raw) else {
                    return Ok(Lookup::NoSession { cause: Some("session record unreadable".into()) });
                };
                // A revocation made anywhere. With a coordinator it is seen here now, not when
                // KV's delete arrives (checked once per session cache interval); with KV alone,
                // a record an isolate wrote back after a revocation is refused by its tombstone.
                let mut revoked_by = self.revoked_by(cx.ports, &cx.tenant.id, &key, &record).await?;
                // A site's session ends with the sign-in host's session it came from.
                if let Some(link) = record.central.as_ref().filter(|_| revoked_by.is_none()) {
                    if !self.central_alive(cx.ports, link).await? {
                        revoked_by = Some("the sign-in host's session ended");
                    }
                }
                if let Some(by) = revoked_by {
                    self.sessions.remove(&key);
                    cx.log(json!({"event": "session_refused", "tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id,
                        "cause": format!("session revoked ({by})"), "ip": cx.req.client_ip}),
                    );
                    return Ok(Lookup::Ended);
                }
                self.cache_session(&key, record.clone(), now_ms);
                record
            }
        };
        if record.tenant != cx.tenant.id {
            return Ok(Lookup::NoSession { cause: Some("session belongs to another tenant".into()) });
        }
        let now = cx.ports.now();
        let mut expiry = record.check_times(now, &cx.tenant.session).err();
        // A sign-in host's session stays alive while its sites are in use (they write when
        // they last saw the person, at most once per last-seen interval).
        if expiry == Some(crate::session::Expiry::Idle) && !cx.tenant.sites.is_empty() {
            let key = crate::keys::central_activity(&cx.tenant.id, &id.hash());
            let seen = cx.ports.kv.get(&key).await?.and_then(|v| v.parse::<u64>().ok());
            if seen.is_some_and(|t| now < t.saturating_add(cx.tenant.session.idle_timeout)) {
                expiry = None;
            }
        }
        if let Some(why) = expiry {
            self.sessions.remove(&key);
            // Best effort: the record's KV TTL removes it anyway.
            let _ = cx.ports.kv.delete(&key).await;
            cx.audit(AuditEvent::SessionExpired, json!({"tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id, "cause": format!("{why:?}").to_lowercase()}));
            return Ok(Lookup::Ended);
        }
        Ok(Lookup::Active(Box::new(Session::from_record(id, record))))
    }

    pub(super) fn cache_session(&self, key: &str, record: SessionRecord, now_ms: u64) {
        let max = self.config().map(|l| l.config.gateway.session_cache_size).unwrap_or(10_000);
        self.sessions.insert(key, record, now_ms, max);
    }

    pub(super) async fn save_session(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        record: &SessionRecord,
    ) -> Result<(), Refusal> {
        let key = id.kv_key(&cx.tenant.id);
        let value = serde_json::to_string(record).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let now = cx.ports.now();
        // A sign-in host's session is kept until its absolute end: its idle time is decided
        // on read, where the sites' use counts too.
        let ttl = if cx.tenant.sites.is_empty() {
            record.kv_ttl(now, &cx.tenant.session)
        } else {
            record.expires.saturating_sub(now).max(60)
        };
        cx.ports.kv.put(&key, &value, Some(ttl)).await?;
        self.cache_session(&key, record.clone(), cx.ports.rt.now_ms());
        Ok(())
    }

    /// Writes a change to an existing session (last-seen, refresh, step-up). With KV alone a
    /// revoked session is not written back (its tombstone is checked first): `false`, and
    /// the isolate forgets it. With a coordinator a written-back record is refused on read.
    pub(super) async fn update_session(
        &self,
        cx: &Cx<'_>,
        id: &SessionId,
        record: &SessionRecord,
    ) -> Result<bool, Refusal> {
        let key = id.kv_key(&cx.tenant.id);
        if cx.ports.coord().is_none() && self.tombstoned(cx.ports, &key).await? {
            self.sessions.remove(&key);
            return Ok(false);
        }
        self.save_session(cx, id, record).await?;
        Ok(true)
    }

    /// Writes last-seen at most once per `gateway.last_seen_interval` (by default a quarter of
    /// the idle timeout: an active session is written about four times per idle period, which
    /// keeps it alive and KV within the Free plan's daily writes). A failed write is logged
    /// and does not fail the request.
    pub(super) async fn touch(&self, cx: &Cx<'_>, session: &mut CompleteSession) {
        let interval = self.config().map(|l| l.config.gateway.last_seen_interval_for(&cx.tenant.session)).unwrap_or(60);
        let now = cx.ports.now();
        if !session.record().touch_due(now, interval) {
            return;
        }
        session.record_mut().last_seen = now;
        let (id, record) = (session.id(), session.record());
        if let Err(e) = self.update_session(cx, id, record).await {
            cx.log(json!({"level": "warn", "event": "session_touch_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
        if let Some(link) = &record.central {
            if let Err(e) = self.touch_central(cx.ports, link, now).await {
                cx.log(json!({"level": "warn", "event": "session_touch_failed", "tenant": link.tenant, "via": cx.tenant.id, "cause": e.to_string()}));
            }
        }
    }

    pub(super) async fn end_session(&self, cx: &Cx<'_>, id: &SessionId, record: &SessionRecord, cause: String) {
        let key = id.kv_key(&cx.tenant.id);
        self.sessions.remove(&key);
        if let Err(e) = self.mark_revoked(cx, &record.user_id, &key).await {
            cx.log(json!({"level": "warn", "event": "session_revoke_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
        if let Err(e) = cx.ports.kv.delete(&key).await {
            cx.log(json!({"level": "warn", "event": "session_delete_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
        }
        cx.audit(AuditEvent::SessionRevoked, json!({"level": "warn", "actor": "idp", "tenant": cx.tenant.id, "session": id.handle(), "user": record.user_id, "cause": cause}));
        if !cx.tenant.sites.is_empty() {
            if let Err(e) = self.end_sites(cx, cx.tenant, &id.hash(), "idp", "the sign-in host's session ended").await {
                cx.log(json!({"level": "warn", "event": "site_sessions_revoke_failed", "tenant": cx.tenant.id, "session": id.handle(), "cause": e.to_string()}));
            }
        }
    }
}
