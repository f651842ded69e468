//! Keeping the conversation inside the context. Before a generation whose prompt passes a share
//! of the context ([`AgentConfig::compact_at`](super::AgentConfig::compact_at)), and on
//! `Op::Compact`, the conversation the model sees is compacted, cheapest step first:
//! 1. tool results from before the latest turn are cut to their head and tail;
//! 2. the turns before the latest one become one message: a summary the model writes
//!    (`prompts/compact.md`, after the conversation) and the user's own words from those turns, verbatim;
//! 3. the latest turn's own tool results are cut, oldest first.
//!
//! The latest user message and the tools are never cut. Only the agent's copy of the
//! conversation gets shorter: the UI's transcript and the session log keep all of it.

use super::Agent;
use aha_engine::template::ChatMessage;
use aha_engine::{GenerateRequest, Prompt, ThinkMode};
use aha_protocol::{Event, Role, ToolSpec};

/// The summarizer's instructions.
pub const COMPACT_PROMPT: &str = include_str!("../../../prompts/compact.md");

/// A tool result cut in step 1 keeps this many bytes, head and tail together.
const ELIDED_KEEP: usize = 600;
/// What step 3 cuts the latest turn's results to, in passes.
const CURRENT_KEEPS: [usize; 3] = [1_600, 600, 200];
/// A tool result as the summarizer reads it.
const TRANSCRIPT_RESULT: usize = 1_200;
/// Each of the user's earlier messages kept verbatim is cut to this many bytes.
const KEPT_USER_MESSAGE: usize = 400;
/// What opens the message that stands for the compacted turns.
pub(super) const SUMMARY_HEAD: &str = "[Earlier conversation, compacted to fit the context]";

/// How far one compaction goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    /// Compact down to this many prompt tokens; `None`: as far as steps 1 and 2 go (by hand).
    pub target: Option<usize>,
    /// The most tokens the summary may take.
    pub summary_tokens: usize,
    /// The most bytes the user's kept words may take.
    pub kept_bytes: usize,
}

/// The prompt size at which to compact: `share` of a context of `ctx` tokens.
pub(super) fn trigger(ctx: usize, share: f32) -> usize {
    (ctx as f32 * share.clamp(0.05, 1.0)) as usize
}

/// The budget of a compaction when the part that cannot be cut (system message, tools, the
/// latest user message) takes `floor` tokens and compaction starts at `trigger`: half of the
/// room between them is the target, so a few more rounds fit before the next compaction; the
/// summary and the user's kept words get a share of that half each.
pub(super) fn budget(floor: usize, trigger: usize, by_hand: bool) -> Budget {
    let spare = trigger.saturating_sub(floor);
    Budget {
        target: (!by_hand).then_some(floor + spare / 2),
        summary_tokens: (spare / 4).clamp(48, 1024),
        kept_bytes: (spare / 8 * 3).clamp(160, 8192),
    }
}

/// A request's prompt tokens, estimated for an engine that cannot count them (a remote one): a
/// token per three bytes of ASCII, one per other character (Korean or Chinese text is about a
/// token a character), and a few per message for the template.
pub(super) fn estimate_tokens(req: &GenerateRequest) -> usize {
    fn text(s: &str) -> usize {
        let ascii = s.bytes().filter(u8::is_ascii).count();
        let other = s.chars().filter(|c| !c.is_ascii()).count();
        ascii.div_ceil(3) + other
    }
    let prompt = match &req.prompt {
        Prompt::Chat(msgs) => msgs
            .iter()
            .map(|m| {
                4 + text(&m.content) + m.tool_calls.as_ref().map_or(0, |c| text(&c.to_string()))
            })
            .sum(),
        Prompt::Raw(s) => text(s),
        Prompt::Tokens(t) => t.len(),
    };
    let tools = req
        .tools
        .as_ref()
        .map_or(0, |t| t.iter().map(|v| text(&v.to_string())).sum());
    prompt + tools + req.assistant_prefix.as_deref().map_or(0, text)
}

/// `content` cut to `keep` bytes (head and tail, with how much was cut); `None` when it is
/// about that short already.
fn elide(content: &str, keep: usize) -> Option<String> {
    (content.len() > keep + 64).then(|| aha_tools::cap(content, keep))
}

