//! The agent: owns the conversation and the engine on its own OS thread, turns `Op`s into turns
//! (generation, and with tools a loop of calls), and reports everything as `Event`s.
//!
//! The UI (or `aha run --agent`) talks to it only through [`AgentHandle`]: `send(Op)` in, `Event`s
//! out. Cancel, pause, resume and step act at once on the shared [`Control`] (the engine checks it
//! between tokens); everything else is queued for the agent's thread.

pub mod gate;
pub mod host;
pub mod parse;
pub mod policy;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod transcripts;

use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;
use crate::engine::{Control, Engine, GenerateRequest, Prompt, ThinkMode};
use crate::protocol::{Event, Op, TurnStats};
use policy::{Decision, Effect, Policy};
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The agent's standing instructions when tools are offered.
pub const AGENT_PROMPT: &str = include_str!("../../prompts/agent.md");
/// Said (as a system message after the tool results) when the model must answer now.
pub const ANSWER_NOW_PROMPT: &str = include_str!("../../prompts/answer_now.md");

/// What the agent needs to know before its first turn.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Tokens per generation (reasoning and answer together).
    pub max_tokens: usize,
    pub think: ThinkMode,
    pub think_budget: Option<usize>,
    /// `None`: the model's recommended sampling.
    pub sampling: Option<SamplingParams>,
    /// A system prompt put first in the conversation.
    pub system: Option<String>,
    /// Approval policy for tool calls.
    pub policy: Policy,
    /// A person is there to answer approval requests; when false, anything that would ask is
    /// refused with a message the model sees (headless `aha run --agent`).
    pub interactive: bool,
    /// Generations per user turn (each tool round is one).
    pub max_steps: usize,
    /// Constrain tool calls to the offered schemas (local engine).
    pub constrain_tools: bool,
    /// Insist on an answer when the model repeats itself or reaches the last step (an "answer
    /// now" message and a generation with calls forbidden). Off only to measure what it changes.
    pub insist: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_tokens: 4096,
            think: ThinkMode::Auto,
            think_budget: None,
            sampling: None,
            system: None,
            policy: Policy::Ask,
            interactive: true,
            max_steps: 8,
            constrain_tools: true,
            insist: true,
        }
    }
}

/// The tools an agent may call, as the loop sees them (implemented over `crate::tools`, and by
/// scripted doubles in tests).
pub trait ToolHost: Send {
    /// OpenAI-style function specs for the chat template.
    fn specs(&self) -> Vec<Value>;
    /// What a tool may change; `None` for a name that is not a tool.
    fn effect(&self, name: &str) -> Option<Effect>;
    /// What a person must see to approve the call (the command, the code, or the diff).
    fn preview(&self, name: &str, args: &Value) -> anyhow::Result<String>;
    /// Runs a call; `(ok, output for the model)`. `turn` groups file changes for undo.
    fn run(
        &mut self,
        name: &str,
        args: Value,
        turn: u64,
        cancel: Arc<AtomicBool>,
    ) -> (bool, String);
    /// Restores the files the last turn changed; returns their paths.
    fn undo(&mut self) -> anyhow::Result<Vec<PathBuf>>;
    /// A unified diff of everything the tools changed this session.
    fn diff(&self) -> String;
    /// Indexes documents into the workspace's index; a summary for a person.
    fn index_docs(&mut self, _paths: &[String]) -> anyhow::Result<String> {
        anyhow::bail!("this session has no document index")
    }
    /// Searches the document index; the hits for a person.
    fn search_docs(&self, _query: &str) -> anyhow::Result<String> {
        anyhow::bail!("this session has no document index")
    }
}

/// What the UI shows about the engine behind the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineInfo {
    pub model: String,
    pub device: String,
    pub context_length: usize,
    pub reasoning: bool,
}

/// The agent's thread has ended (its handle was dropped, or it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStopped;

impl std::fmt::Display for AgentStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the agent has stopped")
    }
}

impl std::error::Error for AgentStopped {}

/// The UI's end of the agent.
pub struct AgentHandle {
    ops: Sender<Op>,
    events: Receiver<Event>,
    ctrl: Arc<Control>,
    info: EngineInfo,
    thread: Option<JoinHandle<()>>,
    /// The agent's thread ended and `try_recv` has said so once.
    stop_reported: AtomicBool,
}

/// What the UI is told when the agent's thread is gone while it waits for events.
pub const AGENT_STOPPED_MESSAGE: &str =
    "the agent stopped unexpectedly (an internal error); restart aha to continue (AHA_LOG=warn shows the cause)";

impl AgentHandle {
    /// Sends an op. Cancel, pause, resume and step take effect immediately.
    pub fn send(&self, op: Op) {
        match &op {
            Op::Cancel => self.ctrl.cancel(),
            Op::Pause => {
                self.ctrl.pause();
                return;
            }
            Op::Resume => {
                self.ctrl.resume();
                return;
            }
            Op::Step => {
                self.ctrl.step();
                return;
            }
            _ => {}
        }
        let _ = self.ops.send(op);
    }

    /// The next event, if one is waiting. Once the agent's thread has ended for good (it can only
    /// do so on an internal error while the handle lives), one `Error` event says so, so that a UI
    /// waiting for a turn to end shows a failure instead of waiting forever.
    pub fn try_recv(&self) -> Option<Event> {
        match self.events.try_recv() {
            Ok(e) => Some(e),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => {
                (!self.stop_reported.swap(true, Ordering::SeqCst)).then(|| Event::Error {
                    message: AGENT_STOPPED_MESSAGE.into(),
                })
            }
        }
    }

