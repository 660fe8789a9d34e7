//! Path rules (public paths, access policy) and group/role mapping. Shared by every
//! identity provider of a tenant; all decisions fail closed.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::config::{AccessRule, ClaimMatch, Effect, GroupSettings, PathMatch, PathRule, PrincipalKind, Tenant};
use crate::http::EdgeContext;
use crate::path::{CanonicalPath, Decided};

/// Glob match: `*` matches within one segment, `**` across segments. Each (pattern
/// position, path position) pair is decided once, so a match costs at most
/// |pattern| × |path| steps whatever the wildcards (a naive backtracking matcher is
/// exponential in them, and public paths are matched before any authentication).
fn glob_match(pattern: &str, path: &str) -> bool {
    const UNKNOWN: u8 = 0;
    const NO: u8 = 1;
    const YES: u8 = 2;
    fn go(p: &[u8], s: &[u8], i: usize, j: usize, memo: &mut [u8]) -> bool {
        let k = i * (s.len() + 1) + j;
        if memo[k] != UNKNOWN {
            return memo[k] == YES;
        }
        let r = match p.get(i) {
            None => j == s.len(),
            Some(b'*') if p.get(i + 1) == Some(&b'*') => (j..=s.len()).any(|x| go(p, s, i + 2, x, memo)),
            Some(b'*') => {
                let mut x = j;
                loop {
                    if go(p, s, i + 1, x, memo) {
                        break true;
                    }
                    if x == s.len() || s[x] == b'/' {
                        break false;
                    }
                    x += 1;
                }
            }
            Some(c) => s.get(j) == Some(c) && go(p, s, i + 1, j + 1, memo),
        };
        memo[k] = if r { YES } else { NO };
        r
    }
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    let mut memo = vec![UNKNOWN; (p.len() + 1) * (s.len() + 1)];
    go(p, s, 0, 0, &mut memo)
}

pub fn path_matches(kind: PathMatch, pattern: &str, path: &str) -> bool {
    match kind {
        PathMatch::Exact => path == pattern,
        PathMatch::Prefix => {
            if pattern.ends_with('/') {
                path.starts_with(pattern)
            } else {
                path == pattern || path.starts_with(&format!("{pattern}/"))
            }
        }
        PathMatch::Glob => glob_match(pattern, path),
    }
}

/// Whether a rule covers this method and path. Patterns are lower-cased for
/// case-insensitive tenants (the path is already).
pub fn rule_matches(rule: &PathRule, method: &str, path: &CanonicalPath) -> bool {
    if !(rule.methods.is_empty() || rule.methods.iter().any(|m| m == method)) {
        return false;
    }
    if path.case_insensitive {
        path_matches(rule.kind, &rule.path.to_lowercase(), &path.matching)
    } else {
        path_matches(rule.kind, &rule.path, &path.matching)
    }
}

/// Whether the request may pass without a session: public under every method the origin
/// may act on, and not under a verbatim prefix.
pub fn is_public(tenant: &Tenant, request: &Decided) -> bool {
    !request.path.verbatim
        && request.methods.iter().all(|m| tenant.public_paths.iter().any(|r| rule_matches(r, m, &request.path)))
}

/// Groups and roles after mapping a user's IdP groups through the tenant's rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    /// Whether any mapping rule (not just defaults) applied.
    pub any_mapped: bool,
}

pub fn map_groups(settings: &GroupSettings, external: &[String]) -> Mapped {
    let mut groups: BTreeSet<String> = settings.default.iter().cloned().collect();
    let mut any_mapped = false;
    for g in external {
        if let Some(internal) = settings.map.get(g) {
            any_mapped = true;
            groups.extend(internal.iter().cloned());
        } else if !settings.mirror {
            groups.insert(g.clone());
        }
    }
    let roles: Vec<String> = settings
        .roles
        .iter()
        .filter(|(_, granting)| granting.iter().any(|g| groups.contains(g) || external.contains(g)))
        .map(|(role, _)| role.clone())
        .collect();
    if !roles.is_empty() {
        any_mapped = true;
    }
    Mapped { groups: groups.into_iter().collect(), roles, any_mapped }
}

