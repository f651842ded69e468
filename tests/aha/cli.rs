//! The `aha` binary: the JSON event stream and the errors people see.

use super::common::{bin, heavy, model};
use candle_core::quantized::gguf_file;
use serde_json::Value;

fn run_json(args: &[&str]) -> (Vec<Value>, String, i32) {
    let out = bin().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let events = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}"))
        })
        .collect();
    (
        events,
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.code().unwrap_or(-1),
    )
}

/// Runs `aha run -m MODEL hi`, which must fail; returns what it wrote to stderr.
fn run_fails_with(model: &str) -> String {
    let out = bin().args(["run", "-m", model, "hi"]).output().unwrap();
    assert!(!out.status.success(), "aha run -m {model} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_json_streams_thinking_then_answer_then_stats() {
    let _g = heavy();
    let m = model("qwen2.5-coder-0.5b");
    let (ev, err, code) = run_json(&[
        "run",
        "--model",
        m.to_str().unwrap(),
        "--json",
        "--think",
        "--think-budget",
        "16",
        "--temperature",
        "0",
        "--max-tokens",
        "48",
        "--threads",
        "2",
        "What is 2+2?",
    ]);
    assert_eq!(code, 0, "{err}");
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let first_answer = types
        .iter()
        .position(|t| *t == "answer_delta")
        .expect("an answer");
    let last_thinking = types
        .iter()
        .rposition(|t| *t == "thinking_delta")
        .expect("reasoning");
    assert!(last_thinking < first_answer, "{types:?}");
    assert_eq!(*types.last().unwrap(), "turn_finished");
    let thinking_with_lp = ev
        .iter()
        .filter(|e| e["type"] == "thinking_delta" && e["logprob"].is_number())
        .count();
    assert!(thinking_with_lp > 0, "tokens carry log-probabilities");
    let stats = &ev.last().unwrap()["stats"];
    for k in [
        "prompt_tokens",
        "thinking_tokens",
        "answer_tokens",
        "ttft_ms",
        "prefill_tok_s",
        "decode_tok_s",
    ] {
        assert!(stats[k].is_number(), "stats.{k} missing: {stats}");
    }
    assert!(stats["thinking_tokens"].as_u64().unwrap() >= 16);
    assert!(stats["answer_tokens"].as_u64().unwrap() >= 1);
    let answer: String = ev
        .iter()
        .filter(|e| e["type"] == "answer_delta")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(answer.contains('4'), "{answer}");
}

#[test]
fn text_mode_puts_answer_on_stdout_and_stats_on_stderr() {
    let _g = heavy();
    let m = model("smollm2-135m");
    let out = bin()
        .args([
            "run",
            "-m",
            m.to_str().unwrap(),
            "--raw",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
        ])
        .arg("The capital of France is")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decode"));
}

#[test]
fn missing_model_file_says_so() {
    let (ev, _, code) = run_json(&["run", "--json", "-m", "/nonexistent/model.gguf", "hi"]);
    assert_eq!(code, 1);
    assert_eq!(ev[0]["type"], "error");
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{:?}",
        ev[0]
    );
}

#[test]
fn unknown_model_name_lists_known_names() {
    let err = run_fails_with("no-such-model");
    assert!(
        err.contains("unknown model") && err.contains("qwen2.5-coder-0.5b"),
        "{err}"
    );
}

#[test]
fn corrupt_and_truncated_gguf_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"this is not a model at all").unwrap();
    let err = run_fails_with(junk.to_str().unwrap());
    assert!(err.contains("not a readable GGUF"), "{err}");

    let small = dir.path().join("small.gguf");
    aha::engine::local::synth::SynthSpec::tiny()
        .write_gguf(&small, candle_core::quantized::GgmlDType::Q8_0)
        .unwrap();
    let bytes = std::fs::read(&small).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let err = run_fails_with(cut.to_str().unwrap());
    assert!(err.contains("is truncated"), "{err}");
}

#[test]
fn unsupported_architecture_is_named_with_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("falcon.gguf");
    let arch = gguf_file::Value::String("falcon".into());
    let mut f = std::fs::File::create(&p).unwrap();
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[]).unwrap();
    drop(f);
    let err = run_fails_with(p.to_str().unwrap());
    assert!(
        err.contains("`falcon` is not supported") && err.contains("qwen2, llama"),
        "{err}"
    );
}

#[test]
fn an_unknown_or_unavailable_kernel_set_is_refused_with_the_choices() {
    let m = model("smollm2-135m");
    let run = |kernels: &str| {
        let out = bin()
            .env("AHA_KERNELS", kernels)
            .args(["run", "-m", m.to_str().unwrap(), "--max-tokens", "1", "hi"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "AHA_KERNELS={kernels} ran");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run("sse");
    assert!(
        err.contains("AHA_KERNELS=sse is not a kernel set") && err.contains("avx2, neon-dotprod"),
        "{err}"
    );
    // A set of the other architecture: named, with the sets this CPU does run.
    let other = if cfg!(target_arch = "x86_64") {
        "neon"
    } else {
        "avx2"
    };
    let err = run(other);
    assert!(
        err.contains(&format!("cannot run the `{other}` kernels")) && err.contains("scalar"),
        "{err}"
    );
}

#[test]
fn prompt_longer_than_context_is_refused_with_numbers() {
    let _g = heavy();
    let m = model("smollm2-135m");
    let long = "word ".repeat(9000);
    let out = bin()
        .args(["run", "--json", "-m", m.to_str().unwrap(), "--raw"])
        .arg(&long)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("the prompt is 9") && stdout.contains("context holds 8192"),
        "{stdout}"
    );
}

#[test]
fn models_lists_the_known_names() {
    let out = bin().args(["models", "--json"]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for n in [
        "qwen2.5-coder-0.5b",
        "smollm2-135m",
        "r1-distill-qwen-1.5b",
        "r1-distill-qwen-7b",
        "r1-distill-qwen-14b",
        "r1-distill-qwen-32b",
        "r1-distill-llama-8b",
    ] {
        assert!(s.contains(&format!("\"name\":\"{n}\"")), "{n} missing");
    }
}

#[test]
fn synthetic_models_run_end_to_end_from_gguf_and_bf16_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("st");
    let gg = dir.path().join("m.gguf");
    for (dtype, out) in [("st-bf16", &st), ("q8_0", &gg)] {
        let o = bin()
            .args(["synth", "--shape", "tiny", "--dtype", dtype, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    for m in [&st, &gg] {
        let (ev, err, code) = run_json(&[
            "run",
            "--json",
            "--raw",
            "--temperature",
            "0",
            "--max-tokens",
            "6",
            "-m",
            m.to_str().unwrap(),
            "abc",
        ]);
        assert_eq!(code, 0, "{err}");
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "turn_finished");
        assert_eq!(last["tokens"].as_array().unwrap().len(), 6, "{last}");
    }
}

/// Without the `cuda` feature, the GPU commands say how to get one instead of failing obscurely;
/// a decode path that does not exist is refused with the choices.
#[test]
fn gpu_commands_on_a_cpu_build_say_what_to_do() {
    let out = bin().args(["cuda-check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without CUDA"), "{err}");
    assert!(err.contains("tools/build-cuda.sh"), "{err}");
    let out = bin()
        .args(["bench", "--device", "cuda", "--decode-paths", "graph"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without CUDA"), "{err}");
}
