//! The field path of a deserialisation error, found from the error's position in the
//! document instead of tracked during deserialisation.
//!
//! The Worker deserialises the configuration with plain `serde_json`: tracking the path
//! while deserialising (`serde_path_to_error`, which the native `portcullis check` keeps)
//! wraps every visitor of the configuration's types and cost about 110 KB of wasm, for a
//! document that the build has usually checked already. A refused document is rare, so the
//! Worker reads the path afterwards: it scans the JSON text up to the line and column
//! `serde_json` reports and names the value being read there, in `serde_path_to_error`'s
//! form (`tenants[0].providers[1].issuer`). `tests::error_paths_match_the_tracked_ones`
//! compares the two on every field of full documents made wrong in every way the
//! deserialiser can refuse.

/// One open container while scanning.
enum Frame {
    /// An object, the name of the member being read (set once its name is read), and
    /// whether that member's value has been read.
    Object { key: Option<String>, expecting_key: bool, done: bool },
    /// An array, the index of the element being read, whether it has begun and whether it
    /// has been read.
    Array { index: usize, started: bool, done: bool },
}

/// The containers open at a position, whether the last token before it was a member name,
/// and where the number or literal it stands in began.
struct Scan {
    stack: Vec<Frame>,
    after_name: bool,
    scalar: Option<usize>,
}

/// The path of the value `serde_json` was reading when it refused `document` with `error`,
/// as `serde_path_to_error` names it. Empty for the document's root or an error without a
/// position.
pub(crate) fn error_path(document: &str, error: &serde_json::Error) -> String {
    let (line, column) = (error.line(), error.column());
    if line == 0 {
        return String::new();
    }
    let bytes = document.as_bytes();
    let line_start = if line == 1 {
        Some(0)
    } else {
        bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(line - 2).map(|(i, _)| i + 1)
    };
    let mut end = line_start.map_or(bytes.len(), |s| (s + column).min(bytes.len()));
    let message = error.to_string();
    use serde_json::error::Category;
    let syntax = matches!(error.classify(), Category::Syntax | Category::Eof);
    if error.classify() == Category::Syntax {
        // Reported just after the byte refused (the end of the input: after its last byte).
        end = end.saturating_sub(1);
    } else if !syntax {
        // A data error is reported before the value refused (a wrong type), after it, or
        // after the member name refused. A provider (whose `type` member selects its fields)
        // is read whole before its fields are checked: its errors are reported where
        // serde_json stood when the providers array ended, after the closing bracket or
        // after the comma and the next element's brace. The path then names the provider
        // last read.
        let before = |i: usize| bytes[..i].iter().rposition(|b| !b" \t\n\r".contains(b));
        match before(end).map(|i| (i, bytes[i])) {
            Some((i, b']')) => end = i,
            Some((i, b',')) if bytes.get(end) == Some(&b'{') && before(i).map(|j| bytes[j]) == Some(b'}') => end = i,
            _ => {}
        }
    }
    let mut state = scan(document, end);
    if let Some(start) = state.scalar {
        // A number or literal the refused byte continues is still being read.
        let text = &bytes[start..end];
        let complete = match text.first() {
            Some(b'-' | b'0'..=b'9') => !bytes.get(end).is_some_and(|b| b"0123456789.eE+-".contains(b)),
            _ => matches!(text, b"true" | b"false" | b"null"),
        };
        if !complete {
            if let Some(Frame::Object { done, .. } | Frame::Array { done, .. }) = state.stack.last_mut() {
                *done = false;
            }
        }
    }
    if syntax {
        // Where a comma, a closing bracket or a member name is expected, serde_path_to_error
        // names the container, and a member it has no name for `?`; where the colon after a
        // name is expected, the object.
        match state.stack.last_mut() {
            Some(Frame::Object { key, expecting_key: true, .. }) if state.after_name => *key = None,
            Some(Frame::Object { key, expecting_key, done }) if *expecting_key || *done => {
                *key = Some("?".into());
            }
            Some(Frame::Array { started, done: true, .. }) => *started = false,
            _ => {}
        }
    }
    // An element whose first byte serde_json has only peeked at (a wrong type is reported
    // before the value is read, a syntax error after its first byte) is being read all the
    // same.
    let next = bytes.get(end..).and_then(|rest| rest.iter().find(|b| !b" \t\n\r".contains(b)));
    if let (Some(Frame::Array { started, done: false, .. }), Some(b)) = (state.stack.last_mut(), next) {
        if *b != b']' {
            *started = true;
        }
    }
    // A repeated member, or an unknown enum variant written as `{"Name": …}`: an error of
    // the object being read, reported after the name.
    let of_object = message.starts_with("duplicate field") || message.starts_with("unknown variant");
    if of_object && state.after_name {
        if let Some(Frame::Object { key, .. }) = state.stack.last_mut() {
            *key = None;
        }
    }
    render(&state.stack)
}

