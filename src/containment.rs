//! Keeping track of every process a turn starts, so that stopping a turn
//! leaves nothing behind.
//!
//! A process group is not enough: codex runs shell commands under `setsid`
//! (a new session, so a new group) and MCP servers in their own groups, and a
//! command can double-fork a grandchild that is reparented away from codex.
//! We use, in order of preference:
//!
//! 1. **A cgroup v2 per turn** (`<our cgroup>/codex-runner-<tag>/turn-N`, see
//!    [`instance_tag`]).
//!    Codex is born in it (see [`crate::spawn`]), so every descendant is born
//!    inside it too, whatever it does with sessions, groups or parents;
//!    `cgroup.kill` stops them all at once, and `cgroup.events` says when the
//!    turn is really empty (and its cgroup can serve the next turn, see
//!    [`crate::cgroup`]). Needs a writable cgroup2 hierarchy (root, or a
//!    delegated subtree such as systemd's `Delegate=yes`).
//! 2. **Otherwise, the process group plus a walk of the live process tree**:
//!    at the end of the grace period every live descendant of codex (found
//!    through `/proc/*/stat` parent links) gets SIGKILL, then the group. This
//!    reaches setsid-ed commands and MCP servers while codex is alive, but not
//!    a grandchild that was already reparented away (documented limit).
//!
//! A child subreaper was considered and rejected: reparented orphans would
//! become our children with no record of which turn they belong to, and
//! reaping them with `waitpid(-1)` would race the turns' own waits for
//! codex on its pidfd (as PID 1 the daemon forks, and the parent, which
//! runs no turns, reaps the orphans: see `init.rs`).

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{CgroupPool, TurnCgroup};

/// How long `release` waits for a killed turn's processes to be gone.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Which mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainmentMode {
    /// A cgroup per turn when the hierarchy is writable, else process groups.
    Auto,
    /// A cgroup per turn, or refuse to start.
    Cgroup,
    /// Process groups and a process-tree walk only.
    ProcessGroup,
}

/// The daemon's containment: its own cgroup directory, when it has one.
#[derive(Debug)]
pub struct Containment {
    cgroups: Option<Arc<CgroupPool>>,
}

impl Containment {
    /// Sets up containment for this daemon. With `Auto`, any failure falls
    /// back to process groups; with `Cgroup` it is an error.
    pub fn start(mode: ContainmentMode) -> Result<Containment, String> {
        let root = match mode {
            ContainmentMode::ProcessGroup => {
                tracing::info!(
                    "no per-turn cgroups (--containment process-group); using process groups"
                );
                None
            }
            ContainmentMode::Auto | ContainmentMode::Cgroup => match cgroup_root() {
                Ok(root) => Some(root),
                Err(why) if mode == ContainmentMode::Cgroup => {
                    return Err(format!("--containment cgroup: {why}"))
                }
                Err(why) => {
                    tracing::info!("no per-turn cgroups ({why}); using process groups");
                    None
                }
            },
        };
        if let Some(root) = &root {
            tracing::info!(cgroup = %root.display(), "per-turn cgroups enabled");
        }
        Ok(Containment {
            cgroups: root.map(|root| Arc::new(CgroupPool::new(root))),
        })
    }

