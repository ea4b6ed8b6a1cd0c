//! The wire protocol: what the existing client sends and reads, and an answer
//! for every bad line that never disturbs a live run.

use serde_json::{json, Value};

use super::harness::{fake_codex_bin, runner_bin, turn_root_dir, Daemon, READ_TIMEOUT};

/// Flags the daemon cannot start with get a `fatal` line (what a client
/// reads) and exit 2, whether clap or the daemon refuses them; before, clap's
/// refusals printed only text, and a time beyond what a clock reading holds
/// panicked.
#[tokio::test]
async fn bad_flags_are_a_fatal_line_and_exit_2() {
    let home = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--max-concurrent", "0"][..], "'0' for '--max-concurrent"),
        (&["--bogus"][..], "unexpected argument '--bogus'"),
        (
            &["--turn-timeout", "1e300"][..],
            "--turn-timeout must be a number of seconds from 0 to 1e9, got 1e300",
        ),
        (
            &["--kill-grace", "2e9"][..],
            "--kill-grace must be a number of seconds from 0 to 1e9, got 2000000000",
        ),
        // A negative number is the flag's value, refused as such, not taken
        // for a flag of its own.
        (
            &["--turn-timeout", "-1"][..],
            "--turn-timeout must be a number of seconds from 0 to 1e9, got -1",
        ),
        (
            &["--max-request-bytes", "0"][..],
            "'0' for '--max-request-bytes",
        ),
        (
            &["--max-event-bytes", "0"][..],
            "'0' for '--max-event-bytes",
        ),
        // Codex refuses a CODEX_HOME that does not exist: a misspelt one is
        // not made into a new, empty home.
        (
            &["--codex-home", "/nonexistent/codex-home"][..],
            "--codex-home (or CODEX_HOME) /nonexistent/codex-home does not exist",
        ),
        (
            &["check", "--codex-home", "/nonexistent/codex-home"][..],
            "--codex-home (or CODEX_HOME) /nonexistent/codex-home does not exist",
        ),
        (
            &["--turn-dir", "/proc/no-such-dir"][..],
            "--turn-dir /proc/no-such-dir: creating it failed: No such file or directory",
        ),
    ] {
        let home_flag: &[&std::ffi::OsStr] = if args.contains(&"--codex-home") {
            &[]
        } else {
            &["--codex-home".as_ref(), home.path().as_os_str()]
        };
        let out = tokio::time::timeout(
            READ_TIMEOUT,
            tokio::process::Command::new(runner_bin())
                .args(args)
                .arg("--codex-bin")
                .arg(fake_codex_bin())
                .args(home_flag)
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await
        .expect("the daemon exits")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let fatal: Vec<Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "fatal")
            .collect();
        assert_eq!(fatal.len(), 1, "{args:?}: {stderr}");
        let message = fatal[0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{args:?}: {message}");
    }
}

