//! Test support for codex-runner: lets integration tests run the REAL Codex
//! CLI offline.
//!
//! - [`MockModel`]: a mock OpenAI Responses API (SSE) that codex talks to
//!   instead of the network; [`codex_config_toml`] points codex at it.
//! - [`McpHttpServer`]: a real streamable-HTTP MCP server (rmcp) that records
//!   the headers and `_meta` of every `tools/call`.
//! - the `mcp-stdio-probe` binary: a real stdio MCP server
//!   ([`mcp_stdio_probe_bin`] finds or builds it).
//! - [`find_real_codex`]: the native codex binary installed by
//!   `scripts/install-codex`.
//!
//! The servers run on their own runtime threads, so they work from any test
//! (async or not) and stop when dropped.
//!
//! ```ignore
//! use codex_runner_test_support::{codex_config_toml, McpHttpServer, MockModel, Reply, Script};
//!
//! let model = MockModel::start(Script::queue([
//!     Reply::mcp_tool("probe", "whoami", serde_json::json!({})), // 3 requests
//!     Reply::message("second turn"),
//! ]));
//! let mcp = McpHttpServer::start();
//! let config = codex_config_toml(&model.base_url())
//!     + &format!("[mcp_servers.probe]\nurl = \"{}\"\n", mcp.url());
//! // ... run codex with CODEX_HOME/config.toml = config and MOCK_API_KEY set ...
//! assert_eq!(mcp.calls()[0].tool, "whoami");
//! assert_eq!(model.requests()[0].prompt(), Some("..."));
//! ```

mod mcp_http;
pub mod mcp_stdio;
mod mcp_tools;
mod mock_model;
mod mock_request;
mod mock_script;
mod server;
mod sse;

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

pub use mcp_http::{McpCall, McpHttpServer};
pub use mock_model::{codex_config_toml, MockModel};
pub use mock_request::RecordedRequest;
pub use mock_script::{namespace, Reply, ReplyFn, Script};
pub use sse::{INPUT_TOKENS, OUTPUT_TOKENS};

/// The workspace root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The native codex binary: `$CODEX_REAL_BIN` if set, else the one
/// `scripts/install-codex` put under `<repo>/.tools`, located through its
/// `codex-package.json` layout file. `None` if neither exists.
pub fn find_real_codex() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("CODEX_REAL_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let (package, triple) = match std::env::consts::ARCH {
        "aarch64" => ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
        _ => ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    };
    let vendor = repo_root()
        .join(".tools/node_modules/@openai")
        .join(package)
        .join("vendor")
        .join(triple);
    let layout = std::fs::read(vendor.join("codex-package.json")).ok()?;
    let layout: serde_json::Value = serde_json::from_slice(&layout).ok()?;
    let bin = vendor.join(layout["entrypoint"].as_str()?);
    bin.is_file().then_some(bin)
}

/// The directory codex expects first on PATH (it holds `rg`), from the same
/// layout file: `<vendor>/<pathDir>`. `None` if absent.
pub fn real_codex_path_dir(codex_bin: &Path) -> Option<PathBuf> {
    // The binary is <vendor>/<entrypoint>; walk up to the layout file.
    let vendor = codex_bin
        .ancestors()
        .find(|dir| dir.join("codex-package.json").is_file())?;
    let layout = std::fs::read(vendor.join("codex-package.json")).ok()?;
    let layout: serde_json::Value = serde_json::from_slice(&layout).ok()?;
    let dir = vendor.join(layout["pathDir"].as_str()?);
    dir.is_dir().then_some(dir)
}

/// The `mcp-stdio-probe` binary. Cargo does not build a dependency's
/// binaries for the dependent's tests, so this runs (once per process)
/// `cargo build -p codex-runner-test-support --bin mcp-stdio-probe`, a no-op
/// when it is fresh, and returns the path cargo reports.
pub fn mcp_stdio_probe_bin() -> PathBuf {
    workspace_bin("codex-runner-test-support", "mcp-stdio-probe")
}

/// Path of binary `bin` of workspace package `package`, built (or brought
/// up to date) once per test process.
///
/// `cargo test` builds only the binaries of the package under test, so a
/// test of one package that runs another package's binary must ask cargo for
/// it; asking also means a stale binary is never run.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    static BINS: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        OnceLock::new();
    let mut bins = BINS.get_or_init(Default::default).lock().unwrap();
    bins.entry(format!("{package}/{bin}"))
        .or_insert_with(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = std::process::Command::new(cargo)
                .current_dir(repo_root())
                .args(["build", "--quiet", "--message-format=json"])
                .args(["-p", package, "--bin", bin])
                .stderr(std::process::Stdio::inherit())
                .output()
                .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
            assert!(output.status.success(), "cargo build of {bin} failed");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|msg| msg["target"]["name"] == bin)
                .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
                .unwrap_or_else(|| panic!("cargo reported no {bin} executable"))
        })
        .clone()
}

/// How many files (not directories) are under `dir`, at any depth; 0 if it
/// cannot be read. Rollouts under a CODEX_HOME's `sessions/`, say.
pub fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Whether `pid` is a live process (a zombie has exited: not live).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        !matches!(state, Some('Z' | 'X') | None)
    })
}

/// Waits until `pid` has exited, through a pidfd (readable once the process
/// terminates, child of ours or not), so nothing polls; panics after `limit`.
pub async fn wait_gone(pid: u32, limit: std::time::Duration) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        assert!(!alive(pid), "pidfd_open failed for live pid {pid}");
        return;
    }
    // SAFETY: a fresh fd that nothing else owns or registers.
    let fd = unsafe { tokio::io::unix::AsyncFd::register(OwnedFd::from_raw_fd(fd as i32)) }
        .unwrap_or_else(|e| panic!("registering a pidfd: {e:?}"));
    let _ready = tokio::time::timeout(limit, fd.readable())
        .await
        .unwrap_or_else(|_| panic!("process {pid} still alive after {limit:?}"))
        .unwrap();
}
