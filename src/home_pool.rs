//! Homes of finished turns, emptied but for their links, kept for later turns.
//!
//! A new home costs a `mkdir` and one `symlink` per entry shared from the
//! base home, and its removal as many `unlink`s and a `rmdir`: on tmpfs,
//! inode allocation and release are most of a turn's file work (about 10%
//! of the daemon's CPU with 64 concurrent turns). The links are the same
//! for every turn while the base home keeps its entries, so a home whose
//! turn is over is emptied of everything else (the turn's `config.toml`, its
//! output schema, whatever codex wrote) and the next turn writes its own
//! files into it.
//!
//! Only a home nothing can still write to is kept: its turn's cgroup was
//! seen empty (see `turn.rs`). And only one that is as a new home would be:
//! still ours and 0700, every link there and pointing where we made it
//! point. A turn's codex (or a command it ran) may have changed any of
//! that, say pointed `auth.json` at a file of its own for the next turn to
//! read its login from or write a refreshed token to; such a home, or one
//! whose links no longer match the base home's entries, is removed instead.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Idle homes kept, at most (as many as idle turn cgroups).
const IDLE_MAX: usize = 256;

/// The entries a home links: (name, target in the base home).
pub type Links = Arc<Vec<(OsString, PathBuf)>>;

/// Idle turn homes, each with the links it holds.
#[derive(Debug, Default)]
pub struct IdleHomes {
    homes: Mutex<Vec<(PathBuf, Links)>>,
}

impl IdleHomes {
    /// An idle home holding exactly `links`, if one is kept. Homes with
    /// other links (the base home changed) are removed on the way.
    pub fn take(&self, links: &Links) -> Option<PathBuf> {
        loop {
            let (path, held) = self.homes.lock().unwrap().pop()?;
            if Arc::ptr_eq(&held, links) || held == *links {
                return Some(path);
            }
            remove_dir(&path);
        }
    }

    /// Keeps `path`, emptied but for `links` (see [`empty_but_links`]), for
    /// a later turn; removes it if there is no room.
    pub fn give_back(&self, path: PathBuf, links: Links) {
        let mut homes = self.homes.lock().unwrap();
        if homes.len() < IDLE_MAX {
            homes.push((path, links));
            return;
        }
        drop(homes);
        remove_dir(&path);
    }

    /// Removes every idle home (at exit).
    pub fn clear(&self) {
        for (path, _) in self.homes.lock().unwrap().drain(..) {
            remove_dir(&path);
        }
    }

    /// How many homes are kept (for tests).
    pub fn len(&self) -> usize {
        self.homes.lock().unwrap().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn remove_dir(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an idle turn home");
        }
    }
}

