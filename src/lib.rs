//! codex-runner: multiplexes many `codex exec --json` turns over one JSONL pipe.
//!
//! # Stdout contract
//! stdout carries protocol lines only (see `runner-protocol`), written by one
//! task ([`writer`]); everything else, logs and diagnostics, goes to stderr.
//! The lint below keeps a stray `println!` from breaking that.
#![deny(clippy::print_stdout)]

pub mod cgroup;
pub mod check;
pub mod child;
pub mod codex_bin;
pub mod codex_home;
pub mod command;
pub mod config_template;
pub mod config_toml;
pub mod containment;
pub mod daemon;
pub mod db_template;
pub mod diag;
pub mod dispatcher;
pub mod events;
pub mod fault;
pub mod fd_limit;
pub mod home_pool;
pub mod inherited_fds;
pub mod init;
pub mod lines;
pub mod reader;
pub mod settings;
pub mod spawn;
pub mod spawner;
pub mod stderr;
pub mod stdio;
pub mod turn;
pub mod writer;
