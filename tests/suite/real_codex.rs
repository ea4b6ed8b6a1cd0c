//! The daemon end to end with the REAL Codex CLI: the real `codex-runner`
//! binary spawns the real `codex exec --json` (installed by
//! `scripts/install-codex`), which talks to a mock model and real MCP servers
//! on 127.0.0.1 (`codex-runner-test-support`). Every test asserts on what
//! came back on stdout AND on what the model and the MCP servers saw.
//!
//! Without the real codex these tests are skipped loudly, or fail when `CI`
//! is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codex_runner_test_support::{
    alive, codex_config_toml, count_files, find_real_codex, mcp_stdio_probe_bin, McpCall,
    McpHttpServer, MockModel, Reply, Script, INPUT_TOKENS,
};
use serde_json::{json, Value};

use super::harness::{files_but_links, Daemon, RunOutput, READ_TIMEOUT};

/// The real codex, or `None` (with a loud message) when it is absent and `CI`
/// is unset; with `CI` set its absence fails the test.
fn real_codex() -> Option<PathBuf> {
    let missing = match find_real_codex() {
        Some(bin) if bin.is_file() => return Some(bin),
        Some(bin) => format!("the real codex {} is not a file", bin.display()),
        None => "the real codex was not found".to_owned(),
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but {missing}: run scripts/install-codex or set CODEX_REAL_BIN");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {missing}; run scripts/install-codex (or set CODEX_REAL_BIN) !!!!!!!!\n"
    );
    None
}

macro_rules! codex_or_skip {
    () => {
        match real_codex() {
            Some(bin) => bin,
            None => return,
        }
    };
}

/// The daemon on the real codex, and the turns' working directory.
struct Rig {
    d: Daemon,
    /// Every turn's `cwd`: outside any git repository, so codex does not run
    /// git in the repository under test (it reports workspace state).
    work: tempfile::TempDir,
}

impl Rig {
    /// The daemon on the real codex with this base config.toml, and
    /// `--kill-grace 1`. `MOCK_API_KEY` reaches codex through the daemon's
    /// environment. The harness logs the daemon at debug through `RUST_LOG`,
    /// which codex inherits: keep codex at `warn` (the daemon's own target
    /// stays at debug).
    async fn start(codex: &Path, base_config: &str) -> Rig {
        let d = Daemon::builder()
            .codex_bin(codex)
            .base_config(base_config)
            .env("MOCK_API_KEY", "test-key")
            .env("RUST_LOG", "warn,codex_runner=debug")
            .arg("--kill-grace")
            .arg("1")
            .start()
            .await;
        Rig {
            d,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// Sends a run with these params and the rig's `cwd`.
    async fn run(&mut self, id: &str, mut params: Value) {
        params["cwd"] = json!(self.work.path());
        self.d.run(id, params).await;
    }
}

impl std::ops::Deref for Rig {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.d
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.d
    }
}

/// A request's HTTP MCP server with these static headers.
fn http_server(url: &str, headers: Value) -> Value {
    json!({"url": url, "http_headers": headers})
}

/// The `item.completed` items of this type.
fn completed_items<'a>(run: &'a RunOutput, kind: &str) -> Vec<&'a Value> {
    run.events
        .iter()
        .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == kind)
        .map(|e| &e["item"])
        .collect()
}

/// The single completed `mcp_tool_call` item of a run.
#[track_caller]
fn tool_call(run: &RunOutput) -> &Value {
    match completed_items(run, "mcp_tool_call").as_slice() {
        [item] => item,
        other => panic!(
            "want one mcp_tool_call, got {}: {:#?}",
            other.len(),
            run.events
        ),
    }
}

/// The thread id of the run's `thread.started`.
#[track_caller]
fn thread_started(run: &RunOutput) -> &str {
    run.events
        .iter()
        .find(|e| e["type"] == "thread.started")
        .and_then(|e| e["thread_id"].as_str())
        .unwrap_or_else(|| panic!("no thread.started: {:#?}", run.events))
}

fn header<'a>(call: &'a McpCall, name: &str) -> Option<&'a str> {
    call.headers.get(name).map(String::as_str)
}

