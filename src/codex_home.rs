//! The per-turn CODEX_HOME: a private directory (0700) holding the turn's
//! synthesized `config.toml` (0600) and links to what login and resume need
//! from the user's base home. Removed when the [`TurnHome`] is dropped,
//! however the turn ends.
//!
//! What is linked, and why: `auth.json` (login; codex writes through the
//! link), `sessions/` and `thread-writer-locks/` (so a thread started in one
//! turn can be resumed in the next, and two homes never write one rollout at
//! once), profile files `*.config.toml` (`--profile`), the user's
//! instructions, prompts, rules and skills, `.env`, `installation_id`, the
//! MCP OAuth tokens (`.credentials.json`) and `hooks.json`.
//! Never SQLite files: SQLite puts its -wal/-shm next to the path it opened,
//! so a linked database would be shared unsafely; codex falls back to a file
//! search under `sessions/` for resume.
//!
//! # Cost
//!
//! A turn's home is on the path of every turn, so it is cheap:
//! - the base home is read once and then revalidated with two `stat`s per
//!   turn (its `config.toml` and the directory itself): the parsed config and
//!   the list of entries to link are cached, keyed by inode, size, mtime and
//!   ctime, and a file changed less than [`SETTLED`] ago is re-read on every
//!   turn (timestamps are coarser than edits);
//! - the directory is removed by unlinking what we created and `rmdir`, with
//!   a full recursive removal only when codex left files behind;
//! - codex's SQLite databases are copied in from templates made once per
//!   codex binary (see [`crate::db_template`]), so codex neither creates and
//!   migrates them nor backfills from every rollout on each turn.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runner_protocol::RunParams;
use toml_edit::DocumentMut;

use crate::codex_bin::CodexBin;
use crate::config_template::RecentConfigs;
use crate::config_toml::{self, ConfigError};
use crate::containment::{LeftBehind, TagSuffix};
use crate::db_template::DbTemplates;
use crate::home_pool::{self, IdleHomes, Links};

/// Entries of the base home linked into every turn's home (when present).
const LINKED: &[&str] = &[
    "auth.json",
    "sessions",
    "archived_sessions",
    "thread-writer-locks",
    "AGENTS.md",
    "AGENTS.override.md",
    "prompts",
    "rules",
    "skills",
    ".env",
    "installation_id",
    // MCP OAuth tokens from `codex mcp login`, where no keyring is.
    ".credentials.json",
    "hooks.json",
];

/// Base-home directories created if missing: resume only works if the
/// turn's rollout outlives the turn's home.
const SHARED_DIRS: &[&str] = &["sessions", "thread-writer-locks"];

/// Base-home directories created if missing, when we may (a read-only base
/// home is fine): codex extracts its bundled skills into `skills/.system` of
/// every home that lacks them, ~1.5 MB and 50 files, so a linked `skills/`
/// makes that happen once instead of on every turn (as it does for a user
/// running codex in that home).
const SHARED_DIRS_BEST_EFFORT: &[&str] = &["skills"];

/// A file whose mtime or ctime is younger than this may still change within
/// the same timestamp tick: it is not cached.
#[cfg(not(test))]
const SETTLED: Duration = Duration::from_secs(2);
#[cfg(test)]
const SETTLED: Duration = Duration::from_millis(300);

/// Where homes come from.
#[derive(Debug, Clone, Default)]
pub struct HomeSettings {
    /// The user's CODEX_HOME (may not exist).
    pub base_home: PathBuf,
    /// Where per-turn dirs are created (a private dir of ours).
    pub turn_root: PathBuf,
    /// Homes of finished turns, kept for later ones (see
    /// [`TurnHome::recycle`]); removed with [`IdleHomes::clear`] at exit.
    pub idle: Arc<IdleHomes>,
    /// Codex's databases, copied into each home once built (the default
    /// builds none); stopped with [`DbTemplates::stop`] at exit.
    pub templates: DbTemplates,
}

/// Why a turn's home could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Creating or writing a file or dir failed.
    #[error("cannot prepare the turn's CODEX_HOME: {what} {path}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config could not be synthesised.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The turn root exists but is not a directory of ours: it may sit in a
    /// world-writable place (/dev/shm), where another user could have made
    /// it first.
    #[error("{0} is not a directory owned by this user")]
    TurnRootNotOurs(PathBuf),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HomeError + 'a {
    move |source| HomeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A prepared per-turn home; the directory is removed on drop.
