//! Secret values. A [`Secret`] never prints its contents: `Debug` and `Display` say
//! `[redacted]`, so a secret cannot reach a log line through formatting by accident.

use std::collections::BTreeMap;
use std::fmt;

/// Bytes that must not be logged: Worker secrets, keys, tokens, codes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret's bytes, for the code that must use them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text (Worker secrets are strings).
    pub fn expose_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The Worker secrets the configuration names, read once by the shell.
#[derive(Clone, Default, Debug)]
pub struct Secrets(BTreeMap<String, Secret>);

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: Secret) {
        self.0.insert(name.into(), value);
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.insert(name, Secret::new(value.as_bytes().to_vec()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new(b"hunter2".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        let secrets = Secrets::new().with("K", "hunter2");
        assert!(!format!("{secrets:?}").contains("hunter2"));
    }
}
