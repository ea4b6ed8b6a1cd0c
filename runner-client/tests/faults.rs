//! Ways a daemon can misbehave that the real one does not, played by `sh`.

mod common;

use std::time::Duration;

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
    // Alive longer than a failed write waits to learn its fate.
    let runner = fake_daemon("exec 0<&-; sleep 30");
    // The first lines may fit in the pipe before `sh` closes it.
    let mut error = None;
    for attempt in 0..50 {
        match runner.run(format!("r{attempt}"), params("x", &[])).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    match error {
        Some(ClientError::Write(e)) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
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
    let runner = fake_daemon(r#"read a; read b; echo 'this is not json'; sleep 3"#);
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
sleep 3"#;
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
    assert!(stream.next().await.is_none());
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
sleep 3"#
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
    let runner = fake_daemon("read a; echo sent >&2; sleep 3");
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
sleep 3"#;
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
    runner.shutdown().await.unwrap();
}

#[tokio::test]
async fn diag_lines_reach_their_run_and_fatal_explains_the_exit() {
    let script = r#"read a; read b
echo '{"type":"diag","id":"a","level":"warn","message":"codex: hello"}' >&2
echo 'a plain log line' >&2
sleep 0.3
echo '{"type":"end","id":"a","status":"ok"}'
echo '{"type":"fatal","message":"boom"}' >&2
exit 3"#;
    let runner = fake_daemon(script);
    let a = runner.run("a", params("x", &[])).await.unwrap();
    let b = runner.run("b", params("y", &[])).await.unwrap();
    let a = within("a", a.collect()).await.unwrap();
    assert_eq!(
        a.diags,
        [(
            codex_runner_client::DiagLevel::Warn,
            "codex: hello".to_owned()
        )]
    );
    match within("b", b.collect()).await {
        Err(ClientError::Exited {
            status: Some(status),
            fatal: Some(fatal),
        }) => assert_eq!((status.code(), fatal.as_str()), (Some(3), "boom")),
        other => panic!("{other:?}"),
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