/// The identity facts access rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub email: Option<&'a str>,
    pub email_verified: bool,
    pub groups: &'a [String],
    pub roles: &'a [String],
    /// Scopes of the bearer token (none for a session).
    pub scopes: &'a [String],
    /// A client acting for itself (client credentials), not a person.
    pub machine: bool,
    /// The claims rules can match: a bearer token's, or a session's identity as claims.
    pub claims: &'a Map<String, Value>,
    /// The request's edge context.
    pub edge: &'a EdgeContext,
}

/// The refusal of a request: by a rule (its index and name), or by the tenant's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The refusing rule's index; `None` for `policy_default: deny`.
    pub rule: Option<usize>,
    pub name: Option<String>,
    pub path: String,
}

impl Denied {
    /// How log lines and refusals name the rule.
    pub fn label(&self) -> String {
        match (&self.name, self.rule) {
            (Some(n), Some(i)) => format!("policy rule {i} ({n})"),
            (None, Some(i)) => format!("policy rule {i}"),
            _ => "the tenant's default (policy_default: deny)".to_owned(),
        }
    }
}

/// What decided a request: the rule (index and name) or the default, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Option<usize>,
    pub name: Option<String>,
    pub effect: Effect,
    pub method: String,
}

/// Whether a claim condition holds. `contains` is membership: an item of a list claim, or a
/// space-separated word of a string claim (never a substring: `admin` is not in
/// `superadmin`, `@acme.test` not in `x@acme.test.evil`). A claim that is absent holds as
/// `unknown` says.
fn claim_holds(m: &ClaimMatch, claims: &Map<String, Value>, unknown: bool) -> bool {
    let Some(value) = crate::oidc::claim(claims, &m.claim) else {
        return unknown;
    };
    if let Some(expected) = &m.equals {
        return value == expected;
    }
    match (m.contains.as_ref(), value) {
        (Some(item), Value::Array(items)) => items.contains(item),
        (Some(Value::String(word)), Value::String(s)) => s.split_whitespace().any(|w| w == word),
        _ => false,
    }
}

/// Whether the request's edge context satisfies the rule's conditions on it. A condition on
/// something the edge does not report holds as `unknown` says: not for an allow rule, and
/// for a deny rule it does (a deny rule fails closed).
fn edge_holds(rule: &AccessRule, e: &EdgeContext, unknown: bool) -> bool {
    (rule.countries.is_empty()
        || e.country.as_ref().map_or(unknown, |c| rule.countries.iter().any(|r| r.eq_ignore_ascii_case(c))))
        && (rule.asns.is_empty() || e.asn.map_or(unknown, |a| rule.asns.contains(&a)))
        && rule.client_cert_verified.is_none_or(|want| e.client_cert_verified.map_or(unknown, |v| v == want))
        && rule.min_bot_score.is_none_or(|min| e.bot_score.map_or(unknown, |s| s >= min))
        && rule.max_bot_score.is_none_or(|max| e.bot_score.map_or(unknown, |s| s <= max))
}

fn rule_allows(rule: &AccessRule, s: &Subject<'_>) -> bool {
    // What a deny rule cannot know counts as holding: it refuses.
    let unknown = rule.effect == Effect::Deny;
    let kind_ok = match rule.principal {
        None => true,
        Some(PrincipalKind::Machine) => s.machine,
        Some(PrincipalKind::User) => !s.machine,
    };
    if !kind_ok || !rule.require_scopes.iter().all(|r| s.scopes.contains(r)) {
        return false;
    }
    if !rule.claims.iter().all(|m| claim_holds(m, s.claims, unknown)) || !edge_holds(rule, s.edge, unknown) {
        return false;
    }
    let unrestricted = rule.allow_groups.is_empty()
        && rule.allow_roles.is_empty()
        && rule.allow_emails.is_empty()
        && rule.allow_email_domains.is_empty();
    if unrestricted {
        return true;
    }
    let email = s.email.map(str::to_ascii_lowercase);
    rule.allow_groups.iter().any(|g| s.groups.contains(g))
        || rule.allow_roles.iter().any(|r| s.roles.contains(r))
        || email.as_deref().is_some_and(|e| rule.allow_emails.iter().any(|a| a.eq_ignore_ascii_case(e)))
        || (s.email_verified
            && email.as_deref().is_some_and(|e| {
                e.rsplit_once('@')
                    .is_some_and(|(_, d)| rule.allow_email_domains.iter().any(|a| a.eq_ignore_ascii_case(d)))
            }))
}

