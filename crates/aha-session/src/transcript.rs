//! The conversation as the workbench shows it: user turns, assistant replies (each with its
//! reasoning tokens, answer, tool cards and branches), notices. Built only from `Op`s the UI sent
//! and `Event`s the agent reported, so replaying a session log rebuilds it exactly. Each text an
//! op or event brings is kept up to [`super::FIELD_MAX`] bytes, as the session log keeps it, so
//! the screen shows what a resumed session will show and one runaway event cannot fill memory.

use aha_protocol::{Event, Op, Source, TurnStats};
use std::borrow::Cow;

/// `s`, or its first [`super::FIELD_MAX`] bytes and a marker saying how many were cut.
pub fn capped(s: &str) -> Cow<'_, str> {
    let max = super::FIELD_MAX;
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{} [… {} bytes cut …]", &s[..end], s.len() - end))
}

/// One reasoning token as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Tok {
    pub text: String,
    pub logprob: Option<f32>,
    pub entropy: Option<f32>,
    /// The best tokens the model weighed here, this one among them (empty unless the engine
    /// reported them).
    pub top: Vec<aha_protocol::TopToken>,
    /// Milliseconds since the session clock started when it arrived.
    pub t_ms: u64,
    /// Copied from the reply this one branched from (or typed in by a person).
    pub inherited: bool,
}

/// What became of a tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolState {
    Running,
    /// Waiting for a person's approval; the summary says what it will do.
    Approval(String),
    Done {
        ok: bool,
        output: String,
        duration_ms: u64,
    },
}

impl ToolState {
    /// How the call ended, for an export: "ok in 12 ms", "failed in 3 ms", "did not finish".
    pub fn outcome(&self) -> String {
        match self {
            ToolState::Running => "did not finish".to_string(),
            ToolState::Approval(_) => "waiting for approval".to_string(),
            ToolState::Done {
                ok, duration_ms, ..
            } => format!("{} in {duration_ms} ms", if *ok { "ok" } else { "failed" }),
        }
    }
}

/// A tool call shown as a card in the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCard {
    pub id: String,
    pub name: String,
    /// Arguments as compact JSON.
    pub arguments: String,
    pub state: ToolState,
}

/// A piece of a reply after its reasoning, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Answer(String),
    Tool(ToolCard),
}

/// Where a reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyState {
    Streaming,
    Done,
    Cancelled,
    Failed,
    /// The session log ended while this reply was still streaming (the app was killed).
    Interrupted,
}

/// One assistant reply (one version of an assistant turn).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub turn: usize,
    pub tokens: Vec<Tok>,
    pub reasoning: String,
    pub parts: Vec<Part>,
    pub state: ReplyState,
    pub stats: Option<TurnStats>,
    pub error: Option<String>,
    pub paused: bool,
    pub started_ms: u64,
    pub first_ms: Option<u64>,
    /// When the reasoning ended (the answer began, or the turn ended).
    pub thought_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub answer_tokens: usize,
    /// For a branch: the step it branched at and the text a person inserted.
    pub branch: Option<BranchInfo>,
    /// `Some(true)`: reasoning shown in full; `Some(false)`: folded; `None`: automatic (shown
    /// while it streams, folded once the answer starts).
    pub expanded: Option<bool>,
    /// Entries that followed this reply before a branch replaced it (kept, not shown).
    pub later: Vec<Entry>,
    /// Research mode: the passages put into the prompt before it, and their tokens.
    pub sources: Option<(Vec<Source>, usize)>,
    /// Research mode: the answer's citations as checked, in order.
    pub citations: Vec<CitationMark>,
    /// Research mode: the verdict on the answer.
    pub check: Option<AnswerCheck>,
    /// Loops the engine found in the reasoning, in order.
    pub loops: Vec<LoopMark>,
}

/// A loop in a reply's reasoning: `text` occurred `count` times by reasoning token `at`
/// (where the engine said so), and what was done about it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopMark {
    pub at: usize,
    pub count: usize,
    pub text: String,
    pub action: aha_protocol::LoopAction,
}

impl LoopMark {
    /// How a loop reads for a person: "reasoning is repeating itself (3×): “…”".
    pub fn line(&self) -> String {
        aha_protocol::trace::loop_line(self.count, &self.text, self.action)
    }
}

/// A checked citation of an answer (`citation` event).
#[derive(Debug, Clone, PartialEq)]
pub struct CitationMark {
    pub path: String,
    pub line: usize,
    pub ok: bool,
    pub reason: String,
    /// Found by aha for a claim the model did not cite correctly.
    pub attached: bool,
    /// What the line says.
    pub quote: String,
}

