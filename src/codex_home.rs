//! The per-turn CODEX_HOME: a private directory (0700) holding the turn's
//! synthesized `config.toml` (0600) and links to what login and resume need
//! from the user's base home. Removed when the [`TurnHome`] is dropped,
//! however the turn ends.
//!
//! What is linked, and why: `auth.json` (login; codex writes through the
//! link), `sessions/` and `thread-writer-locks/` (so a thread started in one
//! turn can be resumed in the next, and two homes never write one rollout at
//! once), profile files `*.config.toml` (`--profile`), the user's
//! instructions, prompts, rules and skills, `.env` and `installation_id`.
//! Never SQLite files: SQLite puts its -wal/-shm next to the path it opened,
//! so a linked database would be shared unsafely; codex falls back to a file
//! search under `sessions/` for resume.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use runner_protocol::RunParams;

use crate::config_toml::{self, ConfigError};

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
];

/// Base-home directories created if missing: resume only works if the
/// turn's rollout outlives the turn's home.
const SHARED_DIRS: &[&str] = &["sessions", "thread-writer-locks"];

/// Where homes come from.
#[derive(Debug, Clone)]
pub struct HomeSettings {
    /// The user's CODEX_HOME (may not exist).
    pub base_home: PathBuf,
    /// Where per-turn dirs are created (a private dir of ours).
    pub turn_root: PathBuf,
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
    dir: tempfile::TempDir,
    /// The output schema file, when the request has one.
    pub output_schema: Option<PathBuf>,
}

impl TurnHome {
    /// The directory to export as CODEX_HOME.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the directory now, reporting failure.
    pub fn remove(self) -> std::io::Result<()> {
        self.dir.close()
    }
}

/// Creates the turn root (0700) if needed and makes sure it is ours and
/// private: it may live in a world-writable place like /dev/shm.
pub fn ensure_turn_root(root: &Path) -> Result<(), HomeError> {
    use std::os::unix::fs::MetadataExt;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io("creating", root))?;
    let meta = fs::symlink_metadata(root).map_err(io("inspecting", root))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid {
        return Err(HomeError::Io {
            what: "refusing a turn root that is not a directory owned by us:",
            path: root.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(io("restricting", root))?;
    }
    Ok(())
}

/// Removes per-turn dirs left by daemons that died without cleaning up
/// (SIGKILL, power loss): they hold config files with secrets. A dir is ours
/// by name, `turn-<pid>-…`, and stale when that pid is not a live runner.
pub fn clean_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("turn-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if crate::containment::is_live_runner(pid) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed a stale turn dir of a dead codex-runner")
            }
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a stale turn dir")
            }
        }
    }
}

/// Prepares the home of one turn.
pub fn prepare(
    settings: &HomeSettings,
    run_id: &str,
    params: &RunParams,
) -> Result<TurnHome, HomeError> {
    let base = &settings.base_home;
    let base_text = match fs::read_to_string(base.join("config.toml")) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading", &base.join("config.toml"))(e)),
    };
    let mut doc = config_toml::parse_base(base_text.as_deref())?;
    config_toml::synthesize(&mut doc, run_id, params)?;

    for shared in SHARED_DIRS {
        let dir = base.join(shared);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
    }

    // Private from the first instant: created 0700, not chmod-ed after.
    let dir = tempfile::Builder::new()
        .prefix(&format!("turn-{}-", std::process::id()))
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(&settings.turn_root)
        .map_err(io("creating a dir in", &settings.turn_root))?;
    let home = dir.path();

    write_private(&home.join("config.toml"), doc.to_string().as_bytes())?;
    let output_schema = match &params.output_schema {
        Some(schema) => {
            let path = home.join("output-schema.json");
            let bytes = serde_json::to_vec(schema).expect("a JSON object serialises");
            write_private(&path, &bytes)?;
            Some(path)
        }
        None => None,
    };
    link_base_entries(base, home)?;
    Ok(TurnHome { dir, output_schema })
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

fn link_base_entries(base: &Path, home: &Path) -> Result<(), HomeError> {
    let Ok(entries) = fs::read_dir(base) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name_str) = name.to_str() else {
            continue;
        };
        let profile = name_str.ends_with(".config.toml");
        if !(profile || LINKED.contains(&name_str)) {
            continue;
        }
        let link = home.join(&name);
        std::os::unix::fs::symlink(entry.path(), &link).map_err(io("linking", &link))?;
    }
    Ok(())
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
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({
            "prompt": "x", "output_schema": {"type": "object"}
        }))
        .unwrap();
        let home = prepare(&settings, "r1", &params).unwrap();
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
    fn a_panicking_turn_still_removes_its_home() {
        let root = tempfile::tempdir().unwrap();
        let settings = HomeSettings {
            base_home: root.path().join("home"),
            turn_root: root.path().to_path_buf(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let mut seen = None;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let home = prepare(&settings, "r1", &params).unwrap();
            seen = Some(home.path().to_path_buf());
            panic!("a bug in the turn");
        }));
        assert!(result.is_err());
        let seen = seen.unwrap();
        assert!(!seen.exists(), "{} survived the panic", seen.display());
    }

    #[test]
    fn a_missing_base_home_is_created_for_sessions() {
        let root = tempfile::tempdir().unwrap();
        let settings = HomeSettings {
            base_home: root.path().join("nonexistent-home"),
            turn_root: root.path().to_path_buf(),
        };
        let params: RunParams = serde_json::from_value(serde_json::json!({"prompt": "x"})).unwrap();
        let home = prepare(&settings, "r1", &params).unwrap();
        assert!(home.path().join("sessions").exists());
        assert!(fs::read_to_string(home.path().join("config.toml"))
            .unwrap()
            .is_empty());
    }
}
