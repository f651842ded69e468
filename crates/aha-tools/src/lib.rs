//! The agent's tools: each has a name, a description, a JSON schema generated from its Rust
//! argument type (one source of truth), an effect the approval policy reads, a preview a person
//! approves, and a run that returns text for the model. Paths are confined to the workspace.

pub mod checkpoint;
pub mod code;
pub mod docs;
pub mod files;
pub mod git;
pub mod paths;
pub mod sandbox;

use anyhow::Result;
pub use checkpoint::Checkpoints;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// What a tool may change; the approval policy decides from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    ReadOnly,
    Edit,
    Execute,
    Commit,
}

/// What a running tool can reach.
#[derive(Clone)]
pub struct ToolContext {
    /// The canonical workspace root.
    pub workspace: PathBuf,
    /// Set → a running tool stops (run_code kills its process group).
    pub cancel: Arc<AtomicBool>,
    /// The undo store.
    pub checkpoints: Arc<Mutex<Checkpoints>>,
    /// The RAG index for `search_docs`, if there is one.
    pub index_dir: Option<PathBuf>,
    /// The agent turn this call belongs to (groups file changes for undo).
    pub turn: u64,
    /// How `search_docs` ranks (the CLI's `RagOptions::from_env()`; default weights otherwise).
    pub rag: aha_rag::RagOptions,
}

impl ToolContext {
    /// A context for `workspace` (canonicalized), with its persistent undo store.
    pub fn new(workspace: &std::path::Path) -> Result<Self> {
        let workspace = std::fs::canonicalize(workspace).map_err(|e| {
            anyhow::anyhow!("workspace {} cannot be opened: {e}", workspace.display())
        })?;
        Ok(Self {
            checkpoints: Arc::new(Mutex::new(Checkpoints::open(&workspace)?)),
            workspace,
            cancel: Arc::new(AtomicBool::new(false)),
            index_dir: None,
            turn: 0,
            rag: aha_rag::RagOptions::default(),
        })
    }
}

/// A tool's answer, for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub ok: bool,
    pub output: String,
}

impl ToolOutput {
    pub fn ok(s: impl Into<String>) -> Self {
        Self {
            ok: true,
            output: s.into(),
        }
    }
    pub fn err(s: impl Into<String>) -> Self {
        Self {
            ok: false,
            output: s.into(),
        }
    }
}

/// One tool.
pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON schema of the arguments, generated from the argument type.
    fn schema(&self) -> Value;
    fn effect(&self) -> Effect;
    /// What a person must see to approve: the command or code, or the diff a change would make.
    fn preview(&self, args: &Value, ctx: &ToolContext) -> Result<String>;
    /// Runs the call. Invalid arguments give `ok: false` with a message the model can act on.
    fn run(&self, args: Value, ctx: &ToolContext) -> ToolOutput;
}

/// Decodes a tool's arguments, with an error message written for the model.
pub fn args<T: DeserializeOwned>(tool: &str, v: &Value) -> Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| anyhow::anyhow!("bad arguments for {tool}: {e}; arguments were {v}"))
}

/// Replaces `{"$ref": "#/$defs/X"}` with the definition itself, so a schema stays valid when it
/// is embedded in another (chat templates, the tool-call grammar).
fn inline_refs(v: &mut Value, defs: &serde_json::Map<String, Value>, depth: usize) {
    if depth > 16 {
        return;
    }
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        if let Some(d) = r.strip_prefix("#/$defs/").and_then(|n| defs.get(n)) {
            *v = d.clone();
        }
    }
    match v {
        Value::Object(o) => o.values_mut().for_each(|x| inline_refs(x, defs, depth + 1)),
        Value::Array(a) => a.iter_mut().for_each(|x| inline_refs(x, defs, depth + 1)),
        _ => {}
    }
}

/// The JSON schema of `T`, self-contained (no `$ref`), without the annotations a model does not
/// need.
pub fn schema_of<T: schemars::JsonSchema>() -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Some(defs) = v
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .and_then(|d| d.as_object().cloned())
    {
        inline_refs(&mut v, &defs, 0);
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
        if !o.contains_key("properties") {
            o.insert("properties".into(), Value::Object(Default::default()));
        }
    }
    v
}

