//! `codex-runner`: flags, logging and wiring; the daemon lives in the library.
#![deny(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use codex_runner::codex_bin::CodexBin;
use codex_runner::codex_home::{ensure_turn_root, HomeError, HomeSettings};
use codex_runner::containment::{Containment, ContainmentMode};
use codex_runner::settings::Settings;
use codex_runner::{daemon, diag};

/// Runs many `codex exec --json` turns at once, each with its own scoped
/// config.toml, over one JSONL pipe.
///
/// Reads one JSON request per line on stdin, e.g.
///   {"type":"run","id":"r1","params":{"prompt":"hello"}}
///   {"type":"cancel","id":"r1"}
/// and writes one JSON line per codex event and one `end` per run on stdout:
///   {"type":"event","id":"r1","event":{"type":"thread.started",...}}
///   {"type":"end","id":"r1","status":"ok",...}
/// Logs and `diag` lines go to stderr. At end of input it finishes the runs
/// in flight and exits 0. See docs/protocol.md for every field.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The codex executable. The npm launcher (node_modules/.bin/codex) is
    /// resolved to the native binary it wraps.
    #[arg(long, env = "CODEX_BIN", default_value = "codex", global = true)]
    codex_bin: PathBuf,

    /// The user's base CODEX_HOME: its config.toml is the base of every
    /// turn's config, and login and sessions are shared from it [default: ~/.codex]
    #[arg(long, env = "CODEX_HOME", global = true)]
    codex_home: Option<PathBuf>,

    /// Turns running at once; more are queued in arrival order. Codex turns
    /// mostly wait on the model, so the limit is memory (~40 MB per codex)
    /// and the model's rate limits, not cores. Each running turn holds up to
    /// 6 open files; the daemon raises its soft limit to the hard one.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_concurrent: u32,

    /// Runs waiting at once for a slot (or for their thread's running
    /// turn); a run that would wait beyond this ends at once with code
    /// `queue_full`. Each waiting run holds its request in memory (see
    /// --max-queued-bytes). 0: never queue.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    max_queued: u32,

    /// Bytes the waiting runs' requests may hold at once (with
    /// --max-queued): each counts its line's length (up to
    /// --max-request-bytes) plus the room its parsed `config` and
    /// `output_schema` take. A run that would wait beyond this ends at once
    /// with code `queue_full`; one that can start at once is never refused.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    max_queued_bytes: usize,

    /// Default time limit of one turn, in seconds (0: none). A request's
    /// `timeout_secs` overrides it. Codex retries an unreachable model
    /// forever, so only a limit frees a stuck turn's slot.
    #[arg(long, default_value_t = 3600.0, allow_negative_numbers = true)]
    turn_timeout: f64,

    /// Seconds between SIGINT to codex (its graceful stop) and SIGKILL to
    /// every process of the turn, when a turn is cancelled, times out or
    /// the daemon stops.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    kill_grace: f64,

    /// Where per-turn CODEX_HOME dirs are created [default:
    /// /dev/shm/codex-runner-UID if /dev/shm exists, else $TMPDIR/codex-runner-UID].
    /// A tmpfs makes the per-turn files nearly free.
    #[arg(long, env = "CODEX_RUNNER_TURN_DIR")]
    turn_dir: Option<PathBuf>,

    /// Longest codex stdout line forwarded, in bytes; a longer one fails its run.
    #[arg(long, default_value_t = 32 * 1024 * 1024, value_parser = at_least_one_byte())]
    max_event_bytes: usize,

    /// Longest request line accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_parser = at_least_one_byte(), global = true)]
    max_request_bytes: usize,

    /// How a turn's processes are tracked so that stopping it leaves none
    /// behind: a cgroup v2 per turn (when the hierarchy is writable), or the
    /// process group plus a walk of codex's live process tree.
    #[arg(long, value_enum, default_value_t = ContainmentMode::Auto)]
    containment: ContainmentMode,

    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, global = true)]
    log_format: LogFormat,
}

/// A byte count that refuses 0: no line, request or event, is that short.
fn at_least_one_byte() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Read requests from stdin and print, per request, the verdict and the
    /// config.toml and argv its turn would get (secret values redacted),
    /// without spawning codex (and `warnings` where whether it runs depends
    /// on what is live, or codex cannot be run). Exits 1 if any request
    /// would be refused. --codex-home, --codex-bin and --max-request-bytes
    /// may come before or after `check`.
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

