//! The return path after sign-in must always stay on the site.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::redirect::safe_return_path;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let out = safe_return_path(&raw, "/_portcullis");
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}: must start with '/'");
    assert!(!out.starts_with("//"), "{raw:?} -> {out:?}: scheme-relative");
    assert!(!out.contains('\\'), "{raw:?} -> {out:?}: contains a backslash");
    assert!(!out.chars().any(char::is_control), "{raw:?} -> {out:?}: contains a control character");
});
