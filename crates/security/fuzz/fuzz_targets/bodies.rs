//! The body processors (URL-encoded, multipart, JSON, XML) on arbitrary bodies:
//! errors, never panics.
#![no_main]

use gatehouse_security::body::{json, multipart, urlencoded, xml, Pairs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = urlencoded::parse(data, &mut Pairs::new());
    let _ = json::parse(data, &mut Pairs::new());
    let _ = xml::parse(data);
    // The first line is the Content-Type, the rest the body.
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"multipart/form-data; boundary=x"[..], data),
    };
    let _ = multipart::parse(body, ct);
});
