//! The web application firewall in the proxy, over real sockets with the Core Rule Set
//! loaded: a SecurityPolicy in Blocking mode answers attacks with 403 and the request
//! id while clean requests pass; DetectionOnly logs and passes; request bodies and
//! responses are inspected; every match is logged in ModSecurity's form and as a JSON
//! audit event; exclusions and the Ingress annotation work; a bad policy is refused
//! and the last good config keeps serving.

mod support;

use gatehouse_proxy::ProxyConfig;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

fn policy(mode: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: gatehouse.dev/v1alpha1
kind: SecurityPolicy
metadata: {{name: waf, namespace: default}}
spec:
  targetRefs: [{{group: networking.k8s.io, kind: Ingress, name: app}}]
  waf:
    mode: {mode}
{extra}"
    )
}

struct Waf {
    proxy: Proxy,
    log: std::path::PathBuf,
    audit: std::path::PathBuf,
    _logs: tempfile::TempDir,
}

async fn start(policy: &str, backend: SocketAddr) -> Waf {
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("waf.log");
    let audit = logs.path().join("audit.log");
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(2),
        waf_log: Some(log.clone()),
        waf_audit_log: Some(audit.clone()),
        ..ProxyConfig::default()
    };
    let app = [
        service("default", "app", backend, None),
        ingress("app.test", "app"),
    ]
    .concat();
    let (proxy, _) = start_proxy_waf(
        &[
            ("classes.yaml", CLASSES),
            ("app.yaml", &app),
            ("policy.yaml", policy),
        ],
        &[],
        cfg,
        Some(crs_base()),
    )
    .await;
    Waf {
        proxy,
        log,
        audit,
        _logs: logs,
    }
}

const SQLI: &str = "/search?id=1%27%20OR%20%271%27%3D%271";

