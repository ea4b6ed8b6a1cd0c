//! Panics a test can inject into a debug build, to prove that a bug in one
//! part of the daemon still ends every run and leaves nothing behind.
//!
//! `CODEX_RUNNER_TEST_PANIC=<point>` makes the daemon panic at that point:
//! `turn-stop` (a turn, when it is asked to stop), and, each on a `status`
//! request, `dispatcher-status` (the dispatcher, decoding it),
//! `reader-status` (the stdin reader, reading it) and `writer-status` (the
//! stdout writer, writing the answer); and `spawner-second` (the spawner
//! thread, asked for its second codex). A release build compiles every point
//! to nothing, and every [`gate`] too.

/// Panics if the test asked for a panic at `point` and `here()` holds
/// (debug builds only; `here` is not called otherwise).
#[inline]
pub fn point_if(point: &str, here: impl FnOnce() -> bool) {
    #[cfg(debug_assertions)]
    if std::env::var_os("CODEX_RUNNER_TEST_PANIC").is_some_and(|wanted| wanted == point) && here() {
        panic!("injected fault: {point}");
    }
    #[cfg(not(debug_assertions))]
    let _ = (point, here);
}

/// Panics if the test asked for a panic at `point` (debug builds only).
#[inline]
pub fn point(point: &str) {
    point_if(point, || true);
}

/// Waits at `point` while a test holds it (debug builds only):
/// `CODEX_RUNNER_TEST_GATE=<point>:<fifo>` makes the daemon open that FIFO
/// there, which waits for the test to open its other end, and read it to
/// its end, which waits for the test to close it.
pub fn gate(point: &str) {
    #[cfg(debug_assertions)]
    if let Some(fifo) = std::env::var("CODEX_RUNNER_TEST_GATE")
        .ok()
        .and_then(|gate| Some(gate.strip_prefix(point)?.strip_prefix(':')?.to_owned()))
    {
        if let Ok(mut held) = std::fs::File::open(fifo) {
            let _ = std::io::Read::read_to_end(&mut held, &mut Vec::new());
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Whether `bytes` hold a `status` line (request or answer).
pub fn is_status(bytes: &[u8]) -> bool {
    bytes.windows(15).any(|w| w == br#""type":"status""#)
}