    /// `"cgroup"` or `"process-group"`, for logs and tests.
    pub fn mode(&self) -> &'static str {
        if self.cgroups.is_some() {
            "cgroup"
        } else {
            "process-group"
        }
    }

    /// The container of one new turn. A cgroup that cannot be created is
    /// logged and the turn falls back to its process group.
    pub fn turn(&self) -> TurnContainer {
        let Some(pool) = &self.cgroups else {
            return TurnContainer::default();
        };
        match pool.take() {
            Ok(cgroup) => TurnContainer {
                cgroup: Some(cgroup),
                pool: Some(pool.clone()),
                noted: Vec::new(),
                killed: Vec::new(),
                seen_empty: false,
                pid: None,
            },
            Err(e) => {
                tracing::warn!(cgroup = %pool.root().display(), error = %e, "cannot create the turn's cgroup; using its process group");
                TurnContainer::default()
            }
        }
    }

    /// Creates idle turn cgroups for the first `turns` turns (see
    /// [`CgroupPool::prefill`]); nothing in process-group mode.
    pub fn prefill(&self, turns: usize) {
        if let Some(pool) = &self.cgroups {
            pool.prefill(turns);
        }
    }

    /// The daemon's cgroup, under which the turns' are (cgroup mode).
    pub fn cgroup_root(&self) -> Option<&Path> {
        self.cgroups.as_ref().map(|pool| pool.root())
    }

    /// Idle turn cgroups kept for reuse (for tests).
    pub fn idle_cgroups(&self) -> usize {
        self.cgroups.as_ref().map_or(0, |pool| pool.idle())
    }

    /// Removes the turn cgroups kept for reuse and the daemon's cgroup
    /// directory (at exit, once every turn released its own).
    pub fn close(&self) {
        if let Some(pool) = &self.cgroups {
            pool.clear();
            if let Err(e) = crate::cgroup::remove_tree(pool.root()) {
                tracing::warn!(cgroup = %pool.root().display(), error = %e, "cannot remove the daemon's cgroup");
            }
        }
    }
}

/// The processes of one turn.
#[derive(Debug, Default)]
pub struct TurnContainer {
    /// The turn's cgroup, if it has one, and where it goes back to.
    cgroup: Option<TurnCgroup>,
    pool: Option<Arc<CgroupPool>>,
    /// Without a cgroup: codex's descendants seen when the stop began,
    /// because codex may die at once and its children be reparented away.
    noted: Vec<u32>,
    /// Without a cgroup: the processes we sent SIGKILL, awaited in `release`.
    killed: Vec<u32>,
    /// The cgroup was seen empty after codex exited. Only our spawner puts
    /// processes in it, so it stays empty: no need to read again.
    seen_empty: bool,
    /// Codex's pid once it started, until `release`: what `drop` stops on a
    /// path that never reached `release`.
    pid: Option<u32>,
}

impl TurnContainer {
    /// The cgroup directory codex is to start in, if the turn has one.
    pub fn cgroup_fd(&self) -> Option<Arc<OwnedFd>> {
        self.cgroup.as_ref().map(TurnCgroup::dir_fd)
    }

    /// Codex started as `pid`: from now on, dropping the container without
    /// `release` (a turn that panicked) stops every process of the turn.
    pub fn started(&mut self, pid: u32) {
        self.pid = Some(pid);
    }

    /// Call before signalling codex: without a cgroup, remembers its process
    /// tree while it is still attached to codex.
    pub fn note_descendants(&mut self, pid: u32) {
        if self.cgroup.is_none() {
            self.noted = descendants(pid);
        }
    }

    /// SIGKILL to everything the turn started: the cgroup, or the live and
    /// noted descendants of `pid`; and always `pid`'s process group.
    pub fn kill_all(&mut self, pid: u32) {
        match &self.cgroup {
            Some(cgroup) => cgroup.kill(),
            None => {
                let mut all = descendants(pid);
                all.extend(&self.noted);
                for descendant in all {
                    // SAFETY: kill has no memory-safety preconditions.
                    if unsafe { libc::kill(descendant as libc::pid_t, libc::SIGKILL) } == 0 {
                        self.killed.push(descendant);
                    }
                }
            }
        }
        crate::child::kill_group(pid);
    }

    /// After codex was reaped: SIGKILL to the cgroup, or to the descendants
    /// noted while codex lived, and to its process group. No walk of the
    /// process tree: codex's children were reparented when it exited, so a
    /// walk from its pid finds nothing of the turn, only, once the pid is
    /// reused, the children of an unrelated process.
    pub fn kill_after_exit(&mut self, pid: u32) {
        if let Some(cgroup) = &self.cgroup {
            // Usually codex left nothing in its cgroup: then the cgroup is
            // not killed, which keeps it reusable (see crate::cgroup). The
            // group still is, for a codex that could not join the cgroup.
            if cgroup.populated() {
                self.kill_all(pid);
            } else {
                self.seen_empty = true;
                crate::child::kill_group(pid);
            }
            return;
        }
        for &descendant in &self.noted {
            // SAFETY: kill has no memory-safety preconditions.
            if unsafe { libc::kill(descendant as libc::pid_t, libc::SIGKILL) } == 0 {
                self.killed.push(descendant);
            }
        }
        crate::child::kill_group(pid);
    }

