//! The `all_items` scenario: one turn with every item type codex 0.169.0 prints, with
//! realistic fields and lifecycles (see shared/codex-facts.md).

use crate::events::{self, it, Ctx};
use crate::out;
use serde_json::{json, Value};
use std::path::Path;

/// The web_search line exactly as the real CLI prints it: with a DUPLICATE `id` key.
/// Written as raw text because serde_json cannot produce duplicate keys.
const WEB_SEARCH: &str = r#"{"type":"item.completed","item":{"id":"item_5","type":"web_search","id":"ws_1","query":"rust","action":{"type":"search","query":"rust"}}}"#;

pub fn run(ctx: &Ctx) -> i32 {
    events::begin(ctx);
    let c = "item.completed";

    events::item(
        c,
        it("item_0", "reasoning").val("text", "**Planning**\n\nRun a command, then edit a file."),
    );

    // A command: in_progress with exit_code null, output streaming in, then completed.
    let cmd = |out: &str, code: Value, status: &str| {
        it("item_1", "command_execution")
            .val("command", "/bin/bash -lc 'echo hi'")
            .val("aggregated_output", out)
            .val("exit_code", code)
            .val("status", status)
    };
    events::item("item.started", cmd("", Value::Null, "in_progress"));
    events::item("item.updated", cmd("hi\n", Value::Null, "in_progress"));
    events::item(c, cmd("hi\n", json!(0), "completed"));

    let changes =
        json!([{"path": "src/lib.rs", "kind": "update"}, {"path": "NOTES.md", "kind": "add"}]);
    events::item(
        c,
        it("item_2", "file_change")
            .val("changes", changes)
            .val("status", "completed"),
    );

    let server = mcp_server_name(&ctx.home);
    let mcp = |result: Value, status: &str| {
        it("item_3", "mcp_tool_call")
            .val("server", server.as_str())
            .val("tool", "whoami")
            .val("arguments", json!({}))
            .val("result", result)
            .val("error", Value::Null)
            .val("status", status)
    };
    events::item("item.started", mcp(Value::Null, "in_progress"));
    let result = json!({"content": [{"type": "text", "text": "you are the fake"}], "structured_content": null});
    events::item(c, mcp(result, "completed"));

    let todo = |done: bool| {
        let items = json!([{"text": "run a command", "completed": true}, {"text": "edit a file", "completed": done}]);
        it("item_4", "todo_list").val("items", items)
    };
    events::item("item.started", todo(false));
    events::item("item.updated", todo(false));
    events::item(c, todo(true));

    out::line(WEB_SEARCH);

    let helper = "019a0000-0000-7000-8000-00000000c0de";
    let collab = |status: &str, state: &str| {
        it("item_6", "collab_tool_call")
            .val("tool", "spawn_agent")
            .val("sender_thread_id", ctx.thread_id.as_str())
            .val("receiver_thread_ids", json!([helper]))
            .val("prompt", "check the tests")
            .val(
                "agents_states",
                json!({ helper: {"status": state, "message": null} }),
            )
            .val("status", status)
    };
    events::item("item.started", collab("in_progress", "pending_init"));
    events::item(c, collab("completed", "running"));

    events::item(
        c,
        it("item_7", "error").val("message", "fake non-fatal error item"),
    );

    events::agent_message("item_8", &events::echo_text(ctx));
    events::turn_completed(ctx);
    0
}

/// The first `[mcp_servers.NAME]` (or `[mcp_servers.NAME.sub]`, `[mcp_servers."a.b"]`)
/// table in `$CODEX_HOME/config.toml`, so tests can check the runner's config reached
/// codex; "probe" when there is none.
fn mcp_server_name(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("config.toml")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("[mcp_servers.")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .find_map(|rest| match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().map(str::to_string),
            None => rest.split('.').next().map(|s| s.trim().to_string()),
        })
        .unwrap_or_else(|| "probe".to_string())
}
