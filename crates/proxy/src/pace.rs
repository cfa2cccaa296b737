//! The pace a request body must keep, against slow-body attacks (R.U.D.Y., slow POST):
//! each read must bring bytes within the idle timeout, and once the grace period (the
//! same length) is over, the body must have come at the minimum average rate since it
//! began. A client that trickles a byte every few seconds keeps no connection, worker
//! or upstream slot for long, while a slow but real upload (a phone on a bad link sends
//! kilobytes per second) is never near the limit.

use std::future::Future;
use std::time::Duration;

/// A body's progress against its pace. Only the time spent waiting for the client
/// counts: a backend slow to take the body does not make its client slow.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    waited: Duration,
    received: u64,
    idle: Duration,
    /// Bytes per second; 0: no rate, only the idle timeout.
    min_rate: u64,
}

impl BodyPace {
    pub fn new(idle: Duration, min_rate: u64) -> BodyPace {
        BodyPace {
            waited: Duration::ZERO,
            received: 0,
            idle,
            min_rate,
        }
    }

    /// How long the next read from the client may take (zero: the body is already
    /// too slow).
    pub fn budget(&self) -> Duration {
        if self.min_rate == 0 {
            return self.idle;
        }
        // When the body would fall below the rate, counting one more byte.
        let due =
            self.idle + Duration::from_secs_f64((self.received + 1) as f64 / self.min_rate as f64);
        self.idle.min(due.saturating_sub(self.waited))
    }

    /// Counts a read of `n` bytes that took `took`.
    pub fn read(&mut self, n: usize, took: Duration) {
        self.received += n as u64;
        self.waited += took;
    }
}

/// A request body of the hyper or HTTP/2 paths, held to a pace: when the client lets
/// the budget pass without a frame, the body fails (and its request with it).
pub struct Paced {
    pub inner: crate::body::RequestBody,
    pace: BodyPace,
    waiting_since: Option<tokio::time::Instant>,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Records the event, once.
    on_slow: Option<Box<dyn FnOnce() + Send>>,
}

impl Paced {
    pub fn new(
        inner: crate::body::RequestBody,
        pace: BodyPace,
        on_slow: Box<dyn FnOnce() + Send>,
    ) -> Paced {
        Paced {
            inner,
            pace,
            waiting_since: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            on_slow: Some(on_slow),
        }
    }
}

impl http_body::Body for Paced {
    type Data = bytes::Bytes;
    type Error = crate::body::RequestBodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let took = this
                    .waiting_since
                    .take()
                    .map_or(Duration::ZERO, |t| t.elapsed());
                let n = frame.data_ref().map_or(0, |d| d.len());
                this.pace.read(n, took);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let deadline = since + this.pace.budget();
                if this.sleep.deadline() != deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                if this.sleep.as_mut().poll(cx).is_ready() {
                    if let Some(record) = this.on_slow.take() {
                        record();
                    }
                    return Poll::Ready(Some(Err(crate::body::RequestBodyError::Slow)));
                }
                Poll::Pending
            }
        }
    }
}

/// `req` with its body held to the configured pace, unless it has none, or is gRPC
/// (whose client streams may rest between messages for as long as they like).
pub fn paced_request(
    dp: &std::sync::Arc<crate::dataplane::DataPlane>,
    conn: &crate::handler::ConnInfo,
    rid: &http::HeaderValue,
    req: http::Request<crate::body::RequestBody>,
) -> http::Request<crate::body::RequestBody> {
    use http_body::Body as _;
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if req.body().is_end_stream() || grpc || dp.cfg.body_timeout.is_zero() {
        return req;
    }
    let (dp2, peer, rid2) = (dp.clone(), conn.peer, rid.clone());
    let pace = dp.cfg.body_pace();
    req.map(move |b| {
        let record = Box::new(move || record_slow(&dp2, peer, &rid2));
        crate::body::RequestBody::Paced(Box::new(Paced::new(b, pace, record)))
    })
}

/// Records a request cut off for a slow body: a security event and a count.
pub fn record_slow(
    dp: &crate::dataplane::DataPlane,
    client: std::net::SocketAddr,
    rid: &http::HeaderValue,
) {
    dp.metrics
        .counters
        .slow_bodies_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let event = serde_json::json!({
        "time": crate::security_log::now_ms(),
        "event": "slow_body",
        "request_id": rid.to_str().unwrap_or(""),
        "client": client.to_string(),
        "action": "deny",
        "status": 408,
    });
    crate::security_log::event(dp, event);
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_then_rate() {
        let mut p = BodyPace::new(10 * S, 1000);
        // At first the idle timeout decides.
        assert_eq!(p.budget(), 10 * S);
        // A trickle: 1 byte after 5 s. The rate wants 2 bytes by 10.002 s of waiting.
        p.read(1, 5 * S);
        assert_eq!(p.budget(), Duration::from_millis(5_002));
        // More trickle: after 10.002 s of waiting with 2 bytes, nothing is left.
        p.read(1, Duration::from_millis(5_002));
        assert_eq!(p.budget(), Duration::from_millis(1));
        p.read(0, Duration::from_millis(1));
        assert_eq!(p.budget(), Duration::ZERO);
        // A fast upload stays ahead of the rate: the idle timeout decides.
        let mut fast = BodyPace::new(10 * S, 1000);
        fast.read(100_000, 20 * S);
        assert_eq!(fast.budget(), 10 * S);
        // Without a rate, only idleness counts.
        let mut q = BodyPace::new(3 * S, 0);
        q.read(1, 100 * S);
        assert_eq!(q.budget(), 3 * S);
    }
}