    /// Waits (bounded) until everything killed is gone, so that a turn's
    /// `end` means its processes are dead, and gives the turn's cgroup back.
    /// `true` when the turn's cgroup was seen empty: no process of the turn
    /// is left (a process group cannot tell, so without a cgroup, `false`).
    pub async fn release(mut self) -> bool {
        self.pid = None;
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        // SIGKILL is delivered asynchronously; poll briefly, backing off.
        let mut pause = Duration::from_millis(1);
        let (Some(cgroup), Some(pool)) = (self.cgroup.take(), self.pool.take()) else {
            // Taken: waited for here, so `drop` does not wait for them again
            // (on the runtime's thread) once this gives up.
            let killed = std::mem::take(&mut self.killed);
            while killed.iter().any(|pid| is_running(*pid)) {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(pids = ?killed, "killed processes of the turn are still running");
                    return false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            return false;
        };
        let mut populated = !self.seen_empty && cgroup.populated();
        while populated && tokio::time::Instant::now() < deadline {
            cgroup.kill();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            populated = cgroup.populated();
        }
        // Still busy after the deadline: give_back leaves it, with a warning.
        pool.give_back(cgroup, !populated);
        !populated
    }
}

impl Drop for TurnContainer {
    /// A turn that never reached `release`: its spawn failed (nothing ran),
    /// or it panicked with codex running. Nothing the turn started may
    /// outlive it, and the `end` the dispatcher then writes must still mean
    /// that its processes are gone: so this kills them and waits for them
    /// (a few ms; at most `RELEASE_WAIT`) on the thread it runs on, and only
    /// then removes the cgroup, which cannot go while processes are in it.
    fn drop(&mut self) {
        let codex = self.pid.take();
        if let Some(pid) = codex {
            self.note_descendants(pid);
            self.kill_all(pid);
        }
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            // Codex itself too: it is not reaped yet (so its pid is not
            // reused), and a process leaves its cgroup a moment before it
            // has exited.
            let busy = codex.is_some_and(is_running)
                || match &self.cgroup {
                    Some(cgroup) => cgroup.populated(),
                    None => self.killed.iter().any(|pid| is_running(*pid)),
                };
            if !busy {
                break;
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(pids = ?self.killed, "killed processes of the turn are still running");
                break;
            }
            if let Some(cgroup) = &self.cgroup {
                // Anything forked since the last kill.
                cgroup.kill();
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        if let (Some(cgroup), Some(pool)) = (self.cgroup.take(), self.pool.take()) {
            // A killed cgroup is removed; one no process ever entered (a
            // spawn that failed) serves a later turn.
            let empty = !cgroup.populated();
            pool.give_back(cgroup, empty);
        }
    }
}

/// Creates `<cgroup2 mount>/<our cgroup>/codex-runner-<tag>` (see
/// [`instance_tag`]), after cleaning
/// up directories of earlier daemons that died without doing so.
fn cgroup_root() -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4))?
        })
        .ok_or("no cgroup2 hierarchy is mounted")?;
    let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process has no cgroup2 path")?;
    let parent = Path::new(mount).join(own.trim_start_matches('/'));
    clean_stale(&parent);
    let root = parent.join(format!("codex-runner-{}", instance_tag()));
    fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    // Probe that we may move a process there: move nothing, just open.
    if let Err(e) = fs::OpenOptions::new()
        .write(true)
        .open(root.join("cgroup.procs"))
    {
        let _ = fs::remove_dir(&root);
        return Err(format!("cannot write {}/cgroup.procs: {e}", root.display()));
    }
    // Stopping a turn writes its cgroup's `cgroup.kill` (Linux 5.14): where
    // there is none, a cgroup would only hide what process groups can reach.
    if !root.join("cgroup.kill").exists() {
        let _ = fs::remove_dir(&root);
        return Err(format!(
            "{} has no cgroup.kill (Linux 5.14 or later has it)",
            root.display()
        ));
    }
    Ok(root)
}

