//! A typed harness around the real `codex-runner` binary: spawns it with the
//! fake codex, writes request lines, reads output lines with every await
//! under a timeout, and reads what the fake codex recorded.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Longest any single await may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

pub fn runner_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_codex-runner"))
}

/// The fake codex (another workspace package, so built on demand).
pub fn fake_codex_bin() -> PathBuf {
    codex_runner_test_support::workspace_bin("fake-codex", "fake-codex")
}

/// A private dir for per-turn homes, outside the system temp dir (codex
/// warns about a CODEX_HOME under it).
pub fn turn_root_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Output of one run: its events and its end.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub events: Vec<Value>,
    /// The raw stdout lines of its events, as the daemon wrote them.
    pub raw_events: Vec<String>,
    pub end: Value,
}

impl RunOutput {
    pub fn event_types(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    pub fn status(&self) -> &str {
        self.end["status"].as_str().unwrap()
    }

    pub fn code(&self) -> Option<&str> {
        self.end["code"].as_str()
    }

    pub fn error(&self) -> &str {
        self.end["error"].as_str().unwrap_or("")
    }

    pub fn agent_texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
            .map(|e| e["item"]["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[track_caller]
    pub fn assert_ok(&self) {
        assert_eq!(self.status(), "ok", "run failed: {}", self.end);
    }
}

pub struct DaemonBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    base_config: Option<String>,
    codex_bin: Option<PathBuf>,
    turn_root: Option<Arc<tempfile::TempDir>>,
    open_files: Option<(u64, Option<u64>)>,
    inherited_fd: Option<i32>,
    ignored_signal: Option<i32>,
    hold_stderr: bool,
    pid_1_of_its_namespace: bool,
    relative_paths: bool,
}

impl DaemonBuilder {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The base home's config.toml.
    pub fn base_config(mut self, text: &str) -> Self {
        self.base_config = Some(text.into());
        self
    }

    pub fn codex_bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.codex_bin = Some(path.into());
        self
    }

    /// Starts the daemon with this soft limit on open files, and this hard
    /// one (else the test's).
    pub fn open_files_limit(mut self, soft: u64, hard: Option<u64>) -> Self {
        self.open_files = Some((soft, hard));
        self
    }

    /// Starts the daemon holding /dev/null at descriptor `fd`, open and
    /// without close-on-exec, as a careless parent would leave one.
    pub fn inherited_fd(mut self, fd: i32) -> Self {
        self.inherited_fd = Some(fd);
        self
    }

    /// Starts the daemon with `signal` ignored, as `nohup` does SIGHUP.
    pub fn ignore_signal(mut self, signal: i32) -> Self {
        self.ignored_signal = Some(signal);
        self
    }

    /// Leaves the daemon's stderr unread until [`Daemon::release_stderr`],
    /// as a client that reads only stdout would.
    pub fn hold_stderr(mut self) -> Self {
        self.hold_stderr = true;
        self
    }

    /// Starts the daemon as PID 1 of a PID namespace of its own, with its
    /// own /proc, as a container's entrypoint is (`unshare --pid --fork
    /// --mount-proc`; see [`pid_namespaces_work`]). [`Daemon::pid`] is then
    /// unshare's.
    /// Runs the daemon in `/` and gives it `--codex-home` and `--turn-dir`
    /// as paths relative to it.
    pub fn relative_paths(mut self) -> Self {
        self.relative_paths = true;
        self
    }

    pub fn pid_1_of_its_namespace(mut self) -> Self {
        self.pid_1_of_its_namespace = true;
        self
    }

    /// Shares another daemon's turn root (to test stale-dir cleanup).
    pub fn turn_root(mut self, root: Arc<tempfile::TempDir>) -> Self {
        self.turn_root = Some(root);
        self
    }

    pub async fn start(self) -> Daemon {
        let base_home = tempfile::tempdir().unwrap();
        let turn_root = self.turn_root.unwrap_or_else(|| Arc::new(turn_root_dir()));
        let records = tempfile::tempdir().unwrap();
        if let Some(config) = &self.base_config {
            std::fs::write(base_home.path().join("config.toml"), config).unwrap();
        }
        let mut command = if self.pid_1_of_its_namespace {
            let mut unshare = Command::new("unshare");
            unshare
                .args(["--pid", "--fork", "--mount-proc"])
                .arg(runner_bin());
            unshare
        } else {
            Command::new(runner_bin())
        };
        let turn_dir = turn_root.path().join("turns");
        let (home_arg, turn_dir_arg) = if self.relative_paths {
            command.current_dir("/");
            (
                base_home.path().strip_prefix("/").unwrap(),
                turn_dir.strip_prefix("/").unwrap(),
            )
        } else {
            (base_home.path(), turn_dir.as_path())
        };
        command
            .arg("--codex-bin")
            .arg(self.codex_bin.unwrap_or_else(fake_codex_bin))
            .arg("--codex-home")
            .arg(home_arg)
            .arg("--turn-dir")
            .arg(turn_dir_arg)
            .args(&self.args)
            .env("FAKE_CODEX_RECORD_DIR", records.path())
            .env_remove("FAKE_CODEX_SCENARIO")
            .env("RUST_LOG", "debug")
            .envs(self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((soft, hard)) = self.open_files {
            // SAFETY: getrlimit and setrlimit only, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = soft;
                    limit.rlim_max = hard.unwrap_or(limit.rlim_max);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Opened close-on-exec here; the child's dup2 makes a copy without it.
        let dev_null = std::fs::File::open("/dev/null").unwrap();
        if let Some(fd) = self.inherited_fd {
            let source = dev_null.as_raw_fd();
            // SAFETY: dup2 only, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::dup2(source, fd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if let Some(signal) = self.ignored_signal {
            // SAFETY: signal() only, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::signal(signal, libc::SIG_IGN) == libc::SIG_ERR {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("spawning codex-runner");
        drop(dev_null);
        let stdin = child.stdin.take();
        let stdout = Some(BufReader::new(child.stdout.take().unwrap()).lines());
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr_lines.clone();
        let stderr_grew = Arc::new(tokio::sync::Notify::new());
        let grew = stderr_grew.clone();
        let (stderr_release, mut released) = tokio::sync::watch::channel(!self.hold_stderr);
        let stderr_task = tokio::spawn(async move {
            let _ = released.wait_for(|released| *released).await;
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
                grew.notify_waiters();
            }
        });
        Daemon {
            pid: child.id().expect("just started"),
            child,
            stdin,
            stdout,
            stderr_lines,
            stderr_task: Some(stderr_task),
            stderr_grew,
            stderr_release,
            pending: Vec::new(),
            base_home,
            turn_root,
            records,
        }
    }
}

pub struct Daemon {
    pub child: Child,
    /// The daemon's pid, known after it exited too.
    pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    /// Collects stderr until EOF; awaited at exit so no late line is missed.
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    /// Woken whenever a stderr line arrives.
    stderr_grew: Arc<tokio::sync::Notify>,
    /// Lets a held stderr be read (see [`DaemonBuilder::hold_stderr`]).
    stderr_release: tokio::sync::watch::Sender<bool>,
    /// Lines read but not yet consumed by a collect call.
    pending: Vec<String>,
    pub base_home: tempfile::TempDir,
    pub turn_root: Arc<tempfile::TempDir>,
    pub records: tempfile::TempDir,
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            args: Vec::new(),
            env: Vec::new(),
            base_config: None,
            codex_bin: None,
            turn_root: None,
            open_files: None,
            inherited_fd: None,
            ignored_signal: None,
            hold_stderr: false,
            pid_1_of_its_namespace: false,
            relative_paths: false,
        }
    }

    pub async fn start() -> Daemon {
        Self::builder().start().await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        tokio::time::timeout(READ_TIMEOUT, async {
            stdin.write_all(bytes).await.unwrap();
            stdin.flush().await.unwrap();
        })
        .await
        .expect("writing to the daemon timed out");
    }

    pub async fn send(&mut self, request: Value) {
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// Sends a run with `params`.
    pub async fn run(&mut self, id: &str, params: Value) {
        self.send(json!({"type": "run", "id": id, "params": params}))
            .await;
    }

    /// Starts run `id` with `prompt`, held at a new gate (the `gate`
    /// scenario) once its turn has started; the gate releases it.
    pub async fn run_at_gate(&mut self, id: &str, prompt: &str) -> Gate {
        let gate = Gate::new();
        self.run(id, json!({"prompt": prompt, "env": gate.env()}))
            .await;
        self.wait_turn_started(id).await;
        gate
    }

    pub async fn cancel(&mut self, id: &str) {
        self.send(json!({"type": "cancel", "id": id})).await;
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with a pid we own.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, signal) }, 0);
    }

    /// Stops reading stdout: the daemon's next write fails with EPIPE.
    pub fn close_stdout(&mut self) {
        self.stdout = None;
    }

    /// Whether the daemon's stdout pipe is full, so that its next write
    /// would wait: no free slot for a write through a second, write-only
    /// description of the same pipe (`poll` without `POLLOUT`).
    pub fn stdout_pipe_full(&mut self) -> bool {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let lines = self.stdout.as_mut().expect("stdout open");
        let fd = lines.get_mut().get_ref().as_raw_fd();
        let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        // SAFETY: a valid path; the fd is owned (and closed) below.
        let writer = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        assert!(writer >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd we own.
        let writer = unsafe { OwnedFd::from_raw_fd(writer) };
        let mut poll = libc::pollfd {
            fd: writer.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no waiting.
        assert!(unsafe { libc::poll(&mut poll, 1, 0) } >= 0);
        poll.revents & libc::POLLOUT == 0
    }

    /// Waits until stdout's pipe is full, as it becomes when nothing reads
    /// it while a run prints (polled: nothing signals it).
    pub async fn wait_stdout_pipe_full(&mut self) {
        let full = async {
            while !self.stdout_pipe_full() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(READ_TIMEOUT, full)
            .await
            .expect("stdout's pipe fills up");
    }

    /// Hands stdin to the caller (to write from another task while this
    /// one reads).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin still open")
    }

    pub async fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The next stdout line, raw. Panics on timeout or EOF.
    pub async fn next_raw(&mut self) -> String {
        if !self.pending.is_empty() {
            return self.pending.remove(0);
        }
        let stdout = self.stdout.as_mut().expect("stdout still open");
        match tokio::time::timeout(READ_TIMEOUT, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("daemon stdout closed; stderr:\n{}", self.stderr()),
            Ok(Err(e)) => panic!("reading stdout: {e}"),
            Err(_) => panic!(
                "no stdout line within {READ_TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// The next stdout line, parsed; every line must be one JSON object
    /// with `type` first.
    pub async fn next_line(&mut self) -> Value {
        let raw = self.next_raw().await;
        parse_output_line(&raw)
    }

    /// Reads until a line matches `pred`, keeping the others for later.
    pub async fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let mut skipped = Vec::new();
        loop {
            let raw = self.next_raw().await;
            let value = parse_output_line(&raw);
            if pred(&value) {
                skipped.append(&mut self.pending);
                self.pending = skipped;
                return value;
            }
            skipped.push(raw);
        }
    }

    /// Runs the fake codex's `scenario` as run `id`, and waits until its
    /// turn has started.
    pub async fn run_started(&mut self, id: &str, scenario: &str) {
        self.run(
            id,
            json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": scenario}}),
        )
        .await;
        self.wait_turn_started(id).await;
    }

    /// Reads until run `id` prints `turn.started` (its codex is up and past
    /// thread creation), keeping other lines for later.
    pub async fn wait_turn_started(&mut self, id: &str) -> Value {
        self.wait_for(|l| l["id"] == id && l["event"]["type"] == "turn.started")
            .await
    }

    /// Reads until every id in `ids` has its `end`; returns each run's output
    /// and the lines that belong to no run (rejections), in order. Lines of
    /// other runs are kept for later reads.
    pub async fn collect(&mut self, ids: &[&str]) -> (HashMap<String, RunOutput>, Vec<Value>) {
        let mut runs: HashMap<String, RunOutput> = HashMap::new();
        let mut others = Vec::new();
        let mut deferred = Vec::new();
        let mut open: Vec<&str> = ids.to_vec();
        while !open.is_empty() {
            let raw = self.next_raw().await;
            let line = parse_output_line(&raw);
            let Some(id) = line["id"].as_str().map(str::to_owned) else {
                others.push(line);
                continue;
            };
            if !open.contains(&id.as_str()) {
                deferred.push(raw);
                continue;
            }
            let entry = runs.entry(id.clone()).or_insert_with(|| RunOutput {
                events: Vec::new(),
                raw_events: Vec::new(),
                end: Value::Null,
            });
            match line["type"].as_str() {
                Some("event") => {
                    entry.events.push(line["event"].clone());
                    entry.raw_events.push(raw);
                }
                Some("end") => {
                    entry.end = line;
                    open.retain(|o| *o != id);
                }
                other => panic!("unexpected line type {other:?}: {line}"),
            }
        }
        deferred.append(&mut self.pending);
        self.pending = deferred;
        (runs, others)
    }

    /// One run, to its end.
    pub async fn collect_one(&mut self, id: &str) -> RunOutput {
        let (mut runs, others) = self.collect(&[id]).await;
        assert!(others.is_empty(), "unexpected lines: {others:?}");
        runs.remove(id).unwrap()
    }

    /// Waits for the daemon to exit and for its stderr to be fully read.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(READ_TIMEOUT, self.child.wait())
            .await
            .expect("daemon did not exit in time")
            .unwrap();
        if let Some(task) = self.stderr_task.take() {
            tokio::time::timeout(READ_TIMEOUT, task)
                .await
                .expect("daemon stderr did not close")
                .unwrap();
        }
        status
    }

    /// Asserts stdout has nothing more and the daemon exits 0.
    pub async fn assert_clean_exit(&mut self) {
        self.close_stdin().await;
        let stdout = self.stdout.as_mut().expect("stdout still open");
        let rest = tokio::time::timeout(READ_TIMEOUT, stdout.next_line())
            .await
            .expect("stdout did not close");
        assert!(
            self.pending.is_empty() && matches!(rest, Ok(None)),
            "unexpected output at exit: {:?} {rest:?}",
            self.pending
        );
        let status = self.wait_exit().await;
        assert!(
            status.success(),
            "exit {status}; stderr:\n{}",
            self.stderr()
        );
        self.assert_nothing_left();
    }

    /// After the daemon exited: no turn dir is left, and no cgroup of its.
    pub fn assert_nothing_left(&self) {
        assert!(
            self.leftover_turn_dirs().is_empty(),
            "turn dirs outlived the daemon: {:?}",
            self.leftover_turn_dirs()
        );
        let left = self.daemon_cgroups();
        assert!(
            left.is_empty(),
            "the daemon's cgroup {left:?} outlived it; stderr:\n{}",
            self.stderr()
        );
    }

    /// The cgroups this daemon made for its turns
    /// (`codex-runner-<pid>-…`, beside the cgroup it was started in, which
    /// is this test process's), whatever its log level said.
    pub fn daemon_cgroups(&self) -> Vec<PathBuf> {
        let Some(parent) = own_cgroup_dir() else {
            return Vec::new();
        };
        let prefix = format!("codex-runner-{}-", self.pid());
        let exact = format!("codex-runner-{}", self.pid());
        std::fs::read_dir(&parent)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        name == exact || name.starts_with(&prefix)
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the daemon's stderr has a line containing `needle`.
    pub async fn wait_for_stderr(&self, needle: &str) {
        let lines = self.stderr_lines.clone();
        let found = async {
            let mut seen = 0;
            loop {
                // Registered before looking, so a line that lands in between
                // still wakes us.
                let grew = self.stderr_grew.notified();
                tokio::pin!(grew);
                grew.as_mut().enable();
                {
                    let lines = lines.lock().unwrap();
                    if lines[seen..].iter().any(|l| l.contains(needle)) {
                        return;
                    }
                    seen = lines.len();
                }
                grew.await;
            }
        };
        tokio::time::timeout(READ_TIMEOUT, found)
            .await
            .unwrap_or_else(|_| {
                panic!("no stderr line with {needle:?}; stderr:\n{}", self.stderr())
            });
    }

    /// Starts reading a stderr held by [`DaemonBuilder::hold_stderr`].
    pub fn release_stderr(&self) {
        self.stderr_release.send_replace(true);
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// The `diag` lines the daemon wrote for `id`.
    pub fn diags(&self, id: &str) -> Vec<Value> {
        self.stderr_lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "diag" && v["id"] == id)
            .collect()
    }

    /// What the fake codex recorded for run `id`.
    /// Run `id`'s record, once its codex has written it (it does so as it
    /// starts its events), for a test that cannot wait on stdout.
    pub async fn wait_record(&self, id: &str) -> Value {
        let path = self.records.path().join(format!("{id}.json"));
        let written = async {
            // The fake writes it by rename: once there, it is whole.
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(READ_TIMEOUT, written)
            .await
            .unwrap_or_else(|_| panic!("no record for run {id} at {}", path.display()));
        self.record(id)
    }

    pub fn record(&self, id: &str) -> Value {
        let path = self.records.path().join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no record for run {id} at {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// Per-turn dirs still present under the turn root (after the daemon
    /// exited: it removes the homes it kept for reuse at exit).
    pub fn leftover_turn_dirs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.turn_root.path().join("turns")) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// What finished turns left in their dirs: anything but the links to
    /// the base home, which a dir kept for a later turn holds and nothing
    /// else (while the daemon runs).
    pub fn leftover_turn_files(&self) -> Vec<PathBuf> {
        self.leftover_turn_dirs()
            .iter()
            .flat_map(|dir| files_but_links(dir))
            .collect()
    }

    pub fn base_home(&self) -> &Path {
        self.base_home.path()
    }
}

/// Whether this machine lets us make a PID namespace (root, or user
/// namespaces allowed) for [`DaemonBuilder::pid_1_of_its_namespace`].
pub fn pid_namespaces_work() -> bool {
    std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pids whose parent is `pid`, and whether each is a zombie.
pub fn children_of(pid: u32) -> Vec<(u32, bool)> {
    use codex_runner::containment::{pids, proc_stat};
    pids()
        .filter_map(|child| {
            let stat = proc_stat(child)?;
            (stat.ppid == Some(pid)).then(|| (child, stat.state == Some('Z')))
        })
        .collect()
}

/// Entries of `dir` other than symlinks (none if `dir` is gone): a turn's
/// files, where a home kept for reuse holds only its links.
pub fn files_but_links(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| !e.file_type().unwrap().is_symlink())
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Parses an output line and checks the framing rules every line obeys.
#[track_caller]
pub fn parse_output_line(raw: &str) -> Value {
    let value: Value = serde_json::from_str(raw)
        .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {raw}"));
    assert!(value.is_object(), "stdout line is not an object: {raw}");
    assert!(
        raw.starts_with("{\"type\":"),
        "`type` must come first: {raw}"
    );
    value
}

/// A FIFO the `gate` scenario blocks on until [`Gate::open`].
pub struct Gate {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Gate {
    pub fn new() -> Gate {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate");
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        Gate { _dir: dir, path }
    }

    /// Env for a run that waits on this gate.
    pub fn env(&self) -> Value {
        json!({"FAKE_CODEX_SCENARIO": "gate", "FAKE_CODEX_GATE": self.path})
    }

    /// Releases the waiting turn: opens the FIFO for write, which succeeds
    /// once the turn has it open for read, and closes it (the turn reads the
    /// end of the file). Opened without blocking and retried, so that a turn
    /// that never comes fails the test instead of leaving a thread blocked
    /// in `open` that the runtime would wait for forever at its drop.
    pub async fn open(&self) {
        drop(self.hold().await);
    }

    /// Opens the FIFO for write as [`open`](Self::open) does, once the
    /// waiting side has it open, and keeps it open: the waiting side stays
    /// at the gate until the file is dropped.
    pub async fn hold(&self) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = async {
            loop {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&self.path)
                {
                    Ok(held) => return held,
                    // No reader yet.
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("opening the gate {}: {e}", self.path.display()),
                }
            }
        };
        tokio::time::timeout(READ_TIMEOUT, opened)
            .await
            .expect("the gated side never opened its gate")
    }
}

pub fn alive(pid: u64) -> bool {
    codex_runner_test_support::alive(pid as u32)
}

pub async fn wait_gone(pid: u64, within: Duration) {
    codex_runner_test_support::wait_gone(pid as u32, within).await
}

/// Kills a process a test's turn left running on purpose (it escaped the
/// daemon's reach), and waits until it is gone.
pub async fn kill_escaped(pid: u64) {
    // SAFETY: kill has no memory-safety preconditions; the pid is one a
    // test's turn started and that is alive or a zombie of ours.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    wait_gone(pid, READ_TIMEOUT).await;
}

/// The cgroup2 directory of this process, if cgroup2 is mounted.
fn own_cgroup_dir() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(mount).join(own.trim_start_matches('/')))
}

/// Whether the daemon runs turns in cgroups, from its start-up log (one of
/// "per-turn cgroups enabled" and "no per-turn cgroups"), waited for: the
/// log's lines come on their own pipe, not in step with stdout.
pub async fn containment_is_cgroup(d: &Daemon) -> bool {
    d.wait_for_stderr("cgroups").await;
    d.stderr().contains("per-turn cgroups enabled")
}

/// Runs the fake's `spawn_descendants` scenario until it reports the pids of
/// its setsid-ed child and its reparented grandchild.
pub async fn start_descendants(d: &mut Daemon, id: &str) -> (u64, Vec<u64>) {
    d.run(
        id,
        json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "spawn_descendants"}}),
    )
    .await;
    let line = d
        .wait_for(|l| l["id"] == id && l["event"]["item"]["pids"].is_array())
        .await;
    let pids: Vec<u64> = line["event"]["item"]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    let codex = d.record(id)["pid"].as_u64().unwrap();
    assert!(alive(codex) && pids.iter().all(|p| alive(*p)));
    (codex, pids)
}
