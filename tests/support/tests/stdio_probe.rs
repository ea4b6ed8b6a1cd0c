//! The `mcp-stdio-probe` binary alone, spoken to in raw JSON-RPC lines.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use codex_runner_test_support::mcp_stdio_probe_bin;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-stdio-probe");

#[test]
fn lists_and_calls_tools_and_writes_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut child = Command::new(BIN)
        .env("MCP_STDIO_PIDFILE", &pidfile)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut call = |id: u64, method: &str, params: Value| -> Value {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{request}").unwrap();
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("probe answered");
        serde_json::from_str(&line).unwrap()
    };

    let init = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}});
    assert_eq!(
        call(1, "initialize", init)["result"]["serverInfo"]["name"],
        "mcp-stdio-probe"
    );
    let tools = call(2, "tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "slow"]);
    assert_eq!(
        tools["result"]["tools"][0]["annotations"]["readOnlyHint"],
        true
    );
    let echoed = call(
        3,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
    );
    assert_eq!(
        echoed["result"]["content"][0]["text"], "echo: hi",
        "{echoed}"
    );

    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(pid, child.id().to_string());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// What the root package's tests use: builds (no-op when fresh) and finds it.
#[test]
fn mcp_stdio_probe_bin_finds_the_same_binary() {
    let found = mcp_stdio_probe_bin();
    assert_eq!(
        found.canonicalize().unwrap(),
        Path::new(BIN).canonicalize().unwrap()
    );
}
