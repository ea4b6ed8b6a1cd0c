//! What the mock model answers: a [`Script`] of [`Reply`]s, and the
//! bookkeeping that carries an MCP tool call through its several requests.
//!
//! One MCP tool call is up to three model requests with gpt-5.5, whose MCP
//! tools are deferred behind `tool_search`:
//! 1. the prompt: the mock emits a `tool_search_call`;
//! 2. codex sends the `tool_search_output`: the mock emits the namespaced
//!    `function_call`;
//! 3. codex sends the `function_call_output`: the mock answers with a message
//!    that quotes it.
//!
//! Requests 2 and 3 continue a call the mock started, so they are answered
//! here without consulting the script: one `Reply::mcp_tool` covers the whole
//! dance, and the script's next reply goes to the next user turn.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use crate::{mock_request::RecordedRequest, sse};

/// How the mock answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An assistant message with this text.
    Message(String),
    /// Call `tool` of MCP server `server` (its name in config.toml) with
    /// `args`, going through `tool_search` when the tools are deferred; the
    /// final message is `tool <tool> returned: <output text>`.
    McpTool {
        server: String,
        tool: String,
        args: Value,
    },
    /// `response.failed` with this error message (codex: `turn.failed`).
    Failed(String),
    /// A plain HTTP error response with this status and JSON error body.
    HttpError { status: u16, message: String },
    /// Send the headers and `response.created`, then nothing: the stream stays
    /// open until the mock is dropped.
    Stall,
    /// Whatever [`Script::Default`] would answer.
    Default,
}

impl Reply {
    pub fn message(text: impl Into<String>) -> Self {
        Self::Message(text.into())
    }

