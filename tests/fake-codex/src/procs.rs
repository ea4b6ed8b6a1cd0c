//! Scenarios about process lifecycle: crashing, hanging, gating on a FIFO, closing
//! stdout early and leaving descendants behind.

use crate::events::{self, it, Ctx};
use crate::out;
use serde_json::json;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

pub fn run(name: &str, ctx: &Ctx) -> i32 {
    match name {
        "crash" => crash(ctx),
        "hang" => hang(ctx, false),
        "hang_ignore_sigint" => hang(ctx, true),
        "gate" => gate(ctx),
        "close_stdout" => {
            events::thread_started(ctx);
            // SAFETY: closing fd 1; later writes fail with EBADF, which out:: handles.
            unsafe { libc::close(1) };
            out::sleep_ms(out::knob("FAKE_CODEX_DELAY_MS", 60_000));
            0
        }
        "spawn_descendants" => spawn_descendants(ctx),
        other => unreachable!("main validated scenario {other}"),
    }
}

/// A torn line without its newline, then SIGABRT (no core file: it would litter cwd).
fn crash(ctx: &Ctx) -> ! {
    events::begin(ctx);
    out::raw(br#"{"type":"item.comp"#);
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::abort()
    }
}

/// Starts the turn and never finishes it. With `ignore`, SIGINT and SIGTERM are
/// ignored first (before any output, so a test that saw turn.started knows it).
fn hang(ctx: &Ctx, ignore: bool) -> ! {
    if ignore {
        // SAFETY: setting a signal disposition to SIG_IGN.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    events::begin(ctx);
    sleep_forever()
}

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Holds the turn open until the test writes to and closes the FIFO FAKE_CODEX_GATE:
/// opening a FIFO for reading blocks until a writer opens it, reading ends at EOF.
fn gate(ctx: &Ctx) -> i32 {
    let Some(path) = std::env::var_os("FAKE_CODEX_GATE") else {
        out::die(
            2,
            "fake-codex: scenario gate needs FAKE_CODEX_GATE (a FIFO path)",
        );
    };
    events::begin(ctx);
    let mut sink = Vec::new();
    if let Err(e) = std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut sink)) {
        out::die(
            2,
            &format!("fake-codex: gate {}: {e}", path.to_string_lossy()),
        );
    }
    events::finish(ctx, &events::echo_text(ctx));
    0
}

/// Leaves two `sleep 600`s that outlive a careless kill: one in its own session (as
/// codex runs commands), which only a walk of codex's tree or a cgroup reaches,
/// and one orphan reparented away from us but still in our process group, which
/// the group's kill reaches too. Reports their pids in a command_execution item,
/// then hangs.
fn spawn_descendants(ctx: &Ctx) -> i32 {
    let pids = match (spawn_setsid_sleep(), spawn_orphan_sleep()) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => out::die(2, &format!("fake-codex: spawn_descendants: {e}")),
    };
    events::begin(ctx);
    let cmd = it("item_0", "command_execution")
        .val("command", "sleep 600")
        .val("aggregated_output", "")
        .val("exit_code", serde_json::Value::Null)
        .val("status", "in_progress")
        .val("pids", json!(pids));
    events::item("item.completed", cmd);
    if std::env::var_os("FAKE_CODEX_EXIT_UNTERMINATED").is_some_and(|v| v == "1") {
        // Codex done, its descendants not: the turn's last line goes out
        // without its newline, and codex exits 0.
        events::agent_message("item_1", &events::echo_text(ctx));
        let usage = r#"{"input_tokens":1,"cached_input_tokens":0,"cache_write_input_tokens":0,"output_tokens":1,"reasoning_output_tokens":0}"#;
        out::raw(format!(r#"{{"type":"turn.completed","usage":{usage}}}"#).as_bytes());
        return 0;
    }
    sleep_forever()
}

/// A direct child `sleep 600` in a new session (setsid), stdio on /dev/null so it does
/// not hold the runner's pipes open. Its Child handle is dropped: never waited for.
fn spawn_setsid_sleep() -> io::Result<i32> {
    let mut cmd = Command::new("sleep");
    cmd.arg("600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid and fcntl are async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            cloexec_inherited();
            if libc::setsid() < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    Ok(cmd.spawn()?.id() as i32)
}

/// A double fork: the middle process forks `sleep 600`, sends its pid back through a
/// pipe and exits, so the sleep is reparented (to init or a subreaper) but keeps our
/// process group. Done with raw fork rather than `sh -c 'sleep &'`, because a
/// non-interactive shell starts background jobs with SIGINT ignored.
///
/// With `FAKE_CODEX_ORPHAN_KEEPS_STDIO=1` the orphan daemonizes carelessly:
/// it also leaves the group (setsid) and keeps our stdout and stderr, so
/// only a cgroup can reach it, and the runner must not wait for those pipes
/// to close.
fn spawn_orphan_sleep() -> io::Result<i32> {
    let keep_stdio = std::env::var_os("FAKE_CODEX_ORPHAN_KEEPS_STDIO").is_some_and(|v| v == "1");
    let prog = CString::new("sleep").unwrap();
    let arg = CString::new("600").unwrap();
    let argv = [prog.as_ptr(), arg.as_ptr(), std::ptr::null()];
    let devnull = CString::new("/dev/null").unwrap();
    let mut fds = [0; 2];
    // SAFETY: plain syscalls; between fork and exec/_exit only async-signal-safe calls.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        let null = libc::open(devnull.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                if libc::fork() == 0 {
                    if keep_stdio {
                        libc::setsid();
                    }
                    let redirect = if keep_stdio { 0..1 } else { 0..3 };
                    for fd in redirect {
                        libc::dup2(null, fd);
                    }
                    // Its pid is told once it is as it will stay (out of
                    // the group, say): codex may exit right after.
                    let bytes = libc::getpid().to_ne_bytes();
                    libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
                    cloexec_inherited();
                    libc::execvp(prog.as_ptr(), argv.as_ptr());
                    libc::_exit(127);
                }
                libc::_exit(0)
            }
            middle => {
                libc::close(fds[1]);
                libc::close(null);
                let mut bytes = [0u8; 4];
                let n = libc::read(fds[0], bytes.as_mut_ptr().cast(), 4);
                libc::close(fds[0]);
                libc::waitpid(middle, std::ptr::null_mut(), 0);
                match i32::from_ne_bytes(bytes) {
                    pid if n == 4 && pid > 0 => Ok(pid),
                    _ => Err(io::Error::other("double fork failed")),
                }
            }
        }
    }
}

/// Marks every fd above stderr close-on-exec, so the sleeps do not keep open pipes we
/// inherited from whoever spawned us (a test harness would wait for their EOF).
/// Async-signal-safe: only fcntl.
unsafe fn cloexec_inherited() {
    for fd in 3..1024 {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}
