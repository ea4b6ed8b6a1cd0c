//! Codex's SQLite databases, made once per codex binary and copied into
//! every turn's home.
//!
//! Codex keeps SQLite databases in CODEX_HOME (`state_<N>.sqlite`, thread
//! history, goals, memories, queue, logs). In a brand-new home it creates
//! each one and runs its migrations, and then *backfills* the state database
//! by reading every rollout under `sessions/`: ~50 ms for an empty
//! `sessions/`, and over a second per turn once the shared `sessions/` holds
//! a thousand rollouts, since every turn's home is new. The thread-history
//! database is created with a thread's first turn: another ~8 ms of codex's
//! CPU per turn (about 4% of a short turn).
//!
//! So the daemon starts a build in the background when it starts (and the
//! first turn for another codex binary, if the binary is replaced: see
//! [`DbTemplates::for_codex`]), in a scratch home with a config of our own and a cleared
//! environment (no request, no secrets, no user config), and never the model:
//! 1. `codex exec` of one turn against a provider whose API key variable is
//!    unset: codex creates the thread (and so every database), fails the turn
//!    before any connection, and exits;
//! 2. `codex delete --force <that thread>` removes its rollout and its rows;
//! 3. what is left, migrated and empty (the state database with its backfill
//!    marked done), is kept: every database and its write-ahead log. That
//!    includes the log database: any row codex logged there is about the
//!    scratch turn (no request, no secret; its log table stays empty in a
//!    home that served many turns here), and it goes with the turn's home
//!    like the rest. Creating it cost codex ~6 ms of a ~200 ms turn.
//!
//! A codex without `delete`, or one that left the rollout behind, gets the
//! older recipe instead: `codex exec resume <nil id>`, which opens every
//! database but the thread-history one, finds no such thread and exits.
//! Turns go without templates until the build is done, and for good when
//! both recipes fail (a warning says so). Codex then skips creation and
//! backfill; `resume` still finds a thread's rollout by searching
//! `sessions/`, as it does for any thread its database does not know.
//! Templates are keyed by the codex binary (inode, size, mtime) and rebuilt
//! when it changes. `CODEX_RUNNER_STATE_TEMPLATE=0` turns them off. One
//! [`DbTemplates`] holds a daemon's templates and its running build, which
//! [`DbTemplates::stop`] ends at the daemon's exit.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::codex_bin::CodexBin;
use crate::codex_home::FileKey;
use crate::containment::{LeftBehind, TagSuffix};

/// Pristine databases: file name and contents (each database and, where
/// codex left one, its write-ahead log).
#[derive(Debug)]
pub struct DbTemplate {
    /// (file name, bytes), sorted by name.
    pub files: Vec<(OsString, Vec<u8>)>,
}

#[derive(Debug)]
enum Slot {
    Building,
    Ready(Arc<DbTemplate>),
    Unavailable,
}

/// A daemon's database templates, one set per codex binary, and the build
/// under way. Cheap to clone: the clones share them. The default builds
/// none (a library user's or a test's homes go without).
#[derive(Clone, Default)]
pub struct DbTemplates(Arc<Templates>);

#[derive(Default)]
struct Templates {
    /// `false`: no template is ever built.
    enabled: bool,
    slots: Mutex<HashMap<FileKey, Slot>>,
    /// What the build has running, so that [`DbTemplates::stop`] can end it.
    running: Mutex<Running>,
    /// Notified when a scratch dir is gone.
    scratch_gone: Condvar,
}

impl std::fmt::Debug for DbTemplates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbTemplates")
            .field("enabled", &self.0.enabled)
            .finish_non_exhaustive()
    }
}

impl DbTemplates {
    /// Templates built for each codex binary as it is first used.
    pub fn building() -> DbTemplates {
        DbTemplates(Arc::new(Templates {
            enabled: true,
            ..Templates::default()
        }))
    }

    /// Templates as the environment asks: built unless
    /// `CODEX_RUNNER_STATE_TEMPLATE=0`.
    pub fn from_env() -> DbTemplates {
        match std::env::var_os("CODEX_RUNNER_STATE_TEMPLATE") {
            Some(v) if v == "0" => DbTemplates::default(),
            _ => DbTemplates::building(),
        }
    }

