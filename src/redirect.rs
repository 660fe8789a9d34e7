//! Return-URL safety: after sign-in the user goes back only to a path on the same site.
//! Anything that could leave the site (absolute URLs, scheme-relative `//host`, backslash
//! tricks browsers normalise to slashes, encoded variants of those, control characters)
//! falls back to `/`.

const FALLBACK: &str = "/";

fn has_forbidden_chars(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || c == '\\' || c.is_whitespace())
}

/// Percent-decodes once (invalid escapes stay as they are).
fn decode_once(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn looks_external(s: &str) -> bool {
    !s.starts_with('/') || s.starts_with("//") || has_forbidden_chars(s)
}

/// The gateway route (after the prefix) a sign-in may return to.
pub const RESUMABLE_ROUTE: &str = "/sso/authorize";

/// Returns `raw` normalised if it is a safe same-site path (with optional query), else `/`.
/// `gateway_prefix` paths are refused too: returning into the gateway's own routes would
/// loop or trigger an action.
pub fn safe_return_path(raw: &str, gateway_prefix: &str) -> String {
    let out = safe_same_site_path(raw);
    let path = out.split('?').next().unwrap_or_default();
    // The one gateway route a sign-in returns to: a sign-in host's hand-off to a site, which
    // the sign-in was for (its code goes only to a member site's callback, bound to the
    // browser that started there).
    if path.strip_prefix(gateway_prefix) == Some(RESUMABLE_ROUTE) {
        return out;
    }
    if path == gateway_prefix || path.starts_with(&format!("{gateway_prefix}/")) {
        return FALLBACK.into();
    }
    out
}

/// Returns `raw` normalised if it is a safe same-site path (with optional query), else `/`;
/// for links back to the page just refused (the gateway's own routes included).
pub fn safe_same_site_path(raw: &str) -> String {
    if raw.is_empty() || raw.len() > 2048 || looks_external(raw) {
        return FALLBACK.into();
    }
    // Decoded forms must be safe too: an origin or browser may decode before using them.
    let mut current = raw.to_owned();
    for _ in 0..3 {
        let decoded = decode_once(&current);
        if decoded == current {
            break;
        }
        if looks_external(&decoded) || decoded.contains("/../") || decoded.ends_with("/..") {
            return FALLBACK.into();
        }
        current = decoded;
    }
    // Resolve against a placeholder origin: the result must stay on it.
    let Ok(base) = url::Url::parse("https://portcullis.invalid/") else {
        return FALLBACK.into();
    };
    let Ok(joined) = base.join(raw) else {
        return FALLBACK.into();
    };
    if joined.scheme() != "https" || joined.host_str() != Some("portcullis.invalid") || joined.port().is_some() {
        return FALLBACK.into();
    }
    let mut out = joined.path().to_owned();
    if let Some(q) = joined.query() {
        out.push('?');
        out.push_str(q);
    }
    if looks_external(&out) {
        return FALLBACK.into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::safe_return_path as s;

    const P: &str = "/_portcullis";

    #[test]
    fn keeps_same_site_paths() {
        assert_eq!(s("/", P), "/");
        assert_eq!(s("/dashboard", P), "/dashboard");
        assert_eq!(s("/a/b?x=1&y=%2F", P), "/a/b?x=1&y=%2F");
        assert_eq!(s("/a/./b/../c", P), "/a/c");
    }

    #[test]
    fn refuses_every_open_redirect_trick() {
        for evil in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "\\/evil.com",
            "/%2F%2Fevil.com",
            "/%2f/evil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/%09/evil.com",
            "/\t/evil.com",
            "/%0d%0aSet-Cookie:x=1",
            "/\r\nLocation: https://evil.com",
            "https://evil.com",
            "http://evil.com/",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "evil.com",
            "///evil.com",
            "/%252F%252Fevil.com",
            "/ /evil.com",
            "",
            "/_portcullis/logout",
            "/_portcullis",
            "/a/%2e%2e/%2e%2e/_portcullis/logout",
        ] {
            assert_eq!(s(evil, P), "/", "{evil:?} must fall back to /");
        }
    }

    #[test]
    fn refuses_overlong_values() {
        assert_eq!(s(&format!("/{}", "a".repeat(5000)), P), "/");
    }
}
