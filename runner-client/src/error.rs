//! Everything that can go wrong between this process and the daemon.
//!
//! A run that the daemon ended with `status:"error"` is not a [`ClientError`]:
//! that is an answer, delivered as the run's [`End`](crate::End). These are
//! the cases where no answer can come.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

use runner_protocol::Rejected;

/// Why a request or a run could not complete.
///
/// `Clone` because one failure of the daemon fails every pending run; I/O
/// errors are shared behind an [`Arc`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon could not be started.
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        /// The program that was run.
        program: PathBuf,
        /// Why it failed.
        source: Arc<std::io::Error>,
    },
    /// The daemon exited (or closed its stdout) before the run ended.
    #[error("codex-runner exited ({}){}", describe(status), fatal.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Exited {
        /// How it exited, if that could be learnt.
        status: Option<ExitStatus>,
        /// The message of the last `fatal` line it printed on stderr, if any.
        fatal: Option<String>,
    },
    /// Writing a request to the daemon's stdin failed (typically a broken
    /// pipe: the daemon is gone). Later requests fail the same way.
    #[error("cannot write to codex-runner's stdin: {0}")]
    Write(Arc<std::io::Error>),
    /// Reading the daemon's stdout failed; the daemon was killed.
    #[error("cannot read codex-runner's stdout: {0}")]
    Read(Arc<std::io::Error>),
    /// The daemon printed a line that is not valid protocol. The run it was
    /// about cannot be known (it may have been an `end`), so it fails every
    /// run that was pending.
    #[error("unparseable output line from codex-runner ({error}): {line}")]
    InvalidOutput {
        /// The line (lossily decoded, cut to 500 bytes).
        line: String,
        /// Why it could not be parsed.
        error: String,
    },
    /// A run with this id has not ended yet (its `end` has not been read).
    #[error("run id {0:?} is already in use by a run that has not ended")]
    DuplicateId(String),
    /// `cancel` named no run that is pending.
    #[error("no pending run with id {0:?}")]
    UnknownRun(String),
    /// The daemon answered the run request with a `rejected` line.
    #[error("codex-runner rejected the request ({}): {}", .0.code, .0.error)]
    Rejected(Rejected),
    /// The request could not be encoded as JSON.
    #[error("cannot encode the request: {0}")]
    Encode(Arc<serde_json::Error>),
    /// [`Runner::shutdown`](crate::Runner::shutdown) closed the daemon's stdin:
    /// no new request can be sent.
    #[error("codex-runner is shutting down")]
    ShutDown,
    /// The [`Runner`](crate::Runner) was dropped (killing the daemon) before
    /// the run ended.
    #[error("the runner was dropped before the run ended")]
    Dropped,
}

fn describe(status: &Option<ExitStatus>) -> String {
    status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
}

impl ClientError {
    pub(crate) fn io_write(e: std::io::Error) -> Self {
        ClientError::Write(Arc::new(e))
    }
}
