//! The transformations (`t:`), on bytes, with ModSecurity's semantics: what each
//! decodes, what it leaves alone when the input is not well formed, and the
//! full-width-ASCII rule of the `%u`/`\u` decoders (U+FF01-U+FF5E become ASCII; other
//! code points keep their low byte). Each returns the input itself when it changes
//! nothing, so a clean value costs no allocation.

use crate::actions::Transform;
use std::borrow::Cow;

/// Applies `t` to `input`.
pub fn apply(t: Transform, input: &[u8]) -> Cow<'_, [u8]> {
    use Transform as T;
    match t {
        T::None => Cow::Borrowed(input),
        T::Lowercase => map_if(
            input,
            |b| b.is_ascii_uppercase(),
            |b| b.to_ascii_lowercase(),
        ),
        T::Uppercase => map_if(
            input,
            |b| b.is_ascii_lowercase(),
            |b| b.to_ascii_uppercase(),
        ),
        T::RemoveNulls => drop_if(input, |b| b == 0),
        T::ReplaceNulls => map_if(input, |b| b == 0, |_| b' '),
        T::RemoveWhitespace => drop_if(input, is_space),
        T::CompressWhitespace => compress_whitespace(input),
        T::Trim => Cow::Borrowed(trim_end(trim_start(input))),
        T::TrimLeft => Cow::Borrowed(trim_start(input)),
        T::TrimRight => Cow::Borrowed(trim_end(input)),
        T::UrlDecode => url_decode(input, false, true),
        T::UrlDecodeUni => url_decode(input, true, true),
        T::UrlEncode => Cow::Owned(url_encode(input)),
        T::HexEncode => Cow::Owned(hex_encode(input)),
        T::HexDecode => Cow::Owned(hex_decode(input)),
        T::Length => Cow::Owned(input.len().to_string().into_bytes()),
        T::Sha1 => {
            use sha1::Digest;
            Cow::Owned(sha1::Sha1::digest(input).to_vec())
        }
        T::Md5 => {
            use md5::Digest;
            Cow::Owned(md5::Md5::digest(input).to_vec())
        }
        T::Base64Decode => Cow::Owned(base64_decode(input)),
        T::Base64DecodeExt => Cow::Owned(base64_decode_forgiving(input)),
        T::Base64Encode => {
            use base64::Engine;
            Cow::Owned(
                base64::engine::general_purpose::STANDARD
                    .encode(input)
                    .into_bytes(),
            )
        }
        T::JsDecode => js_decode(input),
        T::CssDecode => css_decode(input),
        T::EscapeSeqDecode => escape_seq_decode(input),
        T::HtmlEntityDecode => html_entity_decode(input),
        T::Utf8ToUnicode => utf8_to_unicode(input),
        T::CmdLine => Cow::Owned(cmd_line(input)),
        T::NormalizePath => normalize_path(input, false),
        T::NormalizePathWin => normalize_path(input, true),
        T::ReplaceComments => replace_comments(input),
        T::RemoveComments => remove_comments(input),
        T::RemoveCommentsChar => remove_comments_char(input),
        T::SqlHexDecode => sql_hex_decode(input),
        T::ParityEven7bit | T::ParityOdd7bit | T::ParityZero7bit => {
            map_if(input, |b| b & 0x80 != 0, |b| b & 0x7f)
        }
    }
}

/// Whitespace as C's `isspace`, plus the non-breaking space 0xA0.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

fn map_if(input: &[u8], hit: impl Fn(u8) -> bool, f: impl Fn(u8) -> u8) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| hit(b)) {
        return Cow::Borrowed(input);
    }
    Cow::Owned(
        input
            .iter()
            .map(|&b| if hit(b) { f(b) } else { b })
            .collect(),
    )
}

fn drop_if(input: &[u8], hit: impl Fn(u8) -> bool) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| hit(b)) {
        return Cow::Borrowed(input);
    }
    Cow::Owned(input.iter().copied().filter(|&b| !hit(b)).collect())
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_space(b)).count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| is_space(b)).count();
    &s[..s.len() - n]
}

