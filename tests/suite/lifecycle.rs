//! Nothing lost, nothing leaked: stopping turns and the daemon itself leaves
//! no process, no turn dir, and gives every run its `end`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::harness::{
    alive, children_of, containment_is_cgroup, kill_escaped, pid_namespaces_work,
    start_descendants, wait_gone, Daemon, Gate, READ_TIMEOUT,
};

#[tokio::test]
async fn cancel_leaves_no_descendant_alive() {
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("0.5")
        .start()
        .await;
    let (codex, pids) = start_descendants(&mut d, "tree").await;
    d.cancel("tree").await;
    let run = d.collect_one("tree").await;
    assert_eq!(run.code(), Some("cancelled"));
    // The `end` is written after the turn's processes are gone.
    assert!(!alive(codex), "codex {codex} survived");
    assert!(
        !alive(pids[0]),
        "the setsid-ed command {} survived",
        pids[0]
    );
    if containment_is_cgroup(&d).await {
        assert!(
            !alive(pids[1]),
            "the double-forked grandchild {} survived",
            pids[1]
        );
    } else {
        // Reparented away from codex but still in its process group: the
        // group's kill reaches it (the end does not wait for it).
        wait_gone(pids[1], READ_TIMEOUT).await;
        eprintln!("NOTE: no writable cgroup2 here; the cgroup path is not tested");
    }
    assert!(d.leftover_turn_files().is_empty());
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn without_cgroups_cancel_still_reaches_setsid_commands() {
    let mut d = Daemon::builder()
        .arg("--containment")
        .arg("process-group")
        .arg("--kill-grace")
        .arg("0.5")
        .start()
        .await;
    assert!(!containment_is_cgroup(&d).await);
    let (codex, pids) = start_descendants(&mut d, "tree").await;
    d.cancel("tree").await;
    assert_eq!(d.collect_one("tree").await.code(), Some("cancelled"));
    assert!(!alive(codex));
    assert!(
        !alive(pids[0]),
        "the setsid-ed command {} survived",
        pids[0]
    );
    // pids[1] was reparented away from codex but stayed in its process
    // group: the group's kill reaches it (the end does not wait for it).
    wait_gone(pids[1], READ_TIMEOUT).await;
    d.assert_clean_exit().await;
}

/// Without a cgroup, a grandchild that escaped with codex's stdout and
/// stderr keeps both pipes open; the turn must still end, within the grace.
#[tokio::test]
async fn an_escaped_grandchild_holding_the_pipes_does_not_hold_the_end() {
    let mut d = Daemon::builder()
        .arg("--containment")
        .arg("process-group")
        .arg("--kill-grace")
        .arg("0.3")
        .start()
        .await;
    d.run(
        "leaky",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "spawn_descendants", "FAKE_CODEX_ORPHAN_KEEPS_STDIO": "1"}}),
    )
    .await;
    let line = d
        .wait_for(|l| l["id"] == "leaky" && l["event"]["item"]["pids"].is_array())
        .await;
    let orphan = line["event"]["item"]["pids"][1].as_u64().unwrap();
    d.cancel("leaky").await;
    let run = d.collect_one("leaky").await;
    assert_eq!(run.code(), Some("cancelled"));
    assert!(alive(orphan), "the test needs the escaped grandchild alive");
    kill_escaped(orphan).await;
    d.assert_clean_exit().await;
}

/// Starts a codex that leaves a setsid-ed process holding its stdout and
/// exits 0 with its last line unterminated; returns the leftover's pid once
/// the daemon has reaped codex (so that a stop sent next finds codex's turn
/// over, not a codex to stop).
async fn exit_leaving_stdout_held(d: &mut Daemon, id: &str) -> u64 {
    d.run(
        id,
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "spawn_descendants", "FAKE_CODEX_ORPHAN_KEEPS_STDIO": "1", "FAKE_CODEX_EXIT_UNTERMINATED": "1"}}),
    )
    .await;
    let line = d
        .wait_for(|l| l["id"] == id && l["event"]["item"]["pids"].is_array())
        .await;
    wait_gone(d.record(id)["pid"].as_u64().unwrap(), READ_TIMEOUT).await;
    d.wait_for_stderr("reaped codex").await;
    line["event"]["item"]["pids"][1].as_u64().unwrap()
}

