//! Header rules for forwarding to the origin, in the spirit of a proxy's request and
//! response filters: what is dropped, what is set, what the origin never sees from the
//! client (identity headers, the gateway's cookies).

use crate::config::{HeaderNames, Tenant};
use crate::http::Headers;
use crate::path::{header_key, MethodOverride, METHOD_OVERRIDE_HEADERS};

/// Hop-by-hop headers (RFC 9110 7.6.1) plus a few that only concern this hop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    // Not hop-by-hop, but never meant for the origin: CGI turns it into HTTP_PROXY, which
    // many HTTP clients read as their outbound proxy ("httpoxy").
    "proxy",
];

/// Header names (as [`header_key`] reads them) the gateway owns: identity in this product
/// or its presets, forwarding and client-address headers, and the path-override headers
/// some frameworks read instead of the request line. A client header whose key equals or
/// starts with one of these, or with a configured identity header name, never reaches the
/// origin, whatever its case and whether it is spelt with `_` or `-`.
const OWNED_PREFIXES: &[&str] = &[
    "x-portcullis",
    "x-auth-request",
    "x-forwarded",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    // Read by WSGI "reverse proxied" middleware as the mount point (stripped from the path)
    // and the scheme, and by Envoy-fronted apps as the original path.
    "x-script-name",
    "x-scheme",
    "x-envoy-original-path",
    // Service-token credentials (the gateway's, and Cloudflare Access's names): a secret
    // for the gateway, never for the origin.
    "cf-access-client",
];

/// Cookie names the gateway owns; the origin never sees them.
pub const COOKIE_PREFIX: &str = "__Host-portcullis_";

/// Identity to attach to an upstream request.
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    pub user_id: String,
    pub user: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub amr: Vec<String>,
    pub assertion: Option<String>,
    /// A bearer token's scopes (none for a session).
    pub scopes: Option<Vec<String>>,
    /// `user` or `machine`.
    pub principal: Option<&'static str>,
}

/// Makes a value safe for a header: no control characters; bytes outside printable ASCII
/// and `%` are percent-encoded (UTF-8), so names like "José" arrive intact and decodable.
pub fn header_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            ' '..='~' if c != '%' => out.push(c),
            c if c.is_control() => {}
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// A list for one header: items joined by `,`; a comma or backslash inside an item is
/// escaped with a backslash so the list splits back unambiguously.
pub fn header_list(items: &[String]) -> String {
    items.iter().map(|i| header_value(i).replace('\\', "\\\\").replace(',', "\\,")).collect::<Vec<_>>().join(",")
}

/// Whether a client header could be read by the origin as one the gateway owns.
pub fn is_owned_header(name: &str, names: &HeaderNames) -> bool {
    let key = header_key(name);
    OWNED_PREFIXES.iter().any(|p| key.starts_with(p)) || names.all().any(|n| key.starts_with(&header_key(n)))
}

/// Everything the upstream request needs to know about the client connection.
#[derive(Debug, Clone)]
pub struct ClientInfo<'a> {
    pub ip: Option<&'a str>,
    pub proto: &'a str,
    pub host: &'a str,
}

/// The request filter: from the client's headers to the headers the origin receives.
pub fn upstream_headers(
    incoming: &Headers,
    tenant: &Tenant,
    client: &ClientInfo<'_>,
    identity: Option<&IdentityHeaders>,
) -> Headers {
    let names = tenant.headers.names();
    // Headers listed in `Connection` are hop-by-hop for this connection too.
    let connection_listed: std::collections::HashSet<String> = incoming
        .get_all("connection")
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = Headers::new();
    for (name, value) in incoming.iter() {
        let lower = name.to_ascii_lowercase();
        let key = header_key(name);
        if HOP_BY_HOP.contains(&key.as_str())
            || connection_listed.contains(&lower)
            || key == "host"
            || is_owned_header(name, &names)
            || (tenant.method_override == MethodOverride::Drop && METHOD_OVERRIDE_HEADERS.contains(&key.as_str()))
            || (tenant.drop_underscore_headers && name.contains('_'))
        {
            continue;
        }
        if lower == "cookie" {
            let kept: Vec<&str> =
                value.split(';').map(str::trim).filter(|c| !c.is_empty() && !c.starts_with(COOKIE_PREFIX)).collect();
            if !kept.is_empty() {
                out.append("cookie", kept.join("; "));
            }
            continue;
        }
        out.append(name, value);
    }
    if let Some(ip) = client.ip {
        out.set("x-forwarded-for", header_value(ip));
    }
    out.set("x-forwarded-proto", client.proto);
    out.set("x-forwarded-host", header_value(client.host));
    if let Some(id) = identity {
        let mut put = |name: &Option<String>, value: String| {
            if let Some(n) = name {
                out.set(n, value);
            }
        };
        put(&names.user_id, header_value(&id.user_id));
        put(&names.user, header_value(&id.user));
        if let Some(e) = &id.email {
            put(&names.email, header_value(e));
        }
        if let Some(n) = &id.name {
            put(&names.name, header_value(n));
        }
        if let Some(p) = &id.preferred_username {
            put(&names.preferred_username, header_value(p));
        }
        put(&names.groups, header_list(&id.groups));
        put(&names.roles, header_list(&id.roles));
        put(&names.amr, header_list(&id.amr));
        if let Some(a) = &id.assertion {
            put(&names.assertion, a.clone());
        }
        if let Some(s) = &id.scopes {
            put(&names.scopes, header_list(s));
        }
        if let Some(p) = id.principal {
            put(&names.principal, p.to_owned());
        }
    }
    out
}

