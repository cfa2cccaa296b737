//! Sources turn the outside world into typed objects for the store: the manifest
//! directory (load and watch) and the Kubernetes API (kube-rs watchers).

pub mod dir;
pub mod kubernetes;
pub mod lease;
pub mod object_writer;
pub mod status_writer;
pub mod watch;

pub use dir::{load_dir, load_dir_partial, Loaded};
pub use watch::{watch_dir, DirWatch};
