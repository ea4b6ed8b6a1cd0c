//! The answer to a `status` request: what the daemon is doing right now.

use serde::{Deserialize, Serialize};

/// `{"type":"status",...}`: running and queued turns, and totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StatusReport {
    /// The `id` the `status` request carried, if any (not named `id`, so a
    /// client routing by run id never takes it for a run's line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Turns running now, oldest first.
    pub running: Vec<RunStatus>,
    /// Runs waiting for a slot or for their thread, in queue order.
    pub queued: Vec<RunStatus>,
    /// The `--max-concurrent` limit.
    pub max_concurrent: usize,
    /// The `--max-queued` limit (0 from a daemon that predates it).
    #[serde(default)]
    pub max_queued: usize,
    /// The `--max-queued-bytes` limit (0 from a daemon that predates it).
    #[serde(default)]
    pub max_queued_bytes: usize,
    /// What the queued runs' requests hold: their lines' lengths, plus the
    /// room their parsed `config` and `output_schema` values take.
    #[serde(default)]
    pub queued_bytes: usize,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// `true` once a signal asked the daemon to stop: it starts no more
    /// runs, and exits once the running ones have ended.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shutting_down: bool,
    /// Counts since the daemon started.
    pub totals: StatusTotals,
}

/// One run in a [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RunStatus {
    /// The run id.
    pub id: String,
    /// Its thread, once known (the `resume` id, or from `thread.started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Milliseconds since the request arrived.
    pub age_ms: u64,
    /// Milliseconds since the turn started (running runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_ms: Option<u64>,
    /// `true` once the run is being stopped (cancel, timeout or shutdown).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

/// Counts in a [`StatusReport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StatusTotals {
    /// Runs accepted.
    pub accepted: u64,
    /// Accepted runs that ended `ok`.
    pub ok: u64,
    /// Accepted runs that ended with an error.
    pub failed: u64,
    /// Lines refused: `rejected`, or a run ended before it was accepted
    /// (`invalid_params` from the request's own checks, `queue_full`, or
    /// `shutdown` while the daemon stops).
    pub refused: u64,
}