/// What codex printed reached the client, its unterminated last line too.
fn assert_whole_ok_turn(run: &super::harness::RunOutput) {
    run.assert_ok();
    assert_eq!(
        run.events.last().unwrap()["type"],
        "turn.completed",
        "{:?}",
        run.events
    );
    assert_eq!(run.end["usage"]["input_tokens"], 1, "{}", run.end);
}

#[tokio::test]
async fn a_stdout_held_after_codex_exits_ends_with_the_cgroup_or_on_a_stop() {
    // A grace period longer than the test: before, the end waited it out
    // after codex's exit, and a stop could not cut it short.
    for containment in ["auto", "process-group"] {
        let mut d = Daemon::builder()
            .arg("--containment")
            .arg(containment)
            .arg("--kill-grace")
            .arg("600")
            .start()
            .await;
        let leftover = exit_leaving_stdout_held(&mut d, "held").await;
        if containment_is_cgroup(&d).await {
            // Killed with the cgroup at codex's exit: stdout closes at once.
            assert_whole_ok_turn(&d.collect_one("held").await);
            wait_gone(leftover, READ_TIMEOUT).await;
        } else {
            assert!(alive(leftover), "escaped the process group");
            d.cancel("held").await;
            // Codex had already ended the turn by itself: still ok.
            assert_whole_ok_turn(&d.collect_one("held").await);
            kill_escaped(leftover).await;
        }
        d.assert_clean_exit().await;
    }
}

