//! A mock of the OpenAI Responses API, so the real codex can run offline.
//!
//! Codex only ever calls `POST {base_url}/responses` (SSE, `stream: true`) on
//! a custom provider, so that is all this serves; anything else gets 404.
//! Every request is recorded before it is answered, so a test can assert on
//! what codex sent even when the reply is a stall or an error.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{stream, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{body::Frame, body::Incoming};
use tokio::sync::Notify;

use crate::{
    mock_request::RecordedRequest,
    mock_script::{Outcome, Responder, Script},
    server::{Background, HttpResponse},
    sse,
};

/// A running mock model on 127.0.0.1; dropping it stops it (and ends any
/// stalled response).
pub struct MockModel {
    shared: Arc<Shared>,
    server: Background,
}

struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    responder: Mutex<Responder>,
    arrived: Notify,
}

impl MockModel {
    /// Starts the mock on a free port. Panics if it cannot bind: a test
    /// cannot go on without its model.
    pub fn start(script: Script) -> Self {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            responder: Mutex::new(Responder::new(script)),
            arrived: Notify::new(),
        });
        let service = {
            let shared = shared.clone();
            hyper::service::service_fn(move |request| handle(shared.clone(), request))
        };
        let server = Background::serve("mock-model", service).expect("mock model: bind 127.0.0.1");
        Self { shared, server }
    }

    /// The provider `base_url`: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests have arrived and returns them all;
    /// panics after `timeout`. Useful before cancelling a stalled turn.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                let requests = self.requests();
                if requests.len() >= n {
                    return requests;
                }
                arrived.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(requests) => requests,
            Err(_) => panic!(
                "mock model: wanted {n} requests within {timeout:?}, got {}",
                self.requests().len()
            ),
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<HttpResponse, Infallible> {
    let recorded = record(request).await;
    let outcome = if recorded.method == "POST" && recorded.path.ends_with("/responses") {
        Some(shared.responder.lock().unwrap().respond(&recorded))
    } else {
        None
    };
    shared.requests.lock().unwrap().push(recorded);
    shared.arrived.notify_waiters();
    Ok(match outcome {
        None => plain(
            StatusCode::NOT_FOUND,
            "mock model: only POST /v1/responses".into(),
        ),
        Some(Outcome::Http { status, body }) => plain(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body.to_string(),
        ),
        Some(Outcome::Events(events)) => {
            event_stream(Full::new(Bytes::from(sse::encode(&events))).boxed())
        }
        Some(Outcome::Stall(first)) => {
            let first: Result<_, Infallible> = Ok(Frame::data(Bytes::from(sse::encode(&[first]))));
            let body = stream::once(async { first }).chain(stream::pending());
            event_stream(BodyExt::boxed(StreamBody::new(body)))
        }
    })
}

async fn record(request: Request<Incoming>) -> RecordedRequest {
    let (parts, body) = request.into_parts();
    let mut headers = std::collections::BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| *v = format!("{v}, {value}"))
            .or_insert(value);
    }
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

fn event_stream(body: http_body_util::combinators::BoxBody<Bytes, Infallible>) -> HttpResponse {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .expect("static response parts")
}

fn plain(status: StatusCode, body: String) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response parts")
}

/// A base `config.toml` that points codex at the mock model offline.
///
/// `gpt-5.5` is a slug codex knows (an unknown slug adds an `error` item about
/// missing metadata). The feature and analytics switches stop codex from
/// retrying an unreachable provider forever and from contacting
/// api.github.com, chatgpt.com and ab.chatgpt.com. The retry limits make a
/// failing reply fail the turn in about a second: one stream retry (reported
/// as a non-fatal `error` event "Reconnecting... 1/1"), no HTTP-level retries;
/// codex's defaults (5 and 4) take ~25 s on an HTTP 500. The provider reads its
/// key from `MOCK_API_KEY`, which must be set (any value). The shell snapshot
/// is off: at every start codex would run the user's login shell, unawaited,
/// and a turn's end kills what codex left running, that shell included; a
/// profile that takes a lock at login (`pyenv rehash` does) is then left
/// with a stale lock, and every later login shell on the machine waits 60 s
/// for it. Top-level keys come
/// first, so callers may append tables (`[mcp_servers.x]`) but should put
/// extra top-level keys BEFORE this text.
pub fn codex_config_toml(base_url: &str) -> String {
    format!(
        r#"model = "gpt-5.5"
model_provider = "mock"

[model_providers.mock]
name = "Mock"
base_url = "{base_url}"
wire_api = "responses"
env_key = "MOCK_API_KEY"
request_max_retries = 0
stream_max_retries = 1

[features]
unbounded_connection_retries = false
plugins = false
shell_snapshot = false

[analytics]
enabled = false
"#
    )
}
