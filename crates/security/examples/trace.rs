//! Judges one raw HTTP/1.1 request (read from a file or stdin) with the Core Rule Set set
//! up as CRS's CI sets it up, and prints the rules that matched with their log lines.
//! Usage: trace [FILE]

use gatehouse_security::exchange::Peer;
use gatehouse_security::ruleset::compile;
use gatehouse_security::{load_str, Transaction};
use std::io::Read;
use std::path::Path;

fn main() {
    let mut raw = Vec::new();
    match std::env::args().nth(1) {
        Some(f) => raw = std::fs::read(f).expect("readable file"),
        None => {
            let _ = std::io::stdin().read_to_end(&mut raw);
        }
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        "Include {}\nInclude crs-setup.conf.example\nSecAction \"id:10005,phase:1,nolog,pass,setvar:tx.blocking_paranoia_level=4,setvar:tx.detection_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535\"\nSecRuleEngine DetectionOnly\nInclude rules/*.conf\n",
        here.join("conf/recommended.conf").display()
    );
    let rules = compile(
        load_str(&text, Path::new("trace.conf"), &here.join("../../waf/crs")).expect("loads"),
    )
    .expect("compiles");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let body = &raw[head_end.min(raw.len())..];
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let parts: Vec<&str> = first.splitn(3, ' ').collect();
    let mut tx = Transaction::new(
        &rules,
        Peer {
            remote_addr: "127.0.0.1".into(),
            ..Default::default()
        },
    );
    tx.x.set_request_line(
        parts.first().unwrap_or(&"").as_bytes(),
        parts.get(1).unwrap_or(&"").as_bytes(),
        parts.get(2).unwrap_or(&"").as_bytes(),
    );
    for l in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = l.split_once(':') {
            tx.x.add_header(k.trim().as_bytes(), v.trim().as_bytes());
        }
    }
    tx.process_request_headers();
    tx.append_request_body(body);
    tx.process_request_body();
    tx.process_logging();
    for m in tx.matched() {
        println!(
            "{}",
            m.log_line("127.0.0.1", "localhost", &tx.x.uri, "trace")
        );
    }
    println!(
        "REQBODY_PROCESSOR={:?} body_visible={} args_post={}",
        tx.x.reqbody_processor,
        tx.x.body_visible,
        tx.x.args_post.len()
    );
}
