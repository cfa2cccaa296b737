//! Splits a SecLang file into directives: comments and blank lines dropped, lines
//! ending in a backslash joined to the next, and each directive cut into its name and
//! arguments, where an argument in double quotes may hold spaces and `\"`. Other
//! backslashes stay as written: they belong to the regexes and macros inside.

use crate::error::Bad;

/// One directive as written: its first line, name and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirective {
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

/// The directives of `text`; an error carries the line it is on.
pub fn directives(text: &str) -> Result<Vec<RawDirective>, (usize, Bad)> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if logical.is_empty() {
            start = i + 1;
        }
        let trimmed = line.trim_end();
        if let Some(body) = trimmed.strip_suffix('\\') {
            logical.push_str(body);
            continue;
        }
        logical.push_str(trimmed);
        let whole = std::mem::take(&mut logical);
        let content = whole.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let mut words = split(content).map_err(|b| (start, b))?;
        let name = words.remove(0);
        out.push(RawDirective {
            line: start,
            name,
            args: words,
        });
    }
    if !logical.trim().is_empty() {
        return Err((
            start,
            Bad::new(logical.trim(), "the file ends inside a continued line"),
        ));
    }
    Ok(out)
}

/// Cuts a directive line into words.
fn split(s: &str) -> Result<Vec<String>, Bad> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' {
            let quote = first;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&quote) {
                    word.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(Bad::new(s, "unterminated quoted argument"));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(Bad::new(s, "text right after a closing quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_lines_quotes_and_comments() {
        let text = "# a comment\n\nSecRule ARGS \"@rx a\\\"b\\d\" \\\n    \"id:1,\\\n    pass\"\nSecMarker END\n";
        let d = directives(text).expect("parses");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].line, 3);
        assert_eq!(d[0].args, vec!["ARGS", "@rx a\"b\\d", "id:1,    pass"]);
        assert_eq!((d[1].line, d[1].name.as_str()), (6, "SecMarker"));
    }

    #[test]
    fn an_unterminated_quote_is_an_error_on_its_line() {
        let err = directives("\nSecRule ARGS \"@rx a").expect_err("unterminated");
        assert_eq!(err.0, 2);
        assert!(err.1.message.contains("unterminated"));
    }
}
