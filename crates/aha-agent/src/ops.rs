//! The ops that are not a turn: settings, the conversation's history, and the tools' own ops.
//! One small method per op; [`Agent::handle`](super::Agent::handle) dispatches to them.

use super::policy::{Effect, Policy};
use super::{Agent, ToolHost};
use aha_engine::template::ChatMessage;
use aha_engine::ThinkMode;
use aha_protocol::Event;
use std::path::PathBuf;

/// What an undo restored, for a person.
pub(super) fn undo_summary(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        "nothing to undo".into()
    } else {
        format!(
            "restored {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The session's diff, or a line saying there is none.
pub(super) fn diff_summary(d: String) -> String {
    if d.trim().is_empty() {
        "the tools have changed no files in this session".into()
    } else {
        d
    }
}

/// The policy, then each tool with what it may do and the first sentence of its description.
pub(super) fn tools_listing(t: &dyn ToolHost, policy: &Policy) -> String {
    let mut m = format!("approval policy: {}\n", policy.as_str());
    for spec in t.specs() {
        let name = spec.name.as_str();
        let effect = t
            .effect(name)
            .map(|e| match e {
                Effect::ReadOnly => "reads",
                Effect::Edit => "edits files",
                Effect::Execute => "runs code",
                Effect::Commit => "commits",
            })
            .unwrap_or("?");
        let desc = spec.description.as_str();
        let first = desc.split(". ").next().unwrap_or(desc);
        m.push_str(&format!("{name} ({effect}): {first}\n"));
    }
    m
}

impl Agent {
    /// A new user message opens a turn.
    pub(super) fn user_message(&mut self, text: String) {
        self.turns.push(self.messages.len());
        self.messages.push(ChatMessage::user(text));
        self.turn(None, String::new());
    }

    /// Regenerates turn `turn` from `prefix`, dropping everything after its user message.
    pub(super) fn branch(&mut self, turn: usize, prefix: String) {
        let Some(&at) = self.turns.get(turn) else {
            self.emit(Event::Error {
                message: format!(
                    "cannot branch turn {turn}: the conversation has {} turns",
                    self.turns.len()
                ),
            });
            return;
        };
        if turn < self.folded {
            self.emit(Event::Error {
                message: format!(
                    "cannot branch turn {turn}: it was compacted into a summary (the first {} turns were)",
                    self.folded
                ),
            });
            return;
        }
        // Keep the conversation up to and including that turn's user message.
        self.messages.truncate(at + 1);
        self.turns.truncate(turn + 1);
        self.turn(Some(turn), prefix);
    }

    /// Sets budget forcing's minimum for the next turns.
    pub(super) fn set_think_min(&mut self, min: Option<usize>) {
        self.cfg.trace.think_min = min.filter(|n| *n > 0);
        let message = match self.cfg.trace.think_min {
            Some(n) => format!(
                "thinking at least {n} tokens: an early close becomes “{}” (from the next turn)",
                self.cfg.trace.wait
            ),
            None => "no minimum for thinking (from the next turn)".to_string(),
        };
        self.emit(Event::Notice { message });
    }

    /// Sets what a loop in the reasoning does, for the next turns.
    pub(super) fn set_loops(&mut self, action: aha_protocol::LoopAction) {
        self.cfg.trace.loops = action;
        let what = match action {
            aha_protocol::LoopAction::Off => "not watched",
            aha_protocol::LoopAction::Warn => "flagged",
            aha_protocol::LoopAction::Stop => "flagged and the turn stopped",
            aha_protocol::LoopAction::Nudge => "flagged and nudged",
        };
        self.emit(Event::Notice {
            message: format!("reasoning loops: {action} — {what} (from the next turn)"),
        });
    }

    /// Sets the thinking mode and budget for the next turns.
    pub(super) fn set_thinking(&mut self, mode: ThinkMode, budget: Option<usize>) {
        self.cfg.think = mode;
        self.cfg.think_budget = budget;
        let b = budget.map_or("no budget".to_string(), |b| format!("budget {b} tokens"));
        self.emit(Event::Notice {
            message: format!("thinking {mode}, {b} (from the next turn)"),
        });
    }

    /// Forgets the conversation.
    pub(super) fn clear(&mut self) {
        self.messages.clear();
        self.turns.clear();
        self.folded = 0;
        self.kept_user.clear();
    }

    /// Replaces the conversation with saved messages.
    pub(super) fn restore(&mut self, messages: Vec<ChatMessage>) {
        self.clear();
        for m in messages {
            if m.role == aha_protocol::Role::User {
                self.turns.push(self.messages.len());
            }
            self.messages.push(m);
        }
    }

    /// Research mode on or off for the next turns (the researcher's instructions join the system
    /// message while it is on; see `generate::system_prompt`).
    pub(super) fn set_research(&mut self, on: bool) {
        self.cfg.research = on;
        let has_index = self
            .tools
            .as_ref()
            .is_some_and(|t| t.specs().iter().any(|s| s.name == "search_docs"));
        self.emit(Event::Notice {
            message: match (on, has_index) {
                (true, true) => "research mode on: each question is answered from the indexed documents first, and the answer's citations are checked".into(),
                (true, false) => "research mode on, but there is no document index yet: /index PATH builds one".into(),
                (false, _) => "research mode off".into(),
            },
        });
    }

    /// Sets the approval policy.
    pub(super) fn set_policy(&mut self, policy: Policy) {
        self.cfg.policy = policy;
        self.emit(Event::Notice {
            message: format!("approval policy: {}", policy.as_str()),
        });
    }

    /// An op answered by the tools, not the model: its text as a `notice`, its failure as an
    /// `error` starting with `what`.
    pub(super) fn tool_op(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut dyn ToolHost, &Policy) -> anyhow::Result<String>,
    ) {
        let policy = self.cfg.policy;
        let r = self.tools.as_deref_mut().map(|t| {
            aha_protocol::panic::catch_panic(|| f(t, &policy)).unwrap_or_else(|p| Err(p.into()))
        });
        let e = match r {
            None => Event::Notice {
                message: "tools are not enabled in this session".into(),
            },
            Some(Ok(message)) => Event::Notice { message },
            Some(Err(e)) => Event::Error {
                message: format!("{what}: {e:#}"),
            },
        };
        self.emit(e);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{bench, Tools};
    use super::super::AgentConfig;
    use super::*;
    use aha_protocol::Op;

    #[test]
    fn summaries_of_undo_and_diff() {
        assert_eq!(undo_summary(&[]), "nothing to undo");
        assert_eq!(
            undo_summary(&[PathBuf::from("a"), PathBuf::from("b/c")]),
            "restored a, b/c"
        );
        assert_eq!(
            diff_summary(" \n".into()),
            "the tools have changed no files in this session"
        );
        assert_eq!(diff_summary("+x\n".into()), "+x\n");
    }

    #[test]
    fn the_listing_names_each_tool_what_it_may_do_and_its_first_sentence() {
        let t = Tools {
            ran: Default::default(),
        };
        assert_eq!(
            tools_listing(&t, &Policy::AutoEdit),
            "approval policy: auto-edit\necho (reads): Does echo\nwrite (edits files): Does write\nexec (runs code): Does exec\n"
        );
    }

    #[test]
    fn settings_change_for_the_next_turn_and_say_so() {
        let mut b = bench(&[], AgentConfig::default(), false);
        b.agent.set_thinking(ThinkMode::Off, Some(5));
        assert_eq!(
            (b.agent.cfg.think, b.agent.cfg.think_budget),
            (ThinkMode::Off, Some(5))
        );
        b.agent.set_policy(Policy::ReadOnly);
        assert_eq!(b.agent.cfg.policy, Policy::ReadOnly);
        let notices: Vec<String> = b
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::Notice { message } => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(
            notices,
            [
                "thinking off, budget 5 tokens (from the next turn)",
                "approval policy: read-only"
            ]
        );
    }

    #[test]
    fn restore_rebuilds_the_turns_and_branch_keeps_up_to_its_question() {
        let mut b = bench(&["a"], AgentConfig::default(), false);
        b.agent.restore(vec![
            ChatMessage::user("u1"),
            ChatMessage::assistant("a1"),
            ChatMessage::user("u2"),
            ChatMessage::assistant("a2"),
        ]);
        assert_eq!(b.agent.turns, [0, 2]);
        assert_eq!(b.agent.messages.len(), 4);
        assert!(b.take().is_empty(), "restoring says nothing");
        b.agent.branch(0, String::new());
        assert_eq!(b.agent.turns, [0]);
        let contents: Vec<_> = b
            .agent
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(contents, ["u1", "a"]);
        b.agent.branch(1, String::new());
        assert!(
            matches!(b.take().last(), Some(Event::Error { message }) if message == "cannot branch turn 1: the conversation has 1 turns")
        );
        b.agent.clear();
        assert!(b.agent.messages.is_empty() && b.agent.turns.is_empty());
    }

    #[test]
    fn a_tool_op_that_fails_or_panics_is_an_error_named_by_the_op() {
        let mut b = bench(&[], AgentConfig::default(), true);
        let ev = b.handle(Op::Search { query: "q".into() });
        assert_eq!(
            ev,
            [Event::Notice {
                message: "hits for q".into()
            }]
        );
        let mut b = bench(&[], AgentConfig::default(), true);
        b.agent.tool_op("index", |_, _| anyhow::bail!("no index"));
        b.agent.tool_op("diff", |_, _| panic!("boom"));
        let msgs: Vec<String> = b
            .take()
            .into_iter()
            .map(|e| match e {
                Event::Error { message } => message,
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(msgs[0], "index: no index");
        assert!(
            msgs[1].starts_with("diff: internal error: boom"),
            "{}",
            msgs[1]
        );
    }
}
