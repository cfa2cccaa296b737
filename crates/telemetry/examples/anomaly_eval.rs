//! Scores the anomaly detector on generated traffic with injected faults and prints
//! the report as JSON: `cargo run --release -p gatehouse-telemetry --example anomaly_eval
//! [SCENARIOS_PER_FAULT]`.

fn main() {
    let per_fault = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(25);
    let cfg = gatehouse_telemetry::eval::EvalConfig {
        scenarios_per_fault: per_fault,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let report = gatehouse_telemetry::eval::evaluate(&cfg, &Default::default());
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    eprintln!(
        "{} scenarios of {} routes x {} s in {:.1} s",
        per_fault * 5,
        cfg.routes,
        cfg.ticks,
        started.elapsed().as_secs_f64()
    );
}
