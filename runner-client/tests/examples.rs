//! The example orchestrators (Rust, Python, Node) against the real daemon with
//! the fake codex. Each checks its own results and exits non-zero if anything
//! is off; these tests also check what they print.

mod common;

use std::process::Command;

use common::{binaries, repo_root, within, Scratch};

#[allow(dead_code)] // its `main`
#[path = "../../examples/rust/three_turns.rs"]
mod three_turns;

#[tokio::test]
async fn rust_example_runs_three_turns() {
    let scratch = Scratch::new();
    let summary = within("three_turns", three_turns::three_turns(scratch.builder()))
        .await
        .unwrap();
    assert_eq!(
        summary,
        [
            "turn-0: echo: Name three prime numbers. (turn 1)",
            "turn-1: echo: What is the capital of France? (turn 1)",
            "turn-2: echo: Say hello in Dutch. (turn 1)",
        ]
    );
}

#[test]
fn python_example_runs_and_cancels() {
    script_example("python3", "examples/python/orchestrator.py", "py");
}

#[test]
fn node_example_runs_and_cancels() {
    script_example("node", "examples/node/orchestrator.mjs", "js");
}

/// Runs `interpreter script <daemon> <daemon flags>` and checks its report.
fn script_example(interpreter: &str, script: &str, prefix: &str) {
    if Command::new(interpreter).arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{interpreter} is required in CI to test {script}"
        );
        eprintln!("\n!!! SKIPPED: {interpreter} not found, {script} is NOT tested !!!\n");
        return;
    }
    let scratch = Scratch::new();
    let output = Command::new(interpreter)
        .current_dir(repo_root())
        .arg(script)
        .arg(&binaries().0)
        .args(scratch.daemon_args())
        .env("RUST_LOG", "warn")
        .env("ORCHESTRATOR_TIMEOUT_SECS", "60")
        .env_remove("FAKE_CODEX_SCENARIO")
        .env_remove("MCP_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for line in [
        format!("{prefix}-1: ok  echo: Name three prime numbers. (turn 1)"),
        format!("{prefix}-2: ok  echo: What is the capital of France? (turn 1)"),
        format!("{prefix}-3: error cancelled cancelled by request"),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
}
