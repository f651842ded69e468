//! The engine: turns a conversation into streamed reasoning and answer events.

pub mod constrain;
pub mod device;
pub mod local;
pub mod options;
pub mod reasoning;
pub mod registry;
pub mod remote;
pub mod sampler;
pub mod template;
pub mod tokenizer;

use aha_protocol::{Event, TurnStats};
use anyhow::{bail, Result};
use candle_core::Device;
use local::kv_cache::KvCache;
use local::load::GgufFile;
use local::model::Transformer;
use reasoning::{ReasoningParser, Segment};
use sampler::{Sampler, SamplingParams};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use template::{ChatMessage, ChatTemplate, Family};
use tokenizer::TextTokenizer;

/// The instruction that makes a non-reasoning model reason first (`--think`).
pub const THINK_PROMPT: &str = include_str!("../../../prompts/think.md");

/// How tools are described to models whose chat template has no place for them.
pub const TOOLS_PROMPT: &str = include_str!("../../../prompts/tools.md");

/// For a template that cannot render tools: the tool list goes into the system prompt, earlier
/// calls become `<tool_call>` text in the assistant's turn and results become user messages in
/// `<tool_response>` tags, the format [`TOOLS_PROMPT`] teaches.
fn tools_as_text(msgs: &mut Vec<ChatMessage>, tools: &[serde_json::Value]) {
    let list: Vec<String> = tools.iter().map(|t| t.to_string()).collect();
    let prompt = TOOLS_PROMPT.trim().replace("{tools}", &list.join("\n"));
    match msgs.first_mut() {
        Some(m) if m.role == "system" => m.content = format!("{}\n\n{prompt}", m.content),
        _ => msgs.insert(0, ChatMessage::new("system", prompt)),
    }
    for m in msgs.iter_mut() {
        if m.role == "assistant" {
            if let Some(calls) = m.tool_calls.take() {
                for c in calls.as_array().into_iter().flatten() {
                    let f = c.get("function").unwrap_or(c);
                    let call = serde_json::json!({"name": f["name"], "arguments": f["arguments"]});
                    m.content
                        .push_str(&format!("\n<tool_call>\n{call}\n</tool_call>"));
                }
            }
        } else if m.role == "tool" {
            m.role = "user".into();
            let name = m.name.take().unwrap_or_default();
            m.content = format!(
                "<tool_response name=\"{name}\">\n{}\n</tool_response>",
                m.content
            );
            m.tool_call_id = None;
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the chat template.
    Chat(Vec<ChatMessage>),
    /// Exact text, no template (completion mode).
    Raw(String),
    /// Exact token ids.
    Tokens(Vec<u32>),
}

/// Whether the model reasons before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkMode {
    /// Reasoning models think; others don't.
    Auto,
    /// Make any model reason first (opens `<think>` after an instruction to reason).
    On,
    /// Ask a reasoning model to skip its reasoning (closes `<think>` at once).
    Off,
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub think: ThinkMode,
    /// Close the reasoning after this many thinking tokens.
    pub think_budget: Option<usize>,
    /// Keep going past end-of-turn tokens (benchmarks).
    pub ignore_eos: bool,
    /// JSON schemas of tools offered to the model.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Text the assistant's turn already holds (its reasoning up to a chosen step, plus anything a
    /// person inserted): generation continues from there. This is how a trace is branched: the
    /// KV cache keeps the shared prefix and only what follows the branch point is computed.
    pub assistant_prefix: Option<String>,
    /// Constrain tool calls to the offered tools' schemas once the model opens one.
    pub constrain_tools: bool,
    /// Forbid tool calls: the reply must be an answer (OpenAI's `tool_choice: "none"`; the agent
    /// uses it when a model keeps calling instead of answering). Any tools stay described in the
    /// prompt, so the cached prefix still matches.
    pub no_tool_calls: bool,
}

impl GenerateRequest {
    /// A chat request with default settings.
    pub fn chat(messages: Vec<ChatMessage>) -> Self {
        Self {
            prompt: Prompt::Chat(messages),
            sampling: SamplingParams::default(),
            max_tokens: 1024,
            think: ThinkMode::Auto,
            think_budget: None,
            ignore_eos: false,
            tools: None,
            assistant_prefix: None,
            constrain_tools: true,
            no_tool_calls: false,
        }
    }
}

/// Live control of a running generation, shared with whoever may stop or pause it.
#[derive(Debug, Default)]
pub struct Control {
    /// Shared with tools, so a cancel also stops a running tool.
    pub cancel: std::sync::Arc<AtomicBool>,
    pub paused: AtomicBool,
    /// Pause again at the next reasoning step boundary (a paragraph break in the reasoning):
    /// "step" in the trace explorer is `step_to_boundary = true; paused = false`.
    pub step_to_boundary: AtomicBool,
}

impl Control {
    /// Asks the generation to stop after the current token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst)
    }
    /// Pauses between tokens.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst)
    }
    /// Resumes a paused generation.
    pub fn resume(&self) {
        self.step_to_boundary.store(false, Ordering::SeqCst);
        self.paused.store(false, Ordering::SeqCst)
    }
    /// Resumes until the next reasoning step boundary, then pauses.
    pub fn step(&self) {
        self.step_to_boundary.store(true, Ordering::SeqCst);
        self.paused.store(false, Ordering::SeqCst)
    }
    /// Whether cancel was asked for.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
    /// Whether generation is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

