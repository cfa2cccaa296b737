//! The go-ftw test file format (ftw-tests-schema v2, as the CRS regression tests use it)
//! and the engine overrides file format, as serde types parsed with `serde-saphyr`, plus
//! loading a directory of test files recursively in sorted order.
//!
//! Unknown keys are rejected (the schema says `additionalProperties: false`), so a test
//! file that uses a feature this harness does not implement fails loudly, naming the
//! file, instead of being run wrongly.

use anyhow::Context;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One test file: the tests of one rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    #[serde(default)]
    pub meta: Meta,
    /// The rule the tests target; 0 when absent (the loader then takes it from the file
    /// name, as go-ftw does).
    #[serde(default)]
    pub rule_id: u32,
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// The `meta` block of a test file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Deprecated in the schema and ignored by go-ftw; kept for information.
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One test: a numbered sequence of stages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// 0 when absent (the loader then numbers it by position, from 1, as go-ftw does).
    #[serde(default)]
    pub test_id: u32,
    /// Deprecated title; not used for matching.
    #[serde(default)]
    pub test_title: Option<String>,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// One request and what must follow from it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input: Input,
    #[serde(default)]
    pub output: Output,
}

/// The request of a stage. `dest_addr`, `port` and `protocol` are parsed but the runner
/// always sends to its target (plain HTTP).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default)]
    pub dest_addr: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// In file order; values that YAML reads as numbers or booleans keep their text.
    #[serde(default)]
    pub headers: Headers,
    /// The body, as text (sent as its UTF-8 bytes).
    #[serde(default)]
    pub data: Option<String>,
    /// The body, base64 (used when `data` is absent).
    #[serde(default)]
    pub encoded_data: Option<String>,
    /// The whole request, base64: sent byte for byte and nothing else.
    #[serde(default)]
    pub encoded_request: Option<String>,
    /// Deprecated: the whole request as literal text.
    #[serde(default)]
    pub raw_request: Option<String>,
    #[serde(default)]
    pub autocomplete_headers: Option<bool>,
    /// Deprecated inverse of `autocomplete_headers`.
    #[serde(default)]
    pub stop_magic: Option<bool>,
    /// Parsed and ignored (no cookie jar).
    #[serde(default)]
    pub save_cookie: Option<bool>,
}

impl Input {
    /// The method, `GET` by default.
    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("GET")
    }

    /// The request target, `/` by default.
    pub fn uri(&self) -> &str {
        self.uri.as_deref().unwrap_or("/")
    }

    /// The protocol version of the request line, `HTTP/1.1` by default.
    pub fn version(&self) -> &str {
        self.version.as_deref().unwrap_or("HTTP/1.1")
    }

    /// Whether the harness adds `Content-Type`, `Connection` and `Content-Length`:
    /// `autocomplete_headers`, else the inverse of `stop_magic`, else true.
    pub fn autocomplete(&self) -> bool {
        match (self.autocomplete_headers, self.stop_magic) {
            (Some(v), _) => v,
            (None, Some(stop)) => !stop,
            (None, None) => true,
        }
    }
}

/// Request headers in the order the file lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeadersVisitor;
        impl<'de> Visitor<'de> for HeadersVisitor {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of header names to scalar values")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Headers, E> {
                Ok(Headers::default())
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Headers, E> {
                Ok(Headers::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut out = Vec::new();
                // A header with no value (`Name:`) is YAML null: an empty value.
                while let Some((k, v)) = map.next_entry::<String, Option<String>>()? {
                    out.push((k, v.unwrap_or_default()));
                }
                Ok(Headers(out))
            }
        }
        deserializer.deserialize_map(HeadersVisitor)
    }
}

/// The expected outcome of a stage, as written (older singular forms included). Use
/// [`Output::expectations`] for the normalised form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// One status or a list of acceptable ones (older test files use a list).
    #[serde(default)]
    pub status: Option<OneOrMany<u16>>,
    #[serde(default)]
    pub response_contains: Option<String>,
    /// Deprecated: a regular expression the stage's log must match.
    #[serde(default)]
    pub log_contains: Option<String>,
    /// Deprecated: a regular expression the stage's log must not match.
    #[serde(default)]
    pub no_log_contains: Option<String>,
    #[serde(default)]
    pub log: Option<LogSpec>,
    /// Older singular form of `log.expect_ids`.
    #[serde(default)]
    pub expect_id: Option<OneOrMany<u32>>,
    /// Older singular form of `log.no_expect_ids`.
    #[serde(default)]
    pub no_expect_id: Option<OneOrMany<u32>>,
    #[serde(default)]
    pub expect_error: Option<bool>,
    #[serde(default)]
    pub retry_once: Option<bool>,
    #[serde(default)]
    pub isolated: Option<bool>,
}

