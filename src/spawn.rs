//! Starting a process the cheap way: `clone(CLONE_VM | CLONE_VFORK)`, as
//! `posix_spawn` does, with the two steps `posix_spawn` has no hook for.
//!
//! `std::process::Command` with a `pre_exec` closure uses `fork`, which copies
//! the daemon's page tables for every turn and leaves the daemon taking
//! copy-on-write faults on its own heap until the child has `exec`ed: in the
//! benchmarks that was a third of the daemon's CPU per turn. Here the child
//! borrows the daemon's memory (the daemon's thread is suspended until the
//! child `exec`s or exits) and runs a small function on a stack of its own
//! that only makes system calls:
//!
//! - resets every signal handler to the default and unblocks all signals (a
//!   handler running in the child would run on the daemon's memory; `SIGPIPE`,
//!   which Rust ignores, goes back to the default as `Command` does);
//! - starts a new process group (`setpgid(0, 0)`);
//! - joins the turn's cgroup when `clone3(CLONE_INTO_CGROUP)` could not put it
//!   there at birth (writing `cgroup.procs` takes the cgroup threadgroup lock
//!   for writing, which waits for an RCU grace period after an idle spell);
//! - sets `PR_SET_PDEATHSIG` to SIGKILL, and dies if the daemon already did;
//! - moves the three pipes onto fds 0, 1 and 2 and `execve`s.
//!
//! The child reports an `execve` failure through the shared memory. The
//! daemon gets a pidfd for the child (`CLONE_PIDFD`), to wait for it without
//! SIGCHLD and to reap it by that fd alone.

use std::ffi::{c_int, c_void, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The child's stack: enough for the small function below and the kernel's
/// signal frame, should a signal arrive before `execve`.
const CHILD_STACK: usize = 64 * 1024;

/// What to start.
pub struct Program {
    path: CString,
    /// `argv` and `envp` as the kernel wants them: pointers into `strings`
    /// and `base`, each list ended by a null pointer.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    _strings: Vec<CString>,
    _base: Option<Arc<Vec<CString>>>,
    /// The open-files limit to set before `exec`, if not the daemon's own.
    nofile: Option<libc::rlimit>,
    /// What the child reads as its stdin, if the caller made it (see
    /// [`Program::stdin_from`]); else a new pipe.
    stdin: Option<OwnedFd>,
}

// SAFETY: the raw pointers point into `_strings` and `_base`, owned (or
// shared, immutably) by the same value and never mutated; moving the value
// moves the `CString`s' heap buffers by pointer only.
unsafe impl Send for Program {}

impl Program {
    /// `path` with `args` (without `argv[0]`, which is `path`) and exactly the
    /// environment `env`. Fails on a NUL byte in any of them.
    pub fn new(
        path: &std::path::Path,
        args: impl IntoIterator<Item = std::ffi::OsString>,
        env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> io::Result<Program> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let nul = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} contains a NUL byte"),
            )
        };
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| nul("the program"))?;
        let mut strings = vec![path.clone()];
        for arg in args {
            strings.push(CString::new(arg.into_vec()).map_err(|_| nul("an argument"))?);
        }
        let argc = strings.len();
        for (key, value) in env {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            strings.push(CString::new(entry).map_err(|_| nul("an environment variable"))?);
        }
        let pointers = |list: &[CString]| {
            let mut v: Vec<*const libc::c_char> = list.iter().map(|s| s.as_ptr()).collect();
            v.push(std::ptr::null());
            v
        };
        Ok(Program {
            argv: pointers(&strings[..argc]),
            envp: pointers(&strings[argc..]),
            path,
            _strings: strings,
            _base: None,
            nofile: None,
            stdin: None,
        })
    }

    /// As [`new`](Self::new), with the environment `base` (`KEY=value`
    /// entries, shared between programs and built once) overridden and
    /// extended by `env`: no copy of the base entries per program.
    pub fn with_base_env(
        path: &std::path::Path,
        args: impl IntoIterator<Item = std::ffi::OsString>,
        base: &Arc<Vec<CString>>,
        env_overrides: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> io::Result<Program> {
        use std::os::unix::ffi::OsStrExt;
        // A key given twice: the later value wins, in its place.
        let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = Vec::new();
        for (key, value) in env_overrides {
            match env.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => env.push((key, value)),
            }
        }
        let mut program = Program::new(path, args, env.iter().cloned())?;
        let overridden = |entry: &CString| {
            let entry = entry.as_bytes();
            env.iter().any(|(key, _)| {
                let key = key.as_bytes();
                entry.len() > key.len() && entry[key.len()] == b'=' && entry.starts_with(key)
            })
        };
        let own = std::mem::take(&mut program.envp);
        program.envp = base
            .iter()
            .filter(|entry| !overridden(entry))
            .map(|entry| entry.as_ptr())
            .chain(own)
            .collect();
        program._base = Some(base.clone());
        Ok(program)
    }

    /// Starts the program with the open-files limit `limit` rather than the
    /// daemon's (which [`crate::fd_limit::raise`] may have raised). Best
    /// effort: should setting it fail, the program keeps the daemon's.
    pub fn restore_nofile(&mut self, limit: Option<libc::rlimit>) {
        self.nofile = limit;
    }

    /// Starts the program with `fd` as its stdin (typically the read end of
    /// a [`pipe`] the caller has already written the input to) instead of a
    /// new pipe: [`Spawned::stdin`] is then `None`.
    pub fn stdin_from(&mut self, fd: OwnedFd) {
        self.stdin = Some(fd);
    }
}

