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
use crate::engine::template::ChatMessage;
use crate::protocol::{Event, TurnStats};
use std::sync::atomic::Ordering;

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
        if s.decode_tok_s > 0.0 {
            t.decode_tok_s = s.decode_tok_s;
        }
        t.finish_reason = s.finish_reason;
        self.tokens.extend(tokens);
    }
}

/// What the turn does before a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Generate. `answer_now` names why the model must answer without calling (`step_limit`,
    /// `repeated_call`); `None` while calls are allowed.
    Generate { answer_now: Option<&'static str> },
    /// End the turn early with this finish reason.
    Stop(&'static str),
}

/// What a parsed reply makes of the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// No calls: the reply is the answer, and the turn is over.
    Answer,
    /// Told to answer, it called anyway (an engine that cannot forbid calls): stop for this reason.
    CalledAnyway(&'static str),
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
    Stop(&'static str),
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
    insist: Option<&'static str>,
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
            return Next::Stop("step_limit");
        }
        // The last step (after tool rounds), or a repeated call, gets no more calls: the model
        // answers from the results it has instead of being cut off mid-investigation.
        let last = self.step + 1 >= self.steps;
        let answer_now = self
            .insist
            .or((last && self.step > 0).then_some("step_limit"))
            .filter(|_| self.insist_on);
        Next::Generate { answer_now }
    }

    /// A generation ran; returns its index in the turn (it numbers the round's call ids).
    pub fn generated(&mut self) -> usize {
        self.step += 1;
        self.step - 1
    }

    /// After parsing a reply generated under `answer_now`: what to do with it.
    pub fn reply(&mut self, parsed: &Parsed, answer_now: Option<&'static str>) -> Reply {
        if parsed.calls.is_empty() && parsed.malformed.is_empty() {
            Reply::Answer
        } else if let Some(why) = answer_now {
            Reply::CalledAnyway(why)
        } else if self.insist_on
            && parsed.malformed.is_empty()
            && self.repeats.all_made(&parsed.calls)
        {
            self.insist = Some("repeated_call");
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
            AfterRound::Stop("repeated_call")
        } else if self.insist_on
            && round.calls > 0
            && round.redundant == round.calls
            && round.fed_back == round.calls
        {
            self.insist = Some("repeated_call");
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

    /// The reply as the conversation keeps an answer: reasoning and the whole answer.
    pub fn answer_message(&self) -> ChatMessage {
        ChatMessage::new("assistant", format!("{}{}", self.think, self.answer))
    }

    /// The reply as the conversation keeps a reply with calls: reasoning and the text around them.
    pub fn text_message(&self) -> ChatMessage {
        ChatMessage::new("assistant", format!("{}{}", self.think, self.parsed.text))
    }
}

impl Agent {
    /// One assistant turn: generate from the conversation (continuing `prefix` when branching),
    /// run the tools it calls and generate again, until it answers, the step limit, or cancel.
    pub(super) fn turn(&mut self, branch_of: Option<usize>, prefix: String) {
        self.start_turn(branch_of, &prefix);
        let specs = self.tools.as_ref().map(|t| t.specs()).unwrap_or_default();
        let names: Vec<String> = crate::tools::spec_names(&specs);
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
            let reading = Reading::new(&reasoning, answer, ok, offered);
            match t.reply(&reading.parsed, answer_now) {
                Reply::Answer => {
                    self.messages.push(reading.answer_message());
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
        self.emit(Event::TurnFinished {
            stats: t.sum.stats,
            tokens: t.sum.tokens,
        });
    }

    /// Clears the controls, counts the turn for the tools' undo, and says the turn has started.
    fn start_turn(&mut self, branch_of: Option<usize>, prefix: &str) {
        self.ctrl.cancel.store(false, Ordering::SeqCst);
        self.ctrl.paused.store(false, Ordering::SeqCst);
        self.ctrl.step_to_boundary.store(false, Ordering::SeqCst);
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
        if self.messages.last().is_some_and(|m| m.role == "tool") {
            self.messages
                .push(ChatMessage::new("system", ANSWER_NOW_PROMPT.trim()));
        }
    }

    /// After a round: what the turn makes of it. False when the turn is over.
    fn feed_back(&mut self, t: &mut Turn, round: RoundEnd) -> bool {
        match t.after_round(&round) {
            AfterRound::Cancelled => {
                t.sum.stats.finish_reason = "cancelled".into();
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
}
