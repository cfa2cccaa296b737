//! Judges one request `N` times with the Core Rule Set (for `perf stat`: instruction
//! counts are steadier than times on a busy machine). Usage: judge PL get|post|attack N

use gatehouse_security::exchange::Peer;
use gatehouse_security::ruleset::compile;
use gatehouse_security::{load_str, Transaction};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pl: u8 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let kind = args.get(2).map_or("get", String::as_str);
    let n: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        "Include {}\nInclude crs-setup.conf.example\nSecAction \"id:900100,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={pl},setvar:tx.detection_paranoia_level={pl}\"\nInclude rules/*.conf\n",
        here.join("conf/recommended.conf").display()
    );
    let rules =
        match load_str(&text, Path::new("judge.conf"), &here.join("../../waf/crs")).map(compile) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) | Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
    let (method, uri, body): (&str, &str, &[u8]) = match kind {
        "post" => ("POST", "/checkout", b"name=Ada+Lovelace&street=12+Main+Street&city=London&zip=N1"),
        "attack" => ("GET", "/products/list?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--&q=%3Cscript%3Ealert(1)%3C/script%3E", b""),
        _ => ("GET", "/products/list?category=shoes&page=2&sort=price", b""),
    };
    let mut headers = vec![
        ("Host", "shop.example.com"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Cookie", "session=7f3a9c2e1b; theme=dark"),
    ];
    if kind == "post" {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    stats(&rules);
    let t = std::time::Instant::now();
    let mut matched = 0;
    for _ in 0..n {
        let mut tx = Transaction::new(
            &rules,
            Peer {
                remote_addr: "10.0.0.1".into(),
                ..Default::default()
            },
        );
        tx.x.set_request_line(method.as_bytes(), uri.as_bytes(), b"HTTP/1.1");
        for (k, v) in &headers {
            tx.x.add_header(k.as_bytes(), v.as_bytes());
        }
        tx.process_request_headers();
        tx.append_request_body(body);
        tx.process_request_body();
        tx.process_logging();
        matched = tx.matched().len();
    }
    println!(
        "{:.1} us/request ({matched} rules matched)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}

#[allow(dead_code)]
fn stats(rules: &gatehouse_security::RuleSet) {
    let all: Vec<_> = rules.rules().collect();
    let with = all.iter().filter(|r| r.prefilter.is_some()).count();
    eprintln!(
        "{} rules, {} with a prefilter, {} groups",
        all.len(),
        with,
        rules.prefilters.len()
    );
}
