//! A round of tool calls: the reply that made them goes into the conversation, each call is
//! approved (or not) and run, each result is shown and fed back as a `tool` message, and each
//! malformed call is answered with how to write it.

use super::parse::{Call, Malformed};
use super::repeats::{already_called, RepeatGuard};
use super::turn::Reading;
use super::Agent;
use crate::engine::template::ChatMessage;
use crate::protocol::Event;
use serde_json::{json, Value};

/// What a round came to, for the turn to decide what follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RoundEnd {
    /// Where the round's messages begin in the conversation.
    pub start: usize,
    /// The turn was cancelled by the end of the round.
    pub cancelled: bool,
    /// Calls the model made (malformed ones not counted).
    pub calls: usize,
    /// `tool` messages the round added (results of calls and of malformed calls).
    pub fed_back: usize,
    /// Calls whose result repeated an earlier one word for word.
    pub redundant: usize,
    /// The first call's tool, for notices.
    pub first_name: String,
}

/// The ids of a round's calls: `call_<turn>_<step>_<k>`.
pub(super) fn call_ids(tool_turn: u64, step: usize, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| format!("call_{tool_turn}_{step}_{k}"))
        .collect()
}

/// The assistant message that made the calls: its text, and the calls with their ids.
pub(super) fn calls_message(reading: &Reading, ids: &[String]) -> ChatMessage {
    let mut msg = reading.text_message();
    msg.tool_calls = Some(Value::Array(
        reading
            .parsed
            .calls
            .iter()
            .zip(ids)
            .map(|(c, id)| {
                json!({"id": id, "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect(),
    ));
    msg
}

/// What the model reads for a call it wrote that could not be read.
pub(super) fn malformed_output(bad: &Malformed) -> String {
    format!(
        "Your tool call could not be read: {}. Write it again as <tool_call>{{\"name\": \"<tool>\", \"arguments\": {{...}}}}</tool_call> with valid JSON.",
        bad.reason
    )
}

impl Agent {
    /// Runs the round of calls in `reading`, the reply of generation `step`: records the reply,
    /// runs each call in order until a cancel, then answers the malformed ones.
    pub(super) fn run_round(
        &mut self,
        repeats: &mut RepeatGuard,
        step: usize,
        reading: Reading,
    ) -> RoundEnd {
        let ids = call_ids(self.tool_turn, step, reading.parsed.calls.len());
        let start = self.messages.len();
        self.messages.push(calls_message(&reading, &ids));
        let calls = reading.parsed.calls;
        let mut end = RoundEnd {
            start,
            calls: calls.len(),
            first_name: calls.first().map(|c| c.name.clone()).unwrap_or_default(),
            ..RoundEnd::default()
        };
        for (call, id) in calls.into_iter().zip(ids) {
            if self.ctrl.cancelled() {
                break;
            }
            if self.run_call(repeats, call, id) {
                end.redundant += 1;
            }
        }
        for (k, bad) in reading.parsed.malformed.into_iter().enumerate() {
            self.answer_malformed(format!("bad_{}_{step}_{k}", self.tool_turn), bad);
        }
        end.fed_back = self.messages.len() - start - 1;
        end.cancelled = self.ctrl.cancelled();
        end
    }

    /// Shows, runs (unless it repeats an earlier call) and feeds back one call. True when its
    /// result only repeats an earlier one.
    fn run_call(&mut self, repeats: &mut RepeatGuard, call: Call, id: String) -> bool {
        self.emit(Event::ToolCall {
            id: id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        });
        let t0 = std::time::Instant::now();
        let (ok, output, redundant) = if repeats.first_time(&call) {
            let (ok, out) = self.call(&id, &call.name, call.arguments);
            let redundant = repeats.same_result(&call.name, ok, &out);
            (ok, out, redundant)
        } else {
            (false, already_called(&call.name), false)
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
        redundant
    }

    /// Shows a call that could not be read, and tells the model how to write it.
    fn answer_malformed(&mut self, id: String, bad: Malformed) {
        let output = malformed_output(&bad);
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
}
