//! What one isolate keeps between requests, each owned by a small type with a narrow API:
//! session records (with the assertion signed for each) and provider documents. KV holds
//! the truth; these only save reads, and every entry has an age its reader checks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::oidc::{jwks::Jwk, ProviderMetadata};
use crate::saml::metadata::IdpMetadata;
use crate::session::SessionRecord;

/// Session records by KV key, bounded: when full, the older half is dropped.
#[derive(Debug, Default)]
pub(super) struct SessionCache {
    entries: RefCell<HashMap<String, CachedSession>>,
}

#[derive(Debug, Clone)]
struct CachedSession {
    record: SessionRecord,
    cached_at_ms: u64,
    /// The signed assertion for this record and when it was signed (seconds).
    assertion: Option<(String, u64)>,
}

impl SessionCache {
    /// The record, if cached less than `ttl_ms` ago.
    pub fn fresh(&self, key: &str, now_ms: u64, ttl_ms: u64) -> Option<SessionRecord> {
        self.entries.borrow().get(key).filter(|c| now_ms < c.cached_at_ms + ttl_ms).map(|c| c.record.clone())
    }

    /// Caches a record read or written at `now_ms`. A cached assertion stays only while
    /// what it asserts is unchanged: a step-up's new `amr` (or refreshed groups) reaches
    /// the origin with the next request.
    pub fn insert(&self, key: &str, record: SessionRecord, now_ms: u64, max: usize) {
        let mut cache = self.entries.borrow_mut();
        if cache.len() >= max && !cache.contains_key(key) {
            let mut ages: Vec<(u64, String)> = cache.iter().map(|(k, v)| (v.cached_at_ms, k.clone())).collect();
            ages.sort();
            for (_, k) in ages.into_iter().take(max / 2 + 1) {
                cache.remove(&k);
            }
        }
        let assertion = cache.get(key).filter(|c| same_claims(&c.record, &record)).and_then(|c| c.assertion.clone());
        cache.insert(key.to_owned(), CachedSession { record, cached_at_ms: now_ms, assertion });
    }

    pub fn remove(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }

    /// The assertion signed for the cached record, and when.
    pub fn assertion(&self, key: &str) -> Option<(String, u64)> {
        self.entries.borrow().get(key).and_then(|c| c.assertion.clone())
    }

    /// Keeps an assertion with the cached record (nothing if the record is not cached).
    pub fn keep_assertion(&self, key: &str, token: &str, signed_at: u64) {
        if let Some(c) = self.entries.borrow_mut().get_mut(key) {
            c.assertion = Some((token.to_owned(), signed_at));
        }
    }
}

/// Whether two records assert the same identity to the origin (the signed assertion's
/// claims and the identity headers).
fn same_claims(a: &SessionRecord, b: &SessionRecord) -> bool {
    a.user_id == b.user_id
        && a.user == b.user
        && a.provider == b.provider
        && a.email == b.email
        && a.name == b.name
        && a.preferred_username == b.preferred_username
        && a.groups == b.groups
        && a.roles == b.roles
        && a.amr == b.amr
        && a.attributes == b.attributes
}

/// Provider documents by `{tenant}:{provider}`, each with the time (seconds) it was fetched.
#[derive(Debug, Default)]
pub(super) struct ProviderCache {
    entries: RefCell<HashMap<String, ProviderState>>,
}

#[derive(Debug, Default)]
struct ProviderState {
    discovery: Option<(ProviderMetadata, u64)>,
    saml_metadata: Option<(IdpMetadata, u64)>,
    jwks: Option<(Rc<Vec<Jwk>>, u64)>,
    last_forced_jwks: u64,
}

impl ProviderCache {
    /// The cache key of a tenant's provider.
    pub fn key(tenant: &str, provider: &str) -> String {
        format!("{tenant}:{provider}")
    }

    pub fn discovery(&self, key: &str) -> Option<(ProviderMetadata, u64)> {
        self.entries.borrow().get(key).and_then(|s| s.discovery.clone())
    }

    pub fn set_discovery(&self, key: &str, m: ProviderMetadata, at: u64) {
        self.entries.borrow_mut().entry(key.to_owned()).or_default().discovery = Some((m, at));
    }

    pub fn jwks(&self, key: &str) -> Option<(Rc<Vec<Jwk>>, u64)> {
        self.entries.borrow().get(key).and_then(|s| s.jwks.clone())
    }

    pub fn set_jwks(&self, key: &str, keys: Rc<Vec<Jwk>>, at: u64) {
        self.entries.borrow_mut().entry(key.to_owned()).or_default().jwks = Some((keys, at));
    }

    /// When the JWKS was last refetched because a token named an unknown key.
    pub fn last_forced_jwks(&self, key: &str) -> u64 {
        self.entries.borrow().get(key).map_or(0, |s| s.last_forced_jwks)
    }

    pub fn set_last_forced_jwks(&self, key: &str, at: u64) {
        self.entries.borrow_mut().entry(key.to_owned()).or_default().last_forced_jwks = at;
    }

    pub fn saml_metadata(&self, key: &str) -> Option<(IdpMetadata, u64)> {
        self.entries.borrow().get(key).and_then(|s| s.saml_metadata.clone())
    }

    pub fn set_saml_metadata(&self, key: &str, m: IdpMetadata, at: u64) {
        self.entries.borrow_mut().entry(key.to_owned()).or_default().saml_metadata = Some((m, at));
    }

    /// Drops everything cached for a provider (the admin API's refresh).
    pub fn forget(&self, key: &str) {
        self.entries.borrow_mut().remove(key);
    }

    /// Ages (seconds at `now`) of the cached discovery document and JWKS, and the JWKS's
    /// key ids.
    pub fn status(&self, key: &str, now: u64) -> (Option<u64>, Option<u64>, Option<Vec<Option<String>>>) {
        let entries = self.entries.borrow();
        let s = entries.get(key);
        (
            s.and_then(|s| s.discovery.as_ref()).map(|(_, at)| now.saturating_sub(*at)),
            s.and_then(|s| s.jwks.as_ref()).map(|(_, at)| now.saturating_sub(*at)),
            s.and_then(|s| s.jwks.as_ref()).map(|(k, _)| k.iter().map(|k| k.kid.clone()).collect()),
        )
    }
}