/// `KEY=value` entries for [`Program::with_base_env`] (those with a NUL
/// byte, which no real environment has, are left out).
pub fn env_entries(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<CString> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    vars.into_iter()
        .filter_map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect()
}

/// A started child: its pid, a pidfd for it, and our ends of its stdin
/// (unless the program brought its own), stdout and stderr (non-blocking,
/// close-on-exec; the child's ends block).
#[derive(Debug)]
pub struct Spawned {
    /// The child's pid (also its process group id).
    pub pid: u32,
    /// Refers to the child until it is reaped through it.
    pub pidfd: OwnedFd,
    /// Write end of the child's stdin; `None` if the program was given one
    /// ([`Program::stdin_from`]).
    pub stdin: Option<OwnedFd>,
    /// Read end of the child's stdout.
    pub stdout: OwnedFd,
    /// Read end of the child's stderr.
    pub stderr: OwnedFd,
    /// Whether the child was born in the cgroup asked for (else it tried to
    /// join it itself, which may have failed).
    pub born_in_cgroup: bool,
}

impl Spawned {
    /// For a child nobody will watch: SIGKILL to its process group, then
    /// reap it (blocking: it is dead or dying).
    pub fn kill_and_reap(self) {
        // SAFETY: signalling our own, unreaped child's group.
        unsafe { libc::killpg(self.pid as libc::pid_t, libc::SIGKILL) };
        let _ = reap(&self.pidfd, Wait::Block);
    }
}

/// Whether [`reap`] waits for the child to exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Until it exits.
    Block,
    /// Not at all: `None` if it is still running.
    Poll,
}

/// Reaps the child behind `pidfd` (ours, not yet reaped): its exit status,
/// or `None` if it is still running and `wait` is [`Wait::Poll`].
pub fn reap(pidfd: &OwnedFd, wait: Wait) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let flags = match wait {
        Wait::Block => libc::WEXITED,
        Wait::Poll => libc::WEXITED | libc::WNOHANG,
    };
    // SAFETY: siginfo_t is plain data, filled by waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own pidfd into a local siginfo_t.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful waitid, si_pid and si_status are set (si_pid
    // stays 0 when a WNOHANG wait found the child still running).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    // Back to the wait(2) status encoding ExitStatus is built from.
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => status | 0x80,
        _ => status,
    };
    Ok(Some(std::process::ExitStatus::from_raw(raw)))
}

