//! The document chunker over any text, as Markdown, plain text and code: chunks come in order,
//! their line numbers lie inside the text, every non-blank line is in some chunk, and a chunk's
//! text is taken from its own lines.
#![no_main]

use aha::rag::chunk::{chunk, Kind};
use libfuzzer_sys::fuzz_target;

/// Trailing whitespace is not kept by the chunker (blank lines come back empty, the last line
/// is trimmed), so both sides are compared without it.
fn norm<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    lines.map(str::trim_end).collect::<Vec<_>>().join("\n")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.lines().collect();
    for kind in [Kind::Markdown, Kind::Text, Kind::Code] {
        let chunks = chunk(&text, kind);
        let mut covered = vec![false; lines.len() + 1];
        let mut prev = (0, 0);
        for c in &chunks {
            assert!(
                c.start_line >= 1 && c.start_line <= c.end_line,
                "{kind:?} {c:?}"
            );
            assert!(c.end_line <= lines.len(), "{kind:?}: past the end {c:?}");
            assert!((c.start_line, c.end_line) >= prev, "{kind:?}: out of order");
            prev = (c.start_line, c.end_line);
            let own = norm(lines[c.start_line - 1..c.end_line].iter().copied());
            assert!(
                own.contains(&norm(c.text.lines())),
                "{kind:?}: chunk text is not from lines {}..={}",
                c.start_line,
                c.end_line
            );
            covered[c.start_line..=c.end_line].fill(true);
        }
        for (i, l) in lines.iter().enumerate() {
            assert!(
                l.trim().is_empty() || covered[i + 1],
                "{kind:?}: line {} is in no chunk",
                i + 1
            );
        }
    }
});
