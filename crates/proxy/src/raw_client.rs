//! HTTP/1.1 to a backend on the fast path's raw pooled connections, for requests that
//! hyper serves (HTTP/2 clients, retries, mirrors): the request is written from the
//! handler's own task and the response body is read from the socket as the client
//! takes it, so there is no connection task in between. WebSocket upgrades keep using
//! hyper's client.

use crate::body::{Body, BoxError};
use crate::chunked::ChunkedScanner;
use crate::fast_h1::{read_response_head, stale, Framing, RawConn, RawPool, Upstream};
use crate::pool::Lease;
use crate::upstream::UpstreamError;
use bytes::{Buf, Bytes};
use gatehouse_translate::Cluster;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Sends `req` (origin-form URI) to `endpoint` of `cluster`.
pub async fn send(
    pool: &RawPool,
    cluster: &Cluster,
    endpoint: SocketAddr,
    connect_timeout: Duration,
    req: Request<Body>,
) -> Result<Response<RawBody>, UpstreamError> {
    let (mut parts, mut body) = req.into_parts();
    let empty = http_body::Body::is_end_stream(&body);
    // Content-Length goes upstream only when it is the body's real, known length (a
    // client that sent it next to chunked framing must not get to smuggle a request).
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let exact = http_body::Body::size_hint(&body).exact();
    if declared.is_some() && declared != exact {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let chunked = !empty && !parts.headers.contains_key(header::CONTENT_LENGTH);
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    head.extend_from_slice(pq.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let upstream = Upstream {
        pool,
        cluster,
        endpoint,
        connect_timeout,
    };
    // A reused connection the backend closed meanwhile fails before any answer: a
    // request without a body goes again on a new connection.
    let mut fresh_only = false;
    loop {
        let (mut lease, reused) = upstream.lease(fresh_only).await?;
        let up = lease.conn();
        let sent = write_request(up, &head, &mut body, chunked, empty).await;
        let answer = match sent {
            Ok(()) => read_response_head(up).await,
            Err(Failure::Body(e)) => return Err(UpstreamError::Exchange(e)),
            Err(Failure::Io(e)) => Err(e),
        };
        match answer {
            Ok(rh) => {
                let framing = rh.framing(&parts.method);
                let mut headers = HeaderMap::with_capacity(up.ranges.len());
                for (n, v) in &up.ranges {
                    let name = HeaderName::from_bytes(&up.buf[n.clone()]);
                    let value = HeaderValue::from_bytes(&up.buf[v.clone()]);
                    if let (Ok(n), Ok(v)) = (name, value) {
                        if n != header::TRANSFER_ENCODING {
                            headers.append(n, v);
                        }
                    }
                }
                up.buf.advance(rh.len);
                let mut resp = Response::new(RawBody {
                    lease: Some(lease),
                    framing,
                    left: match framing {
                        Framing::Length(n) => n,
                        _ => 0,
                    },
                    chunks: ChunkedScanner::default(),
                    keep_alive: rh.keep_alive,
                    done: framing == Framing::None,
                });
                *resp.status_mut() = StatusCode::from_u16(rh.status)
                    .map_err(|e| UpstreamError::Exchange(e.into()))?;
                *resp.version_mut() = Version::HTTP_11;
                *resp.headers_mut() = headers;
                return Ok(resp);
            }
            Err(e) if stale(reused, empty, &e) => {
                tracing::debug!(upstream = %endpoint, error = %e, "stale pooled connection; reconnecting");
                fresh_only = true;
            }
            Err(e) => return Err(UpstreamError::Exchange(Box::new(e))),
        }
    }
}

enum Failure {
    /// The request body failed (too large, client gone).
    Body(BoxError),
    Io(io::Error),
}

async fn write_request(
    up: &mut RawConn,
    head: &[u8],
    body: &mut Body,
    chunked: bool,
    empty: bool,
) -> Result<(), Failure> {
    up.stream.write_all(head).await.map_err(Failure::Io)?;
    if empty {
        return Ok(());
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Failure::Body)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not sent upstream
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            up.stream
                .write_all(size.as_bytes())
                .await
                .map_err(Failure::Io)?;
        }
        up.stream.write_all(&data).await.map_err(Failure::Io)?;
        if chunked {
            up.stream.write_all(b"\r\n").await.map_err(Failure::Io)?;
        }
    }
    if chunked {
        up.stream
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(Failure::Io)?;
    }
    Ok(())
}

/// A response body read from a raw upstream connection; the connection goes back to
/// the pool when the body ends where its framing says.
pub struct RawBody {
    lease: Option<Lease<RawConn>>,
    framing: Framing,
    /// Bytes left of a Content-Length body.
    left: u64,
    chunks: ChunkedScanner,
    keep_alive: bool,
    done: bool,
}

impl RawBody {
    /// The body has ended: the connection serves again if nothing is left over.
    fn finish(&mut self) {
        self.done = true;
        let Some(mut lease) = self.lease.take() else {
            return;
        };
        let clean = lease.conn().buf.is_empty();
        if clean && self.keep_alive && self.framing != Framing::Close {
            lease.release();
        }
    }

    /// The next data frame from what is buffered, if any.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(up) = self.lease.as_mut().map(|l| l.conn()) else {
            return Ok(None);
        };
        if up.buf.is_empty() {
            return Ok(None);
        }
        match self.framing {
            Framing::None => Ok(None),
            Framing::Length(_) => {
                let take = (self.left as usize).min(up.buf.len());
                self.left -= take as u64;
                Ok(Some(up.buf.split_to(take).freeze()))
            }
            Framing::Close => Ok(Some(up.buf.split().freeze())),
            Framing::Chunked => loop {
                let (used, data) = self
                    .chunks
                    .decode(&up.buf)
                    .map_err(|_| -> BoxError { "malformed chunked body from upstream".into() })?;
                let chunk = data.map(|r| {
                    let mut b = up.buf.split_to(r.end);
                    b.advance(r.start);
                    b.freeze()
                });
                if chunk.is_none() {
                    up.buf.advance(used);
                }
                match chunk {
                    Some(c) => return Ok(Some(c)),
                    None if used == 0 || self.chunks.is_done() || up.buf.is_empty() => {
                        return Ok(None)
                    }
                    None => continue,
                }
            },
        }
    }

    fn ended(&self) -> bool {
        match self.framing {
            Framing::None => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunks.is_done(),
            Framing::Close => false,
        }
    }
}

impl http_body::Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match self.take_buffered() {
                Err(e) => {
                    self.done = true;
                    self.lease = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(data)) if !data.is_empty() => {
                    if self.ended() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(_) => {}
            }
            if self.ended() {
                self.finish();
                return Poll::Ready(None);
            }
            let this = &mut *self;
            let Some(up) = this.lease.as_mut().map(|l| l.conn()) else {
                return Poll::Ready(None);
            };
            if up.buf.capacity() - up.buf.len() < 4096 {
                up.buf.reserve(16 * 1024);
            }
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut up.stream), cx, &mut up.buf);
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    // End of stream: the end of a close-delimited body, else a cut.
                    let close = this.framing == Framing::Close;
                    this.done = true;
                    this.lease = None;
                    return Poll::Ready(match close {
                        true => None,
                        false => Some(Err("upstream closed the connection mid-body".into())),
                    });
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    this.lease = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.framing {
            Framing::Length(_) => http_body::SizeHint::with_exact(self.left),
            Framing::None => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }
}