fn compress_whitespace(input: &[u8]) -> Cow<'_, [u8]> {
    let needed = input.windows(2).any(|w| is_space(w[0]) && is_space(w[1]))
        || input.iter().any(|&b| is_space(b) && b != b' ');
    if !needed {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_space(b) {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hex(a)? << 4 | hex(b)?)
}

/// The byte a `%uHHHH` / `\uHHHH` escape stands for: full-width ASCII (U+FF01-U+FF5E)
/// becomes ASCII, anything else keeps its low byte.
fn unicode_byte(h: &[u8]) -> Option<u8> {
    let hi = hex2(h[0], h[1])?;
    let lo = hex2(h[2], h[3])?;
    if hi == 0xff && lo > 0x00 && lo < 0x5f {
        return Some(lo + 0x20);
    }
    Some(lo)
}

/// Non-strict URL decoding: invalid escapes are kept as written; `%uHHHH` too with
/// `uni`, and `+` as a space with `plus`.
pub(crate) fn url_decode(input: &[u8], uni: bool, plus: bool) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == b'%' || (plus && b == b'+')) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if plus && b == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%' {
            if uni && matches!(input.get(i + 1), Some(b'u' | b'U')) {
                if let Some(c) = input.get(i + 2..i + 6).and_then(unicode_byte) {
                    out.push(c);
                    i += 6;
                    continue;
                }
            }
            if let (Some(&a), Some(&c)) = (input.get(i + 1), input.get(i + 2)) {
                if let Some(v) = hex2(a, c) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

fn url_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        match b {
            b' ' => out.push(b'+'),
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            _ => out.extend_from_slice(format!("%{b:02x}").as_bytes()),
        }
    }
    out
}

fn hex_encode(input: &[u8]) -> Vec<u8> {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 2);
    for &b in input {
        out.push(H[(b >> 4) as usize]);
        out.push(H[(b & 15) as usize]);
    }
    out
}

fn hex_decode(input: &[u8]) -> Vec<u8> {
    input
        .chunks_exact(2)
        .filter_map(|p| hex2(p[0], p[1]))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_value(b: u8) -> Option<u8> {
    B64.iter().position(|&c| c == b).map(|p| p as u8)
}

/// Base64, decoding up to the first character outside the alphabet (or `=`).
fn base64_decode(input: &[u8]) -> Vec<u8> {
    let valid: Vec<u8> = input.iter().map_while(|&b| b64_value(b)).collect();
    decode_sextets(&valid)
}

/// Base64, skipping characters outside the alphabet.
fn base64_decode_forgiving(input: &[u8]) -> Vec<u8> {
    let valid: Vec<u8> = input.iter().filter_map(|&b| b64_value(b)).collect();
    decode_sextets(&valid)
}

fn decode_sextets(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    for chunk in v.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, &s| acc << 6 | s as u32) << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => 0,
        };
        out.extend_from_slice(&bytes[..keep]);
    }
    out
}

fn js_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'\\') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let n = input[i + 1];
        if matches!(n, b'u' | b'U') {
            if let Some(c) = input.get(i + 2..i + 6).and_then(unicode_byte) {
                out.push(c);
                i += 6;
                continue;
            }
        }
        if let Some((c, used)) = hex_or_octal(input, i, true) {
            out.push(c);
            i += used;
            continue;
        }
        out.push(match n {
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            other => other,
        });
        i += 2;
    }
    Cow::Owned(out)
}

