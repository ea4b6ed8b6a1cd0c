//! The stdin reader: frames request lines, decodes them, and hands them to
//! the dispatcher in order.

use runner_protocol::decode_request;
use tokio::io::{AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::dispatcher::Inbound;
use crate::lines::{Frame, LineFramer};

/// Decoded lines waiting for the dispatcher. Small: requests are cheap to
/// read, and a full channel simply stops us reading stdin.
pub const INBOUND_CAPACITY: usize = 64;

/// Line `line_no` without the UTF-8 byte order mark that an editor or a
/// Windows tool may put at the start of a file, if it is the first line.
/// (RFC 8259 lets a reader ignore it; on any later line it is an error.)
pub fn without_bom(line_no: u64, line: &[u8]) -> &[u8] {
    match line.strip_prefix(b"\xef\xbb\xbf") {
        Some(rest) if line_no == 1 => rest,
        _ => line,
    }
}

/// The error for a request line of `len` bytes over the `limit`.
pub fn too_long(len: usize, limit: usize) -> String {
    format!("request line of {len} bytes is over the limit of {limit} bytes")
}

/// Reads until EOF (or until the dispatcher is gone). Blank lines are
/// skipped: they carry no request.
pub async fn run_reader<R: AsyncRead + Unpin>(input: R, limit: usize, tx: mpsc::Sender<Inbound>) {
    let mut framer = LineFramer::new(BufReader::with_capacity(64 * 1024, input), limit);
    let mut line_no: u64 = 0;
    loop {
        let frame = match framer.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed; treating it as closed");
                break;
            }
        };
        line_no += 1;
        let inbound = match frame {
            Frame::TooLong { len } => Inbound::TooLong(line_no, len),
            Frame::Line(line) => {
                crate::fault::point_if("reader-status", || crate::fault::is_status(&line));
                let line = without_bom(line_no, &line);
                // Blank as JSON counts it: a form feed is not whitespace
                // there, so a line of form feeds gets its `malformed_json`.
                if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                    continue;
                }
                Inbound::Decoded {
                    line: line_no,
                    bytes: line.len(),
                    request: decode_request(line),
                }
            }
        };
        if tx.send(inbound).await.is_err() {
            break;
        }
    }
}
