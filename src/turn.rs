//! One turn: prepare its CODEX_HOME, spawn codex, forward its events, stop it
//! on cancel/timeout/shutdown, and produce exactly one `end`.
//!
//! A failure anywhere in here becomes this run's `end` with a precise code;
//! it never reaches other runs or the daemon.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runner_protocol::{codes, End, EndStatus, RunParams};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::child;
use crate::codex_home::{self, TurnHome};
use crate::command::{codex_args, codex_env};
use crate::diag::{self, Redactor};
use crate::events::{EventPeek, TurnState};
use crate::home_pool::IdleHomes;
use crate::lines::{ChunkReader, Frame, LineFramer};
use crate::settings::Settings;
use crate::spawner::Spawner;
use crate::writer::Outgoing;

/// Reads of codex's stdout, at most (memory is touched only as far as reads
/// fill it; a longer line is read in several parts).
const TURN_READ_BUF: usize = 64 * 1024;

/// Why a turn is being stopped before it finished by itself. The first
/// reason to arrive wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A `cancel` request.
    Cancelled,
    /// The daemon is shutting down.
    Shutdown,
}

/// What the dispatcher asks of a running turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stop {
    /// Stop it, for this reason (the first one set stays).
    pub reason: Option<StopReason>,
    /// The daemon got a second shutdown signal: kill now, no grace. A turn
    /// already stopping (timed out, say) keeps its reason.
    pub now: bool,
}

/// What a turn tells the dispatcher.
#[derive(Debug)]
pub enum TurnNotice {
    /// Codex announced the thread (so later turns on it must wait).
    ThreadStarted {
        /// Run id.
        id: String,
        /// Codex thread id.
        thread_id: String,
    },
    /// The turn's time limit passed: it is being stopped (for `status`).
    TimedOut {
        /// Run id.
        id: String,
    },
    /// The turn is over and its resources are released; its `end` follows.
    Finished {
        /// Run id.
        id: String,
        /// Whether the end is `ok`.
        ok: bool,
    },
    /// The turn's task panicked (a bug) after its resources were released
    /// (their drops): the dispatcher writes its `end`, from what it knows
    /// of the run.
    Crashed {
        /// Run id.
        id: String,
        /// What failed.
        error: String,
    },
}

/// What every turn shares.
pub struct TurnContext {
    /// Daemon settings.
    pub settings: Arc<Settings>,
    /// The stdout writer.
    pub out: Outgoing,
    /// Notices to the dispatcher. Unbounded: at most three per running turn.
    pub notices: mpsc::UnboundedSender<TurnNotice>,
    /// Starts codex processes.
    pub spawner: Spawner,
}

/// Runs one turn to its `end`.
pub async fn run_turn(
    ctx: Arc<TurnContext>,
    id: String,
    params: Box<RunParams>,
    stop: watch::Receiver<Stop>,
    queued_ms: u64,
) {
    let started = Instant::now();
    let mut end = drive(&ctx, &id, &params, stop).await;
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    end.queued_ms = Some(queued_ms);
    if end.thread_id.is_none() {
        end.thread_id.clone_from(&params.resume);
    }
    // Finished goes first: once the client sees the `end`, the id must be
    // free for reuse and the thread free for its next turn.
    let ok = end.status == EndStatus::Ok;
    log_end(&end);
    let _ = ctx.notices.send(TurnNotice::Finished { id, ok });
    let _ = ctx.out.send_end(end).await;
}

/// A run's end in the log (its id is the span's): a failure at the default
/// level, so an operator sees it without reading stdout; a stop that was
/// asked for at info; every other end at debug.
fn log_end(end: &End) {
    let duration_ms = end.duration_ms;
    let error = end.error.as_deref().unwrap_or_default();
    match end.code.as_deref() {
        None => tracing::debug!(duration_ms, "run ended ok"),
        Some(code @ (codes::END_CANCELLED | codes::END_SHUTDOWN)) => {
            tracing::info!(code, duration_ms, "run stopped: {error}")
        }
        Some(code) => tracing::warn!(
            code,
            duration_ms,
            exit_code = end.exit_code,
            signal = end.signal,
            "run failed: {error}"
        ),
    }
}

