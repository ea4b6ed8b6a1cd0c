//! Load: 1,000 mixed turns through one daemon. Every run gets exactly one
//! `end` with the right code; memory, fds and turn dirs do not leak.
//! (Figures are printed for docs/reliability.md; no timing is asserted.)

use std::collections::HashMap;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::harness::{Daemon, READ_TIMEOUT};

const TURNS: usize = 1000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The scenario of turn `i` and the code its `end` must carry.
fn plan(i: usize) -> (serde_json::Value, Option<&'static str>, bool) {
    match i % 4 {
        0 => (
            json!({"FAKE_CODEX_SCENARIO": "many", "FAKE_CODEX_EVENTS": "20"}),
            None,
            false,
        ),
        1 => (
            json!({"FAKE_CODEX_SCENARIO": "turn_failed"}),
            Some("turn_failed"),
            false,
        ),
        2 => (
            json!({"FAKE_CODEX_SCENARIO": "hang"}),
            Some("cancelled"),
            true,
        ),
        _ => (
            json!({"FAKE_CODEX_SCENARIO": "hang"}),
            Some("timeout"),
            false,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_turns_each_end_once_without_leaks() {
    let mut d = Daemon::builder()
        .arg("--max-concurrent")
        .arg("64")
        .arg("--kill-grace")
        .arg("0.5")
        .env("RUST_LOG", "warn")
        .start()
        .await;
    let pid = d.pid();
    // One turn first, so start-up allocations are not counted as growth.
    d.run("warmup", json!({"prompt": "x"})).await;
    d.collect_one("warmup").await.assert_ok();
    // And the database template build that turn started (it fails for the
    // fake codex), whose pipes and files would otherwise be counted.
    d.wait_for_stderr("no codex database templates").await;
    let (rss_start, fds_start) = (rss_kib(pid), open_fds(pid));

    let mut stdin = d.take_stdin();
    let writer = tokio::spawn(async move {
        for i in 0..TURNS {
            let (env, _, cancel) = plan(i);
            let mut params = json!({"prompt": format!("turn {i}"), "env": env});
            if i % 4 == 3 {
                params["timeout_secs"] = json!(0.2);
            }
            let mut lines = serde_json::to_vec(
                &json!({"type": "run", "id": format!("L{i}"), "params": params}),
            )
            .unwrap();
            lines.push(b'\n');
            if cancel {
                lines.extend(
                    serde_json::to_vec(&json!({"type": "cancel", "id": format!("L{i}")})).unwrap(),
                );
                lines.push(b'\n');
            }
            stdin.write_all(&lines).await.unwrap();
        }
        stdin
    });

    let mut ends: HashMap<String, serde_json::Value> = HashMap::new();
    let mut rss_middle = 0;
    while ends.len() < TURNS {
        let line = d.next_line().await;
        assert_ne!(line["type"], "rejected", "{line}");
        if line["type"] == "end" {
            let id = line["id"].as_str().unwrap().to_owned();
            assert!(ends.insert(id.clone(), line).is_none(), "two ends for {id}");
            if ends.len() == TURNS / 2 {
                rss_middle = rss_kib(pid);
            }
        }
    }
    let stdin = tokio::time::timeout(READ_TIMEOUT, writer)
        .await
        .unwrap()
        .unwrap();
    let (rss_end, fds_end) = (rss_kib(pid), open_fds(pid));
    let leftover = d.leftover_turn_files();
    // Emptied homes kept for later turns: bounded (256), whatever the load.
    let kept = d.leftover_turn_dirs().len();

    for i in 0..TURNS {
        let end = &ends[&format!("L{i}")];
        let (_, code, _) = plan(i);
        assert_eq!(end["code"].as_str(), code, "turn {i}: {end}");
    }
    eprintln!("LOAD: {TURNS} turns; RSS KiB start {rss_start} middle {rss_middle} end {rss_end}; fds start {fds_start} end {fds_end}");
    assert!(leftover.is_empty(), "turn files leaked: {leftover:?}");
    assert!(kept <= 256, "{kept} turn dirs kept");
    assert_eq!(fds_end, fds_start, "fds leaked");
    assert!(
        rss_end <= rss_middle + rss_middle / 2 + 4096,
        "memory grew from {rss_middle} KiB (middle) to {rss_end} KiB (end)"
    );
    drop(stdin);
    let status = d.wait_exit().await;
    assert!(status.success());
}
