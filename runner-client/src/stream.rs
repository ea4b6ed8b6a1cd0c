//! One run's stream of events.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use runner_protocol::events::ItemDetails;
use runner_protocol::{DiagLevel, End, ThreadEvent};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::ClientError;

/// What a [`RunStream`] yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunEvent {
    /// One codex event, in the order codex printed it.
    Event(ThreadEvent),
    /// A `diag` line about this run from the daemon's stderr (codex's own
    /// stderr, dropped output lines). stderr is a separate pipe, so these are
    /// best effort: not ordered with the events, and lost after the `end`.
    Diag {
        /// How bad.
        level: DiagLevel,
        /// The message.
        message: String,
    },
    /// An event the daemon forwarded that this client cannot type (nested
    /// deeper than serde_json's 128 levels, say): codex's bytes, and why.
    /// The run goes on; its events stay in order.
    Unparsed {
        /// The event's JSON text.
        event: String,
        /// Why it could not be read as a [`ThreadEvent`].
        error: String,
    },
    /// The run's last item. `status` says whether the turn succeeded.
    End(End),
}

/// The items a run's channel carries: events, then an `End` or one error.
pub(crate) type Item = Result<RunEvent, ClientError>;

/// The events of one run, in order, ending with [`RunEvent::End`] or with one
/// [`ClientError`]; after either, `None`.
///
/// Events are buffered without bound, so a run that is not read never blocks
/// the others. Dropping the stream does not cancel the run (its id stays in
/// use until the daemon ends it); call [`Runner::cancel`](crate::Runner::cancel).
#[derive(Debug)]
pub struct RunStream {
    id: String,
    rx: UnboundedReceiver<Item>,
    done: bool,
}

/// A finished run: see [`RunStream::collect`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    /// Every event, in order.
    pub events: Vec<ThreadEvent>,
    /// The `diag` lines that arrived before the end.
    pub diags: Vec<(DiagLevel, String)>,
    /// The text of the events that could not be typed
    /// ([`RunEvent::Unparsed`]), in order.
    pub unparsed: Vec<String>,
    /// The end. Check [`End::status`]: a failed turn is an answer, not an `Err`.
    pub end: End,
}

impl RunStream {
    pub(crate) fn new(id: String, rx: UnboundedReceiver<Item>) -> Self {
        RunStream {
            id,
            rx,
            done: false,
        }
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next item, or `None` after the end (or an error).
    pub async fn next(&mut self) -> Option<Item> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    /// Reads the run to its end.
    pub async fn collect(mut self) -> Result<RunOutput, ClientError> {
        let mut events = Vec::new();
        let mut diags = Vec::new();
        let mut unparsed = Vec::new();
        while let Some(item) = self.next().await {
            match item? {
                RunEvent::Event(event) => events.push(event),
                RunEvent::Diag { level, message } => diags.push((level, message)),
                RunEvent::Unparsed { event, .. } => unparsed.push(event),
                RunEvent::End(end) => {
                    return Ok(RunOutput {
                        events,
                        diags,
                        unparsed,
                        end,
                    })
                }
            }
        }
        // `next` yields an error before `None` unless an end came first.
        Err(ClientError::Dropped)
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(item)) => item,
            // Every sender is gone without an end: the reader task was
            // dropped with the runner.
            Poll::Ready(None) => Err(ClientError::Dropped),
        };
        self.done = matches!(item, Ok(RunEvent::End(_)) | Err(_));
        Poll::Ready(Some(item))
    }
}

impl Stream for RunStream {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.get_mut().poll_item(cx)
    }
}

impl RunOutput {
    /// The text of every completed `agent_message` item, in order.
    pub fn agent_messages(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| matches!(e, ThreadEvent::ItemCompleted { .. }))
            .filter_map(|e| match &e.item()?.details {
                ItemDetails::AgentMessage { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The `type` of every event, in order.
    pub fn event_kinds(&self) -> Vec<&str> {
        self.events.iter().map(ThreadEvent::kind).collect()
    }
}
