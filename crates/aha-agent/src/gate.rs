//! Holds back answer text that may be a tool call, so a person sees a tool card instead of the
//! call's raw JSON. Prose before a call streams as it comes; the call itself (from `<tool_call>`,
//! DeepSeek's call tokens, or a reply that opens with `{` or a ```json fence) is held until the
//! generation ends, then dropped if it parsed as a call and released unchanged if it did not.

use aha_protocol::Event;

/// Where a call may begin inside prose.
const MARKERS: [&str; 3] = [
    "<tool_call>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁call▁begin｜>",
];

/// How a reply that is nothing but a call may begin.
const JSON_FENCE: &str = "```json";

#[derive(Default)]
pub struct AnswerGate {
    /// Answer deltas not yet sent, in order.
    held: Vec<Event>,
    /// Their text, concatenated.
    held_text: String,
    /// A call has begun: hold everything until the end.
    holding: bool,
    /// Text other than whitespace has gone out.
    sent_text: bool,
}

fn text_of(e: &Event) -> &str {
    match e {
        Event::AnswerDelta { text, .. } => text,
        _ => "",
    }
}

impl AnswerGate {
    /// Takes one answer delta; sends on what cannot be part of a call.
    pub fn push(&mut self, e: Event, send: &mut impl FnMut(Event)) {
        self.held_text.push_str(text_of(&e));
        self.held.push(e);
        if self.holding {
            return;
        }
        if !self.sent_text {
            let lead = self.held_text.trim_start();
            if lead.starts_with('{') || lead.starts_with(JSON_FENCE) {
                self.holding = true;
                return;
            }
            if !lead.is_empty() && JSON_FENCE.starts_with(lead) {
                return; // "`", "``", "```j"…: not yet known
            }
        }
        if let Some(at) = MARKERS.iter().filter_map(|m| self.held_text.find(m)).min() {
            self.release(at, send);
            self.holding = true;
            return;
        }
        // Keep a tail that could still grow into a marker.
        let t = &self.held_text;
        let keep = MARKERS
            .iter()
            .flat_map(|m| {
                (1..m.len())
                    .filter(|&k| m.is_char_boundary(k) && t.ends_with(&m[..k]))
                    .max()
            })
            .max()
            .unwrap_or(0);
        self.release(self.held_text.len() - keep, send);
    }

    /// Sends the first `upto` bytes of held text (splitting a delta if need be).
    fn release(&mut self, upto: usize, send: &mut impl FnMut(Event)) {
        if upto == 0 {
            return;
        }
        let mut left = upto;
        let mut rest = Vec::new();
        for e in std::mem::take(&mut self.held) {
            let n = text_of(&e).len();
            if left == 0 {
                rest.push(e);
            } else if n <= left {
                left -= n;
                self.note_sent(text_of(&e));
                send(e);
            } else if let Event::AnswerDelta {
                text,
                logprob,
                entropy,
                top,
            } = e
            {
                let (a, b) = text.split_at(left);
                left = 0;
                self.note_sent(a);
                send(Event::AnswerDelta {
                    text: a.to_string(),
                    logprob,
                    entropy,
                    top,
                });
                rest.push(Event::AnswerDelta {
                    text: b.to_string(),
                    logprob,
                    entropy,
                    top: Vec::new(),
                });
            }
        }
        self.held = rest;
        self.held_text = self.held_text.split_off(upto);
    }

    fn note_sent(&mut self, t: &str) {
        if !t.trim().is_empty() {
            self.sent_text = true;
        }
    }

    /// The generation ended. `is_call` says whether the held text parses as tool calls (and
    /// gives the prose around them); held text that is not a call goes out unchanged.
    pub fn finish(
        mut self,
        is_call: impl FnOnce(&str) -> Option<String>,
        send: &mut impl FnMut(Event),
    ) {
        if self.held.is_empty() {
            return;
        }
        match is_call(&self.held_text) {
            Some(prose) => {
                if !prose.trim().is_empty() {
                    send(Event::AnswerDelta {
                        text: prose,
                        logprob: None,
                        entropy: None,
                        top: Vec::new(),
                    });
                }
            }
            None => {
                let n = self.held_text.len();
                self.release(n, send);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(t: &str) -> Event {
        Event::AnswerDelta {
            text: t.into(),
            logprob: Some(-0.5),
            entropy: None,
            top: Vec::new(),
        }
    }

    fn run(parts: &[&str], call: bool) -> (Vec<String>, String) {
        let mut g = AnswerGate::default();
        let mut live = Vec::new();
        for p in parts {
            g.push(d(p), &mut |e| live.push(text_of(&e).to_string()));
        }
        let before = live.len();
        g.finish(
            |t| call.then(|| t.split("<tool_call>").next().unwrap_or("").to_string()),
            &mut |e| live.push(text_of(&e).to_string()),
        );
        let after: String = live[before..].concat();
        live.truncate(before);
        (live, after)
    }

    #[test]
    fn plain_prose_streams_delta_by_delta() {
        let (live, after) = run(&["The ", "answer ", "is 4."], false);
        assert_eq!(live, ["The ", "answer ", "is 4."]);
        assert_eq!(after, "");
    }

    #[test]
    fn a_tagged_call_is_held_and_dropped_while_the_prose_before_it_streams() {
        let (live, after) = run(
            &[
                "Let me look.",
                "\n<tool",
                "_call>",
                "{\"name\":",
                "\"ls\"}",
                "</tool_call>",
            ],
            true,
        );
        assert_eq!(live.concat(), "Let me look.\n");
        assert_eq!(after, "", "the call text never goes out");
    }

    #[test]
    fn a_reply_that_opens_with_json_is_held_and_released_when_it_is_no_call() {
        let (live, after) = run(&["{\"a\"", ": 1}"], false);
        assert!(live.is_empty());
        assert_eq!(after, "{\"a\": 1}");
    }

    #[test]
    fn a_lone_tag_prefix_is_released_once_it_cannot_be_a_tag() {
        let (live, _) = run(&["a <to", "ast>"], false);
        assert_eq!(live.concat(), "a <toast>");
    }

    #[test]
    fn a_python_fence_is_not_held() {
        let (live, _) = run(&["``", "`py", "thon\nprint(1)\n"], false);
        assert_eq!(live.concat(), "```python\nprint(1)\n");
    }

    #[test]
    fn a_split_delta_keeps_its_logprob() {
        let mut g = AnswerGate::default();
        let mut out = Vec::new();
        g.push(d("ok<tool_call>{"), &mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0], Event::AnswerDelta { text, logprob: Some(_), .. } if text == "ok")
        );
    }
}
