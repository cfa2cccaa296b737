//! `multipart/form-data` bodies, parsed as ModSecurity does: the boundary taken from
//! the Content-Type (with its quoting and whitespace flagged), parts split on boundary
//! lines, part headers read (folding flagged), `Content-Disposition` parsed for `name`
//! and `filename`; fields become arguments, file parts become `FILES*`. Every oddity
//! an evasion could use sets its `MULTIPART_*` flag, and `MULTIPART_STRICT_ERROR`
//! is their sum.

use super::Pairs;
use crate::operators::find;

/// The `MULTIPART_*` flags.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    pub boundary_quoted: bool,
    pub boundary_whitespace: bool,
    pub data_before: bool,
    pub data_after: bool,
    pub header_folding: bool,
    pub lf_line: bool,
    pub crlf_lf_lines: bool,
    pub missing_semicolon: bool,
    pub invalid_quoting: bool,
    pub invalid_part: bool,
    pub invalid_header_folding: bool,
    pub file_limit_exceeded: bool,
    pub unmatched_boundary: bool,
}

impl Flags {
    /// `MULTIPART_STRICT_ERROR`, without the processor error (the caller adds it).
    pub fn strict(&self) -> bool {
        self.boundary_quoted
            || self.boundary_whitespace
            || self.data_before
            || self.data_after
            || self.header_folding
            || self.lf_line
            || self.crlf_lf_lines
            || self.missing_semicolon
            || self.invalid_quoting
            || self.invalid_part
            || self.invalid_header_folding
            || self.file_limit_exceeded
    }
}

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    pub field: Vec<u8>,
    pub filename: Vec<u8>,
    pub size: usize,
}

/// What a multipart body gives the rules.
#[derive(Debug, Default, Clone)]
pub struct Multipart {
    pub args: Pairs,
    pub files: Vec<FilePart>,
    /// Per part name, each header line as received (`Content-Type: text/plain`).
    pub part_headers: Pairs,
    pub flags: Flags,
    /// The last part's `name` and `filename` (`MULTIPART_NAME`, `MULTIPART_FILENAME`).
    pub last_name: Vec<u8>,
    pub last_filename: Vec<u8>,
}

/// The boundary from a Content-Type, with its flags.
pub fn boundary(content_type: &[u8], flags: &mut Flags) -> Result<Vec<u8>, String> {
    let bad = || "Multipart: Invalid boundary in C-T".to_string();
    // The parameters after the media type; the one named `boundary` (any case).
    let mut found: Option<&[u8]> = None;
    for param in content_type.split(|&b| b == b';').skip(1) {
        let p = param.trim_ascii_start();
        if p.len() >= 8 && p[..8].eq_ignore_ascii_case(b"boundary") {
            let after = &p[8..];
            if after.trim_ascii_start().first() == Some(&b'=') {
                if found.is_some() {
                    return Err("Multipart: Multiple boundary parameters in C-T".into());
                }
                found = Some(after);
            }
        }
    }
    let mut rest = found.ok_or_else(bad)?;
    let trimmed = rest.trim_ascii_start();
    if trimmed.len() != rest.len() {
        flags.boundary_whitespace = true;
    }
    rest = &trimmed[1..];
    let trimmed = rest.trim_ascii_start();
    if trimmed.len() != rest.len() {
        flags.boundary_whitespace = true;
    }
    rest = trimmed;
    let value = if rest.first() == Some(&b'"') {
        flags.boundary_quoted = true;
        let end = rest[1..].iter().position(|&b| b == b'"').ok_or_else(bad)?;
        &rest[1..1 + end]
    } else {
        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        let v = &rest[..end];
        let t = v.trim_ascii_end();
        if t.len() != v.len() {
            flags.boundary_whitespace = true;
        }
        t
    };
    // RFC 2046: 1 to 70 characters from a restricted set.
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    if value.is_empty() || value.len() > 70 || !value.iter().all(|&b| ok(b)) {
        return Err(bad());
    }
    Ok(value.to_vec())
}

/// Lines with their ending: (content, had CR before LF, had LF).
fn lines(body: &[u8]) -> impl Iterator<Item = (&[u8], bool, bool)> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                match line.strip_suffix(b"\r") {
                    Some(l) => Some((l, true, true)),
                    None => Some((line, false, true)),
                }
            }
            None => {
                let line = rest;
                rest = &[];
                Some((line, false, false))
            }
        }
    })
}

#[derive(PartialEq)]
enum State {
    Preamble,
    Headers,
    Data,
    Done,
}

