//! Tests of the workbench without a model: `update()` driven by scripted event sequences, and
//! insta snapshots of `TestBackend` renders for each view and state.

use super::app::{update, App, AppEvent, Phase, Scroll, View};
use super::view;
use aha_protocol::{EngineInfo, TurnId};
use aha_protocol::{Event, Op, TurnStats};
use aha_session::transcript::ReplyState;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn app() -> App {
    let mut a = App::new(EngineInfo {
        model: "r1-distill-qwen-1.5b".into(),
        device: "cpu (2 threads)".into(),
        context_length: 32768,
        reasoning: true,
    });
    a.size = (80, 24);
    a
}

fn ev(a: &mut App, e: Event) {
    a.now += 50;
    update(a, AppEvent::Agent(e));
}

fn think(a: &mut App, text: &str) {
    // Word-sized tokens with varied confidence, like a real trace.
    for (i, w) in text.split_inclusive(' ').enumerate() {
        ev(
            a,
            Event::ThinkingDelta {
                text: w.to_string(),
                logprob: Some(-((i % 9) as f32) * 0.25),
                entropy: Some((i % 6) as f32 * 0.6),
                top: Vec::new(),
            },
        );
    }
}

fn answer(a: &mut App, text: &str) {
    for w in text.split_inclusive(' ') {
        ev(
            a,
            Event::AnswerDelta {
                text: w.to_string(),
                logprob: None,
                entropy: None,
                top: Vec::new(),
            },
        );
    }
}

fn key(a: &mut App, code: KeyCode) {
    update(a, AppEvent::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn mkey(a: &mut App, code: KeyCode, m: KeyModifiers) {
    update(a, AppEvent::Key(KeyEvent::new(code, m)));
}

fn ctrl(a: &mut App, c: char) {
    mkey(a, KeyCode::Char(c), KeyModifiers::CONTROL);
}

fn typ(a: &mut App, s: &str) {
    for c in s.chars() {
        key(a, KeyCode::Char(c));
    }
}

/// Types a message, sends it, and plays the agent's turn_started.
fn ask(a: &mut App, q: &str) {
    typ(a, q);
    key(a, KeyCode::Enter);
    let turn = a.t.turns.len();
    assert!(
        matches!(a.outbox.last(), Some(Op::UserMessage { text, turn_id: Some(_) }) if text == q),
        "{:?}",
        a.outbox
    );
    a.outbox.clear();
    ev(
        a,
        Event::TurnStarted {
            turn,
            branch_of: None,
            prefix: String::new(),
        },
    );
}

fn finish(a: &mut App, reason: &str) {
    ev(
        a,
        Event::TurnFinished {
            stats: TurnStats {
                prompt_tokens: 40,
                prefilled_tokens: 40,
                thinking_tokens: 60,
                answer_tokens: 30,
                ttft_ms: 180.0,
                prefill_tok_s: 220.0,
                decode_tok_s: 19.5,
                finish_reason: aha_protocol::FinishReason::from_name(reason),
                ..TurnStats::default()
            },
            tokens: vec![],
        },
    );
}

fn render(a: &mut App, w: u16, h: u16) -> String {
    a.size = (w, h);
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::draw(a, f)).unwrap();
    t.backend().to_string()
}

const TRACE: &str = "The user asks for 17 times 24. Let me compute: 17 times 20 is 340, and 17 times 4 is 68.\n\nSo the total is 340 + 68 = 408. Wait, let me double-check that: 24 times 17 is 24 times 10 plus 24 times 7, which is 240 + 168 = 408.\n\nHmm, both ways give 408. Let me check the units too. But the question has no units. Alternatively I could estimate: 17 is about 20, 20 times 24 is 480, minus 3 times 24 is 72, 480 - 72 = 408.";

fn conversation() -> App {
    let mut a = app();
    ask(&mut a, "What is 17 × 24?");
    think(&mut a, TRACE);
    answer(&mut a, "**17 × 24 = 408.**\n\nTwo ways to see it:\n\n1. 17 × 20 + 17 × 4 = 340 + 68\n2. 24 × 10 + 24 × 7 = 240 + 168\n");
    finish(&mut a, "stop");
    a
}

// ---- update(): folding -------------------------------------------------------------------

#[test]
fn reasoning_streams_open_then_folds_when_the_answer_starts() {
    let mut a = app();
    ask(&mut a, "q");
    think(&mut a, "Let me think. Wait, no.");
    let r = a.t.live_reply().unwrap();
    assert!(!r.folded(), "open while it streams");
    assert_eq!(a.phase(), Phase::Thinking);
    answer(&mut a, "42");
    assert!(
        a.t.live_reply().unwrap().folded(),
        "folded once the answer starts"
    );
    assert_eq!(a.phase(), Phase::Answering);
    finish(&mut a, "stop");
    assert_eq!(a.phase(), Phase::Idle);
    ctrl(&mut a, 'o');
    let r = a.t.entries[a.t.turns[0]].reply().unwrap();
    assert!(!r.folded(), "Ctrl-O expands");
    ctrl(&mut a, 'o');
    assert!(a.t.entries[a.t.turns[0]].reply().unwrap().folded());
}

#[test]
fn a_trace_that_never_closes_think_folds_at_turn_end() {
    let mut a = app();
    ask(&mut a, "q");
    think(&mut a, "I keep thinking and never close the block");
    assert!(!a.t.live_reply().unwrap().folded());
    finish(&mut a, "length");
    let r = a.t.entries[a.t.turns[0]].reply().unwrap();
    assert!(r.folded() && r.parts.is_empty());
    assert_eq!(r.state, ReplyState::Done);
}

#[test]
fn fold_summary_counts_time_tokens_and_self_corrections() {
    let a = conversation();
    let r = a.t.entries[a.t.turns[0]].reply().unwrap();
    let s = view::chat::fold_summary(r, r.thought_ms.unwrap());
    assert!(s.starts_with("thought "), "{s}");
    assert!(s.contains(&format!("{} tokens", r.tokens.len())), "{s}");
    assert!(s.ends_with("1 self-correction"), "{s}");
}

// ---- update(): cancel, quit, composer ----------------------------------------------------

#[test]
fn esc_cancels_and_keeps_the_output() {
    let mut a = app();
    ask(&mut a, "q");
    think(&mut a, "partial thought");
    key(&mut a, KeyCode::Esc);
    assert_eq!(
        a.outbox,
        [Op::Cancel {
            turn_id: Some(TurnId(1))
        }],
        "the stop names the turn it means"
    );
    a.outbox.clear();
    finish(&mut a, "cancelled");
    let r = a.t.entries[a.t.turns[0]].reply().unwrap();
    assert_eq!(r.state, ReplyState::Cancelled);
    assert_eq!(r.reasoning, "partial thought");
    assert!(!a.quit);
    ask(&mut a, "second");
    assert_eq!(a.t.turns.len(), 2);
}

#[test]
fn esc_before_the_turn_starts_still_stops_it() {
    let mut a = app();
    typ(&mut a, "q");
    key(&mut a, KeyCode::Enter);
    a.outbox.clear();
    key(&mut a, KeyCode::Esc);
    assert_eq!(
        a.outbox,
        [Op::Cancel {
            turn_id: Some(TurnId(1))
        }],
        "a stop before the turn started names that turn: the agent stops it as it starts"
    );
    a.outbox.clear();
    ev(
        &mut a,
        Event::TurnStarted {
            turn: 0,
            branch_of: None,
            prefix: String::new(),
        },
    );
    assert!(
        a.outbox.is_empty(),
        "nothing is sent again once the turn exists"
    );
}

#[test]
fn ctrl_c_once_cancels_twice_quits() {
    let mut a = app();
    ask(&mut a, "q");
    ctrl(&mut a, 'c');
    assert!(
        matches!(a.outbox[..], [Op::Cancel { turn_id: Some(_) }]),
        "{:?}",
        a.outbox
    );
    assert!(!a.quit);
    a.now += 3000;
    ctrl(&mut a, 'c');
    assert!(!a.quit, "too far apart: not a double press");
    a.now += 500;
    ctrl(&mut a, 'c');
    assert!(a.quit);
}

#[test]
fn sending_while_a_reply_streams_is_refused_and_the_text_kept() {
    let mut a = app();
    ask(&mut a, "first");
    typ(&mut a, "second");
    key(&mut a, KeyCode::Enter);
    assert!(a.outbox.is_empty());
    assert_eq!(a.composer.text(), "second");
    assert!(a.flash.as_ref().unwrap().0.contains("Esc"));
}

#[test]
fn history_newlines_and_paste() {
    let mut a = app();
    ask(&mut a, "one");
    finish(&mut a, "stop");
    ask(&mut a, "two");
    finish(&mut a, "stop");
    key(&mut a, KeyCode::Up);
    assert_eq!(a.composer.text(), "two");
    key(&mut a, KeyCode::Up);
    assert_eq!(a.composer.text(), "one");
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Down);
    assert_eq!(a.composer.text(), "");
    typ(&mut a, "a");
    mkey(&mut a, KeyCode::Enter, KeyModifiers::ALT);
    mkey(&mut a, KeyCode::Enter, KeyModifiers::SHIFT);
    typ(&mut a, "b");
    assert_eq!(a.composer.text(), "a\n\nb");
    update(&mut a, AppEvent::Paste("x\r\ny\u{1b}[31m".into()));
    assert_eq!(a.composer.text(), "a\n\nbx\ny[31m");
}

