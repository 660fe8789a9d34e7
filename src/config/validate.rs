//! Validation: every field checked at load, every error reported with its path, and the
//! values parsed along the way kept ready for run time.

use std::collections::BTreeMap;

use super::provider::*;
use super::tenant::*;

use super::*;
use crate::crypto::KeyWithId;
use crate::secret::{Secret, Secrets};

/// What validating one provider parsed.
enum Ready {
    Oidc(Vec<regex_lite::Regex>),
    Saml(SamlReady),
}

struct Check {
    errors: Vec<ConfigError>,
}

impl Check {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { path: path.into(), message: message.into() });
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host == "127.0.0.1" || host == "[::1]" || host.ends_with(".localhost")
}

/// An issuer/endpoint must be https, except on loopback where local peers speak http.
fn check_idp_url(c: &mut Check, path: &str, value: &str) {
    match url::Url::parse(value) {
        Err(e) => c.err(path, format!("not a URL ({e})")),
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            if u.scheme() != "https" && !(u.scheme() == "http" && is_loopback(host)) {
                c.err(path, "not an https URL");
            }
            if u.query().is_some() || u.fragment().is_some() {
                c.err(path, "must not have a query or fragment");
            }
        }
    }
}

fn check_secret(c: &mut Check, secrets: &dyn Fn(&str) -> Option<Secret>, path: &str, name: &str, out: &mut Secrets) {
    match secrets(name) {
        Some(s) if !s.is_empty() => out.insert(name, s),
        _ => c.err(path, format!("Worker secret {name} is not set")),
    }
}

fn check_keys(
    c: &mut Check,
    secrets: &dyn Fn(&str) -> Option<Secret>,
    path: &str,
    keys: &[KeyRef],
    min_len: usize,
) -> Vec<KeyWithId> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, k) in keys.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !is_name(&k.id) && !k.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            c.err(format!("{p}.id"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
        }
        if !seen.insert(k.id.clone()) {
            c.err(format!("{p}.id"), format!("duplicate key id {}", k.id));
        }
        match secrets(&k.secret) {
            Some(s) if s.expose().len() >= min_len => out.push(KeyWithId { id: k.id.clone(), key: s }),
            Some(_) => {
                c.err(format!("{p}.secret"), format!("Worker secret {} is shorter than {min_len} bytes", k.secret))
            }
            None => c.err(format!("{p}.secret"), format!("Worker secret {} is not set", k.secret)),
        }
    }
    out
}

fn check_path_rule(c: &mut Check, path: &str, rule: &PathRule) {
    if !rule.path.starts_with('/') {
        c.err(format!("{path}.path"), "must start with '/'");
    }
    for (i, m) in rule.methods.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            c.err(format!("{path}.methods[{i}]"), "must be an upper-case HTTP method");
        }
    }
}

