//! The gateway's own routes, declared once.
//!
//! [`ROUTES`] drives everything that depends on a route: which handler the dispatcher calls
//! ([`Route::id`]), the methods answered and the `Allow` header of a 405 or an OPTIONS
//! answer, whether HEAD is answered as GET, how many body bytes the shell reads, and which
//! session state the route acts for ([`Accepts`], enforced by the handler's argument types
//! in `state.rs`). Paths are after the prefix (`/_portcullis` by default); `NAME` stands
//! for one path segment naming a provider; a path ending in `/*` covers everything below it.

use super::state::Accepts;

/// The handler a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Health,
    Jwks,
    StyleCss,
    TenantCss,
    Login,
    OidcCallback,
    SamlAcs,
    SamlMetadata,
    SamlSlo,
    BackchannelLogout,
    FrontchannelLogout,
    LoggedOut,
    Continue,
    Me,
    Mfa,
    MfaEnroll,
    MfaBackupCodes,
    /// `POST {prefix}/mfa/passkey`: a passkey assertion as the second factor.
    MfaPasskey,
    /// `GET {prefix}/mfa/passkeys`: the user's passkeys.
    MfaPasskeys,
    MfaPasskeyRegister,
    MfaPasskeyRemove,
    Logout,
    /// `GET {prefix}/sso/authorize`, at a sign-in host: a hand-off code for one of its sites.
    SsoAuthorize,
    /// `GET {prefix}/sso/callback`, at a site: the hand-off code becomes the site's session.
    SsoCallback,
    /// The admin API: the caller is authenticated first, then `admin.rs` reads the path.
    Admin,
    /// `POST {prefix}/bench`, only with the `bench` feature.
    Bench,
}

/// One gateway route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub path: &'static str,
    pub id: RouteId,
    /// Methods besides HEAD and OPTIONS (OPTIONS is answered for every route).
    pub methods: &'static [&'static str],
    /// HEAD is answered as GET without a body. Never where a GET spends single-use state
    /// (a HEAD must not spend a sign-in or a logout request).
    pub head: bool,
    pub accepts: Accepts,
    /// Most body bytes the shell reads for this route.
    pub body_limit: usize,
}

/// Body limit of the routes that take forms.
pub const MAX_FORM_BODY: usize = 64 * 1024;
/// Body limit of the ACS, which takes SAML responses.
pub const MAX_ACS_BODY: usize = 1024 * 1024;

