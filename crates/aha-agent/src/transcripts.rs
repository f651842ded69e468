//! The turn's whole behaviour, pinned: scripted conversations are played on the test's thread and
//! everything observable (the events in order, what the engine was asked, the conversation kept,
//! the tools that ran) is compared with `testdata/transcripts.txt`, recorded before the turn loop
//! was split into its phases. `AHA_BLESS=1` records it again after an intended change.

use super::testkit::{bench, bench_with, call, event_lines, request_lines, Bench};
use super::*;

fn user(text: &str) -> Op {
    Op::UserMessage {
        text: text.into(),
        turn_id: None,
    }
}

fn approve(id: &str, approved: bool, remember: bool) -> Op {
    Op::Approve {
        id: id.into(),
        approved,
        remember,
    }
}

/// Plays `ops` (after queueing `queued` for the turn to read) and writes what happened.
fn play(out: &mut String, name: &str, mut b: Bench, queued: Vec<Op>, ops: Vec<Op>) {
    out.push_str(&format!("## {name}\n"));
    for op in queued {
        b.ops.send(op).unwrap();
    }
    for op in ops {
        out.push_str(&format!("> {}\n", serde_json::to_string(&op).unwrap()));
        out.push_str(&event_lines(&b.handle(op)));
    }
    out.push_str(&request_lines(&b.seen.lock().unwrap()));
    for m in &b.agent.messages {
        out.push_str(&format!("kept {}\n", serde_json::to_string(m).unwrap()));
    }
    out.push_str(&format!(
        "turns {:?} pending {:?}\n",
        b.agent.turns, b.agent.pending
    ));
    for r in b.ran.lock().unwrap().iter() {
        out.push_str(&format!("ran {r}\n"));
    }
    out.push('\n');
}

fn cfg() -> AgentConfig {
    AgentConfig::default()
}

/// Every scenario, in order.
fn all() -> String {
    let mut o = String::new();
    answers_and_calls(&mut o);
    policies_and_approvals(&mut o);
    failures_and_step_limits(&mut o);
    step_limits_and_a_repeated_call(&mut o);
    repeats(&mut o);
    repeats_without_insisting_and_cancel(&mut o);
    branches(&mut o);
    other_ops(&mut o);
    o
}

