//! Ways a daemon can misbehave that the real one does not, played by `sh`.

mod common;

use codex_runner_client::{ClientError, EndStatus, RunEvent, Runner, ThreadEvent};
use common::{params, within};

fn fake_daemon(script: &str) -> Runner {
    Runner::builder("sh")
        .args(["-c", script])
        .forward_logs(false)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_daemon_that_closed_its_stdin_is_a_broken_pipe() {
    use tokio::io::AsyncReadExt;
    // `sh` says through a FIFO when it has closed its stdin; it stays alive
    // longer than a failed write waits to learn its fate.
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    let path = std::ffi::CString::new(closed.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // Opened read-write, so that opening never blocks and a read waits for
    // the line rather than finding no writer yet.
    let mut told = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&closed)
        .unwrap();
    let runner = fake_daemon(&format!(
        "exec 0<&-; echo closed > '{}'; exec sleep 30",
        closed.display()
    ));
    let mut line = [0u8; 7];
    within("sh closes its stdin", told.read_exact(&mut line))
        .await
        .unwrap();
    match runner.run("r", params("x", &[])).await {
        Err(ClientError::Write(e)) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("{other:?}"),
    }
    // Later requests fail the same way, without writing.
    assert!(matches!(
        runner.run("again", params("x", &[])).await,
        Err(ClientError::Write(_))
    ));
}

#[tokio::test]
async fn an_unparseable_line_fails_every_pending_run() {
    let runner = fake_daemon(r#"read a; read b; echo 'this is not json'; exec cat >/dev/null"#);
    let first = runner.run("a", params("x", &[])).await.unwrap();
    let second = runner.run("b", params("y", &[])).await.unwrap();
    for stream in [first, second] {
        match within("invalid output", stream.collect()).await {
            Err(ClientError::InvalidOutput { line, .. }) => assert_eq!(line, "this is not json"),
            other => panic!("{other:?}"),
        }
    }
    // The runner itself goes on: the id is free again.
    assert!(runner.run("a", params("x", &[])).await.is_ok());
}

#[tokio::test]
async fn unknown_line_types_and_fields_are_ignored() {
    let script = r#"read a
echo '{"type":"progress","id":"r","future":true}'
echo '{"type":"event","id":"r","event":{"type":"turn.future","x":1},"extra":1}'
echo '{"type":"event","id":"nobody","event":{"type":"turn.started"}}'
echo '{"type":"end","id":"r","status":"ok","new_field":[1]}'
exec cat >/dev/null"#;
    let runner = fake_daemon(script);
    let mut stream = runner.run("r", params("x", &[])).await.unwrap();
    match within("event", stream.next()).await {
        Some(Ok(RunEvent::Event(ThreadEvent::Other(value)))) => assert_eq!(value["x"], 1),
        other => panic!("{other:?}"),
    }
    match within("end", stream.next()).await {
        Some(Ok(RunEvent::End(end))) => assert_eq!(end.status, EndStatus::Ok),
        other => panic!("{other:?}"),
    }
    assert!(within("stream end", stream.next()).await.is_none());
}

/// The daemon forwards any JSON object codex prints; serde_json stops at 128
/// levels. Before, such an event failed its run here while the daemon ran
/// it on, and its id could be reused under it.
#[tokio::test]
async fn an_event_too_deep_to_type_arrives_raw_and_the_run_goes_on() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let event = format!(r#"{{"type":"item.completed","x":{deep}}}"#);
    let script = format!(
        r#"read a
echo '{{"type":"event","id":"r","event":{event}}}'
echo '{{"type":"end","id":"r","status":"ok"}}'
exec cat >/dev/null"#
    );
    let runner = fake_daemon(&script);
    let output = within(
        "run",
        runner.run("r", params("x", &[])).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_eq!(output.unparsed, [event]);
    assert!(output.events.is_empty());
    assert_eq!(output.end.status, EndStatus::Ok);
}

/// JSON has no NaN or infinity: serde_json would write `null`, which the
/// daemon takes as "not given".
#[tokio::test]
async fn a_time_limit_json_cannot_carry_is_refused_before_it_is_sent() {
    let runner = fake_daemon("read a; echo sent >&2; exec cat >/dev/null");
    let mut p = params("x", &[]);
    p.timeout_secs = Some(f64::INFINITY);
    match runner.run("r", p).await {
        Err(ClientError::Encode(e)) => assert!(e.to_string().contains("timeout_secs"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Nothing was written: the id is still free.
    assert!(runner.run("r", params("x", &[])).await.is_ok());
}

#[tokio::test]
async fn an_end_without_status_fails_only_its_run() {
    let script = r#"read a; read b
echo '{"type":"end","id":"a"}'
echo '{"type":"end","id":"b","status":"ok"}'
exec cat >/dev/null"#;
    let runner = fake_daemon(script);
    let a = runner.run("a", params("x", &[])).await.unwrap();
    let b = runner.run("b", params("y", &[])).await.unwrap();
    assert!(matches!(
        within("a", a.collect()).await,
        Err(ClientError::InvalidOutput { .. })
    ));
    assert_eq!(
        within("b", b.collect()).await.unwrap().end.status,
        EndStatus::Ok
    );
}

#[tokio::test]
async fn a_clean_exit_with_runs_pending_fails_them() {
    let runner = fake_daemon("read a; exit 0");
    let stream = runner.run("a", params("x", &[])).await.unwrap();
    match within("exit", stream.collect()).await {
        Err(ClientError::Exited {
            status: Some(status),
            fatal: None,
        }) => assert!(status.success()),
        other => panic!("{other:?}"),
    }
    // Nothing failed about the exit itself.
    within("shutdown", runner.shutdown()).await.unwrap();
}

#[tokio::test]
async fn diag_lines_reach_their_run_and_fatal_explains_the_exit() {
    // The `end` waits for a third request, sent once the diag has arrived:
    // stderr is not ordered with stdout, and a diag after its run's end is
    // dropped.
    let script = r#"read a; read b
echo '{"type":"diag","id":"a","level":"warn","message":"codex: hello"}' >&2
echo 'a plain log line' >&2
read go
echo '{"type":"end","id":"a","status":"ok"}'
echo '{"type":"fatal","message":"boom"}' >&2
exit 3"#;
    let runner = fake_daemon(script);
    let mut a = runner.run("a", params("x", &[])).await.unwrap();
    let b = runner.run("b", params("y", &[])).await.unwrap();
    match within("a's diag", a.next()).await {
        Some(Ok(RunEvent::Diag { level, message })) => {
            assert_eq!(level, codex_runner_client::DiagLevel::Warn);
            assert_eq!(message, "codex: hello");
        }
        other => panic!("{other:?}"),
    }
    let go = runner.run("go", params("z", &[])).await.unwrap();
    match within("a's end", a.next()).await {
        Some(Ok(RunEvent::End(end))) => assert_eq!(end.status, EndStatus::Ok),
        other => panic!("{other:?}"),
    }
    assert!(within("a's stream", a.next()).await.is_none());
    for pending in [b, go] {
        match within("b", pending.collect()).await {
            Err(ClientError::Exited {
                status: Some(status),
                fatal: Some(fatal),
            }) => assert_eq!((status.code(), fatal.as_str()), (Some(3), "boom")),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn runners_and_streams_can_move_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Runner>();
    send::<codex_runner_client::RunStream>();
    send_sync::<ClientError>();
}
