//! The daemon's limit on open files.
//!
//! A running turn holds about [`PER_TURN`] descriptors (codex's stdout and
//! stderr, its pidfd, its cgroup and `cgroup.events`, its home's
//! `config.toml`, its stdin while a long prompt is written, and for a moment
//! the child's ends of its pipes). The
//! usual soft limit, 1024, made turns fail to start from about 170 at once,
//! far below a `--max-concurrent` of 256, while the hard limit is usually
//! much higher (524288 under systemd). So the daemon raises its soft limit to
//! the hard one when it starts, as Go programs do, and codex gets the limit
//! the daemon was started with back before it `exec`s (see
//! [`crate::spawn::Program::restore_nofile`]), as if started directly.

use std::sync::OnceLock;

/// Descriptors one running turn holds, at most.
pub const PER_TURN: u64 = 7;

/// Descriptors the daemon holds besides its turns' (stdio and their
/// duplicates, the runtime's epoll and eventfd, the spawner's), with room.
pub const BASE: u64 = 32;

/// Descriptors an idle turn's cgroup and home hold while kept for reuse (the
/// cgroup's directory and `cgroup.events`; the home's `config.toml`).
pub const PER_IDLE_TURN: u64 = 3;

/// The limit the daemon was started with, if it raised it.
static STARTED_WITH: OnceLock<libc::rlimit> = OnceLock::new();

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the daemon was started with.
    pub started_with: u64,
    /// The soft limit now.
    pub limit: u64,
}

impl OpenFiles {
    /// Turns that can run at once before one fails to start for want of
    /// descriptors, about.
    pub fn turns(&self) -> u64 {
        // What the idle pools may hold (see `idle_turns`) is not for turns.
        self.limit.saturating_sub(BASE + self.limit / 4) / PER_TURN
    }
}

/// Raises the soft limit on open files to the hard limit (best effort).
/// Call it once, before any thread starts.
pub fn raise() -> std::io::Result<OpenFiles> {
    let started = get()?;
    let mut found = OpenFiles {
        started_with: started.rlim_cur,
        limit: started.rlim_cur,
    };
    if started.rlim_cur >= started.rlim_max {
        return Ok(found);
    }
    let raised = libc::rlimit {
        rlim_cur: started.rlim_max,
        rlim_max: started.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        // A hard limit above the kernel's `nr_open` cannot be the soft one.
        return Ok(found);
    }
    let _ = STARTED_WITH.set(started);
    found.limit = raised.rlim_cur;
    Ok(found)
}

/// The limit to give codex back, if the daemon raised its own.
pub fn for_children() -> Option<libc::rlimit> {
    STARTED_WITH.get().copied()
}

/// How many idle turns' cgroups, and as many homes, the pools keep open:
/// `cap`, or fewer when the limit on open files is low, so that they hold a
/// quarter of it at most. Asked once (after [`raise`], in the daemon).
pub fn idle_turns(cap: usize) -> usize {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    let limit = *LIMIT.get_or_init(|| current().unwrap_or(1024));
    cap.min((limit / 4 / PER_IDLE_TURN) as usize)
}

/// The soft limit on open files now.
pub fn current() -> Option<u64> {
    get().ok().map(|now| now.rlim_cur)
}

/// The limit on open files, soft and hard.
fn get() -> std::io::Result<libc::rlimit> {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(now)
}
