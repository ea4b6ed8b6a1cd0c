//! Shared pieces of the benchmark drivers: a codex-runner daemon on pipes,
//! measured from outside.
//!
//! The daemon's CPU time is read through its process CPU clock
//! (`clock_getcpuclockid`), in nanoseconds and for all its threads, dead ones
//! included, and never its children's; its peak RSS is `VmHWM` from
//! `/proc/<pid>/status`. Both are read while it is still alive.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Nearest-rank percentile of sorted values (as the anchors compute it).
pub fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// Median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A running daemon whose stdin and stdout we hold.
pub struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    clock: libc::clockid_t,
    buf: Vec<u8>,
    /// Bytes of `buf` holding an incomplete line.
    held: usize,
}

impl Daemon {
    /// Spawns `bin args…` with `env` over ours, stdin and stdout piped, stderr inherited.
    pub fn start(
        bin: &Path,
        args: &[OsString],
        env: &[(String, String)],
    ) -> std::io::Result<Daemon> {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        // A whole batch of requests fits in the pipe, so writing it never
        // waits for the daemon (which may be writing to us meanwhile).
        // SAFETY: fcntl on an fd we own.
        unsafe {
            libc::fcntl(stdin.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
        }
        let mut clock: libc::clockid_t = 0;
        // SAFETY: out-pointer to a local.
        let rc = unsafe { libc::clock_getcpuclockid(child.id() as libc::pid_t, &mut clock) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(Daemon {
            child,
            stdin: Some(stdin),
            stdout,
            clock,
            buf: vec![0; 1 << 20],
            held: 0,
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the daemon is up and idle: its main thread blocked
    /// waiting for input (in `read` of fd 0, or in `epoll_wait`, where it
    /// reads a piped stdin) and its start-up work (the `db-template` threads)
    /// done. Falls back to a fixed pause where `/proc/<pid>/task/*` cannot
    /// be read.
    pub fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        let pid = self.pid();
        let task_dir = format!("/proc/{pid}/task");
        let main_thread = pid.to_string();
        while start.elapsed() < timeout {
            let mut readable = false;
            let mut waiting = false;
            let mut starting_up = false;
            if let Ok(tasks) = std::fs::read_dir(&task_dir) {
                for task in tasks.flatten() {
                    let comm =
                        std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                    if comm.trim_end() == "db-template" {
                        starting_up = true;
                    }
                    if task.file_name().to_str() != Some(main_thread.as_str()) {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else {
                        continue;
                    };
                    readable = true;
                    let mut fields = text.split_whitespace();
                    let nr = fields.next().and_then(|n| n.parse::<i64>().ok());
                    let fd = fields.next();
                    waiting = (nr == Some(libc::SYS_read) && fd == Some("0x0"))
                        || nr == Some(libc::SYS_epoll_wait)
                        || nr == Some(libc::SYS_epoll_pwait)
                        || nr == Some(libc::SYS_epoll_pwait2);
                }
            }
            if waiting && !starting_up {
                // Let the other threads settle too.
                std::thread::sleep(Duration::from_millis(20));
                return;
            }
            if !readable && start.elapsed() > Duration::from_millis(50) {
                std::thread::sleep(Duration::from_millis(200));
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// CPU time (user + system) of the daemon so far, in seconds.
    pub fn cpu_s(&self) -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: out-pointer to a local.
        unsafe { libc::clock_gettime(self.clock, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// Peak resident set (VmHWM) so far, in MB (MiB, as ru_maxrss/1024).
    pub fn peak_rss_mb(&self) -> f64 {
        status_kb(self.pid(), "VmHWM:").map_or(f64::NAN, |kb| kb as f64 / 1024.0)
    }

    /// Writes request bytes.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stdin.as_mut().expect("stdin open").write_all(bytes)
    }

    /// One read; calls `line` with every complete line it finished (without
    /// `\n`) and the instant the read returned. `Ok(false)` at end of stream.
    pub fn read_lines(&mut self, mut line: impl FnMut(&[u8], Instant)) -> std::io::Result<bool> {
        if self.held == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = loop {
            match self.stdout.read(&mut self.buf[self.held..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let at = Instant::now();
        if n == 0 {
            return Ok(false);
        }
        let end = self.held + n;
        let mut start = 0;
        let mut search = self.held;
        while let Some(i) = memchr::memchr(b'\n', &self.buf[search..end]) {
            line(&self.buf[start..search + i], at);
            start = search + i + 1;
            search = start;
        }
        self.buf.copy_within(start..end, 0);
        self.held = end - start;
        Ok(true)
    }

    /// Closes stdin, reads stdout to its end (calling `line` for each line)
    /// and waits for the daemon to exit.
    pub fn finish(mut self, mut line: impl FnMut(&[u8])) -> std::io::Result<ExitStatus> {
        drop(self.stdin.take());
        while self.read_lines(|l, _| line(l))? {}
        self.child.wait()
    }
}

/// The daemon's minor page faults and context switches (voluntary and not,
/// every live thread's: a thread that has ended takes its switches with it)
/// so far, from `/proc`: where a batch's CPU goes when the profile is too
/// coarse to say.
pub fn faults_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): minflt is the
    // 10th field of the line, the 8th after `)`.
    let minflt = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0);
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            switches += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (minflt, switches)
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What one output line of the daemon is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// An `event` of run `id`.
    Event(&'a str),
    /// The `end` of run `id`; `ok` if its status is `ok`.
    End(&'a str, bool),
    /// Anything else (a `rejected` line, say).
    Other,
}

/// Classifies an output line. Event lines are recognised by the head the
/// daemon writes (`{"type":"event","id":"…"`): the driver must not cost
/// more than the daemon it measures. `end` lines are parsed in full.
pub fn classify(line: &[u8]) -> Line<'_> {
    const EVENT: &[u8] = br#"{"type":"event","id":""#;
    if let Some(rest) = line.strip_prefix(EVENT) {
        if let Some(q) = memchr::memchr(b'"', rest) {
            if let Ok(id) = std::str::from_utf8(&rest[..q]) {
                return Line::Event(id);
            }
        }
        return Line::Other;
    }
    const END: &[u8] = br#"{"type":"end","id":""#;
    if let Some(rest) = line.strip_prefix(END) {
        let ok =
            serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v["status"] == "ok");
        if let Some(q) = memchr::memchr(b'"', rest) {
            if let Ok(id) = std::str::from_utf8(&rest[..q]) {
                return Line::End(id, ok);
            }
        }
    }
    Line::Other
}

/// An env var parsed, or a default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A base CODEX_HOME like a user's: a config.toml with comments, a few
/// settings, two MCP servers and a profile table; an `auth.json`. The daemon
/// edits this config and links `auth.json` for every turn.
/// Files that are already there with this content are left alone, so that a
/// base home reused across runs looks settled (unchanged for a while), like a
/// user's.
pub fn write_base_home(home: &Path, config: &str) -> std::io::Result<()> {
    let put = |name: &str, text: &str| -> std::io::Result<()> {
        let path = home.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            std::fs::write(path, text)?;
        }
        Ok(())
    };
    for dir in ["sessions", "thread-writer-locks", "skills"] {
        std::fs::create_dir_all(home.join(dir))?;
    }
    put("config.toml", config)?;
    put("auth.json", "{\"OPENAI_API_KEY\":\"sk-bench-not-a-key\"}\n")
}

/// The base config.toml used with the fake codex (which ignores it).
pub const BASE_CONFIG: &str = r#"# My codex config.
model = "gpt-5.5"
model_reasoning_effort = "medium"
approval_policy = "never"
sandbox_mode = "workspace-write"

[sandbox_workspace_write]
network_access = false

[features]
web_search_request = true

# Docs server over HTTP.
[mcp_servers.docs]
url = "http://127.0.0.1:8080/mcp"
http_headers = { "X-Team" = "bench" }

[mcp_servers.fs]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/work"]

[profiles.fast]
model = "gpt-5.5-mini"
model_reasoning_effort = "low"
"#;