/// The end is ok, names the thread of its `thread.started`, and reports
/// `input_tokens` of `requests` model requests (codex sums usage over every
/// request of the thread).
#[track_caller]
fn assert_ok_end(run: &RunOutput, requests: u64) {
    run.assert_ok();
    assert_eq!(run.end["thread_id"], thread_started(run), "{}", run.end);
    assert_eq!(run.end["exit_code"], 0, "{}", run.end);
    assert_eq!(
        run.end["usage"]["input_tokens"],
        requests * INPUT_TOKENS,
        "{}",
        run.end
    );
    assert_eq!(
        run.events.last().unwrap()["usage"],
        run.end["usage"],
        "the end carries the last turn.completed usage"
    );
}

/// A unique-enough tag, so process scans never see another test's turns.
fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{nanos:08x}", std::process::id())
}

/// A live process (not a zombie) and its `CODEX_HOME`.
#[derive(Debug)]
struct Proc {
    pid: u32,
    codex_home: Option<PathBuf>,
}

/// Live processes whose environment holds `entry` exactly (`NAME=value`).
/// Codex and everything that inherits its environment have
/// `CODEX_RUNNER_RUN_ID=<run id>`; stdio MCP servers do not (codex passes
/// them a whitelist), so those are found by their pid file.
fn live_procs_with_env(entry: &str) -> Vec<Proc> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = dir.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(dir.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if !vars.contains(&entry.as_bytes()) || !alive(pid) {
            continue;
        }
        let codex_home = vars
            .iter()
            .find_map(|v| v.strip_prefix(b"CODEX_HOME="))
            .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()));
        found.push(Proc { pid, codex_home });
    }
    found
}

/// 1. An HTTP MCP tool call: the item completes, the server receives the
///    request's `http_headers` and the per-turn headers (the thread id only
///    on the resumed turn), and each `end` is ok with thread id and usage.
#[tokio::test]
async fn http_mcp_call_carries_request_and_per_turn_headers() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mcp = McpHttpServer::start();
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let mut servers = json!({"probe": http_server(&mcp.url(), json!({"Authorization": "Bearer s3cret-1", "X-Tenant": "acme"}))});
    // A header codex reads from its environment: the request's `env`.
    servers["probe"]["env_http_headers"] = json!({"X-From-Env": "PROBE_HEADER_VALUE"});
    let env = json!({"PROBE_HEADER_VALUE": "env-s3cret-2"});

    d.run(
        "hdr-first",
        json!({"prompt": "call whoami on probe", "mcp_servers": servers, "env": env}),
    )
    .await;
    let first = d.collect_one("hdr-first").await;

    assert_ok_end(&first, 3);
    let thread = thread_started(&first).to_owned();
    let item = tool_call(&first);
    assert_eq!(
        (&item["server"], &item["tool"], &item["status"]),
        (&json!("probe"), &json!("whoami"), &json!("completed")),
        "{item}"
    );
    let calls = mcp.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].tool, "whoami");
    assert_eq!(header(&calls[0], "authorization"), Some("Bearer s3cret-1"));
    assert_eq!(header(&calls[0], "x-tenant"), Some("acme"));
    assert_eq!(header(&calls[0], "x-from-env"), Some("env-s3cret-2"));
    assert_eq!(
        header(&calls[0], "x-codex-runner-run-id"),
        Some("hdr-first")
    );
    assert_eq!(
        header(&calls[0], "x-codex-runner-thread-id"),
        None,
        "a new thread has no id to send"
    );
    assert_eq!(calls[0].meta["x-codex-turn-metadata"]["thread_id"], thread);
    // whoami's answer (the headers it saw) went back to the model.
    assert!(
        model.requests()[2].input_contains("x-codex-runner-run-id"),
        "tool output reached the model"
    );

    // The same thread, resumed with the same server: the thread id is sent.
    d.run(
        "hdr-resumed",
        json!({"prompt": "call whoami on probe", "resume": thread, "mcp_servers": servers, "env": env}),
    )
    .await;
    let resumed = d.collect_one("hdr-resumed").await;

    assert_ok_end(&resumed, 6);
    assert_eq!(thread_started(&resumed), thread);
    assert_eq!(tool_call(&resumed)["status"], "completed");
    let calls = mcp.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(header(&calls[1], "authorization"), Some("Bearer s3cret-1"));
    assert_eq!(header(&calls[1], "x-from-env"), Some("env-s3cret-2"));
    assert_eq!(
        header(&calls[1], "x-codex-runner-run-id"),
        Some("hdr-resumed")
    );
    assert_eq!(
        header(&calls[1], "x-codex-runner-thread-id"),
        Some(thread.as_str())
    );
    assert!(d.leftover_turn_files().is_empty());
    d.assert_clean_exit().await;
    // Header and env values are secrets: never in logs or diag lines.
    let stderr = d.stderr();
    assert!(
        !stderr.contains("s3cret-1") && !stderr.contains("env-s3cret-2"),
        "a secret in the daemon's stderr:\n{stderr}"
    );
}

