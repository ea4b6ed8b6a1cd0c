//! The stdio MCP server behind the `mcp-stdio-probe` binary: tools `echo`
//! and `slow`, both read-only.
//!
//! If `MCP_STDIO_PIDFILE` is set (codex passes only whitelisted variables to
//! stdio servers, so set it in `[mcp_servers.NAME] env`), the server writes
//! its pid there first, so lifecycle tests can check it was stopped.

use rmcp::{
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    ErrorData, RoleServer, ServerHandler, ServiceExt,
};

use crate::mcp_tools as tools;

/// Serves MCP on stdin/stdout until the client goes away.
pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(pidfile) = std::env::var_os("MCP_STDIO_PIDFILE") {
        std::fs::write(pidfile, std::process::id().to_string())?;
    }
    let service = StdioProbe.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

struct StdioProbe;

impl ServerHandler for StdioProbe {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("mcp-stdio-probe", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            tools::echo(),
            tools::slow(),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match &*request.name {
            "echo" => tools::text(format!("echo: {}", tools::text_arg(&args))),
            "slow" => tools::run_slow(&args, context.ct).await,
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(result.into())
    }
}