#[tokio::test]
async fn a_stdout_held_after_codex_exits_is_read_for_the_grace_period_then_its_rest_forwarded() {
    let mut d = Daemon::builder()
        .arg("--containment")
        .arg("process-group")
        .arg("--kill-grace")
        .arg("0.3")
        .start()
        .await;
    let leftover = exit_leaving_stdout_held(&mut d, "held").await;
    // Before, the unterminated last line was dropped when the wait ended.
    assert_whole_ok_turn(&d.collect_one("held").await);
    assert!(alive(leftover), "the test needs the escaped process alive");
    kill_escaped(leftover).await;
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn sigterm_ends_every_run_with_shutdown_and_leaves_nothing() {
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("0.5")
        .arg("--max-concurrent")
        .arg("3")
        .start()
        .await;
    let scenarios = [
        ("a", "hang"),
        ("b", "hang_ignore_sigint"),
        ("c", "spawn_descendants"),
    ];
    for (id, scenario) in scenarios {
        d.run(
            id,
            json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": scenario}}),
        )
        .await;
    }
    d.run("queued1", json!({"prompt": "x"})).await;
    d.run("queued2", json!({"prompt": "x"})).await;
    for (id, _) in scenarios {
        d.wait_turn_started(id).await;
    }
    let codex_pids: Vec<u64> = scenarios
        .iter()
        .map(|(id, _)| d.record(id)["pid"].as_u64().unwrap())
        .collect();
    d.signal(libc::SIGTERM);
    let (runs, _) = d.collect(&["a", "b", "c", "queued1", "queued2"]).await;
    let status = d.wait_exit().await;
    for (id, run) in &runs {
        assert_eq!(run.code(), Some("shutdown"), "{id}: {}", run.end);
    }
    assert!(runs["queued1"].events.is_empty());
    assert!(status.success(), "{status}");
    // How long it took is the benchmarks' business, not a test's: that the
    // grace is the only wait is shown with a 600 s grace and a second signal
    // (`a_second_sigterm_skips_the_grace_period`).
    for pid in codex_pids {
        assert!(!alive(pid), "codex {pid} survived the daemon");
    }
    assert!(
        d.leftover_turn_dirs().is_empty(),
        "{:?}",
        d.leftover_turn_dirs()
    );
}

#[tokio::test]
async fn while_shutting_down_every_line_is_still_answered() {
    // The grace period outlasts the test: only the second signal ends it.
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("600")
        .arg("--max-concurrent")
        .arg("1")
        .start()
        .await;
    d.run_started("stubborn", "hang_ignore_sigint").await;
    d.run(
        "queued",
        json!({"prompt": "x", "resume": "00000000-0000-7000-8000-00000000000a"}),
    )
    .await;
    // The run is queued before the signal comes.
    d.send(json!({"type": "status"})).await;
    let status = d.wait_for(|l| l["type"] == "status").await;
    assert_eq!(status["queued"][0]["id"], "queued", "{status}");
    assert!(status.get("shutting_down").is_none(), "{status}");
    d.signal(libc::SIGTERM);
    // Written at once by the dispatcher's stop: the signal has been seen.
    let queued = d.collect_one("queued").await;
    assert_eq!(queued.code(), Some("shutdown"), "{}", queued.end);

    d.send(json!({"type": "status", "id": "s1"})).await;
    let status = d.wait_for(|l| l["type"] == "status").await;
    assert_eq!(status["shutting_down"], true, "{status}");
    assert_eq!(status["running"][0]["id"], "stubborn");
    assert_eq!(status["running"][0]["stopping"], true);
    assert_eq!(status["queued"], json!([]));
    assert_eq!(
        status["totals"],
        json!({"accepted": 2, "ok": 0, "failed": 1, "refused": 0})
    );

    d.run(
        "late",
        json!({"prompt": "x", "resume": "00000000-0000-7000-8000-00000000000b"}),
    )
    .await;
    let late = d.collect_one("late").await;
    assert_eq!(late.code(), Some("shutdown"), "{}", late.end);
    assert_eq!(
        late.end["thread_id"],
        "00000000-0000-7000-8000-00000000000b"
    );
    assert!(late.events.is_empty());
    d.cancel("nobody").await;
    let rejected = d.wait_for(|l| l["type"] == "rejected").await;
    assert_eq!(rejected["code"], "unknown_id", "{rejected}");

    d.signal(libc::SIGTERM);
    let stubborn = d.collect_one("stubborn").await;
    assert_eq!(stubborn.code(), Some("shutdown"), "{}", stubborn.end);
    assert!(d.wait_exit().await.success());
    assert!(
        d.stderr()
            .contains("codex-runner exiting accepted=2 ok=0 failed=2 refused=2"),
        "{}",
        d.stderr()
    );
}

/// The bit of `signal` in a `/proc/<pid>/status` mask line such as `SigIgn`.
#[tokio::test]
async fn a_signal_during_start_up_is_acted_on_once_ready_and_leaves_nothing() {
    // A supervisor that stops a daemon it has just started: before, the
    // signal's default action ended it while it made its first turns'
    // dirs and cgroups, which stayed until a next start.
    let gate = Gate::new();
    let mut d = Daemon::builder()
        .arg("--max-concurrent")
        .arg("8")
        .env(
            "CODEX_RUNNER_TEST_GATE",
            &format!("after-prefill:{}", gate.path.display()),
        )
        .start()
        .await;
    let held = gate.hold().await;
    assert!(
        !d.leftover_turn_dirs().is_empty(),
        "at the gate, the first turns' dirs are made"
    );
    assert!(in_mask(d.pid(), "SigBlk", libc::SIGTERM));
    d.signal(libc::SIGTERM);
    drop(held);
    let status = d.wait_exit().await;
    assert!(status.success(), "{status}");
    assert!(
        d.leftover_turn_dirs().is_empty(),
        "{:?}",
        d.leftover_turn_dirs()
    );
}

fn in_mask(pid: u32, line: &str, signal: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(":"))
        .unwrap_or_else(|| panic!("no {line} in {status}"));
    u64::from_str_radix(mask.trim(), 16).unwrap() & (1 << (signal - 1)) != 0
}

