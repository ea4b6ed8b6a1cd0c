//! A faulty codex ends its own run with a precise code and message; other
//! runs go on.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::harness::{Daemon, READ_TIMEOUT};

fn scenario(name: &str) -> serde_json::Value {
    json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": name}})
}

#[tokio::test]
async fn child_faults_end_their_run_with_precise_codes() {
    let mut d = Daemon::builder()
        .arg("--max-event-bytes")
        .arg("1048576")
        .start()
        .await;
    d.run("failed", scenario("turn_failed")).await;
    d.run("exit3", scenario("exit_nonzero")).await;
    d.run("crash", scenario("crash")).await;
    d.run("garbage", scenario("garbage")).await;
    d.run(
        "long",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "long_line", "FAKE_CODEX_LONG_BYTES": "2000000"}}),
    )
    .await;
    d.run("recover", scenario("error_then_ok")).await;
    d.run("fine", json!({"prompt": "bystander"})).await;
    let ids = [
        "failed", "exit3", "crash", "garbage", "long", "recover", "fine",
    ];
    let (runs, others) = d.collect(&ids).await;
    assert!(others.is_empty(), "{others:?}");

    let failed = &runs["failed"];
    assert_eq!(
        (failed.code(), failed.error()),
        (Some("turn_failed"), "fake model failure")
    );
    assert_eq!(failed.end["exit_code"], 1);

    let exit3 = &runs["exit3"];
    assert_eq!(exit3.code(), Some("codex_exited"));
    assert_eq!(exit3.end["exit_code"], 3);
    assert!(
        exit3
            .error()
            .starts_with("codex exited with status 3: fatal: fake codex crashed the turn"),
        "{}",
        exit3.end
    );
    // In the log at the default level too, for an operator who does not
    // read stdout.
    d.wait_for_stderr("run failed: codex exited with status 3")
        .await;

    let crash = &runs["crash"];
    assert_eq!(crash.code(), Some("codex_exited"));
    assert_eq!(crash.end["signal"], libc::SIGABRT);
    assert_eq!(
        crash.event_types(),
        ["thread.started", "turn.started"],
        "the partial line is dropped"
    );

    let garbage = &runs["garbage"];
    garbage.assert_ok();
    assert!(garbage
        .events
        .iter()
        .all(|e| e.is_object() && e["type"] != "broken" && e["item"]["id"] != "not_utf8"));
    // stderr is its own pipe, not in step with stdout: wait for the last
    // dropped line's report (the one that is not UTF-8) before counting.
    d.wait_for_stderr("not_utf8").await;
    let warnings = d.diags("garbage");
    assert!(
        warnings.iter().filter(|w| w["level"] == "warn").count() >= 5,
        "each dropped line is reported: {warnings:?}"
    );
    assert!(warnings
        .iter()
        .any(|w| w["message"].as_str().unwrap().contains("this is not json")));

    let long = &runs["long"];
    assert_eq!(long.code(), Some("protocol_error"));
    assert!(long.error().contains("2000"), "{}", long.end);
    assert!(
        long.event_types().contains(&"turn.completed".to_owned()),
        "the stream goes on after the long line"
    );

    let recover = &runs["recover"];
    recover.assert_ok();
    assert_eq!(
        recover
            .events
            .iter()
            .filter(|e| e["type"] == "error")
            .count(),
        1
    );

    runs["fine"].assert_ok();
    assert_eq!(runs["fine"].agent_texts(), ["echo: bystander (turn 1)"]);
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn stderr_floods_are_bounded_and_their_tail_explains_a_failure() {
    let mut d = Daemon::start().await;
    d.run(
        "noisy",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "stderr_noise", "FAKE_CODEX_STDERR_LINES": "3000", "FAKE_CODEX_EXIT_CODE": "4"}}),
    )
    .await;
    let run = d.collect_one("noisy").await;
    assert_eq!(run.code(), Some("codex_exited"));
    assert!(run.error().contains("noise line 2999"), "{}", run.end);
    assert!(run.error().len() < 2100, "the error is one bounded line");
    assert!(!run.error().contains('\n'));
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn a_long_stderr_line_is_cut_not_lost_and_a_secret_it_cuts_is_redacted() {
    // 7 + 4080 + 1 bytes before the token: the cut at 4 KiB goes through it.
    let dir = tempfile::tempdir().unwrap();
    let codex = dir.path().join("codex");
    std::fs::write(
        &codex,
        "#!/bin/sh\nprintf 'Error: %s %s and more\\n' \"$(printf '%04080d' 0)\" \"$MY_TOKEN\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&codex, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Daemon::builder().codex_bin(&codex).start().await;
    d.run(
        "long",
        json!({"prompt": "x", "env": {"MY_TOKEN": "SECRETVALUE123"}}),
    )
    .await;
    let run = d.collect_one("long").await;
    assert_eq!(run.code(), Some("codex_exited"), "{}", run.end);
    // Before, the whole line was replaced by a note of its length.
    assert!(
        run.error()
            .starts_with("codex exited with status 1: Error: 0000"),
        "{}",
        run.end
    );
    assert!(!run.error().contains("SECRETVA"), "{}", run.end);
    d.assert_clean_exit().await;
    let diags = d.diags("long");
    let message = diags[0]["message"].as_str().unwrap();
    assert_eq!(diags[0]["level"], "error", "{message}");
    assert!(message.starts_with("codex: Error: 0000"), "{message}");
    assert!(
        message.ends_with(" [redacted]… [cut: the line had 4111 bytes]"),
        "{message}"
    );
}

/// Run `flood`, whose codex prints about 2 MiB of stderr: past the pipe
/// and the daemon's queue. It must end ok all the same.
async fn flood_stderr(d: &mut Daemon) {
    d.run(
        "flood",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "stderr_noise", "FAKE_CODEX_STDERR_LINES": "30000"}}),
    )
    .await;
    d.collect_one("flood").await.assert_ok();
}

