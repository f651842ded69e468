//! One assistant turn as a small state machine: generate → parse → (approve → run → feed back)
//! → generate again, until the model answers, is told to answer now and still calls, reaches
//! the step limit, repeats itself, or is cancelled.
//!
//! [`Turn`] holds the turn's state and decides each transition without side effects; the
//! [`Agent`] methods at the end carry them out (the engine, the tools, the conversation, the
//! events).

use super::parse::{self, Parsed};
use super::repeats::RepeatGuard;
use super::round::RoundEnd;
use super::{Agent, ANSWER_NOW_PROMPT};
use aha_engine::template::ChatMessage;
use aha_protocol::{Event, TurnStats};

/// The stats of a user turn, summed over its generations.
#[derive(Default)]
pub(super) struct TurnSum {
    pub stats: TurnStats,
    pub tokens: Vec<u32>,
    steps: usize,
}

impl TurnSum {
    pub fn add(&mut self, s: TurnStats, tokens: Vec<u32>) {
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
        t.drafted_tokens += s.drafted_tokens;
        t.accepted_tokens += s.accepted_tokens;
        if s.decode_tok_s > 0.0 {
            t.decode_tok_s = s.decode_tok_s;
        }
        t.finish_reason = s.finish_reason;
        // Forks add up over the turn's generations; its weakest window is the weakest of theirs.
        if let Some(f) = s.forks {
            t.forks = Some(t.forks.unwrap_or(0) + f);
        }
        if let Some(c) = s.min_group_confidence {
            t.min_group_confidence = Some(t.min_group_confidence.map_or(c, |m| m.min(c)));
        }
        self.tokens.extend(tokens);
    }
}

/// What the turn does before a generation.
/// Why the agent ends a turn itself, or insists on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EarlyStop {
    /// The most generations per turn were made.
    StepLimit,
    /// The model keeps repeating calls it already made.
    RepeatedCall,
}

impl EarlyStop {
    /// The turn's finish reason when it ends this way.
    pub(super) fn reason(self) -> aha_protocol::FinishReason {
        match self {
            Self::StepLimit => aha_protocol::FinishReason::StepLimit,
            Self::RepeatedCall => aha_protocol::FinishReason::RepeatedCall,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Generate. `answer_now` names why the model must answer without calling (`step_limit`,
    /// `repeated_call`); `None` while calls are allowed.
    Generate { answer_now: Option<EarlyStop> },
    /// End the turn early with this finish reason.
    Stop(EarlyStop),
}

/// What a parsed reply makes of the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// No calls: the reply is the answer, and the turn is over.
    Answer,
    /// Told to answer, it called anyway (an engine that cannot forbid calls): stop for this reason.
    CalledAnyway(EarlyStop),
    /// Only calls it already made: ask again with calls forbidden, so it answers from their
    /// results.
    Repeated,
    /// Run the calls and feed their results back.
    Run,
}

/// What a round of calls makes of the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterRound {
    /// Cancelled during the round: the turn ends as `cancelled`.
    Cancelled,
    /// End the turn early with this finish reason.
    Stop(EarlyStop),
    /// Every call only repeated an earlier result: leave the round out of the conversation and
    /// have the model answer from what it has.
    LeaveOut,
    /// Generate again with the results.
    Continue,
}

/// A turn's state between its transitions.
pub(super) struct Turn {
    /// Generations allowed (at least one).
    steps: usize,
    /// Generations so far.
    step: usize,
    /// Insisting on an answer is on (`AgentConfig::insist`).
    insist_on: bool,
    /// Set when the model must answer now: it repeated a call or a result.
    insist: Option<EarlyStop>,
    pub repeats: RepeatGuard,
    pub sum: TurnSum,
}

impl Turn {
    pub fn new(max_steps: usize, insist_on: bool) -> Self {
        Self {
            steps: max_steps.max(1),
            step: 0,
            insist_on,
            insist: None,
            repeats: RepeatGuard::default(),
            sum: TurnSum::default(),
        }
    }

    /// The step limit.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Before a generation: whether to generate, and whether calls are still allowed.
    pub fn next(&self) -> Next {
        if self.step >= self.steps && self.insist.is_none() {
            // Only with a limit of one step: its calls ran, and no step is left to answer.
            return Next::Stop(EarlyStop::StepLimit);
        }
        // The last step (after tool rounds), or a repeated call, gets no more calls: the model
        // answers from the results it has instead of being cut off mid-investigation.
        let last = self.step + 1 >= self.steps;
        let answer_now = self
            .insist
            .or((last && self.step > 0).then_some(EarlyStop::StepLimit))
            .filter(|_| self.insist_on);
        Next::Generate { answer_now }
    }

