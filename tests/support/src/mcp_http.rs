//! A real streamable-HTTP MCP server (rmcp) that records every `tools/call`.
//!
//! Codex sends no per-turn HTTP header of its own choosing, so what reaches an
//! MCP server per turn is exactly what the turn's config.toml put there
//! (`http_headers`, `env_http_headers`, `bearer_token_env_var`) plus the
//! `_meta` codex adds to each call. `whoami` echoes both back, and the server
//! keeps them for assertions.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use hyper_util::service::TowerToHyperService;
use rmcp::{
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ErrorData, RoleServer, ServerHandler,
};
use serde_json::{json, Value};

use crate::{mcp_tools as tools, server::Background};

/// One `tools/call` as the server received it.
#[derive(Debug, Clone)]
pub struct McpCall {
    pub tool: String,
    pub arguments: Value,
    /// The HTTP headers of the POST that carried the call; names lowercase,
    /// repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The call's `params._meta` (codex puts `x-codex-turn-metadata`,
    /// `threadId`, `callId`, ... there).
    pub meta: Value,
}

/// A running MCP server on `http://127.0.0.1:PORT/mcp` with tools `whoami`
/// (read-only), `write_note` (mutating) and `slow` (read-only). Dropping it
/// stops it.
pub struct McpHttpServer {
    calls: Arc<Mutex<Vec<McpCall>>>,
    /// Woken on every recorded call, so tests wait instead of polling.
    called: Arc<tokio::sync::Notify>,
    server: Background,
}

impl McpHttpServer {
    /// Starts the server on a free port; panics if it cannot bind.
    pub fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let called = Arc::new(tokio::sync::Notify::new());
        let probe = Probe {
            calls: calls.clone(),
            called: called.clone(),
        };
        let service = StreamableHttpService::new(
            move || Ok(probe.clone()),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default().with_sse_keep_alive(None),
        );
        let server = Background::serve("mcp-http", TowerToHyperService::new(service))
            .expect("mcp server: bind 127.0.0.1");
        Self {
            calls,
            called,
            server,
        }
    }

    /// The URL for `[mcp_servers.NAME] url = ...`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.server.addr())
    }

    /// Every `tools/call` so far, in arrival order.
    pub fn calls(&self) -> Vec<McpCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until a call of `tool` has arrived; panics after `limit`.
    pub async fn wait_for_call(&self, tool: &str, limit: std::time::Duration) -> McpCall {
        let arrived = async {
            loop {
                // Registered before looking, so a call landing in between
                // still wakes us.
                let called = self.called.notified();
                tokio::pin!(called);
                called.as_mut().enable();
                if let Some(call) = self.calls().into_iter().find(|c| c.tool == tool) {
                    return call;
                }
                called.await;
            }
        };
        tokio::time::timeout(limit, arrived)
            .await
            .unwrap_or_else(|_| panic!("no {tool} call reached the MCP server within {limit:?}"))
    }
}

#[derive(Clone)]
struct Probe {
    calls: Arc<Mutex<Vec<McpCall>>>,
    called: Arc<tokio::sync::Notify>,
}

impl ServerHandler for Probe {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("mcp-http-probe", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let all = vec![tools::whoami(), tools::write_note(), tools::slow()];
        Ok(ListToolsResult::with_all_items(all))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let headers = context
            .extensions
            .get::<http::request::Parts>()
            .map(|parts| header_map(&parts.headers))
            .unwrap_or_default();
        let meta = Value::Object(context.meta.0 .0.clone());
        self.calls.lock().unwrap().push(McpCall {
            tool: request.name.to_string(),
            arguments: Value::Object(args.clone()),
            headers: headers.clone(),
            meta: meta.clone(),
        });
        self.called.notify_waiters();
        let result = match &*request.name {
            "whoami" => tools::text(json!({"headers": headers, "meta": meta}).to_string()),
            "write_note" => tools::text(format!("noted: {}", tools::text_arg(&args))),
            "slow" => tools::run_slow(&args, context.ct).await,
            other => return Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        };
        Ok(result.into())
    }
}

fn header_map(headers: &http::HeaderMap) -> BTreeMap<String, String> {
    let mut map = BTreeMap::<String, String>::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_owned())
            .and_modify(|v| *v = format!("{v}, {value}"))
            .or_insert(value);
    }
    map
}
