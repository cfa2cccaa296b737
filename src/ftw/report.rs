//! The outcome of a run: one result per stage (passed, failed with reasons, or excused
//! by an override), counts, pass rates per rule file, a plain-text summary (`Display`:
//! the failures by rule id, then `N excused`, then a last line `N passed, N failed`)
//! and a Markdown table of pass rates per rule file.

use std::collections::BTreeMap;
use std::fmt;

/// What became of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Why it failed (one reason per failed check).
    Failed(Vec<String>),
    /// Not run: an override without an output excuses it, for this reason.
    Excused(String),
}

/// The result of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageResult {
    /// The directory of the test file, e.g. `REQUEST-942-APPLICATION-ATTACK-SQLI`.
    pub rule_file: String,
    pub rule_id: u32,
    pub test_id: u32,
    /// 0-based index of the stage in its test.
    pub stage: usize,
    pub outcome: Outcome,
    /// The rule ids logged between the stage's markers (empty if not read).
    pub logged_ids: Vec<u32>,
    /// The response status, if there was a response.
    pub status: Option<u16>,
    /// The stage was run twice (`retry_once`) and this is the second result.
    pub retried: bool,
    /// An override replaced the stage's expected output.
    pub overridden: bool,
}

impl StageResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Passed
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }

    pub fn excused(&self) -> bool {
        matches!(self.outcome, Outcome::Excused(_))
    }

    /// The failure reasons (none unless failed).
    pub fn reasons(&self) -> &[String] {
        match &self.outcome {
            Outcome::Failed(r) => r,
            _ => &[],
        }
    }

    /// `<rule_id>-<test_id>`, the name go-ftw gives a test.
    pub fn test_name(&self) -> String {
        format!("{}-{}", self.rule_id, self.test_id)
    }
}

/// Counts for one rule file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleFileStats {
    pub rule_file: String,
    pub passed: usize,
    pub failed: usize,
    pub excused: usize,
}

impl RuleFileStats {
    /// Passed over run (excused stages left out); `None` if nothing ran.
    pub fn pass_rate(&self) -> Option<f64> {
        let run = self.passed + self.failed;
        (run > 0).then(|| self.passed as f64 / run as f64)
    }
}

/// The results of a run, in run order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub results: Vec<StageResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.failed()).count()
    }

    pub fn excused(&self) -> usize {
        self.results.iter().filter(|r| r.excused()).count()
    }

    /// The failed stages.
    pub fn failures(&self) -> impl Iterator<Item = &StageResult> {
        self.results.iter().filter(|r| r.failed())
    }

    /// Counts per rule file, sorted by rule file name.
    pub fn by_rule_file(&self) -> Vec<RuleFileStats> {
        let mut map: BTreeMap<&str, RuleFileStats> = BTreeMap::new();
        for r in &self.results {
            let s = map
                .entry(r.rule_file.as_str())
                .or_insert_with(|| RuleFileStats {
                    rule_file: r.rule_file.clone(),
                    ..Default::default()
                });
            match r.outcome {
                Outcome::Passed => s.passed += 1,
                Outcome::Failed(_) => s.failed += 1,
                Outcome::Excused(_) => s.excused += 1,
            }
        }
        map.into_values().collect()
    }

    /// The final line: `N passed, N failed`.
    pub fn summary_line(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// A Markdown table of pass rates per rule file, with a total row.
    pub fn markdown_table(&self) -> String {
        let rate =
            |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{:.1}%", r * 100.0));
        let mut out = String::from(
            "| Rule file | Passed | Failed | Excused | Pass rate |\n|---|---:|---:|---:|---:|\n",
        );
        let mut total = RuleFileStats {
            rule_file: "**Total**".into(),
            ..Default::default()
        };
        for s in self.by_rule_file() {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                s.rule_file,
                s.passed,
                s.failed,
                s.excused,
                rate(s.pass_rate())
            ));
            total.passed += s.passed;
            total.failed += s.failed;
            total.excused += s.excused;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            total.rule_file,
            total.passed,
            total.failed,
            total.excused,
            rate(total.pass_rate())
        ));
        out
    }
}

impl fmt::Display for Report {
    /// One line per failed stage, sorted by rule id, test id and stage:
    /// `FAIL 942100-3 stage 0 (REQUEST-942-APPLICATION-ATTACK-SQLI): reason; reason`,
    /// then `N excused`, then `N passed, N failed`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut failures: Vec<&StageResult> = self.failures().collect();
        failures.sort_by_key(|r| (r.rule_id, r.test_id, r.stage));
        for r in failures {
            writeln!(
                f,
                "FAIL {} stage {} ({}): {}",
                r.test_name(),
                r.stage,
                r.rule_file,
                r.reasons().join("; ")
            )?;
        }
        writeln!(f, "{} excused", self.excused())?;
        writeln!(f, "{}", self.summary_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rule_file: &str, rule_id: u32, test_id: u32, outcome: Outcome) -> StageResult {
        StageResult {
            rule_file: rule_file.into(),
            rule_id,
            test_id,
            stage: 0,
            outcome,
            logged_ids: vec![],
            status: Some(200),
            retried: false,
            overridden: false,
        }
    }

    #[test]
    fn counts_display_and_table() {
        let report = Report {
            results: vec![
                result(
                    "REQUEST-942-SQLI",
                    942100,
                    2,
                    Outcome::Failed(vec!["expected id 942100 not logged".into()]),
                ),
                result("REQUEST-942-SQLI", 942100, 1, Outcome::Passed),
                result(
                    "REQUEST-920-PROTO",
                    920100,
                    4,
                    Outcome::Excused("nginx".into()),
                ),
                result(
                    "REQUEST-920-PROTO",
                    920100,
                    1,
                    Outcome::Failed(vec!["status 403 not in [200]".into(), "x".into()]),
                ),
            ],
        };
        assert_eq!(
            (report.passed(), report.failed(), report.excused()),
            (1, 2, 1)
        );
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "FAIL 920100-1 stage 0 (REQUEST-920-PROTO): status 403 not in [200]; x",
                "FAIL 942100-2 stage 0 (REQUEST-942-SQLI): expected id 942100 not logged",
                "1 excused",
                "1 passed, 2 failed",
            ]
        );
        let stats = report.by_rule_file();
        assert_eq!(stats[0].rule_file, "REQUEST-920-PROTO");
        assert_eq!(stats[0].pass_rate(), Some(0.0));
        assert_eq!(stats[1].pass_rate(), Some(0.5));
        let table = report.markdown_table();
        assert!(
            table.contains("| REQUEST-920-PROTO | 0 | 1 | 1 | 0.0% |"),
            "{table}"
        );
        assert!(
            table.contains("| REQUEST-942-SQLI | 1 | 1 | 0 | 50.0% |"),
            "{table}"
        );
        assert!(
            table.contains("| **Total** | 1 | 2 | 1 | 33.3% |"),
            "{table}"
        );
        assert!(Report::default().markdown_table().contains("n/a"));
    }
}
