//! `otpauth://` URIs in the Key Uri Format understood by authenticator apps.

use std::fmt::Write;

use super::totp::TotpParams;

/// Appends `s` percent-encoded: everything but RFC 3986 unreserved characters and `@` is
/// escaped, so `:`, `&`, `=`, `?`, `#`, `/` and spaces (as `%20`, never `+`) cannot change
/// the URI's structure.
fn push_encoded(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
///
/// Issuer and account are encoded separately and joined by a literal `:`, so a colon inside
/// either is escaped and cannot shift the split. An empty issuer leaves out the prefix and
/// the `issuer` parameter. The secret is sent upper-case, without spaces or padding.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str, params: &TotpParams) -> String {
    let mut uri = String::from("otpauth://totp/");
    if !issuer.is_empty() {
        push_encoded(&mut uri, issuer);
        uri.push(':');
    }
    push_encoded(&mut uri, account);
    let secret: String = secret_b32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    uri.push_str("?secret=");
    push_encoded(&mut uri, &secret);
    if !issuer.is_empty() {
        uri.push_str("&issuer=");
        push_encoded(&mut uri, issuer);
    }
    let _ = write!(uri, "&algorithm={}&digits={}&period={}", params.algorithm.uri_name(), params.digits, params.period);
    uri
}
