//! Parses `exec [FLAGS] [resume <THREAD_ID>] [PROMPT|-]` the way clap parses the real
//! CLI, and just as strictly: a flag codex 0.169.0 would reject fails here too (exit 2),
//! so a runner that passes a wrong flag is caught by the fake, not only in production.

/// The parsed command line. Flags we accept but do not act on are kept so a test can
/// inspect them through the record file (which also holds the raw argv).
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub json: bool,
    pub skip_git_repo_check: bool,
    pub strict_config: bool,
    pub ephemeral: bool,
    pub model: Option<String>,
    pub sandbox: Option<String>,
    pub cd: Option<String>,
    pub add_dirs: Vec<String>,
    pub output_schema: Option<String>,
    pub images: Vec<String>,
    pub profile: Option<String>,
    pub configs: Vec<String>,
    /// `Some(id)` for `exec resume <id>`.
    pub resume: Option<String>,
    /// The positional prompt; `None` or `Some("-")` means "read stdin".
    pub prompt: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A boolean flag; `--flag=value` is an error.
    Switch,
    /// Takes one value; giving it twice is an error (clap's default).
    Once,
    /// Takes one value per occurrence and may repeat.
    Many,
}

struct Spec {
    long: &'static str,
    short: Option<char>,
    kind: Kind,
    /// How clap names the value in its messages, e.g. `<MODEL>`.
    value_name: &'static str,
}

const fn spec(
    long: &'static str,
    short: Option<char>,
    kind: Kind,
    value_name: &'static str,
) -> Spec {
    Spec {
        long,
        short,
        kind,
        value_name,
    }
}

const SPECS: &[Spec] = &[
    spec("json", None, Kind::Switch, ""),
    // Hidden alias of --json used by the TypeScript SDK.
    spec("experimental-json", None, Kind::Switch, ""),
    spec("skip-git-repo-check", None, Kind::Switch, ""),
    spec("strict-config", None, Kind::Switch, ""),
    spec("ephemeral", None, Kind::Switch, ""),
    spec("model", Some('m'), Kind::Once, "<MODEL>"),
    spec("sandbox", Some('s'), Kind::Once, "<SANDBOX_MODE>"),
    spec("cd", Some('C'), Kind::Once, "<DIR>"),
    spec("add-dir", None, Kind::Many, "<DIR>"),
    spec("output-schema", None, Kind::Once, "<FILE>"),
    spec("image", Some('i'), Kind::Many, "<FILE>"),
    spec("profile", Some('p'), Kind::Once, "<CONFIG_PROFILE>"),
    spec("config", Some('c'), Kind::Many, "<key=value>"),
];

const SANDBOX_MODES: &[&str] = &["read-only", "workspace-write", "danger-full-access"];

const USAGE: &str = "Usage: codex exec [OPTIONS] [PROMPT]\n       codex exec [OPTIONS] <COMMAND>";

/// A clap-like error message: the caller prints it to stderr and exits 2.
fn error(msg: String) -> String {
    format!("error: {msg}\n\n{USAGE}\n\nFor more information, try '--help'.")
}

/// Parses everything after argv[0].
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut it = argv.iter();
    match it.next().map(String::as_str) {
        Some("exec") => {}
        Some(other) => return Err(error(format!("unrecognized subcommand '{other}'"))),
        None => {
            return Err(error(
                "fake-codex only implements the 'exec' subcommand".into(),
            ))
        }
    }
    let mut args = Args::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    let mut only_positional = false;
    while let Some(tok) = it.next() {
        if only_positional || tok == "-" || !tok.starts_with('-') {
            positional.push(tok.clone());
            continue;
        }
        if tok == "--" {
            only_positional = true;
            continue;
        }
        let (spec, inline) = lookup(tok)?;
        let shown = format!("--{} {}", spec.long, spec.value_name);
        if spec.kind != Kind::Many && seen.contains(&spec.long) {
            return Err(error(format!(
                "the argument '{}' cannot be used multiple times",
                shown.trim()
            )));
        }
        seen.push(spec.long);
        // codex 0.169.0's `exec resume` subcommand has no -C (see codex-facts.md):
        // the runner must put `-C dir` before `resume`.
        if spec.long == "cd" && positional.first().is_some_and(|p| p == "resume") {
            return Err(error(format!("unexpected argument '{tok}' found")));
        }
        let value = match (spec.kind, inline) {
            (Kind::Switch, Some(_)) => {
                return Err(error(format!(
                    "unexpected value for '--{}' found; no more were expected",
                    spec.long
                )))
            }
            (Kind::Switch, None) => String::new(),
            (_, Some(v)) => v,
            (_, None) => it.next().cloned().ok_or_else(|| {
                error(format!(
                    "a value is required for '{shown}' but none was supplied"
                ))
            })?,
        };
        apply(&mut args, spec.long, value)?;
    }
    take_positionals(&mut args, positional)?;
    Ok(args)
}

