//! XML parsing and exclusive canonicalization must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::saml::c14n::canonicalize;
use portcullis::saml::xml::{Document, XmlLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = Document::parse(data, &XmlLimits::default()) else {
        return;
    };
    let _ = canonicalize(&doc, doc.root(), &[], None);
    let _ = canonicalize(&doc, doc.root(), &["xs".to_owned(), "#default".to_owned()], None);
});
