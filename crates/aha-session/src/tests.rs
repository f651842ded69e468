//! Session log tests: round trip (with a branch), tolerant loading of corrupt and truncated
//! files, resume bookkeeping, and the Markdown export.

use super::transcript::{EntryKind, ReplyState, Transcript};
use super::*;
use aha_protocol::TurnStats;

fn think(text: &str) -> Event {
    Event::ThinkingDelta {
        text: text.into(),
        logprob: Some(-0.1),
        entropy: Some(0.3),
        top: Vec::new(),
    }
}

fn answer(text: &str) -> Event {
    Event::AnswerDelta {
        text: text.into(),
        logprob: None,
        entropy: None,
        top: Vec::new(),
    }
}

fn finished(reason: &str) -> Event {
    Event::TurnFinished {
        stats: TurnStats {
            finish_reason: aha_protocol::FinishReason::from_name(reason),
            ..TurnStats::default()
        },
        tokens: vec![1, 2],
    }
}

fn started(turn: usize, branch_of: Option<usize>, prefix: &str) -> Event {
    Event::TurnStarted {
        turn,
        branch_of,
        prefix: prefix.into(),
    }
}

/// Two turns, the first branched, written through a log while a transcript is built live.
fn script() -> Vec<Record> {
    let mut r = Vec::new();
    let mut t = 0;
    let mut op = |r: &mut Vec<Record>, o: Op| {
        t += 10;
        r.push(Record::Op { t, op: o })
    };
    op(
        &mut r,
        Op::UserMessage {
            text: "q1 <b>".into(),
            turn_id: None,
        },
    );
    let evs = [
        started(0, None, ""),
        think("First."),
        think("\n\nWait, second."),
        answer("A1"),
        finished("stop"),
    ];
    r.extend(evs.into_iter().enumerate().map(|(i, e)| Record::Event {
        t: 20 + i as u64,
        event: e,
    }));
    op(
        &mut r,
        Op::UserMessage {
            text: "q2".into(),
            turn_id: None,
        },
    );
    r.extend(
        [started(1, None, ""), answer("A2"), finished("cancelled")]
            .into_iter()
            .map(|e| Record::Event { t: 40, event: e }),
    );
    op(
        &mut r,
        Op::Branch {
            turn: 0,
            prefix: "<think>\nFirst.\n\nHmm, ".into(),
            turn_id: None,
        },
    );
    r.extend(
        [
            started(0, Some(0), "<think>\nFirst.\n\nHmm, "),
            think("third."),
            answer("A1b"),
            finished("stop"),
        ]
        .into_iter()
        .map(|e| Record::Event { t: 60, event: e }),
    );
    r
}

fn live(records: &[Record]) -> Transcript {
    let mut t = Transcript::default();
    for r in records {
        match r {
            Record::Op { t: ms, op } => t.apply_op(op, *ms),
            Record::Event { t: ms, event } => t.apply_event(event, *ms),
            Record::Header { .. } => {}
        }
    }
    t
}

fn write_log(dir: &std::path::Path, id: &str, records: &[Record]) -> PathBuf {
    let mut log = SessionLog::create(dir, id, "test-model").unwrap();
    for r in records {
        match r {
            Record::Op { t, op } => log.op(*t, op).unwrap(),
            Record::Event { t, event } => log.event(*t, event).unwrap(),
            Record::Header { .. } => {}
        }
    }
    log.path.clone()
}

#[test]
fn round_trip_rebuilds_the_transcript_with_its_branches() {
    let dir = tempfile::tempdir().unwrap();
    let recs = script();
    let path = write_log(dir.path(), "s1", &recs);
    let l = load(&path).unwrap();
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    assert_eq!((l.id.as_str(), l.model.as_str()), ("s1", "test-model"));
    assert_eq!(l.records, recs);
    let t = replay(&l);
    assert_eq!(t, live(&recs));
    let (versions, active) = t.versions(0).unwrap();
    assert_eq!((versions.len(), active), (2, 1));
    assert_eq!(versions[1].reasoning, "First.\n\nHmm, third.");
    // "\n\nWait, second." was one token: the piece the prefix keeps is inherited, not typed.
    assert_eq!(versions[1].branch.as_ref().unwrap().inserted, "Hmm, ");
    assert_eq!(versions[1].branch.as_ref().unwrap().kept, 2);
    assert_eq!(versions[1].tokens[1].text, "\n\n");
    assert_eq!(versions[1].tokens[1].logprob, Some(-0.1));
    assert_eq!(
        versions[0].later.len(),
        2,
        "q2 and its reply stay with the original"
    );
    let msgs = t.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        msgs[1].content,
        "<think>\nFirst.\n\nHmm, third.\n</think>\n\nA1b"
    );
    assert_eq!(l.last_t(), 60);
}

