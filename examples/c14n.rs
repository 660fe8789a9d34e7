#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Our half of the differential check against xmlsec1 (scripts/c14n-diff.sh).
//!
//! ```text
//! c14n FILE [--exclude-first-child] [--prefixes a,b]
//!     Parses FILE as the gateway does and writes the Exclusive C14N of its document element
//!     to stdout (leaving out the first child element with --exclude-first-child; `#default`
//!     in --prefixes stands for the default namespace). A refused document: the kind of error
//!     and the message on stderr, exit status 2 from the parser, 4 from the canonicalizer.
//! c14n --inject FILE OUT [--prefixes a,b]
//!     Writes to OUT the document of FILE with an enveloped `ds:Signature` template inserted
//!     as the first child of its document element, referencing that element through its `ID`
//!     (added when missing; URI="" when it has one that is not a plain NCName, or when our
//!     parser refuses the document). Prints
//!     two lines for the script: `ok` or the kind of error our parser reports on FILE, then
//!     `ID <xmlsec1 --id-attr node name>`, `DOC` or `NOROOT`. Finds the document
//!     element with a bare tokenizer, so documents our parser refuses are prepared too (to see
//!     whether xmlsec1 takes them). Exit status 3 when no document element is found.
//! ```

use std::process::ExitCode;

use portcullis::saml::c14n::canonicalize;
use portcullis::saml::xml::{Document, XmlLimits};
use quick_xml::events::Event;
use quick_xml::Reader;

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// The ID given to a document element that has none.
const INJECTED_ID: &str = "c14n-diff-root";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut exclude_first_child = false;
    let mut inject = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exclude-first-child" => exclude_first_child = true,
            "--inject" => inject = true,
            "--prefixes" => {
                let list = it.next().unwrap_or_default();
                prefixes = list.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect();
            }
            _ => positional.push(a),
        }
    }
    match (inject, positional.as_slice()) {
        (false, [file]) => canon(file, exclude_first_child, &prefixes),
        (true, [file, out]) => inject_template(file, out, &prefixes),
        _ => {
            eprintln!(
                "usage: c14n FILE [--exclude-first-child] [--prefixes a,b]\n       c14n --inject FILE OUT [--prefixes a,b]"
            );
            ExitCode::from(64)
        }
    }
}

fn canon(file: &str, exclude_first_child: bool, prefixes: &[String]) -> ExitCode {
    let bytes = std::fs::read(file).expect("read input");
    let doc = match Document::parse(&bytes, &XmlLimits::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{}", error_kind(&format!("{e:?}")));
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let exclude = if exclude_first_child { doc.child_elements(doc.root()).next() } else { None };
    let out = match canonicalize(&doc, doc.root(), prefixes, exclude) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{}", error_kind(&format!("{e:?}")));
            eprintln!("{e}");
            return ExitCode::from(4);
        }
    };
    std::io::Write::write_all(&mut std::io::stdout(), &out).expect("write output");
    ExitCode::SUCCESS
}

/// The variant name of an `XmlError` debug string (`Syntax("...")` -> `Syntax`).
fn error_kind(debug: &str) -> &str {
    debug.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or(debug)
}

fn is_plain_ncname(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn inject_template(file: &str, out: &str, prefixes: &[String]) -> ExitCode {
    let bytes = std::fs::read(file).expect("read input");
    let parsed = Document::parse(&bytes, &XmlLimits::default());
    match &parsed {
        Ok(_) => println!("ok"),
        Err(e) => println!("{}", error_kind(&format!("{e:?}"))),
    }
    let parsed = parsed.ok();
    // Where the document element's start tag is, and its name.
    let mut reader = Reader::from_reader(bytes.as_slice());
    let (start, end, empty, name) = loop {
        let before = usize::try_from(reader.buffer_position()).expect("offset");
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if bytes.get(before) == Some(&b'<') => {
                let end = usize::try_from(reader.buffer_position()).expect("offset");
                let empty = bytes.get(end.wrapping_sub(2)) == Some(&b'/');
                break (before, end, empty, e.name().into_inner().as_bytes().to_vec());
            }
            Ok(Event::Eof) | Err(_) => {
                println!("NOROOT");
                return ExitCode::from(3);
            }
            Ok(Event::Start(_)) | Ok(Event::Empty(_)) => {
                println!("NOROOT");
                return ExitCode::from(3);
            }
            Ok(_) => {}
        }
    };
    // A document our parser refuses is referenced as a whole (URI=""): only whether xmlsec1
    // takes it matters then. Otherwise through the ID as our parser reads it (normalized).
    let (uri, add_attr) = match &parsed {
        None => (String::new(), false),
        Some(d) => match d.attribute(d.root(), "ID") {
            None => (format!("#{INJECTED_ID}"), true),
            Some(id) if is_plain_ncname(id) => (format!("#{id}"), false),
            Some(_) => (String::new(), false),
        },
    };
    let inclusive = if prefixes.is_empty() {
        String::new()
    } else {
        format!(r#"<ec:InclusiveNamespaces xmlns:ec="{EXC}" PrefixList="{}"/>"#, prefixes.join(" "))
    };
    let template = format!(
        concat!(
            r#"<ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo>"#,
            r#"<ds:CanonicalizationMethod Algorithm="{EXC}"/>"#,
            r#"<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>"#,
            r#"<ds:Reference URI="{uri}"><ds:Transforms>"#,
            r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
            r#"<ds:Transform Algorithm="{EXC}">{inclusive}</ds:Transform></ds:Transforms>"#,
            r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>"#,
            r#"<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>"#,
            r#"<ds:SignatureValue></ds:SignatureValue></ds:Signature>"#
        ),
        DSIG = DSIG,
        EXC = EXC,
        uri = uri,
        inclusive = inclusive
    );
    let name_end = start + 1 + name.len();
    let mut doc = Vec::with_capacity(bytes.len() + template.len() + 64);
    doc.extend_from_slice(&bytes[..name_end]);
    if add_attr {
        // First, so that xmlsec1 (which looks the attribute up by local name) finds this one.
        doc.extend_from_slice(format!(r#" ID="{INJECTED_ID}""#).as_bytes());
    }
    if empty {
        doc.extend_from_slice(&bytes[name_end..end - 2]);
        doc.push(b'>');
        doc.extend_from_slice(template.as_bytes());
        doc.extend_from_slice(b"</");
        doc.extend_from_slice(&name);
        doc.push(b'>');
    } else {
        doc.extend_from_slice(&bytes[name_end..end]);
        doc.extend_from_slice(template.as_bytes());
    }
    doc.extend_from_slice(&bytes[end..]);
    std::fs::write(out, doc).expect("write output");
    if uri.is_empty() {
        println!("DOC");
    } else {
        // xmlsec1 --id-attr:ID takes `[namespace-uri:]local-name`.
        let root_ns = parsed.as_ref().and_then(|d| d.element(d.root()).and_then(|e| e.namespace.clone()));
        let name = String::from_utf8_lossy(&name).into_owned();
        let local = name.rsplit_once(':').map_or(name.as_str(), |(_, l)| l);
        match root_ns {
            Some(ns) => println!("ID {ns}:{local}"),
            None => println!("ID {local}"),
        }
    }
    ExitCode::SUCCESS
}
