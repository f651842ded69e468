//! The local engine's decoding loop, in pieces. [`Turn`] advances one token per [`Turn::step`]
//! and holds the sampler plus small parts with one job each: the tool-call grammar
//! ([`CallGrammar`], fed by [`CallWatch`]), the opener mask for `no_tool_calls` ([`OpenerMask`]),
//! the thinking budget ([`ThinkBudget`]) and the counters ([`StatsAccumulator`]). The model's
//! forward pass stays with [`super::engine::LocalEngine`]; nothing here needs a model.

use crate::constrain::{self, CallConstraint, CallOpeners};
use crate::reasoning::{ReasoningParser, Segment};
use crate::sampler::Sampler;
use crate::tokenizer::{StreamDecoder, TextTokenizer};
use crate::{Control, GenerateRequest, PreparedPrompt};
use aha_protocol::trace::{self, LoopDetector};
use aha_protocol::{Event, LoopAction, TopToken, TurnStats};
use anyhow::Result;
use llguidance::ParserFactory;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What a spent thinking budget makes the model write: the close of its reasoning.
pub const BUDGET_CLOSE: &str = "\n</think>\n\n";

/// Emits the segments of one decoded piece; when the piece stayed one segment it keeps its
/// token's log-probability, entropy and alternatives.
pub fn emit_segments(
    emit: &mut dyn FnMut(Event),
    segs: Vec<Segment>,
    lp: Option<f32>,
    ent: Option<f32>,
    top: Vec<TopToken>,
) {
    if segs.len() == 1 {
        if let Some(s) = segs.into_iter().next() {
            emit(s.into_event(lp, ent, top));
        }
        return;
    }
    for s in segs {
        emit(s.into_event(None, None, Vec::new()));
    }
}

/// Token counts, finish reason and speeds of one turn.
#[derive(Debug)]
pub struct StatsAccumulator {
    t0: Instant,
    stats: TurnStats,
    first_token_at: Option<Instant>,
    generated: usize,
}

impl StatsAccumulator {
    /// Starts counting after the prompt: `prefill_s` seconds since `t0` went into prefilling.
    pub fn new(t0: Instant, prompt_tokens: usize, prefilled: usize, prefill_s: f64) -> Self {
        Self {
            t0,
            stats: TurnStats {
                prompt_tokens,
                prefilled_tokens: prefilled,
                prefill_tok_s: prefilled as f64 / prefill_s.max(1e-9),
                finish_reason: aha_protocol::FinishReason::Length,
                ..TurnStats::default()
            },
            first_token_at: None,
            generated: 0,
        }
    }

    /// A token was chosen at `now`; the first one sets the time to first token.
    pub fn token_chosen(&mut self, now: Instant) {
        if self.first_token_at.is_none() {
            self.first_token_at = Some(now);
            self.stats.ttft_ms = now.duration_since(self.t0).as_secs_f64() * 1000.0;
        }
    }

    /// Counts a generated token (not an end of turn) as reasoning or answer.
    pub fn count(&mut self, thinking: bool) {
        self.generated += 1;
        if thinking {
            self.stats.thinking_tokens += 1;
        } else {
            self.stats.answer_tokens += 1;
        }
    }

    /// `n` tokens were drafted (speculative decoding).
    pub fn drafted(&mut self, n: usize) {
        self.stats.drafted_tokens += n;
    }

    /// `n` drafted tokens were kept.
    pub fn accepted(&mut self, n: usize) {
        self.stats.accepted_tokens += n;
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Reasoning tokens generated so far.
    pub fn thinking_tokens(&self) -> usize {
        self.stats.thinking_tokens
    }

    /// Sets why the turn ended (`length` until told otherwise).
    pub fn finish(&mut self, reason: aha_protocol::FinishReason) {
        self.stats.finish_reason = reason;
    }

    /// The turn's stats as it ends at `now`, with the decode speed (tokens after the first, per second).
    pub fn close(&mut self, now: Instant) -> TurnStats {
        if let Some(ft) = self.first_token_at {
            let dt = now.duration_since(ft).as_secs_f64();
            if self.generated > 1 {
                self.stats.decode_tok_s = (self.generated - 1) as f64 / dt.max(1e-9);
            }
        }
        self.stats.clone()
    }
}

/// `think_budget`: once the reasoning has used its tokens, the close of the reasoning is forced
/// in (once per turn), so the model goes on to answer.
#[derive(Debug, Default)]
pub struct ThinkBudget {
    limit: Option<usize>,
    closed: bool,
    forced: VecDeque<u32>,
}

impl ThinkBudget {
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// The next token of a forced close, while one is being written.
    pub fn forced(&mut self) -> Option<u32> {
        self.forced.pop_front()
    }

    /// After a token: whether the budget ran out just now (true at most once per turn).
    pub fn exhausted(&mut self, in_thinking: bool, thinking_tokens: usize) -> bool {
        match self.limit {
            Some(b) if !self.closed && in_thinking && thinking_tokens >= b => {
                self.closed = true;
                true
            }
            _ => false,
        }
    }

    /// Queues the tokens of the close ([`BUDGET_CLOSE`]) to be written next.
    pub fn force(&mut self, tokens: Vec<u32>) {
        self.forced.extend(tokens);
    }
}

/// How a tool call began, as [`CallWatch::push`] saw it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallStart {
    /// The answer opened with `{`: a bare call (small models skip the tags).
    pub bare: bool,
    /// The answer text now ends with `<tool_call>`.
    pub tagged: bool,
}

/// Watches the answer text for the start of a tool call, keeping only a short tail of it.
#[derive(Debug, Default)]
pub struct CallWatch {
    tail: String,
}

