//! `aha bench --speculation`: decode speed with prompt-lookup drafting against plain decoding,
//! in one run on one loaded model, over agent-style tasks (`assets/speculate_tasks.jsonl`) and
//! over free prose (the `aha bench` prompt). Every task runs greedy both ways, and the tokens
//! must be identical; a difference is reported and fails the run.

use crate::engine::local::speculate::Speculate;
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
    req.prompt = Prompt::Tokens(prose);
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 128;
    req.ignore_eos = true;
    let (mut pp, mut ps) = (Decode::default(), Decode::default());
    compare(engine, &req, "prose", &mut pp, &mut ps)?;
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
        identical: true,
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} tasks: plain {:.1} tok/s, ngram {:.1} tok/s ({:.2}x; {} of {} drafted tokens kept)\nprose: plain {:.1} tok/s, ngram {:.1} tok/s ({:.2}x)\ntokens identical in every task",
            r.tasks,
            r.tasks_plain_tok_s,
            r.tasks_ngram_tok_s,
            r.tasks_speedup,
            spec.accepted,
            spec.drafted,
            r.prose_plain_tok_s,
            r.prose_ngram_tok_s,
            r.prose_ratio
        );
    }
    Ok(0)
}