    /// The templates for `bin`, if ready; starts building them on first use.
    pub fn for_codex(&self, bin: &CodexBin) -> Option<Arc<DbTemplate>> {
        if !self.0.enabled {
            return None;
        }
        let key = FileKey::of(&fs::metadata(&bin.program).ok()?);
        let mut guard = self.0.slots.lock().expect("template slots");
        match guard.get(&key) {
            Some(Slot::Ready(template)) => return Some(template.clone()),
            Some(_) => return None,
            None => {}
        }
        guard.insert(key, Slot::Building);
        drop(guard);
        let bin = bin.clone();
        let templates = self.0.clone();
        let spawned = std::thread::Builder::new()
            .name("db-template".into())
            .spawn(move || {
                let slot = match build(&templates, &bin) {
                    Ok(template) => {
                        let thread_history = template
                            .files
                            .iter()
                            .any(|(n, _)| n.to_string_lossy().starts_with("thread_history_"));
                        tracing::info!(
                            files = template.files.len(),
                            thread_history,
                            "codex database templates ready"
                        );
                        Slot::Ready(Arc::new(template))
                    }
                    // A build cut short by the daemon's exit costs no turn.
                    Err(why) if templates.running().stopped => {
                        tracing::debug!("codex database templates not built: {why}");
                        Slot::Unavailable
                    }
                    Err(why) => {
                        // Every turn then pays codex's database set-up (~50 ms
                        // of CPU, more with many rollouts): worth a warning.
                        tracing::warn!(
                            program = %bin.program.display(),
                            "no codex database templates, turns go without: {why}"
                        );
                        Slot::Unavailable
                    }
                };
                templates
                    .slots
                    .lock()
                    .expect("template slots")
                    .insert(key, slot);
            });
        if spawned.is_err() {
            self.0
                .slots
                .lock()
                .expect("template slots")
                .insert(key, Slot::Unavailable);
        }
        None
    }

