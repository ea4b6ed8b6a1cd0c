//! Machine-readable error codes.
//!
//! Every `end` line with `status:"error"` carries one of the `END_*` codes in
//! its `code` field; every `rejected` line carries one of the `REJECT_*` codes.
//! The human-readable `error` text may change between versions; the codes do
//! not.

/// The run's params were invalid; nothing was spawned.
pub const END_INVALID_PARAMS: &str = "invalid_params";
/// The run was cancelled by a `cancel` request (queued or running).
pub const END_CANCELLED: &str = "cancelled";
/// The run exceeded its `timeout_secs` (or the daemon's `--turn-timeout`).
pub const END_TIMEOUT: &str = "timeout";
/// The daemon is shutting down (SIGTERM, SIGINT, SIGHUP or SIGQUIT, or its
/// stdout closed) and stopped the run, or did not start it.
pub const END_SHUTDOWN: &str = "shutdown";
/// Codex printed `turn.failed`.
pub const END_TURN_FAILED: &str = "turn_failed";
/// Codex exited with a non-zero status (or a signal) without `turn.failed`.
pub const END_CODEX_EXITED: &str = "codex_exited";
/// The codex executable could not be started.
pub const END_SPAWN_FAILED: &str = "spawn_failed";
/// The per-turn CODEX_HOME could not be prepared (base config.toml unreadable
/// or not valid TOML, a request server whose tool namespace is a base
/// server's, tempdir or link failure).
pub const END_CONFIG_ERROR: &str = "config_error";
/// Codex printed output the runner cannot forward (a line over the size
/// limit).
pub const END_PROTOCOL_ERROR: &str = "protocol_error";
/// An I/O error talking to the child.
pub const END_IO_ERROR: &str = "io_error";
/// The run would have waited, and `--max-queued` runs, or
/// `--max-queued-bytes` of requests with it, were waiting already: it was
/// not accepted. Send it again once some runs have ended.
pub const END_QUEUE_FULL: &str = "queue_full";

/// The line is not valid JSON, not a JSON object, has a top-level key
/// twice, or starts with a byte order mark (only the first line may).
pub const REJECT_MALFORMED_JSON: &str = "malformed_json";
/// The line has no `type`, or an unknown one.
pub const REJECT_UNKNOWN_TYPE: &str = "unknown_type";
/// The line has no usable `id` (missing, not a string, or empty).
pub const REJECT_MISSING_ID: &str = "missing_id";
/// A `run` reused the id of a run that has not ended yet.
pub const REJECT_DUPLICATE_ID: &str = "duplicate_id";
/// A `cancel` named an id that is not queued or running.
pub const REJECT_UNKNOWN_ID: &str = "unknown_id";
/// The line is longer than the daemon's `--max-request-bytes`.
pub const REJECT_LINE_TOO_LONG: &str = "line_too_long";
/// The line is not valid UTF-8.
pub const REJECT_INVALID_UTF8: &str = "invalid_utf8";
/// The line is a `cancel` or `status` with fields other than `type` and `id`.
pub const REJECT_INVALID_REQUEST: &str = "invalid_request";
/// A bug in the runner ended the run (its task panicked). Reported, never
/// silent: the run still gets its `end`.
pub const END_INTERNAL: &str = "internal_error";
