//! The HTTP/2 server side of the data plane (TLS with ALPN h2, and h2c with prior
//! knowledge): our own framing, flow control and limits on one task per connection,
//! with each request handled by the same `handler` as HTTP/1.1, so a stream costs no
//! task of its own and no locking. Header blocks are decoded with `loona-hpack`.

mod conn;
mod encode;
mod frame;
mod recv_body;
mod request;

pub use frame::PREFACE;
pub use recv_body::RecvBody;

use crate::dataplane::DataPlane;
use crate::fast_h1::Io;
use crate::handler::ConnInfo;
use bytes::BytesMut;
use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Serves HTTP/2 on `io`, whose first bytes (`pre`) may have been read already.
pub async fn serve<S: Io>(dp: Arc<DataPlane>, io: S, info: ConnInfo, pre: BytesMut) {
    let mut shutdown = dp.shutdown.subscribe();
    let mut conn = conn::Conn::new(io, dp.clone(), Arc::new(info), pre);
    let mut stopping = *shutdown.borrow_and_update();
    if stopping {
        conn.shut_down();
    }
    {
        let mut changed = Box::pin(shutdown.changed());
        poll_fn(|cx| {
            if !stopping && changed.as_mut().poll(cx).is_ready() {
                stopping = true;
                conn.shut_down();
            }
            match conn.poll_run(cx) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.io().shutdown()).await;
}