/// The environment variables our flags read.
const FLAG_ENV: &[&str] = &["CODEX_BIN", "CODEX_HOME", "CODEX_RUNNER_TURN_DIR"];

/// An empty one (`CODEX_HOME= codex-runner`, or a shell default that
/// expanded to nothing) means unset, as it does to codex, rather than the
/// flag given without a value.
fn unset_empty_env() {
    for name in FLAG_ENV {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // Before any thread exists: nothing reads the environment at once.
            std::env::remove_var(name);
        }
    }
}

/// The exit status after a bug stopped the daemon (sysexits' EX_SOFTWARE).
const EX_SOFTWARE: u8 = 70;

fn main() -> ExitCode {
    unset_empty_env();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are answers, printed on stdout.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // A client reads stderr for `fatal`; a person reads clap's text
            // with its usage hint after it.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            diag::fatal(first.strip_prefix("error: ").unwrap_or(first));
            e.exit()
        }
    };
    // As a container's PID 1, a process of ours stays PID 1 to reap orphans
    // (see `init`): before any thread exists.
    let under_init = codex_runner::init::split_if_pid1();
    // Until the daemon handles them, the signals it handles wait (blocked,
    // here and in every thread started from here): their default action
    // would end it while it makes turn dirs and cgroups, leaving them
    // behind. The child codex processes start with no signal blocked.
    mask_handled_signals(libc::SIG_BLOCK);
    // Before any thread or child exists (logged once logging is up).
    let inherited = codex_runner::inherited_fds::keep_from_children();
    // Every stderr line from here on goes through its own thread, so a
    // client that does not read stderr cannot stall the turns.
    codex_runner::stderr::start();
    init_logging(cli.log_format);
    log_panics();
    if under_init {
        tracing::info!(
            "started as PID 1: PID 1 now only reaps orphans and passes signals on to the daemon"
        );
    }
    if let Err(e) = inherited {
        tracing::warn!("inherited descriptors may reach codex: {e}");
    }
    let code = run(cli);
    // What is still queued for stderr (the exit log, a `fatal`), unless
    // nobody reads it: that must not keep the daemon from exiting.
    codex_runner::stderr::flush(Duration::from_secs(2));
    code
}

