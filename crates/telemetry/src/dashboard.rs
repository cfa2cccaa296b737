//! The dashboard's assets, built into the binary: one page (HTML, CSS and script in
//! one file) that the admin listener serves at `/dashboard` and that polls
//! `/api/dashboard` for its data.

/// The page.
pub const INDEX_HTML: &str = include_str!("../assets/dashboard.html");
