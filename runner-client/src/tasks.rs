//! The three tasks around the daemon's pipes: one writes stdin, one reads
//! stdout (and owns the child, to learn how it exited), one reads stderr.

use std::borrow::Cow;
use std::io::Write;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use runner_protocol::{OutputLine, StderrLine, ThreadEvent};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::shared::{Outgoing, Shared};
use crate::{ClientError, RunEvent};

/// How long, once stdout has ended, to wait for the rest of stderr (where a
/// `fatal` line explaining the exit may still be).
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// Writes queued request lines, whole, in order. Owning stdin here, rather
/// than writing from `Runner::run`, means a caller that drops its future
/// mid-write cannot leave half a line behind.
pub(crate) async fn write_requests(
    shared: Arc<Shared>,
    mut stdin: ChildStdin,
    mut queue: UnboundedReceiver<Outgoing>,
) {
    while let Some(Outgoing { line, ack }) = queue.recv().await {
        if let Err(e) = stdin.write_all(&line).await {
            let error = ClientError::io_write(e);
            shared.close_stdin(error.clone());
            let _ = ack.send(Err(error.clone()));
            queue.close();
            while let Some(next) = queue.recv().await {
                let _ = next.ack.send(Err(error.clone()));
            }
            return;
        }
        let _ = ack.send(Ok(()));
    }
    // The queue was closed by `shutdown`: dropping stdin is the daemon's end
    // of input, after which it finishes every run and exits.
}

/// The fields every output line is routed by. `event` stays raw text so that
/// [`ThreadEvent`] sees codex's bytes (and both ids of a `web_search` item).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
}

/// Reads stdout to its end, routing each line; then waits for the child and
/// fails whatever is still pending. Returns how the child exited.
pub(crate) async fn read_stdout(
    shared: Arc<Shared>,
    mut child: Child,
    stdout: ChildStdout,
    stderr_task: JoinHandle<()>,
) -> Option<ExitStatus> {
    let mut lines = LineReader::new(stdout);
    let failure = loop {
        match lines.next().await {
            Ok(Some(line)) => route_line(&shared, line),
            Ok(None) => break None,
            Err(e) => {
                // We can no longer hear the daemon: stop it.
                let _ = child.start_kill();
                break Some(ClientError::Read(Arc::new(e)));
            }
        }
    };
    let status = child.wait().await.ok();
    let _ = tokio::time::timeout(STDERR_GRACE, stderr_task).await;
    let error = failure.unwrap_or_else(|| ClientError::Exited {
        status,
        fatal: shared.fatal(),
    });
    shared.gone(error);
    status
}

fn route_line(shared: &Shared, line: &[u8]) {
    let envelope = match serde_json::from_slice::<Envelope>(line) {
        Ok(envelope) => envelope,
        Err(e) => return invalid(shared, line, None, e),
    };
    match envelope.kind.as_ref() {
        "event" => {
            let (Some(id), Some(raw)) = (&envelope.id, envelope.event) else {
                return invalid(shared, line, envelope.id.as_deref(), "no `id` or `event`");
            };
            if !shared.is_pending(id) {
                return;
            }
            // The daemon checked that this is one JSON object: a run never
            // fails over an event the client alone cannot read.
            let event = match serde_json::from_str::<ThreadEvent>(raw.get()) {
                Ok(event) => RunEvent::Event(event),
                Err(e) => RunEvent::Unparsed {
                    event: raw.get().to_owned(),
                    error: e.to_string(),
                },
            };
            shared.deliver(id, Ok(event));
        }
        "end" | "rejected" => match serde_json::from_slice::<OutputLine>(line) {
            Ok(OutputLine::End(end)) => shared.end(end),
            Ok(OutputLine::Rejected(rejected)) => shared.rejected(rejected),
            // Only `end` and `rejected` are parsed here.
            Ok(_) => {}
            Err(e) => invalid(shared, line, envelope.id.as_deref(), e),
        },
        // A line type added after this client: ignored, as the protocol asks.
        _ => {}
    }
}