/// 2. `write_note` has no read-only annotation: it runs under the runner's
///    default `tools_approval: "approve"`, and fails as codex would with
///    `"prompt"` (exec cannot ask), without reaching the server.
#[tokio::test]
async fn mutating_tool_runs_by_default_and_needs_approval_with_prompt() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mcp = McpHttpServer::start();
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let prompt = r#"call write_note on notes with {"text": "remember the milk"}"#;

    d.run(
        "approved",
        json!({"prompt": prompt, "mcp_servers": {"notes": {"url": mcp.url()}}}),
    )
    .await;
    d.run(
        "prompted",
        json!({"prompt": prompt, "mcp_servers": {"notes": {"url": mcp.url(), "tools_approval": "prompt"}}}),
    )
    .await;
    let (runs, others) = d.collect(&["approved", "prompted"]).await;
    assert!(others.is_empty(), "{others:?}");

    let approved = &runs["approved"];
    assert_ok_end(approved, 3);
    let item = tool_call(approved);
    assert_eq!(item["status"], "completed", "{item}");
    assert_eq!(
        item["result"]["content"][0]["text"],
        "noted: remember the milk"
    );

    // Codex's refusal is a failed item, not a failed turn.
    let prompted = &runs["prompted"];
    assert_ok_end(prompted, 3);
    let item = tool_call(prompted);
    assert_eq!(item["status"], "failed", "{item}");
    let error = item["error"]["message"].as_str().unwrap_or_default();
    assert!(error.contains("requires approval"), "{item}");

    let calls = mcp.calls();
    assert_eq!(
        calls.len(),
        1,
        "only the approved call reaches the server: {calls:#?}"
    );
    assert_eq!(calls[0].tool, "write_note");
    assert_eq!(calls[0].arguments, json!({"text": "remember the milk"}));
    assert_eq!(header(&calls[0], "x-codex-runner-run-id"), Some("approved"));
    d.assert_clean_exit().await;
}

/// 3. A required (the runner's default) HTTP server on a closed port fails
///    the turn before `thread.started`, naming the server, in about a second
///    and a half (codex 0.169.0 retries a refused `initialize` twice, 250 ms
///    and 1 s apart) rather than the 30 s startup timeout; the model is never
///    called. The same server with `"required": false` is dropped and the
///    turn runs.
#[tokio::test]
async fn required_server_that_is_down_fails_the_turn_quickly() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;

    d.run(
        "down",
        json!({"prompt": "hello", "mcp_servers": {"gone-away": {"url": url}}}),
    )
    .await;
    let down = d.collect_one("down").await;

    assert_eq!(down.status(), "error", "{}", down.end);
    assert_eq!(down.code(), Some("codex_exited"), "{}", down.end);
    assert_eq!(down.end["exit_code"], 1, "{}", down.end);
    assert!(
        down.error()
            .contains("required MCP servers failed to initialize: gone-away"),
        "the error names the server: {}",
        down.error()
    );
    assert!(
        !down.event_types().contains(&"thread.started".to_owned()),
        "{:?}",
        down.events
    );
    // How soon is codex's business (it gives up on a refused connection
    // without waiting out its 30 s startup timeout): printed, not asserted.
    let ms = down.end["duration_ms"].as_u64().unwrap();
    eprintln!("required server down: the turn failed after {ms} ms");
    assert!(model.requests().is_empty(), "the model was called");

    d.run(
        "optional",
        json!({"prompt": "hello", "mcp_servers": {"gone-away": {"url": url, "required": false}}}),
    )
    .await;
    let optional = d.collect_one("optional").await;
    assert_ok_end(&optional, 1);
    assert_eq!(optional.agent_texts(), ["ok: hello"]);
    d.assert_clean_exit().await;
}

