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
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Idle homes kept, at most (as many as idle turn cgroups).
pub const IDLE_MAX: usize = 256;

/// The entries a home links: (name, target in the base home).
pub type Links = Arc<Vec<(OsString, PathBuf)>>;

/// Idle turn homes, each with the links it holds.
#[derive(Debug, Default)]
pub struct IdleHomes {
    homes: Mutex<Vec<(PathBuf, Links)>>,
    /// Homes that could not be removed when due (say, out of descriptors
    /// while many turns ran), tried again at exit.
    unremoved: Mutex<Vec<PathBuf>>,
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
            self.remove(path);
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
        self.remove(path);
    }

    /// Removes a home no turn uses any more, now or, failing that, at exit.
    pub fn remove(&self, path: PathBuf) {
        if let Err(e) = remove_dir(&path) {
            tracing::debug!(path = %path.display(), error = %e, "cannot remove a turn home yet; trying again at exit");
            self.unremoved.lock().unwrap().push(path);
        }
    }

    /// Removes every idle home, and those [`remove`](Self::remove) could
    /// not (at exit).
    pub fn clear(&self) {
        let homes: Vec<PathBuf> = self
            .homes
            .lock()
            .unwrap()
            .drain(..)
            .map(|(path, _)| path)
            .collect();
        let unremoved = std::mem::take(&mut *self.unremoved.lock().unwrap());
        for path in homes.into_iter().chain(unremoved) {
            if let Err(e) = remove_dir(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a turn home");
            }
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

fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes everything in `dir` but the symlinks named in `links`. `true`
/// if the dir is as a new home would be before its files are written:
/// ours, 0700, and every one of those links there, pointing at its target.
///
/// Works through one descriptor of the dir (`fstat`, `readlinkat`,
/// `unlinkat`), opened without following a symlink: every file and link is
/// looked up in the dir itself, not by its path from `/` again (a turn's
/// end runs this for every turn; the path lookups were a third of its
/// cost). A subdirectory codex made is removed by path, with std's
/// `remove_dir_all`, which does not follow symlinks inside it.
pub fn empty_but_links(dir: &Path, links: &Links) -> io::Result<bool> {
    let Some(mut entries) = Dir::open_private(dir)? else {
        return Ok(false);
    };
    let mut kept = 0;
    let (mut name_buf, mut target_buf) = (Vec::new(), Vec::new());
    while let Some(kind) = entries.next_entry(&mut name_buf)? {
        let name = std::ffi::CStr::from_bytes_with_nul(&name_buf).expect("one NUL, at the end");
        let name_bytes = name.to_bytes();
        let link = links
            .iter()
            .find(|(link, _)| link.as_bytes() == name_bytes)
            .map(|l| &l.1);
        match (kind, link) {
            (Kind::Symlink, Some(target)) => {
                if !entries.link_points_at(name, target, &mut target_buf)? {
                    return Ok(false);
                }
                kept += 1;
            }
            (Kind::Dir, _) => {
                fs::remove_dir_all(dir.join(std::ffi::OsStr::from_bytes(name_bytes)))?
            }
            _ => entries.unlink(name)?,
        }
    }
    Ok(kept == links.len())
}

/// What an entry is, as far as a home's emptying needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Symlink,
    Dir,
    Other,
}

/// An open directory stream (`fdopendir`) and its descriptor.
struct Dir {
    stream: std::ptr::NonNull<libc::DIR>,
}

impl Dir {
    /// Opens `path` (not following a symlink) if it is a directory of ours
    /// with mode 0700; `None` if it is anything else.
    fn open_private(path: &Path) -> io::Result<Option<Dir>> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid NUL-terminated path; the fd is owned below.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // A symlink or a non-directory where the home was: not ours.
            return match e.raw_os_error() {
                Some(libc::ELOOP | libc::ENOTDIR) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: `fd` is open and ours; fdopendir takes it over on success.
        let stream = unsafe { libc::fdopendir(fd) };
        let Some(stream) = std::ptr::NonNull::new(stream) else {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so the fd is still ours to close.
            unsafe { libc::close(fd) };
            return Err(e);
        };
        let dir = Dir { stream };
        // SAFETY: an all-zero stat is a valid value; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the dir's fd is open; `st` is writable.
        if unsafe { libc::fstat(dir.fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let ours = st.st_uid == euid() && st.st_mode & 0o777 == 0o700;
        Ok(ours.then_some(dir))
    }

    fn fd(&self) -> libc::c_int {
        // SAFETY: the stream is open until drop.
        unsafe { libc::dirfd(self.stream.as_ptr()) }
    }

    /// The kind of the next entry other than `.` and `..`, its name copied
    /// into `name` (NUL-terminated): readdir's own copy lasts only until
    /// the next call.
    fn next_entry(&mut self, name: &mut Vec<u8>) -> io::Result<Option<Kind>> {
        loop {
            // readdir reports an error only through errno.
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: the stream is open.
            let entry = unsafe { libc::readdir64(self.stream.as_ptr()) };
            if entry.is_null() {
                return match io::Error::last_os_error() {
                    e if e.raw_os_error() == Some(0) => Ok(None),
                    e => Err(e),
                };
            }
            // SAFETY: readdir returned an entry, valid until the next call;
            // its name is NUL-terminated.
            let (entry_name, d_type) = unsafe {
                let entry = &*entry;
                (
                    std::ffi::CStr::from_ptr(entry.d_name.as_ptr()),
                    entry.d_type,
                )
            };
            if matches!(entry_name.to_bytes(), b"." | b"..") {
                continue;
            }
            name.clear();
            name.extend_from_slice(entry_name.to_bytes_with_nul());
            let kind = match d_type {
                libc::DT_LNK => Kind::Symlink,
                libc::DT_DIR => Kind::Dir,
                libc::DT_UNKNOWN => self.kind_of(entry_name)?,
                _ => Kind::Other,
            };
            return Ok(Some(kind));
        }
    }

    /// For file systems whose entries carry no type.
    fn kind_of(&self, name: &std::ffi::CStr) -> io::Result<Kind> {
        // SAFETY: an all-zero stat is a valid value; fstatat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: open dir fd, NUL-terminated name, writable `st`.
        let r =
            unsafe { libc::fstatat(self.fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        })
    }

    /// Whether the symlink `name` points at `target` exactly.
    fn link_points_at(
        &self,
        name: &std::ffi::CStr,
        target: &Path,
        buf: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let want = target.as_os_str().as_bytes();
        // One byte more than the target: a longer link does not fit and
        // so cannot match.
        buf.clear();
        buf.reserve(want.len() + 1);
        // SAFETY: open dir fd, NUL-terminated name, `buf` has that capacity.
        let n = unsafe {
            libc::readlinkat(
                self.fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                want.len() + 1,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: readlinkat wrote `n` bytes.
        unsafe { buf.set_len(n as usize) };
        Ok(buf.as_slice() == want)
    }

    fn unlink(&self, name: &std::ffi::CStr) -> io::Result<()> {
        // SAFETY: open dir fd, NUL-terminated name.
        if unsafe { libc::unlinkat(self.fd(), name.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed once, here.
        unsafe { libc::closedir(self.stream.as_ptr()) };
    }
}

/// The daemon's effective uid (asked once).
fn euid() -> libc::uid_t {
    static EUID: std::sync::OnceLock<libc::uid_t> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions.
    *EUID.get_or_init(|| unsafe { libc::geteuid() })
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
            templates: Default::default(),
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
    fn a_link_whose_target_only_starts_alike_is_not_kept() {
        let (base, _root, settings) = setup();
        let home = prepare(&settings, None, "r1", &params("x")).unwrap();
        let path = home.path().to_path_buf();
        let mut target = base.path().join("auth.json").into_os_string();
        target.push(".theirs");
        fs::write(&target, "{}").unwrap();
        fs::remove_file(path.join("auth.json")).unwrap();
        std::os::unix::fs::symlink(&target, path.join("auth.json")).unwrap();
        home.recycle(&settings.idle).unwrap();
        assert!(settings.idle.is_empty());
        assert!(!path.exists());
        assert!(
            Path::new(&target).exists(),
            "a link's target is never removed"
        );
    }

    #[test]
    fn a_home_replaced_by_a_symlink_is_not_followed() {
        let (_base, root, settings) = setup();
        let home = prepare(&settings, None, "r1", &params("x")).unwrap();
        let path = home.path().to_path_buf();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::set_permissions(
            &elsewhere,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        fs::write(elsewhere.join("keep.txt"), "mine").unwrap();
        fs::rename(&path, root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        home.recycle(&settings.idle).unwrap();
        assert!(settings.idle.is_empty());
        assert!(fs::symlink_metadata(&path).is_err(), "the link is removed");
        assert_eq!(
            names(&elsewhere),
            ["keep.txt"],
            "nothing removed through the link"
        );
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
