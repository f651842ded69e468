//! The generate step: one generation from the conversation, streamed to the UI as it comes (with
//! a call's raw text held back when tools are offered), its stats added to the turn's.

use super::turn::TurnSum;
use super::{gate, parse, reasoning_part, Agent, AGENT_PROMPT, RESEARCHER_PROMPT};
use aha_engine::template::ChatMessage;
use aha_engine::{GenerateRequest, Prompt};
use aha_protocol::{Event, TurnStats};

/// The system message of a request: the agent's instructions when tools are offered, then the
/// researcher's in research mode, then the configured system prompt.
pub(super) fn system_prompt(
    system: Option<&str>,
    tools_offered: bool,
    research: bool,
) -> Option<String> {
    let parts: Vec<&str> = [
        tools_offered.then(|| AGENT_PROMPT.trim()),
        research.then(|| RESEARCHER_PROMPT.trim()),
        system,
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
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
        aha_engine::reasoning::split_reasoning(prefix, !opens && model_reasons);
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
        specs: &[aha_protocol::ToolSpec],
        names: &[&str],
        sum: &mut TurnSum,
        no_calls: bool,
    ) -> (String, String, bool) {
        let prefix_text = prefix.clone().unwrap_or_default();
        self.fit_context(super::compact::Next {
            prefix: prefix.as_deref(),
            specs,
            no_calls,
        });
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
                        aha_protocol::FinishReason::Cancelled
                    } else {
                        aha_protocol::FinishReason::Error
                    };
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
    pub(super) fn request(
        &self,
        prefix: Option<String>,
        specs: &[aha_protocol::ToolSpec],
        no_calls: bool,
    ) -> GenerateRequest {
        let mut req = GenerateRequest::chat(Vec::new());
        req.prompt = if self.cfg.raw {
            Prompt::Raw(self.last_user_text())
        } else {
            let mut msgs = Vec::new();
            if let Some(s) = system_prompt(
                self.cfg.system.as_deref(),
                !specs.is_empty(),
                self.cfg.research,
            ) {
                msgs.push(ChatMessage::system(s));
            }
            msgs.extend(self.messages.iter().cloned());
            Prompt::Chat(msgs)
        };
        req.max_tokens = self.cfg.max_tokens;
        req.think = self.cfg.think;
        req.think_budget = self.cfg.think_budget;
        req.trace = self.cfg.trace.clone();
        req.sampling = self
            .cfg
            .sampling
            .clone()
            .unwrap_or_else(|| self.engine.default_sampling());
        req.tools = (!specs.is_empty()).then(|| aha_protocol::ToolSpec::to_openai_all(specs));
        req.constrain_tools = self.cfg.constrain_tools;
        req.no_tool_calls = no_calls || self.cfg.no_tool_calls;
        req.assistant_prefix = prefix;
        req
    }

    /// The text of the latest user message (the whole prompt in completion mode).
    fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == aha_protocol::Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default()
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
        let native = &mut self.native_calls;
        native.clear();
        let engine = &mut self.engine;
        let ctrl = &self.ctrl;
        let r = aha_protocol::panic::catch_panic(|| {
            engine.generate(req, ctrl, &mut |e| match e {
                Event::TurnFinished { stats, tokens } => out.finished = Some((stats, tokens)),
                // A remote server's native call, with tools offered: the turn runs it (and shows
                // it then, under its own id), like a call written in the text.
                Event::ToolCall {
                    name, arguments, ..
                } if tools_offered => native.push((name, arguments)),
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

#[cfg(test)]
mod tests {
    use super::super::testkit::{bench, bench_with, call};
    use super::super::AgentConfig;
    use super::*;
    use aha_engine::ThinkMode;

    #[test]
    fn the_system_message_puts_the_agent_prompt_first_when_tools_are_offered() {
        let agent = AGENT_PROMPT.trim();
        assert_eq!(system_prompt(None, false, false), None);
        assert_eq!(system_prompt(Some("S"), false, false).as_deref(), Some("S"));
        assert_eq!(system_prompt(None, true, false).as_deref(), Some(agent));
        assert_eq!(
            system_prompt(Some("S"), true, false),
            Some(format!("{agent}\n\nS"))
        );
        // Research mode: the researcher's instructions after the agent's, before the configured.
        let researcher = RESEARCHER_PROMPT.trim();
        assert_eq!(
            system_prompt(Some("S"), true, true),
            Some(format!("{agent}\n\n{researcher}\n\nS"))
        );
        assert_eq!(
            system_prompt(None, false, true).as_deref(),
            Some(researcher)
        );
    }

    #[test]
    fn a_prefix_is_reasoning_for_a_reasoning_model_unless_it_says_otherwise() {
        assert_eq!(
            with_prefix("", "r", "a", true),
            ("r".to_string(), "a".to_string())
        );
        assert_eq!(
            with_prefix("<think>\nHmm", " more", "a", false),
            ("Hmm more".to_string(), "a".to_string())
        );
        assert_eq!(
            with_prefix("Plain ", "r", "a", false),
            ("r".to_string(), "Plain a".to_string())
        );
        let (r, a) = with_prefix("Plain ", "r", "a", true);
        assert!(r.starts_with("Plain") && a == "a", "{r:?} {a:?}");
    }

    #[test]
    fn the_request_carries_the_settings_the_conversation_and_the_prefix() {
        let cfg = AgentConfig {
            max_tokens: 77,
            think: ThinkMode::On,
            think_budget: Some(9),
            constrain_tools: false,
            system: Some("S".into()),
            ..AgentConfig::default()
        };
        let mut b = bench(&[], cfg, true);
        b.agent.messages.push(ChatMessage::user("q"));
        let specs = vec![aha_protocol::ToolSpec::new(
            "echo",
            "",
            serde_json::json!({}),
        )];
        let r = b.agent.request(Some("pre".into()), &specs, true);
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].content, format!("{}\n\nS", AGENT_PROMPT.trim()));
        assert_eq!(m[1].content, "q");
        assert_eq!(
            (r.max_tokens, r.think, r.think_budget),
            (77, ThinkMode::On, Some(9))
        );
        assert_eq!(r.tools.as_ref().map(Vec::len), Some(1));
        assert!(!r.constrain_tools && r.no_tool_calls);
        assert_eq!(r.assistant_prefix.as_deref(), Some("pre"));
        let r = b.agent.request(None, &[], false);
        assert!(r.tools.is_none() && !r.no_tool_calls && r.assistant_prefix.is_none());
    }

    /// What `aha run` built before it went through the agent: the system message and the user
    /// message, the flags' settings, no tools.
    fn direct_request(prompt: Prompt, no_tool_calls: bool) -> GenerateRequest {
        let mut r = GenerateRequest::chat(Vec::new());
        r.prompt = prompt;
        r.sampling = aha_engine::sampler::SamplingParams::greedy();
        r.max_tokens = 40;
        r.think = ThinkMode::On;
        r.think_budget = Some(24);
        r.no_tool_calls = no_tool_calls;
        r
    }

    fn one_shot_cfg(raw: bool, no_tool_calls: bool) -> AgentConfig {
        AgentConfig {
            max_tokens: 40,
            think: ThinkMode::On,
            think_budget: Some(24),
            sampling: Some(aha_engine::sampler::SamplingParams::greedy()),
            system: Some("S".into()),
            raw,
            no_tool_calls,
            ..AgentConfig::default()
        }
    }

    #[test]
    fn a_tool_less_agent_asks_exactly_what_a_direct_generation_asks() {
        for no_calls in [false, true] {
            let mut b = bench(&[], one_shot_cfg(false, no_calls), false);
            b.agent.messages.push(ChatMessage::user("q"));
            let want = direct_request(
                Prompt::Chat(vec![ChatMessage::system("S"), ChatMessage::user("q")]),
                no_calls,
            );
            let got = b.agent.request(None, &[], false);
            assert_eq!(format!("{got:?}"), format!("{want:?}"));
        }
    }

    #[test]
    fn raw_mode_sends_the_latest_user_message_as_exact_text() {
        let mut b = bench(&[], one_shot_cfg(true, false), false);
        b.agent.messages.push(ChatMessage::user("def f(n):"));
        let got = b.agent.request(None, &[], false);
        let want = direct_request(Prompt::Raw("def f(n):".into()), false);
        assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "no template, no system prompt"
        );
        b.agent.messages.push(ChatMessage::assistant("x"));
        b.agent.messages.push(ChatMessage::user("second"));
        b.agent.messages.push(ChatMessage::tool("not user"));
        let Prompt::Raw(text) = b.agent.request(None, &[], false).prompt else {
            panic!("raw")
        };
        assert_eq!(text, "second", "only the latest user message");
    }

    #[test]
    fn no_tool_calls_forbids_calls_in_every_generation() {
        let b = bench(&[], one_shot_cfg(false, true), true);
        let r = b.agent.request(None, &[json_spec()], false);
        assert!(r.no_tool_calls && r.tools.is_some());
        let b = bench(&[], AgentConfig::default(), true);
        assert!(!b.agent.request(None, &[json_spec()], false).no_tool_calls);
    }

    #[test]
    fn a_tool_less_turn_is_the_engine_s_events_between_turn_started_and_its_stats() {
        let mut b = bench(
            &["why|The answer is 42."],
            one_shot_cfg(false, false),
            false,
        );
        let ev = b.handle(aha_protocol::Op::UserMessage {
            text: "q".into(),
            turn_id: None,
        });
        assert!(matches!(ev[0], Event::TurnStarted { turn: 0, .. }));
        // What the engine emitted, in order, unchanged (the double streams 7 characters a piece).
        let deltas: Vec<String> = ev[1..ev.len() - 1]
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            deltas,
            [
                r#"{"type":"thinking_delta","text":"why"}"#,
                r#"{"type":"answer_delta","text":"The ans"}"#,
                r#"{"type":"answer_delta","text":"wer is "}"#,
                r#"{"type":"answer_delta","text":"42."}"#,
            ]
        );
        // The engine's own turn_finished, field for field.
        let want = Event::TurnFinished {
            stats: TurnStats {
                answer_tokens: 17,
                thinking_tokens: 3,
                prompt_tokens: 10,
                decode_tok_s: 1.5,
                finish_reason: aha_protocol::FinishReason::Stop,
                ..TurnStats::default()
            },
            tokens: vec![17],
        };
        assert_eq!(ev.last(), Some(&want));
    }

    #[test]
    fn a_generation_streams_holds_back_a_call_and_adds_its_stats() {
        let text = format!("Look.{}", call("echo", "{}"));
        let mut b = bench(&[&format!("why|{text}")], AgentConfig::default(), true);
        let mut sum = TurnSum::default();
        let got = b
            .agent
            .generate_once(None, &[json_spec()], &["echo"], &mut sum, false);
        assert_eq!(got, ("why".to_string(), text.clone(), true));
        assert_eq!(sum.stats.finish_reason, aha_protocol::FinishReason::Stop);
        assert_eq!(sum.tokens.len(), 1);
        let shown: String = b
            .take()
            .iter()
            .filter_map(|e| match e {
                Event::AnswerDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(shown, "Look.", "the call's text is not shown");
    }

    fn json_spec() -> aha_protocol::ToolSpec {
        aha_protocol::ToolSpec::new("echo", "", serde_json::Value::Null)
    }

    #[test]
    fn a_failed_generation_is_an_error_and_its_reason_when_no_stats_came() {
        let mut b = bench(&["ERR", "LATE_ERR"], AgentConfig::default(), false);
        let mut sum = TurnSum::default();
        let got = b.agent.generate_once(None, &[], &[], &mut sum, false);
        assert_eq!(got, (String::new(), String::new(), false));
        assert_eq!(sum.stats.finish_reason, aha_protocol::FinishReason::Error);
        assert_eq!(
            b.take(),
            [Event::Error {
                message: "the server went away".into()
            }]
        );
        let got = b.agent.generate_once(None, &[], &[], &mut sum, false);
        assert!(!got.2);
        assert_eq!(
            sum.stats.finish_reason,
            aha_protocol::FinishReason::Stop,
            "the engine's own reason stands"
        );
        let mut b2 = bench(&["ERR"], AgentConfig::default(), false);
        b2.agent.ctrl.cancel();
        let mut sum = TurnSum::default();
        b2.agent.generate_once(None, &[], &[], &mut sum, false);
        assert_eq!(
            sum.stats.finish_reason,
            aha_protocol::FinishReason::Cancelled
        );
    }

    #[test]
    fn a_panicking_engine_fails_the_generation() {
        let mut b = bench_with(&["PANIC"], AgentConfig::default(), false, true);
        let mut sum = TurnSum::default();
        let got = b
            .agent
            .generate_once(Some("<think>\nso".into()), &[], &[], &mut sum, false);
        assert_eq!(got, ("so".to_string(), String::new(), false));
        assert_eq!(sum.stats.finish_reason, aha_protocol::FinishReason::Error);
        assert!(
            matches!(&b.take()[..], [Event::Error { message }] if message.starts_with("the engine failed: internal error"))
        );
    }
}