/// `check` as a person runs it: its flags after the subcommand, an empty
/// CODEX_HOME taken as unset (as codex takes it), and the program a turn
/// would run shown.
#[tokio::test]
async fn check_takes_its_flags_after_the_subcommand_and_shows_the_program() {
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(runner_bin())
        .args(["check", "--max-request-bytes", "100", "--codex-bin"])
        .arg(fake_codex_bin())
        .env("CODEX_HOME", "")
        .env("HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = format!(
        "{}\n{}\n",
        r#"{"type":"run","id":"a","params":{"prompt":"x"}}"#,
        json!({"type": "run", "id": "b", "params": {"prompt": "x".repeat(100)}}),
    );
    tokio::io::AsyncWriteExt::write_all(&mut stdin, lines.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(READ_TIMEOUT, child.wait_with_output())
        .await
        .expect("check exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let verdicts: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert_eq!(verdicts[0]["ok"], true, "{}", verdicts[0]);
    assert_eq!(
        verdicts[0]["program"]
            .as_str()
            .map(std::path::PathBuf::from),
        Some(fake_codex_bin())
    );
    assert_eq!(verdicts[1]["code"], "line_too_long", "{}", verdicts[1]);
}

#[tokio::test]
async fn existing_client_run_streams_events_then_one_end() {
    let mut d = Daemon::start().await;
    // Exactly what the existing client sends: content always an array,
    // absent options omitted.
    d.run(
        "r1",
        json!({
            "model": "gpt-5.5",
            "input": {"content": [{"type": "text", "text": "hello there"}], "name": "alice"},
            "effort": "low",
            "web_search_enabled": false,
            "mcp_servers": {"tools": {"url": "http://127.0.0.1:9/mcp", "http_headers": {"Authorization": "Bearer abc123"}}},
            "agent_instance_hierarchy": "root/child"
        }),
    )
    .await;
    let run = d.collect_one("r1").await;
    run.assert_ok();
    assert_eq!(
        run.event_types(),
        [
            "thread.started",
            "turn.started",
            "item.started",
            "item.completed",
            "turn.completed"
        ]
    );
    assert_eq!(
        run.agent_texts(),
        ["echo: [alice] :\n\nhello there (turn 1)"]
    );
    for raw in &run.raw_events {
        assert!(
            raw.starts_with(r#"{"type":"event","id":"r1","event":{"#),
            "{raw}"
        );
        let line: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(line.as_object().unwrap().len(), 3, "{raw}");
    }
    let end = &run.end;
    assert_eq!(end["type"], "end");
    assert_eq!(end["status"], "ok");
    assert!(end.get("error").is_none(), "{end}");
    let thread = run.events[0]["thread_id"].as_str().unwrap();
    assert_eq!(end["thread_id"], thread);
    assert_eq!(end["usage"]["input_tokens"], 100);
    assert_eq!(end["exit_code"], 0);
    assert!(end["duration_ms"].is_u64());
    let record = d.record("r1");
    assert_eq!(
        record["env"]["OBJECTIVEAI_AGENT_INSTANCE_HIERARCHY"],
        "root/child"
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn events_are_forwarded_byte_for_byte_including_duplicate_keys_and_unknown_types() {
    let mut d = Daemon::start().await;
    d.run(
        "all",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "all_items"}}),
    )
    .await;
    d.run(
        "new",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "unknown_events"}}),
    )
    .await;
    let (runs, others) = d.collect(&["all", "new"]).await;
    assert!(others.is_empty());
    let all = &runs["all"];
    all.assert_ok();
    let web = all
        .raw_events
        .iter()
        .find(|l| l.contains("web_search"))
        .expect("a web_search line");
    assert!(
        web.contains(r#""item":{"id":"item_5","type":"web_search","id":"ws_1","query":"rust""#),
        "the duplicate id key must survive untouched: {web}"
    );
    let item_types: Vec<&str> = all
        .events
        .iter()
        .filter(|e| e["type"] == "item.completed")
        .map(|e| e["item"]["type"].as_str().unwrap())
        .collect();
    for expected in [
        "reasoning",
        "command_execution",
        "file_change",
        "mcp_tool_call",
        "todo_list",
        "web_search",
        "collab_tool_call",
        "error",
        "agent_message",
    ] {
        assert!(
            item_types.contains(&expected),
            "missing {expected}: {item_types:?}"
        );
    }
    let new = &runs["new"];
    new.assert_ok();
    assert!(new.event_types().contains(&"turn.future_thing".to_owned()));
    assert!(new
        .events
        .iter()
        .any(|e| e["item"]["type"] == "future_item"));
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn every_bad_line_gets_an_answer_and_live_runs_are_undisturbed() {
    let mut d = Daemon::builder()
        .arg("--max-request-bytes")
        .arg("4096")
        .start()
        .await;
    let gate = d.run_at_gate("live", "held").await;

    d.send_raw(b"{this is not json\n").await;
    // Blank lines get no answer but are counted; `\r\n` ends a line too.
    d.send_raw(b"\n\r\n").await;
    d.send_raw(b"[1,2,3]\r\n").await;
    d.send_raw(b"{\"type\":\"run\",\"params\":{\"prompt\":\"x\"}}\n")
        .await;
    d.send_raw(b"{\"type\":\"run\",\"id\":\"\",\"params\":{\"prompt\":\"x\"}}\n")
        .await;
    d.send_raw(b"{\"type\":\"launch\",\"id\":\"x\"}\n").await;
    d.run("live", json!({"prompt": "dup"})).await;
    d.send_raw(
        format!(
            "{{\"type\":\"run\",\"id\":\"big\",\"params\":{{\"prompt\":\"{}\"}}}}\n",
            "a".repeat(10_000)
        )
        .as_bytes(),
    )
    .await;
    d.send_raw(b"{\"type\":\"run\",\"id\":\"bad\xff\"}\n").await;
    d.cancel("nobody").await;
    d.run(
        "typo",
        json!({"prompt": "x", "mcp_servers": {"s": {"url": "http://h/", "headers": {"A": "b"}}}}),
    )
    .await;

    let mut answers = Vec::new();
    while answers.len() < 10 {
        let line = d.next_line().await;
        if line["type"] == "event" {
            assert_eq!(line["id"], "live");
        } else {
            answers.push(line);
        }
    }
    let codes: Vec<(&str, &str)> = answers
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap(),
                a["code"].as_str().unwrap_or_else(|| panic!("{a}")),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("rejected", "malformed_json"),
            ("rejected", "malformed_json"),
            ("rejected", "missing_id"),
            ("rejected", "missing_id"),
            ("rejected", "unknown_type"),
            ("rejected", "duplicate_id"),
            ("rejected", "line_too_long"),
            ("rejected", "invalid_utf8"),
            ("rejected", "unknown_id"),
            ("end", "invalid_params"),
        ]
    );
    // Line 1 is `live`'s run, lines 3 and 4 are blank.
    let lines = [2, 5, 6, 7, 8, 9, 10, 11, 12];
    for (answer, line) in answers[..9].iter().zip(lines) {
        assert!(
            answer.get("id").is_none(),
            "a rejection never carries `id`: {answer}"
        );
        assert!(!answer["error"].as_str().unwrap().is_empty());
        assert_eq!(answer["line"], line, "{answer}");
    }
    assert_eq!(answers[5]["request_id"], "live");
    assert_eq!(answers[8]["request_id"], "nobody");
    assert_eq!(answers[9]["id"], "typo");
    assert_eq!(answers[9]["status"], "error");
    assert!(
        answers[9]["error"]
            .as_str()
            .unwrap()
            .contains("params.mcp_servers.s.headers"),
        "{}",
        answers[9]
    );

    gate.open().await;
    let live = d.collect_one("live").await;
    live.assert_ok();
    assert_eq!(live.agent_texts(), ["echo: held (turn 1)"]);
    // The id is free again once its end was seen.
    d.run("live", json!({"prompt": "again"})).await;
    d.collect_one("live").await.assert_ok();
    d.assert_clean_exit().await;
}