#[tokio::test]
async fn blocking_mode_blocks_attacks_and_passes_clean_requests() {
    let backend = echo("app").await;
    let w = start(&policy("Blocking", ""), backend).await;
    let c = client();
    let ok = get(&c, w.proxy.http, "app.test", "/search?q=hello+world").await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let bad = send(
        &c,
        "GET",
        w.proxy.http,
        "app.test",
        SQLI,
        &[("x-request-id", "req-sqli-1")],
    )
    .await;
    assert_eq!(bad.status, 403, "{}", bad.body);
    assert!(
        bad.body.contains("req-sqli-1"),
        "the body names the request id: {}",
        bad.body
    );
    assert_eq!(
        bad.headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-sqli-1"[..])
    );

    let log = wait_log(&w.log, "[id \"949110\"]").await;
    let line = log
        .lines()
        .find(|l| l.contains("[id \"942100\"]"))
        .expect("942100 logged");
    assert!(
        line.contains("[msg \"SQL Injection Attack Detected via libinjection\"]"),
        "{line}"
    );
    assert!(line.contains("[unique_id \"req-sqli-1\"]"), "{line}");
    assert!(
        line.contains("[data \"Matched Data: s&sos found within ARGS:id: 1' OR '1'='1\"]"),
        "{line}"
    );

    let audit = wait_log(&w.audit, "req-sqli-1").await;
    let event: serde_json::Value =
        serde_json::from_str(audit.lines().last().expect("event")).expect("json");
    assert_eq!(event["action"], "blocked");
    assert_eq!(event["request_id"], "req-sqli-1");
    assert!(
        event["inbound_anomaly_score"].as_i64().unwrap_or(0) >= 5,
        "{event}"
    );
    let ids: Vec<u64> = event["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter_map(|m| m["id"].as_u64())
        .collect();
    assert!(ids.contains(&942100) && ids.contains(&949110), "{ids:?}");
}

#[tokio::test]
async fn request_bodies_are_inspected() {
    let backend = echo("app").await;
    let w = start(&policy("Blocking", ""), backend).await;
    let form = "POST /login HTTP/1.1\r\nHost: app.test\r\nUser-Agent: test\r\nAccept: */*\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\nConnection: close\r\n\r\nuser=admin&pass=%27%20or%201%3D1%20--%20x";
    let resp = raw(w.proxy.http, form.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let json = r#"{"user":{"name":"<script>alert(1)</script>"}}"#;
    let req = format!("POST /api HTTP/1.1\r\nHost: app.test\r\nUser-Agent: test\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len());
    let resp = raw(w.proxy.http, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    wait_log(&w.log, "ARGS:json.user.name").await;
    let clean = r#"{"user":{"name":"Ada Lovelace"}}"#;
    let req = format!("POST /api HTTP/1.1\r\nHost: app.test\r\nUser-Agent: test\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{clean}", clean.len());
    let resp = raw(w.proxy.http, req.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "the body still reaches the backend: {resp}"
    );
    assert!(
        resp.contains("Ada Lovelace")
            || resp.contains("content-length: 32")
            || resp.contains("POST"),
        "{resp}"
    );
    let bad = "POST /api HTTP/1.1\r\nHost: app.test\r\nUser-Agent: test\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{\"a\": tru";
    let resp = raw(w.proxy.http, bad.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 400"),
        "a body that does not parse is refused: {resp}"
    );
}

#[tokio::test]
async fn detection_only_logs_and_passes() {
    let backend = echo("app").await;
    let w = start(&policy("DetectionOnly", ""), backend).await;
    let c = client();
    let r = send(
        &c,
        "GET",
        w.proxy.http,
        "app.test",
        SQLI,
        &[("x-request-id", "req-detect")],
    )
    .await;
    assert_eq!(r.status, 200);
    let log = wait_log(&w.log, "[id \"942100\"]").await;
    assert!(log.contains("Warning."), "{log}");
    let audit = wait_log(&w.audit, "req-detect").await;
    assert!(audit.contains("\"action\":\"logged\""), "{audit}");
}

#[tokio::test]
async fn responses_are_inspected_when_asked() {
    // A backend that leaks a PHP error.
    let backend = listen(|mut s| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let body = "<b>Warning</b>: mysql_fetch_array(): supplied argument is not a valid MySQL result resource in /var/www/x.php";
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let _ = s.write_all(resp.as_bytes()).await;
    })
    .await;
    let w = start(&policy("Blocking", "    inspectResponses: true\n"), backend).await;
    let c = client();
    let r = get(&c, w.proxy.http, "app.test", "/page").await;
    assert_eq!(r.status, 403, "{}", r.body);
    let log = wait_log(&w.log, "[id \"959100\"]").await;
    assert!(
        log.contains("[id \"951220\"]")
            || log.contains("[id \"951230\"]")
            || log.contains("[id \"951110\"]"),
        "{log}"
    );
}

#[tokio::test]
async fn chunked_responses_are_inspected_too() {
    let backend = listen(|mut s| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        let body = match buf[..n].starts_with(b"GET /leak") {
            true => "<b>Warning</b>: mysql_fetch_array(): supplied argument is not a valid MySQL result resource in /var/www/x.php",
            false => "<p>A perfectly ordinary page about shoes, served in two chunks.</p>",
        };
        let (a, b) = body.split_at(20);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
    })
    .await;
    let w = start(&policy("Blocking", "    inspectResponses: true\n"), backend).await;
    let c = client();
    let r = get(&c, w.proxy.http, "app.test", "/leak").await;
    assert_eq!(r.status, 403, "{}", r.body);
    wait_log(&w.log, "[id \"959100\"]").await;
    let r = get(&c, w.proxy.http, "app.test", "/page").await;
    let log = std::fs::read_to_string(&w.log).unwrap_or_default();
    assert_eq!(
        r.status, 200,
        "a clean body is relayed whole after inspection: {log}"
    );
    assert!(r.body.ends_with("two chunks.</p>"), "{}", r.body);
    let w = start(&policy("Blocking", ""), backend).await;
    let r = get(&c, w.proxy.http, "app.test", "/leak").await;
    assert_eq!(
        r.status, 200,
        "without response inspection the body is not judged"
    );
    assert!(r.body.ends_with("x.php"), "{}", r.body);
}

#[tokio::test]
async fn exclusions_annotations_and_bad_policies() {
    let backend = echo("app").await;
    let excluded = policy(
        "Blocking",
        "    exclusions:\n    - ids: [\"942100\"]\n      targets: [\"ARGS:id\"]\n    - tags: [\"attack-sqli\"]\n      targets: [\"ARGS:id\"]\n",
    );
    let w = start(&excluded, backend).await;
    let c = client();
    let r = get(&c, w.proxy.http, "app.test", SQLI).await;
    assert_eq!(r.status, 200, "ARGS:id is excluded: {}", r.body);
    let other = "/search?other=1%27%20OR%20%271%27%3D%271";
    let r = get(&c, w.proxy.http, "app.test", other).await;
    assert_eq!(r.status, 403, "other arguments are still inspected");

    // A rule that does not parse: the error names the policy and the field; the last
    // good config keeps serving.
    let v = w.proxy.running.version();
    let bad = policy(
        "Blocking",
        "    rules: |\n      SecRule ARGS \"@rx (\" \"id:10,phase:2,deny\"\n",
    );
    write(w.proxy.dir.path(), "policy.yaml", &bad);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.proxy.running.version(), v, "the bad policy is not served");
    let r = get(&c, w.proxy.http, "app.test", other).await;
    assert_eq!(r.status, 403, "the previous WAF still protects");
    let errors = gatehouse::app::validate(
        w.proxy.dir.path(),
        &gatehouse_translate::TranslateOptions {
            waf: Some(crs_base()),
            ..Default::default()
        },
    )
    .expect_err("invalid");
    let text = format!("{errors:#}");
    assert!(
        text.contains("SecurityPolicy") && text.contains("spec.waf.rules"),
        "{text}"
    );

    // The Ingress annotation alone turns the WAF on.
    std::fs::remove_file(w.proxy.dir.path().join("policy.yaml")).expect("rm");
    let app = [
        service("default", "app", backend, None),
        ingress("app.test", "app").replace(
            "metadata: {name: app, namespace: default}",
            "metadata: {name: app, namespace: default, annotations: {gatehouse.dev/waf: Blocking, gatehouse.dev/waf-paranoia-level: \"1\"}}",
        ),
    ]
    .concat();
    write(w.proxy.dir.path(), "app.yaml", &app);
    w.proxy.wait_version(v + 1).await;
    let r = get(&c, w.proxy.http, "app.test", SQLI).await;
    assert_eq!(r.status, 403);
    let r = get(&c, w.proxy.http, "app.test", "/fine").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn http2_requests_are_judged_too() {
    let backend = echo("app").await;
    let w = start(&policy("Blocking", ""), backend).await;
    let r = h2c_get(w.proxy.http, "app.test", SQLI).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, 403, "{}", r.body);
    let ok = h2c_get(w.proxy.http, "app.test", "/search?q=fine").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    wait_log(&w.log, "[id \"942100\"]").await;
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let backend = echo("app").await;
    let rule = "    rules: |\n      SecRule REQUEST_HEADERS:X-Evil \"@streq yes\" \"id:1001,phase:1,drop,log,msg:'dropped'\"\n";
    let w = start(&policy("Blocking", rule), backend).await;
    let resp = raw(
        w.proxy.http,
        b"GET /x HTTP/1.1\r\nHost: app.test\r\nUser-Agent: t\r\nAccept: */*\r\nX-Evil: yes\r\n\r\n",
    )
    .await;
    assert_eq!(resp, "", "no answer at all");
    let log = wait_log(&w.log, "[id \"1001\"]").await;
    assert!(log.contains("[msg \"dropped\"]"), "{log}");
}
