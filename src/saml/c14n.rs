//! Exclusive XML Canonicalization 1.0, without comments
//! (<http://www.w3.org/2001/10/xml-exc-c14n#>), over the subtree of one element, with the
//! enveloped-signature transform folded in (one element, the `ds:Signature`, can be left out).
//!
//! The input node set is always "an element and its descendants, minus one subtree", which is
//! what a same-document `#ID` reference followed by the enveloped-signature transform yields
//! (XML-DSig 4.4.3.3: dereferencing a bare-name XPointer drops comments). Rules applied, by
//! section of the Exclusive C14N recommendation and of Canonical XML 1.0 it builds on:
//! - C14N 1.0 2.3 / 1.1: UTF-8 output, line ends already normalized by the parser, empty
//!   elements as start-end pairs, character and entity references resolved, CDATA replaced by
//!   its (escaped) content, attribute values normalized, comments removed, superfluous
//!   namespace declarations removed, namespace declarations sorted by prefix (default first)
//!   then attributes sorted by (namespace URI, local name).
//! - Exc-C14N 3: a namespace node is output on an element only if it is visibly utilized by
//!   that element (its own prefix or the prefix of one of its attributes) or its prefix is in
//!   the InclusiveNamespaces PrefixList, and only if no output ancestor already rendered the
//!   same prefix with the same URI. `xml:` attributes of ancestors are never imported.
//! - C14N 1.0 2.1: a document with a relative namespace URI (one without a scheme, RFC 3986
//!   section 4.3) anywhere in it, inside the node set or not, is refused, as libxml2 (so
//!   xmlsec1) does.

use std::collections::BTreeSet;
use std::fmt;

use crate::saml::xml::{Document, Element, NodeData, NodeId, PrefixMap};

/// Algorithm identifier of Exclusive XML Canonicalization 1.0 without comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C14nError {
    /// The apex of the node set is not an element.
    NotAnElement,
    /// The document declares a namespace with a relative URI (C14N 1.0 section 2.1:
    /// canonicalization "MUST report an operation failure on documents containing relative
    /// namespace URIs").
    RelativeNamespaceUri(String),
    /// An InclusiveNamespaces PrefixList longer than [`MAX_INCLUSIVE_PREFIXES`].
    TooManyPrefixes { max: usize },
}

impl fmt::Display for C14nError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            C14nError::NotAnElement => f.write_str("canonicalization apex is not an element"),
            C14nError::RelativeNamespaceUri(u) => {
                write!(f, "namespace URI {u:?} is relative, which canonical XML does not allow")
            }
            C14nError::TooManyPrefixes { max } => {
                write!(f, "InclusiveNamespaces PrefixList has more than {max} prefixes")
            }
        }
    }
}

impl std::error::Error for C14nError {}

/// Most entries of an InclusiveNamespaces PrefixList (IdPs name a handful, such as `xs`).
pub const MAX_INCLUSIVE_PREFIXES: usize = 32;

/// Parses an `InclusiveNamespaces/@PrefixList` value: whitespace-separated prefixes, with
/// `#default` standing for the default namespace. Reading stops one entry past
/// [`MAX_INCLUSIVE_PREFIXES`], enough for [`canonicalize`] to refuse the list.
pub fn parse_prefix_list(list: &str) -> Vec<String> {
    list.split_ascii_whitespace().take(MAX_INCLUSIVE_PREFIXES + 1).map(str::to_owned).collect()
}