/// 4. Two turns on one thread, each with a per-turn CODEX_HOME of its own
///    (config and state database new; the second may get the first's emptied
///    dir): the resumed turn's model request carries the first turn's
///    history, which outlives the first turn's files in the base home's
///    `sessions/`. The
///    resume is sent while the first turn is still running (inside a 1 s
///    tool call): it waits for it.
#[tokio::test]
async fn resume_across_per_turn_homes_carries_the_history() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mcp = McpHttpServer::start();
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let (one, two) = (format!("turn-1-{}", nonce()), format!("turn-2-{}", nonce()));
    let first_prompt = r#"first prompt 7f3a: call slow on probe with {"seconds": 1}"#;

    d.run(
        &one,
        json!({"prompt": first_prompt, "mcp_servers": {"probe": {"url": mcp.url()}}}),
    )
    .await;
    let started = d
        .wait_for(|l| l["id"] == one.as_str() && l["event"]["type"] == "thread.started")
        .await;
    let thread = started["event"]["thread_id"].as_str().unwrap().to_owned();
    d.run(&two, json!({"prompt": "second prompt", "resume": thread}))
        .await;
    wait_tool_started(&mut d, &one).await;
    let (_, first_home) = running_turn(&one);
    let linked = std::fs::read_link(first_home.join("sessions")).expect("sessions/ is a link");
    assert_eq!(linked, d.base_home().join("sessions"));
    let (runs, _) = d.collect(&[&one, &two]).await;

    let (first, second) = (&runs[&one], &runs[&two]);
    first.assert_ok();
    assert_eq!(tool_call(first)["status"], "completed");
    assert_eq!(first.end["thread_id"], thread);
    // Turn 1's files (its state database among them) are gone, though its
    // emptied dir may serve turn 2: the history comes from `sessions/`.
    let left = files_but_links(&first_home);
    assert!(left.is_empty(), "turn 1's files outlived it: {left:?}");
    // 3 requests for turn 1, then 1: usage is cumulative over the thread.
    assert_ok_end(second, 4);
    assert_eq!(thread_started(second), thread);
    // Turn 2 was sent while turn 1 ran (a real turn: hundreds of ms), so
    // it waited: one live turn per thread. The model's requests below show
    // the order too (turn 2's carries turn 1's whole history).
    let queued = second.end["queued_ms"].as_u64().unwrap();
    assert!(
        queued > 0,
        "turn 2 waited for turn 1 (one live turn per thread): {}",
        second.end
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    let last = &requests[3];
    assert_eq!(last.prompt(), Some("second prompt"));
    assert_eq!(
        last.header("thread-id"),
        Some(thread.as_str()),
        "same thread"
    );
    assert!(
        last.texts_of_role("user")
            .iter()
            .any(|t| t.contains("first prompt 7f3a")),
        "turn 1's prompt is in turn 2's input: {}",
        last.body
    );
    assert!(last.input_contains("slept 1 s"), "turn 1's tool output too");
    let sessions = d.base_home().join("sessions");
    assert!(
        find_file_containing(&sessions, &thread).is_some(),
        "no rollout for {thread} under {}",
        sessions.display()
    );
    assert!(d.leftover_turn_files().is_empty());
    d.assert_clean_exit().await;
}

