//! A rule that matched, as the logs show it: the error-log line in ModSecurity's form
//! (`[id "942100"] [msg "..."] [data "..."]`), which existing tooling parses, and a
//! JSON audit event.

use crate::ruleset::CompiledRule;
use std::fmt::Write;

#[derive(Debug, Clone)]
pub struct MatchedRule<'r> {
    pub rule: &'r CompiledRule,
    pub phase: u8,
    /// `msg` and `logdata`, expanded.
    pub msg: Vec<u8>,
    pub data: Vec<u8>,
    pub matched_var_name: Vec<u8>,
    /// The rule's disruptive action took effect (engine On, not `pass`).
    pub disruptive: bool,
}

const SEVERITIES: [&str; 8] = [
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFO",
    "DEBUG",
];

/// Escapes a value for a `[name "value"]` field: quotes and backslashes escaped,
/// bytes outside printable ASCII as `\xHH`.
pub fn escape(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    for &b in v {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

impl MatchedRule<'_> {
    pub fn id(&self) -> u32 {
        self.rule.id.unwrap_or(0)
    }

    pub fn severity_name(&self) -> Option<&'static str> {
        self.rule
            .severity
            .and_then(|s| SEVERITIES.get(s as usize).copied())
    }

    /// The ModSecurity error-log line, after `client`, `hostname`, `uri` and `unique_id`.
    pub fn log_line(&self, client: &str, host: &str, uri: &[u8], unique_id: &str) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(
            s,
            "[client {client}] ModSecurity: {}. [file \"{}\"] [line \"{}\"] [id \"{}\"] [msg \"{}\"] [data \"{}\"]",
            if self.disruptive { "Access denied" } else { "Warning" },
            self.rule.file.display(),
            self.rule.line,
            self.id(),
            escape(&self.msg),
            escape(&self.data),
        );
        if let Some(sev) = self.severity_name() {
            let _ = write!(s, " [severity \"{sev}\"]");
        }
        for t in &self.rule.tags {
            let _ = write!(s, " [tag \"{}\"]", escape(t.as_bytes()));
        }
        let _ = write!(
            s,
            " [hostname \"{}\"] [uri \"{}\"] [unique_id \"{}\"]",
            escape(host.as_bytes()),
            escape(uri),
            unique_id
        );
        s
    }

    /// The match as a JSON object (for the audit event).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id(),
            "phase": self.phase,
            "msg": String::from_utf8_lossy(&self.msg),
            "data": String::from_utf8_lossy(&self.data),
            "severity": self.severity_name(),
            "tags": self.rule.tags,
            "matched_var_name": String::from_utf8_lossy(&self.matched_var_name),
            "disruptive": self.disruptive,
        })
    }
}
