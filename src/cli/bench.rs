//! `aha bench` (prefill/decode speed, time to first token, memory) and `aha perplexity`.

use super::{load_engine_cold, ModelArgs};
use crate::config::Config;
use crate::engine::local::speculate::Speculate;
use crate::engine::options::CudaDecode;
use crate::engine::sampler::SamplingParams;
use crate::engine::{Control, GenerateRequest, Prompt, ThinkMode};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Prompt tokens to prefill.
    #[arg(short = 'p', long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Repetitions (the median is reported).
    #[arg(short = 'r', long, default_value_t = 1)]
    pub reps: usize,
    /// Also measure a second turn that adds 50 tokens to a `prompt_tokens` conversation (prefix reuse).
    #[arg(long)]
    pub prefix_reuse: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Compare decoding with prompt-lookup drafting (`--speculate ngram`) against plain decoding
    /// over agent-style tasks and over the prose prompt, checking the tokens are identical.
    #[arg(long)]
    pub speculation: bool,
    /// Measure how fast a cancel lands during a prefill of --prompt-tokens tokens (20 tries,
    /// or --reps when above 1).
    #[arg(long)]
    pub cancel: bool,
    /// Compare decoding with N alternatives per token (`--top-logprobs N`) against plain
    /// decoding, each rep running both in turn; also times the sampler alone with and without
    /// its best-tokens pass (which every turn runs for the stats' confidence).
    #[arg(long, value_name = "N")]
    pub top_logprobs: Option<usize>,
    /// With --speculation: the tasks (JSON lines; default: the built-in set,
    /// `assets/speculate_tasks.jsonl`).
    #[arg(long, value_name = "FILE")]
    pub tasks: Option<PathBuf>,
    /// On a CUDA GPU: measure each of these decode paths in turn, one result per path
    /// (`graph`, `fused`, `candle`, comma-separated; default: the one `AHA_CUDA_DECODE` chose).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub decode_paths: Vec<String>,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    model: String,
    device: String,
    /// The CPU kernel set that multiplied the weights (`avx512vnni`, `avxvnni`, `avx2`,
    /// `neon-dotprod`, `neon`, `scalar`, `candle`); `null` on a GPU.
    kernels: Option<&'static str>,
    /// On a GPU, the path decode steps took (`graph`, `fused`, `candle`), and why not the one
    /// asked for where it did not apply; `null` on a CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_path: Option<String>,
    threads: usize,
    /// Weights read per decoded token, GB: bandwidth ÷ this is the decode ceiling.
    weights_gb_per_token: f64,
    prompt_tokens: usize,
    gen_tokens: usize,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: f64,
    peak_rss_mb: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    second_turn_ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    second_turn_cold_ttft_ms: Option<f64>,
}