/// Whether a `Set-Cookie` value sets one of the gateway's own cookies (any case: browsers
/// read the `__Host-` prefix case-insensitively).
fn sets_gateway_cookie(value: &str) -> bool {
    // A nameless cookie (`=__Host-…=v`) is stored by some browsers under its value's name.
    let value = value.trim_start().strip_prefix('=').unwrap_or(value);
    let name = value.split(['=', ';']).next().unwrap_or_default().trim().trim_matches('"');
    name.len() >= COOKIE_PREFIX.len()
        && name.get(..COOKIE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(COOKIE_PREFIX))
}

/// The response filter: the origin's answer goes back as it is, less hop-by-hop headers and
/// any `Set-Cookie` for the gateway's own cookies (an origin must not plant or clear a
/// session or a pending sign-in).
pub fn downstream_headers(origin: &Headers) -> Headers {
    let mut out = origin.clone();
    out.retain(|n, v| {
        let lower = n.to_ascii_lowercase();
        let gateway_cookie = lower == "set-cookie" && sets_gateway_cookie(v);
        !HOP_BY_HOP.contains(&lower.as_str()) && !gateway_cookie
    });
    out
}

/// Whether a request asks to become a WebSocket (RFC 6455 4.1: a GET with `Upgrade:
/// websocket` and `Connection: Upgrade`, tokens in any case).
pub fn is_websocket_upgrade(method: &str, headers: &Headers) -> bool {
    let has_token = |name: &str, token: &str| {
        headers.get_all(name).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    method == "GET" && has_token("upgrade", "websocket") && has_token("connection", "upgrade")
}

/// The origin URL for a request path and query.
pub fn upstream_url(origin: &str, path: &str, query: Option<&str>) -> String {
    let base = origin.trim_end_matches('/');
    match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderPreset, HeaderSettings};

    fn tenant(preset: HeaderPreset) -> Tenant {
        let mut t: Tenant = serde_json::from_str(r#"{"id":"t","hosts":["a.test"],"origin":"https://o.test"}"#).unwrap();
        t.headers = HeaderSettings { preset, email: Some("X-Custom-Email".into()), ..Default::default() };
        t
    }

    #[test]
    fn strips_spoofed_identity_hop_by_hop_and_gateway_cookies() {
        let incoming = Headers::from_pairs([
            ("Host", "a.test"),
            ("X-Portcullis-User", "admin"),
            ("x-portcullis-anything", "x"),
            ("X-Auth-Request-Email", "ceo@a.test"),
            ("X-Custom-Email", "ceo@a.test"),
            ("Connection", "keep-alive, X-Secret-Hop"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "h2c"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("Cookie", "__Host-portcullis_session=v1.x; app=1; __Host-portcullis_pending=y"),
            ("Accept", "text/html"),
        ]);
        let client = ClientInfo { ip: Some("203.0.113.9"), proto: "https", host: "a.test" };
        let out = upstream_headers(&incoming, &tenant(HeaderPreset::Portcullis), &client, None);
        let names: Vec<String> = out.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        for gone in [
            "host",
            "x-portcullis-user",
            "x-portcullis-anything",
            "x-auth-request-email",
            "x-custom-email",
            "connection",
            "x-secret-hop",
            "keep-alive",
            "upgrade",
        ] {
            assert!(!names.contains(&gone.to_string()), "{gone} must be stripped");
        }
        assert_eq!(out.get("cookie"), Some("app=1"));
        assert_eq!(out.get("x-forwarded-for"), Some("203.0.113.9"));
        assert_eq!(out.get("x-forwarded-proto"), Some("https"));
        assert_eq!(out.get("x-forwarded-host"), Some("a.test"));
        assert_eq!(out.get("accept"), Some("text/html"));
    }

    #[test]
    fn sets_identity_headers_with_sanitised_values() {
        let id = IdentityHeaders {
            user_id: "https://idp/alice".into(),
            user: "alice".into(),
            email: Some("alice@a.test\r\nX-Evil: 1".into()),
            name: Some("José 50%".into()),
            groups: vec!["eng".into(), "a,b".into(), "c\\d".into()],
            roles: vec!["superuser".into()],
            ..Default::default()
        };
        let client = ClientInfo { ip: None, proto: "https", host: "a.test" };
        let out = upstream_headers(&Headers::new(), &tenant(HeaderPreset::Portcullis), &client, Some(&id));
        assert_eq!(out.get("X-Portcullis-User"), Some("https://idp/alice"));
        assert_eq!(out.get("X-Custom-Email"), Some("alice@a.testX-Evil: 1"));
        assert_eq!(out.get("X-Portcullis-Name"), Some("Jos%C3%A9 50%25"));
        assert_eq!(out.get("X-Portcullis-Groups"), Some("eng,a\\,b,c\\\\d"));
        assert_eq!(out.get("X-Portcullis-Roles"), Some("superuser"));
        let out = upstream_headers(&Headers::new(), &tenant(HeaderPreset::Oauth2Proxy), &client, Some(&id));
        assert_eq!(out.get("X-Auth-Request-User"), Some("alice"));
        assert_eq!(out.get("X-Portcullis-User"), None);
    }

    #[test]
    fn owned_headers_are_dropped_in_every_spelling() {
        let names = tenant(HeaderPreset::Portcullis).headers.names();
        for owned in [
            "X-Portcullis-User",
            "X_Portcullis_User",
            "x_portcullis_roles",
            "X-Portcullis_Groups",
            "X.Portcullis.Email",
            "X-Portcullis",
            "X_Auth_Request_Email",
            "x-auth-request_user",
            "X_Forwarded_For",
            "X-Forwarded_Host",
            "X-Forwarded-Prefix",
            "Forwarded",
            "FORWARDED_FOR",
            "X-Real-IP",
            "x_real_ip",
            "X-Client-IP",
            "True-Client-IP",
            "X-Original-URL",
            "X_Rewrite_Url",
            "X-Custom-Email",
            "X_CUSTOM_EMAIL",
            "X-Custom-Email-Verified",
        ] {
            assert!(is_owned_header(owned, &names), "{owned}");
        }
        for other in ["Accept", "X-Requested-With", "My_Header", "X-Portal", "Authorization", "X-Forward"] {
            assert!(!is_owned_header(other, &names), "{other}");
        }
    }

    #[test]
    fn underscore_names_and_method_overrides_follow_the_tenant() {
        let incoming = Headers::from_pairs([
            ("My_Header", "1"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X_HTTP_Method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("Accept", "*/*"),
        ]);
        let client = ClientInfo { ip: None, proto: "https", host: "a.test" };
        let mut t = tenant(HeaderPreset::Portcullis);
        let out = upstream_headers(&incoming, &t, &client, None);
        assert_eq!(out.get("my_header"), Some("1"));
        for gone in ["X-HTTP-Method-Override", "X_HTTP_Method", "x-method-override"] {
            assert_eq!(out.get(gone), None, "{gone}");
        }
        t.drop_underscore_headers = true;
        t.method_override = MethodOverride::Honour;
        let out = upstream_headers(&incoming, &t, &client, None);
        assert_eq!(out.get("my_header"), None);
        assert_eq!(out.get("X_HTTP_Method"), None);
        assert_eq!(out.get("X-HTTP-Method-Override"), Some("DELETE"));
        assert_eq!(out.get("accept"), Some("*/*"));
    }

    #[test]
    fn origin_cannot_set_the_gateways_cookies() {
        let h = Headers::from_pairs([
            ("Set-Cookie", "__Host-portcullis_session=v1.forged; Path=/; Secure"),
            ("Set-Cookie", "__host-PORTCULLIS_pending=x; Path=/; Secure"),
            ("set-cookie", " __Host-portcullis_saml_pending=; Max-Age=0"),
            ("Set-Cookie", "app=1"),
            ("Set-Cookie", "portcullis_note=1"),
        ]);
        let out = downstream_headers(&h);
        assert_eq!(out.get_all("set-cookie").collect::<Vec<_>>(), vec!["app=1", "portcullis_note=1"]);
    }

    #[test]
    fn origin_response_keeps_every_set_cookie() {
        let h = Headers::from_pairs([("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Transfer-Encoding", "chunked")]);
        let out = downstream_headers(&h);
        assert_eq!(out.get_all("set-cookie").collect::<Vec<_>>(), vec!["a=1", "b=2"]);
        assert_eq!(out.get("transfer-encoding"), None);
    }

    #[test]
    fn upstream_url_joins_base_path() {
        assert_eq!(upstream_url("https://o.test/base/", "/x", Some("a=1")), "https://o.test/base/x?a=1");
        assert_eq!(upstream_url("https://o.test", "/", None), "https://o.test/");
    }
}
