//! Rendered configs kept for the next requests of the same shape.
//!
//! Rendering a turn's config with `toml_edit` (clone the parsed base, edit
//! it, print it) cost a tenth of the daemon's CPU per turn (bench/notes.md).
//! An orchestrator's requests mostly differ only in their run id and the
//! thread they resume, and those two go into HTTP headers only. So a render
//! is kept as a [`Template`]: the text with those two values cut out, and a
//! request whose [`ConfigInputs`] are equal fills them in.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use runner_protocol::RunParams;
use toml_edit::DocumentMut;

use crate::config_toml::{self, ConfigError, ConfigInputs};

/// Renders kept per base config (most recent first), each holding copies of
/// its request's config inputs (MCP servers, instructions) as its key.
const KEEP: usize = 4;

/// A rendered config with the run id and thread id left out.
#[derive(Debug)]
pub struct Template {
    /// The text without the ids.
    text: String,
    /// Where each id goes in `text`, in order.
    slots: Vec<(usize, Slot)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    RunId,
    ThreadId,
}

impl Template {
    /// Renders `inputs` over `base` with stand-ins for the ids, then cuts the
    /// stand-ins out. They are random per daemon, so no config text and no
    /// request can contain them.
    pub fn render(
        base: Option<&DocumentMut>,
        inputs: &ConfigInputs<'_>,
    ) -> Result<Template, ConfigError> {
        let (run_mark, thread_mark) = marks();
        let mut doc = base.cloned().unwrap_or_default();
        config_toml::synthesize_from(&mut doc, inputs, run_mark, thread_mark)?;
        let rendered = doc.to_string();
        let (run_mark, thread_mark) = (encode(run_mark), encode(thread_mark));

        let mut text = String::with_capacity(rendered.len());
        let mut slots = Vec::new();
        let mut rest = rendered.as_str();
        loop {
            let next = [(&run_mark, Slot::RunId), (&thread_mark, Slot::ThreadId)]
                .into_iter()
                .filter_map(|(mark, slot)| rest.find(mark.as_str()).map(|at| (at, mark, slot)))
                .min_by_key(|(at, _, _)| *at);
            let Some((at, mark, slot)) = next else {
                text.push_str(rest);
                break;
            };
            text.push_str(&rest[..at]);
            slots.push((text.len(), slot));
            rest = &rest[at + mark.len()..];
        }
        Ok(Template { text, slots })
    }

    /// The config for a turn with these ids.
    pub fn fill(&self, run_id: &str, thread_id: &str) -> String {
        if self.slots.is_empty() {
            return self.text.clone();
        }
        let run_id = encode(run_id);
        let thread_id = if self.slots.iter().any(|(_, s)| *s == Slot::ThreadId) {
            encode(thread_id)
        } else {
            String::new()
        };
        let mut out = String::with_capacity(
            self.text.len() + self.slots.len() * run_id.len().max(thread_id.len()),
        );
        let mut from = 0;
        for &(at, slot) in &self.slots {
            out.push_str(&self.text[from..at]);
            out.push_str(match slot {
                Slot::RunId => &run_id,
                Slot::ThreadId => &thread_id,
            });
            from = at;
        }
        out.push_str(&self.text[from..]);
        out
    }
}

/// A string as `toml_edit` writes it as a value (the same choice of quotes
/// and escapes as in a rendered document).
fn encode(value: &str) -> String {
    toml_edit::Value::from(value).to_string()
}

/// The stand-ins for the run id and the thread id: letters, digits and
/// dashes (written as a plain basic string), random per daemon.
fn marks() -> (&'static str, &'static str) {
    static MARKS: OnceLock<(String, String)> = OnceLock::new();
    let (run, thread) = MARKS.get_or_init(|| {
        let random = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        (
            format!("codex-runner-run-id-{:016x}{:016x}", random(), random()),
            format!("codex-runner-thread-id-{:016x}{:016x}", random(), random()),
        )
    });
    (run, thread)
}

/// The last few templates rendered over one base config, with the inputs
/// each was rendered from.
#[derive(Debug, Default)]
pub struct RecentConfigs {
    entries: Mutex<Vec<(RunParams, Arc<Template>)>>,
}

impl RecentConfigs {
    /// The config of a turn of `params` over `base`: a kept template filled
    /// in when one has equal inputs, else a new one (kept).
    pub fn render(
        &self,
        base: Option<&DocumentMut>,
        run_id: &str,
        params: &RunParams,
    ) -> Result<String, ConfigError> {
        let inputs = ConfigInputs::of(params);
        let thread_id = params.resume.as_deref().unwrap_or_default();
        let kept = {
            let mut entries = self.entries.lock().expect("config templates");
            let found = entries
                .iter()
                .position(|(key, _)| ConfigInputs::of(key) == inputs);
            found.map(|i| {
                entries[..=i].rotate_right(1);
                entries[0].1.clone()
            })
        };
        let template = match kept {
            Some(template) => template,
            None => {
                let template = Arc::new(Template::render(base, &inputs)?);
                let mut entries = self.entries.lock().expect("config templates");
                entries.insert(0, (inputs.to_params(), template.clone()));
                entries.truncate(KEEP);
                template
            }
        };
        Ok(template.fill(run_id, thread_id))
    }

    /// Templates kept (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("config templates").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "config_template_tests.rs"]
mod tests;
