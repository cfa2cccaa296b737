//! The engine runs the whole Core Rule Set on requests: a clean request matches
//! nothing, attacks match the rules CRS's regression tests name, and in blocking mode
//! the anomaly score blocks.

use gatehouse_security::exchange::Peer;
use gatehouse_security::ruleset::compile;
use gatehouse_security::{load_str, RuleSet, Transaction};
use std::path::Path;

fn crs(extra: &str) -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/crs");
    let text = format!(
        "Include {}\nInclude crs-setup.conf.example\n{extra}\nInclude rules/*.conf\n",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("conf/recommended.conf")
            .display()
    );
    compile(load_str(&text, Path::new("main.conf"), &dir).unwrap_or_else(|e| panic!("{e}")))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn run(
    rules: &RuleSet,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Vec<u32>, Option<u16>) {
    let mut tx = Transaction::new(
        rules,
        Peer {
            remote_addr: "127.0.0.1".into(),
            remote_port: 5555,
            ..Default::default()
        },
    );
    tx.x.set_request_line(method.as_bytes(), uri.as_bytes(), b"HTTP/1.1");
    for (k, v) in headers {
        tx.x.add_header(k.as_bytes(), v.as_bytes());
    }
    tx.process_request_headers();
    tx.append_request_body(body);
    tx.process_request_body();
    tx.process_logging();
    let ids = tx.matched().iter().map(|m| m.id()).collect();
    (ids, tx.interruption().map(|i| i.status))
}

const SQLI: &str = "/?id=1%27%20OR%20%271%27%3D%271";

const BROWSER: &[(&str, &str)] = &[
    ("Host", "localhost"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
    ),
    ("Accept", "text/html,application/xhtml+xml"),
];

#[test]
fn clean_and_attacks() {
    let rules = crs("");
    let (ids, status) = run(&rules, "GET", "/index.html?q=hello+world", BROWSER, b"");
    assert!(ids.is_empty(), "clean request matched {ids:?}");
    assert_eq!(status, None);

    let (ids, status) = run(&rules, "GET", SQLI, BROWSER, b"");
    assert!(ids.contains(&942100), "{ids:?}");
    assert!(ids.contains(&949110), "{ids:?}");
    assert_eq!(status, Some(403));

    let (ids, _) = run(
        &rules,
        "GET",
        "/?x=%3Cscript%3Ealert(1)%3C/script%3E",
        BROWSER,
        b"",
    );
    assert!(ids.contains(&941100), "{ids:?}");

    let mut post = BROWSER.to_vec();
    post.push(("Content-Type", "application/x-www-form-urlencoded"));
    let (ids, _) = run(&rules, "POST", "/login", &post, b"file=../../../etc/passwd");
    assert!(ids.contains(&930100) || ids.contains(&930120), "{ids:?}");
}

#[test]
fn detection_only_logs_but_never_blocks() {
    let rules = crs("SecAction \"id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,setvar:tx.blocking_paranoia_level=4\"");
    let (ids, status) = run(&rules, "GET", SQLI, BROWSER, b"");
    assert!(ids.contains(&942100), "{ids:?}");
    assert_eq!(status, None);
}
