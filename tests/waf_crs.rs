//! Conformance: the OWASP CRS v4.28 regression suite (the go-ftw tests in
//! `../shared/crs/tests/regression/tests`) against the real proxy over loopback, set up
//! as CRS's CI sets up its engines. Every stage must pass, except those excused in
//! `tests/waf/crs-overrides.yaml`. The report (per rule file) is written to
//! `target/crs-conformance.md`.

use gatehouse::waf_test::{run, SuiteOptions};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crs_regression_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = SuiteOptions {
        tests: root.join("../shared/crs/tests/regression/tests"),
        overrides: Some(root.join("tests/waf/crs-overrides.yaml")),
        rules: root.join("waf/crs"),
        filter: std::env::var("CRS_FILTER")
            .ok()
            .map(|f| regex::Regex::new(&f).expect("CRS_FILTER is a regex")),
        verbose: false,
    };
    let report = run(&opts).await.expect("the suite runs");
    let _ = std::fs::write(
        root.join("target/crs-conformance.md"),
        report.markdown_table(),
    );
    println!("{report}");
    assert!(report.passed() > 0, "no stage ran");
    assert_eq!(report.failed(), 0, "{report}");
}
