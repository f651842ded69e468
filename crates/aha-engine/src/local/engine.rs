//! The local engine: a model loaded on this machine, its prompt rendering, prefill and the
//! decoding loop (whose per-token pieces live in [`super::generate`]).

use super::generate::{CallGrammar, StatsAccumulator, Turn};
use crate::sampler::SamplingParams;
use crate::template::{ChatMessage, ChatTemplate, Family};
use crate::{
    constrain, device, local, reasoning, tokenizer, Control, Engine, GenerateRequest, Prompt,
    ThinkMode, TOOLS_PROMPT,
};
use aha_protocol::{Event, TurnStats};
use anyhow::{bail, Result};
use candle_core::Device;
use local::kv_cache::KvCache;
use local::load::GgufFile;
use local::model::{ForwardOpts, Transformer};
use local::prompt_cache::{KvShape, PromptCache};
use local::speculate::{NgramDrafter, Speculate, MAX_DRAFT};
use std::path::Path;
use std::time::Instant;
use tokenizer::TextTokenizer;

/// For a template that cannot render tools: the tool list goes into the system prompt, earlier
/// calls become `<tool_call>` text in the assistant's turn and results become user messages in
/// `<tool_response>` tags, the format [`TOOLS_PROMPT`] teaches.
fn tools_as_text(msgs: &mut Vec<ChatMessage>, tools: &[serde_json::Value]) {
    let list: Vec<String> = tools.iter().map(|t| t.to_string()).collect();
    let prompt = TOOLS_PROMPT.trim().replace("{tools}", &list.join("\n"));
    match msgs.first_mut() {
        Some(m) if m.role == aha_protocol::Role::System => {
            m.content = format!("{}\n\n{prompt}", m.content)
        }
        _ => msgs.insert(0, ChatMessage::system(prompt)),
    }
    for m in msgs.iter_mut() {
        if m.role == aha_protocol::Role::Assistant {
            if let Some(calls) = m.tool_calls.take() {
                for c in calls.as_array().into_iter().flatten() {
                    let f = c.get("function").unwrap_or(c);
                    let call = serde_json::json!({"name": f["name"], "arguments": f["arguments"]});
                    m.content
                        .push_str(&format!("\n<tool_call>\n{call}\n</tool_call>"));
                }
            }
        } else if m.role == aha_protocol::Role::Tool {
            m.role = aha_protocol::Role::User;
            let name = m.name.take().unwrap_or_default();
            m.content = format!(
                "<tool_response name=\"{name}\">\n{}\n</tool_response>",
                m.content
            );
            m.tool_call_id = None;
        }
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
    fn prompt_tokens(&mut self, req: &GenerateRequest) -> Option<usize> {
        self.count_tokens(req).ok()
    }
    fn limit_context(&mut self, n: usize) {
        self.ctx_limit = Some(n.max(2));
    }
    fn generate(
        &mut self,
        req: &GenerateRequest,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats> {
        LocalEngine::generate(self, req, ctrl, emit)
    }
}

/// A chat prompt's text, and what rendering it decided ([`LocalEngine::render_chat`]).
struct RenderedChat<'r> {
    text: String,
    /// Where the template's part ends and the assistant prefix begins.
    prompt_end: usize,
    /// The prompt ends inside a reasoning block.
    started: bool,
    msgs: Vec<ChatMessage>,
    tools: Option<&'r [serde_json::Value]>,
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
    /// How many leading tokens are the conversation's stable part (system prompt and tools),
    /// which the prompt cache on disk keeps; 0 when none is found or there is no such cache.
    pub stable_prefix: usize,
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
    /// Whether decoding drafts tokens by prompt lookup.
    speculate: Speculate,
    /// The prompt cache on disk, if one was set ([`LocalEngine::set_prompt_cache`]).
    prompt_cache: Option<PromptCache>,
    /// What the cache's entries must have been computed with ([`local::prompt_cache::engine_fingerprint`]).
    fingerprint: String,
    /// A context shorter than the model's (`--ctx N`), if set.
    ctx_limit: Option<usize>,
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
        Self::load_with(
            path,
            name,
            device,
            &crate::options::EngineOptions::from_env(),
        )
    }

    /// [`LocalEngine::load`] with the engine's knobs given, not read from the environment.
    pub fn load_with(
        path: &Path,
        name: &str,
        device: &Device,
        opts: &crate::options::EngineOptions,
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
        opts: &crate::options::EngineOptions,
    ) -> Result<Self> {
        if device.is_cpu() {
            local::qkernels::choose(opts).map_err(anyhow::Error::msg)?;
        }
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
        let fingerprint = local::prompt_cache::engine_fingerprint(&model, opts);
        Ok(Self {
            model,
            tokenizer,
            template,
            name: name.to_string(),
            cache,
            cached: Vec::new(),
            llg: None,
            openers: None,
            speculate: Speculate::default(),
            prompt_cache: None,
            fingerprint,
            ctx_limit: None,
        })
    }

    /// Keeps chat prompts' stable prefixes (system prompt and tools) in `cache` on disk, or
    /// stops (`None`). Not with llama.cpp's numerics, whose prompt goes in as one batch.
    pub fn set_prompt_cache(&mut self, cache: Option<PromptCache>) {
        self.prompt_cache = cache.filter(|_| !self.model.ggml_numerics()).map(|mut c| {
            c.set_fingerprint(self.fingerprint.clone());
            c
        });
    }

    /// The prompt cache on disk, if set.
    pub fn prompt_cache(&self) -> Option<&PromptCache> {
        self.prompt_cache.as_ref()
    }

    /// The context length: the model's, or less where `--ctx` set less.
    pub fn context_length(&self) -> usize {
        let n = self.model.cfg.n_ctx;
        self.ctx_limit.map_or(n, |l| l.min(n))
    }

    /// The number of tokens `req`'s prompt takes, rendered as [`LocalEngine::generate`] would
    /// render it (without the second render that finds the stable prefix).
    pub fn count_tokens(&self, req: &GenerateRequest) -> Result<usize> {
        match &req.prompt {
            Prompt::Chat(msgs) => Ok(self.encode_chat(&self.render_chat(req, msgs)?.text)?.len()),
            _ => Ok(self.prepare(req)?.tokens.len()),
        }
    }

    /// Tokens the cache currently holds.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Chooses whether decoding drafts tokens ([`Speculate`]; prompt lookup by default).
    pub fn set_speculate(&mut self, s: Speculate) {
        self.speculate = s;
    }

    /// Whether decoding drafts tokens.
    pub fn speculate(&self) -> Speculate {
        self.speculate
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
                stable_prefix: 0,
            }),
            Prompt::Raw(text) => self.prepare_raw(text),
            Prompt::Chat(msgs) => self.prepare_chat(req, msgs),
        }
    }

    /// Exact text (completion mode): BOS when the model wants one, then the text's tokens.
    fn prepare_raw(&self, text: &str) -> Result<PreparedPrompt> {
        let mut tokens = Vec::new();
        if self.tokenizer.add_bos {
            if let Some((id, _)) = &self.tokenizer.bos {
                tokens.push(*id);
            }
        }
        tokens.extend(self.tokenizer.encode(text)?);
        Ok(PreparedPrompt {
            tokens,
            text: text.to_string(),
            started_in_think: text.trim_end().ends_with("<think>"),
            assistant_prefix: String::new(),
            stable_prefix: 0,
        })
    }

    /// A conversation through the chat template, with the think mode and any assistant prefix
    /// (a branch point) applied.
    fn prepare_chat(&self, req: &GenerateRequest, msgs: &[ChatMessage]) -> Result<PreparedPrompt> {
        let RenderedChat {
            text,
            prompt_end,
            started,
            msgs,
            tools,
        } = self.render_chat(req, msgs)?;
        let tokens = self.encode_chat(&text)?;
        let prefix = text[prompt_end..].to_string();
        tracing::debug!(tokens = tokens.len(), "rendered prompt:\n{text}");
        let stable_prefix = self.stable_prefix(req, &msgs, tools, &tokens);
        Ok(PreparedPrompt {
            tokens,
            text,
            started_in_think: started,
            assistant_prefix: prefix,
            stable_prefix,
        })
    }

    /// A conversation rendered through the chat template with the think mode applied, then the
    /// assistant prefix, if any.
    fn render_chat<'r>(
        &self,
        req: &'r GenerateRequest,
        msgs: &[ChatMessage],
    ) -> Result<RenderedChat<'r>> {
        let force_think = req.think == ThinkMode::On && !self.template.is_reasoning();
        let (msgs, tools) = self.chat_messages(req, msgs, force_think);
        let mut text = self
            .template
            .render(&msgs, tools, true, req.think != ThinkMode::Off)?;
        let open = force_think || self.template.opens_think(&text);
        let started = apply_think_mode(&mut text, req.think, open);
        let prompt_end = text.len();
        if let Some(prefix) = &req.assistant_prefix {
            text.push_str(prefix_after_prompt(prefix, started));
        }
        Ok(RenderedChat {
            text,
            prompt_end,
            started,
            msgs,
            tools,
        })
    }

    /// A rendered chat prompt's tokens, with BOS when the model wants one and the template did
    /// not write it.
    fn encode_chat(&self, text: &str) -> Result<Vec<u32>> {
        let mut tokens = Vec::new();
        if let Some((id, bos)) = &self.tokenizer.bos {
            if self.tokenizer.add_bos && !text.starts_with(bos.as_str()) {
                tokens.push(*id);
            }
        }
        tokens.extend(self.tokenizer.encode(text)?);
        Ok(tokens)
    }

    /// Where the stable part of a chat prompt of `tokens` ends: the common prefix with the same
    /// leading system messages and tools, rendered the same way, before a placeholder user
    /// message ([`local::prompt_cache::stable_len`]). `msgs` and `tools` are as
    /// [`LocalEngine::chat_messages`] gave them. Only with a prompt cache on disk (it costs a
    /// second render); 0 where the template refuses the placeholder.
    fn stable_prefix(
        &self,
        req: &GenerateRequest,
        msgs: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
        tokens: &[u32],
    ) -> usize {
        if self.prompt_cache.is_none() {
            return 0;
        }
        let mut probe: Vec<ChatMessage> = msgs
            .iter()
            .take_while(|m| m.role == aha_protocol::Role::System)
            .cloned()
            .collect();
        probe.push(ChatMessage::user("\u{1}"));
        let probe = self
            .template
            .render(&probe, tools, true, req.think != ThinkMode::Off)
            .and_then(|text| self.encode_chat(&text));
        match probe {
            Ok(p) => local::prompt_cache::stable_len(tokens, &p),
            Err(e) => {
                tracing::debug!("no stable prompt prefix: {e:#}");
                0
            }
        }
    }

    /// The messages as the template gets them: earlier turns' reasoning stripped, the instruction
    /// to reason added when `force_think`, and the tools (returned) written into the messages
    /// instead when the template has no place for them.
    fn chat_messages<'r>(
        &self,
        req: &'r GenerateRequest,
        msgs: &[ChatMessage],
        force_think: bool,
    ) -> (Vec<ChatMessage>, Option<&'r [serde_json::Value]>) {
        let mut msgs: Vec<ChatMessage> = msgs
            .iter()
            .map(|m| {
                let mut m = m.clone();
                if m.role == aha_protocol::Role::Assistant {
                    m.content = reasoning::strip_reasoning(&m.content);
                }
                m
            })
            .collect();
        if force_think {
            crate::add_think_prompt(&mut msgs);
        }
        let mut tools = req.tools.as_deref().filter(|t| !t.is_empty());
        if let Some(t) = tools {
            if !self.template.supports_tools() {
                tools_as_text(&mut msgs, t);
                tools = None;
            }
        }
        (msgs, tools)
    }

    /// Truncates the cache to the longest common prefix with `tokens` (keeping at least one token to
    /// feed) and prefills the rest in chunks; the first `stable` tokens may come from the prompt
    /// cache on disk ([`LocalEngine::restore_prefix`]). Returns the logits of the last token and
    /// the count prefilled, or `None` when cancelled (checked within every layer; the cache
    /// keeps the chunks that were done).
    fn prefill(
        &mut self,
        tokens: &[u32],
        stable: usize,
        ctrl: &Control,
    ) -> Result<Option<(Vec<f32>, usize)>> {
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
        if self.model.ggml_numerics() {
            let mut logits = None;
            for chunk in rest.chunks(PREFILL_CHUNK) {
                let Some(l) = self.prefill_chunk(chunk, ctrl)? else {
                    return Ok(None);
                };
                logits = Some(l);
            }
            let Some(l) = logits else {
                bail!("empty prompt");
            };
            return Ok(Some((local::model::last_row(&l)?, rest.len())));
        }
        // A stable prefix the cache does not hold comes from the disk cache, or is computed
        // first and saved there; the rest then starts at its end either way.
        let Some(built) = self.restore_prefix(tokens, stable, ctrl)? else {
            return Ok(None);
        };
        let rest = &tokens[self.cached.len()..];
        // Otherwise the last prompt token always goes through the single-token (decode) path, so
        // the first sampled token's logits do not depend on whether the prefix came from the
        // cache: the same seed gives the same reply on a cold and a warm cache.
        let (batch, last) = rest.split_at(rest.len().saturating_sub(1));
        let &[last] = last else {
            bail!("empty prompt");
        };
        if !self.prefill_chunks(batch, ctrl)? || ctrl.cancelled() {
            return Ok(None);
        }
        let logits = self.step(last)?;
        Ok(Some((logits, built + rest.len())))
    }

    /// Runs `tokens` into the cache in chunks of [`PREFILL_CHUNK`]; false when cancelled.
    fn prefill_chunks(&mut self, tokens: &[u32], ctrl: &Control) -> Result<bool> {
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            if self.prefill_chunk(chunk, ctrl)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs one chunk of the prompt, stopping between layers on cancel (`None`).
    fn prefill_chunk(
        &mut self,
        chunk: &[u32],
        ctrl: &Control,
    ) -> Result<Option<candle_core::Tensor>> {
        let opts = ForwardOpts {
            cancel: Some(&ctrl.cancel),
            ..ForwardOpts::default()
        };
        let out = self.model.forward_with(chunk, &mut self.cache, opts)?;
        if out.is_some() {
            self.cached.extend_from_slice(chunk);
        }
        Ok(out)
    }

    /// With a prompt cache on disk and a stable prefix of `stable` tokens longer than what the
    /// cache holds: loads the prefix's keys and values from its entry, or on a miss prefills up
    /// to the prefix's end as chunks of their own and saves the entry. The cache then holds
    /// exactly `tokens[..stable]`, so what follows is computed the same way (same start, same
    /// chunks) whether the entry was there or not: a warm start gives a cold one's tokens.
    /// Returns the tokens computed here, or `None` when cancelled (nothing is saved then). A
    /// cache that cannot be read or written only warns.
    fn restore_prefix(
        &mut self,
        tokens: &[u32],
        stable: usize,
        ctrl: &Control,
    ) -> Result<Option<usize>> {
        let Some(pc) = &self.prompt_cache else {
            return Ok(Some(0));
        };
        if stable <= self.cached.len() || stable >= tokens.len() {
            return Ok(Some(0));
        }
        let prefix = &tokens[..stable];
        let shape = KvShape::of(&self.model);
        let dims = (shape.kv_heads, stable, shape.head_dim);
        if let Some(layers) = pc.load(prefix, shape) {
            let layout = local::prompt_cache::kv_layout(&self.model);
            match self.cache.import(&layers, dims, &layout) {
                Ok(()) => {
                    self.cached = prefix.to_vec();
                    return Ok(Some(0));
                }
                // The cache is empty now: the prefix is computed from the start.
                Err(e) => tracing::warn!("prompt cache: cannot import an entry: {e}"),
            }
            self.cached.clear();
        }
        let from = self.cached.len();
        if !self.prefill_chunks(&tokens[from..stable], ctrl)? {
            return Ok(None);
        }
        let saved = self
            .cache
            .export(stable, (shape.kv_heads, shape.head_dim))
            .map_err(anyhow::Error::from)
            .and_then(|layers| match &self.prompt_cache {
                Some(pc) => Ok(pc.save(prefix, shape, &layers)?),
                None => Ok(()),
            });
        if let Err(e) = saved {
            tracing::warn!("prompt cache: the prompt's prefix was not saved: {e:#}");
        }
        Ok(Some(stable - from))
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
        check_fits(prompt.tokens.len(), self.context_length())?;
        let before = self.cached.len();
        let prefilled = self.prefill(&prompt.tokens, prompt.stable_prefix, ctrl)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let Some((logits, prefilled)) = prefilled else {
            // Stopped while the prompt went in: a cancelled turn with nothing generated.
            let done = self.cached.len().saturating_sub(before);
            let mut stats = StatsAccumulator::new(t0, prompt.tokens.len(), done, prefill_s);
            stats.finish(aha_protocol::FinishReason::Cancelled);
            let stats = stats.close(Instant::now());
            emit(Event::TurnFinished {
                stats: stats.clone(),
                tokens: Vec::new(),
            });
            return Ok(stats);
        };
        let stats = StatsAccumulator::new(t0, prompt.tokens.len(), prefilled, prefill_s);
        let calls = self.call_grammar(req)?;
        let openers = self.call_openers(req);
        let mut turn = Turn::new(req, &prompt, stats, calls, openers)?;
        self.decode(&mut turn, logits, ctrl, emit)?;
        Ok(turn.finish(emit))
    }

    /// The decode loop: one token per [`Turn::step`], fed back for the next logits. With
    /// [`Speculate::Ngram`], each fed token takes a draft along ([`local::speculate`]); the
    /// rows the model gives for the drafted positions are the logits of the next steps while
    /// the turn keeps choosing the drafted tokens, and the cache forgets the rest.
    fn decode(
        &mut self,
        turn: &mut Turn,
        mut logits: Vec<f32>,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let n_ctx = self.context_length();
        let spec = self.speculate == Speculate::Ngram;
        let max_draft = MAX_DRAFT.min(self.verify_rows().saturating_sub(1));
        let mut drafter = NgramDrafter::new(max_draft);
        // Drafted tokens already in the cache, each with the logits that follow it.
        let mut ahead: std::collections::VecDeque<(u32, Vec<f32>)> = Default::default();
        let mut kept = 0;
        while turn.running(ctrl, emit) {
            let Some(token) = turn.step(&mut logits, &self.tokenizer, ctrl, emit)? else {
                break;
            };
            if let Some((draft, next)) = ahead.pop_front() {
                if draft == token {
                    turn.accepted(1);
                    kept += 1;
                    logits = next;
                    if ahead.is_empty() {
                        drafter.update(kept, kept);
                    }
                    continue;
                }
                drafter.update(kept + ahead.len() + 1, kept);
                self.truncate(self.cached.len() - ahead.len() - 1);
                ahead.clear();
            }
            if self.cached.len() + 1 >= n_ctx {
                turn.end(aha_protocol::FinishReason::Context);
                break;
            }
            // Room for the token and its draft, with every drafted feed inside the context.
            let room = (n_ctx - 2 - self.cached.len()).min(max_draft);
            let draft = if spec {
                drafter.draft(turn.history(), room)
            } else {
                Vec::new()
            };
            if draft.is_empty() {
                logits = self.step(token)?;
                continue;
            }
            turn.drafted(draft.len());
            kept = 0;
            let mut rows = self.verify(token, &draft)?.into_iter();
            logits = rows.next().unwrap_or_default();
            ahead.extend(draft.into_iter().zip(rows));
        }
        // Drafts the turn never reached leave the cache.
        self.truncate(self.cached.len() - ahead.len());
        Ok(())
    }

    /// The most rows a verifying forward call may have and still give each row a one-token
    /// step's bits ([`Transformer::rows_match_decode`]); 1 where batching changes the rounding
    /// (then nothing is drafted).
    fn verify_rows(&self) -> usize {
        (1..=MAX_DRAFT + 1)
            .rev()
            .find(|&r| self.model.rows_match_decode(r))
            .unwrap_or(1)
    }

    /// Feeds `token` and its `draft` in one forward call; returns the logits after each of them.
    fn verify(&mut self, token: u32, draft: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut feed = Vec::with_capacity(draft.len() + 1);
        feed.push(token);
        feed.extend_from_slice(draft);
        let opts = ForwardOpts {
            all_logits: true,
            rowwise: true,
            ..ForwardOpts::default()
        };
        let Some(l) = self.model.forward_with(&feed, &mut self.cache, opts)? else {
            bail!("verification was cancelled");
        };
        self.cached.extend_from_slice(&feed);
        Ok(l.to_vec2::<f32>()?)
    }

    /// Tool calls: once `<tool_call>` opens in the answer, sampling follows the call grammar. The
    /// vocabulary trie is built on first use and kept.
    fn call_grammar(&mut self, req: &GenerateRequest) -> Result<CallGrammar> {
        let call_schema = match &req.tools {
            Some(t) if req.constrain_tools && !t.is_empty() => Some(constrain::call_schema(t)?),
            _ => None,
        };
        if call_schema.is_some() && self.llg.is_none() {
            let (vocab, _) = self.model.output.dims();
            self.llg = Some(constrain::factory(&self.tokenizer, vocab)?);
        }
        Ok(CallGrammar::new(call_schema.zip(self.llg.clone())))
    }

    /// With `no_tool_calls`, the tokens that open a call (built on first use and kept).
    fn call_openers(
        &mut self,
        req: &GenerateRequest,
    ) -> Option<std::sync::Arc<constrain::CallOpeners>> {
        if req.no_tool_calls && self.openers.is_none() {
            let (vocab, _) = self.model.output.dims();
            self.openers = Some(std::sync::Arc::new(constrain::CallOpeners::new(
                &self.tokenizer,
                vocab,
            )));
        }
        // Shared, not copied: the lists hold most of the vocabulary.
        self.openers.clone().filter(|_| req.no_tool_calls)
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

/// Refuses an empty prompt, or one that leaves no room in the context.
fn check_fits(prompt_tokens: usize, n_ctx: usize) -> Result<()> {
    if prompt_tokens == 0 {
        bail!("the prompt is empty");
    }
    if prompt_tokens >= n_ctx {
        bail!(
            "the prompt is {} tokens but the model's context holds {n_ctx}; shorten it (and leave room for the answer)",
            prompt_tokens
        );
    }
    Ok(())
}

/// After the rendered prompt: opens the reasoning when `open` (an instruction to reason was
/// added, or the model's conventions start every reply with it) and the template did not, and
/// closes it again for [`ThinkMode::Off`] (so the model answers directly).
/// Returns whether the prompt now ends inside a reasoning block.
fn apply_think_mode(text: &mut String, think: ThinkMode, open: bool) -> bool {
    let mut started = text.trim_end().ends_with("<think>");
    if open && !started {
        text.push_str("<think>\n");
        started = true;
    }
    if think == ThinkMode::Off && started {
        // Close the reasoning the template opened, so the model answers directly.
        text.push_str("\n</think>\n\n");
        started = false;
    }
    started
}

/// The part of an assistant prefix that goes after the prompt: a prefix may repeat the `<think>`
/// the template already opened (`started`).
fn prefix_after_prompt(prefix: &str, started: bool) -> &str {
    match prefix.trim_start().strip_prefix("<think>") {
        Some(rest) if started => rest.strip_prefix('\n').unwrap_or(rest),
        _ => prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_mode_opens_or_closes_the_reasoning() {
        let mut t = "<|im_start|>assistant\n".to_string();
        assert!(!apply_think_mode(&mut t, ThinkMode::Auto, false));
        assert_eq!(t, "<|im_start|>assistant\n");
        assert!(apply_think_mode(&mut t, ThinkMode::On, true));
        assert_eq!(t, "<|im_start|>assistant\n<think>\n");
        // A template that opened `<think>` itself: On keeps it, Off closes it.
        let mut t = "A: <think>\n".to_string();
        assert!(apply_think_mode(&mut t, ThinkMode::On, false));
        assert_eq!(t, "A: <think>\n");
        assert!(!apply_think_mode(&mut t, ThinkMode::Off, false));
        assert_eq!(t, "A: <think>\n\n</think>\n\n");
    }

    #[test]
    fn a_prefix_does_not_repeat_the_opened_think() {
        assert_eq!(prefix_after_prompt("<think>\nstep 1", true), "step 1");
        assert_eq!(prefix_after_prompt("  <think>step 1", true), "step 1");
        assert_eq!(
            prefix_after_prompt("<think>\nstep 1", false),
            "<think>\nstep 1"
        );
        assert_eq!(prefix_after_prompt("Answer", true), "Answer");
    }

    #[test]
    fn the_think_prompt_goes_in_the_latest_user_message() {
        let mut msgs = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("one"),
            ChatMessage::assistant("a"),
            ChatMessage::user("two"),
            ChatMessage::tool("result"),
        ];
        crate::add_think_prompt(&mut msgs);
        assert_eq!(
            msgs[0].content, "sys",
            "the system message (the cached prefix) stays"
        );
        assert_eq!(msgs[1].content, "one");
        assert_eq!(
            msgs[3].content,
            format!("two\n\n{}", crate::THINK_PROMPT.trim())
        );
        assert_eq!(msgs[4].content, "result");
        let mut none = vec![ChatMessage::system("sys")];
        crate::add_think_prompt(&mut none);
        assert!(none[0].content.starts_with("sys\n\nBefore you answer"));
    }

    #[test]
    fn prompts_must_fit() {
        assert!(check_fits(0, 10).unwrap_err().to_string().contains("empty"));
        assert!(check_fits(10, 10)
            .unwrap_err()
            .to_string()
            .contains("context holds 10"));
        check_fits(9, 10).unwrap();
    }

    #[test]
    fn tools_become_text_for_templates_without_them() {
        let mut call = ChatMessage::assistant("Looking.");
        call.tool_calls =
            Some(serde_json::json!([{"function": {"name": "w", "arguments": {"c": 1}}}]));
        let mut result = ChatMessage::tool("sunny");
        result.name = Some("w".into());
        result.tool_call_id = Some("c1".into());
        let mut msgs = vec![ChatMessage::user("hi"), call, result];
        tools_as_text(&mut msgs, &[serde_json::json!({"name": "w"})]);
        assert_eq!(msgs[0].role, aha_protocol::Role::System);
        assert!(msgs[0].content.contains(r#"{"name":"w"}"#));
        assert!(msgs[2].content.ends_with("</tool_call>"));
        assert!(msgs[2].tool_calls.is_none());
        assert_eq!(msgs[3].role, aha_protocol::Role::User);
        assert_eq!(
            msgs[3].content,
            "<tool_response name=\"w\">\nsunny\n</tool_response>"
        );
        assert!(msgs[3].tool_call_id.is_none());
    }
}