fn answers_and_calls(o_: &mut String) {
    let echo = |a: &str| call("echo", a);
    play(
        o_,
        "plain answer, no tools",
        bench(&["thinking|The answer."], cfg(), false),
        vec![],
        vec![user("q")],
    );
    play(
        o_,
        "a system prompt, with and without tools",
        bench(
            &["a", "b"],
            AgentConfig {
                system: Some("Be brief.".into()),
                ..cfg()
            },
            false,
        ),
        vec![],
        vec![user("q1"), user("q2")],
    );
    play(
        o_,
        "a system prompt with tools",
        bench(
            &["a"],
            AgentConfig {
                system: Some("Be brief.".into()),
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("q")],
    );
    play(
        o_,
        "two calls then an answer",
        bench(
            &[
                &format!("Looking.{}{}", echo("{}"), call("write", "{\"p\": 1}")),
                "why|The answer.",
            ],
            AgentConfig {
                policy: Policy::AutoEdit,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go"), user("again")],
    );
    play(
        o_,
        "malformed, unknown, bad preview, then an answer",
        bench(
            &[
                "<tool_call>{\"name\": \"echo\", \"arguments\": {oops}</tool_call>",
                &call("nope", "{}"),
                &echo("{\"bad_preview\": true}"),
                "ok",
            ],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
}

fn policies_and_approvals(o_: &mut String) {
    let echo = |a: &str| call("echo", a);
    play(
        o_,
        "a call and a malformed call in one reply",
        bench(
            &[&format!("{}<tool_call>{{bad</tool_call>", echo("{}")), "ok"],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "read-only refuses",
        bench(
            &[&call("exec", "{}"), "fine"],
            AgentConfig {
                policy: Policy::ReadOnly,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "headless ask refuses",
        bench(
            &[&call("write", "{}"), "fine"],
            AgentConfig {
                interactive: false,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "interactive ask: a stray approval, a queued op, approve and remember, then a denial",
        bench(
            &[
                &call("exec", "{\"a\": 1}"),
                &call("exec", "{\"a\": 2, \"out\": \"two\"}"),
                &call("write", "{}"),
                "fine",
            ],
            AgentConfig {
                max_steps: 8,
                ..cfg()
            },
            true,
        ),
        vec![
            approve("someone-else", true, false),
            Op::Diff,
            approve("call_1_0_0", true, true),
            approve("call_1_2_0", false, false),
        ],
        vec![user("go")],
    );
    play(
        o_,
        "a tool that panics",
        bench(&[&echo("{\"panic\": true}"), "Answered."], cfg(), true),
        vec![],
        vec![user("go")],
    );
}

fn failures_and_step_limits(o_: &mut String) {
    let echo = |a: &str| call("echo", a);
    play(
        o_,
        "a failed call is not a repeated result",
        bench(
            &[
                &echo("{\"fail\": true}"),
                &echo("{\"fail\": true, \"i\": 2}"),
                "Answered.",
            ],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "an engine that panics, then one that fails, then one that fails late",
        bench(&["PANIC", "ERR", "LATE_ERR", "Fine now."], cfg(), true),
        vec![],
        vec![user("a"), user("b"), user("c"), user("d")],
    );
    play(
        o_,
        "an engine that fails after a tool round",
        bench(&[&echo("{}"), "ERR"], cfg(), true),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "the step limit: the last step may not call, and it calls anyway",
        bench(
            &[
                &echo("{\"i\": 1}"),
                &echo("{\"i\": 2}"),
                &echo("{\"i\": 3}"),
            ],
            AgentConfig {
                max_steps: 2,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "the step limit: the last step answers",
        bench(
            &[&echo("{\"i\": 1}"), &echo("{\"i\": 2}"), "From both."],
            AgentConfig {
                max_steps: 3,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
}

fn step_limits_and_a_repeated_call(o_: &mut String) {
    let echo = |a: &str| call("echo", a);
    play(
        o_,
        "one step: its calls run and no step is left",
        bench(
            &[&echo("{}"), "never"],
            AgentConfig {
                max_steps: 1,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "no steps counts as one",
        bench(
            &["Answer."],
            AgentConfig {
                max_steps: 0,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "the step limit without insisting",
        bench(
            &[&echo("{\"i\": 1}"), &echo("{\"i\": 2}"), "late"],
            AgentConfig {
                max_steps: 2,
                insist: false,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "a repeated call: answer from the result",
        bench(
            &[
                &echo("{\"x\": 1}"),
                &echo("{\"x\": 1}"),
                "It says echo output.",
            ],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
}

fn repeats(o_: &mut String) {
    let echo = |a: &str| call("echo", a);
    play(
        o_,
        "a repeated call, then it calls again anyway",
        bench(
            &[
                &echo("{\"x\": 1}"),
                &echo("{\"x\": 1}"),
                &echo("{\"x\": 1}"),
                "unused",
            ],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "a repeated result: the round is left out",
        bench(
            &[&echo("{\"i\": 1}"), &echo("{\"i\": 2}"), "Done."],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "a repeated result next to a new one is kept",
        bench(
            &[
                &echo("{\"i\": 1}"),
                &format!("{}{}", echo("{\"i\": 2}"), echo("{\"out\": \"new\"}")),
                "Done.",
            ],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "a call repeated within one round, and a new one",
        bench(
            &[
                &format!("{}{}", echo("{\"i\": 1}"), echo("{\"i\": 1}")),
                &format!("{}{}", echo("{\"i\": 1}"), echo("{\"out\": \"x\"}")),
                "Done.",
            ],
            cfg(),
            true,
        ),
        vec![],
        vec![user("go")],
    );
}

fn repeats_without_insisting_and_cancel(o_: &mut String) {
    let echo = |a: &str| call("echo", a);
    play(
        o_,
        "without insisting, repeats are run past twice then stopped",
        bench(
            &[
                &echo("{\"x\": 1}"),
                &echo("{\"x\": 1}"),
                &echo("{\"x\": 1}"),
                &echo("{\"x\": 1}"),
                "unused",
            ],
            AgentConfig {
                insist: false,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "without insisting, repeated results go on",
        bench(
            &[&echo("{\"i\": 1}"), &echo("{\"i\": 2}"), "Done."],
            AgentConfig {
                insist: false,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go")],
    );
    play(
        o_,
        "a tool cancels the turn mid-round",
        bench(
            &[
                &format!(
                    "{}{}<tool_call>{{bad</tool_call>",
                    call("exec", "{\"cancel\": true}"),
                    echo("{}")
                ),
                "never",
            ],
            AgentConfig {
                policy: Policy::FullAuto,
                ..cfg()
            },
            true,
        ),
        vec![],
        vec![user("go"), user("next")],
    );
}

fn branches(o_: &mut String) {
    play(
        o_,
        "branching a reasoning model's turn from a prefix",
        bench_with(&["r1|a1", "r2|a2", "more|a3", "x|a4"], cfg(), false, true),
        vec![],
        vec![
            user("q1"),
            user("q2"),
            Op::Branch {
                turn: 0,
                prefix: "<think>\nLet me think.\n\nHmm".into(),
                turn_id: None,
            },
            Op::Branch {
                turn: 0,
                prefix: "Plain start ".into(),
                turn_id: None,
            },
            Op::Branch {
                turn: 5,
                prefix: String::new(),
                turn_id: None,
            },
        ],
    );
    play(
        o_,
        "branching with tools, from an answer prefix",
        bench_with(&["partial answer"], cfg(), true, false),
        vec![],
        vec![
            user("q1"),
            Op::Branch {
                turn: 0,
                prefix: "I think".into(),
                turn_id: None,
            },
        ],
    );
}

fn other_ops(o_: &mut String) {
    play(
        o_,
        "settings, restore, clear and the tools' ops",
        bench(&["a", "b"], cfg(), true),
        vec![],
        vec![
            Op::SetThinking {
                mode: aha_protocol::ThinkMode::parse("on").unwrap(),
                budget: Some(64),
            },
            Op::SetThinking {
                mode: aha_protocol::ThinkMode::parse("off").unwrap(),
                budget: None,
            },
            Op::SetPolicy {
                policy: aha_protocol::Policy::parse("full-auto").unwrap(),
            },
            user("q"),
            Op::Restore {
                messages: vec![
                    ChatMessage::user("u1"),
                    ChatMessage::assistant("a1"),
                    ChatMessage::user("u2"),
                ],
            },
            user("q3"),
            Op::Clear,
            approve("late", true, false),
            Op::Undo,
            Op::Diff,
            Op::Tools,
            Op::Index {
                paths: vec!["a.md".into()],
            },
            Op::Search {
                query: "kv cache".into(),
            },
            Op::Cancel { turn_id: None },
            Op::Pause,
            Op::Resume,
            Op::Step,
        ],
    );
    play(
        o_,
        "the tools' ops without tools",
        bench(&[], cfg(), false),
        vec![],
        vec![
            Op::Undo,
            Op::Diff,
            Op::Tools,
            Op::Index { paths: vec![] },
            Op::Search { query: "q".into() },
        ],
    );
}

#[test]
fn every_scripted_conversation_plays_exactly_as_recorded() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/transcripts.txt");
    let got = all();
    if std::env::var_os("AHA_BLESS").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap();
    if got != want {
        let at = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "transcript differs at line {}:\n got: {:?}\nwant: {:?}",
            at + 1,
            got.lines().nth(at),
            want.lines().nth(at)
        );
    }
}
