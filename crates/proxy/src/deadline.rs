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

    #[tokio::test]
    async fn a_later_deadline_is_honoured_and_an_earlier_one_fires_first() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut d = Deadline::new(start + ms(20));
        d.set(start + ms(200));
        d.expired().await;
        assert!(start.elapsed() >= ms(200));

        let now = Instant::now();
        d.set(now + Duration::from_secs(60));
        d.set(now + ms(50));
        let r = d.run(std::future::pending::<()>()).await;
        assert!(r.is_err());
        let took = now.elapsed();
        assert!(took >= ms(50) && took < Duration::from_secs(30), "{took:?}");

        d.set(Instant::now() + ms(50));
        assert_eq!(d.run(async { 7 }).await.ok(), Some(7));
    }
}
