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
    /// Whether to keep the first `limit` bytes of a line over the limit.
    keep_head: bool,
    /// Those bytes, of the line being (or last) discarded.
    head: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineFramer<R> {
    /// A framer that refuses lines longer than `limit` bytes.
    pub fn new(reader: R, limit: usize) -> Self {
        LineFramer {
            reader,
            limit,
            pending: Vec::new(),
            discarding: None,
            keep_head: false,
            head: Vec::new(),
        }
    }

    /// Keeps the first `limit` bytes of a line over the limit, for
    /// [`take_head`](Self::take_head) after its [`Frame::TooLong`].
    pub fn keeping_head(mut self) -> Self {
        self.keep_head = true;
        self
    }

    /// The first `limit` bytes of the line the last [`Frame::TooLong`]
    /// reported, if kept (see [`keeping_head`](Self::keeping_head)).
    pub fn take_head(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.head)
    }
}

/// The line in `pending` and `more` of it went over `limit`: from now on it
/// is only counted, and its head kept if `head` is given.
fn start_discarding(
    pending: &mut Vec<u8>,
    head: Option<&mut Vec<u8>>,
    limit: usize,
    more: &[u8],
) -> usize {
    let len = pending.len() + more.len();
    if let Some(head) = head {
        let room = limit.saturating_sub(pending.len());
        pending.extend_from_slice(&more[..room.min(more.len())]);
        *head = std::mem::take(pending);
    }
    *pending = Vec::new();
    len
}

impl<R: AsyncBufRead + Unpin> LineFramer<R> {
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
                    let head = self.keep_head.then_some(&mut self.head);
                    self.discarding = Some(start_discarding(
                        &mut self.pending,
                        head,
                        self.limit,
                        &available[..take],
                    ));
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

/// A buffered reader that holds a buffer only while it holds unread bytes.
///
/// tokio's `BufReader` allocates and zeroes its whole buffer up front, so a
/// 64 KiB buffer per turn cost 64 KiB of resident memory per turn even when
/// codex prints one short line a second. This one borrows a buffer from its
/// thread's spares for each read and gives it back once every byte in it is
/// consumed, or when the read finds nothing. Codex writes whole lines, so a
/// turn almost never holds a buffer between reads: however many turns run,
/// their reads share a few buffers that stay mapped and warm in the cache
/// (no `malloc`, no page faults, no zeroing per turn).
pub struct ChunkReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    capacity: usize,
}

/// Spare read buffers kept per thread, at most (per capacity).
const SPARES_MAX: usize = 4;

thread_local! {
    /// Empty read buffers, with the capacity they were asked for.
    static SPARES: std::cell::RefCell<Vec<(usize, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer of at least `capacity` bytes: a spare or a new one.
fn borrow_buffer(capacity: usize) -> Vec<u8> {
    let spare = SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        let at = spares.iter().rposition(|(cap, _)| *cap == capacity)?;
        Some(spares.swap_remove(at).1)
    });
    spare.unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Keeps `buf` (emptied) for a later read, unless there are enough spares.
fn give_back_buffer(capacity: usize, mut buf: Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    // `try_with`: a reader dropped while its thread exits just frees it.
    let _ = SPARES.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.iter().filter(|(cap, _)| *cap == capacity).count() < SPARES_MAX {
            spares.push((capacity, buf));
        }
    });
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

    /// Whether a buffer is held (for tests).
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Gives the buffer back once nothing in it is left to read.
    fn release_if_drained(&mut self) {
        if self.pos >= self.buf.len() {
            self.pos = 0;
            give_back_buffer(self.capacity, std::mem::take(&mut self.buf));
        }
    }
}

