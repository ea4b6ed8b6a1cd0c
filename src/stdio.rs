//! The daemon's own stdin, stdout and stderr as it reads and writes them.
//!
//! A pipe or terminal on fd 0, 1 or 2 is reopened through `/proc/self/fd`:
//! a second open file description of the same object, whose `O_NONBLOCK`
//! is ours alone (setting it on fd 0, 1 or 2 would change the description
//! we share with our parent). A socket (what Node's child_process gives) is
//! used as it is, with `MSG_DONTWAIT` on every call. The runtime's epoll
//! then waits on stdin and stdout, where tokio's own stdin and stdout hand
//! every read and write to a thread of its blocking pool and back; stderr
//! is written at once when it takes the bytes (see [`crate::stderr`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// Stdin for the reader, read where the turns' pipes are (the runtime's
/// epoll) when it is a pipe (a second, non-blocking description of it) or a
/// socket (Node's child_process gives one: `recv` with `MSG_DONTWAIT`);
/// else (a file, a terminal) tokio's stdin, which reads on its blocking
/// pool.
pub fn stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    // SAFETY: fstat into a zeroed local.
    let kind = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut stat) == 0 {
            stat.st_mode & libc::S_IFMT
        } else {
            0
        }
    };
    let epolled: std::io::Result<Box<dyn AsyncRead + Unpin + Send>> = match kind {
        libc::S_IFIFO => reopen_nonblocking(0)
            .and_then(tokio::net::unix::pipe::Receiver::from_owned_fd)
            .map(|pipe| Box::new(pipe) as _),
        libc::S_IFSOCK => SocketStdin::new().map(|socket| Box::new(socket) as _),
        _ => Err(std::io::Error::other("neither a pipe nor a socket")),
    };
    match epolled {
        Ok(input) => {
            tracing::debug!(
                stdin = if kind == libc::S_IFIFO {
                    "pipe"
                } else {
                    "socket"
                },
                "reading stdin"
            );
            input
        }
        Err(e) => {
            tracing::debug!(stdin = "thread", why = %e, "reading stdin");
            Box::new(tokio::io::stdin())
        }
    }
}

/// A socket on fd 0, read without blocking through a duplicate of it
/// registered with the runtime. Only `recv` with `MSG_DONTWAIT` touches it:
/// the description's own flags, shared with our parent, stay as they are.
struct SocketStdin {
    fd: AsyncFd<OwnedFd>,
}

impl SocketStdin {
    fn new() -> std::io::Result<SocketStdin> {
        Ok(SocketStdin {
            fd: register_duplicate(0, Interest::READABLE)?,
        })
    }
}

impl AsyncRead for SocketStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut ready = std::task::ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let received = ready.try_io(|fd| {
                // SAFETY: receiving into a valid, writable slice.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        unfilled.as_mut_ptr().cast(),
                        unfilled.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match received {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: wait for the next edge.
                Err(_would_block) => {}
            }
        }
    }
}

/// fd 1 or 2, written without blocking the thread and without changing the
/// description we share with our parent.
pub(crate) struct NonBlockingOut {
    std_fd: RawFd,
    how: How,
}

enum How {
    /// A non-blocking description of the same pipe or terminal.
    Reopened(OwnedFd),
    /// A socket: `send(MSG_DONTWAIT)` on it.
    Socket,
    /// A regular file or a device that never blocks (`/dev/null`).
    Direct,
}

impl NonBlockingOut {
    /// For fd `std_fd` (1 or 2), or `None` if it is something else
    /// (a directory, say) that we leave to blocking writes.
    pub(crate) fn open(std_fd: RawFd) -> std::io::Result<Option<NonBlockingOut>> {
        // SAFETY: fstat into a zeroed local.
        let stat = unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(std_fd, &mut stat) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            stat
        };
        let how = match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => How::Direct,
            libc::S_IFIFO => How::Reopened(reopen_nonblocking(std_fd)?),
            // SAFETY: isatty has no preconditions.
            libc::S_IFCHR if unsafe { libc::isatty(std_fd) } == 1 => {
                How::Reopened(reopen_nonblocking(std_fd)?)
            }
            libc::S_IFCHR => How::Direct,
            libc::S_IFSOCK => How::Socket,
            _ => return Ok(None),
        };
        Ok(Some(NonBlockingOut { std_fd, how }))
    }

    /// The fd to wait on until it takes bytes again (`None` if it never
    /// blocks).
    pub(crate) fn pollable(&self) -> Option<RawFd> {
        match &self.how {
            How::Reopened(fd) => Some(fd.as_raw_fd()),
            How::Socket => Some(self.std_fd),
            How::Direct => None,
        }
    }

    /// One write attempt; `WouldBlock` when the pipe is full.
    pub(crate) fn write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = match &self.how {
            // SAFETY: writing from a valid slice to an open fd.
            How::Reopened(fd) => unsafe {
                libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len())
            },
            // SAFETY: as above.
            How::Socket => unsafe {
                libc::send(
                    self.std_fd,
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            },
            // SAFETY: as above.
            How::Direct => unsafe { libc::write(self.std_fd, bytes.as_ptr().cast(), bytes.len()) },
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes all of `bytes`, sleeping in `poll(2)` while the fd is full.
    pub(crate) fn write_all_waiting(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        let fd = self.pollable().unwrap_or(self.std_fd);
        while !bytes.is_empty() {
            match self.write(bytes) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut poll = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd. Errors (EINTR) just retry.
                    unsafe { libc::poll(&mut poll, 1, -1) };
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A new, non-blocking open file description of what fd 0 (read), 1 or 2
/// (write) is, through `/proc/self/fd`: for pipes and terminals, a second
/// description of the same object, whose flags are ours alone.
pub(crate) fn reopen_nonblocking(std_fd: RawFd) -> std::io::Result<OwnedFd> {
    let (path, access) = match std_fd {
        0 => (c"/proc/self/fd/0", libc::O_RDONLY),
        1 => (c"/proc/self/fd/1", libc::O_WRONLY),
        2 => (c"/proc/self/fd/2", libc::O_WRONLY),
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

/// A duplicate of `fd` registered with the runtime for `interest`: epoll
/// then reports on the description `fd` shares, while `fd` itself stays as
/// it is (our parent may share it).
pub(crate) fn register_duplicate(
    fd: RawFd,
    interest: Interest,
) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: fcntl on an open fd; the result is owned below.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: an OwnedFd stays open, and the same fd, until dropped.
    unsafe { AsyncFd::register_with_interest(dup, interest) }.map_err(std::io::Error::from)
}
