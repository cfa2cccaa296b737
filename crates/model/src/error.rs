//! `ConfigError`: one rejected piece of configuration, naming file, line, object and field.

use std::fmt;

/// A configuration error that names where it is: file and line (when known), the
/// object's kind, namespace and name, and the field path inside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// An error about a whole file (unparsable YAML, unknown kind, ...).
    pub fn file(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: Some(file.to_string()),
            line,
            kind: String::new(),
            namespace: None,
            name: String::new(),
            field: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            _ => {}
        }
        if !self.kind.is_empty() {
            match &self.namespace {
                Some(ns) => write!(f, "{} {}/{}: ", self.kind, ns, self.name)?,
                None => write!(f, "{} {}: ", self.kind, self.name)?,
            }
        }
        if !self.field.is_empty() {
            write!(f, "field {}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}