impl CallWatch {
    /// Adds an answer piece; says whether it started a call.
    pub fn push(&mut self, piece: &str) -> CallStart {
        let bare = self.tail.trim().is_empty() && piece.trim_start().starts_with('{');
        self.tail.push_str(piece);
        let mut tagged = false;
        if self.tail.ends_with(constrain::CALL_OPEN) {
            self.tail.clear();
            tagged = true;
        } else if self.tail.len() > 64 {
            let cut = self.tail.len() - 32;
            let cut = (cut..self.tail.len())
                .find(|&i| self.tail.is_char_boundary(i))
                .unwrap_or(self.tail.len());
            self.tail.drain(..cut);
        }
        CallStart { bare, tagged }
    }
}

/// Tool calls under the grammar: whether one is constrained now, when one starts, when it ends.
pub struct CallGrammar {
    /// The calls' schema and the vocabulary trie, when calls are constrained at all.
    grammar: Option<(Value, Arc<ParserFactory>)>,
    active: Option<CallConstraint>,
    watch: CallWatch,
}

impl CallGrammar {
    pub fn new(grammar: Option<(Value, Arc<ParserFactory>)>) -> Self {
        Self {
            grammar,
            active: None,
            watch: CallWatch::default(),
        }
    }

    /// Whether a call is being constrained now.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// A prefix that already opened a call (a branch, or a caller forcing a call) starts it.
    pub fn start_after_prefix(&mut self, prefix: &str, in_thinking: bool) -> Result<()> {
        if let (Some((schema, f)), false) = (&self.grammar, in_thinking) {
            if prefix.trim_end().ends_with(constrain::CALL_OPEN) {
                self.active = Some(CallConstraint::new(f, schema)?);
            }
        }
        Ok(())
    }

    /// Masks `logits` to the call grammar while a call is under way; a mask that fails ends the
    /// constraint, with a notice.
    pub fn mask(&mut self, logits: &mut [f32], emit: &mut dyn FnMut(Event)) {
        if let Some(c) = self.active.as_mut() {
            if let Err(e) = c.mask(logits) {
                emit(Event::Notice {
                    message: format!("{e:#}; the call continues unconstrained"),
                });
                self.active = None;
            }
        }
    }

    /// Advances past a sampled token; the constraint ends with the call or a token that breaks it.
    pub fn consume(&mut self, token: u32) {
        if let Some(c) = self.active.as_mut() {
            if c.consume(token).is_err() || c.done() {
                self.active = None;
            }
        }
    }

    /// After an answer piece, while no call is constrained: starts the constraint when the piece
    /// opened a call (a bare one counts the token just written).
    pub fn observe(&mut self, piece: &str, token: u32, emit: &mut dyn FnMut(Event)) {
        let (Some((schema, f)), None) = (&self.grammar, &self.active) else {
            return;
        };
        let start = self.watch.push(piece);
        if start.bare {
            if let Some(mut c) = open_call(f, schema, emit) {
                if c.consume(token).is_ok() && !c.done() {
                    self.active = Some(c);
                }
            }
        }
        if start.tagged {
            if let Some(c) = open_call(f, schema, emit) {
                self.active = Some(c);
            }
        }
    }
}

/// Starts a call constraint; when the grammar cannot be built, says so and goes on unconstrained.
fn open_call(
    f: &ParserFactory,
    schema: &Value,
    emit: &mut dyn FnMut(Event),
) -> Option<CallConstraint> {
    match CallConstraint::new(f, schema) {
        Ok(c) => Some(c),
        Err(e) => {
            emit(Event::Notice {
                message: format!("{e:#}; tool calls are not constrained"),
            });
            None
        }
    }
}

/// `no_tool_calls`: keeps the answer from opening a tool call.
#[derive(Debug)]
pub struct OpenerMask {
    /// Shared, not copied: the lists hold most of the vocabulary.
    openers: Option<Arc<CallOpeners>>,
    /// Whether the answer shows any text yet.
    answer_started: bool,
}

impl OpenerMask {
    /// `prefix` is the assistant text the turn continues from; `in_thinking` where it left the parser.
    pub fn new(openers: Option<Arc<CallOpeners>>, in_thinking: bool, prefix: &str) -> Self {
        let answer_started = !in_thinking
            && prefix
                .rsplit("</think>")
                .next()
                .is_some_and(|a| !a.trim().is_empty());
        Self {
            openers,
            answer_started,
        }
    }

    /// Whether the answer shows any text yet.
    pub fn answer_started(&self) -> bool {
        self.answer_started
    }

    /// Masks the opening tokens (in the answer only).
    pub fn apply(&self, logits: &mut [f32], in_thinking: bool) {
        if let (Some(o), false) = (&self.openers, in_thinking) {
            o.mask(logits, self.answer_started);
        }
    }

    /// After a piece: `was_answer` whether it was written in the answer, `in_thinking` the state after it.
    pub fn observe(&mut self, was_answer: bool, in_thinking: bool, piece: &str) {
        if was_answer && !in_thinking && !piece.trim().is_empty() {
            self.answer_started = true;
        }
    }
}

/// The most nudges a turn writes; a loop after them ends the turn.
pub const MAX_NUDGES: usize = 2;

/// The token chosen at a position: sampled (with its log-probability, the entropy it was drawn
/// from and the best tokens of that distribution) or written on the model's behalf.
#[derive(Debug, Default)]
struct Chosen {
    token: u32,
    logprob: Option<f32>,
    entropy: Option<f32>,
    top: Vec<(u32, f32)>,
}