/// What the child reads and writes: it lives on the daemon's stack, shared
/// with the child through `CLONE_VM`, and outlives the child's use of it
/// because the daemon's thread is suspended until the child `exec`s or exits.
#[repr(C)]
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// The cgroup directory to join by writing `cgroup.procs`, or -1.
    join_cgroup: RawFd,
    /// The open-files limit to set, if any.
    nofile: Option<libc::rlimit>,
    /// The daemon's pid, to notice that it died before `PR_SET_PDEATHSIG`.
    parent: libc::pid_t,
    /// Set by the child: the errno of the step that failed.
    errno: c_int,
    /// Set by the child: which step failed, one of the `STEP_*` numbers.
    step: c_int,
}

/// The child's steps before `execve`, named for the parent's error.
const STEP_EXEC: c_int = 0;
const STEP_PROCESS_GROUP: c_int = 1;
const STEP_CGROUP: c_int = 2;
const STEP_PARENT_DEATH_SIGNAL: c_int = 3;
const STEP_STREAMS: c_int = 4;

/// A step before `execve` failed in the child: the executable was never
/// tried, so its path is not what to blame.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed")]
pub struct SetupFailed {
    /// What the child was doing, in words.
    pub step: &'static str,
    /// The system's error.
    #[source]
    pub source: io::Error,
}

/// The error for the child's failed `step` with `errno`: the bare OS error
/// for `execve`, which the caller tells apart by kind (not found, not
/// runnable, too large), else a [`SetupFailed`] in an error of the same kind.
fn child_error(step: c_int, errno: c_int) -> io::Error {
    let source = io::Error::from_raw_os_error(errno);
    let step = match step {
        STEP_PROCESS_GROUP => "putting codex in a process group of its own",
        STEP_CGROUP => "moving codex into the turn's cgroup",
        STEP_PARENT_DEATH_SIGNAL => "arming codex's parent-death signal",
        STEP_STREAMS => "attaching codex's standard streams",
        _ => return source,
    };
    io::Error::new(source.kind(), SetupFailed { step, source })
}

/// Starts `program` in a new process group, with its three standard streams
/// piped, a parent-death signal, and, given `cgroup` (an open cgroup2
/// directory), in that cgroup.
pub fn spawn(program: &mut Program, cgroup: Option<RawFd>) -> io::Result<Spawned> {
    spawn_with(program, cgroup, Syscall::Clone3)
}

/// Which system call starts the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syscall {
    /// `clone3`, falling back to `clone` where it is missing or cannot
    /// start the child in the cgroup.
    Clone3,
    /// `clone` only (the fallback, on its own for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Clone,
}

