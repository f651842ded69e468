//! The built-in tools plus the tools of the user's MCP servers, as one [`ToolHost`].
//!
//! Each tool of an enabled server is offered as `SERVER__tool` (letters, digits, `_` and `-`
//! only, at most 64 characters, a `_2`… suffix on a clash), with the server's JSON schema for
//! its arguments. A schema the constrained decoder cannot compile is simplified until it can,
//! with a notice: one bad schema must not leave every call of a turn unconstrained. A tool the
//! server marks `readOnlyHint`, or any tool of a server the user trusts as read-only, is
//! [`Effect::ReadOnly`]; every other MCP tool may do anything, so the policy treats it like
//! running code ([`Effect::Execute`]).

use super::policy::Effect;
use super::ToolHost;
use aha_mcp::client::{McpHub, McpTool, ServerStatus, Trust};
use aha_protocol::ToolSpec;
use anyhow::{anyhow, Result};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// What `/mcp` says when no server is configured.
pub const NO_SERVERS: &str =
    "no MCP servers are configured: add a [mcp.servers.NAME] table to the config file (README: MCP servers)";

/// The longest tool name offered (OpenAI's limit, which servers and templates assume).
const MAX_NAME: usize = 64;

/// One MCP tool as the model sees it.
#[derive(Debug, Clone)]
struct Entry {
    server: String,
    /// The server's own name for it.
    tool: String,
    spec: ToolSpec,
    effect: Effect,
}

/// What is worked out once and reused between calls.
#[derive(Default)]
struct Cache {
    /// The last offer, by offered name.
    entries: Vec<Entry>,
    /// The schema offered for each (name, schema as the server gave it).
    schemas: HashMap<(String, String), Value>,
    /// Clashes already reported.
    clashes: HashSet<String>,
}

/// The built-in tools (any [`ToolHost`]) plus the tools of the MCP servers in `hub`.
pub struct WithMcp {
    inner: Box<dyn ToolHost>,
    hub: McpHub,
    cache: Mutex<Cache>,
    /// Notices of this wrapper's own (simplified schemas, renamed tools).
    notices: Mutex<Vec<String>>,
}

/// `inner` with the tools of `hub`'s servers added; `inner` itself when there is no hub.
pub fn with_mcp(inner: Box<dyn ToolHost>, hub: Option<McpHub>) -> Box<dyn ToolHost> {
    match hub {
        Some(hub) => Box::new(WithMcp {
            inner,
            hub,
            cache: Mutex::default(),
            notices: Mutex::default(),
        }),
        None => inner,
    }
}

impl WithMcp {
    fn notice(&self, m: String) {
        if let Ok(mut n) = self.notices.lock() {
            n.push(m);
        }
    }

    /// The MCP tools to offer now, after the built-in ones named `taken`.
    fn offer(&self, taken: &[String]) -> Vec<Entry> {
        let mut taken: HashSet<String> = taken.iter().cloned().collect();
        let mut out = Vec::new();
        let Ok(mut cache) = self.cache.lock() else {
            return out;
        };
        for s in self.hub.servers() {
            if !s.config.enabled {
                continue;
            }
            for t in &s.tools {
                let base = tool_name(&s.name, &t.name);
                let name = unique(&base, &taken);
                if name != base && cache.clashes.insert(name.clone()) {
                    self.notice(format!(
                        "MCP tool `{}` of server `{}` is offered as `{name}`: `{base}` was taken",
                        t.name, s.name
                    ));
                }
                taken.insert(name.clone());
                let key = (name.clone(), t.input_schema.to_string());
                let schema = match cache.schemas.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        let (v, why) = offered_schema(&name, &t.description, &t.input_schema);
                        if let Some(why) = why {
                            self.notice(why);
                        }
                        cache.schemas.insert(key, v.clone());
                        v
                    }
                };
                out.push(Entry {
                    server: s.name.clone(),
                    tool: t.name.clone(),
                    spec: ToolSpec::new(name, t.description.clone(), schema),
                    effect: effect_of(&s, t),
                });
            }
        }
        cache.entries = out.clone();
        out
    }

    /// The MCP tool offered as `name`, from the last offer (made again if it has none).
    fn entry(&self, name: &str) -> Option<Entry> {
        let found = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.entries.iter().find(|e| e.spec.name == name).cloned());
        found.or_else(|| {
            let taken = aha_tools::spec_names(&self.inner.specs());
            self.offer(&taken).into_iter().find(|e| e.spec.name == name)
        })
    }
}

