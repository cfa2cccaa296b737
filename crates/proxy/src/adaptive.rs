//! The adaptive-blocking loop, off the hot path: once a second every adaptive policy's
//! source tracker is ticked; each source it names becomes a `SourceBlock` object (in
//! `DryRun`, only an event), and blocks past their end are dropped. Every decision is a
//! security event and a metric. The blocks reach the data plane as config: the object
//! set wakes the config loop, which translates them into the Snapshot's block list.

use crate::dataplane::DataPlane;
use gatehouse_translate::adaptive::block_object;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the trackers are ticked.
pub const TICK: Duration = Duration::from_secs(1);

/// Runs the loop until the data plane shuts down.
pub fn spawn(dp: Arc<DataPlane>) -> tokio::task::JoinHandle<()> {
    dp.clone().every(TICK, |dp| tick(dp, Instant::now()))
}

/// One pass: ticks the tracker of every policy the served Snapshot holds, with that
/// Snapshot's thresholds; records and makes its blocks; drops ended ones.
pub fn tick(dp: &DataPlane, now: Instant) {
    let now_ms = crate::security_log::now_ms();
    let mut made = Vec::new();
    let active = dp.current();
    for policy in &active.snapshot.adaptive {
        let untracked = policy.tracker.untracked();
        if untracked > 0 {
            dp.metrics
                .counters
                .adaptive_untracked_total
                .fetch_add(u64::from(untracked), Relaxed);
        }
        for block in policy.tracker.tick(now, &policy.config) {
            let dry_run = policy.dry_run;
            let counter = match dry_run {
                true => &dp.metrics.counters.sources_block_dry_run_total,
                false => &dp.metrics.counters.sources_blocked_total,
            };
            counter.fetch_add(1, Relaxed);
            let source = format!("{}/{}", block.source.addr, block.source.len);
            crate::security_log::event(
                dp,
                serde_json::json!({
                    "time": now_ms,
                    "event": if dry_run { "source_would_block" } else { "source_blocked" },
                    "client": source,
                    "policy": format!("SecurityPolicy {}", policy.policy),
                    "rule": format!("adaptiveBlocking.{}", block.metric.name()),
                    "rate": (block.rate * 10.0).round() / 10.0,
                    "threshold": (block.threshold * 10.0).round() / 10.0,
                    "learned": block.learned,
                    "offence": block.offence,
                    "duration_seconds": block.term.as_secs(),
                    "action": match (dry_run, policy.limit) {
                        (true, _) => "log".to_string(),
                        (false, None) => "block".to_string(),
                        (false, Some(n)) => format!("limit to {n}/s"),
                    },
                }),
            );
            if !dry_run {
                made.push(block_object(policy, &block, now_ms));
            }
        }
    }
    dp.generated.insert(made);
    dp.generated.expire(now_ms);
}
