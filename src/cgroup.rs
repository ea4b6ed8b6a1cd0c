//! Turn cgroups, kept for reuse once empty.
//!
//! Creating and removing a cgroup is the dearest part of containing a turn
//! (the kernel builds and tears down every interface file of the directory:
//! about 100 µs of daemon CPU per turn on the benchmark machine). A cgroup
//! holds no state a later turn could see, only processes, so one that is
//! empty (`populated 0` in its `cgroup.events`) goes back to a pool and the
//! next turn starts its codex in it, through the descriptors the pool kept
//! open (opening a cgroup's directory and its `cgroup.events` again walks
//! cgroupfs: about 5 µs per turn). The pool is bounded, by the limit on open
//! files too (see [`crate::fd_limit::idle_turns`]); the daemon removes every
//! cgroup in it at exit.
//!
//! Only a cgroup that was never killed is reused. `cgroup.kill` bumps the
//! cgroup's kill sequence, and `clone3(CLONE_INTO_CGROUP)` compares the new
//! child against the kill sequence of the *parent's* cgroup (Linux 6.14 and
//! later at least): every process later cloned into a once-killed cgroup is
//! SIGKILLed at birth. Turns that codex ends by itself, leaving nothing
//! behind, are the common case, and their cgroups are the ones reused.

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Idle cgroups kept for reuse, at most (fewer under a low limit on open
/// files).
const POOL_MAX: usize = 256;

/// Idle cgroups a new daemon creates before it reads its first request, at
/// most: as many as the pool keeps, so that a first burst of up to that many
/// turns starts without a `mkdir` on its path. A `mkdir` in cgroupfs holds
/// the kernel's cgroup mutex, which every `clone3(CLONE_INTO_CGROUP)` takes
/// too: made among a burst of spawns, they held up the 256-turn benchmark's
/// median first event by 30-40 ms. Made ahead of time they cost about
/// 0.2 ms each, once, before the first request is read.
pub const PREFILL_MAX: usize = POOL_MAX;

/// One turn's cgroup directory, open.
#[derive(Debug)]
pub struct TurnCgroup {
    dir: PathBuf,
    /// The directory itself: codex is born in it (`clone3` with
    /// `CLONE_INTO_CGROUP`) or joins it through its `cgroup.procs`.
    dir_fd: Arc<OwnedFd>,
    /// `cgroup.events`, read again from the start for each question.
    events: File,
    /// Whether `cgroup.kill` was ever written (then it is not reused).
    killed: std::sync::atomic::AtomicBool,
}

impl TurnCgroup {
    /// Creates the directory and opens it and its `cgroup.events`, kept
    /// open for as long as the cgroup serves turns.
    fn create(dir: PathBuf) -> std::io::Result<TurnCgroup> {
        fs::create_dir(&dir)?;
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&dir)
            .and_then(|dir_fd| Ok((dir_fd, File::open(dir.join("cgroup.events"))?)));
        match opened {
            Ok((dir_fd, events)) => Ok(TurnCgroup {
                dir,
                dir_fd: Arc::new(dir_fd.into()),
                events,
                killed: false.into(),
            }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The cgroup's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The open directory, for `clone3`.
    pub fn dir_fd(&self) -> Arc<OwnedFd> {
        self.dir_fd.clone()
    }

    /// A kept cgroup is as it was given back: still there (its
    /// `cgroup.events` readable), empty and not frozen. A process of the
    /// same user (a turn running as root, say) could have removed it (a
    /// turn's codex would then start outside any cgroup), frozen it (codex
    /// would be born frozen, and the thread that starts every codex would
    /// wait for it forever) or moved a process in.
    fn still_fit(&self) -> bool {
        let mut buf = [0u8; 128];
        match self.events.read_at(&mut buf, 0) {
            Ok(n) => {
                let events = String::from_utf8_lossy(&buf[..n]);
                let has = |line: &str| events.lines().any(|l| l == line);
                has("populated 0") && !has("frozen 1")
            }
            Err(_) => false,
        }
    }

    /// Whether any process is in the cgroup (or in one below it). An
    /// unreadable `cgroup.events` counts as populated.
    pub fn populated(&self) -> bool {
        let mut buf = [0u8; 128];
        match self.events.read_at(&mut buf, 0) {
            Ok(n) => !String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|line| line == "populated 0"),
            Err(_) => true,
        }
    }

    /// SIGKILL to every process in the cgroup (`cgroup.kill`).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        let kill = self.dir.join("cgroup.kill");
        if let Err(e) = fs::write(&kill, b"1") {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cgroup.kill failed");
        }
    }

    /// Removes the directory; fails while processes are in it.
    pub fn remove(self) -> std::io::Result<()> {
        // Our fds do not keep a cgroup from being removed.
        remove_tree(&self.dir)
    }
}

/// Removes the cgroup `dir` and the cgroups a turn's commands made in it
/// (one running as root may: a container runtime, `systemd-run`), deepest
/// first: a cgroup with children cannot be removed, and the daemon's own
/// cgroup would then outlive it. Only directories are cgroups; the files in
/// them go with their directory.
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir(dir) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            for entry in fs::read_dir(dir)?.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path())?;
                }
            }
            fs::remove_dir(dir)
        }
        other => other,
    }
}

