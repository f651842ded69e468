//! `aha bench --speculation`: decode speed with prompt-lookup drafting against plain decoding,
//! in one run on one loaded model, over agent-style tasks (`assets/speculate_tasks.jsonl`) and
//! over free prose (the `aha bench` prompt). Every task runs greedy both ways, and the tokens
//! must be identical; a difference is reported and fails the run.

use crate::engine::local::speculate::{Speculate, MAX_DRAFT};
use crate::engine::sampler::SamplingParams;
use crate::engine::template::ChatMessage;
use crate::engine::{Control, GenerateRequest, LocalEngine, Prompt, ThinkMode};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// One task of the set: a conversation to continue, and how many tokens to generate.
#[derive(Debug, Deserialize)]
struct Task {
    id: String,
    kind: String,
    messages: Vec<ChatMessage>,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
}

fn default_max_tokens() -> usize {
    256
}

/// Decode time and tokens of a set of generations.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Decode {
    /// Tokens after each generation's first (the first comes from the prefill).
    pub tokens: usize,
    pub seconds: f64,
    pub drafted: usize,
    pub accepted: usize,
}

impl Decode {
    fn tok_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// One generation with `mode`, from an empty cache: its tokens and decode figures.
fn once(
    engine: &mut LocalEngine,
    req: &GenerateRequest,
    mode: Speculate,
) -> Result<(Vec<u32>, Decode)> {
    engine.set_speculate(mode);
    engine.truncate(0);
    let mut tokens = Vec::new();
    let s = engine.generate(req, &Control::default(), &mut |e| {
        if let crate::protocol::Event::TurnFinished { tokens: t, .. } = e {
            tokens = t;
        }
    })?;
    let n = tokens.len().saturating_sub(1);
    let seconds = if s.decode_tok_s > 0.0 {
        n as f64 / s.decode_tok_s
    } else {
        0.0
    };
    Ok((
        tokens,
        Decode {
            tokens: n,
            seconds,
            drafted: s.drafted_tokens,
            accepted: s.accepted_tokens,
        },
    ))
}

/// Both modes on `req`, plain first; adds each to its total. Errors when the tokens differ.
fn compare(
    engine: &mut LocalEngine,
    req: &GenerateRequest,
    id: &str,
    plain: &mut Decode,
    spec: &mut Decode,
) -> Result<(Decode, Decode)> {
    let (want, p) = once(engine, req, Speculate::Off)?;
    let (got, s) = once(engine, req, Speculate::Ngram)?;
    if want != got {
        let at = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
        bail!(
            "{id}: speculative decoding changed the output at token {at} ({} vs {} tokens)",
            want.len(),
            got.len()
        );
    }
    for (t, d) in [(&mut *plain, p), (&mut *spec, s)] {
        t.tokens += d.tokens;
        t.seconds += d.seconds;
        t.drafted += d.drafted;
        t.accepted += d.accepted;
    }
    Ok((p, s))
}

/// Milliseconds of one verifying forward call of 1 to [`MAX_DRAFT`] + 1 rows after a 300-token
/// context (median of 5 each): what a draft costs against a one-token step.
fn verify_costs(engine: &LocalEngine, prose: &[u32]) -> Result<Vec<f64>> {
    use crate::engine::local::model::ForwardOpts;
    let m = &engine.model;
    let mut cache = m.new_cache();
    let ctx = &prose[..prose.len().min(300)];
    m.forward(ctx, &mut cache, false)?;
    let mut out = Vec::new();
    for rows in 1..=MAX_DRAFT + 1 {
        let feed = &prose[..rows];
        let mut t = Vec::new();
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let opts = ForwardOpts {
                all_logits: true,
                rowwise: true,
                ..ForwardOpts::default()
            };
            m.forward_with(feed, &mut cache, opts)?;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            cache.truncate(ctx.len());
        }
        t.sort_by(|a, b| a.total_cmp(b));
        out.push(t[2]);
    }
    Ok(out)
}

