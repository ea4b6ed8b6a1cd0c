//! Output the way the real CLI does it, plus the env knobs.
//!
//! Each stdout line is built whole (with its '\n') and handed to write(2) at once, so a
//! reader never sees a line torn between two writes unless the pipe itself splits it
//! (a pipe takes at most its buffer size per call; then we loop on the remainder).

use std::io;

/// Writes `buf` to `fd`, retrying on EINTR and on partial writes.
fn write_fd(fd: i32, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid, initialised slice for the duration of the call.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Writes raw bytes to stdout. Rust ignores SIGPIPE, so a vanished reader shows up as
/// EPIPE (or EBADF once `close_stdout` closed fd 1): exit quietly with 0 then, since
/// there is no one left to tell.
pub fn raw(buf: &[u8]) {
    if write_fd(1, buf).is_err() {
        std::process::exit(0);
    }
}

/// One stdout line, one write(2).
pub fn line(text: &str) {
    let mut buf = Vec::with_capacity(text.len() + 1);
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
    raw(&buf);
}

/// One stderr line, one write(2); errors are ignored (stderr may be closed).
pub fn err_line(text: &str) {
    let _ = write_fd(2, format!("{text}\n").as_bytes());
}

/// Prints `msg` to stderr and exits with `code`.
pub fn die(code: i32, msg: &str) -> ! {
    err_line(msg);
    std::process::exit(code)
}

/// A numeric env knob; unset or unparsable means `default`.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// `FAKE_CODEX_EXIT_CODE` for the scenarios that honour it.
pub fn exit_code(default: i32) -> i32 {
    std::env::var("FAKE_CODEX_EXIT_CODE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Sleeps `ms` milliseconds (no-op for 0).
pub fn sleep_ms(ms: u64) {
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