    /// A generation ran; returns its index in the turn (it numbers the round's call ids).
    pub fn generated(&mut self) -> usize {
        self.step += 1;
        self.step - 1
    }

    /// After parsing a reply generated under `answer_now`: what to do with it.
    pub fn reply(&mut self, parsed: &Parsed, answer_now: Option<EarlyStop>) -> Reply {
        if parsed.calls.is_empty() && parsed.malformed.is_empty() {
            Reply::Answer
        } else if let Some(why) = answer_now {
            Reply::CalledAnyway(why)
        } else if self.insist_on
            && parsed.malformed.is_empty()
            && self.repeats.all_made(&parsed.calls)
        {
            self.insist = Some(EarlyStop::RepeatedCall);
            Reply::Repeated
        } else {
            Reply::Run
        }
    }

    /// After a round of calls: stop, leave it out, or go on.
    pub fn after_round(&mut self, round: &RoundEnd) -> AfterRound {
        if round.cancelled {
            AfterRound::Cancelled
        } else if !self.insist_on && self.repeats.repeats() >= 2 {
            // Without insisting: told once that the result is there, it asked again.
            AfterRound::Stop(EarlyStop::RepeatedCall)
        } else if self.insist_on
            && round.calls > 0
            && round.redundant == round.calls
            && round.fed_back == round.calls
        {
            self.insist = Some(EarlyStop::RepeatedCall);
            AfterRound::LeaveOut
        } else {
            AfterRound::Continue
        }
    }
}

/// A generation as the turn reads it.
pub(super) struct Reading {
    /// The reasoning, wrapped in `<think>` for the conversation (empty when there was none).
    pub think: String,
    /// The whole answer text.
    pub answer: String,
    /// The calls in the answer, and the text around them.
    pub parsed: Parsed,
}

impl Reading {
    /// Reads a generation: its calls are looked for only when tools are offered (`names`: the
    /// offered tools' names) and the generation finished without error.
    pub fn new(reasoning: &str, answer: String, ok: bool, names: Option<&[&str]>) -> Self {
        let think = if reasoning.trim().is_empty() {
            String::new()
        } else {
            format!("<think>\n{}\n</think>\n\n", reasoning.trim())
        };
        let parsed = match names {
            Some(names) if ok => parse::parse(&answer, names),
            _ => Parsed {
                text: answer.clone(),
                ..Default::default()
            },
        };
        Self {
            think,
            answer,
            parsed,
        }
    }

    /// Adds the calls the engine made natively (a remote server's `tool_calls`) to those read
    /// from the text; arguments that are not a JSON object make a malformed call, answered like
    /// one written in the text.
    pub fn adopt_native(&mut self, calls: Vec<(String, serde_json::Value)>) {
        for (name, arguments) in calls {
            match arguments {
                serde_json::Value::Object(_) => {
                    self.parsed.calls.push(parse::Call { name, arguments })
                }
                serde_json::Value::String(raw) => self.parsed.malformed.push(parse::Malformed {
                    raw: format!("{name}({raw})"),
                    reason: "the arguments are not valid JSON".into(),
                }),
                other => self.parsed.malformed.push(parse::Malformed {
                    raw: format!("{name}({other})"),
                    reason: "the arguments must be a JSON object".into(),
                }),
            }
        }
    }

    /// The reply as the conversation keeps an answer: reasoning and the whole answer.
    pub fn answer_message(&self) -> ChatMessage {
        ChatMessage::assistant(format!("{}{}", self.think, self.answer))
    }