impl Chosen {
    fn forced(token: u32) -> Self {
        Self {
            token,
            ..Self::default()
        }
    }
}

/// One turn of local generation after the prefill: which token comes next and what it shows.
pub struct Turn<'r> {
    req: &'r GenerateRequest,
    sampler: Sampler,
    parser: ReasoningParser,
    /// Prompt and generated tokens (the repetition penalty looks back over both).
    history: Vec<u32>,
    prompt_len: usize,
    decoder: StreamDecoder,
    calls: CallGrammar,
    openers: OpenerMask,
    budget: ThinkBudget,
    /// Tokens written into the reasoning on the model's behalf, next: budget forcing's "Wait"
    /// (`think_min`) and the nudge out of a loop.
    inserted: VecDeque<u32>,
    /// Watches the reasoning for loops (absent with `loops = off`).
    loops: Option<LoopDetector>,
    nudges: usize,
    /// A loop ended the turn (`loops = stop`).
    looped: bool,
    /// Whether the reasoning's text so far ends in whitespace (where "Wait" goes without a space).
    thinking_ends_in_space: bool,
    /// Per generated token: the entropy and DeepConf's token confidence (`None` where the
    /// token was written on the model's behalf), for the turn's forks and group confidence.
    entropies: Vec<Option<f32>>,
    confidences: Vec<Option<f32>>,
    stats: StatsAccumulator,
}

impl<'r> Turn<'r> {
    pub fn new(
        req: &'r GenerateRequest,
        prompt: &PreparedPrompt,
        stats: StatsAccumulator,
        mut calls: CallGrammar,
        openers: Option<Arc<CallOpeners>>,
    ) -> Result<Self> {
        let sampler = Sampler::new(req.sampling.clone())
            .with_top(req.trace.top_logprobs.max(trace::CONFIDENCE_K));
        let mut parser = ReasoningParser::new(prompt.started_in_think);
        // A branch continues an assistant turn: put the parser where that text left it.
        let _ = parser.push(&prompt.assistant_prefix);
        let openers = OpenerMask::new(openers, parser.in_thinking(), &prompt.assistant_prefix);
        calls.start_after_prefix(&prompt.assistant_prefix, parser.in_thinking())?;
        let loops =
            (req.trace.loops != LoopAction::Off).then(|| LoopDetector::new(req.trace.loop_repeats));
        Ok(Self {
            req,
            sampler,
            parser,
            history: prompt.tokens.clone(),
            prompt_len: prompt.tokens.len(),
            decoder: StreamDecoder::default(),
            calls,
            openers,
            budget: ThinkBudget::new(req.think_budget),
            inserted: VecDeque::new(),
            loops,
            nudges: 0,
            looped: false,
            thinking_ends_in_space: prompt
                .assistant_prefix
                .chars()
                .last()
                .is_none_or(char::is_whitespace),
            entropies: Vec::new(),
            confidences: Vec::new(),
            stats,
        })
    }

    /// Before each token: false once the turn is over (`max_tokens` reached, or cancelled). Waits
    /// out a pause.
    pub fn running(&mut self, ctrl: &Control, emit: &mut dyn FnMut(Event)) -> bool {
        if self.stats.generated() >= self.req.max_tokens {
            return false;
        }
        ctrl.wait_while_paused(emit);
        if ctrl.cancelled() {
            self.stats.finish(aha_protocol::FinishReason::Cancelled);
            return false;
        }
        true
    }

    /// The prompt's tokens and those generated so far (what a draft is looked up in).
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// `n` tokens were drafted after the latest one.
    pub fn drafted(&mut self, n: usize) {
        self.stats.drafted(n);
    }

    /// `n` drafted tokens were chosen as the model's own.
    pub fn accepted(&mut self, n: usize) {
        self.stats.accepted(n);
    }

    /// Ends the turn early for `reason` (`context`: the cache is full).
    pub fn end(&mut self, reason: aha_protocol::FinishReason) {
        self.stats.finish(reason);
    }