#[test]
fn slash_commands_complete_and_send_ops() {
    let mut a = app();
    typ(&mut a, "/th");
    assert!(a.popup_open());
    key(&mut a, KeyCode::Tab);
    assert_eq!(a.composer.text(), "/think ");
    typ(&mut a, "budget 256");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.outbox,
        [Op::SetThinking {
            mode: aha_protocol::ThinkMode::parse("auto").unwrap(),
            budget: Some(256)
        }]
    );
    a.outbox.clear();
    typ(&mut a, "/think off");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.outbox,
        [Op::SetThinking {
            mode: aha_protocol::ThinkMode::parse("off").unwrap(),
            budget: Some(256)
        }]
    );
    a.outbox.clear();
    typ(&mut a, "/approve auto-edit");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.outbox,
        [Op::SetPolicy {
            policy: aha_protocol::Policy::parse("auto-edit").unwrap()
        }]
    );
    a.outbox.clear();
    typ(&mut a, "/search 대통령 임기");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.outbox,
        [Op::Search {
            query: "대통령 임기".into()
        }]
    );
    a.outbox.clear();
    typ(&mut a, "/index docs");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.outbox,
        [Op::Index {
            paths: vec!["docs".into()]
        }]
    );
    typ(&mut a, "/open docs/a.md:7");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.effects, [super::app::Effect::Open("docs/a.md".into(), 7)]);
    a.effects.clear();
    typ(&mut a, "/export");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.effects, [super::app::Effect::Export(None)]);
    a.effects.clear();
    typ(&mut a, "/export --html x.html");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.effects,
        [super::app::Effect::ExportHtml(Some("x.html".into()))]
    );
    typ(&mut a, "/bogus");
    key(&mut a, KeyCode::Enter);
    assert!(a.flash.as_ref().unwrap().0.contains("unknown command"));
    typ(&mut a, "/quit");
    key(&mut a, KeyCode::Enter);
    assert!(a.quit);
}

#[test]
fn clear_forgets_the_transcript() {
    let mut a = conversation();
    typ(&mut a, "/clear");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.outbox, [Op::Clear]);
    assert!(a.t.turns.is_empty());
}

