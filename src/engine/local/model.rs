//! The decoder-only transformer forward (qwen2, llama) on candle ops, with our own KV cache.

use super::kv_cache::KvCache;
use super::linear::Linear;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Arc;

/// Architectures the local engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Llama,
}

impl Arch {
    /// Names as GGUF's `general.architecture` spells them.
    pub const SUPPORTED: &'static [&'static str] = &["qwen2", "llama"];

    /// Parses a GGUF/HF architecture name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "qwen2" | "Qwen2ForCausalLM" => Some(Self::Qwen2),
            "llama" | "LlamaForCausalLM" => Some(Self::Llama),
            _ => None,
        }
    }

    /// The GGUF name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
        }
    }
}

/// Hyper-parameters of a model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub n_embd: usize,
    pub head_dim: usize,
    pub n_ctx: usize,
    pub vocab_size: usize,
    pub rope_base: f32,
    pub rms_eps: f64,
    /// GGUF llama weights are permuted for interleaved (GPT-J style) rotary embeddings;
    /// qwen2 and HF checkpoints use the half-split (NeoX) style.
    pub rope_interleaved: bool,
}

/// The embedding table: quantized rows are dequantized on lookup.
#[derive(Debug)]
pub enum Embedding {
    Quant(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Quant(q) => q.embedding(ids),
            Self::Dense(t) => t.embedding(ids),
        }
    }
}

/// One transformer block's weights.
#[derive(Debug)]
pub struct Block {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    pub wo: Linear,
    pub ffn_norm: Tensor,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

/// A loaded model: weights and configuration (the cache lives apart, in [`KvCache`]).
#[derive(Debug)]
pub struct Transformer {
    pub cfg: ModelConfig,
    pub embed: Embedding,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    pub output: Linear,
    pub device: Device,
    /// Activations' dtype (f32 on CPU).
    pub dtype: DType,
}

fn kv_f16() -> bool {
    static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F.get_or_init(|| std::env::var("AHA_KV_F16").as_deref() == Ok("1"))
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(x, w, eps as f32)
}

fn add_bias(x: Tensor, b: &Option<Tensor>) -> Result<Tensor> {
    match b {
        Some(b) => x.broadcast_add(b),
        None => Ok(x),
    }
}

impl Transformer {
    /// Bytes of weights one decode step reads (every matrix once; the embedding table is only
    /// looked up, one row per token).
    pub fn weight_bytes_per_token(&self) -> usize {
        let mut n = self.output.weight_bytes();
        for b in &self.blocks {
            for l in [&b.wq, &b.wk, &b.wv, &b.wo, &b.w_gate, &b.w_up, &b.w_down] {
                n += l.weight_bytes();
            }
        }
        n
    }
    /// A cache sized for this model's full context.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layer, self.cfg.n_ctx)
    }