    /// The next token: a forced one (the budget's close, an inserted "Wait" or nudge), or a
    /// sample from `logits` under the masks, which budget forcing may replace by "Wait".
    fn choose(
        &mut self,
        logits: &mut [f32],
        tok: &TextTokenizer,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Chosen> {
        if let Some(t) = self.budget.forced().or_else(|| self.inserted.pop_front()) {
            return Ok(Chosen::forced(t));
        }
        self.openers.apply(logits, self.parser.in_thinking());
        self.calls.mask(logits, emit);
        let s = self.sampler.sample(logits, &self.history);
        if self.too_early_to_stop(tok, s.token) {
            // s1's budget forcing: the model tried to end its reasoning before `think_min`
            // tokens; it writes "Wait" instead and goes on thinking.
            let sep = if self.thinking_ends_in_space { "" } else { " " };
            self.inserted
                .extend(tok.encode(&format!("{sep}{}", self.req.trace.wait))?);
            if let Some(t) = self.inserted.pop_front() {
                return Ok(Chosen::forced(t));
            }
        }
        self.calls.consume(s.token);
        Ok(Chosen {
            token: s.token,
            logprob: Some(s.logprob),
            entropy: Some(s.entropy),
            top: self.sampler.top().to_vec(),
        })
    }

    /// Whether `token` would end the reasoning (its close, or the end of the turn) while
    /// `think_min` wants more of it. The close counts where `</think>` is one token, as in the
    /// R1 distills; where it is spelled in pieces its first piece (`</`) cannot be told from
    /// other closing tags, so only the end of the turn counts there.
    fn too_early_to_stop(&self, tok: &TextTokenizer, token: u32) -> bool {
        let Some(min) = self.req.trace.think_min else {
            return false;
        };
        if !self.parser.in_thinking() || self.stats.thinking_tokens() >= min {
            return false;
        }
        (!self.req.ignore_eos && tok.stop_ids.contains(&token))
            || tok.token_id("</think>") == Some(token)
    }

    /// One token from `logits`: chosen, counted, shown, and checked against the budget. Returns
    /// the token to feed to the model, or `None` when it ended the turn.
    pub fn step(
        &mut self,
        logits: &mut [f32],
        tok: &TextTokenizer,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Option<u32>> {
        let chosen = self.choose(logits, tok, emit)?;
        let token = chosen.token;
        self.stats.token_chosen(Instant::now());
        if !self.req.ignore_eos && tok.stop_ids.contains(&token) {
            self.stats.finish(aha_protocol::FinishReason::Stop);
            return Ok(None);
        }
        self.stats.count(self.parser.in_thinking());
        self.history.push(token);
        self.entropies.push(chosen.entropy);
        // A token written on the model's behalf has no alternatives, so no confidence.
        self.confidences.push(trace::token_confidence(
            &chosen.top[..chosen.top.len().min(trace::CONFIDENCE_K)]
                .iter()
                .map(|e| e.1)
                .collect::<Vec<_>>(),
        ));
        let n = self.req.trace.top_logprobs.min(chosen.top.len());
        let top = if n > 0 {
            let ids: Vec<u32> = chosen.top[..n].iter().map(|e| e.0).collect();
            self.decoder
                .peek(tok, &ids)?
                .into_iter()
                .zip(&chosen.top[..n])
                .map(|(text, e)| TopToken { text, logprob: e.1 })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(piece) = self.decoder.step(tok, token)? {
            self.show(
                &piece,
                token,
                (chosen.logprob, chosen.entropy, top),
                tok,
                ctrl,
                emit,
            )?;
        }
        if self.looped {
            self.stats.finish(aha_protocol::FinishReason::Loop);
            return Ok(None);
        }
        if self
            .budget
            .exhausted(self.parser.in_thinking(), self.stats.thinking_tokens())
        {
            // Out of budget: make the model close its reasoning and answer.
            self.inserted.clear();
            self.budget.force(tok.encode(BUDGET_CLOSE)?);
        }
        Ok(Some(token))
    }

    /// Emits a decoded piece and updates what follows the text: the answer's start, a tool call's
    /// start, a loop in the reasoning, and a pause at a reasoning step boundary.
    fn show(
        &mut self,
        piece: &str,
        token: u32,
        (lp, ent, top): (Option<f32>, Option<f32>, Vec<TopToken>),
        tok: &TextTokenizer,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let boundary = self.parser.in_thinking() && piece.contains("\n\n");
        let in_answer = !self.parser.in_thinking();
        let segs = self.parser.push(piece);
        let thought: String = segs
            .iter()
            .filter_map(|s| match s {
                Segment::Thinking(t) => Some(t.as_str()),
                Segment::Answer(_) => None,
            })
            .collect();
        if let Some(c) = thought.chars().last() {
            self.thinking_ends_in_space = c.is_whitespace();
        }
        emit_segments(emit, segs, lp, ent, top);
        self.watch_loops(&thought, tok, emit)?;
        self.openers
            .observe(in_answer, self.parser.in_thinking(), piece);
        if in_answer {
            self.calls.observe(piece, token, emit);
        }
        if boundary && ctrl.step_to_boundary.swap(false, Ordering::SeqCst) {
            ctrl.pause();
        }
        Ok(())
    }

    /// Feeds reasoning text to the loop detector and acts on a loop as `loops` says: a
    /// `reasoning_loop` event, then nothing more (`warn`), the end of the turn (`stop`), or
    /// the nudge written into the reasoning (`nudge`, at most [`MAX_NUDGES`] times; a loop
    /// after them ends the turn).
    fn watch_loops(
        &mut self,
        thought: &str,
        tok: &TextTokenizer,
        emit: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let Some(det) = self.loops.as_mut() else {
            return Ok(());
        };
        if thought.is_empty() || !self.inserted.is_empty() {
            return Ok(());
        }
        let Some(hit) = det.push(thought) else {
            return Ok(());
        };
        let mut action = self.req.trace.loops;
        if action == LoopAction::Nudge && self.nudges >= MAX_NUDGES {
            action = LoopAction::Stop;
        }
        match action {
            LoopAction::Nudge => {
                self.nudges += 1;
                det.reset();
                self.inserted
                    .extend(tok.encode(&format!("\n\n{}\n\n", self.req.trace.nudge.trim()))?);
            }
            LoopAction::Stop => self.looped = true,
            LoopAction::Warn | LoopAction::Off => {}
        }
        emit(Event::ReasoningLoop {
            count: hit.count,
            text: hit.text,
            action,
        });
        Ok(())
    }

    /// Ends the turn: flushes the parser and emits `TurnFinished` with the stats (forks and
    /// group confidence included) and the tokens generated.
    pub fn finish(mut self, emit: &mut dyn FnMut(Event)) -> TurnStats {
        emit_segments(emit, self.parser.finish(), None, None, Vec::new());
        let mut stats = self.stats.close(Instant::now());
        let o = &self.req.trace;
        if self.entropies.iter().any(Option::is_some) {
            stats.forks = Some(trace::forks(&self.entropies, o.fork_share, o.fork_min_nats).len());
        }
        stats.min_group_confidence =
            trace::min_group_confidence(&self.confidences, o.confidence_window);
        emit(Event::TurnFinished {
            stats: stats.clone(),
            tokens: self.history[self.prompt_len..].to_vec(),
        });
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SamplingParams;
    use crate::tokenizer::byte_symbol;
    use serde_json::json;
    use std::str::FromStr;
    use std::time::Duration;

    const THINK: u32 = 256;
    const THINK_END: u32 = 257;
    const IM_END: u32 = 258;
    const CALL: u32 = 259;
    const VOCAB: usize = 260;

    /// A byte-level tokenizer without merges: ids 0–255 are the bytes, then four added tokens.
    fn byte_tokenizer() -> TextTokenizer {
        let vocab: serde_json::Map<String, Value> = (0u8..=255)
            .map(|b| (byte_symbol(b).to_string(), json!(b)))
            .collect();
        let added = |id: u32, content: &str, special: bool| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": special})
        };
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": true, "use_regex": true});
        let j = json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [added(THINK, "<think>", false), added(THINK_END, "</think>", false),
                             added(IM_END, "<|im_end|>", true), added(CALL, "<tool_call>", false)],
            "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
        });
        TextTokenizer {
            inner: tokenizers::Tokenizer::from_str(&j.to_string()).unwrap(),
            stop_ids: [IM_END].into_iter().collect(),
            bos: None,
            eos: Some((IM_END, "<|im_end|>".into())),
            add_bos: false,
            pre: "test".into(),
        }
    }

    /// Logits that make `token` the greedy choice.
    fn favour(token: u32) -> Vec<f32> {
        let mut l = vec![0.0; VOCAB];
        l[token as usize] = 10.0;
        l
    }

    fn request(max_tokens: usize) -> GenerateRequest {
        let mut req = GenerateRequest::chat(vec![]);
        req.sampling = SamplingParams::greedy();
        req.max_tokens = max_tokens;
        req
    }

    fn prompt(started_in_think: bool, prefix: &str) -> PreparedPrompt {
        PreparedPrompt {
            tokens: vec![1, 2, 3],
            text: String::new(),
            started_in_think,
            assistant_prefix: prefix.into(),
            stable_prefix: 0,
        }
    }

    fn stats() -> StatsAccumulator {
        StatsAccumulator::new(Instant::now(), 3, 3, 0.5)
    }

    /// Runs a turn as `LocalEngine::generate` does, with `script` as the model's favourite next
    /// tokens (the last one repeats). Returns the events.
    fn run(turn: &mut Turn, script: &[u32], tok: &TextTokenizer) -> Vec<Event> {
        let ctrl = Control::default();
        let mut events = Vec::new();
        let mut emit = |e: Event| events.push(e);
        let mut i = 0;
        while turn.running(&ctrl, &mut emit) {
            let mut logits = favour(script[i.min(script.len() - 1)]);
            i += 1;
            if turn
                .step(&mut logits, tok, &ctrl, &mut emit)
                .unwrap()
                .is_none()
            {
                break;
            }
        }
        events
    }

    fn texts(events: &[Event]) -> (String, String) {
        let (mut thinking, mut answer) = (String::new(), String::new());
        for e in events {
            match e {
                Event::ThinkingDelta { text, .. } => thinking.push_str(text),
                Event::AnswerDelta { text, .. } => answer.push_str(text),
                _ => {}
            }
        }
        (thinking, answer)
    }

    #[test]
    fn stats_count_time_and_finish() {
        let t0 = Instant::now();
        let mut s = StatsAccumulator::new(t0, 10, 4, 2.0);
        s.token_chosen(t0 + Duration::from_millis(250));
        s.token_chosen(t0 + Duration::from_millis(900)); // only the first counts
        s.count(true);
        s.count(true);
        s.count(false);
        assert_eq!((s.generated(), s.thinking_tokens()), (3, 2));
        let st = s.close(t0 + Duration::from_millis(1250));
        assert_eq!((st.prompt_tokens, st.prefilled_tokens), (10, 4));
        assert_eq!((st.thinking_tokens, st.answer_tokens), (2, 1));
        assert_eq!(st.prefill_tok_s, 2.0);
        assert!((st.ttft_ms - 250.0).abs() < 1e-6);
        assert!(
            (st.decode_tok_s - 2.0).abs() < 1e-9,
            "2 tokens after the first in 1 s"
        );
        assert_eq!(st.finish_reason, aha_protocol::FinishReason::Length);
        s.finish(aha_protocol::FinishReason::Stop);
        assert_eq!(s.close(t0).finish_reason, aha_protocol::FinishReason::Stop);
    }

    #[test]
    fn stats_without_tokens_have_no_speeds() {
        let t0 = Instant::now();
        let mut s = StatsAccumulator::new(t0, 1, 1, 0.0);
        assert_eq!(s.close(t0).decode_tok_s, 0.0);
        s.token_chosen(t0);
        s.count(false);
        let st = s.close(t0 + Duration::from_secs(1));
        assert_eq!(st.decode_tok_s, 0.0, "one token gives no decode speed");
        assert!(
            (st.prefill_tok_s - 1e9).abs() < 1.0,
            "a zero prefill time is clamped"
        );
    }

    #[test]
    fn budget_forces_the_close_once_when_spent() {
        let mut b = ThinkBudget::new(Some(3));
        assert!(!b.exhausted(true, 1));
        assert!(!b.exhausted(true, 2));
        assert!(!b.exhausted(false, 3), "not while answering");
        assert!(b.exhausted(true, 3));
        assert!(!b.exhausted(true, 4), "only once");
        assert_eq!(b.forced(), None);
        b.force(vec![7, 8]);
        assert_eq!(
            (b.forced(), b.forced(), b.forced()),
            (Some(7), Some(8), None)
        );
        let mut none = ThinkBudget::new(None);
        assert!(!(0..100).any(|n| none.exhausted(true, n)));
        let mut zero = ThinkBudget::new(Some(0));
        assert!(zero.exhausted(true, 0));
    }

    #[test]
    fn watch_sees_tagged_and_bare_calls() {
        let mut w = CallWatch::default();
        assert_eq!(
            w.push("  {"),
            CallStart {
                bare: true,
                tagged: false
            }
        );
        let mut w = CallWatch::default();
        assert_eq!(w.push("Sure"), CallStart::default());
        assert_eq!(w.push(" {"), CallStart::default(), "not bare after text");
        assert_eq!(w.push(" <tool_"), CallStart::default());
        assert_eq!(
            w.push("call>"),
            CallStart {
                bare: false,
                tagged: true
            }
        );
        // The tail was cleared: a second call is seen too, after long text with wide characters.
        assert_eq!(w.push(&"é".repeat(100)), CallStart::default());
        assert!(w.tail.len() <= 64);
        assert_eq!(
            w.push("<tool_call>"),
            CallStart {
                bare: false,
                tagged: true
            }
        );
    }

    #[test]
    fn opener_mask_follows_the_answer() {
        let o = Arc::new(CallOpeners {
            always: vec![CALL],
            first: vec![b'{' as u32],
        });
        let m = OpenerMask::new(Some(o.clone()), false, "<think>x</think>\n\n");
        assert!(!m.answer_started());
        let m = OpenerMask::new(Some(o.clone()), false, "<think>x</think>\n\nHi");
        assert!(m.answer_started());
        let mut m2 = OpenerMask::new(Some(o), false, "");
        let mut l = vec![0.0; VOCAB];
        m2.apply(&mut l, true);
        assert!(l.iter().all(|x| *x == 0.0), "nothing masked while thinking");
        m2.apply(&mut l, false);
        assert_eq!(l[CALL as usize], f32::NEG_INFINITY);
        assert_eq!(l[b'{' as usize], f32::NEG_INFINITY);
        m2.observe(true, false, "  ");
        assert!(!m2.answer_started(), "whitespace is not an answer yet");
        m2.observe(false, false, "x");
        assert!(
            !m2.answer_started(),
            "text written while thinking does not count"
        );
        m2.observe(true, false, "Hello");
        let mut l = vec![0.0; VOCAB];
        m2.apply(&mut l, false);
        assert_eq!(l[CALL as usize], f32::NEG_INFINITY);
        assert_eq!(
            l[b'{' as usize], 0.0,
            "`{{` is allowed once the answer started"
        );
        m.apply(&mut l, false);
        assert_eq!(l[b'{' as usize], 0.0);
    }

    fn grammar(tok: &TextTokenizer) -> CallGrammar {
        let tools = [
            json!({"type": "function", "function": {"name": "get", "parameters":
            {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}),
        ];
        let schema = constrain::call_schema(&tools).unwrap();
        CallGrammar::new(Some((schema, constrain::factory(tok, VOCAB).unwrap())))
    }

    #[test]
    fn call_grammar_starts_on_a_tag_a_brace_or_a_prefix() {
        let tok = byte_tokenizer();
        let mut none = CallGrammar::new(None);
        none.start_after_prefix("<tool_call>", false).unwrap();
        none.observe("<tool_call>", CALL, &mut |_| {});
        assert!(!none.is_active(), "nothing to constrain without tools");

        let mut g = grammar(&tok);
        g.start_after_prefix("<think>plan <tool_call>", true)
            .unwrap();
        assert!(!g.is_active(), "a call opened in the reasoning is not one");
        g.start_after_prefix("<tool_call>\n", false).unwrap();
        assert!(g.is_active());

        let mut g = grammar(&tok);
        g.observe("Let me look. ", b'L' as u32, &mut |_| {});
        assert!(!g.is_active());
        g.observe("<tool_call>", CALL, &mut |_| {});
        assert!(g.is_active());
        let mut l = vec![0.0; VOCAB];
        g.mask(&mut l, &mut |_| {});
        assert_eq!(
            l[b'z' as usize],
            f32::NEG_INFINITY,
            "no text before the object"
        );
        assert_eq!(l[b'{' as usize], 0.0);
        for b in br#"{"name": "get", "arguments": {"q": "x"}}"# {
            g.consume(*b as u32);
        }
        assert!(!g.is_active(), "the constraint ends with the call");

        let mut g = grammar(&tok);
        g.observe("{", b'{' as u32, &mut |_| {});
        assert!(g.is_active(), "a bare call is constrained from its brace");
    }

    #[test]
    fn turn_forces_the_close_when_the_budget_is_spent() {
        let tok = byte_tokenizer();
        let mut req = request(20);
        req.think_budget = Some(3);
        let p = prompt(true, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let script = [b'a', b'b', b'c', b'd', b'd', b'd', b'd', b'x'].map(u32::from);
        let mut events = run(&mut turn, &[&script[..], &[IM_END]].concat(), &tok);
        let stats = turn.finish(&mut |e| events.push(e));
        // `abc`, then the forced `\n</think>\n\n` whatever the logits say, then `x`.
        let Some(Event::TurnFinished { tokens, .. }) = events.last() else {
            panic!("no TurnFinished: {events:?}");
        };
        assert_eq!(
            tokens,
            &[97, 98, 99, 10, THINK_END, 10, 10, u32::from(b'x')]
        );
        assert_eq!((stats.thinking_tokens, stats.answer_tokens), (5, 3));
        assert_eq!(stats.finish_reason, aha_protocol::FinishReason::Stop);
        let (thinking, answer) = texts(&events);
        assert_eq!(thinking.trim(), "abc");
        assert_eq!(answer.trim(), "x");
        let forced_logprob = events.iter().any(|e| {
            matches!(e, Event::AnswerDelta { text, logprob: Some(_), .. } if text.trim().is_empty())
        });
        assert!(!forced_logprob, "forced tokens carry no logprob");
    }

    /// Runs a turn whose "model" picks the next token from the text so far.
    fn run_model(
        turn: &mut Turn,
        tok: &TextTokenizer,
        mut model: impl FnMut(&str) -> u32,
    ) -> Vec<Event> {
        let ctrl = Control::default();
        let mut events = Vec::new();
        let mut emit = |e: Event| events.push(e);
        while turn.running(&ctrl, &mut emit) {
            let text = tok.decode(&turn.history()[3..]).unwrap();
            let mut logits = favour(model(&text));
            if turn
                .step(&mut logits, tok, &ctrl, &mut emit)
                .unwrap()
                .is_none()
            {
                break;
            }
        }
        events
    }

    /// A model stuck on one sentence: it writes `sentence` again and again.
    fn stuck(sentence: &'static str) -> impl FnMut(&str) -> u32 {
        move |text: &str| {
            let partial = [". ", "\n"]
                .iter()
                .filter_map(|sep| text.rfind(sep).map(|i| i + sep.len()))
                .max()
                .map_or(text, |i| &text[i..]);
            let b = sentence.as_bytes();
            let next = if sentence.starts_with(partial) && partial.len() < b.len() {
                b[partial.len()]
            } else {
                b[0]
            };
            u32::from(next)
        }
    }

    const SENTENCE: &str = "The bat costs one dollar more than the ball. ";

    fn loops(action: LoopAction) -> GenerateRequest {
        let mut req = request(1000);
        req.trace.loops = action;
        req
    }

    fn loop_events(events: &[Event]) -> Vec<(usize, LoopAction)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ReasoningLoop {
                    count,
                    action,
                    text,
                } => {
                    assert!(text.contains("bat costs"), "{text}");
                    Some((*count, *action))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_loop_in_the_reasoning_warns_and_goes_on() {
        let tok = byte_tokenizer();
        let req = loops(LoopAction::Warn);
        let p = prompt(true, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let events = run_model(&mut turn, &tok, stuck(SENTENCE));
        let s = turn.finish(&mut |_| {});
        assert_eq!(s.finish_reason.as_str(), "length", "warn does not stop it");
        let l = loop_events(&events);
        assert_eq!(l[0], (3, LoopAction::Warn));
        assert_eq!(l[1], (4, LoopAction::Warn), "each further repeat again");
        // The event comes right after the sentence's third full stop.
        let at = events
            .iter()
            .position(|e| matches!(e, Event::ReasoningLoop { .. }))
            .unwrap();
        assert_eq!(texts(&events[..at]).0.matches("ball.").count(), 3);
        // Off: never checked.
        let req = loops(LoopAction::Off);
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        assert!(loop_events(&run_model(&mut turn, &tok, stuck(SENTENCE))).is_empty());
    }

    #[test]
    fn a_loop_stops_the_turn_when_asked() {
        let tok = byte_tokenizer();
        let req = loops(LoopAction::Stop);
        let p = prompt(true, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let mut events = run_model(&mut turn, &tok, stuck(SENTENCE));
        let s = turn.finish(&mut |e| events.push(e));
        assert_eq!(s.finish_reason, aha_protocol::FinishReason::Loop);
        assert_eq!(loop_events(&events), vec![(3, LoopAction::Stop)]);
        assert_eq!(texts(&events).0.trim(), SENTENCE.repeat(3).trim());
    }

    #[test]
    fn a_nudge_is_written_into_the_reasoning_then_a_loop_after_the_last_one_stops() {
        let tok = byte_tokenizer();
        let mut req = loops(LoopAction::Nudge);
        req.trace.nudge = "Let me think differently.".into();
        let p = prompt(true, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let mut events = run_model(&mut turn, &tok, stuck(SENTENCE));
        let s = turn.finish(&mut |e| events.push(e));
        assert_eq!(
            loop_events(&events),
            vec![
                (3, LoopAction::Nudge),
                (3, LoopAction::Nudge),
                (3, LoopAction::Stop)
            ],
            "counted again after each nudge; after {MAX_NUDGES} nudges a loop stops the turn"
        );
        assert_eq!(s.finish_reason, aha_protocol::FinishReason::Loop);
        let thinking = texts(&events).0;
        assert_eq!(
            thinking
                .matches("\n\nLet me think differently.\n\n")
                .count(),
            2
        );
        let first = thinking.find("Let me think").unwrap();
        assert_eq!(thinking[..first].matches("ball.").count(), 3);
        // The nudge is written, not sampled: its deltas carry no log-probability.
        let written: String = events
            .iter()
            .filter_map(|e| match e {
                Event::ThinkingDelta {
                    text,
                    logprob: None,
                    ..
                } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(written.matches("Let me think differently.").count(), 2);
    }

    #[test]
    fn think_min_replaces_an_early_close_by_wait() {
        let tok = byte_tokenizer();
        let mut req = request(30);
        req.trace.think_min = Some(6);
        let p = prompt(true, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let mut model = |text: &str| match text {
            "" => u32::from(b'a'),
            "a" => u32::from(b'b'),
            t if t.ends_with("</think>") => u32::from(b'x'),
            t if t.ends_with('x') => IM_END,
            _ => THINK_END,
        };
        let mut events = run_model(&mut turn, &tok, &mut model);
        let s = turn.finish(&mut |e| events.push(e));
        let (thinking, answer) = texts(&events);
        assert_eq!(thinking, "ab Wait", "the close after `ab` became ` Wait`");
        assert_eq!(answer, "x");
        // 7 of reasoning, and its close.
        assert_eq!((s.thinking_tokens, s.finish_reason.as_str()), (8, "stop"));
        // The end of the turn counts as stopping early too; without think_min nothing changes.
        let mut req = request(30);
        req.trace.think_min = Some(3);
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let mut model = |text: &str| {
            if text.is_empty() {
                u32::from(b'a')
            } else {
                IM_END
            }
        };
        let mut events = run_model(&mut turn, &tok, &mut model);
        turn.finish(&mut |e| events.push(e));
        assert_eq!(texts(&events).0, "a Wait");
        let req = request(30);
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let events = run_model(&mut turn, &tok, |t: &str| {
            if t.is_empty() {
                u32::from(b'a')
            } else {
                IM_END
            }
        });
        assert_eq!(texts(&events).0, "a");
    }

    #[test]
    fn deltas_carry_the_alternatives_and_the_stats_forks_and_confidence() {
        let tok = byte_tokenizer();
        let mut req = request(2);
        req.trace.top_logprobs = 3;
        let p = prompt(false, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let ctrl = Control::default();
        let mut events = Vec::new();
        let mut emit = |e: Event| events.push(e);
        // Token 1: `a` is likely, `b` and `c` less so. Token 2: a flat distribution (a fork).
        let mut l = vec![0.0f32; VOCAB];
        l[usize::from(b'a')] = 5.0;
        l[usize::from(b'b')] = 4.0;
        l[usize::from(b'c')] = 3.0;
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        turn.step(&mut l.clone(), &tok, &ctrl, &mut emit).unwrap();
        turn.step(&mut vec![0.0; VOCAB], &tok, &ctrl, &mut emit)
            .unwrap();
        let s = turn.finish(&mut emit);
        let Event::AnswerDelta {
            text, top, logprob, ..
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!(text, "a");
        let names: Vec<&str> = top.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        for (t, lg) in top.iter().zip([5.0f32, 4.0, 3.0]) {
            assert!((t.logprob.exp() - lg.exp() / z).abs() < 1e-5, "{t:?}");
        }
        assert_eq!(Some(top[0].logprob), *logprob);
        assert_eq!(s.forks, Some(1), "the flat token is the fork");
        let flat = (VOCAB as f32).ln();
        let c1 = -(top.iter().map(|t| t.logprob).sum::<f32>() + (1.0f32 / z).ln() * 2.0) / 5.0;
        let expect = (c1 + flat) / 2.0;
        let got = s.min_group_confidence.unwrap();
        assert!((got - expect).abs() < 1e-3, "{got} vs {expect}");
        // Without top_logprobs the deltas carry none, but the stats still have them.
        let req = request(1);
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let mut events = Vec::new();
        turn.step(&mut l.clone(), &tok, &ctrl, &mut |e| events.push(e))
            .unwrap();
        assert!(matches!(&events[0], Event::AnswerDelta { top, .. } if top.is_empty()));
        assert!(turn.finish(&mut |_| {}).min_group_confidence.is_some());
    }

    #[test]
    fn turn_ends_at_max_tokens_cancel_or_stop() {
        let tok = byte_tokenizer();
        let req = request(4);
        let p = prompt(false, "");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        let mut events = run(&mut turn, &[u32::from(b'y')], &tok);
        let s = turn.finish(&mut |e| events.push(e));
        assert_eq!((s.answer_tokens, s.finish_reason.as_str()), (4, "length"));
        assert_eq!(texts(&events).1, "yyyy");

        let mut req = request(4);
        req.ignore_eos = true;
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        run(&mut turn, &[IM_END], &tok);
        let s = turn.finish(&mut |_| {});
        assert_eq!((s.answer_tokens, s.finish_reason.as_str()), (4, "length"));

        let ctrl = Control::default();
        ctrl.cancel();
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), None).unwrap();
        assert!(!turn.running(&ctrl, &mut |_| {}));
        let mut events = Vec::new();
        let s = turn.finish(&mut |e| events.push(e));
        assert_eq!(
            (s.answer_tokens, s.finish_reason.as_str()),
            (0, "cancelled")
        );
        assert!(matches!(&events[..], [Event::TurnFinished { tokens, .. }] if tokens.is_empty()));
    }

    #[test]
    fn turn_masks_openers_and_continues_a_branch() {
        let tok = byte_tokenizer();
        let mut req = request(3);
        req.no_tool_calls = true;
        let openers = Arc::new(CallOpeners {
            always: vec![CALL],
            first: vec![u32::from(b'{')],
        });
        // The prefix closed the reasoning: the turn starts in the answer, with nothing shown yet.
        let p = prompt(true, "hmm</think>\n\n");
        let mut turn = Turn::new(&req, &p, stats(), CallGrammar::new(None), Some(openers)).unwrap();
        let ctrl = Control::default();
        let mut events = Vec::new();
        let mut emit = |e: Event| events.push(e);
        while turn.running(&ctrl, &mut emit) {
            // The model wants `{`; `H` comes second.
            let mut logits = favour(u32::from(b'{'));
            logits[usize::from(b'H')] = 5.0;
            turn.step(&mut logits, &tok, &ctrl, &mut emit).unwrap();
        }
        let s = turn.finish(&mut emit);
        assert_eq!((s.thinking_tokens, s.answer_tokens), (0, 3));
        // `{` may not open the answer; once `H` started it, `{` is allowed.
        assert_eq!(texts(&events).1, "H{{");
    }
}
