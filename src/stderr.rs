//! Stderr that never holds up the daemon.
//!
//! Diag lines, `fatal` and logs all go to stderr. Written in place, a full
//! stderr pipe (a client that reads only stdout, a stalled log shipper)
//! blocked the thread that wrote, and with it every turn: runs stopped
//! ending and the daemon could not exit. Now a line is written at once only
//! if fd 2 takes it without blocking (through a non-blocking description of
//! its own, see [`NonBlockingOut`]) and nothing waits before it, so that a
//! run's diag lines still precede its `end` as before; otherwise it is
//! queued whole, and one thread of its own writes the queue to fd 2,
//! blocking there if it must.
//!
//! The queue is bounded: codex's own stderr, which can be any amount, is
//! dropped beyond [`BULK_LIMIT`], the daemon's own lines (logs, `fatal`)
//! only beyond [`LIMIT`]; what is dropped is counted, and the count is
//! reported as soon as stderr moves again. Before the thread starts, and in
//! a process that never starts it (the library's tests), lines are written
//! in place.

use std::io::{ErrorKind, Write};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::stdio::NonBlockingOut;

/// Most bytes held for stderr when a line of codex's stderr comes.
pub const BULK_LIMIT: usize = 1 << 20;

/// Most bytes held for stderr when one of the daemon's own lines comes.
pub const LIMIT: usize = 4 << 20;

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// Lines dropped since the last report.
    dropped: u64,
    /// The writer is writing what it took (so the queue is not yet out).
    writing: bool,
    /// stderr failed (closed): nothing more is kept.
    broken: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when lines arrive, and when the writer is done with them.
    changed: Condvar,
    /// fd 2 without blocking; `None` if it is of a kind we only write
    /// blocking (then every line is queued).
    out: Option<NonBlockingOut>,
}

static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Starts the writer thread; lines written before go straight to fd 2.
pub fn start() {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        changed: Condvar::new(),
        out: NonBlockingOut::open(2).ok().flatten(),
    });
    if SHARED.set(shared.clone()).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stderr".into())
        .spawn(move || write_queue(&shared));
    if spawned.is_err() {
        // Without the thread, queued lines would never leave.
        if let Some(shared) = SHARED.get() {
            shared.queue.lock().expect("stderr queue").broken = true;
        }
    }
}

/// Queues one whole line of the daemon's own (or several, ending in `\n`).
pub fn write(line: &[u8]) {
    queue(line, LIMIT);
}

/// Queues one whole line that forwards codex's stderr.
pub fn write_bulk(line: &[u8]) {
    queue(line, BULK_LIMIT);
}

fn queue(line: &[u8], limit: usize) {
    let Some(shared) = SHARED.get() else {
        let _ = std::io::stderr().lock().write_all(line);
        return;
    };
    let mut queue = shared.queue.lock().expect("stderr queue");
    if queue.broken {
        return;
    }
    let mut line = line;
    if let (Some(out), true) = (&shared.out, queue.bytes.is_empty() && !queue.writing) {
        loop {
            match out.write(line) {
                Ok(n) if n == line.len() => return,
                Ok(0) => break,
                Ok(n) => line = &line[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    queue.broken = true;
                    return;
                }
            }
        }
        // What fd 2 did not take goes first in the queue, whole: a line
        // begun is finished, whatever the limit.
        queue.bytes.extend_from_slice(line);
        shared.changed.notify_all();
        return;
    }
    if queue.bytes.len() + line.len() > limit {
        queue.dropped += 1;
        return;
    }
    let was_empty = queue.bytes.is_empty();
    queue.bytes.extend_from_slice(line);
    if was_empty {
        shared.changed.notify_all();
    }
}

/// Waits until everything queued is written, or `limit` has passed (a
/// reader that never reads must not keep the daemon from exiting).
pub fn flush(limit: Duration) {
    let Some(shared) = SHARED.get() else { return };
    let until = Instant::now() + limit;
    let mut queue = shared.queue.lock().expect("stderr queue");
    while !queue.broken && (queue.writing || !queue.bytes.is_empty()) {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            return;
        };
        queue = shared
            .changed
            .wait_timeout(queue, left)
            .expect("stderr queue")
            .0;
    }
}

fn write_queue(shared: &Shared) {
    let mut taken = Vec::new();
    loop {
        let dropped = {
            let mut queue = shared.queue.lock().expect("stderr queue");
            queue.writing = false;
            shared.changed.notify_all();
            while queue.bytes.is_empty() && queue.dropped == 0 {
                queue = shared.changed.wait(queue).expect("stderr queue");
            }
            std::mem::swap(&mut taken, &mut queue.bytes);
            queue.writing = true;
            std::mem::take(&mut queue.dropped)
        };
        let mut written = write_blocking(shared.out.as_ref(), &taken);
        if dropped > 0 && written.is_ok() {
            let note = format!(
                "codex-runner: {dropped} stderr lines were dropped while stderr was not being read\n"
            );
            written = write_blocking(shared.out.as_ref(), note.as_bytes());
        }
        taken.clear();
        if written.is_err() {
            let mut queue = shared.queue.lock().expect("stderr queue");
            queue.broken = true;
            queue.writing = false;
            queue.bytes = Vec::new();
            shared.changed.notify_all();
            return;
        }
    }
}

/// Writes all of `bytes` to fd 2, waiting as long as it takes.
fn write_blocking(out: Option<&NonBlockingOut>, bytes: &[u8]) -> std::io::Result<()> {
    match out {
        Some(out) => out.write_all_waiting(bytes),
        None => std::io::stderr().write_all(bytes),
    }
}

/// A `tracing` writer: one log event, queued whole when dropped.
#[derive(Default)]
pub struct LogWriter(Vec<u8>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write(&self.0);
        }
    }
}
