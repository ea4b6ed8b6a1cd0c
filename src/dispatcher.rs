//! The dispatcher: the one owner of run ids, the queue, per-thread order and
//! cancellation.
//!
//! It reacts to these sources, polled in priority order: shutdown, a second
//! signal during it (kill now), room on stdout for its own waiting lines,
//! notices from turns (a thread became busy, a turn finished), SIGUSR1, and
//! decoded request lines. It never waits on stdout itself, so a client that
//! stopped reading cannot keep a signal or a `cancel` from acting. Notices
//! come before requests so that once a client has seen a run's `end` (sent
//! after its `Finished` notice), a request that reuses the id or resumes the
//! thread is never judged on stale state.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use runner_protocol::status::{RunStatus, StatusReport, StatusTotals};
use runner_protocol::{codes, End, OutputLine, Rejected, Rejection, Request, RunParams};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::turn::{run_turn, Stop, StopReason, TurnContext, TurnNotice};
use crate::writer::encode;

/// While its own lines waiting for stdout hold this much, the dispatcher
/// reads no more requests (each could add one): a client that writes without
/// reading is held back by its stdin pipe, as it is by turns' events. Far
/// above one answer, so that a `cancel` behind a few answers is still read.
const OUTBOX_LIMIT: usize = 64 * 1024;

/// A line from the reader.
#[derive(Debug)]
pub enum Inbound {
    /// A decoded line.
    Decoded {
        /// Its 1-based number.
        line: u64,
        /// Its length, the measure of what a queued run holds.
        bytes: usize,
        /// What it asks.
        request: Result<Request, Rejection>,
    },
    /// A line over the request size limit.
    TooLong(u64, usize),
}

/// A run the daemon has accepted and not yet ended.
struct Live {
    state: LiveState,
    /// The thread the run works on: its `resume` id, or the id codex
    /// announced in `thread.started`.
    thread: Option<String>,
    arrived: Instant,
    /// The length of its request line, counted against
    /// [`QueueLimits::bytes`] while it is queued.
    bytes: usize,
}

/// How much may wait for a slot (or for a thread) at once: each waiting run
/// holds its request in memory.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Runs (`--max-queued`).
    pub runs: usize,
    /// Bytes of their request lines (`--max-queued-bytes`).
    pub bytes: usize,
}

enum LiveState {
    Queued(Box<RunParams>),
    Running {
        stop: watch::Sender<Stop>,
        started: Instant,
        /// The turn reported that its time limit passed.
        timed_out: bool,
    },
}

/// What a waiting run holds in memory, about: its request line's length,
/// and for the JSON values kept as they were parsed (`config`,
/// `output_schema`) each value's and each key's own room, which text such
/// as `[[],[],…]` takes ten times less of.
fn held_bytes(params: &RunParams, line_bytes: usize) -> usize {
    const VALUE: usize = std::mem::size_of::<serde_json::Value>();
    const ENTRY: usize = 2 * std::mem::size_of::<String>();
    fn nodes(value: &serde_json::Value) -> usize {
        VALUE
            + match value {
                serde_json::Value::Array(items) => items.iter().map(nodes).sum(),
                serde_json::Value::Object(map) => map.values().map(|v| ENTRY + nodes(v)).sum(),
                _ => 0,
            }
    }
    let config: usize = params.config.values().map(|v| ENTRY + nodes(v)).sum();
    let schema: usize = params
        .output_schema
        .iter()
        .flat_map(|schema| schema.values())
        .map(|v| ENTRY + nodes(v))
        .sum();
    line_bytes + config + schema
}

/// Totals for the exit summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Runs accepted (queued).
    pub accepted: u64,
    /// Lines answered with `rejected`, and runs refused with an `end` before
    /// they were queued (invalid params, a full queue, a shutdown).
    pub refused: u64,
    /// Accepted runs that ended `ok`.
    pub ok: u64,
    /// Accepted runs that ended with an error (cancelled while queued included).
    pub failed: u64,
}

