//! Spawning codex and stopping it.
//!
//! The child runs in its own process group so that one `killpg` reaches codex
//! and whatever it started in that group. Stopping is two-step: SIGINT to
//! codex first (its graceful path: it stops its shell commands, which run in
//! their own sessions, and its MCP servers, which run in their own groups;
//! SIGTERM would orphan them), then SIGKILL to the whole group once the grace
//! period is over. The child also gets a parent-death signal, so a SIGKILLed
//! daemon does not leave codex running.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::codex_bin::CodexBin;

/// Why codex could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The executable does not exist.
    #[error("codex executable not found: {0}")]
    NotFound(String),
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

/// Spawns `bin` with `args` and `env` (over the daemon's environment), all
/// three standard streams piped, in a new process group.
pub fn spawn(
    bin: &CodexBin,
    args: Vec<std::ffi::OsString>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    cgroup_procs: Option<std::os::fd::RawFd>,
) -> Result<Child, SpawnError> {
    let mut command = Command::new(&bin.program);
    // The daemon's own log filter is not codex's: inherited, `RUST_LOG=debug`
    // would flood every run's diag lines. A request may still set it in `env`.
    command.env_remove("RUST_LOG");
    command
        .args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The last line of defence; normal paths stop the child explicitly.
        .kill_on_drop(true);
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (write, prctl, getppid, raise).
    unsafe {
        command.pre_exec(move || {
            // Join the turn's cgroup before exec, so every descendant is born
            // in it. On failure the turn still has its process group.
            if let Some(fd) = cgroup_procs {
                let _ = crate::containment::join_from_child(fd);
            }
            // The parent-death signal fires when the *thread* that forked
            // exits; turns are spawned from tokio's worker threads, which
            // live as long as the runtime.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The daemon may have died between fork and prctl.
            if libc::getppid() == 1 {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| {
        let path = bin.program.display().to_string();
        if source.kind() == std::io::ErrorKind::NotFound {
            SpawnError::NotFound(path)
        } else {
            SpawnError::NotRunnable { path, source }
        }
    })
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
