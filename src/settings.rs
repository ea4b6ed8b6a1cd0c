//! Daemon settings, resolved once at start-up.

use std::time::Duration;

use std::sync::Arc;

use crate::codex_bin::CodexBin;
use crate::codex_home::HomeSettings;
use crate::containment::Containment;

/// Everything a turn needs to know about the daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The codex executable, or why it could not be resolved (each run then
    /// ends with `spawn_failed` and this message: the daemon stays up, so an
    /// orchestrator sees the reason on every run instead of a dead pipe).
    pub codex: Result<CodexBin, String>,
    /// Base home and turn root.
    pub home: HomeSettings,
    /// Turns running at once; more wait in arrival order.
    pub max_concurrent: usize,
    /// Runs waiting at once (for a slot or their thread); more are refused.
    pub max_queued: usize,
    /// Request bytes waiting at once; more are refused.
    pub max_queued_bytes: usize,
    /// Default per-turn time limit (`None`: no limit).
    pub turn_timeout: Option<Duration>,
    /// Time between SIGINT to codex and SIGKILL to its process group.
    pub kill_grace: Duration,
    /// Longest codex stdout line forwarded, in bytes.
    pub max_event_bytes: usize,
    /// Longest request line accepted, in bytes.
    pub max_request_bytes: usize,
    /// How a turn's processes are tracked and stopped.
    pub containment: Arc<Containment>,
}
