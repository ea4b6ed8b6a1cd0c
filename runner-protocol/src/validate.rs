//! Validation of run params beyond their types, done before anything is
//! spawned: codex silently drops an MCP server with an invalid name, and a
//! header value with a newline would be a header-injection hole, so both are
//! refused here with a message that names the field.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::params::{InputContent, McpServer, RunParams};

/// Why a run's params were refused. Rendered as the run's `end` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidParams {
    /// Path of the offending field, such as `params.mcp_servers.probe.url`.
    pub field: String,
    /// The whole message, naming the field.
    pub message: String,
}

impl InvalidParams {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidParams {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Env names the runner sets itself for every turn; a request may not
/// override them.
const RESERVED_ENV: &[&str] = &["CODEX_HOME", "CODEX_RUNNER_RUN_ID"];

/// Longest run id accepted, in bytes.
pub const MAX_RUN_ID_BYTES: usize = 4096;

/// Longest time limit accepted, in seconds (about 31 years): every duration
/// is added to a clock reading, which a larger one would overflow.
pub const MAX_SECONDS: f64 = 1e9;

/// `value` as a time limit: finite, positive and at most [`MAX_SECONDS`].
fn positive_seconds(value: f64) -> bool {
    value.is_finite() && value > 0.0 && value <= MAX_SECONDS
}

/// A number of seconds as an error message quotes it: `1e300`, not its
/// three hundred digits.
pub fn seconds_text(value: f64) -> String {
    if value != 0.0 && !(1e-3..1e15).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// A run id goes where a control character breaks things: into codex's
/// environment (`CODEX_RUNNER_RUN_ID`, where a NUL cannot be) and into the
/// `X-Codex-Runner-Run-Id` header to every HTTP MCP server (where CR or LF
/// would inject a header). Refused up front, so the run ends with a reason
/// rather than failing later as if codex could not be started.
pub(crate) fn validate_run_id(id: &str) -> Result<(), InvalidParams> {
    if id.len() > MAX_RUN_ID_BYTES {
        return Err(InvalidParams::new(
            "id",
            format!(
                "id: {} bytes long, over the limit of {MAX_RUN_ID_BYTES}",
                id.len()
            ),
        ));
    }
    if id.chars().any(|c| c.is_ascii_control()) {
        return Err(InvalidParams::new("id", format!("id: {CONTROL_IN_HEADER}")));
    }
    Ok(())
}

/// Why a value that reaches an HTTP header may not hold control characters.
const CONTROL_IN_HEADER: &str = "must not contain control characters (U+0000 to U+001F, U+007F): \
it is sent to HTTP MCP servers in a header";

/// The tool namespace codex gives a server's tools: `mcp__` + the name with
/// every character outside `[A-Za-z0-9_]` replaced by `_`.
pub fn tool_namespace(server_name: &str) -> String {
    let mapped: String = server_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("mcp__{mapped}")
}

pub(crate) fn validate(p: &RunParams) -> Result<(), InvalidParams> {
    validate_input(p)?;
    for (field, value) in [
        ("model", &p.model),
        ("cwd", &p.cwd),
        ("resume", &p.resume),
        ("profile", &p.profile),
    ] {
        if let Some(value) = value {
            arg_value(&format!("params.{field}"), value)?;
        }
    }
    if let Some(resume) = &p.resume {
        // codex takes anything else for a thread *name*, finds none in the
        // turn's fresh home and silently starts a new, empty thread.
        if !is_thread_id(resume) {
            return Err(InvalidParams::new(
                "params.resume",
                format!("params.resume: {:?} is not a thread id (a UUID, as in the thread_id of a thread.started event); codex would start a new thread instead", cut(resume)),
            ));
        }
    }
    if let Some(profile) = &p.profile {
        if profile.is_empty()
            || !profile
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            return Err(InvalidParams::new(
                "params.profile",
                format!("params.profile: {:?} is not a profile name codex takes (letters, digits, '_' and '-')", cut(profile)),
            ));
        }
    }
    for (i, dir) in p.additional_directories.iter().enumerate() {
        arg_value(&format!("params.additional_directories[{i}]"), dir)?;
    }
    if let Some(t) = p.timeout_secs {
        if !positive_seconds(t) {
            return Err(InvalidParams::new(
                "params.timeout_secs",
                format!("params.timeout_secs: must be a positive number of seconds, at most {MAX_SECONDS:e}, got {}", seconds_text(t)),
            ));
        }
    }
    if let Some(hierarchy) = &p.agent_instance_hierarchy {
        // Exported to codex's environment, where a NUL cannot be.
        if hierarchy.contains('\0') {
            return Err(InvalidParams::new(
                "params.agent_instance_hierarchy",
                "params.agent_instance_hierarchy: must not contain NUL",
            ));
        }
    }
    env_map("params.env", &p.env)?;
    for name in RESERVED_ENV {
        if p.env.contains_key(*name) {
            return Err(InvalidParams::new(
                "params.env",
                format!("params.env: {name} is set by the runner for every turn and cannot be overridden"),
            ));
        }
    }
    for (key, value) in &p.config {
        config_entry(key, value)?;
    }
    validate_servers(&p.mcp_servers)
}

fn validate_input(p: &RunParams) -> Result<(), InvalidParams> {
    match (&p.input, &p.prompt) {
        (None, None) => Err(InvalidParams::new(
            "params.input",
            "params: one of `input` or `prompt` is required",
        )),
        (Some(_), Some(_)) => Err(InvalidParams::new(
            "params.prompt",
            "params: give either `input` or `prompt`, not both",
        )),
        _ => {
            if let Some(InputContent::Parts(parts)) = p.input.as_ref().map(|i| &i.content) {
                if parts.is_empty() {
                    return Err(InvalidParams::new(
                        "params.input.content",
                        "params.input.content: must not be an empty array",
                    ));
                }
            }
            for (i, path) in p.images().into_iter().enumerate() {
                let field = format!("params.input.content[image {i}].path");
                arg_value(&field, path)?;
                // `--image=a,b.png` is two images to codex 0.169.0: `a` and
                // `b.png` (checked against the binary).
                if path.contains(',') {
                    let message = format!("{field}: codex splits image paths at commas: give a path without one (a link to the file will do)");
                    return Err(InvalidParams::new(&field, message));
                }
            }
            if p.prompt_text().trim().is_empty() {
                return Err(InvalidParams::new(
                    "params.input",
                    "params: the input has no text (codex needs a prompt)",
                ));
            }
            Ok(())
        }
    }
}

/// A value that becomes one argv element.
/// A thread id as codex prints it: a hyphenated UUID (either case).
fn is_thread_id(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// At most the first 64 characters of a value quoted in an error.
fn cut(value: &str) -> &str {
    value
        .char_indices()
        .nth(64)
        .map_or(value, |(at, _)| &value[..at])
}

fn arg_value(field: &str, value: &str) -> Result<(), InvalidParams> {
    if value.is_empty() {
        return Err(InvalidParams::new(
            field,
            format!("{field}: must not be empty"),
        ));
    }
    no_nul(field, value)
}

fn no_nul(field: &str, value: &str) -> Result<(), InvalidParams> {
    if value.contains('\0') {
        return Err(InvalidParams::new(
            field,
            format!("{field}: must not contain NUL"),
        ));
    }
    Ok(())
}

fn env_map(field: &str, env: &BTreeMap<String, String>) -> Result<(), InvalidParams> {
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(InvalidParams::new(
                field,
                format!("{field}: {name:?} is not a valid environment variable name"),
            ));
        }
        if value.contains('\0') {
            // The value is a secret: name the variable, never the value.
            return Err(InvalidParams::new(
                format!("{field}.{name}"),
                format!("{field}.{name}: value must not contain NUL"),
            ));
        }
    }
    Ok(())
}

fn config_entry(key: &str, value: &Value) -> Result<(), InvalidParams> {
    let field = format!("params.config.{key}");
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(InvalidParams::new(
            "params.config",
            format!("params.config: {key:?} is not a dotted key (empty segment)"),
        ));
    }
    if contains(value, &Value::is_null) {
        return Err(InvalidParams::new(
            &field,
            format!("{field}: null has no TOML equivalent"),
        ));
    }
    // TOML integers are 64-bit signed. (A JSON integer beyond 64 bits
    // arrives as a float, as JSON readers take it, and stays one.)
    if contains(value, &|v| v.as_u64().is_some_and(|n| n > i64::MAX as u64)) {
        return Err(InvalidParams::new(
            &field,
            format!("{field}: an integer above 2^63-1 has no TOML equivalent"),
        ));
    }
    Ok(())
}

