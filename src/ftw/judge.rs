//! A stage's verdict: its expectations checked against the response (or the error in
//! its place) and the log lines between its two markers. The rules follow go-ftw's
//! `runner/run.go` `checkResult` and `runner/check_*.go`:
//!
//! - `expect_error: true` passes exactly when the exchange failed (no response head);
//!   nothing else is checked then. A failed exchange without `expect_error` fails.
//! - `status` (one or a list) must contain the response's status; absent or 0 is "any".
//! - `response_contains` must occur in the raw response (head and body).
//! - `match_regex` must match some log line, `no_match_regex` none (Go RE2 syntax, which
//!   Rust's `regex` shares); `expect_ids` must all be logged, `no_expect_ids` none;
//!   `isolated` wants exactly one rule id logged.
//!
//! Unlike go-ftw, every failed check is reported, not just the first.

use super::client::RawResponse;
use super::spec::Expectations;
use super::waflog::rule_ids;
use regex::bytes::Regex;

/// The verdict's failure reasons (none: passed) given what was observed. `response` is
/// the response or the text of the error in its place; `log` the stage's log lines, or
/// why they could not be read.
pub fn judge(
    exp: &Expectations,
    response: Result<&RawResponse, &str>,
    log: Result<&[Vec<u8>], &str>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if exp.expect_error {
        if let Ok(r) = response {
            reasons.push(format!("expected an error, got status {}", r.status));
        }
        return reasons;
    }
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            reasons.push(format!("request failed: {e}"));
            return reasons;
        }
    };
    if !exp.status.is_empty() && !exp.status.contains(&response.status) {
        reasons.push(format!(
            "status {} not in {}",
            response.status,
            list(&exp.status)
        ));
    }
    if let Some(needle) = &exp.response_contains {
        let found = !needle.is_empty()
            && response
                .raw
                .windows(needle.len())
                .any(|w| w == needle.as_bytes());
        if !found {
            reasons.push(format!("response does not contain {needle:?}"));
        }
    }

    let wants_log = !exp.expect_ids.is_empty()
        || !exp.no_expect_ids.is_empty()
        || exp.match_regex.is_some()
        || exp.no_match_regex.is_some()
        || exp.isolated;
    if !wants_log {
        return reasons;
    }
    let lines = match log {
        Ok(lines) => lines,
        Err(e) => {
            reasons.push(format!("log not read: {e}"));
            return reasons;
        }
    };
    let ids = rule_ids(lines.iter().map(Vec::as_slice));
    if let Some(pattern) = &exp.match_regex {
        match Regex::new(pattern) {
            Ok(re) => {
                if !lines.iter().any(|l| re.is_match(l)) {
                    reasons.push(format!("log does not match {pattern:?}"));
                }
            }
            Err(e) => reasons.push(format!("bad match_regex {pattern:?}: {e}")),
        }
    }
    for id in &exp.expect_ids {
        if !ids.contains(id) {
            reasons.push(format!("expected id {id} not logged"));
        }
    }
    if exp.isolated && ids.len() != 1 {
        reasons.push(format!(
            "isolated: expected exactly one rule logged, got {}",
            list(&ids)
        ));
    }
    if let Some(pattern) = &exp.no_match_regex {
        match Regex::new(pattern) {
            Ok(re) => {
                if lines.iter().any(|l| re.is_match(l)) {
                    reasons.push(format!("log matches no_match_regex {pattern:?}"));
                }
            }
            Err(e) => reasons.push(format!("bad no_match_regex {pattern:?}: {e}")),
        }
    }
    for id in &exp.no_expect_ids {
        if ids.contains(id) {
            reasons.push(format!("unexpected id {id} logged"));
        }
    }
    reasons
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let inner: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> RawResponse {
        let raw = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nhi").into_bytes();
        RawResponse {
            status,
            body_start: raw.len() - 2,
            raw,
            truncated: false,
        }
    }

    fn lines(ls: &[&str]) -> Vec<Vec<u8>> {
        ls.iter().map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn ids_status_and_regexes() {
        let log =
            lines(&[r#"[id "942100"] [msg "SQL Injection Attack Detected via libinjection"]"#]);
        let exp = Expectations {
            status: vec![200],
            expect_ids: vec![942100],
            no_expect_ids: vec![920100],
            match_regex: Some("libinjection".into()),
            no_match_regex: Some("XSS".into()),
            response_contains: Some("Content-Length".into()),
            ..Default::default()
        };
        assert!(judge(&exp, Ok(&resp(200)), Ok(&log)).is_empty());
        let exp = Expectations {
            status: vec![200],
            expect_ids: vec![942101],
            no_expect_ids: vec![942100],
            match_regex: Some("^nope".into()),
            no_match_regex: Some("SQL".into()),
            response_contains: Some("absent".into()),
            isolated: true,
            ..Default::default()
        };
        let reasons = judge(&exp, Ok(&resp(403)), Ok(&log));
        assert_eq!(
            reasons,
            vec![
                "status 403 not in [200]",
                "response does not contain \"absent\"",
                "log does not match \"^nope\"",
                "expected id 942101 not logged",
                "log matches no_match_regex \"SQL\"",
                "unexpected id 942100 logged",
            ]
        );
    }

    #[test]
    fn errors() {
        let exp = Expectations {
            expect_error: true,
            expect_ids: vec![1],
            ..Default::default()
        };
        assert!(judge(&exp, Err("connection reset"), Err("no marker")).is_empty());
        assert_eq!(
            judge(&exp, Ok(&resp(400)), Ok(&[])),
            vec!["expected an error, got status 400"]
        );
        let exp = Expectations {
            expect_ids: vec![1],
            ..Default::default()
        };
        assert_eq!(
            judge(&exp, Err("connection reset"), Ok(&[])),
            vec!["request failed: connection reset"]
        );
        assert_eq!(
            judge(&exp, Ok(&resp(200)), Err("end marker not found")),
            vec!["log not read: end marker not found"]
        );
        // No log expectations: the log does not matter.
        assert!(judge(&Expectations::default(), Ok(&resp(200)), Err("x")).is_empty());
    }
}