    /// The reply as the conversation keeps a reply with calls: reasoning and the text around them.
    pub fn text_message(&self) -> ChatMessage {
        ChatMessage::assistant(format!("{}{}", self.think, self.parsed.text))
    }
}

impl Agent {
    /// One assistant turn: generate from the conversation (continuing `prefix` when branching),
    /// run the tools it calls and generate again, until it answers, the step limit, or cancel.
    pub(super) fn turn(&mut self, branch_of: Option<usize>, prefix: String) {
        self.start_turn(branch_of, &prefix);
        // Research mode with passages retrieved: the turn answers from them, with no tools
        // described (a small model told of tools writes calls instead of answering).
        let grounded = branch_of.is_none() && self.retrieve_first();
        let specs = if grounded {
            Vec::new()
        } else {
            self.offered_specs()
        };
        let names: Vec<String> = aha_tools::spec_names(&specs);
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut t = Turn::new(self.cfg.max_steps, self.cfg.insist);
        let mut prefix = Some(prefix).filter(|p| !p.is_empty());
        loop {
            let answer_now = match t.next() {
                Next::Generate { answer_now } => answer_now,
                Next::Stop(why) => {
                    let steps = t.steps();
                    self.stop_turn(&mut t.sum, why, steps);
                    break;
                }
            };
            if answer_now.is_some() {
                self.tell_to_answer_now();
            }
            let (reasoning, answer, ok) = self.generate_once(
                prefix.take(),
                &specs,
                &name_refs,
                &mut t.sum,
                answer_now.is_some(),
            );
            let step = t.generated();
            let offered = (!specs.is_empty()).then_some(&name_refs[..]);
            let mut reading = Reading::new(&reasoning, answer, ok, offered);
            if ok && offered.is_some() {
                reading.adopt_native(std::mem::take(&mut self.native_calls));
            }
            match t.reply(&reading.parsed, answer_now) {
                Reply::Answer => {
                    self.messages.push(reading.answer_message());
                    self.check_answer(&reading.answer);
                    break;
                }
                Reply::CalledAnyway(why) => {
                    self.messages.push(reading.text_message());
                    let steps = t.steps();
                    self.stop_turn(&mut t.sum, why, steps);
                    break;
                }
                Reply::Repeated => {
                    self.emit(Event::Notice {
                        message: format!(
                            "the model repeated {} with the same arguments; asking it to answer from the result it has",
                            reading.parsed.calls[0].name
                        ),
                    });
                    continue;
                }
                Reply::Run => {}
            }
            let round = self.run_round(&mut t.repeats, step, reading);
            if !self.feed_back(&mut t, round) {
                break;
            }
        }
        // "Answer now" was said for this turn's last generation; left in, a small model reads it
        // in later turns as something to say.
        self.messages.retain(|m| {
            !(m.role == aha_protocol::Role::System && m.content == ANSWER_NOW_PROMPT.trim())
        });
        self.emit(Event::TurnFinished {
            stats: t.sum.stats,
            tokens: t.sum.tokens,
        });
    }

    /// Clears the controls, counts the turn for the tools' undo, and says the turn has started.
    fn start_turn(&mut self, branch_of: Option<usize>, prefix: &str) {
        self.ctrl.begin_turn(self.turn_id);
        self.tool_turn += 1;
        let turn = self.turns.len().saturating_sub(1);
        self.emit(Event::TurnStarted {
            turn,
            branch_of,
            prefix: prefix.to_string(),
        });
    }

    /// Before a generation that may not call: after tool results, say so in the conversation
    /// (small models keep calling unless told; the engine also forbids call text).
    fn tell_to_answer_now(&mut self) {
        if self
            .messages
            .last()
            .is_some_and(|m| m.role == aha_protocol::Role::Tool)
        {
            self.messages
                .push(ChatMessage::system(ANSWER_NOW_PROMPT.trim()));
        }
    }

    /// After a round: what the turn makes of it. False when the turn is over.
    fn feed_back(&mut self, t: &mut Turn, round: RoundEnd) -> bool {
        match t.after_round(&round) {
            AfterRound::Cancelled => {
                t.sum.stats.finish_reason = aha_protocol::FinishReason::Cancelled;
                false
            }
            AfterRound::Stop(why) => {
                let steps = t.steps();
                self.stop_turn(&mut t.sum, why, steps);
                false
            }
            AfterRound::LeaveOut => {
                // Leave the round out of what the model sees (the events showed it) and have it
                // answer from the results it already has: small models otherwise loop, feeding
                // each result back into another call.
                self.messages.truncate(round.start);
                self.emit(Event::Notice {
                    message: format!(
                        "{} returned the same result as before; asking the model to answer from it",
                        round.first_name
                    ),
                });
                true
            }
            AfterRound::Continue => true,
        }
    }

