//! The requests and the rule set the engine benchmark and the `judge` example share:
//! CRS v4.28 with the recommended engine settings at a paranoia level, and a clean GET,
//! a clean form POST and an attack, each with browser-like headers.

use gatehouse_security::exchange::Peer;
use gatehouse_security::ruleset::compile;
use gatehouse_security::{load_str, RuleSet, Transaction};
use std::path::Path;

pub fn crs(paranoia: u8) -> RuleSet {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = here.join("../../waf/crs");
    let text = format!(
        "Include {}\nInclude crs-setup.conf.example\nSecAction \"id:900100,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={paranoia},setvar:tx.detection_paranoia_level={paranoia}\"\nInclude rules/*.conf\n",
        here.join("conf/recommended.conf").display()
    );
    compile(load_str(&text, Path::new("bench.conf"), &dir).expect("loads")).expect("compiles")
}

pub struct Req {
    pub method: &'static str,
    pub uri: &'static str,
    pub headers: &'static [(&'static str, &'static str)],
    pub body: &'static [u8],
}

const HEADERS: &[(&str, &str)] = &[
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
    ("Connection", "keep-alive"),
];

const FORM_HEADERS: &[(&str, &str)] = &[
    ("Host", "shop.example.com"),
    (
        "User-Agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("Content-Type", "application/x-www-form-urlencoded"),
    ("Content-Length", "52"),
];

pub const CLEAN: Req = Req {
    method: "GET",
    uri: "/products/list?category=shoes&page=2&sort=price",
    headers: HEADERS,
    body: b"",
};

/// What `bench/waf.sh` sends through the proxy (wrk's request: a Host header only).
pub const WRK: Req = Req {
    method: "GET",
    uri: "/search?q=running+shoes&page=2",
    headers: &[("Host", "localhost:18095")],
    body: b"",
};

pub const CLEAN_POST: Req = Req {
    method: "POST",
    uri: "/checkout",
    headers: FORM_HEADERS,
    body: b"name=Ada+Lovelace&street=12+Main+Street&city=London&zip=N1",
};

pub const ATTACK: Req = Req {
    method: "GET",
    uri: "/products/list?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--&q=%3Cscript%3Ealert(1)%3C/script%3E",
    headers: HEADERS,
    body: b"",
};

pub fn judge(rules: &RuleSet, r: &Req) -> usize {
    let mut tx = Transaction::new(
        rules,
        Peer {
            remote_addr: "10.0.0.1".into(),
            remote_port: 40000,
            ..Default::default()
        },
    );
    tx.x.set_request_line(r.method.as_bytes(), r.uri.as_bytes(), b"HTTP/1.1");
    for (k, v) in r.headers {
        tx.x.add_header(k.as_bytes(), v.as_bytes());
    }
    tx.process_request_headers();
    tx.append_request_body(r.body);
    tx.process_request_body();
    tx.process_logging();
    tx.matched().len()
}
