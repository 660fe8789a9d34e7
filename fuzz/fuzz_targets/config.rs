//! Configuration loading and validation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;
use portcullis::secret::Secret;

fuzz_target!(|data: &[u8]| {
    let document = String::from_utf8_lossy(data);
    let _ = Config::load(&document, &|_| Some(Secret::new(vec![7u8; 48])));
});