    fn rope_tables(&self, pos: usize, n: usize) -> Result<(Tensor, Tensor)> {
        let half = self.cfg.head_dim / 2;
        let base = self.cfg.rope_base as f64;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / base.powf(2.0 * i as f64 / self.cfg.head_dim as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in pos..pos + n {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (n, half), &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (n, half), &self.device)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// With `AHA_KV_F16=1`, rounds an attention operand to f16 as llama.cpp's f16 cache and
    /// attention do (for token-by-token comparisons); otherwise returns it unchanged.
    fn kv_round(&self, t: Tensor) -> Result<Tensor> {
        if kv_f16() {
            t.to_dtype(DType::F16)?.to_dtype(self.dtype)
        } else {
            Ok(t)
        }
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
        }
    }

    /// Runs `tokens` at positions `cache.len()..`, appending to the cache. Returns logits
    /// `(n, vocab)` for every position when `all_logits`, else `(1, vocab)` for the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        if rayon::current_thread_index().is_some() {
            return self.forward_inner(tokens, cache, all_logits);
        }
        // Run on a pool worker: the parallel kernels inside then split work with the calling
        // worker instead of handing every one of the ~170 mat-vecs per token to sleeping threads.
        rayon::join(|| self.forward_inner(tokens, cache, all_logits), || ()).0
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor> {
        let n = tokens.len();
        if n == 0 {
            candle_core::bail!("forward called with no tokens")
        }
        let pos = cache.len();
        if pos + n > self.cfg.n_ctx {
            candle_core::bail!(
                "context full: {} cached + {n} new tokens exceed the context length {}",
                pos,
                self.cfg.n_ctx
            )
        }
        let cfg = &self.cfg;
        let (h, kvh, d) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let g = h / kvh;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?.to_dtype(self.dtype)?;
        let (cos, sin) = self.rope_tables(pos, n)?;
        let total = pos + n;
        let mask = if n > 1 {
            let mut m = Vec::with_capacity(n * total);
            for i in 0..n {
                for j in 0..total {
                    m.push(if j > pos + i { f32::NEG_INFINITY } else { 0.0 });
                }
            }
            let m = Tensor::from_vec(m, (1, n, total), &self.device)?.to_dtype(self.dtype)?;
            // Rows of the grouped query are (group member, position): repeat the mask per member.
            Some(m.repeat((1, g, 1))?)
        } else {
            None
        };
        let scale = 1.0 / (d as f64).sqrt();
        for (li, b) in self.blocks.iter().enumerate() {
            let residual = &x;
            let xn = rms_norm(&x, &b.attn_norm, cfg.rms_eps)?;
            let q = add_bias(b.wq.forward(&xn)?, &b.bq)?;
            let k = add_bias(b.wk.forward(&xn)?, &b.bk)?;
            let v = add_bias(b.wv.forward(&xn)?, &b.bv)?;
            let q = q.reshape((1, n, h, d))?.transpose(1, 2)?.contiguous()?;
            let k = k.reshape((1, n, kvh, d))?.transpose(1, 2)?.contiguous()?;
            let v = v.reshape((n, kvh, d))?.transpose(0, 1)?.contiguous()?;
            let q = self.rope(&q, &cos, &sin)?;
            let k = self.rope(&k, &cos, &sin)?.squeeze(0)?;
            let (k, v) = (self.kv_round(k)?, self.kv_round(v)?);
            let (ka, va) = cache.layer_mut(li).append(&k, &v, cfg.n_ctx)?;
            // Grouped-query attention without copying keys: (kvh, g*n, d) x (kvh, d, total).
            let q = q.reshape((kvh, g * n, d))?;
            let q = self.kv_round(q)?;
            let att = (q.matmul(&ka.t()?)? * scale)?;
            let att = match &mask {
                Some(m) => att.broadcast_add(m)?,
                None => att,
            };
            let att = self.kv_round(candle_nn::ops::softmax_last_dim(&att)?)?;
            let y = att.matmul(&va)?; // (kvh, g*n, d)
            let y = y
                .reshape((h, n, d))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, h * d))?;
            let y = b.wo.forward(&y)?;
            let x1 = (residual + y)?;
            let xn = rms_norm(&x1, &b.ffn_norm, cfg.rms_eps)?;
            let gate = candle_nn::ops::silu(&b.w_gate.forward(&xn)?)?;
            let up = b.w_up.forward(&xn)?;
            let y = b.w_down.forward(&(gate * up)?)?;
            x = (x1 + y)?;
        }
        let x = if all_logits {
            x
        } else {
            x.narrow(0, n - 1, 1)?
        };
        let x = rms_norm(&x, &self.norm, cfg.rms_eps)?;
        self.output.forward(&x)?.to_dtype(DType::F32)
    }
}

/// Numerically stable log-softmax of one row of logits.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f32 = logits.iter().map(|l| (l - m).exp()).sum();
    let ls = s.ln() + m;
    logits.iter().map(|l| l - ls).collect()
}

/// Convenience: logits of the last row as a `Vec<f32>`.
pub fn last_row(logits: &Tensor) -> Result<Vec<f32>> {
    let (n, _) = logits.dims2()?;
    logits.get(n - 1)?.to_vec1::<f32>()
}