/// Keeps the head and tail of a long text and marks the cut.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let half = max / 2;
    let mut a = half;
    while !s.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = s.len() - half;
    while !s.is_char_boundary(b) {
        b += 1;
    }
    format!("{}\n[… {} bytes cut …]\n{}", &s[..a], b - a, &s[b..])
}

/// Output sent to the model is capped at this many bytes.
pub const OUTPUT_CAP: usize = 12_000;

pub use aha_protocol::panic::{catch_panic, catching_panics, Panicked};
pub use aha_protocol::ToolSpec;

/// The tools' names.
pub fn spec_names(specs: &[ToolSpec]) -> Vec<String> {
    specs.iter().map(|s| s.name.clone()).collect()
}

/// The built-in tools.
pub struct Registry {
    tools: Vec<Box<dyn Tool>>,
}

impl Registry {
    /// Every built-in tool.
    pub fn builtin() -> Self {
        let tools: Vec<Box<dyn Tool>> = vec![
            Box::new(code::RunCode),
            Box::new(files::ListDir),
            Box::new(files::ReadFile),
            Box::new(files::WriteFile),
            Box::new(files::ApplyPatch),
            Box::new(git::GitStatus),
            Box::new(git::GitDiff),
            Box::new(git::GitLog),
            Box::new(git::GitShow),
            Box::new(git::GitBlame),
            Box::new(git::GitBranch),
            Box::new(git::GitCommit),
            Box::new(docs::SearchDocs),
        ];
        Self { tools }
    }

    /// Takes a tool away (e.g. `search_docs` when there is no index to search).
    pub fn remove(&mut self, name: &str) {
        self.tools.retain(|t| t.name() != name);
    }

    /// Adds a tool.
    pub fn add(&mut self, t: Box<dyn Tool>) {
        self.tools.push(t);
    }

    pub fn get(&self, name: &str) -> Option<&dyn Tool> {
        self.tools
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.as_ref())
    }

    pub fn tools(&self) -> impl Iterator<Item = &dyn Tool> {
        self.tools.iter().map(|t| t.as_ref())
    }

    /// What the model is offered, one spec per tool.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .map(|t| ToolSpec::new(t.name(), t.description(), t.schema()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_head_and_tail() {
        let s = "a".repeat(100) + &"b".repeat(100);
        let c = cap(&s, 40);
        assert!(c.starts_with(&"a".repeat(20)) && c.ends_with(&"b".repeat(20)));
        assert!(c.contains("[… 160 bytes cut …]"));
        assert_eq!(cap("short", 40), "short");
        let k = "한".repeat(50);
        assert!(cap(&k, 31).contains("cut"), "cuts on character boundaries");
    }

    #[test]
    fn catch_panic_turns_a_panic_into_its_message_and_leaves_the_thread_working() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let v: Vec<u8> = Vec::new();
        let i = v.len() + 3;
        let e = catch_panic(|| v[i]).unwrap_err();
        assert_eq!(e.0, "index out of bounds: the len is 0 but the index is 3");
        assert_eq!(
            e.to_string(),
            "internal error: index out of bounds: the len is 0 but the index is 3"
        );
        // Nested: the inner one is caught there, the outer call still returns normally.
        let outer = catch_panic(|| {
            let inner = catch_panic(|| panic!("inner {}", 1));
            assert!(catching_panics());
            inner
        });
        assert_eq!(outer, Ok(Err(Panicked("inner 1".into()))));
        assert!(!catching_panics());
    }

    #[test]
    fn every_tool_has_an_object_schema_and_a_unique_name() {
        let r = Registry::builtin();
        let mut names = std::collections::HashSet::new();
        for t in r.tools() {
            assert!(names.insert(t.name()), "{}", t.name());
            let s = t.schema();
            assert_eq!(s["type"], "object", "{}: {s}", t.name());
            assert!(s.get("$schema").is_none());
            assert!(!s.to_string().contains("$ref"), "{}: {s}", t.name());
        }
        let rc = r.get("run_code").unwrap().schema();
        assert_eq!(rc["required"], serde_json::json!(["language", "code"]));
        assert_eq!(
            rc["properties"]["language"]["enum"],
            serde_json::json!(["python", "bash"])
        );
    }
}
