use super::*;
use serde_json::json;

const BASE: &str = r#"# my codex config
model = "gpt-5.5"   # keep me

[mcp_servers.base_http]
url = "http://127.0.0.1:1/mcp"
http_headers = { "Authorization" = "Bearer base" }

[mcp_servers.sets_its_own]
url = "http://127.0.0.1:2/mcp"
http_headers = { "x-codex-runner-run-id" = "fixed" }

[mcp_servers.base_stdio]
command = "srv"
"#;

fn params(v: serde_json::Value) -> RunParams {
    serde_json::from_value(v).unwrap()
}

/// The config as rendered without a template.
fn direct(base: Option<&DocumentMut>, run_id: &str, p: &RunParams) -> String {
    let mut doc = base.cloned().unwrap_or_default();
    config_toml::synthesize(&mut doc, run_id, p).unwrap();
    doc.to_string()
}

#[test]
fn a_filled_template_is_the_direct_render_byte_for_byte() {
    let base = config_toml::parse_base(Some(BASE)).unwrap();
    let requests = [
        json!({"prompt": "x"}),
        json!({"prompt": "x", "resume": "thread-1"}),
        json!({"prompt": "x", "resume": "th\"read\\\n'2", "effort": "high",
            "developer_instructions": "be brief",
            "config": {"features": {"plugins": false}, "model": "m2"},
            "mcp_servers": {
                "req": {"url": "http://h/", "http_headers": {"Authorization": "Bearer s"}},
                "tool": {"command": "t", "args": ["a"]}}}),
    ];
    let run_ids = [
        "r1",
        "id\"]\n[evil]",
        "it's",
        "back\\slash",
        "ünï\u{1}code",
        "",
    ];
    for request in &requests {
        let p = params(request.clone());
        for base in [Some(&base), None] {
            let template = Template::render(base, &ConfigInputs::of(&p)).unwrap();
            for run_id in run_ids {
                let filled = template.fill(run_id, p.resume.as_deref().unwrap_or_default());
                assert_eq!(filled, direct(base, run_id, &p), "{request} {run_id:?}");
            }
        }
    }
}

#[test]
fn text_that_looks_like_a_stand_in_stays_text() {
    let p = params(
        json!({"prompt": "x", "developer_instructions": "codex-runner-run-id-",
        "mcp_servers": {"req": {"url": "http://h/",
            "http_headers": {"X": "codex-runner-thread-id-00000000000000000000000000000000"}}}}),
    );
    let template = Template::render(None, &ConfigInputs::of(&p)).unwrap();
    assert_eq!(template.slots, [(template.slots[0].0, Slot::RunId)]);
    assert_eq!(template.fill("r9", ""), direct(None, "r9", &p));
}

#[test]
fn requests_with_equal_inputs_share_one_template() {
    let base = config_toml::parse_base(Some(BASE)).unwrap();
    let recent = RecentConfigs::default();
    let server = |token: &str| json!({"req": {"url": "http://h/", "http_headers": {"Authorization": token}}});
    let a1 = params(json!({"prompt": "one", "mcp_servers": server("token-a")}));
    let a2 = params(json!({"prompt": "two", "resume": "t", "mcp_servers": server("token-a")}));
    let a3 = params(json!({"prompt": "three", "resume": "u", "mcp_servers": server("token-a")}));
    let b = params(json!({"prompt": "one", "mcp_servers": server("token-b")}));

    for (p, run_id, kept) in [
        (&a1, "r1", 1),
        (&a2, "r2", 2),
        (&a3, "r3", 2),
        (&b, "r4", 3),
    ] {
        let text = recent.render(Some(&base), run_id, p).unwrap();
        assert_eq!(text, direct(Some(&base), run_id, p));
        assert_eq!(recent.len(), kept, "{run_id}");
    }
    // Not a stale template: the same prompt with another token.
    let text = recent.render(Some(&base), "r5", &a1).unwrap();
    assert!(
        text.contains("token-a") && !text.contains("token-b"),
        "{text}"
    );
}

#[test]
fn only_the_most_recent_templates_are_kept() {
    let recent = RecentConfigs::default();
    let with = |n: usize| params(json!({"prompt": "x", "developer_instructions": n.to_string()}));
    for n in 0..KEEP {
        recent.render(None, "r", &with(n)).unwrap();
    }
    // Using the oldest makes it the newest, so the next new one evicts 1.
    recent.render(None, "r", &with(0)).unwrap();
    recent.render(None, "r", &with(KEEP)).unwrap();
    assert_eq!(recent.len(), KEEP);
    let kept: Vec<_> = recent
        .entries
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.developer_instructions.clone().unwrap())
        .collect();
    let mut expected = vec![KEEP, 0];
    expected.extend((2..KEEP).rev());
    assert_eq!(
        kept,
        expected.iter().map(usize::to_string).collect::<Vec<_>>()
    );
}

#[test]
fn a_config_that_cannot_be_rendered_is_an_error_and_not_kept() {
    let base = config_toml::parse_base(Some("mcp_servers = 5")).unwrap();
    let recent = RecentConfigs::default();
    let p = params(json!({"prompt": "x"}));
    assert!(matches!(
        recent.render(Some(&base), "r", &p),
        Err(ConfigError::NotATable(_))
    ));
    assert!(recent.is_empty());
}
