//! Tool calls in model text: the agent's parser (Qwen/Hermes tags, DeepSeek tokens, fenced and
//! bare JSON) and the server's streaming `<tool_call>` filter. Neither may panic; the filter must
//! release the same text and calls however the text is split.
//! Input: one seed byte for the splits, then the model's text.
#![no_main]

mod common;

use aha::agent::parse::parse;
use aha::server::openai::{parse_bare_calls, Piece, ToolCallFilter};
use libfuzzer_sys::fuzz_target;

const KNOWN: [&str; 4] = ["run_code", "read_file", "git_log", "write_file"];

/// The filter's output over `pieces`: calls in order, and all text joined (text pieces may be
/// cut differently, so only their concatenation between calls is compared).
fn filter(pieces: &[&str]) -> Vec<Piece> {
    let mut f = ToolCallFilter::default();
    let mut raw = Vec::new();
    for p in pieces {
        raw.extend(f.push(p));
    }
    raw.extend(f.finish());
    let mut out: Vec<Piece> = Vec::new();
    for p in raw {
        match (out.last_mut(), p) {
            (Some(Piece::Text(a)), Piece::Text(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    for known in [&KNOWN[..], &[]] {
        let p = parse(&text, known);
        for m in &p.malformed {
            assert!(!m.reason.is_empty());
        }
        assert_eq!(p.text, p.text.trim());
    }
    let names: Vec<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    let _ = parse_bare_calls(&text, &names);
    let whole = filter(&[&text]);
    let pieces = common::split_str(&text, seed, 13);
    assert_eq!(
        filter(&pieces),
        whole,
        "the split changed the filter's output"
    );
});