/// A client that reads only stdout: once stderr's pipe is full, codex's
/// stderr is dropped (and counted), but no run waits on it. Before, the
/// daemon blocked in its write to stderr and every run with it.
#[tokio::test]
async fn an_unread_stderr_holds_up_no_run() {
    let mut d = Daemon::builder().hold_stderr().start().await;
    flood_stderr(&mut d).await;
    d.run("after", json!({"prompt": "x"})).await;
    d.collect_one("after").await.assert_ok();

    d.release_stderr();
    d.wait_for_stderr("stderr lines were dropped while stderr was not being read")
        .await;
    let forwarded = d.diags("flood").len();
    assert!(
        (1000..30_000).contains(&forwarded),
        "{forwarded} of 30000 lines forwarded"
    );
    d.assert_clean_exit().await;

    // Nor does it keep the daemon from exiting: what is still queued for
    // stderr is given up after a bounded wait.
    let mut d = Daemon::builder().hold_stderr().start().await;
    flood_stderr(&mut d).await;
    d.close_stdin().await;
    let status = tokio::time::timeout(READ_TIMEOUT, d.child.wait())
        .await
        .expect("the daemon waited for a stderr nobody reads")
        .unwrap();
    assert!(status.success(), "{status}");
    d.release_stderr();
    d.wait_exit().await;
}

#[tokio::test]
async fn spawn_failure_and_config_errors() {
    let mut d = Daemon::builder()
        .codex_bin("/nonexistent/codex")
        .start()
        .await;
    // Said at start-up, not first seen as every run failing.
    d.wait_for_stderr("--codex-bin cannot be run: it does not exist")
        .await;
    d.run("nobin", json!({"prompt": "x"})).await;
    let run = d.collect_one("nobin").await;
    assert_eq!(run.code(), Some("spawn_failed"));
    assert!(run.error().contains("/nonexistent/codex"), "{}", run.end);
    d.assert_clean_exit().await;

    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("codex");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let mut d = Daemon::builder().codex_bin(&not_executable).start().await;
    d.wait_for_stderr("--codex-bin cannot be run: it is not executable")
        .await;
    d.run("noexec", json!({"prompt": "x"})).await;
    let run = d.collect_one("noexec").await;
    assert_eq!(run.code(), Some("spawn_failed"));
    assert!(
        run.error().contains("not runnable") && run.error().contains("ermission denied"),
        "{}",
        run.end
    );
    assert!(d.leftover_turn_files().is_empty());
    d.assert_clean_exit().await;

    // More than exec takes: named as such, not blamed on the executable.
    let mut d = Daemon::start().await;
    d.run(
        "e2big",
        json!({"prompt": "x", "env": {"HUGE": "v".repeat(200 * 1024)}}),
    )
    .await;
    let run = d.collect_one("e2big").await;
    assert_eq!(run.code(), Some("spawn_failed"));
    assert!(
        run.error().contains("too large for exec") && !run.error().contains("not runnable"),
        "{}",
        run.end
    );
    assert!(d.leftover_turn_files().is_empty());
    d.assert_clean_exit().await;

    let mut d = Daemon::builder()
        .base_config("model = = broken")
        .start()
        .await;
    d.run("badbase", json!({"prompt": "x"})).await;
    let run = d.collect_one("badbase").await;
    assert_eq!(run.code(), Some("config_error"));
    assert!(
        run.error().contains("base config.toml is not valid TOML"),
        "{}",
        run.end
    );
    d.assert_clean_exit().await;

    let mut d = Daemon::start().await;
    d.run(
        "cfg",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "config_error"}}),
    )
    .await;
    let run = d.collect_one("cfg").await;
    assert!(run.events.is_empty());
    assert_eq!(run.code(), Some("codex_exited"));
    assert!(
        run.error()
            .contains("Error loading config.toml: fake config error"),
        "{}",
        run.end
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn a_child_that_closes_stdout_or_never_reads_stdin_still_ends() {
    let mut d = Daemon::start().await;
    d.run(
        "closed",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "close_stdout", "FAKE_CODEX_DELAY_MS": "100"}}),
    )
    .await;
    d.run(
        "deaf",
        json!({"prompt": "y".repeat(1 << 20), "env": {"FAKE_CODEX_SCENARIO": "no_stdin_read"}}),
    )
    .await;
    let (runs, _) = d.collect(&["closed", "deaf"]).await;
    runs["closed"].assert_ok();
    assert_eq!(runs["closed"].event_types(), ["thread.started"]);
    runs["deaf"].assert_ok();
    d.assert_clean_exit().await;
}
