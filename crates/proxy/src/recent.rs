//! The requests the proxy served last, and live taps on them. Each request's end
//! leaves a compact [`Seen`] record (its host and target cut to a few dozen bytes,
//! copied inline: nothing of the request's buffers is held, and nothing allocated) in
//! a ring of the last [`RING`] requests, and, when the answer is an error or the
//! proxy's own, in a second ring of [`FAILED_RING`], so that a failure stays
//! explainable for long on a busy proxy. `/requests/{id}` searches both to explain one request
//! (`gatehouse ctl explain`): the route that took it, the cluster and endpoint it went
//! to, and the reason of its answer. While someone taps (`/tap`, `gatehouse ctl
//! tap`), each record also goes to the taps whose filter it passes; with no tap, that
//! costs one atomic load.

use crate::reason::Reason;
use gatehouse_translate::cluster::Cluster;
use http::Method;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many requests the ring of every request keeps (small, so that it stays in
/// cache: each request writes one record).
pub const RING: usize = 512;

/// How many errors and answers of the proxy's own the second ring keeps.
pub const FAILED_RING: usize = 2048;

/// A short text kept inline: the first `N` bytes of what it was made from.
#[derive(Clone, Copy)]
pub struct Short<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Short<N> {
    pub fn new(b: &[u8]) -> Self {
        let len = b.len().min(N).min(u8::MAX as usize);
        let mut bytes = [0u8; N];
        bytes[..len].copy_from_slice(&b[..len]);
        Short {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl<const N: usize> std::fmt::Debug for Short<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

/// One request, as it ended.
#[derive(Clone, Debug)]
pub struct Seen {
    pub time_ms: u64,
    /// Its id (the first 64 bytes of a longer one).
    pub request_id: Short<64>,
    pub client: IpAddr,
    pub method: Method,
    pub host: Short<48>,
    /// The request target (path and query) as received, its first 96 bytes.
    pub target: Short<96>,
    pub protocol: &'static str,
    pub status: u16,
    pub reason: Reason,
    /// The route that took it (None: none did).
    pub route: Option<Arc<str>>,
    /// Where it went, when it went upstream.
    pub upstream: Option<Upstream>,
    pub duration_us: u64,
    /// Its span, when tracing is on.
    pub trace: Option<crate::trace::TraceIds>,
}

/// The cluster and endpoint a request went to.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub cluster: Arc<Cluster>,
    pub endpoint: SocketAddr,
}

impl Upstream {
    /// Marks `resp` as the answer of a request that went here.
    pub fn tag<B>(&self, mut resp: http::Response<B>) -> http::Response<B> {
        resp.extensions_mut().insert(self.clone());
        resp
    }
}

impl Seen {
    /// The record as JSON, with what decided its answer.
    pub fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "time": self.time_ms,
            "requestId": self.request_id.text(),
            "client": self.client.to_string(),
            "method": self.method.as_str(),
            "host": self.host.text(),
            "target": self.target.text(),
            "protocol": self.protocol,
            "status": self.status,
            "reason": self.reason.code(),
            "route": self.route.as_deref(),
            "durationMs": self.duration_us as f64 / 1e3,
        });
        if let Reason::Waf(rule) = self.reason {
            v["wafRule"] = rule.into();
        }
        if let Some(t) = &self.trace {
            v["traceId"] = t.trace_hex().into();
            v["spanId"] = t.span_hex().into();
        }
        if let Some(u) = &self.upstream {
            v["cluster"] = u.cluster.name.clone().into();
            v["service"] = format!(
                "{}/{}",
                u.cluster.source.namespace, u.cluster.source.service
            )
            .into();
            v["endpoint"] = u.endpoint.to_string().into();
            v["balancer"] = serde_json::to_value(&u.cluster.policy.balancer).unwrap_or_default();
        }
        v["explanation"] = self.explain().into();
        v
    }

    /// What decided the answer, in words.
    pub fn explain(&self) -> String {
        let route = match &self.route {
            Some(r) => format!("route {r} took the request"),
            None => "no route took the request".to_string(),
        };
        let to = self.upstream.as_ref().map(|u| {
            format!(
                "; it went to cluster {} (endpoint {}, chosen by {:?})",
                u.cluster.name, u.endpoint, u.cluster.policy.balancer
            )
        });
        let why = match self.reason {
            Reason::Upstream => format!("the upstream answered {}", self.status),
            Reason::NoRoute => "no route matches its host and path".into(),
            Reason::BadRequest => "the request is malformed".into(),
            Reason::Misdirected => {
                "its TLS server name chose another listener than its Host".into()
            }
            Reason::ListenerGone => "its listener is no longer configured".into(),
            Reason::Fixed => "the route answers with a fixed response".into(),
            Reason::Redirect => "the route redirects".into(),
            Reason::InvalidBackend => {
                "the route's backend is invalid (see /config warnings)".into()
            }
            Reason::Blocked => "its client address is blocked (a SourceBlock)".into(),
            Reason::IpDenied => {
                "its client address is not allowed by the route's access list".into()
            }
            Reason::RateLimited => "a rate limit refused it".into(),
            Reason::Shed => "the proxy shed it under load (surge protection)".into(),
            Reason::Waf(rule) => format!("the web application firewall blocked it (rule {rule})"),
            Reason::BodyTooLarge => "its body is over the limit".into(),
            Reason::BodyTimeout => "its body came too slowly".into(),
            Reason::NoEndpoints => "the cluster has no ready endpoint".into(),
            Reason::CircuitOpen => "a circuit breaker of the cluster is open".into(),
            Reason::ConnectFailed => "no connection to the upstream could be made".into(),
            Reason::UpstreamReset => "the upstream connection broke before the response".into(),
            Reason::UpstreamTimeout => "the upstream did not answer in time".into(),
        };
        format!(
            "{route}{}; answered {}: {why}",
            to.unwrap_or_default(),
            self.status
        )
    }
}

