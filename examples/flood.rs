//! The load of `bench/flood.sh`: normal clients at a constant rate, then a flood from a
//! few sources on top, against one HTTP/1.1 target. Normal clients come from their own
//! loopback addresses (127.0.1.x), each over a few keep-alive connections, and their
//! latency is taken from the time each request was due (constant-rate load, so
//! queueing is not hidden). Flood sources (127.0.2.x) send `factor` times the normal
//! load between them, over many connections, opening a new one whenever one is closed,
//! as an attacker does (or after 2 s without an answer).
//!
//! cargo run --release --example flood -- TARGET HOST [key=value ...]
//!   keys: sources=10 conns=4 rate=4000 flood_sources=3 flood_conns=16 factor=10
//!         warmup=2 normal=4 attack=4 (seconds; the warm-up is not measured)
//!         cycles=5 (normal and flood phases alternate this many times, so that a noisy
//!         spell of the machine falls on both alike; a source once blocked stays so)
//!
//! Prints one JSON line: the normal clients' success ratio and latency percentiles in
//! the normal phase, under the whole flood, and under the flood from 2 s on (once a
//! defence has had time to react); and how much of the flood was served.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The time a defence has to react, not counted in the `contained` figures.
const REACTION: Duration = Duration::from_secs(2);

/// How long a flooding connection waits for an answer before it connects again.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(2);

/// What one phase of the normal clients saw.
#[derive(Default)]
struct Phase {
    latencies_us: Vec<u32>,
    failed: u64,
}

#[derive(Default)]
struct Stats {
    normal: Mutex<Phase>,
    attack: Mutex<Phase>,
    /// The attack phase from 2 s on: after the time a defence has to react.
    contained: Mutex<Phase>,
    flood_sent: AtomicU64,
    flood_served: AtomicU64,
    /// Flood requests served, by 100 ms since the flood began.
    flood_timeline: Mutex<HashMap<u64, u64>>,
}

/// One request-response on a keep-alive connection: the status.
async fn exchange(
    conn: &mut BufReader<TcpStream>,
    request: &[u8],
    line: &mut String,
) -> std::io::Result<u16> {
    conn.get_mut().write_all(request).await?;
    line.clear();
    if conn.read_line(line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut length = 0usize;
    let mut close = false;
    loop {
        line.clear();
        if conn.read_line(line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).await?;
    if close {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            status.to_string(),
        ));
    }
    Ok(status)
}

