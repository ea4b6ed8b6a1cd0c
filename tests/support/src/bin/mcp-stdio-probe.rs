//! A stdio MCP server for codex-runner's tests; see `mcp_stdio` in the
//! support library.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    codex_runner_test_support::mcp_stdio::run().await
}