/// What a call of tool `t` of server `s` may change, as the approval policy sees it.
fn effect_of(s: &ServerStatus, t: &McpTool) -> Effect {
    if s.config.trust == Trust::ReadOnly || t.read_only {
        Effect::ReadOnly
    } else {
        Effect::Execute
    }
}

/// `SERVER__tool`, with every character a tool name may not hold made `_`, cut to 64.
fn tool_name(server: &str, tool: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut n = format!("{}__{}", clean(server), clean(tool));
    // ASCII only by now, so any length is a character boundary.
    n.truncate(MAX_NAME);
    n
}

/// `base`, or `base` with the first `_2`, `_3`… suffix no tool has taken.
fn unique(base: &str, taken: &HashSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| {
            let suffix = format!("_{i}");
            let mut b = base.to_string();
            b.truncate(MAX_NAME - suffix.len());
            b + &suffix
        })
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| base.to_string())
}

/// The schema tool `name` is offered with: the server's own when a call to it compiles for the
/// constrained decoder, else the first simpler one that does, and a notice that says so.
fn offered_schema(name: &str, description: &str, schema: &Value) -> (Value, Option<String>) {
    let check = |s: &Value| {
        aha_engine::constrain::check_tool(&ToolSpec::new(name, description, s.clone()).to_openai())
    };
    let Err(e) = check(schema) else {
        return (schema.clone(), None);
    };
    // llguidance's error quotes the whole grammar after its first line; the first line is enough.
    let e = format!("{e:#}");
    let e = e.lines().next().unwrap_or_default();
    let e = e
        .split_once("failed to compile JSON schema: ")
        .map_or(e, |(_, why)| why);
    let simpler = [
        (
            "with only the schema keywords the decoder supports",
            known_keywords(schema),
        ),
        ("with its argument names only", names_only(schema)),
        ("as any JSON object", json!({"type": "object"})),
    ];
    for (how, s) in simpler {
        if check(&s).is_ok() {
            return (
                s,
                Some(format!(
                    "MCP tool `{name}`: its argument schema cannot be compiled for constrained decoding ({e}); it is offered {how}"
                )),
            );
        }
    }
    (
        json!({"type": "object"}),
        Some(format!(
            "MCP tool `{name}`: its argument schema cannot be compiled for constrained decoding ({e}); its calls are not constrained"
        )),
    )
}

/// The JSON types a `type` keyword may name.
const TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// `schema` with only the keywords llguidance supports, each with a value of the right shape;
/// `pattern` and `format` go too (a pattern may not be a regular expression llguidance knows).
fn known_keywords(schema: &Value) -> Value {
    let Value::Object(o) = schema else {
        return if schema.is_boolean() {
            schema.clone()
        } else {
            json!({})
        };
    };
    let map_of = |x: &Value| {
        x.as_object().map(|m| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), known_keywords(v)))
                    .collect(),
            )
        })
    };
    let mut out = Map::new();
    for (k, x) in o {
        let kept = match k.as_str() {
            "properties" | "$defs" | "definitions" => map_of(x),
            "items" | "additionalProperties" => {
                (x.is_object() || x.is_boolean()).then(|| known_keywords(x))
            }
            "anyOf" | "oneOf" | "allOf" => x
                .as_array()
                .map(|a| Value::Array(a.iter().map(known_keywords).collect())),
            "type" => {
                let ok = |t: &Value| t.as_str().is_some_and(|t| TYPES.contains(&t));
                let fine = match x {
                    Value::Array(a) => !a.is_empty() && a.iter().all(ok),
                    t => ok(t),
                };
                fine.then(|| x.clone())
            }
            "required" => x
                .as_array()
                .filter(|a| a.iter().all(Value::is_string))
                .map(|_| x.clone()),
            "enum" => x.as_array().filter(|a| !a.is_empty()).map(|_| x.clone()),
            "const" => Some(x.clone()),
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                x.is_number().then(|| x.clone())
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => x.is_u64().then(|| x.clone()),
            "description" | "$ref" => x.is_string().then(|| x.clone()),
            _ => None,
        };
        if let Some(v) = kept {
            out.insert(k.clone(), v);
        }
    }
    Value::Object(out)
}

