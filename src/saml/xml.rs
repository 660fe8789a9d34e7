//! A small, strict XML tree for untrusted SAML messages.
//!
//! The tree is built once, with one parser (quick-xml), and every later step (ID lookup,
//! canonicalization, signature checks, value extraction) works on this same tree, so no two
//! parsers can disagree about what a message says.
//!
//! Refused outright: anything over the caller's size limit, non-UTF-8 input, DOCTYPE (and with
//! it every entity declaration and external reference), processing instructions other than
//! the XML declaration, references to undeclared entities, undeclared namespace prefixes,
//! duplicate attributes, markup or text outside the document element, and documents deeper or
//! larger than the limits.
//!
//! Comments are kept as nodes (so a comment splits text into two text nodes, as in the XPath
//! data model that canonicalization uses) but are never part of a text value:
//! [`Document::text`] refuses an element whose content is not a single run of text, so
//! `admin<!---->@evil.com` can never be read as `admin`.
//!
//! Why one long file: the parser, its limits and the document model are one unit of trust
//! (every limit is counted where the byte is read); splitting them would put the counting
//! and the reading in different places. About 140 of its lines are tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The namespace bound to the `xml` prefix by definition.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// The namespace of namespace declarations; may never be declared.
pub const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// FNV-1a with a final mix, for the small maps of namespace prefixes kept while parsing and
/// canonicalizing: a few nanoseconds per short key where a sorted map compares strings
/// at every level. The maps never hold more than [`XmlLimits::max_namespaces`] keys, so
/// keys chosen to collide cost at most a scan of that many.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        // FNV leaves the high bits, which the map uses as tags, poorly mixed for short
        // keys: a final avalanche (MurmurHash3's fmix64) spreads every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A hash map keyed by namespace prefixes.
pub type PrefixMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// Nesting never accepted beyond this, whatever the limits say (tree walks recurse).
pub const HARD_MAX_DEPTH: usize = 256;

/// Bounds on what the parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting (the document element is at depth 1); at most
    /// [`HARD_MAX_DEPTH`].
    pub max_depth: usize,
    /// Most nodes (elements, attributes, text runs, comments) in one document.
    pub max_nodes: usize,
    /// Most attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// Most namespace declarations in scope at any element (those of the element and of
    /// all its ancestors, shadowed ones included).
    pub max_namespaces: usize,
    /// Longest element or attribute name, prefix included, in bytes.
    pub max_name_bytes: usize,
    /// Most bytes of character data, comments and attribute values in one document.
    pub max_text_bytes: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024,
            max_depth: 40,
            max_nodes: 20_000,
            max_attributes: 128,
            max_namespaces: 128,
            max_name_bytes: 256,
            max_text_bytes: 512 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    TooLarge {
        size: usize,
        max: usize,
    },
    NotUtf8,
    /// The XML declaration names an encoding other than UTF-8.
    UnsupportedEncoding(String),
    /// A `<!DOCTYPE`: DTDs, entity declarations and external references are never processed.
    DocType,
    /// A processing instruction other than the XML declaration, or a misplaced declaration.
    ProcessingInstruction,
    /// A reference to an entity other than the five predefined ones.
    UndeclaredEntity(String),
    /// A character reference or literal character that XML 1.0 does not allow.
    InvalidCharacter,
    /// Any other well-formedness error reported by the parser.
    Syntax(String),
    TooDeep {
        max: usize,
    },
    TooManyNodes {
        max: usize,
    },
    TooManyAttributes {
        max: usize,
    },
    TooManyNamespaces {
        max: usize,
    },
    NameTooLong {
        max: usize,
    },
    TooMuchText {
        max: usize,
    },
    DuplicateAttribute(String),
    UndeclaredPrefix(String),
    InvalidNamespaceDeclaration(String),
    InvalidName(String),
    NoDocumentElement,
    /// Text or a second element outside the document element.
    ContentOutsideDocumentElement,
    /// An element that must hold plain text holds a comment or a child element.
    NotSimpleText {
        element: String,
    },
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use XmlError::*;
        match self {
            TooLarge { size, max } => write!(f, "XML document of {size} bytes exceeds the limit of {max}"),
            NotUtf8 => f.write_str("XML document is not UTF-8"),
            UnsupportedEncoding(e) => write!(f, "XML encoding {e:?} is not supported"),
            DocType => f.write_str("DOCTYPE declarations are not allowed"),
            ProcessingInstruction => f.write_str("processing instructions are not allowed"),
            UndeclaredEntity(e) => write!(f, "reference to undeclared entity {e:?}"),
            InvalidCharacter => f.write_str("character not allowed in XML"),
            Syntax(e) => write!(f, "malformed XML: {e}"),
            TooDeep { max } => write!(f, "XML nesting deeper than {max}"),
            TooManyNodes { max } => write!(f, "XML document has more than {max} nodes"),
            TooManyAttributes { max } => write!(f, "XML element has more than {max} attributes"),
            TooManyNamespaces { max } => write!(f, "more than {max} XML namespace declarations in scope"),
            NameTooLong { max } => write!(f, "XML name longer than {max} bytes"),
            TooMuchText { max } => write!(f, "XML document has more than {max} bytes of text"),
            DuplicateAttribute(a) => write!(f, "duplicate attribute {a:?}"),
            UndeclaredPrefix(p) => write!(f, "undeclared namespace prefix {p:?}"),
            InvalidNamespaceDeclaration(d) => write!(f, "invalid namespace declaration {d:?}"),
            InvalidName(n) => write!(f, "invalid XML name {n:?}"),
            NoDocumentElement => f.write_str("XML document has no document element"),
            ContentOutsideDocumentElement => f.write_str("content outside the document element"),
            NotSimpleText { element } => {
                write!(f, "element {element:?} must contain only text (found a comment or child element)")
            }
        }
    }
}