/// Owns the live runs.
pub struct Dispatcher {
    ctx: Arc<TurnContext>,
    max_concurrent: usize,
    queue_limits: QueueLimits,
    live: HashMap<String, Live>,
    /// Ids of queued runs, in arrival order.
    queue: VecDeque<String>,
    /// The sum of their request lines' lengths.
    queued_bytes: usize,
    running: usize,
    /// Threads with a running turn, and that turn's id.
    busy_threads: HashMap<String, String>,
    totals: Totals,
    born: Instant,
    /// A signal asked the daemon to stop: runs are no longer started, and
    /// a new one ends at once with `shutdown`.
    shutting_down: bool,
    /// The dispatcher's own lines (`end`s of runs that never started,
    /// `rejected`, `status`) that stdout had no room for yet. The
    /// dispatcher never waits on stdout: a client that stopped reading must
    /// not keep a signal or a `cancel` from stopping the turns. Requests
    /// are read only while it holds less than [`OUTBOX_LIMIT`], so it stays
    /// small.
    outbox: VecDeque<Vec<u8>>,
    /// The bytes in `outbox`.
    outbox_bytes: usize,
}

impl Dispatcher {
    /// A dispatcher that starts at most `max_concurrent` turns at once and
    /// keeps at most `queue_limits` waiting.
    pub fn new(ctx: Arc<TurnContext>, max_concurrent: usize, queue_limits: QueueLimits) -> Self {
        Dispatcher {
            ctx,
            max_concurrent: max_concurrent.max(1),
            queue_limits,
            live: HashMap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            running: 0,
            busy_threads: HashMap::new(),
            totals: Totals::default(),
            born: Instant::now(),
            shutting_down: false,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
        }
    }