fn run(cli: Cli) -> ExitCode {
    if let Some(Command::Check) = cli.command {
        mask_handled_signals(libc::SIG_UNBLOCK);
        return check(&cli);
    }
    let settings = match settings(&cli) {
        Ok(settings) => settings,
        Err(message) => {
            diag::fatal(&message);
            tracing::error!("{message}");
            return ExitCode::from(2);
        }
    };
    open_files_limit(settings.max_concurrent);
    // A first burst of turns finds its cgroups and homes made (best effort;
    // about 0.2 ms a turn, up to 256 turns, before any request is read).
    settings.containment.prefill(settings.max_concurrent);
    codex_runner::codex_home::prefill(&settings.home, settings.max_concurrent);
    // Codex's database templates take a few hundred ms to make, in the
    // background: started now, the first turns get them sooner, and the
    // one-off cost lands at start-up rather than among the first turns.
    if let Ok(codex) = &settings.codex {
        let _ = settings.home.templates.for_codex(codex);
    }
    codex_runner::fault::gate("after-prefill");
    // One thread: a turn is a few syscalls per event, not work for a
    // second core, and every wake-up between two workers costs an eventfd
    // write and a futex; blocking work (stdin that is not a pipe, a stalled
    // stdout) already runs on tokio's blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            diag::fatal(&format!(
                "cannot start: the async runtime failed to start: {e}"
            ));
            return ExitCode::from(2);
        }
    };
    let containment = settings.containment.clone();
    let idle_homes = settings.home.idle.clone();
    let templates = settings.home.templates.clone();
    // What every exit does, whatever ended the daemon: the turns' kept
    // cgroups and homes, the private turn root if we made one, a template
    // build still running.
    let clean_up = || {
        containment.close();
        idle_homes.clear();
        if let Some(root) = PRIVATE_TURN_ROOT.get() {
            let _ = std::fs::remove_dir(root);
        }
        templates.stop();
    };
    // A panic in a turn ends that run (see `dispatcher`), and one in the
    // reader or writer stops every run (see `daemon`); one in the dispatcher
    // itself leaves no state to end runs with, and lands here.
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            // The first SIGTERM/SIGINT/SIGHUP stops every turn gracefully; a
            // second one, or SIGQUIT, kills them without waiting out the
            // grace period.
            let mut signals = Signals::new()?;
            let input = codex_runner::stdio::stdin();
            let output = tokio::io::stdout();
            let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
            let (second_tx, second_rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let stop = signals.next().await;
                let _ = first_tx.send(());
                if stop == Stop::Graceful {
                    signals.next().await;
                }
                let _ = second_tx.send(());
            });
            let first = async {
                let _ = first_rx.await;
            };
            let second = async {
                let _ = second_rx.await;
            };
            // SIGUSR1 logs what is running, as `dd` reports its progress.
            // SIGUSR2 does nothing but say so. The default action of
            // either would end the daemon on the spot, without its
            // clean-up (and PID 1 passes both on to it).
            use tokio::signal::unix::{signal, SignalKind};
            let mut usr1 = signal(SignalKind::user_defined1())?;
            let mut usr2 = signal(SignalKind::user_defined2())?;
            let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        Some(()) = usr1.recv() => {
                            if status_tx.send(()).is_err() {
                                break;
                            }
                        }
                        Some(()) = usr2.recv() => {
                            tracing::warn!("SIGUSR2 received: it does nothing here (SIGUSR1 logs what is running)");
                        }
                        else => break,
                    }
                }
            });
            // Every handled signal has its handler: one that came during
            // start-up is acted on now.
            mask_handled_signals(libc::SIG_UNBLOCK);
            Ok::<_, std::io::Error>(
                daemon::run(settings, input, output, first, second, status_rx).await,
            )
        })
    }));
    let summary = match served {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => {
            // Before any request was read: nothing ran.
            runtime.shutdown_timeout(Duration::from_millis(100));
            clean_up();
            diag::fatal(&format!(
                "cannot start: installing the signal handlers failed: {e}"
            ));
            return ExitCode::from(2);
        }
        Err(payload) => {
            let why = daemon::panic_message(&*payload);
            // Shutting the runtime down drops every turn: each kills its
            // processes and removes its home as it goes (their drops). A
            // blocking stdin read must not keep us alive.
            runtime.shutdown_timeout(Duration::from_millis(100));
            clean_up();
            diag::fatal(&format!(
                "internal error: the dispatcher panicked: {why}; every run was stopped"
            ));
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    tracing::info!(
        accepted = summary.totals.accepted,
        ok = summary.totals.ok,
        failed = summary.totals.failed,
        refused = summary.totals.refused,
        "codex-runner exiting"
    );
    clean_up();
    // Children are gone; blocking stdin reads must not keep us alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Some(why) = summary.internal_error {
        diag::fatal(&format!("internal error: {why}; every run was stopped"));
        return ExitCode::from(EX_SOFTWARE);
    }
    match summary.stdout_error {
        None => ExitCode::SUCCESS,
        Some(e) => {
            diag::fatal(&format!("writing stdout failed: {e}"));
            ExitCode::from(1)
        }
    }
}

/// Raises the limit on open files (see `fd_limit`) and warns when it still
/// cannot hold `max_concurrent` running turns.
fn open_files_limit(max_concurrent: usize) {
    let files = match codex_runner::fd_limit::raise() {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the limit on open files");
            return;
        }
    };
    if files.limit != files.started_with {
        tracing::debug!(
            from = files.started_with,
            to = files.limit,
            "raised the limit on open files"
        );
    }
    codex_runner::fd_limit::set_idle_turns(files.idle_turns_beside(max_concurrent as u64));
    if files.turns() < max_concurrent as u64 {
        tracing::warn!(
            limit = files.limit,
            max_concurrent,
            "the limit on open files holds about {} running turns, fewer than --max-concurrent: \
             turns beyond that will fail to start; raise the hard limit (`ulimit -Hn`) or lower \
             --max-concurrent",
            files.turns()
        );
    }
}

fn check(cli: &Cli) -> ExitCode {
    let home = HomeSettings {
        base_home: match base_home(cli) {
            Ok(home) => home,
            Err(message) => {
                diag::fatal(&message);
                return ExitCode::from(2);
            }
        },
        turn_root: PathBuf::new(),
        idle: Default::default(),
        templates: Default::default(),
    };
    let program = CodexBin::resolve(&cli.codex_bin)
        .map_err(|e| e.to_string())
        .and_then(|bin| match bin.unrunnable() {
            None => Ok(bin.program),
            Some(why) => Err(format!(
                "codex executable {} cannot be run: {why}",
                bin.program.display()
            )),
        });
    let settings = codex_runner::check::CheckSettings {
        home: &home,
        max_line: cli.max_request_bytes,
        program,
    };
    let input = std::io::stdin().lock();
    match codex_runner::check::run(&settings, input, std::io::stdout().lock()) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            diag::fatal(&format!("check: {e}"));
            ExitCode::from(2)
        }
    }
}

