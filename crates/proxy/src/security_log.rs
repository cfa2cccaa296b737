//! Where security verdicts are written, off the request path: the WAF's error log with
//! one ModSecurity-style line per matched rule (`[id "942100"] [msg "..."]`, which
//! tools built for ModSecurity parse), its audit log with one JSON event per judged
//! request that matched something, and the security event log with one JSON event per
//! request refused by a limit. Requests hand lines to a writer thread through a
//! channel, so they never wait on the disk; the writer takes them every 10 ms, so a
//! line costs no wake-up of its own.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

/// How often a log's writer writes what queued up.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// A log file written by a thread of its own.
#[derive(Debug, Clone)]
pub struct LogFile {
    tx: mpsc::Sender<String>,
}

impl LogFile {
    /// Opens `path` for appending and starts its writer.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("gatehouse-log-writer".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
                // The writer wakes every few milliseconds and writes what queued up
                // meanwhile, rather than being woken for every line: at tens of
                // thousands of lines a second, a wake-up per line costs more than the
                // line. It ends once every sender is gone and the queue is written.
                loop {
                    let mut wrote = false;
                    let gone = loop {
                        match rx.try_recv() {
                            Ok(line) => {
                                let _ = out.write_all(line.as_bytes());
                                let _ = out.write_all(b"\n");
                                wrote = true;
                            }
                            Err(mpsc::TryRecvError::Empty) => break false,
                            Err(mpsc::TryRecvError::Disconnected) => break true,
                        }
                    };
                    if wrote {
                        let _ = out.flush();
                    }
                    if gone {
                        return;
                    }
                    std::thread::sleep(WRITE_EVERY);
                }
            })?;
        Ok(LogFile { tx })
    }

    pub fn write(&self, line: String) {
        let _ = self.tx.send(line);
    }
}

/// The security logs.
#[derive(Debug, Clone, Default)]
pub struct SecurityLogs {
    /// The WAF's error log.
    pub error: Option<LogFile>,
    /// The WAF's audit log.
    pub audit: Option<LogFile>,
    /// Requests refused by a rate limit (and the other limits to come).
    pub events: Option<LogFile>,
    /// The access log (one line per request, or a sample), if any.
    pub access: Option<std::sync::Arc<crate::access_log::AccessLog>>,
}

/// Milliseconds since the Unix epoch, the `time` of every event.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes a security event (a refusal by a limit) to the security event log, or the
/// process log if there is none.
pub fn event(dp: &crate::dataplane::DataPlane, event: serde_json::Value) {
    match &dp.security_logs.events {
        Some(f) => f.write(event.to_string()),
        None => tracing::info!(target: "gatehouse::security", "{event}"),
    }
}

/// Lets through at most one event a second per address, so that a flood cannot flood
/// the log too.
pub struct Throttle {
    limiter: gatehouse_security::ratelimit::Limiter,
    keys: gatehouse_security::ratelimit::Keys,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            limiter: gatehouse_security::ratelimit::Limiter::new(
                gatehouse_security::ratelimit::Quota {
                    requests: 1,
                    period: std::time::Duration::from_secs(1),
                    burst: 1,
                },
            ),
            keys: Default::default(),
        }
    }
}

impl Throttle {
    /// Whether an event about `addr` may be written now.
    pub fn allow(&self, addr: std::net::IpAddr) -> bool {
        let key = self.keys.of_address(addr);
        matches!(
            self.limiter.check(key),
            gatehouse_security::ratelimit::Decision::Allow { .. }
        )
    }
}