impl std::error::Error for XmlError {}

/// Handle to a node of one [`Document`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(usize);

/// A namespace declaration as written on an element. `prefix` is `None` for `xmlns="..."`;
/// `uri` is empty for the undeclaration `xmlns=""`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDecl {
    pub prefix: Option<String>,
    pub uri: String,
}

/// An attribute other than a namespace declaration, with its namespace resolved
/// (unprefixed attributes have no namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub prefix: Option<String>,
    pub local: String,
    pub namespace: Option<String>,
    /// The normalized value (XML 1.0 section 3.3.3), references resolved.
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub prefix: Option<String>,
    pub local: String,
    pub namespace: Option<String>,
    pub attributes: Vec<Attribute>,
    pub namespace_decls: Vec<NamespaceDecl>,
    pub children: Vec<NodeId>,
}

impl Element {
    /// The name as written (`prefix:local`).
    pub fn qname(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}:{}", self.local),
            None => self.local.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeData {
    Element(Element),
    /// A maximal run of character data (text, CDATA sections and references merged).
    Text(String),
    Comment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub parent: Option<NodeId>,
    pub data: NodeData,
}

/// Result of looking an `ID` attribute value up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdLookup {
    Found(NodeId),
    NotFound,
    /// More than one element carries this ID.
    Duplicate,
}

/// A parsed document: a tree of nodes addressed by [`NodeId`].
#[derive(Debug, Clone)]
pub struct Document {
    nodes: Vec<Node>,
    root: NodeId,
}

impl Document {
    /// Parses untrusted bytes under `limits`.
    pub fn parse(bytes: &[u8], limits: &XmlLimits) -> Result<Document, XmlError> {
        Self::parse_with_text(bytes, limits).map(|(doc, _)| doc)
    }