impl<R> Drop for ChunkReader<R> {
    fn drop(&mut self) {
        give_back_buffer(self.capacity, std::mem::take(&mut self.buf));
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
            let mut buf = borrow_buffer(this.capacity);
            let mut read = ReadBuf::uninit(&mut buf.spare_capacity_mut()[..this.capacity]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let filled = read.filled().len();
            // SAFETY: `ReadBuf` guarantees its first `filled` bytes, which
            // are the start of the buffer's spare capacity, were initialised.
            unsafe { buf.set_len(filled) };
            if !matches!(polled, Poll::Ready(Ok(()))) || filled == 0 {
                // Nothing read (yet): the buffer goes back at once.
                give_back_buffer(this.capacity, buf);
                ready!(polled)?;
                return Poll::Ready(Ok(&[]));
            }
            this.buf = buf;
            this.pos = 0;
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
        this.release_if_drained();
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

    /// For a stream that will not be read to its end: what
    /// [`next_frame`](Self::next_frame) would give at end of stream for
    /// the bytes already read (an unterminated last line), without I/O.
    /// Call it once every complete line has been taken.
    pub fn take_rest(&mut self) -> Option<Frame> {
        let rest = self.reader.buffered().len();
        let frame = match self.discarding.take() {
            Some(len) => Some(Frame::TooLong { len: len + rest }),
            None if self.pending.len() + rest > self.limit => {
                let head = self.keep_head.then_some(&mut self.head);
                let len =
                    start_discarding(&mut self.pending, head, self.limit, self.reader.buffered());
                Some(Frame::TooLong { len })
            }
            None => {
                self.pending.extend_from_slice(self.reader.buffered());
                (!self.pending.is_empty()).then(|| Frame::Line(std::mem::take(&mut self.pending)))
            }
        };
        self.pending = Vec::new();
        Pin::new(&mut self.reader).consume(rest);
        frame
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

    /// Polls `next_frame` once (it reads what is there, then would wait).
    fn poll_once<R: AsyncBufRead + Unpin>(framer: &mut LineFramer<R>) {
        let mut next = Box::pin(framer.next_frame());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(next.as_mut(), &mut cx).is_pending());
    }

    #[tokio::test]
    async fn the_rest_of_a_stream_that_stays_open_is_its_last_line() {
        use tokio::io::AsyncWriteExt;
        // A last line in the read buffer.
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(b"one\npart").await.unwrap();
        let mut framer = LineFramer::new(ChunkReader::new(rx, 64), 8);
        assert_eq!(
            framer.next_frame().await.unwrap(),
            Some(Frame::Line(b"one".to_vec()))
        );
        assert_eq!(framer.peek_line(), None);
        assert_eq!(framer.take_rest(), Some(Frame::Line(b"part".to_vec())));
        assert_eq!(framer.take_rest(), None);
        // One begun in an earlier read, and more of it buffered.
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(b"ab").await.unwrap();
        let mut framer = LineFramer::new(ChunkReader::new(rx, 64), 8);
        poll_once(&mut framer);
        tx.write_all(b"cd").await.unwrap();
        poll_once(&mut framer);
        assert_eq!(framer.take_rest(), Some(Frame::Line(b"abcd".to_vec())));
        // Over the limit, in parts or at once.
        let (mut tx, rx) = tokio::io::duplex(64);
        tx.write_all(b"123456789").await.unwrap();
        let mut framer = LineFramer::new(ChunkReader::new(rx, 64), 8);
        poll_once(&mut framer);
        assert_eq!(framer.take_rest(), Some(Frame::TooLong { len: 9 }));
        assert_eq!(framer.take_rest(), None);
    }

    #[tokio::test]
    async fn the_head_of_a_line_over_the_limit_can_be_kept() {
        for buf in [1, 4, 64] {
            let input: &[u8] = b"12345\n123456789\nok\nabcdefg";
            let mut framer = LineFramer::new(ChunkReader::new(input, buf), 5).keeping_head();
            let mut got = Vec::new();
            while let Some(frame) = framer.next_frame().await.unwrap() {
                let head = framer.take_head();
                got.push((frame, head));
            }
            assert_eq!(
                got,
                vec![
                    (Frame::Line(b"12345".to_vec()), vec![]),
                    (Frame::TooLong { len: 9 }, b"12345".to_vec()),
                    (Frame::Line(b"ok".to_vec()), vec![]),
                    (Frame::TooLong { len: 7 }, b"abcde".to_vec()),
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

    #[tokio::test]
    async fn a_reader_holds_a_buffer_only_while_bytes_are_unread() {
        // Two reads: "one\ntw" then "o\n" (the second read finds the rest).
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut framer = LineFramer::new(ChunkReader::new(rx, 32), 16);
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"one\ntw")
            .await
            .unwrap();
        assert_eq!(
            framer.next_frame().await.unwrap(),
            Some(Frame::Line(b"one".to_vec()))
        );
        assert!(framer.reader.holds_buffer(), "\"tw\" is still unread");
        assert_eq!(framer.peek_line(), None);
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"o\nthree\n")
            .await
            .unwrap();
        assert_eq!(
            framer.next_frame().await.unwrap(),
            Some(Frame::Line(b"two".to_vec()))
        );
        assert_eq!(framer.peek_line(), Some(&b"three"[..]));
        framer.consume_line(5);
        assert!(!framer.reader.holds_buffer(), "drained: given back");
        // The next read borrows the spare given back, not a new buffer.
        let spare = SPARES.with(|s| {
            s.borrow()
                .iter()
                .find(|(cap, _)| *cap == 32)
                .map(|(_, b)| b.as_ptr())
        });
        assert!(spare.is_some(), "the drained buffer is kept as a spare");
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"four\n")
            .await
            .unwrap();
        assert_eq!(framer.peek_line(), None, "nothing read yet");
        let read = std::future::poll_fn(|cx| {
            Pin::new(&mut framer.reader)
                .poll_fill_buf(cx)
                .map_ok(|bytes| (bytes.to_vec(), bytes.as_ptr()))
        })
        .await
        .unwrap();
        assert_eq!(read.0, b"four\n");
        assert_eq!(Some(read.1), spare, "the spare buffer was reused");
        drop(tx);
    }
}
