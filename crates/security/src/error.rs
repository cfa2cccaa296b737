//! Parse errors, naming the file, the line and the offending token.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message} (at `{token}`)", file.display())]
pub struct ParseError {
    pub file: PathBuf,
    pub line: usize,
    pub token: String,
    pub message: String,
}

/// An error inside one directive, before the file and line are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub token: String,
    pub message: String,
}

impl Bad {
    pub fn new(token: impl Into<String>, message: impl Into<String>) -> Bad {
        let mut token: String = token.into();
        if token.len() > 80 {
            let mut cut = 80;
            while !token.is_char_boundary(cut) {
                cut -= 1;
            }
            token.truncate(cut);
            token.push('…');
        }
        Bad {
            token,
            message: message.into(),
        }
    }
}