/// The first turn makes codex's database templates (a thread created and
/// deleted in a scratch home); later turns start from them, and a thread
/// started on them still resumes in another turn's home.
#[tokio::test]
async fn turns_on_database_templates_start_and_resume_threads() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let warm = format!("warm-{}", nonce());
    d.run(&warm, json!({"prompt": "warm up"})).await;
    d.collect_one(&warm).await.assert_ok();
    d.wait_for_stderr("codex database templates ready").await;
    assert!(
        d.stderr().contains("thread_history=true"),
        "the thread-history database is templated too:\n{}",
        d.stderr()
    );
    let scratch_prefix = format!("codex-runner-db-template-{}-", d.pid());
    let scratch_left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&scratch_prefix))
        .collect();
    assert!(scratch_left.is_empty(), "{scratch_left:?}");

    let (one, two) = (format!("tpl-1-{}", nonce()), format!("tpl-2-{}", nonce()));
    d.run(&one, json!({"prompt": "first prompt 51c2"})).await;
    let first = d.collect_one(&one).await;
    assert_ok_end(&first, 1);
    let thread = thread_started(&first).to_owned();
    d.run(&two, json!({"prompt": "second prompt", "resume": thread}))
        .await;
    let second = d.collect_one(&two).await;
    assert_ok_end(&second, 2);
    assert_eq!(thread_started(&second), thread);
    let requests = model.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.prompt(), Some("second prompt"));
    assert!(
        last.texts_of_role("user")
            .iter()
            .any(|t| t.contains("first prompt 51c2")),
        "turn 1's prompt is in turn 2's input: {}",
        last.body
    );
    // Two threads, two rollouts: the templates' own thread left none here.
    let sessions = d.base_home().join("sessions");
    assert_eq!(count_files(&sessions), 2, "{}", sessions.display());
    d.assert_clean_exit().await;
}

/// A file under `dir` (recursively) whose name contains `needle`.
fn find_file_containing(dir: &Path, needle: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file_containing(&path, needle) {
                return Some(found);
            }
        } else if entry.file_name().to_string_lossy().contains(needle) {
            return Some(path);
        }
    }
    None
}

/// 5. The user's base config.toml still applies under a request's MCP
///    servers: its model provider (the mock) and its own MCP server. In one
///    turn codex offers the tools of both servers (gpt-5.5 finds MCP tools
///    through `tool_search`, whose output lists both namespaces), and each
///    server's tool runs, with its own headers and the per-turn header.
#[tokio::test]
async fn base_config_provider_and_mcp_server_apply_with_request_servers() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let base_mcp = McpHttpServer::start();
    let request_mcp = McpHttpServer::start();
    let base = codex_config_toml(&model.base_url())
        + &format!(
            "\n# the user's own server\n[mcp_servers.base]\nurl = \"{}\"\nhttp_headers = {{ \"X-Base\" = \"from-base\" }}\n",
            base_mcp.url()
        );
    let mut d = Rig::start(&codex, &base).await;
    let servers = json!({"req": http_server(&request_mcp.url(), json!({"X-Req": "from-request"}))});

    d.run(
        "use-base",
        json!({"prompt": "call whoami on base", "mcp_servers": servers}),
    )
    .await;
    d.run(
        "use-req",
        json!({"prompt": "call whoami on req", "mcp_servers": servers}),
    )
    .await;
    let (runs, _) = d.collect(&["use-base", "use-req"]).await;

    for (id, server) in [("use-base", "base"), ("use-req", "req")] {
        let run = &runs[id];
        assert_ok_end(run, 3);
        let item = tool_call(run);
        assert_eq!(
            (&item["server"], &item["tool"], &item["status"]),
            (&json!(server), &json!("whoami"), &json!("completed")),
            "{item}"
        );
    }
    let base_calls = base_mcp.calls();
    assert_eq!(base_calls.len(), 1, "{base_calls:#?}");
    assert_eq!(header(&base_calls[0], "x-base"), Some("from-base"));
    assert_eq!(header(&base_calls[0], "x-req"), None);
    assert_eq!(
        header(&base_calls[0], "x-codex-runner-run-id"),
        Some("use-base"),
        "the user's own server gets the per-turn header too"
    );
    let request_calls = request_mcp.calls();
    assert_eq!(request_calls.len(), 1, "{request_calls:#?}");
    assert_eq!(header(&request_calls[0], "x-req"), Some("from-request"));
    assert_eq!(header(&request_calls[0], "x-base"), None);
    assert_eq!(
        header(&request_calls[0], "x-codex-runner-run-id"),
        Some("use-req")
    );

    // The base provider: every model request reached the mock, with its key.
    let requests = model.requests();
    assert_eq!(requests.len(), 6);
    assert!(requests
        .iter()
        .all(|r| r.header("authorization") == Some("Bearer test-key")));
    // Each turn's tool search found both servers' tools.
    let searches: Vec<&Value> = requests
        .iter()
        .filter_map(|r| r.last_input())
        .filter(|i| i["type"] == "tool_search_output")
        .collect();
    assert_eq!(searches.len(), 2);
    for search in searches {
        let mut offered: Vec<&str> = search["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        offered.sort_unstable();
        assert_eq!(offered, ["mcp__base", "mcp__req"], "{search}");
    }
    d.assert_clean_exit().await;
}

