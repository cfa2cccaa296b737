//! A scanner for HTTP/1.1 chunked bodies (RFC 9112 §7.1) that finds where a body ends
//! without decoding it, so the fast path can pass chunked bytes through unchanged.
//! It checks the framing it walks (hex sizes, CRLFs, a bounded trailer section).

/// Where the scanner is in the chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (hex digits, then optional extensions, then CRLF).
    Size {
        value: u64,
        digits: u8,
        ext: bool,
    },
    /// Expecting the LF of a chunk-size line.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting CRLF after chunk data.
    DataCr,
    DataLf,
    /// Inside the trailer section: at the start of a line, or inside one.
    TrailerLineStart,
    TrailerLine,
    TrailerLf {
        empty: bool,
    },
    Done,
}

/// Malformed chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Longest chunk-size line, trailer section accepted.
const MAX_SIZE_DIGITS: u8 = 16;
const MAX_TRAILER_BYTES: usize = 8192;

#[derive(Debug)]
pub struct ChunkedScanner {
    state: State,
    trailer_bytes: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner {
            state: State::Size {
                value: 0,
                digits: 0,
                ext: false,
            },
            trailer_bytes: 0,
        }
    }
}

impl ChunkedScanner {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `buf`: returns how many bytes were used and, when it reached chunk
    /// data, where that data is in `buf` (one span per call).
    pub fn decode(
        &mut self,
        buf: &[u8],
    ) -> Result<(usize, Option<std::ops::Range<usize>>), Malformed> {
        let mut i = 0;
        while i < buf.len() && !self.is_done() {
            if let State::Data(left) = self.state {
                let take = left.min((buf.len() - i) as u64);
                self.state = match left - take {
                    0 => State::DataCr,
                    rest => State::Data(rest),
                };
                return Ok((i + take as usize, Some(i..i + take as usize)));
            }
            // Framing bytes go through the scanner one at a time.
            i += self.scan(&buf[i..i + 1])?;
        }
        Ok((i, None))
    }

    /// Walks `data`; returns how many bytes belong to the body (all of `data`, or up
    /// to the end of the body when it ends inside it).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = left.min((data.len() - i) as u64);
                    i += take as usize;
                    match left - take {
                        0 => State::DataCr,
                        rest => State::Data(rest),
                    }
                }
                State::Size { value, digits, ext } => {
                    i += 1;
                    match b {
                        b'\r' if digits > 0 => State::SizeLf { value },
                        // Extensions are tokens and quoted strings: no control bytes
                        // (a bare LF or a NUL there is a smuggling attempt).
                        _ if ext && ((b < 0x20 && b != b'\t') || b == 0x7f) => {
                            return Err(Malformed)
                        }
                        _ if ext => State::Size { value, digits, ext },
                        b';' | b' ' | b'\t' if digits > 0 => State::Size {
                            value,
                            digits,
                            ext: true,
                        },
                        _ => {
                            let d = (b as char).to_digit(16).ok_or(Malformed)? as u64;
                            if digits >= MAX_SIZE_DIGITS {
                                return Err(Malformed);
                            }
                            State::Size {
                                value: value * 16 + d,
                                digits: digits + 1,
                                ext,
                            }
                        }
                    }
                }
                State::SizeLf { value } => {
                    i += 1;
                    match (b, value) {
                        (b'\n', 0) => State::TrailerLineStart,
                        (b'\n', v) => State::Data(v),
                        _ => return Err(Malformed),
                    }
                }
                State::DataCr => {
                    i += 1;
                    match b {
                        b'\r' => State::DataLf,
                        _ => return Err(Malformed),
                    }
                }
                State::DataLf => {
                    i += 1;
                    match b {
                        b'\n' => State::Size {
                            value: 0,
                            digits: 0,
                            ext: false,
                        },
                        _ => return Err(Malformed),
                    }
                }
                State::TrailerLineStart | State::TrailerLine => {
                    let start = self.state == State::TrailerLineStart;
                    i += 1;
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER_BYTES {
                        return Err(Malformed);
                    }
                    match b {
                        b'\r' => State::TrailerLf { empty: start },
                        _ => State::TrailerLine,
                    }
                }
                State::TrailerLf { empty } => {
                    i += 1;
                    match (b, empty) {
                        (b'\n', true) => {
                            self.state = State::Done;
                            return Ok(i);
                        }
                        (b'\n', false) => State::TrailerLineStart,
                        _ => return Err(Malformed),
                    }
                }
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> Result<(usize, bool), Malformed> {
        let mut s = ChunkedScanner::default();
        let mut total = 0;
        for c in chunks {
            total += s.scan(c)?;
            if s.is_done() {
                break;
            }
        }
        Ok((total, s.is_done()))
    }

    #[test]
    fn finds_the_end_of_a_body_split_anywhere() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\n";
        let extra = b"GET / HTTP/1.1\r\n";
        let mut all = body.to_vec();
        all.extend_from_slice(extra);
        for split in 0..all.len() {
            let (a, b) = all.split_at(split);
            let (n, done) = scan_all(&[a, b]).expect("valid");
            assert!(done, "split at {split}");
            assert_eq!(n, body.len(), "split at {split}");
        }
        assert_eq!(scan_all(&[b"0\r\n\r\n"]), Ok((5, true)));
    }

    #[test]
    fn incomplete_bodies_are_not_done() {
        assert_eq!(scan_all(&[b"5\r\nhel"]), Ok((6, false)));
        assert_eq!(scan_all(&[b"0\r\nx: y\r\n"]), Ok((9, false)));
    }

    #[test]
    fn decodes_the_data_out_of_the_framing() {
        let body = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nt: 1\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut d = ChunkedScanner::default();
            let mut out = Vec::new();
            let mut pending = Vec::new();
            for part in [&body[..split], &body[split..]] {
                pending.extend_from_slice(part);
                loop {
                    let (used, data) = d.decode(&pending).expect("valid");
                    if let Some(r) = data {
                        out.extend_from_slice(&pending[r]);
                    }
                    pending.drain(..used);
                    if used == 0 || d.is_done() {
                        break;
                    }
                }
            }
            assert!(d.is_done(), "split {split}");
            assert_eq!(out, b"hello world", "split {split}");
            assert_eq!(pending, b"NEXT", "split {split}");
        }
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(scan_all(&[b"z\r\n"]), Err(Malformed));
        assert_eq!(scan_all(&[b"5\r\nhelloXX"]), Err(Malformed));
        assert_eq!(scan_all(&[b"\r\n"]), Err(Malformed));
        assert_eq!(
            scan_all(&[b"11111111111111111\r\n"]),
            Err(Malformed),
            "size overflow"
        );
        assert_eq!(scan_all(&[b"5\nhello"]), Err(Malformed), "bare LF");
        assert_eq!(
            scan_all(&[b"3;\x00\r\nabc"]),
            Err(Malformed),
            "NUL in an extension"
        );
        assert_eq!(
            scan_all(&[b"3;a\nb\r\nabc"]),
            Err(Malformed),
            "LF in an extension"
        );
        assert_eq!(
            scan_all(&[b"3;a=\"x\ty\"\r\nabc\r\n0\r\n\r\n"]),
            Ok((21, true))
        );
    }
}
