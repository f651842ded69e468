//! The agent: owns the conversation and the engine on its own OS thread, turns `Op`s into turns
//! (generation, and with tools a loop of calls), and reports everything as `Event`s.
//!
//! The UI (or `aha run --agent`) talks to it only through [`AgentHandle`]: `send(Op)` in, `Event`s
//! out. Cancel, pause, resume and step act at once on the shared [`Control`] (the engine checks it
//! between tokens); everything else is queued for the agent's thread.

mod approve;
mod compact;
pub mod gate;
mod generate;
mod ground;
pub mod host;
pub mod mcp_host;
mod ops;
pub mod parse;
pub mod policy;
mod repeats;
mod research;
mod round;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod transcripts;
mod turn;

use aha_engine::sampler::SamplingParams;
use aha_engine::template::ChatMessage;
use aha_engine::{Control, Engine, ThinkMode};
use aha_protocol::{Event, Op, TurnStats};
use policy::{Effect, Policy};
use serde_json::Value;
use std::cell::Cell;
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The researcher's instructions (research mode: `--research`, `/research on`).
pub const RESEARCHER_PROMPT: &str = include_str!("../../../prompts/researcher.md");

/// The agent's standing instructions when tools are offered.
pub const AGENT_PROMPT: &str = include_str!("../../../prompts/agent.md");
/// Said (as a system message after the tool results) when the model must answer now.
pub const ANSWER_NOW_PROMPT: &str = include_str!("../../../prompts/answer_now.md");

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
    /// Completion mode (`aha run --raw`): each generation's prompt is the latest user message as
    /// exact text, without the chat template, the system prompt or the earlier conversation.
    pub raw: bool,
    /// Forbid tool-call text in every generation: replies must open as prose
    /// (`aha run --no-tool-calls`).
    pub no_tool_calls: bool,
    /// Research mode: before a new turn's first generation, search the documents with the
    /// message and put the best passages into it (`aha run --agent --research`), and check the
    /// answer's citations after it.
    pub research: bool,
    /// In research mode, leave searching to the model instead of retrieving first (to measure
    /// what retrieving first changes; `aha run --no-retrieve-first`).
    pub no_retrieve_first: bool,
    /// Compact the conversation before a generation whose prompt passes this share of the
    /// context (0 < share ≤ 1); 0 never compacts by itself (`/compact` still does).
    pub compact_at: f32,
    /// The reasoning microscope's settings, passed to every generation (alternatives per
    /// token, `think_min`, loops, forks, confidence window).
    pub trace: aha_protocol::TraceOptions,
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
            raw: false,
            no_tool_calls: false,
            research: false,
            no_retrieve_first: false,
            compact_at: 0.8,
            trace: aha_protocol::TraceOptions::default(),
        }
    }
}

/// The tools an agent may call, as the loop sees them (implemented over `aha_tools`, and by
/// scripted doubles in tests).
pub trait ToolHost: Send {
    /// The tools the model is offered.
    fn specs(&self) -> Vec<aha_protocol::ToolSpec>;
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
    /// The best `k` passages of the document index for `query`, with their text (research
    /// mode's retrieve-first).
    fn retrieve(&self, _query: &str, _k: usize) -> anyhow::Result<Vec<aha_rag::Hit>> {
        anyhow::bail!("this session has no document index")
    }
    /// The text of an indexed document, by the path the index gives it (relative to the
    /// workspace), for research mode's citation check; `None` when it cannot be read.
    fn document(&self, _path: &str) -> Option<String> {
        None
    }
    /// What a person should hear since the last time this was asked (an MCP server that failed
    /// to start, crashed or timed out); the agent says each as a `notice`.
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }
    /// The MCP servers: each one's state, tools and last error (`/mcp`).
    fn mcp_status(&self) -> anyhow::Result<String> {
        Ok(mcp_host::NO_SERVERS.into())
    }
}

pub use aha_protocol::EngineInfo;

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
            Op::Cancel { turn_id: None } => self.ctrl.cancel(),
            Op::Cancel { turn_id: Some(id) } => self.ctrl.cancel_turn(*id),
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

