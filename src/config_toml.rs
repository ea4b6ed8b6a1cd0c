//! Synthesis of a turn's `config.toml`: the user's base config, edited in
//! place with `toml_edit` so its comments, formatting and every key we do not
//! touch survive, plus the request's MCP servers and config-mapped params.
//!
//! Pure functions over a document: no I/O, so every rule is unit-tested.

use std::collections::BTreeMap;

use runner_protocol::{ApprovalPolicy, Effort, McpServer, RunParams, ToolsApproval};
use serde_json::Value as Json;
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, Value};

/// Header carrying the run id to every HTTP MCP server of the turn.
pub const RUN_ID_HEADER: &str = "X-Codex-Runner-Run-Id";
/// Header carrying the resumed thread id to every HTTP MCP server of the turn.
pub const THREAD_ID_HEADER: &str = "X-Codex-Runner-Thread-Id";

/// Why a config could not be synthesised.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The base `config.toml` is not valid TOML: where, and why. Never the
    /// parser's own text, which quotes the offending line (a header's
    /// secret, say) on several lines.
    #[error("base config.toml is not valid TOML: {0}")]
    BaseInvalid(String),
    /// A key of the base config has a shape we cannot extend.
    #[error("base config.toml: `{0}` must be a table")]
    NotATable(String),
    /// A number in `params.config` does not fit TOML.
    #[error("params.config.{0}: number out of TOML's range")]
    Number(String),
    /// A request server and a server of the base config map to the same
    /// tool namespace (`a.b` and `a_b` are both `mcp__a_b`): which one's
    /// tools the model would get is not defined.
    #[error("params.mcp_servers.{ours}: its tools would share the namespace `{namespace}` with the base config's server `{theirs}`: rename it")]
    NamespaceClash {
        /// The request's server.
        ours: String,
        /// The base config's server.
        theirs: String,
        /// The namespace both map to.
        namespace: String,
    },
}

/// Parses the base config (an absent file is an empty document).
pub fn parse_base(text: Option<&str>) -> Result<DocumentMut, ConfigError> {
    let text = text.unwrap_or("");
    text.parse::<DocumentMut>()
        .map_err(|e| ConfigError::BaseInvalid(syntax_error(text, &e)))
}

/// `line L, column C: message`, on one line, quoting nothing of `text`.
fn syntax_error(text: &str, e: &toml_edit::TomlError) -> String {
    let message = e.message().trim().replace('\n', "; ");
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return message;
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    format!(
        "line {}, column {}: {message}",
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1
    )
}

/// What of a request a turn's config depends on, besides the run id and
/// the resumed thread's id (which go into HTTP headers only).
/// [`synthesize_from`] reads nothing else, so a config rendered for one
/// request serves every request whose inputs are equal (see
/// `config_template`): a field that changes the config must be added here.
#[derive(Debug, PartialEq)]
pub struct ConfigInputs<'a> {
    pub effort: Option<Effort>,
    pub web_search_enabled: Option<bool>,
    pub approval_policy: Option<ApprovalPolicy>,
    pub network_access_enabled: Option<bool>,
    pub base_instructions: Option<&'a str>,
    pub developer_instructions: Option<&'a str>,
    pub compact_prompt: Option<&'a str>,
    pub mcp_servers: &'a BTreeMap<String, McpServer>,
    pub config: &'a BTreeMap<String, Json>,
    /// The turn resumes a thread, whose id then goes into a header.
    pub resumes: bool,
}

impl<'a> ConfigInputs<'a> {
    pub fn of(p: &'a RunParams) -> Self {
        ConfigInputs {
            effort: p.effort,
            web_search_enabled: p.web_search_enabled,
            approval_policy: p.approval_policy,
            network_access_enabled: p.network_access_enabled,
            base_instructions: p.base_instructions.as_deref(),
            developer_instructions: p.developer_instructions.as_deref(),
            compact_prompt: p.compact_prompt.as_deref(),
            mcp_servers: &p.mcp_servers,
            config: &p.config,
            resumes: p.resume.is_some(),
        }
    }

    /// Params holding these inputs and nothing else (no prompt, an empty
    /// thread id), to keep as the key of a rendered config.
    pub fn to_params(&self) -> RunParams {
        RunParams {
            effort: self.effort,
            web_search_enabled: self.web_search_enabled,
            approval_policy: self.approval_policy,
            network_access_enabled: self.network_access_enabled,
            base_instructions: self.base_instructions.map(str::to_owned),
            developer_instructions: self.developer_instructions.map(str::to_owned),
            compact_prompt: self.compact_prompt.map(str::to_owned),
            mcp_servers: self.mcp_servers.clone(),
            config: self.config.clone(),
            resume: self.resumes.then(String::new),
            ..RunParams::default()
        }
    }
}

