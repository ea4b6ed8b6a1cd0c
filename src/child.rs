//! Spawning codex, waiting for it, and stopping it.
//!
//! The child runs in its own process group so that one `killpg` reaches codex
//! and whatever it started in that group. Stopping is two-step: SIGINT to
//! codex first (its graceful path: it stops its shell commands, which run in
//! their own sessions, and its MCP servers, which run in their own groups;
//! SIGTERM would orphan them), then SIGKILL to the whole group once the grace
//! period is over. The child also gets a parent-death signal, so a SIGKILLed
//! daemon does not leave codex running. How it is started is in
//! [`crate::spawn`].

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;

use crate::codex_bin::CodexBin;
use crate::spawn::{self, Program, Wait};
use crate::spawner::Spawner;

/// Why codex could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The executable does not exist.
    #[error("codex executable not found: {0}")]
    NotFound(String),
    /// The daemon is out of open files (its limit, or the system's), of
    /// processes or of memory: no fault of the executable.
    #[error("cannot start codex: {}", resources_hint(.0))]
    OutOfResources(#[source] std::io::Error),
    /// The turn's arguments and environment are more than `exec` takes
    /// (`E2BIG`): no fault of the executable either.
    #[error("cannot start codex: its arguments and environment are too large for exec (each argument or `NAME=value` at most 128 KiB, all together a quarter of the stack limit): shorten params.env values or the paths given")]
    TooLarge(#[source] std::io::Error),
    /// The spawner thread is gone: a bug of the daemon, not the executable's.
    #[error("cannot start codex: the codex spawner thread failed (an internal error; the daemon is stopping)")]
    SpawnerGone,
    /// A step before `execve` failed (the process group, the cgroup, the
    /// parent-death signal, the standard streams): the executable was never
    /// tried.
    #[error("cannot start codex")]
    Setup(#[source] crate::spawn::SetupFailed),
    /// The executable exists but cannot be run.
    #[error("codex executable is not runnable: {path}")]
    NotRunnable {
        /// The program path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a resource error means for the user.
fn resources_hint(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) => format!(
            "the daemon has reached its limit on open files ({}; a running turn holds up to {}): lower --max-concurrent or raise the hard limit (`ulimit -Hn`)",
            crate::fd_limit::current().map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            crate::fd_limit::PER_TURN
        ),
        // The OS's own words follow (the error's source).
        Some(libc::ENFILE) => "the system is out of open files".to_owned(),
        Some(libc::EAGAIN) => "out of processes (the user's or the system's limit)".to_owned(),
        Some(libc::ENOMEM) => "out of memory".to_owned(),
        _ => "out of resources".to_owned(),
    }
}

/// A running codex: its pid, a pidfd to wait for it, and its stdio pipes
/// (non-blocking, registered with the runtime).
#[derive(Debug)]
pub struct CodexProcess {
    pid: u32,
    /// `None` once reaped.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// What of its input did not fit in codex's stdin pipe at once.
    pub stdin: Option<PendingInput>,
    /// Codex's stdout.
    pub stdout: Option<pipe::Receiver>,
    /// Codex's stderr.
    pub stderr: Option<pipe::Receiver>,
}

/// The rest of codex's input, for a task of its own to write: a child that
/// never reads stdin must not stall its turn.
#[derive(Debug)]
pub struct PendingInput {
    pipe: pipe::Sender,
    rest: Vec<u8>,
}

impl PendingInput {
    /// Writes the rest, then closes the pipe (codex reads until EOF).
    pub async fn write(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.pipe.write_all(&self.rest).await;
    }
}

/// Spawns `bin` with `args` and `env` (over the daemon's environment, minus
/// `RUST_LOG`), all three standard streams piped, in a new process group,
/// in the cgroup `cgroup` (an open cgroup2 directory) if given, on the
/// spawner's thread.
pub async fn spawn(
    spawner: &Spawner,
    bin: &CodexBin,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cgroup: Option<Arc<OwnedFd>>,
    input: &[u8],
) -> Result<CodexProcess, SpawnError> {
    let spawn_error = |source: std::io::Error| {
        let path = bin.program.display().to_string();
        let spawner_gone = source
            .get_ref()
            .is_some_and(|inner| inner.is::<crate::spawner::SpawnerGone>());
        if source
            .get_ref()
            .is_some_and(|inner| inner.is::<crate::spawn::SetupFailed>())
        {
            let setup = source
                .into_inner()
                .and_then(|inner| inner.downcast::<crate::spawn::SetupFailed>().ok())
                .expect("checked just above");
            return SpawnError::Setup(*setup);
        }
        match source.raw_os_error() {
            _ if spawner_gone => SpawnError::SpawnerGone,
            _ if source.kind() == std::io::ErrorKind::NotFound => SpawnError::NotFound(path),
            Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM) => {
                SpawnError::OutOfResources(source)
            }
            Some(libc::E2BIG) => SpawnError::TooLarge(source),
            _ => SpawnError::NotRunnable { path, source },
        }
    };
    let mut program =
        Program::with_base_env(&bin.program, args, daemon_env(), env).map_err(spawn_error)?;
    program.restore_nofile(crate::fd_limit::for_children());
    // The prompt goes into codex's stdin pipe before codex exists: most
    // prompts fit (64 KiB), so the pipe is closed at once, without ever being
    // registered with the runtime or given a task, and codex never waits for
    // its input (it did when it asked for it before the spawner's answer had
    // reached the runtime's thread: a wake-up and two switches more per turn).
    let (stdin, ours) = spawn::pipe().map_err(spawn_error)?;
    spawn::set_nonblocking(&ours).map_err(spawn_error)?;
    let rest = match write_now(&ours, input) {
        Some(n) if n < input.len() => Some((ours, n)),
        // All written (or, impossibly here, a broken pipe): close ours now,
        // so that codex sees the end of its input at once.
        _ => {
            drop(ours);
            None
        }
    };
    program.stdin_from(stdin);
    let in_cgroup = cgroup.is_some();
    let spawned = spawner.spawn(program, cgroup).await.map_err(spawn_error)?;
    if in_cgroup && !spawned.born_in_cgroup {
        tracing::debug!("clone3 could not start codex in its cgroup; it joined it itself");
    }
    let not_watchable = |source| SpawnError::NotRunnable {
        path: bin.program.display().to_string(),
        source,
    };
    // SAFETY: an OwnedFd keeps its fd open and unchanged while owned.
    let pidfd = match unsafe { AsyncFd::register_with_interest(spawned.pidfd, Interest::READABLE) }
    {
        Ok(pidfd) => pidfd,
        Err(e) => {
            // Cannot watch it: do not leave it running, or unreaped.
            let (pidfd, source) = e.into_parts();
            kill_group(spawned.pid);
            let _ = spawn::reap(&pidfd, Wait::Block);
            return Err(not_watchable(source));
        }
    };
    // From here on, dropping `process` kills and reaps codex.
    let mut process = CodexProcess {
        pid: spawned.pid,
        pidfd: Some(pidfd),
        stdin: None,
        stdout: None,
        stderr: None,
    };
    // What did not fit goes through a task of its own. (The pipes are ours,
    // just made, our ends already non-blocking: `_unchecked`.)
    if let Some((pipe, written)) = rest {
        process.stdin = Some(PendingInput {
            pipe: pipe::Sender::from_owned_fd_unchecked(pipe).map_err(not_watchable)?,
            rest: input[written..].to_vec(),
        });
    }
    process.stdout =
        Some(pipe::Receiver::from_owned_fd_unchecked(spawned.stdout).map_err(not_watchable)?);
    process.stderr =
        Some(pipe::Receiver::from_owned_fd_unchecked(spawned.stderr).map_err(not_watchable)?);
    Ok(process)
}

/// Writes what fits of `bytes` to the non-blocking `fd`: how much, or `None`
/// if the pipe is broken (codex closed its stdin or is gone).
fn write_now(fd: &OwnedFd, bytes: &[u8]) -> Option<usize> {
    let mut written = 0;
    while written < bytes.len() {
        let rest = &bytes[written..];
        // SAFETY: writing from a live slice to an fd we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n >= 0 {
            written += n as usize;
            continue;
        }
        match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => break,
            _ => return None,
        }
    }
    Some(written)
}