#[tokio::test]
async fn sighup_and_sigint_stop_the_daemon_as_sigterm_does_unless_ignored() {
    // A closing terminal (SIGHUP) or Ctrl-C (SIGINT): the turn ends with
    // shutdown and its dir (which held the request's config) goes, rather
    // than waiting for a next start.
    for signal in [libc::SIGHUP, libc::SIGINT] {
        let mut d = Daemon::builder()
            .arg("--kill-grace")
            .arg("0.5")
            .start()
            .await;
        d.run_started("t", "hang").await;
        d.signal(signal);
        let (runs, _) = d.collect(&["t"]).await;
        assert_eq!(runs["t"].code(), Some("shutdown"), "{}", runs["t"].end);
        assert!(d.wait_exit().await.success(), "signal {signal}");
        assert!(d.leftover_turn_dirs().is_empty());
    }

    // Started under nohup: SIGHUP stays ignored (the kernel drops it), and
    // the runs go on.
    let mut d = Daemon::builder().ignore_signal(libc::SIGHUP).start().await;
    d.run_started("h", "hang").await;
    assert!(in_mask(d.pid(), "SigIgn", libc::SIGHUP));
    d.signal(libc::SIGHUP);
    assert!(in_mask(d.pid(), "SigIgn", libc::SIGHUP));
    d.cancel("h").await;
    d.run("after", json!({"prompt": "x"})).await;
    let (runs, _) = d.collect(&["h", "after"]).await;
    assert_eq!(runs["h"].code(), Some("cancelled"), "{}", runs["h"].end);
    runs["after"].assert_ok();
    d.assert_clean_exit().await;
}