    /// [`Document::parse`], also returning the text parsed (the bytes without a byte order
    /// mark, checked as UTF-8 once).
    pub fn parse_with_text<'b>(bytes: &'b [u8], limits: &XmlLimits) -> Result<(Document, &'b str), XmlError> {
        if bytes.len() > limits.max_bytes {
            return Err(XmlError::TooLarge { size: bytes.len(), max: limits.max_bytes });
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8)?;
        Ok((Builder::new(limits).run(text)?, text))
    }

    pub fn root(&self) -> NodeId {
        self.root
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.0)
    }

    pub fn element(&self, id: NodeId) -> Option<&Element> {
        match self.nodes.get(id.0).map(|n| &n.data) {
            Some(NodeData::Element(e)) => Some(e),
            _ => None,
        }
    }

    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        self.nodes.get(id.0).and_then(|n| n.parent)
    }

    /// All child nodes (elements, text, comments) in document order.
    pub fn children(&self, id: NodeId) -> &[NodeId] {
        self.element(id).map(|e| e.children.as_slice()).unwrap_or(&[])
    }

    /// Every element of the document, in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> + '_ {
        self.nodes.iter().filter_map(|n| match &n.data {
            NodeData::Element(e) => Some(e),
            _ => None,
        })
    }

    /// Child elements only, in document order.
    pub fn child_elements(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.children(id).iter().copied().filter(|c| self.element(*c).is_some())
    }

    /// Child elements with the given namespace and local name.
    pub fn children_named<'a>(&'a self, id: NodeId, ns: &'a str, local: &'a str) -> impl Iterator<Item = NodeId> + 'a {
        self.child_elements(id).filter(move |c| self.is_element(*c, ns, local))
    }

    /// Whether `id` is an element with this namespace and local name.
    pub fn is_element(&self, id: NodeId, ns: &str, local: &str) -> bool {
        self.element(id).is_some_and(|e| e.local == local && e.namespace.as_deref() == Some(ns))
    }

    /// The value of the unprefixed (no-namespace) attribute `local`.
    pub fn attribute(&self, id: NodeId, local: &str) -> Option<&str> {
        self.element(id)?
            .attributes
            .iter()
            .find(|a| a.namespace.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// The value of the attribute `local` in namespace `ns`.
    pub fn attribute_ns(&self, id: NodeId, ns: &str, local: &str) -> Option<&str> {
        self.element(id)?
            .attributes
            .iter()
            .find(|a| a.namespace.as_deref() == Some(ns) && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Whether `ancestor` is `id` itself or one of its ancestors.
    pub fn is_ancestor_or_self(&self, ancestor: NodeId, id: NodeId) -> bool {
        let mut cur = Some(id);
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            cur = self.parent(c);
        }
        false
    }

    /// `id` and every node below it, in document order.
    pub fn descendants_or_self(&self, id: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut stack = vec![id];
        while let Some(n) = stack.pop() {
            out.push(n);
            stack.extend(self.children(n).iter().rev().copied());
        }
        out
    }

    /// Every element in the document with this namespace and local name, in document order.
    pub fn elements_named(&self, ns: &str, local: &str) -> Vec<NodeId> {
        self.descendants_or_self(self.root).into_iter().filter(|n| self.is_element(*n, ns, local)).collect()
    }

    /// The exact character content of an element that must hold plain text. Refuses
    /// ([`XmlError::NotSimpleText`]) an element with any comment or child element, so a
    /// value split by a comment is never read in part. An empty element gives `""`.
    pub fn text(&self, id: NodeId) -> Result<String, XmlError> {
        let el = self.element(id).ok_or(XmlError::NotSimpleText { element: String::new() })?;
        let mut out = String::new();
        for c in &el.children {
            match self.node(*c).map(|n| &n.data) {
                Some(NodeData::Text(t)) => out.push_str(t),
                _ => return Err(XmlError::NotSimpleText { element: el.qname() }),
            }
        }
        Ok(out)
    }

    /// Finds the element whose `ID` attribute (unprefixed, as SAML and XML-DSig use it)
    /// equals `value`, reporting when several carry it.
    pub fn find_by_id(&self, value: &str) -> IdLookup {
        let mut found = None;
        for n in self.descendants_or_self(self.root) {
            if self.attribute(n, "ID") == Some(value) {
                if found.is_some() {
                    return IdLookup::Duplicate;
                }
                found = Some(n);
            }
        }
        found.map_or(IdLookup::NotFound, IdLookup::Found)
    }

    /// The first `ID` value that more than one element carries, if any.
    pub fn duplicate_id(&self) -> Option<String> {
        let mut seen = std::collections::BTreeSet::new();
        for n in self.descendants_or_self(self.root) {
            if let Some(v) = self.attribute(n, "ID") {
                if !seen.insert(v) {
                    return Some(v.to_owned());
                }
            }
        }
        None
    }

    /// The namespaces in scope at element `id`: prefix (`""` for the default namespace) to
    /// URI. Undeclared defaults (`xmlns=""`) are absent; `xml` is not listed.
    pub fn in_scope_namespaces(&self, id: NodeId) -> BTreeMap<String, String> {
        let mut chain = Vec::new();
        let mut cur = Some(id);
        while let Some(c) = cur {
            chain.push(c);
            cur = self.parent(c);
        }
        let mut map = BTreeMap::new();
        for n in chain.into_iter().rev() {
            if let Some(e) = self.element(n) {
                for d in &e.namespace_decls {
                    let key = d.prefix.clone().unwrap_or_default();
                    if d.uri.is_empty() {
                        map.remove(&key);
                    } else {
                        map.insert(key, d.uri.clone());
                    }
                }
            }
        }
        map
    }
}

/// Whether `c` is a character XML 1.0 allows (production [2] Char).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || (!c.is_ascii() && c != '\u{D7}' && c != '\u{F7}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == '-' || c == '.'
}

fn check_ncname(name: &str) -> Result<(), XmlError> {
    let ok = if name.is_ascii() {
        // The usual name, checked a byte at a time (the same rules for ASCII characters).
        let mut bytes = name.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    } else {
        let mut chars = name.chars();
        chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
    };
    if ok {
        Ok(())
    } else {
        Err(XmlError::InvalidName(name.to_owned()))
    }
}

/// Splits and checks a qualified name (`local` or `prefix:local`).
fn split_qname(name: &str) -> Result<(Option<String>, String), XmlError> {
    match name.split_once(':') {
        Some((p, l)) => {
            check_ncname(p)?;
            check_ncname(l)?;
            Ok((Some(p.to_owned()), l.to_owned()))
        }
        None => {
            check_ncname(name)?;
            Ok((None, name.to_owned()))
        }
    }
}

/// Line-end normalization (XML 1.0 section 2.11): `\r\n` and lone `\r` become `\n`.
fn normalize_newlines(s: &str, out: &mut String) -> Result<(), XmlError> {
    // Runs of ASCII characters XML allows are copied whole; `\r`, other control characters
    // and everything non-ASCII go one character at a time.
    let mut rest = s;
    while !rest.is_empty() {
        let run = rest.bytes().position(|b| !plain_ascii(b)).unwrap_or(rest.len());
        out.push_str(rest.get(..run).unwrap_or_default());
        rest = rest.get(run..).unwrap_or_default();
        let Some(c) = rest.chars().next() else { break };
        if !is_xml_char(c) {
            return Err(XmlError::InvalidCharacter);
        }
        if c == '\r' {
            out.push('\n');
            rest = rest.strip_prefix("\r\n").or_else(|| rest.get(1..)).unwrap_or_default();
        } else {
            out.push(c);
            rest = rest.get(c.len_utf8()..).unwrap_or_default();
        }
    }
    Ok(())
}

/// An ASCII character XML allows (production [2] Char) other than `\r`.
fn plain_ascii(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x20..=0x7f)
}