/// Kills what is left in the cgroups of dead daemons and removes them.
fn clean_stale(parent: &Path) {
    let names = LeftBehind {
        prefix: "codex-runner-",
        suffix: TagSuffix::Nothing,
        private: false,
    };
    for dir in dead_runners_entries(parent, &names) {
        tracing::info!(cgroup = %dir.display(), "cleaning up the cgroup of a dead codex-runner");
        if let Ok(turns) = fs::read_dir(&dir) {
            for turn in turns.flatten().filter(|t| t.path().is_dir()) {
                let _ = fs::write(turn.path().join("cgroup.kill"), b"1");
                for _ in 0..100 {
                    if crate::cgroup::remove_tree(&turn.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = crate::cgroup::remove_tree(&dir);
    }
}

/// How this daemon names what it leaves in places other daemons share (its
/// cgroup, its turn dirs, its scratch dirs): `<pid>-p<inode of its PID
/// namespace>-s<its start time>`. A pid means nothing outside its
/// namespace: a daemon in a container (pid 2 there) and one outside it,
/// sharing a turn root or a cgroup parent, each saw the other's pid as dead
/// and removed its live turns. Names with another namespace are left alone.
/// The start time (in clock ticks since boot, as `/proc/<pid>/stat` has it)
/// tells a live daemon from a later process that reuses its pid, whatever
/// either is called: a daemon run from a renamed binary was taken for dead.
pub fn instance_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id();
        let mut tag = pid.to_string();
        if let Some(ns) = pid_namespace() {
            tag.push_str(&format!("-p{ns}"));
        }
        if let Some(start) = proc_stat(pid).and_then(|stat| stat.start) {
            tag.push_str(&format!("-s{start}"));
        }
        tag
    })
}

/// The inode of this process's PID namespace.
fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    static NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *NS.get_or_init(|| fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino()))
}

/// How a daemon names one kind of thing it leaves behind: `<prefix><tag>`
/// then [`LeftBehind::suffix`] (see [`instance_tag`]; an older daemon's
/// tag has the pid alone).
pub(crate) struct LeftBehind<'a> {
    /// What comes before the tag, as `turn-`.
    pub prefix: &'a str,
    /// What comes after it.
    pub suffix: TagSuffix,
    /// Made 0700: anything else of that name is not ours.
    pub private: bool,
}

/// What follows the instance tag in a name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TagSuffix {
    /// Nothing (a daemon's cgroup, its own turn root).
    Nothing,
    /// `-<n>`, a decimal counter (turn dirs).
    Counter,
    /// `-<letters and digits>` (a temporary dir's random part).
    Random,
}

/// The entries of `dir` that `names` describes exactly, that are
/// directories (not symlinks) of this user's, and whose pid is in our PID
/// namespace and neither ours nor a live codex-runner: what daemons that
/// died without cleaning up (SIGKILL, power loss) left there. Anything else
/// is left alone: a chosen `--turn-dir` may hold the user's own
/// `turn-2024-notes`.
pub(crate) fn dead_runners_entries(dir: &Path, names: &LeftBehind) -> Vec<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    entries
        .flatten()
        .filter(|entry| {
            let Some(owner) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(names.prefix))
                .and_then(|tag| Owner::parse(tag, names.suffix))
            else {
                return false;
            };
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                return false;
            };
            meta.is_dir()
                && meta.uid() == uid
                && (!names.private || meta.permissions().mode() & 0o777 == 0o700)
                && owner.is_dead()
        })
        .map(|entry| entry.path())
        .collect()
}

/// The daemon a name's `<pid>[-p<ns>][-s<start>]` tag names.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    ns: Option<u64>,
    start: Option<u64>,
}

