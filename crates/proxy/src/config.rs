//! Data-plane settings that are not part of the Snapshot: timeouts and size limits.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// TCP connect timeout to an upstream endpoint.
    pub connect_timeout: Duration,
    /// Time to wait for upstream response headers when the route sets no timeout.
    pub upstream_timeout: Duration,
    /// Time a client has to send a complete request head (also bounds keep-alive idle).
    pub header_read_timeout: Duration,
    /// A request body read that brings nothing for this long ends the request (408);
    /// also the grace before `body_min_rate` applies.
    pub body_timeout: Duration,
    /// Bytes per second a request body must average once `body_timeout` has passed,
    /// counting only the time spent waiting for the client (0: no rate).
    pub body_min_rate: u64,
    /// HTTP/2 keep-alive ping interval; a peer that does not answer is dropped.
    pub h2_keepalive: Duration,
    /// Idle upstream connections are closed after this long.
    pub upstream_idle_timeout: Duration,
    /// Maximum size of a request head (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Maximum request body size; larger bodies get 413.
    pub max_body_bytes: u64,
    /// Merge duplicate slashes in paths before routing (`//a///b` → `/a/b`).
    pub merge_slashes: bool,
    /// How long in-flight requests may run after shutdown begins.
    pub drain_timeout: Duration,
    /// WAF error log (one ModSecurity-style line per matched rule); None: tracing.
    pub waf_log: Option<std::path::PathBuf>,
    /// WAF audit log (one JSON event per request that matched).
    pub waf_audit_log: Option<std::path::PathBuf>,
    /// Security event log (one JSON event per request refused by a limit); None:
    /// tracing.
    pub security_log: Option<std::path::PathBuf>,
    /// Connection limits per client address and per listener (0: none).
    pub conn_limits: crate::connlimit::ConnLimits,
    /// The Redis that counts Global rate limits (`redis://host:port/db`).
    pub redis: Option<String>,
    /// Peers whose connections start with a PROXY protocol header (load balancers).
    pub proxy_protocol: Option<std::sync::Arc<gatehouse_security::ipacl::AccessList>>,
    /// Responses the proxy makes itself say why in `x-gatehouse-reason`.
    pub debug_headers: bool,
    /// The access log (JSON lines), if any; one in `access_log_sample` requests
    /// answered below 400 is logged (errors always), with `access_log_fields` (none:
    /// all of [`crate::access_log::FIELDS`]).
    pub access_log: Option<std::path::PathBuf>,
    pub access_log_sample: u64,
    pub access_log_fields: Vec<String>,
    /// Time between analytics ticks (None: no analytics), and the ticks learned before
    /// anomalies are raised. The process runs the analytics; the data plane only
    /// counts.
    pub analytics_tick: Option<Duration>,
    pub analytics_warm_up: u64,
    /// Node proxies' admin addresses whose flow edges the analytics read.
    pub analytics_flows_from: Vec<String>,
    /// W3C trace propagation and spans ([`crate::trace`]), the share of new traces
    /// sampled, and where spans are exported (OTLP/HTTP), if anywhere.
    pub tracing: bool,
    pub trace_sample: f64,
    pub otlp_endpoint: Option<String>,
}

impl ProxyConfig {
    /// The pace a new request body must keep.
    pub fn body_pace(&self) -> crate::pace::BodyPace {
        crate::pace::BodyPace::new(self.body_timeout, self.body_min_rate)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 1024,
            h2_keepalive: Duration::from_secs(30),
            upstream_idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
            max_body_bytes: 100 * 1024 * 1024,
            merge_slashes: false,
            drain_timeout: Duration::from_secs(30),
            waf_log: None,
            waf_audit_log: None,
            security_log: None,
            proxy_protocol: None,
            redis: None,
            conn_limits: Default::default(),
            debug_headers: false,
            access_log: None,
            access_log_sample: 1,
            access_log_fields: Vec::new(),
            analytics_tick: None,
            analytics_warm_up: 60,
            analytics_flows_from: Vec::new(),
            tracing: false,
            trace_sample: 0.01,
            otlp_endpoint: None,
        }
    }
}
