//! The request as every origin will read it: one canonical path and the method(s) the
//! origin may act on, decided once per request and used for public paths, policy, step-up
//! and forwarding alike.
//!
//! Servers disagree about paths: Tomcat, Jetty and Spring strip `;` path parameters (so
//! `/static/..;/admin` is `/admin` there), some chains decode twice (`%252e%252e`), some
//! treat `%2F` or `\` as a separator, IIS drops a trailing `.` or space, and Java's and
//! PHP's decoders differ on invalid UTF-8. Rather than guess which reading the origin uses,
//! the gateway refuses every path on which two readings could differ, and forwards exactly
//! the bytes it decided on. Under a tenant's `verbatim_paths` prefixes, `;` and `%2F` are
//! passed on (for origins that need them); such requests are never public.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::http::Request;

/// Whether the origin routes paths case-sensitively (the default) or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathCase {
    #[default]
    Sensitive,
    /// Public paths, policy and step-up rules are matched lower-cased.
    Insensitive,
}

/// What to do with `X-HTTP-Method-Override` and its relatives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodOverride {
    /// Removed before forwarding: the origin only ever sees the request's own method.
    #[default]
    Drop,
    /// Passed on; the request must then be allowed under both its own method and the
    /// overriding one (the origin may act on either).
    Honour,
}

/// Methods forwarded to an origin; anything else is refused with 405.
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// The `Allow` header of that refusal.
pub const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// Header names (as [`header_key`] spells them) that frameworks read as the method.
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &["x-http-method-override", "x-http-method", "x-method-override"];

/// A header name as CGI, WSGI, Rack, PHP and similar interfaces read it: lower-cased, with
/// every character that is not a letter or digit read as `-` (they map `_`, `-` and
/// others to the same variable name).
pub fn header_key(name: &str) -> String {
    name.bytes().map(|b| if b.is_ascii_alphanumeric() { b.to_ascii_lowercase() as char } else { '-' }).collect()
}

/// Why a path is refused: servers would not agree on what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    NotAbsolute,
    /// A raw byte outside printable ASCII (space, control, non-ASCII).
    Unencoded,
    Backslash,
    /// `;` (raw or encoded): path parameters, stripped by Java servers.
    PathParameter,
    /// `%25`: the path would change if decoded again.
    DoubleEncoding,
    /// `%` not followed by two hex digits (including IIS `%u` escapes).
    BadEscape,
    /// `%2F` or `%5C`: a separator inside a segment.
    EncodedSeparator,
    /// NUL or another control character once decoded.
    ControlCharacter,
    /// Not valid UTF-8 once decoded (overlong forms such as `%c0%ae` included).
    InvalidUtf8,
    /// A Unicode look-alike of `.`, `/` or `\` that some servers fold to ASCII.
    Confusable,
    /// A `.` or `..` segment in any encoding.
    DotSegment,
    /// `//`: an empty segment, merged by some servers and not others.
    EmptySegment,
    /// A segment ending in `.` or a space, which Windows servers drop.
    TrailingDotOrSpace,
    /// `%3F` or `%23`: a query or fragment delimiter inside the path, which servers that
    /// decode and then split again (nginx `$uri` in `proxy_pass`, Apache `mod_rewrite`)
    /// cut the path at.
    EncodedDelimiter,
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ambiguity::NotAbsolute => "path does not start with /",
            Ambiguity::Unencoded => "unencoded space, control or non-ASCII byte",
            Ambiguity::Backslash => "backslash",
            Ambiguity::PathParameter => "path parameter (;)",
            Ambiguity::DoubleEncoding => "double encoding (%25)",
            Ambiguity::BadEscape => "malformed percent escape",
            Ambiguity::EncodedSeparator => "encoded / or \\",
            Ambiguity::ControlCharacter => "encoded NUL or control character",
            Ambiguity::InvalidUtf8 => "invalid or overlong UTF-8",
            Ambiguity::Confusable => "Unicode look-alike of a dot or slash",
            Ambiguity::DotSegment => "dot segment",
            Ambiguity::EmptySegment => "empty segment (//)",
            Ambiguity::TrailingDotOrSpace => "segment ending in a dot or space",
            Ambiguity::EncodedDelimiter => "encoded ? or # in the path",
        })
    }
}

/// Look-alikes of `.`, `/` and `\` that best-fit mappings and NFKC fold to ASCII.
const CONFUSABLES: &[char] = &[
    '\u{2024}', '\u{2025}', '\u{2026}', '\u{FE52}', '\u{FF0E}', // dots
    '\u{2044}', '\u{2215}', '\u{29F8}', '\u{FF0F}', // slashes
    '\u{2216}', '\u{29F5}', '\u{29F9}', '\u{FE68}', '\u{FF3C}', // backslashes
];

