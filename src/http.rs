//! The gateway's own view of HTTP: plain values the core reads and returns. The shell
//! converts between these and the runtime's request/response objects.

use std::fmt;

/// Header list in arrival order; names compared case-insensitively. Duplicates are kept
/// (several `Set-Cookie` lines must survive).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cookie and authorization values are credentials: list names only.
        f.debug_list().entries(self.0.iter().map(|(n, _)| n)).finish()
    }
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_pairs<I, N, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        Self(pairs.into_iter().map(|(n, v)| (n.into(), v.into())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.0.push((name.to_owned(), value.into()));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(n, v)| keep(n, v));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total bytes of names and values, for size limits.
    pub fn byte_size(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
    }

    /// Value of cookie `name` from every `Cookie` header (first occurrence wins).
    ///
    /// Reads each header as `;`-separated, trimmed `name=value` pairs, but by searching for
    /// `name` rather than visiting every pair, so the work does not grow with the number of
    /// pairs (32 KB of `;` is 32,000 empty ones).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        if name.is_empty() {
            return None;
        }
        let step = name.chars().next().map_or(1, char::len_utf8);
        for h in self.get_all("cookie") {
            let mut from = 0;
            while let Some(pos) = h.get(from..).and_then(|rest| rest.find(name)).map(|p| p + from) {
                from = pos + step;
                // At the start of a pair: only whitespace since the header's start or a `;`.
                let before = h.get(..pos).unwrap_or_default().trim_end();
                if !(before.is_empty() || before.ends_with(';')) {
                    continue;
                }
                let Some(value) = h.get(pos + name.len()..).and_then(|rest| rest.strip_prefix('=')) else {
                    continue;
                };
                let value = value.split(';').next().unwrap_or_default().trim_end();
                // `trim_matches('"')`, a byte at a time (`"` is ASCII, so the cuts are
                // character boundaries).
                let b = value.as_bytes();
                let Some(start) = b.iter().position(|c| *c != b'"') else { return Some("") };
                let end = b.iter().rposition(|c| *c != b'"').map_or(start, |i| i + 1);
                return value.get(start..end.max(start));
            }
        }
        None
    }
}

/// An incoming request as the core sees it. `body` is read by the shell only for the
/// gateway's own routes (forms, ACS); requests to the origin keep their streamed body there.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub url: url::Url,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Client address as the platform reports it (`CF-Connecting-IP`), if any.
    pub client_ip: Option<String>,
    /// What the edge knows about the request (`request.cf`).
    pub edge: EdgeContext,
}

