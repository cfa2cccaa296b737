//! Gatehouse's traffic analytics, computed off the hot path from what the data planes
//! count: per-key baselines of rate, error ratio and latency ([`baseline`]), anomalies
//! raised as events with their evidence ([`detect`]), short-term forecasts, the
//! evaluation harness that injects faults and scores the detector ([`eval`]),
//! least-privilege policies from observed east-west calls ([`policy_suggest`]), and the
//! dashboard's assets ([`dashboard`]). It knows nothing of sockets or of the proxy:
//! callers hand it counts each tick.

pub mod analytics;
pub mod baseline;
pub mod dashboard;
pub mod detect;
pub mod eval;
pub mod policy_suggest;
pub mod quantile;

pub use analytics::{Analytics, AnalyticsConfig, Observation};
pub use detect::{Event, EventKind};