/// What a tap wants to see.
#[derive(Debug, Clone, Default)]
pub struct TapFilter {
    pub route: Option<String>,
    pub host: Option<String>,
    /// A prefix of the request target.
    pub path: Option<String>,
    pub method: Option<String>,
    /// A status class (`5`) or code (`503`).
    pub status: Option<String>,
}

impl TapFilter {
    pub fn passes(&self, s: &Seen) -> bool {
        let eq =
            |want: &Option<String>, have: &[u8]| want.as_ref().is_none_or(|w| w.as_bytes() == have);
        eq(&self.route, s.route.as_deref().unwrap_or("").as_bytes())
            && eq(&self.host, s.host.as_bytes())
            && eq(&self.method, s.method.as_str().as_bytes())
            && self
                .path
                .as_ref()
                .is_none_or(|p| s.target.as_bytes().starts_with(p.as_bytes()))
            && self
                .status
                .as_ref()
                .is_none_or(|st| s.status.to_string().starts_with(st.as_str()))
    }
}

/// One live tap.
struct Tap {
    filter: TapFilter,
    tx: tokio::sync::mpsc::Sender<Arc<Seen>>,
}

/// A ring of records.
struct Ring {
    slots: Box<[Mutex<Option<Seen>>]>,
    next: AtomicUsize,
}

