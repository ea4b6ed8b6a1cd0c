//! `loop-proto`: a measurement, not a runner. It answers one question before
//! anyone rewrites the daemon's core: would a design shaped like the floor
//! (one hand-written epoll loop, codex spawned inline, no task per turn, no
//! spawner thread), built from the daemon's own parts, reach 2x the floor's
//! CPU at K=64?
//!
//! It takes the daemon's command line as `bench-driver` gives it, and per
//! turn does what the daemon does with the same library code: the request
//! decoded (`runner_protocol::decode_request`), the home prepared and its
//! config rendered (`codex_home::prepare`), argv and env built, the cgroup
//! taken from the pool, codex spawned (`spawn::spawn`, on this thread), every
//! line checked and peeked (`TurnState::observe`) and tagged, the `end` built
//! and encoded, the cgroup checked and given back, the home checked and kept.
//! Everything else the daemon does is left out, so this is a lower bound of
//! the design: cancellation, timers, the concurrency cap and queue, thread
//! ordering for `resume`, `status`, diag lines (stderr is drained, not
//! forwarded), back-pressure (stdout is written blocking), shutdown.
//! Unsupported requests make it exit.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;

use codex_runner::codex_bin::CodexBin;
use codex_runner::codex_home::{self, HomeSettings, TurnHome};
use codex_runner::command::{codex_args, codex_env};
use codex_runner::containment::{Containment, ContainmentMode, TurnContainer};
use codex_runner::diag::Redactor;
use codex_runner::events::{EventPeek, TurnState};
use codex_runner::spawn::{self, Program};
use runner_protocol::{OutputLine, Request};

const STDIN: u64 = u64::MAX;

/// `PROTO_TIMES=1`: this thread's CPU time per part of a turn, summed and
/// printed at exit (each reading is a system call, about 0.3 µs, counted in
/// the part that follows it).
mod times {
    use std::cell::RefCell;
    thread_local! {
        static ON: bool = std::env::var_os("PROTO_TIMES").is_some();
        static SUMS: RefCell<Vec<(&'static str, u64, u64)>> = const { RefCell::new(Vec::new()) };
        static LAST: RefCell<u64> = const { RefCell::new(0) };
    }
    fn now() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: out-pointer to a local.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
    /// Starts timing.
    pub fn mark() {
        if ON.with(|on| *on) {
            LAST.with(|l| *l.borrow_mut() = now());
        }
    }
    /// Charges the time since the last mark to `part`, and marks.
    pub fn charge(part: &'static str) {
        if !ON.with(|on| *on) {
            return;
        }
        let t = now();
        let spent = LAST.with(|l| t - std::mem::replace(&mut *l.borrow_mut(), t));
        SUMS.with(|sums| {
            let mut sums = sums.borrow_mut();
            match sums.iter_mut().find(|(p, _, _)| *p == part) {
                Some(entry) => {
                    entry.1 += spent;
                    entry.2 += 1;
                }
                None => sums.push((part, spent, 1)),
            }
        });
    }
    pub fn print() {
        SUMS.with(|sums| {
            for (part, ns, n) in sums.borrow().iter() {
                eprintln!(
                    "{part:>12}: {:8.1} µs total, {:6.2} µs each, n={n}",
                    *ns as f64 / 1e3,
                    *ns as f64 / 1e3 / *n as f64
                );
            }
        });
    }
}

struct Turn {
    id: String,
    prefix: Vec<u8>,
    state: TurnState,
    redactor: Redactor,
    home: Option<TurnHome>,
    container: Option<TurnContainer>,
    pid: u32,
    /// Until codex is reaped.
    pidfd: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    partial: Vec<u8>,
    exit: Option<ExitStatus>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let bin = CodexBin::resolve(&PathBuf::from(arg("--codex-bin").expect("--codex-bin")))
        .expect("codex binary");
    remove_stale_roots();
    let turn_root = PathBuf::from(format!("/dev/shm/loop-proto-{}", std::process::id()));
    codex_home::ensure_turn_root(&turn_root).expect("turn root");
    let home = HomeSettings {
        base_home: PathBuf::from(arg("--codex-home").expect("--codex-home")),
        turn_root: turn_root.clone(),
        idle: Default::default(),
        templates: codex_runner::db_template::DbTemplates::from_env(),
    };
    let containment = Containment::start(ContainmentMode::Auto).expect("containment");
    containment.prefill(64);
    codex_home::prefill(&home, 64);
    let _ = home.templates.for_codex(&bin);
    let base_env = Arc::new(spawn::env_entries(
        std::env::vars_os().filter(|(key, _)| key != "RUST_LOG"),
    ));
    // Only for `TurnContainer::release`, whose waits happen when a turn
    // left processes behind (never here).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");