async fn drive(
    ctx: &TurnContext,
    id: &str,
    params: &RunParams,
    mut stop: watch::Receiver<Stop>,
) -> End {
    let settings = &ctx.settings;
    let redactor = Redactor::for_params(params);
    let bin = match &settings.codex {
        Ok(bin) => bin,
        Err(why) => return End::error(id, codes::END_SPAWN_FAILED, why.clone()),
    };
    if let Err(message) = check_paths(params) {
        return End::error(id, codes::END_INVALID_PARAMS, message);
    }
    let home = match codex_home::prepare(&settings.home, Some(bin), id, params) {
        Ok(home) => home,
        Err(e) => {
            return End::error(
                id,
                codes::END_CONFIG_ERROR,
                redactor.redact(&diag::chain(&e)),
            )
        }
    };
    let args = codex_args(params, home.output_schema.as_deref());
    let env = codex_env(params, id, home.path(), bin);
    let container = settings.containment.turn();
    // The prompt goes to codex's stdin, which is then closed (codex reads
    // until EOF).
    let prompt = params.prompt_text();
    let spawned = child::spawn(
        &ctx.spawner,
        bin,
        args,
        env,
        container.cgroup_fd(),
        prompt.as_bytes(),
    )
    .await;
    let mut proc = match spawned {
        Ok(proc) => proc,
        Err(e) => return End::error(id, codes::END_SPAWN_FAILED, diag::chain(&e)),
    };
    let pid = proc.id();
    tracing::debug!(pid, "spawned codex");
    // Moved to a binding declared after `proc`, so that on the panic path it
    // is dropped first: it must see codex's process tree (and kill it)
    // before `proc`'s drop kills codex and its children are reparented away.
    let mut container = container;
    container.started(pid);

    if let Some(rest) = proc.stdin.take() {
        tokio::spawn(rest.write());
    }
    let mut stderr = diag::StderrForwarder::new(
        proc.stderr.take().expect("stderr is piped"),
        id,
        redactor.clone(),
    );
    let stdout = proc.stdout.take().expect("stdout is piped");
    let mut framer = LineFramer::new(
        ChunkReader::new(stdout, TURN_READ_BUF),
        settings.max_event_bytes,
    );

    let event_prefix = event_prefix(id);
    let mut state = TurnState::default();
    let mut stop_reason: Option<StopReason> = None;
    let mut timed_out = false;
    let timeout = params
        .timeout_secs
        .map(Duration::from_secs_f64)
        .or(settings.turn_timeout);
    let timeout_at = timeout.map(|t| tokio::time::Instant::now() + t);
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut stdout_done = false;
    // Set once codex is reaped; its status stays `None` if the wait failed.
    let mut reaped = false;
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut stdout_closed_stop = false;
    let mut stop_closed = false;
    // A stop came while codex's stdout was read after its exit.
    let mut drain_stopped = false;
    // Polled in place: a new `sleep_until` per loop turn would register a
    // timer (and wake the timer driver) for every line codex prints.
    let timeout_sleep = sleep_until(timeout_at.unwrap_or(far));
    let kill_sleep = sleep_until(far);
    let drain_sleep = sleep_until(far);
    tokio::pin!(timeout_sleep, kill_sleep, drain_sleep);

    // SIGINT to codex now (its graceful stop), SIGKILL to every process of
    // the turn once the grace period is over.
    macro_rules! interrupt {
        () => {{
            container.note_descendants(pid);
            child::interrupt(pid);
            let at = tokio::time::Instant::now() + settings.kill_grace;
            kill_at = Some(at);
            kill_sleep.as_mut().reset(at);
        }};
    }
    // The dispatcher asked: stop (SIGINT, then SIGKILL after the grace
    // period), or kill now.
    macro_rules! on_stop {
        ($changed:expr) => {{
            let asked = match $changed {
                Ok(()) => *stop.borrow_and_update(),
                // The dispatcher is gone: treat as shutdown (and stop
                // polling a channel that is always ready now).
                Err(_) => {
                    stop_closed = true;
                    Stop {
                        reason: Some(StopReason::Shutdown),
                        now: false,
                    }
                }
            };
            crate::fault::point("turn-stop");
            let stopping = stop_reason.is_some() || timed_out;
            if asked.now {
                if !stopping {
                    stop_reason = Some(asked.reason.unwrap_or(StopReason::Shutdown));
                }
                container.note_descendants(pid);
                container.kill_all(pid);
                kill_at = None;
            } else if let (Some(reason), false) = (asked.reason, stopping) {
                stop_reason = Some(reason);
                interrupt!();
            }
        }};
    }
    macro_rules! timeout_due {
        () => {
            timeout_at.is_some() && stop_reason.is_none() && !timed_out && !reaped
        };
    }
    macro_rules! on_timeout {
        () => {{
            timed_out = true;
            let _ = ctx.notices.send(TurnNotice::TimedOut { id: id.to_owned() });
            interrupt!();
        }};
    }
    macro_rules! on_kill {
        () => {{
            tracing::debug!(pid, "grace period over: killing every process of the turn");
            container.kill_all(pid);
            kill_at = None;
        }};
    }

    // Forwards one line of codex's stdout (or reports it). While stdout is
    // backed up the line waits for room, and the turn can still be
    // cancelled, time out or be killed meanwhile: a client that stopped
    // reading slows codex down, but never makes it unstoppable.
    macro_rules! forward_line {
        ($line:expr) => {{
            let line: &[u8] = $line;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match state.observe(line) {
                EventPeek::Event { thread_started } => {
                    if let Some(thread_id) = thread_started {
                        let _ = ctx.notices.send(TurnNotice::ThreadStarted {
                            id: id.to_owned(),
                            thread_id,
                        });
                    }
                    let sent = match ctx.out.try_send_event(event_prefix.as_bytes(), line) {
                        Ok(true) => Ok(()),
                        Ok(false) => {
                            let send = ctx.out.send_event(event_prefix.as_bytes(), line);
                            tokio::pin!(send);
                            loop {
                                tokio::select! {
                                    biased;
                                    sent = &mut send => break sent,
                                    changed = stop.changed(), if !reaped && !stop_closed => on_stop!(changed),
                                    _ = &mut timeout_sleep, if timeout_due!() => on_timeout!(),
                                    _ = &mut kill_sleep, if kill_at.is_some() => on_kill!(),
                                }
                            }
                        }
                        Err(closed) => Err(closed),
                    };
                    if sent.is_err() {
                        // stdout is gone: nobody can see this turn; stop it.
                        // Once codex is reaped its pid may be another
                        // process's: nothing is signalled then.
                        if !stdout_closed_stop && stop_reason.is_none() {
                            stdout_closed_stop = true;
                            stop_reason = Some(StopReason::Shutdown);
                            if !reaped {
                                interrupt!();
                            }
                        }
                    }
                }
                EventPeek::NotJson => {
                    // Redacted before it is cut and quoted, either of
                    // which could leave a secret no longer whole.
                    let redacted = redactor.redact(&String::from_utf8_lossy(line));
                    let sample = diag::sample(redacted.as_bytes());
                    diag::emit(
                        id,
                        runner_protocol::DiagLevel::Warn,
                        &format!("codex printed a non-JSON stdout line (not forwarded): {sample}"),
                    );
                }
            }
        }};
    }

    macro_rules! too_long {
        ($len:expr) => {{
            let len = $len;
            state.too_long(len);
            diag::emit(
                id,
                runner_protocol::DiagLevel::Error,
                &format!(
                    "codex printed a {len}-byte line, over the {}-byte limit (not forwarded)",
                    settings.max_event_bytes
                ),
            );
        }};
    }
    // Stops reading a stdout that descendants of an exited codex hold open,
    // after what was already read.
    macro_rules! end_drain {
        () => {{
            match framer.take_rest() {
                Some(Frame::Line(line)) => forward_line!(&line),
                Some(Frame::TooLong { len }) => too_long!(len),
                None => {}
            }
            stdout_done = true;
        }};
    }

    while !(stdout_done && reaped) {
        tokio::select! {
            biased;
            changed = stop.changed(), if !stop_closed && (!reaped || !stdout_done) => {
                if !reaped {
                    on_stop!(changed);
                } else {
                    // Nothing is left to stop after the exit, but a stop (a
                    // second signal, say) need not wait out the drain.
                    if changed.is_err() {
                        stop_closed = true;
                    }
                    drain_stopped = true;
                    tracing::debug!("stopped while codex's stdout stays open after its exit; closing it");
                    end_drain!();
                }
            }
            _ = &mut timeout_sleep, if timeout_due!() => on_timeout!(),
            _ = &mut kill_sleep, if kill_at.is_some() => on_kill!(),
            frame = framer.next_frame(), if !stdout_done => match frame {
                Ok(Some(Frame::Line(line))) => {
                    forward_line!(&line);
                    // Every further line that read returned, before polling
                    // anything else again.
                    while let Some(line) = framer.peek_line() {
                        let len = line.len();
                        forward_line!(line);
                        framer.consume_line(len);
                    }
                }
                Ok(Some(Frame::TooLong { len })) => too_long!(len),
                Ok(None) => stdout_done = true,
                Err(e) => {
                    state.io_error(e.to_string());
                    stdout_done = true;
                }
            },
            status = proc.wait(), if !reaped => {
                reaped = true;
                match status {
                    Ok(status) => {
                        tracing::debug!(pid, %status, "reaped codex");
                        exit = Some(status);
                    }
                    Err(e) => state.wait_failed(e.to_string()),
                }
                kill_at = None;
                // Whatever codex left behind (background commands, servers)
                // goes with it, at once: the sooner after the reaping, the
                // smaller the chance that its pid, the group's id, is reused.
                container.kill_after_exit(pid);
                if !stdout_done {
                    // A process that escaped the kill may hold stdout open:
                    // read what is there, but not forever.
                    let at = tokio::time::Instant::now() + settings.kill_grace;
                    drain_until = Some(at);
                    drain_sleep.as_mut().reset(at);
                }
            }
            () = stderr.forward_next(), if !stderr.done() => {}
            _ = &mut drain_sleep, if drain_until.is_some() && !stdout_done => {
                tracing::debug!("codex exited but its stdout stays open; closing it");
                end_drain!();
            }
        }
    }
    let nothing_left = container.release().await;
    // stderr closes when the last process holding it is gone; one that
    // escaped (no cgroup) must not hold the turn's end hostage.
    // After a stop, only what is already there is read.
    let stderr_wait = if drain_stopped {
        Duration::ZERO
    } else {
        settings.kill_grace.max(Duration::from_secs(1))
    };
    let rest = tokio::time::timeout(stderr_wait, stderr.forward_rest());
    let read_all = tokio::select! {
        read = rest => read.is_ok(),
        _ = stop.changed(), if !stop_closed => false,
    };
    if !read_all {
        tracing::debug!("codex's stderr stays open after the turn; not waiting for it");
    }
    let stderr_tail = stderr.into_tail();
    let end = state.into_end(
        id,
        exit,
        stop_reason,
        timed_out.then_some(timeout.unwrap_or_default()),
        &stderr_tail,
        &redactor,
    );
    // With no process of the turn left, nothing can write to its home any
    // more: it can serve a later turn.
    release_home(home, &settings.home.idle, nothing_left);
    end
}

