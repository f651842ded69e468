//! Opening a GGUF as `aha` does: the header (metadata and tensor table) read and checked
//! against the file, the model configuration, the tokenizer from the metadata, every tensor in
//! the table, and the whole model where the configuration is complete. Any bytes: an error,
//! never a panic or an allocation the file cannot back.
#![no_main]

use aha::engine::local::load::GgufFile;
use aha::engine::tokenizer::TextTokenizer;
use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One file per process, rewritten for every input (the loader takes a path).
fn path() -> &'static PathBuf {
    static P: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &P.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp dir");
        let p = d.path().join("fuzz.gguf");
        (d, p)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).expect("write the input");
    let Ok(g) = GgufFile::open(path()) else {
        return;
    };
    for k in g.content.metadata.keys() {
        let _ = (g.get_str(k), g.get_usize(k), g.get_f32(k));
    }
    let _ = g.arch_name();
    let _ = TextTokenizer::from_gguf(&g);
    let mut f = std::io::BufReader::new(std::fs::File::open(path()).expect("reopen"));
    for name in g.content.tensor_infos.keys() {
        let _ = g.content.tensor(&mut f, name, &Device::Cpu);
    }
    if g.config().is_ok() {
        let _ = g.load_model(&Device::Cpu);
    }
});
