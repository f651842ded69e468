//! The GGUF-built tokenizers against reference ids from Hugging Face's tokenizers library
//! (tools/gen_tokenizer_fixture.py wrote the qwen2 and smollm fixtures, tools/gen_r1_fixture.py
//! the DeepSeek-R1 distill's, from its real header).

use super::common::model;
use aha::engine::local::load::GgufFile;
use aha::engine::tokenizer::TextTokenizer;
use serde_json::Value;

/// A fixture file of `tests/fixtures`.
fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Encodes every case of a fixture (at least 200); returns how many match its ids, and for each
/// that does not, where it first differs and the tokens from there on.
fn compare_cases(tok: &TextTokenizer, fx: &Value) -> (usize, Vec<String>) {
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut matched = 0;
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text).unwrap();
        if got == want {
            matched += 1;
            continue;
        }
        let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let piece = |ids: &[u32]| {
            ids.iter()
                .map(|&i| tok.inner.id_to_token(i).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        bad.push(format!(
            "{text:?}: first difference at token {at}\n  want {want:?} {:?}\n  got  {got:?} {:?}",
            piece(&want[at.min(want.len())..]),
            piece(&got[at.min(got.len())..])
        ));
    }
    (matched, bad)
}

fn check(model_name: &str, fixture_name: &str) {
    let path = model(model_name);
    let tok = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let fx = fixture(fixture_name);
    assert_eq!(tok.pre, fx["pre"].as_str().unwrap());
    let (matched, bad) = compare_cases(&tok, &fx);
    assert!(
        bad.is_empty(),
        "{} of {} cases differ:\n{}",
        bad.len(),
        matched + bad.len(),
        bad.join("\n")
    );
}

#[test]
fn qwen2_tokenizer_matches_reference_ids() {
    check("qwen2.5-coder-0.5b", "tokenizer_qwen2.json");
}

#[test]
fn smollm_tokenizer_matches_reference_ids() {
    check("smollm2-135m", "tokenizer_smollm.json");
}

#[test]
fn special_tokens_are_recognised_by_id_and_decoded_back() {
    let path = model("qwen2.5-coder-0.5b");
    let tok = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>").unwrap();
    assert_eq!(ids.first(), Some(&151644));
    assert_eq!(ids.last(), Some(&151645));
    assert!(tok.stop_ids.contains(&151645) && tok.stop_ids.contains(&151643));
    assert_eq!(tok.decode(&ids).unwrap(), "<|im_start|>user\nhi<|im_end|>");
}

/// DeepSeek-R1-Distill-Qwen-7B's tokenizer, built from its real header (a file whose weights are
/// cut off), against Hugging Face's ids for the same strings: the shared corpus plus R1's own
/// tokens, chat format and text that NFC normalization changes.
#[test]
fn r1_distill_tokenizer_from_the_real_header_matches_reference_ids() {
    let path = model(super::r1_header::HEADER);
    let g = GgufFile::open_header(&path).unwrap();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    let fx = fixture("tokenizer_deepseek_r1_qwen.json");
    assert_eq!(tok.pre, "deepseek-r1-qwen");
    assert_eq!(tok.vocab_size(), 152_064);
    assert_eq!(
        tok.bos,
        Some((151_646, "<｜begin▁of▁sentence｜>".to_string()))
    );
    assert_eq!(
        tok.eos,
        Some((151_643, "<｜end▁of▁sentence｜>".to_string()))
    );
    assert!(tok.add_bos && fx["add_bos_token"] == true);
    assert_eq!(fx["bos_id"], 151_646);
    assert!(tok.stop_ids.contains(&151_643));
    let (matched, bad) = compare_cases(&tok, &fx);
    let cases = fx["cases"].as_array().unwrap();
    eprintln!(
        "R1 distill tokenizer: {matched} of {} strings match Hugging Face",
        cases.len()
    );
    assert!(
        bad.is_empty(),
        "{} of {} cases differ; the first:\n{}",
        bad.len(),
        cases.len(),
        bad[0]
    );
    // Special tokens in text are single ids, and decode back to their text.
    let ids = tok
        .encode("<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\nok</think>")
        .unwrap();
    assert_eq!(ids[..3], [151_646, 151_644, 6023]);
    assert_eq!(ids[3..5], [151_645, 151_648]);
    assert_eq!(ids.last(), Some(&151_649));
    assert_eq!(
        tok.decode(&ids).unwrap(),
        "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜><think>\nok</think>"
    );
}
