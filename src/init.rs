//! The daemon as a container's first process.
//!
//! As a container's entrypoint the daemon is PID 1 of its PID namespace,
//! and every orphan in it is reparented to it: the login shell codex starts
//! for its shell snapshot and does not wait for, what a killed turn's codex
//! leaves behind. Nothing reaped them, and each stayed a zombie for the
//! life of the container, a slot of its pid limit gone per turn. Reaping
//! them from the daemon would race its own children's reaping (through
//! pidfds, and std's for the database templates' codex), so instead, as
//! tini does, PID 1 forks: the child is the daemon, and PID 1 only reaps
//! whatever is reparented to it, passes the signals a container gets on to
//! the daemon, and exits as the daemon did.

/// The signals PID 1 passes on to the daemon.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// If this process is PID 1, forks: returns `true` in the child, which goes
/// on as the daemon, and never returns in PID 1. Returns `false` (and does
/// nothing) otherwise. Call it first thing, while there is one thread.
pub fn split_if_pid1() -> bool {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return false;
    }
    // SAFETY: signal-set and mask calls on locals; fork while this is the
    // only thread; the child returns to ordinary Rust, PID 1 only makes
    // async-signal-safe calls until it exits.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for signal in FORWARDED {
            libc::sigaddset(&mut set, signal);
        }
        // Blocked before the fork, so that none sent in between is lost:
        // PID 1 takes them with sigwaitinfo, the daemon unblocks them.
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        match libc::fork() {
            0 => {
                libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                true
            }
            -1 => {
                // Then the daemon stays PID 1, without a reaper.
                libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
                false
            }
            daemon => reap_and_forward(daemon, &set),
        }
    }
}

/// PID 1's loop: reaps every child, passes signals on, and exits with the
/// daemon's status once it has exited.
///
/// # Safety
/// In PID 1 right after the fork, with `set` blocked.
unsafe fn reap_and_forward(daemon: libc::pid_t, set: &libc::sigset_t) -> ! {
    // Its copies of the standard streams would hold the daemon's pipes
    // open after the daemon has closed them.
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null >= 0 {
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    loop {
        let signal = libc::sigwaitinfo(set, std::ptr::null_mut());
        if signal == libc::SIGCHLD {
            loop {
                let mut status = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid <= 0 {
                    break;
                }
                if pid == daemon {
                    // The rest of the namespace dies with PID 1.
                    libc::_exit(if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        libc::WEXITSTATUS(status)
                    });
                }
            }
        } else if signal > 0 {
            libc::kill(daemon, signal);
        }
    }
}
