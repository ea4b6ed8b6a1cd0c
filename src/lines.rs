//! Newline framing with a size limit, for stdin and for each child's stdout.
//!
//! `tokio::io::AsyncBufReadExt::read_line` grows its buffer without bound; a
//! peer that never sends a newline would grow our memory with it. This framer
//! keeps at most `limit` bytes of one line, discards the rest of an over-long
//! line, and reports it as [`Frame::TooLong`] so the caller can answer it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};

/// One framed line.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n`. The last line of the stream is
    /// returned even if it has no trailing newline.
    Line(Vec<u8>),
    /// A line longer than the limit; `len` is its full length in bytes.
    TooLong {
        /// Bytes the line had (all discarded).
        len: usize,
    },
}

/// Reads frames from a buffered reader.
pub struct LineFramer<R> {
    reader: R,
    limit: usize,
    /// Bytes of the current line gathered so far (at most `limit`).
    pending: Vec<u8>,
    /// Length of the current line when it already exceeded the limit.
    discarding: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> LineFramer<R> {
    /// A framer that refuses lines longer than `limit` bytes.
    pub fn new(reader: R, limit: usize) -> Self {
        LineFramer {
            reader,
            limit,
            pending: Vec::new(),
            discarding: None,
        }
    }

    /// The next frame, or `None` at end of stream.
    ///
    /// Cancel-safe: bytes consumed from the reader are kept in `self`, so a
    /// `select!` that drops this future loses nothing.
    pub async fn next_frame(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                // End of stream: flush a last unterminated line.
                if let Some(len) = self.discarding.take() {
                    return Ok(Some(Frame::TooLong { len }));
                }
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Frame::Line(std::mem::take(&mut self.pending))));
            }
            let newline = memchr::memchr(b'\n', available);
            let take = newline.map_or(available.len(), |i| i);
            match self.discarding.as_mut() {
                Some(len) => *len += take,
                None if self.pending.len() + take > self.limit => {
                    self.discarding = Some(self.pending.len() + take);
                    self.pending = Vec::new();
                }
                None => self.pending.extend_from_slice(&available[..take]),
            }
            let consumed = newline.map_or(take, |i| i + 1);
            self.reader.consume(consumed);
            if newline.is_some() {
                if let Some(len) = self.discarding.take() {
                    return Ok(Some(Frame::TooLong { len }));
                }
                return Ok(Some(Frame::Line(std::mem::take(&mut self.pending))));
            }
        }
    }
}

/// A read buffer whose unread bytes can be looked at without I/O.
pub trait Buffered {
    /// The bytes read and not yet consumed.
    fn buffered(&self) -> &[u8];
}

impl<T: AsyncRead> Buffered for BufReader<T> {
    fn buffered(&self) -> &[u8] {
        self.buffer()
    }
}

/// A buffered reader that allocates its buffer on the first read and never
/// zeroes it: memory is only touched as far as reads fill it. tokio's
/// `BufReader` zeroes its whole buffer up front, so a 64 KiB buffer per turn
/// costs 64 KiB of resident memory per turn even when codex prints one short
/// line a second; with this one, a quiet turn costs a page.
pub struct ChunkReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    capacity: usize,
}

impl<R> ChunkReader<R> {
    /// Reads `inner` up to `capacity` bytes at a time.
    pub fn new(inner: R, capacity: usize) -> Self {
        ChunkReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            capacity: capacity.max(1),
        }
    }
}

impl<R> Buffered for ChunkReader<R> {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ChunkReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for ChunkReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            this.buf.clear();
            this.pos = 0;
            this.buf.reserve_exact(this.capacity);
            let mut read = ReadBuf::uninit(this.buf.spare_capacity_mut());
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let filled = read.filled().len();
            // SAFETY: `ReadBuf` guarantees its first `filled` bytes, which
            // are the start of our spare capacity, were initialised.
            unsafe { this.buf.set_len(filled) };
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
    }
}

