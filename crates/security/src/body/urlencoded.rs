//! `application/x-www-form-urlencoded` (and query strings): `&`-separated `name=value`
//! pairs, both URL-decoded with `+` as a space. Invalid `%` escapes are kept as
//! written and reported, as ModSecurity's non-strict decoder does.

use super::Pairs;
use crate::operators::valid_url_encoding;

fn decode(s: &[u8]) -> Vec<u8> {
    crate::transform::url_decode(s, false, true).into_owned()
}

/// Parses `input` into `out`; returns true if some `%` escape was invalid.
pub fn parse(input: &[u8], out: &mut Pairs) -> bool {
    let mut invalid = false;
    for part in input.split(|&b| b == b'&') {
        if part.is_empty() {
            continue;
        }
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        invalid |= !valid_url_encoding(name) || !valid_url_encoding(value);
        out.push((decode(name), decode(value)));
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decoding_and_errors() {
        let mut out = Pairs::new();
        assert!(!parse(b"a=1&b=x+y%21&&flag&=v", &mut out));
        let text: Vec<(String, String)> = out
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(
            text,
            [("a", "1"), ("b", "x y!"), ("flag", ""), ("", "v")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let mut out = Pairs::new();
        assert!(parse(b"p=%1G%", &mut out));
        assert_eq!(out[0].1, b"%1G%");
    }
}