impl Owner {
    /// The tag of `name` (what follows the prefix), if the whole name is
    /// the tag and `suffix`.
    fn parse(name: &str, suffix: TagSuffix) -> Option<Owner> {
        let mut parts = name.split('-').peekable();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let pid = parts.next().filter(|p| digits(p))?.parse().ok()?;
        let mut number = |prefix: char| {
            let n = parts
                .peek()
                .and_then(|p| p.strip_prefix(prefix))
                .filter(|n| digits(n))
                .and_then(|n| n.parse::<u64>().ok())?;
            parts.next();
            Some(n)
        };
        let ns = number('p');
        let start = number('s');
        let rest: Vec<&str> = parts.collect();
        let fits = match suffix {
            TagSuffix::Nothing => rest.is_empty(),
            TagSuffix::Counter => matches!(rest[..], [n] if digits(n)),
            TagSuffix::Random => {
                matches!(rest[..], [r] if !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
            }
        };
        fits.then_some(Owner { pid, ns, start })
    }

    /// Whether this is a dead daemon of our namespace.
    fn is_dead(&self) -> bool {
        let Owner { pid, ns, start } = *self;
        if ns.is_some() && ns != pid_namespace() {
            return false;
        }
        match start {
            // Dead unless a process with that pid and that start time runs.
            Some(start) => {
                !proc_stat(pid).is_some_and(|stat| !stat.is_dead() && stat.start == Some(start))
            }
            // An older daemon's name: a live process by that name.
            None => pid != std::process::id() && !is_live_runner(pid),
        }
    }
}

/// Whether `pid` is a running codex-runner: not gone, not a zombie (a
/// SIGKILLed daemon whose parent has not reaped it yet), not a reused pid.
pub fn is_live_runner(pid: u32) -> bool {
    proc_stat(pid)
        .is_some_and(|stat| stat.comm.as_deref() == Some("codex-runner") && !stat.is_dead())
}

/// Whether `pid` exists and is not a zombie.
fn is_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|stat| !stat.is_dead())
}

/// Live descendants of `pid`, from the parent links in `/proc/*/stat`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = pids()
        .filter_map(|child| Some((child, proc_stat(child)?.ppid?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let current = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == current)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The pids `/proc` lists now.
pub fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug)]
pub struct ProcStat {
    /// Its command name (between the first `(` and the last `)`).
    pub comm: Option<String>,
    /// Its state letter (`R`, `S`, `Z`…).
    pub state: Option<char>,
    /// Its parent's pid.
    pub ppid: Option<u32>,
    /// When it started, in clock ticks since boot.
    pub start: Option<u64>,
}

impl ProcStat {
    /// A zombie, or dead.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, Some('Z' | 'X'))
    }
}