/// An object with `schema`'s property names, each taking any value.
fn names_only(schema: &Value) -> Value {
    let props: Map<String, Value> = schema["properties"]
        .as_object()
        .map(|m| m.keys().map(|k| (k.clone(), json!({}))).collect())
        .unwrap_or_default();
    json!({"type": "object", "properties": props})
}

impl ToolHost for WithMcp {
    fn specs(&self) -> Vec<ToolSpec> {
        // The first turn waits for servers still starting (at most their start timeout), so
        // that it is offered their tools.
        self.hub.wait_started();
        let mut specs = self.inner.specs();
        let taken = aha_tools::spec_names(&specs);
        specs.extend(self.offer(&taken).into_iter().map(|e| e.spec));
        specs
    }

    fn effect(&self, name: &str) -> Option<Effect> {
        self.inner
            .effect(name)
            .or_else(|| self.entry(name).map(|e| e.effect))
    }

    fn preview(&self, name: &str, args: &Value) -> Result<String> {
        if self.inner.effect(name).is_some() {
            return self.inner.preview(name, args);
        }
        let e = self.entry(name).ok_or_else(|| anyhow!("no tool {name}"))?;
        if !(args.is_object() || args.is_null()) {
            anyhow::bail!("the arguments must be a JSON object");
        }
        let shown = serde_json::to_string_pretty(args).unwrap_or_else(|_| args.to_string());
        Ok(format!(
            "MCP server `{}`, tool `{}`, arguments:\n{shown}",
            e.server, e.tool
        ))
    }

    fn run(
        &mut self,
        name: &str,
        args: Value,
        turn: u64,
        cancel: Arc<AtomicBool>,
    ) -> (bool, String) {
        if self.inner.effect(name).is_some() {
            return self.inner.run(name, args, turn, cancel);
        }
        let Some(e) = self.entry(name) else {
            return (false, format!("no tool {name}"));
        };
        let out = self.hub.call(&e.server, &e.tool, args, cancel);
        (out.ok, aha_tools::cap(&out.text, aha_tools::OUTPUT_CAP))
    }

    fn undo(&mut self) -> Result<Vec<PathBuf>> {
        self.inner.undo()
    }
    fn diff(&self) -> String {
        self.inner.diff()
    }
    fn index_docs(&mut self, paths: &[String]) -> Result<String> {
        self.inner.index_docs(paths)
    }
    fn search_docs(&self, query: &str) -> Result<String> {
        self.inner.search_docs(query)
    }
    fn retrieve(&self, query: &str, k: usize) -> Result<Vec<aha_rag::Hit>> {
        self.inner.retrieve(query, k)
    }
    fn document(&self, path: &str) -> Option<String> {
        self.inner.document(path)
    }

    fn notices(&self) -> Vec<String> {
        let mut n = self.inner.notices();
        if let Ok(mut own) = self.notices.lock() {
            n.append(&mut own);
        }
        n.extend(self.hub.take_notices());
        n
    }

    fn mcp_status(&self) -> Result<String> {
        // Does not wait for a server still starting: `/mcp` says it is.
        let offered = self.offer(&aha_tools::spec_names(&self.inner.specs()));
        Ok(status_text(&self.hub.servers(), &offered))
    }
}

