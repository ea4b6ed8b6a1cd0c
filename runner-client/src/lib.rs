//! Embed codex-runner in a Rust program.
//!
//! [`Runner`] spawns the daemon as a child process and speaks its JSONL
//! protocol (docs/protocol.md) over the child's stdin and stdout:
//!
//! - [`Runner::run`] sends a `run` request and returns a [`RunStream`] of
//!   typed [`RunEvent`]s that ends with the run's [`End`];
//! - [`Runner::cancel`] stops a run;
//! - [`Runner::shutdown`] closes the daemon's stdin, lets every run finish and
//!   waits for the daemon to exit.
//!
//! Three tasks serve the daemon's pipes: one writes requests to its stdin,
//! one reads its stdout and hands each line to its run's channel, one reads
//! its stderr for `diag` and `fatal` lines. Every way the child can fail
//! reaches the runs it affects as a [`ClientError`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), codex_runner_client::ClientError> {
//! use codex_runner_client::{RunParams, Runner};
//!
//! let runner = Runner::builder("codex-runner").spawn()?;
//! let params = RunParams {
//!     prompt: Some("What is 2+2?".into()),
//!     ..RunParams::default()
//! };
//! let output = runner.run("r1", params).await?.collect().await?;
//! println!("{:?}: {:?}", output.end.status, output.agent_messages());
//! runner.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Needs a tokio runtime (any flavour) with its time driver
//! (`#[tokio::main]`, or `enable_all`). A [`Runner`] dropped without
//! [`Runner::shutdown`] stops the daemon: see [`Runner`].
#![warn(missing_docs)]

mod error;
mod runner;
mod shared;
mod stop;
mod stream;
mod tasks;

pub use error::ClientError;
pub use runner::{Runner, RunnerBuilder};
pub use stream::{RunEvent, RunOutput, RunStream};

pub use runner_protocol::events::{self, ItemDetails, ThreadEvent, ThreadItem};
// Everything a `RunParams` is built from, so that no caller needs the
// protocol crate as a dependency of its own.
pub use runner_protocol::{
    codes, ApprovalPolicy, ContentPart, DiagLevel, Effort, End, EndStatus, Input, InputContent,
    McpServer, Rejected, RunParams, SandboxMode, ToolsApproval,
};