impl Config {
    pub(super) fn validate(mut self, secrets: &dyn Fn(&str) -> Option<Secret>) -> Result<Loaded, ConfigErrors> {
        // Metadata import first, so the checks below see the filled-in fields.
        let mut import_errors = Vec::new();
        for (ti, t) in self.tenants.iter_mut().enumerate() {
            for (pi, p) in t.providers.iter_mut().enumerate() {
                if let Provider::Saml(s) = p {
                    if let Err(e) = s.import_metadata() {
                        import_errors.push(ConfigError {
                            path: format!("tenants[{ti}].providers[{pi}].idp_metadata"),
                            message: e,
                        });
                    }
                }
            }
        }
        let mut c = Check { errors: import_errors };
        let mut named = Secrets::new();
        let g = &self.gateway;
        if !g.prefix.starts_with('/') || g.prefix.ends_with('/') || g.prefix.len() < 2 {
            c.err("gateway.prefix", "must start with '/' and not end with '/' (e.g. /_portcullis)");
        }
        if g.cookie_keys.is_empty() {
            c.err("gateway.cookie_keys", "at least one key is required");
        }
        let cookie_keys = check_keys(&mut c, secrets, "gateway.cookie_keys", &g.cookie_keys, 32);
        let mut encryption_keys = check_keys(&mut c, secrets, "gateway.encryption_keys", &g.encryption_keys, 32);
        if encryption_keys.is_empty() {
            encryption_keys = cookie_keys.clone();
        }
        let assertion_keys = check_keys(&mut c, secrets, "gateway.assertion_keys", &g.assertion_keys, 1);
        let mut signing_keys = Vec::with_capacity(assertion_keys.len());
        for (i, k) in assertion_keys.iter().enumerate() {
            match crate::assertion::SigningKey::parse(&k.id, &k.key) {
                Ok(key) => signing_keys.push(key),
                Err(e) => c.err(format!("gateway.assertion_keys[{i}].secret"), e),
            }
        }
        // Values parsed while validating, stored in the providers once the walk is over.
        let mut ready: Vec<(usize, usize, Ready)> = Vec::new();
        let admin_token = match &g.admin_token {
            Some(name) => match secrets(name) {
                Some(s) if s.expose().len() >= 32 => Some(s),
                Some(_) => {
                    c.err("gateway.admin_token", format!("Worker secret {name} is shorter than 32 bytes"));
                    None
                }
                None => {
                    c.err("gateway.admin_token", format!("Worker secret {name} is not set"));
                    None
                }
            },
            None => None,
        };
        if g.fetch_timeout_ms == 0 || g.fetch_timeout_ms > 30_000 {
            c.err("gateway.fetch_timeout_ms", "must be between 1 and 30000");
        }
        if g.login_rate_limit.per_minute > 0 && !(1..=100_000).contains(&g.login_rate_limit.burst) {
            c.err("gateway.login_rate_limit.burst", "must be between 1 and 100000");
        }
        if g.kv_timeout_ms == 0 || g.kv_timeout_ms > 30_000 {
            c.err("gateway.kv_timeout_ms", "must be between 1 and 30000");
        }
        if !(60..=3600).contains(&g.login_state_ttl) {
            c.err("gateway.login_state_ttl", "must be between 60 (the KV minimum) and 3600 seconds");
        }
        if let Some(w) = &g.audit_webhook {
            match url::Url::parse(&w.url) {
                Ok(u)
                    if u.scheme() == "https"
                        || (u.scheme() == "http" && is_loopback(u.host_str().unwrap_or_default())) => {}
                _ => c.err("gateway.audit_webhook.url", "not an https URL"),
            }
            if let Some(t) = &w.token {
                check_secret(&mut c, secrets, "gateway.audit_webhook.token", t, &mut named);
            }
            if !(1..=10).contains(&w.attempts) {
                c.err("gateway.audit_webhook.attempts", "must be between 1 and 10");
            }
        }
        if !(1..=3650).contains(&g.audit_retention_days) {
            c.err("gateway.audit_retention_days", "must be between 1 and 3650");
        }
        check_duration(&mut c, "gateway.last_seen_interval", g.last_seen_interval, 86400);
        if g.session_cache_ttl > 300 {
            c.err("gateway.session_cache_ttl", "must be at most 300 seconds (it is the revocation delay)");
        }

        if self.tenants.is_empty() {
            c.err("tenants", "at least one tenant is required");
        }
        let mut hosts = BTreeMap::new();
        let mut ids = std::collections::BTreeSet::new();
        for (ti, t) in self.tenants.iter().enumerate() {
            let tp = format!("tenants[{ti}]");
            if !is_name(&t.id) {
                c.err(format!("{tp}.id"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
            }
            if !ids.insert(t.id.clone()) {
                c.err(format!("{tp}.id"), format!("duplicate tenant id {}", t.id));
            }
            if t.hosts.is_empty() {
                c.err(format!("{tp}.hosts"), "at least one host is required");
            }
            for (hi, h) in t.hosts.iter().enumerate() {
                let norm = h.to_ascii_lowercase();
                if norm.is_empty() || norm.contains('/') || norm.contains(' ') {
                    c.err(format!("{tp}.hosts[{hi}]"), "must be a host name, optionally with :port");
                }
                if let Some(prev) = hosts.insert(norm.clone(), ti) {
                    c.err(format!("{tp}.hosts[{hi}]"), format!("host {norm} is already used by tenants[{prev}]"));
                }
            }
            if t.origin.is_empty() && t.sites.is_empty() {
                c.err(
                    format!("{tp}.origin"),
                    "is required (only a sign-in host, a tenant with `sites`, may leave it out)",
                );
            }
            match url::Url::parse(&t.origin) {
                _ if t.origin.is_empty() => {}
                Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host().is_some() => {
                    if u.query().is_some() || u.fragment().is_some() {
                        c.err(format!("{tp}.origin"), "must not have a query or fragment");
                    }
                }
                Ok(_) => c.err(format!("{tp}.origin"), "not an http(s) URL"),
                Err(e) => c.err(format!("{tp}.origin"), format!("not a URL ({e})")),
            }
            if let Some(logo) = &t.logo_url {
                let on_tenant_host = logo.starts_with('/') && !logo.starts_with("//");
                if !on_tenant_host && !logo.starts_with("https://") {
                    c.err(format!("{tp}.logo_url"), "must be a path on the tenant's host or an https URL");
                }
            }
            if let Some(color) = &t.accent_color {
                if !is_css_color(color) {
                    c.err(format!("{tp}.accent_color"), "must be a hex colour like #1f6feb");
                }
            }
            for (i, r) in t.public_paths.iter().enumerate() {
                check_path_rule(&mut c, &format!("{tp}.public_paths[{i}]"), r);
            }
            for (i, r) in t.policy.iter().enumerate() {
                check_path_rule(&mut c, &format!("{tp}.policy[{i}]"), &r.as_path_rule());
                for (ci, m) in r.claims.iter().enumerate() {
                    if m.claim.is_empty() || m.equals.is_some() == m.contains.is_some() {
                        c.err(
                            format!("{tp}.policy[{i}].claims[{ci}]"),
                            "needs a claim and exactly one of equals, contains",
                        );
                    }
                }
                for (ci, country) in r.countries.iter().enumerate() {
                    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                        c.err(
                            format!("{tp}.policy[{i}].countries[{ci}]"),
                            "must be an upper-case ISO 3166-1 alpha-2 code",
                        );
                    }
                }
                if r.name.as_deref().is_some_and(|n| n.is_empty() || n.len() > 64) {
                    c.err(format!("{tp}.policy[{i}].name"), "must be 1-64 characters");
                }
            }
            for (i, p) in t.verbatim_paths.iter().enumerate() {
                if let Err(e) = crate::path::check_verbatim_prefix(p) {
                    c.err(format!("{tp}.verbatim_paths[{i}]"), e);
                }
            }
            let s = &t.session;
            if s.idle_timeout < 60 {
                c.err(format!("{tp}.session.idle_timeout"), "must be at least 60 seconds");
            }
            if s.absolute_timeout < s.idle_timeout {
                c.err(format!("{tp}.session.absolute_timeout"), "must be at least the idle timeout");
            }
            if s.absolute_timeout > 30 * 86400 {
                c.err(format!("{tp}.session.absolute_timeout"), "must be at most 30 days");
            }
            if g.last_seen_interval != 0 && g.last_seen_interval >= s.idle_timeout {
                c.err(
                    "gateway.last_seen_interval",
                    format!("must be shorter than {tp}.session.idle_timeout, or 0 (a quarter of it)"),
                );
            }
            let m = &t.mfa;
            if m.digits != 6 && m.digits != 8 {
                c.err(format!("{tp}.mfa.digits"), "must be 6 or 8");
            }
            if !(15..=120).contains(&m.period) {
                c.err(format!("{tp}.mfa.period"), "must be between 15 and 120 seconds");
            }
            if m.window > 3 {
                c.err(format!("{tp}.mfa.window"), "must be at most 3 steps");
            }
            if m.max_failures == 0 || m.failure_window < 60 || m.lockout < 60 {
                c.err(
                    format!("{tp}.mfa"),
                    "max_failures must be positive; failure_window and lockout at least 60 seconds",
                );
            }
            check_duration(&mut c, &format!("{tp}.mfa.failure_window"), m.failure_window, 86_400);
            check_duration(&mut c, &format!("{tp}.mfa.lockout"), m.lockout, 86_400);
            if !(30..=3600).contains(&m.fresh_sign_in) {
                c.err(
                    format!("{tp}.mfa.fresh_sign_in"),
                    "must be between 30 and 3600 seconds: the time from a fresh IdP sign-in to adding a factor",
                );
            }
            for (i, r) in m.step_up.iter().enumerate() {
                check_path_rule(&mut c, &format!("{tp}.mfa.step_up[{i}]"), &r.as_path_rule());
                if r.max_age < 30 {
                    c.err(format!("{tp}.mfa.step_up[{i}].max_age"), "must be at least 30 seconds");
                }
                check_duration(&mut c, &format!("{tp}.mfa.step_up[{i}].max_age"), r.max_age, 30 * 86400);
                if r.factor == super::StepUpFactor::Passkey && !m.allows(super::MfaMethod::Passkey) {
                    c.err(format!("{tp}.mfa.step_up[{i}].factor"), "demands a passkey, but mfa.methods has none");
                }
            }
            check_mfa_methods(&mut c, &tp, t);
            let names = t.headers.names();
            for n in names.all() {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    c.err(format!("{tp}.headers"), format!("invalid header name {n:?}"));
                }
            }
            validate_bearer(&mut c, &tp, t);
            if !(1..=600_000).contains(&t.origin_timeout_ms) {
                c.err(format!("{tp}.origin_timeout_ms"), "must be between 1 and 600000 milliseconds");
            }
            let mut pnames = std::collections::BTreeSet::new();
            for (pi, p) in t.providers.iter().enumerate() {
                let pp = format!("{tp}.providers[{pi}]");
                if !is_name(p.name()) {
                    c.err(format!("{pp}.name"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
                }
                if !pnames.insert(p.name().to_owned()) {
                    c.err(format!("{pp}.name"), format!("duplicate provider name {}", p.name()));
                }
                if p.button().label.trim().is_empty() {
                    c.err(format!("{pp}.label"), "is required (the login button's text)");
                }
                for (field, v) in [("background", &p.button().background), ("color", &p.button().color)] {
                    if let Some(v) = v {
                        if !is_css_color(v) {
                            c.err(format!("{pp}.{field}"), "must be a hex colour like #1f6feb");
                        }
                    }
                }
                let parsed = match p {
                    Provider::Oidc(o) => Ready::Oidc(validate_oidc(&mut c, &pp, o, secrets, &mut named)),
                    Provider::Saml(s) => Ready::Saml(validate_saml(&mut c, &pp, s, secrets, &mut named)),
                };
                ready.push((ti, pi, parsed));
            }
        }
        let groups = check_sign_in_groups(&mut c, &self.tenants);
        for (site, central) in groups {
            // A site's second factor is the sign-in host's (same factors, same enforcement),
            // except its own step-up rules, which are checked again against what it gets.
            let mut mfa = self.tenants[central].mfa.clone();
            mfa.step_up = std::mem::take(&mut self.tenants[site].mfa.step_up);
            self.tenants[site].mfa = mfa;
            self.tenants[site].sign_in_via = Some(self.tenants[central].id.clone());
            check_site_step_up(&mut c, site, &self.tenants[site], &self.tenants[central].id);
        }
        for (ti, pi, parsed) in ready {
            match (&mut self.tenants[ti].providers[pi], parsed) {
                (Provider::Oidc(o), Ready::Oidc(audiences)) => o.audiences = audiences,
                (Provider::Saml(s), Ready::Saml(r)) => s.ready = r,
                _ => {}
            }
        }
        if c.errors.is_empty() {
            Ok(Loaded { config: self, cookie_keys, encryption_keys, signing_keys, admin_token, secrets: named })
        } else {
            Err(ConfigErrors(c.errors))
        }
    }
}

/// Sign-in hosts and their sites: every site is another tenant, listed by one sign-in host
/// only, is not itself a sign-in host, and has no providers (people sign in centrally).
/// Returns (site index, sign-in host index) pairs.
fn check_sign_in_groups(c: &mut Check, tenants: &[Tenant]) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (ci, central) in tenants.iter().enumerate() {
        for (si, site) in central.sites.iter().enumerate() {
            let path = format!("tenants[{ci}].sites[{si}]");
            let Some(ti) = tenants.iter().position(|t| &t.id == site) else {
                c.err(path, format!("no tenant has the id {site:?}"));
                continue;
            };
            if ti == ci {
                c.err(path, "a sign-in host cannot list itself");
            } else if !tenants[ti].sites.is_empty() {
                c.err(path, format!("tenant {site:?} is a sign-in host itself"));
            } else if let Some((_, other)) = pairs.iter().find(|(s, _)| *s == ti) {
                c.err(path, format!("tenant {site:?} is already a site of tenants[{other}]"));
            } else {
                let at = format!("people sign in to this site at tenant {:?}: set it there", central.id);
                let site = &tenants[ti];
                if !site.providers.is_empty() {
                    c.err(format!("tenants[{ti}].providers"), format!("must be empty: {at}"));
                }
                // The identity a site gets is the sign-in host's, mapped there; its second
                // factor is the sign-in host's. A setting here would be ignored: refuse it.
                if to_json(&site.groups) != to_json(&super::GroupSettings::default()) {
                    c.err(format!("tenants[{ti}].groups"), format!("must be left out: {at}"));
                }
                let own = super::MfaSettings { step_up: Vec::new(), ..site.mfa.clone() };
                if to_json(&own) != to_json(&super::MfaSettings::default()) {
                    c.err(format!("tenants[{ti}].mfa"), format!("may only have step_up: {at}"));
                }
                pairs.push((ti, ci));
            }
        }
    }
    // Browsers do not keep cookies apart by port: two members of a group on one host name
    // would share (and overwrite) each other's `__Host-` cookies.
    for (ci, central) in tenants.iter().enumerate().filter(|(_, t)| !t.sites.is_empty()) {
        let members: Vec<usize> =
            std::iter::once(ci).chain(pairs.iter().filter(|(_, c)| *c == ci).map(|(s, _)| *s)).collect();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for &m in &members {
            for h in &tenants[m].hosts {
                let name = h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n).to_ascii_lowercase();
                match names.get(&name) {
                    Some(&other) if other != m => c.err(
                        format!("tenants[{m}].hosts"),
                        format!(
                            "{name} is also a host name of tenants[{other}] in the group of {:?}; cookies do not \
                             keep ports apart",
                            central.id
                        ),
                    ),
                    _ => {
                        names.insert(name, m);
                    }
                }
            }
        }
    }
    pairs
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// A site's step-up rules against the second factor it really has (its sign-in host's):
/// a rule that demands a passkey needs passkeys there, with a relying party id that covers
/// the site's hosts.
fn check_site_step_up(c: &mut Check, ti: usize, site: &super::Tenant, central: &str) {
    let m = &site.mfa;
    for (i, r) in m.step_up.iter().enumerate() {
        if r.factor != super::StepUpFactor::Passkey {
            continue;
        }
        let path = format!("tenants[{ti}].mfa.step_up[{i}].factor");
        if !m.allows(super::MfaMethod::Passkey) {
            c.err(&path, format!("demands a passkey, but the sign-in host {central:?} offers none"));
        } else if m.passkey.rp_id.is_none() {
            c.err(
                &path,
                format!(
                    "demands a passkey: the sign-in host {central:?} needs an mfa.passkey.rp_id that covers this site"
                ),
            );
        } else if let Some(rp) = &m.passkey.rp_id {
            for h in &site.hosts {
                let host = h.split(':').next().unwrap_or(h);
                if host != rp && !host.ends_with(&format!(".{rp}")) {
                    c.err(
                        &path,
                        format!("demands a passkey, but the sign-in host's rp_id {rp:?} does not cover {host:?}"),
                    );
                }
            }
        }
    }
}

fn is_css_color(v: &str) -> bool {
    let hex = v.strip_prefix('#').unwrap_or("");
    matches!(hex.len(), 3 | 6 | 8) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn validate_bearer(c: &mut Check, tp: &str, t: &Tenant) {
    let mut names = std::collections::BTreeSet::new();
    for (i, b) in t.bearer.iter().enumerate() {
        let bp = format!("{tp}.bearer[{i}]");
        match (&b.provider, &b.name, &b.issuer) {
            (Some(p), None, None) => {
                if !t.providers.iter().any(|x| x.name() == p && x.as_oidc().is_some()) {
                    c.err(format!("{bp}.provider"), format!("no OIDC provider {p:?} in this tenant"));
                }
            }
            (None, Some(n), Some(issuer)) => {
                if !is_name(n) {
                    c.err(format!("{bp}.name"), "must be 1-64 characters of a-z, 0-9, '-' or '_'");
                }
                check_idp_url(c, &format!("{bp}.issuer"), issuer);
            }
            _ => c.err(&bp, "needs either \"provider\", or \"name\" and \"issuer\""),
        }
        if !names.insert(b.label().to_owned()) {
            c.err(&bp, format!("{} is listed twice", b.label()));
        }
        if b.audiences.is_empty() || b.audiences.iter().any(String::is_empty) {
            c.err(format!("{bp}.audiences"), "at least one audience is required (the resource this site is)");
        }
        if b.algorithms.is_empty() {
            c.err(format!("{bp}.algorithms"), "at least one algorithm is required");
        }
        for (ai, a) in b.algorithms.iter().enumerate() {
            if !crate::crypto::ASYMMETRIC_JWS_ALGS.contains(&a.as_str()) {
                c.err(format!("{bp}.algorithms[{ai}]"), format!("{a:?} is not an accepted asymmetric algorithm"));
            }
        }
        if b.principals.is_empty() {
            c.err(format!("{bp}.principals"), "at least one of \"machine\" and \"user\" is required");
        }
        if b.principals.contains(&PrincipalKind::User) && t.mfa.required {
            c.err(
                format!("{bp}.principals"),
                "\"user\" tokens cannot pass a second factor, and this tenant requires one (mfa.required)",
            );
        }
        if b.clock_skew > 600 {
            c.err(format!("{bp}.clock_skew"), "must be at most 600 seconds");
        }
        if b.discovery_ttl < 60 || b.jwks_ttl < 60 {
            c.err(format!("{bp}.discovery_ttl"), "cache TTLs must be at least 60 seconds (the KV minimum)");
        }
    }
}

fn validate_oidc(
    c: &mut Check,
    pp: &str,
    o: &OidcProvider,
    secrets: &dyn Fn(&str) -> Option<Secret>,
    named: &mut Secrets,
) -> Vec<regex_lite::Regex> {
    check_idp_url(c, &format!("{pp}.issuer"), &o.issuer);
    if o.client_id.is_empty() {
        c.err(format!("{pp}.client_id"), "is required");
    }
    match (&o.client_secret, o.token_auth) {
        (None, TokenAuth::ClientSecretBasic | TokenAuth::ClientSecretPost) => {
            c.err(format!("{pp}.client_secret"), "is required unless token_auth is \"none\"")
        }
        (Some(name), _) => check_secret(c, secrets, &format!("{pp}.client_secret"), name, named),
        (None, TokenAuth::None) => {}
    }
    if o.token_auth == TokenAuth::None && !o.pkce {
        c.err(format!("{pp}.pkce"), "a public client (token_auth none) must use PKCE");
    }
    if o.allow_hmac_id_tokens && o.client_secret.is_none() {
        c.err(format!("{pp}.allow_hmac_id_tokens"), "needs a client secret");
    }
    if !o.scopes.iter().any(|s| s == "openid") {
        c.err(format!("{pp}.scopes"), "must include \"openid\"");
    }
    for (k, _) in o.extra_params.iter() {
        const RESERVED: &[&str] = &[
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
        ];
        if RESERVED.contains(&k.as_str()) {
            c.err(format!("{pp}.extra_params.{k}"), "is set by the gateway and cannot be overridden");
        }
    }
    let mut audiences = Vec::with_capacity(o.trusted_audiences.len());
    for (i, re) in o.trusted_audiences.iter().enumerate() {
        match regex_lite::Regex::new(&format!("^(?:{re})$")) {
            Ok(r) => audiences.push(r),
            Err(e) => c.err(format!("{pp}.trusted_audiences[{i}]"), format!("invalid regex: {e}")),
        }
    }
    if o.clock_skew > 600 {
        c.err(format!("{pp}.clock_skew"), "must be at most 600 seconds");
    }
    if o.iat_window == 0 {
        c.err(format!("{pp}.iat_window"), "must be positive");
    }
    check_duration(c, &format!("{pp}.iat_window"), o.iat_window, 86400);
    check_duration(c, &format!("{pp}.discovery_ttl"), o.discovery_ttl, MAX_CACHE_TTL);
    check_duration(c, &format!("{pp}.jwks_ttl"), o.jwks_ttl, MAX_CACHE_TTL);
    if o.discovery_ttl < 60 || o.jwks_ttl < 60 {
        c.err(format!("{pp}.discovery_ttl"), "cache TTLs must be at least 60 seconds (the KV minimum)");
    }
    audiences
}

fn validate_saml(
    c: &mut Check,
    pp: &str,
    s: &SamlConnection,
    secrets: &dyn Fn(&str) -> Option<Secret>,
    named: &mut Secrets,
) -> SamlReady {
    let mut ready = SamlReady::default();
    match &s.sp_private_key {
        Some(name) => match secrets(name) {
            Some(secret) => match crate::crypto::rsa_private_key(secret.expose_str()) {
                Ok(key) => {
                    ready.sp_key = Some(std::rc::Rc::new(key));
                    named.insert(name, secret)
                }
                Err(e) => c.err(format!("{pp}.sp_private_key"), format!("Worker secret {name}: {e}")),
            },
            None => c.err(format!("{pp}.sp_private_key"), format!("Worker secret {name} is not set")),
        },
        None if s.sign_requests => c.err(format!("{pp}.sign_requests"), "needs sp_private_key"),
        None => {}
    }
    if let Some(cert) = &s.sp_certificate {
        match crate::saml::dsig::IdpCertificate::from_pem_or_base64(cert) {
            Ok(_) => ready.sp_certificate = crate::crypto::pem_or_base64_der(cert).map(|d| crate::crypto::b64(&d)),
            Err(_) => c.err(format!("{pp}.sp_certificate"), "not a usable certificate"),
        }
    }
    // With `idp_metadata_url` the fetched metadata fills what is left out, so nothing is
    // required here; whatever is given is checked all the same.
    let from_metadata = s.idp_metadata_url.is_some();
    if let Some(u) = &s.idp_metadata_url {
        check_idp_url(c, &format!("{pp}.idp_metadata_url"), u);
        if s.metadata_ttl < 60 {
            c.err(format!("{pp}.metadata_ttl"), "must be at least 60 seconds (the KV minimum)");
        }
    }
    check_duration(c, &format!("{pp}.metadata_ttl"), s.metadata_ttl, MAX_CACHE_TTL);
    if s.idp_entity_id.is_empty() && !from_metadata {
        c.err(format!("{pp}.idp_entity_id"), "is required (or give idp_metadata or idp_metadata_url)");
    }
    let sso_left_to_metadata = s.idp_sso_url.is_empty() && from_metadata;
    if !sso_left_to_metadata && !is_idp_url(&s.idp_sso_url) {
        c.err(format!("{pp}.idp_sso_url"), "not an https URL");
    }
    if let Some(slo) = &s.idp_slo_url {
        if !is_idp_url(slo) {
            c.err(format!("{pp}.idp_slo_url"), "not an https URL");
        }
    }
    if s.idp_certificates.is_empty() && !from_metadata {
        c.err(format!("{pp}.idp_certificates"), "at least one signing certificate is required");
    }
    for (i, cert) in s.idp_certificates.iter().enumerate() {
        match crate::saml::dsig::IdpCertificate::from_pem_or_base64(cert) {
            Ok(parsed) => ready.idp_certificates.push(parsed),
            Err(e) => c.err(format!("{pp}.idp_certificates[{i}]"), format!("not a usable certificate: {e}")),
        }
    }
    if s.clock_skew > 600 {
        c.err(format!("{pp}.clock_skew"), "must be at most 600 seconds");
    }
    ready
}

/// An IdP endpoint: https, or http on loopback (local peers in development and tests).
pub fn is_idp_url(value: &str) -> bool {
    url::Url::parse(value)
        .map(|u| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u.host_str().unwrap_or_default())))
        == Ok(true)
}

