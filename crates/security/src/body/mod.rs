//! Request body processors: what ModSecurity's URLENCODED, MULTIPART, JSON and XML
//! processors make of a buffered body. Each is a pure function from bytes to the
//! collections it fills, and reports a parse failure as an error message (it becomes
//! `REQBODY_ERROR` and `REQBODY_ERROR_MSG`); none panics on any input.

pub mod json;
pub mod multipart;
pub mod urlencoded;
pub mod xml;

/// Name and value pairs, in arrival order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Which processor parses the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processor {
    UrlEncoded,
    Multipart,
    Json,
    Xml,
}

impl Processor {
    pub fn parse(s: &str) -> Option<Processor> {
        Some(match s.to_ascii_uppercase().as_str() {
            "URLENCODED" => Processor::UrlEncoded,
            "MULTIPART" => Processor::Multipart,
            "JSON" => Processor::Json,
            "XML" => Processor::Xml,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Processor::UrlEncoded => "URLENCODED",
            Processor::Multipart => "MULTIPART",
            Processor::Json => "JSON",
            Processor::Xml => "XML",
        }
    }

    /// The processor ModSecurity picks from a Content-Type on its own (JSON and XML
    /// are switched on by rules, with `ctl:requestBodyProcessor`).
    pub fn for_content_type(ct: &[u8]) -> Option<Processor> {
        let ct = ct.trim_ascii_start();
        let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
        if starts(b"application/x-www-form-urlencoded") {
            Some(Processor::UrlEncoded)
        } else if starts(b"multipart/form-data") {
            Some(Processor::Multipart)
        } else {
            None
        }
    }
}
