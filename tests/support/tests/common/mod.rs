//! Runs the real `codex exec --json` against the mock model, with every await
//! under a timeout.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use codex_runner_test_support::{find_real_codex, real_codex_path_dir};
use serde_json::Value;
use tempfile::TempDir;
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
    time::timeout,
};

pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// The real codex binary, or `None` with a loud message when it is absent and
/// `CI` is unset; with `CI` set, absence fails the test.
pub fn real_codex() -> Option<PathBuf> {
    if let Some(bin) = find_real_codex() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the real codex is missing: run scripts/install-codex or set CODEX_REAL_BIN");
    }
    eprintln!("\n!!!!!!!! SKIPPED: real codex not found; run scripts/install-codex (or set CODEX_REAL_BIN) !!!!!!!!\n");
    None
}

/// A TOML basic string (JSON string escapes are valid TOML).
pub fn toml_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// A CODEX_HOME with a config.toml, and a working directory. Both live under
/// the target dir: a CODEX_HOME under /tmp makes codex print a warning.
pub struct Codex {
    pub bin: PathBuf,
    pub home: TempDir,
    pub work: TempDir,
}

impl Codex {
    pub fn new(bin: PathBuf, config_toml: &str) -> Self {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let home = tempfile::Builder::new()
            .prefix("codex-home-")
            .tempdir_in(tmp)
            .unwrap();
        let work = tempfile::Builder::new()
            .prefix("codex-work-")
            .tempdir_in(tmp)
            .unwrap();
        std::fs::write(home.path().join("config.toml"), config_toml).unwrap();
        Self { bin, home, work }
    }

    /// `codex exec --json --skip-git-repo-check ARGS...` with `prompt` on
    /// stdin (ARGS should end with `-`), stdin then closed. Killed on drop.
    pub async fn spawn(&self, args: &[&str], prompt: &str) -> Child {
        let mut path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(dir) = real_codex_path_dir(&self.bin) {
            path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&path)))
                .unwrap();
        }
        let mut child = Command::new(&self.bin)
            .args(["exec", "--json", "--skip-git-repo-check"])
            .args(args)
            .current_dir(self.work.path())
            .env("CODEX_HOME", self.home.path())
            .env("MOCK_API_KEY", "test-key")
            .env("RUST_BACKTRACE", "0")
            .env("PATH", path)
            .env_remove("CODEX_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let mut stdin = child.stdin.take().unwrap();
        match timeout(EXEC_TIMEOUT, stdin.write_all(prompt.as_bytes()))
            .await
            .expect("write prompt: timeout")
        {
            Ok(()) => {}
            // Codex exited before it read its prompt: its status and stderr,
            // which the caller's assertions show, say why.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("write prompt: {e}"),
        }
        child
    }

    /// [`Codex::spawn`], then wait (at most [`EXEC_TIMEOUT`]) for its exit.
    pub async fn exec(&self, args: &[&str], prompt: &str) -> Run {
        let child = self.spawn(args, prompt).await;
        let output = timeout(EXEC_TIMEOUT, child.wait_with_output())
            .await
            .expect("codex exec timed out")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        Run {
            events: stdout
                .lines()
                .map(|line| {
                    serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("non-JSON stdout line {line:?}: {e}"))
                })
                .collect(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            code: output.status.code(),
        }
    }
}

/// One finished `codex exec`.
#[derive(Debug)]
pub struct Run {
    pub events: Vec<Value>,
    pub stderr: String,
    pub code: Option<i32>,
}

impl Run {
    pub fn types(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| e["type"].as_str())
            .collect()
    }

    pub fn thread_id(&self) -> &str {
        self.events
            .iter()
            .find(|e| e["type"] == "thread.started")
            .and_then(|e| e["thread_id"].as_str())
            .unwrap_or_else(|| panic!("no thread.started: {self}"))
    }

    /// The `item.completed` items of this type.
    pub fn items(&self, kind: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == kind)
            .map(|e| &e["item"])
            .collect()
    }

    /// The single completed item of this type.
    pub fn item(&self, kind: &str) -> &Value {
        match self.items(kind).as_slice() {
            [item] => item,
            other => panic!("want one {kind} item, got {}: {self}", other.len()),
        }
    }

    /// Exit 0 and a `turn.completed` as the last event.
    pub fn assert_ok(&self) {
        assert_eq!(self.code, Some(0), "{self}");
        assert_eq!(self.types().last(), Some(&"turn.completed"), "{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "exit {:?}; events:", self.code)?;
        for event in &self.events {
            writeln!(f, "  {event}")?;
        }
        write!(f, "stderr:\n{}", self.stderr)
    }
}
