//! `DataPlane`: the current Snapshot behind an `ArcSwap`, the listeners it needs, the
//! upstream pools and metrics. `apply` binds new ports, swaps, then closes old ports;
//! a request loads the Snapshot once and keeps it to the end, so a swap never tears it.

use crate::config::ProxyConfig;
use crate::health::HealthCheckers;
use crate::listener::Mode;
use crate::listener::{self, ListenerHandle};
use crate::metrics::{Metrics, RouteStats};
use crate::upstream::Upstreams;
use crate::workers::Workers;
use arc_swap::ArcSwap;
use gatehouse_translate::Snapshot;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// The Snapshot being served plus the per-route metric handles for its route ids.
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub stats: Vec<Arc<RouteStats>>,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Active(v{})", self.snapshot.version)
    }
}

/// Counts open downstream connections so shutdown can wait for them to drain.
#[derive(Default)]
pub struct ConnTracker {
    open: AtomicUsize,
    idle: Notify,
}

pub struct ConnGuard<'a>(&'a ConnTracker);

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl ConnTracker {
    pub fn enter(&self) -> ConnGuard<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// What a bound port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http,
    Https,
    /// TCP or TLS passthrough, routed at L4.
    L4,
}

impl Protocol {
    fn of(p: &gatehouse_translate::BoundPort) -> Self {
        match (&p.l4, &p.tls) {
            (Some(_), _) => Protocol::L4,
            (None, Some(_)) => Protocol::Https,
            (None, None) => Protocol::Http,
        }
    }
}

pub struct DataPlane {
    pub(crate) state: Arc<ArcSwap<Active>>,
    pub metrics: Metrics,
    pub(crate) upstreams: Upstreams,
    pub cfg: ProxyConfig,
    pub(crate) no_route: Arc<RouteStats>,
    pub(crate) server: auto::Builder<TokioExecutor>,
    /// Bound listeners by address, with what they speak.
    listeners: tokio::sync::Mutex<HashMap<SocketAddr, (Protocol, ListenerHandle)>>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) conns: ConnTracker,
    pub(crate) health: HealthCheckers,
    ready: AtomicBool,
    /// Worker threads serving the connections, if any.
    pub(crate) workers: Option<Arc<Workers>>,
    /// Where WAF verdicts go (else the tracing log).
    pub security_logs: crate::security_log::SecurityLogs,
    /// The requests served last, and live taps on them.
    pub recent: crate::recent::Recent,
    /// Where Global rate limits are counted (`ProxyConfig::redis`).
    pub global_limits: Option<crate::global_limit::GlobalStore>,
    /// Live connection counts, if `ProxyConfig::conn_limits` sets any limit.
    pub conn_limits: Option<Arc<crate::connlimit::ConnCounts>>,
    /// Objects made by adaptive controls (SourceBlocks), added to every translation.
    pub generated: Arc<crate::generated::Generated>,
    /// Routes of a lower priority than this are shed (`crate::shed`).
    pub(crate) shed_below: std::sync::atomic::AtomicI64,
    /// Security events about one address: at most one a second.
    pub(crate) event_throttle: crate::security_log::Throttle,
    /// Paths the admin listener serves for other parts of the process.
    pub admin_ext: std::sync::Mutex<Vec<crate::admin::AdminRoute>>,
    /// Spans and trace propagation, when tracing is on (set once, at start).
    pub tracer: std::sync::OnceLock<Arc<crate::trace::Tracer>>,
}

impl DataPlane {
    pub fn new(cfg: ProxyConfig) -> Arc<Self> {
        Self::with_workers(cfg, None)
    }

    /// A data plane whose connections are served on `workers` (see
    /// [`crate::workers`]); without them, on the runtime that binds the ports.
    pub fn with_workers(cfg: ProxyConfig, workers: Option<Arc<Workers>>) -> Arc<Self> {
        Self::with_workers_and_logs(cfg, workers, crate::security_log::SecurityLogs::default())
    }

    /// As [`DataPlane::with_workers`], with WAF logs written to files.
    pub fn with_workers_and_logs(
        cfg: ProxyConfig,
        workers: Option<Arc<Workers>>,
        security_logs: crate::security_log::SecurityLogs,
    ) -> Arc<Self> {
        let metrics = Metrics::default();
        let no_route = metrics.stats_named("none");
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .max_buf_size(cfg.max_header_bytes.max(8192));
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(cfg.max_header_bytes as u32)
            .keep_alive_interval(cfg.h2_keepalive)
            .max_concurrent_streams(1024);
        let empty = Active {
            snapshot: Arc::new(Snapshot::empty()),
            stats: Vec::new(),
        };
        let cfg_limits = cfg.conn_limits;
        let global_limits = cfg.redis.as_deref().and_then(|url| {
            crate::global_limit::GlobalStore::new(url)
                .map_err(|e| tracing::error!("{e}: Global rate limits fail as configured"))
                .ok()
        });
        Arc::new(DataPlane {
            state: Arc::new(ArcSwap::from_pointee(empty)),
            metrics,
            upstreams: Upstreams::new(&cfg),
            cfg,
            no_route,
            server,
            listeners: tokio::sync::Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
            conns: ConnTracker::default(),
            health: HealthCheckers::default(),
            ready: AtomicBool::new(false),
            workers,
            security_logs,
            recent: Default::default(),
            global_limits,
            conn_limits: (cfg_limits != crate::connlimit::ConnLimits::default())
                .then(|| Arc::new(crate::connlimit::ConnCounts::new(cfg_limits))),
            generated: Arc::default(),
            shed_below: std::sync::atomic::AtomicI64::new(i64::MIN),
            event_throttle: Default::default(),
            admin_ext: Default::default(),
            tracer: Default::default(),
        })
    }

