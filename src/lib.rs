//! The `gatehouse` binary's wiring: the embedded default (`run`: manifest directory →
//! store → translate → data plane, with hot reload), `validate`, and the demo echo
//! backend. Kept in a library so end-to-end tests can drive it in-process.

pub mod analytics;
pub mod app;
pub mod banner;
pub mod cluster;
pub mod control_tokenreview;
pub mod ctl;
pub mod echo;
pub mod ftw;
pub mod mesh;
pub mod mesh_bundle;
pub mod mesh_secret;
pub mod mesh_tokenreview;
pub mod multicluster;
pub mod remote;
pub mod waf_test;