impl CitationMark {
    /// `path:line`, as `/open` takes it.
    pub fn cite(&self) -> String {
        format!("{}:{}", self.path, self.line)
    }
}

/// The verdict on a research answer (`answer_check` event).
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerCheck {
    pub supported: bool,
    pub abstained: bool,
    pub unsupported_numbers: Vec<String>,
}

/// Where a branch came from.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchInfo {
    /// The version it branched from.
    pub parent: usize,
    /// Reasoning tokens kept from the parent.
    pub kept: usize,
    pub inserted: String,
}

impl Reply {
    fn new(turn: usize, now: u64) -> Self {
        Self {
            turn,
            tokens: Vec::new(),
            reasoning: String::new(),
            parts: Vec::new(),
            state: ReplyState::Streaming,
            stats: None,
            error: None,
            paused: false,
            started_ms: now,
            first_ms: None,
            thought_ms: None,
            ended_ms: None,
            answer_tokens: 0,
            branch: None,
            expanded: None,
            later: Vec::new(),
            sources: None,
            citations: Vec::new(),
            check: None,
            loops: Vec::new(),
        }
    }

    /// The answer text (all answer parts).
    pub fn answer(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Answer(a) => Some(a.as_str()),
                Part::Tool(_) => None,
            })
            .collect()
    }

    /// Whether anything after the reasoning has started.
    pub fn answer_started(&self) -> bool {
        !self.parts.is_empty()
    }

    /// Whether the reasoning is shown folded to its summary line.
    pub fn folded(&self) -> bool {
        match self.expanded {
            Some(e) => !e,
            None => self.answer_started() || self.state != ReplyState::Streaming,
        }
    }

    /// Whether the reasoning is still streaming.
    pub fn thinking(&self) -> bool {
        self.state == ReplyState::Streaming && !self.answer_started()
    }

    /// Seconds spent reasoning (so far).
    pub fn thought_secs(&self, now: u64) -> f64 {
        let end = self.thought_ms.or(self.ended_ms).unwrap_or(now);
        end.saturating_sub(self.started_ms) as f64 / 1000.0
    }

    /// Tokens generated in this reply (reasoning not inherited + answer).
    pub fn generated(&self) -> usize {
        self.tokens.iter().filter(|t| !t.inherited).count() + self.answer_tokens
    }

    /// The assistant message the model saw, in the form the agent keeps it.
    pub fn as_message(&self) -> String {
        let answer = self.answer();
        if self.reasoning.trim().is_empty() {
            answer
        } else {
            format!("<think>\n{}\n</think>\n\n{answer}", self.reasoning.trim())
        }
    }
}

/// One item of the transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    User(String),
    /// An assistant turn: every version (the original and its branches), one active.
    Reply {
        versions: Vec<Reply>,
        active: usize,
    },
    Notice(String),
    Error(String),
    /// Where the agent compacted the conversation to fit the context: what it did, and the
    /// summary that stands for the earlier turns from here on (empty when none was written).
    Compacted {
        line: String,
        summary: String,
    },
}

/// A transcript entry with a revision number that changes whenever it does (layout caches key
/// on it).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: EntryKind,
    pub rev: u64,
}

impl Entry {
    /// The active reply, if this is an assistant turn.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.kind {
            EntryKind::Reply { versions, active } => versions.get(*active),
            _ => None,
        }
    }

    fn reply_mut(&mut self) -> Option<&mut Reply> {
        match &mut self.kind {
            EntryKind::Reply { versions, active } => versions.get_mut(*active),
            _ => None,
        }
    }
}

/// The whole conversation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    pub entries: Vec<Entry>,
    /// Entry index of each assistant turn.
    pub turns: Vec<usize>,
    /// Entry index of the reply that is streaming.
    pub live: Option<usize>,
    next_rev: u64,
}

impl Transcript {
    fn rev(&mut self) -> u64 {
        self.next_rev += 1;
        self.next_rev
    }

    fn push(&mut self, kind: EntryKind) {
        let rev = self.rev();
        self.entries.push(Entry { kind, rev });
    }

    /// Marks entry `i` changed.
    pub fn touch(&mut self, i: usize) {
        let rev = self.rev();
        if let Some(e) = self.entries.get_mut(i) {
            e.rev = rev;
        }
    }

    /// Adds a notice line.
    pub fn notice(&mut self, text: impl Into<String>) {
        self.push(EntryKind::Notice(text.into()));
    }

    /// Adds an error line.
    pub fn error(&mut self, text: impl Into<String>) {
        self.push(EntryKind::Error(text.into()));
    }

