//! Operators made ready to run: regexes compiled, phrase lists (`@pm`, `@pmFromFile`)
//! built into ASCII-case-insensitive Aho-Corasick automata, byte ranges and CIDRs
//! parsed. An argument holding macros (`%{tx.allowed_methods}`) is expanded by the
//! caller's transaction when the rule runs. `@detectSQLi` and `@detectXSS` run
//! libinjection's algorithms (the `libinjectionrs` port, which its authors test against
//! the C library's own suite and by differential fuzzing).

use crate::error::Bad;
use crate::macros::{Template, Vars};
use crate::operator::{OpName, Operator};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;
use std::net::IpAddr;
use std::path::Path;

#[derive(Debug)]
enum Kind {
    Rx(Regex),
    Pm(AhoCorasick, Vec<String>),
    /// The argument, and its number if it holds no macro.
    Compare(OpName, Template, Option<i64>),
    Text(OpName, Template),
    IpMatch(Vec<(IpAddr, u8)>),
    ByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    Sqli,
    Xss,
    Always(bool),
}

/// Where `@pmFromFile` reads its phrase files: the disk, or files loaded beforehand
/// (so that compiling a rule set needs no IO).
pub trait DataFiles {
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// Reads phrase files from the disk.
pub struct Disk;

impl DataFiles for Disk {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

impl DataFiles for std::collections::HashMap<std::path::PathBuf, String> {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.get(path).cloned().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not among the loaded data files",
            )
        })
    }
}

/// A compiled operator.
#[derive(Debug)]
pub struct CompiledOp {
    kind: Kind,
    negated: bool,
}

/// The outcome of one test: matched, and what was captured (`TX.0`...`TX.9`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub matched: bool,
    pub captures: Vec<Vec<u8>>,
}

