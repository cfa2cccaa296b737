//! Finds the line of a field path (`spec.rules[0].http.paths[1].pathType`) inside the
//! YAML text of one document, so errors can point at a line. A best-effort indentation
//! walk: it returns the deepest line it could follow the path to.

/// One step of a field path.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    let mut key_start = 0;
    while i <= b.len() {
        let at_end = i == b.len();
        if at_end || b[i] == b'.' || b[i] == b'[' {
            if i > key_start {
                steps.push(Step::Key(&path[key_start..i]));
            }
            if !at_end && b[i] == b'[' {
                let close = path[i..].find(']').map(|c| i + c).unwrap_or(b.len());
                let inner = &path[i + 1..close];
                match inner.parse() {
                    Ok(n) => steps.push(Step::Index(n)),
                    // `data[tls.crt]`: a key that contains dots.
                    Err(_) => steps.push(Step::Key(inner.trim_matches('"'))),
                }
                i = close;
            }
            key_start = i + 1;
        }
        i += 1;
    }
    steps
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Returns the 0-based line (relative to `text`) where `path` is best located.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let steps = parse_path(path);
    // Scope: lines [start, end) whose content is deeper than `min_indent`.
    let mut start = 0usize;
    let mut end = lines.len();
    let mut min_indent: isize = -1;
    let mut found: Option<usize> = None;
    for step in steps {
        let mut hit = None;
        match step {
            Step::Key(key) => {
                // The first key at the shallowest indentation inside the scope.
                let mut level: Option<usize> = None;
                for (i, line) in lines.iter().enumerate().take(end).skip(start) {
                    let t = line.trim_start();
                    if t.is_empty() || t.starts_with('#') {
                        continue;
                    }
                    // Keys may sit behind a list dash: "- name: x".
                    let (ind, body) = match t.strip_prefix("- ") {
                        Some(b) => (
                            indent_of(line) + 2 + (b.len() - b.trim_start().len()),
                            b.trim_start(),
                        ),
                        None => (indent_of(line), t),
                    };
                    if (ind as isize) <= min_indent {
                        break;
                    }
                    let lvl = *level.get_or_insert(ind);
                    if ind != lvl {
                        continue;
                    }
                    let k = body
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .trim_matches('"')
                        .trim_matches('\'');
                    if k == key && body.contains(':') {
                        hit = Some((i, ind));
                        break;
                    }
                }
            }
            Step::Index(n) => {
                let mut count = 0usize;
                let mut level: Option<usize> = None;
                for (i, line) in lines.iter().enumerate().take(end).skip(start) {
                    let t = line.trim_start();
                    if t.is_empty() || t.starts_with('#') {
                        continue;
                    }
                    let ind = indent_of(line);
                    if (ind as isize) < min_indent {
                        break;
                    }
                    if t.starts_with("- ") || t == "-" {
                        let lvl = *level.get_or_insert(ind);
                        if ind != lvl {
                            continue;
                        }
                        if count == n {
                            hit = Some((i, ind + 1));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        }
        let Some((line, ind)) = hit else { break };
        found = Some(line);
        // The new scope runs until the next line at indentation <= ind (dash items end
        // at the next dash of the same level).
        let mut e = lines.len();
        for (i, l) in lines.iter().enumerate().take(end).skip(line + 1) {
            let t = l.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if indent_of(l) < ind || (indent_of(l) + 1 == ind && t.starts_with('-')) {
                e = i;
                break;
            }
        }
        start = line;
        end = e.min(end);
        min_indent = ind as isize - 1;
        // For keys, children are on later lines; for dash items, the item's first key
        // is on the same line, so keep `start` on it.
        if let Some(l) = lines.get(line) {
            if !l.trim_start().starts_with('-') {
                start = line + 1;
                min_indent = ind as isize;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  rules:
  - host: a.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
      - path: /x
        pathType: Bogus
";

    #[test]
    fn finds_nested_fields() {
        assert_eq!(locate(DOC, "metadata.name"), Some(3));
        assert_eq!(locate(DOC, "spec.rules[0].host"), Some(6));
        assert_eq!(
            locate(DOC, "spec.rules[0].http.paths[1].pathType"),
            Some(12)
        );
        assert_eq!(
            locate(DOC, "spec.rules[0].http.paths[0].pathType"),
            Some(10)
        );
    }

    #[test]
    fn bracketed_keys_may_hold_dots() {
        let doc = "kind: Secret\nstringData:\n  tls.crt: x\n  tls.key: y\n";
        assert_eq!(locate(doc, "stringData[tls.key]"), Some(3));
    }

    #[test]
    fn missing_path_returns_deepest_known() {
        assert_eq!(locate(DOC, "spec.rules[0].nothere"), Some(6));
        assert_eq!(locate(DOC, "nothere"), None);
    }
}
