//! `codex-runner check`: validate requests and show what each turn would get
//! (its config.toml and argv), secrets redacted, without spawning codex.
//!
//! One JSON line per request line on stdout:
//! `{"type":"check","line":1,"id":"r1","ok":true,"program":"/…/codex","argv":[...],"env":[names],"config_toml":"..."}`
//! or `{"type":"check","line":2,"id":"r2","ok":false,"code":"invalid_params","error":"..."}`.
//! A request that is valid but may still not run as meant (a codex that
//! cannot be run, an id used twice, a cancel of no run) is `ok` with
//! `warnings`: whether it fails depends on what is live when it arrives.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use runner_protocol::{codes, decode_request, Request, RunParams};
use toml_edit::{DocumentMut, Item, Value};

use crate::codex_home::HomeSettings;
use crate::command::codex_args;
use crate::config_toml;

/// Shown instead of every secret value.
const REDACTED: &str = "[redacted]";

/// What the daemon would be given to check against.
pub struct CheckSettings<'a> {
    /// The base home whose config.toml the turns' configs are made from.
    pub home: &'a HomeSettings,
    /// `--max-request-bytes`.
    pub max_line: usize,
    /// The codex program the turns would run, or why none can be.
    pub program: Result<PathBuf, String>,
}

/// Checks every line of `input`, writing verdicts to `output`; a line over
/// `max_line` bytes is refused as the daemon's `--max-request-bytes` would.
/// Returns how many requests were refused.
pub fn run(
    settings: &CheckSettings,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<u64> {
    let mut refused = 0;
    // Each run id with the line that first ran it.
    let mut runs: HashMap<String, u64> = HashMap::new();
    for (index, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line_no = index as u64 + 1;
        let line = crate::reader::without_bom(line_no, &line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut verdict = check_line(settings.home, line_no, line, settings.max_line);
        if !verdict.ok {
            refused += 1;
        } else {
            add_warnings(&mut verdict, settings, &mut runs);
        }
        serde_json::to_writer(&mut output, &verdict)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    Ok(refused)
}

/// One verdict; fields in this order, `type` first like every protocol line.
#[derive(Debug, Default, serde::Serialize)]
struct Verdict {
    #[serde(rename = "type")]
    kind: &'static str,
    line: u64,
    id: Option<String>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    program: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_toml: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// What may still go wrong with an accepted request: said, not refused,
/// since it depends on what is live when the daemon reads it.
fn add_warnings(verdict: &mut Verdict, settings: &CheckSettings, runs: &mut HashMap<String, u64>) {
    let id = verdict.id.clone().unwrap_or_default();
    match verdict.request {
        Some("run") => {
            match &settings.program {
                Ok(program) => verdict.program = Some(program.display().to_string()),
                Err(why) => verdict.warnings.push(format!(
                    "{why}: the run would end with {}",
                    codes::END_SPAWN_FAILED
                )),
            }
            if let Some(first) = runs.get(&id) {
                verdict.warnings.push(format!(
                    "id {id:?} is also line {first}'s: refused with {} if that run has not ended",
                    codes::REJECT_DUPLICATE_ID
                ));
            } else {
                runs.insert(id, verdict.line);
            }
        }
        Some("cancel") if !runs.contains_key(&id) => verdict.warnings.push(format!(
            "no earlier line runs {id:?}: rejected with {} unless a run of that id is live",
            codes::REJECT_UNKNOWN_ID
        )),
        _ => {}
    }
}

fn check_line(home: &HomeSettings, line: u64, bytes: &[u8], max_line: usize) -> Verdict {
    let base = |id: Option<String>, ok: bool| Verdict {
        kind: "check",
        line,
        id,
        ok,
        ..Verdict::default()
    };
    let refuse = |id: Option<String>, code: &str, error: String| Verdict {
        code: Some(code.to_owned()),
        error: Some(error),
        ..base(id, false)
    };
    if bytes.len() > max_line {
        let error = crate::reader::too_long(bytes.len(), max_line);
        return refuse(None, codes::REJECT_LINE_TOO_LONG, error);
    }
    match decode_request(bytes) {
        Err(r) => refuse(r.request_id, r.code, r.message),
        Ok(Request::Cancel { id }) => Verdict {
            request: Some("cancel"),
            ..base(Some(id), true)
        },
        Ok(Request::Status { request_id }) => Verdict {
            request: Some("status"),
            ..base(request_id, true)
        },
        Ok(Request::Run { id, params: Err(e) }) => {
            refuse(Some(id), codes::END_INVALID_PARAMS, e.message)
        }
        Ok(Request::Run { id, params: Ok(p) }) => match crate::turn::check_paths(&p)
            .map_err(|e| (codes::END_INVALID_PARAMS, e))
            .and_then(|()| preview(home, &id, &p).map_err(|e| (codes::END_CONFIG_ERROR, e)))
        {
            Ok(config) => {
                let schema = p
                    .output_schema
                    .as_ref()
                    .map(|_| std::path::Path::new("$CODEX_HOME/output-schema.json"));
                let argv = codex_args(&p, schema)
                    .into_iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                Verdict {
                    request: Some("run"),
                    argv: Some(argv),
                    env: Some(p.env.keys().cloned().collect()),
                    config_toml: Some(config),
                    ..base(Some(id), true)
                }
            }
            Err((code, e)) => refuse(Some(id), code, e),
        },
    }
}

/// The turn's config.toml with every secret value replaced, or why the
/// daemon would end the run with `config_error` (as it words it).
fn preview(home: &HomeSettings, id: &str, p: &RunParams) -> Result<String, String> {
    let path = home.base_home.join("config.toml");
    let base = match crate::codex_home::read_config(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(crate::diag::chain(&crate::codex_home::HomeError::Io {
                what: "reading",
                path,
                source,
            }))
        }
    };
    let mut doc = config_toml::parse_base(base.as_deref()).map_err(|e| e.to_string())?;
    config_toml::synthesize(&mut doc, id, p).map_err(|e| e.to_string())?;
    redact(&mut doc);
    Ok(doc.to_string())
}

/// Replaces what config.toml holds credentials in, wherever it is: every
/// value of an `http_headers` table (MCP servers, model providers,
/// profiles), of an MCP server's `env` and of `shell_environment_policy.set`;
/// a value whose key names a token, secret, password or API key (but not
/// the name of a variable holding one: `bearer_token_env_var`); and in a
/// URL, the password and the values of a query.
fn redact(doc: &mut DocumentMut) {
    redact_table(doc.as_table_mut(), &mut Vec::new());
}

fn redact_table(table: &mut dyn toml_edit::TableLike, path: &mut Vec<String>) {
    for (key, item) in table.iter_mut() {
        let key = key.get().to_owned();
        let secret_map = matches!(key.as_str(), "http_headers" | "headers" | "query_params")
            || (key == "env" && path.first().is_some_and(|k| k == "mcp_servers"))
            || (key == "set" && path.last().is_some_and(|k| k == "shell_environment_policy"));
        match item {
            Item::ArrayOfTables(tables) => {
                path.push(key);
                for table in tables.iter_mut() {
                    redact_table(table, path);
                }
                path.pop();
            }
            _ if item.is_table_like() => {
                let inner = item.as_table_like_mut().expect("a table");
                if secret_map {
                    for (_, value) in inner.iter_mut() {
                        *value = Item::Value(Value::from(REDACTED));
                    }
                } else {
                    path.push(key);
                    redact_table(inner, path);
                    path.pop();
                }
            }
            _ if item.is_array() => {
                let array = item.as_array_mut().expect("an array");
                if names_a_secret(&key) {
                    for value in array.iter_mut() {
                        if value.is_str() {
                            *value = Value::from(REDACTED);
                        }
                    }
                } else {
                    redact_args(array);
                    path.push(key);
                    redact_array_tables(array, path);
                    path.pop();
                }
            }
            _ => {
                let Some(text) = item.as_str() else { continue };
                if names_a_secret(&key) {
                    *item = Item::Value(Value::from(REDACTED));
                } else if text.contains("://") {
                    let redacted = redact_url(text);
                    if redacted != text {
                        *item = Item::Value(Value::from(redacted));
                    }
                }
            }
        }
    }
}

fn names_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    [
        "token",
        "secret",
        "password",
        "key",
        "auth",
        "credential",
        "private",
    ]
    .iter()
    .any(|word| key.contains(word))
        && !key.ends_with("_env_var")
        && !key.ends_with("_env")
}

/// A command's arguments (a stdio server's `args`, `notify`): a string
/// holding a bearer credential, and the value after a flag naming a secret
/// (`--token X`, `--api-key X`; `--token=X` too), are replaced.
fn redact_args(array: &mut toml_edit::Array) {
    let mut after_secret_flag = false;
    for value in array.iter_mut() {
        let Some(text) = value.as_str() else {
            after_secret_flag = false;
            continue;
        };
        let flag = text.strip_prefix('-').map(|t| t.trim_start_matches('-'));
        let replaced = if after_secret_flag || text.contains("Bearer ") {
            Some(REDACTED.to_owned())
        } else {
            match text.split_once('=') {
                Some((head, _))
                    if flag.is_some() && names_a_secret(head.trim_start_matches('-')) =>
                {
                    Some(format!("{head}={REDACTED}"))
                }
                // A URL argument (`--url http://u:p@h/?key=…`).
                _ if text.contains("://") => {
                    Some(redact_url(text)).filter(|redacted| redacted != text)
                }
                _ => None,
            }
        };
        after_secret_flag = flag.is_some_and(|f| !f.contains('=') && names_a_secret(f));
        if let Some(replaced) = replaced {
            *value = Value::from(replaced);
        }
    }
}

/// Tables inside an array (`[{ url = …, http_headers = … }]`), and arrays
/// inside it, are redacted as tables elsewhere are.
fn redact_array_tables(array: &mut toml_edit::Array, path: &mut Vec<String>) {
    for value in array.iter_mut() {
        match value {
            Value::InlineTable(table) => redact_table(table, path),
            Value::Array(inner) => {
                redact_args(inner);
                redact_array_tables(inner, path);
            }
            _ => {}
        }
    }
}

/// `url` with its password and the values of its query replaced.
fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(password) = crate::diag::url_password(url) {
        out = out.replacen(&format!(":{password}@"), &format!(":{REDACTED}@"), 1);
    }
    let Some(start) = out.find('?') else {
        return out;
    };
    let end = out[start..].find('#').map_or(out.len(), |i| start + i);
    let query: Vec<String> = out[start + 1..end]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}={REDACTED}"),
            // `?token`: a value without a name.
            None if !pair.is_empty() => REDACTED.to_owned(),
            None => String::new(),
        })
        .collect();
    format!("{}?{}{}", &out[..start], query.join("&"), &out[end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_url_keeps_its_query_names_but_no_value() {
        assert_eq!(
            redact_url("https://u:pw@h/p?a=1&t0ken&&b=#f"),
            format!("https://u:{REDACTED}@h/p?a={REDACTED}&{REDACTED}&&b={REDACTED}#f")
        );
    }

    #[test]
    fn previews_config_and_argv_with_secrets_redacted() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(
            base.path().join("config.toml"),
            concat!(
                "experimental_bearer_token = \"top-secret-1\"\n",
                "[mcp_servers.mine]\nurl = \"http://bot:url-secret@h/\"\nhttp_headers = { Authorization = \"Bearer base-secret\" }\n",
                "bearer_token_env_var = \"MINE_TOKEN\"\n",
                "[model_providers.azure]\nbase_url = \"https://h/v1?api-version=1&key=query-secret#x\"\n",
                "http_headers = { \"api-key\" = \"provider-secret\" }\n",
                "[shell_environment_policy.set]\nPASS = \"shell-secret\"\n",
                "[mcp_servers.local]\ncommand = \"srv\"\nargs = [\"--token\", \"arg-secret\", \"--api-key=arg-secret-2\", \"-v\"]\n",
                "[otel.exporter.otlp-http]\nendpoint = \"https://otel\"\nheaders = { \"x-team\" = \"otel-secret\" }\n",
                "[model_providers.q]\nquery_params = { api-version = \"v\", sig = \"qp-secret\" }\n",
                "[extra]\napi-key = \"dash-secret\"\nprivate_key = \"pk-secret\"\n",
                "notify = [\"curl\", \"-H\", \"Authorization: Bearer notify-secret\"]\n",
                "[mcp_servers.proxy]\ncommand = \"p\"\nargs = [\"--upstream\", \"https://u:argurl-secret@h/?k=argq-secret\"]\n",
                "[nested]\nlist = [{ url = \"http://h/?sig=nested-url-secret\", token = \"nested-secret\" }, [\"--password\", \"deep-secret\"]]\n",
            ),
        )
        .unwrap();
        let home = home_in(base.path());
        // Saved by a Windows tool: a byte order mark first, read past.
        let input = concat!(
            "\u{feff}",
            r#"{"type":"run","id":"a","params":{"prompt":"x","model":"m","env":{"K":"env-secret"},"mcp_servers":{"s":{"url":"http://h/","http_headers":{"Authorization":"Bearer req-secret"}}}}}"#,
            "\n\n",
            r#"{"type":"run","id":"b","params":{"prompt":"x","mcp_servers":{"s":{"url":"ftp://h"}}}}"#,
            "\nnot json\n",
        );
        // Over the limit given (1024), as `--max-request-bytes` would refuse it.
        let too_long = format!(
            "{{\"type\":\"run\",\"id\":\"c\",\"params\":{{\"prompt\":\"{}\"}}}}\n",
            "x".repeat(1024)
        );
        let input = format!("{input}{too_long}");
        let mut out = Vec::new();
        let refused = run(&with_program(&home), input.as_bytes(), &mut out).unwrap();
        assert_eq!(refused, 3);
        let text = String::from_utf8(out).unwrap();
        for secret in [
            "base-secret",
            "req-secret",
            "env-secret",
            "url-secret",
            "top-secret-1",
            "query-secret",
            "provider-secret",
            "shell-secret",
            "arg-secret",
            "arg-secret-2",
            "otel-secret",
            "qp-secret",
            "dash-secret",
            "pk-secret",
            "notify-secret",
            "argurl-secret",
            "argq-secret",
            "nested-url-secret",
            "nested-secret",
            "deep-secret",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        // What is no secret stays, so the preview still shows the config.
        for kept in ["--token", "-v", "https://otel", "api-version"] {
            assert!(text.contains(kept), "{kept} was redacted: {text}");
        }
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["env"], json!(["K"]));
        assert!(lines[0]["argv"]
            .as_array()
            .unwrap()
            .contains(&json!("--model=m")));
        let config: DocumentMut = lines[0]["config_toml"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            config["mcp_servers"]["s"]["http_headers"]["X-Codex-Runner-Run-Id"].as_str(),
            Some(REDACTED)
        );
        assert_eq!(config["mcp_servers"]["s"]["required"].as_bool(), Some(true));
        assert_eq!(
            config["mcp_servers"]["mine"]["url"].as_str(),
            Some("http://bot:[redacted]@h/")
        );
        // The name of a variable is no secret; where a URL goes is not either.
        assert_eq!(
            config["mcp_servers"]["mine"]["bearer_token_env_var"].as_str(),
            Some("MINE_TOKEN")
        );
        assert_eq!(
            config["model_providers"]["azure"]["base_url"].as_str(),
            Some("https://h/v1?api-version=[redacted]&key=[redacted]#x")
        );
        assert_eq!(lines[1]["line"], 3);
        assert_eq!(
            (lines[1]["ok"].as_bool(), lines[1]["code"].as_str()),
            (Some(false), Some("invalid_params"))
        );
        assert_eq!(lines[2]["code"], "malformed_json");
        assert_eq!(lines[3]["code"], "line_too_long");
        assert_eq!(lines[3]["line"], 5);
    }

    /// A base home that is also the turn root.
    fn home_in(dir: &std::path::Path) -> HomeSettings {
        HomeSettings {
            base_home: dir.to_path_buf(),
            turn_root: dir.to_path_buf(),
            idle: Default::default(),
            templates: Default::default(),
        }
    }

    fn with_program(home: &HomeSettings) -> CheckSettings<'_> {
        CheckSettings {
            home,
            max_line: 1024,
            program: Ok(PathBuf::from("/opt/codex/bin/codex")),
        }
    }

    /// What the daemon would do with a valid line can depend on what is live
    /// when it comes, and on codex: said beside `ok`, which stays true.
    #[test]
    fn warns_of_reused_ids_cancels_of_no_run_and_a_codex_that_cannot_run() {
        let base = tempfile::tempdir().unwrap();
        let home = home_in(base.path());
        let input = concat!(
            r#"{"type":"cancel","id":"a"}"#,
            "\n",
            r#"{"type":"run","id":"a","params":{"prompt":"x"}}"#,
            "\n",
            r#"{"type":"cancel","id":"a"}"#,
            "\n",
            r#"{"type":"run","id":"a","params":{"prompt":"y"}}"#,
            "\n",
        );
        let mut settings = with_program(&home);
        let verdicts = |settings: &CheckSettings| {
            let mut out = Vec::new();
            assert_eq!(run(settings, input.as_bytes(), &mut out).unwrap(), 0);
            String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .collect::<Vec<_>>()
        };
        let lines = verdicts(&settings);
        assert!(lines.iter().all(|l| l["ok"] == true), "{lines:?}");
        assert_eq!(
            lines[0]["warnings"],
            json!([
                r#"no earlier line runs "a": rejected with unknown_id unless a run of that id is live"#
            ])
        );
        assert_eq!(lines[1]["program"], "/opt/codex/bin/codex");
        assert!(lines[1].get("warnings").is_none(), "{}", lines[1]);
        assert!(lines[2].get("warnings").is_none(), "{}", lines[2]);
        assert_eq!(
            lines[3]["warnings"],
            json!([
                r#"id "a" is also line 2's: refused with duplicate_id if that run has not ended"#
            ])
        );

        settings.program = Err("codex executable \"codex\" not found on PATH".to_owned());
        let lines = verdicts(&settings);
        assert!(lines[1].get("program").is_none(), "{}", lines[1]);
        assert_eq!(
            lines[1]["warnings"],
            json!([
                r#"codex executable "codex" not found on PATH: the run would end with spawn_failed"#
            ])
        );
    }

    /// As the daemon, which checks them when the turn starts.
    #[test]
    fn paths_that_do_not_exist_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let home = home_in(base.path());
        let line = br#"{"type":"run","id":"a","params":{"prompt":"x","cwd":"/nonexistent/dir"}}"#;
        let mut out = Vec::new();
        assert_eq!(run(&with_program(&home), &line[..], &mut out).unwrap(), 1);
        let verdict: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(verdict["code"], "invalid_params", "{verdict}");
        assert!(
            verdict["error"]
                .as_str()
                .unwrap()
                .starts_with("params.cwd:"),
            "{verdict}"
        );
    }

    /// As the daemon does: a base config.toml that cannot be read is the
    /// run's `config_error`, never a config without it, nor a hang on a FIFO.
    #[test]
    fn an_unreadable_base_config_is_a_config_error() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("config.toml");
        let fifo =
            std::ffi::CString::new(path.clone().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let home = home_in(base.path());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let line = br#"{"type":"run","id":"a","params":{"prompt":"x"}}"#;
            let refused = run(&with_program(&home), &line[..], &mut out).unwrap();
            let _ = tx.send((refused, String::from_utf8(out).unwrap()));
        });
        let (refused, text) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("check hung on the FIFO");
        assert_eq!(refused, 1, "{text}");
        let verdict: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(verdict["code"], "config_error", "{verdict}");
        assert_eq!(
            verdict["error"],
            format!(
                "cannot prepare the turn's CODEX_HOME: reading {}: not a regular file",
                path.display()
            )
        );
    }
}
