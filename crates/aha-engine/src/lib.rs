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
use anyhow::Result;
use sampler::SamplingParams;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use template::ChatMessage;

pub use local::engine::{LocalEngine, PreparedPrompt, PREFILL_CHUNK};

/// aha's fused CUDA decode kernels, for `aha cuda-check`.
#[cfg(feature = "cuda")]
pub use aha_cuda as cuda_kernels;

/// The instruction that makes a non-reasoning model reason first (`--think`).
pub const THINK_PROMPT: &str = include_str!("../../../prompts/think.md");

/// How tools are described to models whose chat template has no place for them.
pub const TOOLS_PROMPT: &str = include_str!("../../../prompts/tools.md");

/// Adds the instruction to reason ([`THINK_PROMPT`]) to the latest user message, so turning
/// thinking on changes only the end of the prompt and the KV cache keeps the conversation before
/// it. Without a user message it goes into the system message.
pub fn add_think_prompt(msgs: &mut Vec<ChatMessage>) {
    let think = THINK_PROMPT.trim();
    if let Some(m) = msgs
        .iter_mut()
        .rev()
        .find(|m| m.role == aha_protocol::Role::User)
    {
        m.content = format!("{}\n\n{think}", m.content);
        return;
    }
    match msgs.first_mut() {
        Some(m) if m.role == aha_protocol::Role::System => {
            m.content = format!("{}\n\n{think}", m.content)
        }
        _ => msgs.insert(0, ChatMessage::system(think)),
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

pub use aha_protocol::{ThinkMode, TurnId};

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
    /// The microscope's settings: alternatives per token, budget forcing (`think_min`), what a
    /// reasoning loop does, and how forks and confidence are counted in the stats.
    pub trace: aha_protocol::TraceOptions,
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
            trace: aha_protocol::TraceOptions::default(),
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
    /// The highest turn id a cancel named (0: none).
    cancelled_through: AtomicU64,
    /// The id of the turn running now (0: unnamed).
    current_turn: AtomicU64,
}

impl Control {
    /// Asks the generation to stop after the current token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst)
    }
    /// Cancels turn `id` and every earlier one: at once if it runs now, else as soon as it
    /// starts ([`Control::begin_turn`]). A later turn is never stopped by it.
    pub fn cancel_turn(&self, id: TurnId) {
        self.cancelled_through.fetch_max(id.0, Ordering::SeqCst);
        if self.current_turn.load(Ordering::SeqCst) <= id.0 {
            self.cancel();
        }
    }
    /// Clears the controls as turn `id` starts; returns whether a cancel already named it (the
    /// turn then stops before its first token). The order of the stores makes a concurrent
    /// [`Control::cancel_turn`] either seen here or seen by the turn's own cancel check.
    pub fn begin_turn(&self, id: Option<TurnId>) -> bool {
        self.cancel.store(false, Ordering::SeqCst);
        self.paused.store(false, Ordering::SeqCst);
        self.step_to_boundary.store(false, Ordering::SeqCst);
        self.current_turn
            .store(id.map_or(0, |t| t.0), Ordering::SeqCst);
        let named = id.is_some_and(|t| self.cancelled_through.load(Ordering::SeqCst) >= t.0);
        if named {
            self.cancel();
        }
        named
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
    /// Between tokens: while paused (and not cancelled), emits `Paused`, waits in short sleeps
    /// until resumed or cancelled, then emits `Resumed`. Returns whether it waited. Both engines
    /// call it, so a pause looks the same whichever one runs.
    pub fn wait_while_paused(&self, emit: &mut dyn FnMut(Event)) -> bool {
        if !self.is_paused() || self.cancelled() {
            return false;
        }
        emit(Event::Paused);
        while self.is_paused() && !self.cancelled() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        emit(Event::Resumed);
        true
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
    /// How many tokens `req`'s prompt takes, when the engine can count them exactly (the local
    /// engine renders and tokenizes it); `None` leaves the caller to estimate.
    fn prompt_tokens(&mut self, _req: &GenerateRequest) -> Option<usize> {
        None
    }
    /// Uses at most `n` tokens of context (`--ctx N`): prompts longer than that are refused
    /// and generation stops there. Never more than the model's own.
    fn limit_context(&mut self, _n: usize) {}
    /// Streams a reply through `emit` and ends with `Event::TurnFinished` (also when cancelled).
    /// Errors are returned, not emitted.
    fn generate(
        &mut self,
        req: &GenerateRequest,
        ctrl: &Control,
        emit: &mut dyn FnMut(Event),
    ) -> Result<TurnStats>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_cancel_reaches_its_turn_early_and_never_a_later_one() {
        let c = Control::default();
        c.cancel_turn(TurnId(3));
        assert!(c.begin_turn(Some(TurnId(3))), "named before it started");
        assert!(c.cancelled());
        assert!(!c.begin_turn(Some(TurnId(4))), "a later turn starts clean");
        assert!(!c.cancelled());
        c.cancel_turn(TurnId(3));
        assert!(
            !c.cancelled(),
            "a late stop for turn 3 leaves turn 4 running"
        );
        c.cancel_turn(TurnId(4));
        assert!(c.cancelled());
        assert!(!c.begin_turn(None), "an unnamed turn starts clean");
        c.cancel();
        assert!(c.cancelled(), "an unnamed stop stops whatever runs");
    }

    #[test]
    fn no_pause_no_wait() {
        let ctrl = Control::default();
        let mut events = Vec::new();
        assert!(!ctrl.wait_while_paused(&mut |e| events.push(e)));
        // Paused but cancelled: the cancel wins, nothing is announced.
        ctrl.pause();
        ctrl.cancel();
        assert!(!ctrl.wait_while_paused(&mut |e| events.push(e)));
        assert!(events.is_empty());
    }

    #[test]
    fn a_pause_is_announced_and_ends_on_resume() {
        let ctrl = std::sync::Arc::new(Control::default());
        ctrl.pause();
        let c = ctrl.clone();
        let resumer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(60));
            c.resume();
        });
        let mut events = Vec::new();
        assert!(ctrl.wait_while_paused(&mut |e| events.push(e)));
        resumer.join().unwrap();
        assert_eq!(events, vec![Event::Paused, Event::Resumed]);
    }
}
