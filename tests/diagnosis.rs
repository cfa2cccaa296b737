//! Every answer says why: an in-process gatehouse with the access log and debug headers
//! on, asked over HTTP/1.1 (the fast path) and HTTP/2 (prior knowledge). An answer from
//! the upstream, one for a host no route takes, one for a Service whose endpoint
//! refuses connections, and one the WAF blocks (with the rule that decided) each carry
//! their reason in the access log (a JSON line each), in `x-gatehouse-reason`, and in
//! the per-route reason counters on `/metrics`.

mod support;
use gatehouse_proxy::config::ProxyConfig;
use std::time::{Duration, Instant};
use support::*;

/// The access log's lines, once there are `n` of them.
async fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= n || start.elapsed() > Duration::from_secs(5) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_says_why() {
    let logs = tempfile::tempdir().expect("tmp");
    let log = logs.path().join("access.log");
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(2),
        access_log: Some(log.clone()),
        debug_headers: true,
        ..ProxyConfig::default()
    };
    let ok = echo("ok").await;
    // Nothing listens here: connections are refused.
    let dead = free_addr();
    let services = service("default", "ok", ok, None) + &service("default", "dead", dead, None);
    let ingresses = ingress("ok.example", "ok") + &ingress("dead.example", "dead");
    let p = start_proxy_guarded(&services, &ingresses, "ok", cfg).await;
    let c = client();

    let up = get(&c, p.http, "ok.example", "/hello").await;
    assert_eq!((up.status, up.service()), (200, "ok".to_string()));
    assert_eq!(
        up.header("x-gatehouse-reason"),
        None,
        "the upstream's answer"
    );
    let lost = get(&c, p.http, "nowhere.example", "/x").await;
    assert_eq!(lost.status, 404);
    assert_eq!(
        lost.header("x-gatehouse-reason").as_deref(),
        Some("no_route")
    );
    let refused = get(&c, p.http, "dead.example", "/x").await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.header("x-gatehouse-reason").as_deref(),
        Some("upstream_connect_failed")
    );
    let sqli = "/search?id=1%27%20OR%20%271%27%3D%271";
    let blocked = get(&c, p.http, "guarded.example", sqli).await;
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    assert_eq!(
        blocked.header("x-gatehouse-reason").as_deref(),
        Some("waf; rule=949110"),
        "the anomaly score rule decided"
    );
    let h2 = h2c_get(p.http, "nowhere.example", "/over-h2").await;
    assert_eq!((h2.status, h2.version), (404, http::Version::HTTP_2));
    assert_eq!(h2.header("x-gatehouse-reason").as_deref(), Some("no_route"));

    // A request is logged and counted once its answer has gone out (and, behind a WAF,
    // once its verdicts are logged), so lines may come in another order than the
    // requests were sent.
    let got = lines(&log, 5).await;
    let mut summary: Vec<(u64, &str, &str, &str)> = got
        .iter()
        .map(|l| {
            (
                l["status"].as_u64().unwrap_or(0),
                l["reason"].as_str().unwrap_or(""),
                l["path"].as_str().unwrap_or(""),
                l["protocol"].as_str().unwrap_or(""),
            )
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [
            (200, "upstream", "/hello", "HTTP/1.1"),
            (403, "waf", "/search", "HTTP/1.1"),
            (404, "no_route", "/over-h2", "HTTP/2"),
            (404, "no_route", "/x", "HTTP/1.1"),
            (503, "upstream_connect_failed", "/x", "HTTP/1.1"),
        ]
    );
    let line = |reason: &str| {
        got.iter()
            .find(|l| l["reason"] == reason)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(line("waf")["waf_rule"], 949110);
    let first = &line("upstream");
    assert_eq!(first["host"], "ok.example");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["client"], "127.0.0.1");
    assert!(
        first["route"].as_str().is_some_and(|r| r.contains("ok")),
        "{first}"
    );
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    assert_eq!(
        first["request_id"].as_str(),
        up.header("x-request-id").as_deref(),
        "the line names the request as the response does"
    );

    let metrics = get(&c, p.admin, "admin", "/metrics").await.body;
    let count = |metrics: &str, reason: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("gatehouse_http_responses_by_reason_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count(&metrics, "no_route"), 2, "{metrics}");
    assert_eq!(count(&metrics, "upstream_connect_failed"), 1, "{metrics}");
    assert_eq!(count(&metrics, "waf"), 1, "{metrics}");
    // Response bytes by route: the echo's answers over HTTP/1.1 (the fast path) and
    // HTTP/2 (the hyper path), and the proxy's own 404s.
    for route in ["ingress/default/ok", "none"] {
        let sent = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "gatehouse_http_response_bytes_total{{route=\"{route}\"}} "
                ))
            })
            .and_then(|v| v.parse::<u64>().ok());
        assert!(sent.is_some_and(|n| n > 20), "{route}: {metrics}");
    }
    assert_eq!(
        count(&metrics, "upstream"),
        0,
        "the upstream's answers are not counted by reason"
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn ctl(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("ctl")
        .args(args)
        .output()
        .expect("ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `gatehouse ctl explain`, `tap` and `top` against a running proxy's admin listener:
/// explain names the route, cluster, endpoint and reason of a request by its id (over
/// HTTP/1.1 and HTTP/2); tap streams only the requests its filter asks for, live;
/// top gives each route's rate, success rate and the proxy's own answers by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_tap_and_top() {
    let ok = echo("ok").await;
    let dead = free_addr();
    let services = service("default", "ok", ok, None) + &service("default", "dead", dead, None);
    let ingresses = ingress("ok.example", "ok") + &ingress("dead.example", "dead");
    let (p, _) = start_proxy(
        &[
            ("classes.yaml", CLASSES),
            ("services.yaml", &services),
            ("ingresses.yaml", &ingresses),
        ],
        &[],
    )
    .await;
    let admin = p.admin.to_string();
    let c = client();

    // Explain: a request that went upstream and one whose upstream refused, by id.
    let fine = get(&c, p.http, "ok.example", "/fine?x=1").await;
    let id = fine.header("x-request-id").expect("id");
    let text = ctl(&["explain", &id, "--admin", &admin]);
    assert!(text.contains("route    ingress/default/ok"), "{text}");
    assert!(text.contains(&format!("endpoint {ok}")), "{text}");
    assert!(
        text.contains("GET ok.example /fine?x=1 (HTTP/1.1)"),
        "{text}"
    );
    assert!(text.contains("200 upstream"), "{text}");
    let refused = get(&c, p.http, "dead.example", "/down").await;
    let id = refused.header("x-request-id").expect("id");
    let v: serde_json::Value =
        serde_json::from_str(&ctl(&["explain", &id, "--admin", &admin, "--json"])).expect("json");
    assert_eq!(v["reason"], "upstream_connect_failed");
    assert_eq!(v["endpoint"], dead.to_string());
    assert_eq!(v["service"], "default/dead");
    assert!(
        v["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("no connection to the upstream could be made")),
        "{v}"
    );
    let h2 = h2c_get(p.http, "ok.example", "/over-h2").await;
    let id = h2.header("x-request-id").expect("id");
    let v: serde_json::Value =
        serde_json::from_str(&ctl(&["explain", &id, "--admin", &admin, "--json"])).expect("json");
    assert_eq!(
        (v["protocol"].as_str(), v["endpoint"].as_str()),
        (Some("HTTP/2"), Some(ok.to_string().as_str()))
    );
    let unknown = std::process::Command::new(BIN)
        .args(["ctl", "explain", "no-such-request", "--admin", &admin])
        .output()
        .expect("ctl");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no request no-such-request"));

    // Tap: only the 5xx, live, until two came.
    let tap = std::process::Command::new(BIN)
        .args([
            "ctl", "tap", "--admin", &admin, "--status", "5", "--max", "2", "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tap");
    let deadline = Instant::now() + Duration::from_secs(20);
    let tapped = tokio::task::spawn_blocking(move || tap.wait_with_output());
    tokio::pin!(tapped);
    let out = loop {
        tokio::select! {
            out = &mut tapped => break out.expect("join").expect("tap output"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                assert!(Instant::now() < deadline, "the tap saw nothing");
                get(&c, p.http, "ok.example", "/not-tapped").await;
                get(&c, p.http, "dead.example", "/tapped").await;
            }
        }
    };
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(
            (l["status"].as_u64(), l["target"].as_str()),
            (Some(503), Some("/tapped"))
        );
        assert_eq!(l["route"], "ingress/default/dead");
    }

    // Top: rates, success and reasons per route over one interval of load.
    let top = std::process::Command::new(BIN)
        .args([
            "ctl",
            "top",
            "--admin",
            &admin,
            "--interval",
            "1s",
            "--iterations",
            "1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("top");
    // Load until top has taken both its samples, however long it takes to start.
    let done = tokio::task::spawn_blocking(move || top.wait_with_output());
    tokio::pin!(done);
    let out = loop {
        tokio::select! {
            out = &mut done => break out.expect("join").expect("top output"),
            _ = async {
                get(&c, p.http, "ok.example", "/").await;
                get(&c, p.http, "ok.example", "/").await;
                get(&c, p.http, "dead.example", "/").await;
            } => {}
        }
    };
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON array");
    let row = |route: &str| {
        rows.as_array()
            .and_then(|r| r.iter().find(|x| x["route"] == route))
            .cloned()
            .unwrap_or_else(|| panic!("no {route} in {rows}"))
    };
    let (fine, down) = (row("ingress/default/ok"), row("ingress/default/dead"));
    assert_eq!(
        rows[0]["route"], "ingress/default/ok",
        "the busiest first: {rows}"
    );
    assert!(fine["rps"].as_f64().is_some_and(|r| r > 10.0), "{fine}");
    assert_eq!(fine["success"], 1.0);
    assert!(
        fine["p99_ms"]
            .as_f64()
            .is_some_and(|l| l > 0.0 && l <= 1000.0),
        "{fine}"
    );
    assert_eq!(down["success"], 0.0);
    assert_eq!(down["reasons"]["upstream_connect_failed"], down["requests"]);
}
