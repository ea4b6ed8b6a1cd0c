//! A bug is still no lost run and no leak: panics injected into a debug
//! build (`CODEX_RUNNER_TEST_PANIC`, see `src/fault.rs`) at each of the
//! daemon's owners.

use serde_json::json;

use super::harness::{alive, containment_is_cgroup, kill_escaped, start_descendants, Daemon};

/// The fault points exist only in debug builds, which is what `cargo test`
/// runs (a release-mode run of these tests would see no panic, and fail).
fn with_panic_at(point: &str) -> super::harness::DaemonBuilder {
    Daemon::builder()
        .env("CODEX_RUNNER_TEST_PANIC", point)
        .arg("--kill-grace")
        .arg("0.5")
}

/// Every process of the turn is gone: codex and its setsid-ed command
/// always; the grandchild reparented away from codex where a cgroup holds
/// the turn (without one it is out of reach, as in `docs/reliability.md`:
/// the test removes it itself).
async fn assert_turn_processes_gone(d: &Daemon, codex: u64, pids: &[u64]) {
    assert!(!alive(codex), "codex {codex} survived");
    assert!(
        !alive(pids[0]),
        "the setsid-ed command {} survived",
        pids[0]
    );
    if containment_is_cgroup(d).await {
        assert!(
            !alive(pids[1]),
            "the reparented grandchild {} survived",
            pids[1]
        );
    } else if alive(pids[1]) {
        kill_escaped(pids[1]).await;
    }
}

#[tokio::test]
async fn a_panicking_turn_ends_its_run_leaves_nothing_and_the_daemon_serves_on() {
    for containment in ["auto", "process-group"] {
        let mut d = with_panic_at("turn-stop")
            .arg("--containment")
            .arg(containment)
            .start()
            .await;
        let (codex, pids) = start_descendants(&mut d, "tree").await;
        d.cancel("tree").await;
        let run = d.collect_one("tree").await;
        assert_eq!(run.code(), Some("internal_error"), "{containment}");
        assert!(
            run.error().contains("injected fault: turn-stop"),
            "{}",
            run.error()
        );
        // As complete as any other end: the thread, to resume it, and times.
        let started = run.events.iter().find(|e| e["type"] == "thread.started");
        let thread = started.expect("thread.started")["thread_id"].clone();
        assert_eq!(run.end["thread_id"], thread, "{}", run.end);
        assert!(
            run.end["duration_ms"].is_u64() && run.end["queued_ms"].is_u64(),
            "{}",
            run.end
        );
        // The `end` comes after the turn's processes are gone, as on every
        // other path; and its home went with it.
        assert_turn_processes_gone(&d, codex, &pids).await;
        assert!(d.leftover_turn_files().is_empty(), "{containment}");
        // The panic is logged as one line, with its place.
        d.wait_for_stderr("panicked: injected fault: turn-stop")
            .await;
        // Only that run ended: the next one, on its thread, runs as usual.
        d.run("after", json!({"prompt": "x", "resume": thread}))
            .await;
        d.collect_one("after").await.assert_ok();
        d.assert_clean_exit().await;
    }
}

/// A panic in the reader, the writer, the dispatcher or the spawner thread
/// leaves the daemon unable to serve: it says so with a `fatal` line (which
/// the existing client takes as the end of every stream), stops every turn
/// and exits 70, leaving no process, turn dir or cgroup behind.
#[tokio::test]
async fn a_panic_in_the_daemons_own_parts_is_fatal_and_leaves_nothing() {
    let status = json!({"type": "status"});
    let second_run = json!({"type": "run", "id": "second", "params": {"prompt": "x"}});
    for (point, owner, trigger) in [
        ("reader-status", "the stdin reader", &status),
        ("writer-status", "the stdout writer", &status),
        ("dispatcher-status", "the dispatcher", &status),
        ("spawner-second", "the codex spawner thread", &second_run),
    ] {
        let mut d = with_panic_at(point).start().await;
        let (codex, pids) = start_descendants(&mut d, "tree").await;
        d.send(trigger.clone()).await;
        let status = d.wait_exit().await;
        assert_eq!(status.code(), Some(70), "{point}; stderr:\n{}", d.stderr());
        let fatal = format!(
            r#"{{"type":"fatal","message":"internal error: {owner} panicked: injected fault: {point}; every run was stopped"}}"#
        );
        assert!(
            d.stderr().lines().any(|line| line == fatal),
            "{point}: no {fatal}; stderr:\n{}",
            d.stderr()
        );
        assert_turn_processes_gone(&d, codex, &pids).await;
        d.assert_nothing_left();
    }
}
