//! The argv and environment of one `codex exec --json` turn (pure, tested).
//!
//! Every option is passed as one `--flag=value` element, so no request value
//! can ever be read as another flag. Secrets are never in argv: header values
//! live in the private config.toml, env values in the child's environment.

use std::ffi::OsString;
use std::path::Path;

use runner_protocol::{RunParams, SandboxMode};

use crate::codex_bin::CodexBin;

/// Env var naming the run, for hooks, the commands the model runs and test
/// doubles. A stdio MCP server gets only the variables codex passes it (its
/// `env`, `env_vars` and a fixed few): it sees this one only if listed in
/// its `env_vars`; an HTTP server gets the run id as a header instead.
pub const RUN_ID_ENV: &str = "CODEX_RUNNER_RUN_ID";
/// Env var of the existing protocol carrying `agent_instance_hierarchy`.
pub const HIERARCHY_ENV: &str = "OBJECTIVEAI_AGENT_INSTANCE_HIERARCHY";

/// Arguments after the program name.
pub fn codex_args(p: &RunParams, output_schema: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "exec".into(),
        "--json".into(),
        "--skip-git-repo-check".into(),
    ];
    let mut flag = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
        let mut arg = OsString::from(format!("--{name}="));
        arg.push(value.as_ref());
        args.push(arg);
    };
    if let Some(model) = &p.model {
        flag("model", model);
    }
    if let Some(sandbox) = p.sandbox {
        flag(
            "sandbox",
            &match sandbox {
                SandboxMode::ReadOnly => "read-only",
                SandboxMode::WorkspaceWrite => "workspace-write",
                SandboxMode::DangerFullAccess => "danger-full-access",
            },
        );
    }
    // `exec resume` has no --cd, --add-dir or --profile: they go before it.
    if let Some(cwd) = &p.cwd {
        flag("cd", cwd);
    }
    for dir in &p.additional_directories {
        flag("add-dir", dir);
    }
    if let Some(profile) = &p.profile {
        flag("profile", profile);
    }
    if let Some(schema) = output_schema {
        flag("output-schema", &schema);
    }
    for image in p.images() {
        flag("image", &image);
    }
    if let Some(thread) = &p.resume {
        args.push("resume".into());
        args.push(thread.into());
    }
    // The prompt comes on stdin, which is then closed.
    args.push("-".into());
    args
}

/// Environment changes for the child, applied over the daemon's own.
pub fn codex_env(
    p: &RunParams,
    run_id: &str,
    home: &Path,
    bin: &CodexBin,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> =
        p.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    if let Some(hierarchy) = &p.agent_instance_hierarchy {
        env.push((HIERARCHY_ENV.into(), hierarchy.into()));
    }
    // Without this, error messages inside JSON items carry backtraces; a
    // request that asks for them gets them.
    if !p.env.contains_key("RUST_BACKTRACE") {
        env.push(("RUST_BACKTRACE".into(), "0".into()));
    }
    env.push(("CODEX_HOME".into(), home.into()));
    env.push((RUN_ID_ENV.into(), run_id.into()));
    if bin.path_prepend.is_some() {
        let base = p
            .env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        env.push(("PATH".into(), bin.child_path(base)));
        // What the npm launcher tells codex about how it was installed.
        env.push(("CODEX_MANAGED_BY_NPM".into(), "1".into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn params(v: serde_json::Value) -> RunParams {
        serde_json::from_value(v).unwrap()
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn fresh_turn_argv() {
        let p = params(serde_json::json!({
            "model": "gpt-5.5", "sandbox": "workspace-write", "cwd": "/w",
            "additional_directories": ["/a", "-b"], "profile": "work",
            "input": {"content": [{"type": "text", "text": "hi"}, {"type": "local_image", "path": "/i.png"}]}
        }));
        assert_eq!(
            strings(codex_args(&p, Some(Path::new("/h/schema.json")))),
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--model=gpt-5.5",
                "--sandbox=workspace-write",
                "--cd=/w",
                "--add-dir=/a",
                "--add-dir=-b",
                "--profile=work",
                "--output-schema=/h/schema.json",
                "--image=/i.png",
                "-"
            ]
        );
    }

    #[test]
    fn resume_goes_after_the_flags_it_lacks() {
        let p = params(serde_json::json!({"prompt": "x", "cwd": "/w", "resume": "t-1"}));
        assert_eq!(
            strings(codex_args(&p, None)),
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--cd=/w",
                "resume",
                "t-1",
                "-"
            ]
        );
    }

    #[test]
    fn env_carries_home_run_id_and_request_env_but_argv_no_secrets() {
        let p = params(
            serde_json::json!({"prompt": "x", "env": {"SECRET": "s3cret", "PATH": "/usr/bin"},
            "agent_instance_hierarchy": "a/b",
            "mcp_servers": {"m": {"url": "http://h/", "http_headers": {"Authorization": "Bearer s3cret"}}}}),
        );
        let bin = CodexBin {
            program: PathBuf::from("/x/codex"),
            path_prepend: Some(PathBuf::from("/x/codex-path")),
            launcher: None,
        };
        let env = codex_env(&p, "r1", Path::new("/h"), &bin);
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("CODEX_HOME").as_deref(), Some("/h"));
        assert_eq!(get(RUN_ID_ENV).as_deref(), Some("r1"));
        assert_eq!(get(HIERARCHY_ENV).as_deref(), Some("a/b"));
        assert_eq!(get("SECRET").as_deref(), Some("s3cret"));
        assert_eq!(get("RUST_BACKTRACE").as_deref(), Some("0"));
        assert_eq!(get("PATH").as_deref(), Some("/x/codex-path:/usr/bin"));
        assert!(strings(codex_args(&p, None))
            .iter()
            .all(|a| !a.contains("s3cret")));

        // A request that asks for backtraces gets them.
        let p = params(serde_json::json!({"prompt": "x", "env": {"RUST_BACKTRACE": "1"}}));
        let env = codex_env(&p, "r1", Path::new("/h"), &bin);
        let backtrace: Vec<_> = env.iter().filter(|(n, _)| n == "RUST_BACKTRACE").collect();
        assert_eq!(backtrace, [&("RUST_BACKTRACE".into(), "1".into())]);
    }
}