/// A container's entrypoint is PID 1 of its namespace, and every orphan in
/// it is reparented there: those of a cancelled turn must be reaped, not
/// left as zombies for the container's life. And a daemon outside the
/// namespace, sharing the turn root and the cgroup parent, keeps its live
/// turn: the daemon inside cannot tell whether a pid outside is alive.
#[tokio::test]
async fn as_pid_1_it_reaps_orphans_and_spares_daemons_outside_its_namespace() {
    if !pid_namespaces_work() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make a PID namespace (unshare --pid)"
        );
        eprintln!("SKIPPED: no PID namespace can be made here (unshare --pid)");
        return;
    }
    let root = Arc::new(super::harness::turn_root_dir());
    let mut outside = Daemon::builder().turn_root(root.clone()).start().await;
    let gate = outside.run_at_gate("held", "x").await;
    let home = outside.record("held")["codex_home"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut inside = Daemon::builder()
        .turn_root(root.clone())
        .pid_1_of_its_namespace()
        .start()
        .await;
    inside
        .run(
            "orphans",
            json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "spawn_descendants"}}),
        )
        .await;
    inside
        .wait_for(|l| l["id"] == "orphans" && l["event"]["item"]["pids"].is_array())
        .await;
    inside.cancel("orphans").await;
    assert_eq!(
        inside.collect_one("orphans").await.code(),
        Some("cancelled")
    );

    // PID 1 of the namespace (unshare's child) keeps the daemon as its one
    // child once it has reaped the turn's killed orphans. Polled: nothing
    // signals a reap to a process outside.
    let init = children_of(inside.pid());
    assert_eq!(init.len(), 1, "unshare's children: {init:?}");
    let init = init[0].0;
    let reaped = async {
        loop {
            let children = children_of(init);
            if children.len() == 1 && !children[0].1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(READ_TIMEOUT, reaped)
        .await
        .unwrap_or_else(|_| panic!("PID 1's children stay {:?}", children_of(init)));
    inside.wait_for_stderr("started as PID 1").await;

    // The daemon inside has been through its start-up (and its cleanup of
    // dead daemons' dirs and cgroups): the turn outside is untouched.
    assert!(
        std::path::Path::new(&home).exists(),
        "the daemon inside removed a live turn's home outside"
    );
    gate.open().await;
    outside.collect_one("held").await.assert_ok();
    // `docker stop` signals PID 1, which passes it on: the daemon stops
    // (its stdin still open) and PID 1 exits with its status. Both share
    // the turn root: the last to exit checks it is empty.
    // SAFETY: kill with a pid of this test's own process tree.
    assert_eq!(unsafe { libc::kill(init as libc::pid_t, libc::SIGTERM) }, 0);
    assert!(inside.wait_exit().await.success());
    outside.assert_clean_exit().await;
}

#[tokio::test]
async fn a_second_sigterm_skips_the_grace_period() {
    // A grace longer than the harness's read timeout: only the second
    // signal can end these turns in time.
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("600")
        .start()
        .await;
    let stubborn = json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "hang_ignore_sigint"}});
    let mut timed = stubborn.clone();
    timed["timeout_secs"] = json!(0.2);
    d.run("stubborn", stubborn.clone()).await;
    d.run("cancelled", stubborn).await;
    d.run("timed", timed).await;
    for id in ["stubborn", "cancelled", "timed"] {
        d.wait_turn_started(id).await;
    }
    let codex = d.record("stubborn")["pid"].as_u64().unwrap();
    d.cancel("cancelled").await;
    // Both are stopping, for their own reasons, before any signal: status
    // says so for the one that timed out too. Polled: the time limit
    // passes on its own.
    let stopping = async {
        loop {
            d.send(json!({"type": "status"})).await;
            let status = d.wait_for(|l| l["type"] == "status").await;
            let stopping: Vec<&str> = status["running"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["stopping"] == true)
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            if stopping.contains(&"cancelled") && stopping.contains(&"timed") {
                assert!(!stopping.contains(&"stubborn"), "{status}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(READ_TIMEOUT, stopping)
        .await
        .expect("the cancelled and the timed-out run show as stopping");
    d.signal(libc::SIGTERM);
    // The first signal has been handled once the daemon logs it.
    d.wait_for_stderr("shutting down: stopping every run").await;
    assert!(alive(codex), "codex ignores SIGINT: only SIGKILL stops it");
    d.signal(libc::SIGTERM);
    let (runs, _) = d.collect(&["stubborn", "cancelled", "timed"]).await;
    // Killed at once, each with the reason it was first stopped for.
    for (id, code) in [
        ("stubborn", "shutdown"),
        ("cancelled", "cancelled"),
        ("timed", "timeout"),
    ] {
        assert_eq!(runs[id].code(), Some(code), "{}", runs[id].end);
        assert_eq!(runs[id].end["signal"], libc::SIGKILL, "{}", runs[id].end);
    }
    assert!(d.wait_exit().await.success());
    assert!(!alive(codex));
}

/// An operator cannot write `status` to the client's stdin: SIGUSR1 logs
/// it, and (its default action being to end the process) changes nothing.
#[tokio::test]
async fn sigusr1_logs_what_is_running_and_stops_nothing() {
    let mut d = Daemon::start().await;
    d.run_started("held", "hang").await;
    // SIGUSR2 only says it does nothing: its default action would have
    // ended the daemon without its clean-up.
    d.signal(libc::SIGUSR2);
    d.wait_for_stderr("SIGUSR2 received").await;
    d.signal(libc::SIGUSR1);
    d.wait_for_stderr("status: running held (").await;
    let stderr = d.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("status: running held ("))
        .unwrap();
    for field in ["running=1", "queued=0", "accepted=1", "ok=0"] {
        assert!(line.contains(field), "{field}: {line}");
    }
    d.cancel("held").await;
    let held = d.collect_one("held").await;
    assert_eq!(held.code(), Some("cancelled"), "{}", held.end);
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn sigquit_kills_every_turn_at_once_and_cleans_up() {
    // Ctrl-\ at a terminal: its default action (a core dump) would leave
    // the turn's dir, whose config.toml holds the request's secrets. A
    // grace longer than the harness's read timeout: only a stop without
    // it ends this turn in time.
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("600")
        .start()
        .await;
    d.run(
        "stubborn",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "hang_ignore_sigint"}}),
    )
    .await;
    d.wait_turn_started("stubborn").await;
    let codex = d.record("stubborn")["pid"].as_u64().unwrap();
    d.signal(libc::SIGQUIT);
    let stubborn = d.collect_one("stubborn").await;
    assert_eq!(stubborn.code(), Some("shutdown"), "{}", stubborn.end);
    assert_eq!(stubborn.end["signal"], libc::SIGKILL, "{}", stubborn.end);
    assert!(d.wait_exit().await.success());
    assert!(!alive(codex));
    assert!(d.leftover_turn_dirs().is_empty());
    assert!(d.stderr().contains("SIGQUIT received"), "{}", d.stderr());
}

