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
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.get_all("cookie")
            .flat_map(|h| h.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.trim_matches('"'))
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

    pub fn form_value(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
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
