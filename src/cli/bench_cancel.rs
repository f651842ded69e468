//! `aha bench --cancel`: how long a stop takes to land while a long prompt is prefilled. Each
//! try starts a fresh prefill, cancels it from another thread at a point spread over the
//! prefill's length, and measures from the cancel to `generate` returning; then the same for a
//! sandboxed `run_code` that would run for 30 s.

use crate::engine::sampler::SamplingParams;
use crate::engine::{Control, GenerateRequest, LocalEngine, Prompt};
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    prompt_tokens: usize,
    tries: usize,
    /// One whole prefill of the prompt, uncancelled.
    prefill_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    /// The same for a sandboxed `run_code` (a program that sleeps), cancelled 300 ms in.
    tool_p50_ms: f64,
    tool_p95_ms: f64,
    tool_max_ms: f64,
}

/// `tries` sandboxed `run_code` calls of a sleeping program, each cancelled 300 ms after it
/// started; the times from the cancel to the tool returning, sorted.
fn tool_tries(tries: usize) -> Result<Vec<f64>> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let ws = tempfile::tempdir()?;
    let mut host = crate::agent::host::builtin(ws.path())?;
    let args = serde_json::json!({"language": "python", "code": "import time\ntime.sleep(30)"});
    let mut lat = Vec::with_capacity(tries);
    for i in 0..tries {
        let cancel = Arc::new(AtomicBool::new(false));
        let (ended, at) = std::thread::scope(|s| {
            let c = cancel.clone();
            let stopper = s.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                c.store(true, std::sync::atomic::Ordering::SeqCst);
                Instant::now()
            });
            let (ok, out) = host.run("run_code", args.clone(), i as u64 + 1, cancel.clone());
            (Instant::now(), stopper.join().map(|t| (t, ok, out)))
        });
        let Ok((at, ok, out)) = at else {
            bail!("the cancelling thread panicked");
        };
        if ok || !out.contains("cancelled") {
            bail!("run_code was not cancelled: {out}");
        }
        lat.push(ended.duration_since(at).as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(lat)
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One try: prefill `req` from an empty cache and cancel after `delay`. Returns the time from the
/// cancel to `generate` returning, or `None` if the turn ended before the cancel.
fn once(engine: &mut LocalEngine, req: &GenerateRequest, delay: Duration) -> Result<Option<f64>> {
    engine.truncate(0);
    let ctrl = Control::default();
    let (r, cancelled_at, ended) = std::thread::scope(|s| {
        let c = &ctrl;
        let stopper = s.spawn(move || {
            std::thread::sleep(delay);
            c.cancel();
            Instant::now()
        });
        let r = engine.generate(req, &ctrl, &mut |_| {});
        let ended = Instant::now();
        (r, stopper.join(), ended)
    });
    let stats = r?;
    let Ok(at) = cancelled_at else {
        bail!("the cancelling thread panicked");
    };
    if stats.finish_reason != crate::protocol::FinishReason::Cancelled || ended < at {
        return Ok(None);
    }
    Ok(Some(ended.duration_since(at).as_secs_f64() * 1000.0))
}

/// Runs `tries` cancels during prefills of `prompt`.
pub fn run(engine: &mut LocalEngine, prompt: Vec<u32>, tries: usize, json: bool) -> Result<i32> {
    let mut req = GenerateRequest::chat(Vec::new());
    req.prompt = Prompt::Tokens(prompt.clone());
    req.sampling = SamplingParams::greedy();
    req.max_tokens = 1;
    engine.truncate(0);
    let t0 = Instant::now();
    engine.generate(&req, &Control::default(), &mut |_| {})?;
    let prefill = t0.elapsed();
    let tries = tries.max(1);
    let mut lat = Vec::with_capacity(tries);
    for i in 0..tries {
        // Cancel points from 5 % to 80 % of the prefill; one that comes too late (the machine
        // got faster) is tried again earlier.
        let mut f = 0.05 + 0.75 * i as f64 / (tries - 1).max(1) as f64;
        let ms = loop {
            if let Some(ms) = once(engine, &req, prefill.mul_f64(f))? {
                break ms;
            }
            if f < 0.01 {
                bail!("try {i}: the prefill ended before the cancel; use a longer prompt");
            }
            f /= 2.0;
        };
        lat.push(ms);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| quantile(&lat, q);
    let tool = tool_tries(tries)?;
    let r = Report {
        model: engine.name.clone(),
        prompt_tokens: prompt.len(),
        tries,
        prefill_ms: prefill.as_secs_f64() * 1000.0,
        p50_ms: pick(0.5),
        p95_ms: pick(0.95),
        max_ms: pick(1.0),
        tool_p50_ms: quantile(&tool, 0.5),
        tool_p95_ms: quantile(&tool, 0.95),
        tool_max_ms: quantile(&tool, 1.0),
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "cancel during a {}-token prefill ({:.0} ms whole), {} tries: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            r.prompt_tokens, r.prefill_ms, r.tries, r.p50_ms, r.p95_ms, r.max_ms
        );
        println!(
            "cancel during a sandboxed run_code, {} tries: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
            r.tries, r.tool_p50_ms, r.tool_p95_ms, r.tool_max_ms
        );
    }
    Ok(0)
}
