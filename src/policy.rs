//! Path rules (public paths, access policy) and group/role mapping. Shared by every
//! identity provider of a tenant; all decisions fail closed.

use std::collections::BTreeSet;

use crate::config::{AccessRule, GroupSettings, PathMatch, PathRule, Tenant};

/// Percent-decodes a path for matching; `None` if it hides dot segments or encoded
/// separators that an origin might interpret differently from the gateway.
pub fn normalised_path(path: &str) -> Option<String> {
    let decoded = percent_decode(path)?;
    if decoded.contains("/../") || decoded.ends_with("/..") || decoded.contains("/./") || decoded.contains('\\') {
        return None;
    }
    if decoded.contains('\0') {
        return None;
    }
    Some(decoded)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Glob match: `*` matches within one segment, `**` across segments.
fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                (0..=s.len()).any(|i| go(rest, &s[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                let mut i = 0;
                loop {
                    if go(rest, &s[i..]) {
                        return true;
                    }
                    if i == s.len() || s[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
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

pub fn rule_matches(rule: &PathRule, method: &str, path: &str) -> bool {
    (rule.methods.is_empty() || rule.methods.iter().any(|m| m == method)) && path_matches(rule.kind, &rule.path, path)
}

/// Whether the request may pass without a session.
pub fn is_public(tenant: &Tenant, method: &str, raw_path: &str) -> bool {
    let Some(path) = normalised_path(raw_path) else {
        return false;
    };
    tenant.public_paths.iter().any(|r| rule_matches(r, method, &path))
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: usize,
    pub path: String,
}

fn rule_allows(rule: &AccessRule, s: &Subject<'_>) -> bool {
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

/// First matching rule decides; no matching rule allows any signed-in user. A path that
/// cannot be normalised is refused, since it is not clear which rule would apply.
pub fn authorize(tenant: &Tenant, method: &str, raw_path: &str, subject: &Subject<'_>) -> Result<(), Denied> {
    let Some(path) = normalised_path(raw_path) else {
        return Err(Denied { rule: usize::MAX, path: raw_path.to_owned() });
    };
    for (i, rule) in tenant.policy.iter().enumerate() {
        if rule_matches(&rule.as_path_rule(), method, &path) {
            return if rule_allows(rule, subject) { Ok(()) } else { Err(Denied { rule: i, path }) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn encoded_traversal_is_never_public() {
        assert_eq!(normalised_path("/static/%2e%2e/admin"), None);
        assert_eq!(normalised_path("/static/..%2Fadmin"), None);
        assert_eq!(normalised_path("/static%5C..%5Cadmin"), None);
        assert_eq!(normalised_path("/a%20b").as_deref(), Some("/a b"));
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
