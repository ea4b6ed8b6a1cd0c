//! The spawner against real programs: what the child gets (pipes, env,
//! process group, signal state, cgroup) and what the daemon gets back.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::*;

/// Waits for the child behind `pidfd` (blocking) and returns its exit status.
fn wait_blocking(pidfd: &OwnedFd) -> std::process::ExitStatus {
    reap(pidfd, Wait::Block).unwrap().unwrap()
}

/// Everything left in a (non-blocking) read end once its writers are gone.
/// Another test's child may still hold a copy of the write end for a moment
/// (a child holds all of the test process's descriptors from its clone to
/// its `exec`), so an empty pipe is waited on, not taken for the end.
fn read_all(fd: OwnedFd) -> String {
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut poll = libc::pollfd {
                    fd: file.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ready = unsafe { libc::poll(&mut poll, 1, 30_000) };
                assert!(ready != 0, "the pipe's writers are still there after 30 s");
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read a pipe whose writer exited: {e}"),
        }
    }
    String::from_utf8(bytes).expect("text")
}

/// How many of this process's descriptors refer to the same pipe as `fd`.
fn descriptors_of_pipe(fd: &OwnedFd) -> usize {
    let target = |path: &std::path::Path| std::fs::read_link(path).ok();
    let pipe = target(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())));
    assert!(pipe.is_some(), "fd {} is open", fd.as_raw_fd());
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| target(&entry.path()) == pipe)
        .count()
}

fn program(path: &str, args: &[&str], env: &[(&str, &str)]) -> Program {
    Program::new(
        Path::new(path),
        args.iter().map(Into::into),
        env.iter().map(|(k, v)| (k.into(), v.into())),
    )
    .unwrap()
}

/// The daemon's cgroup is named by pid: one test at a time may own it.
static CGROUP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn both_syscalls() -> [Syscall; 2] {
    [Syscall::Clone3, Syscall::Clone]
}

#[test]
fn the_child_gets_its_pipes_its_env_and_its_own_process_group() {
    let script = r#"read -r line; echo "in:$line env:$ONLY"; echo "vars:$(env | wc -l)"; echo oops >&2; cut -d' ' -f5 /proc/self/stat; exit 3"#;
    for syscall in both_syscalls() {
        let mut p = program(
            "/bin/sh",
            &["-c", script],
            &[("ONLY", "me"), ("PATH", "/usr/bin:/bin")],
        );
        let child = spawn_with(&mut p, None, syscall).unwrap();
        let stdin = child.stdin.expect("a stdin pipe made for the child");
        let written = unsafe { libc::write(stdin.as_raw_fd(), b"hello\n".as_ptr().cast(), 6) };
        assert_eq!(written, 6);
        drop(stdin);
        assert_eq!(wait_blocking(&child.pidfd).code(), Some(3), "{syscall:?}");
        let out = read_all(child.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "in:hello env:me", "{syscall:?}");
        // Exactly the env we gave (plus what sh itself sets: PWD, maybe SHLVL, _).
        let vars: usize = lines[1]
            .strip_prefix("vars:")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(vars <= 5, "{syscall:?}: {vars} variables: {out}");
        // `cut` runs in the child's process group, led by the child.
        assert_eq!(lines[2], child.pid.to_string(), "{syscall:?}: pgid");
        assert_eq!(read_all(child.stderr), "oops\n", "{syscall:?}");
    }
}

#[test]
fn a_shared_base_env_is_overridden_and_extended_per_program() {
    let base = Arc::new(env_entries([
        ("KEEP".into(), "base".into()),
        ("PATH".into(), "/nowhere".into()),
        ("PATHX".into(), "not PATH".into()),
    ]));
    let mut p = Program::with_base_env(
        Path::new("/usr/bin/env"),
        [],
        &base,
        [
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("NEW".into(), "first".into()),
            ("NEW".into(), "second".into()),
        ],
    )
    .unwrap();
    let child = spawn_with(&mut p, None, Syscall::Clone3).unwrap();
    drop(child.stdin);
    assert_eq!(wait_blocking(&child.pidfd).code(), Some(0));
    let out = read_all(child.stdout);
    let mut vars: Vec<&str> = out.lines().collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        [
            "KEEP=base",
            "NEW=second",
            "PATH=/usr/bin:/bin",
            "PATHX=not PATH"
        ],
        "a key given again replaces the base's (and an earlier one), once"
    );
    assert_eq!(base.len(), 3, "the base is shared, not changed");
}