/// The request's edge context, from the platform's `request.cf`: only what policy rules
/// look at. Every field is absent where the platform does not say (local development,
/// Bot Management or mTLS not enabled).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct EdgeContext {
    /// ISO 3166-1 alpha-2 country of the client (`cf.country`).
    pub country: Option<String>,
    /// The client's autonomous system number (`cf.asn`).
    pub asn: Option<u64>,
    /// Whether the client presented a TLS certificate that verified against the zone's mTLS
    /// CA (`cf.tlsClientAuth.certVerified == "SUCCESS"`).
    pub client_cert_verified: Option<bool>,
    /// Bot Management score, 1 (bot) to 99 (human) (`cf.botManagement.score`).
    pub bot_score: Option<u64>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Result<Self, url::ParseError> {
        Ok(Self {
            method: method.to_ascii_uppercase(),
            url: url::Url::parse(url)?,
            headers: Headers::new(),
            body: Vec::new(),
            client_ip: None,
            edge: EdgeContext::default(),
        })
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(name, value);
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Host as the client addressed it (`Host` header, else the URL's authority).
    pub fn host(&self) -> String {
        if let Some(h) = self.headers.get("host") {
            return h.trim().to_ascii_lowercase();
        }
        let mut h = self.url.host_str().unwrap_or_default().to_ascii_lowercase();
        if let Some(p) = self.url.port() {
            h.push_str(&format!(":{p}"));
        }
        h
    }

    /// Parsed `application/x-www-form-urlencoded` body.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The first value of `name` in the form body, decoded as [`Request::form`] decodes it.
    /// A pair whose name is plain ASCII (no `%`, no `+`) and differs from `name` is passed
    /// over without decoding anything, so many small pairs cost little.
    pub fn form_value(&self, name: &str) -> Option<String> {
        for pair in self.body.split(|b| *b == b'&') {
            let raw_name = pair.split(|b| *b == b'=').next().unwrap_or_default();
            let plain = raw_name.iter().all(|b| b.is_ascii() && *b != b'%' && *b != b'+');
            if pair.is_empty() || (plain && raw_name != name.as_bytes()) {
                continue;
            }
            if let Some((n, v)) = url::form_urlencoded::parse(pair).next() {
                if n == name {
                    return Some(v.into_owned());
                }
            }
        }
        None
    }

    pub fn query(&self, name: &str) -> Option<String> {
        self.url.query_pairs().find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
    }

    /// Whether this looks like a person's browser navigating (gets a redirect to the login
    /// page rather than a 401).
    pub fn is_navigation(&self) -> bool {
        let get_like = self.method == "GET" || self.method == "HEAD";
        let accepts_html = self.headers.get("accept").is_some_and(|a| a.to_ascii_lowercase().contains("text/html"));
        let fetch_mode_ok = self.headers.get("sec-fetch-mode").is_none_or(|m| m.eq_ignore_ascii_case("navigate"));
        get_like && accepts_html && fetch_mode_ok
    }
}

/// A response the gateway produces itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Headers::new(), body: Vec::new() }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut r = Self::new(status);
        r.headers.set("content-type", "application/json; charset=utf-8");
        r.body = value.to_string().into_bytes();
        r
    }

    pub fn html(status: u16, body: String) -> Self {
        let mut r = Self::new(status);
        r.headers.set("content-type", "text/html; charset=utf-8");
        r.body = body.into_bytes();
        r
    }

    pub fn redirect(location: &str) -> Self {
        let mut r = Self::new(302);
        r.headers.set("location", location);
        r
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.append(name, value);
        self
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP request the core wants made (to an IdP).
#[derive(Clone, Debug)]
pub struct Outbound {
    pub method: &'static str,
    pub url: String,
    pub headers: Headers,
    pub body: Option<Vec<u8>>,
}

impl Outbound {
    pub fn get(url: impl Into<String>) -> Self {
        let mut headers = Headers::new();
        headers.set("accept", "application/json");
        Self { method: "GET", url: url.into(), headers, body: None }
    }

    pub fn post_form(url: impl Into<String>, form: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish().into_bytes();
        let mut headers = Headers::new();
        headers.set("accept", "application/json");
        headers.set("content-type", "application/x-www-form-urlencoded");
        Self { method: "POST", url: url.into(), headers, body: Some(body) }
    }
}

/// What came back from an outbound request (body already size-limited by the shell).
#[derive(Clone, Debug)]
pub struct Inbound {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// Percent-encodes a value for use as one query parameter.
pub fn query_encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_across_headers() {
        let h = Headers::from_pairs([("Cookie", "a=1; b=2"), ("cookie", "c=\"3\"")]);
        assert_eq!(h.cookie("b"), Some("2"));
        assert_eq!(h.cookie("c"), Some("3"));
        assert_eq!(h.cookie("d"), None);
    }

    /// The search-based reading gives what splitting every header into trimmed pairs gives.
    #[test]
    fn cookie_search_reads_like_splitting_into_pairs() {
        fn by_pairs<'h>(h: &'h Headers, name: &str) -> Option<&'h str> {
            h.get_all("cookie")
                .flat_map(|h| h.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.trim_matches('"'))
        }
        let mut cases: Vec<String> = [
            "a=1; b=2",
            " b =1; b=2 ",
            "xb=1;b=2",
            "a=b=1; b=3",
            "a= b=1",
            "b;b=\"q\" ;",
            ";;;b=;",
            "bb=1; b",
            "\u{a0}b=1",
            "é=1; b=é ",
            "a=1;\tb=\t2\t; b=3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // And pseudo-random headers over a small alphabet.
        let alphabet = ['b', 'a', '=', ';', ' ', '"', '\t', 'é'];
        let mut x: u32 = 12345;
        for _ in 0..3000 {
            let len = (x % 12) as usize;
            let mut s = String::new();
            for _ in 0..len {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                s.push(alphabet[(x >> 16) as usize % alphabet.len()]);
            }
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            cases.push(s);
        }
        for c in &cases {
            let h = Headers::from_pairs([("Cookie", c.as_str()), ("cookie", "b=late")]);
            for name in ["b", "a", "ba", "é"] {
                assert_eq!(h.cookie(name), by_pairs(&h, name), "{c:?} {name}");
            }
        }
    }

    /// The pair-skipping reading gives what decoding every pair gives.
    #[test]
    fn form_value_reads_like_decoding_every_pair() {
        let alphabet: [&[u8]; 10] = [b"a", b"b", b"=", b"&", b"%", b"6", b"1", b"+", b"\xc3\xa9", b"\xff"];
        let mut x: u32 = 777;
        let mut bodies: Vec<Vec<u8>> = vec![b"a=1&a=2".to_vec(), b"%61=1&a=2".to_vec(), b"&&a&a=&=a".to_vec()];
        for _ in 0..5000 {
            let mut body = Vec::new();
            for _ in 0..(x % 14) {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                body.extend_from_slice(alphabet[(x >> 16) as usize % alphabet.len()]);
            }
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            bodies.push(body);
        }
        for body in bodies {
            let r = Request::new("POST", "https://a.test/").unwrap().with_body(body.clone());
            for name in ["a", "ab", "a b", "é", ""] {
                let by_pairs = r.form().into_iter().find(|(n, _)| n == name).map(|(_, v)| v);
                assert_eq!(r.form_value(name), by_pairs, "{:?} {name:?}", String::from_utf8_lossy(&body));
            }
        }
    }

    #[test]
    fn navigation_detection() {
        let nav = Request::new("GET", "https://a.test/x").unwrap().header("accept", "text/html,*/*");
        assert!(nav.is_navigation());
        let api = Request::new("GET", "https://a.test/x").unwrap().header("accept", "application/json");
        assert!(!api.is_navigation());
        let post = Request::new("POST", "https://a.test/x").unwrap().header("accept", "text/html");
        assert!(!post.is_navigation());
        let xhr = Request::new("GET", "https://a.test/x")
            .unwrap()
            .header("accept", "text/html")
            .header("sec-fetch-mode", "cors");
        assert!(!xhr.is_navigation());
    }

    #[test]
    fn debug_hides_header_values() {
        let h = Headers::from_pairs([("Cookie", "session=topsecret")]);
        assert!(!format!("{h:?}").contains("topsecret"));
    }
}
