//! Newline framing with a size limit, for stdin and for each child's stdout.
//!
//! `tokio::io::AsyncBufReadExt::read_line` grows its buffer without bound; a
//! peer that never sends a newline would grow our memory with it. This framer
//! keeps at most `limit` bytes of one line, discards the rest of an over-long
//! line, and reports it as [`Frame::TooLong`] so the caller can answer it.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

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
}
