//! The streaming `<think>` parser: any text, in any split, gives the same segments as one push;
//! a forced close (the thinking budget) at any point never panics.
//! Input: one flag byte (bit 0: the prompt opened `<think>`; the rest seed the splits), then text.
#![no_main]

mod common;

use aha::engine::reasoning::{split_reasoning, strip_reasoning, ReasoningParser, Segment};
use libfuzzer_sys::fuzz_target;

fn run(pieces: &[&str], started: bool, close_at: Option<usize>) -> Vec<Segment> {
    let mut p = ReasoningParser::new(started);
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if close_at == Some(i) {
            out.extend(p.close_thinking());
        }
        out.extend(p.push(piece));
    }
    out.extend(p.finish());
    merge(out)
}

fn merge(segs: Vec<Segment>) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for s in segs {
        assert!(!s.text().is_empty(), "an empty segment was emitted");
        match (out.last_mut(), s) {
            (Some(Segment::Thinking(a)), Segment::Thinking(b))
            | (Some(Segment::Answer(a)), Segment::Answer(b)) => a.push_str(&b),
            (_, s) => out.push(s),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let started = flags & 1 == 1;
    let text = String::from_utf8_lossy(rest);
    let whole = run(&[&text], started, None);
    let pieces = common::split_str(&text, flags, 9);
    assert_eq!(
        run(&pieces, started, None),
        whole,
        "the split changed the segments"
    );
    let (t, a) = split_reasoning(&text, started);
    let cat = |want_thinking: bool| -> String {
        whole
            .iter()
            .filter(|s| matches!(s, Segment::Thinking(_)) == want_thinking)
            .map(Segment::text)
            .collect()
    };
    assert_eq!((t, a), (cat(true), cat(false)));
    let _ = strip_reasoning(&text);
    let _ = run(&pieces, started, Some(flags as usize % (pieces.len() + 1)));
});
