//! A transaction's persistent variables (`TX` and the other `setvar` collections):
//! keys compared case-insensitively (stored lower case, so a lookup with a lower-case
//! key costs one hash and no allocation), values as bytes, and `setvar`'s arithmetic
//! as ModSecurity does it (a value that is not a number counts as 0).

use crate::actions::SetOp;
use rustc_hash::FxHashMap;

/// The collections `setvar` writes, in index order.
const COLLECTIONS: [&str; 6] = ["tx", "ip", "global", "session", "user", "resource"];

#[derive(Debug, Default, Clone)]
pub struct Store {
    cols: [FxHashMap<Box<str>, Vec<u8>>; 6],
}

fn index(collection: &str) -> Option<usize> {
    COLLECTIONS
        .iter()
        .position(|c| c.eq_ignore_ascii_case(collection))
}

/// `key` in lower case, allocating only if it has upper-case letters.
fn lower(key: &str) -> std::borrow::Cow<'_, str> {
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(key.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(key)
    }
}

impl Store {
    pub fn get(&self, collection: &str, key: &str) -> Option<&[u8]> {
        let col = &self.cols[index(collection)?];
        col.get(&*lower(key)).map(Vec::as_slice)
    }

    /// The stored key and the value.
    pub fn entry(&self, collection: &str, key: &str) -> Option<(&str, &[u8])> {
        let col = &self.cols[index(collection)?];
        col.get_key_value(&*lower(key))
            .map(|(k, v)| (&**k, v.as_slice()))
    }

    pub fn set(&mut self, collection: &str, key: &str, value: Vec<u8>) {
        if let Some(i) = index(collection) {
            self.cols[i].insert(lower(key).into(), value);
        }
    }

    /// Members of a collection, in no particular order.
    pub fn members<'a>(
        &'a self,
        collection: &str,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        index(collection)
            .map(|i| &self.cols[i])
            .into_iter()
            .flatten()
            .map(|(k, v)| (&**k, v.as_slice()))
    }

    /// Applies a `setvar` whose name and value are already expanded.
    pub fn apply(&mut self, collection: &str, key: &str, op: &SetOp, value: &[u8]) {
        let Some(i) = index(collection) else { return };
        let col = &mut self.cols[i];
        let key = lower(key);
        match op {
            SetOp::Delete => {
                col.remove(&*key);
            }
            SetOp::Set(_) => match col.get_mut(&*key) {
                Some(v) => {
                    v.clear();
                    v.extend_from_slice(value);
                }
                None => {
                    col.insert(key.into(), value.to_vec());
                }
            },
            SetOp::Add(_) | SetOp::Sub(_) => {
                let n = number(value);
                let slot = match col.get_mut(&*key) {
                    Some(v) => v,
                    None => col.entry(key.into()).or_default(),
                };
                let current = number(slot);
                let next = match op {
                    SetOp::Add(_) => current.saturating_add(n),
                    _ => current.saturating_sub(n),
                };
                slot.clear();
                slot.extend_from_slice(next.to_string().as_bytes());
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
        s.apply("nope", "x", &add, b"1");
        assert_eq!(s.get("nope", "x"), None);
    }
}