#[test]
fn a_stdin_given_with_the_program_is_the_childs_alone_once_it_is_started() {
    for syscall in both_syscalls() {
        // Written and closed before the child exists: it reads it whole, to
        // its end.
        let (read_end, write_end) = pipe().unwrap();
        let written = unsafe { libc::write(write_end.as_raw_fd(), b"early\n".as_ptr().cast(), 6) };
        assert_eq!(written, 6);
        drop(write_end);
        let mut p = program("/bin/sh", &["-c", "cat; echo end"], &[]);
        p.stdin_from(read_end);
        let child = spawn_with(&mut p, None, syscall).unwrap();
        assert!(child.stdin.is_none(), "{syscall:?}: no pipe of ours");
        assert_eq!(wait_blocking(&child.pidfd).code(), Some(0));
        assert_eq!(read_all(child.stdout), "early\nend\n", "{syscall:?}");

        // Its read end does not stay open here: once a child that never
        // reads it is gone, a writer learns of it (EPIPE) instead of filling
        // the pipe for nobody. (Counted by descriptor: another test's child
        // may hold a copy of every descriptor until it `exec`s.)
        let (read_end, write_end) = pipe().unwrap();
        assert_eq!(descriptors_of_pipe(&write_end), 2);
        let mut p = program("/bin/true", &[], &[]);
        p.stdin_from(read_end);
        let child = spawn_with(&mut p, None, syscall).unwrap();
        assert_eq!(
            descriptors_of_pipe(&write_end),
            1,
            "{syscall:?}: only the write end is left"
        );
        assert_eq!(wait_blocking(&child.pidfd).code(), Some(0));
    }
}

/// The `Sig*` masks of `/proc/self/status`, as the child sees them after exec.
fn signal_masks(syscall: Syscall) -> (u64, u64) {
    let mut p = program("/bin/cat", &["/proc/self/status"], &[]);
    let child = spawn_with(&mut p, None, syscall).unwrap();
    assert_eq!(wait_blocking(&child.pidfd).code(), Some(0));
    let status = read_all(child.stdout);
    let mask = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    (mask("SigBlk:"), mask("SigIgn:"))
}

#[test]
fn the_child_starts_with_no_blocked_signals_and_sigpipe_at_its_default() {
    // Rust ignores SIGPIPE in its binaries (this test harness too), and a
    // thread may block signals: the child must inherit neither.
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    for syscall in both_syscalls() {
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let (blocked, ignored) = signal_masks(syscall);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            assert_eq!(blocked, 0, "{syscall:?}");
            assert_eq!(ignored & sigpipe, 0, "{syscall:?}: SIGPIPE is ignored");
        }
    }
}

#[test]
fn an_exec_failure_is_an_error_with_its_errno() {
    for syscall in both_syscalls() {
        let mut p = program("/nonexistent/codex", &[], &[]);
        let err = spawn_with(&mut p, None, syscall).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{syscall:?}: {err}");
        let mut p = program("/proc/self/status", &[], &[]);
        let err = spawn_with(&mut p, None, syscall).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{syscall:?}: {err}");
    }
}

#[test]
fn a_failure_before_exec_names_its_step_not_the_executable() {
    // A directory that is no cgroup: clone3 cannot start the child in it,
    // and the child's write to its `cgroup.procs` fails with ENOENT, which
    // must not read as "codex executable not found".
    let not_a_cgroup = tempfile::tempdir().unwrap();
    let dir = std::fs::File::open(not_a_cgroup.path()).unwrap();
    for syscall in both_syscalls() {
        let mut p = program("/bin/true", &[], &[]);
        let err = spawn_with(&mut p, Some(dir.as_raw_fd()), syscall).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{syscall:?}: {err}");
        let setup = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<SetupFailed>())
            .unwrap_or_else(|| panic!("{syscall:?}: {err:?} names no step"));
        assert_eq!(setup.step, "moving codex into the turn's cgroup");
        assert_eq!(setup.source.raw_os_error(), Some(libc::ENOENT));
        let wire = crate::diag::chain(&crate::child::SpawnError::Setup(SetupFailed {
            step: setup.step,
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }));
        assert_eq!(
            wire,
            "cannot start codex: moving codex into the turn's cgroup failed: No such file or directory (os error 2)"
        );
    }
}

