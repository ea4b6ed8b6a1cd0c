//! Finding the codex executable to spawn.
//!
//! `npm install @openai/codex` puts a Node launcher at `node_modules/.bin/codex`
//! that spawns the native binary. Signalling the launcher does not reach the
//! native process (SIGKILL to it orphans codex), and it costs a Node start per
//! turn, so we resolve the native binary it wraps and spawn that directly,
//! with the package's `pathDir` (which holds `rg`) prepended to PATH, as the
//! launcher would.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The executable a turn spawns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodexBin {
    /// The program to exec.
    pub program: PathBuf,
    /// A directory to prepend to the child's PATH (the npm package's `pathDir`).
    pub path_prepend: Option<PathBuf>,
    /// The npm launcher this was resolved from, if any.
    pub launcher: Option<PathBuf>,
}

/// Why the npm launcher could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The program is not on PATH.
    #[error("codex executable {0:?} not found on PATH")]
    NotOnPath(OsString),
    /// A Node launcher whose native binary is missing.
    #[error("{launcher} is the npm launcher, but no native codex binary was found next to it (looked for {looked_for})")]
    NoNativeBinary {
        /// The launcher script.
        launcher: PathBuf,
        /// Where we looked.
        looked_for: String,
    },
}

impl CodexBin {
    /// Resolves `program` (a path, or a name looked up on PATH) to an
    /// absolute path: codex is not always started from the daemon's working
    /// directory (the database template build runs in a scratch dir), and a
    /// relative path would name a different file there, or none.
    pub fn resolve(program: &Path) -> Result<CodexBin, ResolveError> {
        let found = if program.components().count() > 1 {
            program.to_path_buf()
        } else {
            find_on_path(program.as_os_str())
                .ok_or_else(|| ResolveError::NotOnPath(program.as_os_str().to_owned()))?
        };
        // Lexical (symlinks kept, so a renamed link target is still seen as
        // the user named it); fails only when the working dir is gone.
        let found = std::path::absolute(&found).unwrap_or(found);
        let real = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
        if !is_node_script(&real) {
            // The native binary named directly: its package's `pathDir`
            // (with `rg`) goes on PATH all the same.
            let path_prepend = package_path_dir(&real);
            return Ok(CodexBin {
                program: found,
                path_prepend,
                launcher: None,
            });
        }
        resolve_launcher(&real)
    }

    /// `base` (a PATH) with [`CodexBin::path_prepend`] in front, if any.
    pub fn child_path(&self, base: OsString) -> OsString {
        let Some(dir) = &self.path_prepend else {
            return base;
        };
        let mut path = OsString::from(dir);
        if !base.is_empty() {
            path.push(":");
            path.push(base);
        }
        path
    }

    /// Why [`CodexBin::program`] cannot be run as it stands, if it cannot:
    /// said at start-up, so a wrong `--codex-bin` is not first seen as every
    /// run failing. Not an error: it is looked up again for every turn, so
    /// installing it later is enough.
    pub fn unrunnable(&self) -> Option<&'static str> {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(&self.program) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("it does not exist"),
            Err(_) => Some("it cannot be read"),
            Ok(m) if m.is_dir() => Some("it is a directory"),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Some("it is not executable"),
            Ok(_) => None,
        }
    }

    /// A binary used as given (tests, or when resolution is not wanted).
    pub fn plain(program: PathBuf) -> CodexBin {
        CodexBin {
            program,
            path_prepend: None,
            launcher: None,
        }
    }
}

fn find_on_path(name: &std::ffi::OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A `.js` file, or a script whose shebang names node.
fn is_node_script(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "js" || e == "mjs") {
        return true;
    }
    let mut head = [0u8; 128];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let n = file.read(&mut head).unwrap_or(0);
    let head = &head[..n];
    head.starts_with(b"#!")
        && head
            .split(|&b| b == b'\n')
            .next()
            .is_some_and(|l| l.windows(4).any(|w| w == b"node"))
}

/// The Rust target triple whose platform package npm installs here.
fn target_triple() -> Option<(&'static str, &'static str)> {
    match std::env::consts::ARCH {
        "x86_64" => Some(("x86_64-unknown-linux-musl", "codex-linux-x64")),
        "aarch64" => Some(("aarch64-unknown-linux-musl", "codex-linux-arm64")),
        _ => None,
    }
}

