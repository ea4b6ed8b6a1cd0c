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

use runner_protocol::{codes, decode_request, OutputLine, RunParams, StderrLine, ThreadEvent};
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
    /// Ask what the daemon is doing; answered with a `status` line.
    Status {
        /// Optional; echoed as the answer's `request_id`.
        id: Option<String>,
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

/// The described `Request` is written by hand (the decoder has no serde type
/// for a whole line), so check it against the decoder: every request type the
/// schema names decodes, and the decoder's list of the types it knows is the
/// schema's list.
#[test]
fn request_schema_names_every_request_type_the_decoder_takes() {
    let schema = serde_json::to_value(schema_for!(Request)).unwrap();
    let described: Vec<String> = schema["oneOf"]
        .as_array()
        .expect("request schema is a oneOf")
        .iter()
        .map(|variant| {
            variant["properties"]["type"]["const"]
                .as_str()
                .expect("each variant fixes `type`")
                .to_owned()
        })
        .collect();
    for kind in &described {
        let line = format!(r#"{{"type":"{kind}","id":"x","params":{{"prompt":"p"}}}}"#);
        let line = if kind == "run" {
            line
        } else {
            format!(r#"{{"type":"{kind}","id":"x"}}"#)
        };
        assert!(
            decode_request(line.as_bytes()).is_ok(),
            "the schema describes {kind:?}, which the decoder refuses: {line}"
        );
    }
    let unknown = decode_request(br#"{"type":"nope","id":"x"}"#).unwrap_err();
    assert_eq!(unknown.code, codes::REJECT_UNKNOWN_TYPE);
    let quoted: Vec<String> = described.iter().map(|k| format!("{k:?}")).collect();
    let expected = match quoted.as_slice() {
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
        [] => unreachable!(),
    };
    assert!(
        unknown.message.contains(&format!("(expected {expected})")),
        "the decoder knows other request types than the schema's {described:?}: {}",
        unknown.message
    );
}