#[derive(Debug)]
pub struct TurnHome {
    path: PathBuf,
    /// What we put in it, removed one by one before the directory.
    created: Vec<PathBuf>,
    /// The links it holds, which a later turn reusing it needs.
    links: Links,
    /// Already removed (by [`TurnHome::remove`]).
    removed: bool,
    /// The output schema file, when the request has one.
    pub output_schema: Option<PathBuf>,
}

impl TurnHome {
    /// The directory to export as CODEX_HOME.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now, reporting failure.
    pub fn remove(mut self) -> std::io::Result<()> {
        self.removed = true;
        remove_home(&self.path, &self.created)
    }

    /// Empties the directory but for its links and keeps it in `idle` for
    /// a later turn; removes it instead if a link is gone or changed. Only
    /// for a home no process of its turn can still write to.
    pub fn recycle(mut self, idle: &IdleHomes) -> std::io::Result<()> {
        self.removed = true;
        match home_pool::empty_but_links(&self.path, &self.links) {
            Ok(true) => {
                idle.give_back(std::mem::take(&mut self.path), self.links.clone());
                Ok(())
            }
            Ok(false) | Err(_) => remove_home(&self.path, &self.created),
        }
    }
}

impl Drop for TurnHome {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove_home(&self.path, &self.created);
        }
    }
}

/// Unlinks what we created, then the directory; if codex left anything
/// there (it usually does: databases, `tmp/`), removes the rest too.
fn remove_home(path: &Path, created: &[PathBuf]) -> std::io::Result<()> {
    for entry in created {
        let _ = fs::remove_file(entry);
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => match fs::remove_dir_all(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    }
}

/// Creates the turn root (0700) if needed and makes sure it is ours and
/// private: it may live in a world-writable place like /dev/shm.
pub fn ensure_turn_root(root: &Path) -> Result<(), HomeError> {
    use std::os::unix::fs::MetadataExt;
    match DirBuilder::new().recursive(true).mode(0o700).create(root) {
        // Something that is not a directory: said below as such.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        result => result.map_err(io("creating", root))?,
    }
    let meta = fs::symlink_metadata(root).map_err(io("inspecting", root))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(HomeError::TurnRootNotOurs(root.to_path_buf()));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(io("restricting", root))?;
        // Said: it may be a dir of the user's that others were meant to read.
        tracing::warn!(
            turn_dir = %root.display(),
            was = format!("{:o}", meta.mode() & 0o777),
            "the turn dir was open to other users; made it 0700: its turns' files hold secrets"
        );
    }
    Ok(())
}

/// Removes per-turn dirs left by daemons that died without cleaning up
/// (SIGKILL, power loss): they hold config files with secrets. A dir is ours
/// by name, `turn-<pid>-p<pid namespace>-s<start>-<n>`, and mode (0700), and
/// stale when that pid is in our PID namespace and not a live runner.
pub fn clean_stale(root: &Path) {
    // One line for all: a daemon killed with a thousand turns (and its
    // homes kept for reuse) left a thousand dirs. Each failure is its own
    // line: that dir's secrets stay.
    let mut removed = 0u64;
    for dir in crate::containment::dead_runners_entries(root, &TURN_DIRS) {
        match fs::remove_dir_all(&dir) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a stale turn dir")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, turn_dir = %root.display(), "removed the turn dirs of dead codex-runners");
    }
}

/// How a private turn root beside the shared default `<default>` is named:
/// `<default>-<tag>` (see [`create_private_turn_root`]).
fn private_roots(default: &Path) -> (PathBuf, String) {
    let name = default.file_name().unwrap_or_default().to_string_lossy();
    let parent = default.parent().unwrap_or(Path::new("/")).to_owned();
    (parent, format!("{name}-"))
}

/// A turn root of this daemon's alone beside `default` (when another user
/// holds that), created 0700, named so that a later daemon can tell it for a
/// dead daemon's (see [`clean_stale_private_roots`]).
pub fn create_private_turn_root(default: &Path) -> std::io::Result<PathBuf> {
    let (parent, prefix) = private_roots(default);
    let root = parent.join(format!("{prefix}{}", crate::containment::instance_tag()));
    DirBuilder::new().mode(0o700).create(&root)?;
    Ok(root)
}