/// The path decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// As received, percent-encoding intact: exactly what is forwarded.
    pub raw: String,
    /// Percent-decoded (lower-cased for case-insensitive tenants): what rules match.
    pub matching: String,
    /// Rule patterns must be lower-cased before matching.
    pub case_insensitive: bool,
    /// Under a `verbatim_paths` prefix: may carry `;` and `%2F`; never public.
    pub verbatim: bool,
}

/// Whether `path` is under `prefix` (`/files/` covers `/files/x`; `/files` covers `/files`,
/// `/files;p` and `/files/x`).
fn under(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(['/', ';']))
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decides the canonical path of `raw` (the request path as received, without query), or
/// why servers could read it differently.
pub fn canonical(raw: &str, case: PathCase, verbatim_prefixes: &[String]) -> Result<CanonicalPath, Ambiguity> {
    if !raw.starts_with('/') {
        return Err(Ambiguity::NotAbsolute);
    }
    let verbatim = verbatim_prefixes.iter().any(|p| under(p, raw));
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\\' => return Err(Ambiguity::Backslash),
            b';' if !verbatim => return Err(Ambiguity::PathParameter),
            b'%' => {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(Ambiguity::BadEscape);
                };
                let d = h * 16 + l;
                match d {
                    b'%' => return Err(Ambiguity::DoubleEncoding),
                    b'\\' => return Err(Ambiguity::EncodedSeparator),
                    b'/' if !verbatim => return Err(Ambiguity::EncodedSeparator),
                    b';' if !verbatim => return Err(Ambiguity::PathParameter),
                    b'?' | b'#' => return Err(Ambiguity::EncodedDelimiter),
                    0..=0x1f | 0x7f => return Err(Ambiguity::ControlCharacter),
                    _ => decoded.push(d),
                }
                i += 3;
                continue;
            }
            0x21..=0x7e => decoded.push(b),
            _ => return Err(Ambiguity::Unencoded),
        }
        i += 1;
    }
    let decoded = String::from_utf8(decoded).map_err(|_| Ambiguity::InvalidUtf8)?;
    if decoded.contains(CONFUSABLES) {
        return Err(Ambiguity::Confusable);
    }
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    for (n, segment) in segments.iter().enumerate() {
        // Java servers read a segment up to its first `;` (only possible when verbatim).
        let name = segment.split(';').next().unwrap_or_default();
        if name.is_empty() && n + 1 < segments.len() {
            return Err(Ambiguity::EmptySegment);
        }
        if name == "." || name == ".." {
            return Err(Ambiguity::DotSegment);
        }
        if name.ends_with('.') || name.ends_with(' ') {
            return Err(Ambiguity::TrailingDotOrSpace);
        }
    }
    // Under a verbatim prefix rules see what Java servers route: each segment up to its
    // `;` (so `/files/a;v=1` is matched as `/files/a`, never outside a rule for it).
    let decoded = if verbatim {
        let names: Vec<&str> = segments.iter().map(|s| s.split(';').next().unwrap_or_default()).collect();
        format!("/{}", names.join("/"))
    } else {
        decoded.clone()
    };
    let case_insensitive = case == PathCase::Insensitive;
    // A non-ASCII letter whose lower case is ASCII (U+212A KELVIN SIGN is `k`, U+0130 is
    // `i` + a dot) folds differently on different servers (IIS and .NET do not fold it):
    // refused where case is folded.
    if case_insensitive && decoded.chars().any(|c| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii())) {
        return Err(Ambiguity::Confusable);
    }
    let matching = if case_insensitive { decoded.to_lowercase() } else { decoded };
    Ok(CanonicalPath { raw: raw.to_owned(), matching, case_insensitive, verbatim })
}

/// A configured `verbatim_paths` prefix must itself be a plain canonical path.
pub fn check_verbatim_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains(['%', ';']) || prefix.len() < 2 {
        return Err("must be a plain path prefix such as /files/ (no %, no ;, not /)".into());
    }
    canonical(prefix, PathCase::Sensitive, &[]).map(|_| ()).map_err(|e| format!("is not a plain path ({e})"))
}

/// Why a request is not forwarded as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecidable {
    /// A method outside [`METHODS`] (or overridden to one).
    Method(String),
    /// Several method-override headers naming different methods.
    ConflictingOverrides,
    Path(Ambiguity),
}

