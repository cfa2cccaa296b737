//! Differential check of two WAFs on the requests of go-ftw test files: every stage's
//! request is sent, byte for byte, to both (e.g. Gatehouse and nginx + ModSecurity in
//! blocking mode at the same paranoia level), and their verdicts (403 or not) are
//! compared. Prints the agreement and every stage where they differ.
//! Usage: waf_diff TESTS_DIR A_ADDR B_ADDR

use gatehouse::ftw::client::{exchange, ClientConfig};
use gatehouse::ftw::request::{build_request, request_method};
use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: waf_diff TESTS_DIR A_ADDR B_ADDR");
    let a: SocketAddr = args[2].parse()?;
    let b: SocketAddr = args[3].parse()?;
    let cfg = ClientConfig::default();
    let (mut same, mut total, mut a_only, mut b_only) = (0, 0, 0, 0);
    for f in gatehouse::ftw::load_dir(std::path::Path::new(&args[1]))? {
        for t in &f.file.tests {
            for (i, s) in t.stages.iter().enumerate() {
                let Ok(raw) = build_request(&s.input) else {
                    continue;
                };
                let head = request_method(&raw) == "HEAD";
                let verdict = |r: Result<gatehouse::ftw::client::RawResponse, _>| match r {
                    Ok(r) if r.status == 403 => "blocked".to_string(),
                    Ok(r) => format!("{}", r.status),
                    Err(_) => "error".to_string(),
                };
                let va = verdict(exchange(a, &raw, head, &cfg).await);
                let vb = verdict(exchange(b, &raw, head, &cfg).await);
                total += 1;
                let (ba, bb) = (va == "blocked", vb == "blocked");
                if ba == bb {
                    same += 1;
                } else {
                    if ba {
                        a_only += 1;
                    } else {
                        b_only += 1;
                    }
                    println!(
                        "DIFF {}-{} stage {i} ({}): A {va}, B {vb}",
                        f.file.rule_id, t.test_id, f.rule_file
                    );
                }
            }
        }
    }
    println!(
        "{same} of {total} verdicts agree ({:.2}%); blocked only by A: {a_only}, only by B: {b_only}",
        100.0 * same as f64 / total.max(1) as f64
    );
    Ok(())
}
