//! The document search's query parser (loose words and "quoted phrases", analysed three ways)
//! over any query, run against small real indexes: an error or hits, never a panic, and every
//! hit's line lies inside its chunk.
#![no_main]

use aha::rag::analyzer::Analyzer;
use aha::rag::chunk::{chunk, Kind};
use aha::rag::index::DocIndex;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const DOCS: [(&str, &str, Kind); 4] = [
    (
        "guide.md",
        "# Guide\n\nInstall the tool with `cargo install`.\n\n## Usage\n\nRun \"aha index\" then search.\nSearching finds chunks.\n\n## 헌법\n\n대한민국 헌법은 국민의 권리를 정한다.\n",
        Kind::Markdown,
    ),
    (
        "notes.txt",
        "日本語のテキストと English words mixed.\n\nThe quick brown fox jumps over the lazy dog.\n\n\n\nA last paragraph, far below.\n",
        Kind::Text,
    ),
    (
        "lib.rs",
        "fn alpha() -> u32 {\n    1\n}\n\npub struct Beta {\n    a: u8,\n}\n\nimpl Beta {\n    fn gamma(&self) {}\n}\n",
        Kind::Code,
    ),
    (
        "empty.md",
        "\n\n   \n",
        Kind::Markdown,
    ),
];

/// One index per analyzer, built once per process (the folders live as long as it does).
fn indexes() -> &'static [(tempfile::TempDir, DocIndex)] {
    static IX: OnceLock<Vec<(tempfile::TempDir, DocIndex)>> = OnceLock::new();
    IX.get_or_init(|| {
        [Analyzer::En, Analyzer::Cjk, Analyzer::Both]
            .into_iter()
            .map(|a| {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut ix = DocIndex::open_or_create(dir.path(), a, dir.path(), false)
                    .expect("create the index");
                let chunks = DOCS
                    .iter()
                    .flat_map(|(name, text, kind)| {
                        chunk(text, *kind)
                            .into_iter()
                            .map(|c| (name.to_string(), c))
                    })
                    .collect::<Vec<_>>();
                ix.add_chunks(chunks.into_iter(), 100).expect("add chunks");
                (dir, ix)
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let q = String::from_utf8_lossy(data);
    for (_, ix) in indexes() {
        let _ = ix.analyzer().terms(&q);
        let Ok(hits) = ix.search(&q, 5) else {
            continue;
        };
        for h in hits {
            assert!(
                h.start_line <= h.line && h.line <= h.end_line,
                "hit line {} outside its chunk {}..={}",
                h.line,
                h.start_line,
                h.end_line
            );
        }
    }
});
