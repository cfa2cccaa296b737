//! A go-ftw compatible regression harness for the WAF: it loads the OWASP CRS test files
//! (`tests/regression/tests/<RULE-FILE>/<rule_id>.yaml`) and an optional engine overrides
//! file, sends every stage's request to a running WAF byte for byte as go-ftw would,
//! brackets each stage with `X-CRS-Test` marker requests, reads the WAF's error log
//! between the two marker lines and judges the stage's expectations.
//!
//! The parts:
//! - [`spec`]: the test and overrides file formats (serde types) and directory loading;
//! - [`request`]: the raw request bytes of a stage, as go-ftw builds them;
//! - [`client`]: one request over a fresh TCP connection, reading one response;
//! - [`waflog`]: incremental reading of the WAF log and rule id extraction;
//! - [`judge`]: a stage's expectations checked against what happened;
//! - [`runner`]: the marker protocol and the suite loop ([`run_suite`]);
//! - [`report`]: per-stage results, counts and per-rule-file pass rates;
//! - [`backend`]: an albedo-like backend (`/reflect`) to put behind the WAF.

pub mod backend;
pub mod client;
pub mod judge;
pub mod report;
pub mod request;
pub mod runner;
pub mod spec;
pub mod waflog;

pub use backend::{start_backend, start_backend_at};
pub use report::{Outcome, Report, RuleFileStats, StageResult};
pub use runner::{run_suite, run_suite_with, RunConfig, Target};
pub use spec::{load_dir, load_overrides, LoadedTestFile, OverridesFile, TestFile};
