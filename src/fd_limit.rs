//! The daemon's limit on open files.
//!
//! A running turn holds about [`PER_TURN`] descriptors (codex's stdout and
//! stderr, its pidfd, its cgroup and `cgroup.events`, its stdin while a long
//! prompt is written, and, from just before codex is started until it has
//! them, the child's ends of its pipes). The usual soft limit, 1024, made
//! turns fail to start from about 170 at once, far below a
//! `--max-concurrent` of 256, while the hard limit is usually much higher
//! (524288 under systemd). So the daemon raises its soft limit to the hard
//! one when it starts, as Go programs do, and codex gets the limit the
//! daemon was started with back before it `exec`s (see
//! [`crate::spawn::Program::restore_nofile`]), as if started directly.

use std::sync::OnceLock;

/// Descriptors one running turn holds, at most.
pub const PER_TURN: u64 = 6;

/// Descriptors the daemon holds besides its turns' (stdio and their
/// duplicates, the runtime's epoll and eventfd, the spawner's), with room.
pub const BASE: u64 = 32;

/// Descriptors an idle turn cgroup holds while kept for reuse (its
/// directory and `cgroup.events`).
pub const PER_IDLE_TURN: u64 = 2;

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
        self.limit.saturating_sub(BASE) / PER_TURN
    }

    /// Idle turn cgroups the pool can keep open beside
    /// `max_concurrent` running turns (for [`set_idle_turns`]).
    pub fn idle_turns_beside(&self, max_concurrent: u64) -> u64 {
        self.limit.saturating_sub(BASE + PER_TURN * max_concurrent) / PER_IDLE_TURN
    }
}

/// Raises the soft limit on open files to the hard limit (best effort).
/// Call it once, before any codex is spawned: children get the limit the
/// daemon started with back (see [`for_children`]).
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

/// How many idle turn cgroups the pool may keep open, once the daemon has
/// said.
static IDLE_TURNS: OnceLock<u64> = OnceLock::new();

/// Sets how many idle turn cgroups the pool may keep open: what the limit on
/// open files leaves beside the running turns (see
/// [`OpenFiles::idle_turns_beside`]), so that they never take a running
/// turn's descriptors. Call it once, before the pool fills.
pub fn set_idle_turns(n: u64) {
    let _ = IDLE_TURNS.set(n);
}

/// How many idle turn cgroups the pool keeps open: `cap`, or fewer as
/// [`set_idle_turns`] said. Unset (a library user, unit tests), a quarter of
/// the limit now.
pub fn idle_turns(cap: usize) -> usize {
    let budget = *IDLE_TURNS.get_or_init(|| current().unwrap_or(1024) / 4 / PER_IDLE_TURN);
    cap.min(usize::try_from(budget).unwrap_or(usize::MAX))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_cgroups_get_only_what_running_turns_leave() {
        let files = |limit| OpenFiles {
            started_with: limit,
            limit,
        };
        // 48 descriptors hold two running turns and nothing idle beside 16.
        assert_eq!(files(48).turns(), 2);
        assert_eq!(files(48).idle_turns_beside(16), 0);
        // 20000: 1000 running turns leave room for 6984 idle cgroups.
        assert_eq!(files(20000).idle_turns_beside(1000), 6984);
        assert_eq!(files(1024).idle_turns_beside(16), (1024 - 32 - 96) / 2);
    }
}