/// Free writing from a short request (nothing to copy): both modes, plain first.
fn free_writing(engine: &mut LocalEngine) -> Result<(Decode, Decode)> {
    let mut req = GenerateRequest::chat(vec![ChatMessage::new(
        crate::protocol::Role::User,
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    )]);
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 256;
    let (mut p, mut s) = (Decode::default(), Decode::default());
    compare(engine, &req, "free writing", &mut p, &mut s)?;
    Ok((p, s))
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    kernels: Option<&'static str>,
    threads: usize,
    tasks: usize,
    tasks_plain_tok_s: f64,
    tasks_ngram_tok_s: f64,
    tasks_speedup: f64,
    tasks_acceptance: f64,
    prose_plain_tok_s: f64,
    prose_ngram_tok_s: f64,
    prose_ratio: f64,
    free_plain_tok_s: f64,
    free_ngram_tok_s: f64,
    free_ratio: f64,
    /// One verifying forward call of 1, 2, … rows, in ms (row 1: a plain step).
    verify_ms_by_rows: Vec<f64>,
    identical: bool,
}

/// Runs the comparison over the tasks in `text` (JSON lines) and the prose prompt.
pub fn run(engine: &mut LocalEngine, text: &str, prose: Vec<u32>, json: bool) -> Result<i32> {
    let tasks: Vec<Task> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("task on line {}", i + 1)))
        .collect::<Result<_>>()?;
    let (mut plain, mut spec) = (Decode::default(), Decode::default());
    for t in &tasks {
        let mut req = GenerateRequest::chat(t.messages.clone());
        req.sampling = SamplingParams::greedy();
        req.max_tokens = t.max_tokens;
        req.think = ThinkMode::Auto;
        let (p, s) = compare(engine, &req, &t.id, &mut plain, &mut spec)?;
        if !json {
            eprintln!(
                "{:<28} {:<8} {:>4} tokens  plain {:>6.1} tok/s  ngram {:>6.1} tok/s  ({:.2}x, {}/{} kept)",
                t.id,
                t.kind,
                p.tokens + 1,
                p.tok_s(),
                s.tok_s(),
                s.tok_s() / p.tok_s().max(1e-9),
                s.accepted,
                s.drafted
            );
        }
    }
    let mut req = GenerateRequest::chat(Vec::new());
    req.prompt = Prompt::Tokens(prose.clone());
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 128;
    req.ignore_eos = true;
    let (mut pp, mut ps) = (Decode::default(), Decode::default());
    compare(engine, &req, "prose", &mut pp, &mut ps)?;
    let (fp, fs) = free_writing(engine)?;
    let verify = verify_costs(engine, &prose)?;
    let r = Report {
        model: engine.name.clone(),
        kernels: engine
            .model
            .device
            .is_cpu()
            .then(|| crate::engine::local::qkernels::current().name()),
        threads: candle_core::utils::get_num_threads(),
        tasks: tasks.len(),
        tasks_plain_tok_s: plain.tok_s(),
        tasks_ngram_tok_s: spec.tok_s(),
        tasks_speedup: spec.tok_s() / plain.tok_s().max(1e-9),
        tasks_acceptance: spec.accepted as f64 / spec.drafted.max(1) as f64,
        prose_plain_tok_s: pp.tok_s(),
        prose_ngram_tok_s: ps.tok_s(),
        prose_ratio: ps.tok_s() / pp.tok_s().max(1e-9),
        free_plain_tok_s: fp.tok_s(),
        free_ngram_tok_s: fs.tok_s(),
        free_ratio: fs.tok_s() / fp.tok_s().max(1e-9),
        verify_ms_by_rows: verify,
        identical: true,
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} tasks: plain {:.1} tok/s, ngram {:.1} tok/s ({:.2}x; {} of {} drafted tokens kept)\nprose (the aha bench prompt): plain {:.1} tok/s, ngram {:.1} tok/s ({:.2}x)\nfree writing: plain {:.1} tok/s, ngram {:.1} tok/s ({:.2}x; {} of {} drafted tokens kept)\ntokens identical in every task",
            r.tasks,
            r.tasks_plain_tok_s,
            r.tasks_ngram_tok_s,
            r.tasks_speedup,
            spec.accepted,
            spec.drafted,
            r.prose_plain_tok_s,
            r.prose_ngram_tok_s,
            r.prose_ratio,
            r.free_plain_tok_s,
            r.free_ngram_tok_s,
            r.free_ratio,
            fs.accepted,
            fs.drafted
        );
        let costs: Vec<String> = r
            .verify_ms_by_rows
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                format!(
                    "{} rows {:.1} ms ({:.2}x)",
                    i + 1,
                    ms,
                    ms / r.verify_ms_by_rows[0]
                )
            })
            .collect();
        println!("one verifying forward call: {}", costs.join(", "));
    }
    Ok(0)
}
