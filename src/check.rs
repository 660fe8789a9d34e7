//! The offline configuration check behind `portcullis check` (src/bin/portcullis.rs): the
//! same parsing and validation the Worker runs at start-up ([`Config::load`]), on a file,
//! before anything is deployed. The build (`scripts/build.sh --config FILE`) calls it and
//! bundles only a document it accepted.
//!
//! Secrets are not in the document, only their names. Without a secrets file the check
//! lists the names the document needs and checks everything else; with one (a dotenv file,
//! `NAME=value` per line, as `.dev.vars`) it also checks that each secret is set and usable
//! (key lengths, PEM/DER assertion keys).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::secret::Secret;

/// The result of checking one document.
#[derive(Debug, Default)]
pub struct Report {
    /// Every problem, each with the field path.
    pub errors: Vec<ConfigError>,
    /// The Worker secret names the document uses, sorted.
    pub secret_names: Vec<String>,
    /// Whether secret values were checked (a secrets file was given).
    pub secrets_checked: bool,
    /// The document as compact JSON (what the build bundles), when it parsed.
    pub json: Option<String>,
    /// Tenants and providers, for the summary line.
    pub tenants: usize,
    pub providers: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// The text `portcullis check` prints: every error on its own line, then a summary.
    pub fn render(&self, file: &str) -> String {
        let mut out = String::new();
        if self.ok() {
            let _ = writeln!(
                out,
                "{file}: ok ({} tenant{}, {} provider{})",
                self.tenants,
                if self.tenants == 1 { "" } else { "s" },
                self.providers,
                if self.providers == 1 { "" } else { "s" }
            );
        } else {
            for e in &self.errors {
                let _ = writeln!(out, "{file}: error: {e}");
            }
            let n = self.errors.len();
            let _ = writeln!(out, "{file}: {n} error{}", if n == 1 { "" } else { "s" });
        }
        if !self.secret_names.is_empty() {
            let _ = writeln!(out, "Worker secrets it names: {}", self.secret_names.join(", "));
            if !self.secrets_checked {
                let _ = writeln!(
                    out,
                    "(secret values not checked: pass --secrets FILE, a dotenv file like .dev.vars, to check them too)"
                );
            }
        }
        out
    }
}

/// The file formats a configuration may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    /// By file name: `.toml` is TOML, anything else JSON.
    pub fn of(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".toml") {
            Format::Toml
        } else {
            Format::Json
        }
    }
}

/// Converts a document to the JSON text the Worker reads. A TOML document is the same tree
/// written as TOML (tables for objects, arrays of tables for lists of objects).
pub fn to_json(text: &str, format: Format) -> Result<String, ConfigErrors> {
    let one = |message: String| ConfigErrors(vec![ConfigError { path: String::new(), message }]);
    match format {
        Format::Json => Ok(text.to_owned()),
        Format::Toml => {
            #[cfg(not(target_arch = "wasm32"))]
            {
                let value: serde_json::Value =
                    toml::from_str(text).map_err(|e| one(format!("not valid TOML: {}", e.to_string().trim())))?;
                serde_json::to_string(&value).map_err(|e| one(e.to_string()))
            }
            #[cfg(target_arch = "wasm32")]
            {
                Err(one("TOML is read by the native checker only".into()))
            }
        }
    }
}

/// Reads a dotenv file (`NAME=value`, optional `export `, optional single or double quotes,
/// `#` comments); the format of `.dev.vars` and of `make dev`'s secrets file.
pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else { continue };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let v = value.trim();
        let v = ['"', '\''].iter().find_map(|q| v.strip_prefix(*q).and_then(|r| r.strip_suffix(*q))).unwrap_or(v);
        out.insert(name.to_owned(), v.to_owned());
    }
    out
}

/// Checks a JSON document as the Worker would load it. `secrets`: the values to check
/// against, or `None` to check everything but the secrets' values.
pub fn check(document: &str, secrets: Option<&BTreeMap<String, String>>) -> Report {
    let asked = std::cell::RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        secrets.and_then(|s| s.get(name)).map(|v| Secret::new(v.clone().into_bytes()))
    };
    let result = Config::load(document, &lookup);
    let names: Vec<String> = asked.into_inner().into_iter().collect();
    let mut report = Report { secrets_checked: secrets.is_some(), ..Report::default() };
    match result {
        Ok(loaded) => {
            report.tenants = loaded.config.tenants.len();
            report.providers = loaded.config.tenants.iter().map(|t| t.providers.len()).sum();
        }
        Err(ConfigErrors(errors)) => {
            report.errors = errors
                .into_iter()
                .filter(|e| {
                    // Without a secrets file, an unset secret is expected, not an error.
                    secrets.is_some() || !names.iter().any(|n| e.message == format!("Worker secret {n} is not set"))
                })
                .collect();
            if report.errors.is_empty() {
                // Valid but for the secrets: count what the document holds.
                if let Ok(c) = serde_json::from_str::<Config>(document) {
                    report.tenants = c.tenants.len();
                    report.providers = c.tenants.iter().map(|t| t.providers.len()).sum();
                }
            }
        }
    }
    if report.errors.is_empty() {
        report.json = serde_json::from_str::<serde_json::Value>(document).ok().map(|v| v.to_string());
    }
    report.secret_names = names;
    report
}
