//! Three concurrent turns through codex-runner, from Rust.
//!
//! ```sh
//! cargo build -p codex-runner -p fake-codex
//! cargo run -p codex-runner-client --example three_turns -- \
//!     target/debug/codex-runner --codex-bin target/debug/fake-codex --codex-home "$(mktemp -d)"
//! ```
//!
//! The first argument is the daemon (default: `$CODEX_RUNNER_BIN`, else
//! `codex-runner` on PATH); the others are its flags. Each turn gets the MCP
//! server at `$MCP_URL` (default `http://127.0.0.1:9/mcp`, which the fake codex
//! never connects to; with the real codex, point it at a live server).
//! Prints every event as it arrives, then one line per turn; exits 1 if a turn
//! failed.

use std::error::Error;
use std::process::ExitCode;

use codex_runner_client::{
    EndStatus, McpServer, RunEvent, RunParams, RunStream, Runner, RunnerBuilder,
};

type BoxError = Box<dyn Error + Send + Sync>;

const PROMPTS: [&str; 3] = [
    "Name three prime numbers.",
    "What is the capital of France?",
    "Say hello in Dutch.",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let program = args
        .next()
        .or_else(|| std::env::var_os("CODEX_RUNNER_BIN"))
        .unwrap_or_else(|| "codex-runner".into());
    match three_turns(Runner::builder(program).args(args)).await {
        Ok(summary) => {
            summary.iter().for_each(|line| println!("{line}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("three_turns: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the three turns at once and returns `<id>: <final message>` for each,
/// in order; any failed turn is an error.
pub async fn three_turns(daemon: RunnerBuilder) -> Result<Vec<String>, BoxError> {
    let runner = daemon.spawn()?;
    let mcp_url = std::env::var("MCP_URL").unwrap_or_else(|_| "http://127.0.0.1:9/mcp".into());

    let mut readers = Vec::new();
    for (n, prompt) in PROMPTS.iter().enumerate() {
        let docs = McpServer {
            url: Some(mcp_url.clone()),
            ..McpServer::default()
        };
        let params = RunParams {
            prompt: Some(prompt.to_string()),
            mcp_servers: [("docs".to_string(), docs)].into(),
            ..RunParams::default()
        };
        let stream = runner.run(format!("turn-{n}"), params).await?;
        // One task per stream, so the three are read as they arrive.
        readers.push(tokio::spawn(read_turn(stream)));
    }

    let mut summary = Vec::new();
    for reader in readers {
        summary.push(reader.await??);
    }
    // Closes the daemon's stdin and waits for it to exit.
    runner.shutdown().await?;
    Ok(summary)
}

/// Prints one turn's events and returns its final agent message.
async fn read_turn(mut stream: RunStream) -> Result<String, BoxError> {
    let id = stream.id().to_owned();
    let mut last_message = String::new();
    while let Some(item) = stream.next().await {
        match item? {
            RunEvent::Event(event) => {
                println!("{id}: {}", event.kind());
                if let Some(codex_runner_client::ItemDetails::AgentMessage { text }) =
                    event.item().map(|item| &item.details)
                {
                    last_message = text.clone();
                }
            }
            RunEvent::Diag { level, message } => eprintln!("{id}: {level:?}: {message}"),
            RunEvent::Unparsed { error, .. } => eprintln!("{id}: an event not read: {error}"),
            RunEvent::End(end) if end.status == EndStatus::Ok => {
                return Ok(format!("{id}: {last_message}"));
            }
            RunEvent::End(end) => {
                let why = end.error.unwrap_or_default();
                return Err(format!("{id} failed ({:?}): {why}", end.code).into());
            }
            // Kinds a later client may add.
            _ => {}
        }
    }
    Err(format!("{id}: the stream ended without an end").into())
}
