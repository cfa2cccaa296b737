//! JSON bodies as ModSecurity v3 presents them: every scalar becomes an argument named
//! by its path from `json` (`json.user.name`, `json.items.0`), its value as text
//! (`true`, `false`, numbers as written, null as empty); a non-empty array is also an
//! argument itself, valued by its length.

use super::Pairs;
use serde_json::Value;

/// Deepest nesting accepted; deeper documents are a body error, not a stack overflow.
const MAX_DEPTH: usize = 256;

pub fn parse(input: &[u8], out: &mut Pairs) -> Result<(), String> {
    // serde_json's own recursion limit (128) guards parsing itself.
    let v: Value = serde_json::from_slice(input).map_err(|e| format!("JSON parsing error: {e}"))?;
    let mut name = b"json".to_vec();
    walk(&v, &mut name, out, 0)
}

fn walk(v: &Value, name: &mut Vec<u8>, out: &mut Pairs, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("JSON nesting too deep".into());
    }
    let child = |name: &mut Vec<u8>, key: &[u8]| {
        let len = name.len();
        name.push(b'.');
        name.extend_from_slice(key);
        len
    };
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let len = child(name, k.as_bytes());
                walk(v, name, out, depth + 1)?;
                name.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = child(name, i.to_string().as_bytes());
                walk(v, name, out, depth + 1)?;
                name.truncate(len);
            }
            // The array itself, valued by its length (as Coraza does): its name is an
            // argument name too.
            if !items.is_empty() {
                out.push((name.clone(), items.len().to_string().into_bytes()));
            }
        }
        Value::String(s) => out.push((name.clone(), s.as_bytes().to_vec())),
        Value::Null => out.push((name.clone(), Vec::new())),
        Value::Bool(b) => out.push((name.clone(), b.to_string().into_bytes())),
        Value::Number(n) => out.push((name.clone(), n.to_string().into_bytes())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_scalars() {
        let mut out = Pairs::new();
        parse(br#"{"a":{"b":"x","c":[1,true,null]}}"#, &mut out).expect("valid");
        let names: Vec<_> = out
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).to_string())
            .collect();
        assert_eq!(
            names,
            [
                "json.a.b",
                "json.a.c.0",
                "json.a.c.1",
                "json.a.c.2",
                "json.a.c"
            ]
        );
        assert_eq!(out[4].1, b"3");
        assert_eq!(out[2].1, b"true");
        assert!(parse(b"{\"a\":", &mut Pairs::new()).is_err());
        let deep = "[".repeat(5000);
        assert!(parse(deep.as_bytes(), &mut Pairs::new()).is_err());
    }
}