/// Resolves the body of a reference (`lt`, `#38`, `#x26`...) to its character.
fn resolve_reference(name: &str) -> Result<char, XmlError> {
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(XmlError::InvalidCharacter);
                }
                u32::from_str_radix(hex, 16).map_err(|_| XmlError::InvalidCharacter)?
            } else if let Some(dec) = name.strip_prefix('#') {
                if dec.is_empty() || !dec.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(XmlError::InvalidCharacter);
                }
                dec.parse::<u32>().map_err(|_| XmlError::InvalidCharacter)?
            } else {
                return Err(XmlError::UndeclaredEntity(name.to_owned()));
            };
            char::from_u32(code).filter(|c| is_xml_char(*c)).ok_or(XmlError::InvalidCharacter)?
        }
    };
    Ok(c)
}

/// Attribute-value normalization (XML 1.0 section 3.3.3, CDATA type): literal whitespace
/// characters become spaces, references are resolved (a referenced whitespace character
/// is kept as is).
fn normalize_attribute(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    loop {
        // Runs of ASCII characters that stand for themselves are copied whole.
        let run = rest
            .bytes()
            .position(|b| !plain_ascii(b) || matches!(b, b'<' | b'&' | b'\n' | b'\t'))
            .unwrap_or(rest.len());
        out.push_str(rest.get(..run).unwrap_or_default());
        rest = rest.get(run..).unwrap_or_default();
        let Some(c) = rest.chars().next() else { break };
        match c {
            '<' => return Err(XmlError::Syntax("'<' in an attribute value".into())),
            '&' => {
                let end = rest.find(';').ok_or_else(|| XmlError::Syntax("unterminated reference".into()))?;
                out.push(resolve_reference(rest.get(1..end).unwrap_or_default())?);
                rest = rest.get(end + 1..).unwrap_or_default();
                continue;
            }
            '\r' => {
                out.push(' ');
                if rest.as_bytes().get(1) == Some(&b'\n') {
                    rest = rest.get(2..).unwrap_or_default();
                    continue;
                }
            }
            '\n' | '\t' => out.push(' '),
            c if !is_xml_char(c) => return Err(XmlError::InvalidCharacter),
            c => out.push(c),
        }
        rest = rest.get(c.len_utf8()..).unwrap_or_default();
    }
    Ok(out)
}

struct Builder<'l> {
    limits: &'l XmlLimits,
    nodes: Vec<Node>,
    /// Open elements, innermost last.
    open: Vec<NodeId>,
    /// Namespace bindings in scope: prefix ("" = default) to the URIs declared for it by
    /// the open elements, innermost last ("" = the default undeclared). One map lookup per
    /// name, however many declarations are in scope.
    bindings: PrefixMap<String, Vec<String>>,
    /// Per open element, the prefixes it declared (unbound again at its end tag).
    declared: Vec<Vec<String>>,
    /// Declarations in scope (the sum of `declared`).
    in_scope: usize,
    pending_text: Option<String>,
    root: Option<NodeId>,
    count: usize,
    text_bytes: usize,
    seen_event: bool,
}

impl<'l> Builder<'l> {
    fn new(limits: &'l XmlLimits) -> Self {
        Self {
            limits,
            nodes: Vec::new(),
            open: Vec::new(),
            bindings: PrefixMap::default(),
            declared: Vec::new(),
            in_scope: 0,
            pending_text: None,
            root: None,
            count: 0,
            text_bytes: 0,
            seen_event: false,
        }
    }

    fn bump(&mut self, n: usize) -> Result<(), XmlError> {
        self.count = self.count.saturating_add(n);
        if self.count > self.limits.max_nodes {
            return Err(XmlError::TooManyNodes { max: self.limits.max_nodes });
        }
        Ok(())
    }

    /// Counts `n` bytes of character data, comment or attribute value.
    fn text_budget(&mut self, n: usize) -> Result<(), XmlError> {
        self.text_bytes = self.text_bytes.saturating_add(n);
        if self.text_bytes > self.limits.max_text_bytes {
            return Err(XmlError::TooMuchText { max: self.limits.max_text_bytes });
        }
        Ok(())
    }

    /// Splits and checks a name as written, within the length limit.
    fn name(&self, raw: &str) -> Result<(Option<String>, String), XmlError> {
        if raw.len() > self.limits.max_name_bytes {
            return Err(XmlError::NameTooLong { max: self.limits.max_name_bytes });
        }
        split_qname(raw)
    }

