//! The mock model alone, driven by a raw blocking HTTP/1.1 client (no codex
//! needed). Plain `#[test]`s on purpose: the mock runs on its own runtime.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use codex_runner_test_support::{MockModel, Reply, Script};
use serde_json::{json, Value};

/// `127.0.0.1:PORT` of the mock.
fn addr(model: &MockModel) -> String {
    model
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned()
}

/// POSTs `body` to `/v1/responses`; returns the status and whatever arrived
/// before EOF or `wait` of silence.
fn post(model: &MockModel, body: &Value, wait: Duration) -> (u16, String) {
    post_to(&addr(model), body, wait)
}

fn post_to(addr: &str, body: &Value, wait: Duration) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST /v1/responses HTTP/1.1\r\nhost: {addr}\r\nx-test: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        response.extend_from_slice(&buf[..n]);
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn turn(prompt: &str, tools: Value, tail: &[Value]) -> Value {
    let mut input = vec![
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}),
    ];
    input.extend_from_slice(tail);
    json!({"model": "gpt-5.5", "stream": true, "input": input, "tools": tools})
}

const QUICK: Duration = Duration::from_secs(5);

#[test]
fn default_script_answers_ok_and_records_the_request() {
    let model = MockModel::start(Script::Default);
    let (status, body) = post(&model, &turn("hello", json!([]), &[]), QUICK);
    assert_eq!(status, 200, "{body}");
    let order = [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_item.done",
        "response.completed",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|e| body.find(&format!("event: {e}\n")).unwrap())
        .collect();
    assert!(positions.is_sorted(), "{body}");
    assert!(body.contains(r#""text":"ok: hello""#), "{body}");
    let requests = model.requests();
    assert_eq!(requests[0].header("X-Test"), Some("1"));
    assert_eq!(requests[0].prompt(), Some("hello"));
    assert_eq!(requests[0].path, "/v1/responses");
}

#[test]
fn queue_then_default() {
    let model = MockModel::start(Script::queue([Reply::message("first")]));
    assert!(post(&model, &turn("a", json!([]), &[]), QUICK)
        .1
        .contains(r#""text":"first""#));
    assert!(post(&model, &turn("b", json!([]), &[]), QUICK)
        .1
        .contains(r#""text":"ok: b""#));
}

#[test]
fn mcp_tool_call_goes_through_tool_search() {
    let model = MockModel::start(Script::Default);
    let tools = json!([{"type": "tool_search", "execution": "client"}]);
    let (_, body) = post(
        &model,
        &turn("call whoami on probe", tools.clone(), &[]),
        QUICK,
    );
    assert!(
        body.contains(r#""type":"tool_search_call""#) && body.contains(r#""call_id":"search_1""#),
        "{body}"
    );

    let searched = json!({"type": "tool_search_output", "call_id": "search_1", "tools": []});
    let (_, body) = post(
        &model,
        &turn(
            "call whoami on probe",
            tools.clone(),
            std::slice::from_ref(&searched),
        ),
        QUICK,
    );
    assert!(
        body.contains(r#""namespace":"mcp__probe""#) && body.contains(r#""call_id":"call_2""#),
        "{body}"
    );
    assert!(
        body.contains(r#""name":"whoami""#) && body.contains(r#""arguments":"{}""#),
        "{body}"
    );

    let output =
        json!({"type": "function_call_output", "call_id": "call_2", "output": "I am probe"});
    let (_, body) = post(
        &model,
        &turn("call whoami on probe", tools, &[searched, output]),
        QUICK,
    );
    assert!(
        body.contains(r#""text":"tool whoami returned: I am probe""#),
        "{body}"
    );
}

#[test]
fn mcp_tool_call_is_direct_when_the_namespace_is_offered() {
    let model = MockModel::start(Script::queue([Reply::mcp_tool(
        "my.srv",
        "echo",
        json!({"text": "x"}),
    )]));
    let tools = json!([{"type": "namespace", "name": "mcp__my_srv", "tools": []}]);
    let (_, body) = post(&model, &turn("go", tools, &[]), QUICK);
    assert!(
        body.contains(r#""type":"function_call""#) && body.contains(r#""namespace":"mcp__my_srv""#),
        "{body}"
    );
}

#[test]
fn failures() {
    let model = MockModel::start(Script::queue([
        Reply::failed("boom"),
        Reply::http_500(),
        Reply::http_401(),
    ]));
    let (status, body) = post(&model, &turn("a", json!([]), &[]), QUICK);
    assert_eq!(status, 200);
    assert!(
        body.contains("event: response.failed")
            && body.contains("boom")
            && !body.contains("response.completed"),
        "{body}"
    );
    assert_eq!(post(&model, &turn("a", json!([]), &[]), QUICK).0, 500);
    assert_eq!(post(&model, &turn("a", json!([]), &[]), QUICK).0, 401);
}

#[test]
fn stall_holds_the_stream_open_until_the_mock_is_dropped() {
    let model = MockModel::start(Script::queue([Reply::Stall]));
    let (status, body) = post(
        &model,
        &turn("a", json!([]), &[]),
        Duration::from_millis(300),
    );
    assert_eq!(status, 200);
    assert!(
        body.contains("response.created") && !body.contains("response.completed"),
        "{body}"
    );

    // A second connection stalls too; dropping the mock closes it at once.
    let model = MockModel::start(Script::from_fn(|_| Reply::Stall));
    let addr = addr(&model);
    let reader = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut all = Vec::new();
        let started = std::time::Instant::now();
        let eof = stream.read_to_end(&mut all).is_ok();
        (eof, started.elapsed())
    });
    // Once the request has arrived, the stream is stalled; then drop.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(model.wait_for_requests(1, QUICK));
    drop(model);
    let (eof, elapsed) = reader.join().unwrap();
    // A stalled stream ends when the model is dropped (the read would
    // otherwise never return; the test's own timeout would catch that).
    assert!(eof, "eof={eof} after {elapsed:?}");
}

#[tokio::test]
async fn wait_for_requests_returns_once_they_arrived() {
    let model = MockModel::start(Script::Default);
    let addr = addr(&model);
    let client = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(100));
        post_to(&addr, &turn("late", json!([]), &[]), QUICK)
    });
    let requests = model.wait_for_requests(1, QUICK).await;
    assert_eq!(requests[0].prompt(), Some("late"));
    assert_eq!(client.await.unwrap().0, 200);
}