fn base_home(cli: &Cli) -> Result<PathBuf, String> {
    let home = match &cli.codex_home {
        // Codex refuses a CODEX_HOME that does not exist (it makes only
        // ~/.codex): a misspelt one must not become a new, empty home
        // without the user's config and login.
        Some(home) if !home.is_dir() => {
            let why = if home.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(format!(
                "--codex-home (or CODEX_HOME) {} {why}: create it, or leave both unset for ~/.codex",
                home.display()
            ));
        }
        Some(home) => home.clone(),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".codex"))
            .ok_or_else(|| "neither --codex-home, CODEX_HOME nor HOME is set".to_owned())?,
    };
    absolute(&home, "--codex-home")
}

/// `path` from the daemon's working directory. A turn's home links to the
/// base home's entries, and a relative link would be read from the turn's
/// directory; codex runs in the request's `cwd`, so a relative CODEX_HOME
/// would be read from there.
fn absolute(path: &Path, flag: &str) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

fn settings(cli: &Cli) -> Result<Settings, String> {
    let codex = CodexBin::resolve(&cli.codex_bin).map_err(|e| e.to_string());
    match &codex {
        Ok(bin) => match bin.unrunnable() {
            None => {
                tracing::info!(program = %bin.program.display(), launcher = ?bin.launcher, "codex executable")
            }
            Some(why) => tracing::warn!(
                program = %bin.program.display(),
                "--codex-bin cannot be run: {why}; every run will fail until it can"
            ),
        },
        Err(e) => tracing::warn!("{e}; every run will fail until it is installed"),
    }
    let base_home = base_home(cli)?;
    let turn_root = match &cli.turn_dir {
        Some(dir) => chosen_turn_root(dir)?,
        None => {
            let default = absolute(&default_turn_root(), "--turn-dir")?;
            codex_runner::codex_home::clean_stale_private_roots(&default);
            usable_turn_root(&default)?
        }
    };
    codex_runner::codex_home::clean_stale(&turn_root);
    let seconds = |name: &str, value: f64| {
        if value.is_finite() && (0.0..=runner_protocol::MAX_SECONDS).contains(&value) {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(format!(
                "--{name} must be a number of seconds from 0 to {:e}, got {}",
                runner_protocol::MAX_SECONDS,
                runner_protocol::seconds_text(value)
            ))
        }
    };
    let turn_timeout = seconds("turn-timeout", cli.turn_timeout)?;
    Ok(Settings {
        codex,
        home: HomeSettings {
            base_home,
            turn_root,
            idle: Default::default(),
            templates: codex_runner::db_template::DbTemplates::from_env(),
        },
        max_concurrent: cli.max_concurrent as usize,
        max_queued: cli.max_queued as usize,
        max_queued_bytes: cli.max_queued_bytes,
        turn_timeout: (!turn_timeout.is_zero()).then_some(turn_timeout),
        kill_grace: seconds("kill-grace", cli.kill_grace)?,
        max_event_bytes: cli.max_event_bytes,
        max_request_bytes: cli.max_request_bytes,
        containment: std::sync::Arc::new(Containment::start(cli.containment)?),
    })
}

/// The `--turn-dir` the user chose, made if missing. A symlink (to a bigger
/// disk, say) is the user's to make: its target is the dir checked and
/// used. The default, in a place anyone may write, is taken only as a
/// directory of ours (see [`usable_turn_root`]).
fn chosen_turn_root(dir: &Path) -> Result<PathBuf, String> {
    let root = absolute(dir, "--turn-dir")?;
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    match ensure_turn_root(&root) {
        Ok(()) => Ok(root),
        Err(HomeError::Io { what, source, .. }) => Err(format!(
            "--turn-dir {}: {what} it failed: {source}",
            dir.display()
        )),
        Err(e) => Err(format!("--turn-dir {}: {e}", dir.display())),
    }
}

/// `default`, or, if it cannot be ours (another user made it first: the
/// name is predictable, in a directory anyone may write), a new private
/// directory beside it, removed at exit (or, after a SIGKILL, by the next
/// daemon's start).
fn usable_turn_root(default: &Path) -> Result<PathBuf, String> {
    let why = match ensure_turn_root(default) {
        Ok(()) => return Ok(default.to_owned()),
        Err(e) => diag::chain(&e),
    };
    let private = codex_runner::codex_home::create_private_turn_root(default).map_err(|e| {
        format!(
            "{why}; and no private turn dir could be made in {}: {e}",
            default.parent().unwrap_or(Path::new("/")).display()
        )
    })?;
    tracing::warn!(default = %default.display(), turn_dir = %private.display(), "{why}: using a private turn dir for this daemon instead");
    PRIVATE_TURN_ROOT.set(private.clone()).ok();
    Ok(private)
}