/// What a cancel or timeout test checks once the turn is under way: the
/// turn's codex (found by its `CODEX_RUNNER_RUN_ID`) and its CODEX_HOME.
#[track_caller]
fn running_turn(id: &str) -> (Vec<u32>, PathBuf) {
    let procs = live_procs_with_env(&format!("CODEX_RUNNER_RUN_ID={id}"));
    assert!(!procs.is_empty(), "no live codex for run {id}");
    let home = procs[0].codex_home.clone().expect("codex has a CODEX_HOME");
    assert!(home.join("config.toml").is_file(), "{}", home.display());
    (procs.iter().map(|p| p.pid).collect(), home)
}

/// After the `end`: no process of the turn, no CODEX_HOME, no turn dir.
fn assert_turn_left_nothing(d: &Daemon, id: &str, home: &Path, extra_pids: &[u32]) {
    let left = live_procs_with_env(&format!("CODEX_RUNNER_RUN_ID={id}"));
    assert!(
        left.is_empty(),
        "processes of {id} outlived its end: {left:?}"
    );
    for pid in extra_pids {
        assert!(!alive(*pid), "pid {pid} of {id} outlived its end");
    }
    let files = files_but_links(home);
    assert!(files.is_empty(), "{} outlived the turn", home.display());
    assert!(d.leftover_turn_files().is_empty());
}

/// Waits for the run's `item.started` of an `mcp_tool_call`.
async fn wait_tool_started(d: &mut Daemon, id: &str) -> Value {
    let line = d
        .wait_for(|l| {
            l["id"] == id
                && l["event"]["type"] == "item.started"
                && l["event"]["item"]["type"] == "mcp_tool_call"
        })
        .await;
    line["event"]["item"].clone()
}

/// Cancels `id` and returns its output and how long the `end` took.
async fn cancel_and_collect(d: &mut Daemon, id: &str) -> (RunOutput, Duration) {
    let sent = Instant::now();
    d.cancel(id).await;
    let run = d.collect_one(id).await;
    (run, sent.elapsed())
}

#[track_caller]
fn assert_cancelled(run: &RunOutput, took: Duration) {
    assert_eq!(run.status(), "error", "{}", run.end);
    assert_eq!(run.code(), Some("cancelled"), "{}", run.end);
    assert!(run.error().starts_with("cancelled"), "{}", run.end);
    // Not waited out: collecting it would have timed out (20 s) before the
    // 30 s tool call or the model's stall ended. How soon is printed only.
    eprintln!("the end came {took:?} after the cancel");
    assert!(run.end["thread_id"].is_string(), "{}", run.end);
}

