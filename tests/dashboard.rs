//! The dashboard in a real browser: an in-process gatehouse with its analytics ticking
//! every 100 ms serves two Services and a WAF-guarded host; steady traffic teaches the
//! baselines, then one Service starts failing. The analytics raise an error burst for
//! its route, and headless Chromium (Debian's `chromium`) loads `/dashboard` from the
//! admin listener: the page shows live data, the map has the edges of the traffic
//! sent (the failing one coloured bad), the anomaly and the WAF's refusal are listed,
//! and a screenshot is saved as the test's artefact (`target/tmp/dashboard.png`).

mod support;
use gatehouse_proxy::config::ProxyConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::backend::Backend;
use support::browser::browse;
use support::*;

async fn dashboard(c: &TestClient, admin: SocketAddr) -> serde_json::Value {
    get(c, admin, "localhost", "/api/dashboard").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_in_chromium() {
    let shop = Backend::start("shop").await;
    let api = Backend::start("api").await;
    let services =
        service("default", "shop", shop.addr, None) + &service("default", "api", api.addr, None);
    let ingresses = ingress("shop.example", "shop") + &ingress("api.example", "api");
    let cfg = ProxyConfig {
        drain_timeout: Duration::from_secs(2),
        analytics_tick: Some(Duration::from_millis(100)),
        analytics_warm_up: 30,
        ..ProxyConfig::default()
    };
    let p = start_proxy_guarded(&services, &ingresses, "shop", cfg).await;
    let c = client();
    let page = get(&c, p.admin, "localhost", "/dashboard").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Service map"), "{}", page.body);

    // Steady traffic to both Services, 50 requests a second each, at a fixed pace
    // (whatever the answers' speed).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, c, http) = (stop.clone(), c.clone(), p.http);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                every.tick().await;
                let (c1, c2) = (c.clone(), c.clone());
                tokio::spawn(async move { get(&c1, http, "shop.example", "/").await });
                tokio::spawn(async move { get(&c2, http, "api.example", "/").await });
            }
        })
    };
    // Past the warm-up (30 ticks of 100 ms), the API starts failing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let calm = dashboard(&c, p.admin).await;
    assert_eq!(
        calm["anomalies"].as_array().map(|a| a.len()),
        Some(0),
        "steady traffic raises nothing: {calm}"
    );
    api.set_status(500);
    let refused = get(&c, p.http, "guarded.example", "/?q=1%27%20OR%201=1--").await;
    assert_eq!(refused.status, 403, "the WAF refuses an injection");

    let started = Instant::now();
    let burst = loop {
        let d = dashboard(&c, p.admin).await;
        let found = d["anomalies"].as_array().into_iter().flatten().find(|e| {
            e["kind"] == "error_burst" && e["key"].as_str().is_some_and(|k| k.contains("api"))
        });
        if let Some(e) = found {
            break e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no error burst raised for the failing API: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delay = started.elapsed();
    assert!(
        burst["observed"].as_f64().is_some_and(|v| v > 0.1),
        "{burst}"
    );
    assert!(
        burst["expected"].as_f64().is_some_and(|v| v < 0.05),
        "{burst}"
    );
    println!("error burst raised {delay:?} after the API failed: {burst}");

    // The metrics count it too.
    let metrics = get(&c, p.admin, "localhost", "/metrics").await.body;
    assert!(metrics.contains("gatehouse_anomalies_total 1"), "{metrics}");

    let url = format!("http://{}/dashboard", p.admin);
    let dom = browse(&url, &["--dump-dom"]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;
    let listener = format!("listener:{}", p.http);
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page loaded its data: {dom}"
    );
    // The failing Service's edges are bad. The healthy one is ok, unless an anomaly
    // of its own route says otherwise: starting Chromium beside the proxy on two cores
    // can be a real latency spike.
    let anomalies = dashboard(&c, p.admin).await["anomalies"].clone();
    let shop_anomaly = anomalies
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["key"] == "ingress/default/shop" && e["kind"] != "error_burst");
    for (edge, health, explained) in [
        (format!("clients-&gt;{listener}"), "bad", false),
        (
            format!("{listener}-&gt;service:default/shop:80"),
            "ok",
            shop_anomaly,
        ),
        (
            format!("{listener}-&gt;service:default/api:80"),
            "bad",
            false,
        ),
    ] {
        let at = dom
            .find(&format!(r#"data-edge="{edge}""#))
            .unwrap_or_else(|| panic!("the map has edge {edge}: {dom}"));
        let tag = &dom[at..at + dom[at..].find('>').unwrap_or(0)];
        let shown = tag.contains(&format!(r#"data-health="{health}""#))
            || (explained && tag.contains(r#"data-health="bad""#));
        assert!(shown, "edge {edge} is {health}: {tag}; {anomalies}");
        let rate = tag
            .split(r#"data-rate=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|r| r.parse::<f64>().ok());
        assert!(
            rate.is_some_and(|r| r > 10.0),
            "edge {edge} carries the traffic sent: {tag}"
        );
    }
    assert!(
        dom.contains(r#"data-anomaly="error_burst""#),
        "the anomaly is listed: {dom}"
    );
    assert!(
        dom.contains(r#"data-security="waf""#),
        "the WAF's refusal is listed: {dom}"
    );
    assert!(
        dom.contains(r#"data-route="ingress/default/api""#),
        "the API's charts: {dom}"
    );

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(&url, &[&format!("--screenshot={}", shot.display())]).await;
    let png = std::fs::read(&shot).expect("the screenshot is saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot: {} bytes",
        png.len()
    );
    println!("screenshot: {}", shot.display());
}
