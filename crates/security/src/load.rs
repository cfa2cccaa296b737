//! Loads SecLang from files or text: directives in order, `Include` (with `*` and `?`
//! in the file name) expanded in place relative to the including file, and chains
//! assembled. Any error names the file, the line and the token.

use crate::directive::{self, Directive};
use crate::error::{Bad, ParseError};
use crate::lexer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directive and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub directive: Directive,
    pub file: Arc<Path>,
    pub line: usize,
}

/// How deep `Include`s may nest (a file that includes itself stops here).
const MAX_DEPTH: usize = 16;

/// Loads a file and everything it includes.
pub fn load_file(path: &Path) -> Result<Vec<Located>, ParseError> {
    let mut out = Vec::new();
    read_file(path, &mut out, 0, None)?;
    chain(out)
}

/// Loads SecLang text (e.g. rules inline in a policy); `name` stands for the file in
/// errors, and relative `Include`s are read from `base`.
pub fn load_str(text: &str, name: &Path, base: &Path) -> Result<Vec<Located>, ParseError> {
    let mut out = Vec::new();
    read_text(text, &Arc::from(name), Some(base), &mut out, 0)?;
    chain(out)
}

/// Loads SecLang text given inline (in a policy), where `Include` is refused: such
/// text may not read files.
pub fn load_inline(text: &str, name: &Path) -> Result<Vec<Located>, ParseError> {
    let mut out = Vec::new();
    read_text(text, &Arc::from(name), None, &mut out, 0)?;
    chain(out)
}

fn read_file(
    path: &Path,
    out: &mut Vec<Located>,
    depth: usize,
    from: Option<(&Arc<Path>, usize, &str)>,
) -> Result<(), ParseError> {
    let text = std::fs::read_to_string(path).map_err(|e| match from {
        Some((file, line, token)) => ParseError {
            file: file.to_path_buf(),
            line,
            token: token.to_string(),
            message: format!("cannot read {}: {e}", path.display()),
        },
        None => ParseError {
            file: path.to_path_buf(),
            line: 0,
            token: String::new(),
            message: format!("cannot read: {e}"),
        },
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    read_text(&text, &Arc::from(path), Some(base), out, depth)
}

/// Reads directives from `text`; `Include`s are read relative to `base`, or refused
/// without one.
fn read_text(
    text: &str,
    file: &Arc<Path>,
    base: Option<&Path>,
    out: &mut Vec<Located>,
    depth: usize,
) -> Result<(), ParseError> {
    let at = |line: usize, b: Bad| ParseError {
        file: file.to_path_buf(),
        line,
        token: b.token,
        message: b.message,
    };
    let raw = lexer::directives(text).map_err(|(line, b)| at(line, b))?;
    for d in raw {
        if d.name.eq_ignore_ascii_case("include") {
            let Some(base) = base else {
                let why = "Include is not allowed in inline rules";
                return Err(at(d.line, Bad::new(&d.name, why)));
            };
            let [pattern] = d.args.as_slice() else {
                return Err(at(d.line, Bad::new(&d.name, "Include takes one path")));
            };
            if depth >= MAX_DEPTH {
                return Err(at(d.line, Bad::new(pattern, "Includes nest too deep")));
            }
            let files = expand(base, pattern).map_err(|m| at(d.line, Bad::new(pattern, m)))?;
            for f in files {
                read_file(&f, out, depth + 1, Some((file, d.line, pattern)))?;
            }
            continue;
        }
        let directive = directive::parse(&d, file).map_err(|b| at(d.line, b))?;
        out.push(Located {
            directive,
            file: file.clone(),
            line: d.line,
        });
    }
    Ok(())
}

/// The files an `Include` pattern names, sorted; wildcards only in the file name.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = base.join(pattern);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("not a file path")?
        .to_string();
    if !name.contains(['*', '?']) {
        return Ok(vec![path]);
    }
    let dir = path.parent().unwrap_or(base);
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(&name, n)))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// `*` and `?` matching.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Folds each chain's rules into its first rule.
fn chain(all: Vec<Located>) -> Result<Vec<Located>, ParseError> {
    let mut out: Vec<Located> = Vec::with_capacity(all.len());
    // Where the open chain's head is in `out`, if a chain is open.
    let mut open: Option<usize> = None;
    for l in all {
        let Some(head) = open else {
            let starts = matches!(&l.directive, Directive::Rule(r) if r.starts_chain());
            out.push(l);
            if starts {
                open = Some(out.len() - 1);
            }
            continue;
        };
        let Directive::Rule(rule) = l.directive else {
            return Err(ParseError {
                file: l.file.to_path_buf(),
                line: l.line,
                token: format!("{:?}", l.directive).chars().take(40).collect(),
                message: "a chain must continue with SecRule".into(),
            });
        };
        let continues = rule.starts_chain();
        if let Directive::Rule(first) = &mut out[head].directive {
            append(first, rule);
        }
        if !continues {
            open = None;
        }
    }
    if let Some(head) = open {
        let l = &out[head];
        return Err(ParseError {
            file: l.file.to_path_buf(),
            line: l.line,
            token: "chain".into(),
            message: "the rule set ends inside a chain".into(),
        });
    }
    Ok(out)
}

/// Puts `next` at the end of `rule`'s chain.
fn append(rule: &mut crate::directive::Rule, next: crate::directive::Rule) {
    match &mut rule.chained {
        Some(c) => append(c, next),
        None => rule.chained = Some(Box::new(next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "REQUEST-901-INITIALIZATION.conf"));
        assert!(wildcard("REQUEST-9??-*.conf", "REQUEST-942-X.conf"));
        assert!(!wildcard("*.conf", "a.conf.example"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn chains_fold_into_their_first_rule() {
        let text = "SecRule ARGS \"@rx a\" \"id:1,chain\"\nSecRule ARGS \"@rx b\" \"chain\"\nSecRule ARGS \"@rx c\"\nSecMarker X\n";
        let l = load_str(text, Path::new("inline"), Path::new(".")).expect("loads");
        assert_eq!(l.len(), 2);
        let Directive::Rule(r) = &l[0].directive else {
            panic!("a rule")
        };
        let second = r.chained.as_ref().expect("second");
        let third = second.chained.as_ref().expect("third");
        assert_eq!((second.line, third.line), (2, 3));
        assert!(third.chained.is_none());
    }

    #[test]
    fn errors_name_file_line_and_token() {
        let e = load_str(
            "\n\nSecRule ARGS \"@rx a\" \"id:1,bogus:2\"",
            Path::new("mine.conf"),
            Path::new("."),
        )
        .expect_err("bad action");
        assert_eq!(
            (e.file.as_path(), e.line, e.token.as_str()),
            (Path::new("mine.conf"), 3, "bogus")
        );
        assert!(e.to_string().starts_with("mine.conf:3: unknown action"));
        let e = load_str(
            "SecRule ARGS \"@rx a\" \"id:1,chain\"",
            Path::new("x"),
            Path::new("."),
        )
        .expect_err("open chain");
        assert!(e.message.contains("inside a chain"));
        let e = load_str("SecNope On", Path::new("x"), Path::new(".")).expect_err("directive");
        assert_eq!(e.token, "SecNope");
        let e = load_str(
            "Include missing/*.conf",
            Path::new("x"),
            Path::new("/nonexistent"),
        )
        .expect_err("include");
        assert!(e.message.contains("cannot list"));
    }
}