/// A file saved by a Windows tool starts with a UTF-8 byte order mark:
/// allowed on the first line of the input (RFC 8259 lets a reader ignore
/// it), named as the error on any other.
#[tokio::test]
async fn a_byte_order_mark_is_read_past_on_the_first_line_only() {
    let mut d = Daemon::start().await;
    d.send_raw(b"\xef\xbb\xbf{\"type\":\"run\",\"id\":\"bom\",\"params\":{\"prompt\":\"x\"}}\n")
        .await;
    d.collect_one("bom").await.assert_ok();
    d.send_raw(b"\xef\xbb\xbf{\"type\":\"run\",\"id\":\"bom2\",\"params\":{\"prompt\":\"x\"}}\n")
        .await;
    let answer = d.next_line().await;
    assert_eq!(answer["type"], "rejected", "{answer}");
    assert_eq!(answer["line"], 2);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("byte order mark"),
        "{answer}"
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn cancel_stops_a_running_turn_and_a_queued_one() {
    let mut d = Daemon::builder()
        .arg("--max-concurrent")
        .arg("1")
        .start()
        .await;
    d.run_started("running", "hang").await;
    d.run("queued", json!({"prompt": "x"})).await;
    d.cancel("queued").await;
    let queued = d.collect_one("queued").await;
    assert!(queued.events.is_empty(), "a queued run never started");
    assert_eq!(queued.code(), Some("cancelled"));
    assert!(queued.error().starts_with("cancelled"), "{}", queued.end);

    d.cancel("running").await;
    // A second cancel of a run being stopped is a no-op: no answer of its
    // own, and the end is the first cancel's.
    d.cancel("running").await;
    let running = d.collect_one("running").await;
    assert_eq!(running.status(), "error");
    assert_eq!(running.code(), Some("cancelled"));
    assert!(running.error().starts_with("cancelled"));
    assert!(running.end["thread_id"].is_string());
    // A cancel after the end names an unknown id (and is the next line:
    // the second cancel above had no answer).
    d.cancel("running").await;
    let late = d.next_line().await;
    assert_eq!(
        (late["type"].as_str(), late["code"].as_str()),
        (Some("rejected"), Some("unknown_id"))
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn sigint_ignoring_codex_is_killed_after_the_grace_period() {
    let mut d = Daemon::builder()
        .arg("--kill-grace")
        .arg("0.2")
        .start()
        .await;
    d.run_started("stubborn", "hang_ignore_sigint").await;
    d.cancel("stubborn").await;
    let run = d.collect_one("stubborn").await;
    assert_eq!(run.code(), Some("cancelled"));
    assert_eq!(run.end["signal"], libc::SIGKILL);
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn timeouts_per_request_and_daemon_default() {
    let mut d = Daemon::builder()
        .arg("--turn-timeout")
        .arg("0.3")
        .start()
        .await;
    d.run(
        "req",
        json!({"prompt": "x", "timeout_secs": 0.2, "env": {"FAKE_CODEX_SCENARIO": "hang"}}),
    )
    .await;
    d.run(
        "default",
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "hang"}}),
    )
    .await;
    let (runs, _) = d.collect(&["req", "default"]).await;
    assert_eq!(runs["req"].code(), Some("timeout"));
    assert_eq!(runs["req"].error(), "timed out after 0.200s");
    assert_eq!(runs["default"].code(), Some("timeout"));
    assert_eq!(runs["default"].error(), "timed out after 0.300s");
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn a_time_limit_counts_from_the_turns_start_not_its_queueing() {
    let mut d = Daemon::builder()
        .arg("--max-concurrent")
        .arg("1")
        .start()
        .await;
    let gate = d.run_at_gate("held", "x").await;
    d.run("queued", json!({"prompt": "x", "timeout_secs": 0.2}))
        .await;
    // Waits (by the daemon's own clock) until the run has been queued for
    // longer than its limit.
    let waited = async {
        loop {
            d.send(json!({"type": "status"})).await;
            let status = d.wait_for(|l| l["type"] == "status").await;
            let age = status["queued"][0]["age_ms"].as_u64().unwrap();
            if age >= 250 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READ_TIMEOUT, waited)
        .await
        .expect("the run stays queued");
    gate.open().await;
    let (runs, _) = d.collect(&["held", "queued"]).await;
    runs["held"].assert_ok();
    runs["queued"].assert_ok();
    assert!(
        runs["queued"].end["queued_ms"].as_u64().unwrap() >= 250,
        "{}",
        runs["queued"].end
    );
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn status_lists_running_and_queued_runs() {
    let mut d = Daemon::builder()
        .arg("--max-concurrent")
        .arg("1")
        .start()
        .await;
    let gate = d.run_at_gate("held", "x").await;
    d.run(
        "waiting",
        json!({"prompt": "y", "resume": "00000000-0000-7000-8000-000000000007"}),
    )
    .await;
    d.send(json!({"type": "status", "id": "s1"})).await;
    let status = d.wait_for(|l| l["type"] == "status").await;
    assert_eq!(status["request_id"], "s1");
    assert!(
        status.get("id").is_none(),
        "never mistaken for a run's line"
    );
    let running = status["running"].as_array().unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0]["id"], "held");
    assert!(
        running[0]["thread_id"].is_string(),
        "learned from thread.started"
    );
    assert!(running[0]["running_ms"].is_u64());
    assert_eq!(
        status["queued"],
        json!([{"id": "waiting", "thread_id": "00000000-0000-7000-8000-000000000007", "age_ms": status["queued"][0]["age_ms"]}])
    );
    assert_eq!(status["max_concurrent"], 1);
    assert_eq!(status["totals"]["accepted"], 2);
    d.cancel("waiting").await;
    gate.open().await;
    let (runs, _) = d.collect(&["held", "waiting"]).await;
    runs["held"].assert_ok();
    d.send(json!({"type": "status"})).await;
    let status = d.wait_for(|l| l["type"] == "status").await;
    assert_eq!(status["running"], json!([]));
    assert_eq!(
        status["totals"],
        json!({"accepted": 2, "ok": 1, "failed": 1, "refused": 0})
    );
    d.assert_clean_exit().await;
}

/// Stdin as a shell redirect gives it (a file) and as Node's child_process
/// gives it (a socket), besides the pipe every other test uses: each is
/// read to its end, and every request gets its `end`.
#[tokio::test]
async fn requests_are_read_from_a_file_or_a_socket_on_stdin_too() {
    use std::io::Write;
    let requests = three_runs("s");

    let mut file = tempfile::tempfile().unwrap();
    file.write_all(requests.as_bytes()).unwrap();
    std::io::Seek::rewind(&mut file).unwrap();
    assert_ends_for_all(std::process::Stdio::from(file), None, "thread").await;

    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let writer = std::thread::spawn(move || {
        let mut ours = ours;
        ours.write_all(requests.as_bytes()).unwrap();
        ours.shutdown(std::net::Shutdown::Write).unwrap();
        ours
    });
    assert_ends_for_all(
        std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        Some(writer),
        "socket",
    )
    .await;
}

async fn assert_ends_for_all(
    stdin: std::process::Stdio,
    writer: Option<std::thread::JoinHandle<std::os::unix::net::UnixStream>>,
    read_by: &str,
) {
    use super::harness::READ_TIMEOUT;
    let (base, turns) = (tempfile::tempdir().unwrap(), turn_root_dir());
    let child = bare_daemon(base.path(), turns.path())
        .arg("--log-format=pretty")
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(READ_TIMEOUT, child.wait_with_output())
        .await
        .expect("the daemon exits at the end of its input")
        .unwrap();
    if let Some(writer) = writer {
        drop(writer.join().unwrap());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("reading stdin stdin=\"{read_by}\"")),
        "stdin not read by {read_by}: {stderr}"
    );
    assert_eq!(
        ok_end_ids(&String::from_utf8(out.stdout).unwrap()),
        ["s0", "s1", "s2"]
    );
}

/// One socket as both stdin and stdout, as systemd's socket activation
/// (`Accept=yes`) hands a connection over: read and written both through
/// the runtime's epoll, and a client's half-close ends the input.
#[tokio::test]
async fn one_socket_as_stdin_and_stdout_serves_a_connection() {
    use super::harness::READ_TIMEOUT;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    let (base, turns) = (tempfile::tempdir().unwrap(), turn_root_dir());
    let (mut client, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let theirs_out = theirs.try_clone().unwrap();
    let mut child = bare_daemon(base.path(), turns.path())
        .stdin(std::process::Stdio::from(OwnedFd::from(theirs)))
        .stdout(std::process::Stdio::from(OwnedFd::from(theirs_out)))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let conversation = tokio::task::spawn_blocking(move || {
        client.write_all(three_runs("c").as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        answer
    });
    let answer = tokio::time::timeout(READ_TIMEOUT, conversation)
        .await
        .expect("the daemon answers and closes the connection")
        .unwrap();
    let status = tokio::time::timeout(READ_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(ok_end_ids(&answer), ["c0", "c1", "c2"]);
}

/// Three `run` requests, ids `<prefix>0` to `<prefix>2`, as JSONL.
fn three_runs(prefix: &str) -> String {
    (0..3)
        .map(|i| format!("{{\"type\":\"run\",\"id\":\"{prefix}{i}\",\"params\":{{\"prompt\":\"hi {i}\"}}}}\n"))
        .collect()
}

/// The daemon over the fake codex, with stdio left to the caller (the
/// harness's `Daemon` always pipes it).
fn bare_daemon(
    base_home: &std::path::Path,
    turn_root: &std::path::Path,
) -> tokio::process::Command {
    use super::harness::{fake_codex_bin, runner_bin};
    let mut command = tokio::process::Command::new(runner_bin());
    command
        .arg("--codex-bin")
        .arg(fake_codex_bin())
        .arg("--codex-home")
        .arg(base_home)
        .arg("--turn-dir")
        .arg(turn_root.join("turns"))
        .env_remove("FAKE_CODEX_SCENARIO")
        .kill_on_drop(true);
    command
}

/// The ids of the `end` lines in `output`, sorted, each checked to be `ok`.
fn ok_end_ids(output: &str) -> Vec<String> {
    let mut ends: Vec<String> = output
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "end")
        .map(|l| {
            assert_eq!(l["status"], "ok", "{l}");
            l["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ends.sort();
    ends
}
