//! Watches a manifest directory (inotify via `notify`) and emits one coalesced signal
//! per burst of file events, so an editor's save (write, rename, chmod) reloads once.

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the watcher alive; `changed()` resolves once per burst of changes.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    rx: mpsc::Receiver<()>,
}

impl DirWatch {
    /// Waits for the next burst of changes; `None` when the watcher is gone.
    pub async fn changed(&mut self) -> Option<()> {
        self.rx.recv().await
    }
}

/// Starts watching `dir` recursively. Events closer together than `debounce` coalesce.
pub fn watch_dir(dir: &Path, debounce: Duration) -> notify::Result<DirWatch> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if !ev.kind.is_access() => {
                let _ = raw_tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watch error"),
        })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Collect the rest of the burst.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(DirWatch {
        _watcher: watcher,
        rx,
    })
}
