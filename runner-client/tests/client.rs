//! The client against the real daemon, with the fake codex playing codex.

mod common;

use codex_runner_client::events::{ItemDetails, ToolStatus};
use codex_runner_client::{codes, ClientError, EndStatus, RunEvent, RunStream, ThreadEvent};
use common::{params, within, Scratch};

/// Reads a run until its `thread.started`: from then on codex is running.
async fn wait_started(stream: &mut RunStream) {
    loop {
        match within("thread.started", stream.next()).await {
            Some(Ok(RunEvent::Event(ThreadEvent::ThreadStarted { .. }))) => return,
            Some(Ok(RunEvent::Event(_) | RunEvent::Diag { .. })) => {}
            other => panic!("run {} ended before starting: {other:?}", stream.id()),
        }
    }
}

/// A run whose fake codex hangs until stopped, once its thread has started.
async fn hanging_run(runner: &codex_runner_client::Runner, id: &str, prompt: &str) -> RunStream {
    let mut run = runner
        .run(id, params(prompt, &[("FAKE_CODEX_SCENARIO", "hang")]))
        .await
        .unwrap();
    wait_started(&mut run).await;
    run
}

const SLOW: &[(&str, &str)] = &[
    ("FAKE_CODEX_SCENARIO", "slow"),
    ("FAKE_CODEX_EVENTS", "5"),
    ("FAKE_CODEX_DELAY_MS", "20"),
];

#[tokio::test]
async fn three_concurrent_runs_stream_their_events_in_order() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let a = runner.run("a", params("alpha", &[])).await.unwrap();
    let b = runner.run("b", params("beta", SLOW)).await.unwrap();
    let c = runner.run("c", params("gamma", SLOW)).await.unwrap();
    let (a, b, c) = within("three runs", async {
        tokio::join!(a.collect(), b.collect(), c.collect())
    })
    .await;
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());

    for run in [&a, &b, &c] {
        assert_eq!(run.end.status, EndStatus::Ok, "{:?}", run.end);
        let ThreadEvent::ThreadStarted { thread_id } = &run.events[0] else {
            panic!("first event: {:?}", run.events[0])
        };
        assert_eq!(run.end.thread_id.as_ref(), Some(thread_id));
        assert!(
            matches!(run.events.last(), Some(ThreadEvent::TurnCompleted { usage }) if usage.input_tokens == 100)
        );
    }
    assert_eq!(a.agent_messages(), ["echo: alpha (turn 1)"]);
    for run in [&b, &c] {
        let mut kinds = vec!["thread.started", "turn.started"];
        kinds.extend(["item.completed"; 5]);
        kinds.push("turn.completed");
        assert_eq!(run.event_kinds(), kinds);
        let ids: Vec<&str> = run
            .events
            .iter()
            .filter_map(|e| Some(e.item()?.id.as_str()))
            .collect();
        assert_eq!(ids, ["item_0", "item_1", "item_2", "item_3", "item_4"]);
    }
    within("shutdown", runner.shutdown()).await.unwrap();
}

#[tokio::test]
async fn every_item_type_arrives_typed_including_web_search() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let params = params("items", &[("FAKE_CODEX_SCENARIO", "all_items")]);
    let run = within(
        "all_items",
        runner.run("i", params).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_eq!(run.end.status, EndStatus::Ok);
    for event in &run.events {
        assert!(!matches!(event, ThreadEvent::Other(_)), "{event:?}");
        if let Some(item) = event.item() {
            assert!(!matches!(item.details, ItemDetails::Other(_)), "{item:?}");
        }
    }
    // codex prints this item with two `id` keys; both survive the pipe.
    let search = run
        .events
        .iter()
        .filter_map(ThreadEvent::item)
        .find_map(|item| match &item.details {
            ItemDetails::WebSearch(search) => Some((item.id.as_str(), search)),
            _ => None,
        });
    let (item_id, search) = search.expect("a web_search item");
    assert_eq!(
        (item_id, search.id.as_str(), search.query.as_str()),
        ("item_5", "ws_1", "rust")
    );
    assert!(run
        .events
        .iter()
        .filter_map(ThreadEvent::item)
        .any(|item| matches!(
            &item.details,
            ItemDetails::McpToolCall(call) if call.status == ToolStatus::Completed
        )));
    within("shutdown", runner.shutdown()).await.unwrap();
}

