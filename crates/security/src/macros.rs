//! Macro expansion (`%{tx.anomaly_score}`, `%{MATCHED_VAR}`, `%{REQUEST_HEADERS.host}`):
//! a text is parsed once into literal parts and variable references, and expanded per
//! transaction through the [`Vars`] the transaction provides. A reference to something
//! that does not exist expands to nothing, as in ModSecurity.

use std::borrow::Cow;

/// A transaction's variables, as macros see them: a collection (lower case) and a key.
pub trait Vars {
    fn var(&self, collection: &str, key: Option<&str>) -> Option<Cow<'_, [u8]>>;
}

/// No variables at all.
pub struct NoVars;

impl Vars for NoVars {
    fn var(&self, _: &str, _: Option<&str>) -> Option<Cow<'_, [u8]>> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// Collection (lower case) and key (as written, if any).
    Var(String, Option<String>),
}

/// A text with macros, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start + 2..].find('}') else {
                break;
            };
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let inner = &rest[start + 2..start + 2 + len];
            let (collection, key) = match inner.split_once('.') {
                // Every collection compares keys without case: store them lower case.
                Some((c, k)) => (c, Some(k.to_ascii_lowercase())),
                None => (inner, None),
            };
            parts.push(Part::Var(collection.to_ascii_lowercase(), key));
            rest = &rest[start + 2 + len + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Template { parts }
    }

    /// True if the text holds no macro.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The collections the macros read (lower case).
    pub fn collections(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(c, _) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text before the first macro.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    /// The keys (lower case) the macros read from `collection`; None for a whole
    /// collection.
    pub fn keys_of<'a>(&'a self, collection: &'a str) -> impl Iterator<Item = Option<&'a str>> {
        self.parts.iter().filter_map(move |p| match p {
            Part::Var(c, k) if c == collection => Some(k.as_deref()),
            _ => None,
        })
    }

    /// Expands with the transaction's variables.
    pub fn expand<'t>(&'t self, vars: &dyn Vars) -> Cow<'t, [u8]> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(&[]),
            [Part::Text(t)] => Cow::Borrowed(t.as_bytes()),
            parts => {
                let mut out = Vec::new();
                for p in parts {
                    match p {
                        Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                        Part::Var(c, k) => {
                            if let Some(v) = vars.var(c, k.as_deref()) {
                                out.extend_from_slice(&v);
                            }
                        }
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sample;
    impl Vars for Sample {
        fn var(&self, c: &str, k: Option<&str>) -> Option<Cow<'_, [u8]>> {
            match (c, k.map(|k| k.to_ascii_lowercase()).as_deref()) {
                ("tx", Some("score")) => Some(Cow::Borrowed(b"5")),
                ("matched_var", None) => Some(Cow::Borrowed(b"<script>")),
                _ => None,
            }
        }
    }

    #[test]
    fn expansion() {
        let t = Template::parse("Matched %{MATCHED_VAR} at %{TX.score}%{tx.missing}!");
        assert!(!t.is_literal());
        assert_eq!(t.expand(&Sample), &b"Matched <script> at 5!"[..]);
        assert_eq!(Template::parse("%{tx.score}").expand(&Sample), &b"5"[..]);
        let plain = Template::parse("no macros, %{unclosed");
        assert!(plain.is_literal());
        assert!(matches!(
            plain.expand(&Sample),
            Cow::Borrowed(b"no macros, %{unclosed")
        ));
    }
}