const fn route(
    path: &'static str,
    id: RouteId,
    methods: &'static [&'static str],
    head: bool,
    accepts: Accepts,
) -> Route {
    Route { path, id, methods, head, accepts, body_limit: MAX_FORM_BODY }
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const GET_POST: &[&str] = &["GET", "POST"];

/// Every gateway route. The jwks document lives outside the prefix (its path starts with
/// `/.well-known/`).
pub const ROUTES: &[Route] = &[
    route("/health", RouteId::Health, GET, true, Accepts::NoSession),
    route("/.well-known/portcullis/jwks.json", RouteId::Jwks, GET, true, Accepts::NoSession),
    route("/assets/style.css", RouteId::StyleCss, GET, true, Accepts::NoSession),
    route("/assets/tenant.css", RouteId::TenantCss, GET, true, Accepts::NoSession),
    route("/login", RouteId::Login, GET, true, Accepts::NoSession),
    route("/oidc/callback", RouteId::OidcCallback, GET, false, Accepts::NoSession),
    route("/oidc/NAME/callback", RouteId::OidcCallback, GET, false, Accepts::NoSession),
    Route { body_limit: MAX_ACS_BODY, ..route("/saml/acs", RouteId::SamlAcs, POST, false, Accepts::NoSession) },
    route("/saml/metadata", RouteId::SamlMetadata, GET, true, Accepts::NoSession),
    route("/saml/slo", RouteId::SamlSlo, GET, false, Accepts::NoSession),
    route("/oidc/backchannel-logout", RouteId::BackchannelLogout, POST, false, Accepts::NoSession),
    route("/oidc/NAME/backchannel-logout", RouteId::BackchannelLogout, POST, false, Accepts::NoSession),
    route("/oidc/frontchannel-logout", RouteId::FrontchannelLogout, GET, false, Accepts::NoSession),
    route("/logged-out", RouteId::LoggedOut, GET, true, Accepts::NoSession),
    route("/continue", RouteId::Continue, GET, true, Accepts::NoSession),
    route("/me", RouteId::Me, GET, true, Accepts::Complete),
    route("/mfa", RouteId::Mfa, GET_POST, true, Accepts::Either),
    route("/mfa/enroll", RouteId::MfaEnroll, GET_POST, true, Accepts::Enrolment),
    route("/mfa/backup-codes", RouteId::MfaBackupCodes, POST, false, Accepts::Complete),
    route("/mfa/passkey", RouteId::MfaPasskey, POST, false, Accepts::Either),
    route("/mfa/passkeys", RouteId::MfaPasskeys, GET, true, Accepts::Complete),
    route("/mfa/passkeys/register", RouteId::MfaPasskeyRegister, GET_POST, false, Accepts::Enrolment),
    route("/mfa/passkeys/remove", RouteId::MfaPasskeyRemove, POST, false, Accepts::Complete),
    route("/logout", RouteId::Logout, GET_POST, true, Accepts::Either),
    route("/sso/authorize", RouteId::SsoAuthorize, GET, false, Accepts::Complete),
    route("/sso/callback", RouteId::SsoCallback, GET, false, Accepts::NoSession),
    route("/admin/*", RouteId::Admin, &["GET", "POST"], true, Accepts::Complete),
    Route { body_limit: MAX_ACS_BODY, ..route("/bench", RouteId::Bench, POST, false, Accepts::NoSession) },
];

/// The route for a request path (the full path, prefix included), and the provider name
/// where the route has a `NAME` segment.
pub fn find<'p>(prefix: &str, path: &'p str) -> Option<(&'static Route, Option<&'p str>)> {
    let (inner, root) = match path.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => (rest, false),
        _ => (path, true),
    };
    ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/.well-known/") == root)
        // Without the `bench` feature, the bench route is no route at all.
        .filter(|r| cfg!(feature = "bench") || r.id != RouteId::Bench)
        .find_map(|r| matches(r, inner).map(|n| (r, n)))
}

fn matches<'p>(r: &'static Route, path: &'p str) -> Option<Option<&'p str>> {
    if let Some(below) = r.path.strip_suffix("/*") {
        return path.strip_prefix(below).filter(|rest| rest.starts_with('/')).map(|_| None);
    }
    let mut name = None;
    let mut pattern = r.path.split('/');
    let mut actual = path.split('/');
    loop {
        match (pattern.next(), actual.next()) {
            (None, None) => return Some(name),
            (Some("NAME"), Some(seg)) if !seg.is_empty() => name = Some(seg),
            (Some(p), Some(a)) if p == a => {}
            _ => return None,
        }
    }
}

impl Route {
    /// Whether the route answers `method` (HEAD where allowed, OPTIONS always).
    pub fn answers(&self, method: &str) -> bool {
        method == "OPTIONS" || (method == "HEAD" && self.head) || self.methods.contains(&method)
    }

    /// The `Allow` header: the route's methods, HEAD where it is answered, and OPTIONS.
    pub fn allow(&self) -> String {
        let mut all: Vec<&str> = Vec::with_capacity(self.methods.len() + 2);
        for m in self.methods {
            all.push(m);
            if *m == "GET" && self.head {
                all.push("HEAD");
            }
        }
        all.push("OPTIONS");
        all.join(", ")
    }
}

