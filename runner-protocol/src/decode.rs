//! Decoding one request line.
//!
//! Decoding happens in two stages so that every line gets the most precise
//! answer possible: first the envelope (`type`, `id`), whose failures can only
//! be answered with a `rejected` line, then the `run` params, whose failures
//! are answered with that run's own `end` line.

use serde_json::{Map, Value};

use crate::codes;
use crate::params::RunParams;
use crate::strict::{self, NestedDuplicate, StrictError};
use crate::validate::{validate, validate_run_id, InvalidParams};

/// A decoded request line.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Start one turn. `params` is `Err` when the id names the run but the
    /// params, or the id itself as a value codex is given, are not usable:
    /// the daemon answers with that id's `end` (code `invalid_params`),
    /// unless the id is a duplicate of a live run.
    Run {
        /// The run id chosen by the client; unique among live runs.
        id: String,
        /// The validated params, or why they are invalid.
        params: Result<Box<RunParams>, InvalidParams>,
    },
    /// Cancel a queued or running turn.
    Cancel {
        /// The id of the run to cancel.
        id: String,
    },
    /// Ask what the daemon is doing; answered with a `status` line.
    Status {
        /// An optional id, echoed as the answer's `request_id`.
        request_id: Option<String>,
    },
}

/// A line that cannot be attributed to a run; answered with a `rejected` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// One of the `REJECT_*` codes in [`crate::codes`].
    pub code: &'static str,
    /// What was wrong, naming the field.
    pub message: String,
    /// The id the line carried, if one could be read.
    pub request_id: Option<String>,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            request_id: None,
        }
    }
}

/// Decodes one request line (without its trailing newline; a trailing `\r`
/// is tolerated).
pub fn decode_request(line: &[u8]) -> Result<Request, Rejection> {
    let text = std::str::from_utf8(line).map_err(|e| {
        Rejection::new(
            codes::REJECT_INVALID_UTF8,
            format!("request is not valid UTF-8: {e}"),
        )
    })?;
    let text = text.trim_end_matches('\r');
    if text.starts_with('\u{feff}') {
        return Err(Rejection::new(
            codes::REJECT_MALFORMED_JSON,
            "request starts with a byte order mark (U+FEFF), which only the first line of the input may have",
        ));
    }
    let (value, nested_duplicate) = match strict::parse(text) {
        Ok(parsed) => parsed,
        Err(StrictError::Json(e)) => {
            return Err(Rejection::new(
                codes::REJECT_MALFORMED_JSON,
                format!("request is not valid JSON: {e}"),
            ))
        }
        // Which run, or which kind of request, would be a guess.
        Err(StrictError::Duplicate { key }) => {
            return Err(Rejection::new(
                codes::REJECT_MALFORMED_JSON,
                format!("request has the key {key:?} twice"),
            ))
        }
    };
    match (decode_value(value)?, nested_duplicate) {
        // The envelope is sound: a run still gets its `end`.
        (Request::Run { id, .. }, Some(NestedDuplicate { at, key })) => Ok(Request::Run {
            id,
            params: Err(InvalidParams::new(
                format!("{at}.{key}"),
                format!("{at}: key {key:?} given twice"),
            )),
        }),
        (request, _) => Ok(request),
    }
}

