//! Runs test stages against a WAF, go-ftw style (`runner/run.go`, `waflog/read.go`):
//!
//! 1. a start marker: `GET /` with `X-CRS-Test: <random hex>` (plus `Accept`,
//!    `User-Agent`, `Host: localhost`, `Connection: close`), which the WAF's marker rule
//!    logs; the log is polled until a line holding that id appears (the request is sent
//!    again a few times within the marker timeout if it does not);
//! 2. the stage's request, over a fresh connection;
//! 3. an end marker, likewise.
//!
//! The stage's log is the lines strictly between the start marker's line and the end
//! marker's line, less any line naming either marker (a re-sent marker's line). The log
//! file is read incrementally from a remembered offset. Stages run one at a time, in
//! file order; a failed stage whose output says `retry_once` is run once more. Every
//! request goes to the target, whatever the test's `dest_addr`/`port` say.

use super::client::{exchange, ClientConfig};
use super::judge::judge;
use super::report::{Outcome, Report, StageResult};
use super::request::{build_request_with, marker_request, request_method, HeaderOrder};
use super::spec::{load_dir, load_overrides, Expectations, Input, LoadedTestFile, OverridesFile};
use super::waflog::{is_marker_line, rule_ids, LogReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// The WAF under test: where it listens, and the error log it appends one line per
/// matched rule to (each with `[id "NNN"]`, ModSecurity style).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub log_path: PathBuf,
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub client: ClientConfig,
    /// The marker header (go-ftw's `LogMarkerHeaderName`).
    pub marker_header: String,
    /// How long to wait for a marker's log line, in all.
    pub marker_timeout: Duration,
    /// How many times a marker request may be sent within that time.
    pub marker_sends: u32,
    /// How often the log is polled.
    pub poll_interval: Duration,
    /// The wire order of a stage's own headers.
    pub header_order: HeaderOrder,
    /// Print each stage's result to stderr as it comes.
    pub verbose: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            client: ClientConfig::default(),
            marker_header: "X-CRS-Test".to_string(),
            marker_timeout: Duration::from_secs(3),
            marker_sends: 3,
            poll_interval: Duration::from_millis(5),
            header_order: HeaderOrder::GoFtw,
            verbose: false,
        }
    }
}

/// Loads the test files under `tests_dir` (and the overrides file, if any) and runs
/// every stage of every test against `target`, in order. With a `filter`, only tests
/// whose `<rule_id>-<test_id>` it matches are run. Errors only for files that cannot be
/// loaded; a failing WAF shows as failed stages.
pub async fn run_suite(
    tests_dir: &Path,
    overrides: Option<&Path>,
    target: &Target,
    filter: Option<&regex::Regex>,
) -> anyhow::Result<Report> {
    run_suite_with(tests_dir, overrides, target, filter, &RunConfig::default()).await
}

/// [`run_suite`] with a configuration.
pub async fn run_suite_with(
    tests_dir: &Path,
    overrides: Option<&Path>,
    target: &Target,
    filter: Option<&regex::Regex>,
    cfg: &RunConfig,
) -> anyhow::Result<Report> {
    let files = load_dir(tests_dir)?;
    let overrides = overrides.map(load_overrides).transpose()?;
    Ok(run_files(&files, overrides.as_ref(), target, filter, cfg).await)
}