/// The turn dir [`usable_turn_root`] made, to remove at exit.
static PRIVATE_TURN_ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn default_turn_root() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    base.join(format!("codex-runner-{uid}"))
}

/// A panic is a bug: logged as one error line, in the log format and
/// through the stderr that never blocks, rather than std's text written
/// straight to fd 2. What it ends is decided where it is caught.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = daemon::panic_message(info.payload());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(%location, %backtrace, "panicked: {message}");
        } else {
            tracing::error!(%location, "panicked: {message}");
        }
    }));
}

fn init_logging(format: LogFormat) {
    let (filter, problem) = log_filter(std::env::var("RUST_LOG"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(codex_runner::stderr::LogWriter::default);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

/// The log filter `RUST_LOG` asks for, or `info` and why not: one that
/// cannot be parsed, or that names only targets other than ours
/// (`RUST_LOG=inf` names a target `inf`, and would silence every line,
/// warnings included).
fn log_filter(
    var: Result<String, std::env::VarError>,
) -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    let fallback = || EnvFilter::new("info");
    let text = match var {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) | Err(std::env::VarError::NotPresent) => return (fallback(), None),
        Err(std::env::VarError::NotUnicode(_)) => {
            return (
                fallback(),
                Some("RUST_LOG is not UTF-8: logging at info".to_owned()),
            )
        }
    };
    let filter = match EnvFilter::builder().parse(&text) {
        Ok(filter) => filter,
        Err(e) => {
            return (
                fallback(),
                Some(format!(
                    "RUST_LOG={text:?} is not a valid filter ({e}): logging at info"
                )),
            )
        }
    };
    // Only when nothing of ours would be logged: a RUST_LOG shared with
    // other programs (`info,hyper=warn`) is no mistake.
    if text.split(',').map(str::trim).all(|d| !names_our_logs(d)) {
        return (
            fallback(),
            Some(format!(
                "RUST_LOG={text:?} names no level and none of this program's targets (a level \
                 is one of trace, debug, info, warn, error, off; the targets begin with \
                 codex_runner): logging at info"
            )),
        );
    }
    (filter, None)
}

/// Whether a `RUST_LOG` directive can let any line of ours through: a bare
/// level, or one for a target of ours (`codex_runner`, `codex_runner::turn`,
/// with or without `=level` and span filters).
fn names_our_logs(directive: &str) -> bool {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let (target, level) = match directive.rsplit_once('=') {
        Some((target, level)) => (target, Some(level)),
        None => (directive, None),
    };
    // `target[span{field=value}]`: the target is what comes before `[`.
    let target = target.split('[').next().unwrap_or_default();
    if target.is_empty() {
        return true;
    }
    if level.is_none() && LEVELS.iter().any(|l| target.eq_ignore_ascii_case(l)) {
        return true;
    }
    target == "codex_runner" || target.starts_with("codex_runner::")
}

/// How a signal asks the daemon to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM, SIGINT, SIGHUP: every turn gets the grace period.
    Graceful,
    /// SIGQUIT (Ctrl-\): every turn is killed at once.
    Now,
}

/// SIGTERM, SIGINT, SIGHUP and SIGQUIT, as one stream.
///
/// Each one's default action would end the daemon on the spot, leaving the
/// running turns' dirs (their config.toml holds the request's secrets) and
/// cgroups for the next start to find: all of them stop it with its
/// clean-up instead.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    /// `None` when the daemon was started with SIGHUP ignored (`nohup`).
    hup: Option<tokio::signal::unix::Signal>,
}

