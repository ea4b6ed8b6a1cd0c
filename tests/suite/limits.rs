//! The daemon's limit on open files: raised so that it does not cap how
//! many turns run at once, given back to codex, and, where it cannot be
//! raised far enough, a warning at start and a clear `end` for every run
//! that cannot start, never a lost one.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::harness::Daemon;

/// Starts `ids` as hanging turns and reads until each has either started
/// (`turn.started`) or ended; returns the ends.
async fn start_hanging(d: &mut Daemon, ids: &[String]) -> Vec<Value> {
    for id in ids {
        d.run(
            id,
            json!({"prompt": "x", "env": {"FAKE_CODEX_SCENARIO": "hang"}}),
        )
        .await;
    }
    let mut settled = HashSet::new();
    let mut ends = Vec::new();
    while settled.len() < ids.len() {
        let line = d.next_line().await;
        let id = line["id"].as_str().unwrap_or_default().to_owned();
        if line["type"] == "end" {
            ends.push(line);
            settled.insert(id);
        } else if line["event"]["type"] == "turn.started" {
            settled.insert(id);
        }
    }
    ends
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn a_low_soft_limit_on_open_files_does_not_cap_running_turns() {
    // 64 descriptors hold about 5 running turns; the hard limit, far more.
    let mut d = Daemon::builder()
        .open_files_limit(64, None)
        .arg("--max-concurrent")
        .arg("40")
        .start()
        .await;
    let hanging = ids("h", 40);
    let ends = start_hanging(&mut d, &hanging).await;
    assert!(ends.is_empty(), "runs ended before they ran: {ends:?}");
    assert_eq!(
        d.record("h0")["nofile"][0],
        64,
        "codex gets the limit the daemon was started with"
    );
    for id in &hanging {
        d.cancel(id).await;
    }
    let refs: Vec<&str> = hanging.iter().map(String::as_str).collect();
    let (runs, _) = d.collect(&refs).await;
    for (id, run) in &runs {
        assert_eq!(run.code(), Some("cancelled"), "{id}: {}", run.end);
    }
    d.assert_clean_exit().await;
}

#[tokio::test]
async fn a_limit_too_low_for_max_concurrent_is_warned_of_and_every_run_still_ends() {
    // Soft and hard at 48: room for a handful of running turns only.
    let mut d = Daemon::builder()
        .open_files_limit(48, Some(48))
        .arg("--max-concurrent")
        .arg("16")
        .start()
        .await;
    d.wait_for_stderr("the limit on open files holds about")
        .await;

    let hanging = ids("h", 12);
    let ends = start_hanging(&mut d, &hanging).await;
    assert!(!ends.is_empty(), "12 hanging turns fit in 48 descriptors?");
    for end in &ends {
        let error = end["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("open files")
                && matches!(end["code"].as_str(), Some("spawn_failed" | "config_error")),
            "not a clear end: {end}"
        );
    }
    let ended: HashSet<&str> = ends.iter().filter_map(|e| e["id"].as_str()).collect();
    let running: Vec<&str> = hanging
        .iter()
        .map(String::as_str)
        .filter(|id| !ended.contains(id))
        .collect();
    assert!(!running.is_empty(), "no turn could start at all");
    for id in &running {
        d.cancel(id).await;
    }
    let (runs, _) = d.collect(&running).await;
    for (id, run) in &runs {
        assert_eq!(run.code(), Some("cancelled"), "{id}: {}", run.end);
    }
    // Descriptors are back: a new turn runs.
    d.run("after", json!({"prompt": "x"})).await;
    d.collect_one("after").await.assert_ok();
    d.assert_clean_exit().await;
}