/// The `log` block of an output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    #[serde(default)]
    pub expect_ids: Option<OneOrMany<u32>>,
    #[serde(default)]
    pub no_expect_ids: Option<OneOrMany<u32>>,
    /// Older singular form.
    #[serde(default)]
    pub expect_id: Option<OneOrMany<u32>>,
    /// Older singular form.
    #[serde(default)]
    pub no_expect_id: Option<OneOrMany<u32>>,
    #[serde(default)]
    pub match_regex: Option<String>,
    #[serde(default)]
    pub no_match_regex: Option<String>,
}

/// A scalar or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// What a stage must show, normalised from [`Output`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Acceptable response statuses; empty means any.
    pub status: Vec<u16>,
    pub expect_ids: Vec<u32>,
    pub no_expect_ids: Vec<u32>,
    pub match_regex: Option<String>,
    pub no_match_regex: Option<String>,
    pub response_contains: Option<String>,
    pub expect_error: bool,
    pub retry_once: bool,
    pub isolated: bool,
}

impl Output {
    /// The normalised expectations. As in go-ftw, a status of 0 means "any", and the
    /// deprecated `log_contains` / `no_log_contains` count as `match_regex` /
    /// `no_match_regex` only where the log block sets neither ids nor a regex of its
    /// own kind. The singular `expect_id` / `no_expect_id` forms add to the lists.
    pub fn expectations(&self) -> Expectations {
        let log = self.log.clone().unwrap_or_default();
        let mut expect_ids: Vec<u32> = Vec::new();
        let mut no_expect_ids: Vec<u32> = Vec::new();
        let mut any_expect = false;
        let mut any_no_expect = false;
        for ids in [&log.expect_ids, &log.expect_id, &self.expect_id]
            .into_iter()
            .flatten()
        {
            any_expect = true;
            expect_ids.extend(ids.to_vec());
        }
        for ids in [&log.no_expect_ids, &log.no_expect_id, &self.no_expect_id]
            .into_iter()
            .flatten()
        {
            any_no_expect = true;
            no_expect_ids.extend(ids.to_vec());
        }
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let mut match_regex = nonempty(&log.match_regex);
        if match_regex.is_none() && !any_expect {
            match_regex = nonempty(&self.log_contains);
        }
        let mut no_match_regex = nonempty(&log.no_match_regex);
        if no_match_regex.is_none() && !any_no_expect {
            no_match_regex = nonempty(&self.no_log_contains);
        }
        Expectations {
            status: self
                .status
                .as_ref()
                .map(|s| s.to_vec())
                .unwrap_or_default()
                .into_iter()
                .filter(|s| *s != 0)
                .collect(),
            expect_ids,
            no_expect_ids,
            match_regex,
            no_match_regex,
            response_contains: nonempty(&self.response_contains),
            expect_error: self.expect_error.unwrap_or(false),
            retry_once: self.retry_once.unwrap_or(false),
            isolated: self.isolated.unwrap_or(false),
        }
    }
}

/// A test file as loaded from disk, with defaults resolved (rule id from the file name,
/// test ids by position).
#[derive(Debug, Clone)]
pub struct LoadedTestFile {
    pub path: PathBuf,
    /// The name of the directory holding the file (the rule file, e.g.
    /// `REQUEST-942-APPLICATION-ATTACK-SQLI`).
    pub rule_file: String,
    pub file: TestFile,
}

impl LoadedTestFile {
    /// The number of stages in the file.
    pub fn stage_count(&self) -> usize {
        self.file.tests.iter().map(|t| t.stages.len()).sum()
    }
}

/// Parses one test file's text. `Ok(None)` for a file with no YAML document (the CRS
/// suite has a fully commented-out one). `name` is used for the rule id fallback.
pub fn parse_test_file(text: &str, name: &str) -> anyhow::Result<Option<TestFile>> {
    let parsed: Option<TestFile> =
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Some(mut file) = parsed else {
        return Ok(None);
    };
    if file.rule_id == 0 {
        let digits: String = name
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        file.rule_id = digits.parse().map_err(|_| {
            anyhow::anyhow!("no rule_id, and the file name holds no rule id to fall back on")
        })?;
    }
    for (i, test) in file.tests.iter_mut().enumerate() {
        if test.test_id == 0 {
            test.test_id = u32::try_from(i + 1).unwrap_or(u32::MAX);
        }
    }
    Ok(Some(file))
}

/// Loads one test file. `Ok(None)` for a file without a YAML document.
pub fn load_file(path: &Path) -> anyhow::Result<Option<LoadedTestFile>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading test file {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = parse_test_file(&text, &name)
        .with_context(|| format!("parsing test file {}", path.display()))?;
    let rule_file = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(file.map(|file| LoadedTestFile {
        path: path.to_path_buf(),
        rule_file,
        file,
    }))
}

