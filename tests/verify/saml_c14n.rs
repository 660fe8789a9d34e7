#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Exclusive XML Canonicalization against the W3C recommendation's examples and against
//! outputs of libxml2 (lxml) and xmlsec1 committed under tests/fixtures/saml/ (regenerated
//! by tests/fixtures/saml/make.sh).

use std::path::PathBuf;

use portcullis::saml::c14n::{canonicalize, parse_prefix_list, C14nError, EXC_C14N};
use portcullis::saml::xml::{Document, NodeId, XmlLimits};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saml")
}

fn parse(s: &str) -> Document {
    Document::parse(s.as_bytes(), &XmlLimits::default()).unwrap()
}

fn elements(doc: &Document) -> Vec<NodeId> {
    doc.descendants_or_self(doc.root()).into_iter().filter(|n| doc.element(*n).is_some()).collect()
}

fn c14n(doc: &Document, apex: NodeId, prefixes: &[&str], exclude: Option<NodeId>) -> String {
    let prefixes: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
    String::from_utf8(canonicalize(doc, apex, &prefixes, exclude).unwrap()).unwrap()
}

/// Exclusive XML Canonicalization 1.0, section 2.2: the same `n1:elem2` subtree in two
/// different documents canonicalizes to the same octets, without the `n0`/`n2`/`n3`
/// declarations and `xml:` attributes of ancestors.
#[test]
fn w3c_section_2_2_examples() {
    let first = parse(
        r#"<n0:local xmlns:n0="foo:bar" xmlns:n3="ftp://example.org"><n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"/></n1:elem2></n0:local>"#,
    );
    let second = parse(
        r#"<n2:pdu xmlns:n1="http://example.com" xmlns:n2="http://foo.example" xml:lang="fr" xml:space="retain"><n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"/></n1:elem2></n2:pdu>"#,
    );
    let expected = r#"<n1:elem2 xmlns:n1="http://example.net" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"></n3:stuff></n1:elem2>"#;
    assert_eq!(c14n(&first, elements(&first)[1], &[], None), expected);
    assert_eq!(c14n(&second, elements(&second)[1], &[], None), expected);
    // With `n2` on the InclusiveNamespaces PrefixList its declaration is carried along.
    assert_eq!(
        c14n(&second, elements(&second)[1], &["n2"], None),
        r#"<n1:elem2 xmlns:n1="http://example.net" xmlns:n2="http://foo.example" xml:lang="en"><n3:stuff xmlns:n3="ftp://example.org"></n3:stuff></n1:elem2>"#
    );
}

#[test]
fn comments_are_removed_and_empty_elements_expanded() {
    let d = parse("<a><!--x--><b/>t<!--y-->u</a>");
    assert_eq!(c14n(&d, d.root(), &[], None), "<a><b></b>tu</a>");
}

#[test]
fn default_namespace_is_undeclared_only_when_rendered() {
    let d = parse(r#"<a xmlns="urn:a"><b xmlns=""><c/></b></a>"#);
    let els = elements(&d);
    assert_eq!(c14n(&d, els[0], &[], None), r#"<a xmlns="urn:a"><b xmlns=""><c></c></b></a>"#);
    assert_eq!(c14n(&d, els[1], &[], None), "<b><c></c></b>");
}

#[test]
fn enveloped_subtree_is_left_out_but_surrounding_text_kept() {
    let d = parse("<a> <s><x/></s> <b/></a>");
    let els = elements(&d);
    assert_eq!(c14n(&d, els[0], &[], Some(els[1])), "<a>  <b></b></a>");
}

#[test]
fn prefix_list_parsing() {
    assert_eq!(parse_prefix_list(" xs  #default\tsaml "), vec!["xs", "#default", "saml"]);
    assert!(parse_prefix_list("").is_empty());
}

/// Every case of tests/fixtures/saml/c14n/cases.txt against libxml2's output.
#[test]
fn matches_libxml2_on_fixture_cases() {
    let dir = fixtures().join("c14n");
    let cases = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    let mut count = 0;
    for line in cases.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, src, apex, prefixes, exclude] = f[..] else { panic!("bad case line {line:?}") };
        let doc = Document::parse(&std::fs::read(dir.join(src)).unwrap(), &XmlLimits::default()).unwrap();
        let els = elements(&doc);
        let prefixes: Vec<&str> = if prefixes == "-" { vec![] } else { prefixes.split(',').collect() };
        let exclude = (exclude != "-").then(|| els[exclude.parse::<usize>().unwrap()]);
        let got = c14n(&doc, els[apex.parse::<usize>().unwrap()], &prefixes, exclude);
        let want = std::fs::read_to_string(dir.join(format!("{name}.c14n"))).unwrap();
        assert_eq!(got, want, "case {name}");
        // Canonical form is a fixed point.
        let again = parse(&got);
        assert_eq!(c14n(&again, again.root(), &prefixes, None), got, "case {name} (second pass)");
        count += 1;
    }
    assert!(count >= 20);
}