    /// The reply that is streaming.
    pub fn live_reply(&self) -> Option<&Reply> {
        self.live
            .and_then(|i| self.entries.get(i))
            .and_then(Entry::reply)
    }

    fn live_mut(&mut self) -> Option<&mut Reply> {
        let i = self.live?;
        let rev = self.rev();
        let e = self.entries.get_mut(i)?;
        e.rev = rev;
        e.reply_mut()
    }

    /// The versions of assistant turn `turn` and the active one.
    pub fn versions(&self, turn: usize) -> Option<(&[Reply], usize)> {
        let e = self.entries.get(*self.turns.get(turn)?)?;
        match &e.kind {
            EntryKind::Reply { versions, active } => Some((versions.as_slice(), *active)),
            _ => None,
        }
    }

    /// Mutable access to version `v` (active when `None`) of turn `turn`; marks it changed.
    pub fn reply_mut(&mut self, turn: usize, v: Option<usize>) -> Option<&mut Reply> {
        let i = *self.turns.get(turn)?;
        let rev = self.rev();
        let e = self.entries.get_mut(i)?;
        e.rev = rev;
        match &mut e.kind {
            EntryKind::Reply { versions, active } => versions.get_mut(v.unwrap_or(*active)),
            _ => None,
        }
    }

    /// Applies an op the UI sent (live, or replayed from a session log).
    pub fn apply_op(&mut self, op: &Op, _now: u64) {
        match op {
            Op::UserMessage { text, .. } => self.push(EntryKind::User(capped(text).into_owned())),
            Op::Clear => {
                let next_rev = self.next_rev;
                *self = Transcript::default();
                self.next_rev = next_rev;
            }
            _ => {}
        }
    }