/// What every engine offers the agent, the UI and the server: the local candle engine and the
/// remote OpenAI-compatible client both implement it. `generate` blocks (compute-bound or waiting
/// on the network) and belongs on its own OS thread, not on a tokio worker.
pub trait Engine: Send {
    /// The model's name as the user knows it (registry name, file name, or the remote model id).
    fn model_name(&self) -> String;
    /// Where it runs, for the status bar: `cpu (8 threads)`, `cuda`, `remote http://…`.
    fn device(&self) -> String;
    /// The context length in tokens (0 when unknown).
    fn context_length(&self) -> usize;
    /// Whether the model writes a reasoning block before answering (the R1 family).
    fn is_reasoning(&self) -> bool;
    /// The model's recommended sampling settings.
    fn default_sampling(&self) -> SamplingParams;
    /// Streams a reply through `emit` and ends with `Event::TurnFinished` (also when cancelled).
    /// Errors are returned, not emitted.
    fn generate(
        &mut self,
        req: &GenerateRequest,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats>;
    /// Tokens of `text` (exact for a local tokenizer, an estimate elsewhere).
    fn count_tokens(&self, text: &str) -> usize {
        text.len().div_ceil(4)
    }
    /// Tokens currently held in the KV cache (local engines), for "context used".
    fn cached_len(&self) -> usize {
        0
    }
}

impl Engine for LocalEngine {
    fn model_name(&self) -> String {
        self.name.clone()
    }
    fn device(&self) -> String {
        device::describe(&self.model.device)
    }
    fn context_length(&self) -> usize {
        LocalEngine::context_length(self)
    }
    fn is_reasoning(&self) -> bool {
        self.template.is_reasoning()
    }
    fn default_sampling(&self) -> SamplingParams {
        LocalEngine::default_sampling(self)
    }
    fn generate(
        &mut self,
        req: &GenerateRequest,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats> {
        LocalEngine::generate(self, req, ctrl, emit)
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text).map(|t| t.len()).unwrap_or(0)
    }
    fn cached_len(&self) -> usize {
        self.cached.len()
    }
}

/// A rendered prompt ready for the model.
#[derive(Debug, Clone)]
pub struct PreparedPrompt {
    pub tokens: Vec<u32>,
    pub text: String,
    /// The prompt already opened a reasoning block.
    pub started_in_think: bool,
    /// The part of `text` that was already the assistant's (a branch's prefix), or empty.
    pub assistant_prefix: String,
}

/// A model loaded on this machine, with its tokenizer, template and KV cache.
pub struct LocalEngine {
    pub model: Transformer,
    pub tokenizer: TextTokenizer,
    pub template: ChatTemplate,
    pub name: String,
    cache: KvCache,
    /// The tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    /// The tool-call constraint's vocabulary trie, built on first use.
    llg: Option<std::sync::Arc<llguidance::ParserFactory>>,
    /// Tokens that open a tool call, built on first use of `no_tool_calls`.
    openers: Option<std::sync::Arc<constrain::CallOpeners>>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("name", &self.name)
            .finish()
    }
}

impl LocalEngine {
    /// Loads a `.gguf` file or a safetensors checkpoint folder. A parser that panics on a
    /// damaged file (tokenizer, template, weights) gives an error, not a dead program.
    pub fn load(path: &Path, name: &str, device: &Device) -> Result<Self> {
        Self::load_with(path, name, device, &options::EngineOptions::from_env())
    }

