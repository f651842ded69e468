//! DeepSeek-R1-Distill-Qwen-7B's real GGUF header (`r1-distill-qwen-7b-header`: the first 100 MB
//! of the Q4_K_M file, header whole, weights cut off): read as a header, refused as a model, its
//! chat template rendered as transformers renders it (tests/fixtures/r1_template.json, written
//! by tools/gen_r1_fixture.py), and a random-weight model carrying its tokenizer and template
//! through `aha run --json`. Its tokenizer against Hugging Face's ids is in tokenizer.rs.

use super::common::{bin, heavy, model};
use aha::engine::local::load::GgufFile;
use aha::engine::template::{ChatMessage, ChatTemplate, Family};
use aha::engine::tokenizer::TextTokenizer;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const HEADER: &str = "r1-distill-qwen-7b-header";
/// The whole Q4_K_M file's size: where its last tensor ends.
const WHOLE_FILE: u64 = 4_683_073_248;
const PART: u64 = 99_614_720;

fn header() -> GgufFile {
    GgufFile::open_header(&model(HEADER)).unwrap()
}

fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn template_of(g: &GgufFile, tok: &TextTokenizer) -> ChatTemplate {
    ChatTemplate::new(
        g.get_str("tokenizer.chat_template").unwrap(),
        &tok.bos.as_ref().unwrap().1,
        &tok.eos.as_ref().unwrap().1,
    )
    .unwrap()
}

#[test]
fn r1_header_reads_and_its_weights_are_refused() {
    let path = model(HEADER);
    let g = GgufFile::open_header(&path).unwrap();
    assert_eq!(g.file_len, PART);
    assert_eq!(g.arch_name(), "qwen2");
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("deepseek-r1-qwen"));
    assert_eq!(g.content.tensor_infos.len(), 339);
    let c = g.config().unwrap();
    assert_eq!(
        (c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.vocab_size),
        (28, 3584, 28, 4, 152_064)
    );
    assert_eq!(c.rope_base, 10_000.0);
    let (end, _) = g.data_end.clone().unwrap();
    assert_eq!(end, WHOLE_FILE);
    assert!(!g.is_complete());
    let want = format!("the file is truncated: expected {WHOLE_FILE} bytes, has {PART}");
    let e = format!("{:#}", GgufFile::open(&path).err().unwrap());
    assert!(e.contains(&want), "{e}");
    let e = format!(
        "{:#}",
        g.load_model(&candle_core::Device::Cpu).err().unwrap()
    );
    assert!(e.contains(&want), "{e}");
}

#[test]
fn r1_header_cannot_run_and_says_why() {
    model(HEADER);
    let out = bin().args(["run", "-m", HEADER, "hi"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is only the header of a model")
            && err.contains(&format!("expected {WHOLE_FILE} bytes, has {PART}")),
        "{err}"
    );
    // Its tokenizer still serves `aha tokenize`.
    let out = bin()
        .args(["tokenize", "-m", HEADER, "<｜User｜>hi<think>"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[151644,6023,151648]"
    );
}

/// Messages of a fixture case as aha's own type, where they fit it (string contents, no
/// `tool_calls`).
fn as_chat_messages(msgs: &[Value]) -> Option<Vec<ChatMessage>> {
    msgs.iter()
        .map(|m| {
            if m.get("tool_calls").is_some() {
                return None;
            }
            serde_json::from_value(m.clone()).ok()
        })
        .collect()
}

#[test]
fn r1_template_renders_as_transformers_with_reasoning_and_tools() {
    let g = header();
    let tok = TextTokenizer::from_gguf(&g).unwrap();
    let t = template_of(&g, &tok);
    assert_eq!(t.family, Family::DeepSeekR1);
    assert!(t.is_reasoning());
    // It has no place for tool schemas: the agent writes them into the system prompt.
    assert!(!t.supports_tools());
    let fx = fixture("r1_template.json");
    assert_eq!(fx["bos_token"].as_str(), Some(t.bos.as_str()));
    assert_eq!(fx["eos_token"].as_str(), Some(t.eos.as_str()));
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut via_chat = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let msgs = c["messages"].as_array().unwrap();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let want = c["text"].as_str().unwrap();
        let got = t.render(msgs, None, gen, true).unwrap();
        assert_eq!(got, want, "case `{name}` (JSON messages)");
        if let Some(chat) = as_chat_messages(msgs) {
            let got = t.render(&chat, None, gen, true).unwrap();
            assert_eq!(got, want, "case `{name}` (ChatMessage)");
            via_chat += 1;
        }
        let ids: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.encode(want).unwrap(), ids, "case `{name}`: prompt ids");
        // The template writes BOS itself.
        assert_eq!(ids.first(), Some(&151646), "case `{name}`");
        // Earlier turns' reasoning never reaches the prompt, except after tool output, where
        // the template keeps the message whole.
        if !want.contains("<｜tool▁outputs▁end｜><think>") {
            assert!(!want.contains("</think>"), "case `{name}`: {want}");
        }
    }
    assert!(via_chat >= 6, "{via_chat}");
}

