//! The agent: owns the conversation and the engine on its own OS thread, turns `Op`s into turns
//! (generation, and with tools a loop of calls), and reports everything as `Event`s.
//!
//! The UI (or `aha run --agent`) talks to it only through [`AgentHandle`]: `send(Op)` in, `Event`s
//! out. Cancel, pause, resume and step act at once on the shared [`Control`] (the engine checks it
//! between tokens); everything else is queued for the agent's thread.

use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;
use crate::engine::{Control, Engine, GenerateRequest, Prompt, ThinkMode};
use crate::protocol::{Event, Op};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            max_tokens: 4096,
            think: ThinkMode::Auto,
            think_budget: None,
            sampling: None,
            system: None,
        }
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

/// The UI's end of the agent.
pub struct AgentHandle {
    ops: Sender<Op>,
    events: Receiver<Event>,
    ctrl: Arc<Control>,
    info: EngineInfo,
    thread: Option<JoinHandle<()>>,
}

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

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`. `Err(())` once the agent has stopped.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>, ()> {
        match self.events.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
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

/// Starts the agent on its own thread.
pub fn spawn(engine: Box<dyn Engine>, cfg: AgentConfig) -> AgentHandle {
    let (op_tx, op_rx) = mpsc::channel();
    let (ev_tx, ev_rx) = mpsc::channel();
    let ctrl = Arc::new(Control::default());
    let info = EngineInfo {
        model: engine.model_name(),
        device: engine.device(),
        context_length: engine.context_length(),
        reasoning: engine.is_reasoning(),
    };
    let mut agent = Agent {
        engine,
        cfg,
        ctrl: ctrl.clone(),
        events: ev_tx,
        messages: Vec::new(),
        turns: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("aha-agent".into())
        .spawn(move || agent.run(op_rx))
        .ok();
    AgentHandle {
        ops: op_tx,
        events: ev_rx,
        ctrl,
        info,
        thread,
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
}

impl Agent {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn run(&mut self, ops: Receiver<Op>) {
        while let Ok(op) = ops.recv() {
            self.handle(op);
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
            Op::SetPolicy { .. } | Op::Undo => self.emit(Event::Notice {
                message: "tools are not enabled in this session".into(),
            }),
            Op::Cancel | Op::Pause | Op::Resume | Op::Step => {}
        }
    }

    /// One assistant turn: generate from the conversation (continuing `prefix` when branching)
    /// and append the reply.
    fn turn(&mut self, branch_of: Option<usize>, prefix: String) {
        self.ctrl.cancel.store(false, Ordering::SeqCst);
        self.ctrl.paused.store(false, Ordering::SeqCst);
        self.ctrl.step_to_boundary.store(false, Ordering::SeqCst);
        let turn = self.turns.len().saturating_sub(1);
        self.emit(Event::TurnStarted {
            turn,
            branch_of,
            prefix: prefix.clone(),
        });
        let mut msgs = Vec::new();
        if let Some(s) = &self.cfg.system {
            msgs.push(ChatMessage::new("system", s.clone()));
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
        req.assistant_prefix = (!prefix.is_empty()).then(|| prefix.clone());
        let mut reasoning = String::new();
        let mut answer = String::new();
        let events = self.events.clone();
        let r = self.engine.generate(&req, &self.ctrl, &mut |e| {
            match &e {
                Event::ThinkingDelta { text, .. } => reasoning.push_str(text),
                Event::AnswerDelta { text, .. } => answer.push_str(text),
                _ => {}
            }
            let _ = events.send(e);
        });
        if let Err(e) = r {
            self.emit(Event::Error {
                message: format!("{e:#}"),
            });
        }
        let full_reasoning = format!("{}{reasoning}", reasoning_part(&prefix));
        let content = if full_reasoning.is_empty() {
            answer
        } else {
            format!("<think>\n{}\n</think>\n\n{answer}", full_reasoning.trim())
        };
        self.messages.push(ChatMessage::new("assistant", content));
    }
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
}
