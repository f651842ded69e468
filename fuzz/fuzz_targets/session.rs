//! A session log read back: `session::load` over any bytes, then the replay and the Markdown
//! export a resumed session goes through.
#![no_main]

use aha::session::{export, load, replay};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One file per process, rewritten for every input.
fn path() -> &'static PathBuf {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp dir");
        let p = d.path().join("fuzz.jsonl");
        (d, p)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).expect("write the input");
    let l = load(path()).expect("an existing file always loads");
    let _ = l.skipped_summary();
    let _ = l.last_t();
    let t = replay(&l);
    let _ = t.messages();
    let _ = export::markdown(&t, &l.id, &l.model);
});