/// Where turn cgroups come from: a new directory under the daemon's cgroup,
/// or an empty one a finished turn gave back.
#[derive(Debug)]
pub struct CgroupPool {
    root: PathBuf,
    next: AtomicU64,
    /// Empty, never-killed turn cgroups, open.
    idle: Mutex<Vec<TurnCgroup>>,
}

impl CgroupPool {
    /// A pool creating its cgroups under `root`.
    pub fn new(root: PathBuf) -> CgroupPool {
        CgroupPool {
            root,
            next: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The daemon's cgroup, under which the turns' are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An empty cgroup for a new turn.
    pub fn take(&self) -> std::io::Result<TurnCgroup> {
        loop {
            let idle = self.idle.lock().unwrap().pop();
            match idle {
                Some(cgroup) if cgroup.still_fit() => return Ok(cgroup),
                Some(unfit) => {
                    tracing::warn!(cgroup = %unfit.path().display(), "a kept turn cgroup was changed while idle (removed, frozen or entered); not using it");
                    let path = unfit.path().to_path_buf();
                    if let Err(e) = unfit.remove() {
                        tracing::warn!(cgroup = %path.display(), error = %e, "cannot remove the changed cgroup; leaving it");
                    }
                }
                None => return TurnCgroup::create(self.new_path()),
            }
        }
    }

    /// The path of a cgroup not made yet: `turn-<n>` under the root.
    fn new_path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("turn-{n}"))
    }

    /// Creates up to `n` (at most [`PREFILL_MAX`]) idle cgroups ahead of
    /// the first turns. Best effort: a failure is logged and ends it, and
    /// turns then create their own.
    pub fn prefill(&self, n: usize) {
        for _ in 0..n
            .min(PREFILL_MAX)
            .min(crate::fd_limit::idle_turns(POOL_MAX))
        {
            let dir = self.new_path();
            match TurnCgroup::create(dir.clone()) {
                Ok(cgroup) => self.idle.lock().unwrap().push(cgroup),
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "cannot create a turn cgroup ahead of time");
                    return;
                }
            }
        }
    }

    /// Takes back a cgroup its turn is done with: kept if it is `empty`
    /// (as its caller just saw), was never killed and the pool has room,
    /// else removed (if it is still busy, it is left behind with a warning).
    pub fn give_back(&self, cgroup: TurnCgroup, empty: bool) {
        if empty && !cgroup.killed.load(Ordering::Relaxed) {
            let mut idle = self.idle.lock().unwrap();
            if idle.len() < crate::fd_limit::idle_turns(POOL_MAX) {
                idle.push(cgroup);
                return;
            }
        }
        let path = cgroup.path().to_path_buf();
        if let Err(e) = cgroup.remove() {
            tracing::warn!(cgroup = %path.display(), error = %e, "cannot remove the turn's cgroup; leaving it");
        }
    }

    /// Removes every idle cgroup (at exit).
    pub fn clear(&self) {
        for cgroup in self.idle.lock().unwrap().drain(..) {
            let dir = cgroup.path().to_path_buf();
            if let Err(e) = cgroup.remove() {
                tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove an idle turn cgroup");
            }
        }
    }

    /// How many idle cgroups the pool holds (for tests).
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}
