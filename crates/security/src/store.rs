//! A transaction's persistent variables (`TX` and the other `setvar` collections):
//! keys compared case-insensitively, values as bytes, and `setvar`'s arithmetic as
//! ModSecurity does it (a value that is not a number counts as 0).

use crate::actions::SetOp;
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct Store {
    /// (collection, key), both lower case.
    values: HashMap<(String, String), Vec<u8>>,
}

impl Store {
    pub fn get(&self, collection: &str, key: &str) -> Option<&[u8]> {
        self.values
            .get(&(collection.to_ascii_lowercase(), key.to_ascii_lowercase()))
            .map(Vec::as_slice)
    }

    pub fn set(&mut self, collection: &str, key: &str, value: Vec<u8>) {
        self.values.insert(
            (collection.to_ascii_lowercase(), key.to_ascii_lowercase()),
            value,
        );
    }

    /// Members of a collection, in no particular order.
    pub fn members<'a>(
        &'a self,
        collection: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let c = collection.to_ascii_lowercase();
        self.values
            .iter()
            .filter(move |((col, _), _)| *col == c)
            .map(|((_, k), v)| (k.as_str(), v.as_slice()))
    }

    /// Applies a `setvar` whose name and value are already expanded.
    pub fn apply(&mut self, collection: &str, key: &str, op: &SetOp, value: &[u8]) {
        let k = (collection.to_ascii_lowercase(), key.to_ascii_lowercase());
        match op {
            SetOp::Delete => {
                self.values.remove(&k);
            }
            SetOp::Set(_) => {
                self.values.insert(k, value.to_vec());
            }
            SetOp::Add(_) | SetOp::Sub(_) => {
                let current = self.values.get(&k).map_or(0, |v| number(v));
                let n = number(value);
                let next = match op {
                    SetOp::Add(_) => current.saturating_add(n),
                    _ => current.saturating_sub(n),
                };
                self.values.insert(k, next.to_string().into_bytes());
            }
        }
    }
}

/// A value read as an integer: optional sign and digits, else 0.
pub fn number(v: &[u8]) -> i64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setvar_arithmetic_and_case() {
        let mut s = Store::default();
        let add = SetOp::Add(String::new());
        s.apply("tx", "Anomaly_Score", &SetOp::Set(String::new()), b"0");
        s.apply("TX", "anomaly_score", &add, b"5");
        s.apply("tx", "ANOMALY_SCORE", &add, b"3");
        assert_eq!(s.get("tx", "anomaly_score"), Some(&b"8"[..]));
        s.apply("tx", "anomaly_score", &SetOp::Sub(String::new()), b"10");
        assert_eq!(s.get("Tx", "Anomaly_Score"), Some(&b"-2"[..]));
        s.apply("tx", "fresh", &add, b"junk");
        assert_eq!(s.get("tx", "fresh"), Some(&b"0"[..]));
        s.apply("tx", "fresh", &SetOp::Delete, b"");
        assert_eq!(s.get("tx", "fresh"), None);
        assert_eq!(s.members("TX").count(), 1);
    }
}