impl Ring {
    fn new(size: usize) -> Ring {
        Ring {
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn push(&self, seen: Seen) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        *self.slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
    }

    fn find(&self, id: &Short<64>) -> Option<Seen> {
        self.slots.iter().find_map(|s| {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .filter(|r| r.request_id.as_bytes() == id.as_bytes())
                .cloned()
        })
    }

    fn last(&self, n: usize) -> Vec<Seen> {
        let next = self.next.load(Ordering::Relaxed);
        (1..=n.min(self.slots.len()).min(next))
            .filter_map(|k| {
                let i = (next - k) % self.slots.len();
                self.slots[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .collect()
    }
}

/// The rings of recent requests and the taps.
pub struct Recent {
    /// Every request.
    all: Ring,
    /// Errors and the proxy's own answers.
    failed: Ring,
    taps: Mutex<Vec<Tap>>,
    /// How many taps there are: with none, recording skips them with one load.
    tapping: AtomicUsize,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("taps", &self.tapping.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            all: Ring::new(RING),
            failed: Ring::new(FAILED_RING),
            taps: Mutex::new(Vec::new()),
            tapping: AtomicUsize::new(0),
        }
    }
}

impl Recent {
    /// Keeps `seen`, and hands it to the taps it passes (a tap that cannot keep up
    /// misses records rather than slowing requests down).
    pub fn record(&self, seen: Seen) {
        if self.tapping.load(Ordering::Relaxed) > 0 {
            let shared = Arc::new(seen.clone());
            let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
            taps.retain(|t| !t.tx.is_closed());
            self.tapping.store(taps.len(), Ordering::Relaxed);
            for t in taps.iter().filter(|t| t.filter.passes(&shared)) {
                let _ = t.tx.try_send(shared.clone());
            }
        }
        if seen.status >= 400 || seen.reason != Reason::Upstream {
            self.failed.push(seen.clone());
        }
        self.all.push(seen);
    }

    /// The record of the request with `id`, if it is still in a ring.
    pub fn find(&self, id: &str) -> Option<Seen> {
        let id = Short::new(id.as_bytes());
        self.all.find(&id).or_else(|| self.failed.find(&id))
    }

    /// The last `n` records, newest first.
    pub fn last(&self, n: usize) -> Vec<Seen> {
        self.all.last(n)
    }

    /// The last `n` records of errors and the proxy's own answers, newest first.
    pub fn last_failed(&self, n: usize) -> Vec<Seen> {
        self.failed.last(n)
    }

    /// A new tap: records that pass `filter` come on the receiver until it is dropped.
    pub fn tap(&self, filter: TapFilter) -> tokio::sync::mpsc::Receiver<Arc<Seen>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        taps.push(Tap { filter, tx });
        self.tapping.store(taps.len(), Ordering::Relaxed);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, status: u16, target: &'static str) -> Seen {
        Seen {
            time_ms: 1,
            request_id: Short::new(id.as_bytes()),
            client: "10.0.0.1".parse().expect("ip"),
            method: Method::GET,
            host: Short::new(b"app.example"),
            target: Short::new(target.as_bytes()),
            protocol: "HTTP/1.1",
            status,
            reason: if status == 404 {
                Reason::NoRoute
            } else {
                Reason::Upstream
            },
            route: (status != 404).then(|| Arc::from("ingress/default/app")),
            upstream: None,
            duration_us: 1500,
            trace: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_last_requests_and_taps_see_what_they_ask_for() {
        let r = Recent::default();
        let mut errors = r.tap(TapFilter {
            status: Some("4".into()),
            ..TapFilter::default()
        });
        for i in 0..RING + 10 {
            r.record(seen(
                &format!("id-{i}"),
                if i % 100 == 0 { 404 } else { 200 },
                "/a",
            ));
        }
        assert!(r.find("id-3").is_none(), "pushed out of the ring");
        let last = r.find(&format!("id-{}", RING + 9)).expect("the newest");
        assert_eq!(last.status, 200);
        assert_eq!(r.last(3)[0].request_id.text(), format!("id-{}", RING + 9));
        let mut tapped = 0;
        while let Ok(s) = errors.try_recv() {
            assert_eq!(s.status, 404);
            tapped += 1;
        }
        assert_eq!(tapped, (RING + 10).div_ceil(100));
        assert_eq!(
            r.find("id-0").map(|s| s.status),
            Some(404),
            "an error stays longer, in the ring of failures"
        );
        assert_eq!(Short::<8>::new(b"/a/long/path").as_bytes(), b"/a/long/");
        let v = seen("x", 404, "/nowhere").json();
        assert_eq!(v["reason"], "no_route");
        assert!(v["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("no route matches")));
        drop(errors);
        r.record(seen("after", 404, "/b"));
        assert_eq!(
            r.tapping.load(Ordering::Relaxed),
            0,
            "a dropped tap is forgotten"
        );
    }
}