fn spawn_with(
    program: &mut Program,
    cgroup: Option<RawFd>,
    syscall: Syscall,
) -> io::Result<Spawned> {
    // The child's end of its stdin: the one the program brought, or a new
    // pipe's (then ours is the other end). Like the other child ends it is
    // closed here once the child has it.
    let (stdin_child, stdin) = match program.stdin.take() {
        Some(child) => (child, None),
        None => {
            let (child, ours) = pipe()?;
            set_nonblocking(&ours)?;
            (child, Some(ours))
        }
    };
    let (stdout, stdout_child) = pipe()?;
    let (stderr, stderr_child) = pipe()?;
    for ours in [&stdout, &stderr] {
        set_nonblocking(ours)?;
    }
    let mut args = ChildArgs {
        path: program.path.as_ptr(),
        argv: program.argv.as_ptr(),
        envp: program.envp.as_ptr(),
        stdin: stdin_child.as_raw_fd(),
        stdout: stdout_child.as_raw_fd(),
        stderr: stderr_child.as_raw_fd(),
        join_cgroup: -1,
        nofile: program.nofile,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        errno: 0,
        step: STEP_EXEC,
    };
    let (pid, pidfd, born_in_cgroup) = Stack::with_ours(|stack| {
        let _blocked = BlockSignals::new();
        clone_child(&mut args, stack, cgroup, syscall)
    })??;
    // Our copies of the child's ends must go, or we would never see EOF.
    drop((stdin_child, stdout_child, stderr_child));
    if args.errno != 0 {
        // The child exited without exec: reap it so it is not left a zombie.
        let _ = reap(&pidfd, Wait::Block);
        return Err(child_error(args.step, args.errno));
    }
    Ok(Spawned {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr,
        born_in_cgroup,
    })
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets O_NONBLOCK on one end of a pipe (its only status flag, so no need
/// to read them first).
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clones the child, in the cgroup if the kernel can do it at birth, else
/// with the child joining it. Returns (pid, pidfd, born in the cgroup).
fn clone_child(
    args: &mut ChildArgs,
    stack: &Stack,
    cgroup: Option<RawFd>,
    syscall: Syscall,
) -> io::Result<(u32, OwnedFd, bool)> {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = syscall;
    #[cfg(target_arch = "x86_64")]
    if syscall == Syscall::Clone3 {
        match clone3(args, stack, cgroup) {
            Ok((pid, pidfd)) => return Ok((pid, pidfd, cgroup.is_some())),
            // No clone3 (old kernels; container seccomp profiles answer
            // ENOSYS to make libcs fall back), or not into this cgroup.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) || cgroup.is_some() => {}
            Err(e) => return Err(e),
        }
    }
    args.join_cgroup = cgroup.unwrap_or(-1);
    let mut pidfd: c_int = -1;
    // SAFETY: the stack is ours and unused; `child_main` only makes system
    // calls and reads `args`, which outlives the child's use of it (the
    // parent is suspended until the child execs or exits); the kernel
    // stores the pidfd in `pidfd` (CLONE_PIDFD with clone(2)).
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (args as *mut ChildArgs).cast::<c_void>(),
            &mut pidfd as *mut c_int,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this fd for us.
    Ok((pid as u32, unsafe { OwnedFd::from_raw_fd(pidfd) }, false))
}

/// libc's own constant is an `int`, too narrow for this bit.
#[cfg(target_arch = "x86_64")]
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `clone3(2)`, up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[cfg(target_arch = "x86_64")]
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3` with `CLONE_VM | CLONE_VFORK | CLONE_PIDFD` (and
/// `CLONE_INTO_CGROUP`), the child running `child_main(args)` on `stack`.
///
/// There is no libc wrapper for clone3, and a raw `syscall()` cannot be used
/// with CLONE_VM: the child would return into the caller's frame on a new
/// stack. So the child's side is in assembly, as in libcs: it calls
/// `child_main` and exits with its return value without ever returning.
#[cfg(target_arch = "x86_64")]
fn clone3(
    args: &mut ChildArgs,
    stack: &Stack,
    cgroup: Option<RawFd>,
) -> io::Result<(u32, OwnedFd)> {
    let mut pidfd: c_int = -1;
    let mut flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64;
    if cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    let mut clone_args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.base as u64,
        stack_size: stack.size as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.unwrap_or(0) as u64,
    };
    let entry: extern "C" fn(*mut c_void) -> c_int = child_main;
    let ret: isize;
    // SAFETY: the parent's side is a plain syscall (rcx, r11 clobbered). The
    // child's side starts on `stack` (16-byte aligned top, so the `call`
    // leaves it as the ABI expects), with every register as the parent had
    // it: r12 and r13 carry the entry point and its argument. It never
    // returns: `child_main` ends in execve or _exit, and the exit syscall
    // follows in case it returns anyway.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, 60",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") &mut clone_args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") (args as *mut ChildArgs).cast::<c_void>(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    // SAFETY: the kernel just created this fd for us.
    Ok((ret as u32, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child, between clone and exec. It shares the daemon's memory, so it
/// makes system calls only: no allocation, no locks, no panics.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive until we exec or exit.
    let args = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: system calls on our own fds, memory and signal dispositions.
    unsafe {
        reset_signal_handlers();
        if libc::setpgid(0, 0) != 0 {
            return fail(args, STEP_PROCESS_GROUP);
        }
        if args.join_cgroup >= 0 {
            // A turn that is not in its cgroup would be stopped through its
            // process group alone, and its cgroup read as empty while its
            // commands run on: better no turn than an uncontained one.
            let procs = libc::openat(
                args.join_cgroup,
                c"cgroup.procs".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if procs < 0 || libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                return fail(args, STEP_CGROUP);
            }
            libc::close(procs);
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return fail(args, STEP_PARENT_DEATH_SIGNAL);
        }
        if libc::getppid() != args.parent {
            // The daemon died before the parent-death signal was armed.
            libc::_exit(127);
        }
        for (fd, target) in [(args.stdin, 0), (args.stdout, 1), (args.stderr, 2)] {
            if libc::dup2(fd, target) < 0 {
                return fail(args, STEP_STREAMS);
            }
        }
        if let Some(limit) = &args.nofile {
            // Best effort: the daemon's higher limit harms nobody.
            libc::setrlimit(libc::RLIMIT_NOFILE, limit);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.path, args.argv, args.envp);
        fail(args, STEP_EXEC)
    }
}

/// Records errno for the parent and exits.
///
/// # Safety
/// Only in the child.
unsafe fn fail(args: &mut ChildArgs, step: c_int) -> c_int {
    args.errno = *libc::__errno_location();
    args.step = step;
    if args.errno == 0 {
        args.errno = libc::EIO;
    }
    libc::_exit(127)
}

/// Sets every signal that has a handler, and SIGPIPE, to its default action.
///
/// # Safety
/// Only in the child, with all signals blocked.
unsafe fn reset_signal_handlers() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
            continue;
        }
        let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
        if handled || signal == libc::SIGPIPE {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
    }
}

/// The child's stack, unmapped on drop (after the child is done with it).
///
/// Each thread keeps one and lends it to every child it clones: a vfork
/// child is done with it when `clone` returns (it has `exec`ed, and so has a
/// memory of its own, or exited), and the thread clones one child at a time.
/// A new mapping per spawn cost an `mmap`, a `munmap` and the child's page
/// faults on it, about 3% of the daemon's CPU at 64 concurrent turns.
struct Stack {
    base: *mut c_void,
    size: usize,
}

thread_local! {
    static STACK: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

impl Stack {
    /// Runs `f` with this thread's child stack, mapping it on first use.
    fn with_ours<T>(f: impl FnOnce(&Stack) -> T) -> io::Result<T> {
        STACK.with(|cell| {
            let mut ours = cell.borrow_mut();
            if ours.is_none() {
                *ours = Some(Stack::new()?);
            }
            Ok(f(ours.as_ref().expect("mapped just above")))
        })
    }

    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh private anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Stack {
            base,
            size: CHILD_STACK,
        })
    }

    /// The highest address (stacks grow down), page-aligned.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping.
        unsafe { self.base.cast::<u8>().add(self.size).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used (the child has exec'ed or
        // exited: CLONE_VFORK returned).
        unsafe { libc::munmap(self.base, self.size) };
    }
}

/// Blocks every signal in this thread for its lifetime, so that no handler
/// runs in the child while it still shares our memory.
struct BlockSignals {
    old: libc::sigset_t,
}

impl BlockSignals {
    fn new() -> BlockSignals {
        // SAFETY: sigset_t is plain data; pthread_sigmask fills `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            BlockSignals { old }
        }
    }
}

impl Drop for BlockSignals {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod tests;