/// Cuts the long string arguments of an assistant message's calls; whether any was.
fn elide_arguments(calls: &mut serde_json::Value) -> bool {
    let mut cut = false;
    for c in calls.as_array_mut().into_iter().flatten() {
        let args = c
            .pointer_mut("/function/arguments")
            .and_then(|a| a.as_object_mut());
        for v in args.into_iter().flat_map(|a| a.values_mut()) {
            if let Some(e) = v.as_str().and_then(|s| elide(s, ELIDED_KEEP)) {
                *v = serde_json::Value::String(e);
                cut = true;
            }
        }
    }
    cut
}

/// The conversation as the summarizer reads it: who said what, reasoning left out, tool results
/// cut, the instructions aha adds (system messages) skipped.
fn transcript_text(msgs: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in msgs {
        let part = match m.role {
            Role::System | Role::Other(_) => continue,
            Role::User => match m.content.strip_prefix(SUMMARY_HEAD) {
                Some(rest) => format!("Summary of the conversation before this:\n{}", rest.trim()),
                None => format!("User: {}", m.content.trim()),
            },
            Role::Assistant => {
                let mut s = format!(
                    "Assistant: {}",
                    aha_engine::reasoning::strip_reasoning(&m.content).trim()
                );
                for c in m.tool_calls.iter().flat_map(|c| c.as_array().cloned()) {
                    for call in c {
                        let f = &call["function"];
                        s.push_str(&format!(
                            "\n(called {} with {})",
                            f["name"].as_str().unwrap_or("?"),
                            f["arguments"]
                        ));
                    }
                }
                s
            }
            Role::Tool => format!(
                "Tool result ({}): {}",
                m.name.as_deref().unwrap_or("tool"),
                aha_tools::cap(m.content.trim(), TRANSCRIPT_RESULT)
            ),
        };
        out.push_str(&part);
        out.push_str("\n\n");
    }
    out.trim_end().to_string()
}

/// The message that stands for the compacted turns: the summary, then the user's words from
/// them within `budget` bytes (the first message and the latest ones; a marker where some were
/// left out).
fn compacted_message(turns: usize, summary: &str, user_words: &[String], budget: usize) -> String {
    let mut m = format!("{SUMMARY_HEAD}\n{turns} earlier turns are summarized here; they were answered already.\n\nSummary:\n{}\n", summary.trim());
    if user_words.is_empty() {
        return m;
    }
    let cut: Vec<String> = user_words
        .iter()
        .map(|w| aha_tools::cap(w.trim(), KEPT_USER_MESSAGE))
        .collect();
    // The first message usually says what the whole session is about; then the latest ones.
    let mut keep = vec![false; cut.len()];
    let mut used = 0;
    for i in std::iter::once(0).chain((1..cut.len()).rev()) {
        if used + cut[i].len() > budget && used > 0 {
            continue;
        }
        used += cut[i].len();
        keep[i] = true;
    }
    m.push_str("\nThe user's messages in those turns, word for word:\n");
    let mut skipped = false;
    for (w, k) in cut.iter().zip(keep) {
        if k {
            m.push_str(&format!("- {w}\n"));
            skipped = false;
        } else if !skipped {
            m.push_str("- […]\n");
            skipped = true;
        }
    }
    m
}

/// What one compaction did.
#[derive(Default)]
struct Done {
    elided: usize,
    summarized_turns: usize,
    summary: String,
}

/// What the next generation's request is made of, to measure it as it will be.
#[derive(Clone, Copy)]
pub(super) struct Next<'a> {
    pub prefix: Option<&'a str>,
    pub specs: &'a [ToolSpec],
    pub no_calls: bool,
}

impl Agent {
    /// The prompt tokens of the next generation's request (counted by the engine, else
    /// estimated).
    fn prompt_size(&mut self, next: Next) -> usize {
        let req = self.request(next.prefix.map(str::to_string), next.specs, next.no_calls);
        self.engine
            .prompt_tokens(&req)
            .unwrap_or_else(|| estimate_tokens(&req))
    }

    /// The tokens of what compaction cannot cut: the system message, the tools and the latest
    /// user message.
    fn floor_size(&mut self, next: Next) -> usize {
        let latest = self.latest_turn_start();
        let all = std::mem::take(&mut self.messages);
        self.messages = all.get(latest).cloned().into_iter().collect();
        let n = self.prompt_size(Next {
            prefix: None,
            ..next
        });
        self.messages = all;
        n
    }

