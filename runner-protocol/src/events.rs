//! Typed codex events: the `event` of an `event` output line.
//!
//! The daemon forwards codex's `exec --json` lines byte for byte; these types
//! let a Rust client read them. They mirror what codex 0.169.0 prints (its
//! `exec_events.rs`, checked against the binary), with two rules that keep them
//! lossless and forward-compatible:
//!
//! - An event or item of a type this crate does not know, or whose shape it
//!   does not recognise, is kept whole as JSON ([`ThreadEvent::Other`],
//!   [`ItemDetails::Other`]) and serializes back to the same JSON. Newer codex
//!   versions add types; a client must not lose them.
//! - codex prints `web_search` items with a duplicate `id` key:
//!   `{"id":"item_1","type":"web_search","id":"ws_1",...}`. A derived struct
//!   with an `id` field rejects that ("duplicate field `id`"), so
//!   [`ThreadItem`] has its own `Deserialize`: the first `id` is the item id,
//!   the second is [`WebSearchItem::id`].
//!
//! Parse an event from its JSON text (`serde_json::from_str`) to keep both
//! ids; a [`serde_json::Value`] has already dropped the first one.
//!
//! Fields of known types that a newer codex adds are ignored, as in codex's
//! own types.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One line of `codex exec --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum ThreadEvent {
    /// The first event of a turn: the thread's id (the same id on resume).
    #[serde(rename = "thread.started")]
    ThreadStarted {
        /// The thread id, to pass as `resume` in a later run.
        thread_id: String,
    },
    /// The turn started (codex gives turns no id).
    #[serde(rename = "turn.started")]
    TurnStarted {},
    /// The turn completed.
    #[serde(rename = "turn.completed")]
    TurnCompleted {
        /// Token usage, cumulative over the thread.
        usage: Usage,
    },
    /// The turn failed; codex then exits 1.
    #[serde(rename = "turn.failed")]
    TurnFailed {
        /// Why.
        error: ErrorMessage,
    },
    /// An item began (typically `in_progress`).
    #[serde(rename = "item.started")]
    ItemStarted {
        /// The item.
        item: ThreadItem,
    },
    /// An item changed.
    #[serde(rename = "item.updated")]
    ItemUpdated {
        /// The item.
        item: ThreadItem,
    },
    /// An item reached its final state.
    #[serde(rename = "item.completed")]
    ItemCompleted {
        /// The item.
        item: ThreadItem,
    },
    /// An error report. Not necessarily fatal: retry notices arrive this way;
    /// a real failure is followed by `turn.failed`.
    #[serde(rename = "error")]
    Error {
        /// The message.
        message: String,
    },
    /// An event of another type, or of a known type in an unknown shape,
    /// exactly as parsed.
    #[serde(untagged)]
    Other(Value),
}

/// `usage` of `turn.completed`. Every count is cumulative over the thread, not
/// per turn. A count codex leaves out reads as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[allow(missing_docs)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default)]
    pub cache_write_input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub reasoning_output_tokens: u64,
}

/// `{"message": ...}`, the `error` of `turn.failed` and of a failed MCP call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorMessage {
    /// The message.
    pub message: String,
}

/// One item of a turn: its `id` (`item_N`, per codex process) and its typed
/// details, which carry the `type` tag.
///
/// Serializes as codex prints it, `id` first, so a `web_search` item gets its
/// duplicate `id` key back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ThreadItem {
    /// The item id (`item_0`, `item_1`, ...).
    pub id: String,
    /// What the item is.
    #[serde(flatten)]
    pub details: ItemDetails,
}

/// The typed part of a [`ThreadItem`], tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ItemDetails {
    /// The agent's reply: text, or a JSON string under `output_schema`.
    AgentMessage {
        /// The text.
        text: String,
    },
    /// A reasoning summary (`item.completed` only).
    Reasoning {
        /// The summary.
        text: String,
    },
    /// A shell command run by the agent.
    CommandExecution(CommandExecutionItem),
    /// Files changed by the agent.
    FileChange(FileChangeItem),
    /// A call to an MCP tool.
    McpToolCall(McpToolCallItem),
    /// A web search.
    WebSearch(WebSearchItem),
    /// The agent's to-do list.
    TodoList {
        /// The entries, in order.
        items: Vec<TodoItem>,
    },
    /// A call to a collaboration (sub-agent) tool.
    CollabToolCall(CollabToolCallItem),
    /// A non-fatal error shown as an item.
    Error {
        /// The message.
        message: String,
    },
    /// An item of another type, or of a known type in an unknown shape: the
    /// item's fields other than its `id`, `type` included.
    #[serde(untagged)]
    Other(Value),
}

/// `command_execution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandExecutionItem {
    /// The command line, as codex ran it.
    pub command: String,
    /// stdout and stderr so far.
    pub aggregated_output: String,
    /// `null` while running.
    pub exit_code: Option<i32>,
    /// Its state.
    pub status: CommandExecutionStatus,
}

/// `status` of a [`CommandExecutionItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum CommandExecutionStatus {
    InProgress,
    Completed,
    Failed,
    Declined,
}

/// `file_change`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileChangeItem {
    /// The files touched.
    pub changes: Vec<FileUpdateChange>,
    /// Its state.
    pub status: ToolStatus,
}