fn resolve_launcher(launcher: &Path) -> Result<CodexBin, ResolveError> {
    // launcher = <pkg>/bin/codex.js; the platform package is a sibling in the
    // @openai scope, or nested in <pkg>/node_modules; older versions vendored
    // the binary inside <pkg>/vendor.
    let pkg = launcher.parent().and_then(Path::parent).unwrap_or(launcher);
    let mut candidates = Vec::new();
    if let Some((triple, platform_pkg)) = target_triple() {
        if let Some(scope) = pkg.parent() {
            candidates.push(scope.join(platform_pkg).join("vendor").join(triple));
        }
        candidates.push(
            pkg.join("node_modules/@openai")
                .join(platform_pkg)
                .join("vendor")
                .join(triple),
        );
        candidates.push(pkg.join("vendor").join(triple));
    }
    for vendor in &candidates {
        if let Some(bin) = from_vendor_dir(vendor, launcher) {
            return Ok(bin);
        }
    }
    Err(ResolveError::NoNativeBinary {
        launcher: launcher.to_path_buf(),
        looked_for: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The `pathDir` of the npm package whose `codex-package.json` names
/// `native` (`<vendor>/bin/codex`) as its entrypoint, if any.
fn package_path_dir(native: &Path) -> Option<PathBuf> {
    let vendor = native.parent()?.parent()?;
    let bin = from_vendor_dir(vendor, native)?;
    let same = std::fs::canonicalize(&bin.program).ok()? == native;
    same.then_some(bin.path_prepend).flatten()
}

/// Reads `codex-package.json` (layout v1) or falls back to the older
/// `codex/codex` + `path/` layout.
fn from_vendor_dir(vendor: &Path, launcher: &Path) -> Option<CodexBin> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layout {
        entrypoint: String,
        path_dir: Option<String>,
    }
    let (program, path_dir) = match std::fs::read(vendor.join("codex-package.json")) {
        Ok(bytes) => {
            let layout: Layout = serde_json::from_slice(&bytes).ok()?;
            (
                vendor.join(layout.entrypoint),
                layout.path_dir.map(|d| vendor.join(d)),
            )
        }
        Err(_) => (vendor.join("codex/codex"), Some(vendor.join("path"))),
    };
    is_executable(&program).then(|| CodexBin {
        program,
        path_prepend: path_dir.filter(|d| d.is_dir()),
        launcher: Some(launcher.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_exec(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn resolves_the_npm_launcher_to_the_native_binary() {
        let Some((triple, platform)) = target_triple() else {
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let modules = root.path().join("node_modules");
        write_exec(
            &modules.join("@openai/codex/bin/codex.js"),
            "#!/usr/bin/env node\n",
        );
        let vendor = modules
            .join("@openai")
            .join(platform)
            .join("vendor")
            .join(triple);
        std::fs::create_dir_all(vendor.join("codex-path")).unwrap();
        std::fs::write(
            vendor.join("codex-package.json"),
            r#"{"layoutVersion":1,"entrypoint":"bin/codex","pathDir":"codex-path"}"#,
        )
        .unwrap();
        write_exec(&vendor.join("bin/codex"), "\x7fELF");
        std::fs::create_dir_all(modules.join(".bin")).unwrap();
        std::os::unix::fs::symlink("../@openai/codex/bin/codex.js", modules.join(".bin/codex"))
            .unwrap();

        let bin = CodexBin::resolve(&modules.join(".bin/codex")).unwrap();
        let vendor = vendor.canonicalize().unwrap();
        assert_eq!(bin.program, vendor.join("bin/codex"));
        assert_eq!(bin.path_prepend, Some(vendor.join("codex-path")));
        assert!(bin.launcher.is_some());

        // The native binary named directly gets its package's PATH dir too.
        let direct = CodexBin::resolve(&vendor.join("bin/codex")).unwrap();
        assert_eq!(direct.program, vendor.join("bin/codex"));
        assert_eq!(direct.path_prepend, Some(vendor.join("codex-path")));
        assert_eq!(direct.launcher, None);
    }

    #[test]
    fn a_native_binary_is_used_as_is_and_a_broken_launcher_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let native = root.path().join("codex");
        write_exec(&native, "\x7fELF");
        assert_eq!(CodexBin::resolve(&native).unwrap(), CodexBin::plain(native));
        let launcher = root.path().join("pkg/bin/codex.js");
        write_exec(&launcher, "#!/usr/bin/env node\n");
        assert!(matches!(
            CodexBin::resolve(&launcher),
            Err(ResolveError::NoNativeBinary { .. })
        ));
        assert!(matches!(
            CodexBin::resolve(Path::new("no-such-codex-binary-xyz")),
            Err(ResolveError::NotOnPath(_))
        ));
    }

    #[test]
    fn a_relative_path_is_made_absolute() {
        let root = tempfile::tempdir().unwrap();
        let native = root.path().join("codex");
        write_exec(&native, "\x7fELF");
        // The same file, named relative to the working dir (which a test
        // must not change: tests share it).
        let cwd = std::env::current_dir().unwrap();
        let mut relative = PathBuf::new();
        for _ in cwd.components().skip(1) {
            relative.push("..");
        }
        relative.push(native.strip_prefix("/").unwrap());
        assert!(relative.is_relative() && is_executable(&relative));

        let bin = CodexBin::resolve(&relative).unwrap();
        assert!(bin.program.is_absolute(), "{:?}", bin.program);
        assert_eq!(
            std::fs::canonicalize(&bin.program).unwrap(),
            std::fs::canonicalize(&native).unwrap()
        );
    }
}
