//! The daemon's own stdin and stdout as the runtime reads and writes them.
//!
//! A pipe or terminal on fd 0 or 1 is reopened through `/proc/self/fd`: a
//! second open file description of the same object, whose `O_NONBLOCK` is
//! ours alone (setting it on fd 0 or 1 would change the description we
//! share with our parent). The runtime's epoll then waits on it, where
//! tokio's own stdin and stdout hand every read and write to a thread of
//! its blocking pool and back.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Stdin for the reader: a pipe through the runtime's epoll (a second,
/// non-blocking description of it), else tokio's stdin, which reads on its
/// blocking pool.
pub fn stdin() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    // SAFETY: fstat into a zeroed local.
    let fifo = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(0, &mut stat) == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFIFO
    };
    if fifo {
        match reopen_nonblocking(0).and_then(tokio::net::unix::pipe::Receiver::from_owned_fd) {
            Ok(pipe) => return Box::new(pipe),
            Err(e) => tracing::debug!(error = %e, "stdin is read on a thread"),
        }
    }
    Box::new(tokio::io::stdin())
}

/// A new, non-blocking open file description of what fd 0 (read) or 1
/// (write) is, through `/proc/self/fd`: for pipes and terminals, a second
/// description of the same object, whose flags are ours alone.
pub(crate) fn reopen_nonblocking(std_fd: RawFd) -> std::io::Result<OwnedFd> {
    let (path, access) = match std_fd {
        0 => (c"/proc/self/fd/0", libc::O_RDONLY),
        1 => (c"/proc/self/fd/1", libc::O_WRONLY),
        _ => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    };
    // SAFETY: a valid C string; the result is owned below.
    let fd: RawFd = unsafe {
        libc::open(
            path.as_ptr(),
            access | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The new description must be the same object as the std fd.
    // SAFETY: fstat into zeroed locals.
    let same = unsafe {
        let mut a: libc::stat = std::mem::zeroed();
        let mut b: libc::stat = std::mem::zeroed();
        libc::fstat(std_fd, &mut a) == 0
            && libc::fstat(fd.as_raw_fd(), &mut b) == 0
            && a.st_dev == b.st_dev
            && a.st_ino == b.st_ino
    };
    if !same {
        return Err(std::io::Error::other(format!(
            "/proc/self/fd/{std_fd} is not fd {std_fd}"
        )));
    }
    Ok(fd)
}