/// `/proc/<pid>/stat`, or `None` if the process is gone.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields
    // resume after the last ')'.
    let close = stat.rfind(')');
    let comm = stat
        .find('(')
        .zip(close)
        .map(|(open, close)| stat[open + 1..close].to_owned());
    let mut fields = close.map(|i| stat[i + 1..].split_whitespace());
    let state = fields.as_mut().and_then(|f| f.next()?.chars().next());
    let ppid = fields.as_mut().and_then(|f| f.next()?.parse().ok());
    // Field 22; `fields` resumes at field 5.
    let start = fields.as_mut().and_then(|f| f.nth(17)?.parse().ok());
    Some(ProcStat {
        comm,
        state,
        ppid,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A turn dir's tag, `<tag>-<n>`, names a dead daemon's.
    fn is_dead_runners(tag: &str) -> bool {
        Owner::parse(tag, TagSuffix::Counter).is_some_and(|owner| owner.is_dead())
    }

    #[test]
    fn only_names_of_exactly_our_form_are_read() {
        let owner = |pid, ns, start| Some(Owner { pid, ns, start });
        let turn = |name| Owner::parse(name, TagSuffix::Counter);
        assert_eq!(turn("12-p34-s56-7"), owner(12, Some(34), Some(56)));
        assert_eq!(turn("12-7"), owner(12, None, None), "an older daemon's");
        // A user's own dirs in a chosen --turn-dir: `turn-2024-notes`,
        // `turn-1-2-3`, `turn-5`.
        for name in [
            "2024-notes",
            "1-2-3",
            "5",
            "12-p34-s56",
            "12-p34-s56-7x",
            "+1-2",
            "12-p-3",
        ] {
            assert_eq!(turn(name), None, "{name}");
        }
        let cgroup = |name| Owner::parse(name, TagSuffix::Nothing);
        assert_eq!(cgroup("12-p34-s56"), owner(12, Some(34), Some(56)));
        assert_eq!(cgroup("12-p34-s56-7"), None);
        assert_eq!(cgroup("db-template-12-p34-s56-abc"), None);
        let scratch = |name| Owner::parse(name, TagSuffix::Random);
        assert_eq!(scratch("12-p34-s56-aB3x9Z"), owner(12, Some(34), Some(56)));
        assert_eq!(scratch("12-p34-s56-a.b"), None);
        assert_eq!(scratch("12-p34-s56"), None);
    }

    /// Only this user's real directories, and of a private kind only
    /// those made 0700, are taken for a dead daemon's.
    #[test]
    fn only_our_private_directories_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ns = pid_namespace().unwrap();
        let make = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            fs::create_dir(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let dead = make(&format!("turn-1-p{ns}-s1-0"), 0o700);
        make(&format!("turn-1-p{ns}-s1-1"), 0o755);
        make("turn-1-notes", 0o700);
        std::os::unix::fs::symlink(&dead, dir.path().join(format!("turn-1-p{ns}-s1-2"))).unwrap();
        fs::write(dir.path().join(format!("turn-1-p{ns}-s1-3")), "").unwrap();
        let names = |private| LeftBehind {
            prefix: "turn-",
            suffix: TagSuffix::Counter,
            private,
        };
        assert_eq!(
            dead_runners_entries(dir.path(), &names(true)),
            std::slice::from_ref(&dead)
        );
        let mut found = dead_runners_entries(dir.path(), &names(false));
        found.sort();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], dead);
    }

    #[test]
    fn only_dead_daemons_of_our_pid_namespace_are_judged_dead() {
        let ns = pid_namespace().expect("this test runs where /proc has namespaces");
        let own = std::process::id();
        // pid 1 here is never a codex-runner (the test runs outside any
        // container of ours); a pid that is not running is dead.
        assert!(is_dead_runners(&format!("1-p{ns}-0")));
        assert!(
            is_dead_runners("1-0"),
            "an older daemon's name: the pid alone"
        );
        assert!(!is_dead_runners(&format!("{own}-p{ns}-0")), "ours");
        // Another namespace's pid 1 may be a live daemon there.
        assert!(!is_dead_runners(&format!("1-p{}-0", ns + 1)));
        assert!(!is_dead_runners("x-0"));
        assert!(instance_tag().starts_with(&format!("{own}-p{ns}-s")));
        assert!(!is_dead_runners(&format!("{}-0", instance_tag())), "ours");
    }

    /// Liveness by pid and start time, whatever the process is called:
    /// before, a daemon run from a renamed binary was taken for dead and
    /// other daemons removed its live turns.
    #[test]
    fn a_live_process_with_the_recorded_start_time_is_alive_whatever_its_name() {
        let ns = pid_namespace().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = proc_stat(pid).unwrap().start.unwrap();
        assert_ne!(
            proc_stat(pid).unwrap().comm.as_deref(),
            Some("codex-runner")
        );
        assert!(!is_dead_runners(&format!("{pid}-p{ns}-s{start}-3")));
        // The same pid with another start time: a later process reusing it.
        assert!(is_dead_runners(&format!("{pid}-p{ns}-s{}-3", start + 1)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(is_dead_runners(&format!("{pid}-p{ns}-s{start}-3")));
    }

    #[test]
    fn a_release_that_gives_up_waiting_is_not_followed_by_another_wait() {
        #[derive(Clone, Default)]
        struct Log(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // A process the container takes for one it killed, and that lives
        // on (as one stuck in the kernel would).
        let mut alive = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let mut container = TurnContainer::default();
        container.killed.push(alive.id());
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let left =
            tracing::subscriber::with_default(subscriber, || runtime.block_on(container.release()));
        alive.kill().unwrap();
        alive.wait().unwrap();
        assert!(!left);
        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            log.matches("still running").count(),
            1,
            "one wait and one warning, not a second one in drop: {log}"
        );
    }
}