#[test]
fn model_lists_the_downloaded_models_the_caller_gave() {
    use aha_session::transcript::EntryKind;
    let notice = |a: &App| match a.t.entries.last().map(|e| &e.kind) {
        Some(EntryKind::Notice(m)) => m.clone(),
        other => panic!("expected a notice, got {other:?}"),
    };
    let mut a = app();
    typ(&mut a, "/model");
    key(&mut a, KeyCode::Enter);
    let m = notice(&a);
    assert!(
        m.contains("model r1-distill-qwen-1.5b on cpu (2 threads)"),
        "{m}"
    );
    assert!(m.contains("downloaded: none"), "{m}");
    let mut a = app();
    a.downloaded = vec!["smollm2-135m".into(), "qwen2.5-0.5b".into()];
    typ(&mut a, "/model");
    key(&mut a, KeyCode::Enter);
    let m = notice(&a);
    assert!(m.contains("downloaded: smollm2-135m, qwen2.5-0.5b"), "{m}");
    assert!(a.outbox.is_empty());
}

// ---- update(): scrolling -----------------------------------------------------------------

#[test]
fn scrolling_holds_still_while_output_arrives_and_follows_again_at_the_bottom() {
    let mut a = app();
    for i in 0..20 {
        ask(&mut a, &format!("question {i}"));
        answer(&mut a, &format!("answer {i}, a line of text"));
        finish(&mut a, "stop");
    }
    ask(&mut a, "last");
    let before = render(&mut a, 80, 24);
    key(&mut a, KeyCode::PageUp);
    assert!(matches!(a.scroll, Scroll::At { .. }));
    let up = render(&mut a, 80, 24);
    assert_ne!(before, up);
    answer(&mut a, "new words arrive ");
    answer(&mut a, "and more\n\nand more");
    let still = render(&mut a, 80, 24);
    let body = |s: &str| s.lines().take(15).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&up), body(&still), "the view did not move");
    for _ in 0..3 {
        update(
            &mut a,
            AppEvent::Mouse(MouseEvent {
                kind: MouseEventKind::ScrollUp,
                column: 0,
                row: 0,
                modifiers: KeyModifiers::NONE,
            }),
        );
    }
    let Scroll::At { entry: e1, .. } = a.scroll else {
        panic!()
    };
    key(&mut a, KeyCode::PageDown);
    key(&mut a, KeyCode::PageDown);
    key(&mut a, KeyCode::PageDown);
    assert_eq!(
        a.scroll,
        Scroll::Follow,
        "back at the bottom: following again"
    );
    let _ = e1;
    let end = render(&mut a, 80, 24);
    assert!(end.contains("and more"));
    mkey(&mut a, KeyCode::Home, KeyModifiers::CONTROL);
    assert!(render(&mut a, 80, 24).contains("question 0"));
    mkey(&mut a, KeyCode::End, KeyModifiers::CONTROL);
    assert_eq!(a.scroll, Scroll::Follow);
}

#[test]
fn layout_is_cached_per_entry_and_width() {
    let mut a = conversation();
    render(&mut a, 80, 24);
    a.layout.borrow_mut().misses = 0;
    render(&mut a, 80, 24);
    assert_eq!(
        a.layout.borrow().misses,
        0,
        "nothing changed: nothing laid out"
    );
    ask(&mut a, "more");
    think(&mut a, "x");
    render(&mut a, 80, 24);
    assert!(a.layout.borrow().misses <= 2, "only the new entries");
    a.layout.borrow_mut().misses = 0;
    render(&mut a, 60, 24);
    assert!(a.layout.borrow().misses >= 1, "a new width lays out again");
}

#[test]
fn resize_storm_while_streaming_never_breaks_the_layout() {
    let mut a = conversation();
    ask(&mut a, "again");
    for (i, (w, h)) in [
        (80, 24),
        (20, 6),
        (200, 60),
        (33, 9),
        (10, 3),
        (120, 40),
        (41, 13),
    ]
    .into_iter()
    .cycle()
    .take(60)
    .enumerate()
    {
        update(&mut a, AppEvent::Resize(w, h));
        think(&mut a, &format!("word{i} "));
        let s = render(&mut a, w, h);
        assert_eq!(s.lines().count(), h as usize);
    }
}

// ---- update(): trace explorer, pause, step, branch ----------------------------------------

fn open_trace(a: &mut App) {
    ctrl(a, 't');
    assert!(matches!(a.view, View::Trace(_)));
}

#[test]
fn pause_step_and_stop_from_the_trace_explorer() {
    let mut a = app();
    ask(&mut a, "q");
    think(&mut a, "First step.\n\nSecond");
    open_trace(&mut a);
    key(&mut a, KeyCode::Char(' '));
    assert_eq!(a.outbox, [Op::Pause]);
    a.outbox.clear();
    ev(&mut a, Event::Paused);
    assert_eq!(a.phase(), Phase::Paused);
    key(&mut a, KeyCode::Char(' '));
    assert_eq!(a.outbox, [Op::Resume]);
    a.outbox.clear();
    ev(&mut a, Event::Resumed);
    assert_eq!(a.phase(), Phase::Thinking);
    key(&mut a, KeyCode::Char('s'));
    assert_eq!(a.outbox, [Op::Step]);
    a.outbox.clear();
    think(&mut a, " step.\n\n");
    ev(&mut a, Event::Paused);
    assert_eq!(a.phase(), Phase::Paused);
    key(&mut a, KeyCode::Char('x'));
    assert!(
        matches!(a.outbox[..], [Op::Cancel { turn_id: Some(_) }]),
        "{:?}",
        a.outbox
    );
    a.outbox.clear();
    finish(&mut a, "cancelled");
    key(&mut a, KeyCode::Char(' '));
    assert!(a.outbox.is_empty(), "nothing to pause once it ended");
    key(&mut a, KeyCode::Esc);
    assert_eq!(a.view, View::Chat);
}