impl CompiledOp {
    /// Compiles `op`; `@pmFromFile` names files relative to `dir` (the rule file's).
    pub fn compile(op: &Operator, dir: &Path, files: &dyn DataFiles) -> Result<CompiledOp, Bad> {
        let arg = op.argument.as_str();
        let kind = match op.name {
            OpName::Rx => {
                if arg.contains("%{") {
                    return Err(Bad::new(arg, "macros in @rx are not supported"));
                }
                Kind::Rx(crate::pattern::compile(arg)?)
            }
            OpName::Pm => phrases(arg.split_whitespace().map(str::to_string).collect(), arg)?,
            OpName::PmFromFile => {
                let mut all = Vec::new();
                for name in arg.split_whitespace() {
                    let path = dir.join(name);
                    let text = files.read(&path).map_err(|e| {
                        Bad::new(name, format!("cannot read {}: {e}", path.display()))
                    })?;
                    all.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_string),
                    );
                }
                phrases(all, arg)?
            }
            OpName::Eq | OpName::Ge | OpName::Gt | OpName::Le | OpName::Lt => {
                let t = Template::parse(arg);
                let fixed = t.is_literal().then(|| number(arg.as_bytes()));
                Kind::Compare(op.name, t, fixed)
            }
            OpName::Streq
            | OpName::Within
            | OpName::BeginsWith
            | OpName::EndsWith
            | OpName::Contains
            | OpName::ContainsWord => Kind::Text(op.name, Template::parse(arg)),
            OpName::IpMatch => Kind::IpMatch(
                arg.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(cidr)
                    .collect::<Result<_, _>>()?,
            ),
            OpName::ValidateByteRange => Kind::ByteRange(Box::new(byte_ranges(arg)?)),
            OpName::ValidateUrlEncoding => Kind::ValidateUrlEncoding,
            OpName::ValidateUtf8Encoding => Kind::ValidateUtf8Encoding,
            OpName::DetectSqli => Kind::Sqli,
            OpName::DetectXss => Kind::Xss,
            OpName::UnconditionalMatch => Kind::Always(true),
            OpName::NoMatch => Kind::Always(false),
            other => return Err(Bad::new(format!("{other:?}"), "operator not supported yet")),
        };
        Ok(CompiledOp {
            kind,
            negated: op.negated,
        })
    }

    /// The argument's macros, if the operator expands any when it runs.
    pub fn template(&self) -> Option<&Template> {
        match &self.kind {
            Kind::Compare(_, t, _) | Kind::Text(_, t) => Some(t),
            _ => None,
        }
    }

    /// `!@op`: the test's result is inverted.
    pub fn negated(&self) -> bool {
        self.negated
    }

    /// Runs the operator on `input` (after the rule's transformations). Captures are
    /// collected when `capture` is set and the test matched.
    pub fn run(&self, input: &[u8], vars: &dyn Vars, capture: bool) -> Outcome {
        let mut captures = Vec::new();
        let hit = match &self.kind {
            // Most tests do not match: find out cheaply before capturing.
            Kind::Rx(re) => match capture && re.is_match(input) {
                false => re.is_match(input),
                true => match re.captures(input) {
                    Some(c) => {
                        captures = c
                            .iter()
                            .take(10)
                            .map(|m| m.map(|m| m.as_bytes().to_vec()).unwrap_or_default())
                            .collect();
                        true
                    }
                    None => false,
                },
            },
            Kind::Pm(ac, words) => match ac.find(input) {
                Some(m) => {
                    if capture {
                        captures.push(words[m.pattern().as_usize()].as_bytes().to_vec());
                    }
                    true
                }
                None => false,
            },
            Kind::Compare(name, arg, fixed) => {
                let a = number(input);
                let b = match fixed {
                    Some(n) => *n,
                    None => number(&arg.expand(vars)),
                };
                match name {
                    OpName::Eq => a == b,
                    OpName::Ge => a >= b,
                    OpName::Gt => a > b,
                    OpName::Le => a <= b,
                    _ => a < b,
                }
            }
            Kind::Text(name, arg) => {
                let arg = arg.expand(vars);
                let arg: &[u8] = &arg;
                let hit = match name {
                    OpName::Streq => input == arg,
                    // An empty value is within anything (ModSecurity v3).
                    OpName::Within => input.is_empty() || find(arg, input).is_some(),
                    OpName::BeginsWith => input.starts_with(arg),
                    OpName::EndsWith => input.ends_with(arg),
                    OpName::Contains => find(input, arg).is_some(),
                    _ => contains_word(input, arg),
                };
                if hit && capture {
                    captures.push(arg.to_vec());
                }
                hit
            }
            Kind::IpMatch(nets) => std::str::from_utf8(input)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|(net, bits)| in_net(ip, *net, *bits))),
            Kind::ByteRange(allowed) => input.iter().any(|&b| !allowed[b as usize]),
            Kind::ValidateUrlEncoding => !valid_url_encoding(input),
            Kind::ValidateUtf8Encoding => std::str::from_utf8(input).is_err(),
            Kind::Sqli => {
                // ModSecurity captures the libinjection fingerprint.
                let r = libinjectionrs::detect_sqli(input);
                let hit = r.is_injection();
                if hit && capture {
                    captures.push(
                        r.fingerprint
                            .map(|f| f.as_str().as_bytes().to_vec())
                            .unwrap_or_default(),
                    );
                }
                hit
            }
            Kind::Xss => {
                let hit = libinjectionrs::detect_xss(input).is_injection();
                if hit && capture {
                    captures.push(input.to_vec());
                }
                hit
            }
            Kind::Always(v) => *v,
        };
        let matched = hit != self.negated;
        if !matched {
            captures.clear();
        }
        Outcome { matched, captures }
    }
}

fn phrases(words: Vec<String>, arg: &str) -> Result<Kind, Bad> {
    if words.is_empty() {
        return Err(Bad::new(arg, "no phrases"));
    }
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .build(&words)
        .map_err(|e| Bad::new(arg, format!("cannot build the phrase matcher: {e}")))?;
    Ok(Kind::Pm(ac, words))
}

