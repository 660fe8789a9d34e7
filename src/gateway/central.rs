//! One sign-in for several sites: a tenant with `sites` is their **sign-in host**.
//!
//! The order of one hand-off, each step on its own host:
//! 1. site, `GET {prefix}/login`: no providers here; stores pre-login state (bound to this
//!    browser by the pending cookie, as every sign-in) and sends the browser to
//!    `{sign-in host}{prefix}/sso/authorize?site=…&host=…&state=…`;
//! 2. sign-in host, `GET {prefix}/sso/authorize`: the site must be one of its `sites` and
//!    the host one of that site's. Without a complete session here, the person signs in
//!    (IdP, then the second factor) and comes back to this step. Then a code: 256 random
//!    bits, stored (by hash) with the site, host, state and the session it came from, for
//!    [`HANDOFF_TTL`] seconds; the browser goes to `{site host}{prefix}/sso/callback`;
//! 3. site, `GET {prefix}/sso/callback?code=…&state=…`: the pre-login state is claimed
//!    once (pending cookie, as step 1), the code is claimed once and read server-side (it
//!    carries nothing itself), must be for this site, host and state, and its central
//!    session must still be live. The site's own session is written (host-only cookie) and
//!    listed under the central session.
//!
//! Ending the central session (sign-out anywhere in the group, IdP back- or front-channel
//! logout, SAML SLO, an admin) ends every site session listed under it; a site session
//! whose central session is gone is refused at its next read from KV as well, so one the
//! list missed ends too.

use super::{Gateway, Lookup, Refresh};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::context::Cx;
use super::state::CompleteSession;
use crate::audit::AuditEvent;
use crate::config::Tenant;
use crate::crypto::b64url;
use crate::error::{HandoffError, PreLoginError, Refusal};
use crate::http::{query_encode, Request, Response};
use crate::keys;
use crate::pages::{self, Brand};
use crate::ports::Ports;
use crate::redirect::safe_return_path;
use crate::session::{self, CentralLink, MfaState, SessionId, SessionRecord, PENDING_COOKIE, SESSION_COOKIE};

/// Seconds a hand-off code lives (also KV's shortest TTL).
pub const HANDOFF_TTL: u64 = 60;
/// Most site sessions listed under one central session.
pub const MAX_SITE_SESSIONS: usize = 64;

/// What a site stores when it sends the browser to its sign-in host.
#[derive(Debug, Serialize, Deserialize)]
struct HandoffStart {
    site: String,
    return_to: String,
    created: u64,
}

/// What a sign-in host stores behind a code.
#[derive(Debug, Serialize, Deserialize)]
struct HandoffCode {
    /// The sign-in host (tenant id) and its session (hash).
    central: String,
    session: String,
    site: String,
    host: String,
    state: String,
    expires: u64,
}

/// A site session handed out from a central session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SiteEntry {
    pub tenant: String,
    pub session: String,
    pub host: String,
    pub created: u64,
    pub expires: u64,
}

fn handoff(e: HandoffError) -> Refusal {
    Refusal::Handoff(e)
}

/// Another tenant's address as seen from this request: its first host, on the scheme of
/// the request and, when the host entry names no port, the request's port.
fn address_of(req: &Request, tenant: &Tenant) -> String {
    let host = tenant.hosts.first().map(String::as_str).unwrap_or_default();
    let port = req.host().rsplit_once(':').map(|(_, p)| p.to_owned()).filter(|p| p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(p) if !host.contains(':') => format!("{}://{host}:{p}", req.url.scheme()),
        _ => format!("{}://{host}", req.url.scheme()),
    }
}

/// Whether `host` (from the query) is one of the site's hosts exactly, or a host entry
/// without a port on the port this request came to. Never another port: a code sent to
/// another port of the same name would reach whoever listens there.
fn serves(req: &Request, site: &Tenant, host: &str) -> bool {
    let port_of = |h: &str| h.rsplit_once(':').map(|(n, p)| (n.to_owned(), Some(p.to_owned())));
    let (name, port) = port_of(host).unwrap_or_else(|| (host.to_owned(), None));
    let here = port_of(&req.host()).and_then(|(_, p)| p);
    site.hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host) || (!h.contains(':') && h.eq_ignore_ascii_case(&name) && port == here))
}

impl Gateway {
    pub(super) fn tenant_by_id(&self, id: &str) -> Option<&Tenant> {
        self.config()?.config.tenants.iter().find(|t| t.id == id)
    }