/// Removes the private turn roots beside `default` of daemons that died
/// without removing them (SIGKILL), with the turn dirs they hold: those
/// hold config files with secrets, and no other daemon would ever use them.
pub fn clean_stale_private_roots(default: &Path) {
    let (parent, prefix) = private_roots(default);
    let names = LeftBehind {
        prefix: &prefix,
        suffix: TagSuffix::Nothing,
        private: true,
    };
    for root in crate::containment::dead_runners_entries(&parent, &names) {
        match fs::remove_dir_all(&root) {
            Ok(()) => {
                tracing::info!(turn_dir = %root.display(), "removed the private turn dir of a dead codex-runner")
            }
            Err(e) => {
                tracing::warn!(turn_dir = %root.display(), error = %e, "cannot remove the private turn dir of a dead codex-runner")
            }
        }
    }
}

/// Prepares the home of one turn. Given the `codex` binary, it also gets copies of
/// codex's database templates when they are ready for that binary (the first
/// call for a binary starts building them in the background; until then, and
/// if that fails, turns go without templates).
pub fn prepare(
    settings: &HomeSettings,
    codex: Option<&CodexBin>,
    run_id: &str,
    params: &RunParams,
) -> Result<TurnHome, HomeError> {
    let base = &settings.base_home;
    let snapshot = base_snapshot(base)?;
    let config_text = snapshot
        .configs
        .render(snapshot.config.as_ref(), run_id, params)?;
    let template = codex.and_then(|codex| settings.templates.for_codex(codex));

    let reused = settings.idle.take(&snapshot.links);
    let linked = reused.is_some();
    let path = match reused {
        Some(path) => path,
        None => create_turn_dir(&settings.turn_root)?,
    };
    let mut home = TurnHome {
        path,
        created: Vec::with_capacity(snapshot.links.len() + 4),
        links: snapshot.links.clone(),
        removed: false,
        output_schema: None,
    };
    let filled = (|| {
        let config = home.path.join("config.toml");
        write_private(&config, config_text.as_bytes())?;
        home.created.push(config);
        if let Some(schema) = &params.output_schema {
            let path = home.path.join("output-schema.json");
            let bytes = serde_json::to_vec(schema).expect("a JSON object serialises");
            write_private(&path, &bytes)?;
            home.created.push(path.clone());
            home.output_schema = Some(path);
        }
        if !linked {
            make_links(&home.path, &snapshot.links)?;
        }
        home.created
            .extend(snapshot.links.iter().map(|(name, _)| home.path.join(name)));
        if let Some(template) = template {
            for (name, bytes) in &template.files {
                let path = home.path.join(name);
                write_private(&path, bytes)?;
                // Not in `created`: codex adds -shm/-wal files next to it anyway.
            }
        }
        Ok(())
    })();
    if let Err(e) = filled {
        // Usually out of descriptors, which removing a dir that is not
        // empty needs too: what cannot go now goes at exit.
        home.removed = true;
        settings.idle.remove(home.path.clone());
        return Err(e);
    }
    Ok(home)
}

/// Homes a new daemon makes before it reads its first request, at most (as
/// many as are kept idle): as for turn cgroups, a first burst of that many
/// turns then writes only its own files (see [`TurnHome::recycle`]).
pub const PREFILL_MAX: usize = crate::home_pool::IDLE_MAX;

/// Makes up to `turns` (at most [`PREFILL_MAX`]) empty homes holding the
/// base home's links, kept in `settings.idle` for the first turns. Best
/// effort: a failure is logged and ends it, and turns then make their own.
pub fn prefill(settings: &HomeSettings, turns: usize) {
    let made = (|| {
        let snapshot = base_snapshot(&settings.base_home)?;
        for _ in 0..turns.min(PREFILL_MAX) {
            let path = create_turn_dir(&settings.turn_root)?;
            if let Err(e) = make_links(&path, &snapshot.links) {
                let _ = fs::remove_dir_all(&path);
                return Err(e);
            }
            settings.idle.give_back(path, snapshot.links.clone());
        }
        Ok::<(), HomeError>(())
    })();
    if let Err(e) = made {
        tracing::warn!(error = %crate::diag::chain(&e), "cannot make turn homes ahead of time");
    }
}

