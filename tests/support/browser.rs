//! Headless Chromium (Debian's `chromium`, installed by `.ci/run`), driven from tests:
//! it loads a page, runs its scripts in virtual time (which waits for their fetches),
//! and prints the DOM or saves a screenshot.

use std::time::Duration;

/// Where Chromium is (Debian names it `chromium`).
fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("headless Chromium is needed (Debian's chromium package; .ci/run installs it)")
        .to_string()
}

/// Runs headless Chromium on `url` with `args` (e.g. `--dump-dom`); its stdout.
pub async fn browse(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("tmp");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,1100",
        // Virtual time runs the page's polling and waits for its fetches.
        "--virtual-time-budget=6000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
