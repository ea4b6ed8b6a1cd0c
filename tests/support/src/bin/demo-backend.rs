//! The loopback backend of `scripts/demo`: a mock model and an MCP server, so
//! the REAL Codex CLI can run a turn with a tool call with no account and no
//! network beyond 127.0.0.1.
//!
//! ```text
//! demo-backend --find-codex      print the real codex binary (exit 1 if none)
//! demo-backend CONFIG_TOML       write a base config.toml pointing codex at the
//!                                mock model, print MODEL_URL=... and MCP_URL=...,
//!                                serve until stdin closes, then print one
//!                                MCP_CALL line per tools/call the server saw
//! ```
//!
//! The mock model answers like [`Script::Default`] (`call TOOL on SERVER
//! [with {json}]` makes the tool call, anything else is answered `ok:
//! <prompt>`), except that a prompt containing `please fail` gets a failed
//! response, so the demo can show a failing turn.

use std::io::{Read, Write};

use codex_runner_test_support::{
    codex_config_toml, find_real_codex, McpHttpServer, MockModel, Reply, Script,
};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--find-codex" => match find_real_codex() {
            Some(bin) if bin.is_file() => {
                println!("{}", bin.display());
                std::process::ExitCode::SUCCESS
            }
            _ => std::process::ExitCode::FAILURE,
        },
        [config] if !config.starts_with('-') => serve(config),
        _ => {
            eprintln!("usage: demo-backend --find-codex | demo-backend CONFIG_TOML_PATH");
            std::process::ExitCode::from(2)
        }
    }
}

fn serve(config_path: &str) -> std::process::ExitCode {
    let model = MockModel::start(Script::from_fn(|request| {
        if request.prompt().is_some_and(|p| p.contains("please fail")) {
            Reply::failed("the mock model was asked to fail")
        } else {
            Reply::Default
        }
    }));
    let mcp = McpHttpServer::start();
    let config = format!(
        "# The user's own config.toml: every turn's config is this file plus the\n\
         # request's MCP servers. Here it points codex at a local mock model.\n{}",
        codex_config_toml(&model.base_url())
    );
    if let Err(e) = std::fs::write(config_path, config) {
        eprintln!("demo-backend: cannot write {config_path}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "MODEL_URL={}", model.base_url());
    let _ = writeln!(out, "MCP_URL={}", mcp.url());
    let _ = out.flush();

    // Serve until whoever started us closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());

    for call in mcp.calls() {
        let header = |name: &str| call.headers.get(name).map_or("-", String::as_str);
        let _ = writeln!(
            out,
            "MCP_CALL tool={} run_id={} authorization={:?} arguments={}",
            call.tool,
            header("x-codex-runner-run-id"),
            header("authorization"),
            call.arguments
        );
    }
    let _ = writeln!(out, "MODEL_REQUESTS={}", model.requests().len());
    let _ = out.flush();
    std::process::ExitCode::SUCCESS
}