    /// [`LocalEngine::load`] with the engine's knobs given, not read from the environment.
    pub fn load_with(
        path: &Path,
        name: &str,
        device: &Device,
        opts: &options::EngineOptions,
    ) -> Result<Self> {
        aha_protocol::panic::catch_panic(|| Self::load_unguarded(path, name, device, opts)).unwrap_or_else(|e| {
            Err(anyhow::anyhow!(
                "{} cannot be loaded ({}); the file may be damaged: download it again (`aha pull NAME`) or check the path",
                path.display(),
                e.0
            ))
        })
    }

    fn load_unguarded(
        path: &Path,
        name: &str,
        device: &Device,
        opts: &options::EngineOptions,
    ) -> Result<Self> {
        if device.is_cpu() {
            local::qkernels::choose(opts).map_err(anyhow::Error::msg)?;
        }
        local::ggml_math::set_enabled(opts.ggml_numerics());
        let (model, tokenizer, template_src) = if path.is_dir() {
            let model = local::load::load_safetensors_dir_with(path, device, opts)?;
            let tok = TextTokenizer::from_file(&path.join("tokenizer.json"))?;
            let tmpl = std::fs::read_to_string(path.join("tokenizer_config.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["chat_template"].as_str().map(str::to_string));
            (model, tok, tmpl)
        } else {
            let g = GgufFile::open(path)?;
            let model = g.load_model_with(device, opts)?;
            let tok = TextTokenizer::from_gguf(&g)?;
            let tmpl = g.get_str("tokenizer.chat_template").map(str::to_string);
            (model, tok, tmpl)
        };
        let bos = tokenizer
            .bos
            .as_ref()
            .map(|b| b.1.clone())
            .unwrap_or_default();
        let eos = tokenizer
            .eos
            .as_ref()
            .map(|b| b.1.clone())
            .unwrap_or_default();
        let template = match template_src {
            Some(src) => ChatTemplate::new(&src, &bos, &eos)?,
            None => {
                let fam = if tokenizer.token_id("<｜Assistant｜>").is_some() {
                    Family::DeepSeekR1
                } else if tokenizer.token_id("<|start_header_id|>").is_some() {
                    Family::Llama3
                } else {
                    Family::ChatMl
                };
                ChatTemplate::fallback(fam, &bos, &eos)?
            }
        };
        let cache = model.new_cache();
        Ok(Self {
            model,
            tokenizer,
            template,
            name: name.to_string(),
            cache,
            cached: Vec::new(),
            llg: None,
            openers: None,
        })
    }

    /// The model's context length.
    pub fn context_length(&self) -> usize {
        self.model.cfg.n_ctx
    }

    /// Tokens the cache currently holds.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Sampling defaults for this model (R1's recommendation for reasoning models).
    pub fn default_sampling(&self) -> SamplingParams {
        if self.template.is_reasoning() {
            SamplingParams::r1()
        } else {
            SamplingParams::default()
        }
    }

    /// Renders and tokenizes a request's prompt.
    pub fn prepare(&self, req: &GenerateRequest) -> Result<PreparedPrompt> {
        match &req.prompt {
            Prompt::Tokens(t) => Ok(PreparedPrompt {
                tokens: t.clone(),
                text: String::new(),
                started_in_think: false,
                assistant_prefix: String::new(),
            }),
            Prompt::Raw(text) => {
                let mut tokens = Vec::new();
                if self.tokenizer.add_bos {
                    if let Some((id, _)) = &self.tokenizer.bos {
                        tokens.push(*id);
                    }
                }
                tokens.extend(self.tokenizer.encode(text)?);
                Ok(PreparedPrompt {
                    tokens,
                    text: text.clone(),
                    started_in_think: text.trim_end().ends_with("<think>"),
                    assistant_prefix: String::new(),
                })
            }
            Prompt::Chat(msgs) => {
                let reasoning_model = self.template.is_reasoning();
                let mut msgs: Vec<ChatMessage> = msgs
                    .iter()
                    .map(|m| {
                        let mut m = m.clone();
                        if m.role == "assistant" {
                            m.content = reasoning::strip_reasoning(&m.content);
                        }
                        m
                    })
                    .collect();
                let force_think = req.think == ThinkMode::On && !reasoning_model;
                if force_think {
                    match msgs.first_mut() {
                        Some(m) if m.role == "system" => {
                            m.content = format!("{}\n\n{}", m.content, THINK_PROMPT.trim())
                        }
                        _ => msgs.insert(0, ChatMessage::new("system", THINK_PROMPT.trim())),
                    }
                }
                let mut tools = req.tools.as_deref().filter(|t| !t.is_empty());
                if let Some(t) = tools {
                    if !self.template.supports_tools() {
                        tools_as_text(&mut msgs, t);
                        tools = None;
                    }
                }
                let mut text =
                    self.template
                        .render(&msgs, tools, true, req.think != ThinkMode::Off)?;
                let mut started = text.trim_end().ends_with("<think>");
                if force_think && !started {
                    text.push_str("<think>\n");
                    started = true;
                }
                if req.think == ThinkMode::Off && started {
                    // Close the reasoning the template opened, so the model answers directly.
                    text.push_str("\n</think>\n\n");
                    started = false;
                }
                let prompt_end = text.len();
                if let Some(prefix) = &req.assistant_prefix {
                    // A prefix may repeat the `<think>` the template already opened.
                    let p = match prefix.trim_start().strip_prefix("<think>") {
                        Some(rest) if started => rest.strip_prefix('\n').unwrap_or(rest),
                        _ => prefix.as_str(),
                    };
                    text.push_str(p);
                }
                let mut tokens = Vec::new();
                if let Some((id, bos)) = &self.tokenizer.bos {
                    if self.tokenizer.add_bos && !text.starts_with(bos.as_str()) {
                        tokens.push(*id);
                    }
                }
                tokens.extend(self.tokenizer.encode(&text)?);
                let prefix = text[prompt_end..].to_string();
                tracing::debug!(tokens = tokens.len(), "rendered prompt:\n{text}");
                Ok(PreparedPrompt {
                    tokens,
                    text,
                    started_in_think: started,
                    assistant_prefix: prefix,
                })
            }
        }
    }

    /// Truncates the cache to the longest common prefix with `tokens` (keeping at least one token to
    /// feed) and prefills the rest in chunks. Returns the logits of the last token and the count prefilled.
    fn prefill(&mut self, tokens: &[u32], ctrl: &Control) -> Result<(Vec<f32>, usize)> {
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len().saturating_sub(1));
        self.cache.truncate(common);
        self.cached.truncate(common);
        let rest = &tokens[common..];
        // With llama.cpp's numerics (`AHA_NUMERICS=ggml`) the prompt goes in one batch as
        // llama.cpp sends it, since how rows are batched changes its rounding.
        if local::ggml_math::enabled() {
            let mut logits = None;
            for chunk in rest.chunks(PREFILL_CHUNK) {
                if ctrl.cancelled() {
                    bail!("cancelled during prompt processing");
                }
                logits = Some(self.model.forward(chunk, &mut self.cache, false)?);
                self.cached.extend_from_slice(chunk);
            }
            let Some(l) = logits else {
                bail!("empty prompt");
            };
            return Ok((local::model::last_row(&l)?, rest.len()));
        }
        // Otherwise the last prompt token always goes through the single-token (decode) path, so
        // the first sampled token's logits do not depend on whether the prefix came from the
        // cache: the same seed gives the same reply on a cold and a warm cache.
        let (batch, last) = rest.split_at(rest.len().saturating_sub(1));
        for chunk in batch.chunks(PREFILL_CHUNK) {
            if ctrl.cancelled() {
                bail!("cancelled during prompt processing");
            }
            self.model.forward(chunk, &mut self.cache, false)?;
            self.cached.extend_from_slice(chunk);
        }
        let &[last] = last else {
            bail!("empty prompt");
        };
        let logits = self.step(last)?;
        Ok((logits, rest.len()))
    }

    /// Feeds one token and returns the next logits.
    fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let l = self.model.forward(&[token], &mut self.cache, false)?;
        self.cached.push(token);
        Ok(local::model::last_row(&l)?)
    }