#[test]
fn a_nul_byte_is_refused_before_anything_starts() {
    let err = Program::new(Path::new("/bin/true"), ["a\0b".into()], [])
        .err()
        .unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("argument"), "{err}");
}

#[test]
fn the_child_is_born_in_the_turns_cgroup_when_there_is_one() {
    let _one_at_a_time = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let containment =
        crate::containment::Containment::start(crate::containment::ContainmentMode::Auto).unwrap();
    if containment.mode() != "cgroup" {
        eprintln!("no writable cgroup2 hierarchy here: only the process-group path is tested");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (syscall, born) in [(Syscall::Clone3, true), (Syscall::Clone, false)] {
        let turn = containment.turn();
        let mut p = program("/bin/cat", &["/proc/self/cgroup"], &[]);
        let cgroup = turn.cgroup_fd();
        let child = spawn_with(&mut p, cgroup.as_deref().map(AsRawFd::as_raw_fd), syscall).unwrap();
        assert_eq!(child.born_in_cgroup, born, "{syscall:?}");
        assert_eq!(wait_blocking(&child.pidfd).code(), Some(0));
        let cgroup = read_all(child.stdout);
        let path = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        assert!(
            path.starts_with('/') && path.contains("/codex-runner-") && path.contains("/turn-"),
            "{syscall:?}: the child ran in {path}"
        );
        runtime.block_on(turn.release());
    }
    containment.close();
}

/// The cgroup `cat /proc/self/cgroup` ran in, started in `turn`'s, and its
/// (reaped) pid.
fn cgroup_of_a_child(turn: &crate::containment::TurnContainer) -> (String, u32) {
    let cgroup = turn.cgroup_fd();
    let mut p = program("/bin/cat", &["/proc/self/cgroup"], &[]);
    let child = spawn(&mut p, cgroup.as_deref().map(AsRawFd::as_raw_fd)).unwrap();
    // Exited by itself: a child SIGKILLed at birth fails here.
    assert_eq!(wait_blocking(&child.pidfd).code(), Some(0));
    let text = read_all(child.stdout);
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    (path.to_owned(), child.pid)
}

#[test]
fn an_empty_turn_cgroup_is_reused_unless_it_was_ever_killed() {
    use crate::containment::{Containment, ContainmentMode};
    let _one_at_a_time = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let containment = Containment::start(ContainmentMode::Auto).unwrap();
    if containment.mode() != "cgroup" {
        eprintln!("no writable cgroup2 hierarchy here: nothing to reuse");
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A turn whose codex ends by itself, leaving nothing: its cgroup is
    // kept...
    let mut first = containment.turn();
    let (first_path, pid) = cgroup_of_a_child(&first);
    first.kill_after_exit(pid);
    runtime.block_on(first.release());
    assert_eq!(containment.idle_cgroups(), 1);
    // ...and the next turn's codex is born in it, and lives.
    let mut second = containment.turn();
    assert_eq!(containment.idle_cgroups(), 0);
    assert_eq!(cgroup_of_a_child(&second).0, first_path);
    // A killed one is removed, not kept: on Linux 6.14+ a process cloned
    // into a once-killed cgroup is SIGKILLed at birth.
    let sleeper = sleeper_in(&mut second);
    second.kill_all(sleeper.pid);
    let status = wait_blocking(&sleeper.pidfd);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    runtime.block_on(second.release());
    assert_eq!(containment.idle_cgroups(), 0);
    let third = containment.turn();
    assert_ne!(cgroup_of_a_child(&third).0, first_path);
    runtime.block_on(third.release());
    assert_eq!(containment.idle_cgroups(), 1);
    containment.close();
    assert_eq!(containment.idle_cgroups(), 0);
}

/// Runs `test` with this process's containment, if it has cgroups (one
/// such test at a time); afterwards, the daemon's cgroup must be gone.
fn with_cgroups(test: impl FnOnce(&crate::containment::Containment, &Path), skipped: &str) {
    use crate::containment::{Containment, ContainmentMode};
    let _one_at_a_time = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let containment = Containment::start(ContainmentMode::Auto).unwrap();
    let Some(root) = containment.cgroup_root().map(Path::to_path_buf) else {
        eprintln!("no writable cgroup2 hierarchy here: {skipped}");
        return;
    };
    test(&containment, &root);
    containment.close();
    assert!(!root.exists());
}

/// The turn cgroups under the daemon's `root`.
fn turn_cgroups(root: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("turn-")
        })
        .collect()
}