/// `/mcp`: each server with its state and transport, its tools as offered, its last error.
fn status_text(servers: &[ServerStatus], offered: &[Entry]) -> String {
    let mut m = String::from("MCP servers:");
    for s in servers {
        m.push_str(&format!(
            "\n{}: {} ({}), trust {}",
            s.name,
            s.state.as_str(),
            s.config.transport(),
            s.config.trust.as_str()
        ));
        if s.config.enabled {
            let n = s.tools.len();
            m.push_str(&format!(", {n} tool{}", if n == 1 { "" } else { "s" }));
        }
        for e in offered.iter().filter(|e| e.server == s.name) {
            let how = if e.effect == Effect::ReadOnly {
                "reads"
            } else {
                "acts"
            };
            let desc = e.spec.description.as_str();
            let first = desc.split(". ").next().unwrap_or(desc).trim();
            m.push_str(&format!("\n  {} ({how}): {first}", e.spec.name));
        }
        if let Some(err) = &s.last_error {
            m.push_str(&format!("\n  last error: {err}"));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_cut_and_kept_apart() {
        assert_eq!(tool_name("fs", "read_file"), "fs__read_file");
        assert_eq!(
            tool_name("my-srv", "get.weather now"),
            "my-srv__get_weather_now"
        );
        let long = tool_name("s", &"x".repeat(100));
        assert_eq!(long.len(), MAX_NAME);
        let mut taken = HashSet::new();
        assert_eq!(unique("a__b", &taken), "a__b");
        taken.insert("a__b".to_string());
        assert_eq!(unique("a__b", &taken), "a__b_2");
        taken.insert("a__b_2".to_string());
        assert_eq!(unique("a__b", &taken), "a__b_3");
        taken.insert(long.clone());
        let other = unique(&long, &taken);
        assert_eq!(other.len(), MAX_NAME);
        assert!(other.ends_with("_2"));
    }

    #[test]
    fn a_schema_that_compiles_is_offered_as_it_is() {
        let s = json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]});
        assert_eq!(offered_schema("fs__read", "Reads.", &s), (s, None));
    }

    #[test]
    fn a_schema_that_does_not_compile_is_simplified_with_a_notice() {
        // What tests/aha/mcp_http_server.py offers as `odd`.
        let odd = json!({
            "type": "object",
            "properties": {
                "when": {"type": "moment"},
                "code": {"type": "string", "pattern": "(["}
            },
            "required": ["when"]
        });
        assert!(aha_engine::constrain::check_tool(
            &ToolSpec::new("t__odd", "", odd.clone()).to_openai()
        )
        .is_err());
        let (v, why) = offered_schema("t__odd", "Odd.", &odd);
        assert_eq!(
            v,
            json!({"type": "object", "properties": {"when": {}, "code": {"type": "string"}}, "required": ["when"]})
        );
        let why = why.unwrap();
        assert!(
            why.starts_with("MCP tool `t__odd`: its argument schema cannot be compiled for constrained decoding (Invalid type: moment); "),
            "{why}"
        );
        // A `required` that is not a list goes too.
        let (v, _) = offered_schema("t__r", "", &json!({"type": "object", "required": "x"}));
        assert_eq!(v, json!({"type": "object"}));
        assert!(
            why.ends_with("it is offered with only the schema keywords the decoder supports"),
            "{why}"
        );
        // A `$ref` to nowhere survives the first step; only the names remain.
        let dangling = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}});
        let (v, why) = offered_schema("t__x", "", &dangling);
        assert!(why.is_some());
        assert_eq!(v, json!({"type": "object", "properties": {"a": {}}}));
    }

    /// A host with no tools of its own.
    struct Bare;

    impl ToolHost for Bare {
        fn specs(&self) -> Vec<ToolSpec> {
            vec![ToolSpec::new(
                "read_file",
                "Reads.",
                json!({"type": "object"}),
            )]
        }
        fn effect(&self, name: &str) -> Option<Effect> {
            (name == "read_file").then_some(Effect::ReadOnly)
        }
        fn preview(&self, name: &str, _args: &Value) -> Result<String> {
            Ok(name.into())
        }
        fn run(&mut self, name: &str, _: Value, _: u64, _: Arc<AtomicBool>) -> (bool, String) {
            (true, format!("{name} ran"))
        }
        fn undo(&mut self) -> Result<Vec<PathBuf>> {
            Ok(vec![])
        }
        fn diff(&self) -> String {
            String::new()
        }
    }

    #[test]
    fn a_server_that_does_not_start_leaves_the_other_tools_and_says_why() {
        let cfg: aha_mcp::client::McpConfig = serde_json::from_value(json!({"servers": {
            "ghost": {"command": "/nonexistent/mcp-ghost"},
            "off": {"command": "/nonexistent/mcp-off", "enabled": false}
        }}))
        .unwrap();
        let mut h = with_mcp(Box::new(Bare), McpHub::start(&cfg));
        assert_eq!(aha_tools::spec_names(&h.specs()), ["read_file"]);
        let n = h.notices();
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].starts_with(
                "MCP server `ghost` failed to start: cannot run `/nonexistent/mcp-ghost`"
            ),
            "{n:?}"
        );
        assert!(h.notices().is_empty(), "said once");
        let status = h.mcp_status().unwrap();
        assert!(status.contains("\nghost: failed (stdio: /nonexistent/mcp-ghost), trust ask, 0 tools\n  last error: cannot run"), "{status}");
        assert!(
            status.ends_with("\noff: disabled (stdio: /nonexistent/mcp-off), trust ask"),
            "{status}"
        );
        assert_eq!(h.effect("ghost__x"), None);
        assert_eq!(
            h.run("read_file", json!({}), 0, Arc::default()),
            (true, "read_file ran".into())
        );
        assert!(!h.run("ghost__x", json!({}), 0, Arc::default()).0);
        // Without servers, the host is the built-in one and `/mcp` says how to add one.
        let bare = with_mcp(Box::new(Bare), None);
        assert_eq!(bare.mcp_status().unwrap(), NO_SERVERS);
    }

    #[test]
    fn the_status_lists_servers_tools_and_errors() {
        use aha_mcp::client::{McpConfig, ServerConfig, State};
        let cfg: McpConfig = serde_json::from_value(json!({"servers": {
            "fs": {"command": "mcp-fs", "args": ["/tmp"]},
            "web": {"url": "http://h/mcp", "trust": "read-only", "enabled": false}
        }}))
        .unwrap();
        let st = |name: &str, c: &ServerConfig, state, tools: Vec<McpTool>, err: Option<&str>| {
            ServerStatus {
                name: name.into(),
                config: c.clone(),
                state,
                tools,
                last_error: err.map(str::to_string),
            }
        };
        let read = McpTool {
            name: "read".into(),
            description: "Reads a file. Any file.".into(),
            input_schema: json!({"type": "object"}),
            read_only: true,
        };
        let servers = [
            st(
                "fs",
                &cfg.servers["fs"],
                State::Crashed,
                vec![read.clone()],
                Some("it stopped"),
            ),
            st("web", &cfg.servers["web"], State::Disabled, vec![], None),
        ];
        let offered = [Entry {
            server: "fs".into(),
            tool: "read".into(),
            spec: ToolSpec::new("fs__read", read.description.clone(), json!({})),
            effect: Effect::ReadOnly,
        }];
        assert_eq!(
            status_text(&servers, &offered),
            "MCP servers:\n\
             fs: crashed (stdio: mcp-fs /tmp), trust ask, 1 tool\n  \
             fs__read (reads): Reads a file\n  \
             last error: it stopped\n\
             web: disabled (http: http://h/mcp), trust read-only"
        );
    }
}