    /// Step 1, at a site: off to the sign-in host.
    pub(super) async fn handoff_start(&self, cx: &Cx<'_>, central: &Tenant) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let prefix = self.prefix();
        self.login_allowed(cx)?;
        let state = b64url(&cx.ports.random::<32>());
        let start = HandoffStart {
            site: cx.tenant.id.clone(),
            return_to: safe_return_path(&cx.req.query("rd").unwrap_or_default(), prefix),
            created: cx.ports.now(),
        };
        let ttl = loaded.config.gateway.login_state_ttl;
        let value = serde_json::to_string(&start).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&keys::handoff_state(&cx.tenant.id, &state), &value, Some(ttl)).await?;
        let pending =
            session::pending_cookie(&loaded.cookie_keys, &cx.tenant.id, &state).ok_or(Refusal::ConfigInvalid)?;
        let q = query_encode(&[("site", cx.tenant.id.as_str()), ("host", &cx.req.host()), ("state", &state)]);
        let location = format!("{}{prefix}/sso/authorize?{q}", address_of(cx.req, central));
        cx.log(json!({"event": "handoff_start", "tenant": cx.tenant.id, "sign_in_host": central.id, "ip": cx.req.client_ip}));
        let mut r = Response::redirect(&location);
        r.headers.set("cache-control", "no-store");
        r.headers.append("set-cookie", session::set_cookie(PENDING_COOKIE, &pending, Some(ttl + 300), "Lax"));
        Ok(r)
    }

    /// Step 2, at the sign-in host: a code for a member site, once the person is signed in.
    pub(super) async fn sso_authorize(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let site = cx.req.query("site").unwrap_or_default();
        let host = cx.req.query("host").unwrap_or_default().to_ascii_lowercase();
        let state = cx
            .req
            .query("state")
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| Refusal::PreLogin { provider: cx.tenant.id.clone(), error: PreLoginError::StateMissing })?;
        // The site is one of ours, and the host is that site's: the code goes nowhere else.
        let member = cx.tenant.sites.contains(&site)
            && loaded.config.tenant_for_host(&host).is_some_and(|t| t.id == site && serves(cx.req, t, &host));
        if !member {
            let (site, host) = (crate::oidc::truncate(&site, 64), crate::oidc::truncate(&host, 128));
            return Err(handoff(HandoffError::NotMember { site, host }));
        }
        let mut central = match self.complete_here(cx).await? {
            Ok(c) => c,
            Err(answer) => return Ok(answer),
        };
        // The IdP's word is renewed before it is passed on (the site's session lasts until
        // the access token does).
        if self.maybe_refresh(cx, &mut central).await? == Refresh::Ended {
            return Ok(self.unauthenticated(cx.req, cx.tenant, true));
        }
        // Each code is a KV write: counted like the sign-in starts of this client.
        self.login_allowed(cx)?;
        let code = b64url(&cx.ports.random::<32>());
        let record = HandoffCode {
            central: cx.tenant.id.clone(),
            session: central.id().hash(),
            site: site.clone(),
            host: host.clone(),
            state: state.clone(),
            expires: cx.ports.now() + HANDOFF_TTL,
        };
        let value = serde_json::to_string(&record).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&keys::handoff_code(&cx.tenant.id, &code), &value, Some(HANDOFF_TTL)).await?;
        cx.log(
            json!({"event": "handoff_issued", "tenant": cx.tenant.id, "site": site, "session": central.id().handle(),
            "user": central.record().user_id, "ip": cx.req.client_ip}),
        );
        let q = query_encode(&[("code", code.as_str()), ("state", &state)]);
        let mut r = Response::redirect(&format!("{}://{host}{}/sso/callback?{q}", cx.req.url.scheme(), self.prefix()));
        r.headers.set("cache-control", "no-store");
        Ok(r)
    }

    /// Step 3, at the site: the code becomes this site's own session.
    pub(super) async fn sso_callback(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let loaded = self.config().ok_or(Refusal::ConfigInvalid)?;
        let Some(central) = cx.tenant.sign_in_via.as_deref().and_then(|id| self.tenant_by_id(id)) else {
            return Err(Refusal::NotFound);
        };
        let state = cx
            .req
            .query("state")
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .ok_or_else(|| Refusal::PreLogin { provider: central.id.clone(), error: PreLoginError::StateMissing })?;
        let state_key = keys::handoff_state(&cx.tenant.id, &state);
        let raw = self.take_pre_login(cx, &state, &state_key, &central.id).await?;
        let start: HandoffStart = serde_json::from_str(&raw)
            .map_err(|_| Refusal::PreLogin { provider: central.id.clone(), error: PreLoginError::StateUnknown })?;
        if start.site != cx.tenant.id || cx.ports.now() > start.created + loaded.config.gateway.login_state_ttl {
            return Err(Refusal::PreLogin { provider: central.id.clone(), error: PreLoginError::StateUnknown });
        }
        let code = cx.req.query("code").filter(|c| !c.is_empty() && c.len() <= 128);
        let code = code.ok_or(handoff(HandoffError::CodeUnknown))?;
        // The code, once: claimed (atomically with a coordinator), then read and deleted.
        let key = keys::handoff_code(&central.id, &code);
        let used = keys::used(&key);
        let Some(raw) = cx.ports.kv.get(&key).await? else {
            let replay = cx.ports.kv.get(&used).await?.is_some();
            return Err(handoff(if replay { HandoffError::CodeReplayed } else { HandoffError::CodeUnknown }));
        };
        if !self.first_use(cx, "handoff", &used, 2 * HANDOFF_TTL).await? {
            return Err(handoff(HandoffError::CodeReplayed));
        }
        // With KV alone `first_use` wrote the marker; with a coordinator, name the replay too.
        if cx.ports.coord().is_some() {
            cx.ports.kv.put(&used, "1", Some(2 * HANDOFF_TTL)).await?;
        }
        cx.ports.kv.delete(&key).await?;
        let issued: HandoffCode = serde_json::from_str(&raw).map_err(|_| handoff(HandoffError::CodeUnknown))?;
        let now = cx.ports.now();
        // KV's TTL is the upper bound; the code's own time is checked too.
        if now > issued.expires {
            return Err(handoff(HandoffError::CodeUnknown));
        }
        if issued.central != central.id || issued.site != cx.tenant.id {
            return Err(handoff(HandoffError::CodeMismatch("site")));
        }
        if !issued.host.eq_ignore_ascii_case(&cx.req.host()) {
            return Err(handoff(HandoffError::CodeMismatch("host")));
        }
        if issued.state != state {
            return Err(handoff(HandoffError::CodeMismatch("sign-in")));
        }
        let link = CentralLink { tenant: central.id.clone(), session: issued.session.clone() };
        let from = self.live_central(cx.ports, &link).await?.ok_or(handoff(HandoffError::CentralEnded))?;
        // This site's session: the person as the sign-in host knows them (identity, groups,
        // second factor), with this site's limits and no tokens (refresh is the sign-in
        // host's business).
        let id = SessionId::from_random(cx.ports.random::<32>());
        let record = SessionRecord {
            tenant: cx.tenant.id.clone(),
            created: now,
            last_seen: now,
            expires: from.expires.min(now + cx.tenant.session.absolute_timeout),
            idp_sid: None,
            tokens: None,
            user_agent: cx.req.headers.get("user-agent").map(|u| crate::oidc::truncate(u, 200)),
            country: cx.req.headers.get("cf-ipcountry").map(|c| crate::oidc::truncate(c, 8)),
            created_ms: Some(cx.ports.rt.now_ms()),
            reauth_at: None,
            central: Some(link),
            // The rest is the sign-in host's, `access_expires` included: where it refreshes
            // the IdP's tokens, the site's session needs it again when they run out
            // (`refresh.rs`), so a person the IdP refuses is cut off at the sites too.
            ..from
        };
        self.save_session(cx, &id, &record).await?;
        self.index_session(cx, &id, &record).await;
        let entry = SiteEntry {
            tenant: cx.tenant.id.clone(),
            session: id.hash(),
            host: issued.host,
            created: now,
            expires: record.expires,
        };
        if let Err(e) = self.list_site(cx, central, &issued.session, entry).await {
            // The site session still ends with the central one: it checks on every read.
            cx.log(json!({"level": "warn", "event": "site_session_list_failed", "tenant": cx.tenant.id, "cause": e.to_string()}));
        }
        let cookie =
            session::sign_session_cookie(&loaded.cookie_keys, &cx.tenant.id, &id).ok_or(Refusal::ConfigInvalid)?;
        cx.audit(
            AuditEvent::LoginSuccess,
            json!({"tenant": cx.tenant.id, "provider": record.provider, "user": record.user_id, "via": central.id,
                   "session": id.handle(), "groups": record.groups, "roles": record.roles, "mfa": record.mfa, "ip": cx.req.client_ip}),
        );
        let mut r = Response::redirect(&start.return_to);
        r.headers.set("cache-control", "no-store");
        r.headers.append("set-cookie", session::set_cookie(SESSION_COOKIE, &cookie, None, "Lax"));
        r.headers.append("set-cookie", session::clear_cookie(PENDING_COOKIE));
        Ok(r)
    }

    /// The central session behind a link, if it is live (present, not revoked, complete,
    /// within its absolute lifetime). Its idle timeout is not applied: using the sites is
    /// activity the sign-in host does not see.
    async fn live_central(&self, ports: Ports<'_>, link: &CentralLink) -> Result<Option<SessionRecord>, Refusal> {
        let key = keys::session(&link.tenant, &link.session);
        let Some(raw) = ports.kv.get(&key).await? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_str::<SessionRecord>(&raw) else {
            return Ok(None);
        };
        if record.tenant != link.tenant || record.mfa == MfaState::Pending || ports.now() >= record.expires {
            return Ok(None);
        }
        if self.revoked_by(ports, &link.tenant, &key, &record).await?.is_some() {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Records that a site saw the person now, so the central session does not idle out
    /// while they use the sites (its own record is not rewritten: that is the sign-in
    /// host's, refresh included).
    pub(super) async fn touch_central(&self, ports: Ports<'_>, link: &CentralLink, now: u64) -> Result<(), Refusal> {
        let Some(central) = self.tenant_by_id(&link.tenant) else {
            return Ok(());
        };
        let ttl = central.session.idle_timeout.max(60);
        ports.kv.put(&keys::central_activity(&link.tenant, &link.session), &now.to_string(), Some(ttl)).await?;
        Ok(())
    }

    pub(super) async fn central_alive(&self, ports: Ports<'_>, link: &CentralLink) -> Result<bool, Refusal> {
        Ok(self.live_central(ports, link).await?.is_some())
    }

    /// The site sessions listed under a central session.
    pub(super) async fn site_entries(
        &self,
        ports: Ports<'_>,
        central: &str,
        session_hash: &str,
    ) -> Result<Vec<SiteEntry>, Refusal> {
        let raw = ports.kv.get(&keys::central_sites(central, session_hash)).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default())
    }

    /// Lists a site session under its central session (read, add, write: KV has no
    /// compare-and-set, so two hand-offs in the same instant may lose an entry; that site
    /// session still ends with the central one, as it checks on every read). At most
    /// [`MAX_SITE_SESSIONS`] are listed: the oldest beyond that end here, so ending the
    /// central session stays within one request's storage operations.
    async fn list_site(&self, cx: &Cx<'_>, central: &Tenant, hash: &str, entry: SiteEntry) -> Result<(), Refusal> {
        let now = cx.ports.now();
        let mut entries = self.site_entries(cx.ports, &central.id, hash).await?;
        entries.retain(|e| e.expires > now);
        entries.push(entry);
        let excess = entries.len().saturating_sub(MAX_SITE_SESSIONS);
        for old in entries.drain(..excess) {
            if let Some(site) = self.tenant_by_id(&old.tenant).filter(|_| central.sites.contains(&old.tenant)) {
                let cause = "the oldest of more than 64 site sessions of one sign-in";
                self.revoke_in(cx, site, &old.session, "gateway", cause).await?;
            }
        }
        let ttl = entries.iter().map(|e| e.expires).max().unwrap_or(now).saturating_sub(now).max(60);
        let value = serde_json::to_string(&entries).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        cx.ports.kv.put(&keys::central_sites(&central.id, hash), &value, Some(ttl)).await?;
        Ok(())
    }

    /// Ends every site session a central session handed out (each is audited).
    pub(super) async fn end_sites(
        &self,
        cx: &Cx<'_>,
        central: &Tenant,
        session_hash: &str,
        actor: &str,
        cause: &str,
    ) -> Result<(), Refusal> {
        for e in self.site_entries(cx.ports, &central.id, session_hash).await? {
            // Only the sign-in host's own sites: a list entry never reaches another tenant.
            if !central.sites.contains(&e.tenant) {
                continue;
            }
            if let Some(site) = self.tenant_by_id(&e.tenant) {
                self.revoke_in(cx, site, &e.session, actor, cause).await?;
            }
        }
        cx.ports.kv.delete(&keys::central_sites(&central.id, session_hash)).await?;
        Ok(())
    }

    /// Signing out at a site ends the whole group's sign-in: the central session and the
    /// other sites' sessions.
    pub(super) async fn end_central(&self, cx: &Cx<'_>, link: &CentralLink) -> Result<(), Refusal> {
        let Some(central) = self.tenant_by_id(&link.tenant).filter(|c| c.sites.contains(&cx.tenant.id)) else {
            return Ok(());
        };
        let cause = format!("signed out at site {}", cx.tenant.id);
        self.revoke_in(cx, central, &link.session, "user", &cause).await?;
        self.end_sites(cx, central, &link.session, "user", &cause).await?;
        Ok(())
    }

    /// Where signing out at a site goes: the IdP's end-session endpoint, as the sign-in
    /// host's own sign-out would (its provider, its tokens), coming back to the sign-in
    /// host's signed-out page. Read before the central session ends.
    pub(super) async fn central_logout_url(&self, cx: &Cx<'_>, link: &CentralLink) -> Option<String> {
        let central = self.tenant_by_id(&link.tenant).filter(|c| c.sites.contains(&cx.tenant.id))?;
        let raw = cx.ports.kv.get(&keys::session(&link.tenant, &link.session)).await.ok()??;
        let record: SessionRecord = serde_json::from_str(&raw).ok()?;
        let at_central = Cx::new(cx.ports, cx.req, central);
        let post_logout = format!("{}{}/logged-out", address_of(cx.req, central), self.prefix());
        self.rp_logout_url_for(&at_central, &link.session, &record, &post_logout).await
    }

    /// The complete session of this request, or the answer that gets one: sign-in (after
    /// an ended session, saying so) or the second factor. The sign-in host's own pages
    /// need it, as a protected path does.
    async fn complete_here(&self, cx: &Cx<'_>) -> Result<Result<CompleteSession, Response>, Refusal> {
        Ok(match self.lookup_session(cx).await? {
            Lookup::Active(s) => match s.into_complete() {
                Some(c) => Ok(c),
                None => Err(self.mfa_needed(cx.req, None)?),
            },
            Lookup::Ended => Err(self.unauthenticated(cx.req, cx.tenant, true)),
            Lookup::NoSession { .. } => Err(self.unauthenticated(cx.req, cx.tenant, false)),
        })
    }

    /// A sign-in host without an origin: the sites the person can open from here.
    pub(super) async fn sites_page(&self, cx: &Cx<'_>) -> Result<Response, Refusal> {
        let session = match self.complete_here(cx).await? {
            Ok(c) => c,
            Err(answer) => return Ok(answer),
        };
        let links: Vec<(String, String)> = cx
            .tenant
            .sites
            .iter()
            .filter_map(|id| self.tenant_by_id(id))
            .map(|t| {
                let name = if t.name.is_empty() { t.id.clone() } else { t.name.clone() };
                (name, format!("{}/", address_of(cx.req, t)))
            })
            .collect();
        let who = session.record().email.clone().unwrap_or_else(|| session.record().user.clone());
        Ok(pages::sites_page(Brand { tenant: Some(cx.tenant), prefix: self.prefix() }, &who, &links))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(hosts: &[&str]) -> Tenant {
        let doc = serde_json::json!({"id": "t", "hosts": hosts, "origin": "https://o.test"});
        serde_json::from_value(doc).unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn request(host: &str) -> Request {
        Request::new("GET", &format!("https://{host}/x"))
            .map(|r| r.header("host", host))
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn another_tenant_is_addressed_on_this_requests_scheme_and_port_unless_its_entry_names_one() {
        assert_eq!(address_of(&request("app.test"), &tenant(&["auth.test"])), "https://auth.test");
        assert_eq!(address_of(&request("app.test:8787"), &tenant(&["auth.test"])), "https://auth.test:8787");
        assert_eq!(address_of(&request("app.test:8787"), &tenant(&["auth.test:9000"])), "https://auth.test:9000");
        assert_eq!(address_of(&request("app.test"), &tenant(&["auth.test:9000"])), "https://auth.test:9000");
    }

    #[test]
    fn a_site_serves_its_hosts_exactly_or_on_the_requests_own_port() {
        let site = tenant(&["app.test", "app2.test:8443"]);
        let at = |here: &str, host: &str| serves(&request(here), &site, host);
        assert!(at("auth.test", "app.test"));
        assert!(at("auth.test", "APP.test"));
        assert!(at("auth.test:8787", "app.test:8787"));
        assert!(!at("auth.test:8787", "app.test:9999"), "another port of the same name");
        assert!(!at("auth.test", "app.test:9999"));
        assert!(at("auth.test", "app2.test:8443"), "an entry with a port, exactly");
        assert!(!at("auth.test:8443", "app2.test"), "an entry with a port needs that port");
        assert!(!at("auth.test", "app2.test:8444"));
        assert!(!at("auth.test", "evil.test"));
        assert!(!at("auth.test", "app.test.evil.test"));
    }
}