impl aha_protocol::AgentLink for AgentHandle {
    fn send(&mut self, op: Op) {
        AgentHandle::send(self, op)
    }
    fn try_recv(&mut self) -> Option<Event> {
        AgentHandle::try_recv(self)
    }
    fn info(&self) -> &EngineInfo {
        AgentHandle::info(self)
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
    /// The id the front end gave the turn asked for last (for cancels that name it).
    turn_id: Option<aha_protocol::TurnId>,
    /// Research mode: what this turn's citations are checked against.
    grounding: research::Grounding,
    /// Tool calls the engine made natively in the last generation (a remote server's
    /// `tool_calls`), as `(name, arguments)`: run like the calls parsed out of the text.
    native_calls: Vec<(String, Value)>,
    /// How many of the first turns were compacted into a summary (they can no longer branch).
    folded: usize,
    /// The user's messages from the compacted turns, kept word for word in the summary message.
    kept_user: Vec<String>,
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
            turn_id: None,
            grounding: Default::default(),
            native_calls: Vec::new(),
            folded: 0,
            kept_user: Vec::new(),
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
            if let Err(p) = aha_protocol::panic::catch_panic(|| self.handle(op)) {
                self.emit(Event::Error {
                    message: format!("the agent failed: {p}"),
                });
                if self.in_turn.get() {
                    self.emit(Event::TurnFinished {
                        stats: TurnStats {
                            finish_reason: aha_protocol::FinishReason::Error,
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
            Op::UserMessage { text, turn_id } => {
                self.turn_id = turn_id;
                self.user_message(text)
            }
            Op::Branch {
                turn,
                prefix,
                turn_id,
            } => {
                self.turn_id = turn_id;
                self.branch(turn, prefix)
            }
            Op::SetThinking { mode, budget } => self.set_thinking(mode, budget),
            Op::SetThinkMin { min } => self.set_think_min(min),
            Op::SetLoops { action } => self.set_loops(action),
            Op::Clear => self.clear(),
            Op::Restore { messages } => self.restore(messages),
            Op::Approve { .. } => {
                // An approval with no request waiting (it arrived late): nothing to do.
            }
            Op::SetPolicy { policy } => self.set_policy(policy),
            Op::SetResearch { on } => self.set_research(on),
            Op::Undo => self.tool_op("undo failed", |t, _| Ok(ops::undo_summary(&t.undo()?))),
            Op::Diff => self.tool_op("diff", |t, _| Ok(ops::diff_summary(t.diff()))),
            Op::Tools => self.tool_op("tools", |t, policy| Ok(ops::tools_listing(t, policy))),
            Op::Index { paths } => self.tool_op("index", |t, _| t.index_docs(&paths)),
            Op::Search { query } => self.tool_op("search", |t, _| t.search_docs(&query)),
            Op::Compact => self.compact_now(),
            Op::Mcp => self.tool_op("mcp", |t, _| t.mcp_status()),
            Op::Cancel { .. } | Op::Pause | Op::Resume | Op::Step => {}
        }
    }
}

/// The result of a tool call that panicked, for the model and the person reading the tool card.
fn tool_panicked(name: &str, p: &aha_tools::Panicked) -> String {
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
    use aha_engine::{GenerateRequest, Prompt};
    use aha_protocol::TurnStats;
    use serde_json::json;

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
                    top: Vec::new(),
                });
            }
            emit(Event::AnswerDelta {
                text: "42".into(),
                logprob: None,
                entropy: None,
                top: Vec::new(),
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
        h.send(Op::UserMessage {
            text: "q1".into(),
            turn_id: None,
        });
        let ev = collect_turn(&h);
        assert!(matches!(ev[0], Event::TurnStarted { turn: 0, .. }));
        h.send(Op::UserMessage {
            text: "q2".into(),
            turn_id: None,
        });
        collect_turn(&h);
        h.send(Op::Branch {
            turn: 0,
            prefix: "<think>\nLet me think.\n\nHmm, again.".into(),
            turn_id: None,
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
                top: Vec::new(),
            });
            let stats = TurnStats {
                answer_tokens: 3,
                finish_reason: aha_protocol::FinishReason::Stop,
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
        fn specs(&self) -> Vec<aha_protocol::ToolSpec> {
            ["echo", "write", "exec"]
                .iter()
                .map(|n| aha_protocol::ToolSpec::new(*n, "", json!({"type": "object"})))
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
            turn_id: None,
        });
        assert!(answer_text(&collect_turn(&r.h)).contains("Second."));
    }

    #[test]
    fn an_engine_that_panics_is_an_error_and_the_turn_still_finishes() {
        let r = rig(&["PANIC", "Fine now."], AgentConfig::default());
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        assert_eq!(stats.finish_reason, aha_protocol::FinishReason::Error);
        r.h.send(Op::UserMessage {
            text: "again".into(),
            turn_id: None,
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
            assert_eq!(m.last().unwrap().role, aha_protocol::Role::System);
            assert_eq!(m.last().unwrap().content, ANSWER_NOW_PROMPT.trim());
        }
        let Some(Event::TurnFinished { stats, .. }) = ev.last() else {
            panic!()
        };
        assert_eq!(stats.finish_reason, aha_protocol::FinishReason::StepLimit);
        let r = rig(
            &[&call("exec", "{\"sleep\": true}"), "never"],
            AgentConfig {
                policy: Policy::FullAuto,
                ..Default::default()
            },
        );
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
        loop {
            if let Some(Event::ToolCall { .. }) = r.h.recv_timeout(Duration::from_secs(5)).unwrap()
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(30));
        r.h.send(Op::Cancel { turn_id: None });
        let ev = collect_turn(&r.h);
        assert_eq!(*r.ran.lock().unwrap(), vec!["exec cancelled"]);
        match ev.last() {
            Some(Event::TurnFinished { stats, .. }) => {
                assert_eq!(stats.finish_reason, aha_protocol::FinishReason::Cancelled)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.seen.lock().unwrap().len(),
            1,
            "no generation after a cancel"
        );
    }

    #[test]
    fn a_bad_branch_is_an_error_not_a_panic() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = spawn(Box::new(Scripted { seen }), AgentConfig::default());
        h.send(Op::Branch {
            turn: 3,
            prefix: String::new(),
            turn_id: None,
        });
        let b = h.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert!(
            matches!(b, Event::Error { ref message } if message.contains("cannot branch turn 3"))
        );
    }

    #[test]
    fn a_cancel_naming_a_turn_stops_it_before_it_starts_and_never_the_next() {
        use aha_protocol::TurnId;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = spawn(Box::new(Scripted { seen }), AgentConfig::default());
        // The stop arrives before the agent has read the message that starts turn 1.
        h.send(Op::Cancel {
            turn_id: Some(TurnId(1)),
        });
        h.send(Op::UserMessage {
            text: "q1".into(),
            turn_id: Some(TurnId(1)),
        });
        let ev = collect_turn(&h);
        assert!(
            !ev.iter().any(|e| matches!(e, Event::ThinkingDelta { .. })),
            "turn 1 stopped before its first token: {ev:?}"
        );
        // A stop for turn 1 that comes late must not touch turn 2.
        h.send(Op::Cancel {
            turn_id: Some(TurnId(1)),
        });
        h.send(Op::UserMessage {
            text: "q2".into(),
            turn_id: Some(TurnId(2)),
        });
        let ev = collect_turn(&h);
        let thought: String = ev
            .iter()
            .filter_map(|e| match e {
                Event::ThinkingDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(thought, "Let me think.\n\nWait, check.", "{ev:?}");
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
            turn_id: None,
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        m.iter().map(|m| m.role.to_string()).collect()
    }

    #[test]
    fn a_repeated_call_makes_the_model_answer_from_the_result() {
        let c = call("echo", "{\"x\": 1}");
        let r = rig(&[&c, &c, "It says echo output."], AgentConfig::default());
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        assert_eq!(stats.finish_reason, aha_protocol::FinishReason::Stop);
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
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
        r.h.send(Op::UserMessage {
            text: "go".into(),
            turn_id: None,
        });
        let ev = collect_turn(&r.h);
        assert_eq!(*r.ran.lock().unwrap(), vec!["echo"], "run once");
        assert_eq!(r.seen.lock().unwrap().len(), 3, "stopped after two repeats");
        let Some(Event::TurnFinished { stats, .. }) = ev.last() else {
            panic!()
        };
        assert_eq!(
            stats.finish_reason,
            aha_protocol::FinishReason::RepeatedCall
        );
    }
}
