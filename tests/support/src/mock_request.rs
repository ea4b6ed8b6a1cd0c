//! One request as the mock model received it, with accessors for the parts of
//! a Responses API body that tests assert on.

use std::collections::BTreeMap;

use serde_json::Value;

/// A request to the mock model: kept whole so a test can assert on anything
/// codex sent (headers such as `x-codex-turn-metadata`, the `input` items,
/// the offered `tools`, `model`, ...).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path, e.g. `/v1/responses`.
    pub path: String,
    /// Header names are lowercase; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body, or `Value::Null` if it was not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// A header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `input` items (empty if absent).
    pub fn input(&self) -> &[Value] {
        self.body["input"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The last `input` item: what the model is asked to answer. After a tool
    /// call it is the `function_call_output` / `tool_search_output`.
    pub fn last_input(&self) -> Option<&Value> {
        self.input().last()
    }

    /// The text of every `input_text` part of every message with this role
    /// (`user`, `developer`, `assistant`), in order.
    pub fn texts_of_role(&self, role: &str) -> Vec<&str> {
        self.input()
            .iter()
            .filter(|item| item["type"] == "message" && item["role"] == role)
            .flat_map(|item| item["content"].as_array().into_iter().flatten())
            .filter_map(|part| part["text"].as_str())
            .collect()
    }

    /// The user's prompt: the text of the LAST user message. Codex also sends
    /// an `<environment_context>` user message, but before the prompt.
    pub fn prompt(&self) -> Option<&str> {
        let last = self
            .input()
            .iter()
            .rev()
            .find(|item| item["type"] == "message" && item["role"] == "user")?;
        last["content"]
            .as_array()?
            .iter()
            .rev()
            .find_map(|part| part["text"].as_str())
    }

    /// The offered tools, each named by `name` when it has one (functions,
    /// namespaces such as `mcp__probe`) else by `type` (`tool_search`,
    /// `web_search`).
    pub fn tool_names(&self) -> Vec<&str> {
        self.body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tool| tool["name"].as_str().or_else(|| tool["type"].as_str()))
            .collect()
    }

    /// The offered tool with this `name` (or, for unnamed tools, `type`).
    pub fn tool(&self, name: &str) -> Option<&Value> {
        self.body["tools"]
            .as_array()?
            .iter()
            .find(|tool| tool["name"].as_str().or_else(|| tool["type"].as_str()) == Some(name))
    }

    /// Whether any input item serialises to JSON containing `needle`: a blunt
    /// but robust check for "this text reached the model".
    pub fn input_contains(&self, needle: &str) -> bool {
        self.input()
            .iter()
            .any(|item| item.to_string().contains(needle))
    }
}