    /// Moves the cache back to `n` tokens (branching a trace from an earlier point).
    pub fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
        self.cached.truncate(n);
    }

    /// Generates a reply, calling `emit` with each event as it happens. Ends with `TurnFinished`
    /// (also when cancelled); errors are returned, not emitted.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats> {
        let t0 = Instant::now();
        let prompt = self.prepare(req)?;
        let n_ctx = self.context_length();
        if prompt.tokens.is_empty() {
            bail!("the prompt is empty");
        }
        if prompt.tokens.len() >= n_ctx {
            bail!(
                "the prompt is {} tokens but the model's context holds {n_ctx}; shorten it (and leave room for the answer)",
                prompt.tokens.len()
            );
        }
        let (mut logits, prefilled) = self.prefill(&prompt.tokens, ctrl)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut stats = TurnStats {
            prompt_tokens: prompt.tokens.len(),
            prefilled_tokens: prefilled,
            prefill_tok_s: prefilled as f64 / prefill_s.max(1e-9),
            finish_reason: "length".into(),
            ..TurnStats::default()
        };
        let mut sampler = Sampler::new(req.sampling.clone());
        let mut parser = ReasoningParser::new(prompt.started_in_think);
        // A branch continues an assistant turn: put the parser where that text left it.
        let _ = parser.push(&prompt.assistant_prefix);
        let mut history = prompt.tokens.clone();
        let mut forced: std::collections::VecDeque<u32> = Default::default();
        let mut budget_closed = false;
        let mut first_token_at: Option<Instant> = None;
        let mut generated = 0usize;
        let mut decoder = tokenizer::StreamDecoder::default();
        // Tool calls: once `<tool_call>` opens in the answer, sampling follows the call grammar.
        let call_schema = match &req.tools {
            Some(t) if req.constrain_tools && !t.is_empty() => Some(constrain::call_schema(t)?),
            _ => None,
        };
        if call_schema.is_some() && self.llg.is_none() {
            let (vocab, _) = self.model.output.dims();
            self.llg = Some(constrain::factory(&self.tokenizer, vocab)?);
        }
        let mut constraint: Option<constrain::CallConstraint> = None;
        let mut answer_tail = String::new();
        if req.no_tool_calls && self.openers.is_none() {
            let (vocab, _) = self.model.output.dims();
            self.openers = Some(std::sync::Arc::new(constrain::CallOpeners::new(
                &self.tokenizer,
                vocab,
            )));
        }
        // Shared, not copied: the lists hold most of the vocabulary.
        let openers = self.openers.clone().filter(|_| req.no_tool_calls);
        // Whether the answer shows any text yet (for `no_tool_calls`).
        let mut answer_started = !parser.in_thinking()
            && prompt
                .assistant_prefix
                .rsplit("</think>")
                .next()
                .is_some_and(|a| !a.trim().is_empty());
        // A prefix that already opened a call (a branch, or a caller forcing a call) starts it.
        if let (Some(schema), Some(f), false) = (&call_schema, &self.llg, parser.in_thinking()) {
            if prompt
                .assistant_prefix
                .trim_end()
                .ends_with(constrain::CALL_OPEN)
            {
                constraint = Some(constrain::CallConstraint::new(f, schema)?);
            }
        }
        let emit_segments =
            |emit: &mut dyn FnMut(Event), segs: Vec<Segment>, lp: Option<f32>, ent: Option<f32>| {
                let one = segs.len() == 1;
                for s in segs {
                    let (lp, ent) = if one { (lp, ent) } else { (None, None) };
                    emit(s.into_event(lp, ent));
                }
            };
        while generated < req.max_tokens {
            if ctrl.is_paused() && !ctrl.cancelled() {
                emit(Event::Paused);
                while ctrl.is_paused() && !ctrl.cancelled() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                emit(Event::Resumed);
            }
            if ctrl.cancelled() {
                stats.finish_reason = "cancelled".into();
                break;
            }
            let (token, lp, ent) = match forced.pop_front() {
                Some(t) => (t, None, None),
                None => {
                    if let (Some(o), false) = (&openers, parser.in_thinking()) {
                        o.mask(&mut logits, answer_started);
                    }
                    if let Some(c) = constraint.as_mut() {
                        if let Err(e) = c.mask(&mut logits) {
                            emit(Event::Notice {
                                message: format!("{e:#}; the call continues unconstrained"),
                            });
                            constraint = None;
                        }
                    }
                    let s = sampler.sample(&mut logits, &history);
                    if let Some(c) = constraint.as_mut() {
                        if c.consume(s.token).is_err() || c.done() {
                            constraint = None;
                        }
                    }
                    (s.token, Some(s.logprob), Some(s.entropy))
                }
            };
            if first_token_at.is_none() {
                first_token_at = Some(Instant::now());
                stats.ttft_ms = t0.elapsed().as_secs_f64() * 1000.0;
            }
            let stop = !req.ignore_eos && self.tokenizer.stop_ids.contains(&token);
            if stop {
                stats.finish_reason = "stop".into();
                break;
            }
            generated += 1;
            if parser.in_thinking() {
                stats.thinking_tokens += 1;
            } else {
                stats.answer_tokens += 1;
            }
            history.push(token);
            if let Some(piece) = decoder.step(&self.tokenizer, token)? {
                let boundary = parser.in_thinking() && piece.contains("\n\n");
                let in_answer = !parser.in_thinking();
                emit_segments(emit, parser.push(&piece), lp, ent);
                if in_answer && !parser.in_thinking() && !piece.trim().is_empty() {
                    answer_started = true;
                }
                if let (Some(schema), None, true) = (&call_schema, &constraint, in_answer) {
                    // A reply that opens with `{` is a bare call (small models skip the tags):
                    // constrain it from here, counting the token just written.
                    if answer_tail.trim().is_empty() && piece.trim_start().starts_with('{') {
                        if let Some(f) = &self.llg {
                            match constrain::CallConstraint::new(f, schema) {
                                Ok(mut c) => {
                                    if c.consume(token).is_ok() && !c.done() {
                                        constraint = Some(c);
                                    }
                                }
                                Err(e) => emit(Event::Notice {
                                    message: format!("{e:#}; tool calls are not constrained"),
                                }),
                            }
                        }
                    }
                    answer_tail.push_str(&piece);
                    if answer_tail.ends_with(constrain::CALL_OPEN) {
                        answer_tail.clear();
                        if let Some(f) = &self.llg {
                            match constrain::CallConstraint::new(f, schema) {
                                Ok(c) => constraint = Some(c),
                                Err(e) => emit(Event::Notice {
                                    message: format!("{e:#}; tool calls are not constrained"),
                                }),
                            }
                        }
                    } else if answer_tail.len() > 64 {
                        let cut = answer_tail.len() - 32;
                        let cut = (cut..answer_tail.len())
                            .find(|&i| answer_tail.is_char_boundary(i))
                            .unwrap_or(answer_tail.len());
                        answer_tail.drain(..cut);
                    }
                }
                if boundary && ctrl.step_to_boundary.swap(false, Ordering::SeqCst) {
                    ctrl.pause();
                }
            }
            if let Some(b) = req.think_budget {
                if !budget_closed && parser.in_thinking() && stats.thinking_tokens >= b {
                    // Out of budget: make the model close its reasoning and answer.
                    budget_closed = true;
                    forced.extend(self.tokenizer.encode("\n</think>\n\n")?);
                }
            }
            if self.cached.len() + 1 >= n_ctx {
                stats.finish_reason = "context".into();
                break;
            }
            logits = self.step(token)?;
        }
        emit_segments(emit, parser.finish(), None, None);
        if let Some(ft) = first_token_at {
            let dt = ft.elapsed().as_secs_f64();
            if generated > 1 {
                stats.decode_tok_s = (generated - 1) as f64 / dt.max(1e-9);
            }
        }
        emit(Event::TurnFinished {
            stats: stats.clone(),
            tokens: history[prompt.tokens.len()..].to_vec(),
        });
        Ok(stats)
    }

    /// Perplexity of `tokens` (teacher-forced), evaluated in windows of at most `ctx` tokens.
    pub fn perplexity(&self, tokens: &[u32], ctx: usize) -> Result<f64> {
        let mut nll = 0.0f64;
        let mut count = 0usize;
        // A cache of its own (the conversation's stays), cleared and reused for every window.
        let mut cache = self.model.new_cache();
        for w in tokens.chunks(ctx.max(2)) {
            if w.len() < 2 {
                continue;
            }
            cache.clear();
            let mut pos = 0;
            while pos < w.len() - 1 {
                let end = (pos + PREFILL_CHUNK).min(w.len() - 1);
                let logits = self.model.forward(&w[pos..end], &mut cache, true)?;
                for (i, row) in logits.to_vec2::<f32>()?.iter().enumerate() {
                    let ls = local::model::log_softmax(row);
                    nll -= ls[w[pos + i + 1] as usize] as f64;
                    count += 1;
                }
                pos = end;
            }
        }
        if count == 0 {
            bail!("perplexity needs at least two tokens");
        }
        Ok((nll / count as f64).exp())
    }
}

/// Prompt tokens processed per forward pass.
pub const PREFILL_CHUNK: usize = 512;