    /// Applies an event the agent reported.
    pub fn apply_event(&mut self, ev: &Event, now: u64) {
        match ev {
            Event::TurnStarted {
                turn,
                branch_of,
                prefix,
            } => self.start_turn(*turn, *branch_of, &capped(prefix), now),
            Event::ThinkingDelta {
                text,
                logprob,
                entropy,
                top,
            } => {
                if self.live.is_none() {
                    // An engine that reports no turn_started (older logs): open a reply.
                    self.start_turn(self.turns.len(), None, "", now);
                }
                let text = capped(text);
                if let Some(r) = self.live_mut() {
                    r.first_ms.get_or_insert(now);
                    r.reasoning.push_str(&text);
                    r.tokens.push(Tok {
                        text: text.into_owned(),
                        logprob: *logprob,
                        entropy: *entropy,
                        top: top.clone(),
                        t_ms: now,
                        inherited: false,
                    });
                }
            }
            Event::AnswerDelta { text, .. } => {
                if self.live.is_none() {
                    self.start_turn(self.turns.len(), None, "", now);
                }
                let text = capped(text);
                if let Some(r) = self.live_mut() {
                    r.first_ms.get_or_insert(now);
                    r.thought_ms.get_or_insert(now);
                    r.answer_tokens += 1;
                    match r.parts.last_mut() {
                        Some(Part::Answer(a)) => a.push_str(&text),
                        _ => {
                            // The answer's leading whitespace means nothing on screen.
                            let t = text.trim_start_matches(['\n', ' ']);
                            r.parts.push(Part::Answer(t.to_string()));
                        }
                    }
                }
            }
            Event::ToolCall {
                id,
                name,
                arguments,
            } => {
                if let Some(r) = self.live_mut() {
                    r.thought_ms.get_or_insert(now);
                    r.parts.push(Part::Tool(ToolCard {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: capped(&arguments.to_string()).into_owned(),
                        state: ToolState::Running,
                    }));
                }
            }
            Event::ApprovalRequest { id, name, summary } => {
                let Some(r) = self.live_mut() else { return };
                r.thought_ms.get_or_insert(now);
                let summary = capped(summary).into_owned();
                match find_card(r, id) {
                    Some(c) => c.state = ToolState::Approval(summary),
                    None => r.parts.push(Part::Tool(ToolCard {
                        id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        state: ToolState::Approval(summary),
                    })),
                }
            }
            Event::ToolResult {
                id,
                ok,
                output,
                duration_ms,
            } => {
                if let Some(c) = self.live_mut().and_then(|r| find_card(r, id)) {
                    c.state = ToolState::Done {
                        ok: *ok,
                        output: capped(output).into_owned(),
                        duration_ms: *duration_ms,
                    };
                }
            }
            Event::TurnFinished { stats, .. } => {
                if let Some(r) = self.live_mut() {
                    r.state = if stats.finish_reason == aha_protocol::FinishReason::Cancelled {
                        ReplyState::Cancelled
                    } else {
                        ReplyState::Done
                    };
                    r.paused = false;
                    r.stats = Some(stats.clone());
                    r.ended_ms = Some(now);
                    r.thought_ms.get_or_insert(now);
                }
                self.live = None;
            }
            Event::Error { message } => {
                let message = capped(message);
                if let Some(r) = self.live_mut() {
                    r.state = ReplyState::Failed;
                    r.error = Some(message.to_string());
                    r.ended_ms = Some(now);
                    r.paused = false;
                    r.thought_ms.get_or_insert(now);
                    self.live = None;
                } else {
                    self.error(message.into_owned());
                }
            }
            Event::Paused => {
                if let Some(r) = self.live_mut() {
                    r.paused = true;
                }
            }
            Event::Resumed => {
                if let Some(r) = self.live_mut() {
                    r.paused = false;
                }
            }
            Event::Notice { message } => self.notice(capped(message).into_owned()),
            Event::ReasoningLoop {
                count,
                text,
                action,
            } => {
                let Some(r) = self.live_mut() else {
                    return;
                };
                let mark = LoopMark {
                    at: r.tokens.len(),
                    count: *count,
                    text: capped(text).into_owned(),
                    action: *action,
                };
                // A loop that goes on updates its mark; a notice says so the first time, and
                // when something was done about it.
                let known = r.loops.iter_mut().rev().find(|m| m.text == mark.text);
                let new = match known {
                    Some(m) if m.action == mark.action => {
                        m.count = mark.count;
                        false
                    }
                    _ => {
                        r.loops.push(mark.clone());
                        true
                    }
                };
                if new {
                    self.notice(mark.line());
                }
            }
            Event::Compacted { summary, .. } => self.push(EntryKind::Compacted {
                line: ev.compaction_line().unwrap_or_default(),
                summary: capped(summary).into_owned(),
            }),
            Event::Retrieval { hits, tokens, .. } => match self.live_mut() {
                Some(r) => r.sources = Some((hits.clone(), *tokens)),
                None => {
                    let cited: Vec<String> = hits.iter().map(|h| h.cite()).collect();
                    self.notice(if cited.is_empty() {
                        "sources: no passage matched".to_string()
                    } else {
                        format!("sources ({tokens} tokens): {}", cited.join(", "))
                    })
                }
            },
            Event::Citation {
                path,
                line,
                ok,
                reason,
                attached,
                quote,
                ..
            } => {
                if let Some(r) = self.live_mut() {
                    r.citations.push(CitationMark {
                        path: path.clone(),
                        line: *line,
                        ok: *ok,
                        reason: capped(reason).into_owned(),
                        attached: *attached,
                        quote: capped(quote).into_owned(),
                    });
                }
            }
            Event::AnswerCheck {
                supported,
                abstained,
                unsupported_numbers,
                ..
            } => {
                if let Some(r) = self.live_mut() {
                    r.check = Some(AnswerCheck {
                        supported: *supported,
                        abstained: *abstained,
                        unsupported_numbers: unsupported_numbers.clone(),
                    });
                }
            }
        }
    }

