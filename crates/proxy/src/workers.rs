//! Worker threads for a data plane with more than one: each runs a current-thread tokio
//! runtime. The accept loop gives each new connection to the worker with the fewest
//! open ones, and the connection lives on that thread (no work stealing, no
//! cross-thread wake-ups per request), as HAProxy's threads do. Idle upstream
//! connections are pooled per worker too ([`current`] is part of the pool key), so a
//! connection is always used on the thread whose reactor drives it.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

thread_local! {
    static INDEX: Cell<u16> = const { Cell::new(0) };
}

/// The worker this thread is (1-based), or 0 off the worker threads.
pub fn current() -> u16 {
    INDEX.with(Cell::get)
}

pub struct Workers {
    handles: Vec<Handle>,
    /// Connections open on each worker.
    load: Vec<AtomicUsize>,
}

/// A connection counted on its worker while it lives.
pub struct Assigned(Arc<Workers>, usize);

impl Drop for Assigned {
    fn drop(&mut self) {
        self.0.load[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `n` worker threads; they run until the process exits.
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("gatehouse-w{}", i + 1))
                .spawn(move || {
                    INDEX.with(|c| c.set(i as u16 + 1));
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            let handle = rx
                .recv()
                .map_err(|_| io::Error::other("worker thread ended at start"))??;
            handles.push(handle);
        }
        let load = (0..n).map(|_| Default::default()).collect();
        Ok(Workers { handles, load })
    }

    /// Picks the worker with the fewest open connections for a new one, which counts
    /// on it until the returned guard drops.
    pub fn assign(self: &Arc<Self>) -> (Handle, Assigned) {
        let i = (0..self.load.len())
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[i].fetch_add(1, Ordering::Relaxed);
        (self.handles[i].clone(), Assigned(self.clone(), i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_loaded_worker_and_leave_with_their_guard() {
        let w = Arc::new(Workers::start(2).expect("workers"));
        let (a, ga) = w.assign();
        let (b, gb) = w.assign();
        assert_ne!(a.id(), b.id(), "the second goes to the idle worker");
        drop(ga);
        let (c, _gc) = w.assign();
        assert_eq!(c.id(), a.id(), "the freed worker is the least loaded again");
        drop(gb);
        let on = |h: &Handle| {
            let (tx, rx) = std::sync::mpsc::channel();
            h.spawn(async move { tx.send(current()) });
            rx.recv().expect("worker answers")
        };
        let (x, y) = (on(&w.handles[0]), on(&w.handles[1]));
        assert_eq!((x, y), (1, 2));
        assert_eq!(current(), 0, "not a worker thread");
    }
}