#[test]
fn a_log_is_flushed_at_turn_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = SessionLog::create(dir.path(), "s2", "m").unwrap();
    log.op(
        1,
        &Op::UserMessage {
            text: "q".into(),
            turn_id: None,
        },
    )
    .unwrap();
    log.event(2, &started(0, None, "")).unwrap();
    log.event(3, &think("tok")).unwrap();
    // Not flushed yet: a kill -9 now loses only the turn in flight.
    let on_disk = load(&log.path).unwrap();
    assert_eq!(on_disk.records.len(), 1);
    log.event(4, &finished("stop")).unwrap();
    let on_disk = load(&log.path).unwrap();
    assert_eq!(on_disk.records.len(), 4);
    // Without the turn's end, replay marks the reply interrupted.
    let t = replay(&Loaded {
        records: on_disk.records[..3].to_vec(),
        ..Loaded::default()
    });
    assert_eq!(
        t.entries[t.turns[0]].reply().unwrap().state,
        ReplyState::Interrupted
    );
}

#[test]
fn corrupt_and_truncated_files_load_what_is_valid_and_say_what_was_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), "bad", &script());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"this is not json\n").unwrap();
    f.write_all(b"{\"rec\":\"event\",\"t\":1,\"event\":{\"type\":\"no_such_event\"}}\n")
        .unwrap();
    f.write_all(b"\xff\xfe not utf-8\n").unwrap();
    f.write_all(b"{\"rec\":\"op\",\"t\":70,\"op\":{\"type\":\"user_message\",\"te")
        .unwrap();
    drop(f);
    let l = load(&path).unwrap();
    assert_eq!(l.records, script(), "every valid line is kept");
    assert_eq!(l.skipped.len(), 4, "{:?}", l.skipped);
    let msg = l.skipped_summary().unwrap();
    assert!(msg.contains("skipped 4"), "{msg}");
    let t = replay(&l);
    assert_eq!(t.turns.len(), 1);
    // Appending after a cut-short line starts a fresh line.
    let mut log = SessionLog::append(&path).unwrap();
    log.op(
        80,
        &Op::UserMessage {
            text: "after".into(),
            turn_id: None,
        },
    )
    .unwrap();
    drop(log);
    let l = load(&path).unwrap();
    assert!(matches!(
        l.records.last(),
        Some(Record::Op { op: Op::UserMessage { text, .. }, .. }) if text == "after"
    ));
    assert_eq!(l.skipped.len(), 4);
}

#[test]
fn empty_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.jsonl");
    std::fs::write(&p, b"").unwrap();
    let l = load(&p).unwrap();
    assert!(l.records.is_empty() && l.skipped.is_empty());
    assert!(load(&dir.path().join("nope.jsonl")).is_err());
    assert!(last(&dir.path().join("none")).is_err());
}

#[test]
fn find_and_last_pick_sessions() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), "20260101-000000-aaaa", &script());
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_log(dir.path(), "20260102-000000-bbbb", &script());
    assert!(last(dir.path())
        .unwrap()
        .ends_with("20260102-000000-bbbb.jsonl"));
    assert!(find(dir.path(), "20260101")
        .unwrap()
        .ends_with("20260101-000000-aaaa.jsonl"));
    let e = find(dir.path(), "2026").unwrap_err().to_string();
    assert!(e.contains("matches 2 sessions"), "{e}");
    assert!(find(dir.path(), "zzz").is_err());
    assert!(
        SessionLog::create(dir.path(), "20260101-000000-aaaa", "m").is_err(),
        "never overwrites"
    );
}

#[test]
fn export_puts_reasoning_in_details_and_keeps_every_version() {
    let t = live(&script());
    let md = export::markdown(&t, "aha session x", "m");
    assert!(md.starts_with("# aha session x\n"));
    assert!(md.contains("## You\n\nq1 <b>"));
    assert!(md.contains("<details><summary>Reasoning (4 tokens"), "{md}");
    assert!(
        md.contains("First.\n\nHmm, third.\n\n</details>\n\nA1b"),
        "{md}"
    );
    assert!(
        md.contains("<details><summary>Version 1 of 2</summary>"),
        "{md}"
    );
    assert!(md.contains("Wait, second."));
    let n_details = md.matches("<details>").count();
    assert_eq!(n_details, md.matches("</details>").count());
    assert!(matches!(t.entries[0].kind, EntryKind::User(_)));
}

#[test]
fn reasoning_with_tags_cannot_break_the_export() {
    let mut t = Transcript::default();
    t.apply_op(
        &Op::UserMessage {
            text: "q".into(),
            turn_id: None,
        },
        0,
    );
    t.apply_event(&think("a </details> b <script>"), 1);
    t.apply_event(&finished("stop"), 2);
    let md = export::markdown(&t, "x", "m");
    assert!(md.contains("a &lt;/details&gt; b &lt;script&gt;"));
}