/// The daemon's environment without `RUST_LOG`, as codex gets it under the
/// request's `env` (which wins). The daemon's own log filter is not codex's:
/// inherited, `RUST_LOG=debug` would flood every run's diag lines; a
/// request may still set it in `env`. Read once: the daemon never changes
/// its own environment, and copying it for every turn was about 1% of the
/// daemon's CPU at 64 concurrent turns.
fn daemon_env() -> &'static Arc<Vec<std::ffi::CString>> {
    static ENV: std::sync::OnceLock<Arc<Vec<std::ffi::CString>>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        Arc::new(spawn::env_entries(
            std::env::vars_os().filter(|(key, _)| key != "RUST_LOG"),
        ))
    })
}

impl CodexProcess {
    /// The child's pid, which is also its process group id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit and reaps it. Cancel-safe; after it has
    /// returned once, it fails.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let Some(pidfd) = &self.pidfd else {
            return Err(std::io::Error::other("codex was already reaped"));
        };
        loop {
            let mut ready = pidfd.readable().await?;
            if let Some(status) = spawn::reap(pidfd.get_ref(), Wait::Poll)? {
                self.pidfd = None;
                return Ok(status);
            }
            ready.clear_ready();
        }
    }
}

impl Drop for CodexProcess {
    /// The last line of defence (normal paths stop and reap the child):
    /// kill the group, and reap the child now or, if it is not dead yet, in
    /// a task of its own.
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        kill_group(self.pid);
        if let Ok(Some(_)) = spawn::reap(pidfd.get_ref(), Wait::Poll) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let guard = pidfd;
                loop {
                    let Ok(mut ready) = guard.readable().await else {
                        return;
                    };
                    if !matches!(spawn::reap(guard.get_ref(), Wait::Poll), Ok(None)) {
                        return;
                    }
                    ready.clear_ready();
                }
            });
        }
    }
}

/// Sends SIGINT to the process (codex's graceful stop).
pub fn interrupt(pid: u32) {
    // SAFETY: kill has no memory-safety preconditions; a stale pid is at
    // worst ESRCH because we have not reaped the child yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
}

/// Sends SIGKILL to the whole process group led by `pgid`.
///
/// Safe to call after the leader was reaped: Linux does not reuse an id
/// while a process group of that id has members, and ESRCH is ignored.
pub fn kill_group(pgid: u32) {
    // SAFETY: as above.
    unsafe {
        libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
    }
}