struct Part {
    headers: Vec<Vec<u8>>,
    data: Vec<u8>,
    /// The line ending that followed the last data line; it belongs to the boundary.
    pending: Vec<u8>,
}

/// Parses a whole body with the boundary from the Content-Type; what was parsed, and
/// the first error (the body is still inspected as far as it parsed).
pub fn parse(body: &[u8], content_type: &[u8]) -> (Multipart, Option<String>) {
    let mut out = Multipart::default();
    let boundary = match boundary(content_type, &mut out.flags) {
        Ok(b) => b,
        Err(e) => return (out, Some(e)),
    };
    let mut dash = b"--".to_vec();
    dash.extend_from_slice(&boundary);
    let (mut crlf_seen, mut lf_seen) = (false, false);
    let mut state = State::Preamble;
    let mut part: Option<Part> = None;
    let mut error: Option<String> = None;
    for (line, cr, lf) in lines(body) {
        if lf {
            if cr {
                crlf_seen = true;
            } else {
                lf_seen = true;
            }
        }
        if state == State::Done {
            if !line.is_empty() {
                out.flags.data_after = true;
            }
            continue;
        }
        if let Some(after) = line.strip_prefix(dash.as_slice()) {
            let final_ = after.starts_with(b"--");
            let tail = if final_ { &after[2..] } else { after };
            if tail.iter().all(|b| *b == b' ' || *b == b'\t') {
                if let Some(p) = part.take() {
                    if let Err(e) = finish(p, &mut out) {
                        error.get_or_insert(e);
                    }
                }
                if final_ {
                    state = State::Done;
                } else {
                    part = Some(Part {
                        headers: Vec::new(),
                        data: Vec::new(),
                        pending: Vec::new(),
                    });
                    state = State::Headers;
                }
                continue;
            }
            out.flags.unmatched_boundary = true;
        } else if line.starts_with(b"--") && find(line, &boundary).is_some() {
            out.flags.unmatched_boundary = true;
        }
        match state {
            State::Preamble => {
                if !line.is_empty() {
                    out.flags.data_before = true;
                }
            }
            State::Headers => {
                let Some(p) = part.as_mut() else { continue };
                if line.is_empty() {
                    state = State::Data;
                } else if line[0] == b' ' || line[0] == b'\t' {
                    out.flags.header_folding = true;
                    match p.headers.last_mut() {
                        Some(h) => {
                            h.push(b' ');
                            h.extend_from_slice(line.trim_ascii_start());
                        }
                        None => {
                            out.flags.invalid_header_folding = true;
                            error.get_or_insert_with(|| {
                                "Multipart: Invalid part header (folding error).".into()
                            });
                        }
                    }
                } else {
                    if !line.contains(&b':') {
                        out.flags.invalid_part = true;
                        error.get_or_insert_with(|| {
                            "Multipart: Invalid part header (colon missing).".into()
                        });
                    }
                    p.headers.push(line.to_vec());
                }
            }
            State::Data => {
                let Some(p) = part.as_mut() else { continue };
                let pending = std::mem::take(&mut p.pending);
                p.data.extend_from_slice(&pending);
                p.data.extend_from_slice(line);
                p.pending = match (cr, lf) {
                    (true, _) => b"\r\n".to_vec(),
                    (false, true) => b"\n".to_vec(),
                    _ => Vec::new(),
                };
            }
            State::Done => {}
        }
    }
    if lf_seen {
        out.flags.lf_line = true;
        if crlf_seen {
            out.flags.crlf_lf_lines = true;
        }
    }
    if state != State::Done {
        if let Some(p) = part.take() {
            let _ = finish(p, &mut out);
        }
        error.get_or_insert_with(|| "Multipart: Final boundary missing.".into());
    }
    (out, error)
}

/// Files a finished part as an argument or a file.
fn finish(p: Part, out: &mut Multipart) -> Result<(), String> {
    let mut name: Option<Vec<u8>> = None;
    let mut filename: Option<Vec<u8>> = None;
    let mut seen_disposition = false;
    let mut result = Ok(());
    for h in &p.headers {
        let (hname, value) = match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], h[i + 1..].trim_ascii()),
            None => continue,
        };
        if hname
            .trim_ascii()
            .eq_ignore_ascii_case(b"content-disposition")
        {
            seen_disposition = true;
            if let Err(e) = disposition(value, &mut name, &mut filename, &mut out.flags) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
    }
    if !seen_disposition || name.is_none() {
        out.flags.invalid_part = true;
        return Err("Multipart: Part missing Content-Disposition header or name.".into());
    }
    let name = name.unwrap_or_default();
    for h in p.headers {
        out.part_headers.push((name.clone(), h));
    }
    out.last_name = name.clone();
    match filename {
        Some(f) => {
            out.last_filename = f.clone();
            out.files.push(FilePart {
                field: name,
                filename: f,
                size: p.data.len(),
            })
        }
        None => out.args.push((name, p.data)),
    }
    result
}

