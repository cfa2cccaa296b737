//! One HTTP/2 server connection, driven by a single task: it reads and checks frames,
//! runs each stream's request through the shared handler as a future of its own task
//! (no task per stream, no locks between stream and connection), writes responses with
//! flow control, and applies the connection-level limits (concurrent streams, header
//! list size, resets of in-flight streams).

use super::encode;
use super::frame::{self, flag, kind, setting, Head, Reason};
use super::recv_body::{self, Sender};
use super::request::Fields;
use crate::body::{Body, RequestBody};
use crate::dataplane::DataPlane;
use crate::handler::{self, ConnInfo};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{header, Request, Response, StatusCode, Version};
use http_body::Body as _;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
const MAX_STREAMS: usize = 256;
/// The receive window of each stream (so at most this much is buffered per stream).
const STREAM_WINDOW: i64 = 1 << 20;
/// The receive window of the connection.
const CONN_WINDOW: i64 = 4 << 20;
/// Responses stop being produced while this much output waits to be written.
const WRITE_HIGH: usize = 64 * 1024;
/// Resets of in-flight streams a client may make beyond the responses it got
/// (the HTTP/2 rapid-reset attack, CVE-2023-44487, exhausts it).
const RESET_BUDGET: u32 = 200;

type Handling = Abortable<Pin<Box<dyn Future<Output = (u32, Response<Body>)> + Send>>>;