    /// The Snapshot being served now.
    pub fn current(&self) -> Arc<Active> {
        self.state.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Installs a Snapshot: binds any new ports first (a port that cannot be bound
    /// rejects the Snapshot and keeps the old one), swaps, then closes unused ports.
    /// A port that switches between plain text and TLS is closed and bound again.
    pub async fn apply(self: &Arc<Self>, snapshot: Snapshot) -> Result<(), String> {
        let mut listeners = self.listeners.lock().await;
        let desired: HashMap<SocketAddr, Protocol> = snapshot
            .ports
            .iter()
            .map(|p| (p.addr, Protocol::of(p)))
            .collect();
        let mut bound = Vec::new();
        for (&addr, &tls) in &desired {
            if listeners.get(&addr).is_some_and(|(t, _)| *t == tls) {
                continue;
            }
            let mode = match tls {
                Protocol::Https => Mode::Https(
                    listener::acceptor(self, addr)
                        .map_err(|e| format!("TLS setup for {addr}: {e}"))?,
                ),
                Protocol::Http => Mode::Http,
                Protocol::L4 => Mode::L4,
            };
            if let Some((_, old)) = listeners.remove(&addr) {
                tracing::info!(%addr, protocol = ?tls, "listener changes protocol; rebinding");
                old.close().await;
            }
            match listener::bind(addr) {
                Ok(l) => bound.push((addr, tls, l, mode)),
                Err(e) => {
                    self.metrics
                        .counters
                        .config_rejected_total
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(format!("cannot listen on {addr}: {e}"));
                }
            }
        }
        let version = snapshot.version;
        let stats = {
            // An incremental Snapshot keeps the previous route names and appends its
            // own: keep their stats and look up only the new ones.
            let current = self.current();
            let old = &current.snapshot.route_names;
            let names = &snapshot.route_names;
            let shared = old.len() <= names.len()
                && current.stats.len() == old.len()
                && old.iter().zip(names).all(|(a, b)| Arc::ptr_eq(a, b));
            if shared {
                let mut stats = current.stats.clone();
                stats.extend(self.metrics.stats_for(&names[old.len()..]));
                stats
            } else {
                self.metrics.stats_for(names)
            }
        };
        self.state.store(Arc::new(Active {
            snapshot: Arc::new(snapshot),
            stats,
        }));
        for (addr, tls, l, mode) in bound {
            tracing::info!(%addr, protocol = ?tls, "listening");
            listeners.insert(addr, (tls, listener::spawn(self.clone(), l, addr, mode)));
        }
        listeners.retain(|addr, (_, handle)| {
            let keep = desired.contains_key(addr);
            if !keep {
                tracing::info!(%addr, "closing listener no longer in config");
                handle.stop();
            }
            keep
        });
        HealthCheckers::sync(self);
        // The old Snapshot may live on in requests still running; what is freed by now
        // (the build's temporaries) goes back to the OS.
        crate::memory::release_free();
        let c = &self.metrics.counters;
        c.config_version.store(version, Ordering::Relaxed);
        c.config_reloads_total.fetch_add(1, Ordering::Relaxed);
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Changes to true when the data plane starts shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Runs `f` every `period` (the first time at once) until the data plane shuts
    /// down; a late tick is not made up for.
    pub fn every(
        self: Arc<Self>,
        period: Duration,
        mut f: impl FnMut(&DataPlane) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = shutdown.changed() => return,
                }
                f(&self);
            }
        })
    }

    /// Starts the loops of the adaptive controls (adaptive blocking and surge
    /// protection); they end when the data plane shuts down.
    pub fn start_controls(self: &Arc<Self>) {
        crate::adaptive::spawn(self.clone());
        crate::shed::spawn(self.clone());
        crate::traffic_controls::spawn(self.clone());
    }

    /// Addresses currently bound.
    pub async fn bound(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.listeners.lock().await.keys().copied().collect();
        v.sort();
        v
    }

    /// Graceful shutdown: stop accepting, ask every connection to finish its in-flight
    /// requests, and wait for them up to the drain timeout.
    pub async fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        for (_, (_, h)) in self.listeners.lock().await.drain() {
            h.close().await;
        }
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + self.cfg.drain_timeout;
        while self.conns.open() > 0 && Instant::now() < deadline {
            let wait = self.conns.idle.notified();
            if self.conns.open() == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
        }
        let left = self.conns.open();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain timeout reached; closing remaining connections"
            );
        }
    }
}