/// The `\xHH` or `\OOO` escape at `input[i]` (a backslash): its byte and length. With
/// `cap`, octal digits stop before the value passes 0377 (JavaScript); without, three
/// digits are read and the value kept to a byte (C).
fn hex_or_octal(input: &[u8], i: usize, cap: bool) -> Option<(u8, usize)> {
    let n = *input.get(i + 1)?;
    if matches!(n, b'x' | b'X') {
        let c = input.get(i + 2..i + 4).and_then(|h| hex2(h[0], h[1]))?;
        return Some((c, 4));
    }
    if !(b'0'..=b'7').contains(&n) {
        return None;
    }
    let mut j = i + 1;
    let mut v: u32 = 0;
    while j < input.len() && j < i + 4 && (b'0'..=b'7').contains(&input[j]) {
        let next = v * 8 + (input[j] - b'0') as u32;
        if cap && next > 0o377 {
            break;
        }
        v = next;
        j += 1;
    }
    Some((v as u8, j - i))
}

fn css_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'\\') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= input.len() {
            // A lone backslash at the end is dropped.
            i += 1;
            continue;
        }
        let digits = input[i + 1..]
            .iter()
            .take(6)
            .take_while(|&&b| hex(b).is_some())
            .count();
        if digits > 0 {
            let h = &input[i + 1..i + 1 + digits];
            // The low byte; full-width ASCII (ff01-ff5e) becomes ASCII.
            let lo = if digits >= 2 {
                hex2(h[digits - 2], h[digits - 1]).unwrap_or(0)
            } else {
                hex(h[0]).unwrap_or(0)
            };
            let fullwidth = digits >= 4
                && h[digits - 4..digits - 2].eq_ignore_ascii_case(b"ff")
                && h[..digits - 4].iter().all(|&b| b == b'0')
                && lo > 0
                && lo < 0x5f;
            out.push(if fullwidth { lo + 0x20 } else { lo });
            i += 1 + digits;
            // One whitespace after the digits belongs to the escape.
            if i < input.len() && is_space(input[i]) {
                i += 1;
            }
            continue;
        }
        if input[i + 1] == b'\n' {
            i += 2;
            continue;
        }
        out.push(input[i + 1]);
        i += 2;
    }
    Cow::Owned(out)
}

fn escape_seq_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'\\') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let n = input[i + 1];
        let simple = match n {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' | b'?' | b'\'' | b'"' => Some(n),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        if let Some((c, used)) = hex_or_octal(input, i, false) {
            out.push(c);
            i += used;
            continue;
        }
        // Not an escape: kept as written.
        out.push(b'\\');
        i += 1;
    }
    Cow::Owned(out)
}

fn html_entity_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.contains(&b'&') {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'&' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if let Some(num) = rest.strip_prefix(b"#") {
            let (hexadecimal, digits) = match num.first() {
                Some(b'x') | Some(b'X') => (true, &num[1..]),
                _ => (false, num),
            };
            let n = digits
                .iter()
                .take_while(|&&b| {
                    if hexadecimal {
                        hex(b).is_some()
                    } else {
                        b.is_ascii_digit()
                    }
                })
                .count();
            if n > 0 {
                let text = std::str::from_utf8(&digits[..n]).unwrap_or("0");
                let v = u32::from_str_radix(text, if hexadecimal { 16 } else { 10 }).unwrap_or(0);
                out.push(v as u8);
                let mut used = 1 + 1 + usize::from(hexadecimal) + n;
                if input.get(i + used) == Some(&b';') {
                    used += 1;
                }
                i += used;
                continue;
            }
        } else {
            const NAMED: &[(&[u8], u8)] = &[
                (b"quot", b'"'),
                (b"amp", b'&'),
                (b"lt", b'<'),
                (b"gt", b'>'),
                (b"nbsp", 0xa0),
            ];
            let found = NAMED.iter().find(|(name, _)| {
                rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name)
            });
            if let Some((name, c)) = found {
                out.push(*c);
                let mut used = 1 + name.len();
                if input.get(i + used) == Some(&b';') {
                    used += 1;
                }
                i += used;
                continue;
            }
        }
        out.push(b'&');
        i += 1;
    }
    Cow::Owned(out)
}