/// Peak resident memory of this process, in MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Deterministic prompt tokens: English prose tokenized and repeated to length.
pub(crate) fn prompt_tokens(engine: &crate::engine::LocalEngine, n: usize) -> Result<Vec<u32>> {
    let text = include_str!("../../assets/bench_prompt.txt");
    let ids = engine.tokenizer.encode(text)?;
    if ids.is_empty() {
        bail!("benchmark text tokenized to nothing");
    }
    Ok(ids.iter().copied().cycle().take(n).collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `aha bench`.
pub fn bench(m: &ModelArgs, a: BenchArgs, cfg: &Config) -> Result<i32> {
    let mut engine = load_engine_cold(m, cfg)?;
    // Plain decoding unless `--speculate` says otherwise: the figures compare with llama-bench's.
    engine.set_speculate(m.speculate.unwrap_or(Speculate::Off));
    if a.cancel {
        let prompt = prompt_tokens(&engine, a.prompt_tokens)?;
        let tries = if a.reps > 1 { a.reps } else { 20 };
        return super::bench_cancel::run(&mut engine, prompt, tries, a.json);
    }
    if a.speculation {
        let prose = prompt_tokens(&engine, a.prompt_tokens)?;
        let tasks = match &a.tasks {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?,
            None => include_str!("../../assets/speculate_tasks.jsonl").to_string(),
        };
        return super::bench_spec::run(&mut engine, &tasks, prose, a.json);
    }
    let tokens = prompt_tokens(&engine, a.prompt_tokens)?;
    let req = |t: Vec<u32>, g: usize| GenerateRequest {
        prompt: Prompt::Tokens(t),
        sampling: SamplingParams::greedy(),
        max_tokens: g,
        think: ThinkMode::Auto,
        think_budget: None,
        ignore_eos: true,
        tools: None,
        assistant_prefix: None,
        constrain_tools: true,
        no_tool_calls: false,
        trace: Default::default(),
    };
    if let Some(n) = a.top_logprobs {
        return bench_top(&mut engine, &a, n, |g| req(tokens.clone(), g));
    }
    let paths = a
        .decode_paths
        .iter()
        .map(|p| {
            CudaDecode::parse(p).ok_or_else(|| {
                anyhow::anyhow!(
                    "--decode-paths: `{p}` is not a decode path: use {}",
                    CudaDecode::NAMES.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if paths.is_empty() {
        return bench_plain(&mut engine, &a, &tokens, &req);
    }
    if !engine.model.device.is_cuda() {
        bail!("--decode-paths compares the decode paths of a CUDA GPU: use --device cuda");
    }
    for p in paths {
        engine.model.fused.set_mode(p, &engine.model.device);
        bench_plain(&mut engine, &a, &tokens, &req)?;
    }
    Ok(0)
}

/// One measurement of prefill and decode (and prefix reuse), printed.
fn bench_plain(
    engine: &mut crate::engine::LocalEngine,
    a: &BenchArgs,
    tokens: &[u32],
    req: &dyn Fn(Vec<u32>, usize) -> GenerateRequest,
) -> Result<i32> {
    let ctrl = Control::default();
    let tokens = tokens.to_vec();
    let (mut pf, mut dc, mut tt) = (vec![], vec![], vec![]);
    for _ in 0..a.reps.max(1) {
        engine.truncate(0);
        let s = engine.generate(&req(tokens.clone(), a.gen_tokens), &ctrl, &mut |_| {})?;
        pf.push(s.prefill_tok_s);
        dc.push(s.decode_tok_s);
        tt.push(s.ttft_ms);
    }
    let (mut warm, mut cold) = (None, None);
    if a.prefix_reuse {
        let more = prompt_tokens(engine, a.prompt_tokens + 50)?;
        let mut second = tokens.clone();
        second.extend_from_slice(&more[a.prompt_tokens..]);
        engine.truncate(0);
        engine.generate(&req(tokens.clone(), 1), &ctrl, &mut |_| {})?;
        let s = engine.generate(&req(second.clone(), 1), &ctrl, &mut |_| {})?;
        warm = Some(s.ttft_ms);
        engine.truncate(0);
        let s = engine.generate(&req(second, 1), &ctrl, &mut |_| {})?;
        cold = Some(s.ttft_ms);
    }
    let r = BenchResult {
        model: engine.name.clone(),
        device: crate::engine::device::describe(&engine.model.device),
        kernels: engine
            .model
            .device
            .is_cpu()
            .then(|| crate::engine::local::qkernels::current().name()),
        decode_path: engine
            .model
            .device
            .is_cuda()
            .then(|| match engine.model.decode_path() {
                (p, None) => p.name().to_string(),
                (p, Some(why)) => format!("{} ({why})", p.name()),
            }),
        weights_gb_per_token: engine.model.weight_bytes_per_token() as f64 / 1e9,
        threads: candle_core::utils::get_num_threads(),
        prompt_tokens: a.prompt_tokens,
        gen_tokens: a.gen_tokens,
        prefill_tok_s: median(pf),
        decode_tok_s: median(dc),
        ttft_ms: median(tt),
        peak_rss_mb: peak_rss_mb(),
        second_turn_ttft_ms: warm,
        second_turn_cold_ttft_ms: cold,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "model {} · {}{} · {:.2} GB of weights per token\nprefill {} tokens: {:.1} tok/s\ndecode {} tokens: {:.1} tok/s\ntime to first token: {:.0} ms\npeak RSS: {:.0} MB",
            r.model, r.device, r.decode_path.as_deref().map(|p| format!(" · decode {p}")).unwrap_or_default(), r.weights_gb_per_token, r.prompt_tokens, r.prefill_tok_s, r.gen_tokens, r.decode_tok_s, r.ttft_ms, r.peak_rss_mb
        );
        if let (Some(w), Some(c)) = (warm, cold) {
            println!(
                "second turn (+50 tokens after {}): ttft {:.0} ms with prefix reuse vs {:.0} ms cold ({:.1}x)",
                r.prompt_tokens,
                w,
                c,
                c / w.max(1e-9)
            );
        }
    }
    Ok(0)
}

/// `aha bench --top-logprobs N`: decode speed with N alternatives per token against without,
/// interleaved, and the sampler's own cost with and without its best-tokens pass.
fn bench_top(
    engine: &mut crate::engine::LocalEngine,
    a: &BenchArgs,
    n: usize,
    req: impl Fn(usize) -> GenerateRequest,
) -> Result<i32> {
    use crate::engine::sampler::Sampler;
    let ctrl = Control::default();
    let (mut plain, mut top) = (vec![], vec![]);
    let mut same = true;
    for _ in 0..a.reps.max(1) {
        let mut ids = [Vec::new(), Vec::new()];
        for (k, out) in [(0, &mut plain), (n, &mut top)] {
            let mut r = req(a.gen_tokens);
            r.trace.top_logprobs = k;
            engine.truncate(0);
            let mut toks = Vec::new();
            let s = engine.generate(&r, &ctrl, &mut |e| {
                if let crate::protocol::Event::TurnFinished { tokens, .. } = e {
                    toks = tokens;
                }
            })?;
            out.push(s.decode_tok_s);
            ids[usize::from(k > 0)] = toks;
        }
        same &= ids[0] == ids[1];
    }
    // The sampler alone over logits of the model's vocabulary size.
    let vocab = engine.tokenizer.vocab_size();
    let logits: Vec<f32> = (0..vocab)
        .map(|i| ((i as u64 * 2654435761) % 1000) as f32 / 100.0)
        .collect();
    let time = |k: usize| {
        let mut s = Sampler::new(SamplingParams::greedy()).with_top(k);
        let t = std::time::Instant::now();
        for _ in 0..200 {
            std::hint::black_box(s.sample(&mut logits.clone(), &[]));
        }
        t.elapsed().as_secs_f64() * 1e3 / 200.0
    };
    let (bare_ms, five_ms) = (time(0), time(n.max(5)));
    let (p, t) = (median(plain), median(top));
    let out = serde_json::json!({
        "model": engine.name, "gen_tokens": a.gen_tokens, "reps": a.reps.max(1),
        "kernels": crate::engine::local::qkernels::current().name(),
        "top_logprobs": n, "decode_tok_s_plain": p, "decode_tok_s_top": t,
        "slowdown": 1.0 - t / p, "same_tokens": same,
        "sampler_ms_without_top": bare_ms, "sampler_ms_with_top": five_ms,
        "vocab": vocab,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "decode {} tokens: {p:.2} tok/s plain, {t:.2} tok/s with --top-logprobs {n} ({:+.1}%), same tokens: {same}\nsampler over {vocab} logits: {bare_ms:.3} ms without the best-tokens pass, {five_ms:.3} ms with it",
            a.gen_tokens,
            (t / p - 1.0) * 100.0
        );
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct PplArgs {
    /// The text file to score.
    pub file: PathBuf,
    /// Window size in tokens (the text is scored in independent windows).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `aha perplexity`.
pub fn perplexity(m: &ModelArgs, a: PplArgs, cfg: &Config) -> Result<i32> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let engine = load_engine_cold(m, cfg)?;
    let mut tokens = Vec::new();
    if let Some((id, _)) = &engine.tokenizer.bos {
        if engine.tokenizer.add_bos {
            tokens.push(*id);
        }
    }
    tokens.extend(engine.tokenizer.encode(&text)?);
    let ppl = engine.perplexity(&tokens, a.ctx)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"tokens": tokens.len(), "ctx": a.ctx, "perplexity": ppl})
        );
    } else {
        println!(
            "{} tokens, window {}: perplexity {ppl:.4}",
            tokens.len(),
            a.ctx
        );
    }
    Ok(0)
}
