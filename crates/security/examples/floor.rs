//! The work CRS at paranoia 1 mandates on `bench/waf.sh`'s request whatever engine runs
//! it: libinjection's SQLi detector (rule 942100) on every argument name and value, and
//! its XSS detector (941100) on those and the file name. No engine can skip these calls
//! on a clean request (they have no literal to prefilter on), so their cost is a floor
//! under the WAF's cost per request. Usage: floor [N]

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // `GET /search?q=running+shoes&page=2` after the rules' transformations.
    let sqli: [&[u8]; 4] = [b"q", b"page", b"running shoes", b"2"];
    let xss: [&[u8]; 5] = [b"/search", b"q", b"page", b"running shoes", b"2"];
    let mut hits = 0usize;
    let t = Instant::now();
    for _ in 0..n {
        for v in sqli {
            hits += libinjectionrs::detect_sqli(black_box(v)).is_injection() as usize;
        }
        for v in xss {
            hits += libinjectionrs::detect_xss(black_box(v)).is_injection() as usize;
        }
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("{per:.2} us per request for 4 detectSQLi + 5 detectXSS calls ({hits} hits)");
}
