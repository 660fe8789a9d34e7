//! Escaping text into markup: HTML pages and the XML the gateway writes (SAML metadata and
//! logout messages) escape the same five characters.

/// Escapes text for element content and quoted attribute values (HTML and XML).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