const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

/// The canonical SignedInfo and referenced element of every signed fixture, against the bytes
/// xmlsec1 signed and digested when it made and checked the fixture.
#[test]
fn matches_xmlsec1_on_signed_fixtures() {
    let dir = fixtures().join("signed");
    let mut count = 0;
    for entry in std::fs::read_dir(dir.join("xmlsec1")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(stem) = file.strip_suffix(".signedinfo") else { continue };
        let (name, place) = stem.rsplit_once('.').unwrap();
        let doc =
            Document::parse(&std::fs::read(dir.join(format!("{name}.xml"))).unwrap(), &XmlLimits::default()).unwrap();
        let holder = match place {
            "response" => doc.root(),
            "assertion" => doc.children_named(doc.root(), SAML, "Assertion").next().unwrap(),
            other => panic!("unexpected {other}"),
        };
        let signature = doc.children_named(holder, DS, "Signature").next().unwrap();
        let signed_info = doc.children_named(signature, DS, "SignedInfo").next().unwrap();
        let want_si = std::fs::read(dir.join("xmlsec1").join(format!("{stem}.signedinfo"))).unwrap();
        let want_ref = std::fs::read(dir.join("xmlsec1").join(format!("{stem}.digested"))).unwrap();
        assert_eq!(
            String::from_utf8(canonicalize(&doc, signed_info, &[], None).unwrap()).unwrap(),
            String::from_utf8(want_si).unwrap(),
            "SignedInfo of {stem}"
        );
        assert_eq!(
            String::from_utf8(canonicalize(&doc, holder, &["xs".to_owned()], Some(signature)).unwrap()).unwrap(),
            String::from_utf8(want_ref).unwrap(),
            "reference of {stem}"
        );
        count += 1;
    }
    assert!(count >= 12, "only {count} xmlsec1 fixtures");
}

/// Documents on which scripts/c14n-diff.sh found our canonicalizer and xmlsec1 to disagree
/// (minimized, under tests/fixtures/saml/c14n/xmlsec1/): each holds an enveloped Signature
/// template as the first child of its document element, and canonicalizing that element
/// without it must give the bytes xmlsec1 digested (NAME.digested), or fail where xmlsec1
/// refused (NAME.refused).
#[test]
fn matches_xmlsec1_on_differential_findings() {
    let dir = fixtures().join("c14n/xmlsec1");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        let doc = Document::parse(&std::fs::read(&path).unwrap(), &XmlLimits::default()).unwrap();
        let signature = doc.children_named(doc.root(), DS, "Signature").next().unwrap();
        let prefixes = doc
            .elements_named(EXC_C14N, "InclusiveNamespaces")
            .first()
            .and_then(|n| doc.attribute(*n, "PrefixList"))
            .map(parse_prefix_list)
            .unwrap_or_default();
        let got = canonicalize(&doc, doc.root(), &prefixes, Some(signature));
        let digested = path.with_extension("digested");
        if digested.exists() {
            assert_eq!(
                String::from_utf8(got.unwrap()).unwrap(),
                std::fs::read_to_string(&digested).unwrap(),
                "{}",
                path.display()
            );
        } else {
            assert!(path.with_extension("refused").exists(), "{}: no xmlsec1 outcome", path.display());
            assert!(got.is_err(), "{}: xmlsec1 refuses it, we canonicalized it", path.display());
        }
        count += 1;
    }
    assert!(count >= 4);
}