/// Every (method, route, state) a route acts for, HEAD and OPTIONS left out: what
/// `tests/flows/session_states.rs` enumerates against each session state. The admin API is
/// listed by its session routes.
pub fn route_sessions() -> impl Iterator<Item = (&'static str, &'static str, Accepts)> {
    ROUTES.iter().filter(|r| r.id != RouteId::Jwks && r.id != RouteId::Bench).flat_map(|r| {
        let paths: &'static [&'static str] = match r.id {
            RouteId::Admin => &["/admin/sessions", "/admin/sessions/revoke"],
            _ => std::slice::from_ref(&r.path),
        };
        paths.iter().flat_map(move |p| {
            r.methods
                .iter()
                .filter(move |m| r.id != RouteId::Admin || (**m == "GET") != p.ends_with("/revoke"))
                .map(move |m| (*m, *p, r.accepts))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_route_and_provider_name() {
        fn f(p: &str) -> Option<(RouteId, Option<&str>)> {
            find("/_p", p).map(|(r, n)| (r.id, n))
        }
        assert_eq!(f("/_p/login"), Some((RouteId::Login, None)));
        assert_eq!(f("/_p/oidc/corp/callback"), Some((RouteId::OidcCallback, Some("corp"))));
        assert_eq!(f("/_p/oidc//callback"), None);
        assert_eq!(f("/_p/oidc/a/b/callback"), None);
        assert_eq!(f("/_p/admin/sessions/revoke"), Some((RouteId::Admin, None)));
        assert_eq!(f("/_p/admin"), None);
        assert_eq!(f("/.well-known/portcullis/jwks.json"), Some((RouteId::Jwks, None)));
        assert_eq!(f("/_p/.well-known/portcullis/jwks.json"), None);
        assert_eq!(f("/_plogin"), None);
        assert_eq!(f("/_p/login/"), None);
        assert_eq!(f("/_p/nope"), None);
        assert_eq!(f("/_p/bench").is_some(), cfg!(feature = "bench"));
        // The prefix is matched as whole segments: a prefix that happens to begin the jwks
        // path does not hide it.
        assert_eq!(find("/.well", "/.well-known/portcullis/jwks.json").map(|(r, _)| r.id), Some(RouteId::Jwks));
    }

    #[test]
    fn allow_lists_head_only_where_a_get_spends_nothing() {
        let allow = |p: &str| find("/_p", p).map(|(r, _)| r.allow());
        assert_eq!(allow("/_p/login").as_deref(), Some("GET, HEAD, OPTIONS"));
        assert_eq!(allow("/_p/oidc/callback").as_deref(), Some("GET, OPTIONS"));
        assert_eq!(allow("/_p/logout").as_deref(), Some("GET, HEAD, POST, OPTIONS"));
        assert_eq!(allow("/_p/saml/acs").as_deref(), Some("POST, OPTIONS"));
        // The documented limits: 1 MiB for SAML responses, 64 KiB for forms.
        assert_eq!(find("/_p", "/_p/saml/acs").map(|(r, _)| r.body_limit), Some(1_048_576));
        assert_eq!(find("/_p", "/_p/mfa").map(|(r, _)| r.body_limit), Some(65_536));
    }

    #[test]
    fn a_route_answers_its_methods_head_where_allowed_and_options() {
        let route = |p: &str| find("/_p", p).map(|(r, _)| r).unwrap_or_else(|| panic!("{p} is no route"));
        let acs = route("/_p/saml/acs");
        assert!(acs.answers("POST") && acs.answers("OPTIONS"));
        assert!(!acs.answers("GET") && !acs.answers("HEAD") && !acs.answers("PUT"));
        // A HEAD never reaches a route whose GET spends single-use state.
        for p in ["/_p/oidc/callback", "/_p/oidc/corp/callback", "/_p/saml/slo", "/_p/oidc/frontchannel-logout"] {
            assert!(route(p).answers("GET") && !route(p).answers("HEAD"), "{p}");
        }
        let login = route("/_p/login");
        assert!(login.answers("HEAD") && login.answers("OPTIONS") && !login.answers("POST"));
        assert!(!route("/_p/logout").answers("DELETE"));
    }

    #[test]
    fn every_route_acts_for_one_session_state_per_method() {
        let rows: Vec<_> = route_sessions().collect();
        assert!(rows.contains(&("GET", "/admin/sessions", Accepts::Complete)));
        assert!(rows.contains(&("POST", "/admin/sessions/revoke", Accepts::Complete)));
        assert!(!rows.contains(&("POST", "/admin/sessions", Accepts::Complete)));
        assert!(rows.contains(&("POST", "/mfa/enroll", Accepts::Enrolment)));
        assert!(!rows.iter().any(|(_, p, _)| p.starts_with("/.well-known/") || *p == "/bench"), "not session routes");
        let mut seen = std::collections::HashSet::new();
        for (m, p, _) in &rows {
            assert!(seen.insert((m, p)), "{m} {p} twice");
        }
    }
}
