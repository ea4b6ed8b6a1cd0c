//! Shared by the client's integration tests: the real daemon and the fake
//! codex, a scratch home per daemon, and timeouts on every wait.
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use codex_runner_client::{RunParams, Runner, RunnerBuilder};

/// The longest any single wait may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon and the fake codex, as (`codex-runner`, `fake-codex`).
///
/// `cargo test` builds only the binaries of the package under test, so they
/// are built here (once per test process) with the same command as
/// `scripts/demo`; when they are up to date that takes well under a second,
/// and a stale binary is never tested.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = std::process::Command::new(cargo)
            .current_dir(repo_root())
            .args(["build", "--quiet", "--message-format=json"])
            .args(["-p", "codex-runner", "-p", "fake-codex"])
            .args(["--bin", "codex-runner", "--bin", "fake-codex"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(output.status.success(), "cargo build of the daemon failed");
        let exe = |name: &str| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| m["target"]["name"] == name)
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .unwrap_or_else(|| panic!("cargo reported no {name} executable"))
        };
        (exe("codex-runner"), exe("fake-codex"))
    })
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A scratch base CODEX_HOME and turn dir, removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The daemon's flags for the fake codex and this scratch dir.
    pub fn daemon_args(&self) -> Vec<String> {
        let (_, fake) = binaries();
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        vec![
            format!("--codex-bin={}", fake.display()),
            format!("--codex-home={}", home.display()),
            format!("--turn-dir={}", self.dir.path().join("turns").display()),
            "--kill-grace=1".into(),
        ]
    }

    /// A runner builder for the daemon with the fake codex.
    pub fn builder(&self) -> RunnerBuilder {
        Runner::builder(&binaries().0)
            .args(self.daemon_args())
            .env("RUST_LOG", "warn")
            .env_remove("FAKE_CODEX_SCENARIO")
            .forward_logs(false)
    }
}

/// Params with `prompt` and, if given, the fake codex scenario and knobs.
pub fn params(prompt: &str, env: &[(&str, &str)]) -> RunParams {
    RunParams {
        prompt: Some(prompt.into()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..RunParams::default()
    }
}

/// Awaits `future`, failing the test after [`TIMEOUT`].
pub async fn within<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
