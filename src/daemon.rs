//! Wiring: reader → dispatcher → turns → writer.
//!
//! `run` is generic over its input, output and shutdown trigger, so tests
//! can drive a whole daemon in-process and `main` passes stdin, stdout and
//! the signal handlers.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::dispatcher::{Dispatcher, QueueLimits, Totals};
use crate::reader::{run_reader, INBOUND_CAPACITY};
use crate::settings::Settings;
use crate::spawner::Spawner;
use crate::turn::TurnContext;
use crate::writer::{run_writer, Outgoing};

/// How the daemon ended.
#[derive(Debug)]
pub struct Summary {
    /// Request totals.
    pub totals: Totals,
    /// Writing stdout failed (its reader went away): an error, not a drain.
    pub stdout_error: Option<std::io::Error>,
    /// One of the daemon's own parts (the stdin reader, the stdout writer,
    /// the spawner thread) panicked: a bug. Every run was stopped; the
    /// daemon must exit with a `fatal` line.
    pub internal_error: Option<String>,
}

/// Serves requests from `input`, writing protocol lines to `output`, until
/// `input` ends or `shutdown` fires, and every accepted run has its `end`.
/// `kill_now`, after `shutdown`, skips the rest of the grace period; each
/// message on `log_status` logs what is running.
pub async fn run<R, W>(
    settings: Settings,
    input: R,
    output: W,
    shutdown: impl Future<Output = ()>,
    kill_now: impl Future<Output = ()>,
    log_status: mpsc::UnboundedReceiver<()>,
) -> Summary
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // A panic in the reader, the writer or the spawner thread is a bug that
    // leaves the daemon deaf, mute or unable to start codex: it stops every
    // run (as a shutdown does) and is reported.
    let (task_failed_tx, mut task_failed_rx) = mpsc::unbounded_channel::<String>();

    let (out, out_rx) = Outgoing::channel();
    let (stdout_failed_tx, stdout_failed_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = watch_task(
        "stdout writer",
        tokio::spawn(run_writer(out_rx, output)),
        task_failed_tx.clone(),
    );
    let writer = tokio::spawn(async move {
        let result = writer.await.expect("the watcher does not panic");
        if matches!(result, Some(Err(_))) {
            let _ = stdout_failed_tx.send(());
        }
        result
    });

    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let max_request_bytes = settings.max_request_bytes;
    let max_concurrent = settings.max_concurrent;
    let queue_limits = QueueLimits {
        runs: settings.max_queued,
        bytes: settings.max_queued_bytes,
    };
    let ctx = Arc::new(TurnContext {
        settings: Arc::new(settings),
        out,
        notices: notice_tx,
        spawner: Spawner::start({
            let failed = task_failed_tx.clone();
            move |why| {
                let _ = failed.send(format!("the codex spawner thread panicked: {why}"));
            }
        }),
    });
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let reader = tokio::spawn(run_reader(input, max_request_bytes, inbound_tx));
    let stop_reader = reader.abort_handle();
    let reader = watch_task("stdin reader", reader, task_failed_tx);

    // A closed stdout is a shutdown too: nobody can see the runs any more.
    let mut internal_error = None;
    let shutdown = async {
        tokio::select! {
            () = shutdown => {}
            Ok(()) = stdout_failed_rx => tracing::error!("stdout closed: stopping every run"),
            Some(why) = task_failed_rx.recv() => {
                tracing::error!("internal error: {why}; stopping every run");
                internal_error = Some(why);
            }
        }
    };
    let totals = Dispatcher::new(ctx, max_concurrent, queue_limits)
        .run(inbound_rx, notice_rx, shutdown, kill_now, log_status)
        .await;
    // The reader may be blocked on stdin that never closes (shutdown case).
    stop_reader.abort();
    let _ = reader.await;
    // Every Outgoing is gone with the dispatcher and the turns: the writer
    // drains what is queued and returns.
    let stdout_error = writer
        .await
        .expect("the watcher does not panic")
        .and_then(Result::err);
    // A part that panicked while no run was live (or as the last one ended)
    // may have ended the dispatcher as end of input does, before its
    // failure could stop anything: its watcher, awaited above, has sent why.
    let internal_error = internal_error.or_else(|| task_failed_rx.try_recv().ok());
    Summary {
        totals,
        stdout_error,
        internal_error,
    }
}

/// Awaits one of the daemon's own tasks: its output, or `None` if it was
/// aborted or panicked (then `failed` gets why, at once).
fn watch_task<T: Send + 'static>(
    name: &'static str,
    task: JoinHandle<T>,
    failed: mpsc::UnboundedSender<String>,
) -> JoinHandle<Option<T>> {
    tokio::spawn(async move {
        match task.await {
            Ok(output) => Some(output),
            Err(e) => {
                if e.is_panic() {
                    let why = panic_message(&*e.into_panic()).to_owned();
                    let _ = failed.send(format!("the {name} panicked: {why}"));
                }
                None
            }
        }
    })
}

/// The message a panic was raised with (its payload, as caught or as the
/// panic hook sees it).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
