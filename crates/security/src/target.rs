//! Rule targets made ready to run: a key lower-cased once (ModSecurity compares keys
//! without case), a `/regex/` key compiled once (case-insensitive, on bytes), and the
//! test that says whether a member's key is selected.

use crate::error::Bad;
use crate::variables::{Collection, Selector, Variable};
use regex::bytes::{Regex, RegexBuilder};

/// Which members of a collection a compiled target selects.
#[derive(Debug, Clone)]
pub enum Select {
    All,
    /// A key, lower case.
    Key(Vec<u8>),
    Regex(Regex),
}

impl Select {
    pub fn compile(s: &Selector) -> Result<Select, Bad> {
        Ok(match s {
            Selector::All => Select::All,
            Selector::Key(k) => Select::Key(k.to_ascii_lowercase().into_bytes()),
            Selector::Regex(r) => Select::Regex(
                RegexBuilder::new(r)
                    .case_insensitive(true)
                    .unicode(false)
                    .build()
                    .map_err(|e| Bad::new(r.as_str(), format!("bad key regex: {e}")))?,
            ),
        })
    }

    /// True if a member named `key` is selected.
    pub fn selects(&self, key: &[u8]) -> bool {
        match self {
            Select::All => true,
            Select::Key(k) => key.eq_ignore_ascii_case(k),
            Select::Regex(r) => r.is_match(key),
        }
    }
}

/// One compiled rule target.
#[derive(Debug, Clone)]
pub struct Target {
    pub collection: Collection,
    pub select: Select,
    pub count: bool,
    pub exclude: bool,
}

impl Target {
    pub fn compile(v: &Variable) -> Result<Target, Bad> {
        let select = match (v.collection, &v.selector) {
            // XPath expressions are kept as written.
            (Collection::Xml, Selector::Key(k)) => Select::Key(k.clone().into_bytes()),
            (_, s) => Select::compile(s)?,
        };
        Ok(Target {
            collection: v.collection,
            select,
            count: v.count,
            exclude: v.exclude,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_case_and_regexes_are_bytes() {
        let k = Select::compile(&Selector::Key("User-Agent".into())).expect("key");
        assert!(k.selects(b"user-agent"));
        assert!(!k.selects(b"user-agents"));
        let r = Select::compile(&Selector::Regex("^x-".into())).expect("regex");
        assert!(r.selects(b"X-Forwarded-For"));
        assert!(r.selects(b"x-\xff"));
        assert!(Select::compile(&Selector::Regex("(".into())).is_err());
    }
}