/// Finds the spec for `--long`, `--long=v`, `-s`, `-sV` or `-s=V`; returns any inline value.
fn lookup(tok: &str) -> Result<(&'static Spec, Option<String>), String> {
    let unknown = || error(format!("unexpected argument '{tok}' found"));
    if let Some(body) = tok.strip_prefix("--") {
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let spec = SPECS.iter().find(|s| s.long == name).ok_or_else(unknown)?;
        return Ok((spec, inline));
    }
    let mut chars = tok[1..].chars();
    let c = chars.next().ok_or_else(unknown)?;
    let spec = SPECS
        .iter()
        .find(|s| s.short == Some(c))
        .ok_or_else(unknown)?;
    let rest = chars.as_str();
    let inline = match rest {
        "" => None,
        _ => Some(rest.strip_prefix('=').unwrap_or(rest).to_string()),
    };
    Ok((spec, inline))
}

fn apply(args: &mut Args, long: &str, value: String) -> Result<(), String> {
    match long {
        "json" | "experimental-json" => args.json = true,
        "skip-git-repo-check" => args.skip_git_repo_check = true,
        "strict-config" => args.strict_config = true,
        "ephemeral" => args.ephemeral = true,
        "model" => args.model = Some(value),
        "sandbox" => {
            if !SANDBOX_MODES.contains(&value.as_str()) {
                return Err(error(format!(
                    "invalid value '{value}' for '--sandbox <SANDBOX_MODE>'\n  [possible values: {}]",
                    SANDBOX_MODES.join(", ")
                )));
            }
            args.sandbox = Some(value);
        }
        "cd" => args.cd = Some(value),
        "add-dir" => args.add_dirs.push(value),
        "output-schema" => args.output_schema = Some(value),
        // The real flag is `<FILE>...` with a ',' delimiter.
        "image" => args.images.extend(value.split(',').map(str::to_string)),
        "profile" => args.profile = Some(value),
        "config" => args.configs.push(value),
        _ => unreachable!("every spec is handled"),
    }
    Ok(())
}

/// `[resume <ID>] [PROMPT]`: at most one prompt, and `resume` needs an id.
fn take_positionals(args: &mut Args, positional: Vec<String>) -> Result<(), String> {
    let mut it = positional.into_iter();
    let mut next = it.next();
    if next.as_deref() == Some("resume") {
        let id = it
            .next()
            .ok_or_else(|| error("fake-codex needs 'resume <THREAD_ID>' (no --last)".into()))?;
        args.resume = Some(id);
        next = it.next();
    }
    args.prompt = next;
    match it.next() {
        Some(extra) => Err(error(format!("unexpected argument '{extra}' found"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn long_short_and_inline_forms() {
        let a = p("exec --json -m gpt --sandbox=read-only -Cdir --add-dir a --add-dir=b -c x=1 -c=y=2 -i a.png,b.png --image c.png -p=prof -").unwrap();
        assert!(a.json);
        assert_eq!(a.model.as_deref(), Some("gpt"));
        assert_eq!(a.sandbox.as_deref(), Some("read-only"));
        assert_eq!(a.cd.as_deref(), Some("dir"));
        assert_eq!(a.add_dirs, ["a", "b"]);
        assert_eq!(a.configs, ["x=1", "y=2"]);
        assert_eq!(a.images, ["a.png", "b.png", "c.png"]);
        assert_eq!(a.profile.as_deref(), Some("prof"));
        assert_eq!(a.prompt.as_deref(), Some("-"));
        assert_eq!(a.resume, None);
    }

    #[test]
    fn resume_with_flags_on_both_sides() {
        let a =
            p("exec --experimental-json -C d resume 0190-abc --skip-git-repo-check hello").unwrap();
        assert!(a.json && a.skip_git_repo_check);
        assert_eq!(a.resume.as_deref(), Some("0190-abc"));
        assert_eq!(a.prompt.as_deref(), Some("hello"));
        assert!(
            p("exec --json resume id -C d").is_err(),
            "-C after resume is rejected"
        );
        assert!(p("exec --json resume").is_err());
    }

    #[test]
    fn errors() {
        assert!(p("review --json")
            .unwrap_err()
            .contains("unrecognized subcommand"));
        assert!(p("exec --json --frobnicate")
            .unwrap_err()
            .contains("'--frobnicate'"));
        assert!(p("exec --json=1").is_err());
        assert!(p("exec --json -m").is_err());
        assert!(p("exec --json -m a -m b")
            .unwrap_err()
            .contains("multiple times"));
        assert!(p("exec --json -s bogus").is_err());
        assert!(p("exec --json one two").is_err());
        assert_eq!(
            p("exec -- --json").unwrap().prompt.as_deref(),
            Some("--json")
        );
        assert!(!p("exec hi").unwrap().json);
    }
}