/// One symlink in `dir` per entry of `links`.
fn make_links(dir: &Path, links: &Links) -> Result<(), HomeError> {
    for (name, target) in links.iter() {
        let link = dir.join(name);
        std::os::unix::fs::symlink(target, &link).map_err(io("linking", &link))?;
    }
    Ok(())
}

/// How turn dirs are named (see [`create_turn_dir`]).
const TURN_DIRS: LeftBehind = LeftBehind {
    prefix: "turn-",
    suffix: TagSuffix::Counter,
    private: true,
};

/// `turn-<tag>-<n>`, created 0700: private from the first instant, and
/// named so that a later daemon can tell whose it is (see [`clean_stale`]
/// and [`crate::containment::instance_tag`]).
fn create_turn_dir(root: &Path) -> Result<PathBuf, HomeError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tag = crate::containment::instance_tag();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("turn-{tag}-{n}"));
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            // Left by an earlier daemon with our pid: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("creating a dir in", root)(e)),
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    file.write_all(bytes).map_err(io("writing", path))
}

/// Identity and version of a file, as far as `stat` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    pub(crate) fn of(meta: &fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Unchanged for long enough that an edit would have moved a timestamp.
    fn settled(&self) -> bool {
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return false;
        };
        let newest = self.mtime.max(self.ctime);
        let newest = Duration::new(
            newest.0.max(0) as u64,
            newest.1.clamp(0, 999_999_999) as u32,
        );
        now.saturating_sub(newest) >= SETTLED
    }
}

/// What the base home holds, as of the keys.
#[derive(Debug)]
struct BaseSnapshot {
    /// `config.toml`'s key, `None` if absent.
    config_key: Option<FileKey>,
    /// The parsed `config.toml` (`None`: absent).
    config: Option<DocumentMut>,
    /// The base directory's key: its mtime moves whenever an entry is
    /// added, removed or renamed.
    dir_key: Option<FileKey>,
    /// Entries to link: (name, target).
    links: Links,
    /// Configs rendered over `config` for recent requests.
    configs: RecentConfigs,
}

fn stat_key(path: &Path) -> Result<Option<FileKey>, HomeError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(FileKey::of(&meta))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("inspecting", path)(e)),
    }
}

/// Reads the base `config.toml`, which must be a regular file: opened
/// without blocking, so that a FIFO there (or a device) is an error rather
/// than a daemon stuck forever in `open` or `read`.
pub fn read_config(path: &Path) -> std::io::Result<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)?;
    Ok(text)
}

/// The base home's config and entries: from the cache when both keys still
/// match, else read again (and cached when settled).
fn base_snapshot(base: &Path) -> Result<Arc<BaseSnapshot>, HomeError> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<BaseSnapshot>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let config_path = base.join("config.toml");
    let config_key = stat_key(&config_path)?;
    let dir_key = stat_key(base)?;
    let cached = cache.lock().expect("base cache").get(base).cloned();
    if let Some(snapshot) = cached {
        if snapshot.config_key == config_key && snapshot.dir_key == dir_key && dir_key.is_some() {
            return Ok(snapshot);
        }
    }

    let config = match config_key {
        None => None,
        Some(_) => match read_config(&config_path) {
            Ok(text) => Some(config_toml::parse_base(Some(&text))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("reading", &config_path)(e)),
        },
    };
    // The key the text we read had (a write between stat and read would
    // otherwise be cached under the older key).
    let config_key = stat_key(&config_path)?;
    for shared in SHARED_DIRS {
        let dir = base.join(shared);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
    }
    for shared in SHARED_DIRS_BEST_EFFORT {
        let _ = DirBuilder::new().mode(0o700).create(base.join(shared));
    }
    let dir_key = stat_key(base)?;
    let links = Arc::new(base_entries(base).map_err(io("listing", base))?);
    let snapshot = Arc::new(BaseSnapshot {
        config_key,
        config,
        dir_key,
        links,
        configs: RecentConfigs::default(),
    });
    let settled = config_key.map_or(true, |k| k.settled()) && dir_key.is_some_and(|k| k.settled());
    let mut cache = cache.lock().expect("base cache");
    if settled {
        cache.insert(base.to_path_buf(), snapshot.clone());
    } else {
        cache.remove(base);
    }
    Ok(snapshot)
}

