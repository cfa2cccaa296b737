//! A connection's timer, reused by each request: setting a later deadline only records
//! it, and the underlying tokio timer is moved when it fires early. A keep-alive
//! request thus costs no timer-wheel insert and removal, where a fresh
//! `tokio::time::timeout` per read costs both.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// The deadline from now on.
    pub fn set(&mut self, at: Instant) {
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
        self.at = at;
    }

    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= self.at {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// Resolves when the deadline passes.
    pub async fn expired(&mut self) {
        poll_fn(|cx| self.poll_expired(cx)).await
    }

    /// Runs `f` until the deadline; Err if the deadline came first.
    pub async fn run<F: Future>(&mut self, f: F) -> Result<F::Output, Elapsed> {
        let mut f = std::pin::pin!(f);
        poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            self.poll_expired(cx).map(|()| Err(Elapsed))
        })
        .await
    }
}

/// The deadline passed.
#[derive(Debug)]
pub struct Elapsed;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_honoured_and_an_earlier_one_fires_first() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(1));
        d.set(start + Duration::from_secs(5));
        d.expired().await;
        assert_eq!(start.elapsed().as_secs(), 5);

        let now = Instant::now();
        d.set(now + Duration::from_secs(60));
        d.set(now + Duration::from_secs(2));
        let r = d.run(std::future::pending::<()>()).await;
        assert!(r.is_err());
        assert_eq!(now.elapsed().as_secs(), 2);

        d.set(Instant::now() + Duration::from_secs(2));
        assert_eq!(d.run(async { 7 }).await.ok(), Some(7));
    }
}
