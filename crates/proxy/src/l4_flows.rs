//! Flow records of the L4 connections (TCPRoute, TLS passthrough) a gateway carries:
//! client, listener, server name, backend cluster and endpoint, verdict, bytes each way
//! and duration. The last [`RING`] are kept for the admin listener's `/flows`; each
//! verdict is counted for `gatehouse_l4_connections_total{verdict}`.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Flow records kept.
pub const RING: usize = 1024;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carried to a backend, and closed by either end.
    Forwarded,
    /// No TLSRoute for its server name.
    NoRoute,
    /// No usable ClientHello.
    BadClientHello,
    /// The route's backend is invalid.
    InvalidBackend,
    NoEndpoints,
    /// The circuit breaker's connection limit.
    CircuitOpen,
    ConnectFailed,
    /// Broken while bytes were carried.
    Reset,
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Verdict::Forwarded,
        Verdict::NoRoute,
        Verdict::BadClientHello,
        Verdict::InvalidBackend,
        Verdict::NoEndpoints,
        Verdict::CircuitOpen,
        Verdict::ConnectFailed,
        Verdict::Reset,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Verdict::Forwarded => "forwarded",
            Verdict::NoRoute => "no_route",
            Verdict::BadClientHello => "bad_client_hello",
            Verdict::InvalidBackend => "invalid_backend",
            Verdict::NoEndpoints => "no_endpoints",
            Verdict::CircuitOpen => "circuit_open",
            Verdict::ConnectFailed => "upstream_connect_failed",
            Verdict::Reset => "upstream_reset",
        }
    }
}

/// One connection, as it ended.
#[derive(Debug, Clone)]
pub struct L4Flow {
    pub time_ms: u64,
    pub client: SocketAddr,
    pub listener: SocketAddr,
    /// The ClientHello's server name (TLS passthrough).
    pub server_name: Option<String>,
    pub cluster: Option<String>,
    pub endpoint: Option<SocketAddr>,
    pub verdict: Verdict,
    /// Bytes from the client to the backend, and back.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
}

impl L4Flow {
    pub fn json(&self) -> Value {
        json!({
            "time": self.time_ms,
            "source": self.client.to_string(),
            "listener": self.listener.to_string(),
            "serverName": self.server_name,
            "cluster": self.cluster,
            "endpoint": self.endpoint.map(|e| e.to_string()),
            "verdict": self.verdict.code(),
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "durationMs": self.duration_ms,
        })
    }
}

/// The recent flows and the counts by verdict.
#[derive(Default)]
pub struct L4Flows {
    ring: Mutex<VecDeque<L4Flow>>,
    counts: [AtomicU64; Verdict::ALL.len()],
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl L4Flows {
    pub fn record(&self, flow: L4Flow) {
        // `ALL` lists the verdicts in declaration order.
        self.counts[flow.verdict as usize].fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(flow.bytes_in, Relaxed);
        self.bytes_out.fetch_add(flow.bytes_out, Relaxed);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= RING {
            ring.pop_front();
        }
        ring.push_back(flow);
    }

    /// The last `n`, newest first.
    pub fn last(&self, n: usize) -> Vec<Value> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().take(n).map(L4Flow::json).collect()
    }

    /// The counters in Prometheus' text format (verdicts seen only).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let name = "gatehouse_l4_connections_total";
        let _ = writeln!(out, "# HELP {name} L4 connections (TCPRoute, TLS passthrough) by how they ended.\n# TYPE {name} counter");
        for (v, c) in Verdict::ALL.iter().zip(&self.counts) {
            let n = c.load(Relaxed);
            if n > 0 {
                let _ = writeln!(out, "{name}{{verdict=\"{}\"}} {n}", v.code());
            }
        }
        for (name, help, v) in [
            (
                "gatehouse_l4_received_bytes_total",
                "Bytes L4 clients sent to backends.",
                &self.bytes_in,
            ),
            (
                "gatehouse_l4_sent_bytes_total",
                "Bytes backends sent to L4 clients.",
                &self.bytes_out,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
    }
}