/// Blocks or unblocks (`how`) the signals the daemon handles, in this
/// thread (and so in the threads it starts afterwards).
fn mask_handled_signals(how: libc::c_int) {
    // SAFETY: sigset_t is plain data, filled by sigemptyset and sigaddset;
    // pthread_sigmask changes this thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

impl Signals {
    /// Call before anything else installs a SIGHUP handler.
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        // A terminal that closes under a daemon started from it sends
        // SIGHUP: it stops the daemon as SIGTERM does. Unless the parent
        // chose to ignore it: that choice stands.
        let hup = if ignored(libc::SIGHUP) {
            None
        } else {
            Some(signal(SignalKind::hangup())?)
        };
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup,
        })
    }

    /// The next SIGTERM, SIGINT, SIGHUP or SIGQUIT.
    async fn next(&mut self) -> Stop {
        let hup = async {
            match &mut self.hup {
                Some(hup) => hup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            _ = hup => tracing::info!("SIGHUP received"),
            _ = self.quit.recv() => {
                tracing::info!("SIGQUIT received: killing every turn now");
                return Stop::Now;
            }
        }
        Stop::Graceful
    }
}

/// Whether `signal` is ignored (as the parent left it: call it before any
/// handler is installed).
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: reads the disposition into a zeroed struct; changes nothing.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink the user chose is followed; one in the default's place is
    /// not (see the test below). Errors name the flag.
    #[test]
    fn a_chosen_turn_dir_may_be_a_symlink_and_its_errors_name_the_flag() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("big-disk");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = parent.path().join("turns");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(chosen_turn_root(&link).unwrap(), target);
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "restricted: its turns hold secrets");

        let file = parent.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            chosen_turn_root(&file).unwrap_err(),
            format!(
                "--turn-dir {0}: {0} is not a directory owned by this user",
                file.display()
            )
        );
        let under_file = file.join("turns");
        let error = chosen_turn_root(&under_file).unwrap_err();
        assert!(
            error.starts_with(&format!(
                "--turn-dir {}: creating it failed: ",
                under_file.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn a_rust_log_that_would_silence_every_line_gives_way_to_info() {
        let filter = |text: &str| {
            let (filter, problem) = log_filter(Ok(text.to_owned()));
            (filter.to_string(), problem)
        };
        for kept in [
            "debug",
            "WARN",
            "codex_runner=debug",
            "codex_runner::turn=trace,hyper=warn",
            "info,hyper=warn",
            "codex_runner[run{id=a}]=debug",
        ] {
            let (used, problem) = filter(kept);
            assert_eq!(problem, None, "{kept}");
            assert_ne!(used, "info", "{kept}");
        }
        for (silencing, says) in [
            ("inf", "names no level and none of this program's targets"),
            (
                "hyper=warn,tokio",
                "names no level and none of this program's targets",
            ),
            ("codex_runner=loud", "is not a valid filter"),
        ] {
            let (used, problem) = filter(silencing);
            assert_eq!(used, "info", "{silencing}");
            let problem = problem.unwrap_or_default();
            assert!(problem.contains(says), "{silencing}: {problem}");
            assert!(problem.ends_with("logging at info"), "{problem}");
        }
        assert_eq!(filter("").0, "info");
        assert_eq!(log_filter(Err(std::env::VarError::NotPresent)).1, None);
    }

    /// Another user can make the default turn dir first (its name is
    /// predictable, in /dev/shm): before, the daemon then refused to start.
    #[test]
    fn a_default_turn_dir_that_is_not_ours_gives_way_to_a_private_one() {
        let parent = tempfile::tempdir().unwrap();
        let default = parent.path().join("codex-runner-test");
        assert_eq!(usable_turn_root(&default).unwrap(), default, "made, ours");
        // Not usable: a file where the directory should be, which, like a
        // directory another user owns, can never be ours.
        let taken = parent.path().join("codex-runner-taken");
        std::fs::write(&taken, "").unwrap();
        let private = usable_turn_root(&taken).unwrap();
        assert_ne!(private, taken);
        assert_eq!(private.parent(), Some(parent.path()));
        assert!(private
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("codex-runner-taken-"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&private).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(PRIVATE_TURN_ROOT.get(), Some(&private));
        // A SIGKILLed daemon's private root (pid 1 never started when we
        // did) goes, turn dirs and all, at the next start; ours, and a
        // user's dir of a like name, stay.
        let tag = codex_runner::containment::instance_tag();
        let dead = parent.path().join(format!(
            "codex-runner-taken-1-{}",
            tag.split_once('-').unwrap().1
        ));
        std::fs::create_dir(&dead).unwrap();
        std::fs::set_permissions(&dead, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        std::fs::create_dir(dead.join("turn-1-0")).unwrap();
        let users = parent.path().join("codex-runner-taken-notes");
        std::fs::create_dir(&users).unwrap();
        codex_runner::codex_home::clean_stale_private_roots(&taken);
        assert!(!dead.exists());
        assert!(private.is_dir() && users.is_dir());
    }
}
