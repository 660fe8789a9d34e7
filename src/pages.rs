//! The pages the gateway renders from the templates in `www/`. Every dynamic value is
//! HTML-escaped; only fragments built here from escaped parts are inserted raw.
//! Every page carries the security headers in [`secure_headers`].

use crate::config::Tenant;
use crate::http::Response;

const LAYOUT: &str = include_str!("../www/layout.html");
const LOGIN: &str = include_str!("../www/login.html");
const ERROR: &str = include_str!("../www/error.html");
const LOGOUT: &str = include_str!("../www/logout.html");
const LOGGED_OUT: &str = include_str!("../www/logged_out.html");
const MFA: &str = include_str!("../www/mfa.html");
const ENROLL: &str = include_str!("../www/enroll.html");
const BACKUP_CODES: &str = include_str!("../www/backup_codes.html");
const MFA_TOTP: &str = include_str!("../www/mfa_totp.html");
const MFA_BACKUP: &str = include_str!("../www/mfa_backup.html");
const PASSKEY_GET: &str = include_str!("../www/passkey_get.html");
const PASSKEY_REGISTER: &str = include_str!("../www/passkey_register.html");
const PASSKEYS: &str = include_str!("../www/passkeys.html");
const SITES: &str = include_str!("../www/sites.html");
/// The one script of the gateway's pages: the WebAuthn ceremony. Inlined and allowed by
/// its hash in the page's CSP.
pub const WEBAUTHN_JS: &str = include_str!("../www/webauthn.js");
pub const STYLE_CSS: &str = include_str!("../www/style.css");

pub use crate::markup::escape;

/// Fills `{{name}}` (escaped) and `{{{name}}}` (raw, for fragments built from escaped parts).
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let raw = rest[start..].starts_with("{{{");
        let (open, close) = if raw { (3, "}}}") } else { (2, "}}") };
        let after = &rest[start + open..];
        let Some(end) = after.find(close) else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        let value = vars.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or("");
        if raw {
            out.push_str(value);
        } else {
            out.push_str(&escape(value));
        }
        rest = &after[end + close.len()..];
    }
    out.push_str(rest);
    out
}

/// Headers every gateway page carries.
pub fn secure_headers(mut r: Response, form_targets: &str) -> Response {
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' https: data:; form-action 'self'{form_targets}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    r.headers.set("content-security-policy", csp);
    r.headers.set("x-frame-options", "DENY");
    r.headers.set("referrer-policy", "no-referrer");
    r.headers.set("x-content-type-options", "nosniff");
    r.headers.set("cache-control", "no-store");
    r
}

/// Branding of the tenant the page is for (or a neutral one for unknown hosts).
#[derive(Debug, Clone, Copy)]
pub struct Brand<'a> {
    pub tenant: Option<&'a Tenant>,
    pub prefix: &'a str,
}

