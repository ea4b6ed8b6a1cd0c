//! The params of a `run` request.
//!
//! Every struct denies unknown fields: a misspelt option (`headers` for
//! `http_headers`) is an error that names the field, never a silent no-op.
//! `null` is accepted wherever a field is optional and means "absent".

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The params of one `run`: one turn of one thread.
///
/// The first group of fields is the existing runner protocol; the rest are
/// codex-runner additions, all optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Model slug, passed as `--model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The user input of the turn. Either this or [`RunParams::prompt`] is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// Working directory of the agent, passed as `--cd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Reasoning effort (`model_reasoning_effort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    /// Enables (`web_search = "live"`) or disables the web search tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_enabled: Option<bool>,
    /// Thread id to continue (`codex exec resume <id>`): a hyphenated UUID,
    /// as `thread.started` gives it (codex would take anything else for a
    /// thread name and start a new thread). Codex resumes in this turn's
    /// `cwd`: send the thread's `cwd` again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(pattern(
            r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
        ))
    )]
    pub resume: Option<String>,
    /// MCP servers of this turn, by name. They are layered over the user's
    /// own `[mcp_servers]`; a server here replaces a base one of the same name.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<BTreeMap<String, McpServer>>")
    )]
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// Exported to codex as env `OBJECTIVEAI_AGENT_INSTANCE_HIERARCHY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_instance_hierarchy: Option<String>,

    /// Plain-text shorthand for `input` (`{"content": prompt}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Sandbox mode, passed as `--sandbox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    /// `approval_policy` in the synthesized config. No effect on `codex exec`,
    /// which forces `never` whatever the config says; kept for clients that
    /// send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalPolicy>,
    /// JSON Schema of the final message, written to a file in the turn's
    /// private dir and passed as `--output-schema`. Must be an object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Map<String, serde_json::Value>>,
    /// Extra writable directories, passed as `--add-dir`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "Option<Vec<String>>"))]
    pub additional_directories: Vec<String>,
    /// `sandbox_workspace_write.network_access`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access_enabled: Option<bool>,
    /// Config profile, passed as `--profile` (layers `<home>/<name>.config.toml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(pattern(r"^[A-Za-z0-9_-]+$")))]
    pub profile: Option<String>,
    /// Replaces the model's base instructions (config key `instructions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_instructions: Option<String>,
    /// Config key `developer_instructions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_instructions: Option<String>,
    /// Config key `compact_prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact_prompt: Option<String>,
    /// Arbitrary config overrides: dotted keys (`"features.plugins"`) to JSON
    /// values, merged into the synthesized config.toml last.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<BTreeMap<String, serde_json::Value>>")
    )]
    pub config: BTreeMap<String, serde_json::Value>,
    /// Extra environment variables for the codex child. Values are secrets:
    /// they never appear in argv or logs.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<BTreeMap<String, String>>")
    )]
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit for the turn, in seconds, counted from its start
    /// (not from the time it was queued). Overrides `--turn-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

/// The user input of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Text, or a list of parts.
    pub content: InputContent,
    /// Speaker name: when non-empty, a leading text part `"[name] :"` is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `input.content`: a plain string or a list of [`ContentPart`]s.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum InputContent {
    /// A single text.
    Text(String),
    /// Text and image parts, in order.
    Parts(Vec<ContentPart>),
}

// Hand-written rather than `#[serde(untagged)]`, whose only error is "did not
// match any variant": a wrong part should be named precisely.
impl<'de> Deserialize<'de> for InputContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = InputContent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(InputContent::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(InputContent::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(InputContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// One part of `input.content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    /// Text, joined with the other text parts by a blank line.
    Text {
        /// The text.
        text: String,
    },
    /// An image file on the daemon's host, passed as `--image`.
    LocalImage {
        /// Path of the image.
        path: String,
    },
}

/// Reasoning effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

/// Sandbox mode of model-generated commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum SandboxMode {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

/// Approval policy. `codex exec` cannot ask a human, so in practice only
/// `never` differs from the others by what fails; `untrusted` is not offered
/// because codex 0.169.0 rejects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum ApprovalPolicy {
    Never,
    OnRequest,
    OnFailure,
}

/// How codex treats an MCP server's tool calls (`default_tools_approval_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ToolsApproval {
    /// Calls run without asking (the runner's default for request servers:
    /// the orchestrator chose them, and exec cannot ask).
    Approve,
    /// Calls need approval, which exec cannot give: non-read-only tools fail.
    Prompt,
    /// Codex decides from the tool's annotations.
    Auto,
}

/// One MCP server: streamable HTTP (`url`) or stdio (`command`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// Streamable-HTTP endpoint (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Static HTTP headers sent with every request to the server. Values are
    /// secrets: they are written only to the turn's private config.toml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_headers: Option<BTreeMap<String, String>>,
    /// Headers whose values codex reads from the named env variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_http_headers: Option<BTreeMap<String, String>>,
    /// Env variable holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env_var: Option<String>,
    /// stdio server: the program to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// stdio server: its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// stdio server: extra environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// stdio server: names of variables passed through from codex's env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<Vec<String>>,
    /// stdio server: working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// A required server that cannot start fails the turn. Default: `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// `false` disables the server for this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds codex waits for the server to start (codex default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timeout_sec: Option<f64>,
    /// Seconds codex waits for one tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_timeout_sec: Option<f64>,
    /// Only these tools are exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_tools: Option<Vec<String>>,
    /// These tools are hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_tools: Option<Vec<String>>,
    /// `default_tools_approval_mode`. Default: `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_approval: Option<ToolsApproval>,
}

/// `null` reads as the empty collection: the protocol treats `null` as
/// "absent" for every optional field, and serde's `default` alone only
/// covers a missing key.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl RunParams {
    /// The prompt text codex reads on stdin: the text parts (with the
    /// `[name] :` prefix part when a name is given) joined by a blank line.
    pub fn prompt_text(&self) -> String {
        if let Some(prompt) = &self.prompt {
            return prompt.clone();
        }
        let Some(input) = &self.input else {
            return String::new();
        };
        let mut texts: Vec<&str> = Vec::new();
        let label;
        if let Some(name) = input.name.as_deref().filter(|n| !n.is_empty()) {
            label = format!("[{name}] :");
            texts.push(&label);
        }
        match &input.content {
            InputContent::Text(text) => texts.push(text),
            InputContent::Parts(parts) => texts.extend(parts.iter().filter_map(|p| match p {
                ContentPart::Text { text } => Some(text.as_str()),
                ContentPart::LocalImage { .. } => None,
            })),
        }
        texts.join("\n\n")
    }

    /// The image paths of the input, in order.
    pub fn images(&self) -> Vec<&str> {
        match self.input.as_ref().map(|i| &i.content) {
            Some(InputContent::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::LocalImage { path } => Some(path.as_str()),
                    ContentPart::Text { .. } => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