/// Runs already loaded test files.
pub async fn run_files(
    files: &[LoadedTestFile],
    overrides: Option<&OverridesFile>,
    target: &Target,
    filter: Option<&regex::Regex>,
    cfg: &RunConfig,
) -> Report {
    let mut session = Session {
        target,
        cfg,
        log: LogReader::at_end(&target.log_path),
    };
    let mut report = Report::default();
    for file in files {
        let rule_id = file.file.rule_id;
        for test in &file.file.tests {
            let name = format!("{rule_id}-{}", test.test_id);
            if filter.is_some_and(|f| !f.is_match(&name)) {
                continue;
            }
            for (index, stage) in test.stages.iter().enumerate() {
                let over = overrides.and_then(|o| o.find(rule_id, test.test_id, index));
                let mut result = StageResult {
                    rule_file: file.rule_file.clone(),
                    rule_id,
                    test_id: test.test_id,
                    stage: index,
                    outcome: Outcome::Passed,
                    logged_ids: Vec::new(),
                    status: None,
                    retried: false,
                    overridden: over.is_some(),
                };
                let mut exp = match over {
                    Some(o) => match &o.output {
                        Some(output) => output.expectations(),
                        None => {
                            result.outcome = Outcome::Excused(o.reason.clone());
                            session.note(&result);
                            report.results.push(result);
                            continue;
                        }
                    },
                    None => stage.output.expectations(),
                };
                if let Some(retry) = over.and_then(|o| o.retry_once) {
                    exp.retry_once = retry;
                }
                let mut run = session.run_stage(&stage.input, &exp).await;
                if exp.retry_once && !run.reasons.is_empty() {
                    run = session.run_stage(&stage.input, &exp).await;
                    result.retried = true;
                }
                result.outcome = if run.reasons.is_empty() {
                    Outcome::Passed
                } else {
                    Outcome::Failed(run.reasons)
                };
                result.logged_ids = run.logged_ids;
                result.status = run.status;
                session.note(&result);
                report.results.push(result);
            }
        }
    }
    report
}

/// What one run of a stage showed.
struct StageRun {
    reasons: Vec<String>,
    logged_ids: Vec<u32>,
    status: Option<u16>,
}

/// A found marker: the lines read before its line and after it.
struct Marker {
    id: String,
    before: Vec<Vec<u8>>,
    after: Vec<Vec<u8>>,
}

struct Session<'a> {
    target: &'a Target,
    cfg: &'a RunConfig,
    log: LogReader,
}

impl Session<'_> {
    fn note(&self, r: &StageResult) {
        if self.cfg.verbose {
            let verdict = match &r.outcome {
                Outcome::Passed => "ok".to_string(),
                Outcome::Failed(reasons) => format!("FAIL: {}", reasons.join("; ")),
                Outcome::Excused(reason) => format!("excused: {reason}"),
            };
            eprintln!("{} stage {}: {verdict}", r.test_name(), r.stage);
        }
    }

    async fn run_stage(&mut self, input: &Input, exp: &Expectations) -> StageRun {
        let request = match build_request_with(input, self.cfg.header_order) {
            Ok(r) => r,
            Err(e) => {
                return StageRun {
                    reasons: vec![format!("bad test input: {e}")],
                    logged_ids: Vec::new(),
                    status: None,
                }
            }
        };
        let start = self.mark().await;
        if let Err(e) = &start {
            if !exp.expect_error {
                return StageRun {
                    reasons: vec![format!("start marker: {e}")],
                    logged_ids: Vec::new(),
                    status: None,
                };
            }
        }
        let head = request_method(&request) == "HEAD";
        let response = exchange(self.target.addr, &request, head, &self.cfg.client).await;
        let end = self.mark().await;
        let log: Result<Vec<Vec<u8>>, String> = match (start, end) {
            (Ok(start), Ok(end)) => Ok(start
                .after
                .into_iter()
                .chain(end.before)
                .filter(|l| !is_marker_line(l, &start.id) && !is_marker_line(l, &end.id))
                .collect()),
            (Err(e), _) => Err(format!("start marker: {e}")),
            (_, Err(e)) => Err(format!("end marker: {e}")),
        };
        let error_text = response.as_ref().err().map(|e| e.to_string());
        let reasons = judge(
            exp,
            match (&response, &error_text) {
                (Ok(r), _) => Ok(r),
                (Err(_), Some(text)) => Err(text.as_str()),
                (Err(_), None) => Err("request failed"),
            },
            log.as_deref().map_err(String::as_str),
        );
        StageRun {
            reasons,
            logged_ids: log
                .as_ref()
                .map(|l| rule_ids(l.iter().map(Vec::as_slice)))
                .unwrap_or_default(),
            status: response.as_ref().ok().map(|r| r.status),
        }
    }

    /// Sends a marker and waits for its log line.
    async fn mark(&mut self) -> Result<Marker, String> {
        let id = random_hex();
        let request = marker_request(&self.cfg.marker_header, &id);
        let sends = self.cfg.marker_sends.max(1);
        let started = Instant::now();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut last_error: Option<String> = None;
        for attempt in 1..=sends {
            if let Err(e) = exchange(self.target.addr, &request, false, &self.cfg.client).await {
                last_error = Some(e.to_string());
            }
            let until = started + self.cfg.marker_timeout * attempt / sends;
            loop {
                let fresh = self
                    .log
                    .read_new_lines()
                    .map_err(|e| format!("reading {}: {e}", self.target.log_path.display()))?;
                let checked = seen.len();
                seen.extend(fresh);
                if let Some(pos) = seen[checked..].iter().position(|l| is_marker_line(l, &id)) {
                    let pos = checked + pos;
                    let after = seen.split_off(pos + 1);
                    seen.pop();
                    return Ok(Marker {
                        id,
                        before: seen,
                        after,
                    });
                }
                if Instant::now() >= until {
                    break;
                }
                tokio::time::sleep(self.cfg.poll_interval).await;
            }
        }
        let cause = last_error
            .map(|e| format!(" (marker request: {e})"))
            .unwrap_or_default();
        Err(format!(
            "no log line with {id} in {} after {sends} marker requests within {:?}{cause}",
            self.target.log_path.display(),
            self.cfg.marker_timeout,
        ))
    }
}

