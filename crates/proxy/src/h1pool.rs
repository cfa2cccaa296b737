//! The HTTP/1.1 upstream connection pool: keep-alive connections per endpoint and
//! cluster, each counted against its cluster's open connections so that the circuit
//! breaker's `max_connections` holds. A request that finds the limit reached evicts an
//! idle connection of the cluster, else waits (up to `max_pending` requests may), else
//! is refused. A connection goes back to the pool only once its response body has been
//! read to the end.

use crate::body::Body;
use crate::upstream::UpstreamError;
use gatehouse_translate::cluster::ConnectionCounts;
use gatehouse_translate::Cluster;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Pool key: the endpoint, and the cluster counts its connections belong to.
type Key = (SocketAddr, usize);

pub struct H1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One open connection and the slot it takes in its cluster's count.
struct Conn {
    sender: SendRequest<Body>,
    slot: Slot,
}

/// One open connection counted on a cluster; the count drops with it.
struct Slot(Arc<ConnectionCounts>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_one();
    }
}

/// A connection lent to one request: give it back with [`Lease::release`] once the
/// response body has ended; dropped otherwise, which closes it.
pub struct Lease {
    conn: Option<Conn>,
    key: Key,
    pool: Weak<Inner>,
}

impl Lease {
    /// Returns the connection to the pool for the next request.
    pub fn release(mut self) {
        let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) else {
            return;
        };
        if conn.sender.is_closed() {
            return;
        }
        let counts = conn.slot.0.clone();
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.entry(self.key).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        // A request waiting for a connection of this cluster may now evict this one.
        counts.released.notify_one();
    }
}

/// Why the circuit breaker refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `max_connections` are open and no request may wait.
    MaxConnections(u32),
    /// `max_connections` are open and `max_pending` requests already wait.
    MaxPending(u32),
}

impl H1Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let inner = Arc::new(Inner {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
        });
        // Close connections idle too long, even when no request comes to find them.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            let every = (idle_timeout / 2).max(Duration::from_millis(100));
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.sweep();
                }
            });
        }
        H1Pool { inner }
    }

    /// Sends `req` (whose URI is already origin-form or absolute) to `endpoint` of
    /// `cluster` on a pooled or new connection.
    pub async fn send(
        &self,
        cluster: &Cluster,
        endpoint: SocketAddr,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let counts = cluster.connections_arc();
        let key = (endpoint, Arc::as_ptr(&counts) as usize);
        let mut waiting = None;
        let mut conn = loop {
            if let Some(c) = self.inner.checkout(key).await {
                break c;
            }
            if let Some(slot) = self.inner.slot(&counts, cluster.policy.max_connections) {
                break self.connect(slot, endpoint).await?;
            }
            // At the limit with nothing idle to close: wait, if few enough already do.
            if waiting.is_none() {
                let max = cluster.policy.max_connections.unwrap_or(0);
                let pending = cluster.policy.max_pending.unwrap_or(0);
                let queued = counts
                    .pending
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                        (p < pending).then_some(p + 1)
                    })
                    .is_ok();
                if !queued {
                    return Err(UpstreamError::Overflow(match pending {
                        0 => Overflow::MaxConnections(max),
                        p => Overflow::MaxPending(p),
                    }));
                }
                waiting = Some(Pending(counts.clone()));
            }
            // Woken when a connection closes or goes idle; the timeout covers a
            // wake-up that raced with the checks above.
            let _ =
                tokio::time::timeout(Duration::from_millis(50), counts.released.notified()).await;
        };
        drop(waiting);
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Exchange(Box::new(e)))?;
        let lease = Lease {
            conn: Some(conn),
            key,
            pool: Arc::downgrade(&self.inner),
        };
        Ok((resp, lease))
    }

    /// Opens a connection to `endpoint` in `slot`.
    async fn connect(&self, slot: Slot, endpoint: SocketAddr) -> Result<Conn, UpstreamError> {
        let tcp = tokio::time::timeout(
            self.inner.connect_timeout,
            tokio::net::TcpStream::connect(endpoint),
        )
        .await
        .map_err(|_| UpstreamError::Connect(format!("connect to {endpoint} timed out")))?
        .map_err(|e| UpstreamError::Connect(format!("connect to {endpoint}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 to {endpoint}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %endpoint, error = %e, "upstream connection ended");
            }
        });
        Ok(Conn { sender, slot })
    }
}

/// Counts one request waiting for a connection.
struct Pending(Arc<ConnectionCounts>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    /// A slot for a new connection of the cluster counted by `counts`: free under no
    /// limit; under `max`, if fewer are open or an idle one of the cluster (to another
    /// endpoint) can be closed for it.
    fn slot(&self, counts: &Arc<ConnectionCounts>, max: Option<u32>) -> Option<Slot> {
        let Some(max) = max else {
            counts.open.fetch_add(1, Ordering::AcqRel);
            return Some(Slot(counts.clone()));
        };
        let take = || {
            counts
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                    (open < max).then_some(open + 1)
                })
                .is_ok()
        };
        if take() || (self.evict_one(Arc::as_ptr(counts) as usize) && take()) {
            return Some(Slot(counts.clone()));
        }
        None
    }

    /// A live idle connection to `key`, ready for a request.
    async fn checkout(&self, key: Key) -> Option<Conn> {
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let list = map.get_mut(&key)?;
                let found = list.pop();
                if list.is_empty() {
                    map.remove(&key);
                }
                found?
            };
            if idle.since.elapsed() > self.idle_timeout || idle.conn.sender.is_closed() {
                continue;
            }
            let mut conn = idle.conn;
            // The previous response may still be finishing on the connection task.
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Closes one idle connection counted on `counts`; false if it has none.
    fn evict_one(&self, counts: usize) -> bool {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let Some(key) = map
            .iter()
            .find(|(k, v)| k.1 == counts && !v.is_empty())
            .map(|(k, _)| *k)
        else {
            return false;
        };
        // The oldest idle connection goes.
        let victim = map.get_mut(&key).map(|list| list.remove(0));
        if map.get(&key).is_some_and(Vec::is_empty) {
            map.remove(&key);
        }
        drop(map);
        victim.is_some()
    }

    /// Drops connections idle too long or closed by the peer.
    fn sweep(&self) {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = self.idle_timeout;
        map.retain(|_, list| {
            list.retain(|i| i.since.elapsed() <= timeout && !i.conn.sender.is_closed());
            !list.is_empty()
        });
    }
}