    fn start_turn(&mut self, turn: usize, branch_of: Option<usize>, prefix: &str, now: u64) {
        let mut reply = Reply::new(turn, now);
        if let (Some(_), Some(&at)) = (branch_of, self.turns.get(turn)) {
            // A new version of an earlier turn: keep the parent's tokens the prefix repeats.
            let later: Vec<Entry> = if at < self.entries.len() {
                self.entries.drain(at + 1..).collect()
            } else {
                Vec::new()
            };
            self.turns.truncate(turn + 1);
            let rev = self.rev();
            let Some(e) = self.entries.get_mut(at) else {
                return;
            };
            e.rev = rev;
            if let EntryKind::Reply { versions, active } = &mut e.kind {
                let text = prefix.strip_prefix("<think>").unwrap_or(prefix);
                let text = text.strip_prefix('\n').unwrap_or(text);
                // The parent is the version the prefix repeats the most of (the active one on a tie).
                let shared = |r: &Reply| {
                    let (mut n, mut at) = (0usize, 0usize);
                    for t in &r.tokens {
                        if t.text.is_empty() || !text[at..].starts_with(&t.text) {
                            break;
                        }
                        at += t.text.len();
                        n += 1;
                    }
                    (n, at)
                };
                let mut parent = *active;
                let mut best = shared(&versions[parent]).1;
                for (i, v) in versions.iter().enumerate() {
                    let b = shared(v).1;
                    if b > best {
                        best = b;
                        parent = i;
                    }
                }
                versions[*active].later = later;
                let p = &versions[parent];
                let (kept, at_byte) = shared(p);
                reply.tokens.extend(p.tokens[..kept].iter().map(|t| Tok {
                    inherited: true,
                    ..t.clone()
                }));
                // A branch on one of the alternatives the parent weighed at the next token: that
                // token, with the alternative's probability (the distribution is the parent's).
                let rest = &text[at_byte.min(text.len())..];
                let alt = p.tokens.get(kept).and_then(|t| {
                    t.top
                        .iter()
                        .find(|a| a.text == rest && a.text != t.text)
                        .map(|a| (a.logprob, t))
                });
                let mut kept_n = kept;
                let inserted = if let Some((lp, t)) = alt {
                    reply.tokens.push(Tok {
                        text: rest.to_string(),
                        logprob: Some(lp),
                        inherited: true,
                        t_ms: now,
                        ..t.clone()
                    });
                    rest
                } else {
                    // The prefix may cut a parent token (a step starts inside it): keep that
                    // piece with the parent's figures; what follows the shared text was typed in.
                    let common = common_prefix(text, &p.reasoning);
                    if common > at_byte {
                        if let Some(t) = p.tokens.get(kept) {
                            reply.tokens.push(Tok {
                                text: text[at_byte..common].to_string(),
                                inherited: true,
                                ..t.clone()
                            });
                            kept_n += 1;
                        }
                    }
                    let inserted = &text[common.max(at_byte)..];
                    if !inserted.is_empty() {
                        reply.tokens.push(Tok {
                            text: inserted.to_string(),
                            logprob: None,
                            entropy: None,
                            top: Vec::new(),
                            t_ms: now,
                            inherited: true,
                        });
                    }
                    inserted
                };
                reply.reasoning = text.to_string();
                reply.branch = Some(BranchInfo {
                    parent,
                    kept: kept_n,
                    inserted: inserted.to_string(),
                });
                versions.push(reply);
                *active = versions.len() - 1;
                self.live = Some(at);
            }
            return;
        }
        self.turns.truncate(turn);
        self.push(EntryKind::Reply {
            versions: vec![reply],
            active: 0,
        });
        self.turns.push(self.entries.len() - 1);
        self.live = Some(self.entries.len() - 1);
    }

    /// Marks a reply that never finished (a session log cut short) as interrupted.
    pub fn interrupt_live(&mut self) {
        if let Some(r) = self.live_mut() {
            r.state = ReplyState::Interrupted;
            r.paused = false;
        }
        self.live = None;
    }

    /// The conversation as chat messages (the active version of every turn), for `Op::Restore`.
    pub fn messages(&self) -> Vec<aha_protocol::ChatMessage> {
        use aha_protocol::ChatMessage;
        let mut out = Vec::new();
        for e in &self.entries {
            match &e.kind {
                EntryKind::User(t) => out.push(ChatMessage::user(t.clone())),
                EntryKind::Reply { .. } => {
                    if let Some(r) = e.reply() {
                        out.push(ChatMessage::assistant(r.as_message()))
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// Bytes `a` and `b` share at their start (on a character boundary).
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

fn find_card<'a>(r: &'a mut Reply, id: &str) -> Option<&'a mut ToolCard> {
    r.parts.iter_mut().rev().find_map(|p| match p {
        Part::Tool(c) if c.id == id => Some(c),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_event_is_kept_only_up_to_the_cap_with_the_cut_marked() {
        let max = super::super::FIELD_MAX;
        let mut t = Transcript::default();
        t.apply_op(
            &Op::UserMessage {
                text: "é".repeat(max),
                turn_id: None,
            },
            0,
        );
        t.apply_event(
            &Event::ThinkingDelta {
                text: "a".repeat(max + 10),
                logprob: None,
                entropy: None,
                top: Vec::new(),
            },
            1,
        );
        t.apply_event(
            &Event::Notice {
                message: "short".into(),
            },
            2,
        );
        let EntryKind::User(u) = &t.entries[0].kind else {
            panic!()
        };
        assert!(u.len() <= max + 40 && u.ends_with(&format!(" [… {max} bytes cut …]")));
        let r = t.entries[1].reply().unwrap();
        assert_eq!(r.reasoning.len(), r.tokens[0].text.len());
        assert!(r.reasoning.ends_with(" [… 10 bytes cut …]"));
        assert!(matches!(&t.entries[2].kind, EntryKind::Notice(m) if m == "short"));
    }
}
