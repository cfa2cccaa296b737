//! Status that translation computes for the objects it read (Ingress load-balancer
//! addresses, Gateway API conditions), for a status writer to publish. Conditions carry
//! no lastTransitionTime: translation is pure; the writer stamps times.

use serde_json::{json, Value};

/// The status one object should have.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    /// The whole `.status` to publish.
    pub status: StatusJson,
}

/// A status kept as compact JSON text: a Snapshot holds one per route and Gateway, and
/// text takes a fraction of the memory of a `serde_json::Value` tree. Parsed again only
/// when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusJson(Box<str>);

impl StatusJson {
    /// The status as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl From<Value> for StatusJson {
    fn from(v: Value) -> Self {
        StatusJson(v.to_string().into_boxed_str())
    }
}

impl std::fmt::Display for StatusJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which object a status is for: kind, namespace, name.
pub type StatusKey = (&'static str, Option<String>, String);

/// Statuses by object. A persistent map: Snapshots built incrementally share the
/// unchanged entries with the one before.
pub type Statuses = imbl::OrdMap<StatusKey, std::sync::Arc<StatusUpdate>>;

impl StatusUpdate {
    pub fn key(&self) -> StatusKey {
        (self.kind, self.namespace.clone(), self.name.clone())
    }
}

/// A metav1.Condition without its lastTransitionTime.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Value {
    let mut c = json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
    });
    if let Some(g) = generation {
        c["observedGeneration"] = g.into();
    }
    c
}

/// Gives every condition in `status` (at any depth) a lastTransitionTime: the one from
/// `previous` when a condition of the same type had the same status there, else `now`.
pub fn stamp_conditions(status: &mut Value, previous: Option<&Value>, now: &str) {
    match status {
        Value::Object(map) => {
            if let (Some(Value::String(t)), Some(Value::String(s))) =
                (map.get("type"), map.get("status"))
            {
                if map.contains_key("reason") && !map.contains_key("lastTransitionTime") {
                    let kept = previous.and_then(|p| find_condition(p, t, s));
                    map.insert(
                        "lastTransitionTime".into(),
                        kept.unwrap_or_else(|| now.to_string()).into(),
                    );
                    return;
                }
            }
            for v in map.values_mut() {
                stamp_conditions(v, previous, now);
            }
        }
        Value::Array(items) => {
            for v in items {
                stamp_conditions(v, previous, now);
            }
        }
        _ => {}
    }
}

fn find_condition(v: &Value, type_: &str, status: &str) -> Option<String> {
    match v {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some(type_)
                && map.get("status").and_then(Value::as_str) == Some(status)
            {
                return map
                    .get("lastTransitionTime")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            map.values().find_map(|c| find_condition(c, type_, status))
        }
        Value::Array(items) => items.iter().find_map(|c| find_condition(c, type_, status)),
        _ => None,
    }
}

/// `status` with every lastTransitionTime removed, to compare what matters.
pub fn without_times(status: &Value) -> Value {
    match status {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        v => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_keep_times_of_unchanged_conditions() {
        let previous = json!({"conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Programmed", "status": "False", "reason": "Invalid", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]});
        let mut next = json!({"conditions": [condition("Accepted", true, "Accepted", "", Some(2)), condition("Programmed", true, "Programmed", "", Some(2))]});
        stamp_conditions(&mut next, Some(&previous), "2026-06-01T00:00:00Z");
        assert_eq!(
            next["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            next["conditions"][1]["lastTransitionTime"],
            "2026-06-01T00:00:00Z"
        );
        assert_eq!(
            without_times(&next)["conditions"][0].get("lastTransitionTime"),
            None
        );
    }
}