#[tokio::test]
async fn a_sigkilled_daemon_takes_codex_along_and_the_next_one_cleans_up() {
    let root = Arc::new(super::harness::turn_root_dir());
    let mut first = Daemon::builder().turn_root(root.clone()).start().await;
    let cgroup = containment_is_cgroup(&first).await;
    let (codex, pids) = start_descendants(&mut first, "orphan").await;
    let home = first.record("orphan")["codex_home"]
        .as_str()
        .unwrap()
        .to_owned();
    first.signal(libc::SIGKILL);
    first.wait_exit().await;
    // Parent-death signal: codex does not run on without its daemon.
    wait_gone(codex, READ_TIMEOUT).await;
    assert!(
        std::path::Path::new(&home).exists(),
        "nobody cleaned up yet"
    );

    let mut second = Daemon::builder().turn_root(root.clone()).start().await;
    // One run through the new daemon proves its start-up is over.
    second.run("probe", json!({"prompt": "x"})).await;
    second.collect_one("probe").await.assert_ok();
    assert!(
        !std::path::Path::new(&home).exists(),
        "the stale turn dir (with its secrets) was not removed"
    );
    // The running turn's home and those kept for reuse: one line for all.
    second
        .wait_for_stderr("removed the turn dirs of dead codex-runners")
        .await;
    let stderr = second.stderr();
    let removed: Vec<&str> = stderr.lines().filter(|l| l.contains("turn dir")).collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    for pid in pids {
        if cgroup {
            assert!(
                !alive(pid),
                "descendant {pid} of the dead daemon's turn survived"
            );
        } else {
            // Nothing reaches what a SIGKILLed daemon's turn left outside
            // a cgroup (docs/reliability.md): not left for ten minutes.
            kill_escaped(pid).await;
        }
    }
    second.assert_clean_exit().await;
}

#[tokio::test]
async fn a_closed_stdout_stops_everything_cleanly() {
    let mut d = Daemon::start().await;
    d.run(
        "talky",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "slow", "FAKE_CODEX_EVENTS": "100000", "FAKE_CODEX_DELAY_MS": "5"}}),
    )
    .await;
    d.wait_for(|l| l["id"] == "talky" && l["event"]["type"] == "item.completed")
        .await;
    close_stdout_and_expect_a_clean_stop(&mut d, "talky").await;
    let fatal: Vec<Value> = d
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "fatal")
        .collect();
    assert_eq!(fatal.len(), 1, "{}", d.stderr());
}

/// An orchestrator that dies closes both pipes while its turns are silent
/// (codex waits on the model): before, the daemon took the end of input as
/// "finish what runs", and only a turn's next event, maybe an hour later,
/// found stdout gone.
#[tokio::test]
async fn a_dead_orchestrator_stops_the_daemon_while_its_turns_are_silent() {
    let mut d = Daemon::start().await;
    d.run_started("silent", "hang").await;
    drop(d.take_stdin());
    close_stdout_and_expect_a_clean_stop(&mut d, "silent").await;
}

/// The reader goes away while stdout's pipe is full and the daemon waits
/// for room: the wait ends (the pipe reports an error, not room) and the
/// daemon exits as for any lost stdout.
#[tokio::test]
async fn a_stdout_closed_while_full_stops_everything_cleanly() {
    let mut d = Daemon::start().await;
    d.run("flood", flood()).await;
    // Nothing is read: the pipe fills.
    d.wait_stdout_pipe_full().await;
    close_stdout_and_expect_a_clean_stop(&mut d, "flood").await;
}

/// A client that stops reading stdout slows codex down but never makes a
/// turn unstoppable: before, a turn waiting for room in the output queue
/// heard no cancel, no time limit and no second signal until stdout moved.
#[tokio::test]
async fn with_stdout_unread_cancel_and_timeouts_still_stop_codex() {
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("60")
        .start()
        .await;
    d.run("cancelled", flood()).await;
    // Nothing is read: the pipe fills.
    d.wait_stdout_pipe_full().await;
    // Started only now, so that its whole time limit runs while stdout is
    // backed up.
    let mut timed = flood();
    timed["timeout_secs"] = json!(0.5);
    d.run("timed", timed).await;
    d.wait_record("timed").await;
    d.cancel("cancelled").await;
    // The fake codex dies of SIGINT: no grace period is waited out.
    for id in ["cancelled", "timed"] {
        let pid = d.wait_record(id).await["pid"].as_u64().unwrap();
        wait_gone(pid, READ_TIMEOUT).await;
    }
    assert!(d.stdout_pipe_full(), "stdout was not read all along");
    let (runs, _) = d.collect(&["cancelled", "timed"]).await;
    assert_eq!(
        runs["cancelled"].code(),
        Some("cancelled"),
        "{}",
        runs["cancelled"].end
    );
    assert_eq!(
        runs["timed"].code(),
        Some("timeout"),
        "{}",
        runs["timed"].end
    );
    d.assert_clean_exit().await;
}