    /// Before a generation: compacts the conversation when its prompt passes the configured
    /// share of the context.
    pub(super) fn fit_context(&mut self, next: Next) {
        let ctx = self.engine.context_length();
        if ctx == 0 || self.cfg.raw || self.cfg.compact_at <= 0.0 || self.messages.is_empty() {
            return;
        }
        let at = trigger(ctx, self.cfg.compact_at);
        let before = self.prompt_size(next);
        if before > at {
            let floor = self.floor_size(next);
            self.compact(before, budget(floor, at, false), next);
        }
    }

    /// `Op::Compact`: elides and summarizes everything before the latest turn, now.
    pub(super) fn compact_now(&mut self) {
        if self.turns.len() <= self.folded + 1
            && !self.messages.iter().any(|m| m.role == Role::Tool)
        {
            self.emit(Event::Notice {
                message: "nothing to compact: the conversation has one turn and no tool results"
                    .into(),
            });
            return;
        }
        // A stop left over from the last turn must not stop this summary before it starts.
        self.ctrl.begin_turn(None);
        let specs = self.offered_specs();
        let next = Next {
            prefix: None,
            specs: &specs,
            no_calls: false,
        };
        let before = self.prompt_size(next);
        let floor = self.floor_size(next);
        let at = trigger(self.engine.context_length(), self.cfg.compact_at.max(0.5));
        self.compact(before, budget(floor, at, true), next);
    }

    /// Where the latest turn begins in the conversation (its user message).
    fn latest_turn_start(&self) -> usize {
        self.turns
            .last()
            .copied()
            .unwrap_or(0)
            .min(self.messages.len())
    }

