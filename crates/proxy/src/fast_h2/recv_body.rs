//! A request body fed by the HTTP/2 connection: DATA frames are queued by the
//! connection task and taken by whoever sends the request on (the handler in the same
//! task, or hyper's client task for HTTP/2 backends). What was taken is counted so the
//! connection can give the client that much flow-control window back.

use crate::body::RequestBodyError;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The state both sides share.
#[derive(Default)]
pub struct Inbox {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    end: bool,
    /// Why the body will not complete (the stream was reset or broke a rule).
    failed: Option<&'static str>,
    /// Bytes taken by the reader since the connection last asked.
    taken: usize,
    reader: Option<Waker>,
    /// The connection task, woken when bytes are taken (to send WINDOW_UPDATE).
    conn: Option<Waker>,
}

/// The connection's end.
#[derive(Clone)]
pub struct Sender(Arc<Mutex<Inbox>>);

/// The handler's end: an `http_body::Body`.
pub struct RecvBody {
    inbox: Arc<Mutex<Inbox>>,
    /// The declared Content-Length (the connection checks the DATA against it).
    length: Option<u64>,
}

pub fn channel(length: Option<u64>) -> (Sender, RecvBody) {
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    (Sender(inbox.clone()), RecvBody { inbox, length })
}

fn lock(m: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sender {
    pub fn push(&self, data: Bytes) {
        let mut i = lock(&self.0);
        i.chunks.push_back(data);
        if let Some(w) = i.reader.take() {
            w.wake();
        }
    }

    /// The body is complete (with trailers, if any).
    pub fn finish(&self, trailers: Option<HeaderMap>) {
        let mut i = lock(&self.0);
        i.end = true;
        i.trailers = trailers;
        if let Some(w) = i.reader.take() {
            w.wake();
        }
    }

    /// The body will not complete.
    pub fn fail(&self, why: &'static str) {
        let mut i = lock(&self.0);
        i.failed = Some(why);
        if let Some(w) = i.reader.take() {
            w.wake();
        }
    }

    /// Bytes the reader took since the last call; registers `conn` to hear of more.
    pub fn taken(&self, conn: &Waker) -> usize {
        let mut i = lock(&self.0);
        if !i.conn.as_ref().is_some_and(|w| w.will_wake(conn)) {
            i.conn = Some(conn.clone());
        }
        std::mem::take(&mut i.taken)
    }
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let mut i = lock(&self.inbox);
        if let Some(why) = i.failed {
            return Poll::Ready(Some(Err(RequestBodyError::H2(why))));
        }
        if let Some(c) = i.chunks.pop_front() {
            i.taken += c.len();
            if let Some(w) = &i.conn {
                w.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        if let Some(t) = i.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if i.end {
            return Poll::Ready(None);
        }
        if !i.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            i.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let i = lock(&self.inbox);
        i.end && i.chunks.is_empty() && i.trailers.is_none() && i.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn chunks_then_trailers_then_end() {
        let (tx, mut rx) = channel(Some(5));
        tx.push(Bytes::from_static(b"abc"));
        tx.push(Bytes::from_static(b"de"));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        tx.finish(Some(t));
        let waker = futures_util::task::noop_waker();
        let mut got = Vec::new();
        while let Some(f) = rx.frame().await {
            got.push(f.expect("frame"));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].data_ref().map(|b| &b[..]), Some(&b"abc"[..]));
        assert!(got[2].is_trailers());
        assert_eq!(tx.taken(&waker), 5);
        assert_eq!(tx.taken(&waker), 0);
    }

    #[tokio::test]
    async fn a_reset_fails_the_reader() {
        let (tx, mut rx) = channel(None);
        tx.fail("stream reset by the client");
        assert!(rx.frame().await.expect("a frame").is_err());
    }
}