/// Canonicalizes the subtree rooted at `apex`, leaving out the subtree rooted at `exclude`
/// (the enveloped signature), with `inclusive_prefixes` treated as in inclusive C14N.
///
/// The work is linear in the size of the subtree: the namespace context and the rendered
/// declarations are kept as one stack per prefix, updated on the way in and undone on the
/// way out (never copied per element), and each element looks at most at its own prefixes
/// and the (bounded) PrefixList; the parser bounds the declarations in scope.
pub fn canonicalize(
    doc: &Document,
    apex: NodeId,
    inclusive_prefixes: &[String],
    exclude: Option<NodeId>,
) -> Result<Vec<u8>, C14nError> {
    if doc.element(apex).is_none() {
        return Err(C14nError::NotAnElement);
    }
    if inclusive_prefixes.len() > MAX_INCLUSIVE_PREFIXES {
        return Err(C14nError::TooManyPrefixes { max: MAX_INCLUSIVE_PREFIXES });
    }
    if let Some(uri) = doc
        .elements()
        .flat_map(|e| &e.namespace_decls)
        .map(|d| d.uri.as_str())
        .find(|u| !u.is_empty() && !has_scheme(u))
    {
        return Err(C14nError::RelativeNamespaceUri(uri.to_owned()));
    }
    let inclusive: BTreeSet<String> = inclusive_prefixes
        .iter()
        .map(|p| if p == "#default" { String::new() } else { p.clone() })
        .filter(|p| p != "xml" && p != "xmlns")
        .collect();
    let mut out = Vec::with_capacity(1024);
    let cx = Context { doc, inclusive: &inclusive, exclude };
    // The apex's ancestors' declarations are its parent context.
    let parent_ns = doc.parent(apex).map(|p| doc.in_scope_namespaces(p)).unwrap_or_default();
    let mut state = State::default();
    for (p, uri) in &parent_ns {
        state.scope.entry(p.as_str()).or_default().push(uri.as_str());
    }
    if let Some(el) = doc.element(apex) {
        cx.element(&mut out, el, &mut state, Parent::Apex);
    }
    Ok(out)
}

/// Where the element being written sits: at the apex, whose namespace context comes from
/// outside the node set, or below an output element with this prefix (`None`: unprefixed).
#[derive(Clone, Copy)]
enum Parent<'a> {
    Apex,
    Element(Option<&'a str>),
}

struct Context<'a> {
    doc: &'a Document,
    inclusive: &'a BTreeSet<String>,
    exclude: Option<NodeId>,
}

/// Namespace context during the walk: per prefix (`""` = default), the URIs declared by
/// the element and its ancestors (`""` = the default undeclared), and the declarations
/// rendered in the output by the elements being written, innermost last. Everything is
/// borrowed from the document: nothing is copied per element.
#[derive(Default)]
struct State<'a> {
    scope: PrefixMap<&'a str, Vec<&'a str>>,
    rendered: PrefixMap<&'a str, Vec<&'a str>>,
    /// Scratch list of candidate prefixes, reused from element to element.
    candidates: Vec<&'a str>,
}

fn top<'a>(map: &PrefixMap<&'a str, Vec<&'a str>>, prefix: &str) -> &'a str {
    map.get(prefix).and_then(|v| v.last()).copied().unwrap_or("")
}

fn pop(map: &mut PrefixMap<&str, Vec<&str>>, prefix: &str) {
    if let Some(v) = map.get_mut(prefix) {
        v.pop();
        if v.is_empty() {
            map.remove(prefix);
        }
    }
}

fn write_qname(out: &mut Vec<u8>, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.extend_from_slice(p.as_bytes());
        out.push(b':');
    }
    out.extend_from_slice(local.as_bytes());
}