fn contains(value: &Value, found: &dyn Fn(&Value) -> bool) -> bool {
    found(value)
        || match value {
            Value::Array(items) => items.iter().any(|v| contains(v, found)),
            Value::Object(map) => map.values().any(|v| contains(v, found)),
            _ => false,
        }
}

fn validate_servers(servers: &BTreeMap<String, McpServer>) -> Result<(), InvalidParams> {
    let mut namespaces: BTreeMap<String, &str> = BTreeMap::new();
    for (name, server) in servers {
        let field = format!("params.mcp_servers.{name}");
        if name.is_empty()
            || !name.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '@' | '/' | '.' | '-')
            })
        {
            return Err(InvalidParams::new(
                "params.mcp_servers",
                format!("params.mcp_servers: server name {name:?} must match ^[a-zA-Z0-9_:@/.-]+$ (codex silently drops others)"),
            ));
        }
        let namespace = tool_namespace(name);
        if let Some(other) = namespaces.insert(namespace.clone(), name) {
            return Err(InvalidParams::new(
                "params.mcp_servers",
                format!("params.mcp_servers: servers {other:?} and {name:?} both map to the tool namespace {namespace:?}"),
            ));
        }
        validate_server(&field, server)?;
    }
    Ok(())
}

fn validate_server(field: &str, s: &McpServer) -> Result<(), InvalidParams> {
    let err = |sub: &str, msg: String| InvalidParams::new(format!("{field}{sub}"), msg);
    match (&s.url, &s.command) {
        (Some(_), Some(_)) => {
            return Err(err(
                "",
                format!("{field}: give either `url` (HTTP) or `command` (stdio), not both"),
            ))
        }
        (None, None) => {
            return Err(err(
                "",
                format!("{field}: needs `url` (HTTP server) or `command` (stdio server)"),
            ))
        }
        (Some(url), None) => {
            check_url(url).map_err(|why| err(".url", format!("{field}.url: {why}")))?;
            let stdio_only = [
                ("args", s.args.is_some()),
                ("env", s.env.is_some()),
                ("env_vars", s.env_vars.is_some()),
                ("cwd", s.cwd.is_some()),
            ];
            if let Some((key, _)) = stdio_only.iter().find(|(_, set)| *set) {
                return Err(err(
                    &format!(".{key}"),
                    format!("{field}.{key}: only stdio servers (with `command`) take `{key}`"),
                ));
            }
        }
        (None, Some(command)) => {
            arg_value(&format!("{field}.command"), command)?;
            let http_only = [
                ("http_headers", s.http_headers.is_some()),
                ("env_http_headers", s.env_http_headers.is_some()),
                ("bearer_token_env_var", s.bearer_token_env_var.is_some()),
            ];
            if let Some((key, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(err(
                    &format!(".{key}"),
                    format!("{field}.{key}: only HTTP servers (with `url`) take `{key}`"),
                ));
            }
            if let Some(env) = &s.env {
                env_map(&format!("{field}.env"), env)?;
            }
            // Each becomes a C string of codex's when it starts the server.
            for (i, arg) in s.args.iter().flatten().enumerate() {
                no_nul(&format!("{field}.args[{i}]"), arg)?;
            }
            for (i, var) in s.env_vars.iter().flatten().enumerate() {
                arg_value(&format!("{field}.env_vars[{i}]"), var)?;
            }
            if let Some(cwd) = &s.cwd {
                arg_value(&format!("{field}.cwd"), cwd)?;
            }
        }
    }
    if let Some(var) = &s.bearer_token_env_var {
        arg_value(&format!("{field}.bearer_token_env_var"), var)?;
    }
    for (sub, headers) in [
        ("http_headers", &s.http_headers),
        ("env_http_headers", &s.env_http_headers),
    ] {
        for (name, value) in headers.iter().flatten() {
            if !is_header_name(name) {
                return Err(err(
                    &format!(".{sub}"),
                    format!("{field}.{sub}: {name:?} is not a valid HTTP header name"),
                ));
            }
            if !is_header_value(value) {
                // Never echo a header value: it may be a credential.
                return Err(err(
                    &format!(".{sub}.{name}"),
                    format!(
                        "{field}.{sub}.{name}: value contains a control character other than tab"
                    ),
                ));
            }
        }
    }
    for (key, secs) in [
        ("startup_timeout_sec", s.startup_timeout_sec),
        ("tool_timeout_sec", s.tool_timeout_sec),
    ] {
        if let Some(secs) = secs {
            if !positive_seconds(secs) {
                return Err(err(
                    &format!(".{key}"),
                    format!("{field}.{key}: must be a positive number of seconds, at most {MAX_SECONDS:e}, got {}", seconds_text(secs)),
                ));
            }
        }
    }
    Ok(())
}

/// The errors never quote the URL: it may carry a password or a token.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            let scheme = url.split_once("://").map(|(s, _)| s).filter(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            });
            match scheme {
                Some(scheme) => format!("must be an http:// or https:// URL, not {scheme}://"),
                None => "must be an http:// or https:// URL".to_owned(),
            }
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".to_owned());
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("contains whitespace or control characters".to_owned());
    }
    Ok(())
}

/// RFC 9110 `token`.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 field value: visible characters, spaces and tabs, and obs-text;
/// no CR, LF, NUL or other controls.
fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
