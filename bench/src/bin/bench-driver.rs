//! The codex-runner entry of the anchors' matrix (`run_all.sh`'s `EXTRA_CMD`):
//! `bench-driver K`, with the anchors' env, prints the anchors' JSON result
//! line last on stderr.
//!
//! It starts one daemon (`$CODEX_RUNNER --codex-bin $FAKE_CODEX
//! --max-concurrent K --codex-home <a base home> $BENCH_DAEMON_ARGS`), whose
//! environment (FAKE_EVENTS, FAKE_PAYLOAD, FAKE_DELAY_US) every fake codex
//! inherits, waits until it blocks reading stdin, then per batch writes K run
//! requests at once and reads stdout until each run's `end`. `ROUNDS=R` > 1:
//! R batches, the first not counted (a warm process), as the anchors do.
//!
//! Columns, matched to the anchors: wall = first request written to last
//! `end` read; latency = a run's request written to its `end` read (the
//! anchors stop at the last event: this includes reaping and removing the
//! turn's dir); ttfe = request written to its first event; cpu = user+sys of
//! the daemon process alone (not codex, not this driver) over the same window;
//! RSS = the daemon's VmHWM. Also `lat_last_p50_ms` (to the last event, as the
//! anchors), `errors` (runs whose `end` was not `ok`), and the daemon's
//! minor page faults (`minflt`) and context switches (`switches`, every
//! thread's) over the window, to tell a batch's costs apart.
//!
//! `BENCH_PERF_CONTROL=<fifo>`: the control FIFO of a `perf record
//! --control fifo:<fifo> -D -1` wrapped around the daemon, switched on and
//! off at the window's edges (see bench/notes.md).
//!
//! The daemon's base home (`--codex-home`) is `$BENCH_HOME` (kept across
//! runs, as a user's is), else a new one per run; it holds a config.toml with
//! comments, settings and two MCP servers, an auth.json, `sessions/` and
//! `thread-writer-locks/`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use codex_runner_bench::{
    classify, env_or, faults_and_switches, pct, write_base_home, Daemon, Line, BASE_CONFIG,
};

#[derive(Clone, Copy, Default)]
struct Turn {
    sent: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    end: Option<Instant>,
    events: u64,
}

