//! The single owner of stdout.
//!
//! Every output line is fully formatted (with its `\n`) by whoever produces
//! it and appended here whole, under one lock, so lines can never interleave.
//! The queue is bounded in bytes: when stdout's reader is slow, senders wait,
//! which in turn stops each turn task from reading its child's stdout, so the
//! children block on their own pipes instead of our memory growing.
//!
//! # How bytes reach fd 1
//!
//! tokio's `Stdout` hands every write to its blocking thread pool (a thread
//! hand-off, two futex calls and a copy per write). When the output is the
//! process's own stdout and it is a pipe, a terminal or a socket, we write
//! fd 1 ourselves, without blocking: a pipe or terminal through a second,
//! non-blocking open file description of it (`/proc/self/fd/1`, so the
//! description we inherited, which other processes may share, keeps its
//! flags), a socket with `send(MSG_DONTWAIT)`. Regular files and `/dev/null`
//! never block and are written directly.
//!
//! Senders only append (a line is copied once, into the queue) and, when
//! the writer task is idle, wake it. The writer task runs when the sender's
//! task next yields, typically after it has forwarded every line its last
//! read of codex's pipe returned, and writes the whole queue with one
//! `write(2)`. So a burst becomes a few large writes, and a lone line is never
//! held back. When the pipe is full (stdout's reader is behind) the writer
//! waits for room in the runtime's epoll (a registered duplicate of the fd),
//! or, if that registration failed, writes the rest from tokio's blocking
//! pool, which waits in `poll(2)`. Any other
//! `AsyncWrite` (tests) is written by the same task, flushed whenever the
//! queue runs empty.

use std::any::Any;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use runner_protocol::{End, OutputLine, Rejected};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::sync::Notify;

use crate::stdio::NonBlockingOut;

/// Bytes queued for stdout before senders wait. 128 KiB is a few hundred
/// ordinary events: enough to turn a burst into few writes, small enough
/// that a stalled reader stops the children quickly. A line longer than this
/// is accepted whole when the queue is empty.
pub const OUTGOING_LIMIT: usize = 128 * 1024;

/// A cheap, cloneable handle for sending lines to stdout.
pub struct Outgoing {
    shared: Arc<Shared>,
}

/// The writer's end, for [`run_writer`].
pub struct OutgoingRx {
    shared: Arc<Shared>,
}

/// stdout is gone: the writer stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stdout is closed")]
pub struct StdoutClosed;

struct Shared {
    state: Mutex<State>,
    /// The queue went below the limit, or stdout closed.
    space: Notify,
    /// Work for the writer task: a backlog, a full pipe, the last sender gone.
    work: Notify,
    /// Live [`Outgoing`] handles.
    senders: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Whole lines not yet taken by the writer.
    queue: Vec<u8>,
    /// An emptied buffer kept for reuse.
    spare: Vec<u8>,
    /// The writer task has taken a queue and not finished writing it.
    writing: bool,
    /// Why stdout failed; every later send fails.
    failed: Option<(std::io::ErrorKind, String)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clone for Outgoing {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outgoing {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The writer may be waiting for work that will never come.
            self.shared.work.notify_one();
        }
    }
}