#[test]
fn branching_sends_the_prefix_and_keeps_both_versions() {
    let mut a = conversation();
    ask(&mut a, "and a follow-up");
    answer(&mut a, "ok");
    finish(&mut a, "stop");
    mkey(&mut a, KeyCode::Up, KeyModifiers::ALT);
    open_trace(&mut a);
    let View::Trace(tv) = &a.view else { panic!() };
    assert_eq!(tv.turn, 0, "Alt-Up focused the first turn");
    // Select step 2 ("So the total…") and branch there with inserted text.
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Char('b'));
    typ(&mut a, "Actually, let me verify with long multiplication. ");
    key(&mut a, KeyCode::Enter);
    let expected = "<think>\nThe user asks for 17 times 24. Let me compute: 17 times 20 is 340, and 17 times 4 is 68.\n\nActually, let me verify with long multiplication. ";
    assert!(
        matches!(&a.outbox[..], [Op::Branch { turn: 0, prefix, turn_id: Some(_) }] if prefix == expected),
        "{:?}",
        a.outbox
    );
    a.outbox.clear();
    ev(
        &mut a,
        Event::TurnStarted {
            turn: 0,
            branch_of: Some(0),
            prefix: expected.into(),
        },
    );
    think(&mut a, "17 × 24: 7 × 4 = 28, carry 2 … = 408.");
    answer(&mut a, "408");
    finish(&mut a, "stop");
    let (versions, active) = a.t.versions(0).unwrap();
    assert_eq!((versions.len(), active), (2, 1));
    let b = versions[1].branch.as_ref().unwrap();
    assert_eq!(b.parent, 0);
    assert!(b.kept > 10);
    assert!(versions[1].tokens[..b.kept]
        .iter()
        .all(|t| t.inherited && t.logprob.is_some()));
    assert!(versions[1].reasoning.starts_with("The user asks"));
    assert_eq!(
        versions[0].later.len(),
        2,
        "the follow-up stays with the original"
    );
    assert_eq!(a.t.turns.len(), 1);
    key(&mut a, KeyCode::Char('c'));
    let View::Trace(tv) = &a.view else { panic!() };
    assert!(tv.compare);
    key(&mut a, KeyCode::Char('e'));
    let View::Trace(tv) = &a.view else { panic!() };
    assert!(tv.entropy);
}

#[test]
fn thinking_budget_cycles_and_applies_to_the_next_turn() {
    let mut a = conversation();
    open_trace(&mut a);
    key(&mut a, KeyCode::Char('t'));
    assert_eq!(
        a.outbox,
        [Op::SetThinking {
            mode: aha_protocol::ThinkMode::parse("auto").unwrap(),
            budget: Some(256)
        }]
    );
    for _ in 0..4 {
        key(&mut a, KeyCode::Char('t'));
    }
    assert_eq!(a.think_budget, None, "256, 512, 1024, 2048, off");
}

#[test]
fn approvals_are_answered_once_for_session_or_denied() {
    let mut a = app();
    ask(&mut a, "write the file");
    ev(
        &mut a,
        Event::ToolCall {
            id: "c1".into(),
            name: "write_file".into(),
            arguments: serde_json::json!({"path": "notes.md"}),
        },
    );
    ev(
        &mut a,
        Event::ApprovalRequest {
            id: "c1".into(),
            name: "write_file".into(),
            summary: "write 120 bytes to notes.md".into(),
        },
    );
    assert_eq!(a.phase(), Phase::Approval);
    typ(&mut a, "zz");
    assert!(
        a.outbox.is_empty(),
        "other keys do nothing while the dialog is up"
    );
    key(&mut a, KeyCode::Char('a'));
    assert_eq!(a.phase(), Phase::Tool, "approved: the tool runs");
    assert_eq!(
        a.outbox,
        [Op::Approve {
            id: "c1".into(),
            approved: true,
            remember: true
        }]
    );
    a.outbox.clear();
    ev(
        &mut a,
        Event::ToolResult {
            id: "c1".into(),
            ok: true,
            output: "wrote notes.md".into(),
            duration_ms: 3,
        },
    );
    ev(
        &mut a,
        Event::ApprovalRequest {
            id: "c2".into(),
            name: "run_code".into(),
            summary: "python: print(1)".into(),
        },
    );
    key(&mut a, KeyCode::Esc);
    assert_eq!(
        a.outbox,
        [Op::Approve {
            id: "c2".into(),
            approved: false,
            remember: false
        }]
    );
    assert_eq!(a.phase(), Phase::Answering, "no dialog left");
}

// ---- snapshots ---------------------------------------------------------------------------

#[test]
fn snapshot_welcome() {
    insta::assert_snapshot!(render(&mut app(), 80, 16));
}

#[test]
fn snapshot_streaming_reasoning() {
    let mut a = app();
    ask(&mut a, "What is 17 × 24?");
    think(&mut a, &TRACE[..260]);
    insta::assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn snapshot_folded_reasoning() {
    insta::assert_snapshot!(render(&mut conversation(), 80, 20));
}

#[test]
fn snapshot_expanded_reasoning() {
    let mut a = conversation();
    ctrl(&mut a, 'o');
    insta::assert_snapshot!(render(&mut a, 80, 30));
}

#[test]
fn snapshot_answer_with_code_block_and_table() {
    let mut a = app();
    ask(&mut a, "Show a Rust hello world and compare languages.");
    think(&mut a, "Simple request. A code block, then a table.");
    answer(
        &mut a,
        "# Hello\n\nHere is *idiomatic* Rust:\n\n```rust\nfn main() {\n    println!(\"Hello, world!\");\n}\n```\n\n| Language | Typing | Speed |\n|----------|:------:|------:|\n| Rust | static | fast |\n| Python | dynamic | slow |\n\n> Tip: run `cargo run`.\n",
    );
    finish(&mut a, "stop");
    insta::assert_snapshot!(render(&mut a, 80, 30));
}

#[test]
fn snapshot_trace_explorer_with_heatmap() {
    let mut a = conversation();
    open_trace(&mut a);
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Down);
    insta::assert_snapshot!(render(&mut a, 110, 24));
}

#[test]
fn snapshot_trace_explorer_entropy_narrow() {
    let mut a = conversation();
    open_trace(&mut a);
    key(&mut a, KeyCode::Char('e'));
    insta::assert_snapshot!(render(&mut a, 60, 24));
}

