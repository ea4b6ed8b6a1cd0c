//! One integration-test binary (faster to link, one process per suite run):
//! every test drives the real `codex-runner` binary over pipes.
mod suite;