/// 32 random hex digits (std's randomly keyed hasher over a counter and the clock).
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = String::with_capacity(32);
    for half in 0u8..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(half);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A tiny fake WAF: logs `[id "999999"] [msg "<X-CRS-Test value>"]` for markers and
    /// `[id "1"] [msg "attack"]` for paths containing "attack"; answers 200 and keeps
    /// the connection open, except for paths containing "drop", where it closes
    /// without answering.
    async fn fake_waf(log_path: PathBuf) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log_path = log_path.clone();
                tokio::spawn(async move { handle(stream, log_path).await });
            }
        });
        addr
    }

    async fn handle(mut stream: TcpStream, log_path: PathBuf) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let mut lines = Vec::new();
        for line in head.lines() {
            if let Some(v) = line.strip_prefix("X-CRS-Test: ") {
                lines.push(format!("[id \"999999\"] [msg \"{v}\"]"));
            }
        }
        if path.contains("attack") {
            lines.push(
                "[client 127.0.0.1] ModSecurity: Warning. [id \"1\"] [msg \"attack\"]".into(),
            );
        }
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("log opens");
            for l in lines {
                writeln!(f, "{l}").expect("log write");
            }
        }
        if path.contains("drop") {
            return;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        // Keep-alive: hold the connection; the client must not wait for the close.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }

    const TESTS: &str = r#"
meta: {author: test}
rule_id: 1
tests:
  - test_id: 1
    stages:
      - input: {uri: /attack, headers: {Host: localhost}}
        output: {status: 200, log: {expect_ids: [1]}}
  - test_id: 2
    stages:
      - input: {uri: /benign}
        output: {log: {expect_ids: [1]}}
  - test_id: 3
    stages:
      - input: {uri: /benign}
        output: {log: {no_expect_ids: [1, 999999]}}
  - test_id: 4
    stages:
      - input: {uri: /attack}
        output: {log: {no_expect_ids: [1]}}
  - test_id: 5
    stages:
      - input: {uri: /attack}
        output: {status: [403, 400]}
  - test_id: 6
    stages:
      - input: {uri: /drop}
        output: {expect_error: true}
  - test_id: 7
    stages:
      - input: {uri: /attack, method: POST, data: "a=b"}
        output: {log: {match_regex: 'msg "attack"', no_match_regex: '999999'}}
      - input: {uri: /benign}
        output: {log: {match_regex: 'attack'}}
  - test_id: 8
    stages:
      - input: {uri: /benign}
        output: {log: {expect_ids: [1]}}
  - test_id: 9
    stages:
      - input: {uri: /benign}
        output: {log: {expect_ids: [1]}}
  - test_id: 10
    stages:
      - input: {uri: /benign}
        output: {expect_error: true}
  - test_id: 11
    stages:
      - input: {uri: /drop}
        output: {status: 200}
"#;

    const OVERRIDES: &str = r#"
version: "v0.0.0"
meta: {engine: fake, platform: test, annotations: [{purpose: test}]}
test_overrides:
  - rule_id: 1
    test_ids: [8]
    reason: 'not for this engine'
  - rule_id: 1
    test_ids: [9]
    reason: 'engine differs'
    output:
      log: {no_expect_ids: [1]}
"#;

    fn quick() -> RunConfig {
        RunConfig {
            client: ClientConfig {
                response_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_millis(500),
                ..ClientConfig::default()
            },
            ..RunConfig::default()
        }
    }

    #[tokio::test]
    async fn judges_both_ways_against_a_fake_waf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tests_dir = dir.path().join("tests/REQUEST-000-FAKE");
        std::fs::create_dir_all(&tests_dir).expect("mkdir");
        std::fs::write(tests_dir.join("1.yaml"), TESTS).expect("write tests");
        let overrides = dir.path().join("fake-overrides.yaml");
        std::fs::write(&overrides, OVERRIDES).expect("write overrides");
        let log_path = dir.path().join("error.log");
        std::fs::write(&log_path, "[id \"5\"] an old line before the run\n").expect("log");
        let target = Target {
            addr: fake_waf(log_path.clone()).await,
            log_path,
        };

        let report = run_suite_with(
            &dir.path().join("tests"),
            Some(&overrides),
            &target,
            None,
            &quick(),
        )
        .await
        .expect("runs");
        let by_name = |t: u32, s: usize| {
            report
                .results
                .iter()
                .find(|r| r.test_id == t && r.stage == s)
                .unwrap_or_else(|| panic!("result for 1-{t} stage {s}"))
        };
        assert_eq!(report.results.len(), 12);
        assert!(by_name(1, 0).passed(), "{:?}", by_name(1, 0));
        assert_eq!(
            by_name(1, 0).logged_ids,
            vec![1],
            "marker lines do not count"
        );
        assert_eq!(by_name(2, 0).reasons(), ["expected id 1 not logged"]);
        assert!(by_name(3, 0).passed(), "{:?}", by_name(3, 0));
        assert_eq!(by_name(4, 0).reasons(), ["unexpected id 1 logged"]);
        assert_eq!(by_name(5, 0).reasons(), ["status 200 not in [403, 400]"]);
        assert!(by_name(6, 0).passed(), "{:?}", by_name(6, 0));
        assert!(by_name(7, 0).passed(), "{:?}", by_name(7, 0));
        assert_eq!(by_name(7, 1).reasons(), ["log does not match \"attack\""]);
        assert!(by_name(8, 0).excused());
        assert!(by_name(9, 0).passed() && by_name(9, 0).overridden);
        assert_eq!(
            by_name(10, 0).reasons(),
            ["expected an error, got status 200"]
        );
        let r11 = by_name(11, 0).reasons().join(" ");
        assert!(
            r11.starts_with("request failed: connection closed"),
            "{r11}"
        );
        assert_eq!(
            (report.passed(), report.failed(), report.excused()),
            (5, 6, 1)
        );
        let text = report.to_string();
        assert!(text.ends_with("1 excused\n5 passed, 6 failed\n"), "{text}");
        assert!(text.contains("FAIL 1-2 stage 0 (REQUEST-000-FAKE): expected id 1 not logged"));
        assert!(report
            .markdown_table()
            .contains("| REQUEST-000-FAKE | 5 | 6 | 1 | 45.5% |"));

        // A filter runs only the matching tests.
        let only = regex::Regex::new("^1-(1|4)$").expect("regex");
        let report = run_suite_with(
            &dir.path().join("tests"),
            None,
            &target,
            Some(&only),
            &quick(),
        )
        .await
        .expect("runs");
        assert_eq!(report.results.len(), 2);
        assert_eq!((report.passed(), report.failed()), (1, 1));
    }

    #[tokio::test]
    async fn a_silent_log_fails_with_a_marker_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tests_dir = dir.path().join("tests/REQUEST-000-FAKE");
        std::fs::create_dir_all(&tests_dir).expect("mkdir");
        std::fs::write(tests_dir.join("1.yaml"), TESTS).expect("write tests");
        let target = Target {
            addr: fake_waf(dir.path().join("real.log")).await,
            log_path: dir.path().join("wrong.log"),
        };
        let cfg = RunConfig {
            marker_timeout: Duration::from_millis(150),
            ..quick()
        };
        let only = regex::Regex::new("^1-1$").expect("regex");
        let report = run_suite_with(&dir.path().join("tests"), None, &target, Some(&only), &cfg)
            .await
            .expect("runs");
        assert_eq!(report.failed(), 1);
        let reason = report.results[0].reasons().join(" ");
        assert!(
            reason.starts_with("start marker: no log line with"),
            "{reason}"
        );
    }

    /// The CRS regression suite against a WAF that is already running (not run by
    /// default). `FTW_TARGET=127.0.0.1:8080 FTW_LOG=/path/waf.log cargo test -p gatehouse
    /// --lib ftw::runner::tests::crs_suite_against_a_running_waf -- --ignored --nocapture`;
    /// optional: `FTW_BACKEND=127.0.0.1:PORT` (serve the albedo-like backend there for
    /// the WAF to proxy to), `FTW_OVERRIDES=<file>`, `FTW_FILTER=<regex on rule-test>`,
    /// `FTW_TESTS=<dir>` (default: the shared CRS tests), `FTW_MARKDOWN=<file>` (write
    /// the pass-rate table), `FTW_VERBOSE=1`.
    #[tokio::test]
    #[ignore = "needs a running WAF: set FTW_TARGET and FTW_LOG"]
    async fn crs_suite_against_a_running_waf() {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let target = Target {
            addr: var("FTW_TARGET")
                .expect("FTW_TARGET=host:port")
                .parse()
                .expect("FTW_TARGET is an address"),
            log_path: PathBuf::from(var("FTW_LOG").expect("FTW_LOG=path of the WAF log")),
        };
        let _backend = match var("FTW_BACKEND") {
            Some(a) => Some(
                crate::ftw::backend::start_backend_at(a.parse().expect("FTW_BACKEND address"))
                    .await
                    .expect("backend starts"),
            ),
            None => None,
        };
        let tests = var("FTW_TESTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::ftw::spec::regression_dir().join("tests"));
        let overrides = var("FTW_OVERRIDES").map(PathBuf::from);
        let filter = var("FTW_FILTER").map(|f| regex::Regex::new(&f).expect("FTW_FILTER regex"));
        let cfg = RunConfig {
            verbose: var("FTW_VERBOSE").is_some(),
            ..RunConfig::default()
        };
        let started = std::time::Instant::now();
        let report = run_suite_with(&tests, overrides.as_deref(), &target, filter.as_ref(), &cfg)
            .await
            .expect("suite loads");
        println!("{}", report.markdown_table());
        print!("{report}");
        eprintln!("ran in {:?}", started.elapsed());
        if let Some(path) = var("FTW_MARKDOWN") {
            std::fs::write(path, report.markdown_table()).expect("markdown written");
        }
    }

    #[test]
    fn marker_ids_are_unique_hex() {
        let a = random_hex();
        let b = random_hex();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