/// Parses `form-data; name="a"; filename="b"`.
fn disposition(
    value: &[u8],
    name: &mut Option<Vec<u8>>,
    filename: &mut Option<Vec<u8>>,
    flags: &mut Flags,
) -> Result<(), String> {
    let invalid = || "Multipart: Invalid Content-Disposition header.".to_string();
    let Some(mut rest) = value.strip_prefix(b"form-data") else {
        flags.invalid_part = true;
        return Err(invalid());
    };
    loop {
        let t = rest.trim_ascii_start();
        if t.is_empty() {
            return Ok(());
        }
        rest = match t.strip_prefix(b";") {
            Some(r) => r.trim_ascii_start(),
            None => {
                flags.missing_semicolon = true;
                t
            }
        };
        if rest.is_empty() {
            return Ok(());
        }
        let eq = rest.iter().position(|&b| b == b'=').ok_or_else(invalid)?;
        let key = rest[..eq].trim_ascii().to_ascii_lowercase();
        let mut v = rest[eq + 1..].trim_ascii_start();
        let mut val = Vec::new();
        if v.first() == Some(&b'"') {
            let mut i = 1;
            let mut closed = false;
            while i < v.len() {
                match v[i] {
                    b'\\' if i + 1 < v.len() && (v[i + 1] == b'"' || v[i + 1] == b'\\') => {
                        val.push(v[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    b => {
                        val.push(b);
                        i += 1;
                    }
                }
            }
            if !closed {
                flags.invalid_quoting = true;
                return Err(invalid());
            }
            v = &v[i..];
        } else {
            if v.first() == Some(&b'\'') {
                flags.invalid_quoting = true;
            }
            let end = v
                .iter()
                .position(|&b| b == b';' || b == b' ' || b == b'\t')
                .unwrap_or(v.len());
            val.extend_from_slice(&v[..end]);
            v = &v[end..];
        }
        match key.as_slice() {
            b"name" if name.is_none() => *name = Some(val),
            b"filename" if filename.is_none() => *filename = Some(val),
            b"filename*" => {}
            _ => {
                flags.invalid_part = true;
                return Err(invalid());
            }
        }
        rest = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &[u8] = b"multipart/form-data; boundary=XyZ";

    #[test]
    fn fields_files_and_headers() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nline1\r\nline2\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--XyZ--\r\n";
        let (m, e) = parse(body, CT);
        assert_eq!(e, None);
        assert_eq!(m.args, vec![(b"a".to_vec(), b"line1\r\nline2".to_vec())]);
        assert_eq!(m.files[0].filename, b"x.php");
        assert_eq!(m.files[0].size, 5);
        assert_eq!(m.part_headers.len(), 3);
        assert_eq!(m.part_headers[2].1, b"Content-Type: text/plain");
        assert!(!m.flags.strict(), "{:?}", m.flags);
    }

    #[test]
    fn evasions_are_flagged() {
        let mut f = Flags::default();
        assert_eq!(
            boundary(b"multipart/form-data; boundary = \"a b\"", &mut f).expect("ok"),
            b"a b"
        );
        assert!(f.boundary_quoted && f.boundary_whitespace);
        assert!(boundary(b"multipart/form-data; boundary=a; boundary=b", &mut f).is_err());
        assert!(boundary(b"multipart/form-data", &mut f).is_err());
        let mut f = Flags::default();
        assert_eq!(
            boundary(
                b"multipart/form-data; boundary=----WebKitFormBoundary",
                &mut f
            )
            .expect("ok"),
            b"----WebKitFormBoundary"
        );
        assert_eq!(f, Flags::default());

        let body = b"junk\n--XyZ\nContent-Disposition: form-data; name='a'\n\nv\n--XyZ--\nafter";
        let (m, _) = parse(body, CT);
        assert!(
            m.flags.data_before && m.flags.data_after && m.flags.lf_line && m.flags.invalid_quoting
        );
        let (_, e) = parse(
            b"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n",
            CT,
        );
        assert!(e.is_some_and(|e| e.contains("Final boundary")));
    }
}