/// The base home's entries a turn's home links. An error is one: a home
/// without, say, its `auth.json` link would fail later and less clearly.
fn base_entries(base: &Path) -> std::io::Result<Vec<(OsString, PathBuf)>> {
    let mut links = Vec::new();
    for entry in fs::read_dir(base)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name_str) = name.to_str() else {
            continue;
        };
        let profile = name_str.ends_with(".config.toml");
        if profile || LINKED.contains(&name_str) {
            links.push((name.clone(), entry.path()));
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn prepares_a_private_home_with_links_and_removes_it() {
        let base = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let turn_root = root.path().join("turns");
        ensure_turn_root(&turn_root).unwrap();
        fs::write(base.path().join("config.toml"), "model = \"m\"\n").unwrap();
        fs::write(base.path().join("auth.json"), "{}").unwrap();
        fs::write(base.path().join("work.config.toml"), "").unwrap();
        fs::write(base.path().join("state_5.sqlite"), "").unwrap();
        let settings = HomeSettings {
            base_home: base.path().to_path_buf(),
            turn_root: turn_root.clone(),
            idle: Default::default(),
            templates: Default::default(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({
            "prompt": "x", "output_schema": {"type": "object"}
        }))
        .unwrap();
        let home = prepare(&settings, None, "r1", &params).unwrap();
        let path = home.path().to_path_buf();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        let config = path.join("config.toml");
        assert_eq!(fs::metadata(&config).unwrap().mode() & 0o777, 0o600);
        assert!(fs::read_to_string(&config)
            .unwrap()
            .starts_with("model = \"m\"\n"));
        for linked in [
            "auth.json",
            "sessions",
            "thread-writer-locks",
            "work.config.toml",
        ] {
            let target = fs::read_link(path.join(linked)).unwrap();
            assert_eq!(target, base.path().join(linked), "{linked}");
        }
        assert!(
            !path.join("state_5.sqlite").exists(),
            "never link SQLite files"
        );
        assert_eq!(
            fs::read_to_string(home.output_schema.as_ref().unwrap()).unwrap(),
            r#"{"type":"object"}"#
        );
        home.remove().unwrap();
        assert!(!path.exists());
        assert!(
            base.path().join("auth.json").exists(),
            "links removed, targets kept"
        );
        assert!(base.path().join("sessions").is_dir());
    }

    #[test]
    fn prefill_makes_a_home_per_turn_up_to_what_the_pool_keeps() {
        let base = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::write(base.path().join("auth.json"), "{}").unwrap();
        let settings = HomeSettings {
            base_home: base.path().to_path_buf(),
            turn_root: root.path().to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        };
        prefill(&settings, 3);
        assert_eq!(settings.idle.len(), 3);
        let kept = crate::home_pool::IDLE_MAX;
        prefill(&settings, kept + 10);
        assert_eq!(settings.idle.len(), kept, "as many as the pool keeps");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), kept);
        let links = base_snapshot(base.path()).unwrap().links.clone();
        let home = settings.idle.take(&links).unwrap();
        assert!(fs::read_link(home.join("auth.json")).is_ok());
        settings.idle.give_back(home, links);
        settings.idle.clear();
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_panicking_turn_still_removes_its_home() {
        let root = tempfile::tempdir().unwrap();
        let settings = HomeSettings {
            base_home: root.path().join("home"),
            turn_root: root.path().to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let mut seen = None;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let home = prepare(&settings, None, "r1", &params).unwrap();
            seen = Some(home.path().to_path_buf());
            panic!("a bug in the turn");
        }));
        assert!(result.is_err());
        let seen = seen.unwrap();
        assert!(!seen.exists(), "{} survived the panic", seen.display());
    }

    #[test]
    fn a_changed_base_config_is_seen_by_the_next_turn() {
        let base = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let settings = HomeSettings {
            base_home: base.path().to_path_buf(),
            turn_root: root.path().to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let config_of = |settings: &HomeSettings| {
            let home = prepare(settings, None, "r1", &params).unwrap();
            let text = fs::read_to_string(home.path().join("config.toml")).unwrap();
            let links: Vec<String> = fs::read_dir(home.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_type().unwrap().is_symlink())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            (text, links)
        };
        fs::write(base.path().join("config.toml"), "model = \"a\"\n").unwrap();
        assert!(config_of(&settings).0.starts_with("model = \"a\"\n"));
        // Same size, same second: still seen.
        fs::write(base.path().join("config.toml"), "model = \"b\"\n").unwrap();
        assert!(config_of(&settings).0.starts_with("model = \"b\"\n"));
        fs::write(base.path().join("auth.json"), "{}").unwrap();
        assert!(config_of(&settings).1.contains(&"auth.json".to_owned()));
        fs::remove_file(base.path().join("auth.json")).unwrap();
        assert!(!config_of(&settings).1.contains(&"auth.json".to_owned()));
        fs::remove_file(base.path().join("config.toml")).unwrap();
        assert!(config_of(&settings).0.is_empty());
    }

    #[test]
    fn a_settled_base_is_cached_and_revalidated() {
        let base = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::write(base.path().join("config.toml"), "model = \"old\"\n").unwrap();
        fs::create_dir(base.path().join("sessions")).unwrap();
        fs::create_dir(base.path().join("thread-writer-locks")).unwrap();
        fs::create_dir(base.path().join("skills")).unwrap();
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        let first = base_snapshot(base.path()).unwrap();
        let second = base_snapshot(base.path()).unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "a settled base is served from the cache"
        );
        fs::write(base.path().join("config.toml"), "model = \"new\"\n").unwrap();
        let third = base_snapshot(base.path()).unwrap();
        assert!(third.config.as_ref().unwrap().to_string().contains("new"));
        let settings = HomeSettings {
            base_home: base.path().to_path_buf(),
            turn_root: root.path().to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let home = prepare(&settings, None, "r1", &params).unwrap();
        let path = home.path().to_path_buf();
        // codex leaves files of its own: they go too.
        fs::create_dir_all(path.join("tmp/arg0")).unwrap();
        fs::write(path.join("state_5.sqlite"), "x").unwrap();
        home.remove().unwrap();
        assert!(!path.exists());
        assert!(base.path().join("sessions").is_dir());
    }

    /// A stand-in codex for the database templates: checks its argv and
    /// environment, logs each run to `runs`, and creates databases as codex
    /// does: every one (thread history too) and a rollout for a new thread,
    /// all but the thread-history one for `resume` of the nil thread.
    /// `delete --force` of its thread removes the rollout, unless
    /// `delete_works` is false (an older codex without `delete`).
    fn template_codex(dir: &Path, delete_works: bool) -> (CodexBin, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let codex = dir.join("codex");
        let runs = dir.join("runs");
        let delete = if delete_works {
            "rm \"$CODEX_HOME/sessions/2026/11/21/rollout-t-7.jsonl\"; exit 0"
        } else {
            "exit 2"
        };
        let script = format!(
            r#"#!/bin/sh
[ -z "$SECRET" ] || exit 4
dbs() {{ printf db > "$CODEX_HOME/state_9.sqlite"; printf wal > "$CODEX_HOME/state_9.sqlite-wal"
  printf goals > "$CODEX_HOME/goals_1.sqlite"; printf x > "$CODEX_HOME/logs_2.sqlite"; }}
case "$1 $2 $3 $4 $5" in
"exec --json --skip-git-repo-check resume 00000000-0000-0000-0000-000000000000")
  echo resume >> {runs}; dbs; exit 1;;
"exec --json --skip-git-repo-check - ")
  grep -q CODEX_RUNNER_TEMPLATE_NO_KEY "$CODEX_HOME/config.toml" || exit 5
  echo exec >> {runs}; dbs; printf history > "$CODEX_HOME/thread_history_1.sqlite"
  mkdir -p "$CODEX_HOME/sessions/2026/11/21"; printf r > "$CODEX_HOME/sessions/2026/11/21/rollout-t-7.jsonl"
  echo '{{"type":"thread.started","thread_id":"t-7"}}'
  echo '{{"type":"turn.failed","error":{{"message":"no key"}}}}'
  exit 1;;
"delete --force t-7  ")
  echo delete >> {runs}; {delete};;
