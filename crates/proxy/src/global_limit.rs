//! Global rate limits: counted once for every replica in Redis, with the same GCRA as
//! local limits, run atomically by a Lua script on Redis's own clock (so replicas with
//! skewed clocks still agree). One multiplexed connection per proxy, made on first use
//! and remade by the client after a failure; while Redis cannot be reached, attempts
//! are spaced a second apart, and each limit fails open (the request passes) or closed
//! (503) as configured, counted in `gatehouse_ratelimit_store_errors_total`.

use gatehouse_security::ratelimit::{Decision, Quota};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// GCRA in microseconds. KEYS[1]: the key; ARGV: interval, capacity. Returns allowed
/// (1/0), retry after, reset, remaining.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + interval
local allowed_from = nxt - capacity
if now < allowed_from then
  return {0, allowed_from - now, tat - now, 0}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, 0, nxt - now, math.floor((now + capacity - nxt) / interval)}
"#;

/// How long requests wait on Redis before the limit's failure mode applies.
const TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connection attempt, the next waits this long.
const RETRY: Duration = Duration::from_secs(1);

/// The shared store of Global limits.
pub struct GlobalStore {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    script: redis::Script,
    epoch: Instant,
    /// Milliseconds since `epoch` before which no new connection is tried.
    quiet_until: AtomicU64,
}

impl std::fmt::Debug for GlobalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalStore").finish_non_exhaustive()
    }
}

/// Why the store gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rate-limit store unreachable (retrying)")]
    Down,
    #[error("rate-limit store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("rate-limit store did not answer in time")]
    Timeout,
}

impl GlobalStore {
    /// A store at `url` (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str) -> Result<GlobalStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {url:?}: {e}"))?;
        Ok(GlobalStore {
            client,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(GCRA),
            epoch: Instant::now(),
            quiet_until: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The connection, made if need be.
    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        if self.now_ms() < self.quiet_until.load(Ordering::Relaxed) {
            return Err(StoreError::Down);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(200);
        match tokio::time::timeout(
            TIMEOUT * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                self.quiet_until
                    .store(self.now_ms() + RETRY.as_millis() as u64, Ordering::Relaxed);
                Err(e.into())
            }
            Err(_) => {
                self.quiet_until
                    .store(self.now_ms() + RETRY.as_millis() as u64, Ordering::Relaxed);
                Err(StoreError::Timeout)
            }
        }
    }

    /// Counts one request under `key` against `quota`.
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Decision, StoreError> {
        let mut conn = self.connection().await?;
        let requests = u64::from(quota.requests.max(1));
        let interval = (quota.period.as_micros() as u64 / requests).max(1);
        let capacity = interval.saturating_mul(u64::from(quota.burst.max(1)));
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(capacity);
        let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
        let reply = match tokio::time::timeout(TIMEOUT, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError::Timeout),
        };
        let us = |i: usize| Duration::from_micros(reply.get(i).copied().unwrap_or(0).max(0) as u64);
        Ok(match reply.first() {
            Some(1) => Decision::Allow {
                remaining: reply
                    .get(3)
                    .copied()
                    .unwrap_or(0)
                    .clamp(0, i64::from(u32::MAX)) as u32,
                reset: us(2),
            },
            _ => Decision::Deny {
                retry_after: us(1),
                reset: us(2),
            },
        })
    }
}