#[test]
fn snapshot_paused() {
    let mut a = app();
    ask(&mut a, "What is 17 × 24?");
    think(&mut a, &TRACE[..200]);
    ev(&mut a, Event::Paused);
    let chat = render(&mut a, 80, 20);
    open_trace(&mut a);
    let trace = render(&mut a, 100, 20);
    insta::assert_snapshot!(format!("{chat}\n{trace}"));
}

#[test]
fn snapshot_branch_input_and_compare() {
    let mut a = conversation();
    open_trace(&mut a);
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Down);
    key(&mut a, KeyCode::Char('b'));
    typ(&mut a, "Actually, let me verify.");
    let input = render(&mut a, 100, 16);
    key(&mut a, KeyCode::Enter);
    let Some(Op::Branch { prefix, .. }) = a.outbox.last().cloned() else {
        panic!()
    };
    ev(
        &mut a,
        Event::TurnStarted {
            turn: 0,
            branch_of: Some(0),
            prefix,
        },
    );
    think(&mut a, " Long multiplication: 17 × 24 = 408. Both agree.");
    answer(&mut a, "**408**, verified.");
    finish(&mut a, "stop");
    key(&mut a, KeyCode::Char('c'));
    let compare = render(&mut a, 120, 24);
    key(&mut a, KeyCode::Esc);
    key(&mut a, KeyCode::Esc);
    let chat = render(&mut a, 80, 16);
    insta::assert_snapshot!(format!("{input}\n{compare}\n{chat}"));
}

#[test]
fn snapshot_help_overlay() {
    let mut a = conversation();
    key(&mut a, KeyCode::Char('?'));
    assert!(a.help.is_some());
    insta::assert_snapshot!(render(&mut a, 90, 40));
    key(&mut a, KeyCode::Char('x'));
    assert!(a.help.is_none());
}

#[test]
fn snapshot_korean_conversation() {
    let mut a = app();
    ask(&mut a, "서울에서 부산까지 KTX로 얼마나 걸려요?");
    think(&mut a, "사용자는 KTX 소요 시간을 묻고 있다. 보통 2시간 30분 정도다.\n\n잠깐, 정차역에 따라 다르다. Wait, 직통은 약 2시간 15분이다.");
    answer(&mut a, "서울역에서 부산역까지 **KTX**로 약 2시간 15분~2시간 40분 걸립니다.\n\n| 열차 | 시간 |\n|---|---|\n| 직통 | 2시간 15분 |\n| 일반 | 2시간 40분 |\n");
    finish(&mut a, "stop");
    typ(&mut a, "고마워요 한국어");
    insta::assert_snapshot!(render(&mut a, 60, 22));
}

#[test]
fn snapshot_small_40x12() {
    let mut a = conversation();
    ask(&mut a, "And 18 × 24?");
    think(&mut a, "Add 24 to 408: 432.");
    insta::assert_snapshot!(render(&mut a, 40, 12));
}

#[test]
fn snapshot_large_200x60() {
    let mut a = conversation();
    ask(&mut a, "Show code");
    think(&mut a, "A short Python function.");
    answer(
        &mut a,
        "```python\ndef mul(a, b):\n    return a * b\n\nprint(mul(17, 24))\n```\n",
    );
    finish(&mut a, "stop");
    insta::assert_snapshot!(render(&mut a, 200, 60));
}

#[test]
fn snapshot_too_small() {
    insta::assert_snapshot!(render(&mut conversation(), 18, 5));
}

#[test]
fn snapshot_tool_cards_and_approval_dialog() {
    let mut a = app();
    ask(&mut a, "Save a note and run a check");
    think(&mut a, "I will write the file, then run python.");
    ev(
        &mut a,
        Event::ToolCall {
            id: "c1".into(),
            name: "write_file".into(),
            arguments: serde_json::json!({"path": "notes.md", "content": "# Notes"}),
        },
    );
    ev(
        &mut a,
        Event::ToolResult {
            id: "c1".into(),
            ok: true,
            output: "wrote 7 bytes to notes.md".into(),
            duration_ms: 2,
        },
    );
    ev(
        &mut a,
        Event::ToolCall {
            id: "c2".into(),
            name: "run_code".into(),
            arguments: serde_json::json!({"language": "python", "code": "print(17*24)"}),
        },
    );
    ev(
        &mut a,
        Event::ApprovalRequest {
            id: "c2".into(),
            name: "run_code".into(),
            summary: "python: print(17*24)".into(),
        },
    );
    insta::assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn snapshot_mcp_status() {
    // `/mcp` asks the agent; its answer is a notice that lists each server.
    let mut a = app();
    typ(&mut a, "/mcp");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.outbox, [Op::Mcp]);
    ev(
        &mut a,
        Event::Notice {
            message: "MCP servers:\n\
                      everything: ready (stdio: mcp-server-everything), trust ask, 2 tools\n  \
                      everything__echo (acts): Echoes back the input\n  \
                      everything__add (acts): Adds two numbers\n\
                      notes: crashed (http: http://127.0.0.1:8931/mcp), trust read-only, 1 tool\n  \
                      notes__find (reads): Finds notes\n  \
                      last error: it stopped during a call to `find` (Transport closed)\n\
                      old: disabled (stdio: mcp-old), trust ask"
                .into(),
        },
    );
    insta::assert_snapshot!(render(&mut a, 80, 16));
}