/// Canonical XML 1.0 section 2.1: "implementations of XML canonicalization MUST report an
/// operation failure on documents containing relative namespace URIs", wherever the
/// declaration is (libxml2 checks every element it walks, so the whole document).
#[test]
fn relative_namespace_uris_are_refused() {
    for (xml, uri) in [
        (r#"<a><b xmlns=";">t</b></a>"#, ";"),
        (r#"<a xmlns:p="urn:p"><p:b xmlns:u="u/relative"/></a>"#, "u/relative"),
        (r##"<a><s xmlns:u="#frag"/><b/></a>"##, "#frag"),
        (r#"<a xmlns="1urn:x"/>"#, "1urn:x"),
    ] {
        let d = parse(xml);
        // Excluded (like an enveloped signature) or not, the element still counts.
        let s = elements(&d).get(1).copied();
        assert_eq!(
            canonicalize(&d, d.root(), &[], s).unwrap_err(),
            C14nError::RelativeNamespaceUri(uri.to_owned()),
            "{xml}"
        );
    }
    // Absolute URIs of any scheme, and the undeclaration of the default namespace, are fine.
    let d = parse(r#"<a xmlns="a+b.c-d:x" xmlns:p="urn:p"><p:b/><c xmlns=""/></a>"#);
    assert_eq!(
        c14n(&d, d.root(), &[], None),
        r#"<a xmlns="a+b.c-d:x"><p:b xmlns:p="urn:p"></p:b><c xmlns=""></c></a>"#
    );
}

/// A PrefixList of thousands of prefixes over thousands of elements made canonicalization
/// quadratic; a list longer than the limit is refused before any element is written.
#[test]
fn long_prefix_lists_are_refused() {
    use portcullis::saml::c14n::MAX_INCLUSIVE_PREFIXES;
    let decls: String = (0..100).map(|i| format!(" xmlns:p{i}=\"urn:p{i}\"")).collect();
    let d = parse(&format!("<a{decls}>{}</a>", "<b/>".repeat(2000)));
    let many: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
    assert_eq!(
        canonicalize(&d, d.root(), &many, None).unwrap_err(),
        C14nError::TooManyPrefixes { max: MAX_INCLUSIVE_PREFIXES }
    );
    let list = many.join(" ");
    assert!(parse_prefix_list(&list).len() <= MAX_INCLUSIVE_PREFIXES + 1);
    // At the limit the prefixes in scope are carried along as before.
    let out = canonicalize(&d, d.root(), &many[..MAX_INCLUSIVE_PREFIXES], None).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with(r#"<a xmlns:p0="urn:p0" xmlns:p1="urn:p1" xmlns:p10="urn:p10""#));
}

/// An inclusive prefix is declared at the apex and again wherever an element rebinds it,
/// and nowhere else.
#[test]
fn inclusive_prefixes_follow_rebinding() {
    let d = parse(r#"<a xmlns:p="urn:1" xmlns:q="urn:q"><b xmlns:p="urn:2"><c xmlns:p="urn:2"/><d/></b><e/></a>"#);
    let els = elements(&d);
    assert_eq!(
        c14n(&d, els[0], &["p"], None),
        r#"<a xmlns:p="urn:1"><b xmlns:p="urn:2"><c></c><d></d></b><e></e></a>"#
    );
    assert_eq!(c14n(&d, els[1], &["p", "q"], None), r#"<b xmlns:p="urn:2" xmlns:q="urn:q"><c></c><d></d></b>"#);
    assert_eq!(c14n(&d, els[3], &["p", "#default"], None), r#"<d xmlns:p="urn:2"></d>"#);
}
