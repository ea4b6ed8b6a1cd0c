//! The state the runner and its I/O tasks share: which runs are pending, where
//! their events go, and whether the daemon can still be written to.
//!
//! One `std` mutex guards it all, held only for map updates and channel sends
//! (which never block: the channels are unbounded), so a request's line
//! number, its route and its place in the write queue are assigned together.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use runner_protocol::{End, Rejected};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use crate::stream::Item;
use crate::ClientError;

/// How long a failed write waits to learn the daemon's fate: its exit and
/// the rest of its stderr (the stdout task gives stderr two seconds).
const GONE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// One request line for the writer task, and where to report its fate.
pub(crate) struct Outgoing {
    pub line: Vec<u8>,
    pub ack: oneshot::Sender<Result<(), ClientError>>,
}

/// Resolves once the writer has written (or failed to write) a request.
pub(crate) type Ack = oneshot::Receiver<Result<(), ClientError>>;

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Set once the daemon is known to be gone (see [`Shared::gone`]).
    gone_signal: tokio::sync::watch::Sender<bool>,
}

struct State {
    /// Runs sent and not yet ended, by id.
    runs: HashMap<String, Route>,
    /// The stdin line number of each pending run's request, to match a
    /// `rejected` line (which has no `id`) to its run.
    lines: HashMap<u64, String>,
    /// Lines queued for stdin so far; the daemon numbers them from 1.
    sent: u64,
    /// The writer task's queue, until stdin is closed.
    outgoing: Option<UnboundedSender<Outgoing>>,
    /// Why no more requests can be written.
    closed: Option<ClientError>,
    /// Why the daemon is gone, once its stdout has ended.
    gone: Option<ClientError>,
    /// The last `fatal` line on stderr.
    fatal: Option<String>,
}

struct Route {
    tx: UnboundedSender<Item>,
    line: u64,
}

impl Shared {
    pub fn new(outgoing: UnboundedSender<Outgoing>) -> Self {
        Shared {
            gone_signal: tokio::sync::watch::Sender::new(false),
            state: Mutex::new(State {
                runs: HashMap::new(),
                lines: HashMap::new(),
                sent: 0,
                outgoing: Some(outgoing),
                closed: None,
                gone: None,
                fatal: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a `run` line and registers its route.
    pub fn send_run(
        &self,
        id: &str,
        line: Vec<u8>,
    ) -> Result<(UnboundedReceiver<Item>, Ack), ClientError> {
        let mut state = self.lock();
        if state.runs.contains_key(id) {
            return Err(ClientError::DuplicateId(id.to_owned()));
        }
        let (ack, number) = state.queue(line)?;
        let (tx, rx) = unbounded_channel();
        state.runs.insert(id.to_owned(), Route { tx, line: number });
        state.lines.insert(number, id.to_owned());
        Ok((rx, ack))
    }

    /// Queues a `cancel` line for a pending run.
    pub fn send_cancel(&self, id: &str, line: Vec<u8>) -> Result<Ack, ClientError> {
        let mut state = self.lock();
        if !state.runs.contains_key(id) {
            return Err(state
                .unavailable()
                .unwrap_or(ClientError::UnknownRun(id.to_owned())));
        }
        state.queue(line).map(|(ack, _)| ack)
    }

    /// Forgets a run whose request could not be written.
    pub fn forget(&self, id: &str) {
        let mut state = self.lock();
        if let Some(route) = state.runs.remove(id) {
            state.lines.remove(&route.line);
        }
    }

    /// The daemon's stdin can take no more lines: `why` answers later requests.
    pub fn close_stdin(&self, why: ClientError) {
        let mut state = self.lock();
        state.closed.get_or_insert(why);
        state.outgoing = None;
    }

    /// The error a request fails with now, if any: the daemon's own fate
    /// first, as the most telling.
    pub fn unavailable(&self) -> Option<ClientError> {
        self.lock().unavailable()
    }

    pub fn is_pending(&self, id: &str) -> bool {
        self.lock().runs.contains_key(id)
    }

    /// An event or diag for a pending run; dropped if the run is not pending
    /// or its stream was dropped.
    pub fn deliver(&self, id: &str, item: Item) {
        if let Some(route) = self.lock().runs.get(id) {
            let _ = route.tx.send(item);
        }
    }

    /// A run's end.
    pub fn end(&self, end: End) {
        let mut state = self.lock();
        if let Some(route) = state.runs.remove(&end.id) {
            state.lines.remove(&route.line);
            let _ = route.tx.send(Ok(crate::RunEvent::End(end)));
        }
    }

    /// A `rejected` line: fails the run whose request was on that line. A
    /// rejected `cancel` (the run ended before it arrived) is ignored.
    pub fn rejected(&self, rejected: Rejected) {
        let mut state = self.lock();
        let Some(id) = state.lines.remove(&rejected.line) else {
            return;
        };
        if let Some(route) = state.runs.remove(&id) {
            let _ = route.tx.send(Err(ClientError::Rejected(rejected)));
        }
    }

    /// Fails one pending run.
    pub fn fail(&self, id: &str, error: ClientError) {
        let mut state = self.lock();
        if let Some(route) = state.runs.remove(id) {
            state.lines.remove(&route.line);
            let _ = route.tx.send(Err(error));
        }
    }

    /// Fails every pending run.
    pub fn fail_all(&self, error: &ClientError) {
        let mut state = self.lock();
        state.lines.clear();
        for (_, route) in state.runs.drain() {
            let _ = route.tx.send(Err(error.clone()));
        }
    }

    /// The daemon is gone: fails every pending run and every later request.
    pub fn gone(&self, error: ClientError) {
        self.lock().gone.get_or_insert(error.clone());
        self.close_stdin(error.clone());
        self.fail_all(&error);
        self.gone_signal.send_replace(true);
    }

    /// Why the daemon is gone, once the stdout task knows (it has reaped
    /// the daemon and read the rest of its stderr), waiting for that a
    /// little while; else why requests cannot be written, if known.
    pub async fn wait_gone(&self) -> Option<ClientError> {
        let mut gone = self.gone_signal.subscribe();
        let _ = tokio::time::timeout(GONE_WAIT, gone.wait_for(|gone| *gone)).await;
        self.unavailable()
    }

    pub fn set_fatal(&self, message: String) {
        self.lock().fatal = Some(message);
    }

    pub fn fatal(&self) -> Option<String> {
        self.lock().fatal.clone()
    }
}

impl State {
    fn unavailable(&self) -> Option<ClientError> {
        self.gone.clone().or_else(|| self.closed.clone())
    }

    /// Puts `line` on the write queue; returns its ack and line number.
    fn queue(&mut self, line: Vec<u8>) -> Result<(Ack, u64), ClientError> {
        if let Some(error) = self.unavailable() {
            return Err(error);
        }
        let (ack, done) = oneshot::channel();
        let queued = self
            .outgoing
            .as_ref()
            .is_some_and(|tx| tx.send(Outgoing { line, ack }).is_ok());
        if !queued {
            // The writer task is gone (the runner is being dropped).
            return Err(ClientError::Dropped);
        }
        self.sent += 1;
        Ok((done, self.sent))
    }
}
