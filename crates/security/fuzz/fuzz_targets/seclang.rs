//! The SecLang parser and compiler on arbitrary text: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(all) = gatehouse_security::load::load_inline(text, Path::new("fuzz.conf")) {
            let _ = gatehouse_security::ruleset::compile(all);
        }
    }
});