/// The request as the origin may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub path: CanonicalPath,
    /// The request's method, then an honoured override if it differs. Public only if
    /// public under each; allowed only if allowed under each; step-up if due under any.
    pub methods: Vec<String>,
}

/// Decides method(s) and path once, before any rule looks at the request.
pub fn decide(
    req: &Request,
    case: PathCase,
    verbatim_prefixes: &[String],
    overrides: MethodOverride,
) -> Result<Decided, Undecidable> {
    if !METHODS.contains(&req.method.as_str()) {
        return Err(Undecidable::Method(req.method.clone()));
    }
    let mut methods = vec![req.method.clone()];
    if overrides == MethodOverride::Honour {
        let mut named: Option<String> = None;
        for (name, value) in req.headers.iter() {
            if !METHOD_OVERRIDE_HEADERS.contains(&header_key(name).as_str()) {
                continue;
            }
            let m = value.trim().to_ascii_uppercase();
            if !METHODS.contains(&m.as_str()) {
                return Err(Undecidable::Method(m));
            }
            match &named {
                Some(other) if *other != m => return Err(Undecidable::ConflictingOverrides),
                _ => named = Some(m),
            }
        }
        if let Some(m) = named.filter(|m| *m != req.method) {
            methods.push(m);
        }
    }
    let path = canonical(req.url.path(), case, verbatim_prefixes).map_err(Undecidable::Path)?;
    Ok(Decided { path, methods })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(raw: &str) -> Result<String, Ambiguity> {
        canonical(raw, PathCase::Sensitive, &[]).map(|p| p.matching)
    }

    #[test]
    fn plain_paths_decode_once_and_keep_their_raw_form() {
        assert_eq!(c("/").as_deref(), Ok("/"));
        assert_eq!(c("/static/app.js").as_deref(), Ok("/static/app.js"));
        assert_eq!(c("/static/").as_deref(), Ok("/static/"));
        assert_eq!(c("/a%20b").as_deref(), Ok("/a b"));
        assert_eq!(c("/caf%C3%A9").as_deref(), Ok("/café"));
        assert_eq!(c("/.well-known/x").as_deref(), Ok("/.well-known/x"));
        assert_eq!(c("/a/.hidden/..x/x..y").as_deref(), Ok("/a/.hidden/..x/x..y"));
        assert_eq!(c("/v1/things:batchGet").as_deref(), Ok("/v1/things:batchGet"));
        let p = canonical("/Static/A%42", PathCase::Insensitive, &[]).unwrap();
        assert_eq!((p.raw.as_str(), p.matching.as_str(), p.case_insensitive), ("/Static/A%42", "/static/ab", true));
    }

    #[test]
    fn every_reading_servers_disagree_on_is_refused() {
        use Ambiguity::*;
        for (raw, why) in [
            ("static/x", NotAbsolute),
            ("", NotAbsolute),
            ("/static/..;/admin", PathParameter),
            ("/static/%2e%2e;/admin", PathParameter),
            ("/static/..%3b/admin", PathParameter),
            ("/static/..%3B/admin", PathParameter),
            ("/static/..;x=1/admin", PathParameter),
            ("/static/x/..;/..;/admin", PathParameter),
            ("/app.js;jsessionid=0123", PathParameter),
            ("/admin;x", PathParameter),
            ("/static/%252e%252e/admin", DoubleEncoding),
            ("/static/..%252fadmin", DoubleEncoding),
            ("/static/%25252e/admin", DoubleEncoding),
            ("/static/%25", DoubleEncoding),
            ("/static/..%2fadmin", EncodedSeparator),
            ("/static/..%2Fadmin", EncodedSeparator),
            ("/static/..%5cadmin", EncodedSeparator),
            ("/static/..%5Cadmin", EncodedSeparator),
            ("/static\\..\\admin", Backslash),
            ("/static/\\admin", Backslash),
            ("/static/%00/admin", ControlCharacter),
            ("/static/x%00.css", ControlCharacter),
            ("/static/%0d%0aX:1", ControlCharacter),
            ("/static/x%09", ControlCharacter),
            ("/static/x%7f", ControlCharacter),
            ("/static/x y", Unencoded),
            ("/static/x\ty", Unencoded),
            ("/static/caf\u{e9}", Unencoded),
            ("/static/%zz", BadEscape),
            ("/static/%2", BadEscape),
            ("/static/%", BadEscape),
            ("/static/%u002e%u002e/admin", BadEscape),
            ("/static/%c0%ae%c0%ae/admin", InvalidUtf8),
            ("/static/%c0%2e/admin", InvalidUtf8),
            ("/static/%e0%80%ae/admin", InvalidUtf8),
            ("/static/%c1%9c/admin", InvalidUtf8),
            ("/static/%ff/admin", InvalidUtf8),
            ("/static/%ef%bc%8e%ef%bc%8e/admin", Confusable),
            ("/static/..%ef%bc%8fadmin", Confusable),
            ("/static/..%e2%88%95admin", Confusable),
            ("/static/..%ef%bc%bcadmin", Confusable),
            ("/static/../admin", DotSegment),
            ("/static/./admin", DotSegment),
            ("/static/%2e%2e/admin", DotSegment),
            ("/static/.%2e/admin", DotSegment),
            ("/static/%2E./admin", DotSegment),
            ("/static/%2e/admin", DotSegment),
            ("/static/..", DotSegment),
            ("/..", DotSegment),
            ("/static//admin", EmptySegment),
            ("//static/admin", EmptySegment),
            ("//admin", EmptySegment),
            ("/admin.", TrailingDotOrSpace),
            ("/admin..", TrailingDotOrSpace),
            ("/admin%2e", TrailingDotOrSpace),
            ("/admin%20", TrailingDotOrSpace),
            ("/static/..%20/admin", TrailingDotOrSpace),
            ("/static/.. ./admin", Unencoded),
        ] {
            assert_eq!(c(raw), Err(why), "{raw:?}");
        }
    }

    #[test]
    fn case_insensitive_matching_folds_unicode_too() {
        let p = canonical("/%C3%89T%C3%89/ADMIN", PathCase::Insensitive, &[]).unwrap();
        assert_eq!(p.matching, "/été/admin");
    }

    #[test]
    fn verbatim_prefixes_allow_only_path_parameters_and_encoded_slashes() {
        let v = vec!["/files/".to_owned(), "/blobs".to_owned()];
        let ok = |raw: &str| canonical(raw, PathCase::Sensitive, &v);
        let p = ok("/files/a%2Fb;v=1").unwrap();
        assert!(p.verbatim);
        assert_eq!(p.raw, "/files/a%2Fb;v=1");
        assert_eq!(p.matching, "/files/a/b", "rules see each segment up to its `;`");
        assert!(ok("/blobs;x").unwrap().verbatim);
        assert!(ok("/blobs/x;y").unwrap().verbatim);
        assert_eq!(ok("/blobsx;y"), Err(Ambiguity::PathParameter));
        assert_eq!(ok("/FILES/a;b"), Err(Ambiguity::PathParameter));
        assert_eq!(ok("/static/x").map(|p| p.verbatim), Ok(false));
        for (raw, why) in [
            ("/files/..;/admin", Ambiguity::DotSegment),
            ("/files/a%2F..%2Fadmin", Ambiguity::DotSegment),
            ("/files/a%2F%2Fb", Ambiguity::EmptySegment),
            ("/files/%252f", Ambiguity::DoubleEncoding),
            ("/files/a%5cb", Ambiguity::EncodedSeparator),
            ("/files/a\\b", Ambiguity::Backslash),
            ("/files/x.;y", Ambiguity::TrailingDotOrSpace),
            ("/files/%00", Ambiguity::ControlCharacter),
        ] {
            assert_eq!(ok(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn verbatim_prefixes_must_be_plain() {
        assert!(check_verbatim_prefix("/files/").is_ok());
        assert!(check_verbatim_prefix("/api/blobs").is_ok());
        for bad in ["files/", "/", "/a/../b/", "/a%2fb/", "/a//b/", "/x;y/", "/a\\b/", "/a./"] {
            assert!(check_verbatim_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_keys_read_underscores_and_case_as_cgi_does() {
        assert_eq!(header_key("X_Portcullis_User"), "x-portcullis-user");
        assert_eq!(header_key("X-Portcullis_Groups"), "x-portcullis-groups");
        assert_eq!(header_key("x.auth.request.email"), "x-auth-request-email");
        assert_eq!(header_key("Accept"), "accept");
    }

    /// Decodes every valid `%XX` (invalid escapes stay), as lenient servers do.
    fn lenient_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (b'%', Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                (c, _, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Resolves `.` and `..` segments, optionally merging empty ones.
    fn resolve(path: &str, merge_empty: bool) -> String {
        let mut out: Vec<&str> = Vec::new();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        for (n, seg) in segments.iter().enumerate() {
            match *seg {
                "." => {}
                ".." => {
                    out.pop();
                }
                "" if merge_empty && n + 1 < segments.len() => {}
                s => out.push(s),
            }
        }
        format!("/{}", out.join("/"))
    }

    /// Tomcat, Jetty, Spring: path parameters stripped per segment, decoded, dots resolved.
    fn java_reading(raw: &str) -> String {
        let stripped: Vec<&str> = raw.split('/').map(|s| s.split(';').next().unwrap_or_default()).collect();
        resolve(&lenient_decode(&stripped.join("/")), false)
    }

    /// nginx, Apache: decoded once, `//` merged, dots resolved.
    fn merging_reading(raw: &str) -> String {
        resolve(&lenient_decode(raw), true)
    }

    /// A chain that decodes twice.
    fn twice_reading(raw: &str) -> String {
        resolve(&lenient_decode(&lenient_decode(raw)), false)
    }

    /// IIS: decoded, `\` as `/`, trailing dots and spaces dropped, case folded.
    fn windows_reading(raw: &str) -> String {
        let decoded = lenient_decode(raw).replace('\\', "/");
        let trimmed: Vec<&str> = decoded.split('/').map(|s| s.trim_end_matches(['.', ' '])).collect();
        resolve(&trimmed.join("/"), true).to_lowercase()
    }

    #[test]
    fn accepted_paths_read_the_same_on_every_server_and_survive_the_url_parser() {
        const TOKENS: &[&str] = &[
            "/",
            "/",
            "/",
            "a",
            "admin",
            "static",
            ".",
            "..",
            "%2e",
            "%2E",
            ";",
            "%3b",
            "x=1",
            "%25",
            "%252e",
            "%2f",
            "%5c",
            "\\",
            "%00",
            "%09",
            "%c0%ae",
            "%41",
            "%20",
            " ",
            "~",
            "-",
            "%e2%88%95",
            "%ef%bc%8e",
            "%",
            "%zz",
            "%C3%A9",
            "\u{e9}",
            ":",
            "@",
            "!",
            "'",
            "(",
            "*",
            "+",
            ",",
            "$",
            "&",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..50_000 {
            let mut raw = String::from("/");
            for _ in 0..(1 + next() % 8) {
                raw.push_str(TOKENS[(next() % TOKENS.len() as u64) as usize]);
            }
            let Ok(p) = canonical(&raw, PathCase::Sensitive, &[]) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            for (server, reading) in [
                ("java", java_reading(&raw)),
                ("merging", merging_reading(&raw)),
                ("twice", twice_reading(&raw)),
                ("windows", windows_reading(&raw)),
            ] {
                let expected = if server == "windows" { p.matching.to_lowercase() } else { p.matching.clone() };
                assert_eq!(reading, expected, "{server} reads {raw:?} differently");
            }
            // The shell re-parses the forwarded URL (WHATWG rules): it must come out unchanged.
            let forwarded = url::Url::parse(&format!("https://o.test{raw}")).map(|u| u.path().to_owned());
            assert_eq!(forwarded.as_deref(), Ok(raw.as_str()), "the URL parser changes {raw:?}");
        }
        assert!(accepted > 1000 && refused > 1000, "accepted {accepted}, refused {refused}");
    }

    fn req(method: &str) -> Request {
        Request::new(method, "https://a.test/items/1").unwrap()
    }

    #[test]
    fn methods_and_overrides() {
        let d = |r: &Request, o| decide(r, PathCase::Sensitive, &[], o).map(|d| d.methods);
        for m in METHODS {
            assert_eq!(d(&req(m), MethodOverride::Drop), Ok(vec![m.to_string()]));
        }
        for m in ["TRACE", "TRACK", "CONNECT", "PROPFIND", "FOO", "G3T"] {
            assert_eq!(d(&req(m), MethodOverride::Drop), Err(Undecidable::Method(m.into())), "{m}");
        }
        let post = req("POST").header("X_HTTP_Method_Override", "delete");
        assert_eq!(d(&post, MethodOverride::Drop), Ok(vec!["POST".to_string()]));
        assert_eq!(d(&post, MethodOverride::Honour), Ok(vec!["POST".to_string(), "DELETE".to_string()]));
        let trace = req("POST").header("X-HTTP-Method", "TRACE");
        assert_eq!(d(&trace, MethodOverride::Honour), Err(Undecidable::Method("TRACE".into())));
        let two = req("POST").header("X-HTTP-Method", "PUT").header("X-Method-Override", "DELETE");
        assert_eq!(d(&two, MethodOverride::Honour), Err(Undecidable::ConflictingOverrides));
        let same = req("GET").header("X-HTTP-Method", "GET");
        assert_eq!(d(&same, MethodOverride::Honour), Ok(vec!["GET".to_string()]));
    }
}
