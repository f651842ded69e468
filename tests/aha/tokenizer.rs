//! The GGUF-built tokenizers against reference ids from Hugging Face's tokenizers library
//! (tools/gen_tokenizer_fixture.py wrote the fixtures).

use super::common::model;
use aha::engine::local::load::GgufFile;
use aha::engine::tokenizer::TextTokenizer;
use serde_json::Value;

fn check(model_name: &str, fixture: &str) {
    let path = model(model_name);
    let tok = TextTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/fixtures/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(tok.pre, fx["pre"].as_str().unwrap());
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 200);
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
        if got != want {
            bad.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} cases differ:\n{}",
        bad.len(),
        cases.len(),
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