#[test]
fn snapshot_slash_popup() {
    let mut a = conversation();
    typ(&mut a, "/");
    insta::assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn a_frame_lays_out_only_what_it_shows_however_long_the_transcript() {
    let mut a = super::bench::synthetic_app(10_000);
    assert_eq!(a.t.entries.len(), 10_000);
    render(&mut a, 120, 40);
    let first = a.layout.borrow().misses;
    assert!(first < 30, "laid out {first} entries for one screen");
    key(&mut a, KeyCode::PageUp);
    key(&mut a, KeyCode::PageUp);
    render(&mut a, 120, 40);
    assert!(a.layout.borrow().misses < 60);
    mkey(&mut a, KeyCode::Home, KeyModifiers::CONTROL);
    let top = render(&mut a, 120, 40);
    assert!(top.contains("Question 0:"), "{top}");
}

#[test]
fn long_diff_approval_keeps_the_choices_visible() {
    let mut a = app();
    ask(&mut a, "Rewrite notes.md");
    ev(
        &mut a,
        Event::ToolCall {
            id: "w1".into(),
            name: "write_file".into(),
            arguments: serde_json::json!({"path": "notes.md", "content": "x"}),
        },
    );
    let mut diff =
        String::from("write notes.md\n--- a/notes.md\n+++ b/notes.md\n@@ -1,40 +1,40 @@\n");
    for i in 0..40 {
        diff.push_str(&format!("-old line {i}\n+new line {i}\n"));
    }
    ev(
        &mut a,
        Event::ApprovalRequest {
            id: "w1".into(),
            name: "write_file".into(),
            summary: diff,
        },
    );
    let screen = render(&mut a, 80, 24);
    assert!(screen.contains("[y] approve once"), "{screen}");
    assert!(screen.contains("more lines"), "{screen}");
    assert!(screen.contains("-old line 0"), "{screen}");
    assert!(screen.contains("+new line 39"), "{screen}");
}

// ---- research mode -----------------------------------------------------------------------

#[test]
fn research_mode_shows_sources_folded_and_marks_each_citation() {
    let mut a = app();
    typ(&mut a, "/research on");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.outbox, [Op::SetResearch { on: true }]);
    assert!(a.research);
    a.outbox.clear();
    ask(&mut a, "대통령의 임기는 몇 년인가요?");
    ev(
        &mut a,
        Event::Retrieval {
            query: "대통령의 임기는 몇 년인가요?".into(),
            hits: vec![
                aha_protocol::Source {
                    path: "ko/constitution.txt".into(),
                    line: 175,
                    start_line: 174,
                    end_line: 176,
                    // A document's heading is text from a file: an escape in it is dropped.
                    heading: "제4장\u{1b}[2J 정부".into(),
                },
                aha_protocol::Source {
                    path: "ko/constitution.txt".into(),
                    line: 250,
                    start_line: 249,
                    end_line: 251,
                    heading: String::new(),
                },
            ],
            tokens: 412,
        },
    );
    answer(
        &mut a,
        "대통령의 임기는 5년입니다. 감사위원의 임기는 7년입니다.",
    );
    for (line, ok, attached, reason) in [
        (175, true, true, "the passage states 5"),
        (250, false, false, "the passage does not state 7"),
    ] {
        ev(
            &mut a,
            Event::Citation {
                path: "ko/constitution.txt".into(),
                line,
                ok,
                reason: reason.into(),
                attached,
                claim: String::new(),
                quote: if ok {
                    "제70조 대통령의 임기는 5년으로 하며, 중임할 수 없다.".into()
                } else {
                    String::new()
                },
            },
        );
    }
    ev(
        &mut a,
        Event::AnswerCheck {
            supported: false,
            abstained: false,
            claims: 2,
            supported_claims: 1,
            unsupported_numbers: vec!["7".into()],
        },
    );
    finish(&mut a, "stop");
    let screen = render(&mut a, 100, 30);
    assert!(
        screen.contains("research"),
        "the status bar says so:\n{screen}"
    );
    assert!(
        screen.contains(
            "▸ sources · 2 passages · 412 tokens · ko/constitution.txt:175, ko/constitution.txt:250"
        ),
        "{screen}"
    );
    assert!(
        screen.contains("✓ [ko/constitution.txt:175] · found by aha · the passage states 5"),
        "{screen}"
    );
    assert!(
        screen.contains("✗ [ko/constitution.txt:250] · the passage does not state 7"),
        "{screen}"
    );
    assert!(
        screen.contains("“제70조 대통령의 임기는 5년으로 하며, 중임할 수 없다.”"),
        "the cited line is quoted:\n{screen}"
    );
    assert!(screen.contains("⚠ no passage the model read supports all of this answer"));
    assert!(screen.contains("⚠ numbers in no cited passage: 7"));
    assert!(!screen.contains("제4장"), "folded: one line");
    // The fold key opens the card: a line per passage, with its heading.
    ctrl(&mut a, 'o');
    let screen = render(&mut a, 100, 30);
    assert!(
        screen.contains("│ ko/constitution.txt:174-176 · 제4장[2J 정부"),
        "{screen}"
    );
    assert!(!screen.contains('\u{1b}'));
    typ(&mut a, "/research off");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.outbox, [Op::SetResearch { on: false }]);
    assert!(!a.research);
}

#[test]
fn compact_is_sent_by_hand_and_a_compaction_draws_a_rule_with_the_summary() {
    let mut a = app();
    ask(&mut a, "The codename is KESTREL-7.");
    answer(&mut a, "OK.");
    finish(&mut a, "stop");
    a.outbox.clear();
    typ(&mut a, "/compact");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.outbox, [Op::Compact]);
    ev(
        &mut a,
        Event::Compacted {
            before: 1_900,
            after: 1_210,
            context: 2_048,
            elided: 3,
            summarized_turns: 4,
            // The summary is the model's text: an escape in it is dropped.
            summary: "- the codename is KESTREL-7\u{1b}[2J\n\n- part_01.txt is amber".into(),
            manual: true,
        },
    );
    let screen = render(&mut a, 100, 30);
    assert!(
        screen.contains(
            "─ conversation compacted: 1900 → 1210 tokens of 2048 (3 tool results cut, 4 turns summarized) ─"
        ),
        "{screen}"
    );
    assert!(
        screen.contains("  - the codename is KESTREL-7[2J"),
        "{screen}"
    );
    assert!(screen.contains("  - part_01.txt is amber"), "{screen}");
    assert!(!screen.contains('\u{1b}'));
    // What came before the rule is still on screen: only the model's copy was compacted.
    assert!(screen.contains("The codename is KESTREL-7."), "{screen}");
}