/// 6a. Cancel during an HTTP MCP tool call (`slow`, 30 s): the run ends
///     `cancelled` at once, and the turn's codex and CODEX_HOME are gone.
#[tokio::test]
async fn cancel_during_an_http_tool_call_leaves_nothing() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mcp = McpHttpServer::start();
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let id = format!("cancel-http-{}", nonce());

    d.run(
        &id,
        json!({"prompt": r#"call slow on probe with {"seconds": 30}"#, "mcp_servers": {"probe": {"url": mcp.url()}}}),
    )
    .await;
    let item = wait_tool_started(&mut d, &id).await;
    assert_eq!(item["tool"], "slow", "{item}");
    mcp.wait_for_call("slow", READ_TIMEOUT).await;
    let (pids, home) = running_turn(&id);
    let (run, took) = cancel_and_collect(&mut d, &id).await;

    assert_cancelled(&run, took);
    eprintln!(
        "cancel during an HTTP tool call: end {took:?} after the cancel, {}",
        run.end
    );
    assert_eq!(
        header(&mcp.calls()[0], "x-codex-runner-run-id"),
        Some(id.as_str())
    );
    assert_turn_left_nothing(&d, &id, &home, &pids);
    d.assert_clean_exit().await;
}

/// 6b. Cancel during a stdio MCP tool call: the run ends `cancelled` at once,
///     and neither codex nor its stdio server (found by its pid file) nor
///     the CODEX_HOME outlives the `end`.
#[tokio::test]
async fn cancel_during_a_stdio_tool_call_leaves_nothing() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let id = format!("cancel-stdio-{}", nonce());
    let pidfile = d.work.path().join("stdio.pid");
    let server = json!({
        "command": mcp_stdio_probe_bin(),
        "env": {"MCP_STDIO_PIDFILE": pidfile},
    });

    d.run(
        &id,
        json!({"prompt": r#"call slow on stdio with {"seconds": 30}"#, "mcp_servers": {"stdio": server}}),
    )
    .await;
    let item = wait_tool_started(&mut d, &id).await;
    assert_eq!(
        (&item["server"], &item["tool"]),
        (&json!("stdio"), &json!("slow")),
        "{item}"
    );
    let server_pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("the stdio server wrote its pid")
        .trim()
        .parse()
        .unwrap();
    assert!(alive(server_pid), "the stdio server is running");
    let (mut pids, home) = running_turn(&id);
    pids.push(server_pid);
    let (run, took) = cancel_and_collect(&mut d, &id).await;

    assert_cancelled(&run, took);
    eprintln!(
        "cancel during a stdio tool call: end {took:?} after the cancel, {}",
        run.end
    );
    assert_turn_left_nothing(&d, &id, &home, &pids);
    d.assert_clean_exit().await;
}

/// 6c. A turn whose model stalls ends with `timeout` soon after its
///     `timeout_secs`, and leaves nothing behind.
#[tokio::test]
async fn stalled_model_times_out_and_leaves_nothing() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::queue([Reply::Stall]));
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let id = format!("stalled-{}", nonce());

    d.run(&id, json!({"prompt": "hello?", "timeout_secs": 5}))
        .await;
    let first = d
        .wait_for(|l| {
            l["id"] == id.as_str() && (l["type"] == "end" || l["event"]["type"] == "turn.started")
        })
        .await;
    if first["type"] == "end" {
        // Codex normally starts its turn within half a second; on a machine
        // so loaded that it had not after 5 s, check what still can be.
        eprintln!("NOTE: codex had not started its turn when its 5 s ran out (an overloaded machine): checking the end and the cleanup only");
        assert_timed_out(&first, 5_000);
        let left = live_procs_with_env(&format!("CODEX_RUNNER_RUN_ID={id}"));
        assert!(left.is_empty(), "{left:?}");
        assert!(d.leftover_turn_files().is_empty());
        d.assert_clean_exit().await;
        return;
    }
    let (pids, home) = running_turn(&id);
    let run = d.collect_one(&id).await;

    assert_timed_out(&run.end, 5_000);
    assert_eq!(run.end["thread_id"], thread_started(&run), "{}", run.end);
    let requests = model.requests().len();
    assert!(requests <= 1, "{requests} model requests");
    if requests == 0 {
        eprintln!(
            "NOTE: codex had not reached the model when its 5 s ran out (an overloaded machine)"
        );
    }
    assert_turn_left_nothing(&d, &id, &home, &pids);
    d.assert_clean_exit().await;
}

/// The end of a run that timed out after `limit_ms`: code `timeout`, not
/// before the limit (how soon after it is printed, not asserted).
#[track_caller]
fn assert_timed_out(end: &Value, limit_ms: u64) {
    assert_eq!(end["status"], "error", "{end}");
    assert_eq!(end["code"], "timeout", "{end}");
    let ms = end["duration_ms"].as_u64().unwrap();
    eprintln!("stalled model: timeout after {ms} ms, {end}");
    assert!(
        ms >= limit_ms,
        "a {limit_ms} ms limit ended after {ms} ms: {end}"
    );
}

