//! `gatehouse waf test DIR`: the OWASP CRS regression tests (go-ftw YAML) run against an
//! in-process Gatehouse set up as CRS's own CI sets up its engines: DetectionOnly,
//! every paranoia level's rules active (`tx.blocking_paranoia_level=4`), the CI's
//! argument and file limits, response inspection on, and a marker rule that logs the
//! `X-CRS-Test` header. Requests reach the proxy over loopback, byte for byte; the
//! albedo-like backend answers behind it; verdicts are read from the WAF's error log.

use crate::app::{self, RunOptions};
use crate::ftw::{self, Report, RunConfig, Target};
use anyhow::Context;
use gatehouse_proxy::ProxyConfig;
use gatehouse_translate::waf::WafBase;
use gatehouse_translate::TranslateOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to run.
pub struct SuiteOptions {
    /// The test files (`.../tests/regression/tests`).
    pub tests: PathBuf,
    /// Our overrides: cases excused, with the reason.
    pub overrides: Option<PathBuf>,
    /// The CRS directory the WAF loads.
    pub rules: PathBuf,
    /// Only tests whose `<rule_id>-<test_id>` match.
    pub filter: Option<regex::Regex>,
    pub verbose: bool,
}

/// The engine settings of CRS's CI (its rule 900005), and the marker rule, as a
/// policy's inline rules. The marker request itself runs no other rule.
const CI_RULES: &str = r#"SecAction "id:10005,phase:1,nolog,pass,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535"
SecRule REQUEST_HEADERS:X-CRS-Test "@rx ^.*$" "id:10006,phase:1,pass,t:none,log,msg:'X-CRS-Test %{MATCHED_VAR}',ctl:ruleRemoveById=1-10005,ctl:ruleRemoveById=10007-999999"
"#;

fn manifests(backend: SocketAddr) -> String {
    let rules: String = CI_RULES.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gatehouse
  annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {{controller: gatehouse.dev/ingress-controller}}
---
apiVersion: v1
kind: Service
metadata: {{name: albedo, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: albedo-1
  namespace: default
  labels: {{kubernetes.io/service-name: albedo}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: crs, namespace: default}}
spec:
  defaultBackend:
    service: {{name: albedo, port: {{number: 80}}}}
---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: crs-ci, namespace: default}}
spec:
  targetRefs: [{{group: networking.k8s.io, kind: Ingress, name: crs}}]
  waf:
    mode: DetectionOnly
    paranoiaLevel: 4
    inspectResponses: true
    requestBodyLimit: 13107200
    rules: |
{rules}"#,
        port = backend.port(),
        ip = backend.ip(),
    )
}

/// A free loopback port (bound, then released).
fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Runs the suite; the report holds every stage's verdict.
pub async fn run(opts: &SuiteOptions) -> anyhow::Result<Report> {
    let base = WafBase::load(&opts.rules).map_err(anyhow::Error::msg)?;
    let (backend, backend_task) = ftw::start_backend().await?;
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-waf-test-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(opts, base, backend, &dir).await;
    backend_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

async fn run_in(
    opts: &SuiteOptions,
    base: WafBase,
    backend: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Report> {
    let config = dir.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("crs.yaml"), manifests(backend))?;
    let log = dir.join("waf.log");
    std::fs::write(&log, "")?;
    let http = free_addr()?;
    let running = app::start(RunOptions {
        config_dir: config,
        translate: TranslateOptions {
            http_addr: http,
            https_addr: free_addr()?,
            gateway_host: "127.0.0.1".parse()?,
            waf: Some(Arc::new(base)),
            ..TranslateOptions::default()
        },
        proxy: ProxyConfig {
            waf_log: Some(log.clone()),
            drain_timeout: std::time::Duration::from_secs(1),
            ..ProxyConfig::default()
        },
        admin_addr: "127.0.0.1:0".parse()?,
        watch: false,
        demo_backends: false,
        distributor: None,
    })
    .await?;
    let target = Target {
        addr: http,
        log_path: log,
    };
    let cfg = RunConfig {
        verbose: opts.verbose,
        ..RunConfig::default()
    };
    let report = ftw::run_suite_with(
        &opts.tests,
        opts.overrides.as_deref(),
        &target,
        opts.filter.as_ref(),
        &cfg,
    )
    .await;
    running.shutdown().await;
    report
}