/// `sleep 60`, started in `turn`'s cgroup as a turn's codex is.
fn sleeper_in(turn: &mut crate::containment::TurnContainer) -> Spawned {
    let cgroup = turn.cgroup_fd();
    let sleeper = spawn(
        &mut program("/bin/sleep", &["60"], &[]),
        cgroup.as_deref().map(AsRawFd::as_raw_fd),
    )
    .unwrap();
    turn.started(sleeper.pid);
    sleeper
}

/// The cgroup directory `turn` would start codex in.
fn cgroup_dir(turn: &crate::containment::TurnContainer) -> std::path::PathBuf {
    let fd = turn.cgroup_fd().expect("a turn cgroup");
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
}

/// A kept cgroup that something removed or froze while it was idle is not
/// handed out again: before, a removed one let codex start outside any
/// cgroup, and a frozen one left the spawning thread waiting forever.
#[test]
fn a_kept_cgroup_changed_while_idle_is_not_used() {
    with_cgroups(
        |containment, root| {
            let kept = || {
                drop(containment.turn());
                assert_eq!(containment.idle_cgroups(), 1);
                turn_cgroups(root).pop().unwrap()
            };
            // Removed: the next turn's codex still starts in a cgroup of its own.
            let removed = kept();
            std::fs::remove_dir(&removed).unwrap();
            let mut turn = containment.turn();
            let dir = cgroup_dir(&turn);
            assert_ne!(dir, removed);
            let sleeper = sleeper_in(&mut turn);
            let own = std::fs::read_to_string(format!("/proc/{}/cgroup", sleeper.pid)).unwrap();
            let relative = dir
                .to_string_lossy()
                .rsplit_once("codex-runner-")
                .unwrap()
                .1
                .to_owned();
            assert!(
                own.trim_end().ends_with(&relative),
                "{own} for {}",
                dir.display()
            );
            drop(turn);
            let _ = wait_blocking(&sleeper.pidfd);
            // Frozen: thrown away, not handed out.
            let frozen = kept();
            std::fs::write(frozen.join("cgroup.freeze"), "1").unwrap();
            let turn = containment.turn();
            assert_ne!(cgroup_dir(&turn), frozen);
            assert!(
                !frozen.exists(),
                "removed: an empty cgroup can go, frozen or not"
            );
        },
        "nothing to test",
    );
}

/// A turn's command (one running as root) may make cgroups inside the turn's:
/// they go with it, and the daemon's cgroup with them at exit.
#[test]
fn cgroups_made_inside_a_turns_cgroup_are_removed_with_it() {
    with_cgroups(
        |containment, _| {
            let mut turn = containment.turn();
            let sleeper = sleeper_in(&mut turn);
            let turn_dir = cgroup_dir(&turn);
            std::fs::create_dir_all(turn_dir.join("made-by-a-command/deeper")).unwrap();
            drop(turn);
            let _ = wait_blocking(&sleeper.pidfd);
            assert!(
                !turn_dir.exists(),
                "the turn's cgroup and those inside it are gone"
            );
        },
        "nothing to test",
    );
}

/// A turn that never reached `release` (its spawn failed, or it panicked):
/// dropping its container kills what runs in its cgroup and waits for it, so
/// that the cgroup is removed at once; one no process entered is kept.
#[test]
fn a_dropped_turn_container_leaves_no_process_and_no_busy_cgroup() {
    with_cgroups(
        |containment, root| {
            // Unused: back to the pool.
            drop(containment.turn());
            assert_eq!(containment.idle_cgroups(), 1);
            // In use: killed, waited for, removed.
            let mut turn = containment.turn();
            let sleeper = sleeper_in(&mut turn);
            drop(turn);
            // That was the kept one, taken again: killed, it went as the
            // drop returned, and is not kept.
            assert_eq!(turn_cgroups(root), Vec::<std::path::PathBuf>::new());
            assert_eq!(containment.idle_cgroups(), 0);
            let status = wait_blocking(&sleeper.pidfd);
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL)
            );
        },
        "the process-group path is tested end to end (tests/suite/panics.rs)",
    );
}