    /// The next event, waiting at most `timeout`; an error once the agent has stopped.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>, AgentStopped> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(AgentStopped),
        }
    }

    /// The engine's name, device and context length.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Whether generation is paused right now.
    pub fn is_paused(&self) -> bool {
        self.ctrl.is_paused()
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.ctrl.cancel();
        let (tx, _) = mpsc::channel();
        // Closing the op channel ends the agent's loop.
        drop(std::mem::replace(&mut self.ops, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the agent on its own thread, without tools.
pub fn spawn(engine: Box<dyn Engine>, cfg: AgentConfig) -> AgentHandle {
    spawn_with_tools(engine, cfg, None)
}

/// Starts the agent on its own thread, with tools.
pub fn spawn_with_tools(
    engine: Box<dyn Engine>,
    cfg: AgentConfig,
    tools: Option<Box<dyn ToolHost>>,
) -> AgentHandle {
    let (op_tx, op_rx) = mpsc::channel();
    let (ev_tx, ev_rx) = mpsc::channel();
    let ctrl = Arc::new(Control::default());
    let info = EngineInfo {
        model: engine.model_name(),
        device: engine.device(),
        context_length: engine.context_length(),
        reasoning: engine.is_reasoning(),
    };
    let mut agent = Agent::new(engine, cfg, ctrl.clone(), ev_tx, op_rx, tools);
    let thread = std::thread::Builder::new()
        .name("aha-agent".into())
        .spawn(move || agent.run())
        .ok();
    AgentHandle {
        ops: op_tx,
        events: ev_rx,
        ctrl,
        info,
        thread,
        stop_reported: AtomicBool::new(false),
    }
}

/// The agent's state, owned by its thread.
pub struct Agent {
    engine: Box<dyn Engine>,
    cfg: AgentConfig,
    ctrl: Arc<Control>,
    events: Sender<Event>,
    /// The conversation as the model will see it (system prompt not included).
    messages: Vec<ChatMessage>,
    /// Index in `messages` of the user message that opened each assistant turn.
    turns: Vec<usize>,
    tools: Option<Box<dyn ToolHost>>,
    ops: Receiver<Op>,
    /// Ops that arrived while a turn waited for an approval, handled after it.
    pending: VecDeque<Op>,
    /// Tools a person approved for the rest of the session.
    approved: HashSet<String>,
    /// Counts turns for the tools' undo groups.
    tool_turn: u64,
    /// A turn has started and its `TurnFinished` is not out yet.
    in_turn: Cell<bool>,
}

/// The stats of a user turn, summed over its generations.
#[derive(Default)]
struct TurnSum {
    stats: TurnStats,
    tokens: Vec<u32>,
    steps: usize,
}

impl TurnSum {
    fn add(&mut self, s: TurnStats, tokens: Vec<u32>) {
        let first = self.steps == 0;
        self.steps += 1;
        let t = &mut self.stats;
        if first {
            t.ttft_ms = s.ttft_ms;
            t.prefill_tok_s = s.prefill_tok_s;
        }
        t.prompt_tokens = s.prompt_tokens;
        t.prefilled_tokens += s.prefilled_tokens;
        t.thinking_tokens += s.thinking_tokens;
        t.answer_tokens += s.answer_tokens;
        if s.decode_tok_s > 0.0 {
            t.decode_tok_s = s.decode_tok_s;
        }
        t.finish_reason = s.finish_reason;
        self.tokens.extend(tokens);
    }
}

impl Agent {
    /// An agent with an empty conversation that reads `ops` and sends `events`.
    fn new(
        engine: Box<dyn Engine>,
        cfg: AgentConfig,
        ctrl: Arc<Control>,
        events: Sender<Event>,
        ops: Receiver<Op>,
        tools: Option<Box<dyn ToolHost>>,
    ) -> Self {
        Self {
            engine,
            cfg,
            ctrl,
            events,
            messages: Vec::new(),
            turns: Vec::new(),
            tools,
            ops,
            pending: VecDeque::new(),
            approved: HashSet::new(),
            tool_turn: 0,
            in_turn: Cell::new(false),
        }
    }

    fn emit(&self, e: Event) {
        match &e {
            Event::TurnStarted { .. } => self.in_turn.set(true),
            Event::TurnFinished { .. } => self.in_turn.set(false),
            _ => {}
        }
        let _ = self.events.send(e);
    }

    fn run(&mut self) {
        loop {
            let op = match self.pending.pop_front() {
                Some(op) => op,
                None => match self.ops.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
            };
            // The tools and the engine catch their own panics; this is the last line, for a bug in
            // the loop itself: the op fails with an error, a turn in flight still ends with its
            // `TurnFinished`, and the agent keeps serving the next op.
            if let Err(p) = crate::tools::catch_panic(|| self.handle(op)) {
                self.emit(Event::Error {
                    message: format!("the agent failed: {p}"),
                });
                if self.in_turn.get() {
                    self.emit(Event::TurnFinished {
                        stats: TurnStats {
                            finish_reason: "error".into(),
                            ..TurnStats::default()
                        },
                        tokens: Vec::new(),
                    });
                }
            }
        }
    }

    /// Acts on one queued op.
    pub fn handle(&mut self, op: Op) {
        match op {
            Op::UserMessage { text } => {
                self.turns.push(self.messages.len());
                self.messages.push(ChatMessage::new("user", text));
                self.turn(None, String::new());
            }
            Op::Branch { turn, prefix } => {
                let Some(&at) = self.turns.get(turn) else {
                    self.emit(Event::Error {
                        message: format!(
                            "cannot branch turn {turn}: the conversation has {} turns",
                            self.turns.len()
                        ),
                    });
                    return;
                };
                // Keep the conversation up to and including that turn's user message.
                self.messages.truncate(at + 1);
                self.turns.truncate(turn + 1);
                self.turn(Some(turn), prefix);
            }
            Op::SetThinking { mode, budget } => {
                let think = match mode.as_str() {
                    "auto" => ThinkMode::Auto,
                    "on" => ThinkMode::On,
                    "off" => ThinkMode::Off,
                    other => {
                        self.emit(Event::Error {
                            message: format!("thinking mode `{other}`: use auto, on or off"),
                        });
                        return;
                    }
                };
                self.cfg.think = think;
                self.cfg.think_budget = budget;
                let b = budget.map_or("no budget".to_string(), |b| format!("budget {b} tokens"));
                self.emit(Event::Notice {
                    message: format!("thinking {mode}, {b} (from the next turn)"),
                });
            }
            Op::Clear => {
                self.messages.clear();
                self.turns.clear();
            }
            Op::Restore { messages } => {
                self.messages.clear();
                self.turns.clear();
                for m in messages {
                    match serde_json::from_value::<ChatMessage>(m) {
                        Ok(m) => {
                            if m.role == "user" {
                                self.turns.push(self.messages.len());
                            }
                            self.messages.push(m);
                        }
                        Err(e) => self.emit(Event::Error {
                            message: format!("a restored message was skipped: {e}"),
                        }),
                    }
                }
            }
            Op::Approve { .. } => {
                // An approval with no request waiting (it arrived late): nothing to do.
            }
            Op::SetPolicy { policy } => match Policy::parse(&policy) {
                Some(p) => {
                    self.cfg.policy = p;
                    self.emit(Event::Notice {
                        message: format!("approval policy: {}", p.name()),
                    });
                }
                None => self.emit(Event::Error {
                    message: format!(
                        "policy `{policy}`: use read-only, ask, auto-edit or full-auto"
                    ),
                }),
            },
            Op::Undo => self.tool_op("undo failed", |t, _| {
                let paths = t.undo()?;
                Ok(if paths.is_empty() {
                    "nothing to undo".into()
                } else {
                    format!(
                        "restored {}",
                        paths
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }),
            Op::Diff => self.tool_op("diff", |t, _| {
                let d = t.diff();
                Ok(if d.trim().is_empty() {
                    "the tools have changed no files in this session".into()
                } else {
                    d
                })
            }),
            Op::Tools => self.tool_op("tools", |t, policy| {
                let mut m = format!("approval policy: {}\n", policy.name());
                for spec in t.specs() {
                    let f = &spec["function"];
                    let name = f["name"].as_str().unwrap_or("?");
                    let effect = t
                        .effect(name)
                        .map(|e| match e {
                            Effect::ReadOnly => "reads",
                            Effect::Edit => "edits files",
                            Effect::Execute => "runs code",
                            Effect::Commit => "commits",
                        })
                        .unwrap_or("?");
                    let desc = f["description"].as_str().unwrap_or("");
                    let first = desc.split(". ").next().unwrap_or(desc);
                    m.push_str(&format!("{name} ({effect}): {first}\n"));
                }
                Ok(m)
            }),
            Op::Index { paths } => self.tool_op("index", |t, _| t.index_docs(&paths)),
            Op::Search { query } => self.tool_op("search", |t, _| t.search_docs(&query)),
            Op::Cancel | Op::Pause | Op::Resume | Op::Step => {}
        }
    }

    /// An op answered by the tools, not the model: its text as a `notice`, its failure as an
    /// `error` starting with `what`.
    fn tool_op(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut dyn ToolHost, &Policy) -> anyhow::Result<String>,
    ) {
        let policy = self.cfg.policy;
        let r = self
            .tools
            .as_deref_mut()
            .map(|t| crate::tools::catch_panic(|| f(t, &policy)).unwrap_or_else(|p| Err(p.into())));
        let e = match r {
            None => Event::Notice {
                message: "tools are not enabled in this session".into(),
            },
            Some(Ok(message)) => Event::Notice { message },
            Some(Err(e)) => Event::Error {
                message: format!("{what}: {e:#}"),
            },
        };
        self.emit(e);
    }

    /// One assistant turn: generate from the conversation (continuing `prefix` when branching),
    /// run the tools it calls and generate again, until it answers, the step limit, or cancel.
    fn turn(&mut self, branch_of: Option<usize>, prefix: String) {
        self.ctrl.cancel.store(false, Ordering::SeqCst);
        self.ctrl.paused.store(false, Ordering::SeqCst);
        self.ctrl.step_to_boundary.store(false, Ordering::SeqCst);
        self.tool_turn += 1;
        let turn = self.turns.len().saturating_sub(1);
        self.emit(Event::TurnStarted {
            turn,
            branch_of,
            prefix: prefix.clone(),
        });
        let specs = self.tools.as_ref().map(|t| t.specs()).unwrap_or_default();
        let names: Vec<String> = crate::tools::spec_names(&specs);
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut sum = TurnSum::default();
        let mut prefix = Some(prefix).filter(|p| !p.is_empty());
        let steps = self.cfg.max_steps.max(1);
        let mut seen_calls: HashSet<String> = HashSet::new();
        let mut seen_results: HashSet<String> = HashSet::new();
        let mut repeats = 0usize;
        // Set when the model must answer now: it repeated a call whose result it already has.
        let mut insist: Option<&'static str> = None;
        let mut step = 0usize;
        loop {
            if step >= steps && insist.is_none() {
                // Only with a limit of one step: its calls ran, and no step is left to answer.
                self.stop_turn(&mut sum, "step_limit", steps);
                break;
            }
            // The last step (after tool rounds), or a repeated call, gets no more calls: the model
            // answers from the results it has instead of being cut off mid-investigation.
            let last = step + 1 >= steps;
            let why = insist
                .or((last && step > 0).then_some("step_limit"))
                .filter(|_| self.cfg.insist);
            if why.is_some() && self.messages.last().is_some_and(|m| m.role == "tool") {
                // Small models keep calling unless told; the engine also forbids call text.
                self.messages
                    .push(ChatMessage::new("system", ANSWER_NOW_PROMPT.trim()));
            }
            let (reasoning, answer, ok) =
                self.generate_once(prefix.take(), &specs, &name_refs, &mut sum, why.is_some());
            step += 1;
            let think = if reasoning.trim().is_empty() {
                String::new()
            } else {
                format!("<think>\n{}\n</think>\n\n", reasoning.trim())
            };
            let parsed = if specs.is_empty() || !ok {
                parse::Parsed {
                    text: answer.clone(),
                    ..Default::default()
                }
            } else {
                parse::parse(&answer, &name_refs)
            };
            if parsed.calls.is_empty() && parsed.malformed.is_empty() {
                self.messages
                    .push(ChatMessage::new("assistant", format!("{think}{answer}")));
                break;
            }
            if let Some(why) = why {
                // Told to answer, it still called (an engine that cannot forbid calls): stop.
                self.messages.push(ChatMessage::new(
                    "assistant",
                    format!("{think}{}", parsed.text),
                ));
                self.stop_turn(&mut sum, why, steps);
                break;
            }
            let key = |c: &parse::Call| format!("{} {}", c.name, c.arguments);
            if self.cfg.insist
                && parsed.malformed.is_empty()
                && parsed.calls.iter().all(|c| seen_calls.contains(&key(c)))
            {
                // Only calls it already made: their results are in the conversation. Ask again
                // with calls forbidden, so it answers from them.
                self.emit(Event::Notice {
                    message: format!(
                        "the model repeated {} with the same arguments; asking it to answer from the result it has",
                        parsed.calls[0].name
                    ),
                });
                insist = Some("repeated_call");
                continue;
            }
            let ids: Vec<String> = (0..parsed.calls.len())
                .map(|k| format!("call_{}_{}_{k}", self.tool_turn, step - 1))
                .collect();
            let mut msg = ChatMessage::new("assistant", format!("{think}{}", parsed.text));
            msg.tool_calls = Some(Value::Array(
                parsed
                    .calls
                    .iter()
                    .zip(&ids)
                    .map(|(c, id)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect(),
            ));
            let round_start = self.messages.len();
            self.messages.push(msg);
            // Calls whose result repeats an earlier one word for word (say, a program that only
            // prints the number the previous run printed) tell the model nothing new.
            let mut redundant = 0usize;
            let n_calls = parsed.calls.len();
            let first_name = parsed
                .calls
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default();
            for (call, id) in parsed.calls.into_iter().zip(ids) {
                if self.ctrl.cancelled() {
                    break;
                }
                self.emit(Event::ToolCall {
                    id: id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                });
                let t0 = std::time::Instant::now();
                let (ok, output) = if seen_calls.contains(&key(&call)) {
                    repeats += 1;
                    (
                        false,
                        format!(
                            "You already called {} with these arguments in this turn; its result is above. Use it and answer the user now.",
                            call.name
                        ),
                    )
                } else {
                    seen_calls.insert(key(&call));
                    let (ok, out) = self.call(&id, &call.name, call.arguments);
                    let seen = format!("{}\u{0}{out}", call.name);
                    if ok && !seen_results.insert(seen) {
                        redundant += 1;
                    }
                    (ok, out)
                };
                self.emit(Event::ToolResult {
                    id: id.clone(),
                    ok,
                    output: output.clone(),
                    duration_ms: t0.elapsed().as_millis() as u64,
                });
                let mut m = ChatMessage::new("tool", output);
                m.name = Some(call.name);
                m.tool_call_id = Some(id);
                self.messages.push(m);
            }
            for (k, bad) in parsed.malformed.into_iter().enumerate() {
                let id = format!("bad_{}_{}_{k}", self.tool_turn, step - 1);
                let output = format!(
                    "Your tool call could not be read: {}. Write it again as <tool_call>{{\"name\": \"<tool>\", \"arguments\": {{...}}}}</tool_call> with valid JSON.",
                    bad.reason
                );
                self.emit(Event::ToolCall {
                    id: id.clone(),
                    name: "(malformed)".into(),
                    arguments: Value::String(bad.raw),
                });
                self.emit(Event::ToolResult {
                    id: id.clone(),
                    ok: false,
                    output: output.clone(),
                    duration_ms: 0,
                });
                let mut m = ChatMessage::new("tool", output);
                m.tool_call_id = Some(id);
                self.messages.push(m);
            }
            if self.ctrl.cancelled() {
                sum.stats.finish_reason = "cancelled".into();
                break;
            }
            if !self.cfg.insist && repeats >= 2 {
                // Without insisting: told once that the result is there, it asked again.
                self.stop_turn(&mut sum, "repeated_call", steps);
                break;
            }
            if self.cfg.insist
                && n_calls > 0
                && redundant == n_calls
                && self.messages.len() == round_start + 1 + n_calls
            {
                // Leave the round out of what the model sees (the events showed it) and have it
                // answer from the results it already has: small models otherwise loop, feeding
                // each result back into another call.
                self.messages.truncate(round_start);
                self.emit(Event::Notice {
                    message: format!(
                        "{first_name} returned the same result as before; asking the model to answer from it"
                    ),
                });
                insist = Some("repeated_call");
            }
        }
        self.emit(Event::TurnFinished {
            stats: sum.stats,
            tokens: sum.tokens,
        });
    }

    /// Ends a turn early: `why` ("step_limit" or "repeated_call") becomes its finish reason, and
    /// a notice says what happened.
    fn stop_turn(&self, sum: &mut TurnSum, why: &str, steps: usize) {
        sum.stats.finish_reason = why.into();
        self.emit(Event::Notice {
            message: match why {
                "step_limit" => {
                    format!("stopped after {steps} steps (the step limit); ask again to continue")
                }
                _ => "stopped: the model kept repeating the same tool call; its result is above"
                    .into(),
            },
        });
    }

    /// One generation; returns (reasoning, answer, finished without error).
    fn generate_once(
        &mut self,
        prefix: Option<String>,
        specs: &[Value],
        names: &[&str],
        sum: &mut TurnSum,
        no_calls: bool,
    ) -> (String, String, bool) {
        let mut msgs = Vec::new();
        let system = match (&self.cfg.system, specs.is_empty()) {
            (Some(s), true) => Some(s.clone()),
            (Some(s), false) => Some(format!("{}\n\n{s}", AGENT_PROMPT.trim())),
            (None, false) => Some(AGENT_PROMPT.trim().to_string()),
            (None, true) => None,
        };
        if let Some(s) = system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.extend(self.messages.iter().cloned());
        let mut req = GenerateRequest::chat(Vec::new());
        req.prompt = Prompt::Chat(msgs);
        req.max_tokens = self.cfg.max_tokens;
        req.think = self.cfg.think;
        req.think_budget = self.cfg.think_budget;
        req.sampling = self
            .cfg
            .sampling
            .clone()
            .unwrap_or_else(|| self.engine.default_sampling());
        req.tools = (!specs.is_empty()).then(|| specs.to_vec());
        req.constrain_tools = self.cfg.constrain_tools;
        req.no_tool_calls = no_calls;
        let prefix_text = prefix.clone().unwrap_or_default();
        req.assistant_prefix = prefix;
        let mut reasoning = String::new();
        let mut answer = String::new();
        let mut finished: Option<(TurnStats, Vec<u32>)> = None;
        let events = self.events.clone();
        let mut send = |e: Event| {
            let _ = events.send(e);
        };
        // With tools on, a call's raw text is held back (the UI shows a tool card instead).
        let mut gate = (!specs.is_empty()).then(gate::AnswerGate::default);
        let engine = &mut self.engine;
        let ctrl = &self.ctrl;
        // A generation that panics (a kernel's bounds check, a template on odd input) fails like
        // one that returns an error: the turn ends and the agent serves the next one.
        let r = crate::tools::catch_panic(|| {
            engine.generate(&req, ctrl, &mut |e| match e {
                Event::TurnFinished { stats, tokens } => finished = Some((stats, tokens)),
                e => {
                    match &e {
                        Event::ThinkingDelta { text, .. } => reasoning.push_str(text),
                        Event::AnswerDelta { text, .. } => answer.push_str(text),
                        _ => {}
                    }
                    match (&mut gate, &e) {
                        (Some(g), Event::AnswerDelta { .. }) => g.push(e, &mut send),
                        _ => send(e),
                    }
                }
            })
        })
        .unwrap_or_else(|p| Err(anyhow::anyhow!("the engine failed: {p}")));
        if let Some(g) = gate {
            g.finish(
                |held| {
                    let p = parse::parse(held, names);
                    (!p.calls.is_empty() || !p.malformed.is_empty()).then_some(p.text)
                },
                &mut send,
            );
        }
        let got_stats = finished.is_some();
        if let Some((s, t)) = finished {
            sum.add(s, t);
        }
        let ok = match r {
            Ok(_) => true,
            Err(e) => {
                self.emit(Event::Error {
                    message: format!("{e:#}"),
                });
                if !got_stats {
                    // Otherwise the turn would report the previous step's reason (or none).
                    sum.stats.finish_reason = if self.ctrl.cancelled() {
                        "cancelled"
                    } else {
                        "error"
                    }
                    .into();
                }
                false
            }
        };
        // A branch's prefix is part of this turn's text.
        let opens = prefix_text.trim_start().starts_with("<think>");
        let (pre_think, pre_answer) = crate::engine::reasoning::split_reasoning(
            &prefix_text,
            !opens && self.engine.is_reasoning(),
        );
        (
            format!("{}{reasoning}", reasoning_part(&pre_think)),
            format!("{pre_answer}{answer}"),
            ok,
        )
    }

    /// Decides, asks if need be, and runs one call.
    fn call(&mut self, id: &str, name: &str, args: Value) -> (bool, String) {
        let Some(host) = self.tools.as_ref() else {
            return (false, "no tools are enabled".into());
        };
        let Some(effect) = host.effect(name) else {
            let names: Vec<String> = crate::tools::spec_names(&host.specs());
            return (
                false,
                format!(
                    "there is no tool `{name}`; the tools are: {}",
                    names.join(", ")
                ),
            );
        };
        let preview = match crate::tools::catch_panic(|| host.preview(name, &args)) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return (false, format!("invalid arguments for {name}: {e:#}")),
            Err(p) => return (false, tool_panicked(name, &p)),
        };
        match self.cfg.policy.decide(name, effect, &self.approved) {
            Decision::Run => {}
            Decision::Refuse => {
                return (
                    false,
                    format!(
                        "denied: the approval policy is {}, so {name} may not run. Answer without it, or say what you would do.",
                        self.cfg.policy.name()
                    ),
                )
            }
            Decision::Ask if !self.cfg.interactive => {
                return (
                    false,
                    format!(
                        "denied: {name} needs a person's approval under the `{}` policy and nobody is there to give it (headless run). Answer without it, or say what you would do.",
                        self.cfg.policy.name()
                    ),
                )
            }
            Decision::Ask => {
                self.emit(Event::ApprovalRequest {
                    id: id.to_string(),
                    name: name.to_string(),
                    summary: preview,
                });
                if !self.wait_for_approval(id, name) {
                    return (false, format!("denied: the user did not approve {name}"));
                }
            }
        }
        let cancel = self.ctrl.cancel.clone();
        let turn = self.tool_turn;
        match self.tools.as_mut() {
            // A tool that panics (a library on a damaged file) fails this call only: the model
            // reads why, and the turn goes on to its end.
            Some(h) => crate::tools::catch_panic(|| h.run(name, args, turn, cancel))
                .unwrap_or_else(|p| (false, tool_panicked(name, &p))),
            None => (false, "no tools are enabled".into()),
        }
    }

    /// Waits for the person's answer to approval `id`; other ops wait until the turn is over.
    fn wait_for_approval(&mut self, id: &str, name: &str) -> bool {
        loop {
            if self.ctrl.cancelled() {
                return false;
            }
            match self.ops.recv_timeout(Duration::from_millis(100)) {
                Ok(Op::Approve {
                    id: got,
                    approved,
                    remember,
                }) if got == id => {
                    if approved && remember {
                        self.approved.insert(name.to_string());
                    }
                    return approved;
                }
                Ok(Op::Cancel) => return false,
                Ok(Op::Approve { .. }) => {}
                Ok(other) => self.pending.push_back(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

/// The result of a tool call that panicked, for the model and the person reading the tool card.
fn tool_panicked(name: &str, p: &crate::tools::Panicked) -> String {
    format!("{name} failed with an {p}. This is a fault in the tool, not in your call; do not retry it, answer with what you have.")
}

/// The reasoning text inside a branch prefix (which may carry a leading `<think>`).
fn reasoning_part(prefix: &str) -> String {
    prefix
        .trim_start()
        .trim_start_matches("<think>")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TurnStats;

    /// A scripted engine: replies with fixed reasoning and answer, records the requests it saw.
    struct Scripted {
        seen: Arc<std::sync::Mutex<Vec<GenerateRequest>>>,
    }

    impl Engine for Scripted {
        fn model_name(&self) -> String {
            "scripted".into()
        }
        fn device(&self) -> String {
            "none".into()
        }
        fn context_length(&self) -> usize {
            4096
        }
        fn is_reasoning(&self) -> bool {
            true
        }
        fn default_sampling(&self) -> SamplingParams {
            SamplingParams::greedy()
        }
        fn generate(
            &mut self,
            req: &GenerateRequest,
            ctrl: &Control,
            emit: &mut dyn FnMut(Event),
        ) -> anyhow::Result<TurnStats> {
            self.seen.lock().unwrap().push(req.clone());
            for w in ["Let me think.", "\n\nWait, check."] {
                if ctrl.cancelled() {
                    break;
                }
                emit(Event::ThinkingDelta {
                    text: w.into(),
                    logprob: None,
                    entropy: None,
                });
            }
            emit(Event::AnswerDelta {
                text: "42".into(),
                logprob: None,
                entropy: None,
            });
            let stats = TurnStats::default();
            emit(Event::TurnFinished {
                stats: stats.clone(),
                tokens: vec![],
            });
            Ok(stats)
        }
    }

    fn collect_turn(h: &AgentHandle) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            match h.recv_timeout(Duration::from_secs(5)) {
                Ok(Some(e)) => {
                    let done = matches!(e, Event::TurnFinished { .. });
                    out.push(e);
                    if done {
                        return out;
                    }
                }
                _ => panic!("no turn_finished; got {out:?}"),
            }
        }
    }

    #[test]
    fn turns_keep_history_and_branch_truncates_it() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = spawn(
            Box::new(Scripted { seen: seen.clone() }),
            AgentConfig::default(),
        );
        h.send(Op::UserMessage { text: "q1".into() });
        let ev = collect_turn(&h);
        assert!(matches!(ev[0], Event::TurnStarted { turn: 0, .. }));
        h.send(Op::UserMessage { text: "q2".into() });
        collect_turn(&h);
        h.send(Op::Branch {
            turn: 0,
            prefix: "<think>\nLet me think.\n\nHmm, again.".into(),
        });
        let ev = collect_turn(&h);
        assert!(matches!(
            ev[0],
            Event::TurnStarted {
                turn: 0,
                branch_of: Some(0),
                ..
            }
        ));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let Prompt::Chat(m) = &seen[1].prompt else {
            panic!()
        };
        assert_eq!(m.len(), 3, "q1, its answer, q2");
        assert!(m[1].content.contains("42") && m[1].content.contains("Wait, check."));
        let Prompt::Chat(m) = &seen[2].prompt else {
            panic!()
        };
        assert_eq!(
            m.len(),
            1,
            "the branch drops everything after turn 0's question"
        );
        assert_eq!(m[0].content, "q1");
        assert_eq!(
            seen[2].assistant_prefix.as_deref(),
            Some("<think>\nLet me think.\n\nHmm, again.")
        );
    }

    /// An engine that answers with the next scripted reply each time.
    struct Replies {
        replies: std::collections::VecDeque<String>,
        seen: Arc<std::sync::Mutex<Vec<GenerateRequest>>>,
    }

    impl Engine for Replies {
        fn model_name(&self) -> String {
            "replies".into()
        }
        fn device(&self) -> String {
            "none".into()
        }
        fn context_length(&self) -> usize {
            4096
        }
        fn is_reasoning(&self) -> bool {
            false
        }
        fn default_sampling(&self) -> SamplingParams {
            SamplingParams::greedy()
        }
        fn generate(
            &mut self,
            req: &GenerateRequest,
            _ctrl: &Control,
            emit: &mut dyn FnMut(Event),
        ) -> anyhow::Result<TurnStats> {
            self.seen.lock().unwrap().push(req.clone());
            let text = self.replies.pop_front().unwrap_or_else(|| "done".into());
            if text == "PANIC" {
                panic!("index out of bounds: the len is 3 but the index is 7");
            }
            emit(Event::AnswerDelta {
                text,
                logprob: None,
                entropy: None,
            });
            let stats = TurnStats {
                answer_tokens: 3,
                finish_reason: "stop".into(),
                ..Default::default()
            };
            emit(Event::TurnFinished {
                stats: stats.clone(),
                tokens: vec![1, 2, 3],
            });
            Ok(stats)
        }
    }

    /// Tools that record what ran: `echo` (read-only), `write` (edit), `exec` (execute; with
    /// `{"sleep": true}` it waits for cancel).
    struct Host {
        ran: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl ToolHost for Host {
        fn specs(&self) -> Vec<Value> {
            ["echo", "write", "exec"]
                .iter()
                .map(|n| json!({"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}))
                .collect()
        }
        fn effect(&self, name: &str) -> Option<Effect> {
            match name {
                "echo" => Some(Effect::ReadOnly),
                "write" => Some(Effect::Edit),
                "exec" => Some(Effect::Execute),
                _ => None,
            }
        }
        fn preview(&self, name: &str, args: &Value) -> anyhow::Result<String> {
            Ok(format!("{name} {args}"))
        }
        fn run(
            &mut self,
            name: &str,
            args: Value,
            _turn: u64,
            cancel: Arc<AtomicBool>,
        ) -> (bool, String) {
            if args["panic"] == true {
                panic!("assertion failed: buf.len() >= 8");
            }
            if args["sleep"] == true {
                while !cancel.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.ran.lock().unwrap().push(format!("{name} cancelled"));
                return (false, "cancelled".into());
            }
            self.ran.lock().unwrap().push(name.to_string());
            (true, format!("{name} output"))
        }
        fn undo(&mut self) -> anyhow::Result<Vec<PathBuf>> {
            Ok(vec![])
        }
        fn diff(&self) -> String {
            String::new()
        }
    }

    struct Rig {
        h: AgentHandle,
        ran: Arc<std::sync::Mutex<Vec<String>>>,
        seen: Arc<std::sync::Mutex<Vec<GenerateRequest>>>,
    }

    fn rig(replies: &[&str], cfg: AgentConfig) -> Rig {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let engine = Replies {
            replies: replies.iter().map(|s| s.to_string()).collect(),
            seen: seen.clone(),
        };
        let h = spawn_with_tools(
            Box::new(engine),
            cfg,
            Some(Box::new(Host { ran: ran.clone() })),
        );
        Rig { h, ran, seen }
    }

    fn call(name: &str, args: &str) -> String {
        format!("<tool_call>{{\"name\": \"{name}\", \"arguments\": {args}}}</tool_call>")
    }

    #[test]
    fn a_tool_that_panics_fails_its_call_and_the_turn_and_the_agent_go_on() {
        let r = rig(
            &[&call("echo", "{\"panic\": true}"), "Answered.", "Second."],
            AgentConfig::default(),
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        let results: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ToolResult { ok, output, .. } => Some((*ok, output.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 1, "{ev:?}");
        assert!(!results[0].0);
        assert!(
            results[0]
                .1
                .contains("echo failed with an internal error: assertion failed: buf.len() >= 8"),
            "{}",
            results[0].1
        );
        assert!(answer_text(&ev).contains("Answered."));
        let finished = ev
            .iter()
            .filter(|e| matches!(e, Event::TurnFinished { .. }))
            .count();
        assert_eq!(finished, 1);
        // The agent is still there for the next turn.
        r.h.send(Op::UserMessage {
            text: "again".into(),
        });
        assert!(answer_text(&collect_turn(&r.h)).contains("Second."));
    }

    #[test]
    fn an_engine_that_panics_is_an_error_and_the_turn_still_finishes() {
        let r = rig(&["PANIC", "Fine now."], AgentConfig::default());
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        let errors: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Error { message } => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            vec!["the engine failed: internal error: index out of bounds: the len is 3 but the index is 7".to_string()]
        );
        let Some(Event::TurnFinished { stats, .. }) = ev.last() else {
            panic!("{ev:?}")
        };
        assert_eq!(stats.finish_reason, "error");
        r.h.send(Op::UserMessage {
            text: "again".into(),
        });
        assert!(answer_text(&collect_turn(&r.h)).contains("Fine now."));
    }

    #[test]
    fn a_handle_whose_agent_thread_is_gone_reports_it_once() {
        let (ops, _op_rx) = mpsc::channel();
        let (ev_tx, events) = mpsc::channel();
        ev_tx
            .send(Event::Notice {
                message: "last words".into(),
            })
            .unwrap();
        drop(ev_tx);
        let h = AgentHandle {
            ops,
            events,
            ctrl: Arc::new(Control::default()),
            info: EngineInfo {
                model: "m".into(),
                device: "cpu".into(),
                context_length: 0,
                reasoning: false,
            },
            thread: None,
            stop_reported: AtomicBool::new(false),
        };
        assert!(matches!(h.try_recv(), Some(Event::Notice { .. })));
        assert!(
            matches!(h.try_recv(), Some(Event::Error { message }) if message == AGENT_STOPPED_MESSAGE)
        );
        assert_eq!(h.try_recv(), None, "said once");
        assert_eq!(h.recv_timeout(Duration::from_millis(1)), Err(AgentStopped));
    }

    #[test]
    fn a_call_runs_its_result_goes_back_and_the_turn_ends_with_one_turn_finished() {
        let r = rig(
            &[
                &format!(
                    "Looking.{}{}",
                    call("echo", "{}"),
                    call("write", "{\"p\": 1}")
                ),
                "The answer.",
            ],
            AgentConfig {
                policy: Policy::AutoEdit,
                ..Default::default()
            },
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        let calls: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, Event::ToolCall { .. }))
            .collect();
        let results: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ToolResult { ok, output, .. } => Some((*ok, output.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            results,
            vec![(true, "echo output".into()), (true, "write output".into())]
        );
        assert_eq!(*r.ran.lock().unwrap(), vec!["echo", "write"]);
        let finished: Vec<_> = ev
            .iter()
            .filter(|e| matches!(e, Event::TurnFinished { .. }))
            .collect();
        assert_eq!(finished.len(), 1, "one turn_finished per user turn");
        if let Event::TurnFinished { stats, tokens } = finished[0] {
            assert_eq!(stats.answer_tokens, 6, "summed over both generations");
            assert_eq!(tokens.len(), 6);
        }
        let seen = r.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let Prompt::Chat(m) = &seen[1].prompt else {
            panic!()
        };
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "tool"]);
        assert!(
            m[0].content.contains("tool"),
            "the agent prompt comes first"
        );
        let m = &m[1..];
        assert_eq!(m[1].content, "Looking.");
        assert_eq!(
            m[1].tool_calls.as_ref().unwrap()[1]["function"]["arguments"]["p"],
            1
        );
        assert_eq!(m[3].content, "write output");
        assert!(seen[0].tools.as_ref().is_some_and(|t| t.len() == 3));
    }

    #[test]
    fn malformed_and_unknown_calls_become_errors_the_model_sees() {
        let r = rig(
            &[
                "<tool_call>{\"name\": \"echo\", \"arguments\": {oops}</tool_call>",
                &call("nope", "{}"),
                "ok",
            ],
            AgentConfig::default(),
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        let outs: Vec<String> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ToolResult {
                    ok: false, output, ..
                } => Some(output.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(outs.len(), 2);
        assert!(outs[0].contains("could not be read") && outs[0].contains("not valid JSON"));
        assert!(
            outs[1].contains("there is no tool `nope`") && outs[1].contains("echo, write, exec")
        );
        assert!(r.ran.lock().unwrap().is_empty());
        let seen = r.seen.lock().unwrap();
        let Prompt::Chat(m) = &seen[1].prompt else {
            panic!()
        };
        assert!(m.last().unwrap().content.contains("could not be read"));
    }

    #[test]
    fn policies_refuse_or_ask_and_only_an_approve_op_runs_a_change() {
        // read-only: nothing that changes anything runs.
        let r = rig(
            &[&call("exec", "{}"), "fine"],
            AgentConfig {
                policy: Policy::ReadOnly,
                ..Default::default()
            },
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        assert!(ev.iter().any(|e| matches!(e, Event::ToolResult { ok: false, output, .. } if output.contains("read-only"))));
        assert!(r.ran.lock().unwrap().is_empty());
        // headless ask: denied with a message.
        let r = rig(
            &[&call("write", "{}"), "fine"],
            AgentConfig {
                interactive: false,
                ..Default::default()
            },
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        assert!(ev.iter().any(|e| matches!(e, Event::ToolResult { ok: false, output, .. } if output.contains("headless"))));
        assert!(r.ran.lock().unwrap().is_empty());
        assert!(!ev
            .iter()
            .any(|e| matches!(e, Event::ApprovalRequest { .. })));
        // interactive ask: a request, then the person's answer; "remember" covers the next call.
        let r = rig(
            &[
                &call("exec", "{\"a\": 1}"),
                &call("exec", "{\"a\": 2}"),
                "fine",
            ],
            AgentConfig::default(),
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let id = loop {
            if let Event::ApprovalRequest { id, summary, .. } =
                r.h.recv_timeout(Duration::from_secs(5)).unwrap().unwrap()
            {
                assert!(summary.starts_with("exec"));
                break id;
            }
        };
        assert!(
            r.ran.lock().unwrap().is_empty(),
            "nothing runs before the approval"
        );
        r.h.send(Op::Approve {
            id: "someone-else".into(),
            approved: true,
            remember: false,
        });
        r.h.send(Op::Approve {
            id,
            approved: true,
            remember: true,
        });
        let ev = collect_turn(&r.h);
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::ApprovalRequest { .. })),
            "remembered"
        );
        assert_eq!(*r.ran.lock().unwrap(), vec!["exec", "exec"]);
    }

    #[test]
    fn step_limit_and_cancel_mid_tool() {
        let r = rig(
            &[
                &call("echo", "{\"i\": 1}"),
                &call("echo", "{\"i\": 2}"),
                &call("echo", "{\"i\": 3}"),
            ],
            AgentConfig {
                max_steps: 2,
                ..Default::default()
            },
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::Notice { message } if message.contains("step limit"))));
        // The last step may not call: the engine is asked for an answer (this scripted one calls
        // anyway, so the turn stops there without running it).
        assert_eq!(r.ran.lock().unwrap().len(), 1);
        {
            let seen = r.seen.lock().unwrap();
            assert!(!seen[0].no_tool_calls && seen[1].no_tool_calls);
            let Prompt::Chat(m) = &seen[1].prompt else {
                panic!()
            };
            assert_eq!(m.last().unwrap().role, "system");
            assert_eq!(m.last().unwrap().content, ANSWER_NOW_PROMPT.trim());
        }
        let Some(Event::TurnFinished { stats, .. }) = ev.last() else {
            panic!()
        };
        assert_eq!(stats.finish_reason, "step_limit");
        let r = rig(
            &[&call("exec", "{\"sleep\": true}"), "never"],
            AgentConfig {
                policy: Policy::FullAuto,
                ..Default::default()
            },
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        loop {
            if let Some(Event::ToolCall { .. }) = r.h.recv_timeout(Duration::from_secs(5)).unwrap()
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(30));
        r.h.send(Op::Cancel);
        let ev = collect_turn(&r.h);
        assert_eq!(*r.ran.lock().unwrap(), vec!["exec cancelled"]);
        match ev.last() {
            Some(Event::TurnFinished { stats, .. }) => assert_eq!(stats.finish_reason, "cancelled"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.seen.lock().unwrap().len(),
            1,
            "no generation after a cancel"
        );
    }

    #[test]
    fn bad_thinking_mode_and_bad_branch_are_errors_not_panics() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = spawn(Box::new(Scripted { seen }), AgentConfig::default());
        h.send(Op::SetThinking {
            mode: "maybe".into(),
            budget: None,
        });
        h.send(Op::Branch {
            turn: 3,
            prefix: String::new(),
        });
        let a = h.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        let b = h.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert!(matches!(a, Event::Error { ref message } if message.contains("auto, on or off")));
        assert!(
            matches!(b, Event::Error { ref message } if message.contains("cannot branch turn 3"))
        );
    }

    fn next_notice(h: &AgentHandle) -> String {
        loop {
            match h.recv_timeout(Duration::from_secs(5)) {
                Ok(Some(Event::Notice { message })) => return message,
                Ok(Some(_)) => {}
                _ => panic!("no notice"),
            }
        }
    }

    #[test]
    fn tools_op_lists_each_tool_with_what_it_may_do_and_the_policy() {
        let r = rig(&[], AgentConfig::default());
        r.h.send(Op::Tools);
        let m = next_notice(&r.h);
        assert!(m.contains("approval policy: ask"), "{m}");
        assert!(m.contains("echo (reads)"), "{m}");
        assert!(m.contains("write (edits files)"), "{m}");
        assert!(m.contains("exec (runs code)"), "{m}");
    }

    #[test]
    fn diff_op_shows_what_the_real_tools_changed_in_the_session() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.md"), "old line\n").unwrap();
        let engine = Replies {
            replies: vec![
                call(
                    "write_file",
                    r#"{"path": "notes.md", "content": "new line\n"}"#,
                ),
                "done".to_string(),
            ]
            .into(),
            seen: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        let cfg = AgentConfig {
            policy: Policy::FullAuto,
            ..AgentConfig::default()
        };
        let host = host::builtin(dir.path()).unwrap();
        let h = spawn_with_tools(Box::new(engine), cfg, Some(host));
        h.send(Op::Diff);
        assert!(next_notice(&h).contains("no files"));
        h.send(Op::UserMessage {
            text: "edit".into(),
        });
        let evs = collect_turn(&h);
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::ToolResult { ok: true, .. })),
            "{evs:?}"
        );
        h.send(Op::Diff);
        let d = next_notice(&h);
        assert!(d.contains("-old line") && d.contains("+new line"), "{d}");
    }

    fn answer_text(ev: &[Event]) -> String {
        ev.iter()
            .filter_map(|e| match e {
                Event::AnswerDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_raw_call_text_is_not_streamed_as_answer_but_the_prose_is() {
        let r = rig(
            &[
                &format!("Let me look.{}", call("echo", "{}")),
                "{\"not\": \"a call\"}",
            ],
            AgentConfig::default(),
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        let a = answer_text(&ev);
        assert!(a.starts_with("Let me look."), "{a}");
        assert!(!a.contains("tool_call") && !a.contains("\"echo\""), "{a}");
        assert!(
            a.ends_with("{\"not\": \"a call\"}"),
            "JSON that is not a call is released: {a}"
        );
    }

    fn roles(req: &GenerateRequest) -> Vec<String> {
        let Prompt::Chat(m) = &req.prompt else {
            panic!()
        };
        m.iter().map(|m| m.role.clone()).collect()
    }

    #[test]
    fn a_repeated_call_makes_the_model_answer_from_the_result() {
        let c = call("echo", "{\"x\": 1}");
        let r = rig(&[&c, &c, "It says echo output."], AgentConfig::default());
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        assert_eq!(*r.ran.lock().unwrap(), vec!["echo"], "run once");
        let seen = r.seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].no_tool_calls, "the third generation may not call");
        // The repeat is not part of the conversation; an instruction to answer is.
        assert_eq!(
            roles(&seen[2]),
            ["system", "user", "assistant", "tool", "system"]
        );
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::Notice { message } if message.contains("repeated echo"))));
        assert_eq!(answer_text(&ev), "It says echo output.");
        let Some(Event::TurnFinished { stats, .. }) = ev.last() else {
            panic!()
        };
        assert_eq!(stats.finish_reason, "stop");
    }

    #[test]
    fn a_call_that_only_repeats_an_earlier_result_is_left_out_and_the_model_answers() {
        let r = rig(
            &[
                &call("echo", "{\"i\": 1}"),
                &call("echo", "{\"i\": 2}"),
                "Done.",
            ],
            AgentConfig::default(),
        );
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        assert_eq!(*r.ran.lock().unwrap(), vec!["echo", "echo"], "both ran");
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::ToolResult { .. }))
                .count(),
            2,
            "and both are shown"
        );
        let seen = r.seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(!seen[1].no_tool_calls && seen[2].no_tool_calls);
        assert_eq!(
            roles(&seen[2]),
            ["system", "user", "assistant", "tool", "system"],
            "the second round (same result) is left out"
        );
        assert_eq!(answer_text(&ev), "Done.");
    }

    #[test]
    fn a_model_that_keeps_repeating_one_call_is_stopped_early() {
        let c = call("echo", "{\"x\": 1}");
        let r = rig(&[&c, &c, &c, &c, &c, &c, &c, &c], AgentConfig::default());
        r.h.send(Op::UserMessage { text: "go".into() });
        let ev = collect_turn(&r.h);
        assert_eq!(*r.ran.lock().unwrap(), vec!["echo"], "run once");
        assert_eq!(r.seen.lock().unwrap().len(), 3, "stopped after two repeats");
        let Some(Event::TurnFinished { stats, .. }) = ev.last() else {
            panic!()
        };
        assert_eq!(stats.finish_reason, "repeated_call");
    }
}
