//! One HTTP/2 stream (of a CONNECT tunnel) as a byte stream: `AsyncRead` and
//! `AsyncWrite` over h2's send and receive halves, with h2's flow control as the
//! backpressure; and `splice`, which joins it to a TCP connection without copying
//! bytes in memory (socket reads become h2 frames as they are; received frames are
//! written to the socket as they are).

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Largest chunk handed to h2 at once.
const MAX_CHUNK: usize = 256 * 1024;
/// What `splice` keeps room for in its read buffer: small at first (a request-response
/// connection walks through little memory), doubled each time a read takes that much,
/// up to the most (a bulk transfer reads in large chunks, with few system calls).
const SPLICE_READ_MIN: usize = 16 * 1024;
const SPLICE_READ_MAX: usize = 512 * 1024;
/// Each allocation holds this many reads, so that one is rarely made while h2 still
/// holds the chunks cut from the last (1 MiB at most: the heap's, not mmap's).
const SPLICE_READS_PER_ALLOC: usize = 2;

/// A CONNECT stream's two halves.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received data not yet read.
    pending: Bytes,
    /// The peer ended its side.
    recv_done: bool,
    /// We ended ours.
    send_done: bool,
}

impl H2Stream {
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            recv_done: false,
            send_done: false,
        }
    }
}

impl H2Stream {
    /// Carries bytes both ways between this stream and `tcp` until both sides have
    /// ended (or either fails): (bytes from `tcp`, bytes to `tcp`).
    pub async fn splice(mut self, tcp: &mut TcpStream) -> io::Result<(u64, u64)> {
        let (mut rd, mut wr) = tcp.split();
        let (send, recv) = (&mut self.send, &mut self.recv);
        let up = async {
            let mut size = SPLICE_READ_MIN;
            let mut buf = BytesMut::with_capacity(size);
            let mut total = 0u64;
            loop {
                // Reuses the allocation once h2 has sent what was cut from it.
                if buf.capacity() - buf.len() < size {
                    buf.reserve(size * SPLICE_READS_PER_ALLOC);
                }
                let n = rd.read_buf(&mut buf).await?;
                if n >= size && size < SPLICE_READ_MAX {
                    size *= 2;
                }
                if n == 0 {
                    send.reserve_capacity(0);
                    let _ = send.send_data(Bytes::new(), true);
                    return Ok::<_, io::Error>(total);
                }
                total += n as u64;
                let mut chunk = buf.split_to(n).freeze();
                while !chunk.is_empty() {
                    send.reserve_capacity(chunk.len());
                    let cap = std::future::poll_fn(|cx| poll_send_capacity(send, cx)).await?;
                    let part = chunk.split_to(cap.min(chunk.len()));
                    send.send_data(part, false).map_err(to_io)?;
                }
            }
        };
        let down = async {
            let mut total = 0u64;
            while let Some(data) = std::future::poll_fn(|cx| recv.poll_data(cx)).await {
                let data = data.map_err(to_io)?;
                let _ = recv.flow_control().release_capacity(data.len());
                total += data.len() as u64;
                wr.write_all(&data).await?;
            }
            wr.shutdown().await?;
            Ok::<_, io::Error>(total)
        };
        let r = tokio::try_join!(up, down);
        if r.is_ok() {
            self.send_done = true;
            self.recv_done = true;
        }
        r
    }
}

/// Waits until the peer's flow control lets some of the reserved capacity be sent.
fn poll_send_capacity(
    send: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        return Poll::Ready(match ready!(send.poll_capacity(cx)) {
            Some(Ok(0)) => continue,
            Some(Ok(n)) => Ok(n),
            Some(Err(e)) => Err(to_io(e)),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tunnel stream is closed",
            )),
        });
    }
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = match e.reason() {
        Some(h2::Reason::NO_ERROR) | Some(h2::Reason::CANCEL) => io::ErrorKind::ConnectionReset,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.recv_done {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The data is ours now: give the window back at once.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                None => {
                    self.recv_done = true;
                }
            }
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_CHUNK);
        self.send.reserve_capacity(want);
        let cap = ready!(poll_send_capacity(&mut self.send, cx))?;
        let n = cap.min(want);
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.send_done {
            self.send_done = true;
            self.send.reserve_capacity(0);
            if let Err(e) = self.send.send_data(Bytes::new(), true) {
                // Already reset or closed: nothing left to end.
                tracing::trace!(error = %e, "ending a tunnel stream");
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        if !self.send_done || !self.recv_done {
            // Closed early: reset rather than leave the peer waiting.
            self.send.send_reset(h2::Reason::CANCEL);
        }
    }
}