    /// Serves until the input is exhausted (or `shutdown` fires) and every
    /// accepted run has ended.
    /// `kill_now` (a second signal, or SIGQUIT) ends the grace period of a shutdown.
    /// Each message on `log_status` (SIGUSR1) logs what is running.
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut notices: mpsc::UnboundedReceiver<TurnNotice>,
        shutdown: impl Future<Output = ()>,
        kill_now: impl Future<Output = ()>,
        mut log_status: mpsc::UnboundedReceiver<()>,
    ) -> Totals {
        tokio::pin!(shutdown);
        tokio::pin!(kill_now);
        let mut reading = true;
        let mut killing = false;
        let out = self.ctx.out.clone();
        // While stopping, lines are still read and answered until the last
        // run has ended: a client never waits on a line the daemon dropped.
        while (reading && !self.shutting_down) || !self.live.is_empty() {
            tokio::select! {
                biased;
                () = &mut shutdown, if !self.shutting_down => {
                    self.shutting_down = true;
                    tracing::info!(live = self.live.len(), "shutting down: stopping every run");
                    self.stop_all();
                }
                () = &mut kill_now, if self.shutting_down && !killing => {
                    killing = true;
                    tracing::warn!(live = self.live.len(), "killing every turn now, without the grace period");
                    for live in self.live.values() {
                        if let LiveState::Running { stop, .. } = &live.state {
                            // A reason the turn has not seen yet stays.
                            stop.send_modify(|stop| {
                                stop.reason.get_or_insert(StopReason::Shutdown);
                                stop.now = true;
                            });
                        }
                    }
                }
                () = out.room_for(self.outbox.front().map_or(0, Vec::len)), if !self.outbox.is_empty() => {
                    self.flush_outbox();
                }
                Some(notice) = notices.recv() => self.on_notice(notice),
                Some(()) = log_status.recv() => self.log_status(),
                line = inbound.recv(), if reading && self.outbox_bytes < OUTBOX_LIMIT => match line {
                    Some(line) => self.on_inbound(line),
                    None => {
                        reading = false;
                        tracing::info!(live = self.live.len(), "stdin closed: finishing the runs in flight");
                    }
                },
            }
            if !self.shutting_down {
                self.start_ready();
            }
        }
        // Nothing is left to stop: the rest may wait for stdout.
        self.outbox_bytes = 0;
        for line in self.outbox.drain(..) {
            if out.send_raw(line).await.is_err() {
                break;
            }
        }
        self.totals
    }

    /// Queues `line` for stdout, behind any line still waiting in the outbox.
    fn emit(&mut self, line: OutputLine) {
        let line = encode(&line);
        self.outbox_bytes += line.len();
        self.outbox.push_back(line);
        self.flush_outbox();
    }

    /// Moves the outbox's lines to stdout's queue while it has room. If
    /// stdout is gone they are dropped: nobody can read them.
    fn flush_outbox(&mut self) {
        while let Some(line) = self.outbox.front() {
            match self.ctx.out.try_send_raw(line) {
                Ok(true) => {
                    self.outbox_bytes -= line.len();
                    self.outbox.pop_front();
                }
                Ok(false) => return,
                Err(_closed) => {
                    self.outbox.clear();
                    self.outbox_bytes = 0;
                    return;
                }
            }
        }
    }

    fn on_notice(&mut self, notice: TurnNotice) {
        match notice {
            TurnNotice::ThreadStarted { id, thread_id } => {
                if let Some(live) = self.live.get_mut(&id) {
                    if live.thread.is_none() {
                        live.thread = Some(thread_id.clone());
                        self.busy_threads.insert(thread_id, id);
                    }
                }
            }
            TurnNotice::TimedOut { id } => {
                if let Some(Live {
                    state: LiveState::Running { timed_out, .. },
                    ..
                }) = self.live.get_mut(&id)
                {
                    *timed_out = true;
                }
            }
            TurnNotice::Finished { id, ok } => {
                self.finished(&id, ok);
            }
            TurnNotice::Crashed { id, error } => {
                // As complete an `end` as any other: the thread (to resume
                // it), and the times.
                let mut end = End::error(&id, codes::END_INTERNAL, error);
                if let Some(live) = self.live.get(&id) {
                    end.thread_id.clone_from(&live.thread);
                    if let LiveState::Running { started, .. } = &live.state {
                        end.duration_ms = Some(started.elapsed().as_millis() as u64);
                        end.queued_ms =
                            Some(started.duration_since(live.arrived).as_millis() as u64);
                    }
                }
                // Finished first, as a turn does: once the client sees the
                // `end`, the id and the thread are free.
                self.finished(&id, false);
                self.emit(OutputLine::End(end));
            }
        }
    }

    /// A running turn is over: its id and its thread are free again.
    fn finished(&mut self, id: &str, ok: bool) {
        if ok {
            self.totals.ok += 1;
        } else {
            self.totals.failed += 1;
        }
        if let Some(live) = self.live.remove(id) {
            self.running -= 1;
            if let Some(thread) = live.thread {
                if self
                    .busy_threads
                    .get(&thread)
                    .is_some_and(|owner| owner == id)
                {
                    self.busy_threads.remove(&thread);
                }
            }
        }
    }

    fn on_inbound(&mut self, line: Inbound) {
        let (line_no, bytes, decoded) = match line {
            Inbound::TooLong(line_no, len) => {
                let error = crate::reader::too_long(len, self.ctx.settings.max_request_bytes);
                self.reject(line_no, codes::REJECT_LINE_TOO_LONG, error, None);
                return;
            }
            Inbound::Decoded {
                line,
                bytes,
                request,
            } => (line, bytes, request),
        };
        let bytes = match &decoded {
            Ok(Request::Run {
                params: Ok(params), ..
            }) => held_bytes(params, bytes),
            _ => bytes,
        };
        match decoded {
            Err(r) => self.reject(line_no, r.code, r.message, r.request_id),
            Ok(Request::Cancel { id }) => self.cancel(line_no, id),
            Ok(Request::Status { request_id }) => {
                crate::fault::point("dispatcher-status");
                let report = self.status(request_id);
                self.emit(OutputLine::Status(report));
            }
            Ok(Request::Run { id, params }) => {
                if self.live.contains_key(&id) {
                    let error = format!("run id {id:?} is already queued or running");
                    self.reject(line_no, codes::REJECT_DUPLICATE_ID, error, Some(id));
                    return;
                }
                match params {
                    Err(invalid) => {
                        self.totals.refused += 1;
                        tracing::info!(run = %id, field = %invalid.field, "refused run: invalid params");
                        let end = End::error(id, codes::END_INVALID_PARAMS, invalid.message);
                        self.emit(OutputLine::End(end));
                    }
                    Ok(params) if self.shutting_down => {
                        self.totals.refused += 1;
                        tracing::info!(run = %id, "refused run: shutting down");
                        let mut end = End::error(
                            id,
                            codes::END_SHUTDOWN,
                            "not started: the runner is shutting down",
                        );
                        end.thread_id = params.resume;
                        self.emit(OutputLine::End(end));
                    }
                    Ok(params) if self.queue_is_full_for(&params, bytes).is_some() => {
                        // A bound on memory: each waiting run holds its
                        // request, and a client that never stops sending
                        // would otherwise grow the daemon until it is killed.
                        self.totals.refused += 1;
                        tracing::info!(run = %id, waiting = self.queue.len(), bytes = self.queued_bytes, "refused run: queue full");
                        let error = format!(
                            "{}: send it again once some have ended",
                            self.queue_is_full_for(&params, bytes)
                                .expect("just checked")
                        );
                        let mut end = End::error(id, codes::END_QUEUE_FULL, error);
                        end.thread_id = params.resume;
                        self.emit(OutputLine::End(end));
                    }
                    Ok(params) => {
                        self.totals.accepted += 1;
                        tracing::debug!(run = %id, "queued");
                        let live = Live {
                            thread: params.resume.clone(),
                            state: LiveState::Queued(params),
                            arrived: Instant::now(),
                            bytes,
                        };
                        self.live.insert(id.clone(), live);
                        self.queue.push_back(id);
                        self.queued_bytes += bytes;
                    }
                }
            }
        }
    }

    fn cancel(&mut self, line_no: u64, id: String) {
        match self.live.get(&id).map(|live| &live.state) {
            None => {
                let error = format!("no queued or running run has id {id:?}");
                self.reject(line_no, codes::REJECT_UNKNOWN_ID, error, Some(id));
            }
            Some(LiveState::Running { stop, .. }) => {
                // A second cancel, or one racing the turn's own end, is a no-op.
                stop.send_if_modified(|stop| {
                    stop.reason.is_none() && {
                        stop.reason = Some(StopReason::Cancelled);
                        true
                    }
                });
            }
            Some(LiveState::Queued(_)) => {
                let live = self.live.remove(&id).expect("just looked up");
                self.queue.retain(|queued| queued != &id);
                self.queued_bytes -= live.bytes;
                self.totals.failed += 1;
                let mut end = End::error(
                    &id,
                    codes::END_CANCELLED,
                    "cancelled by request (before it started)",
                );
                end.queued_ms = Some(live.arrived.elapsed().as_millis() as u64);
                end.thread_id = live.thread;
                self.emit(OutputLine::End(end));
            }
        }
    }

    fn reject(&mut self, line: u64, code: &str, error: String, request_id: Option<String>) {
        self.totals.refused += 1;
        tracing::info!(line, code, "rejected request line");
        let rejected = Rejected {
            code: code.to_owned(),
            error,
            line,
            request_id,
        };
        self.emit(OutputLine::Rejected(rejected));
    }

    /// Why a run with `params` and a request line of `bytes` may not wait,
    /// if it would have to: `--max-queued` runs, or `--max-queued-bytes`
    /// with it, waiting already. `None` if it may (or need not) wait.
    fn queue_is_full_for(&self, params: &RunParams, bytes: usize) -> Option<String> {
        let would_wait = self.running >= self.max_concurrent
            || params
                .resume
                .as_ref()
                .is_some_and(|t| self.busy_threads.contains_key(t));
        let limits = self.queue_limits;
        if !would_wait {
            None
        } else if self.queue.len() >= limits.runs {
            Some(format!(
                "{} runs are already waiting for a slot or their thread (--max-queued {})",
                self.queue.len(),
                limits.runs
            ))
        } else if self.queued_bytes + bytes > limits.bytes {
            Some(format!(
                "the {} runs waiting for a slot or their thread hold {} bytes of requests, and this {}-byte one would pass --max-queued-bytes {}",
                self.queue.len(),
                self.queued_bytes,
                bytes,
                limits.bytes
            ))
        } else {
            None
        }
    }

    /// Starts queued runs, in arrival order, while there is room. A run
    /// whose thread is busy keeps its place; later runs may pass it.
    fn start_ready(&mut self) {
        let mut index = 0;
        while self.running < self.max_concurrent && index < self.queue.len() {
            let id = &self.queue[index];
            let live = &self.live[id];
            if live
                .thread
                .as_ref()
                .is_some_and(|t| self.busy_threads.contains_key(t))
            {
                index += 1;
                continue;
            }
            let id = self.queue.remove(index).expect("index is in bounds");
            self.start(id);
        }
    }

    fn start(&mut self, id: String) {
        let live = self.live.get_mut(&id).expect("queued runs are live");
        let (stop_tx, stop_rx) = watch::channel(Stop::default());
        let running = LiveState::Running {
            stop: stop_tx,
            started: Instant::now(),
            timed_out: false,
        };
        let LiveState::Queued(params) = std::mem::replace(&mut live.state, running) else {
            unreachable!("only queued runs are started");
        };
        self.queued_bytes -= live.bytes;
        if let Some(thread) = &live.thread {
            self.busy_threads.insert(thread.clone(), id.clone());
        }
        self.running += 1;
        let queued_ms = live.arrived.elapsed().as_millis() as u64;
        tracing::debug!(run = %id, queued_ms, "starting turn");
        let ctx = self.ctx.clone();
        // The turn runs in its own task; a watcher turns a panic into the
        // run's `end` (through the dispatcher) so that no run is ever lost.
        // Every log line of the turn carries its run id through this span.
        let span = tracing::info_span!("run", id = %id);
        tokio::spawn(async move {
            let turn = tokio::spawn(
                run_turn(ctx.clone(), id.clone(), params, stop_rx, queued_ms).instrument(span),
            );
            if let Err(e) = turn.await {
                tracing::error!(run = %id, error = %e, "turn task failed");
                let error = format!("internal error: the turn task failed: {e}");
                let _ = ctx.notices.send(TurnNotice::Crashed { id, error });
            }
        });
    }

    /// The `status` line's counts and the longest-running runs, in the log:
    /// an operator cannot write to the client's stdin.
    fn log_status(&self) {
        /// Enough to find a stuck run; the count says how many more.
        const NAMED: usize = 10;
        let report = self.status(None);
        let mut running: Vec<String> = report
            .running
            .iter()
            .take(NAMED)
            .map(|r| {
                let secs = r.running_ms.unwrap_or_default() as f64 / 1000.0;
                let stopping = if r.stopping { ", stopping" } else { "" };
                format!("{} ({secs:.1} s{stopping})", r.id)
            })
            .collect();
        if report.running.len() > NAMED {
            running.push(format!("and {} more", report.running.len() - NAMED));
        }
        tracing::info!(
            running = report.running.len(),
            queued = report.queued.len(),
            queued_bytes = report.queued_bytes,
            accepted = report.totals.accepted,
            ok = report.totals.ok,
            failed = report.totals.failed,
            refused = report.totals.refused,
            uptime_s = report.uptime_ms / 1000,
            shutting_down = report.shutting_down,
            "status: running {}",
            if running.is_empty() {
                "nothing".to_owned()
            } else {
                running.join(", ")
            }
        );
    }

    /// What is running and queued now.
    fn status(&self, request_id: Option<String>) -> StatusReport {
        let ms = |since: Instant| since.elapsed().as_millis() as u64;
        let mut running: Vec<RunStatus> = self
            .live
            .iter()
            .filter_map(|(id, live)| match &live.state {
                LiveState::Running {
                    stop,
                    started,
                    timed_out,
                } => Some(RunStatus {
                    id: id.clone(),
                    thread_id: live.thread.clone(),
                    age_ms: ms(live.arrived),
                    running_ms: Some(ms(*started)),
                    stopping: stop.borrow().reason.is_some() || *timed_out,
                }),
                LiveState::Queued(_) => None,
            })
            .collect();
        running.sort_by_key(|r| std::cmp::Reverse(r.age_ms));
        let queued = self
            .queue
            .iter()
            .map(|id| {
                let live = &self.live[id];
                RunStatus {
                    id: id.clone(),
                    thread_id: live.thread.clone(),
                    age_ms: ms(live.arrived),
                    running_ms: None,
                    stopping: false,
                }
            })
            .collect();
        StatusReport {
            request_id,
            running,
            queued,
            max_concurrent: self.max_concurrent,
            max_queued: self.queue_limits.runs,
            max_queued_bytes: self.queue_limits.bytes,
            queued_bytes: self.queued_bytes,
            uptime_ms: ms(self.born),
            shutting_down: self.shutting_down,
            totals: StatusTotals {
                accepted: self.totals.accepted,
                ok: self.totals.ok,
                failed: self.totals.failed,
                refused: self.totals.refused,
            },
        }
    }

    fn stop_all(&mut self) {
        let queued: Vec<String> = self.queue.drain(..).collect();
        self.queued_bytes = 0;
        for id in queued {
            if let Some(live) = self.live.remove(&id) {
                self.totals.failed += 1;
                let mut end = End::error(
                    &id,
                    codes::END_SHUTDOWN,
                    "cancelled: the runner is shutting down (before it started)",
                );
                end.queued_ms = Some(live.arrived.elapsed().as_millis() as u64);
                end.thread_id = live.thread;
                self.emit(OutputLine::End(end));
            }
        }
        for live in self.live.values() {
            if let LiveState::Running { stop, .. } = &live.state {
                stop.send_if_modified(|stop| {
                    stop.reason.is_none() && {
                        stop.reason = Some(StopReason::Shutdown);
                        true
                    }
                });
            }
        }
    }
}
