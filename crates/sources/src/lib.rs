//! Sources turn the outside world into typed objects for the store. This crate holds
//! the manifest-directory source (load and watch); the Kubernetes API source joins it.

pub mod dir;
pub mod watch;

pub use dir::{load_dir, load_dir_partial, Loaded};
pub use watch::{watch_dir, DirWatch};