impl<R: AsyncBufRead + Buffered + Unpin> LineFramer<R> {
    /// The next line, without its `\n`, if it is already complete in the read
    /// buffer: no I/O and no copy, so a turn can forward every line one read
    /// returned before it polls anything else. `None` when the buffer holds
    /// no complete line, a line is in progress across reads, or the line is
    /// over the limit: [`next_frame`](Self::next_frame) deals with those.
    /// Pass the line's length to [`consume_line`](Self::consume_line) when
    /// done with it.
    pub fn peek_line(&self) -> Option<&[u8]> {
        if !self.pending.is_empty() || self.discarding.is_some() {
            return None;
        }
        let buffered = self.reader.buffered();
        let end = memchr::memchr(b'\n', buffered)?;
        (end <= self.limit).then(|| &buffered[..end])
    }

    /// Consumes the line of `len` bytes (and its `\n`) that
    /// [`peek_line`](Self::peek_line) returned.
    pub fn consume_line(&mut self, len: usize) {
        debug_assert_eq!(self.reader.buffered().get(len), Some(&b'\n'));
        Pin::new(&mut self.reader).consume(len + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], limit: usize, buf: usize) -> Vec<Frame> {
        let reader = tokio::io::BufReader::with_capacity(buf, input);
        let mut framer = LineFramer::new(reader, limit);
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame().await.unwrap() {
            out.push(frame);
        }
        // The same through a ChunkReader.
        let mut framer = LineFramer::new(ChunkReader::new(input, buf), limit);
        let mut again = Vec::new();
        while let Some(frame) = framer.next_frame().await.unwrap() {
            again.push(frame);
        }
        assert_eq!(out, again);
        out
    }

    #[tokio::test]
    async fn splits_lines_across_small_buffers() {
        for buf in [1, 2, 3, 64] {
            assert_eq!(
                frames(b"ab\n\ncde\nf", 10, buf).await,
                vec![
                    Frame::Line(b"ab".to_vec()),
                    Frame::Line(vec![]),
                    Frame::Line(b"cde".to_vec()),
                    Frame::Line(b"f".to_vec()),
                ],
                "buffer {buf}"
            );
        }
    }

    #[tokio::test]
    async fn over_long_lines_are_reported_and_skipped() {
        for buf in [1, 4, 64] {
            assert_eq!(
                frames(b"12345\n123456789\nok\n1234567", 5, buf).await,
                vec![
                    Frame::Line(b"12345".to_vec()),
                    Frame::TooLong { len: 9 },
                    Frame::Line(b"ok".to_vec()),
                    Frame::TooLong { len: 7 },
                ],
                "buffer {buf}"
            );
        }
    }

    #[tokio::test]
    async fn buffered_lines_are_peeked_without_io_and_mix_with_frames() {
        let input: &[u8] = b"one\ntwo\nthree-is-too-long\nfour\npartial";
        let mut framer = LineFramer::new(ChunkReader::new(input, 64), 8);
        assert_eq!(framer.peek_line(), None, "nothing read yet");
        assert_eq!(
            framer.next_frame().await.unwrap(),
            Some(Frame::Line(b"one".to_vec()))
        );
        let mut seen = Vec::new();
        while let Some(line) = framer.peek_line() {
            let len = line.len();
            seen.push(line.to_vec());
            framer.consume_line(len);
        }
        assert_eq!(seen, [b"two".to_vec()], "stops before the over-long line");
        assert_eq!(
            framer.next_frame().await.unwrap(),
            Some(Frame::TooLong { len: 17 })
        );
        assert_eq!(framer.peek_line(), Some(&b"four"[..]));
        framer.consume_line(4);
        assert_eq!(framer.peek_line(), None, "a partial line is not complete");
        assert_eq!(
            framer.next_frame().await.unwrap(),
            Some(Frame::Line(b"partial".to_vec()))
        );
        assert_eq!(framer.next_frame().await.unwrap(), None);
    }
}