/// Loads every `*.yaml` / `*.yml` file under `dir`, recursively, sorted by path. Files
/// without a YAML document are skipped; any other error names the file.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<LoadedTestFile>> {
    let mut paths = Vec::new();
    collect_yaml(dir, &mut paths)?;
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        if let Some(file) = load_file(&path)? {
            out.push(file);
        }
    }
    Ok(out)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading test directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading test directory {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("inspecting {}", path.display()))?;
        if kind.is_dir() {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// An engine's overrides file (`*-overrides.yaml`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesFile {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub meta: OverridesMeta,
    #[serde(default)]
    pub test_overrides: Vec<TestOverride>,
}

/// The `meta` block of an overrides file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesMeta {
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub annotations: Option<Annotations>,
}

/// Free-form annotations: a map (as the schema says) or a list of maps (as the CRS
/// files write them).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Annotations {
    Map(BTreeMap<String, String>),
    List(Vec<BTreeMap<String, String>>),
}

/// One override: replaces the expected output of some tests of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestOverride {
    pub rule_id: u32,
    /// The tests it applies to; empty means every test of the rule.
    #[serde(default)]
    pub test_ids: Vec<u32>,
    /// The stages (0-based, as go-ftw counts them) it applies to; empty means all.
    #[serde(default)]
    pub stage_ids: Vec<u32>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub retry_once: Option<bool>,
    /// The replacement output. Without one, the test is excused (not run).
    #[serde(default)]
    pub output: Option<Output>,
}

impl TestOverride {
    /// Whether this override covers the given stage.
    pub fn applies_to(&self, rule_id: u32, test_id: u32, stage: usize) -> bool {
        self.rule_id == rule_id
            && (self.test_ids.is_empty() || self.test_ids.contains(&test_id))
            && (self.stage_ids.is_empty()
                || self
                    .stage_ids
                    .iter()
                    .any(|s| usize::try_from(*s).ok() == Some(stage)))
    }
}

impl OverridesFile {
    /// The override for a stage: the last one in the file that covers it.
    pub fn find(&self, rule_id: u32, test_id: u32, stage: usize) -> Option<&TestOverride> {
        self.test_overrides
            .iter()
            .rev()
            .find(|o| o.applies_to(rule_id, test_id, stage))
    }
}

/// Parses an overrides file's text.
pub fn parse_overrides(text: &str) -> anyhow::Result<OverridesFile> {
    let parsed: Option<OverridesFile> =
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(parsed.unwrap_or_default())
}

/// Loads an overrides file, naming it in any error.
pub fn load_overrides(path: &Path) -> anyhow::Result<OverridesFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading overrides file {}", path.display()))?;
    parse_overrides(&text).with_context(|| format!("parsing overrides file {}", path.display()))
}