/// An output line that breaks the protocol fails its run if it names a
/// pending one, else every pending run (the lost line may have been an end).
fn invalid(shared: &Shared, line: &[u8], id: Option<&str>, error: impl ToString) {
    let text = String::from_utf8_lossy(&line[..line.len().min(500)]).into_owned();
    let error = ClientError::InvalidOutput {
        line: text,
        error: error.to_string(),
    };
    match id.filter(|id| shared.is_pending(id)) {
        Some(id) => shared.fail(id, error),
        None => shared.fail_all(&error),
    }
}

/// Reads stderr: `diag` lines go to their run, `fatal` is kept for the exit
/// error, everything else is a log line, copied to our stderr if asked.
pub(crate) async fn read_stderr(shared: Arc<Shared>, stderr: ChildStderr, forward_logs: bool) {
    let mut lines = LineReader::new(stderr);
    let logs = forward_logs.then(LogCopier::start).flatten();
    while let Ok(Some(line)) = lines.next().await {
        match serde_json::from_slice::<StderrLine>(line) {
            Ok(StderrLine::Diag { id, level, message }) => {
                shared.deliver(&id, Ok(RunEvent::Diag { level, message }))
            }
            Ok(StderrLine::Fatal { message }) => {
                if let Some(logs) = &logs {
                    logs.copy(format!("codex-runner: fatal: {message}").as_bytes());
                }
                shared.set_fatal(message);
            }
            // A log line, or a line type added after this client.
            Ok(_) | Err(_) => {
                if let Some(logs) = &logs {
                    logs.copy(line);
                }
            }
        }
    }
}

/// Lines queued for our stderr, at most; beyond, they are dropped (and
/// counted) rather than waited for.
const LOG_QUEUE: usize = 1024;

/// Copies the daemon's log lines to our stderr on a thread of its own. A
/// write to stderr blocks while its reader is behind (or gone): on the
/// runtime's thread that would stall every task, and here every run's
/// `diag` lines with it.
struct LogCopier {
    lines: std::sync::mpsc::SyncSender<Vec<u8>>,
    dropped: std::cell::Cell<u64>,
}

impl LogCopier {
    fn start() -> Option<LogCopier> {
        let (lines, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(LOG_QUEUE);
        std::thread::Builder::new()
            .name("codex-runner-logs".into())
            .spawn(move || {
                let stderr = std::io::stderr();
                for mut line in queue {
                    line.push(b'\n');
                    // A stderr that fails is no reason to stop reading ours.
                    let _ = stderr.lock().write_all(&line);
                }
            })
            .ok()?;
        Some(LogCopier {
            lines,
            dropped: std::cell::Cell::new(0),
        })
    }

    fn copy(&self, line: &[u8]) {
        let dropped = self.dropped.get();
        if dropped > 0 {
            let note =
                format!("codex-runner: {dropped} log lines dropped (stderr was not taking them)");
            if self.lines.try_send(note.into_bytes()).is_err() {
                self.dropped.set(dropped + 1);
                return;
            }
            self.dropped.set(0);
        }
        if self.lines.try_send(line.to_vec()).is_err() {
            self.dropped.set(self.dropped.get() + 1);
        }
    }
}

/// `\n`-separated lines without their terminator (and a trailing `\r`),
/// skipping blank ones. No length limit: the daemon bounds its own lines.
struct LineReader<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(inner: R) -> Self {
        LineReader {
            reader: BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        loop {
            self.buf.clear();
            if self.reader.read_until(b'\n', &mut self.buf).await? == 0 {
                return Ok(None);
            }
            let mut line = self.buf.as_slice();
            while let [rest @ .., b'\n' | b'\r'] = line {
                line = rest;
            }
            if !line.is_empty() {
                // Re-borrow to return the trimmed slice of `buf`.
                let len = line.len();
                return Ok(Some(&self.buf[..len]));
            }
        }
    }
}
