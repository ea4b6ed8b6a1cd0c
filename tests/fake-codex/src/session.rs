//! Thread ids and rollout files under `$CODEX_HOME/sessions/`, laid out like the real
//! CLI's, so a test can exercise resume (and resume of an unknown id) end to end.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The thread this process runs a turn of.
pub struct Session {
    pub thread_id: String,
    /// 1-based turn number: lines in the rollout after appending this turn's line.
    pub turn: u64,
}

/// `$CODEX_HOME`, else `$HOME/.codex` (the real CLI's default).
pub fn codex_home() -> PathBuf {
    match std::env::var_os("CODEX_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".codex"),
    }
}

/// Starts a new thread: creates `sessions/YYYY/MM/DD/rollout-<ts>-<uuid>.jsonl`.
pub fn start(home: &Path, prompt: &str) -> io::Result<Session> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let thread_id = new_thread_id(now.as_millis() as u64, now.subsec_nanos());
    let secs = now.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (tod / 3600, tod / 60 % 60, tod % 60);
    let dir = home.join(format!("sessions/{y:04}/{m:02}/{d:02}"));
    fs::create_dir_all(&dir)?;
    let name = format!("rollout-{y:04}-{m:02}-{d:02}T{hh:02}-{mm:02}-{ss:02}-{thread_id}.jsonl");
    let turn = append_turn(&dir.join(name), prompt)?;
    Ok(Session { thread_id, turn })
}

/// Resumes `id`: `Ok(None)` when no rollout file name under `sessions/` contains it.
pub fn resume(home: &Path, id: &str, prompt: &str) -> io::Result<Option<Session>> {
    let Some(path) = find_rollout(&home.join("sessions"), id) else {
        return Ok(None);
    };
    let turn = append_turn(&path, prompt)?;
    Ok(Some(Session {
        thread_id: id.to_string(),
        turn,
    }))
}

/// Depth-first search for a file whose name contains `id` (the real CLI's fallback
/// when it has no state DB). A missing directory simply finds nothing.
fn find_rollout(dir: &Path, id: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let ft = entry.file_type().ok()?;
        if ft.is_dir() {
            if let Some(found) = find_rollout(&path, id) {
                return Some(found);
            }
        } else if entry.file_name().to_string_lossy().contains(id) {
            return Some(path);
        }
    }
    None
}

/// Appends `{"prompt": ...}` with one O_APPEND write, then counts the file's lines.
fn append_turn(path: &Path, prompt: &str) -> io::Result<u64> {
    let line = format!("{}\n", serde_json::json!({ "prompt": prompt }));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())?;
    let text = fs::read(path)?;
    Ok(text.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// A uuid-v7-looking id: unix ms up front (so ids sort by time, like the real ones),
/// then sub-ms nanos, pid and a counter so that concurrent fakes never collide.
fn new_thread_id(ms: u64, nanos: u32) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let rand_a = ((nanos % 1_000_000) >> 8) as u16;
    let rand_b = (u64::from(std::process::id()) << 20) | (n & 0xf_ffff);
    format_uuid_v7(ms, rand_a, rand_b)
}

/// Formats 48 bits of `ms`, 12 bits of `rand_a` and 62 bits of `rand_b` as an RFC 9562
/// version-7 uuid (`xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx`).
pub fn format_uuid_v7(ms: u64, rand_a: u16, rand_b: u64) -> String {
    let ms = ms & 0xffff_ffff_ffff;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        0x7000 | (rand_a & 0x0fff),
        0x8000 | ((rand_b >> 48) & 0x3fff),
        rand_b & 0xffff_ffff_ffff
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, so we need no date crate.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_453), (2025, 12, 31));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn uuid_layout() {
        let u = format_uuid_v7(0x0190_1234_5678, 0xabc, 0x3fff_0000_0000_0001);
        assert_eq!(u, "01901234-5678-7abc-bfff-000000000001");
        let u = format_uuid_v7(1, 0xffff, u64::MAX);
        assert_eq!(u, "00000000-0001-7fff-bfff-ffffffffffff");
        let id = new_thread_id(1_700_000_000_000, 123_456_789);
        let parts: Vec<_> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "7");
        assert_ne!(
            id,
            new_thread_id(1_700_000_000_000, 123_456_789),
            "counter differs"
        );
    }

    #[test]
    fn start_then_resume_counts_turns() {
        let home = std::env::temp_dir().join(format!("fake-codex-test-{}", std::process::id()));
        let s = start(&home, "one").unwrap();
        assert_eq!(s.turn, 1);
        let r = resume(&home, &s.thread_id, "two").unwrap().unwrap();
        assert_eq!((r.thread_id.as_str(), r.turn), (s.thread_id.as_str(), 2));
        assert!(resume(&home, "0190ffff-0000-7000-8000-000000000000", "x")
            .unwrap()
            .is_none());
        fs::remove_dir_all(&home).unwrap();
    }
}
