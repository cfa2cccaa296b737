//! Judges one request `N` times with the Core Rule Set (for callgrind: instruction
//! counts are steadier than times on a busy machine), and prints how many rules have a
//! literal prefilter. Usage: judge PL get|post|attack|wrk N

#[path = "../benches/support/mod.rs"]
mod fixture;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pl: u8 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let req = match args.get(2).map_or("get", String::as_str) {
        "post" => &fixture::CLEAN_POST,
        "attack" => &fixture::ATTACK,
        "wrk" => &fixture::WRK,
        _ => &fixture::CLEAN,
    };
    let n: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rules = fixture::crs(pl);
    let all: Vec<_> = rules.rules().collect();
    let with = all.iter().filter(|r| r.prefilter.is_some()).count();
    eprintln!(
        "{} rules, {with} with a prefilter, {} groups",
        all.len(),
        rules.prefilters.len()
    );
    let p = &rules.prologue;
    let ids = |r: std::ops::Range<usize>| -> Vec<Option<u32>> {
        rules.phases[0][r]
            .iter()
            .filter_map(|e| match e {
                gatehouse_security::ruleset::Entry::Rule(r) => Some(r.id),
                _ => None,
            })
            .collect()
    };
    eprintln!(
        "prologue: lead {:?}, run at load {:?}, resumes at {:?}",
        ids(0..p.lead),
        ids(p.lead..p.start),
        ids(p.start..(p.start + 1).min(rules.phases[0].len()))
    );
    eprintln!(
        "decided at load: {} rules",
        all.iter().filter(|r| r.fixed.is_some()).count()
    );
    let t = std::time::Instant::now();
    let mut matched = 0;
    for _ in 0..n {
        matched = fixture::judge(&rules, req);
    }
    println!(
        "{:.1} us/request ({matched} rules matched)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