    fn push_text(&mut self, s: &str) -> Result<(), XmlError> {
        if self.open.is_empty() {
            // Outside the document element only whitespace may appear.
            if s.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r')) {
                return Ok(());
            }
            return Err(XmlError::ContentOutsideDocumentElement);
        }
        self.text_budget(s.len())?;
        let buf = self.pending_text.get_or_insert_with(String::new);
        normalize_newlines(s, buf)
    }

    fn push_char(&mut self, c: char) -> Result<(), XmlError> {
        if self.open.is_empty() {
            return Err(XmlError::ContentOutsideDocumentElement);
        }
        self.text_budget(c.len_utf8())?;
        self.pending_text.get_or_insert_with(String::new).push(c);
        Ok(())
    }

    fn add_node(&mut self, data: NodeData) -> Result<NodeId, XmlError> {
        self.bump(1)?;
        let id = NodeId(self.nodes.len());
        let parent = self.open.last().copied();
        self.nodes.push(Node { parent, data });
        if let Some(p) = parent {
            if let Some(NodeData::Element(e)) = self.nodes.get_mut(p.0).map(|n| &mut n.data) {
                e.children.push(id);
            }
        }
        Ok(id)
    }

    fn flush_text(&mut self) -> Result<(), XmlError> {
        if let Some(t) = self.pending_text.take() {
            if !t.is_empty() {
                self.add_node(NodeData::Text(t))?;
            }
        }
        Ok(())
    }

    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        self.bindings.get(prefix).and_then(|uris| uris.last()).map(String::as_str)
    }

    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), XmlError> {
        self.flush_text()?;
        if self.open.is_empty() && self.root.is_some() {
            return Err(XmlError::ContentOutsideDocumentElement);
        }
        let max_depth = self.limits.max_depth.min(HARD_MAX_DEPTH);
        if self.open.len() >= max_depth {
            return Err(XmlError::TooDeep { max: max_depth });
        }
        let (prefix, local) = self.name(e.name().as_ref())?;

        // Attributes as written. Each is counted (attributes per element, nodes, text) as it
        // is read, and duplicates by qualified name are found in a sorted set, so the work
        // is proportional to the tag's length, whatever it holds.
        let mut raw_attrs: Vec<(Option<String>, String, String)> = Vec::new();
        let mut decls: Vec<NamespaceDecl> = Vec::new();
        // Names borrowed from the tag: one allocation per tag at most, not one per name.
        let mut qnames: BTreeSet<&str> = BTreeSet::new();
        for attr in e.attributes().with_checks(false) {
            let attr = attr.map_err(|err| XmlError::Syntax(err.to_string()))?;
            if qnames.len() >= self.limits.max_attributes {
                return Err(XmlError::TooManyAttributes { max: self.limits.max_attributes });
            }
            self.bump(1)?;
            let raw_name = attr.key.0;
            let (ap, al) = self.name(raw_name)?;
            // `xmlns:p` and `xmlns` are qualified names like any other: one set finds
            // repeated attributes and repeated declarations alike.
            if !qnames.insert(raw_name) {
                return Err(XmlError::DuplicateAttribute(raw_name.to_owned()));
            }
            self.text_budget(attr.value.len())?;
            let value = normalize_attribute(&attr.value)?;
            match (ap.as_deref(), al.as_str()) {
                (None, "xmlns") => {
                    if value == XML_NS || value == XMLNS_NS {
                        return Err(XmlError::InvalidNamespaceDeclaration(al));
                    }
                    decls.push(NamespaceDecl { prefix: None, uri: value });
                }
                (Some("xmlns"), p) => {
                    let bad =
                        p == "xmlns" || value.is_empty() || (p == "xml") != (value == XML_NS) || value == XMLNS_NS;
                    if bad {
                        return Err(XmlError::InvalidNamespaceDeclaration(format!("xmlns:{p}")));
                    }
                    // `xmlns:xml` bound to its own namespace is allowed and changes nothing.
                    if p != "xml" {
                        decls.push(NamespaceDecl { prefix: Some(p.to_owned()), uri: value });
                    }
                }
                _ => raw_attrs.push((ap, al, value)),
            }
        }
        self.in_scope = self.in_scope.saturating_add(decls.len());
        if self.in_scope > self.limits.max_namespaces {
            return Err(XmlError::TooManyNamespaces { max: self.limits.max_namespaces });
        }
        let mut declared = Vec::with_capacity(decls.len());
        for d in &decls {
            let key = d.prefix.clone().unwrap_or_default();
            self.bindings.entry(key.clone()).or_default().push(d.uri.clone());
            declared.push(key);
        }
        self.declared.push(declared);

        let namespace = match &prefix {
            Some(p) => {
                if p == "xmlns" {
                    return Err(XmlError::InvalidName(format!("{p}:{local}")));
                }
                Some(self.lookup(p).ok_or_else(|| XmlError::UndeclaredPrefix(p.clone()))?.to_owned())
            }
            None => self.lookup("").filter(|u| !u.is_empty()).map(str::to_owned),
        };
        // Each attribute's namespace, in order, refusing an undeclared prefix or two
        // attributes with different prefixes bound to one namespace (duplicates too), with
        // names borrowed until every check has passed.
        let mut namespaces: Vec<Option<&str>> = Vec::with_capacity(raw_attrs.len());
        let mut expanded: BTreeSet<(Option<&str>, &str)> = BTreeSet::new();
        for (ap, al, _) in &raw_attrs {
            let ans = match ap {
                Some(p) => Some(self.lookup(p).ok_or_else(|| XmlError::UndeclaredPrefix(p.clone()))?),
                None => None,
            };
            if !expanded.insert((ans, al.as_str())) {
                return Err(XmlError::DuplicateAttribute(al.clone()));
            }
            namespaces.push(ans);
        }
        let attributes: Vec<Attribute> = raw_attrs
            .into_iter()
            .zip(namespaces)
            .map(|((ap, al, value), ans)| Attribute { prefix: ap, local: al, namespace: ans.map(str::to_owned), value })
            .collect();
        let id = self.add_node(NodeData::Element(Element {
            prefix,
            local,
            namespace,
            attributes,
            namespace_decls: decls,
            children: Vec::new(),
        }))?;
        if self.root.is_none() {
            self.root = Some(id);
        }
        self.open.push(id);
        Ok(())
    }

    fn end(&mut self) -> Result<(), XmlError> {
        self.flush_text()?;
        self.open.pop().ok_or_else(|| XmlError::Syntax("unmatched end tag".into()))?;
        for prefix in self.declared.pop().unwrap_or_default() {
            self.in_scope = self.in_scope.saturating_sub(1);
            if let Some(uris) = self.bindings.get_mut(&prefix) {
                uris.pop();
                if uris.is_empty() {
                    self.bindings.remove(&prefix);
                }
            }
        }
        Ok(())
    }

    fn run(mut self, text: &str) -> Result<Document, XmlError> {
        let mut reader = Reader::from_str(text);
        let cfg = reader.config_mut();
        cfg.check_comments = true;
        cfg.check_end_names = true;
        cfg.allow_unmatched_ends = false;
        cfg.allow_dangling_amp = false;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
        loop {
            let ev = reader.read_event().map_err(|e| XmlError::Syntax(e.to_string()))?;
            let first = !self.seen_event;
            self.seen_event = true;
            match ev {
                Event::Decl(d) => {
                    if !first {
                        return Err(XmlError::ProcessingInstruction);
                    }
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| XmlError::Syntax(e.to_string()))?;
                        let enc = enc.into_owned();
                        if !enc.eq_ignore_ascii_case("utf-8") {
                            return Err(XmlError::UnsupportedEncoding(enc));
                        }
                    }
                }
                Event::PI(_) => return Err(XmlError::ProcessingInstruction),
                Event::DocType(_) => return Err(XmlError::DocType),
                Event::Start(e) => self.start(&e)?,
                Event::Empty(e) => {
                    self.start(&e)?;
                    self.end()?;
                }
                Event::End(_) => self.end()?,
                Event::Text(t) => {
                    self.push_text(&t)?;
                }
                Event::CData(c) => {
                    if self.open.is_empty() {
                        return Err(XmlError::ContentOutsideDocumentElement);
                    }
                    self.push_text(&c)?;
                }
                Event::GeneralRef(r) => {
                    let c = resolve_reference(&r)?;
                    self.push_char(c)?;
                }
                Event::Comment(c) => {
                    self.flush_text()?;
                    if !self.open.is_empty() {
                        self.text_budget(c.len())?;
                    }
                    let mut body = String::new();
                    normalize_newlines(&c, &mut body)?;
                    if !self.open.is_empty() {
                        self.add_node(NodeData::Comment(body))?;
                    }
                }
                Event::Eof => break,
            }
        }
        if !self.open.is_empty() {
            return Err(XmlError::Syntax("unclosed element".into()));
        }
        let root = self.root.ok_or(XmlError::NoDocumentElement)?;
        Ok(Document { nodes: self.nodes, root })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Document, XmlError> {
        Document::parse(s.as_bytes(), &XmlLimits::default())
    }

    #[test]
    fn namespaces_resolve_with_scoping() {
        let d = parse(r#"<a xmlns="urn:d" xmlns:p="urn:p"><p:b p:x="1" y="2"><c xmlns=""/></p:b></a>"#).unwrap();
        let a = d.root();
        assert!(d.is_element(a, "urn:d", "a"));
        let b = d.child_elements(a).next().unwrap();
        assert!(d.is_element(b, "urn:p", "b"));
        assert_eq!(d.attribute_ns(b, "urn:p", "x"), Some("1"));
        assert_eq!(d.attribute(b, "y"), Some("2"));
        assert_eq!(d.attribute(b, "x"), None);
        let c = d.child_elements(b).next().unwrap();
        assert_eq!(d.element(c).unwrap().namespace, None);
        assert_eq!(d.in_scope_namespaces(c).get(""), None);
        assert_eq!(d.in_scope_namespaces(b).get("").map(String::as_str), Some("urn:d"));
    }

    #[test]
    fn refuses_dangerous_and_malformed_input() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><r>&b;</r>"#;
        assert_eq!(parse(bomb).unwrap_err(), XmlError::DocType);
        assert_eq!(parse("<r>&ext;</r>").unwrap_err(), XmlError::UndeclaredEntity("ext".into()));
        assert_eq!(parse("<r><?php x?></r>").unwrap_err(), XmlError::ProcessingInstruction);
        assert_eq!(parse(r#"<r a="1" a="2"/>"#).unwrap_err(), XmlError::DuplicateAttribute("a".into()));
        assert_eq!(
            parse(r#"<r xmlns:p="urn:x" xmlns:q="urn:x" p:a="1" q:a="2"/>"#).unwrap_err(),
            XmlError::DuplicateAttribute("a".into())
        );
        assert_eq!(
            parse(r#"<r xmlns:p="urn:a" xmlns:p="urn:b"/>"#).unwrap_err(),
            XmlError::DuplicateAttribute("xmlns:p".into())
        );
        assert_eq!(
            parse(r#"<r xmlns="urn:a" xmlns="urn:b"/>"#).unwrap_err(),
            XmlError::DuplicateAttribute("xmlns".into())
        );
        assert_eq!(parse("<p:r/>").unwrap_err(), XmlError::UndeclaredPrefix("p".into()));
        assert_eq!(parse("<r/><r/>").unwrap_err(), XmlError::ContentOutsideDocumentElement);
        assert_eq!(parse("<r/>x").unwrap_err(), XmlError::ContentOutsideDocumentElement);
        assert_eq!(parse("<r>&#0;</r>").unwrap_err(), XmlError::InvalidCharacter);
        assert_eq!(parse("<r>\u{1}</r>").unwrap_err(), XmlError::InvalidCharacter);
        assert_eq!(parse(r#"<r xmlns:p=""/>"#).unwrap_err(), XmlError::InvalidNamespaceDeclaration("xmlns:p".into()));
        assert!(matches!(parse("<r><a></b></r>").unwrap_err(), XmlError::Syntax(_)));
        assert!(matches!(parse("<r>").unwrap_err(), XmlError::Syntax(_)));
        assert_eq!(parse("").unwrap_err(), XmlError::NoDocumentElement);
        assert_eq!(parse("<r/><?pi?>").unwrap_err(), XmlError::ProcessingInstruction);
        assert_eq!(
            parse(r#"<?xml version="1.0" encoding="ISO-8859-1"?><r/>"#).unwrap_err(),
            XmlError::UnsupportedEncoding("ISO-8859-1".into())
        );
        assert_eq!(Document::parse(b"<r>\xff</r>", &XmlLimits::default()).unwrap_err(), XmlError::NotUtf8);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = XmlLimits { max_bytes: 10, ..XmlLimits::default() };
        assert_eq!(
            Document::parse(b"<r>0123456789</r>", &limits).unwrap_err(),
            XmlError::TooLarge { size: 17, max: 10 }
        );
        let deep = "<a>".repeat(50) + &"</a>".repeat(50);
        assert_eq!(parse(&deep).unwrap_err(), XmlError::TooDeep { max: 40 });
        let lax = XmlLimits { max_depth: usize::MAX, ..XmlLimits::default() };
        let deeper = "<a>".repeat(300) + &"</a>".repeat(300);
        assert_eq!(Document::parse(deeper.as_bytes(), &lax).unwrap_err(), XmlError::TooDeep { max: HARD_MAX_DEPTH });
        let wide = format!("<r>{}</r>", "<a/>".repeat(30_000));
        assert_eq!(parse(&wide).unwrap_err(), XmlError::TooManyNodes { max: 20_000 });
    }

    #[test]
    fn attributes_are_counted_as_they_are_read() {
        // 74 000 distinct attributes on one start tag: refused at the limit, before the
        // rest of the tag is looked at (the broken attribute at the end is never reached).
        let mut bomb = String::from("<r");
        for i in 0..74_000 {
            bomb.push_str(&format!(" a{i}=\"\""));
        }
        bomb.push_str(" z=\"<\"/>");
        let limits = XmlLimits { max_bytes: 2 << 20, ..XmlLimits::default() };
        assert_eq!(Document::parse(bomb.as_bytes(), &limits).unwrap_err(), XmlError::TooManyAttributes { max: 128 });
        // The node limit too is counted attribute by attribute.
        let few = XmlLimits { max_nodes: 50, ..limits };
        assert_eq!(Document::parse(bomb.as_bytes(), &few).unwrap_err(), XmlError::TooManyNodes { max: 50 });
        // Namespace declarations count as attributes.
        let decls: String = (0..200).map(|i| format!(" xmlns:p{i}=\"urn:{i}\"")).collect();
        assert_eq!(parse(&format!("<r{decls}/>")).unwrap_err(), XmlError::TooManyAttributes { max: 128 });
        // At the limit the element is accepted.
        let ok: String = (0..127).map(|i| format!(" a{i}=\"\"")).collect();
        assert!(parse(&format!("<r xmlns=\"urn:x\"{ok}/>")).is_ok());
    }

    #[test]
    fn namespace_scope_names_and_text_are_bounded() {
        // 40 declarations on each of 4 nested elements: 160 in scope at the innermost.
        let level = |d: usize| (0..40).map(|i| format!(" xmlns:p{d}x{i}=\"urn:{i}\"")).collect::<String>();
        let nested = format!("<a{}><b{}><c{}><d{}/></c></b></a>", level(0), level(1), level(2), level(3));
        assert_eq!(parse(&nested).unwrap_err(), XmlError::TooManyNamespaces { max: 128 });
        // Siblings do not add up: each one's declarations leave scope at its end tag.
        let siblings = format!("<a>{}</a>", (0..20).map(|_| format!("<b{}/>", level(0))).collect::<String>());
        assert!(parse(&siblings).is_ok());
        let long = "n".repeat(300);
        assert_eq!(parse(&format!("<{long}/>")).unwrap_err(), XmlError::NameTooLong { max: 256 });
        assert_eq!(parse(&format!("<r {long}=\"1\"/>")).unwrap_err(), XmlError::NameTooLong { max: 256 });
        let limits = XmlLimits { max_text_bytes: 100, ..XmlLimits::default() };
        let text = format!("<r a=\"{}\">{}</r>", "v".repeat(60), "t".repeat(60));
        assert_eq!(Document::parse(text.as_bytes(), &limits).unwrap_err(), XmlError::TooMuchText { max: 100 });
        let comments = format!("<r>{}</r>", "<!--ccccccccc-->".repeat(20));
        assert_eq!(Document::parse(comments.as_bytes(), &limits).unwrap_err(), XmlError::TooMuchText { max: 100 });
    }

    #[test]
    fn text_refuses_comments_and_children_but_merges_cdata_and_references() {
        let d = parse("<r><n>admin<!---->@evil.com</n><m>a&amp;b<![CDATA[<c>]]>&#x41;</m><e/><k><x/></k></r>").unwrap();
        let kids: Vec<_> = d.child_elements(d.root()).collect();
        assert_eq!(d.text(kids[0]).unwrap_err(), XmlError::NotSimpleText { element: "n".into() });
        assert_eq!(d.text(kids[1]).unwrap(), "a&b<c>A");
        assert_eq!(d.text(kids[2]).unwrap(), "");
        assert_eq!(d.text(kids[3]).unwrap_err(), XmlError::NotSimpleText { element: "k".into() });
    }

    #[test]
    fn line_ends_and_attribute_values_are_normalized() {
        let d = parse("<r a=\"x\r\ny\tz&#9;\">1\r\n2\r3&#13;</r>").unwrap();
        assert_eq!(d.attribute(d.root(), "a"), Some("x y z\t"));
        assert_eq!(d.text(d.root()).unwrap(), "1\n2\n3\r");
    }

    #[test]
    fn id_lookup_reports_duplicates() {
        let d = parse(r#"<r ID="a"><x ID="b"/><y ID="b"/></r>"#).unwrap();
        assert_eq!(d.find_by_id("a"), IdLookup::Found(d.root()));
        assert_eq!(d.find_by_id("b"), IdLookup::Duplicate);
        assert_eq!(d.find_by_id("c"), IdLookup::NotFound);
        assert_eq!(d.duplicate_id().as_deref(), Some("b"));
    }

    /// Strings over the characters that the normalizations and the C14N escaping treat
    /// specially (and some they do not), every one of length up to 3 and longer mixes.
    pub(crate) fn tricky_strings() -> Vec<String> {
        let alphabet = [
            "a",
            " ",
            "\t",
            "\n",
            "\r",
            "&",
            "<",
            ">",
            "\"",
            "'",
            ";",
            "\u{1}",
            "\u{7f}",
            "\u{e9}",
            "\u{4e2d}",
            "\u{1f600}",
            "\u{fffe}",
            "\u{ffff}",
            "&amp;",
            "&#13;",
            "&#x9;",
            "&lt",
            "&bogus;",
        ];
        let mut out = vec![String::new()];
        for a in alphabet {
            out.push(a.to_owned());
            for b in alphabet {
                out.push(format!("{a}{b}"));
                for c in alphabet {
                    out.push(format!("{a}{b}{c}"));
                }
            }
        }
        out.push(alphabet.concat().repeat(3));
        out.push(format!("{}\r", "plain text ".repeat(20)));
        out
    }

    /// The character-at-a-time versions the byte-run ones replaced, as references.
    fn normalize_newlines_by_char(s: &str, out: &mut String) -> Result<(), XmlError> {
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if !is_xml_char(c) {
                return Err(XmlError::InvalidCharacter);
            }
            if c == '\r' {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            } else {
                out.push(c);
            }
        }
        Ok(())
    }

    fn normalize_attribute_by_char(raw: &str) -> Result<String, XmlError> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(c) = rest.chars().next() {
            match c {
                '<' => return Err(XmlError::Syntax("'<' in an attribute value".into())),
                '&' => {
                    let end = rest.find(';').ok_or_else(|| XmlError::Syntax("unterminated reference".into()))?;
                    out.push(resolve_reference(rest.get(1..end).unwrap_or_default())?);
                    rest = rest.get(end + 1..).unwrap_or_default();
                    continue;
                }
                '\r' => {
                    out.push(' ');
                    if rest.as_bytes().get(1) == Some(&b'\n') {
                        rest = rest.get(2..).unwrap_or_default();
                        continue;
                    }
                }
                '\n' | '\t' => out.push(' '),
                c if !is_xml_char(c) => return Err(XmlError::InvalidCharacter),
                c => out.push(c),
            }
            rest = rest.get(c.len_utf8()..).unwrap_or_default();
        }
        Ok(out)
    }

    #[test]
    fn ascii_names_are_checked_as_characters_are() {
        let by_char = |name: &str| {
            let mut chars = name.chars();
            chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
        };
        for a in 0u8..128 {
            for b in 0u8..128 {
                let name = String::from_utf8(vec![a, b]).unwrap();
                assert_eq!(check_ncname(&name).is_ok(), by_char(&name), "{name:?}");
                assert_eq!(check_ncname(&name[..1]).is_ok(), by_char(&name[..1]), "{name:?}");
            }
        }
        assert!(check_ncname("").is_err());
    }

    #[test]
    fn normalizations_copy_runs_as_they_did_characters() {
        for s in tricky_strings() {
            let (mut fast, mut slow) = (String::from("x"), String::from("x"));
            let (a, b) = (normalize_newlines(&s, &mut fast), normalize_newlines_by_char(&s, &mut slow));
            assert_eq!(a, b, "{s:?}");
            if a.is_ok() {
                assert_eq!(fast, slow, "{s:?}");
            }
            assert_eq!(normalize_attribute(&s), normalize_attribute_by_char(&s), "{s:?}");
        }
    }
}
