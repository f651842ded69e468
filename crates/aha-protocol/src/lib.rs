//! The types that cross between the UI (or `aha run --json`) and the agent/engine: `Op` in, `Event` out.

pub mod chat;
pub mod panic;
pub mod sampling;
pub mod settings;
pub mod tool;
pub mod trace;

pub use chat::{ChatMessage, Role};
pub use settings::{FinishReason, Policy, ThinkMode, TurnId};
pub use tool::ToolSpec;
pub use trace::{LoopAction, TopToken, TraceOptions};

use serde::{Deserialize, Serialize};

/// Statistics of one finished (or stopped) turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnStats {
    /// Tokens in the rendered prompt.
    pub prompt_tokens: usize,
    /// Of those, tokens that had to be prefilled (the rest came from the KV cache).
    pub prefilled_tokens: usize,
    /// Tokens generated inside the reasoning block.
    pub thinking_tokens: usize,
    /// Tokens generated after the reasoning.
    pub answer_tokens: usize,
    /// Time from the request to the first generated token, in milliseconds.
    pub ttft_ms: f64,
    /// Prompt processing speed (prefilled tokens per second).
    pub prefill_tok_s: f64,
    /// Generation speed (generated tokens per second, after the first).
    pub decode_tok_s: f64,
    /// Why generation ended (see [`FinishReason`] for the complete set).
    pub finish_reason: FinishReason,
    /// Tokens speculative decoding proposed (`--speculate ngram`); 0 without it.
    #[serde(default)]
    pub drafted_tokens: usize,
    /// Of those, tokens the model's own choice confirmed (each saved a forward pass).
    #[serde(default)]
    pub accepted_tokens: usize,
    /// Forking tokens among those sampled: entropy in the trace's top share and above the
    /// floor ([`TraceOptions::fork_share`], [`TraceOptions::fork_min_nats`]). `None` when the
    /// engine reports no entropies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forks: Option<usize>,
    /// The lowest group confidence over the turn (DeepConf: the mean negative log-probability
    /// of the best 5 tokens, averaged over windows of [`TraceOptions::confidence_window`]
    /// tokens). Low values flag a weak trace. `None` when the engine reports no alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_group_confidence: Option<f32>,
}

/// What the agent/engine reports, in order. Serialised as one JSON object per line with a `"type"` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A piece of the model's reasoning.
    ThinkingDelta {
        text: String,
        /// Log-probability of the token that produced this text (natural log).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<f32>,
        /// Entropy (nats) of the distribution the token was drawn from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entropy: Option<f32>,
        /// The best tokens the model weighed at this position, the chosen one among them
        /// (`--top-logprobs N`; absent without it).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        top: Vec<TopToken>,
    },
    /// A piece of the answer.
    AnswerDelta {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logprob: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entropy: Option<f32>,
        /// The best tokens the model weighed at this position, the chosen one among them
        /// (`--top-logprobs N`; absent without it).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        top: Vec<TopToken>,
    },
    /// The model asked for a tool.
    ToolCall {
        id: String,
        name: String,
        arguments: serde_json::Value,
    },
    /// A tool call needs a person's approval before it runs.
    ApprovalRequest {
        id: String,
        name: String,
        summary: String,
    },
    /// A tool finished.
    ToolResult {
        id: String,
        ok: bool,
        output: String,
        duration_ms: u64,
    },
    /// The turn ended.
    TurnFinished {
        stats: TurnStats,
        /// The generated token ids, in order (for comparisons with other engines and trace tools).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tokens: Vec<u32>,
    },
    /// Something went wrong; the message is written for a person.
    Error { message: String },
    /// Generation paused between tokens (asked for, or a step reached its boundary).
    Paused,
    /// Generation resumed after a pause.
    Resumed,
    /// A turn began: `turn` counts assistant turns from 0; `branch_of` is set when it regenerates
    /// an earlier turn from a prefix (that prefix is in `prefix`).
    TurnStarted {
        turn: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch_of: Option<usize>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
    },
    /// Something a person should see that is not an error (a retry, a setting changed).
    Notice { message: String },
    /// Research mode searched the documents before the first generation and put these passages
    /// into the prompt (about `tokens` tokens of it).
    Retrieval {
        query: String,
        hits: Vec<Source>,
        tokens: usize,
    },
    /// Research mode checked a citation of the answer, after the answer: whether line `line` of
    /// `path` (with a line either side) states the claim, and why. `attached`: the model wrote
    /// no citation that checks out for the claim, so aha found this line among the passages.
    Citation {
        path: String,
        line: usize,
        ok: bool,
        reason: String,
        #[serde(default, skip_serializing_if = "is_false")]
        attached: bool,
        /// The sentence of the answer it backs.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        claim: String,
        /// What the cited line says (cut to 240 characters).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        quote: String,
    },
    /// Research mode's verdict on the answer, after its citations: `supported` when every claim
    /// has a citation that checks out; `abstained` when the answer says the documents do not
    /// say; `unsupported_numbers` are numbers of the answer that no cited passage states.
    AnswerCheck {
        supported: bool,
        abstained: bool,
        claims: usize,
        supported_claims: usize,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unsupported_numbers: Vec<String>,
    },
    /// The reasoning repeats itself: `text` (a sentence, or a stretch repeated back to back)
    /// has occurred `count` times; `action` is what was done about it (`warn`: nothing;
    /// `stop`: the turn ends; `nudge`: the nudge sentence was written into the reasoning).
    ReasoningLoop {
        count: usize,
        text: String,
        action: LoopAction,
    },
    /// The conversation was compacted to fit the context, before a generation (or by
    /// `Op::Compact`): `elided` old tool results were cut to their head and tail, and the
    /// `summarized_turns` oldest turns were replaced by `summary`, which the model wrote. The
    /// prompt went from `before` to `after` tokens of a `context` of this many. The session log
    /// keeps the full history; only what the model sees is shorter.
    Compacted {
        before: usize,
        after: usize,
        context: usize,
        elided: usize,
        summarized_turns: usize,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        summary: String,
        /// A person asked for it (`/compact`), rather than the context filling.
        #[serde(default, skip_serializing_if = "is_false")]
        manual: bool,
    },
}

