//! The prompt cache on disk: a warm start (the system prompt's keys and values loaded from
//! `<data dir>/cache/`) gives the cold start's tokens, bit for bit, and prefills only what
//! follows the cached prefix; a damaged entry is rebuilt.

use super::common::{bin, heavy, model};
use aha::engine::local::prompt_cache::{PromptCache, MIN_PREFIX};
use aha::engine::local::synth::SynthSpec;
use aha::engine::sampler::SamplingParams;
use aha::engine::template::ChatMessage;
use aha::engine::{Control, GenerateRequest, LocalEngine};
use aha::protocol::{Event, TurnStats};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The `.kv` entries in a prompt cache folder.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "kv"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A tiny random-weight model with a prompt cache in `cache`. Its prefill uses the GEMM only
/// from 32 rows on, so the few tokens after the system prompt (computed on their own on a warm
/// start) round differently from a batch that also holds the system prompt: a cold start that
/// did not split the prompt where a warm one does would not give the same logprobs.
fn synth_engine(gguf: &Path, cache: &Path) -> LocalEngine {
    let opts = aha::engine::options::EngineOptions {
        gemm_min_rows: 32,
        ..Default::default()
    };
    let mut e = LocalEngine::load_with(gguf, "tiny", &candle_core::Device::Cpu, &opts).unwrap();
    e.set_prompt_cache(Some(PromptCache::open(cache, 1 << 30, gguf).unwrap()));
    e
}

fn synth_request(user: &str) -> GenerateRequest {
    let mut req = GenerateRequest::chat(vec![
        ChatMessage::system("You are a small test model. Be brief; do not call any tools."),
        ChatMessage::user(user),
    ]);
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 12;
    req.ignore_eos = true;
    req
}

/// The events of one generation as JSON (logprobs included), and its stats.
fn generate(e: &mut LocalEngine, req: &GenerateRequest) -> (Vec<Value>, TurnStats) {
    let mut events = Vec::new();
    let stats = e
        .generate(req, &Control::default(), &mut |ev| {
            if let Event::TurnFinished { tokens, .. } = &ev {
                events.push(serde_json::json!({ "tokens": tokens }));
            } else {
                events.push(serde_json::to_value(&ev).unwrap());
            }
        })
        .unwrap();
    (events, stats)
}

#[test]
fn a_warm_engine_gives_the_cold_engines_tokens_and_prefills_less() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    SynthSpec::tiny()
        .write_gguf(&gguf, candle_core::quantized::GgmlDType::Q8_0)
        .unwrap();
    let cache = dir.path().join("cache");
    let req = synth_request("hi");
    let mut cold = synth_engine(&gguf, &cache);
    let prompt = cold.prepare(&req).unwrap();
    let stable = prompt.stable_prefix;
    assert!(stable >= MIN_PREFIX, "stable prefix {stable}");
    assert!(
        stable < prompt.tokens.len() - 1,
        "the user's message is not in it"
    );
    // Another user message has the same stable prefix.
    let other = cold
        .prepare(&synth_request("what is two plus two"))
        .unwrap();
    assert_eq!(other.stable_prefix, stable);
    assert_eq!(other.tokens[..stable], prompt.tokens[..stable]);

    let (cold_events, cold_stats) = generate(&mut cold, &req);
    assert_eq!(cold_stats.prefilled_tokens, cold_stats.prompt_tokens);
    let entries_dir = cache.join("prompts");
    assert_eq!(entries(&entries_dir).len(), 1, "the prefix was saved");

    // A fresh engine (a new process, as far as the engine knows) loads the prefix.
    let mut warm = synth_engine(&gguf, &cache);
    let (warm_events, warm_stats) = generate(&mut warm, &req);
    assert_eq!(
        warm_events, cold_events,
        "warm and cold must agree bit for bit"
    );
    assert_eq!(warm_stats.prompt_tokens, cold_stats.prompt_tokens);
    assert_eq!(
        warm_stats.prefilled_tokens,
        cold_stats.prompt_tokens - stable
    );
    // Another user message hits the same entry.
    let mut third = synth_engine(&gguf, &cache);
    let req2 = synth_request("what is two plus two");
    let (_, s) = generate(&mut third, &req2);
    assert_eq!(s.prefilled_tokens, s.prompt_tokens - stable);
    assert_eq!(entries(&entries_dir).len(), 1);
    // Without the disk cache the engine finds no stable prefix and prefills everything.
    let mut plain = LocalEngine::load(&gguf, "tiny", &candle_core::Device::Cpu).unwrap();
    assert_eq!(plain.prepare(&req).unwrap().stable_prefix, 0);
    let (_, s) = generate(&mut plain, &req);
    assert_eq!(s.prefilled_tokens, s.prompt_tokens);
}