esac
exit 3
"#,
            runs = runs.display()
        );
        fs::write(&codex, script).unwrap();
        fs::set_permissions(&codex, fs::Permissions::from_mode(0o755)).unwrap();
        (CodexBin::plain(codex), runs)
    }

    /// Prepares homes until one has the templates; that home and a second.
    fn homes_with_templates(dir: &Path, bin: &CodexBin) -> (TurnHome, TurnHome, PathBuf) {
        let root = dir.join("turns");
        fs::create_dir_all(&root).unwrap();
        let settings = HomeSettings {
            base_home: dir.join("home"),
            turn_root: root.clone(),
            idle: Default::default(),
            templates: DbTemplates::building(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let home = loop {
            let home = prepare(&settings, Some(bin), "r1", &params).unwrap();
            if home.path().join("state_9.sqlite").exists() {
                break home;
            }
            assert!(std::time::Instant::now() < deadline, "no template");
            std::thread::sleep(Duration::from_millis(20));
        };
        let again = prepare(&settings, Some(bin), "r2", &params).unwrap();
        (home, again, root)
    }

    #[test]
    fn database_templates_are_built_once_and_copied_into_each_home() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, runs) = template_codex(dir.path(), true);
        let (home, again, root) = homes_with_templates(dir.path(), &bin);
        let read = |name: &str| fs::read(home.path().join(name)).unwrap();
        assert_eq!(read("state_9.sqlite"), b"db");
        assert_eq!(read("state_9.sqlite-wal"), b"wal");
        assert_eq!(read("goals_1.sqlite"), b"goals");
        assert_eq!(read("thread_history_1.sqlite"), b"history");
        assert_eq!(read("logs_2.sqlite"), b"x");
        assert!(again.path().join("thread_history_1.sqlite").exists());
        assert_eq!(
            fs::read_to_string(&runs).unwrap(),
            "exec\ndelete\n",
            "built once, by a thread made and deleted"
        );
        drop((home, again));
        let left: Vec<_> = fs::read_dir(&root).unwrap().flatten().collect();
        assert!(
            left.is_empty(),
            "turn homes removed, no scratch dir in the turn root: {left:?}"
        );
    }

    #[test]
    fn without_codex_delete_the_templates_lack_only_the_thread_history() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, runs) = template_codex(dir.path(), false);
        let (home, again, _) = homes_with_templates(dir.path(), &bin);
        assert_eq!(fs::read(home.path().join("state_9.sqlite")).unwrap(), b"db");
        assert!(!home.path().join("thread_history_1.sqlite").exists());
        assert!(again.path().join("state_9.sqlite").exists());
        assert_eq!(
            fs::read_to_string(&runs).unwrap(),
            "exec\ndelete\nresume\n",
            "the nil-thread recipe after the failed delete"
        );
    }

    /// A FIFO never written to would block a plain read forever: the
    /// daemon's start (its homes are made before it reads requests) and
    /// every turn with it.
    #[test]
    fn a_base_config_that_is_no_regular_file_is_an_error_not_a_hang() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("home");
        fs::create_dir(&base).unwrap();
        let fifo = std::ffi::CString::new(
            base.join("config.toml")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let settings = HomeSettings {
            base_home: base,
            turn_root: root.path().to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let params: RunParams =
                serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
            let _ = tx.send(
                prepare(&settings, None, "r1", &params)
                    .map(|_| ())
                    .map_err(|e| crate::diag::chain(&e)),
            );
        });
        let result = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("preparing a home hung on the FIFO");
        let error = result.expect_err("a FIFO is no config");
        assert!(error.contains("config.toml: not a regular file"), "{error}");
    }

    #[test]
    fn a_missing_base_home_is_created_for_sessions() {
        let root = tempfile::tempdir().unwrap();
        let settings = HomeSettings {
            base_home: root.path().join("nonexistent-home"),
            turn_root: root.path().to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let home = prepare(&settings, None, "r1", &params).unwrap();
        assert!(home.path().join("sessions").exists());
        assert!(fs::read_to_string(home.path().join("config.toml"))
            .unwrap()
            .is_empty());
    }
}