impl Outgoing {
    /// A handle and the receiving end for [`run_writer`].
    pub fn channel() -> (Outgoing, OutgoingRx) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            space: Notify::new(),
            work: Notify::new(),
            senders: AtomicUsize::new(1),
        });
        (
            Outgoing {
                shared: shared.clone(),
            },
            OutgoingRx { shared },
        )
    }

    /// Sends one complete line (must end with `\n`).
    pub async fn send_raw(&self, line: Vec<u8>) -> Result<(), StdoutClosed> {
        debug_assert_eq!(line.last(), Some(&b'\n'));
        self.send_parts(&[&line]).await
    }

    /// Sends an `event` line: `prefix` (`{"type":"event","id":…,"event":`),
    /// codex's line as it printed it, and `}\n`, copied once, straight into
    /// the queue.
    pub async fn send_event(&self, prefix: &[u8], event: &[u8]) -> Result<(), StdoutClosed> {
        self.send_parts(&[prefix, event, b"}\n"]).await
    }

    /// [`Outgoing::send_event`] if the queue has room now: `Ok(false)`
    /// (and nothing queued) if it is full.
    pub fn try_send_event(&self, prefix: &[u8], event: &[u8]) -> Result<bool, StdoutClosed> {
        self.try_append(&[prefix, event, b"}\n"])
    }

    /// [`Outgoing::send_raw`] if the queue has room now: `Ok(false)` (and
    /// nothing queued) if it is full.
    pub fn try_send_raw(&self, line: &[u8]) -> Result<bool, StdoutClosed> {
        debug_assert_eq!(line.last(), Some(&b'\n'));
        self.try_append(&[line])
    }

    /// Waits until a line of `len` bytes would be queued at once, or
    /// stdout has failed (a send then fails at once).
    pub async fn room_for(&self, len: usize) {
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.failed.is_some()
                    || state.queue.is_empty()
                    || state.queue.len() + len <= OUTGOING_LIMIT
                {
                    return;
                }
            }
            space.await;
        }
    }

    /// Sends a run's `end` line.
    pub async fn send_end(&self, end: End) -> Result<(), StdoutClosed> {
        self.send_raw(encode(&OutputLine::End(end))).await
    }

    /// Sends a `rejected` line.
    pub async fn send_rejected(&self, rejected: Rejected) -> Result<(), StdoutClosed> {
        self.send_raw(encode(&OutputLine::Rejected(rejected))).await
    }

    /// Appends one line made of `parts`, waiting while the queue is full,
    /// and wakes the writer if it is idle. Cancel-safe: nothing is appended
    /// before the last await.
    async fn send_parts(&self, parts: &[&[u8]]) -> Result<(), StdoutClosed> {
        loop {
            if self.try_append(parts)? {
                return Ok(());
            }
            // Full: wait for the writer to take the queue. Registered, then
            // checked again, so room made in between is not missed.
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.try_append(parts)? {
                return Ok(());
            }
            space.await;
        }
    }

    /// Appends one line made of `parts` if the queue has room (an empty
    /// queue takes any line), and wakes the writer if it is idle.
    fn try_append(&self, parts: &[&[u8]]) -> Result<bool, StdoutClosed> {
        let shared = &*self.shared;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut state = shared.lock();
        if state.failed.is_some() {
            return Err(StdoutClosed);
        }
        if !(state.queue.is_empty() || state.queue.len() + len <= OUTGOING_LIMIT) {
            return Ok(false);
        }
        let wake = state.queue.is_empty() && !state.writing;
        state.queue.reserve(len);
        for part in parts {
            state.queue.extend_from_slice(part);
        }
        drop(state);
        if wake {
            shared.work.notify_one();
        }
        Ok(true)
    }
}

fn take_queue(state: &mut State) -> Vec<u8> {
    let spare = std::mem::take(&mut state.spare);
    std::mem::replace(&mut state.queue, spare)
}

/// Keeps an emptied buffer for reuse, unless an outsized line grew it.
fn recycle(state: &mut State, mut buffer: Vec<u8>) {
    if buffer.capacity() <= 4 * OUTGOING_LIMIT && buffer.capacity() > state.spare.capacity() {
        buffer.clear();
        state.spare = buffer;
    }
}

fn fail(state: &mut State, e: &std::io::Error) {
    if state.failed.is_none() {
        state.failed = Some((e.kind(), e.to_string()));
    }
    state.writing = false;
    state.queue.clear();
}

/// Serialises a line with its newline.
pub fn encode(line: &OutputLine) -> Vec<u8> {
    let mut out = serde_json::to_vec(line).expect("output lines always serialise");
    out.push(b'\n');
    out
}

/// Writes lines until every [`Outgoing`] is dropped and the queue is
/// written. When `out` is tokio's `Stdout` and fd 1 is a pipe, terminal,
/// socket, regular file or `/dev/null`, writes fd 1 directly (see the module
/// docs); otherwise writes `out`, flushing whenever the queue runs empty.
/// An error means stdout failed (its reader went away).
pub async fn run_writer<W: AsyncWrite + Unpin + 'static>(
    rx: OutgoingRx,
    out: W,
) -> std::io::Result<()> {
    let _gone = WriterGone(rx.shared.clone());
    if (&out as &dyn Any).is::<tokio::io::Stdout>() {
        match FdSink::stdout() {
            Ok(Some(sink)) => {
                drop(out);
                return run_fd_writer(&rx.shared, Arc::new(sink)).await;
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "writing stdout through tokio"),
        }
    }
    run_generic_writer(&rx.shared, out).await
}

/// Closes the queue when the writer task is gone, however it went: a writer
/// that panicked must fail every later send, and wake the senders waiting for
/// room, rather than leave them (and so their turns) waiting forever.
struct WriterGone(Arc<Shared>);

impl Drop for WriterGone {
    fn drop(&mut self) {
        fail(
            &mut self.0.lock(),
            &std::io::Error::other("the stdout writer stopped"),
        );
        self.0.space.notify_waiters();
    }
}

/// What the writer task does next.
enum Next {
    /// Write this queue.
    Write(Vec<u8>),
    Wait,
    Done,
    Failed(std::io::Error),
}

