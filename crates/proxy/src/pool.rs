//! Upstream connection pooling, whatever the connection type: keep-alive connections
//! per endpoint and cluster, each counted against its cluster's open connections so
//! that the circuit breaker's `max_connections` holds. A request that finds the limit
//! reached closes an idle connection of the cluster, else waits (up to `max_pending`
//! requests may), else is refused. A connection goes back to the pool only when its
//! user says the exchange ended cleanly.

use gatehouse_translate::cluster::ConnectionCounts;
use gatehouse_translate::Cluster;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A pooled connection: it knows whether its peer has closed it.
pub trait Reusable: Send + 'static {
    fn is_closed(&self) -> bool;
}

/// Pool key: the endpoint, the cluster counts its connections belong to, and the
/// worker thread whose reactor drives the connection ([`crate::workers::current`]).
type Key = (SocketAddr, usize, u16);

pub struct Pool<C> {
    inner: Arc<Inner<C>>,
}

struct Inner<C> {
    idle: Mutex<HashMap<Key, Vec<Idle<C>>>>,
    idle_timeout: Duration,
}

struct Idle<C> {
    conn: Pooled<C>,
    since: Instant,
}

/// A connection and the slot it takes in its cluster's count.
pub struct Pooled<C> {
    pub conn: C,
    _slot: Slot,
}

/// One open connection counted on a cluster; the count drops with it.
pub struct Slot(Arc<ConnectionCounts>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_one();
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

/// What a request gets from the pool: an idle connection, or a slot to open one in.
pub enum Acquired<C> {
    Idle(Pooled<C>),
    New(Slot),
}

/// A connection lent to one exchange: [`Lease::release`] gives it back for the next
/// one; dropping the lease closes it.
pub struct Lease<C: Reusable> {
    conn: Pooled<C>,
    key: Key,
    pool: Weak<Inner<C>>,
}

impl<C: Reusable> Lease<C> {
    pub fn conn(&mut self) -> &mut C {
        &mut self.conn.conn
    }

    /// Returns the connection to the pool.
    pub fn release(self) {
        let Lease { conn, key, pool } = self;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if conn.conn.is_closed() {
            return;
        }
        let counts = conn._slot.0.clone();
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.entry(key).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        // A request waiting for a connection of this cluster may now take or close it.
        counts.released.notify_one();
    }
}

impl<C: Reusable> Pool<C> {
    pub fn new(idle_timeout: Duration) -> Self {
        let inner = Arc::new(Inner {
            idle: Mutex::new(HashMap::new()),
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
        Pool { inner }
    }

    /// An idle connection to `endpoint` of `cluster`, or a slot to open one in (within
    /// the cluster's connection limit, waiting if the policy lets it).
    pub async fn acquire(
        &self,
        cluster: &Cluster,
        endpoint: SocketAddr,
    ) -> Result<(Acquired<C>, Key), Overflow> {
        let counts = cluster.connections();
        let key = (
            endpoint,
            counts as *const ConnectionCounts as usize,
            crate::workers::current(),
        );
        let mut waiting = None;
        loop {
            if let Some(c) = self.inner.checkout(key) {
                return Ok((Acquired::Idle(c), key));
            }
            if let Some(slot) = self.inner.slot(cluster, key.1) {
                return Ok((Acquired::New(slot), key));
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
                    return Err(match pending {
                        0 => Overflow::MaxConnections(max),
                        p => Overflow::MaxPending(p),
                    });
                }
                waiting = Some(Pending(cluster.connections_arc()));
            }
            // Woken when a connection closes or goes idle; the timeout covers a
            // wake-up that raced with the checks above.
            let _ =
                tokio::time::timeout(Duration::from_millis(50), counts.released.notified()).await;
        }
    }

    /// Lends `conn` (opened in `slot`, or taken idle) for one exchange.
    pub fn lease(&self, conn: Pooled<C>, key: Key) -> Lease<C> {
        Lease {
            conn,
            key,
            pool: Arc::downgrade(&self.inner),
        }
    }
}

impl<C> Pooled<C> {
    pub fn new(conn: C, slot: Slot) -> Self {
        Pooled { conn, _slot: slot }
    }
}

/// Counts one request waiting for a connection.
struct Pending(Arc<ConnectionCounts>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C: Reusable> Inner<C> {
    /// A live idle connection to `key`.
    fn checkout(&self, key: Key) -> Option<Pooled<C>> {
        let mut map = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.get_mut(&key)?;
        let mut found = None;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() <= self.idle_timeout && !idle.conn.conn.is_closed() {
                found = Some(idle.conn);
                break;
            }
        }
        if list.is_empty() {
            map.remove(&key);
        }
        found
    }

    /// A slot for a new connection of `cluster` (whose counts are `id`): free under no
    /// limit; under `max_connections`, if fewer are open or an idle one of the cluster
    /// (to another endpoint) can be closed for it.
    fn slot(&self, cluster: &Cluster, id: usize) -> Option<Slot> {
        let counts = cluster.connections();
        let Some(max) = cluster.policy.max_connections else {
            counts.open.fetch_add(1, Ordering::AcqRel);
            return Some(Slot(cluster.connections_arc()));
        };
        let take = || {
            counts
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                    (open < max).then_some(open + 1)
                })
                .is_ok()
        };
        if take() || (self.evict_one(id) && take()) {
            return Some(Slot(cluster.connections_arc()));
        }
        None
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
            list.retain(|i| i.since.elapsed() <= timeout && !i.conn.conn.is_closed());
            !list.is_empty()
        });
    }
}