/// 7. Sixteen real turns at once, half with an MCP server (each with its own
///    token): every turn ends ok with its own answer, and the server saw each
///    MCP run exactly once, with that run's id and token, from that run's
///    thread.
#[tokio::test]
async fn sixteen_concurrent_turns_half_with_mcp() {
    let codex = codex_or_skip!();
    let model = MockModel::start(Script::Default);
    let mcp = McpHttpServer::start();
    let mut d = Rig::start(&codex, &codex_config_toml(&model.base_url())).await;
    let ids: Vec<String> = (0..16).map(|i| format!("many-{i:02}")).collect();
    let with_mcp = |i: usize| i % 2 == 0;

    let started = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let params = if with_mcp(i) {
            json!({"prompt": "call whoami on probe", "mcp_servers": {"probe": http_server(&mcp.url(), json!({"Authorization": format!("Bearer tok-{i}")}))}})
        } else {
            json!({"prompt": format!("plain turn {i}")})
        };
        d.run(id, params).await;
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (runs, others) = d.collect(&id_refs).await;
    eprintln!("16 concurrent real turns took {:?}", started.elapsed());
    assert!(others.is_empty(), "{others:?}");

    let mut calls_by_run: BTreeMap<String, Vec<McpCall>> = BTreeMap::new();
    for call in mcp.calls() {
        let run_id = header(&call, "x-codex-runner-run-id")
            .unwrap_or_else(|| panic!("a call without a run id: {call:?}"))
            .to_owned();
        calls_by_run.entry(run_id).or_default().push(call);
    }
    for (i, id) in ids.iter().enumerate() {
        let run = &runs[id];
        if !with_mcp(i) {
            assert_ok_end(run, 1);
            assert_eq!(run.agent_texts(), [format!("ok: plain turn {i}")]);
            assert!(!calls_by_run.contains_key(id), "{id} has no MCP server");
            continue;
        }
        assert_ok_end(run, 3);
        let item = tool_call(run);
        assert_eq!(item["status"], "completed", "{id}: {item}");
        // whoami answers with the headers it saw: this run's own.
        let output = item["result"]["content"][0]["text"].as_str().unwrap();
        let seen: Value = serde_json::from_str(output).unwrap();
        assert_eq!(seen["headers"]["x-codex-runner-run-id"], id.as_str());
        let calls = calls_by_run.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(calls.len(), 1, "{id}: {calls:#?}");
        assert_eq!(
            header(&calls[0], "authorization"),
            Some(format!("Bearer tok-{i}").as_str()),
            "{id}"
        );
        assert_eq!(
            calls[0].meta["x-codex-turn-metadata"]["thread_id"],
            thread_started(run),
            "{id}"
        );
    }
    assert_eq!(calls_by_run.len(), 8, "{:?}", calls_by_run.keys());
    assert_eq!(model.requests().len(), 8 * 3 + 8);
    assert!(d.leftover_turn_files().is_empty());
    d.assert_clean_exit().await;
}

/// `--codex-bin` given the npm launcher (a Node script) runs the native
/// binary it wraps: signalling the launcher would orphan codex.
#[tokio::test]
async fn the_npm_launcher_is_resolved_to_the_native_binary() {
    let codex = codex_or_skip!();
    let launcher = codex_runner_test_support::repo_root().join(".tools/node_modules/.bin/codex");
    if !launcher.exists() {
        eprintln!(
            "NOTE: no npm launcher at {} (CODEX_REAL_BIN points elsewhere); skipped",
            launcher.display()
        );
        return;
    }
    let model = MockModel::start(Script::Default);
    let mut d = Rig::start(&launcher, &codex_config_toml(&model.base_url())).await;
    d.run("via-npm", json!({"prompt": "hello through the launcher"}))
        .await;
    let run = d.collect_one("via-npm").await;
    run.assert_ok();
    assert_eq!(run.agent_texts(), ["ok: hello through the launcher"]);
    d.wait_for_stderr("codex executable").await;
    let resolved = d
        .stderr()
        .lines()
        .find(|l| l.contains("codex executable"))
        .unwrap_or_default()
        .to_owned();
    let native = codex.canonicalize().unwrap();
    assert!(resolved.contains(native.to_str().unwrap()), "{resolved}");
    assert!(resolved.contains("launcher=Some"), "{resolved}");
    d.assert_clean_exit().await;
}