/// Scans `document[..end]`.
fn scan(document: &str, end: usize) -> Scan {
    let bytes = document.as_bytes();
    let end = end.min(bytes.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut after_name = false;
    let mut scalar = None;
    let mut i = 0;
    while i < end {
        let b = bytes[i];
        if !b" \t\n\r".contains(&b) {
            after_name = false;
        }
        let in_scalar = !b" \t\n\r{}[],:\"".contains(&b);
        if !in_scalar {
            scalar = None;
        }
        match b {
            b'{' | b'[' => {
                value_begins(&mut stack);
                stack.push(if b == b'{' {
                    Frame::Object { key: None, expecting_key: true, done: false }
                } else {
                    Frame::Array { index: 0, started: false, done: false }
                });
            }
            b'}' | b']' => {
                stack.pop();
                value_done(&mut stack);
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key, expecting_key, done }) => {
                    *key = None;
                    *expecting_key = true;
                    *done = false;
                }
                Some(Frame::Array { index, started, done }) => {
                    *index += 1;
                    *started = false;
                    *done = false;
                }
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expecting_key, .. }) = stack.last_mut() {
                    *expecting_key = false;
                }
            }
            b'"' => {
                let close = string_end(bytes, i).unwrap_or(usize::MAX);
                let key_expected = matches!(stack.last(), Some(Frame::Object { expecting_key: true, .. }));
                if close > end {
                    // A string the position is in: its name or its value is being read.
                    if !key_expected {
                        value_begins(&mut stack);
                    }
                    break;
                }
                // A string serde_json cannot read (a bad escape, a control character) is
                // where it stopped: the error is inside it.
                let text = serde_json::from_str::<String>(document.get(i..close).unwrap_or_default());
                if let Some(Frame::Object { key, expecting_key: true, .. }) = stack.last_mut() {
                    let Ok(name) = text else { break };
                    *key = Some(name);
                    after_name = true;
                } else {
                    value_begins(&mut stack);
                    if text.is_err() {
                        break;
                    }
                    value_done(&mut stack);
                }
                i = close;
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => {
                if scalar.is_none() {
                    scalar = Some(i);
                    value_begins(&mut stack);
                    value_done(&mut stack);
                }
            }
        }
        i += 1;
    }
    Scan { stack, after_name, scalar }
}

/// `serde_path_to_error`'s form: names joined by dots, indexes in brackets.
fn render(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Array { index, started: true, .. } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
            _ => {}
        }
    }
    path
}

/// A value has been read in the innermost container.
fn value_done(stack: &mut [Frame]) {
    if let Some(Frame::Object { done, .. } | Frame::Array { done, .. }) = stack.last_mut() {
        *done = true;
    }
}

/// A scalar, object or array begins in the innermost container.
fn value_begins(stack: &mut [Frame]) {
    if let Some(Frame::Array { started, .. }) = stack.last_mut() {
        *started = true;
    }
}

/// The index just past the string starting at `open` (its opening quote); `None` for an
/// unterminated string.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    while let Some(&c) = bytes.get(j) {
        match c {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}