/// Decodes a request already parsed into a value.
fn decode_value(value: Value) -> Result<Request, Rejection> {
    let Value::Object(mut object) = value else {
        return Err(Rejection::new(
            codes::REJECT_MALFORMED_JSON,
            format!("request must be a JSON object, got {}", kind_of(&value)),
        ));
    };

    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(Rejection::new(
                codes::REJECT_UNKNOWN_TYPE,
                format!("field `type` must be a string, got {}", kind_of(&other)),
            ))
        }
        None => {
            return Err(Rejection::new(
                codes::REJECT_UNKNOWN_TYPE,
                "missing field `type` (expected \"run\", \"cancel\" or \"status\")",
            ))
        }
    };
    if kind == "status" {
        return status_request(object);
    }
    if kind != "run" && kind != "cancel" {
        let mut rejection = Rejection::new(
            codes::REJECT_UNKNOWN_TYPE,
            format!("unknown request type {kind:?} (expected \"run\", \"cancel\" or \"status\")"),
        );
        rejection.request_id = object.get("id").and_then(Value::as_str).map(str::to_owned);
        return Err(rejection);
    }

    let id = take_id(&mut object)?;
    if kind == "cancel" {
        if let Some(field) = object.keys().next() {
            return Err(Rejection {
                code: codes::REJECT_INVALID_REQUEST,
                message: format!("unknown field `{field}` in cancel request"),
                request_id: Some(id),
            });
        }
        return Ok(Request::Cancel { id });
    }
    let params = validate_run_id(&id)
        .and_then(|()| run_params(object))
        .map(Box::new);
    Ok(Request::Run { id, params })
}

/// `{"type":"status"}`, with an optional string `id` and nothing else.
fn status_request(mut object: Map<String, Value>) -> Result<Request, Rejection> {
    let request_id = match object.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(other) => {
            return Err(Rejection::new(
                codes::REJECT_MISSING_ID,
                format!(
                    "field `id` of a status request must be a string, got {}",
                    kind_of(&other)
                ),
            ))
        }
    };
    if let Some(field) = object.keys().next() {
        return Err(Rejection {
            code: codes::REJECT_INVALID_REQUEST,
            message: format!("unknown field `{field}` in status request"),
            request_id,
        });
    }
    Ok(Request::Status { request_id })
}

fn take_id(object: &mut Map<String, Value>) -> Result<String, Rejection> {
    match object.remove("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        Some(Value::String(_)) => Err(Rejection::new(
            codes::REJECT_MISSING_ID,
            "field `id` must be a non-empty string",
        )),
        Some(other) => Err(Rejection::new(
            codes::REJECT_MISSING_ID,
            format!("field `id` must be a string, got {}", kind_of(&other)),
        )),
        None => Err(Rejection::new(
            codes::REJECT_MISSING_ID,
            "missing field `id`",
        )),
    }
}

/// The params of a run, from what is left of the object once `type` and `id`
/// are taken.
fn run_params(mut object: Map<String, Value>) -> Result<RunParams, InvalidParams> {
    let params = object.remove("params");
    if let Some(field) = object.keys().next() {
        return Err(InvalidParams::new(
            field.clone(),
            format!("unknown field `{field}` in run request (expected `type`, `id`, `params`)"),
        ));
    }
    let params = match params {
        Some(Value::Object(params)) => params,
        Some(other) => {
            return Err(InvalidParams::new(
                "params",
                format!("field `params` must be an object, got {}", kind_of(&other)),
            ))
        }
        None => return Err(InvalidParams::new("params", "missing field `params`")),
    };
    let mut params: RunParams =
        serde_path_to_error::deserialize(Value::Object(params)).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "params".to_owned()
            } else {
                format!("params.{path}")
            };
            let message = format!("{field}: {}", without_string_value(e.inner().to_string()));
            InvalidParams::new(field, message)
        })?;
    validate(&params)?;
    if let Some(resume) = &mut params.resume {
        // codex prints thread ids in lower case and finds a thread by its
        // rollout's file name; one spelling also keeps two turns of a
        // thread from running at once whatever case the client sent.
        resume.make_ascii_lowercase();
    }
    Ok(params)
}

/// serde's `invalid type: string "…", expected …` (and `invalid value`)
/// quotes the string it got, which may be a secret sent in the wrong place
/// (`http_headers` as `"Bearer …"`); it reaches the `end` line and the
/// log. Keeps what it is and what was expected, not the value.
fn without_string_value(message: String) -> String {
    for head in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(head) else {
            continue;
        };
        if let (Some(_), Some(at)) = (rest.strip_prefix("string \""), rest.rfind("\", expected ")) {
            return format!("{head}a string{}", &rest[at + 1..]);
        }
    }
    message
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
