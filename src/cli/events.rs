//! The one event printer of the line-based front ends (`aha run`, `aha chat`), and the loop that
//! drives one agent turn for them: Ctrl-C forwarded as a cancel, each event printed as JSON or for
//! a person, and how the turn ended.
//!
//! Both front ends go through the agent, so they see the same event stream as the workbench. A
//! front end that asks for one generation (no tools: `aha chat`, `aha run` without `--agent`)
//! shows what that generation emitted and nothing of the turn around it: no `turn_started`, and a
//! generation that fails ends at its `error` (the `turn_finished` the agent closes the turn with
//! is not shown). See [`Shown`].

use crate::agent::{AgentHandle, AGENT_STOPPED_MESSAGE};
use crate::engine::Control;
use crate::protocol::{Event, FinishReason, Op, TurnId, TurnStats};
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Writes one event as a JSON line on stdout.
pub fn print_json(e: &Event) {
    let mut out = std::io::stdout().lock();
    if let Ok(s) = serde_json::to_string(e) {
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    }
}

/// The stats line for a person.
pub fn stats_line(s: &TurnStats) -> String {
    let drafts = if s.drafted_tokens > 0 {
        format!(
            " ({} of {} drafted tokens kept)",
            s.accepted_tokens, s.drafted_tokens
        )
    } else {
        String::new()
    };
    format!(
        "\n[{} prompt tokens ({} prefilled) · {} thinking + {} answer tokens · ttft {:.0} ms · prefill {:.1} tok/s · decode {:.1} tok/s{drafts} · {}]",
        s.prompt_tokens,
        s.prefilled_tokens,
        s.thinking_tokens,
        s.answer_tokens,
        s.ttft_ms,
        s.prefill_tok_s,
        s.decode_tok_s,
        s.finish_reason
    )
}

/// The first lines of a tool's output, indented, with a count of the rest.
fn tool_output(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let shown = lines
        .iter()
        .take(12)
        .copied()
        .collect::<Vec<_>>()
        .join("\n  ");
    let more = if lines.len() > 12 {
        format!("\n  … {} more lines", lines.len() - 12)
    } else {
        String::new()
    };
    format!("{shown}{more}")
}

/// Prints events: one JSON object per line on stdout, or as a person reads them (reasoning dim
/// on stderr, the answer on stdout, tool calls, results, notices, errors and the stats line on
/// stderr).
pub struct Printer {
    json: bool,
    /// Reasoning is dimmed (stderr is a terminal).
    dim: bool,
    in_thinking: bool,
}

impl Printer {
    /// A JSON printer when `json`, else one for a person.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            dim: std::io::stderr().is_terminal(),
            in_thinking: false,
        }
    }

    /// Whether this printer writes JSON.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one event.
    pub fn print(&mut self, e: Event) {
        if self.json {
            print_json(&e);
            return;
        }
        match e {
            Event::ThinkingDelta { text, .. } => {
                let mut err = std::io::stderr().lock();
                if self.dim && !self.in_thinking {
                    let _ = write!(err, "\x1b[2m");
                }
                self.in_thinking = true;
                let _ = write!(err, "{text}");
                let _ = err.flush();
            }
            Event::AnswerDelta { text, .. } => {
                self.end_thinking();
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}");
                let _ = out.flush();
            }
            Event::ToolCall {
                name, arguments, ..
            } => {
                self.end_thinking();
                eprintln!("\n→ {name} {arguments}");
            }
            Event::ToolResult {
                ok,
                output,
                duration_ms,
                ..
            } => eprintln!(
                "{} ({duration_ms} ms)\n  {}",
                if ok { "✓" } else { "✗" },
                tool_output(&output)
            ),
            Event::Notice { message } => eprintln!("\n[{message}]"),
            Event::ReasoningLoop {
                count,
                text,
                action,
            } => eprintln!(
                "\n[{}]",
                crate::protocol::trace::loop_line(count, &text, action)
            ),
            e @ Event::Compacted { .. } => {
                eprintln!("\n[{}]", e.compaction_line().unwrap_or_default())
            }
            Event::Retrieval { hits, tokens, .. } => {
                let cited: Vec<String> = hits.iter().map(|h| h.cite()).collect();
                eprintln!("\n[sources, {tokens} tokens: {}]", cited.join(", "));
            }
            Event::Citation {
                path,
                line,
                ok,
                reason,
                attached,
                quote,
                ..
            } => {
                self.end_thinking();
                let by = if attached { " (found by aha)" } else { "" };
                eprintln!(
                    "\n{} [{path}:{line}]{by}: {reason}",
                    if ok { "✓" } else { "✗" }
                );
                if !quote.is_empty() {
                    eprintln!("  “{quote}”");
                }
            }
            Event::AnswerCheck {
                supported,
                abstained,
                unsupported_numbers,
                ..
            } => {
                if !supported && !abstained {
                    eprintln!("\n⚠ no passage the model read supports all of this answer");
                }
                if !unsupported_numbers.is_empty() {
                    eprintln!(
                        "⚠ numbers in no cited passage: {}",
                        unsupported_numbers.join(", ")
                    );
                }
            }
            Event::Error { message } => eprintln!("\nerror: {message}"),
            Event::TurnFinished { stats, .. } => {
                self.end_thinking();
                println!();
                eprintln!("{}", stats_line(&stats));
            }
            _ => {}
        }
    }

    /// Closes a reasoning block on stderr (and its dimming).
    fn end_thinking(&mut self) {
        if self.in_thinking {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", if self.dim { "\x1b[0m" } else { "" });
            self.in_thinking = false;
        }
    }
}

