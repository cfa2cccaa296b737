//! The body type used on both sides of the proxy, and helpers for small fixed bodies.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A streaming body of either side (downstream request, upstream response, or ours).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A downstream request body: hyper's, or one fed by our HTTP/2 connection. One
/// concrete type (with a concrete error) keeps the handler's future free of the
/// lifetime-erased `Box<dyn Error>` conversions that stop the compiler from proving
/// it `Send`.
pub enum RequestBody {
    Empty,
    Hyper(hyper::body::Incoming),
    H2(crate::fast_h2::RecvBody),
    /// Bytes the WAF read for inspection, then the rest.
    Prefixed(Box<crate::waf::Prefixed<RequestBody>>),
    /// A body that must keep a pace (`crate::pace`).
    Paced(Box<crate::pace::Paced>),
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("{0}")]
    H2(&'static str),
    #[error("request body too slow")]
    Slow,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, RequestBodyError>>> {
        use std::task::Poll;
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(b) => match std::pin::Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            RequestBody::H2(b) => std::pin::Pin::new(b).poll_frame(cx),
            RequestBody::Prefixed(b) => std::pin::Pin::new(&mut **b).poll_frame(cx),
            RequestBody::Paced(b) => std::pin::Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
            RequestBody::Prefixed(b) => b.is_end_stream(),
            RequestBody::Paced(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
            RequestBody::Prefixed(b) => b.size_hint(),
            RequestBody::Paced(b) => b.inner.size_hint(),
        }
    }
}