/// A number as ModSecurity reads one: leading spaces, a sign, digits; else 0.
fn number(s: &[u8]) -> i64 {
    let s = std::str::from_utf8(s).unwrap_or("").trim_start();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(s.len(), |(i, _)| i);
    s[..end].parse().unwrap_or(0)
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains_word(hay: &[u8], word: &[u8]) -> bool {
    if word.is_empty() {
        return true;
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(p) = find(&hay[from..], word) {
        let (s, e) = (from + p, from + p + word.len());
        let left = s == 0 || !is_word(hay[s - 1]);
        let right = e == hay.len() || !is_word(hay[e]);
        if left && right {
            return true;
        }
        from = s + 1;
    }
    false
}

fn cidr(s: &str) -> Result<(IpAddr, u8), Bad> {
    let bad = || Bad::new(s, "expected an IP address or CIDR");
    let (ip, bits) = match s.split_once('/') {
        Some((ip, b)) => (ip, Some(b.parse::<u8>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(bad());
    }
    Ok((ip, bits))
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn byte_ranges(arg: &str) -> Result<[bool; 256], Bad> {
    let mut allowed = [false; 256];
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || Bad::new(part, "expected a byte or a range of bytes (0-255)");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<u8>().map_err(|_| bad())?,
                b.trim().parse::<u8>().map_err(|_| bad())?,
            ),
            None => {
                let v = part.parse::<u8>().map_err(|_| bad())?;
                (v, v)
            }
        };
        if a > b {
            return Err(bad());
        }
        for v in a..=b {
            allowed[v as usize] = true;
        }
    }
    Ok(allowed)
}

pub(crate) fn valid_url_encoding(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let ok =
                s.len() > i + 2 && s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit();
            if !ok {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::macros::NoVars;
    use std::borrow::Cow;

    struct Tx;
    impl Vars for Tx {
        fn var(&self, c: &str, k: Option<&str>) -> Option<Cow<'_, [u8]>> {
            match (c, k) {
                ("tx", Some("allowed_methods")) => Some(Cow::Borrowed(b"GET HEAD POST")),
                ("tx", Some("n")) => Some(Cow::Borrowed(b"5")),
                _ => None,
            }
        }
    }

    fn op(s: &str) -> CompiledOp {
        CompiledOp::compile(
            &crate::operator::parse(s).expect("parses"),
            Path::new("."),
            &Disk,
        )
        .expect("compiles")
    }

    fn hit(s: &str, input: &[u8]) -> bool {
        op(s).run(input, &Tx, false).matched
    }

    #[test]
    fn each_operator() {
        assert!(hit("@rx ^a.c$", b"x\na\nc"));
        let out = op("@rx (\\d+)-(\\d+)").run(b"id 12-34", &NoVars, true);
        assert_eq!(
            out.captures,
            vec![b"12-34".to_vec(), b"12".to_vec(), b"34".to_vec()]
        );
        assert!(hit("@pm gzip deflate", b"Accept: DEFLATE"));
        assert_eq!(
            op("@pm ( )").run(b"f(x", &NoVars, true).captures,
            vec![b"(".to_vec()]
        );
        assert!(hit("@ge %{tx.n}", b"5") && !hit("@gt %{tx.n}", b"5") && hit("@lt 10", b" 7abc"));
        assert!(hit("@eq 0", b"junk"));
        assert!(hit("!@within %{tx.allowed_methods}", b"PUT"));
        assert!(!hit("!@within %{tx.allowed_methods}", b"GET"));
        assert!(hit("@within a b", b""));
        assert!(hit("@streq GET /", b"GET /") && !hit("@streq GET /", b"GET /x"));
        assert!(
            hit("@beginsWith ab", b"abc")
                && hit("@endsWith .pdf", b"x.pdf")
                && hit("@contains -->", b"a-->")
        );
        assert!(hit("@containsWord cat", b"a cat!") && !hit("@containsWord cat", b"concatenate"));
        assert!(
            hit("@ipMatch 127.0.0.1,::1,10.0.0.0/8", b"10.2.3.4") && hit("@ipMatch ::1", b"::1")
        );
        assert!(!hit("@ipMatch 127.0.0.1", b"127.0.0.2"));
        assert!(
            hit("@validateByteRange 32-126", b"tab\there")
                && !hit("@validateByteRange 32-126", b"fine")
        );
        assert!(
            hit("@validateUrlEncoding", b"a%zz")
                && hit("@validateUrlEncoding", b"a%4")
                && !hit("@validateUrlEncoding", b"a%41")
        );
        assert!(
            hit("@validateUtf8Encoding", b"\xc0\xaf")
                && !hit("@validateUtf8Encoding", "é".as_bytes())
        );
        assert!(hit("@unconditionalMatch", b""));
        let sqli = op("@detectSQLi").run(b"1' OR '1'='1", &NoVars, true);
        assert!(sqli.matched);
        assert_eq!(sqli.captures, vec![b"s&sos".to_vec()], "the fingerprint");
        assert!(!hit("@detectSQLi", b"O'Reilly") && !hit("@detectSQLi", b"hello world"));
        assert!(
            hit("@detectXSS", b"<script>alert(1)</script>") && !hit("@detectXSS", b"<b>bold</b>")
        );
        assert!(!op("!@rx a").run(b"a", &NoVars, true).matched);
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = |s: &str| {
            CompiledOp::compile(
                &crate::operator::parse(s).expect("parses"),
                Path::new("."),
                &Disk,
            )
            .expect_err("bad")
        };
        assert_eq!(err("@ipMatch 300.1.1.1").token, "300.1.1.1");
        assert_eq!(err("@validateByteRange 9-300").token, "9-300");
        assert!(err("@pmFromFile missing.data")
            .message
            .contains("cannot read"));
        assert!(err("@rbl zen.example")
            .message
            .contains("not supported yet"));
    }
}