/// A connection error: GOAWAY with this code, then close.
#[derive(Debug)]
struct ConnError(Reason, &'static str);

struct Stream {
    /// The request body's feeding end, while the stream exists.
    inbox: Option<Sender>,
    /// END_STREAM was received.
    remote_closed: bool,
    /// What the client may still send on this stream.
    recv_window: i64,
    /// Body bytes taken by the reader and not yet given back as window.
    recv_unacked: i64,
    /// Body bytes queued and not yet taken.
    queued: i64,
    length: Option<u64>,
    received: u64,
    /// What we may still send on this stream.
    send_window: i64,
    body: Option<Body>,
    /// Response data waiting for flow-control window.
    pending: Option<Bytes>,
    /// The response body reported its end with the pending data.
    ended: bool,
    /// The handler, while it runs.
    abort: Option<AbortHandle>,
}

/// What `pump` did with one stream's response body.
enum Pumped {
    Wait,
    Done,
    Reset(Reason),
}

pub struct Conn<S> {
    io: S,
    dp: Arc<DataPlane>,
    info: Arc<ConnInfo>,
    rbuf: BytesMut,
    /// `rbuf` holds bytes not yet looked at.
    unread: bool,
    wbuf: Vec<u8>,
    written: usize,
    flush: bool,
    /// Scratch space for encoding header blocks.
    block: Vec<u8>,
    decoder: loona_hpack::Decoder<'static>,
    streams: HashMap<u32, Stream>,
    handlers: FuturesUnordered<Handling>,
    /// Streams with a response body to send.
    sending: Vec<u32>,
    /// Streams whose request body is still arriving.
    bodies: usize,
    last_stream: u32,
    preface: bool,
    settings_seen: bool,
    /// A header block awaiting CONTINUATION: stream, flags, fragments so far.
    partial: Option<(u32, u8, Vec<u8>)>,
    max_frame: usize,
    peer_window: i64,
    conn_send: i64,
    conn_recv: i64,
    conn_unacked: i64,
    /// GOAWAY sent: no new streams.
    going_away: bool,
    /// A connection error: close once the GOAWAY is written.
    dead: bool,
    read_closed: bool,
    peer_goaway: bool,
    resets: u32,
    idle_since: Option<Instant>,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(io: S, dp: Arc<DataPlane>, info: Arc<ConnInfo>, pre: BytesMut) -> Self {
        let mut wbuf = Vec::with_capacity(4096);
        let max_headers = dp.cfg.max_header_bytes as u32;
        frame::settings(
            &mut wbuf,
            &[
                (setting::MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW as u32),
                (setting::MAX_HEADER_LIST_SIZE, max_headers),
            ],
        );
        frame::window_update(&mut wbuf, 0, (CONN_WINDOW - frame::DEFAULT_WINDOW) as u32);
        let idle = dp.cfg.header_read_timeout;
        let mut rbuf = pre;
        rbuf.reserve(16 * 1024);
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(4096);
        Conn {
            io,
            dp,
            info,
            unread: !rbuf.is_empty(),
            rbuf,
            wbuf,
            written: 0,
            flush: false,
            block: Vec::with_capacity(512),
            decoder,
            streams: HashMap::new(),
            handlers: FuturesUnordered::new(),
            sending: Vec::new(),
            bodies: 0,
            last_stream: 0,
            preface: false,
            settings_seen: false,
            partial: None,
            max_frame: frame::DEFAULT_MAX_FRAME,
            peer_window: frame::DEFAULT_WINDOW,
            conn_send: frame::DEFAULT_WINDOW,
            conn_recv: CONN_WINDOW,
            conn_unacked: 0,
            going_away: false,
            dead: false,
            read_closed: false,
            peer_goaway: false,
            resets: RESET_BUDGET,
            idle_since: Some(Instant::now()),
            idle_timer: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// Stops taking new streams (GOAWAY) and lets the open ones finish.
    pub fn shut_down(&mut self) {
        if !self.going_away {
            frame::goaway(&mut self.wbuf, self.last_stream, Reason::NO_ERROR);
            self.going_away = true;
        }
    }

    /// The underlying stream, for a proper close.
    pub fn io(&mut self) -> &mut S {
        &mut self.io
    }

    pub fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut busy = false;
            if self.unread {
                // Bytes read before the connection was ours (h2c after the fast path).
                self.unread = false;
                busy = true;
                if let Err(e) = self.frames() {
                    self.fail(e);
                }
            }
            if !self.read_closed && !self.dead && self.wbuf.len() < WRITE_HIGH {
                if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                    self.rbuf.reserve(16 * 1024 + frame::HEAD_LEN);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
                    Poll::Ready(Ok(0)) => {
                        // The client is gone: nothing it started can be answered.
                        self.read_closed = true;
                        self.abandon("client closed the connection");
                        busy = true;
                    }
                    Poll::Ready(Ok(_)) => {
                        busy = true;
                        if let Err(e) = self.frames() {
                            self.fail(e);
                        }
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some(done)) = self.handlers.poll_next_unpin(cx) {
                busy = true;
                if let Ok((id, resp)) = done {
                    self.respond(id, resp);
                }
            }
            if self.bodies > 0 {
                self.give_back_window(cx.waker());
            }
            if !self.sending.is_empty() && self.pump(cx) {
                busy = true;
            }
            while self.written < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => {
                        self.written += n;
                        busy = true;
                    }
                    Poll::Pending => break,
                }
            }
            if self.written > 0 && self.written == self.wbuf.len() {
                self.wbuf.clear();
                self.written = 0;
                self.flush = true;
            }
            if self.flush {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flush = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if self.finished() {
                return Poll::Ready(());
            }
            if !busy {
                return self.poll_idle(cx);
            }
        }
    }

    fn finished(&self) -> bool {
        let quiet = self.wbuf.is_empty() && !self.flush;
        let over = self.dead || self.read_closed || self.going_away || self.peer_goaway;
        quiet && over && (self.dead || (self.streams.is_empty() && self.handlers.is_empty()))
    }

    /// Closes a connection left without streams for the idle timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.dp.cfg.header_read_timeout;
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            match self.idle_since {
                Some(since) if since.elapsed() >= timeout => {
                    self.shut_down();
                    self.read_closed = true;
                    return Poll::Ready(());
                }
                Some(since) => self.idle_timer.as_mut().reset((since + timeout).into()),
                None => self
                    .idle_timer
                    .as_mut()
                    .reset((Instant::now() + timeout).into()),
            }
        }
        Poll::Pending
    }

    // ------------------------------------------------------------------ reading

    fn frames(&mut self) -> Result<(), ConnError> {
        loop {
            if !self.preface {
                let n = frame::PREFACE.len().min(self.rbuf.len());
                if self.rbuf[..n] != frame::PREFACE[..n] {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "not an HTTP/2 preface"));
                }
                if n < frame::PREFACE.len() {
                    return Ok(());
                }
                self.rbuf.advance(n);
                self.preface = true;
            }
            if self.rbuf.len() < frame::HEAD_LEN || self.dead {
                return Ok(());
            }
            let head = Head::parse(&self.rbuf[..frame::HEAD_LEN]);
            if head.len > frame::DEFAULT_MAX_FRAME {
                return Err(ConnError(Reason::FRAME_SIZE_ERROR, "frame too large"));
            }
            if self.rbuf.len() < frame::HEAD_LEN + head.len {
                self.rbuf
                    .reserve(frame::HEAD_LEN + head.len - self.rbuf.len());
                return Ok(());
            }
            self.rbuf.advance(frame::HEAD_LEN);
            let payload = self.rbuf.split_to(head.len).freeze();
            if !self.settings_seen && head.kind != kind::SETTINGS {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "first frame not SETTINGS",
                ));
            }
            if self.partial.is_some() && head.kind != kind::CONTINUATION {
                return Err(ConnError(
                    Reason::PROTOCOL_ERROR,
                    "header block interrupted",
                ));
            }
            self.frame(head, payload)?;
        }
    }

    fn frame(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let id = head.stream;
        match head.kind {
            kind::DATA => self.data(head, payload),
            kind::HEADERS => {
                if id == 0 {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "HEADERS on stream 0"));
                }
                let mut fragment = unpad(&head, payload)?;
                if head.has(flag::PRIORITY) {
                    if fragment.len() < 5 {
                        return Err(ConnError(Reason::FRAME_SIZE_ERROR, "short PRIORITY"));
                    }
                    fragment.advance(5);
                }
                if fragment.len() > self.block_limit() {
                    return Err(ConnError(
                        Reason::ENHANCE_YOUR_CALM,
                        "header block too large",
                    ));
                }
                match head.has(flag::END_HEADERS) {
                    true => self.header_block(id, head.flags, &fragment),
                    false => {
                        self.partial = Some((id, head.flags, fragment.to_vec()));
                        Ok(())
                    }
                }
            }
            kind::CONTINUATION => {
                let limit = self.block_limit();
                let Some((sid, flags, mut block)) = self.partial.take() else {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "unexpected CONTINUATION"));
                };
                if sid != id {
                    return Err(ConnError(
                        Reason::PROTOCOL_ERROR,
                        "CONTINUATION on another stream",
                    ));
                }
                block.extend_from_slice(&payload);
                // A CONTINUATION flood never ends its block: cap what it may pile up.
                if block.len() > limit {
                    return Err(ConnError(
                        Reason::ENHANCE_YOUR_CALM,
                        "header block too large",
                    ));
                }
                match head.has(flag::END_HEADERS) {
                    true => self.header_block(id, flags, &block),
                    false => {
                        self.partial = Some((sid, flags, block));
                        Ok(())
                    }
                }
            }
            kind::PRIORITY => {
                if id == 0 {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0"));
                }
                if head.len != 5 {
                    self.reset(id, Reason::FRAME_SIZE_ERROR);
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if id == 0 || id > self.last_stream {
                    return Err(ConnError(
                        Reason::PROTOCOL_ERROR,
                        "RST_STREAM on an idle stream",
                    ));
                }
                if head.len != 4 {
                    return Err(ConnError(Reason::FRAME_SIZE_ERROR, "RST_STREAM size"));
                }
                if let Some(s) = self.remove(id) {
                    if s.abort.is_some() {
                        self.resets = self.resets.saturating_sub(1);
                        if self.resets == 0 {
                            return Err(ConnError(Reason::ENHANCE_YOUR_CALM, "too many resets"));
                        }
                    }
                }
                Ok(())
            }
            kind::SETTINGS => self.settings(head, &payload),
            kind::PUSH_PROMISE => Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE from a client",
            )),
            kind::PING => {
                if id != 0 {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "PING on a stream"));
                }
                if head.len != 8 {
                    return Err(ConnError(Reason::FRAME_SIZE_ERROR, "PING size"));
                }
                if !head.has(flag::ACK) {
                    frame::ping_ack(&mut self.wbuf, &payload);
                }
                Ok(())
            }
            kind::GOAWAY => {
                if id != 0 {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "GOAWAY on a stream"));
                }
                self.peer_goaway = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.window_update(head, &payload),
            _ => Ok(()), // unknown frame types are ignored (RFC 9113 §4.1)
        }
    }

    fn block_limit(&self) -> usize {
        self.dp.cfg.max_header_bytes.max(16 * 1024)
    }

    fn data(&mut self, head: Head, payload: Bytes) -> Result<(), ConnError> {
        let id = head.stream;
        if id == 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "DATA on stream 0"));
        }
        let len = head.len as i64;
        if len > self.conn_recv {
            return Err(ConnError(
                Reason::FLOW_CONTROL_ERROR,
                "connection window exceeded",
            ));
        }
        self.conn_recv -= len;
        let data = unpad(&head, payload)?;
        let Some(s) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return Err(ConnError(Reason::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream already closed or reset: the data goes nowhere, and its share of
            // the connection window comes back at once.
            self.conn_unacked += len;
            self.give_back_connection_window();
            return Ok(());
        };
        let Some(inbox) = s.inbox.as_ref().filter(|_| !s.remote_closed) else {
            self.conn_unacked += len;
            self.reset(id, Reason::STREAM_CLOSED);
            return Ok(());
        };
        if len > s.recv_window {
            self.conn_unacked += len;
            self.reset(id, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        s.recv_window -= len;
        // Padding is given back at once; data when it is taken.
        let pad = len - data.len() as i64;
        s.recv_unacked += pad;
        self.conn_unacked += pad;
        s.received += data.len() as u64;
        s.queued += data.len() as i64;
        let too_long = s.length.is_some_and(|l| s.received > l);
        let short = s.length.is_some_and(|l| s.received < l);
        if too_long || (head.has(flag::END_STREAM) && short) {
            self.reset(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if !data.is_empty() {
            inbox.push(data);
        }
        if head.has(flag::END_STREAM) {
            inbox.finish(None);
            s.remote_closed = true;
            self.bodies -= 1;
        }
        Ok(())
    }

    fn header_block(&mut self, id: u32, flags: u8, block: &[u8]) -> Result<(), ConnError> {
        let trailers = self.streams.contains_key(&id);
        let mut fields = match trailers {
            true => Fields::trailers(),
            false => Fields::default(),
        };
        // Decoded even for streams that will be refused: the HPACK state must follow.
        self.decoder
            .decode_with_cb(block, |n, v| fields.add(&n, &v))
            .map_err(|_| ConnError(Reason::COMPRESSION_ERROR, "bad header block"))?;
        let end = flags & flag::END_STREAM != 0;
        if trailers {
            let Some(s) = self.streams.get_mut(&id) else {
                return Ok(());
            };
            if s.remote_closed {
                self.reset(id, Reason::STREAM_CLOSED);
                return Ok(());
            }
            let short = s.length.is_some_and(|l| s.received != l);
            if !end || fields.malformed.is_some() || short {
                self.reset(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
            if let Some(inbox) = &s.inbox {
                inbox.finish(Some(fields.headers));
            }
            s.remote_closed = true;
            self.bodies -= 1;
            return Ok(());
        }
        if id.is_multiple_of(2) {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "even stream id from a client",
            ));
        }
        if id <= self.last_stream {
            // A stream already closed, perhaps reset by us while the client was still
            // sending (its trailers): ignored (RFC 9113 §5.1).
            return Ok(());
        }
        self.last_stream = id;
        if self.going_away {
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            frame::rst_stream(&mut self.wbuf, id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let too_large = fields.size > self.dp.cfg.max_header_bytes;
        let head = match fields.request() {
            Ok(h) => h,
            Err(why) => {
                tracing::debug!(stream = id, why, "malformed HTTP/2 request");
                frame::rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        let length = match head.headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) if !(end && n > 0) => Some(n),
                _ => {
                    frame::rst_stream(&mut self.wbuf, id, Reason::PROTOCOL_ERROR);
                    return Ok(());
                }
            },
        };
        let (inbox, body) = match end {
            true => (None, RequestBody::Empty),
            false => {
                let (tx, rx) = recv_body::channel(length);
                self.bodies += 1;
                (Some(tx), RequestBody::H2(rx))
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = head.headers;
        let fut: Pin<Box<dyn Future<Output = (u32, Response<Body>)> + Send>> = match too_large {
            true => Box::pin(std::future::ready((
                id,
                handler::error(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    crate::reason::Reason::BadRequest,
                    "request header fields too large",
                ),
            ))),
            false => {
                let fut = handler::handle(self.dp.clone(), self.info.clone(), req);
                Box::pin(async move { (id, fut.await) })
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        self.handlers.push(Abortable::new(fut, registration));
        self.idle_since = None;
        self.streams.insert(
            id,
            Stream {
                inbox,
                remote_closed: end,
                recv_window: STREAM_WINDOW,
                recv_unacked: 0,
                queued: 0,
                length,
                received: 0,
                send_window: self.peer_window,
                body: None,
                pending: None,
                ended: false,
                abort: Some(abort),
            },
        );
        Ok(())
    }

    fn settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(ConnError(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if head.len != 0 {
                return Err(ConnError(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ack with payload",
                ));
            }
            return Ok(());
        }
        if !head.len.is_multiple_of(6) {
            return Err(ConnError(Reason::FRAME_SIZE_ERROR, "SETTINGS size"));
        }
        for pair in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([pair[0], pair[1]]);
            let value = u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]);
            match id {
                setting::INITIAL_WINDOW_SIZE => {
                    let value = value as i64;
                    if value > frame::MAX_WINDOW {
                        return Err(ConnError(
                            Reason::FLOW_CONTROL_ERROR,
                            "initial window too large",
                        ));
                    }
                    let delta = value - self.peer_window;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > frame::MAX_WINDOW {
                            return Err(ConnError(Reason::FLOW_CONTROL_ERROR, "window overflow"));
                        }
                    }
                    self.peer_window = value;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(ConnError(Reason::PROTOCOL_ERROR, "invalid MAX_FRAME_SIZE"));
                    }
                    self.max_frame = value as usize;
                }
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(ConnError(Reason::PROTOCOL_ERROR, "invalid ENABLE_PUSH"));
                }
                // Our encoder uses no dynamic table, so the client's table size does not
                // matter; the rest are advisory.
                _ => {}
            }
        }
        self.settings_seen = true;
        frame::settings_ack(&mut self.wbuf);
        Ok(())
    }

    fn window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.len != 4 {
            return Err(ConnError(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE size"));
        }
        let inc = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & 0x7fff_ffff) as i64;
        let id = head.stream;
        if id == 0 {
            if inc == 0 {
                return Err(ConnError(Reason::PROTOCOL_ERROR, "zero window increment"));
            }
            self.conn_send += inc;
            if self.conn_send > frame::MAX_WINDOW {
                return Err(ConnError(Reason::FLOW_CONTROL_ERROR, "window overflow"));
            }
            return Ok(());
        }
        if id > self.last_stream {
            return Err(ConnError(
                Reason::PROTOCOL_ERROR,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if inc == 0 {
            self.reset(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > frame::MAX_WINDOW {
            self.reset(id, Reason::FLOW_CONTROL_ERROR);
        }
        Ok(())
    }

    /// Window for request body bytes that readers took.
    fn give_back_window(&mut self, waker: &Waker) {
        let out = &mut self.wbuf;
        for (id, s) in self.streams.iter_mut() {
            let Some(inbox) = &s.inbox else { continue };
            let taken = inbox.taken(waker) as i64;
            if taken == 0 {
                continue;
            }
            s.queued -= taken;
            self.conn_unacked += taken;
            if s.remote_closed {
                continue;
            }
            s.recv_unacked += taken;
            if s.recv_unacked >= STREAM_WINDOW / 2 {
                frame::window_update(out, *id, s.recv_unacked as u32);
                s.recv_window += s.recv_unacked;
                s.recv_unacked = 0;
            }
        }
        self.give_back_connection_window();
    }

    fn give_back_connection_window(&mut self) {
        if self.conn_unacked >= CONN_WINDOW / 2 {
            frame::window_update(&mut self.wbuf, 0, self.conn_unacked as u32);
            self.conn_recv += self.conn_unacked;
            self.conn_unacked = 0;
        }
    }

    // ------------------------------------------------------------------ writing

    fn respond(&mut self, id: u32, resp: Response<Body>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.abort = None;
        self.resets = (self.resets + 1).min(RESET_BUDGET);
        let (parts, body) = resp.into_parts();
        let end = body.is_end_stream();
        self.block.clear();
        encode::response(&mut self.block, parts.status, &parts.headers);
        frame::header_block(&mut self.wbuf, id, &self.block, end, self.max_frame);
        match end {
            true => self.sent(id),
            false => {
                s.body = Some(body);
                self.sending.push(id);
            }
        }
    }

    /// Sends what response bodies have, as far as flow control allows; true if any.
    fn pump(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.sending.len() && self.wbuf.len() < WRITE_HIGH {
            let id = self.sending[i];
            let Some(s) = self.streams.get_mut(&id) else {
                self.sending.swap_remove(i);
                continue;
            };
            let out = &mut self.wbuf;
            let pumped = loop {
                if let Some(chunk) = s.pending.take() {
                    if chunk.is_empty() {
                        if s.ended {
                            frame::data(out, id, &[], true);
                            progress = true;
                            break Pumped::Done;
                        }
                        continue;
                    }
                    let room = self.conn_send.min(s.send_window).min(self.max_frame as i64);
                    if room <= 0 {
                        s.pending = Some(chunk);
                        break Pumped::Wait;
                    }
                    let n = (room as usize).min(chunk.len());
                    let last = n == chunk.len() && s.ended;
                    frame::data(out, id, &chunk[..n], last);
                    self.conn_send -= n as i64;
                    s.send_window -= n as i64;
                    progress = true;
                    if n < chunk.len() {
                        s.pending = Some(chunk.slice(n..));
                    } else if last {
                        break Pumped::Done;
                    }
                    continue;
                }
                let Some(body) = s.body.as_mut() else {
                    break Pumped::Done;
                };
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => match f.into_data() {
                        Ok(d) => {
                            s.ended = body.is_end_stream();
                            s.pending = Some(d);
                        }
                        Err(f) => {
                            let Ok(trailers) = f.into_trailers() else {
                                continue;
                            };
                            self.block.clear();
                            encode::fields(&mut self.block, &trailers);
                            frame::header_block(out, id, &self.block, true, self.max_frame);
                            progress = true;
                            break Pumped::Done;
                        }
                    },
                    Poll::Ready(None) => {
                        frame::data(out, id, &[], true);
                        progress = true;
                        break Pumped::Done;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(stream = id, error = %e, "response body failed");
                        break Pumped::Reset(Reason::INTERNAL_ERROR);
                    }
                    Poll::Pending => break Pumped::Wait,
                }
            };
            match pumped {
                Pumped::Wait => i += 1,
                Pumped::Done => {
                    self.sending.swap_remove(i);
                    self.sent(id);
                }
                Pumped::Reset(r) => {
                    self.sending.swap_remove(i);
                    self.reset(id, r);
                }
            }
        }
        progress
    }

    /// The response of `id` is complete.
    fn sent(&mut self, id: u32) {
        let open = self.streams.get(&id).is_some_and(|s| !s.remote_closed);
        if open {
            // The client is still sending a body nobody will read (RFC 9113 §8.1).
            frame::rst_stream(&mut self.wbuf, id, Reason::NO_ERROR);
        }
        self.remove(id);
    }

    // ------------------------------------------------------------------ ending

    /// Removes a stream: stops its handler, fails its body, returns its window.
    fn remove(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        if let Some(a) = &s.abort {
            a.abort();
        }
        if let Some(inbox) = &s.inbox {
            if !s.remote_closed {
                inbox.fail("stream reset");
                self.bodies -= 1;
            }
        }
        self.conn_unacked += s.queued.max(0);
        self.give_back_connection_window();
        if self.streams.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        Some(s)
    }

    /// A stream error: RST_STREAM and forget the stream.
    fn reset(&mut self, id: u32, reason: Reason) {
        frame::rst_stream(&mut self.wbuf, id, reason);
        self.remove(id);
        self.sending.retain(|s| *s != id);
    }

    /// A connection error: GOAWAY and close once it is written.
    fn fail(&mut self, e: ConnError) {
        tracing::debug!(peer = %self.info.peer, reason = e.0 .0, why = e.1, "HTTP/2 connection error");
        frame::goaway(&mut self.wbuf, self.last_stream, e.0);
        self.going_away = true;
        self.dead = true;
        self.abandon("connection error");
    }

    /// Stops every stream.
    fn abandon(&mut self, why: &'static str) {
        for (_, s) in self.streams.drain() {
            if let Some(a) = &s.abort {
                a.abort();
            }
            if let (Some(inbox), false) = (&s.inbox, s.remote_closed) {
                inbox.fail(why);
            }
        }
        self.bodies = 0;
        self.sending.clear();
    }
}

/// The payload of a DATA or HEADERS frame without its padding.
fn unpad(head: &Head, mut payload: Bytes) -> Result<Bytes, ConnError> {
    if !head.has(flag::PADDED) {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(ConnError(
            Reason::FRAME_SIZE_ERROR,
            "padded frame without length",
        ));
    };
    let pad = pad as usize;
    if pad >= payload.len() {
        return Err(ConnError(Reason::PROTOCOL_ERROR, "padding too long"));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}
