//! A turn of the REAL Codex CLI, run directly and through codex-runner, side
//! by side, against a local mock model (no account, no network).
//!
//! ```text
//! bench-real-codex serve HOME     write HOME/config.toml for the mock model, serve it
//!                                 until stdin closes (for poking at codex by hand)
//! bench-real-codex compare        TURNS (default 15) interleaved rounds of:
//!                                   direct  `codex exec --json … -` with CODEX_HOME = the
//!                                           base home (a user running codex),
//!                                   fresh   the same with a brand-new CODEX_HOME holding
//!                                           only config.toml (what codex pays on a new home),
//!                                   runner  the same prompt through one warm codex-runner;
//!                                 each round in another of the six orders; one
//!                                 uncounted warm-up round first. Prints one JSON line
//!                                 per mode on stdout.
//! ```
//!
//! Env: `CODEX_RUNNER` (the daemon), `CODEX_REAL_BIN` (else the one
//! `scripts/install-codex` put under .tools/), `TURNS`, `BENCH_DAEMON_ARGS`,
//! `BENCH_SHELL_SNAPSHOT=1`: keep codex's shell snapshot (see `bench_config`).
//! `ROUNDS_OUT=FILE`: also writes each counted round's times there, a JSON
//! line per round. `SEED_SESSIONS=N`: after the warm-up round, N copies (new thread ids) of
//! the rollout it wrote are added to the base home's `sessions/`, as a base
//! home that has served N earlier turns holds them. The JSON lines carry
//! `sessions` (rollouts present when the counted rounds began) and `run`
//! (`$BENCH_NAME`, default `codex-runner`: which daemon build was compared).
//!
//! `vs_direct` is the ratio of the medians; `vs_direct_paired_p50` the
//! median over rounds of each round's ratio to that round's direct turn.
//!
//! Times: `direct`/`fresh` from spawn to the exit of codex; `runner` from
//! the request written to its `end` read (codex has exited and the turn's
//! dir is gone). `codex_cpu_ms`: user+sys of codex itself (direct: our
//! children; runner: the daemon's reaped children, from /proc, 10 ms ticks);
//! `daemon_cpu_p50_ms` (runner): the daemon's own CPU per turn.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use codex_runner_bench::{classify, env_or, median, Daemon, Line};
use codex_runner_test_support::{
    codex_config_toml, count_files, find_real_codex, real_codex_path_dir, MockModel, Script,
};

const PROMPT: &str = "say hello";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() == 2 => serve(Path::new(&args[1])),
        Some("compare") => compare(),
        _ => {
            eprintln!("usage: bench-real-codex serve HOME | bench-real-codex compare");
            std::process::exit(2);
        }
    }
}

fn serve(home: &Path) {
    let model = MockModel::start(Script::Default);
    std::fs::create_dir_all(home).expect("create home");
    std::fs::write(
        home.join("config.toml"),
        codex_config_toml(&model.base_url()),
    )
    .expect("write config");
    println!("MODEL_URL={}", model.base_url());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn children_cpu_s() -> f64 {
    // SAFETY: out-pointer to a zeroed local.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// cutime + cstime of `pid`, in seconds (clock ticks).
fn reaped_children_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Fields after the comm: state=0 … utime=11 stime=12 cutime=13 cstime=14.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(13).copied().unwrap_or(0.0) + f.get(14).copied().unwrap_or(0.0)) / hz
}

struct Mode {
    name: &'static str,
    wall_ms: Vec<f64>,
    cpu_ms: Vec<f64>,
    /// The daemon's own CPU per turn (runner only).
    daemon_cpu_ms: Vec<f64>,
    events: Vec<u64>,
}

