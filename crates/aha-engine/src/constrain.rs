//! Constrained tool calls: once the model opens `<tool_call>`, only tokens that keep the text on
//! the way to a valid call — a JSON object naming one of the offered tools, with arguments that
//! match that tool's JSON schema — may be sampled. llguidance computes the token masks from a
//! byte trie of our vocabulary; small models then cannot emit a call that does not parse.

use super::tokenizer::TextTokenizer;
use anyhow::{anyhow, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The text that opens a tool call (Qwen/Hermes format, also taught to models without one).
pub const CALL_OPEN: &str = "<tool_call>";

/// The inverse of GPT-2's byte-to-symbol map used by byte-level BPE vocabularies.
fn symbol_bytes() -> HashMap<char, u8> {
    (0u8..=255)
        .map(|b| (super::tokenizer::byte_symbol(b), b))
        .collect()
}

/// The raw bytes of every token id below `vocab_size` (special tokens marked so no grammar can
/// produce them as text; ids without a token are empty and never allowed).
pub fn token_bytes(tok: &TextTokenizer, vocab_size: usize) -> Vec<Vec<u8>> {
    let map = symbol_bytes();
    let added = tok.inner.get_added_tokens_decoder();
    (0..vocab_size as u32)
        .map(|id| {
            if let Some(a) = added.get(&id) {
                let mut b = Vec::with_capacity(a.content.len() + 1);
                if a.special {
                    b.push(TokTrie::SPECIAL_TOKEN_MARKER);
                }
                b.extend_from_slice(a.content.as_bytes());
                return b;
            }
            match tok.inner.id_to_token(id) {
                // Byte-level symbols map back to bytes; anything else (a non-byte-level vocabulary)
                // is taken as its UTF-8 text.
                Some(s) => s
                    .chars()
                    .map(|c| map.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    .unwrap_or_else(|| s.replace('▁', " ").into_bytes()),
                None => Vec::new(),
            }
        })
        .collect()
}

/// The tokens that would open a tool call, for answering with calls forbidden (`tool_choice`
/// `none`, or the agent insisting on an answer).
#[derive(Debug, Clone, Default)]
pub struct CallOpeners {
    /// Never allowed in the answer: call-opening tags (`<tool_call>`, DeepSeek's call tokens).
    pub always: Vec<u32>,
    /// Not allowed as the answer's first visible token: anything that does not open prose (a
    /// letter, a digit, Markdown emphasis or a heading). A call written without its tag opens
    /// with `{`, a code fence, or any other bracket a small model finds around the ban.
    pub first: Vec<u32>,
}

impl CallOpeners {
    pub fn new(tok: &TextTokenizer, vocab_size: usize) -> Self {
        let mut o = Self::default();
        for (id, b) in token_bytes(tok, vocab_size).iter().enumerate() {
            let special = b.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER);
            let text = String::from_utf8_lossy(if special { &b[1..] } else { b });
            let t = text.trim_start();
            if t.starts_with(CALL_OPEN) || t.starts_with("<｜tool▁call") {
                o.always.push(id as u32);
            } else if special || b.is_empty() {
                // End of turn and the like stay allowed; unused ids are never sampled anyway.
            } else if let Some(c) = t.chars().next() {
                // U+FFFD: a piece of a multi-byte character (Korean, Chinese…), allowed.
                if !(c.is_alphanumeric() || "*#\u{FFFD}".contains(c)) {
                    o.first.push(id as u32);
                }
            }
        }
        o
    }

    /// Masks what may not come next; `started` says whether the answer has visible text yet.
    pub fn mask(&self, logits: &mut [f32], started: bool) {
        let ids = self
            .always
            .iter()
            .chain(if started { &[][..] } else { &self.first[..] });
        for &id in ids {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// Builds the llguidance parser factory for a tokenizer (a trie over the whole vocabulary; build
/// once per model).
pub fn factory(tok: &TextTokenizer, vocab_size: usize) -> Result<Arc<ParserFactory>> {
    let words = token_bytes(tok, vocab_size);
    let eos = tok
        .eos
        .as_ref()
        .map(|(id, _)| *id)
        .or_else(|| tok.stop_ids.iter().copied().min())
        .unwrap_or(0);
    let info = TokRxInfo::new(vocab_size as u32, eos);
    let env: llguidance::toktrie::TokEnv =
        Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
    let mut f = ParserFactory::new_simple(&env)?;
    f.quiet();
    Ok(Arc::new(f))
}

/// The JSON schema of one call to any of `tools` (OpenAI function specs):
/// `{"name": <one of the names>, "arguments": <that tool's parameters>}`.
pub fn call_schema(tools: &[Value]) -> Result<Value> {
    let mut alts = Vec::new();
    for t in tools {
        let f = t.get("function").unwrap_or(t);
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("a tool spec has no name: {t}"))?;
        let mut params = f
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        if let Some(o) = params.as_object_mut() {
            // Annotations llguidance does not need.
            o.remove("$schema");
            o.remove("title");
        }
        alts.push(json!({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": false
        }));
    }
    if alts.is_empty() {
        return Err(anyhow!("no tools to constrain a call to"));
    }
    Ok(if alts.len() == 1 {
        alts.remove(0)
    } else {
        json!({ "anyOf": alts })
    })
}

/// Whether llguidance can compile a call to `tool` (an OpenAI function spec) under the
/// constraint; its error when it cannot. A tool whose schema comes from outside (an MCP server)
/// is checked here before it is offered: one schema that does not compile would leave every
/// call of the turn unconstrained. The check runs on a byte-level vocabulary, built once, so it
/// needs no model; what compiles there compiles for any vocabulary.
pub fn check_tool(tool: &Value) -> Result<()> {
    static BYTES: std::sync::OnceLock<Option<Arc<ParserFactory>>> = std::sync::OnceLock::new();
    let f = BYTES
        .get_or_init(|| {
            let mut words: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b]).collect();
            let mut eos = vec![TokTrie::SPECIAL_TOKEN_MARKER];
            eos.extend_from_slice(b"<eos>");
            words.push(eos);
            let info = TokRxInfo::new(words.len() as u32, 256);
            let env: llguidance::toktrie::TokEnv =
                Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
            let mut f = ParserFactory::new_simple(&env).ok()?;
            f.quiet();
            Some(Arc::new(f))
        })
        .as_ref()
        .ok_or_else(|| anyhow!("the schema checker could not start"))?;
    CallConstraint::new(f, &call_schema(std::slice::from_ref(tool))?).map(|_| ())
}

/// One tool call being generated under the constraint.
pub struct CallConstraint {
    matcher: Matcher,
}

impl CallConstraint {
    /// Starts constraining what follows `<tool_call>`.
    pub fn new(factory: &ParserFactory, schema: &Value) -> Result<Self> {
        // Optional whitespace, then the call object; the model writes `</tool_call>` after it.
        let grammar = format!("start: /[ \\t\\r\\n]*/ call\ncall: %json {schema}");
        let parser = factory.create_parser(TopLevelGrammar::from_lark(grammar))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(anyhow!("tool-call grammar: {e}"));
        }
        Ok(Self { matcher })
    }

    /// Sets the logits of tokens that would break the call to −∞.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let m = self
            .matcher
            .compute_mask()
            .map_err(|e| anyhow!("tool-call constraint: {e}"))?;
        for (i, l) in logits.iter_mut().enumerate() {
            if !m.is_allowed(i as u32) {
                *l = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Advances past a sampled token.
    pub fn consume(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| anyhow!("tool-call constraint: {e}"))
    }

    /// Whether the call object is complete (nothing more can follow in the grammar).
    pub fn done(&mut self) -> bool {
        self.matcher.is_stopped()
            || (self.matcher.is_accepting().unwrap_or(false)
                && self
                    .matcher
                    .compute_mask()
                    .map(|m| m.num_set() == 0)
                    .unwrap_or(true))
    }
}
