//! `application/x-www-form-urlencoded` (and query strings): `&`-separated `name=value`
//! pairs, both URL-decoded with `+` as a space. Invalid `%` escapes are kept as
//! written and reported, as ModSecurity's non-strict decoder does.

use super::Pairs;

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
        let (name, bad_name) = decode(name);
        let (value, bad_value) = decode(value);
        invalid |= bad_name | bad_value;
        out.push((name, value));
    }
    invalid
}

/// URL-decodes `input` (`+` is a space); the flag says an escape was invalid.
pub fn decode(input: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len());
    let mut invalid = false;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    input.get(i + 1).and_then(|&b| hex(b)),
                    input.get(i + 2).and_then(|&b| hex(b)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => {
                        invalid = true;
                        out.push(b'%');
                    }
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    (out, invalid)
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