impl Event {
    /// How a `compacted` event reads for a person: "conversation compacted: 1900 → 800 tokens
    /// of 2048 (3 tool results cut, 4 turns summarized)"; `None` for any other event.
    pub fn compaction_line(&self) -> Option<String> {
        let Event::Compacted {
            before,
            after,
            context,
            elided,
            summarized_turns,
            ..
        } = self
        else {
            return None;
        };
        let (elided, turns) = (*elided, *summarized_turns);
        let mut what = Vec::new();
        if elided > 0 {
            what.push(format!(
                "{elided} tool {} cut",
                if elided == 1 { "result" } else { "results" }
            ));
        }
        if turns > 0 {
            what.push(format!(
                "{turns} {} summarized",
                if turns == 1 { "turn" } else { "turns" }
            ));
        }
        if what.is_empty() {
            what.push("nothing left to cut".into());
        }
        Some(format!(
            "conversation compacted: {before} → {after} tokens of {context} ({})",
            what.join(", ")
        ))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A passage of the documents that went into a prompt, cited as `[path:line]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub path: String,
    /// The line where the match is (what a citation names).
    pub line: usize,
    pub start_line: usize,
    pub end_line: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub heading: String,
}

impl Source {
    /// How a citation names it: `path:line`.
    pub fn cite(&self) -> String {
        format!("{}:{}", self.path, self.line)
    }
}

/// What the UI asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// A new user message. `turn_id` names the turn it starts, for a later `Cancel`.
    UserMessage {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_id: Option<TurnId>,
    },
    /// Stop a generation, keeping what was produced: the turn `turn_id` (even if it has not
    /// started yet: it then ends as soon as it starts), or, without one, whatever runs now.
    Cancel {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_id: Option<TurnId>,
    },
    /// Pause generation between tokens.
    Pause,
    /// Resume a paused generation.
    Resume,
    /// Answer an approval request. `remember`: approve this tool for the rest of the session.
    Approve {
        id: String,
        approved: bool,
        #[serde(default)]
        remember: bool,
    },
    /// Resume until the next reasoning step boundary (a paragraph break), then pause.
    Step,
    /// Regenerate assistant turn `turn` (0-based, counting assistant turns) from `prefix`: the
    /// reasoning up to a chosen step, plus any text a person inserted. Later turns are dropped
    /// from the agent's conversation (the UI keeps them, side by side).
    Branch {
        turn: usize,
        prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_id: Option<TurnId>,
    },
    /// Thinking for the next turns: `mode` auto | on | off; `budget` closes reasoning after N tokens.
    SetThinking {
        mode: ThinkMode,
        #[serde(default)]
        budget: Option<usize>,
    },
    /// Budget forcing for the next turns: while the reasoning has fewer than `min` tokens, an
    /// attempt to close it is replaced by "Wait" (`None`: off).
    SetThinkMin {
        #[serde(default)]
        min: Option<usize>,
    },
    /// What a loop in the reasoning does from the next turn: off | warn | stop | nudge.
    SetLoops { action: LoopAction },
    /// Approval policy: read-only | ask | auto-edit | full-auto.
    SetPolicy { policy: Policy },
    /// Research mode for the next turns: retrieve from the document index before answering, and
    /// check the answer's citations.
    SetResearch { on: bool },
    /// Forget the conversation.
    Clear,
    /// Restore the files the last turn's tools changed.
    Undo,
    /// Replace the conversation (resuming a session): `messages` as chat messages.
    Restore { messages: Vec<ChatMessage> },
    /// Show, as a `notice`, the diff of every file the tools changed in this session.
    Diff,
    /// Show, as a `notice`, the tools, what each may do, and the approval policy.
    Tools,
    /// Index documents (files or folders) into the workspace's document index; the summary comes
    /// back as a `notice`, and `search_docs` is offered from then on.
    Index { paths: Vec<String> },
    /// Search the document index; the hits come back as a `notice`.
    Search { query: String },
    /// Compact the conversation now: elide old tool results and summarize the turns before the
    /// latest one (a `compacted` event says what changed).
    Compact,
    /// Show, as a `notice`, the MCP servers: each one's state, tools and last error.
    Mcp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_names_are_the_contract() {
        let e = Event::ThinkingDelta {
            text: "hm".into(),
            logprob: None,
            entropy: None,
            top: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"thinking_delta","text":"hm"}"#
        );
        let e = Event::TurnFinished {
            stats: TurnStats::default(),
            tokens: vec![],
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "turn_finished");
        for k in [
            "prompt_tokens",
            "thinking_tokens",
            "answer_tokens",
            "ttft_ms",
            "prefill_tok_s",
            "decode_tok_s",
        ] {
            assert!(v["stats"].get(k).is_some(), "missing {k}");
        }
        let e = Event::Error {
            message: "x".into(),
        };
        assert_eq!(serde_json::to_value(&e).unwrap()["type"], "error");
        let back: Event = serde_json::from_str(r#"{"type":"answer_delta","text":"a"}"#).unwrap();
        assert!(matches!(back, Event::AnswerDelta { .. }));
    }

    #[test]
    fn ops_without_a_turn_id_read_and_write_as_before() {
        // Session logs written before ops carried turn ids must still load, unchanged.
        for (json, op) in [
            (r#"{"type":"cancel"}"#, Op::Cancel { turn_id: None }),
            (
                r#"{"type":"user_message","text":"hi"}"#,
                Op::UserMessage {
                    text: "hi".into(),
                    turn_id: None,
                },
            ),
            (
                r#"{"type":"set_thinking","mode":"on","budget":null}"#,
                Op::SetThinking {
                    mode: ThinkMode::On,
                    budget: None,
                },
            ),
            (
                r#"{"type":"set_policy","policy":"auto-edit"}"#,
                Op::SetPolicy {
                    policy: Policy::AutoEdit,
                },
            ),
        ] {
            assert_eq!(serde_json::from_str::<Op>(json).unwrap(), op);
            assert_eq!(serde_json::to_string(&op).unwrap(), json);
        }
        let with_id = Op::Cancel {
            turn_id: Some(TurnId(7)),
        };
        assert_eq!(
            serde_json::to_string(&with_id).unwrap(),
            r#"{"type":"cancel","turn_id":7}"#
        );
        assert!(serde_json::from_str::<Op>(r#"{"type":"set_policy","policy":"yolo"}"#).is_err());
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

/// The agent as the UI sees it: ops in, events out, and what it runs on. The agent crate
/// implements it for its handle; the UI depends only on this trait.
pub trait AgentLink {
    /// Sends an op to the agent.
    fn send(&mut self, op: Op);
    /// The next event, if one is waiting.
    fn try_recv(&mut self) -> Option<Event>;
    /// The engine's name, device and context length.
    fn info(&self) -> &EngineInfo;
}