impl<'a> Context<'a> {
    /// Exc-C14N 3: the namespace declarations element `el` renders, sorted by prefix:
    /// those of the prefixes it visibly utilizes and of the InclusiveNamespaces prefixes,
    /// where the output does not have that binding in effect already.
    fn namespaces_to_render(
        &self,
        el: &'a Element,
        state: &mut State<'a>,
        is_apex: bool,
        prefix: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        let mut candidates = std::mem::take(&mut state.candidates);
        candidates.clear();
        candidates.push(prefix);
        candidates.extend(el.attributes.iter().filter_map(|a| a.prefix.as_deref()));
        // An inclusive prefix can need a declaration only where its binding changes: at the
        // apex (the context comes from outside the node set) and where the element itself
        // declares it. Below an output parent that did not redeclare it, the parent has
        // already rendered it as in scope. So only the apex looks at the whole list, and
        // every other element at its own declarations: linear, however long the list.
        if is_apex {
            for p in self.inclusive {
                if p.is_empty() || !top(&state.scope, p).is_empty() {
                    candidates.push(p);
                }
            }
        } else {
            for d in &el.namespace_decls {
                let p = d.prefix.as_deref().unwrap_or("");
                if self.inclusive.contains(p) {
                    candidates.push(p);
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();

        let mut ns_out: Vec<(&'a str, &'a str)> = Vec::new();
        for &p in candidates.iter().filter(|p| **p != "xml") {
            let uri = top(&state.scope, p);
            let prev = top(&state.rendered, p);
            // The default namespace: `xmlns=""` only undoes a non-empty rendered default.
            // A prefix: rendered unless the same declaration is in effect in the output.
            let render = if p.is_empty() { uri != prev } else { !uri.is_empty() && uri != prev };
            if render {
                ns_out.push((p, uri));
            }
        }
        state.candidates = candidates;
        ns_out
    }

    /// Writes element `el` with `state` holding its parent's context; `state` is as it was
    /// when this returns. Recursion depth is bounded by the parser's depth limit.
    fn element(&self, out: &mut Vec<u8>, el: &'a Element, state: &mut State<'a>, parent: Parent<'a>) {
        let is_apex = matches!(parent, Parent::Apex);
        // Prefixes are compared as options: an unprefixed element below an unprefixed
        // parent (the usual flood) compares no strings at all.
        let same_prefix = matches!(parent, Parent::Element(p) if p == el.prefix.as_deref());
        let prefix = el.prefix.as_deref().unwrap_or("");
        // The most common element, and the cheapest to flood with: no attributes, no
        // declarations, its parent's prefix. It renders no namespace node and changes no
        // context, so it is written without any of the bookkeeping below.
        if same_prefix && el.namespace_decls.is_empty() && el.attributes.is_empty() {
            out.push(b'<');
            write_qname(out, el.prefix.as_deref(), &el.local);
            out.push(b'>');
            self.children(out, el, state);
            out.extend_from_slice(b"</");
            write_qname(out, el.prefix.as_deref(), &el.local);
            out.push(b'>');
            return;
        }
        let declared = || el.namespace_decls.iter().map(|d| (d.prefix.as_deref().unwrap_or(""), d.uri.as_str()));
        // The element's own namespace context.
        for (p, uri) in declared() {
            state.scope.entry(p).or_default().push(uri);
        }

        // Exc-C14N 3: visibly utilized prefixes, plus the InclusiveNamespaces prefixes in scope.
        // The common case needs no lookup at all: an element that declares nothing, uses
        // no prefixed attribute and has its parent's prefix finds every binding it could
        // render already rendered by the parent.
        let inherits_all =
            same_prefix && el.namespace_decls.is_empty() && el.attributes.iter().all(|a| a.prefix.is_none());
        let ns_out = if inherits_all { Vec::new() } else { self.namespaces_to_render(el, state, is_apex, prefix) };
        for (p, uri) in &ns_out {
            state.rendered.entry(p).or_default().push(uri);
        }

        out.push(b'<');
        write_qname(out, el.prefix.as_deref(), &el.local);
        // Namespace nodes first, sorted by local name (prefix), the default one first.
        for (p, uri) in &ns_out {
            if p.is_empty() {
                out.extend_from_slice(b" xmlns=\"");
            } else {
                out.extend_from_slice(b" xmlns:");
                out.extend_from_slice(p.as_bytes());
                out.extend_from_slice(b"=\"");
            }
            escape_attr(out, uri);
            out.push(b'"');
        }
        // Then attributes, sorted by namespace URI (none first), then local name.
        let mut attrs: Vec<_> = el.attributes.iter().collect();
        if attrs.len() > 1 {
            attrs.sort_by(|a, b| {
                (a.namespace.as_deref().unwrap_or(""), a.local.as_str())
                    .cmp(&(b.namespace.as_deref().unwrap_or(""), b.local.as_str()))
            });
        }
        for a in attrs {
            out.push(b' ');
            write_qname(out, a.prefix.as_deref(), &a.local);
            out.extend_from_slice(b"=\"");
            escape_attr(out, &a.value);
            out.push(b'"');
        }
        out.push(b'>');

        self.children(out, el, state);
        out.extend_from_slice(b"</");
        write_qname(out, el.prefix.as_deref(), &el.local);
        out.push(b'>');

        for (p, _) in &ns_out {
            pop(&mut state.rendered, p);
        }
        for (p, _) in declared() {
            pop(&mut state.scope, p);
        }
    }
}

impl<'a> Context<'a> {
    /// The children of `el`, in document order (comments are not in the node set).
    fn children(&self, out: &mut Vec<u8>, el: &'a Element, state: &mut State<'a>) {
        let parent = Parent::Element(el.prefix.as_deref());
        for &child in &el.children {
            if Some(child) == self.exclude {
                continue;
            }
            match self.doc.node(child).map(|n| &n.data) {
                Some(NodeData::Element(e)) => self.element(out, e, state, parent),
                Some(NodeData::Text(t)) => escape_text(out, t),
                Some(NodeData::Comment(_)) | None => {}
            }
        }
    }
}

/// Whether a URI reference starts with a scheme (RFC 3986 section 3.1:
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`), that is, is not a relative reference.
fn has_scheme(uri: &str) -> bool {
    let Some((scheme, _)) = uri.split_once(':') else { return false };
    let mut b = scheme.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Text node escaping (C14N 1.0 section 2.3).
fn escape_text(out: &mut Vec<u8>, s: &str) {
    escape(out, s, |b| match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    });
}

/// Attribute value escaping (C14N 1.0 section 2.3).
fn escape_attr(out: &mut Vec<u8>, s: &str) {
    escape(out, s, |b| match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'"' => Some(b"&quot;"),
        b'\t' => Some(b"&#x9;"),
        b'\n' => Some(b"&#xA;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    });
}

/// Copies `s` to `out` with the bytes `replace` names replaced, in runs between them. Every
/// character escaped is ASCII, and no byte of a multi-byte UTF-8 sequence is, so working on
/// bytes writes what working on characters would.
fn escape(out: &mut Vec<u8>, s: &str, replace: impl Fn(u8) -> Option<&'static [u8]>) {
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(with) = replace(b) {
            out.extend_from_slice(&bytes[run..i]);
            out.extend_from_slice(with);
            run = i + 1;
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The character-at-a-time version the byte-run one replaced, as a reference.
    fn escape_by_char(s: &str, attr: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in s.chars() {
            match c {
                '&' => out.extend_from_slice(b"&amp;"),
                '<' => out.extend_from_slice(b"&lt;"),
                '>' if !attr => out.extend_from_slice(b"&gt;"),
                '"' if attr => out.extend_from_slice(b"&quot;"),
                '\t' if attr => out.extend_from_slice(b"&#x9;"),
                '\n' if attr => out.extend_from_slice(b"&#xA;"),
                '\r' => out.extend_from_slice(b"&#xD;"),
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn escaping_copies_runs_as_it_did_characters() {
        for s in crate::saml::xml::tests::tricky_strings() {
            let (mut text, mut attr) = (b"x".to_vec(), b"x".to_vec());
            escape_text(&mut text, &s);
            escape_attr(&mut attr, &s);
            assert_eq!(text[1..], escape_by_char(&s, false)[..], "{s:?}");
            assert_eq!(attr[1..], escape_by_char(&s, true)[..], "{s:?}");
        }
    }
}
