//! The JSON Schemas in `docs/schema/` are generated from the Rust types; this
//! test fails when they drift apart. Regenerate them with
//!
//! ```sh
//! UPDATE_SCHEMA=1 cargo test -p runner-protocol --features schema --test schema
//! ```
//!
//! `cargo test --workspace` runs it too: codex-runner-client's dev-dependency
//! turns the `schema` feature on.
#![cfg(feature = "schema")]

use std::path::PathBuf;

use runner_protocol::{OutputLine, RunParams, StderrLine, ThreadEvent};
use schemars::{schema_for, JsonSchema, Schema};

/// One request line on the daemon's stdin.
///
/// The crate decodes requests by hand, in two stages (see `decode_request`),
/// so it has no serde type for a whole line; this one describes it.
#[derive(JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code, clippy::large_enum_variant)] // only described, never built
enum Request {
    /// Start one turn.
    Run {
        /// Chosen by the client; unique among runs that have not ended. At
        /// most 4096 bytes, without control characters (codex gets it in its
        /// environment and HTTP MCP servers in a header).
        #[schemars(length(min = 1, max = 4096), pattern(r"^[^\u0000-\u001f\u007f]*$"))]
        id: String,
        /// The turn's params. Exactly one of `input` and `prompt` is required.
        params: RunParams,
    },
    /// Stop a queued or running turn.
    Cancel {
        /// The run to cancel.
        #[schemars(length(min = 1))]
        id: String,
    },
}

fn check(file: &str, schema: Schema) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/schema")
        .join(file);
    let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| !v.is_empty()) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/schema/{file} does not match the Rust types. Regenerate it with\n  \
         UPDATE_SCHEMA=1 cargo test -p runner-protocol --features schema --test schema\n\
         and check the diff in."
    );
}

#[test]
fn request_schema_is_up_to_date() {
    check("request.schema.json", schema_for!(Request));
}

#[test]
fn output_schema_is_up_to_date() {
    check("output.schema.json", schema_for!(OutputLine));
}

#[test]
fn stderr_schema_is_up_to_date() {
    check("stderr.schema.json", schema_for!(StderrLine));
}

#[test]
fn event_schema_is_up_to_date() {
    check("event.schema.json", schema_for!(ThreadEvent));
}
