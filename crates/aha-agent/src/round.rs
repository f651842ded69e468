//! A round of tool calls: the reply that made them goes into the conversation, each call is
//! approved (or not) and run, each result is shown and fed back as a `tool` message, and each
//! malformed call is answered with how to write it.

use super::parse::{Call, Malformed};
use super::repeats::{already_called, RepeatGuard};
use super::turn::Reading;
use super::Agent;
use aha_engine::template::ChatMessage;
use aha_protocol::Event;
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
        self.note_search(&call.name, ok, &output);
        let mut m = ChatMessage::tool(output);
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
        let mut m = ChatMessage::tool(output);
        m.tool_call_id = Some(id);
        self.messages.push(m);
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::Policy;
    use super::super::testkit::{bench, call};
    use super::super::AgentConfig;
    use super::*;

    fn reading(text: &str) -> Reading {
        Reading::new("", text.to_string(), true, Some(&["echo", "write", "exec"]))
    }

    fn full_auto() -> AgentConfig {
        AgentConfig {
            policy: Policy::FullAuto,
            ..AgentConfig::default()
        }
    }

    #[test]
    fn ids_number_the_turn_the_step_and_the_call() {
        assert_eq!(call_ids(3, 1, 2), ["call_3_1_0", "call_3_1_1"]);
        assert!(call_ids(1, 0, 0).is_empty());
    }

    #[test]
    fn the_calls_message_carries_the_text_and_each_call_with_its_id() {
        let r = reading(&format!("So.{}", call("echo", "{\"a\": 1}")));
        let m = calls_message(&r, &call_ids(1, 0, 1));
        assert_eq!((m.role.as_str(), m.content.as_str()), ("assistant", "So."));
        assert_eq!(
            m.tool_calls,
            Some(json!([{"id": "call_1_0_0", "type": "function",
                         "function": {"name": "echo", "arguments": {"a": 1}}}]))
        );
    }

    #[test]
    fn a_round_runs_each_call_and_feeds_back_each_result() {
        let mut b = bench(&[], full_auto(), true);
        b.agent.tool_turn = 4;
        b.agent.messages.push(ChatMessage::user("q"));
        let mut g = RepeatGuard::default();
        let text = format!("{}{}", call("echo", "{}"), call("exec", "{\"out\": \"x\"}"));
        let end = b.agent.run_round(&mut g, 2, reading(&text));
        assert_eq!(
            end,
            RoundEnd {
                start: 1,
                cancelled: false,
                calls: 2,
                fed_back: 2,
                redundant: 0,
                first_name: "echo".into()
            }
        );
        let roles: Vec<_> = b.agent.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool", "tool"]);
        assert_eq!(b.agent.messages[3].content, "x");
        assert_eq!(
            b.agent.messages[3].tool_call_id.as_deref(),
            Some("call_4_2_1")
        );
        assert_eq!(b.agent.messages[3].name.as_deref(), Some("exec"));
        let kinds: Vec<_> = b
            .take()
            .into_iter()
            .map(|e| match e {
                Event::ToolCall { id, .. } => format!("call {id}"),
                Event::ToolResult { id, ok, .. } => format!("result {id} {ok}"),
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "call call_4_2_0",
                "result call_4_2_0 true",
                "call call_4_2_1",
                "result call_4_2_1 true"
            ]
        );
        assert_eq!(b.ran.lock().unwrap().len(), 2);
    }

    #[test]
    fn repeats_are_answered_not_run_and_repeated_results_are_counted() {
        let mut b = bench(&[], full_auto(), true);
        let mut g = RepeatGuard::default();
        let echo = call("echo", "{\"i\": 1}");
        let end = b.agent.run_round(&mut g, 0, reading(&echo));
        assert_eq!((end.redundant, end.fed_back), (0, 1));
        let text = format!("{echo}{}", call("echo", "{\"i\": 2}"));
        let end = b.agent.run_round(&mut g, 1, reading(&text));
        assert_eq!(end.calls, 2);
        assert_eq!(
            end.redundant, 1,
            "i=2 printed what i=1 did; the repeat is not counted"
        );
        assert_eq!(g.repeats(), 1);
        assert_eq!(b.ran.lock().unwrap().len(), 2, "the repeat did not run");
        let repeat = &b.agent.messages[3];
        assert_eq!(repeat.content, already_called("echo"));
    }

    #[test]
    fn malformed_calls_are_answered_after_the_calls() {
        let mut b = bench(&[], full_auto(), true);
        let text = format!("<tool_call>{{bad</tool_call>{}", call("echo", "{}"));
        let r = reading(&text);
        assert_eq!(r.parsed.malformed.len(), 1);
        let bad = r.parsed.malformed[0].clone();
        let end = b.agent.run_round(&mut RepeatGuard::default(), 0, r);
        assert_eq!((end.calls, end.fed_back), (1, 2));
        let last = b.agent.messages.last().unwrap();
        assert_eq!(last.content, malformed_output(&bad));
        assert_eq!(last.tool_call_id.as_deref(), Some("bad_0_0_0"));
        assert_eq!(last.name, None);
        let ev = b.take();
        assert!(
            matches!(&ev[2], Event::ToolCall { name, arguments, .. } if name == "(malformed)" && arguments == &Value::String("{bad".into())),
            "{ev:?}"
        );
        assert!(matches!(
            &ev[3],
            Event::ToolResult {
                ok: false,
                duration_ms: 0,
                ..
            }
        ));
    }

    #[test]
    fn a_cancel_skips_the_remaining_calls_but_not_the_malformed_ones() {
        let mut b = bench(&[], full_auto(), true);
        let text = format!(
            "{}{}<tool_call>{{bad</tool_call>",
            call("exec", "{\"cancel\": true}"),
            call("echo", "{}")
        );
        let end = b
            .agent
            .run_round(&mut RepeatGuard::default(), 0, reading(&text));
        assert!(end.cancelled);
        assert_eq!((end.calls, end.fed_back), (2, 2));
        assert_eq!(b.ran.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_malformed_message_says_how_to_write_a_call() {
        let bad = Malformed {
            raw: "{".into(),
            reason: "not valid JSON".into(),
        };
        assert_eq!(
            malformed_output(&bad),
            "Your tool call could not be read: not valid JSON. Write it again as <tool_call>{\"name\": \"<tool>\", \"arguments\": {...}}</tool_call> with valid JSON."
        );
    }
}
