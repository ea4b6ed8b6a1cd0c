//! The single owner of stdout.
//!
//! Every output line is fully formatted (with its `\n`) by whoever produces
//! it and sent here as one message, so lines can never interleave. The
//! channel is bounded: when stdout's reader is slow, senders wait, which in
//! turn stops each turn task from reading its child's stdout, so the children
//! block on their own pipes instead of our memory growing.

use runner_protocol::{End, OutputLine, Rejected};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Lines queued for stdout. 256 lines is a few hundred KiB of ordinary
/// events: enough to keep the writer busy while turns produce more, small
/// enough that a stalled reader stops the children quickly. (A turn that
/// holds an over-size line waits for its own slot, so the bound is in lines.)
pub const OUTGOING_CAPACITY: usize = 256;

/// A cheap, cloneable handle for sending lines to stdout.
#[derive(Clone)]
pub struct Outgoing {
    tx: mpsc::Sender<Vec<u8>>,
}

/// stdout is gone: the writer stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stdout is closed")]
pub struct StdoutClosed;

impl Outgoing {
    /// A handle and the receiving end for [`run_writer`].
    pub fn channel() -> (Outgoing, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(OUTGOING_CAPACITY);
        (Outgoing { tx }, rx)
    }

    /// Sends one complete line (must end with `\n`).
    pub async fn send_raw(&self, line: Vec<u8>) -> Result<(), StdoutClosed> {
        debug_assert_eq!(line.last(), Some(&b'\n'));
        self.tx.send(line).await.map_err(|_| StdoutClosed)
    }

    /// Sends a run's `end` line.
    pub async fn send_end(&self, end: End) -> Result<(), StdoutClosed> {
        self.send_raw(encode(&OutputLine::End(end))).await
    }

    /// Sends a `rejected` line.
    pub async fn send_rejected(&self, rejected: Rejected) -> Result<(), StdoutClosed> {
        self.send_raw(encode(&OutputLine::Rejected(rejected))).await
    }
}

/// Serialises a line with its newline.
pub fn encode(line: &OutputLine) -> Vec<u8> {
    let mut out = serde_json::to_vec(line).expect("output lines always serialise");
    out.push(b'\n');
    out
}

/// Writes lines until every [`Outgoing`] is dropped. Flushes whenever the
/// queue runs empty, so a burst becomes few write syscalls and a lone line
/// is never held back.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: W,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Some(line) = rx.recv().await {
        out.write_all(&line).await?;
        while let Ok(line) = rx.try_recv() {
            out.write_all(&line).await?;
        }
        out.flush().await?;
    }
    out.flush().await?;
    out.shutdown().await
}