// ---- the microscope: token cursor, alternatives, forks, loops, budget forcing --------------

/// A reply whose tokens carry the alternatives the model weighed: each word token has two
/// others; `flat` marks tokens with a high entropy (forks).
fn think_top(a: &mut App, words: &[(&str, bool)]) {
    for (i, (w, flat)) in words.iter().enumerate() {
        let lp = if *flat { -1.2 } else { -0.05 };
        ev(
            a,
            Event::ThinkingDelta {
                text: w.to_string(),
                logprob: Some(lp),
                entropy: Some(if *flat {
                    2.4
                } else {
                    0.1 + (i % 3) as f32 * 0.05
                }),
                top: vec![
                    aha_protocol::TopToken {
                        text: w.to_string(),
                        logprob: lp,
                    },
                    aha_protocol::TopToken {
                        text: format!(" alt{i}"),
                        logprob: -1.6,
                    },
                    aha_protocol::TopToken {
                        text: " Wait".into(),
                        logprob: -2.3,
                    },
                ],
            },
        );
    }
}

const FORKY: &[(&str, bool)] = &[
    ("The", false),
    (" bat", false),
    (" and", false),
    (" ball", false),
    (" cost", false),
    (" 1.10", false),
    (".", false),
    (" So", true),
    (" the", false),
    (" ball", false),
    (" is", false),
    (" 0.05", true),
    (".", false),
];

fn forky() -> App {
    let mut a = app();
    ask(&mut a, "A bat and a ball cost 1.10 in total…");
    think_top(&mut a, FORKY);
    answer(&mut a, "The ball costs 0.05.");
    finish(&mut a, "stop");
    a
}

#[test]
fn the_token_cursor_moves_by_token_and_tab_jumps_to_forks() {
    let mut a = forky();
    open_trace(&mut a);
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Right);
    let cursor = |a: &App| match &a.view {
        View::Trace(tv) => tv.cursor,
        _ => panic!(),
    };
    assert_eq!(
        cursor(&a),
        Some(0),
        "the cursor starts at the step's first token"
    );
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Right);
    assert_eq!(cursor(&a), Some(2));
    key(&mut a, KeyCode::Left);
    assert_eq!(cursor(&a), Some(1));
    key(&mut a, KeyCode::Tab);
    assert_eq!(cursor(&a), Some(7), "the first fork: “ So”");
    key(&mut a, KeyCode::Tab);
    assert_eq!(cursor(&a), Some(11));
    key(&mut a, KeyCode::Tab);
    assert_eq!(cursor(&a), Some(11), "no fork after the last");
    assert!(a.flash.as_ref().unwrap().0.contains("no fork after"));
    mkey(&mut a, KeyCode::BackTab, KeyModifiers::SHIFT);
    assert_eq!(cursor(&a), Some(7));
    // Moving by step drops the cursor.
    key(&mut a, KeyCode::Up);
    assert_eq!(cursor(&a), None);
    // Versions moved to [ and ].
    key(&mut a, KeyCode::Char(']'));
    assert!(a.outbox.is_empty());
}

#[test]
fn a_digit_branches_on_that_alternative_at_the_cursor() {
    let mut a = forky();
    open_trace(&mut a);
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Tab);
    // Alternatives at “ So”: 1 “ alt7”, 2 “ Wait”.
    key(&mut a, KeyCode::Char('2'));
    let Some(Op::Branch { turn, prefix, .. }) = a.outbox.last().cloned() else {
        panic!("{:?}", a.outbox)
    };
    assert_eq!(turn, 0);
    assert_eq!(prefix, "<think>\nThe bat and ball cost 1.10. Wait");
    assert!(a.flash.as_ref().unwrap().0.contains("token 8 with “ Wait”"));
    // The branch's first new token keeps the alternative's probability.
    ev(
        &mut a,
        Event::TurnStarted {
            turn: 0,
            branch_of: Some(0),
            prefix,
        },
    );
    think(&mut a, ", the ball is 0.05.");
    let r = a.t.live_reply().unwrap();
    let w = r.tokens.iter().find(|t| t.text == " Wait").unwrap();
    assert_eq!(w.logprob, Some(-2.3));
    assert_eq!(
        w.entropy,
        Some(2.4),
        "the parent's distribution at that token"
    );
    // A digit with no such alternative says so.
    finish(&mut a, "stop");
    let mut b = forky();
    open_trace(&mut b);
    key(&mut b, KeyCode::Right);
    key(&mut b, KeyCode::Char('7'));
    assert!(b.outbox.is_empty());
    assert!(b.flash.as_ref().unwrap().0.contains("no alternative 7"));
}

#[test]
fn forks_are_bold_and_counted_per_step() {
    let mut a = forky();
    open_trace(&mut a);
    a.size = (100, 20);
    let mut t = Terminal::new(TestBackend::new(100, 20)).unwrap();
    t.draw(|f| view::draw(&a, f)).unwrap();
    let buf = t.backend().buffer().clone();
    // Find “So” in the heat pane and check its style.
    let mut found = None;
    for y in 0..20 {
        for x in 41..99 {
            if buf[(x, y)].symbol() == "S" && buf[(x + 1, y)].symbol() == "o" {
                found = Some((x, y));
            }
        }
    }
    let (x, y) = found.expect("“So” drawn");
    assert!(buf[(x, y)]
        .modifier
        .contains(ratatui::style::Modifier::BOLD));
    let b = buf[(x - 4, y)].modifier;
    assert!(
        !b.contains(ratatui::style::Modifier::BOLD),
        "“ bat” is no fork"
    );
    let text = render(&mut a, 100, 20);
    assert!(text.contains("2 forks"), "{text}");
    assert!(text.contains("⑂2"), "{text}");
}

