//! The generate step: one generation from the conversation, streamed to the UI as it comes (with
//! a call's raw text held back when tools are offered), its stats added to the turn's.

use super::turn::TurnSum;
use super::{gate, parse, reasoning_part, Agent, AGENT_PROMPT};
use crate::engine::template::ChatMessage;
use crate::engine::{GenerateRequest, Prompt};
use crate::protocol::{Event, TurnStats};
use serde_json::Value;

/// The system message of a request: the agent's instructions when tools are offered, then the
/// configured system prompt.
pub(super) fn system_prompt(system: Option<&str>, tools_offered: bool) -> Option<String> {
    match (system, tools_offered) {
        (Some(s), false) => Some(s.to_string()),
        (Some(s), true) => Some(format!("{}\n\n{s}", AGENT_PROMPT.trim())),
        (None, true) => Some(AGENT_PROMPT.trim().to_string()),
        (None, false) => None,
    }
}

/// What one generation streamed.
#[derive(Default)]
struct Streamed {
    reasoning: String,
    answer: String,
    /// The engine's closing stats and tokens, if it got that far.
    finished: Option<(TurnStats, Vec<u32>)>,
}

/// A branch's prefix is part of the turn's text: its reasoning goes before the generated
/// reasoning and its answer before the generated answer. Without a `<think>` of its own, a
/// prefix for a reasoning model is reasoning.
pub(super) fn with_prefix(
    prefix: &str,
    reasoning: &str,
    answer: &str,
    model_reasons: bool,
) -> (String, String) {
    let opens = prefix.trim_start().starts_with("<think>");
    let (pre_think, pre_answer) =
        crate::engine::reasoning::split_reasoning(prefix, !opens && model_reasons);
    (
        format!("{}{reasoning}", reasoning_part(&pre_think)),
        format!("{pre_answer}{answer}"),
    )
}

impl Agent {
    /// One generation; returns (reasoning, answer, finished without error).
    pub(super) fn generate_once(
        &mut self,
        prefix: Option<String>,
        specs: &[Value],
        names: &[&str],
        sum: &mut TurnSum,
        no_calls: bool,
    ) -> (String, String, bool) {
        let prefix_text = prefix.clone().unwrap_or_default();
        let req = self.request(prefix, specs, no_calls);
        let (streamed, r) = self.stream(&req, names, !specs.is_empty());
        let got_stats = streamed.finished.is_some();
        if let Some((s, t)) = streamed.finished {
            sum.add(s, t);
        }
        let ok = match r {
            Ok(()) => true,
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
        let (reasoning, answer) = with_prefix(
            &prefix_text,
            &streamed.reasoning,
            &streamed.answer,
            self.engine.is_reasoning(),
        );
        (reasoning, answer, ok)
    }

    /// The request for the next generation: the system prompt and the conversation, this
    /// session's settings, the tools, and the branch prefix to continue.
    fn request(&self, prefix: Option<String>, specs: &[Value], no_calls: bool) -> GenerateRequest {
        let mut msgs = Vec::new();
        if let Some(s) = system_prompt(self.cfg.system.as_deref(), !specs.is_empty()) {
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
        req.assistant_prefix = prefix;
        req
    }

    /// Runs the engine on `req`, sending its events on as they come; with tools offered, a
    /// call's raw text is held back (the UI shows a tool card instead). A generation that panics
    /// (a kernel's bounds check, a template on odd input) fails like one that returns an error.
    fn stream(
        &mut self,
        req: &GenerateRequest,
        names: &[&str],
        tools_offered: bool,
    ) -> (Streamed, anyhow::Result<()>) {
        let mut out = Streamed::default();
        let events = self.events.clone();
        let mut send = |e: Event| {
            let _ = events.send(e);
        };
        let mut gate = tools_offered.then(gate::AnswerGate::default);
        let engine = &mut self.engine;
        let ctrl = &self.ctrl;
        let r = crate::tools::catch_panic(|| {
            engine.generate(req, ctrl, &mut |e| match e {
                Event::TurnFinished { stats, tokens } => out.finished = Some((stats, tokens)),
                e => {
                    match &e {
                        Event::ThinkingDelta { text, .. } => out.reasoning.push_str(text),
                        Event::AnswerDelta { text, .. } => out.answer.push_str(text),
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
        (out, r.map(|_| ()))
    }
}