    /// Compacts within `budget`.
    fn compact(&mut self, before: usize, budget: Budget, next: Next) {
        let target = budget.target;
        let ctx = self.engine.context_length();
        let mut done = Done::default();
        let fits = |a: &mut Agent| target.is_some_and(|t| a.prompt_size(next) <= t);
        // 1. Tool results before the latest turn, oldest first.
        let latest = self.latest_turn_start();
        for i in 0..latest {
            let m = &mut self.messages[i];
            let cut = match m.role {
                Role::Tool => elide(&m.content, ELIDED_KEEP)
                    .map(|e| m.content = e)
                    .is_some(),
                // A call's long arguments (a file written whole) go the same way.
                Role::Assistant => m.tool_calls.as_mut().is_some_and(elide_arguments),
                _ => false,
            };
            if cut {
                done.elided += 1;
                if fits(self) {
                    break;
                }
            }
        }
        // 2. The turns before the latest one.
        if latest > 0 && !fits(self) && !self.summarize(latest, budget, &mut done) {
            // Stopped while the model summarized: nothing was replaced (a turn's generation
            // that follows is stopped too).
            if target.is_none() {
                self.emit(Event::Notice {
                    message: "compaction stopped before the earlier turns were summarized".into(),
                });
            }
            return;
        }
        // 3. The latest turn's own results, oldest first, shorter each pass.
        if target.is_some() {
            let mut cut = std::collections::BTreeSet::new();
            'passes: for keep in CURRENT_KEEPS {
                for i in self.latest_turn_start()..self.messages.len() {
                    if fits(self) {
                        break 'passes;
                    }
                    if self.messages[i].role != Role::Tool {
                        continue;
                    }
                    if let Some(e) = elide(&self.messages[i].content, keep) {
                        self.messages[i].content = e;
                        cut.insert(i);
                    }
                }
            }
            done.elided += cut.len();
        }
        if done.elided == 0 && done.summarized_turns == 0 {
            // Nothing left that may be cut: a generation goes ahead as it is (and the engine
            // says so if it does not fit at all).
            if target.is_none() {
                self.emit(Event::Notice {
                    message: "nothing to compact: no earlier turn, and no long tool result before the latest turn".into(),
                });
            }
            return;
        }
        let after = self.prompt_size(next);
        self.emit(Event::Compacted {
            before,
            after,
            context: ctx,
            elided: done.elided,
            summarized_turns: done.summarized_turns,
            summary: done.summary,
            manual: target.is_none(),
        });
    }

    /// Step 2: replaces the conversation before `latest` with one message holding a summary the
    /// model writes and the user's words from those turns. False when cancelled.
    fn summarize(&mut self, latest: usize, budget: Budget, done: &mut Done) -> bool {
        let folding = self.turns[self.folded..]
            .iter()
            .filter(|&&t| t < latest)
            .count();
        let old = &self.messages[..latest];
        let transcript = transcript_text(old);
        let words: Vec<String> = old
            .iter()
            .filter(|m| m.role == Role::User && !m.content.starts_with(SUMMARY_HEAD))
            .map(|m| m.content.clone())
            .collect();
        self.emit(Event::Notice {
            message: format!(
                "{}the model is summarizing the {folding} earlier {}…",
                if budget.target.is_some() {
                    "the context is filling: "
                } else {
                    ""
                },
                if folding == 1 { "turn" } else { "turns" }
            ),
        });
        let summary = match self.write_summary(transcript, budget.summary_tokens) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.emit(Event::Notice {
                    message: format!("the model could not summarize the earlier turns ({e:#}); their tool results and replies are left out, the user's messages are kept"),
                });
                String::new()
            }
            None => return false,
        };
        self.kept_user.extend(words);
        let folded_total = self.folded + folding;
        let msg = compacted_message(folded_total, &summary, &self.kept_user, budget.kept_bytes);
        self.messages.splice(..latest, [ChatMessage::user(msg)]);
        self.folded = folded_total;
        for t in &mut self.turns[folded_total..] {
            *t = *t + 1 - latest;
        }
        done.summarized_turns = folding;
        done.summary = summary;
        true
    }

    /// The model's summary of `transcript`, greedy and without reasoning; the transcript is cut
    /// in the middle until the request fits the context. `None` when cancelled.
    fn write_summary(
        &mut self,
        mut transcript: String,
        room: usize,
    ) -> Option<anyhow::Result<String>> {
        let ctx = self.engine.context_length();
        let request = |t: &str| {
            // One user message, the instructions after the conversation: a small model given
            // them first (or as a system message) tends to continue the conversation instead.
            let mut req = GenerateRequest::chat(vec![ChatMessage::user(format!(
                "<conversation>\n{t}\n</conversation>\n\n{}",
                COMPACT_PROMPT.trim()
            ))]);
            req.max_tokens = room;
            req.think = ThinkMode::Off;
            req.no_tool_calls = true;
            req.constrain_tools = false;
            req
        };
        let mut req = request(&transcript);
        req.sampling = self.engine.default_sampling();
        req.sampling.temperature = 0.0;
        for _ in 0..16 {
            let n = self
                .engine
                .prompt_tokens(&req)
                .unwrap_or_else(|| estimate_tokens(&req));
            if n + room <= ctx || transcript.len() < 200 {
                break;
            }
            // Keep the start (what the session is about) and the end (where it got to).
            let keep = transcript.len() * (ctx.saturating_sub(room)) / (n + 1) * 9 / 10;
            transcript = aha_tools::cap(&transcript, keep.min(transcript.len() * 3 / 4));
            let sampling = req.sampling.clone();
            req = request(&transcript);
            req.sampling = sampling;
        }
        let mut text = String::new();
        let engine = &mut self.engine;
        let ctrl = &self.ctrl;
        let r = aha_protocol::panic::catch_panic(|| {
            engine.generate(&req, ctrl, &mut |e| {
                if let Event::AnswerDelta { text: t, .. } = e {
                    text.push_str(&t)
                }
            })
        })
        .unwrap_or_else(|p| Err(anyhow::anyhow!("the engine failed: {p}")));
        if self.ctrl.cancelled() {
            return None;
        }
        Some(r.map(|_| {
            aha_engine::reasoning::strip_reasoning(&text)
                .trim()
                .to_string()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::testkit::{bench_ctx, call};
    use super::super::AgentConfig;
    use aha_protocol::Op;

    fn compactions(ev: &[Event]) -> Vec<(usize, usize, usize, usize, String, bool)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Compacted {
                    before,
                    after,
                    elided,
                    summarized_turns,
                    summary,
                    manual,
                    ..
                } => Some((
                    *before,
                    *after,
                    *elided,
                    *summarized_turns,
                    summary.clone(),
                    *manual,
                )),
                _ => None,
            })
            .collect()
    }

    fn chat(req: &GenerateRequest) -> &[ChatMessage] {
        match &req.prompt {
            Prompt::Chat(m) => m,
            _ => panic!("a chat"),
        }
    }

    #[test]
    fn a_filling_context_cuts_results_then_summarizes_old_turns_and_keeps_the_last_message() {
        let big = |c: char| format!("{{\"fill\": \"{c}\", \"times\": 4000}}");
        let first = call("echo", &big('a'));
        let second = call("echo", &big('b'));
        let mut b = bench_ctx(
            &[
                &first,
                "Done reading.",
                &second,
                "- the codename is KESTREL\n- big.txt was read",
                "Read it too.",
            ],
            AgentConfig {
                policy: aha_protocol::Policy::FullAuto,
                ..AgentConfig::default()
            },
            1200,
        );
        let trigger = trigger(1200, 0.8);
        let ev = b.handle(Op::UserMessage {
            text: "The codename is KESTREL. Read big.txt.".into(),
            turn_id: None,
        });
        // Turn 1: only its own result can go (nothing came before it).
        let c = compactions(&ev);
        assert_eq!(c.len(), 1, "{c:?}");
        let (before, after, elided, turns, _, manual) = c[0].clone();
        assert!(before > trigger && after < trigger, "{before} → {after}");
        assert_eq!((elided, turns, manual), (1, 0, false));
        let ev = b.handle(Op::UserMessage {
            text: "Now read other.txt".into(),
            turn_id: None,
        });
        let c = compactions(&ev);
        assert_eq!(c.len(), 1, "{c:?}");
        let (before, after, _, turns, summary, _) = c[0].clone();
        assert!(before > trigger && after < trigger, "{before} → {after}");
        assert_eq!(turns, 1);
        assert_eq!(summary, "- the codename is KESTREL\n- big.txt was read");
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::AnswerDelta { text, .. } if text.contains("Read"))),
            "the turn answered"
        );
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::AnswerDelta { text, .. } if text.contains("KESTREL"))),
            "the summary is not streamed as the answer"
        );

        let seen = b.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 5);
        // The summarizer's request: its own instructions, the transcript, no tools, no reasoning.
        let s = chat(&seen[3]);
        assert_eq!(s.len(), 1);
        assert!(
            s[0].content
                .starts_with("<conversation>\nUser: The codename is KESTREL. Read big.txt."),
            "{}",
            s[0].content
        );
        assert!(s[0]
            .content
            .contains("Assistant: Done reading.\n</conversation>"));
        assert!(s[0].content.ends_with(COMPACT_PROMPT.trim()));
        assert!(
            seen[3].tools.is_none() && seen[3].no_tool_calls && seen[3].think == ThinkMode::Off
        );
        // The generation after: system, the compacted turn, then the latest turn as it was.
        let m = chat(&seen[4]);
        assert_eq!(m[0].role, Role::System);
        assert!(m[1].content.starts_with(SUMMARY_HEAD), "{}", m[1].content);
        assert!(m[1].content.contains("- the codename is KESTREL"));
        assert!(
            m[1].content
                .contains("- The codename is KESTREL. Read big.txt."),
            "the user's words: {}",
            m[1].content
        );
        assert_eq!(m[2].content, "Now read other.txt");
        assert_eq!(m[4].role, Role::Tool);
        assert!(m[4].content.starts_with("bbb") && m[4].content.contains("bytes cut"));
        assert!(seen[4].tools.is_some(), "the tools stay");
        // Turn numbers still name the same turns; a compacted one cannot be branched.
        assert_eq!(b.agent.turns[1], 1);
        let ev = b.handle(Op::Branch {
            turn: 0,
            prefix: String::new(),
            turn_id: None,
        });
        assert!(
            matches!(&ev[..], [Event::Error { message }] if message.contains("compacted")),
            "{ev:?}"
        );
    }

    #[test]
    fn compact_by_hand_summarizes_all_but_the_latest_turn_and_says_when_there_is_nothing() {
        let mut b = bench_ctx(
            &["Hello.", "- said hello\n- asked the time", "It is noon."],
            AgentConfig::default(),
            8192,
        );
        b.handle(Op::UserMessage {
            text: "hi".into(),
            turn_id: None,
        });
        let ev = b.handle(Op::Compact);
        assert!(compactions(&ev).is_empty());
        assert!(
            matches!(&ev[..], [Event::Notice { message }] if message.starts_with("nothing to compact")),
            "{ev:?}"
        );
        b.handle(Op::UserMessage {
            text: "time?".into(),
            turn_id: None,
        });
        let ev = b.handle(Op::Compact);
        let c = compactions(&ev);
        assert_eq!(c.len(), 1, "{ev:?}");
        assert!(c[0].5, "manual");
        assert_eq!(c[0].3, 1);
        assert_eq!(
            b.agent.messages.len(),
            3,
            "summary, the latest question and its answer"
        );
        assert_eq!(b.agent.messages[1].content, "time?");
        // The context is far from full: no compaction by itself.
        b.handle(Op::UserMessage {
            text: "thanks".into(),
            turn_id: None,
        });
        assert_eq!(b.agent.folded, 1);
    }

    #[test]
    fn the_target_is_half_way_from_what_cannot_be_cut_to_the_trigger() {
        assert_eq!(trigger(2048, 0.8), 1638);
        assert_eq!(trigger(2048, 7.0), 2048);
        let b = budget(1300, 1638, false);
        assert_eq!(b.target, Some(1300 + 169));
        assert_eq!((b.summary_tokens, b.kept_bytes), (84, 160));
        let b = budget(1300, 26_214, true);
        assert_eq!(b.target, None);
        assert_eq!((b.summary_tokens, b.kept_bytes), (1024, 8192));
        assert_eq!(
            budget(3000, 1638, false).target,
            Some(3000),
            "nothing to spare"
        );
    }

    #[test]
    fn the_estimate_counts_cjk_by_the_character_and_ascii_by_three_bytes() {
        let req = GenerateRequest::chat(vec![ChatMessage::user("abcdef")]);
        assert_eq!(estimate_tokens(&req), 4 + 2);
        let req = GenerateRequest::chat(vec![ChatMessage::user("대통령의 임기")]);
        assert_eq!(estimate_tokens(&req), 4 + 1 + 6);
    }

    #[test]
    fn an_elided_result_keeps_head_and_tail_and_says_how_much_went() {
        let long = format!("HEAD{}TAIL", "x".repeat(5000));
        let e = elide(&long, 600).unwrap();
        assert!(e.starts_with("HEAD") && e.ends_with("TAIL"), "{e}");
        assert!(e.contains("bytes cut"), "{e}");
        assert!(e.len() < 700);
        assert_eq!(elide("short", 600), None);
        assert_eq!(elide(&e, 600), None, "an elided result is not cut again");
    }

    #[test]
    fn the_transcript_names_speakers_drops_reasoning_and_system_lines() {
        let mut call = ChatMessage::assistant("<think>\nprivate\n</think>\n\nLet me look.");
        call.tool_calls = Some(serde_json::json!([{"id": "c", "type": "function",
            "function": {"name": "read_file", "arguments": {"path": "a.txt"}}}]));
        let mut result = ChatMessage::tool("line one\nline two");
        result.name = Some("read_file".into());
        let t = transcript_text(&[
            ChatMessage::user(format!(
                "{SUMMARY_HEAD}\nSummary:\n- the codename is KESTREL"
            )),
            ChatMessage::user("What is in a.txt?"),
            call,
            result,
            ChatMessage::system("Answer now."),
            ChatMessage::assistant("It has two lines."),
        ]);
        assert!(
            t.starts_with(
                "Summary of the conversation before this:\nSummary:\n- the codename is KESTREL"
            ),
            "{t}"
        );
        assert!(t.contains("User: What is in a.txt?"));
        assert!(
            t.contains("Assistant: Let me look.\n(called read_file with {\"path\":\"a.txt\"})"),
            "{t}"
        );
        assert!(t.contains("Tool result (read_file): line one\nline two"));
        assert!(!t.contains("private") && !t.contains("Answer now"), "{t}");
    }

    #[test]
    fn the_compacted_message_keeps_the_first_and_latest_user_words_within_budget() {
        let words: Vec<String> = (0..10)
            .map(|i| format!("message {i} {}", "w".repeat(80)))
            .collect();
        let m = compacted_message(10, "- facts", &words, 300);
        assert!(m.starts_with(SUMMARY_HEAD), "{m}");
        assert!(m.contains("Summary:\n- facts"));
        assert!(m.contains("message 0 "), "the first: {m}");
        assert!(
            m.contains("message 9 ") && m.contains("message 8 "),
            "the latest: {m}"
        );
        assert!(!m.contains("message 3 "), "{m}");
        assert_eq!(m.matches("- […]").count(), 1, "{m}");
        assert!(!compacted_message(1, "s", &[], 300).contains("word for word"));
    }
}