#[test]
fn a_loop_is_a_notice_a_mark_in_the_trace_and_a_count_in_the_header() {
    let mut a = app();
    ask(&mut a, "q");
    let s = "But we know the bat costs 1.00 more than the ball. ";
    think(&mut a, &s.repeat(3));
    ev(
        &mut a,
        Event::ReasoningLoop {
            count: 3,
            text: s.trim().into(),
            action: aha_protocol::LoopAction::Warn,
        },
    );
    think(&mut a, s);
    ev(
        &mut a,
        Event::ReasoningLoop {
            count: 4,
            text: s.trim().into(),
            action: aha_protocol::LoopAction::Warn,
        },
    );
    let r = a.t.live_reply().unwrap();
    assert_eq!(r.loops.len(), 1, "a loop that goes on updates its mark");
    assert_eq!(r.loops[0].count, 4);
    let chat = render(&mut a, 100, 24);
    assert_eq!(
        chat.matches("reasoning is repeating itself (3×)").count(),
        1,
        "{chat}"
    );
    open_trace(&mut a);
    let trace = render(&mut a, 160, 24);
    assert!(trace.contains("↻4×"), "{trace}");
    assert!(trace.contains("1 loop"), "{trace}");
}

#[test]
fn the_min_key_cycles_budget_forcing_and_loops_has_a_command() {
    let mut a = conversation();
    open_trace(&mut a);
    key(&mut a, KeyCode::Char('m'));
    assert_eq!(a.outbox, [Op::SetThinkMin { min: Some(128) }]);
    for _ in 0..4 {
        key(&mut a, KeyCode::Char('m'));
    }
    assert_eq!(a.trace.think_min, None, "128, 256, 512, 1024, off");
    key(&mut a, KeyCode::Esc);
    a.outbox.clear();
    typ(&mut a, "/loops nudge");
    key(&mut a, KeyCode::Enter);
    assert_eq!(
        a.outbox,
        [Op::SetLoops {
            action: aha_protocol::LoopAction::Nudge
        }]
    );
    a.outbox.clear();
    typ(&mut a, "/think min 300");
    key(&mut a, KeyCode::Enter);
    assert_eq!(a.outbox, [Op::SetThinkMin { min: Some(300) }]);
    open_trace(&mut a);
    assert!(render(&mut a, 140, 20).contains("min 300"));
}

#[test]
fn snapshot_trace_token_cursor_with_alternatives_and_confidence_curve() {
    let mut a = app();
    ask(&mut a, "A bat and a ball cost 1.10 in total…");
    think_top(&mut a, FORKY);
    // A loop flagged after the first sentence (as the engine reports it), marked ↻ there.
    ev(
        &mut a,
        Event::ReasoningLoop {
            count: 3,
            text: "The bat and ball cost 1.10.".into(),
            action: aha_protocol::LoopAction::Warn,
        },
    );
    think_top(&mut a, &FORKY[..3]);
    answer(&mut a, "The ball costs 0.05.");
    finish(&mut a, "stop");
    open_trace(&mut a);
    key(&mut a, KeyCode::Home);
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Tab);
    insta::assert_snapshot!(render(&mut a, 110, 18));
}

/// An agent that records the ops it is sent.
struct Recorder(Vec<Op>, EngineInfo);

impl aha_protocol::AgentLink for Recorder {
    fn send(&mut self, op: Op) {
        self.0.push(op);
    }
    fn try_recv(&mut self) -> Option<Event> {
        None
    }
    fn info(&self) -> &EngineInfo {
        &self.1
    }
}

#[test]
fn thinking_settings_are_remembered_and_a_resumed_session_thinks_as_it_did() {
    use aha_session::thinking::ThinkingSettings;
    let mut a = app();
    let mut agent = Recorder(Vec::new(), a.info.clone());
    let s = ThinkingSettings {
        think: Some(aha_protocol::ThinkMode::On),
        budget: Some(512),
        think_min: Some(128),
        loops: Some(aha_protocol::LoopAction::Nudge),
    };
    super::set_thinking(&mut a, &mut agent, &s);
    assert_eq!(
        agent.0,
        [
            Op::SetThinking {
                mode: aha_protocol::ThinkMode::On,
                budget: Some(512)
            },
            Op::SetThinkMin { min: Some(128) },
            Op::SetLoops {
                action: aha_protocol::LoopAction::Nudge
            },
        ]
    );
    assert_eq!(
        (a.think_budget, a.trace.think_min, a.trace.loops),
        (Some(512), Some(128), aha_protocol::LoopAction::Nudge)
    );
    // Already so: nothing is sent again.
    agent.0.clear();
    super::set_thinking(&mut a, &mut agent, &s);
    assert!(agent.0.is_empty());

    // A session that changed thinking resumes with its own settings.
    let dir = std::env::temp_dir().join(format!("aha-tui-thinking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sessions_dir = dir.join("sessions");
    let mut log = aha_session::SessionLog::create(&sessions_dir, "s1", "m").unwrap();
    log.op(1, &Op::SetThinkMin { min: Some(300) }).unwrap();
    log.op(
        2,
        &Op::SetLoops {
            action: aha_protocol::LoopAction::Stop,
        },
    )
    .unwrap();
    log.flush().unwrap();
    let path = log.path.clone();
    drop(log);
    let mut b = app();
    let mut agent = Recorder(Vec::new(), b.info.clone());
    let mut sessions = super::Sessions::new(sessions_dir, "m");
    assert_eq!(
        sessions.thinking_file,
        dir.join("thinking.json"),
        "remembered beside the sessions folder"
    );
    let mut clock = super::Clock::new(0);
    super::resume(&mut b, &mut agent, &mut sessions, &mut clock, &path).unwrap();
    assert_eq!(b.trace.think_min, Some(300));
    assert_eq!(b.trace.loops, aha_protocol::LoopAction::Stop);
    assert!(agent.0.contains(&Op::SetThinkMin { min: Some(300) }));
    let _ = std::fs::remove_dir_all(&dir);
}