    // SAFETY: plain syscalls on fds we own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    add(ep, 0, STDIN);
    let mut turns: HashMap<u64, Turn> = HashMap::new();
    let mut next_slot = 0u64;
    let mut requests = Vec::new();
    // Both touched now, as a daemon's would be after its first turns.
    let mut buf = vec![1u8; 64 * 1024];
    let mut out: Vec<u8> = vec![1u8; 1024 * 1024];
    out.clear();
    let mut stdout = std::io::stdout().lock();
    let mut stdin_open = true;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    while stdin_open || !turns.is_empty() {
        // SAFETY: `events` is writable for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for event in &events[..n as usize] {
            let key = event.u64;
            if key == STDIN {
                let got = read(0, &mut buf);
                if got == 0 {
                    stdin_open = false;
                    del(ep, 0);
                    continue;
                }
                requests.extend_from_slice(&buf[..got]);
                while let Some(nl) = memchr::memchr(b'\n', &requests) {
                    let line: Vec<u8> = requests.drain(..=nl).collect();
                    times::mark();
                    let Ok(Request::Run {
                        id,
                        params: Ok(params),
                    }) = runner_protocol::decode_request(&line[..nl])
                    else {
                        panic!("loop-proto takes valid run requests only");
                    };
                    times::charge("decode");
                    let turn = start(&home, &bin, &base_env, &containment, id, &params);
                    let slot = next_slot;
                    next_slot += 1;
                    add(ep, turn.stdout.as_ref().unwrap().as_raw_fd(), slot << 2);
                    add(ep, turn.stderr.as_ref().unwrap().as_raw_fd(), slot << 2 | 1);
                    add(ep, turn.pidfd.as_ref().unwrap().as_raw_fd(), slot << 2 | 2);
                    times::charge("register");
                    turns.insert(slot, turn);
                }
                continue;
            }
            let slot = key >> 2;
            let turn = turns.get_mut(&slot).expect("a live turn");
            match key & 3 {
                0 => {
                    let fd = turn.stdout.as_ref().unwrap().as_raw_fd();
                    let got = read(fd, &mut buf);
                    if got == 0 {
                        del(ep, fd);
                        turn.stdout = None;
                    } else {
                        forward(turn, &buf[..got], &mut out);
                    }
                }
                1 => {
                    let fd = turn.stderr.as_ref().unwrap().as_raw_fd();
                    if read(fd, &mut buf) == 0 {
                        del(ep, fd);
                        turn.stderr = None;
                    }
                }
                _ => {
                    let pidfd = turn.pidfd.as_ref().unwrap();
                    if let Ok(Some(status)) = spawn::reap(pidfd, spawn::Wait::Poll) {
                        del(ep, pidfd.as_raw_fd());
                        turn.pidfd = None;
                        turn.exit = Some(status);
                    }
                }
            }
            if turn.exit.is_some() && turn.stdout.is_none() && turn.stderr.is_none() {
                let turn = turns.remove(&slot).expect("just seen");
                times::mark();
                finish(turn, &home, &rt, &mut out);
                times::charge("drop");
            }
        }
        if !out.is_empty() {
            stdout.write_all(&out).expect("stdout");
            out.clear();
        }
    }
    times::print();
    home.idle.clear();
    containment.close();
    let _ = std::fs::remove_dir(&turn_root);
}