/// Longest cache lifetime accepted (discovery, JWKS, SAML metadata): 30 days.
pub(super) const MAX_CACHE_TTL: u64 = 30 * 86400;

/// Refuses a duration above `max` seconds. Every duration in the document has an upper
/// bound, so none of the time arithmetic on them (to milliseconds, added to the current
/// time) can overflow, whatever the document says.
fn check_duration(c: &mut Check, path: &str, value: u64, max: u64) {
    if value > max {
        c.err(path, format!("must be at most {max} seconds"));
    }
}

/// `mfa.methods` names each method once; `mfa.passkey.rp_id` is a registrable suffix of
/// every host of the tenant (the browser refuses any other).
fn check_mfa_methods(c: &mut Check, tp: &str, t: &super::Tenant) {
    let m = &t.mfa;
    if m.methods.is_empty() {
        c.err(format!("{tp}.mfa.methods"), "must name at least one method (passkey, totp)");
    }
    for (i, a) in m.methods.iter().enumerate() {
        if m.methods[..i].contains(a) {
            c.err(format!("{tp}.mfa.methods"), format!("{a:?} twice"));
        }
    }
    if let Some(rp) = &m.passkey.rp_id {
        let valid = !rp.is_empty()
            && rp.contains('.')
            && rp.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            c.err(format!("{tp}.mfa.passkey.rp_id"), "must be a lowercase domain name");
        }
        for h in &t.hosts {
            let host = h.split(':').next().unwrap_or(h);
            if host != rp && !host.ends_with(&format!(".{rp}")) {
                c.err(format!("{tp}.mfa.passkey.rp_id"), format!("is not {host:?} nor a parent domain of it"));
            }
        }
    }
}
