//! Descriptors the daemon inherited, kept from codex.
//!
//! Whatever the daemon's parent left open without close-on-exec (an
//! orchestrator's socket or log file, a shell's pipe) would pass on to every
//! codex and from there to the shell commands the model runs, as
//! `std::process` and our own spawn leave such descriptors alone. The daemon
//! needs none of them past its own stdio, so at start it marks every
//! descriptor above 2 close-on-exec: one system call, nothing per turn.

use std::io;

/// Marks every descriptor above stderr close-on-exec. Call it first thing,
/// before any other thread or child exists.
pub fn keep_from_children() -> io::Result<()> {
    // SAFETY: close_range (Linux 5.11) with CLOSE_RANGE_CLOEXEC closes
    // nothing; it only sets a flag on the descriptors in the range.
    let set = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if set == 0 {
        return Ok(());
    }
    one_by_one()
}

/// What older kernels need: each descriptor /proc lists, one at a time.
fn one_by_one() -> io::Result<()> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            fds.push(fd);
        }
    }
    for fd in fds.into_iter().filter(|&fd: &libc::c_int| fd > 2) {
        // SAFETY: fcntl on a descriptor number; one closed since it was
        // listed (the listing's own) fails with EBADF, which we skip.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn cloexec(fd: libc::c_int) -> bool {
        // SAFETY: F_GETFD on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    /// A copy of /dev/null without close-on-exec, as a parent would leave one.
    fn inherited(at_least: libc::c_int) -> libc::c_int {
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD makes a new descriptor without close-on-exec.
        let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, at_least) };
        assert!(fd >= at_least);
        assert!(!cloexec(fd));
        fd
    }

    /// One test, not two: each marks the whole test process's descriptors,
    /// which would race the other's check that its copy starts unmarked.
    #[test]
    fn an_inherited_descriptor_becomes_close_on_exec() {
        let fd = inherited(900);
        one_by_one().unwrap();
        assert!(cloexec(fd), "the /proc walk of older kernels");
        let again = inherited(900);
        keep_from_children().unwrap();
        assert!(cloexec(again));
        // SAFETY: closing the copies this test made.
        unsafe {
            libc::close(fd);
            libc::close(again);
        }
    }
}