fn next_work(shared: &Shared, state: &mut State) -> Next {
    if let Some((kind, message)) = &state.failed {
        return Next::Failed(std::io::Error::new(*kind, message.clone()));
    }
    if !state.queue.is_empty() {
        crate::fault::point_if("writer-status", || crate::fault::is_status(&state.queue));
        state.writing = true;
        return Next::Write(take_queue(state));
    }
    state.writing = false;
    if shared.senders.load(Ordering::Acquire) == 0 {
        return Next::Done;
    }
    Next::Wait
}

/// After a write: keeps the buffer, or records the failure.
fn wrote(shared: &Shared, buffer: Vec<u8>, result: &std::io::Result<()>) {
    let mut state = shared.lock();
    match result {
        Ok(()) => recycle(&mut state, buffer),
        Err(e) => fail(&mut state, e),
    }
}

async fn run_fd_writer(shared: &Shared, sink: Arc<FdSink>) -> std::io::Result<()> {
    loop {
        let work = shared.work.notified();
        let next = next_work(shared, &mut shared.lock());
        // The queue may have been taken: room for waiting senders.
        shared.space.notify_waiters();
        match next {
            Next::Done => return Ok(()),
            Next::Failed(e) => return Err(e),
            // Idle, but not deaf: a reader that went away (an orchestrator
            // that died) stops the daemon now, not at the next event of a
            // turn that may be silent for an hour.
            Next::Wait => tokio::select! {
                () = work => {}
                () = sink.reader_gone() => {
                    let gone = std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "stdout's reader is gone",
                    );
                    fail(&mut shared.lock(), &gone);
                    shared.space.notify_waiters();
                    return Err(gone);
                }
            },
            Next::Write(buffer) => {
                let (buffer, result) = sink.write_all_async(buffer).await;
                wrote(shared, buffer, &result);
                if result.is_err() {
                    shared.space.notify_waiters();
                }
            }
        }
    }
}

async fn run_generic_writer<W: AsyncWrite + Unpin>(
    shared: &Shared,
    mut out: W,
) -> std::io::Result<()> {
    loop {
        let work = shared.work.notified();
        let next = next_work(shared, &mut shared.lock());
        shared.space.notify_waiters();
        match next {
            Next::Done => break,
            Next::Failed(e) => return Err(e),
            Next::Wait => work.await,
            Next::Write(buffer) => {
                let mut result = out.write_all(&buffer).await;
                // Flush only when nothing else is queued.
                if result.is_ok() && shared.lock().queue.is_empty() {
                    result = out.flush().await;
                }
                wrote(shared, buffer, &result);
                if result.is_err() {
                    shared.space.notify_waiters();
                }
            }
        }
    }
    out.flush().await?;
    out.shutdown().await
}

/// fd 1, written without blocking the thread.
struct FdSink {
    out: NonBlockingOut,
    /// A duplicate of the fd written (pipe, terminal or socket) registered
    /// with the runtime, to wait until a full fd 1 takes bytes again; `None`
    /// if registering failed (then the blocking pool waits instead).
    writable: Option<AsyncFd<OwnedFd>>,
}

impl FdSink {
    /// A sink for fd 1, or `None` if fd 1 is something we leave to tokio.
    fn stdout() -> std::io::Result<Option<FdSink>> {
        let Some(out) = NonBlockingOut::open(1)? else {
            return Ok(None);
        };
        let writable = out.pollable().and_then(|fd| {
            match crate::stdio::register_duplicate(fd, Interest::WRITABLE) {
                Ok(registered) => Some(registered),
                Err(e) => {
                    tracing::debug!(error = %e, "a full stdout is waited for on the blocking pool");
                    None
                }
            }
        });
        Ok(Some(FdSink { out, writable }))
    }

    /// Resolves once fd 1 says its reader is gone: a pipe whose read end
    /// closed reports an error, a socket whose peer went away a hang-up.
    /// Never, where fd 1 is not registered (a file, say).
    async fn reader_gone(&self) {
        let Some(fd) = &self.writable else {
            return std::future::pending().await;
        };
        loop {
            let Ok(mut ready) = fd.ready(Interest::WRITABLE | Interest::ERROR).await else {
                return std::future::pending().await;
            };
            let now = ready.ready();
            if now.is_error() || now.is_write_closed() {
                return;
            }
            // Room to write is no news: wait for the next edge (room after
            // a full pipe, or the error).
            ready.clear_ready();
        }
    }

