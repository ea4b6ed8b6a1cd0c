//! `fake-codex`: a scripted stand-in for `codex exec --json` (codex 0.169.0), for
//! codex-runner's tests.
//!
//! It takes the real command line (`exec [FLAGS] [resume <THREAD_ID>] [PROMPT|-]`,
//! rejecting unknown flags with exit 2 like clap), reads the prompt from stdin when
//! there is no prompt argument (or it is `-`), keeps rollout files under
//! `$CODEX_HOME/sessions/` so `resume` works (and fails for unknown ids), and prints
//! JSONL events shaped like the real ones, one write(2) per line.
//!
//! The scenario is `$FAKE_CODEX_SCENARIO`, or else a line `scenario: NAME` in the
//! prompt, or else `ok`; see `scenarios::NAMES`. Knobs: FAKE_CODEX_EVENTS,
//! FAKE_CODEX_PAYLOAD, FAKE_CODEX_DELAY_MS, FAKE_CODEX_LONG_BYTES,
//! FAKE_CODEX_STDERR_LINES, FAKE_CODEX_EXIT_CODE, FAKE_CODEX_GATE,
//! FAKE_CODEX_FAIL_MESSAGE, FAKE_CODEX_ORPHAN_KEEPS_STDIO and
//! FAKE_CODEX_EXIT_UNTERMINATED (`spawn_descendants`). With FAKE_CODEX_RECORD_DIR set, it first writes what it was
//! given (argv, env, stdin, cwd, CODEX_HOME contents...) to
//! `$FAKE_CODEX_RECORD_DIR/<CODEX_RUNNER_RUN_ID or pid>.json`.

mod all_items;
mod args;
mod events;
mod obj;
mod out;
mod procs;
mod record;
mod scenarios;
mod session;

use std::io::Read;

fn main() {
    // The real CLI installs its own SIGINT handling whatever it inherits; a test that
    // spawns us from a shell background job would otherwise inherit SIGINT ignored.
    // SAFETY: setting signal dispositions to SIG_DFL before any other work.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = args::parse(&argv).unwrap_or_else(|e| out::die(2, &e));
    if !args.json {
        out::die(2, "fake-codex: --json (or --experimental-json) is required: the runner must always pass it");
    }

    let env_scenario = std::env::var("FAKE_CODEX_SCENARIO")
        .ok()
        .filter(|s| !s.is_empty());
    let prompt_arg = args.prompt.clone().filter(|p| p != "-");
    let stdin = match (&prompt_arg, env_scenario.as_deref()) {
        (None, Some("no_stdin_read")) | (Some(_), _) => None,
        (None, _) => Some(read_stdin()),
    };
    let prompt = prompt_arg
        .or_else(|| stdin.clone())
        .unwrap_or_else(|| "<unread>".into());
    let scenario = env_scenario
        .or_else(|| scenario_in(&prompt))
        .unwrap_or_else(|| "ok".into());
    if !scenarios::NAMES.contains(&scenario.as_str()) {
        out::die(2, &format!("fake-codex: unknown scenario {scenario}"));
    }

    let home = session::codex_home();
    let rec = record::Record::start(&argv, &args, stdin.as_deref(), &prompt, &home);
    if scenario == "config_error" {
        rec.finish(None, None);
        out::die(1, "Error loading config.toml: fake config error");
    }
    let session = match &args.resume {
        None => session::start(&home, &prompt).map(Some),
        Some(id) => session::resume(&home, id, &prompt),
    };
    let session = match session {
        Ok(Some(s)) => s,
        Ok(None) => {
            let id = args.resume.as_deref().unwrap_or_default();
            rec.finish(Some(id), None);
            // The real CLI prints nothing on stdout here.
            out::die(1, &format!("Error: no rollout found for thread id {id}"));
        }
        Err(e) => out::die(
            1,
            &format!(
                "fake-codex: cannot write rollout under {}: {e}",
                home.display()
            ),
        ),
    };
    rec.finish(Some(&session.thread_id), Some(session.turn));

    let ctx = events::Ctx {
        thread_id: session.thread_id,
        turn: session.turn,
        prompt,
        home,
    };
    std::process::exit(scenarios::run(&scenario, &ctx));
}

/// The whole of stdin, lossily decoded (a read error just ends it).
fn read_stdin() -> String {
    let mut buf = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The NAME of the first prompt line `scenario: NAME`.
fn scenario_in(prompt: &str) -> Option<String> {
    prompt
        .lines()
        .find_map(|l| Some(l.trim().strip_prefix("scenario:")?.trim().to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn scenario_line_in_prompt() {
        assert_eq!(
            super::scenario_in("hi\n  scenario: hang \nmore").as_deref(),
            Some("hang")
        );
        assert_eq!(super::scenario_in("no scenario here"), None);
    }
}