/// Applies a request to the base document.
pub fn synthesize(doc: &mut DocumentMut, run_id: &str, p: &RunParams) -> Result<(), ConfigError> {
    let thread_id = p.resume.as_deref().unwrap_or_default();
    synthesize_from(doc, &ConfigInputs::of(p), run_id, thread_id)
}

/// Applies a request's inputs to the base document; `thread_id` is used
/// only when the inputs say the turn resumes a thread.
pub fn synthesize_from(
    doc: &mut DocumentMut,
    p: &ConfigInputs<'_>,
    run_id: &str,
    thread_id: &str,
) -> Result<(), ConfigError> {
    if let Some(effort) = p.effort {
        doc["model_reasoning_effort"] = toml_edit::value(effort_str(effort));
    }
    if let Some(enabled) = p.web_search_enabled {
        doc["web_search"] = toml_edit::value(if enabled { "live" } else { "disabled" });
    }
    if let Some(policy) = p.approval_policy {
        let policy = serde_json::to_value(policy).expect("enum serialises");
        doc["approval_policy"] = toml_edit::value(policy.as_str().unwrap_or("never"));
    }
    if let Some(network) = p.network_access_enabled {
        table_at(doc.as_table_mut(), "sandbox_workspace_write")?["network_access"] =
            toml_edit::value(network);
    }
    // codex 0.169.0 calls the base-instructions override `instructions`
    // (`base_instructions` is rejected by --strict-config).
    for (key, value) in [
        ("instructions", p.base_instructions),
        ("developer_instructions", p.developer_instructions),
        ("compact_prompt", p.compact_prompt),
    ] {
        if let Some(value) = value {
            doc[key] = toml_edit::value(value);
        }
    }

    let servers = table_at(doc.as_table_mut(), "mcp_servers")?;
    servers.set_implicit(true);
    for (name, server) in p.mcp_servers {
        // One of the same name is replaced; one of another name whose
        // tools would land in the same namespace is a clash.
        let namespace = runner_protocol::tool_namespace(name);
        if let Some((theirs, _)) = servers.iter().find(|(theirs, _)| {
            *theirs != name && runner_protocol::tool_namespace(theirs) == namespace
        }) {
            return Err(ConfigError::NamespaceClash {
                ours: name.clone(),
                theirs: theirs.to_owned(),
                namespace,
            });
        }
        servers.insert(name, Item::Table(server_table(server)));
    }

    for (key, value) in p.config {
        let segments: Vec<&str> = key.split('.').collect();
        set_path(doc.as_table_mut(), &segments, value, key)?;
    }
    // Last: a server that `config` added or changed is one of the turn's.
    let servers = table_at(doc.as_table_mut(), "mcp_servers")?;
    add_turn_headers(servers, run_id, p.resumes.then_some(thread_id));
    Ok(())
}

fn effort_str(effort: Effort) -> &'static str {
    match effort {
        Effort::Minimal => "minimal",
        Effort::Low => "low",
        Effort::Medium => "medium",
        Effort::High => "high",
        Effort::Xhigh => "xhigh",
    }
}

/// The table at `key`, created (as an implicit table) if absent.
fn table_at<'a>(table: &'a mut Table, key: &str) -> Result<&'a mut Table, ConfigError> {
    let item = table.entry(key).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    if let Item::Value(Value::InlineTable(inline)) = item {
        *item = Item::Table(std::mem::take(inline).into_table());
    }
    item.as_table_mut()
        .ok_or_else(|| ConfigError::NotATable(key.to_owned()))
}