/// Writes an R1-shaped random-weight model (qwen2, R1-7B's 152,064-token vocabulary on two
/// small blocks) with the header's tokenizer and chat template, through `aha synth`.
pub fn r1_synth(dir: &Path) -> PathBuf {
    let out = dir.join("r1-tiny.gguf");
    let o = bin()
        .args([
            "synth",
            "--shape",
            "r1-tiny",
            "--dtype",
            "q4_k",
            "--tokenizer-from",
        ])
        .arg(model(HEADER))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn r1_synth_runs_through_aha_run_json_with_the_real_tokenizer() {
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let m = r1_synth(dir.path());
    let g = GgufFile::open(&m).unwrap();
    let real = header();
    for k in [
        "tokenizer.chat_template",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.model",
    ] {
        assert_eq!(g.get_str(k), real.get_str(k), "{k}");
    }
    let tok = TextTokenizer::from_gguf(&real).unwrap();
    let question = "Why is the sky blue? 하늘은 왜 파랄까?";
    let out = bin()
        .args(["run", "--json", "--show-prompt", "-m"])
        .arg(&m)
        .args([
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "--think-budget",
            "16",
            "--threads",
            "2",
            question,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The real template's prompt, with the reasoning opened after it, as R1 expects.
    let prompt = format!("<｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\n");
    let n_prompt = tok.encode(&prompt).unwrap().len();
    assert!(
        stderr.contains(&format!(
            "--- prompt ({n_prompt} tokens) ---\n{prompt}\n---"
        )),
        "{stderr}"
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // Reasoning first (the prompt opened it), then the answer after the forced `</think>`,
    // then one turn_finished, last.
    assert_eq!(types.first(), Some(&"thinking_delta"), "{types:?}");
    assert_eq!(types.last(), Some(&"turn_finished"), "{types:?}");
    assert_eq!(types.iter().filter(|t| **t == "turn_finished").count(), 1);
    let first_answer = types.iter().position(|t| *t == "answer_delta");
    let last_thinking = types.iter().rposition(|t| *t == "thinking_delta").unwrap();
    if let Some(a) = first_answer {
        assert!(last_thinking < a, "{types:?}");
    }
    let fin = events.last().unwrap();
    let stats = &fin["stats"];
    assert_eq!(stats["prompt_tokens"].as_u64(), Some(n_prompt as u64));
    let ids: Vec<u32> = fin["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|&i| (i as usize) < 152_064));
    let text = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["text"].as_str().unwrap())
            .collect()
    };
    let (thinking, answer) = (text("thinking_delta"), text("answer_delta"));
    // The generated ids, decoded by the real tokenizer, are the streamed text: the reasoning,
    // the `</think>` that closed it, the answer. The stream leaves out the whitespace around
    // the reasoning (reasoning.rs) and the bytes of a character the last token did not finish.
    let decoded = tok.decode(&ids).unwrap();
    let decoded = decoded.trim_end_matches('\u{FFFD}');
    let (before, after) = decoded.split_once("</think>").unwrap_or((decoded, ""));
    assert_eq!(before.trim(), thinking, "ids {ids:?}");
    assert_eq!(after.trim_start(), answer, "ids {ids:?}");
    assert!(ids.contains(&151_649) || answer.is_empty(), "ids {ids:?}");
    let n_think = stats["thinking_tokens"].as_u64().unwrap() as usize;
    let n_answer = stats["answer_tokens"].as_u64().unwrap() as usize;
    assert_eq!(n_think + n_answer, ids.len(), "{stats}");
    assert!(
        n_think >= 16,
        "the budget lets 16 reasoning tokens through: {stats}"
    );
}

/// The same model in the workbench, through tmux: a question streams reasoning and the answer
/// after the forced `</think>`, and the session log holds them with the turn's ids, which the
/// real tokenizer decodes to that text.
#[test]
fn r1_synth_in_the_workbench_with_the_real_template() {
    use super::tui::Tmux;
    use std::time::Duration;
    let _g = heavy();
    let dir = tempfile::tempdir().unwrap();
    let m = r1_synth(dir.path());
    let data = dir.path().join("data");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[ui]\nmax_tokens = 40\nthink_budget = 16\n[ui.sampling]\ntemperature = 0.0\n",
    )
    .unwrap();
    let t = Tmux::start("r1", 100, 30);
    t.open_workbench(
        &format!(
            "AHA_CONFIG={} AHA_DATA_DIR={}",
            cfg.display(),
            data.display()
        ),
        &format!("--threads 2 --model {}", m.display()),
    );
    t.type_text("Why is the sky blue?");
    t.keys(&["Enter"]);
    t.wait_for("the reply to end", Duration::from_secs(120), |s| {
        s.contains("❯ Why is the sky blue?") && s.contains(" idle ") && s.contains("ttft")
    });
    t.quit_workbench();

    let files: Vec<PathBuf> = std::fs::read_dir(data.join("sessions"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let events: Vec<Value> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get("event").cloned())
        .collect();
    let text = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .filter_map(|e| e["text"].as_str())
            .collect()
    };
    let (thinking, answer) = (text("thinking_delta"), text("answer_delta"));
    assert!(!thinking.is_empty(), "{events:?}");
    let fin: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "turn_finished")
        .collect();
    assert_eq!(fin.len(), 1);
    let ids: Vec<u32> = fin[0]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let tok = TextTokenizer::from_gguf(&header()).unwrap();
    let decoded = tok.decode(&ids).unwrap();
    let decoded = decoded.trim_end_matches('\u{FFFD}');
    let (before, after) = decoded.split_once("</think>").unwrap_or((decoded, ""));
    assert_eq!(before.trim(), thinking);
    assert_eq!(after.trim_start(), answer);
}