impl Mode {
    fn new(name: &'static str) -> Mode {
        Mode {
            name,
            wall_ms: Vec::new(),
            cpu_ms: Vec::new(),
            daemon_cpu_ms: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// The mock model's config (`codex_config_toml`), which turns codex's shell
/// snapshot off, unless `BENCH_SHELL_SNAPSHOT=1`. The snapshot runs the
/// user's login shell at every codex start, not awaited at codex's exit:
/// what it costs depends on the user's profile, not on how codex is run. On
/// the machine these figures come from, the profile runs `pyenv rehash`,
/// which takes a lock file; a shell killed mid-rehash (as a turn's leftovers
/// are, at its end) leaves the lock behind, and from then on every login
/// shell loops for 60 s waiting for it: dozens of them at once, each direct
/// run's outliving its codex, made the comparison measure the machine's
/// load. All three modes read this same config.
fn bench_config(base_url: &str) -> String {
    let config = codex_config_toml(base_url);
    if !std::env::var("BENCH_SHELL_SNAPSHOT").is_ok_and(|v| v == "1") {
        return config;
    }
    let with = config.replacen("shell_snapshot = false", "shell_snapshot = true", 1);
    assert_ne!(with, config, "the mock config turns the shell snapshot off");
    with
}

/// One `codex exec --json` run with `home` as CODEX_HOME; (ms, codex cpu ms, events).
fn direct_turn(codex: &Path, env: &[(String, String)], home: &Path) -> (f64, f64, u64) {
    let c0 = children_cpu_s();
    let t0 = Instant::now();
    let mut child = Command::new(codex)
        .args(["exec", "--json", "--skip-git-repo-check", "-"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CODEX_HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn codex");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PROMPT.as_bytes())
        .unwrap();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = child.wait().unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let events = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
    if !status.success() || !String::from_utf8_lossy(&out).contains("turn.completed") {
        eprintln!(
            "bench-real-codex: direct turn failed ({status}): {}",
            String::from_utf8_lossy(&out)
        );
    }
    (ms, (children_cpu_s() - c0) * 1e3, events)
}

/// One turn through the warm daemon: (ms from the request written to its
/// `end` read, codex cpu ms, events), and the daemon's own cpu ms.
fn runner_turn(daemon: &mut Daemon, round: usize) -> ((f64, f64, u64), f64) {
    let c0 = reaped_children_cpu_s(daemon.pid());
    let own0 = daemon.cpu_s();
    let t0 = Instant::now();
    daemon
        .write(
            format!(
                "{{\"type\":\"run\",\"id\":\"t{round}\",\"params\":{{\"prompt\":\"{PROMPT}\"}}}}\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut events = 0u64;
    let mut done = false;
    while !done {
        let more = daemon
            .read_lines(|line, _| match classify(line) {
                Line::Event(_) => events += 1,
                Line::End(_, ok) => {
                    done = true;
                    if !ok {
                        eprintln!(
                            "bench-real-codex: runner turn failed: {}",
                            String::from_utf8_lossy(line)
                        );
                    }
                }
                Line::Other => eprintln!("bench-real-codex: {}", String::from_utf8_lossy(line)),
            })
            .unwrap();
        assert!(more, "the daemon closed stdout");
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let cpu = (reaped_children_cpu_s(daemon.pid()) - c0) * 1e3;
    ((ms, cpu, events), (daemon.cpu_s() - own0) * 1e3)
}

fn compare() {
    let runner = PathBuf::from(std::env::var_os("CODEX_RUNNER").expect("CODEX_RUNNER: the daemon"));
    let codex = find_real_codex().expect("no real codex: run scripts/install-codex");
    let turns: usize = env_or("TURNS", 15usize);
    let model = MockModel::start(Script::Default);
    let scratch =
        std::env::temp_dir().join(format!("codex-runner-bench-real-{}", std::process::id()));
    let home = scratch.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let config = bench_config(&model.base_url());
    std::fs::write(home.join("config.toml"), &config).unwrap();

    // What the npm launcher would add, and the mock's key; for both paths.
    let mut env = vec![("MOCK_API_KEY".to_owned(), "bench".to_owned())];
    if let Some(dir) = real_codex_path_dir(&codex) {
        let path = std::env::var("PATH").unwrap_or_default();
        env.push(("PATH".to_owned(), format!("{}:{path}", dir.display())));
    }
    env.push(("RUST_LOG".to_owned(), "warn".to_owned()));

    let mut args: Vec<OsString> = vec![
        "--codex-bin".into(),
        codex.clone().into(),
        "--codex-home".into(),
        home.clone().into(),
        "--max-concurrent".into(),
        "1".into(),
    ];
    if let Ok(extra) = std::env::var("BENCH_DAEMON_ARGS") {
        args.extend(extra.split_whitespace().map(OsString::from));
    }
    let mut daemon = Daemon::start(&runner, &args, &env).expect("start codex-runner");
    daemon.wait_ready(std::time::Duration::from_secs(5));

    let mut modes = [
        Mode::new("direct"),
        Mode::new("fresh-home"),
        Mode::new("runner"),
    ];
    let mut sessions = 0;
    for round in 0..=turns {
        // The three turns of a round, in each of the six orders in turn, so
        // every mode follows every other equally often (the fresh-home turn
        // leaves megabytes of files behind it on a disk-backed /tmp, and
        // their writeback lands on whatever runs next).
        const ORDERS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [2, 1, 0],
            [1, 0, 2],
            [2, 0, 1],
            [0, 2, 1],
            [1, 2, 0],
        ];
        let mut results = [(0.0, 0.0, 0u64); 3];
        let mut daemon_cpu = 0.0;
        for which in ORDERS[round % ORDERS.len()] {
            results[which] = match which {
                // direct: the user's own, persistent home.
                0 => direct_turn(&codex, &env, &home),
                // fresh: a new home with only the config.
                1 => {
                    let fresh_home = scratch.join(format!("fresh-{round}"));
                    std::fs::create_dir_all(&fresh_home).unwrap();
                    std::fs::write(fresh_home.join("config.toml"), &config).unwrap();
                    let fresh = direct_turn(&codex, &env, &fresh_home);
                    let _ = std::fs::remove_dir_all(&fresh_home);
                    fresh
                }
                // runner: one turn through the warm daemon.
                _ => {
                    let (turn, own) = runner_turn(&mut daemon, round);
                    daemon_cpu = own;
                    turn
                }
            };
        }
        if round == 0 {
            seed_sessions(&home.join("sessions"), env_or("SEED_SESSIONS", 0usize));
            sessions = count_files(&home.join("sessions"));
            continue; // warm-up: caches, the daemon's first turn
        }
        modes[2].daemon_cpu_ms.push(daemon_cpu);
        for (mode, (ms, cpu, ev)) in modes.iter_mut().zip(results) {
            mode.wall_ms.push(ms);
            mode.cpu_ms.push(cpu);
            mode.events.push(ev);
        }
    }
    let _ = daemon.finish(|_| {});
    if let Some(path) = std::env::var_os("ROUNDS_OUT") {
        write_rounds(Path::new(&path), &modes);
    }
    let base = median(&modes[0].wall_ms);
    let direct_ms = modes[0].wall_ms.clone();
    for mode in &modes {
        // Each round's turn against the direct turn of the same round:
        // rounds are interleaved, so both saw about the same machine.
        let paired: Vec<f64> = mode
            .wall_ms
            .iter()
            .zip(&direct_ms)
            .map(|(ms, direct)| ms / direct)
            .collect();
        let min = mode.wall_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = mode.wall_ms.iter().copied().fold(0.0, f64::max);
        let med = median(&mode.wall_ms);
        let mut line = serde_json::json!({
                "mode": mode.name,
                "turns": mode.wall_ms.len(),
                "wall_p50_ms": (med * 100.0).round() / 100.0,
                "wall_min_ms": (min * 100.0).round() / 100.0,
                "wall_max_ms": (max * 100.0).round() / 100.0,
                "vs_direct": (med / base * 1e4).round() / 1e4,
                "vs_direct_paired_p50": (median(&paired) * 1e4).round() / 1e4,
                "codex_cpu_p50_ms": (median(&mode.cpu_ms) * 10.0).round() / 10.0,
                "events": mode.events.iter().copied().max().unwrap_or(0),
                "sessions": sessions,
                "run": std::env::var("BENCH_NAME").unwrap_or_else(|_| "codex-runner".into()),
        });
        if !mode.daemon_cpu_ms.is_empty() {
            line["daemon_cpu_p50_ms"] =
                ((median(&mode.daemon_cpu_ms) * 100.0).round() / 100.0).into();
        }
        println!("{line}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// One JSON line per counted round: each mode's wall and codex CPU, in ms.
fn write_rounds(path: &Path, modes: &[Mode]) {
    let mut out = String::new();
    for round in 0..modes[0].wall_ms.len() {
        let mut line = serde_json::json!({ "round": round + 1 });
        for mode in modes {
            line[format!("{}_ms", mode.name)] = mode.wall_ms[round].into();
            line[format!("{}_cpu_ms", mode.name)] = mode.cpu_ms[round].into();
            if let Some(own) = mode.daemon_cpu_ms.get(round) {
                line[format!("{}_daemon_cpu_ms", mode.name)] = (*own).into();
            }
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    if let Err(e) = std::fs::write(path, out) {
        eprintln!("bench-real-codex: cannot write {}: {e}", path.display());
    }
}

fn newest_rollout(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jsonl") {
                let modified = entry.metadata().ok()?.modified().ok()?;
                if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                    best = Some((modified, path));
                }
            }
        }
    }
    best.map(|(_, p)| p)
}

/// `count` copies of the newest rollout, each with a new thread id (in its
/// name and its content), next to it.
fn seed_sessions(dir: &Path, count: usize) {
    if count == 0 {
        return;
    }
    let Some(source) = newest_rollout(dir) else {
        eprintln!("bench-real-codex: no rollout to seed sessions from");
        return;
    };
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    let Some(id) = name
        .strip_suffix(".jsonl")
        .and_then(|n| n.get(n.len().saturating_sub(36)..))
    else {
        return;
    };
    let id = id.to_owned();
    let text = std::fs::read_to_string(&source).unwrap_or_default();
    let mut seed = std::process::id() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..count {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let hex = format!(
            "{seed:016x}{:016x}",
            seed.rotate_left(29) ^ 0xA5A5_5A5A_1234_5678
        );
        let new = format!(
            "{}-{}-7{}-8{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        );
        let target = source.with_file_name(name.replace(&id, &new));
        let _ = std::fs::write(target, text.replace(&id, &new));
    }
}