/// Paths codex would fail on with a less precise message.
pub(crate) fn check_paths(p: &RunParams) -> Result<(), String> {
    if let Some(cwd) = &p.cwd {
        if !std::path::Path::new(cwd).is_dir() {
            return Err(format!("params.cwd: {cwd:?} is not an existing directory"));
        }
    }
    for (i, dir) in p.additional_directories.iter().enumerate() {
        if !std::path::Path::new(dir).is_dir() {
            return Err(format!(
                "params.additional_directories[{i}]: {dir:?} is not an existing directory"
            ));
        }
    }
    for image in p.images() {
        if !std::path::Path::new(image).is_file() {
            return Err(format!(
                "params.input: image {image:?} is not an existing file"
            ));
        }
    }
    Ok(())
}

/// Removes the turn's home, or empties it for a later turn if `reusable`
/// (see [`TurnHome::recycle`]). A home that cannot be removed now (out of
/// descriptors, say) is removed at exit.
pub fn release_home(home: TurnHome, idle: &IdleHomes, reusable: bool) {
    let path = home.path().to_path_buf();
    let released = if reusable {
        home.recycle(idle)
    } else {
        home.remove()
    };
    if let Err(e) = released {
        // Tried again now and, failing that, at exit, where a failure warns.
        tracing::debug!(path = %path.display(), error = %e, "could not remove the turn's CODEX_HOME");
        idle.remove(path);
    }
}

/// `{"type":"event","id":<id>,"event":` — the constant head of every event
/// line of a run; codex's bytes and `}` follow.
pub fn event_prefix(id: &str) -> String {
    format!(
        r#"{{"type":"event","id":{},"event":"#,
        serde_json::to_string(id).expect("strings serialise")
    )
}