/// `aha run --agent --json "hi"` with greedy sampling and its data folder in `data`: the
/// events, and the final `turn_finished`'s stats.
fn agent_hi(model_name: &str, data: &Path) -> (Vec<Value>, Value) {
    let ws = data.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let config = data.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let out = bin()
        .args(["run", "--agent", "--json", "--temperature", "0"])
        .args(["--max-tokens", "24", "--max-steps", "1"])
        .arg("--workspace")
        .arg(&ws)
        .arg("-m")
        .arg(model(model_name))
        .arg("hi")
        .current_dir(&ws)
        .env("AHA_DATA_DIR", data)
        .env("AHA_CONFIG", &config)
        .env_remove("AHA_PROMPT_CACHE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let events = super::attacker::events(&out);
    let fin = events
        .iter()
        .rev()
        .find(|e| e["type"] == "turn_finished")
        .unwrap_or_else(|| {
            panic!(
                "no turn_finished; stderr: {}\nstdout: {text}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .clone();
    assert!(out.status.success(), "{text}");
    (events, fin)
}

/// What must be the same on a warm and a cold start: every event but the timings.
fn replies(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("turn_finished") => serde_json::json!({ "tokens": e["tokens"] }),
            _ => e.clone(),
        })
        .collect()
}

#[test]
fn a_warm_agent_run_gives_the_cold_runs_tokens_and_prefills_only_the_message() {
    let _g = heavy();
    let data = tempfile::tempdir().unwrap();
    let (cold, cold_fin) = agent_hi("qwen2.5-coder-0.5b", data.path());
    let prompt = cold_fin["stats"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt > 500,
        "the agent's prompt holds the tools: {cold_fin}"
    );
    assert_eq!(cold_fin["stats"]["prefilled_tokens"], prompt, "{cold_fin}");
    let saved = entries(&data.path().join("cache/prompts"));
    assert_eq!(saved.len(), 1, "one entry for the system prompt and tools");
    assert!(!cold_fin["tokens"].as_array().unwrap().is_empty());

    let (warm, warm_fin) = agent_hi("qwen2.5-coder-0.5b", data.path());
    assert_eq!(replies(&warm), replies(&cold), "warm and cold must agree");
    assert_eq!(warm_fin["stats"]["prompt_tokens"], prompt);
    let prefilled = warm_fin["stats"]["prefilled_tokens"].as_u64().unwrap();
    assert!(
        prefilled > 0 && prefilled * 20 < prompt,
        "a warm start prefills only the message: {prefilled} of {prompt}"
    );
}

#[test]
fn a_damaged_entry_is_rebuilt_and_the_run_still_succeeds() {
    let _g = heavy();
    let data = tempfile::tempdir().unwrap();
    let (first, first_fin) = agent_hi("smollm2-135m", data.path());
    let saved = entries(&data.path().join("cache/prompts"));
    assert_eq!(saved.len(), 1);
    let good = std::fs::read(&saved[0]).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&saved[0], &bad).unwrap();

    let (again, again_fin) = agent_hi("smollm2-135m", data.path());
    assert_eq!(replies(&again), replies(&first));
    // Nothing came from the damaged entry: the whole prompt was computed again…
    let prompt = first_fin["stats"]["prompt_tokens"].clone();
    assert_eq!(again_fin["stats"]["prefilled_tokens"], prompt);
    // …and the entry was written again, the same bytes as the first time.
    assert_eq!(entries(&data.path().join("cache/prompts")), saved);
    assert!(
        std::fs::read(&saved[0]).unwrap() == good,
        "the entry was rebuilt"
    );
    // A truncated entry too.
    std::fs::write(&saved[0], &good[..good.len() / 3]).unwrap();
    let (_, fin) = agent_hi("smollm2-135m", data.path());
    assert_eq!(fin["stats"]["prefilled_tokens"], prompt);
    assert!(std::fs::read(&saved[0]).unwrap() == good);
    // And the next start is warm again.
    let (_, fin) = agent_hi("smollm2-135m", data.path());
    assert!(fin["stats"]["prefilled_tokens"].as_u64() < prompt.as_u64());
}
