//! The scenario table and the scenarios that only print events. Those that play with
//! processes, signals and file descriptors live in `procs.rs`.

use crate::events::{self, it, Ctx};
use crate::{all_items, out, procs};

/// Every scenario name. `config_error` is handled in main (it fails before any thread).
pub const NAMES: &[&str] = &[
    "ok",
    "all_items",
    "unknown_events",
    "turn_failed",
    "error_then_ok",
    "exit_nonzero",
    "crash",
    "garbage",
    "long_line",
    "stderr_noise",
    "many",
    "slow",
    "hang",
    "hang_ignore_sigint",
    "gate",
    "config_error",
    "no_stdin_read",
    "close_stdout",
    "spawn_descendants",
];

/// Runs scenario `name` and returns the exit code (some scenarios never return).
pub fn run(name: &str, ctx: &Ctx) -> i32 {
    match name {
        "ok" | "no_stdin_read" => {
            events::ok_turn(ctx);
            0
        }
        "all_items" => all_items::run(ctx),
        "unknown_events" => unknown_events(ctx),
        "turn_failed" => turn_failed(ctx),
        "error_then_ok" => {
            // A retry notice before turn.started, as the real CLI can print one.
            events::thread_started(ctx);
            events::error("Reconnecting... 1/5 (fake)");
            events::turn_started();
            events::finish(ctx, &events::echo_text(ctx));
            0
        }
        "exit_nonzero" => {
            events::begin(ctx);
            out::err_line("fatal: fake codex crashed the turn");
            out::exit_code(3)
        }
        "garbage" => garbage(ctx),
        "long_line" => long_line(ctx),
        "stderr_noise" => {
            for k in 1..=out::knob("FAKE_CODEX_STDERR_LINES", 10_000) {
                out::err_line(&format!("noise line {k}"));
            }
            events::ok_turn(ctx);
            out::exit_code(0)
        }
        "many" => many(ctx, 100, 0),
        "slow" => many(ctx, 5, 50),
        other => procs::run(other, ctx),
    }
}

fn unknown_events(ctx: &Ctx) -> i32 {
    events::begin(ctx);
    out::line(r#"{"type":"turn.future_thing","x":1}"#);
    out::line(
        r#"{"type":"item.completed","item":{"id":"item_9","type":"future_item","payload":{"a":[1,2]}}}"#,
    );
    events::finish(ctx, &events::echo_text(ctx));
    0
}

/// A fatal model error: `error` then `turn.failed`, exit 1 (the real CLI's sequence).
fn turn_failed(ctx: &Ctx) -> i32 {
    let msg =
        std::env::var("FAKE_CODEX_FAIL_MESSAGE").unwrap_or_else(|_| "fake model failure".into());
    events::begin(ctx);
    events::error(&msg);
    let error = crate::obj::Obj::new().val("message", msg.as_str()).done();
    out::line(&events::ev("turn.failed").raw("error", &error).done());
    1
}

/// The ok turn with non-JSON and non-event lines between the events: a reader must
/// skip (or report) them without losing the real events around them.
fn garbage(ctx: &Ctx) -> i32 {
    events::thread_started(ctx);
    out::line("this is not json");
    events::turn_started();
    out::line("[1,2,3]");
    events::item(
        "item.started",
        it("item_0", "agent_message").val("text", ""),
    );
    out::line("\"a string\"");
    out::line("");
    events::item(
        "item.completed",
        it("item_0", "agent_message").val("text", events::echo_text(ctx)),
    );
    out::line(r#"{"type":"broken""#);
    // Valid JSON but for its UTF-8 (a lone 0xff in a string): not JSON text.
    out::raw(b"{\"type\":\"item.completed\",\"item\":{\"id\":\"not_utf8\",\"text\":\"\xff\"}}\n");
    events::turn_completed(ctx);
    0
}

/// One item.completed line carrying FAKE_CODEX_LONG_BYTES of text (default 40 MiB),
/// built by hand to avoid holding several copies of it.
fn long_line(ctx: &Ctx) -> i32 {
    let n = out::knob("FAKE_CODEX_LONG_BYTES", 40 * 1024 * 1024) as usize;
    events::begin(ctx);
    let head = r#"{"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":""#;
    let tail = "\"}}\n";
    let mut buf = Vec::with_capacity(head.len() + n + tail.len());
    buf.extend_from_slice(head.as_bytes());
    buf.resize(head.len() + n, b'x');
    buf.extend_from_slice(tail.as_bytes());
    out::raw(&buf);
    events::turn_completed(ctx);
    0
}

/// FAKE_CODEX_EVENTS agent_message items `item_K` with text `K:xxx…` padded to
/// FAKE_CODEX_PAYLOAD bytes, each preceded by a FAKE_CODEX_DELAY_MS sleep; thread and
/// turn events come without delay so a test sees the turn start at once.
fn many(ctx: &Ctx, default_events: u64, default_delay: u64) -> i32 {
    let count = out::knob("FAKE_CODEX_EVENTS", default_events);
    let payload = out::knob("FAKE_CODEX_PAYLOAD", 64) as usize;
    let delay = out::knob("FAKE_CODEX_DELAY_MS", default_delay);
    events::begin(ctx);
    for k in 0..count {
        let mut text = format!("{k}:");
        let pad = payload.saturating_sub(text.len());
        text.extend(std::iter::repeat('x').take(pad));
        out::sleep_ms(delay);
        events::item(
            "item.completed",
            it(&format!("item_{k}"), "agent_message").val("text", text),
        );
    }
    events::turn_completed(ctx);
    0
}
