//! [`Runner`]: the daemon as a child process, and the requests sent to it.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use runner_protocol::{RequestLine, RunParams};
use tokio::process::Command;
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::{AbortHandle, JoinHandle};

use crate::shared::{Ack, Shared};
use crate::stop::DaemonProcess;
use crate::{tasks, ClientError, RunStream};

/// How to start the daemon; see [`Runner::builder`].
#[derive(Debug, Clone)]
pub struct RunnerBuilder {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    current_dir: Option<PathBuf>,
    forward_logs: bool,
}

/// A running codex-runner daemon.
///
/// Requests may be sent from many tasks at once (`&self`). Dropping the runner
/// stops the daemon: SIGTERM, so that it stops every turn and cleans up, a
/// second one a second later, and SIGKILL if it is still there ten seconds
/// after that (from a thread of its own: the drop does not block). Call
/// [`Runner::shutdown`] to let the runs finish instead.
pub struct Runner {
    shared: Arc<Shared>,
    pid: Option<u32>,
    /// The daemon by pidfd, for the drop (none before Linux 5.3).
    process: Option<DaemonProcess>,
    stdout_task: Option<JoinHandle<Option<ExitStatus>>>,
    other_tasks: Vec<AbortHandle>,
}

impl RunnerBuilder {
    /// Adds one argument, such as `--max-concurrent=4`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable of the daemon (it inherits ours).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), None));
        self
    }

    /// The daemon's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Whether the daemon's log lines are copied to this process's stderr
    /// (default: yes). `diag` lines go to their run either way.
    pub fn forward_logs(mut self, forward: bool) -> Self {
        self.forward_logs = forward;
        self
    }

    /// Starts the daemon. Must be called within a tokio runtime.
    pub fn spawn(self) -> Result<Runner, ClientError> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Out of our process group: a Ctrl-C at the terminal is ours to
            // handle, not a shutdown of every run behind our back. If it ends
            // us, the daemon sees its pipes close and stops its turns.
            .process_group(0);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let spawn_error = |e| ClientError::Spawn {
            program: self.program.clone(),
            source: Arc::new(e),
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        // Now, while it is certainly our unreaped child.
        let process = child.id().and_then(DaemonProcess::of_child);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(spawn_error(std::io::Error::other("a pipe is missing")));
        };

        let (queue, requests) = unbounded_channel();
        let shared = Arc::new(Shared::new(queue));
        let writer = tokio::spawn(tasks::write_requests(shared.clone(), stdin, requests));
        let stderr_task = tokio::spawn(tasks::read_stderr(
            shared.clone(),
            stderr,
            self.forward_logs,
        ));
        let other_tasks = vec![writer.abort_handle(), stderr_task.abort_handle()];
        let pid = child.id();
        let stdout_task = tokio::spawn(tasks::read_stdout(
            shared.clone(),
            child,
            stdout,
            stderr_task,
        ));
        Ok(Runner {
            shared,
            pid,
            process,
            stdout_task: Some(stdout_task),
            other_tasks,
        })
    }
}

impl Runner {
    /// A builder for the daemon at `program` (such as `codex-runner` on PATH
    /// or `target/debug/codex-runner`).
    pub fn builder(program: impl Into<PathBuf>) -> RunnerBuilder {
        RunnerBuilder {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            current_dir: None,
            forward_logs: true,
        }
    }

    /// The daemon's process id (for signals and supervision).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Starts one turn: sends `{"type":"run","id":id,"params":params}` and
    /// returns its stream.
    ///
    /// Fails at once with [`ClientError::DuplicateId`] if a run with this id
    /// has not ended, or with the reason the daemon can take no request. The
    /// daemon's answers (including `invalid_params` and a `rejected` line)
    /// come through the stream.
    pub async fn run(
        &self,
        id: impl Into<String>,
        params: RunParams,
    ) -> Result<RunStream, ClientError> {
        let id = id.into();
        finite_seconds(&params)?;
        let line = encode(RequestLine::Run {
            id: &id,
            params: &params,
        })?;
        let (events, written) = self.shared.send_run(&id, line)?;
        if let Err(error) = self.written(written).await {
            self.shared.forget(&id);
            return Err(error);
        }
        Ok(RunStream::new(id, events))
    }

    /// Cancels a pending run: its stream then ends with `code:"cancelled"`
    /// (or with its normal end, if it was already ending).
    pub async fn cancel(&self, id: &str) -> Result<(), ClientError> {
        let line = encode(RequestLine::Cancel { id })?;
        let written = self.shared.send_cancel(id, line)?;
        self.written(written).await
    }

    /// Closes the daemon's stdin and waits until every run has ended and the
    /// daemon has exited. Streams keep their events: read them before or
    /// after. Fails if the daemon did not exit with status 0.
    pub async fn shutdown(mut self) -> Result<(), ClientError> {
        self.shared.close_stdin(ClientError::ShutDown);
        // Awaited in place: if this future is dropped (a timeout around
        // it), the runner's drop still finds the task and stops the daemon.
        let status = match self.stdout_task.as_mut() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        self.stdout_task = None;
        match status {
            Some(status) if status.success() => Ok(()),
            status => Err(ClientError::Exited {
                status,
                fatal: self.shared.fatal(),
            }),
        }
    }

    /// Waits for the writer to report on one request.
    async fn written(&self, ack: Ack) -> Result<(), ClientError> {
        match ack.await {
            Ok(Ok(())) => Ok(()),
            // The daemon's fate (its exit status, its `fatal` line) says more
            // than a broken pipe, and follows it closely.
            Ok(Err(error)) => Err(self.shared.wait_gone().await.unwrap_or(error)),
            Err(_) => Err(ClientError::Dropped),
        }
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("pid", &self.pid).finish()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(task) = &self.stdout_task {
            // A finished task has reaped the daemon: nothing to stop.
            if !task.is_finished() {
                if let Some(process) = self.process.take() {
                    process.stop_in_background();
                } else if let Some(pid) = self.pid {
                    // No pidfd (a kernel without pidfd_open, which the daemon
                    // itself would refuse to run on): one SIGTERM by pid,
                    // unreaped as far as we know, and no escalation, which
                    // could hit a reused pid later.
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
            }
            // Closing its pipes tells the daemon too.
            task.abort();
        }
        for task in &self.other_tasks {
            task.abort();
        }
    }
}

/// JSON has no NaN or infinity: serde_json writes them as `null`, which the
/// daemon reads as "not given", so a time limit of `f64::INFINITY` would
/// silently become the daemon's default.
fn finite_seconds(params: &RunParams) -> Result<(), ClientError> {
    let servers = params.mcp_servers.iter().flat_map(|(name, server)| {
        [
            (
                format!("mcp_servers.{name}.startup_timeout_sec"),
                server.startup_timeout_sec,
            ),
            (
                format!("mcp_servers.{name}.tool_timeout_sec"),
                server.tool_timeout_sec,
            ),
        ]
    });
    for (field, secs) in
        std::iter::once(("timeout_secs".to_owned(), params.timeout_secs)).chain(servers)
    {
        if secs.is_some_and(|secs| !secs.is_finite()) {
            let why = format!("params.{field} is not a finite number, which JSON cannot carry");
            return Err(ClientError::Encode(Arc::new(serde::ser::Error::custom(
                why,
            ))));
        }
    }
    Ok(())
}

fn encode(request: RequestLine) -> Result<Vec<u8>, ClientError> {
    request
        .to_line()
        .map_err(|e| ClientError::Encode(Arc::new(e)))
}