fn main() {
    let k: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let rounds: usize = env_or("ROUNDS", 1usize).max(1);
    let runner =
        PathBuf::from(std::env::var_os("CODEX_RUNNER").expect("CODEX_RUNNER: the daemon binary"));
    let codex = std::env::var_os("FAKE_CODEX").expect("FAKE_CODEX: the codex binary to run");
    let name = std::env::var("BENCH_NAME").unwrap_or_else(|_| "codex-runner".into());
    let params =
        std::env::var("BENCH_PARAMS").unwrap_or_else(|_| r#"{"prompt":"say hello"}"#.into());

    let scratch = std::env::temp_dir().join(format!("codex-runner-bench-{}", std::process::id()));
    // BENCH_HOME: a base home kept across runs (so it is as settled as a
    // user's); else a new one per run.
    let home = match std::env::var_os("BENCH_HOME") {
        Some(home) => PathBuf::from(home),
        None => scratch.join("home"),
    };
    write_base_home(&home, BASE_CONFIG).expect("write the base home");
    let mut args: Vec<OsString> = vec![
        "--codex-bin".into(),
        codex,
        "--codex-home".into(),
        home.into(),
        "--max-concurrent".into(),
        k.to_string().into(),
    ];
    if let Ok(extra) = std::env::var("BENCH_DAEMON_ARGS") {
        args.extend(extra.split_whitespace().map(OsString::from));
    }
    let env = [(
        "RUST_LOG".to_owned(),
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    )];
    let mut daemon = Daemon::start(&runner, &args, &env).expect("start codex-runner");
    daemon.wait_ready(std::time::Duration::from_secs(5));

    let counted_from = if rounds > 1 { 1 } else { 0 };
    let mut turns = vec![Turn::default(); k * rounds];
    let mut errors = 0u64;
    let mut other_lines = 0u64;
    let (mut t0, mut c0) = (Instant::now(), daemon.cpu_s());
    let mut fs0 = (0, 0);
    for round in 0..rounds {
        if round == counted_from {
            fs0 = faults_and_switches(daemon.pid());
            perf_control(b"enable\n");
            t0 = Instant::now();
            c0 = daemon.cpu_s();
        }
        let base = round * k;
        let mut batch = String::with_capacity(k * (40 + params.len()));
        for i in 0..k {
            batch.push_str(&format!(
                "{{\"type\":\"run\",\"id\":\"t{}\",\"params\":{params}}}\n",
                base + i
            ));
        }
        let sent = Instant::now();
        for turn in &mut turns[base..base + k] {
            turn.sent = Some(sent);
        }
        daemon.write(batch.as_bytes()).expect("write requests");
        let mut ended = 0;
        while ended < k {
            let more = daemon
                .read_lines(|line, at| {
                    let (id, end) = match classify(line) {
                        Line::Event(id) => (id, None),
                        Line::End(id, ok) => (id, Some(ok)),
                        Line::Other => {
                            other_lines += 1;
                            eprintln!(
                                "bench-driver: unexpected line: {}",
                                String::from_utf8_lossy(line)
                            );
                            return;
                        }
                    };
                    let Some(turn) = id
                        .strip_prefix('t')
                        .and_then(|n| n.parse::<usize>().ok())
                        .and_then(|n| turns.get_mut(n))
                    else {
                        other_lines += 1;
                        return;
                    };
                    match end {
                        None => {
                            turn.first.get_or_insert(at);
                            turn.last = Some(at);
                            turn.events += 1;
                        }
                        Some(ok) => {
                            turn.end = Some(at);
                            ended += 1;
                            if !ok {
                                errors += 1;
                                eprintln!("bench-driver: {}", String::from_utf8_lossy(line));
                            }
                        }
                    }
                })
                .expect("read stdout");
            if !more {
                eprintln!("bench-driver: the daemon closed stdout early");
                std::process::exit(1);
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = daemon.cpu_s() - c0;
    perf_control(b"disable\n");
    let fs1 = faults_and_switches(daemon.pid());
    let rss = daemon.peak_rss_mb();
    let status = daemon.finish(|_| {}).expect("daemon exits");
    let _ = std::fs::remove_dir_all(&scratch);

    let counted = &turns[counted_from * k..];
    let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64() * 1e3,
        _ => f64::NAN,
    };
    let sorted = |f: &dyn Fn(&Turn) -> f64| {
        let mut v: Vec<f64> = counted.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let lat = sorted(&|t| ms(t.sent, t.end));
    let lat_last = sorted(&|t| ms(t.sent, t.last));
    let ttfe = sorted(&|t| ms(t.sent, t.first));
    let events: u64 = counted.iter().map(|t| t.events).sum();
    let round3 = |v: f64| (v * 1e3).round() / 1e3;
    let result = serde_json::json!({
        "anchor": name,
        "k": k,
        "rounds": rounds,
        "n": env_or("FAKE_EVENTS", 10u64),
        "p": env_or("FAKE_PAYLOAD", 64u64),
        "delay_us": env_or("FAKE_DELAY_US", 0u64),
        "events": events,
        "wall_s": (wall * 1e4).round() / 1e4,
        "turns_per_s": (counted.len() as f64 / wall * 10.0).round() / 10.0,
        "events_per_s": (events as f64 / wall).round(),
        "lat_p50_ms": round3(pct(&lat, 0.5)),
        "lat_p99_ms": round3(pct(&lat, 0.99)),
        "ttfe_p50_ms": round3(pct(&ttfe, 0.5)),
        "cpu_s": (cpu * 1e6).round() / 1e6,
        "rss_mb": (rss * 10.0).round() / 10.0,
        "lat_last_p50_ms": round3(pct(&lat_last, 0.5)),
        "minflt": fs1.0.saturating_sub(fs0.0),
        "switches": fs1.1.saturating_sub(fs0.1),
        "errors": errors + other_lines,
        "exit": status.code(),
    });
    eprintln!("{result}");
}

/// With `BENCH_PERF_CONTROL` naming the control FIFO of a `perf record
/// --control fifo:...` started disabled (`-D -1`) around the daemon, turns
/// its recording on and off at the edges of the measured window: a profile
/// of the counted batches alone, without start-up or shutdown.
fn perf_control(command: &[u8]) {
    if let Some(fifo) = std::env::var_os("BENCH_PERF_CONTROL") {
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .and_then(|mut f| f.write_all(command));
        if let Err(e) = written {
            eprintln!("bench-driver: perf control: {e}");
        }
    }
}