pub fn page(brand: Brand<'_>, status: u16, title: &str, content: &str) -> Response {
    let name =
        brand.tenant.map(|t| if t.name.is_empty() { t.id.as_str() } else { t.name.as_str() }).unwrap_or("Portcullis");
    let logo = brand
        .tenant
        .and_then(|t| t.logo_url.as_deref())
        .map(|u| format!(r#"<img src="{}" alt="">"#, escape(u)))
        .unwrap_or_default();
    let html = render(
        LAYOUT,
        &[("title", title), ("tenant_name", name), ("prefix", brand.prefix), ("logo", &logo), ("content", content)],
    );
    secure_headers(Response::html(status, html), "")
}

/// The tenant's stylesheet: accent colour and per-provider button colours. Served from
/// the gateway so the pages need no inline styles under the CSP. Colours are validated hex
/// values and provider names are `[a-z0-9_-]`, so nothing here can break out of CSS.
pub fn tenant_css(tenant: &Tenant) -> String {
    let mut css = String::new();
    if let Some(c) = &tenant.accent_color {
        css.push_str(&format!(":root {{ --accent: {c}; }}\n"));
    }
    for p in &tenant.providers {
        let b = p.button();
        let mut rules = String::new();
        if let Some(bg) = &b.background {
            rules.push_str(&format!(" background: {bg}; border-color: {bg};"));
        }
        if let Some(fg) = &b.color {
            rules.push_str(&format!(" color: {fg};"));
        }
        if !rules.is_empty() {
            css.push_str(&format!(".provider-{} {{{rules} }}\n", p.name()));
        }
    }
    css
}

/// One login button.
#[derive(Debug, Clone)]
pub struct ButtonView<'a> {
    pub name: &'a str,
    pub href: String,
    pub label: &'a str,
    pub icon: Option<&'a str>,
}

pub fn login_page(brand: Brand<'_>, buttons: &[ButtonView<'_>], notice: Option<&str>) -> Response {
    let items: String = buttons
        .iter()
        .map(|b| {
            let icon = b.icon.map(|i| format!(r#"<img src="{}" alt="">"#, escape(i))).unwrap_or_default();
            format!(
                r#"<li><a class="button provider provider-{}" href="{}">{icon}<span>Sign in with {}</span></a></li>"#,
                escape(b.name),
                escape(&b.href),
                escape(b.label)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let notice = notice.map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, escape(n))).unwrap_or_default();
    let content = render(LOGIN, &[("buttons", &items), ("notice", &notice)]);
    page(brand, 200, "Sign in", &content)
}

#[derive(Debug)]
pub struct ErrorView<'a> {
    pub status: u16,
    pub title: &'a str,
    pub message: &'a str,
    pub retry: Option<(&'a str, &'a str)>,
    pub reference: &'a str,
}

pub fn error_page(brand: Brand<'_>, e: &ErrorView<'_>) -> Response {
    let action = e
        .retry
        .map(|(href, label)| {
            format!(r#"<p><a class="button primary" href="{}">{}</a></p>"#, escape(href), escape(label))
        })
        .unwrap_or_default();
    let content = render(ERROR, &[("message", e.message), ("action", &action), ("ref", e.reference)]);
    page(brand, e.status, e.title, &content)
}

pub fn logout_page(brand: Brand<'_>, who: Option<&str>, csrf: &str) -> Response {
    let who = who.map(|w| format!(" as {w}")).unwrap_or_default();
    let content = render(LOGOUT, &[("who", &who), ("csrf", csrf), ("prefix", brand.prefix)]);
    // Signing out continues at the IdP (RP-initiated logout, SAML SLO): browsers apply
    // form-action to the redirect after the post, so this page allows leaving the site.
    secure_headers(page(brand, 200, "Sign out", &content), " https: http:")
}

pub fn logged_out_page(brand: Brand<'_>) -> Response {
    let content = render(LOGGED_OUT, &[("prefix", brand.prefix)]);
    page(brand, 200, "Signed out", &content)
}

/// A sign-in host's own page: who is signed in, and the sites of its group.
pub fn sites_page(brand: Brand<'_>, who: &str, sites: &[(String, String)]) -> Response {
    let list: String = sites
        .iter()
        .map(|(name, url)| format!(r#"<li><a class="button" href="{}">{}</a></li>"#, escape(url), escape(name)))
        .collect();
    let content = render(SITES, &[("who", who), ("sites", &list), ("prefix", brand.prefix)]);
    page(brand, 200, "Your sites", &content)
}

/// A message above a form: an error (`role=alert`) or a notice (`role=status`).
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    Error(&'a str),
    Info(&'a str),
}

fn notice_html(n: Option<Notice<'_>>) -> String {
    match n {
        Some(Notice::Error(t)) => format!(r#"<p class="error" role="alert">{}</p>"#, escape(t)),
        Some(Notice::Info(t)) => format!(r#"<p class="notice" role="status">{}</p>"#, escape(t)),
        None => String::new(),
    }
}

/// What the second-factor prompt offers, in this order: a passkey, a TOTP code, a backup code.
#[derive(Debug)]
pub struct MfaView<'a> {
    pub lead: &'a str,
    pub notice: Option<Notice<'a>>,
    pub csrf: &'a str,
    pub rd: &'a str,
    /// The passkey request options (JSON), when the user has passkeys.
    pub passkey_options: Option<&'a str>,
    pub totp: bool,
    pub backup: bool,
    /// Why the prompt is shown (`step_up`, `step_up_passkey`), kept through a refusal.
    pub reason: &'a str,
    /// What follows the factor (`add_passkey`), kept through a refusal.
    pub then: &'a str,
}

/// The second-factor prompt.
pub fn mfa_page(brand: Brand<'_>, v: &MfaView<'_>) -> Response {
    let common = [("prefix", brand.prefix), ("csrf", v.csrf), ("rd", v.rd), ("then", v.then)];
    let fallback = match (v.totp, v.backup) {
        (true, _) => "Use the code from your authenticator app or a backup code instead.",
        (false, true) => "Use a backup code instead.",
        (false, false) => "",
    };
    let action = format!("{}/mfa/passkey", brand.prefix);
    let passkey = v
        .passkey_options
        .map(|o| {
            let vars = [
                common.as_slice(),
                &[
                    ("action", &action),
                    ("options", o),
                    ("fallback", fallback),
                    ("reason", v.reason),
                    ("script", WEBAUTHN_JS),
                ],
            ]
            .concat();
            render(PASSKEY_GET, &vars)
        })
        .unwrap_or_default();
    let autofocus = if v.passkey_options.is_none() { " autofocus" } else { "" };
    let totp = if v.totp {
        render(MFA_TOTP, &[common.as_slice(), &[("autofocus", autofocus)]].concat())
    } else {
        String::new()
    };
    let backup = if v.backup { render(MFA_BACKUP, &common) } else { String::new() };
    let content = render(
        MFA,
        &[
            ("notice", &notice_html(v.notice)),
            ("lead", v.lead),
            ("passkey", &passkey),
            ("totp", &totp),
            ("backup", &backup),
        ],
    );
    let r = page(brand, 200, "Two-step verification", &content);
    if v.passkey_options.is_some() {
        with_script(r)
    } else {
        r
    }
}

/// Allows the WebAuthn script, by its hash, in a page's CSP.
fn with_script(mut r: Response) -> Response {
    let hash = crate::crypto::b64(&crate::crypto::sha256(WEBAUTHN_JS.as_bytes()));
    if let Some(csp) = r.headers.get("content-security-policy").map(str::to_owned) {
        r.headers.set("content-security-policy", format!("{csp}; script-src 'sha256-{hash}'"));
    }
    r
}

/// Values of the passkey registration page.
#[derive(Debug)]
pub struct PasskeyRegisterView<'a> {
    pub lead: &'a str,
    pub notice: Option<Notice<'a>>,
    /// The creation options (JSON).
    pub options: &'a str,
    pub name: &'a str,
    pub csrf: &'a str,
    pub rd: &'a str,
    /// Whether an authenticator app can be set up instead.
    pub totp: bool,
}

pub fn passkey_register_page(brand: Brand<'_>, v: &PasskeyRegisterView<'_>) -> Response {
    let (fallback, alternative) = if v.totp {
        let href = format!("{}/mfa/enroll?{}", brand.prefix, crate::http::query_encode(&[("rd", v.rd)]));
        (
            "Set up an authenticator app instead.",
            format!(r#"<p><a href="{}">Set up an authenticator app instead</a></p>"#, escape(&href)),
        )
    } else {
        ("Use a browser that supports passkeys.", String::new())
    };
    let content = render(
        PASSKEY_REGISTER,
        &[
            ("notice", &notice_html(v.notice)),
            ("lead", v.lead),
            ("prefix", brand.prefix),
            ("options", v.options),
            ("name", v.name),
            ("csrf", v.csrf),
            ("rd", v.rd),
            ("fallback", fallback),
            ("alternative", &alternative),
            ("script", WEBAUTHN_JS),
        ],
    );
    with_script(page(brand, 200, "Add a passkey", &content))
}

/// One passkey in the list.
#[derive(Debug)]
pub struct PasskeyRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub created: u64,
    pub last_used: Option<u64>,
}

fn day(secs: u64) -> String {
    crate::saml::time::format(secs).chars().take(10).collect()
}

/// How the passkeys page offers new backup codes: with what the user has (a passkey, a
/// TOTP code).
#[derive(Debug)]
pub struct RegenerateView<'a> {
    /// The passkey request options (JSON), when the user has passkeys.
    pub passkey_options: Option<&'a str>,
    pub totp: bool,
}

/// The section that regenerates backup codes, confirmed by one of the user's factors.
fn regenerate_section(prefix: &str, csrf: &str, v: &RegenerateView<'_>) -> String {
    let action = format!("{prefix}/mfa/backup-codes");
    let fallback = if v.totp { "Use the code from your authenticator app instead." } else { "" };
    let passkey = v
        .passkey_options
        .map(|o| {
            render(
                PASSKEY_GET,
                &[
                    ("prefix", prefix),
                    ("csrf", csrf),
                    ("rd", ""),
                    ("then", ""),
                    ("action", &action),
                    ("options", o),
                    ("fallback", fallback),
                    ("reason", ""),
                    ("script", WEBAUTHN_JS),
                ],
            )
        })
        .unwrap_or_default();
    let totp = if v.totp {
        format!(
            r#"<form method="post" action="{action}"><input type="hidden" name="csrf" value="{csrf}"><label for="code">Code from your authenticator app</label><input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="10" required><button type="submit" class="button">New backup codes</button></form>"#,
            action = escape(&action),
            csrf = escape(csrf),
        )
    } else {
        String::new()
    };
    format!(
        r#"<section aria-labelledby="regenerate-heading"><h2 id="regenerate-heading">Backup codes</h2><p>New backup codes replace the old ones. Confirm with one of your second factors.</p>{passkey}{totp}</section>"#
    )
}

/// The user's passkeys, each with a remove button, and new backup codes.
pub fn passkeys_page(
    brand: Brand<'_>,
    rows: &[PasskeyRow<'_>],
    notice: Option<Notice<'_>>,
    csrf: &str,
    regenerate: &RegenerateView<'_>,
) -> Response {
    let rows: String = rows
        .iter()
        .map(|p| {
            format!(
                r#"<tr><td>{name}</td><td>{created}</td><td>{used}</td><td><form method="post" action="{prefix}/mfa/passkeys/remove"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="id" value="{id}"><button type="submit" class="button" aria-label="Remove {name}">Remove</button></form></td></tr>"#,
                name = escape(p.name),
                created = day(p.created),
                used = p.last_used.map(day).unwrap_or_else(|| "never".into()),
                prefix = escape(brand.prefix),
                csrf = escape(csrf),
                id = escape(p.id),
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rows = if rows.is_empty() { r#"<tr><td colspan="4">No passkeys yet.</td></tr>"#.to_owned() } else { rows };
    let section = regenerate_section(brand.prefix, csrf, regenerate);
    let content = render(
        PASSKEYS,
        &[("notice", &notice_html(notice)), ("rows", &rows), ("prefix", brand.prefix), ("regenerate", &section)],
    );
    let r = page(brand, 200, "Passkeys", &content);
    if regenerate.passkey_options.is_some() {
        with_script(r)
    } else {
        r
    }
}

/// Values of the enrolment page.
#[derive(Debug)]
pub struct EnrollView<'a> {
    pub lead: &'a str,
    pub notice: Option<Notice<'a>>,
    pub qr_svg: &'a str,
    pub secret_groups: &'a str,
    pub uri: &'a str,
    pub csrf: &'a str,
    pub rd: &'a str,
    /// Whether a passkey can be set up instead.
    pub passkey: bool,
}

pub fn enroll_page(brand: Brand<'_>, v: &EnrollView<'_>) -> Response {
    let alternative = if v.passkey {
        let href = format!("{}/mfa/passkeys/register?{}", brand.prefix, crate::http::query_encode(&[("rd", v.rd)]));
        format!(
            r#"<p class="notice">Or <a href="{}" id="use-passkey">use a passkey instead</a>: your device's screen lock or a security key, which phishing sites cannot use.</p>"#,
            escape(&href)
        )
    } else {
        String::new()
    };
    let content = render(
        ENROLL,
        &[
            ("notice", &notice_html(v.notice)),
            ("lead", v.lead),
            ("qr", v.qr_svg),
            ("secret_groups", v.secret_groups),
            ("uri", v.uri),
            ("prefix", brand.prefix),
            ("csrf", v.csrf),
            ("rd", v.rd),
            ("alternative", &alternative),
        ],
    );
    page(brand, 200, "Set up two-step verification", &content)
}

/// The backup codes, shown once.
pub fn backup_codes_page(brand: Brand<'_>, codes: &[String], rd: &str) -> Response {
    let items: String =
        codes.iter().map(|c| format!("<li><code>{}</code></li>", escape(c))).collect::<Vec<_>>().join("\n");
    let content = render(BACKUP_CODES, &[("codes", &items), ("rd", rd), ("prefix", brand.prefix)]);
    page(brand, 200, "Save your backup codes", &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_dynamic() {
        let out = render("<p>{{x}}</p><div>{{{y}}}</div>", &[("x", "<script>\"'&"), ("y", "<b>ok</b>")]);
        assert_eq!(out, "<p>&lt;script&gt;&quot;&#39;&amp;</p><div><b>ok</b></div>");
    }

    #[test]
    fn pages_carry_security_headers() {
        let r = logged_out_page(Brand { tenant: None, prefix: "/_portcullis" });
        let csp = r.headers.get("content-security-policy").unwrap();
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("default-src 'none'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(r.headers.get("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.headers.get("cache-control"), Some("no-store"));
    }

    #[test]
    fn error_page_shows_reference_and_escapes_message() {
        let r = error_page(
            Brand { tenant: None, prefix: "/p" },
            &ErrorView {
                status: 400,
                title: "Sign-in failed",
                message: "<img src=x>",
                retry: Some(("/p/login", "Try again")),
                reference: "ab12cd",
            },
        );
        let body = r.text();
        assert!(body.contains("&lt;img src=x&gt;"));
        assert!(body.contains("ab12cd"));
        assert!(body.contains(r#"href="/p/login""#));
        assert_eq!(r.status, 400);
    }
}