/// Removes everything in `dir` but the symlinks named in `links`. `true`
/// if the dir is as a new home would be before its files are written:
/// ours, 0700, and every one of those links there, pointing at its target.
pub fn empty_but_links(dir: &Path, links: &Links) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let ours = meta.is_dir() && meta.uid() == unsafe { libc::geteuid() };
    if !ours || meta.mode() & 0o777 != 0o700 {
        return Ok(false);
    }
    let mut kept = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name();
        let target = links.iter().find(|(link, _)| *link == name).map(|l| &l.1);
        if let (true, Some(target)) = (kind.is_symlink(), target) {
            if fs::read_link(entry.path())? != *target {
                return Ok(false);
            }
            kept += 1;
        } else if kind.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(kept == links.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codex_home::{ensure_turn_root, prepare, HomeSettings};
    use runner_protocol::RunParams;

    fn params(prompt: &str) -> RunParams {
        serde_json::from_value(serde_json::json!({"prompt": prompt})).unwrap()
    }

    /// A base home with an `auth.json` and a turn root (in `root/turns`).
    fn setup() -> (tempfile::TempDir, tempfile::TempDir, HomeSettings) {
        let base = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let turn_root = root.path().join("turns");
        ensure_turn_root(&turn_root).unwrap();
        fs::write(base.path().join("auth.json"), "{}").unwrap();
        let settings = HomeSettings {
            base_home: base.path().to_path_buf(),
            turn_root,
            idle: Default::default(),
        };
        (base, root, settings)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_recycled_home_keeps_only_its_links_and_serves_the_next_turn() {
        let (base, _root, settings) = setup();
        let home = prepare(&settings, None, "r1", &params("x")).unwrap();
        let path = home.path().to_path_buf();
        // What codex leaves: files, a dir with files in it.
        fs::write(path.join("state_5.sqlite"), "db").unwrap();
        fs::create_dir_all(path.join("tmp/deep")).unwrap();
        fs::write(path.join("tmp/deep/f"), "x").unwrap();
        home.recycle(&settings.idle).unwrap();
        assert_eq!(settings.idle.len(), 1);
        assert_eq!(
            names(&path),
            ["auth.json", "sessions", "skills", "thread-writer-locks"],
            "the config (secrets) and codex's files are gone, the links stay"
        );
        assert!(base.path().join("auth.json").exists(), "targets untouched");

        let second: RunParams = serde_json::from_value(serde_json::json!({
            "prompt": "y", "config": {"marker_of_r2": true}
        }))
        .unwrap();
        let again = prepare(&settings, None, "r2", &second).unwrap();
        assert_eq!(again.path(), path, "the idle home is reused");
        assert!(settings.idle.is_empty());
        assert!(fs::read_to_string(path.join("config.toml"))
            .unwrap()
            .contains("marker_of_r2"));
        assert_eq!(
            fs::read_link(path.join("auth.json")).unwrap(),
            base.path().join("auth.json")
        );
        again.recycle(&settings.idle).unwrap();

        // The base home gains an entry to link: the kept home lacks it, so
        // it is removed and the next turn gets a new one with the link.
        fs::write(base.path().join("AGENTS.md"), "be brief").unwrap();
        let fresh = prepare(&settings, None, "r3", &params("z")).unwrap();
        assert_ne!(fresh.path(), path);
        assert!(!path.exists(), "the stale idle home is removed");
        assert!(fresh.path().join("AGENTS.md").exists());
        settings.idle.clear();
        fresh.remove().unwrap();
        assert!(names(&settings.turn_root).is_empty());
    }

    #[test]
    fn a_home_with_a_link_pointed_elsewhere_or_opened_up_is_removed_not_kept() {
        let (_base, root, settings) = setup();
        // A link pointed at a file of the turn's own choosing.
        let home = prepare(&settings, None, "r1", &params("x")).unwrap();
        let path = home.path().to_path_buf();
        let planted = root.path().join("planted.json");
        fs::write(&planted, "{\"token\":\"theirs\"}").unwrap();
        fs::remove_file(path.join("auth.json")).unwrap();
        std::os::unix::fs::symlink(&planted, path.join("auth.json")).unwrap();
        home.recycle(&settings.idle).unwrap();
        assert!(settings.idle.is_empty());
        assert!(!path.exists());
        assert!(planted.exists(), "a link's target is never removed");
        // The home's mode widened.
        let home = prepare(&settings, None, "r2", &params("x")).unwrap();
        let path = home.path().to_path_buf();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        home.recycle(&settings.idle).unwrap();
        assert!(settings.idle.is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn a_home_that_lost_a_link_is_removed_not_kept() {
        let (base, _root, settings) = setup();
        let home = prepare(&settings, None, "r1", &params("x")).unwrap();
        let path = home.path().to_path_buf();
        // Codex replaced the link with a file of its own (an atomic write).
        fs::remove_file(path.join("auth.json")).unwrap();
        fs::write(path.join("auth.json"), "{\"refreshed\":1}").unwrap();
        home.recycle(&settings.idle).unwrap();
        assert!(settings.idle.is_empty());
        assert!(!path.exists());
        assert_eq!(
            fs::read_to_string(base.path().join("auth.json")).unwrap(),
            "{}"
        );
    }
}