    /// For the daemon's exit: kills the process group of a build's codex,
    /// if one runs, removes the build's scratch dirs, and starts no more.
    /// The build thread then fails (and never reaps a pid it did not spawn:
    /// the group is killed and the child reaped under the same lock).
    pub fn stop(&self) {
        let mut running = self.0.running();
        running.stopped = true;
        if let Some(group) = running.group.take() {
            // SAFETY: kill has no memory-safety preconditions; the group is
            // our unreaped child's own (process_group(0)).
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
        // A killed codex may finish the call it is in (a file made in its
        // home) after a removal here has read the dir: the build thread
        // removes its scratch dir once it has reaped codex, so that is
        // waited for, briefly, before what is left is removed here.
        let (mut running, _) = self
            .0
            .scratch_gone
            .wait_timeout_while(running, SCRATCH_WAIT, |running| !running.scratch.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        let left = std::mem::take(&mut running.scratch);
        for dir in left.into_iter().chain(running.unremoved.drain(..)) {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Templates {
    fn running(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) const SCRATCH_PREFIX: &str = "codex-runner-db-template-";

/// What a build has running, so that the daemon's exit can end it.
#[derive(Default)]
struct Running {
    /// Set by [`DbTemplates::stop`]: no new scratch dir, no new codex.
    stopped: bool,
    /// The process group of the codex running now.
    group: Option<libc::pid_t>,
    /// Scratch dirs in use.
    scratch: Vec<PathBuf>,
    /// Scratch dirs no longer in use that could not be removed then.
    unremoved: Vec<PathBuf>,
}

/// How long the daemon's exit waits for a build to remove its scratch dir.
const SCRATCH_WAIT: Duration = Duration::from_secs(2);

/// Both recipes together may take this long; then codex is killed.
const BUILD_LIMIT: Duration = Duration::from_secs(60);

/// The scratch home's config: a provider whose key variable is never set
/// (the environment is cleared), so a turn fails before any connection; no
/// plugin or analytics lookups either.
const NO_MODEL_CONFIG: &str = r#"model = "gpt-5.5"
model_provider = "codex-runner-template"

[model_providers.codex-runner-template]
name = "none"
base_url = "http://127.0.0.1:9/v1"
wire_api = "responses"
env_key = "CODEX_RUNNER_TEMPLATE_NO_KEY"
request_max_retries = 0
stream_max_retries = 0

[features]
unbounded_connection_retries = false
plugins = false

[analytics]
enabled = false
"#;

/// Removes the scratch dirs of daemons that are gone.
pub(crate) fn clean_stale(tmp: &Path) {
    let names = LeftBehind {
        prefix: SCRATCH_PREFIX,
        suffix: TagSuffix::Random,
        private: true,
    };
    for dir in crate::containment::dead_runners_entries(tmp, &names) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// A scratch dir: `home/` (CODEX_HOME and codex's cwd) and `stdout`.
/// In the temporary directory, not the turn root: it holds no secret, and
/// the turn root holds turns only. Removed on drop, or, if the daemon exits
/// first, by the next daemon's build (the name has our pid).
struct Scratch {
    dir: tempfile::TempDir,
    /// Whose build this is: it records the scratch dir and codex's group.
    templates: Arc<Templates>,
}

impl Scratch {
    fn new(templates: &Arc<Templates>, config: &str) -> Result<Scratch, String> {
        let mut running = templates.running();
        if running.stopped {
            return Err("the daemon is exiting".into());
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{SCRATCH_PREFIX}{}-",
                crate::containment::instance_tag()
            ))
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(std::env::temp_dir())
            .map_err(|e| e.to_string())?;
        running.scratch.push(dir.path().to_path_buf());
        drop(running);
        let scratch = Scratch {
            dir,
            templates: templates.clone(),
        };
        fs::create_dir(scratch.home()).map_err(|e| e.to_string())?;
        fs::write(scratch.home().join("config.toml"), config).map_err(|e| e.to_string())?;
        Ok(scratch)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Runs codex with `args` in this home, `x` on its stdin, until it exits
    /// or `deadline`; its process group is killed after. Exit status and
    /// stdout.
    fn run(
        &self,
        bin: &CodexBin,
        args: &[&str],
        deadline: Instant,
    ) -> Result<(ExitStatus, String), String> {
        let stdout_path = self.dir.path().join("stdout");
        let stdout = fs::File::create(&stdout_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(&bin.program);
        command
            .args(args)
            .env_clear()
            .env("CODEX_HOME", self.home())
            .env("RUST_BACKTRACE", "0")
            .current_dir(self.home())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.env(
            "PATH",
            bin.child_path(std::env::var_os("PATH").unwrap_or_default()),
        );
        if let Some(home) = std::env::var_os("HOME") {
            command.env("HOME", home);
        }
        let mut child = {
            let mut running = self.templates.running();
            if running.stopped {
                return Err("the daemon is exiting".into());
            }
            let child = command.spawn().map_err(|e| e.to_string())?;
            running.group = Some(child.id() as libc::pid_t);
            child
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"x");
        }
        let status = loop {
            // Under the lock: `stop` never kills a reaped pid's group.
            let polled = {
                let mut running = self.templates.running();
                let polled = child.try_wait();
                if !matches!(polled, Ok(None)) {
                    running.group = None;
                }
                polled
            };
            match polled {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let mut running = self.templates.running();
                    running.group = None;
                    // SAFETY: kill has no memory-safety preconditions; the
                    // group is the unreaped child's own (process_group(0)).
                    unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
                    drop(running);
                    let _ = child.wait();
                    return Err(format!("codex {} did not exit in time", args[0]));
                }
            }
        };
        // Whatever it left running in its group goes too.
        // SAFETY: as above; ESRCH when the group is empty.
        unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
        let out = fs::read_to_string(&stdout_path).unwrap_or_default();
        Ok((status, out))
    }

    /// Every database and write-ahead log codex left in the home; an error
    /// without a state database.
    fn databases(&self) -> Result<DbTemplate, String> {
        let mut files = Vec::new();
        for entry in fs::read_dir(self.home())
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let name = entry.file_name();
            let text = name.to_string_lossy();
            if text.ends_with(".sqlite") || text.ends_with(".sqlite-wal") {
                files.push((
                    name.clone(),
                    fs::read(entry.path()).map_err(|e| e.to_string())?,
                ));
            }
        }
        if !files.iter().any(|(n, _)| {
            let n = n.to_string_lossy();
            n.starts_with("state_") && n.ends_with(".sqlite")
        }) {
            return Err("codex created no state database".into());
        }
        files.sort();
        Ok(DbTemplate { files })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Removed here, not by `self.dir`'s drop after this: `stop` is
        // told once it is gone. A removal that fails (no descriptor left)
        // stays listed, for `stop` to try again at the daemon's exit.
        let removed = fs::remove_dir_all(self.dir.path()).is_ok();
        let mut running = self.templates.running();
        running.scratch.retain(|dir| dir != self.dir.path());
        if !removed {
            running.unremoved.push(self.dir.path().to_path_buf());
        }
        if running.scratch.is_empty() {
            self.templates.scratch_gone.notify_all();
        }
    }
}

fn build(templates: &Arc<Templates>, bin: &CodexBin) -> Result<DbTemplate, String> {
    clean_stale(&std::env::temp_dir());
    let deadline = Instant::now() + BUILD_LIMIT;
    match with_thread_history(templates, bin, deadline) {
        Ok(template) => Ok(template),
        Err(why) => {
            tracing::debug!("no thread-history template ({why}); the other databases only");
            without_thread_history(templates, bin, deadline)
                .map_err(|other| format!("{other} (and with a thread deleted: {why})"))
        }
    }
}

/// Recipe 1: a thread created and deleted.
fn with_thread_history(
    templates: &Arc<Templates>,
    bin: &CodexBin,
    deadline: Instant,
) -> Result<DbTemplate, String> {
    let scratch = Scratch::new(templates, NO_MODEL_CONFIG)?;
    let (_, out) = scratch.run(
        bin,
        &["exec", "--json", "--skip-git-repo-check", "-"],
        deadline,
    )?;
    let thread = started_thread(&out).ok_or("codex started no thread")?;
    let (status, _) = scratch.run(bin, &["delete", "--force", &thread], deadline)?;
    if !status.success() {
        return Err(format!("codex delete failed ({status})"));
    }
    if let Some(left) = first_file(&scratch.home().join("sessions")) {
        return Err(format!("codex delete left {}", left.display()));
    }
    let template = scratch.databases()?;
    if !template
        .files
        .iter()
        .any(|(n, _)| n.to_string_lossy().starts_with("thread_history_"))
    {
        return Err("codex created no thread-history database".into());
    }
    Ok(template)
}

/// Recipe 2: no thread at all.
fn without_thread_history(
    templates: &Arc<Templates>,
    bin: &CodexBin,
    deadline: Instant,
) -> Result<DbTemplate, String> {
    const NIL_THREAD: &str = "00000000-0000-0000-0000-000000000000";
    let scratch = Scratch::new(templates, "")?;
    let args = [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "resume",
        NIL_THREAD,
        "-",
    ];
    let (status, _) = scratch.run(bin, &args, deadline)?;
    scratch
        .databases()
        .map_err(|why| format!("{why} ({status})"))
}

/// The id of the `thread.started` event in codex's JSONL output.
fn started_thread(out: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        (event["type"] == "thread.started")
            .then(|| event["thread_id"].as_str().map(str::to_owned))
            .flatten()
    })
}

/// Some file under `dir` (not a directory), if any.
fn first_file(dir: &Path) -> Option<std::path::PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                _ => return Some(entry.path()),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_waits_for_a_build_to_be_done_with_its_scratch_dir() {
        // A killed codex may still make a file in its home after the exit's
        // removal has read the dir (the dir then stayed): the exit waits
        // for the build thread, which removes the dir once codex is reaped.
        let templates = DbTemplates::building();
        let scratch = Scratch::new(&templates.0, "").unwrap();
        let dir = scratch.dir.path().to_path_buf();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        let stopping = templates.clone();
        let stopper = std::thread::spawn(move || {
            stopping.stop();
            stopped_tx.send(()).unwrap();
        });
        assert!(
            stopped.recv_timeout(Duration::from_millis(200)).is_err(),
            "the exit did not wait for the build"
        );
        fs::write(scratch.home().join("late"), "written as codex died").unwrap();
        drop(scratch);
        stopped.recv_timeout(Duration::from_secs(20)).unwrap();
        stopper.join().unwrap();
        assert!(!dir.exists(), "{} left", dir.display());
    }

    #[test]
    fn scratch_dirs_of_dead_daemons_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // pid 1 is never a codex-runner; ours is alive; a foreign name, and
        // one of our form that is not 0700 (so not made by a daemon), are kept.
        let dead = tmp.path().join(format!("{SCRATCH_PREFIX}1-abc"));
        let ours = tmp.path().join(format!(
            "{SCRATCH_PREFIX}{}-abc",
            crate::containment::instance_tag()
        ));
        let other = tmp.path().join("something-else");
        let open = tmp.path().join(format!("{SCRATCH_PREFIX}1-xyz"));
        for dir in [&dead, &ours, &other, &open] {
            fs::create_dir(dir).unwrap();
            fs::write(dir.join("config.toml"), "").unwrap();
            let mode = if dir == &open { 0o755 } else { 0o700 };
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
        }
        clean_stale(tmp.path());
        assert!(!dead.exists());
        assert!(ours.exists());
        assert!(other.exists());
        assert!(open.exists());
    }

    #[test]
    fn the_started_thread_is_found_among_other_lines() {
        let out = "{\"type\":\"error\",\"message\":\"x\"}\nnot json\n\
                   {\"type\":\"thread.started\",\"thread_id\":\"t-1\"}\n";
        assert_eq!(started_thread(out).as_deref(), Some("t-1"));
        assert_eq!(started_thread("{\"type\":\"turn.started\"}\n"), None);
    }

    #[test]
    fn a_file_is_found_at_any_depth_and_empty_dirs_are_not_files() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("2026/11/21")).unwrap();
        assert_eq!(first_file(tmp.path()), None);
        fs::write(tmp.path().join("2026/11/21/rollout.jsonl"), "").unwrap();
        assert_eq!(
            first_file(tmp.path()),
            Some(tmp.path().join("2026/11/21/rollout.jsonl"))
        );
        assert_eq!(first_file(&tmp.path().join("missing")), None);
    }
}
