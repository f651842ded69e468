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
    /// Dense checkpoints: q, k and v as one matrix (and bias), so a step launches one matmul
    /// instead of three (on a GPU, decode is bound by the number of kernel launches). `wq`, `wk`,
    /// `wv` are then views into it.
    pub qkv: Option<(Tensor, Option<Tensor>)>,
    /// Dense checkpoints: gate and up as one matrix; `w_gate`, `w_up` are views into it.
    pub gate_up: Option<Tensor>,
    /// The query weights (and bias) already carry the 1/sqrt(head_dim) attention scale.
    pub q_prescaled: bool,
}

impl Block {
    /// Fuses dense q/k/v and gate/up weights (see [`Block::qkv`]) and folds the attention scale
    /// into the query projection. Leaves quantized blocks as they are.
    pub fn fuse_dense(&mut self, head_dim: usize) -> Result<()> {
        let (Linear::Dense(q), Linear::Dense(k), Linear::Dense(v)) = (&self.wq, &self.wk, &self.wv)
        else {
            return Ok(());
        };
        let scale = 1.0 / (head_dim as f64).sqrt();
        let (nq, nk) = (q.dim(0)?, k.dim(0)?);
        let w = Tensor::cat(&[&(q * scale)?, k, v], 0)?;
        let b = match (&self.bq, &self.bk, &self.bv) {
            (Some(bq), Some(bk), Some(bv)) => Some(Tensor::cat(&[&(bq * scale)?, bk, bv], 0)?),
            (None, None, None) => None,
            _ => return Ok(()),
        };
        self.wq = Linear::Dense(w.narrow(0, 0, nq)?);
        self.wk = Linear::Dense(w.narrow(0, nq, nk)?);
        self.wv = Linear::Dense(w.narrow(0, nq + nk, nk)?);
        if let Some(b) = &b {
            self.bq = Some(b.narrow(0, 0, nq)?);
            self.bk = Some(b.narrow(0, nq, nk)?);
            self.bv = Some(b.narrow(0, nq + nk, nk)?);
        }
        self.qkv = Some((w, b));
        self.q_prescaled = true;
        if let (Linear::Dense(g), Linear::Dense(u)) = (&self.w_gate, &self.w_up) {
            let nf = g.dim(0)?;
            let w = Tensor::cat(&[g, u], 0)?;
            self.w_gate = Linear::Dense(w.narrow(0, 0, nf)?);
            self.w_up = Linear::Dense(w.narrow(0, nf, nf)?);
            self.gate_up = Some(w);
        }
        Ok(())
    }
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
    /// Rotary cos/sin tables for positions `0..len`, on the device, grown on demand (computing
    /// and uploading them every step costs host-device copies).
    pub rope_cache: std::sync::Mutex<Option<(usize, Tensor, Tensor)>>,
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
        let need = pos + n;
        let mut cache = self.rope_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_none_or(|(len, _, _)| *len < need) {
            let len = need
                .next_power_of_two()
                .max(4096)
                .min(self.cfg.n_ctx.max(need));
            let half = self.cfg.head_dim / 2;
            let base = self.cfg.rope_base as f64;
            let inv: Vec<f32> = (0..half)
                .map(|i| (1.0 / base.powf(2.0 * i as f64 / self.cfg.head_dim as f64)) as f32)
                .collect();
            let mut cos = Vec::with_capacity(len * half);
            let mut sin = Vec::with_capacity(len * half);
            for p in 0..len {
                for f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
            let cos = Tensor::from_vec(cos, (len, half), &self.device)?.to_dtype(self.dtype)?;
            let sin = Tensor::from_vec(sin, (len, half), &self.device)?.to_dtype(self.dtype)?;
            *cache = Some((len, cos, sin));
        }
        match cache.as_ref() {
            Some((_, cos, sin)) => Ok((cos.narrow(0, pos, n)?, sin.narrow(0, pos, n)?)),
            None => candle_core::bail!("rope tables missing"),
        }
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
            let (q, k, v) = match &b.qkv {
                Some((w, bias)) => {
                    let qkv = add_bias(xn.matmul(&w.t()?)?, bias)?;
                    (
                        qkv.narrow(1, 0, h * d)?,
                        qkv.narrow(1, h * d, kvh * d)?,
                        qkv.narrow(1, (h + kvh) * d, kvh * d)?,
                    )
                }
                None => (
                    add_bias(b.wq.forward(&xn)?, &b.bq)?,
                    add_bias(b.wk.forward(&xn)?, &b.bk)?,
                    add_bias(b.wv.forward(&xn)?, &b.bv)?,
                ),
            };
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
            let att = q.matmul(&ka.t()?)?;
            let att = if b.q_prescaled { att } else { (att * scale)? };
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
            let (gate, up) = match &b.gate_up {
                Some(w) => {
                    let gu = xn.matmul(&w.t()?)?;
                    let f = gu.dim(1)? / 2;
                    (gu.narrow(1, 0, f)?, gu.narrow(1, f, f)?)
                }
                None => (b.w_gate.forward(&xn)?, b.w_up.forward(&xn)?),
            };
            let y = b.w_down.forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
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