/// One request server as a `[mcp_servers.NAME]` table. Request servers are
/// `required` and pre-approved unless the request says otherwise: exec cannot
/// ask for approval, and a server the orchestrator chose that silently fails
/// to start is worse than a loud failure.
fn server_table(s: &McpServer) -> Table {
    let mut t = Table::new();
    let mut put = |key: &str, value: Value| {
        t.insert(key, Item::Value(value));
    };
    if let Some(url) = &s.url {
        put("url", url.into());
    }
    if let Some(headers) = &s.http_headers {
        put("http_headers", string_map(headers).into());
    }
    if let Some(headers) = &s.env_http_headers {
        put("env_http_headers", string_map(headers).into());
    }
    if let Some(var) = &s.bearer_token_env_var {
        put("bearer_token_env_var", var.into());
    }
    if let Some(command) = &s.command {
        put("command", command.into());
    }
    if let Some(args) = &s.args {
        put("args", string_array(args).into());
    }
    if let Some(env) = &s.env {
        put("env", string_map(env).into());
    }
    if let Some(vars) = &s.env_vars {
        put("env_vars", string_array(vars).into());
    }
    if let Some(cwd) = &s.cwd {
        put("cwd", cwd.into());
    }
    put("required", s.required.unwrap_or(true).into());
    if let Some(enabled) = s.enabled {
        put("enabled", enabled.into());
    }
    if let Some(secs) = s.startup_timeout_sec {
        put("startup_timeout_sec", secs.into());
    }
    if let Some(secs) = s.tool_timeout_sec {
        put("tool_timeout_sec", secs.into());
    }
    if let Some(tools) = &s.enabled_tools {
        put("enabled_tools", string_array(tools).into());
    }
    if let Some(tools) = &s.disabled_tools {
        put("disabled_tools", string_array(tools).into());
    }
    let approval = match s.tools_approval.unwrap_or(ToolsApproval::Approve) {
        ToolsApproval::Approve => "approve",
        ToolsApproval::Prompt => "prompt",
        ToolsApproval::Auto => "auto",
    };
    put("default_tools_approval_mode", approval.into());
    t
}

/// Adds the per-turn headers to every HTTP server of the turn, base ones
/// included, unless that server already sets them (compared
/// case-insensitively, as HTTP does).
fn add_turn_headers(servers: &mut Table, run_id: &str, thread_id: Option<&str>) {
    for (_, server) in servers.iter_mut() {
        let Some(server) = server.as_table_like_mut() else {
            continue;
        };
        if server.get("url").is_none() {
            continue;
        }
        let headers = server
            .entry("http_headers")
            .or_insert(Item::Value(InlineTable::new().into()));
        let Some(headers) = headers.as_table_like_mut() else {
            continue;
        };
        let mut add = |name: &str, value: &str| {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                headers.insert(name, Item::Value(value.into()));
            }
        };
        add(RUN_ID_HEADER, run_id);
        if let Some(thread_id) = thread_id {
            add(THREAD_ID_HEADER, thread_id);
        }
    }
}

fn string_map(map: &std::collections::BTreeMap<String, String>) -> InlineTable {
    map.iter()
        .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
        .collect()
}

fn string_array(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

/// Sets a dotted key. A JSON object merges into the table there (so
/// `{"features": {"plugins": false}}` keeps the user's other features);
/// anything else replaces the value.
fn set_path(table: &mut Table, path: &[&str], value: &Json, key: &str) -> Result<(), ConfigError> {
    let (first, rest) = path.split_first().expect("validated: no empty key");
    if rest.is_empty() && !value.is_object() {
        table.insert(first, Item::Value(to_toml(value, key)?));
        return Ok(());
    }
    let needs_table = !matches!(
        table.get(first),
        Some(Item::Table(_)) | Some(Item::Value(Value::InlineTable(_)))
    );
    if needs_table {
        let mut t = Table::new();
        t.set_implicit(true);
        table.insert(first, Item::Table(t));
    }
    let next = table_at(table, first)?;
    if rest.is_empty() {
        let Json::Object(object) = value else {
            unreachable!("checked above")
        };
        for (k, v) in object {
            set_path(next, &[k.as_str()], v, key)?;
        }
        return Ok(());
    }
    set_path(next, rest, value, key)
}

fn to_toml(value: &Json, key: &str) -> Result<Value, ConfigError> {
    Ok(match value {
        Json::Bool(b) => (*b).into(),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if n.is_u64() {
                // Above i64::MAX: TOML integers are 64-bit signed.
                return Err(ConfigError::Number(key.to_owned()));
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                f.into()
            } else {
                return Err(ConfigError::Number(key.to_owned()));
            }
        }
        Json::String(s) => s.as_str().into(),
        Json::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(to_toml(item, key)?);
            }
            array.into()
        }
        Json::Object(map) => {
            let mut inline = InlineTable::new();
            for (k, v) in map {
                inline.insert(k, to_toml(v, key)?);
            }
            inline.into()
        }
        Json::Null => unreachable!("validated: no nulls in params.config"),
    })
}

#[cfg(test)]
#[path = "config_toml_tests.rs"]
mod tests;