/// Params of a run whose codex prints a million 1 KB lines as fast as it can.
fn flood() -> Value {
    json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "slow", "FAKE_CODEX_EVENTS": "1000000", "FAKE_CODEX_DELAY_MS": "0", "FAKE_CODEX_PAYLOAD": "1000"}})
}

/// Closes the daemon's stdout while run `id` runs: the daemon exits 1, with
/// the run's codex dead and no turn dir left.
async fn close_stdout_and_expect_a_clean_stop(d: &mut Daemon, id: &str) {
    let codex = d.record(id)["pid"].as_u64().unwrap();
    d.close_stdout();
    let status = d.wait_exit().await;
    assert_eq!(status.code(), Some(1), "a lost stdout is an error exit");
    assert!(!alive(codex), "codex {codex} survived");
    assert!(d.leftover_turn_dirs().is_empty());
}

#[tokio::test]
async fn canary_secrets_never_reach_argv_logs_or_errors() {
    const HEADER: &str = "canary-header-7f3a9";
    const ENV: &str = "canary-env-51c2e";
    let mut d = Daemon::builder().env("RUST_LOG", "trace").start().await;
    let gate = Gate::new();
    let mut env = gate.env();
    env["MY_SECRET"] = json!(ENV);
    d.run(
        "secret",
        json!({"prompt": "x", "env": env,
               "mcp_servers": {"m": {"url": "http://127.0.0.1:9/", "http_headers": {"Authorization": format!("Bearer {HEADER}")}}}}),
    )
    .await;
    d.wait_turn_started("secret").await;
    let codex = d.record("secret")["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{codex}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("exec"), "{cmdline}");
    let daemon_cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    for secret in [HEADER, ENV] {
        assert!(!cmdline.contains(secret), "{secret} in codex's argv");
        assert!(!String::from_utf8_lossy(&daemon_cmdline).contains(secret));
    }
    gate.open().await;
    d.collect_one("secret").await.assert_ok();

    // A failure message that echoes a secret is redacted.
    d.run(
        "leaky",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "turn_failed", "FAKE_CODEX_FAIL_MESSAGE": format!("bad token {ENV}")}}),
    )
    .await;
    let leaky = d.collect_one("leaky").await;
    assert!(!leaky.error().contains(ENV), "{}", leaky.end);
    assert!(leaky.error().contains("[redacted]"), "{}", leaky.end);
    d.assert_clean_exit().await;
    let log = d.stderr();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at trace level"
    );
    for secret in [HEADER, ENV] {
        assert!(!log.contains(secret), "{secret} in the daemon's log");
    }
}

/// A daemon that exits while codex's database templates are still being
/// made (it starts making them when it starts) leaves neither that codex
/// nor its scratch dir behind.
#[tokio::test]
async fn exit_during_the_template_build_leaves_no_codex_and_no_scratch_dir() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // The stand-in codex tells its pid through a FIFO, then waits forever.
    let fifo = dir.path().join("pid");
    let path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let codex = dir.path().join("codex");
    std::fs::write(
        &codex,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 600\n",
            fifo.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&codex, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut d = Daemon::builder().codex_bin(&codex).start().await;
    let reader = fifo.clone();
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(&reader));
    let Ok(read) = tokio::time::timeout(READ_TIMEOUT, read).await else {
        // Release the blocked reader (the runtime waits for it at its drop).
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        panic!("the template build never started codex");
    };
    let pid: u64 = read.unwrap().unwrap().trim().parse().unwrap();
    assert!(alive(pid));
    let scratch_prefix = format!("codex-runner-db-template-{}-", d.pid());
    d.assert_clean_exit().await;
    wait_gone(pid, READ_TIMEOUT).await;
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&scratch_prefix))
        .collect();
    assert!(
        left.is_empty(),
        "scratch dirs outlived the daemon: {left:?}"
    );
}