/// One file of a [`FileChangeItem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FileUpdateChange {
    /// The file's path.
    pub path: String,
    /// What happened to it.
    pub kind: PatchChangeKind,
}

/// `kind` of a [`FileUpdateChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum PatchChangeKind {
    Add,
    Delete,
    Update,
}

/// `status` of file changes, MCP and collaboration tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum ToolStatus {
    InProgress,
    Completed,
    Failed,
}

/// `mcp_tool_call`. A tool that returns `isError` gives status `failed` with
/// `result` set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpToolCallItem {
    /// The server's name, as in `mcp_servers`.
    pub server: String,
    /// The tool's name.
    pub tool: String,
    /// The call's arguments.
    #[serde(default)]
    pub arguments: Value,
    /// What the tool returned, once it did.
    pub result: Option<McpToolCallResult>,
    /// Why the call failed, if it did without a result.
    pub error: Option<ErrorMessage>,
    /// Its state.
    pub status: ToolStatus,
}

/// `result` of an [`McpToolCallItem`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpToolCallResult {
    /// MCP content blocks.
    pub content: Vec<Value>,
    /// The structured result, if the tool gave one.
    pub structured_content: Option<Value>,
    /// The result's `_meta`, if any.
    #[serde(rename = "_meta", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// `web_search`: the second `id` of codex's line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebSearchItem {
    /// The search's own id (`ws_...`). When the line has one `id` only (it
    /// went through a `serde_json::Value`), it is that id.
    pub id: String,
    /// What was searched.
    pub query: String,
    /// The search action (`{"type":"search",...}`, ...).
    pub action: Value,
}

/// One entry of a `todo_list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TodoItem {
    /// The step.
    pub text: String,
    /// Whether it is done.
    pub completed: bool,
}

/// `collab_tool_call` (absent from codex's TypeScript SDK). Tool and agent
/// states are strings: the set grows with codex versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CollabToolCallItem {
    /// `spawn_agent`, `send_input`, `wait`, `close_agent`, ...
    pub tool: String,
    /// The calling thread.
    pub sender_thread_id: String,
    /// The threads addressed.
    pub receiver_thread_ids: Vec<String>,
    /// The prompt sent, if any.
    pub prompt: Option<String>,
    /// Last known state of each agent, by thread id.
    pub agents_states: BTreeMap<String, CollabAgentState>,
    /// Its state.
    pub status: ToolStatus,
}

/// One agent's state in a [`CollabToolCallItem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CollabAgentState {
    /// `pending_init`, `running`, `completed`, `errored`, `shutdown`, ...
    pub status: String,
    /// Its last message, if any.
    pub message: Option<String>,
}

impl ThreadEvent {
    /// The event's `type`, as codex printed it (`""` if it had none).
    pub fn kind(&self) -> &str {
        match self {
            ThreadEvent::ThreadStarted { .. } => "thread.started",
            ThreadEvent::TurnStarted {} => "turn.started",
            ThreadEvent::TurnCompleted { .. } => "turn.completed",
            ThreadEvent::TurnFailed { .. } => "turn.failed",
            ThreadEvent::ItemStarted { .. } => "item.started",
            ThreadEvent::ItemUpdated { .. } => "item.updated",
            ThreadEvent::ItemCompleted { .. } => "item.completed",
            ThreadEvent::Error { .. } => "error",
            ThreadEvent::Other(value) => value["type"].as_str().unwrap_or_default(),
        }
    }

    /// The item of an `item.*` event.
    pub fn item(&self) -> Option<&ThreadItem> {
        match self {
            ThreadEvent::ItemStarted { item }
            | ThreadEvent::ItemUpdated { item }
            | ThreadEvent::ItemCompleted { item } => Some(item),
            _ => None,
        }
    }
}

impl ItemDetails {
    /// The item's `type`, as codex printed it (`""` if it had none).
    pub fn kind(&self) -> &str {
        match self {
            ItemDetails::AgentMessage { .. } => "agent_message",
            ItemDetails::Reasoning { .. } => "reasoning",
            ItemDetails::CommandExecution(_) => "command_execution",
            ItemDetails::FileChange(_) => "file_change",
            ItemDetails::McpToolCall(_) => "mcp_tool_call",
            ItemDetails::WebSearch(_) => "web_search",
            ItemDetails::TodoList { .. } => "todo_list",
            ItemDetails::CollabToolCall(_) => "collab_tool_call",
            ItemDetails::Error { .. } => "error",
            ItemDetails::Other(value) => value["type"].as_str().unwrap_or_default(),
        }
    }
}

// By hand because of codex's duplicate `id` key (see the module docs): the
// item is read entry by entry, so both ids are seen, in order.
impl<'de> Deserialize<'de> for ThreadItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = ThreadItem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an item object with an `id`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ThreadItem, A::Error> {
        let mut id = None;
        let mut rest = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "id" && id.is_none() {
                id = Some(map.next_value::<String>()?);
            } else {
                // A later duplicate of any other key wins, as in a Value.
                rest.insert(key, map.next_value()?);
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        if rest.get("type").and_then(Value::as_str) == Some("web_search")
            && !rest.contains_key("id")
        {
            rest.insert("id".to_owned(), Value::String(id.clone()));
        }
        let details = ItemDetails::deserialize(Value::Object(rest)).map_err(de::Error::custom)?;
        Ok(ThreadItem { id, details })
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