    /// Ends a turn early: `why` becomes its finish reason, and
    /// a notice says what happened.
    fn stop_turn(&self, sum: &mut TurnSum, why: EarlyStop, steps: usize) {
        sum.stats.finish_reason = why.reason();
        self.emit(Event::Notice {
            message: match why {
                EarlyStop::StepLimit => {
                    format!("stopped after {steps} steps (the step limit); ask again to continue")
                }
                EarlyStop::RepeatedCall => {
                    "stopped: the model kept repeating the same tool call; its result is above"
                        .into()
                }
            },
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn native_calls_join_the_parsed_ones_and_bad_arguments_are_malformed() {
        let mut r = Reading::new("", "Let me look.".into(), true, Some(&["read_file"]));
        r.adopt_native(vec![
            ("read_file".into(), serde_json::json!({"path": "a.txt"})),
            ("read_file".into(), serde_json::json!("{oops")),
            ("read_file".into(), serde_json::json!([1])),
        ]);
        assert_eq!(r.parsed.calls.len(), 1);
        assert_eq!(r.parsed.calls[0].arguments["path"], "a.txt");
        let reasons: Vec<&str> = r
            .parsed
            .malformed
            .iter()
            .map(|m| m.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "the arguments are not valid JSON",
                "the arguments must be a JSON object"
            ]
        );
        assert_eq!(r.parsed.text, "Let me look.");
    }

    use super::super::parse::{Call, Malformed};
    use super::super::testkit::{bench, call};
    use super::super::AgentConfig;
    use super::*;
    use aha_protocol::Op;
    use serde_json::json;

    fn parsed(calls: &[(&str, i64)], malformed: usize) -> Parsed {
        Parsed {
            text: "t".into(),
            calls: calls
                .iter()
                .map(|(n, i)| Call {
                    name: n.to_string(),
                    arguments: json!({ "i": i }),
                })
                .collect(),
            malformed: (0..malformed)
                .map(|_| Malformed {
                    raw: "{".into(),
                    reason: "bad".into(),
                })
                .collect(),
        }
    }

    fn round(calls: usize, fed_back: usize, redundant: usize) -> RoundEnd {
        RoundEnd {
            start: 1,
            calls,
            fed_back,
            redundant,
            first_name: "echo".into(),
            ..RoundEnd::default()
        }
    }

    const GO: Next = Next::Generate { answer_now: None };

    #[test]
    fn steps_allow_calls_until_the_last_which_must_answer() {
        let mut t = Turn::new(3, true);
        assert_eq!(t.next(), GO);
        assert_eq!(t.generated(), 0);
        assert_eq!(t.next(), GO);
        assert_eq!(t.generated(), 1);
        assert_eq!(
            t.next(),
            Next::Generate {
                answer_now: Some(EarlyStop::StepLimit)
            }
        );
        assert_eq!(t.generated(), 2);
        assert_eq!(t.next(), Next::Stop(EarlyStop::StepLimit));
    }

    #[test]
    fn one_step_may_call_and_then_stops_and_zero_steps_is_one() {
        for steps in [0, 1] {
            let mut t = Turn::new(steps, true);
            assert_eq!(t.steps(), 1);
            assert_eq!(t.next(), GO, "a first step that is also the last may call");
            t.generated();
            assert_eq!(t.next(), Next::Stop(EarlyStop::StepLimit));
        }
    }

    #[test]
    fn without_insisting_the_last_step_may_still_call() {
        let mut t = Turn::new(2, false);
        t.generated();
        assert_eq!(t.next(), GO);
        t.generated();
        assert_eq!(t.next(), Next::Stop(EarlyStop::StepLimit));
    }

    #[test]
    fn a_reply_without_calls_is_the_answer_even_when_told_to_answer() {
        let mut t = Turn::new(8, true);
        assert_eq!(t.reply(&parsed(&[], 0), None), Reply::Answer);
        assert_eq!(
            t.reply(&parsed(&[], 0), Some(EarlyStop::StepLimit)),
            Reply::Answer
        );
    }

    #[test]
    fn calling_when_told_to_answer_stops_for_that_reason() {
        let mut t = Turn::new(8, true);
        let p = parsed(&[("echo", 1)], 0);
        assert_eq!(
            t.reply(&p, Some(EarlyStop::StepLimit)),
            Reply::CalledAnyway(EarlyStop::StepLimit)
        );
        let p = parsed(&[], 1);
        assert_eq!(
            t.reply(&p, Some(EarlyStop::RepeatedCall)),
            Reply::CalledAnyway(EarlyStop::RepeatedCall)
        );
    }

    #[test]
    fn only_calls_made_before_insist_on_an_answer_from_then_on() {
        let mut t = Turn::new(8, true);
        let p = parsed(&[("echo", 1)], 0);
        assert_eq!(t.reply(&p, None), Reply::Run);
        assert!(t.repeats.first_time(&p.calls[0]));
        assert_eq!(t.next(), GO);
        assert_eq!(t.reply(&p, None), Reply::Repeated);
        let insisting = Next::Generate {
            answer_now: Some(EarlyStop::RepeatedCall),
        };
        assert_eq!(t.next(), insisting);
        t.generated();
        assert_eq!(t.next(), insisting, "for the rest of the turn");
        for _ in 0..8 {
            t.generated();
        }
        assert_eq!(t.next(), insisting, "even past the step limit");
    }

    #[test]
    fn a_repeat_with_a_new_or_malformed_call_runs_and_without_insisting_every_call_runs() {
        let mut t = Turn::new(8, true);
        let p = parsed(&[("echo", 1)], 0);
        t.repeats.first_time(&p.calls[0]);
        assert_eq!(
            t.reply(&parsed(&[("echo", 1), ("echo", 2)], 0), None),
            Reply::Run
        );
        assert_eq!(t.reply(&parsed(&[("echo", 1)], 1), None), Reply::Run);
        let mut t = Turn::new(8, false);
        t.repeats.first_time(&p.calls[0]);
        assert_eq!(t.reply(&p, None), Reply::Run);
        assert_eq!(t.next(), GO);
    }

    #[test]
    fn after_a_round_cancel_comes_first() {
        let mut t = Turn::new(8, true);
        let mut r = round(1, 1, 1);
        r.cancelled = true;
        assert_eq!(t.after_round(&r), AfterRound::Cancelled);
        assert_eq!(t.next(), GO);
    }

    #[test]
    fn a_round_of_only_repeated_results_is_left_out_and_the_model_must_answer() {
        let mut t = Turn::new(8, true);
        assert_eq!(t.after_round(&round(2, 2, 1)), AfterRound::Continue);
        assert_eq!(
            t.after_round(&round(2, 3, 2)),
            AfterRound::Continue,
            "a malformed call's result is news"
        );
        assert_eq!(t.after_round(&round(0, 1, 0)), AfterRound::Continue);
        assert_eq!(t.next(), GO);
        assert_eq!(t.after_round(&round(2, 2, 2)), AfterRound::LeaveOut);
        assert_eq!(
            t.next(),
            Next::Generate {
                answer_now: Some(EarlyStop::RepeatedCall)
            }
        );
    }

    #[test]
    fn without_insisting_the_second_repeat_stops_the_turn() {
        let mut t = Turn::new(8, false);
        let c = &parsed(&[("echo", 1)], 0).calls[0];
        t.repeats.first_time(c);
        t.repeats.first_time(c);
        assert_eq!(t.after_round(&round(1, 1, 1)), AfterRound::Continue);
        t.repeats.first_time(c);
        assert_eq!(
            t.after_round(&round(1, 1, 0)),
            AfterRound::Stop(EarlyStop::RepeatedCall)
        );
    }

    #[test]
    fn a_reading_wraps_reasoning_and_parses_calls_only_when_offered_and_ok() {
        let text = call("echo", "{}");
        let r = Reading::new("  why \n", format!("Look.{text}"), true, Some(&["echo"]));
        assert_eq!(r.think, "<think>\nwhy\n</think>\n\n");
        assert_eq!(r.parsed.calls.len(), 1);
        assert_eq!(r.text_message().content, "<think>\nwhy\n</think>\n\nLook.");
        assert_eq!(
            r.answer_message().content,
            format!("<think>\nwhy\n</think>\n\nLook.{text}")
        );
        assert_eq!(r.answer_message().role, aha_protocol::Role::Assistant);
        for (ok, names) in [(false, Some(&["echo"][..])), (true, None)] {
            let r = Reading::new(" ", text.clone(), ok, names);
            assert_eq!(r.think, "");
            assert!(r.parsed.calls.is_empty() && r.parsed.malformed.is_empty());
            assert_eq!(r.parsed.text, text);
        }
    }

    #[test]
    fn the_sum_keeps_the_first_timing_the_last_reason_and_adds_the_counts() {
        let mut s = TurnSum::default();
        let st = |ttft, answer, decode, reason: &str| TurnStats {
            ttft_ms: ttft,
            prefill_tok_s: ttft * 2.0,
            prompt_tokens: answer * 10,
            prefilled_tokens: 1,
            thinking_tokens: 2,
            answer_tokens: answer,
            decode_tok_s: decode,
            finish_reason: aha_protocol::FinishReason::from_name(reason),
            drafted_tokens: 5,
            accepted_tokens: answer,
            forks: Some(answer),
            min_group_confidence: Some(decode as f32),
        };
        s.add(st(5.0, 3, 7.0, "stop"), vec![1]);
        s.add(st(9.0, 4, 0.0, "length"), vec![2, 3]);
        assert_eq!(s.stats, {
            let mut want = st(5.0, 7, 7.0, "length");
            want.prompt_tokens = 40;
            want.prefilled_tokens = 2;
            want.thinking_tokens = 4;
            want.drafted_tokens = 10;
            // forks: 3 + 4; the lower of the two confidences.
            want.min_group_confidence = Some(0.0);
            want
        });
        assert_eq!(s.tokens, vec![1, 2, 3]);
    }

    #[test]
    fn the_answer_now_message_follows_tool_results_only() {
        let mut b = bench(&[], AgentConfig::default(), true);
        b.agent.messages.push(ChatMessage::user("q"));
        b.agent.tell_to_answer_now();
        assert_eq!(b.agent.messages.len(), 1);
        b.agent.messages.push(ChatMessage::tool("r"));
        b.agent.tell_to_answer_now();
        assert_eq!(b.agent.messages.len(), 3);
        assert_eq!(b.agent.messages[2].content, ANSWER_NOW_PROMPT.trim());
        assert!(b.take().is_empty(), "no events");
    }

    #[test]
    fn feeding_back_a_left_out_round_drops_its_messages_and_says_so() {
        let mut b = bench(&[], AgentConfig::default(), true);
        for role in ["user", "assistant", "tool"] {
            b.agent
                .messages
                .push(ChatMessage::new(aha_protocol::Role::parse(role), role));
        }
        let mut t = Turn::new(8, true);
        assert!(b.agent.feed_back(&mut t, round(1, 1, 1)));
        assert_eq!(b.agent.messages.len(), 1);
        let ev = b.take();
        assert!(
            matches!(&ev[..], [Event::Notice { message }] if message == "echo returned the same result as before; asking the model to answer from it"),
            "{ev:?}"
        );
        assert!(b.agent.feed_back(&mut t, round(1, 1, 0)), "go on");
        let mut r = round(1, 1, 0);
        r.cancelled = true;
        assert!(!b.agent.feed_back(&mut t, r));
        assert_eq!(
            t.sum.stats.finish_reason,
            aha_protocol::FinishReason::Cancelled
        );
        assert!(b.take().is_empty(), "a cancel says nothing more");
    }

    #[test]
    fn a_turn_starts_with_clear_controls_and_a_new_undo_group() {
        let mut b = bench(&["hi"], AgentConfig::default(), false);
        b.agent.ctrl.cancel();
        b.agent.ctrl.pause();
        b.agent.turns.push(0);
        b.agent.start_turn(Some(0), "pre");
        assert!(!b.agent.ctrl.cancelled() && !b.agent.ctrl.is_paused());
        assert_eq!(b.agent.tool_turn, 1);
        assert_eq!(
            b.take(),
            vec![Event::TurnStarted {
                turn: 0,
                branch_of: Some(0),
                prefix: "pre".into()
            }]
        );
        assert!(b.agent.in_turn.get());
        let ev = b.handle(Op::UserMessage {
            text: "q".into(),
            turn_id: None,
        });
        assert_eq!(b.agent.tool_turn, 2);
        assert!(matches!(ev.last(), Some(Event::TurnFinished { .. })));
        assert!(!b.agent.in_turn.get());
    }

    #[test]
    fn stopping_a_turn_sets_its_reason_and_says_why() {
        let b = bench(&[], AgentConfig::default(), false);
        let mut sum = TurnSum::default();
        b.agent.stop_turn(&mut sum, EarlyStop::StepLimit, 3);
        assert_eq!(
            sum.stats.finish_reason,
            aha_protocol::FinishReason::StepLimit
        );
        b.agent.stop_turn(&mut sum, EarlyStop::RepeatedCall, 3);
        assert_eq!(
            sum.stats.finish_reason,
            aha_protocol::FinishReason::RepeatedCall
        );
        let notices: Vec<_> = b
            .take()
            .into_iter()
            .map(|e| match e {
                Event::Notice { message } => message,
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(
            notices,
            [
                "stopped after 3 steps (the step limit); ask again to continue",
                "stopped: the model kept repeating the same tool call; its result is above"
            ]
        );
    }
}