/// The decision for one method: rules in order; an allow rule whose path matches decides
/// (allowed when its conditions hold); a deny rule whose path matches refuses when its
/// conditions hold and otherwise passes to the next rule; no decision: `policy_default`.
pub fn decide(tenant: &Tenant, request: &Decided, method: &str, subject: &Subject<'_>) -> Decision {
    let decision = |allowed, rule: Option<(usize, &AccessRule)>, effect| Decision {
        allowed,
        rule: rule.map(|(i, _)| i),
        name: rule.and_then(|(_, r)| r.name.clone()),
        effect,
        method: method.to_owned(),
    };
    for (i, rule) in tenant.policy.iter().enumerate() {
        if !rule_matches(&rule.as_path_rule(), method, &request.path) {
            continue;
        }
        let holds = rule_allows(rule, subject);
        match rule.effect {
            Effect::Allow => return decision(holds, Some((i, rule)), Effect::Allow),
            Effect::Deny if holds => return decision(false, Some((i, rule)), Effect::Deny),
            Effect::Deny => {}
        }
    }
    decision(tenant.policy_default == Effect::Allow, None, tenant.policy_default)
}

/// Every method of the request must be allowed (with an honoured method override, both).
pub fn authorize(tenant: &Tenant, request: &Decided, subject: &Subject<'_>) -> Result<(), Denied> {
    for method in &request.methods {
        let d = decide(tenant, request, method, subject);
        if !d.allowed {
            return Err(Denied { rule: d.rule, name: d.name, path: request.path.matching.clone() });
        }
    }
    Ok(())
}

/// A question for [`check`]: would this request, by this principal, from this edge
/// context, be let through, and by which rule?
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckQuery {
    pub method: String,
    pub path: String,
    /// `user` (default) or `machine`.
    pub principal: Option<PrincipalKind>,
    /// The IdP's groups, mapped through the tenant's `groups` as at sign-in.
    pub groups: Vec<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub scopes: Vec<String>,
    /// Further claims for claim conditions (a session's identity claims, or a token's).
    pub claims: Map<String, Value>,
    pub edge: EdgeContext,
}

