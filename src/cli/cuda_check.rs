//! `aha cuda-check`: on a CUDA GPU, every fused decode kernel against its CPU reference
//! (model-sized inputs), and with `--paths` the model's decode paths against each other on the
//! same tokens: candle's operations, the fused kernels launched one by one, and the fused step
//! replayed as a CUDA graph. Exits 1 when a check fails.

use super::ModelArgs;
use crate::config::Config;
use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct CudaCheckArgs {
    /// Also compare the decode paths on the model (--model, --device cuda).
    #[arg(long)]
    pub paths: bool,
    /// Skip the kernel checks (with --paths: only the paths).
    #[arg(long)]
    pub no_kernels: bool,
    /// Prompt tokens before the compared steps.
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Decode steps compared per path.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// The largest relative difference of the fused logits from candle's that passes
    /// (max |fused − candle| / max |candle|, per step).
    #[arg(long, default_value_t = 1e-2)]
    pub tolerance: f32,
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_check(_m: &ModelArgs, _a: CudaCheckArgs, _cfg: &Config) -> Result<i32> {
    anyhow::bail!(
        "this aha was built without CUDA: build it with tools/build-cuda.sh (or `cargo build --release --features cuda`) and run it on a machine with an NVIDIA GPU"
    )
}

#[cfg(feature = "cuda")]
pub fn cuda_check(m: &ModelArgs, a: CudaCheckArgs, cfg: &Config) -> Result<i32> {
    use crate::engine::cuda_kernels::checks::{run, Size, Staged};
    use crate::engine::cuda_kernels::gpu::{DevMem, Kernels};
    let opts = crate::engine::options::EngineOptions::from_env();
    let spec = if m.device == "auto" {
        "cuda"
    } else {
        &m.device
    };
    let dev = crate::engine::device::select_with(spec, &opts)?;
    let candle_core::Device::Cuda(cd) = &dev else {
        anyhow::bail!("cuda-check needs a CUDA device, not {spec}")
    };
    let mut failed = 0;
    if !a.no_kernels {
        let k = Kernels::new(cd)?;
        let checks = run(&Staged::new(&k, DevMem::new(&k)), Size::Large)?;
        for c in &checks {
            println!("{c}");
            failed += usize::from(!c.passed());
        }
        println!(
            "kernels: {} of {} checks passed",
            checks.len() - failed,
            checks.len()
        );
    }
    if a.paths {
        let engine = super::load_engine_cold(m, cfg)?;
        failed += paths::compare(&engine, &a)?;
    }
    Ok(i32::from(failed > 0))
}

#[cfg(feature = "cuda")]
mod paths {
    use super::CudaCheckArgs;
    use crate::engine::cuda_kernels::checks::rel_error;
    use crate::engine::local::model::last_row;
    use crate::engine::options::CudaDecode;
    use crate::engine::LocalEngine;
    use anyhow::Result;

    fn argmax(v: &[f32]) -> u32 {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as u32)
    }

    /// Runs the prompt (candle's prefill), then `n` decode steps on `path`, feeding `forced`'s
    /// tokens where given (else its own greedy choices). Returns each step's greedy token and
    /// logits.
    fn decode(
        engine: &LocalEngine,
        path: CudaDecode,
        prompt: &[u32],
        n: usize,
        forced: Option<&[u32]>,
    ) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        let model = &engine.model;
        model.fused.set_mode(path, &model.device);
        let mut cache = model.new_cache();
        let l = model.forward(prompt, &mut cache, false)?;
        let mut tok = argmax(&last_row(&l)?);
        let (mut toks, mut logits) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let l = model.forward(&[tok], &mut cache, false)?;
            let v = last_row(&l)?;
            let next = argmax(&v);
            toks.push(next);
            logits.push(v);
            tok = forced.map_or(next, |f| f[i]);
        }
        Ok((toks, logits))
    }

    /// Compares the paths; returns the number of failed checks.
    pub fn compare(engine: &LocalEngine, a: &CudaCheckArgs) -> Result<usize> {
        let model = &engine.model;
        let before = model.fused.mode();
        let prompt = super::super::bench::prompt_tokens(engine, a.prompt_tokens)?;
        let n = a.tokens;
        let (ref_toks, ref_logits) = decode(engine, CudaDecode::Candle, &prompt, n, None)?;
        let mut failed = 0;
        let mut fused_logits = None;
        for path in [CudaDecode::Fused, CudaDecode::Graph] {
            let (toks, logits) = decode(engine, path, &prompt, n, Some(&ref_toks))?;
            let (taken, why) = model.decode_path();
            if taken != path {
                println!(
                    "FAIL decode path {}: not taken ({})",
                    path.name(),
                    why.unwrap_or_default()
                );
                failed += 1;
                continue;
            }
            let err = logits
                .iter()
                .zip(&ref_logits)
                .map(|(g, w)| rel_error(g, w))
                .fold(0f32, f32::max);
            let same = toks.iter().zip(&ref_toks).filter(|(x, y)| x == y).count();
            let ok = err <= a.tolerance;
            failed += usize::from(!ok);
            println!(
                "{} decode path {:<6} vs candle over {n} steps: logits max rel. difference {err:.2e} (tolerance {:.0e}), greedy token the same at {same}/{n} steps",
                if ok { "ok  " } else { "FAIL" },
                path.name(),
                a.tolerance
            );
            match &fused_logits {
                None => fused_logits = Some(logits),
                Some(f) => {
                    // The graph replays exactly the launches of the eager fused path.
                    let identical = *f == logits;
                    failed += usize::from(!identical);
                    println!(
                        "{} graph replay and eager fused launches give identical logits: {identical}",
                        if identical { "ok  " } else { "FAIL" }
                    );
                }
            }
        }
        model.fused.set_mode(before, &model.device);
        Ok(failed)
    }
}