fn utf8_to_unicode(input: &[u8]) -> Cow<'_, [u8]> {
    if input.is_ascii() {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let width = match b {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        let decoded = (width > 1)
            .then(|| input.get(i..i + width))
            .flatten()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.chars().next());
        match (width, decoded) {
            (1, _) => {
                out.push(b);
                i += 1;
            }
            (_, Some(c)) => {
                out.extend_from_slice(format!("%u{:04x}", c as u32).as_bytes());
                i += width;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b',' | b';' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                // No space before a slash or an opening parenthesis.
                if space {
                    out.pop();
                }
                out.push(b);
                space = false;
            }
            _ => {
                out.push(b.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn normalize_path(input: &[u8], windows: bool) -> Cow<'_, [u8]> {
    let src: Cow<'_, [u8]> = if windows && input.contains(&b'\\') {
        Cow::Owned(
            input
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(input)
    };
    let needs = src.windows(2).any(|w| w == b"//" || w == b"/.")
        || src.starts_with(b"./")
        || src.starts_with(b"../")
        || src.as_ref() == b"."
        || src.as_ref() == b"..";
    if !needs {
        return match src {
            Cow::Borrowed(_) => Cow::Borrowed(input),
            Cow::Owned(v) => Cow::Owned(v),
        };
    }
    let absolute = src.starts_with(b"/");
    let trailing = src.ends_with(b"/") || src.ends_with(b"/.") || src.ends_with(b"/..");
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut above = 0usize;
    for seg in src.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !absolute {
                    above += 1;
                }
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(src.len());
    if absolute {
        out.push(b'/');
    }
    for _ in 0..above {
        out.extend_from_slice(b"../");
    }
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if trailing && !parts.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

fn replace_comments(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.windows(2).any(|w| w == b"/*") {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"/*") {
            match input[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i += 2 + p + 2,
                None => i = input.len(),
            }
            out.push(b' ');
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn remove_comments(input: &[u8]) -> Cow<'_, [u8]> {
    let has = input
        .windows(2)
        .any(|w| w == b"/*" || w == b"--" || w == b"<!")
        || input.contains(&b'#');
    if !has {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") {
            i = match input[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i + 2 + p + 2,
                None => input.len(),
            };
        } else if rest.starts_with(b"<!--") {
            i = match input[i + 4..].windows(3).position(|w| w == b"-->") {
                Some(p) => i + 4 + p + 3,
                None => input.len(),
            };
        } else if rest.starts_with(b"--") || rest.starts_with(b"#") {
            // To the end of the line.
            i = match input[i..].iter().position(|&b| b == b'\n') {
                Some(p) => i + p,
                None => input.len(),
            };
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn remove_comments_char(input: &[u8]) -> Cow<'_, [u8]> {
    let has = input
        .windows(2)
        .any(|w| w == b"/*" || w == b"*/" || w == b"--")
        || input.contains(&b'#');
    if !has {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") || rest.starts_with(b"*/") || rest.starts_with(b"--") {
            i += 2;
        } else if rest.starts_with(b"<!--") {
            i += 4;
        } else if rest.starts_with(b"-->") {
            i += 3;
        } else if rest[0] == b'#' {
            i += 1;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// `0x414243` (SQL hex literals) decoded; the rest as written.
fn sql_hex_decode(input: &[u8]) -> Cow<'_, [u8]> {
    if !input.windows(2).any(|w| w.eq_ignore_ascii_case(b"0x")) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'0' && matches!(input.get(i + 1), Some(b'x') | Some(b'X')) {
            let n = input[i + 2..]
                .iter()
                .take_while(|&&b| hex(b).is_some())
                .count();
            if n >= 2 {
                let even = n - n % 2;
                out.extend(
                    input[i + 2..i + 2 + even]
                        .chunks(2)
                        .filter_map(|p| hex2(p[0], p[1])),
                );
                i += 2 + even;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Transform as T;

    fn t(t: Transform, s: &[u8]) -> Vec<u8> {
        apply(t, s).into_owned()
    }

    #[test]
    fn clean_values_are_borrowed() {
        for tr in [
            T::Lowercase,
            T::UrlDecodeUni,
            T::JsDecode,
            T::CssDecode,
            T::HtmlEntityDecode,
            T::RemoveNulls,
            T::RemoveWhitespace,
            T::CompressWhitespace,
            T::NormalizePath,
            T::ReplaceComments,
            T::Utf8ToUnicode,
        ] {
            assert!(
                matches!(apply(tr, b"plain-value_1"), Cow::Borrowed(_)),
                "{tr:?}"
            );
        }
    }

    #[test]
    fn url_decoding() {
        assert_eq!(t(T::UrlDecode, b"a%20b+c%zz%4"), b"a b c%zz%4");
        assert_eq!(t(T::UrlDecodeUni, b"%u0041%uff0e%u2215x"), b"A.\x15x");
        assert_eq!(t(T::UrlDecode, b"%u0041"), b"%u0041");
    }

    #[test]
    fn js_css_escape_html() {
        assert_eq!(t(T::JsDecode, b"\\x41\\u0042\\103\\n\\q\\"), b"ABC\nq\\");
        assert_eq!(t(T::CssDecode, b"\\41 b\\000043\\\nd\\e9"), b"AbCd\xe9");
        assert_eq!(t(T::EscapeSeqDecode, b"\\x41\\101\\t\\z"), b"AA\t\\z");
        assert_eq!(
            t(T::HtmlEntityDecode, b"&lt;&#x41;&#66&quot;&bogus;&amp"),
            b"<AB\"&bogus;&"
        );
    }

    #[test]
    fn whitespace_nulls_case() {
        assert_eq!(t(T::CompressWhitespace, b"a \t\n b"), b"a b");
        assert_eq!(t(T::RemoveWhitespace, b" a\tb\xa0"), b"ab");
        assert_eq!(t(T::RemoveNulls, b"a\0b"), b"ab");
        assert_eq!(t(T::Lowercase, b"SeLeCT"), b"select");
        assert_eq!(t(T::Trim, b"  x  "), b"x");
    }

    #[test]
    fn paths_and_commands() {
        assert_eq!(t(T::NormalizePath, b"/a//b/./c/../d/"), b"/a/b/d/");
        assert_eq!(
            t(T::NormalizePath, b"../../etc/passwd"),
            b"../../etc/passwd"
        );
        assert_eq!(t(T::NormalizePath, b"/../../etc/passwd"), b"/etc/passwd");
        assert_eq!(t(T::NormalizePathWin, b"c:\\a\\..\\b"), b"c:/b");
        assert_eq!(
            t(T::CmdLine, b"C^:\\WIN\"DOWS\\  /c  dir,a;b ( x"),
            b"c:windows/c dir a b( x"
        );
    }

    #[test]
    fn comments() {
        assert_eq!(t(T::ReplaceComments, b"a/*x*/b/*open"), b"a b ");
        assert_eq!(t(T::RemoveCommentsChar, b"a/*b*/c--d#e"), b"abcde");
        assert_eq!(t(T::RemoveComments, b"a/*x*/b-- rest\nc"), b"ab\nc");
    }

    #[test]
    fn encodings() {
        assert_eq!(t(T::Base64Decode, b"Zm9vYmFy"), b"foobar");
        assert_eq!(t(T::Base64Decode, b"Zm9v!YmFy"), b"foo");
        assert_eq!(t(T::Base64DecodeExt, b"Zm9v.YmFy"), b"foobar");
        assert_eq!(t(T::HexEncode, b"\x00\xffA"), b"00ff41");
        assert_eq!(t(T::Length, b"abcd"), b"4");
        assert_eq!(
            hex_encode(&t(T::Sha1, b"abc")),
            b"a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex_encode(&t(T::Md5, b"abc")),
            b"900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(t(T::Utf8ToUnicode, "aé€".as_bytes()), b"a%u00e9%u20ac");
        assert_eq!(t(T::SqlHexDecode, b"0x414243 x"), b"ABC x");
    }
}
