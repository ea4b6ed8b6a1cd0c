//! Builders for the `codex exec --json` events every scenario shares.

use crate::obj::Obj;
use crate::out;
use std::path::PathBuf;

/// What a scenario knows about its turn.
pub struct Ctx {
    pub thread_id: String,
    /// 1-based turn number within the thread.
    pub turn: u64,
    pub prompt: String,
    pub home: PathBuf,
}

/// An object starting with `"type": kind`, as the real CLI prints every event.
pub fn ev(kind: &str) -> Obj {
    Obj::new().val("type", kind)
}

/// An item starting with `id` and `type`; add its fields, then pass it to [`item`].
pub fn it(id: &str, kind: &str) -> Obj {
    Obj::new().val("id", id).val("type", kind)
}

/// Prints `{"type": kind, "item": item}` (kind: item.started|item.updated|item.completed).
pub fn item(kind: &str, item: Obj) {
    out::line(&ev(kind).raw("item", &item.done()).done());
}

pub fn thread_started(ctx: &Ctx) {
    out::line(
        &ev("thread.started")
            .val("thread_id", ctx.thread_id.as_str())
            .done(),
    );
}

pub fn turn_started() {
    out::line(&ev("turn.started").done());
}

/// thread.started then turn.started: how every event-printing scenario begins.
pub fn begin(ctx: &Ctx) {
    thread_started(ctx);
    turn_started();
}

/// An `error` event (not necessarily fatal: the real CLI reports retries this way).
pub fn error(message: &str) {
    out::line(&ev("error").val("message", message).done());
}

/// turn.completed with usage CUMULATIVE over the thread, like the real CLI (100 input
/// and 10 output tokens per turn, so turn N reports 100*N and 10*N).
pub fn turn_completed(ctx: &Ctx) {
    let usage = Obj::new()
        .val("input_tokens", 100 * ctx.turn)
        .val("cached_input_tokens", 0)
        .val("cache_write_input_tokens", 0)
        .val("output_tokens", 10 * ctx.turn)
        .val("reasoning_output_tokens", 0)
        .done();
    out::line(&ev("turn.completed").raw("usage", &usage).done());
}

/// The `ok` reply: the whole prompt and the turn number, so tests can check both.
pub fn echo_text(ctx: &Ctx) -> String {
    format!("echo: {} (turn {})", ctx.prompt, ctx.turn)
}

/// An agent_message item: started with empty text, then completed with `text`.
pub fn agent_message(id: &str, text: &str) {
    item("item.started", it(id, "agent_message").val("text", ""));
    item("item.completed", it(id, "agent_message").val("text", text));
}

/// Ends a turn normally: agent_message item_0 with `text`, then turn.completed.
pub fn finish(ctx: &Ctx, text: &str) {
    agent_message("item_0", text);
    turn_completed(ctx);
}

/// The whole `ok` turn.
pub fn ok_turn(ctx: &Ctx) {
    begin(ctx);
    finish(ctx, &echo_text(ctx));
}
