//! The record file: what the runner handed this process (argv, env, stdin, cwd, the
//! CODEX_HOME it prepared), written to `$FAKE_CODEX_RECORD_DIR/<name>.json` before any
//! event is printed, so a test that has seen an event can read the record at once.

use crate::args::Args;
use serde_json::{json, Map, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// This process's limit on open files: [soft, hard].
fn nofile() -> [u64; 2] {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    [limit.rlim_cur, limit.rlim_max]
}

/// A record being built; `None` inside when recording is off.
pub struct Record(Option<(std::path::PathBuf, Map<String, Value>)>);

impl Record {
    /// Captures everything but the thread. Call it BEFORE the session touches
    /// `sessions/`, so `codex_home_entries` shows the home exactly as the runner made it.
    pub fn start(
        argv: &[String],
        args: &Args,
        stdin: Option<&str>,
        prompt: &str,
        home: &Path,
    ) -> Self {
        let Some(dir) = std::env::var_os("FAKE_CODEX_RECORD_DIR") else {
            return Record(None);
        };
        let env: Map<String, Value> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned().into(),
                )
            })
            .collect();
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .ok();
        let config = home.join("config.toml");
        let output_schema = args
            .output_schema
            .as_ref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let rec = json!({
            "argv": argv,
            "env": env,
            "stdin": stdin,
            "prompt": prompt,
            "cwd": cwd,
            "codex_home": home.display().to_string(),
            "codex_home_mode": mode(home),
            "config_toml": fs::read_to_string(&config).ok(),
            "config_toml_mode": mode(&config),
            "codex_home_entries": entries(home),
            "output_schema": output_schema,
            "images": args.images,
            "pid": std::process::id(),
            // SAFETY: getpgrp cannot fail.
            "pgid": unsafe { libc::getpgrp() },
            "nofile": nofile(),
            "fds": open_fds(),
        });
        let Value::Object(map) = rec else {
            unreachable!()
        };
        Record(Some((dir.into(), map)))
    }

    /// Adds the thread and writes the file atomically (tmp + rename). `None` values
    /// mean the process failed before it had one (config_error, unknown resume id).
    pub fn finish(self, thread_id: Option<&str>, turn: Option<u64>) {
        let Some((dir, mut map)) = self.0 else { return };
        map.insert("thread_id".into(), json!(thread_id));
        map.insert("turn".into(), json!(turn));
        let name = file_name();
        let tmp = dir.join(format!("{name}.json.tmp"));
        let body = Value::Object(map).to_string();
        if let Err(e) =
            fs::write(&tmp, body).and_then(|()| fs::rename(&tmp, dir.join(format!("{name}.json"))))
        {
            crate::out::die(
                2,
                &format!("fake-codex: cannot write record in {}: {e}", dir.display()),
            );
        }
    }
}

/// `{fd: target}` for each descriptor this process holds (what it inherited,
/// since nothing else is open yet), but the one that lists them.
fn open_fds() -> Value {
    let own = format!("/proc/{}/fd", std::process::id());
    let mut out = Map::new();
    for entry in fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        if target != own {
            out.insert(
                entry.file_name().to_string_lossy().into_owned(),
                json!(target),
            );
        }
    }
    Value::Object(out)
}

/// `CODEX_RUNNER_RUN_ID` made safe for a file name, else the pid.
fn file_name() -> String {
    match std::env::var("CODEX_RUNNER_RUN_ID") {
        Ok(id) if !id.is_empty() => id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => std::process::id().to_string(),
    }
}

/// Permission bits (e.g. 448 for 0700) following symlinks, or null if missing.
fn mode(path: &Path) -> Value {
    fs::metadata(path)
        .map(|m| json!(m.permissions().mode() & 0o7777))
        .unwrap_or(Value::Null)
}

/// `{name: {kind, target}}` for each top-level entry, symlinks not followed.
fn entries(home: &Path) -> Value {
    let mut out = Map::new();
    for entry in fs::read_dir(home).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = match meta.file_type() {
            t if t.is_symlink() => "symlink",
            t if t.is_dir() => "dir",
            t if t.is_file() => "file",
            _ => "other",
        };
        let target = fs::read_link(&path).ok().map(|t| t.display().to_string());
        let name = entry.file_name().to_string_lossy().into_owned();
        out.insert(name, json!({ "kind": kind, "target": target }));
    }
    Value::Object(out)
}