#[tokio::test]
async fn cancel_stops_a_hanging_run() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let run = hanging_run(&runner, "h", "wait").await;
    runner.cancel("h").await.unwrap();
    let end = within("cancelled end", run.collect()).await.unwrap().end;
    assert_eq!(end.status, EndStatus::Error);
    assert_eq!(end.code.as_deref(), Some(codes::END_CANCELLED));

    // Its id is free again, and cancelling it now names no run.
    assert!(matches!(runner.cancel("h").await, Err(ClientError::UnknownRun(id)) if id == "h"));
    within("shutdown", runner.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_failed_turn_ends_with_its_error() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    // (Not FAKE_CODEX_FAIL_MESSAGE: env values are secrets, redacted in `error`.)
    let env = [("FAKE_CODEX_SCENARIO", "turn_failed")];
    let run = within(
        "failed run",
        runner.run("f", params("x", &env)).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_eq!(run.end.status, EndStatus::Error);
    assert_eq!(run.end.code.as_deref(), Some(codes::END_TURN_FAILED));
    assert!(run
        .end
        .error
        .as_deref()
        .unwrap()
        .contains("fake model failure"));
    assert!(
        matches!(run.events.last(), Some(ThreadEvent::TurnFailed { error }) if error.message == "fake model failure")
    );

    // Invalid params are an answer too, not a client error.
    let mut bad = params("x", &[]);
    bad.profile = Some("no spaces allowed".into());
    let end = within("invalid", runner.run("bad", bad).await.unwrap().collect())
        .await
        .unwrap()
        .end;
    assert_eq!(end.code.as_deref(), Some(codes::END_INVALID_PARAMS));
    within("shutdown", runner.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_pending_id_cannot_be_reused_and_a_rejected_request_fails_its_stream() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let first = hanging_run(&runner, "d", "wait").await;
    let again = runner.run("d", params("again", &[])).await;
    assert!(
        matches!(&again, Err(ClientError::DuplicateId(id)) if id == "d"),
        "{again:?}"
    );
    runner.cancel("d").await.unwrap();
    within("cancelled", first.collect()).await.unwrap();
    let reused = runner.run("d", params("again", &[])).await.unwrap();
    let end = within("reused id", reused.collect()).await.unwrap().end;
    assert_eq!(end.status, EndStatus::Ok);

    // The daemon answers an empty id with `rejected`, matched by line number.
    let mut rejected = runner.run("", params("x", &[])).await.unwrap();
    match within("rejected", rejected.next()).await {
        Some(Err(ClientError::Rejected(r))) => assert_eq!(r.code, codes::REJECT_MISSING_ID),
        other => panic!("{other:?}"),
    }
    assert!(within("rejected stream", rejected.next()).await.is_none());
    within("shutdown", runner.shutdown()).await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_every_run_finish() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let mut streams = Vec::new();
    for id in ["s1", "s2", "s3"] {
        streams.push(runner.run(id, params(id, SLOW)).await.unwrap());
    }
    within("shutdown", runner.shutdown()).await.unwrap();
    for stream in streams {
        let run = within("a drained run", stream.collect()).await.unwrap();
        assert_eq!(run.end.status, EndStatus::Ok, "{:?}", run.end);
        assert_eq!(run.agent_messages().len(), 5);
    }
}

#[tokio::test]
async fn the_daemon_dying_fails_pending_runs_and_later_requests() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let hang = [("FAKE_CODEX_SCENARIO", "hang")];
    let started = hanging_run(&runner, "k1", "x").await;
    let queued = runner.run("k2", params("y", &hang)).await.unwrap();

    let pid = runner.pid().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    for stream in [started, queued] {
        match within("failure", stream.collect()).await {
            Err(ClientError::Exited {
                status: Some(status),
                ..
            }) => {
                assert!(!status.success());
                assert!(status.to_string().contains("SIGKILL"), "{status}");
            }
            other => panic!("{other:?}"),
        }
    }
    let later = runner.run("k3", params("z", &[])).await;
    assert!(
        matches!(later, Err(ClientError::Exited { .. })),
        "{later:?}"
    );
    assert!(matches!(
        within("shutdown", runner.shutdown()).await,
        Err(ClientError::Exited { .. })
    ));
}

/// Live processes whose environment holds `marker` (a turn's processes
/// inherit its `env`).
fn processes_marked(marker: &str) -> Vec<u32> {
    let needle = marker.as_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .filter(|pid| codex_runner_test_support::alive(*pid))
        .collect()
}

#[tokio::test]
async fn dropping_the_runner_stops_the_daemon_and_everything_of_its_turns() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let marker = format!("DROP_TEST_MARK=m{}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let mut run = runner
        .run(
            "x",
            params(
                "x",
                &[("FAKE_CODEX_SCENARIO", "spawn_descendants"), (key, value)],
            ),
        )
        .await
        .unwrap();
    // The item that lists the commands codex started (one setsid-ed, one
    // reparented away).
    loop {
        match within("descendants", run.next()).await {
            Some(Ok(RunEvent::Event(ThreadEvent::ItemCompleted { .. }))) => break,
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    let marked = processes_marked(&marker);
    assert!(marked.len() >= 3, "codex and its two commands: {marked:?}");
    let pid = runner.pid().unwrap();
    drop(runner);
    // Events already read from the daemon stay readable; then the error.
    let mut last = None;
    while let Some(item) = within("dropped", run.next()).await {
        last = Some(item);
    }
    assert!(matches!(last, Some(Err(ClientError::Dropped))), "{last:?}");
    codex_runner_test_support::wait_gone(pid, std::time::Duration::from_secs(20)).await;
    // Before, a SIGKILLed daemon left codex's commands running and the
    // turn's home (with the request's secrets) on disk.
    for pid in marked {
        codex_runner_test_support::wait_gone(pid, std::time::Duration::from_secs(20)).await;
    }
    let turns: Vec<_> = std::fs::read_dir(scratch.dir.path().join("turns"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(turns.is_empty(), "{turns:?}");
}

/// A Ctrl-C at the terminal goes to the foreground process group: the
/// daemon is not in ours, so the host decides what it means.
#[tokio::test]
async fn the_daemon_runs_in_a_process_group_of_its_own() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let pid = runner.pid().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the `(comm)`: state, ppid, pgrp.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[2], pid.to_string(), "{stat}");
    // SAFETY: getpgrp has no preconditions.
    assert_ne!(fields[2], unsafe { libc::getpgrp() }.to_string());
    within("shutdown", runner.shutdown()).await.unwrap();
}

/// A caller's timeout around `shutdown` drops the runner mid-wait: the
/// daemon must be stopped all the same, not left running its turns.
#[tokio::test]
async fn a_shutdown_given_up_on_still_stops_the_daemon() {
    let scratch = Scratch::new();
    let runner = scratch.builder().spawn().unwrap();
    let _run = hanging_run(&runner, "x", "x").await;
    let pid = runner.pid().unwrap();
    let gave_up =
        tokio::time::timeout(std::time::Duration::from_millis(200), runner.shutdown()).await;
    assert!(gave_up.is_err(), "a hanging turn cannot finish");
    codex_runner_test_support::wait_gone(pid, std::time::Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_daemon_that_cannot_start_is_a_spawn_error() {
    let err = codex_runner_client::Runner::builder("/nonexistent/codex-runner")
        .spawn()
        .unwrap_err();
    assert!(matches!(err, ClientError::Spawn { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/codex-runner"),
        "{err}"
    );
}

#[tokio::test]
async fn a_daemon_that_exits_at_once_fails_with_its_fatal_line() {
    let scratch = Scratch::new();
    let runner = scratch.builder().arg("--turn-timeout=-1").spawn().unwrap();
    let run = runner.run("r", params("x", &[])).await;
    // Depending on timing, the request is refused (the pipe is broken) or
    // accepted and then failed; either way the exit and its reason are
    // reported, never just a broken pipe.
    let error = match run {
        Ok(stream) => within("exit", stream.collect()).await.unwrap_err(),
        Err(error) => error,
    };
    match &error {
        ClientError::Exited {
            fatal: Some(fatal), ..
        } => assert!(fatal.contains("--turn-timeout"), "{fatal}"),
        other => panic!("{other:?}"),
    }
    match within("shutdown", runner.shutdown()).await {
        Err(ClientError::Exited {
            status: Some(status),
            fatal: Some(fatal),
        }) => {
            assert!(!status.success());
            assert!(fatal.contains("--turn-timeout"), "{fatal}");
        }
        other => panic!("{other:?}"),
    }
}