async fn connect(from: IpAddr, target: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    let s = sock.connect(target).await?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

/// What every connection shares: where to send what, the phases, and the counts.
struct Plan {
    target: SocketAddr,
    request: Vec<u8>,
    /// The end of the warm-up.
    measure_from: Instant,
    /// The flood's windows (start, end), each after a normal phase.
    attacks: Vec<(Instant, Instant)>,
    end: Instant,
    stats: Stats,
}

impl Plan {
    /// The flood window holding `t`, if any.
    fn attack(&self, t: Instant) -> Option<(Instant, Instant)> {
        self.attacks
            .iter()
            .copied()
            .find(|(a, b)| (*a..*b).contains(&t))
    }

    /// The first flood window that has not ended by `t`.
    fn next_attack(&self, t: Instant) -> Option<(Instant, Instant)> {
        self.attacks.iter().copied().find(|(_, b)| *b > t)
    }
}

/// A normal client's connection: a request every `interval` from `start` to the end.
async fn normal(plan: Arc<Plan>, from: IpAddr, interval: Duration, start: Instant) {
    let Plan {
        target,
        ref request,
        measure_from,
        end,
        ref stats,
        ..
    } = *plan;
    let first_attack = plan.attacks.first().map_or(end, |a| a.0);
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut line = String::new();
    let mut due = start;
    while due < end {
        // Behind schedule (the last answer came late): latency counts from when this
        // request was due. On time: from when it is sent, so that the timer's own
        // lateness (up to a millisecond) is not counted against the target.
        let behind = Instant::now() >= due;
        tokio::time::sleep_until(due.into()).await;
        let from_time = if behind { due } else { Instant::now() };
        if conn.is_none() {
            conn = connect(from, target).await.ok();
        }
        let ok = match conn.as_mut() {
            Some(c) => matches!(exchange(c, request, &mut line).await, Ok(200)),
            None => false,
        };
        if !ok {
            conn = None;
        }
        let took = from_time.elapsed();
        let record = |phase: &Mutex<Phase>| {
            let mut p = phase.lock().unwrap_or_else(|p| p.into_inner());
            match ok {
                true => p
                    .latencies_us
                    .push(took.as_micros().min(u32::MAX as u128) as u32),
                false => p.failed += 1,
            }
        };
        let attack = plan.attack(due);
        if due >= measure_from {
            record(match attack {
                None => &stats.normal,
                Some(_) => &stats.attack,
            });
        }
        if attack.is_some() && due >= first_attack + REACTION {
            record(&stats.contained);
        }
        due += interval;
        // A client that fell behind does not send a burst to catch up.
        if due + interval * 10 < Instant::now() {
            due = Instant::now();
        }
    }
}

/// A flooding connection: a request every `interval` from `start`, in the flood's
/// windows only, a new connection whenever one is closed.
async fn flood(plan: Arc<Plan>, from: IpAddr, interval: Duration, start: Instant) {
    let Plan {
        target,
        ref request,
        end,
        ref stats,
        ..
    } = *plan;
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut line = String::new();
    let mut due = start;
    while due < end {
        // Between windows, wait for the next one (keeping the connection).
        match plan.next_attack(due) {
            Some((from, _)) if due < from => due = from,
            Some(_) => {}
            None => break,
        }
        tokio::time::sleep_until(due.into()).await;
        due += interval;
        if due < Instant::now() {
            due = Instant::now();
        }
        stats.flood_sent.fetch_add(1, Relaxed);
        if conn.is_none() {
            conn = connect(from, target).await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        // Flood tools give up on an answer after a while, and connect again.
        let answer = tokio::time::timeout(FLOOD_TIMEOUT, exchange(c, request, &mut line));
        match answer
            .await
            .unwrap_or(Err(std::io::ErrorKind::TimedOut.into()))
        {
            Ok(200) => {
                stats.flood_served.fetch_add(1, Relaxed);
                let slot = (start.elapsed().as_millis() / 100) as u64;
                *stats
                    .flood_timeline
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(slot)
                    .or_default() += 1;
            }
            Ok(_) => {}
            Err(_) => conn = None,
        }
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn summary(p: &Phase) -> serde_json::Value {
    let mut l = p.latencies_us.clone();
    l.sort_unstable();
    let total = l.len() as u64 + p.failed;
    serde_json::json!({
        "requests": total,
        "success": if total == 0 { 0.0 } else { l.len() as f64 / total as f64 },
        "p50_ms": percentile(&l, 0.5),
        "p90_ms": percentile(&l, 0.9),
        "p99_ms": percentile(&l, 0.99),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: flood TARGET HOST [key=value ...]";
    let target: SocketAddr = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let host = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let mut opt: HashMap<String, f64> = [
        ("sources", 10.0),
        ("conns", 4.0),
        ("rate", 4000.0),
        ("flood_sources", 3.0),
        ("flood_conns", 16.0),
        ("factor", 10.0),
        ("warmup", 2.0),
        ("normal", 4.0),
        ("attack", 4.0),
        ("cycles", 5.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{a:?}: want key=value"))?;
        if !opt.contains_key(k) {
            anyhow::bail!("unknown key {k:?}");
        }
        opt.insert(k.to_string(), v.parse()?);
    }
    let o = |k: &str| opt[k];
    let request =
        format!("GET /search?q=running+shoes&page=2 HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs_f64(o("warmup"));
    let (normal_phase, attack_phase) = (
        Duration::from_secs_f64(o("normal")),
        Duration::from_secs_f64(o("attack")),
    );
    let cycle = normal_phase + attack_phase;
    let attacks: Vec<(Instant, Instant)> = (0..o("cycles").max(1.0) as u32)
        .map(|c| {
            let from = measure_from + cycle * c + normal_phase;
            (from, from + attack_phase)
        })
        .collect();
    let attack_at = attacks[0].0;
    let plan = Arc::new(Plan {
        target,
        request,
        measure_from,
        end: attacks[attacks.len() - 1].1,
        attacks,
        stats: Stats::default(),
    });
    let mut tasks = Vec::new();
    let normal_conns = (o("sources") * o("conns")) as u32;
    let normal_interval = Duration::from_secs_f64(f64::from(normal_conns) / o("rate"));
    for s in 0..o("sources") as u8 {
        let from = IpAddr::from([127, 0, 1, s + 1]);
        for c in 0..o("conns") as u32 {
            // Spread the connections' schedules over one interval.
            let offset = normal_interval * (u32::from(s) * o("conns") as u32 + c) / normal_conns;
            tasks.push(tokio::spawn(normal(
                plan.clone(),
                from,
                normal_interval,
                start + offset,
            )));
        }
    }
    let flood_conns = (o("flood_sources") * o("flood_conns")) as u32;
    let flood_interval =
        Duration::from_secs_f64(f64::from(flood_conns) / (o("rate") * o("factor")));
    for s in 0..o("flood_sources") as u8 {
        let from = IpAddr::from([127, 0, 2, s + 1]);
        for c in 0..o("flood_conns") as u32 {
            let offset =
                flood_interval * (u32::from(s) * o("flood_conns") as u32 + c) / flood_conns;
            tasks.push(tokio::spawn(flood(
                plan.clone(),
                from,
                flood_interval,
                attack_at + offset,
            )));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let stats = &plan.stats;
    let timeline = stats
        .flood_timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let last_served = timeline.keys().max().map(|s| (*s as f64 + 1.0) / 10.0);
    let late = (REACTION.as_millis() / 100) as u64;
    let served_late: u64 = timeline
        .iter()
        .filter(|(s, _)| **s >= late)
        .map(|(_, n)| n)
        .sum();
    let normal_phase = summary(&stats.normal.lock().unwrap_or_else(|p| p.into_inner()));
    let attack_phase = summary(&stats.attack.lock().unwrap_or_else(|p| p.into_inner()));
    let contained = summary(&stats.contained.lock().unwrap_or_else(|p| p.into_inner()));
    let ratio = attack_phase["p99_ms"].as_f64().unwrap_or(0.0)
        / normal_phase["p99_ms"].as_f64().unwrap_or(1.0).max(1e-9);
    println!(
        "{}",
        serde_json::json!({
            "normal": normal_phase,
            "attack": attack_phase,
            "contained": contained,
            "p99_ratio": (ratio * 100.0).round() / 100.0,
            "flood_sent": stats.flood_sent.load(Relaxed),
            "flood_served": stats.flood_served.load(Relaxed),
            "flood_last_served_s": last_served,
            "flood_served_after_2s": served_late,
        })
    );
    Ok(())
}