/// Which of a turn's events a front end shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Everything the agent sends (`aha run --agent`).
    All,
    /// What one generation emitted, as `aha run` printed it before it went through the agent:
    /// no `turn_started`; after an `error`, not the `turn_finished` that closes the turn; and,
    /// for a person, not the error either (the caller reports it as the command's error).
    OneGeneration,
}

impl Shown {
    /// Whether `e` is printed, given whether the turn has already reported an error.
    pub fn shows(self, e: &Event, failed: bool, json: bool) -> bool {
        match (self, e) {
            (Shown::All, _) => true,
            (Shown::OneGeneration, Event::TurnStarted { .. }) => false,
            (Shown::OneGeneration, Event::TurnFinished { .. }) => !failed,
            (Shown::OneGeneration, Event::Error { .. }) => json,
            (Shown::OneGeneration, _) => true,
        }
    }
}

/// How a turn ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnEnd {
    /// The turn's finish reason (`None` when the agent stopped before finishing it).
    pub finish_reason: Option<FinishReason>,
    /// The first error the turn reported.
    pub error: Option<String>,
}

impl TurnEnd {
    /// Whether the turn was cancelled.
    pub fn cancelled(&self) -> bool {
        self.finish_reason == Some(FinishReason::Cancelled)
    }
}

/// Sends `text` as a user message and prints the turn's events until it finishes. A cancel on
/// `ctrl` (Ctrl-C) is passed on to the agent, and `ctrl` cleared for the next one.
pub fn drive_turn(
    h: &AgentHandle,
    text: String,
    ctrl: &Control,
    shown: Shown,
    printer: &mut Printer,
) -> TurnEnd {
    // A Ctrl-C from before this turn (at the prompt) does not cancel it.
    ctrl.cancel.store(false, Ordering::SeqCst);
    static TURNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let turn_id = Some(TurnId(TURNS.fetch_add(1, Ordering::SeqCst) + 1));
    h.send(Op::UserMessage { text, turn_id });
    let mut end = TurnEnd::default();
    loop {
        if ctrl.cancelled() {
            h.send(Op::Cancel { turn_id });
            ctrl.cancel.store(false, Ordering::SeqCst);
        }
        let (e, stopped) = match h.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(e)) => (e, false),
            Ok(None) => continue,
            // The thread is gone before the turn ended: say so, whatever came before.
            Err(_) => (
                Event::Error {
                    message: AGENT_STOPPED_MESSAGE.into(),
                },
                true,
            ),
        };
        if shown.shows(&e, end.error.is_some(), printer.is_json()) {
            printer.print(e.clone());
        }
        match e {
            Event::Error { message } => {
                end.error.get_or_insert(message);
            }
            Event::TurnFinished { stats, .. } => {
                end.finish_reason = Some(stats.finish_reason);
                return end;
            }
            _ => {}
        }
        if stopped {
            return end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished() -> Event {
        Event::TurnFinished {
            stats: TurnStats::default(),
            tokens: vec![],
        }
    }

    #[test]
    fn one_generation_hides_the_turn_around_it() {
        let started = Event::TurnStarted {
            turn: 0,
            branch_of: None,
            prefix: String::new(),
        };
        let err = Event::Error {
            message: "x".into(),
        };
        let s = Shown::OneGeneration;
        assert!(!s.shows(&started, false, true));
        assert!(s.shows(&finished(), false, true));
        assert!(
            !s.shows(&finished(), true, true),
            "a failure ends at its error"
        );
        assert!(s.shows(&err, false, true) && !s.shows(&err, false, false));
        for (e, failed) in [(&started, false), (&finished(), true), (&err, false)] {
            assert!(Shown::All.shows(e, failed, false));
        }
    }

    #[test]
    fn the_stats_line_names_every_count() {
        let s = TurnStats {
            prompt_tokens: 12,
            prefilled_tokens: 3,
            thinking_tokens: 4,
            answer_tokens: 5,
            ttft_ms: 7.4,
            prefill_tok_s: 100.04,
            decode_tok_s: 9.96,
            ..TurnStats::default()
        };
        let line = stats_line(&s);
        assert!(
            line.starts_with("\n[12 prompt tokens (3 prefilled) · 4 thinking + 5 answer tokens · ttft 7 ms · prefill 100.0 tok/s · decode 10.0 tok/s · "),
            "{line}"
        );
        let spec = TurnStats {
            drafted_tokens: 40,
            accepted_tokens: 31,
            ..s
        };
        assert!(
            stats_line(&spec).contains("decode 10.0 tok/s (31 of 40 drafted tokens kept) · "),
            "{}",
            stats_line(&spec)
        );
    }

    #[test]
    fn tool_output_shows_twelve_lines_and_counts_the_rest() {
        let out: Vec<String> = (1..=14).map(|i| format!("l{i}")).collect();
        let shown = tool_output(&out.join("\n"));
        assert!(shown.starts_with("l1\n  l2"), "{shown}");
        assert!(shown.ends_with("l12\n  … 2 more lines"), "{shown}");
        assert_eq!(tool_output("one"), "one");
    }
}
