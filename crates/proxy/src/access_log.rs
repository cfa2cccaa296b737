//! The access log: one JSON object per line for each request (errors always; others
//! one in `sample`), with the fields asked for, including the reason of the response
//! (see [`crate::reason`]), so that every non-2xx answer says why. Lines are made on
//! the request's thread only for the requests logged, and written by a thread of
//! their own.

use crate::reason::Reason;
use crate::security_log::LogFile;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Every field a line can have, in the order lines give them.
pub const FIELDS: [&str; 13] = [
    "time",
    "request_id",
    "client",
    "method",
    "host",
    "path",
    "protocol",
    "status",
    "reason",
    "waf_rule",
    "route",
    "duration_ms",
    "trace_id",
];

/// One request, as the access log sees it.
#[derive(Debug)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub client: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub protocol: &'static str,
    pub status: u16,
    pub reason: Reason,
    pub route: &'a str,
    pub duration: Duration,
    /// The request's trace, when tracing is on.
    pub trace: Option<crate::trace::TraceIds>,
}

/// The access log's file and choices.
#[derive(Debug)]
pub struct AccessLog {
    file: LogFile,
    /// One in this many requests answered below 400 is logged (1: all).
    sample: u64,
    seen: AtomicU64,
    /// Which of [`FIELDS`] lines carry, by bit.
    fields: u32,
}

impl AccessLog {
    /// Opens `path` for appending. `fields` picks from [`FIELDS`] (none: all of them);
    /// an unknown one is an error that names it.
    pub fn open(path: &std::path::Path, sample: u64, fields: &[String]) -> Result<Self, String> {
        let mut mask = 0u32;
        for f in fields {
            match FIELDS.iter().position(|k| k == f) {
                Some(i) => mask |= 1 << i,
                None => {
                    return Err(format!(
                        "unknown access log field {f:?} (known: {})",
                        FIELDS.join(", ")
                    ))
                }
            }
        }
        if mask == 0 {
            mask = (1 << FIELDS.len()) - 1;
        }
        let file = LogFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(AccessLog {
            file,
            sample: sample.max(1),
            seen: AtomicU64::new(0),
            fields: mask,
        })
    }

    /// Whether a request answered `status` is logged: every error, one in `sample`
    /// of the rest.
    pub fn wants(&self, status: u16) -> bool {
        status >= 400
            || self.sample == 1
            || self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(self.sample)
    }

    /// Writes `e` (when [`AccessLog::wants`] it).
    pub fn log(&self, e: &Entry<'_>) {
        if self.wants(e.status) {
            self.file.write(self.line(e));
        }
    }

    /// The JSON line of `e`, written straight into one string (no JSON tree, one
    /// allocation).
    pub fn line(&self, e: &Entry<'_>) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(320);
        out.push('{');
        let mut first = true;
        let mut key = |out: &mut String, i: usize| -> bool {
            if self.fields & (1 << i) == 0 {
                return false;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push('"');
            out.push_str(FIELDS[i]);
            out.push_str("\":");
            true
        };
        if key(&mut out, 0) {
            let _ = write!(out, "{}", crate::security_log::now_ms());
        }
        if key(&mut out, 1) {
            json_str(&mut out, e.request_id);
        }
        if key(&mut out, 2) {
            let _ = write!(out, "\"{}\"", e.client);
        }
        if key(&mut out, 3) {
            json_str(&mut out, e.method);
        }
        if key(&mut out, 4) {
            json_str(&mut out, e.host);
        }
        if key(&mut out, 5) {
            json_str(&mut out, e.path);
        }
        if key(&mut out, 6) {
            json_str(&mut out, e.protocol);
        }
        if key(&mut out, 7) {
            let _ = write!(out, "{}", e.status);
        }
        if key(&mut out, 8) {
            json_str(&mut out, e.reason.code());
        }
        if let Reason::Waf(rule) = e.reason {
            if key(&mut out, 9) {
                let _ = write!(out, "{rule}");
            }
        }
        if key(&mut out, 10) {
            json_str(&mut out, e.route);
        }
        if key(&mut out, 11) {
            let _ = write!(out, "{}", e.duration.as_micros() as f64 / 1e3);
        }
        if let Some(t) = &e.trace {
            if key(&mut out, 12) {
                let _ = write!(out, "\"{}\"", t.trace_hex());
            }
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, reason: Reason) -> Entry<'static> {
        Entry {
            request_id: "r-1",
            client: "10.0.0.9".parse().expect("ip"),
            method: "GET",
            host: "app.example",
            path: "/a\"b",
            protocol: "HTTP/1.1",
            status,
            reason,
            route: "default/app",
            duration: Duration::from_micros(1500),
            trace: Some(crate::trace::TraceIds {
                trace_id: [0xab; 16],
                span_id: [1; 8],
                parent: None,
                sampled: true,
            }),
        }
    }

    #[test]
    fn lines_carry_the_fields_asked_for_and_errors_are_always_logged() {
        let dir = tempfile::tempdir().expect("tmp");
        let all = AccessLog::open(&dir.path().join("a.log"), 1, &[]).expect("open");
        let v: serde_json::Value =
            serde_json::from_str(&all.line(&entry(403, Reason::Waf(942100)))).expect("json");
        assert_eq!(v["reason"], "waf");
        assert_eq!(v["waf_rule"], 942100);
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v.as_object().map(|o| o.len()), Some(FIELDS.len()));

        let some = AccessLog::open(
            &dir.path().join("b.log"),
            10,
            &["status".into(), "reason".into()],
        )
        .expect("open");
        let v: serde_json::Value =
            serde_json::from_str(&some.line(&entry(404, Reason::NoRoute))).expect("json");
        assert_eq!(v, serde_json::json!({"status": 404, "reason": "no_route"}));
        let logged = (0..100).filter(|_| some.wants(200)).count();
        assert_eq!(logged, 10, "one in ten successes");
        assert!((0..5).all(|_| some.wants(502)), "every error");
        assert!(
            AccessLog::open(&dir.path().join("c.log"), 1, &["nope".into()])
                .is_err_and(|e| e.contains("nope"))
        );
    }
}