    /// Writes `buffer[done..]`: at once while fd 1 takes it; when the pipe
    /// is full (stdout's reader is behind), as soon as the runtime's epoll
    /// says it takes bytes again (or, failing that, on the blocking pool,
    /// where waiting costs no runtime thread). Returns the buffer for reuse.
    async fn write_all_async(self: &Arc<Self>, buffer: Vec<u8>) -> (Vec<u8>, std::io::Result<()>) {
        let mut done = 0;
        while done < buffer.len() {
            let written = match (self.out.write(&buffer[done..]), &self.writable) {
                (Err(e), Some(writable)) if e.kind() == std::io::ErrorKind::WouldBlock => loop {
                    let mut ready = match writable.writable().await {
                        Ok(ready) => ready,
                        Err(e) => return (buffer, Err(e)),
                    };
                    // A write that would block again clears the readiness,
                    // and the next wait is for the next edge.
                    if let Ok(written) = ready.try_io(|_| self.out.write(&buffer[done..])) {
                        break written;
                    }
                },
                (written, _) => written,
            };
            match written {
                Ok(0) => return (buffer, Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let sink = self.clone();
                    let waited = tokio::task::spawn_blocking(move || {
                        let result = sink.out.write_all_waiting(&buffer[done..]);
                        (buffer, result)
                    })
                    .await;
                    return match waited {
                        Ok(done) => done,
                        Err(e) => (Vec::new(), Err(std::io::Error::other(e.to_string()))),
                    };
                }
                Err(e) => return (buffer, Err(e)),
            }
        }
        (buffer, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_arrive_whole_and_in_order_through_a_generic_sink() {
        let (out, rx) = Outgoing::channel();
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(run_writer(rx, server));
        let mut senders = Vec::new();
        for t in 0..4 {
            let out = out.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..200 {
                    out.send_event(format!("[{t}:").as_bytes(), format!("{i}").as_bytes())
                        .await
                        .unwrap();
                }
            }));
        }
        drop(out);
        let reader = tokio::spawn(async move {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut client, &mut text)
                .await
                .unwrap();
            text
        });
        for s in senders {
            s.await.unwrap();
        }
        writer.await.unwrap().unwrap();
        let text = reader.await.unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let (t, i) = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix('}'))
                .and_then(|l| l.split_once(':'))
                .unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [200; 4]);
    }

    #[tokio::test]
    async fn a_closed_sink_fails_every_later_send() {
        let (out, rx) = Outgoing::channel();
        let (client, server) = tokio::io::duplex(16);
        drop(client);
        let writer = tokio::spawn(run_writer(rx, server));
        let _ = out.send_raw(b"a line that does not fit\n".to_vec()).await;
        assert!(writer.await.unwrap().is_err());
        assert!(out.send_raw(b"x\n".to_vec()).await.is_err());
    }

    /// A sink whose every write is a bug.
    struct PanickingSink;

    impl AsyncWrite for PanickingSink {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            panic!("the sink broke");
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Were the queue left open, sends would fill it and then wait forever
    /// for a writer that is gone, and their turns with them.
    #[tokio::test]
    async fn a_writer_that_panicked_fails_every_later_send() {
        let (out, rx) = Outgoing::channel();
        let writer = tokio::spawn(run_writer(rx, PanickingSink));
        out.send_raw(b"the line it panics on\n".to_vec())
            .await
            .unwrap();
        assert!(writer.await.unwrap_err().is_panic());
        let line = vec![b'x'; 1024];
        for _ in 0..2 * OUTGOING_LIMIT / line.len() {
            let send = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                out.send_event(b"[", &line),
            );
            assert!(
                send.await
                    .expect("a send waited for a writer that is gone")
                    .is_err(),
                "a send succeeded with no writer"
            );
        }
    }

    #[tokio::test]
    async fn senders_wait_when_the_queue_is_full() {
        let (out, rx) = Outgoing::channel();
        let (mut client, server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(run_writer(rx, server));
        let mut line = vec![b'x'; 16 * 1024 - 1];
        line.push(b'\n');
        // Nobody reads: the writer blocks on the duplex with what it took,
        // the queue fills, and then a send waits instead of growing memory.
        let mut sent = 0;
        loop {
            let send = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                out.send_raw(line.clone()),
            );
            if send.await.is_err() {
                break;
            }
            sent += 1;
            assert!(
                sent <= 2 * OUTGOING_LIMIT / line.len() + 1,
                "the queue did not fill"
            );
        }
        assert!(
            sent >= OUTGOING_LIMIT / line.len(),
            "waited too early: {sent}"
        );
        let reader = tokio::spawn(async move {
            let mut n = 0;
            let mut buf = vec![0; 65536];
            loop {
                let got = tokio::io::AsyncReadExt::read(&mut client, &mut buf)
                    .await
                    .unwrap();
                if got == 0 {
                    return n;
                }
                n += got;
            }
        });
        out.send_raw(line.clone()).await.unwrap();
        drop(out);
        writer.await.unwrap().unwrap();
        // The line whose send timed out was never queued.
        assert_eq!(reader.await.unwrap(), (sent + 1) * line.len());
    }
}
