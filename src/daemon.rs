//! Wiring: reader → dispatcher → turns → writer.
//!
//! `run` is generic over its input, output and shutdown trigger, so tests
//! can drive a whole daemon in-process and `main` passes stdin, stdout and
//! the signal handlers.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::dispatcher::{Dispatcher, Totals};
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
}

/// Serves requests from `input`, writing protocol lines to `output`, until
/// `input` ends or `shutdown` fires, and every accepted run has its `end`.
/// `kill_now`, after `shutdown`, skips the rest of the grace period.
pub async fn run<R, W>(
    settings: Settings,
    input: R,
    output: W,
    shutdown: impl Future<Output = ()>,
    kill_now: impl Future<Output = ()>,
) -> Summary
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, out_rx) = Outgoing::channel();
    let (stdout_failed_tx, stdout_failed_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let result = run_writer(out_rx, output).await;
        if result.is_err() {
            let _ = stdout_failed_tx.send(());
        }
        result
    });

    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let max_request_bytes = settings.max_request_bytes;
    let (max_concurrent, max_queued) = (settings.max_concurrent, settings.max_queued);
    let ctx = Arc::new(TurnContext {
        settings: Arc::new(settings),
        out,
        notices: notice_tx,
        spawner: Spawner::start(),
    });
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let reader = tokio::spawn(run_reader(input, max_request_bytes, inbound_tx));

    // A closed stdout is a shutdown too: nobody can see the runs any more.
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(()) = stdout_failed_rx => tracing::error!("stdout closed: stopping every run"),
        }
    };
    let totals = Dispatcher::new(ctx, max_concurrent, max_queued)
        .run(inbound_rx, notice_rx, shutdown, kill_now)
        .await;
    // The reader may be blocked on stdin that never closes (shutdown case).
    reader.abort();
    // Every Outgoing is gone with the dispatcher and the turns: the writer
    // drains what is queued and returns.
    let stdout_error = match writer.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(std::io::Error::other(e.to_string())),
    };
    Summary {
        totals,
        stdout_error,
    }
}
