//! Stopping a daemon whose [`Runner`](crate::Runner) was dropped.
//!
//! SIGKILL would leave what the daemon looks after behind: the commands and
//! MCP servers its codex processes started (only codex dies with the daemon),
//! and the turns' private homes with the request's secrets in them, until
//! some later daemon cleans up. So the daemon is asked to stop (SIGTERM: it
//! stops every turn, cleans up and exits), told again a moment later (a
//! second signal skips the turns' grace period), and SIGKILLed only if it is
//! still there after that.
//!
//! The daemon is reached through a pidfd taken when it was spawned, never by
//! its pid, which may belong to another process once it has been reaped.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Before the second SIGTERM.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// After it, before SIGKILL.
const SECOND_WAIT: Duration = Duration::from_secs(10);

/// The spawned daemon, by pidfd.
#[derive(Debug)]
pub(crate) struct DaemonProcess {
    pidfd: OwnedFd,
}

impl DaemonProcess {
    /// The process `pid`, which must be our unreaped child (just spawned).
    /// `None` where the kernel has no pidfds (before Linux 5.3).
    pub fn of_child(pid: u32) -> Option<DaemonProcess> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        (fd >= 0).then(|| DaemonProcess {
            // SAFETY: a fresh descriptor that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Stops the daemon as described above, on a thread of its own (a drop
    /// must not block, and may happen outside any runtime).
    pub fn stop_in_background(self) {
        if !self.signal(libc::SIGTERM) {
            return; // Already gone.
        }
        let _ = std::thread::Builder::new()
            .name("codex-runner-stop".into())
            .spawn(move || {
                if self.exited_within(FIRST_WAIT) || !self.signal(libc::SIGTERM) {
                    return;
                }
                if !self.exited_within(SECOND_WAIT) {
                    self.signal(libc::SIGKILL);
                }
            });
    }

    /// `false` if the process has exited.
    fn signal(&self, signal: i32) -> bool {
        // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        sent == 0
    }

    /// Whether the process exits within `wait` (a pidfd is readable once it
    /// has).
    fn exited_within(&self, wait: Duration) -> bool {
        let mut poll = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, ms) > 0 }
    }
}