/// Answers a [`CheckQuery`] with the same path decision, public paths and rules as a real
/// request: `{"allowed", "public", "rule", "name", "effect", "groups", "roles"}`, or
/// `{"allowed": false, "ambiguous_path": …}`. Identity beyond the rules (a valid session
/// or token, the second factor, step-up) is assumed.
pub fn check(tenant: &Tenant, q: &CheckQuery) -> Value {
    let method = if q.method.is_empty() { "GET".to_owned() } else { q.method.to_ascii_uppercase() };
    let path = match crate::path::canonical(&q.path, tenant.path_case, &tenant.verbatim_paths) {
        Ok(p) => p,
        Err(a) => return serde_json::json!({"allowed": false, "ambiguous_path": a.to_string()}),
    };
    let decided = Decided { path, methods: vec![method.clone()] };
    if is_public(tenant, &decided) {
        return serde_json::json!({"allowed": true, "public": true, "method": method});
    }
    let mapped = map_groups(&tenant.groups, &q.groups);
    let mut claims = q.claims.clone();
    claims.entry("groups").or_insert_with(|| serde_json::json!(mapped.groups));
    claims.entry("roles").or_insert_with(|| serde_json::json!(mapped.roles));
    let subject = Subject {
        email: q.email.as_deref(),
        email_verified: q.email_verified,
        groups: &mapped.groups,
        roles: &mapped.roles,
        scopes: &q.scopes,
        machine: q.principal == Some(PrincipalKind::Machine),
        claims: &claims,
        edge: &q.edge,
    };
    let d = decide(tenant, &decided, &method, &subject);
    serde_json::json!({
        "allowed": d.allowed, "public": false, "rule": d.rule, "name": d.name, "effect": d.effect,
        "method": method, "groups": mapped.groups, "roles": mapped.roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{canonical, PathCase};
    use std::collections::BTreeMap;

    #[test]
    fn path_kinds() {
        assert!(path_matches(PathMatch::Exact, "/health", "/health"));
        assert!(!path_matches(PathMatch::Exact, "/health", "/health/x"));
        assert!(path_matches(PathMatch::Prefix, "/static", "/static/app.js"));
        assert!(path_matches(PathMatch::Prefix, "/static", "/static"));
        assert!(!path_matches(PathMatch::Prefix, "/static", "/staticfoo"));
        assert!(path_matches(PathMatch::Prefix, "/static/", "/static/a"));
        assert!(path_matches(PathMatch::Glob, "/assets/*.css", "/assets/site.css"));
        assert!(!path_matches(PathMatch::Glob, "/assets/*.css", "/assets/a/site.css"));
        assert!(path_matches(PathMatch::Glob, "/assets/**.css", "/assets/a/site.css"));
    }

    fn decided(raw: &str, method: &str, case: PathCase) -> Decided {
        let path = canonical(raw, case, &["/files/".to_owned()]).unwrap();
        Decided { path, methods: vec![method.to_owned()] }
    }

    fn tenant(extra: serde_json::Value) -> Tenant {
        let mut t = serde_json::json!({"id": "t", "hosts": ["a.test"], "origin": "https://o.test",
            "public_paths": [{"path": "/static/", "match": "prefix", "methods": ["GET"]}, {"path": "/", "match": "prefix"}]});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        serde_json::from_value(t).unwrap()
    }

    #[test]
    fn encoded_traversal_is_never_public() {
        // Ambiguous paths never get this far (see `path.rs`); verbatim ones are never public.
        let t = tenant(serde_json::json!({}));
        assert!(is_public(&t, &decided("/static/x", "GET", PathCase::Sensitive)));
        assert!(!is_public(&t, &decided("/files/a%2Fb", "GET", PathCase::Sensitive)));
        assert!(!is_public(&t, &decided("/files/a;b", "GET", PathCase::Sensitive)));
    }

    #[test]
    fn every_method_must_be_public_and_allowed() {
        let t =
            tenant(serde_json::json!({"public_paths": [{"path": "/static/", "match": "prefix", "methods": ["GET"]}],
            "policy": [{"path": "/items", "match": "prefix", "methods": ["DELETE"], "allow_roles": ["auditor"]}]}));
        let mut d = decided("/static/x", "GET", PathCase::Sensitive);
        assert!(is_public(&t, &d));
        d.methods.push("DELETE".into());
        assert!(!is_public(&t, &d));
        let claims = Map::new();
        let edge = EdgeContext::default();
        let s = Subject {
            email: None,
            email_verified: false,
            groups: &[],
            roles: &[],
            scopes: &[],
            machine: false,
            claims: &claims,
            edge: &edge,
        };
        let mut d = decided("/items/1", "POST", PathCase::Sensitive);
        assert!(authorize(&t, &d, &s).is_ok());
        d.methods.push("DELETE".into());
        assert_eq!(authorize(&t, &d, &s), Err(Denied { rule: Some(0), name: None, path: "/items/1".into() }));
    }

    #[test]
    fn case_insensitive_tenants_lower_case_the_patterns_too() {
        let t = tenant(serde_json::json!({"public_paths": [{"path": "/Static/", "match": "prefix"}]}));
        assert!(is_public(&t, &decided("/STATIC/x", "GET", PathCase::Insensitive)));
        assert!(!is_public(&t, &decided("/STATIC/x", "GET", PathCase::Sensitive)));
        assert!(is_public(&t, &decided("/Static/x", "GET", PathCase::Sensitive)));
    }

    #[test]
    fn group_mapping_default_map_mirror_roles() {
        let mut s = GroupSettings {
            default: vec!["users".into()],
            map: BTreeMap::from([("eng".to_string(), vec!["engineering".to_string(), "staff".to_string()])]),
            mirror: false,
            roles: BTreeMap::from([("superuser".to_string(), vec!["admins".to_string()])]),
            require_mapped_group: true,
        };
        let m = map_groups(&s, &["eng".into(), "other".into()]);
        assert_eq!(m.groups, vec!["engineering", "other", "staff", "users"]);
        assert!(m.any_mapped);
        assert!(m.roles.is_empty());
        s.mirror = true;
        let m = map_groups(&s, &["eng".into(), "other".into(), "admins".into()]);
        assert_eq!(m.groups, vec!["engineering", "staff", "users"]);
        assert_eq!(m.roles, vec!["superuser"]);
        let none = map_groups(&s, &["other".into()]);
        assert!(!none.any_mapped);
        assert_eq!(none.groups, vec!["users"]);
    }
}