    pub fn mcp_tool(server: impl Into<String>, tool: impl Into<String>, args: Value) -> Self {
        Self::McpTool {
            server: server.into(),
            tool: tool.into(),
            args,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    pub fn http_500() -> Self {
        Self::HttpError {
            status: 500,
            message: "mock internal error".into(),
        }
    }

    pub fn http_401() -> Self {
        Self::HttpError {
            status: 401,
            message: "mock: invalid api key".into(),
        }
    }
}

/// A closure that chooses the reply from the request.
pub type ReplyFn = Box<dyn FnMut(&RecordedRequest) -> Reply + Send>;

/// The mock model's behaviour for requests that do not continue a tool call.
#[derive(Default)]
pub enum Script {
    /// If the last input item is a `function_call_output`, a message quoting
    /// it; else if the prompt says `call TOOL on SERVER` (optionally followed
    /// by `with {json args}`) and MCP tools are offered, that tool call; else
    /// the message `ok: <prompt>`.
    #[default]
    Default,
    /// One reply per request, in order; when empty, [`Script::Default`].
    Queue(VecDeque<Reply>),
    /// A closure that sees every such request.
    Fn(ReplyFn),
}

impl Script {
    pub fn queue(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self::Queue(replies.into_iter().collect())
    }

    pub fn from_fn(reply: impl FnMut(&RecordedRequest) -> Reply + Send + 'static) -> Self {
        Self::Fn(Box::new(reply))
    }
}

/// What the HTTP layer sends.
pub(crate) enum Outcome {
    /// 200 with these SSE events.
    Events(Vec<Value>),
    /// 200 with this first event, then silence.
    Stall(Value),
    Http {
        status: u16,
        body: Value,
    },
}

#[derive(Debug, Clone)]
struct ToolCall {
    server: String,
    tool: String,
    args: Value,
}

/// Applies a [`Script`], remembering the tool calls in flight by `call_id`.
pub(crate) struct Responder {
    script: Script,
    responses: u64,
    searches: HashMap<String, ToolCall>,
    calls: HashMap<String, ToolCall>,
}

impl Responder {
    pub(crate) fn new(script: Script) -> Self {
        Self {
            script,
            responses: 0,
            searches: HashMap::new(),
            calls: HashMap::new(),
        }
    }

    pub(crate) fn respond(&mut self, request: &RecordedRequest) -> Outcome {
        self.responses += 1;
        let reply = match self
            .continuation(request)
            .unwrap_or_else(|| self.scripted(request))
        {
            Reply::Default => default_reply(request),
            reply => reply,
        };
        self.respond_with(reply, request, self.responses)
    }

    fn respond_with(&mut self, reply: Reply, request: &RecordedRequest, n: u64) -> Outcome {
        let id = format!("resp_{n}");
        let item = match reply {
            Reply::Message(text) => sse::message(&format!("msg_{n}"), &text),
            Reply::McpTool { server, tool, args } => {
                self.tool_step(request, ToolCall { server, tool, args }, n)
            }
            Reply::Failed(message) => {
                return Outcome::Events(vec![sse::created(&id), sse::failed(&id, &message)])
            }
            Reply::HttpError { status, message } => {
                let body =
                    json!({"error": {"message": message, "type": "mock_error", "code": null}});
                return Outcome::Http { status, body };
            }
            Reply::Stall => return Outcome::Stall(sse::created(&id)),
            Reply::Default => unreachable!("resolved by respond"),
        };
        let mut events = vec![sse::created(&id)];
        events.extend(sse::item(item));
        events.push(sse::completed(&id));
        Outcome::Events(events)
    }

    /// Requests 2 and 3 of a tool call the mock started.
    fn continuation(&mut self, request: &RecordedRequest) -> Option<Reply> {
        let last = request.last_input()?;
        let call_id = last["call_id"].as_str()?;
        match last["type"].as_str()? {
            "tool_search_output" => {
                let call = self.searches.remove(call_id)?;
                Some(Reply::McpTool {
                    server: call.server,
                    tool: call.tool,
                    args: call.args,
                })
            }
            "function_call_output" => {
                let call = self.calls.remove(call_id)?;
                Some(Reply::Message(format!(
                    "tool {} returned: {}",
                    call.tool,
                    output_text(last)
                )))
            }
            _ => None,
        }
    }

    fn scripted(&mut self, request: &RecordedRequest) -> Reply {
        match &mut self.script {
            Script::Default => Reply::Default,
            Script::Queue(queue) => queue.pop_front().unwrap_or(Reply::Default),
            Script::Fn(reply) => reply(request),
        }
    }

    /// The next output item of a tool call: a `tool_search_call` while the
    /// tool is deferred, else the namespaced `function_call`.
    fn tool_step(&mut self, request: &RecordedRequest, call: ToolCall, n: u64) -> Value {
        let namespace = namespace(&call.server);
        let searched = request
            .last_input()
            .is_some_and(|i| i["type"] == "tool_search_output");
        let deferred = request.tool(&namespace).is_none() && request.tool("tool_search").is_some();
        if deferred && !searched {
            let call_id = format!("search_{n}");
            let item = sse::tool_search_call(&call_id, &call.tool);
            self.searches.insert(call_id, call);
            return item;
        }
        let call_id = format!("call_{n}");
        let item = sse::function_call(&call_id, &namespace, &call.tool, &call.args);
        self.calls.insert(call_id, call);
        item
    }
}

/// The model-visible namespace of an MCP server: `mcp__` plus the name with
/// every character outside `[A-Za-z0-9_]` replaced by `_`.
pub fn namespace(server: &str) -> String {
    let name: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("mcp__{name}")
}

fn default_reply(request: &RecordedRequest) -> Reply {
    let last = request.last_input();
    if let Some(output) = last.filter(|item| item["type"] == "function_call_output") {
        return Reply::Message(format!("tool returned: {}", output_text(output)));
    }
    let prompt = request.prompt().unwrap_or("").trim();
    let offers_mcp = request
        .tool_names()
        .iter()
        .any(|name| *name == "tool_search" || name.starts_with("mcp__"));
    match parse_call(prompt) {
        Some((server, tool, args)) if offers_mcp => Reply::McpTool { server, tool, args },
        _ => Reply::Message(format!("ok: {prompt}")),
    }
}

/// Parses `... call TOOL on SERVER [with {json}]`.
fn parse_call(prompt: &str) -> Option<(String, String, Value)> {
    let rest = &prompt[prompt.find("call ")? + "call ".len()..];
    let (tool, rest) = rest.split_once(" on ")?;
    let (server, args) = match rest.split_once(" with ") {
        Some((server, args)) => (server, serde_json::from_str(args.trim()).ok()?),
        None => (rest, json!({})),
    };
    let (tool, server) = (tool.trim(), server.trim());
    let word = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    (word(tool) && word(server)).then(|| (server.to_owned(), tool.to_owned(), args))
}

/// The text of a `function_call_output`: codex sends a string, or content
/// parts with `text`.
fn output_text(item: &Value) -> String {
    match &item["output"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_prompts() {
        assert_eq!(
            parse_call("please call whoami on probe"),
            Some(("probe".into(), "whoami".into(), json!({})))
        );
        assert_eq!(
            parse_call("call write_note on probe with {\"text\": \"hi there\"}"),
            Some((
                "probe".into(),
                "write_note".into(),
                json!({"text": "hi there"})
            ))
        );
        assert_eq!(parse_call("say hi"), None);
        assert_eq!(parse_call("call it on a good day"), None);
    }

    #[test]
    fn namespaces_replace_odd_characters() {
        assert_eq!(namespace("a.b-c"), "mcp__a_b_c");
    }
}