fn start(
    home: &HomeSettings,
    bin: &CodexBin,
    base_env: &Arc<Vec<std::ffi::CString>>,
    containment: &Containment,
    id: String,
    params: &runner_protocol::RunParams,
) -> Turn {
    let turn_home = codex_home::prepare(home, Some(bin), &id, params).expect("home");
    times::charge("prepare");
    let args = codex_args(params, turn_home.output_schema.as_deref());
    let env = codex_env(params, &id, turn_home.path(), bin);
    let container = containment.turn();
    let mut program = Program::with_base_env(&bin.program, args, base_env, env).expect("program");
    times::charge("argv+env");
    let prompt = params.prompt_text();
    let (stdin, ours) = spawn::pipe().expect("pipe");
    // SAFETY: writing from a live slice to a pipe we own; the prompt fits.
    unsafe { libc::write(ours.as_raw_fd(), prompt.as_ptr().cast(), prompt.len()) };
    drop(ours);
    program.stdin_from(stdin);
    let cgroup: Option<RawFd> = container.cgroup_fd().map(|fd| fd.as_raw_fd());
    times::charge("stdin pipe");
    let spawned = spawn::spawn(&mut program, cgroup).expect("spawn");
    times::charge("spawn");
    Turn {
        prefix: codex_runner::turn::event_prefix(&id).into_bytes(),
        id,
        state: TurnState::default(),
        redactor: Redactor::for_params(params),
        home: Some(turn_home),
        container: Some(container),
        pid: spawned.pid,
        pidfd: Some(spawned.pidfd),
        stdout: Some(spawned.stdout),
        stderr: Some(spawned.stderr),
        partial: Vec::new(),
        exit: None,
    }
}

/// Tags every complete line of `bytes` (after what the last read left).
fn forward(turn: &mut Turn, mut bytes: &[u8], out: &mut Vec<u8>) {
    while let Some(nl) = memchr::memchr(b'\n', bytes) {
        if turn.partial.is_empty() {
            tag(turn, &bytes[..nl], out);
        } else {
            let mut line = std::mem::take(&mut turn.partial);
            line.extend_from_slice(&bytes[..nl]);
            tag(turn, &line, out);
        }
        bytes = &bytes[nl + 1..];
    }
    turn.partial.extend_from_slice(bytes);
}

fn tag(turn: &mut Turn, line: &[u8], out: &mut Vec<u8>) {
    if let EventPeek::Event { .. } = turn.state.observe(line) {
        out.extend_from_slice(&turn.prefix);
        out.extend_from_slice(line);
        out.extend_from_slice(b"}\n");
    }
}

fn finish(mut turn: Turn, home: &HomeSettings, rt: &tokio::runtime::Runtime, out: &mut Vec<u8>) {
    let mut container = turn.container.take().expect("a container");
    container.kill_after_exit(turn.pid);
    let nothing_left = rt.block_on(container.release());
    times::charge("containment");
    let end = turn
        .state
        .into_end(&turn.id, turn.exit, None, None, &[], &turn.redactor);
    out.extend_from_slice(&codex_runner::writer::encode(&OutputLine::End(end)));
    times::charge("end");
    let turn_home = turn.home.take().expect("a home");
    codex_runner::turn::release_home(turn_home, &home.idle, nothing_left);
    times::charge("home back");
}

/// Removes the turn roots of runs that died without cleaning up (killed, or
/// a panic): their homes hold config files.
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("loop-proto-"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: reading into a live, writable buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            panic!("read: {}", std::io::Error::last_os_error());
        }
    }
}

fn add(ep: RawFd, fd: RawFd, key: u64) {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: key,
    };
    // SAFETY: registering an open fd with our epoll.
    assert_eq!(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut event) },
        0
    );
}

/// Takes `fd` out of the epoll set before it is closed. Closing alone is not
/// enough: a vfork child that `spawn` started may still hold a copy of every
/// descriptor of ours (the parent resumes when the child's `execve` releases
/// our memory, a little before the close-on-exec descriptors are closed), so
/// the description can outlive our close and still report, under its old
/// key, for a turn that is gone.
fn del(ep: RawFd, fd: RawFd) {
    // SAFETY: deregistering an fd we registered.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}