/// The CRS regression test directory of the shared data, beside the repository.
#[cfg(test)]
pub(crate) fn regression_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/crs/tests/regression")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_crs_test_file() {
        let dir = regression_dir().join("tests");
        let files = load_dir(&dir).expect("every CRS test file parses");
        let stages: usize = files.iter().map(|f| f.stage_count()).sum();
        let tests: usize = files.iter().map(|f| f.file.tests.len()).sum();
        eprintln!("{} files, {tests} tests, {stages} stages", files.len());
        assert_eq!(files.len(), 244, "245 files, one of them only comments");
        assert_eq!(tests, 3820);
        assert_eq!(stages, 3820);
        // Sorted by path, rule file named after the directory, rule ids set.
        assert!(files.windows(2).all(|w| w[0].path < w[1].path));
        let mut misnamed = Vec::new();
        for f in &files {
            assert!(f.rule_file.starts_with("REQUEST-") || f.rule_file.starts_with("RESPONSE-"));
            assert!(f.file.rule_id > 0);
            let stem = f.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem != f.file.rule_id.to_string() {
                misnamed.push((stem.to_string(), f.file.rule_id));
            }
            for t in &f.file.tests {
                assert!(t.test_id > 0);
            }
        }
        // Upstream typo: 933200.yaml says `rule_id: 9331200` (its tests expect 933200).
        assert_eq!(misnamed, vec![("933200".to_string(), 9331200)]);
        // Spot checks: numeric header values keep their text, encoded requests survive.
        let f920181 = files
            .iter()
            .find(|f| f.file.rule_id == 920181)
            .expect("920181 present");
        let h = &f920181.file.tests[0].stages[0].input.headers;
        assert!(h.iter().any(|(k, v)| k == "Content-Length" && v == "7"));
        let encoded = files
            .iter()
            .flat_map(|f| f.file.tests.iter())
            .flat_map(|t| t.stages.iter())
            .filter(|s| s.input.encoded_request.is_some())
            .count();
        assert_eq!(encoded, 2);
        let expect_error = files
            .iter()
            .flat_map(|f| f.file.tests.iter())
            .flat_map(|t| t.stages.iter())
            .filter(|s| s.output.expectations().expect_error)
            .count();
        assert_eq!(expect_error, 1);
    }

    #[test]
    fn header_order_is_kept() {
        let f = parse_test_file(
            "rule_id: 1\ntests:\n  - test_id: 1\n    stages:\n      - input:\n          headers:\n            Zed: a\n            Alpha: 010\n            Empty:\n            Mid: true\n        output:\n          status: [200, 403]\n",
            "1.yaml",
        )
        .expect("parses")
        .expect("has a document");
        let stage = &f.tests[0].stages[0];
        assert_eq!(
            stage.input.headers.0,
            vec![
                ("Zed".to_string(), "a".to_string()),
                ("Alpha".to_string(), "010".to_string()),
                ("Empty".to_string(), String::new()),
                ("Mid".to_string(), "true".to_string()),
            ]
        );
        assert_eq!(stage.output.expectations().status, vec![200, 403]);
    }

    #[test]
    fn old_forms_and_defaults() {
        let f = parse_test_file(
            "meta: {author: x}\ntests:\n  - stages:\n      - input: {stop_magic: true}\n        output:\n          status: 403\n          log_contains: 'id \"942100\"'\n          no_expect_id: 1\n          log: {expect_id: 7}\n  - stages:\n      - input: {}\n        output:\n          log_contains: abc\n          no_log_contains: def\n",
            "942100.yaml",
        )
        .expect("parses")
        .expect("has a document");
        assert_eq!(f.rule_id, 942100, "rule id from the file name");
        assert_eq!(f.tests[0].test_id, 1);
        assert_eq!(f.tests[1].test_id, 2);
        assert!(!f.tests[0].stages[0].input.autocomplete());
        assert!(f.tests[1].stages[0].input.autocomplete());
        let e = f.tests[0].stages[0].output.expectations();
        assert_eq!(e.status, vec![403]);
        assert_eq!(e.expect_ids, vec![7]);
        assert_eq!(e.no_expect_ids, vec![1]);
        // go-ftw: log_contains is ignored when ids are expected.
        assert_eq!(e.match_regex, None);
        let e = f.tests[1].stages[0].output.expectations();
        assert_eq!(e.match_regex.as_deref(), Some("abc"));
        assert_eq!(e.no_match_regex.as_deref(), Some("def"));
    }

    #[test]
    fn unknown_keys_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("REQUEST-1-X");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("1.yaml"), "rule_id: 1\ntests: []\n").expect("write");
        std::fs::write(sub.join("2.yaml"), "# nothing\n").expect("write");
        std::fs::write(
            sub.join("3.yaml"),
            "rule_id: 3\ntests:\n  - test_id: 1\n    stages:\n      - input: {uris: [/a]}\n        output: {}\n",
        )
        .expect("write");
        let err = load_dir(dir.path()).expect_err("unknown key is an error");
        let text = format!("{err:#}");
        assert!(text.contains("3.yaml"), "{text}");
        assert!(text.contains("uris"), "{text}");
        std::fs::remove_file(sub.join("3.yaml")).expect("rm");
        let files = load_dir(dir.path()).expect("loads");
        assert_eq!(files.len(), 1, "the comment-only file is skipped");
        assert_eq!(files[0].rule_file, "REQUEST-1-X");
    }

    #[test]
    fn parses_the_three_overrides_files() {
        for (name, count) in [("coraza", 9), ("httpd", 2), ("nginx", 24)] {
            let path = regression_dir().join(format!("{name}-overrides.yaml"));
            let o = load_overrides(&path).expect("overrides parse");
            assert_eq!(o.test_overrides.len(), count, "{name}");
            assert!(o.meta.engine.is_some());
            assert!(o.test_overrides.iter().all(|t| t.rule_id > 0));
        }
        let coraza =
            load_overrides(&regression_dir().join("coraza-overrides.yaml")).expect("coraza parses");
        let o = coraza.find(920100, 8, 0).expect("920100-8 overridden");
        let e = o.output.as_ref().expect("has output").expectations();
        assert_eq!(e.status, vec![200]);
        assert_eq!(e.expect_ids, vec![920100]);
        let wip = coraza.find(932200, 13, 0).expect("932200-13 overridden");
        assert!(wip.output.is_none(), "no output: excused");
        assert!(coraza.find(934131, 7, 0).is_some());
        assert!(coraza.find(934131, 6, 0).is_none());
        assert!(coraza.find(920100, 1, 0).is_none());
    }
}
