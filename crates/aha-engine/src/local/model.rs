//! The decoder-only transformer forward (qwen2, llama) on candle ops, with our own KV cache.

use super::kv_cache::KvCache;
use super::linear::Linear;
use crate::options::Numerics;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Tensor};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// The seven weight matrices: q, k, v, output, gate, up, down.
    pub fn linears(&self) -> [&Linear; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    /// [`Block::linears`], to change.
    pub fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }

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
    /// How the forward pass rounds ([`EngineOptions::numerics`]).
    ///
    /// [`EngineOptions::numerics`]: crate::options::EngineOptions::numerics
    pub numerics: Numerics,
    /// Where activations are written, if anywhere ([`EngineOptions::dump`]).
    ///
    /// [`EngineOptions::dump`]: crate::options::EngineOptions::dump
    pub dump: Dump,
    /// The fused CUDA decode step ([`super::fused`]), made on the first decode step.
    pub fused: super::fused::FusedSlot,
}

/// Writes activations of each forward call as raw little-endian f32 to `DIR/K/NAME.bin` (K: the
/// call's number, from 1), named and laid out (token-major) as llama.cpp's graph names them, so
/// the two engines can be compared op by op. Without a directory it writes nothing.
#[derive(Debug, Default)]
pub struct Dump {
    dir: Option<PathBuf>,
    call: AtomicUsize,
}

impl Dump {
    /// Dumps into `dir` (`AHA_DUMP`), or nowhere.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            call: AtomicUsize::new(0),
        }
    }

    /// Whether activations are written.
    pub fn is_on(&self) -> bool {
        self.dir.is_some()
    }

    /// Starts the next forward call's folder.
    fn next_call(&self) {
        if self.dir.is_some() {
            self.call.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes activation `name` of the current call.
    fn write(&self, name: std::fmt::Arguments<'_>, t: &Tensor) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let dir = dir.join(self.call.load(Ordering::Relaxed).to_string());
        std::fs::create_dir_all(&dir).map_err(candle_core::Error::wrap)?;
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("{name}.bin")), bytes).map_err(candle_core::Error::wrap)
    }
}

/// The refusal of a forward call of `n` tokens at position `pos` with a context of `n_ctx`, if
/// it cannot run.
fn check_room(n: usize, pos: usize, n_ctx: usize) -> Option<String> {
    if n == 0 {
        Some("forward called with no tokens".to_string())
    } else if pos + n > n_ctx {
        Some(format!(
            "context full: {pos} cached + {n} new tokens exceed the context length {n_ctx}"
        ))
    } else {
        None
    }
}

/// The causal mask for `n` query rows at positions `pos..pos + n` over `pos + n` keys, row-major
/// `(n, pos + n)`: 0 where a row may attend, −∞ where the key lies in its future.
fn causal_mask(n: usize, pos: usize) -> Vec<f32> {
    let total = pos + n;
    let mut m = Vec::with_capacity(n * total);
    for i in 0..n {
        for j in 0..total {
            m.push(if j > pos + i { f32::NEG_INFINITY } else { 0.0 });
        }
    }
    m
}

/// What every layer of one forward call shares.
struct Pass {
    /// New tokens, and the position of the first.
    n: usize,
    pos: usize,
    /// Rotary tables for positions `pos..pos + n`.
    cos: Tensor,
    sin: Tensor,
    /// The causal mask candle's attention adds (several rows, not on aha's CPU kernels).
    mask: Option<Tensor>,
    /// aha's CPU kernels run attention, on their own cache layout.
    cpu_kernels: bool,
    /// Logits are wanted for every row, not just the last.
    all_logits: bool,
    /// Each row's attention is computed as a one-row call at its position computes it.
    rowwise: bool,
}

/// How a forward call runs ([`Transformer::forward_with`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ForwardOpts<'a> {
    /// Logits for every row, not just the last.
    pub all_logits: bool,
    /// Checked before every layer's attention and feed-forward: once set, the call stops, the
    /// cache forgets the call's rows and the call returns `None` (a cancel lands within half a
    /// layer's time, not one chunk's).
    pub cancel: Option<&'a AtomicBool>,
    /// Every row's result equals, bit for bit, what a one-row call at its position gives (where
    /// [`Transformer::rows_match_decode`] holds): attention runs row by row as decode runs it.
    /// Speculative decoding verifies drafted tokens this way.
    pub rowwise: bool,
}

/// Rotary embedding on the CPU for `x` of shape `(1, heads, n, d)`, rounding as llama.cpp does:
/// `x0·cos − x1·sin` and `x0·sin + x1·cos` each with the first product fused (one rounding).
/// Pairs are `(i, i + d/2)` (NeoX style) or `(2i, 2i + 1)` when `interleaved`.
fn rope_cpu(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool) -> Result<Tensor> {
    let (_, heads, n, d) = x.dims4()?;
    let half = d / 2;
    let mut xs = x.flatten_all()?.to_vec1::<f32>()?;
    let cos = cos.flatten_all()?.to_vec1::<f32>()?;
    let sin = sin.flatten_all()?.to_vec1::<f32>()?;
    for hd in 0..heads {
        for t in 0..n {
            let row = &mut xs[(hd * n + t) * d..(hd * n + t + 1) * d];
            for i in 0..half {
                let (c, s) = (cos[t * half + i], sin[t * half + i]);
                let (a, b) = if interleaved {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + half)
                };
                let (x0, x1) = (row[a], row[b]);
                row[a] = x0.mul_add(c, -(x1 * s));
                row[b] = x0.mul_add(s, x1 * c);
            }
        }
    }
    Tensor::from_vec(xs, x.shape(), x.device())
}

/// RMS normalisation. On the CPU it rounds as llama.cpp does (squares summed in f64, the scale
/// `1/sqrtf(mean + eps)` in f32, then `x · scale · w`), so the two engines agree bit for bit here.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return candle_nn::ops::rms_norm(x, w, eps as f32);
    }
    let dim = w.dim(0)?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let ws = w.to_vec1::<f32>()?;
    let mut out = Vec::with_capacity(xs.len());
    for row in xs.chunks_exact(dim) {
        let sum: f64 = row.iter().map(|v| (v * v) as f64).sum();
        let mean = (sum / dim as f64) as f32;
        let scale = 1.0f32 / (mean + eps as f32).sqrt();
        out.extend(row.iter().zip(&ws).map(|(v, w)| v * scale * w));
    }
    Tensor::from_vec(out, x.shape(), x.device())
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
            for l in b.linears() {
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
            // Angles as llama.cpp computes them (f32, each frequency the previous one times
            // base^(-2/d)), so both engines rotate by the same rounded angles.
            let step = self.cfg.rope_base.powf(-2.0 / self.cfg.head_dim as f32);
            let mut cos = Vec::with_capacity(len * half);
            let mut sin = Vec::with_capacity(len * half);
            for p in 0..len {
                let mut a = p as f32;
                for _ in 0..half {
                    cos.push(a.cos());
                    sin.push(a.sin());
                    a *= step;
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

    /// Whether the forward pass rounds as llama.cpp does ([`Numerics::Ggml`]).
    pub fn ggml_numerics(&self) -> bool {
        self.numerics == Numerics::Ggml
    }

    /// Whether llama.cpp's rounding is reproduced by [`super::ggml_math`] (on the CPU, in f32).
    fn ggml_on_cpu(&self) -> bool {
        self.ggml_numerics() && self.device.is_cpu() && self.dtype == DType::F32
    }

    /// With llama.cpp's numerics, rounds keys and values to f16 as llama.cpp's f16 cache does;
    /// otherwise returns them unchanged.
    fn kv_round(&self, t: Tensor) -> Result<Tensor> {
        if self.ggml_numerics() {
            t.to_dtype(DType::F16)?.to_dtype(self.dtype)
        } else {
            Ok(t)
        }
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return rope_cpu(x, cos, sin, self.cfg.rope_interleaved);
        }
        if self.cfg.rope_interleaved {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
        }
    }

    /// Runs `tokens` at positions `cache.len()..`, appending to the cache. Returns logits
    /// `(n, vocab)` for every position when `all_logits`, else `(1, vocab)` for the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, all_logits: bool) -> Result<Tensor> {
        let opts = ForwardOpts {
            all_logits,
            ..ForwardOpts::default()
        };
        match self.forward_with(tokens, cache, opts)? {
            Some(l) => Ok(l),
            None => candle_core::bail!("forward cancelled"),
        }
    }

    /// [`Transformer::forward`] with the options `o`; `None` when `o.cancel` stopped it (the
    /// cache then holds what it held before the call).
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        o: ForwardOpts<'_>,
    ) -> Result<Option<Tensor>> {
        if rayon::current_thread_index().is_some() {
            return self.forward_inner(tokens, cache, o);
        }
        // Run on a pool worker: the parallel kernels inside then split work with the calling
        // worker instead of handing every one of the ~170 mat-vecs per token to sleeping threads.
        rayon::join(|| self.forward_inner(tokens, cache, o), || ()).0
    }

    /// Whether a call of `rows` rows with [`ForwardOpts::rowwise`] gives every row the bits a
    /// one-row call gives: on the CPU in f32 with aha's kernels, every weight quantized in a
    /// format they multiply, and fewer rows than turn a mat-vec into a GEMM (whose rounding
    /// depends on the batch). Elsewhere (a GPU, dense weights, llama.cpp's numerics) batching
    /// changes the rounding.
    pub fn rows_match_decode(&self, rows: usize) -> bool {
        let quant_row_exact = |l: &Linear| match l {
            Linear::Quant {
                q, gemm_min_rows, ..
            } => {
                super::qkernels::format(q.dtype()).is_some()
                    && gemm_min_rows.is_none_or(|m| rows < m)
            }
            Linear::Dense(_) => false,
        };
        self.device.is_cpu()
            && self.dtype == DType::F32
            && !self.ggml_numerics()
            && quant_row_exact(&self.output)
            && self
                .blocks
                .iter()
                .all(|b| b.linears().into_iter().all(quant_row_exact))
    }

    fn forward_inner(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        o: ForwardOpts<'_>,
    ) -> Result<Option<Tensor>> {
        let (n, pos) = (tokens.len(), cache.len());
        if let Some(e) = check_room(n, pos, self.cfg.n_ctx) {
            candle_core::bail!("{e}")
        }
        // One new token on a GPU: the fused kernels, as one CUDA graph (not while dumping
        // activations, which only candle's path writes).
        if n == 1 && !self.dump.is_on() {
            if let Some(logits) = self.fused_step(tokens[0], cache)? {
                return Ok(Some(logits));
            }
        }
        self.dump.next_call();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.forward(&ids)?.to_dtype(self.dtype)?;
        let mut pass = self.pass(n, pos, o.all_logits)?;
        pass.rowwise = o.rowwise && n > 1;
        for (li, b) in self.blocks.iter().enumerate() {
            if o.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                cache.truncate(pos);
                return Ok(None);
            }
            x = match self.block(li, b, x, cache, &pass, o.cancel) {
                Ok(Some(x)) => x,
                Ok(None) => {
                    cache.truncate(pos);
                    return Ok(None);
                }
                Err(e) => {
                    // No layer keeps a half call's rows.
                    cache.truncate(pos);
                    return Err(e);
                }
            };
        }
        let x = if o.all_logits || x.dim(0)? == 1 {
            x
        } else {
            x.narrow(0, n - 1, 1)?
        };
        let x = rms_norm(&x, &self.norm, self.cfg.rms_eps)?;
        self.dump.write(format_args!("result_norm"), &x)?;
        let logits = self
            .output
            .forward_as(&x, pass.rowwise)?
            .to_dtype(DType::F32)?;
        self.dump.write(format_args!("result_output"), &logits)?;
        Ok(Some(logits))
    }

    /// The rotary tables and the mask for `n` tokens at `pos`.
    fn pass(&self, n: usize, pos: usize, all_logits: bool) -> Result<Pass> {
        let (cos, sin) = self.rope_tables(pos, n)?;
        // The CPU kernels mask as they go; candle's matmul path needs the mask as a tensor.
        let cpu_kernels = self.device.is_cpu() && self.dtype == DType::F32 && !self.ggml_numerics();
        let mask = if n > 1 && !cpu_kernels {
            let m = Tensor::from_vec(causal_mask(n, pos), (1, n, pos + n), &self.device)?
                .to_dtype(self.dtype)?;
            // Rows of the grouped query are (group member, position): repeat the mask per member.
            Some(m.repeat((1, self.cfg.n_head / self.cfg.n_kv_head, 1))?)
        } else {
            None
        };
        Ok(Pass {
            n,
            pos,
            cos,
            sin,
            mask,
            cpu_kernels,
            all_logits,
            rowwise: false,
        })
    }

    /// Transformer block `li` on `x`: attention, then the feed-forward, each added to the
    /// residual stream. `None` when `cancel` was set between the two (the caller truncates the
    /// cache).
    fn block(
        &self,
        li: usize,
        b: &Block,
        x: Tensor,
        cache: &mut KvCache,
        pass: &Pass,
        cancel: Option<&AtomicBool>,
    ) -> Result<Option<Tensor>> {
        let dump = &self.dump;
        let xn = rms_norm(&x, &b.attn_norm, self.cfg.rms_eps)?;
        dump.write(format_args!("attn_norm-{li}"), &xn)?;
        let y = self.attention(li, b, &xn, cache, pass)?;
        dump.write(format_args!("kqv_out-{li}"), &y)?;
        let y = b.wo.forward_as(&y, pass.rowwise)?;
        dump.write(format_args!("attn_out-{li}"), &y)?;
        let x1 = (&x + y)?;
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Ok(None);
        }
        // Only the last row's logits are wanted: the last layer's feed-forward runs on it
        // alone (as in llama.cpp, whose Q4_K rounding depends on the rows in a batch).
        let n = pass.n;
        let x1 = if li + 1 == self.blocks.len() && !pass.all_logits && n > 1 {
            x1.narrow(0, n - 1, 1)?
        } else {
            x1
        };
        dump.write(format_args!("ffn_inp-{li}"), &x1)?;
        let xn = rms_norm(&x1, &b.ffn_norm, self.cfg.rms_eps)?;
        dump.write(format_args!("ffn_norm-{li}"), &xn)?;
        let y = self.feed_forward(li, b, &xn, pass.rowwise)?;
        let x = (x1 + y)?;
        dump.write(format_args!("l_out-{li}"), &x)?;
        Ok(Some(x))
    }

    /// Queries, keys and values of `xn` (`(n, heads·d)` each), with their biases.
    fn project_qkv(
        &self,
        b: &Block,
        xn: &Tensor,
        rowwise: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (h, kvh, d) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim);
        match &b.qkv {
            Some((w, bias)) => {
                let qkv = add_bias(xn.matmul(&w.t()?)?, bias)?;
                Ok((
                    qkv.narrow(1, 0, h * d)?,
                    qkv.narrow(1, h * d, kvh * d)?,
                    qkv.narrow(1, (h + kvh) * d, kvh * d)?,
                ))
            }
            None => Ok((
                add_bias(b.wq.forward_as(xn, rowwise)?, &b.bq)?,
                add_bias(b.wk.forward_as(xn, rowwise)?, &b.bk)?,
                add_bias(b.wv.forward_as(xn, rowwise)?, &b.bv)?,
            )),
        }
    }

    /// Block `li`'s attention for normalised `xn`, appending its keys and values to the cache.
    /// Returns `(n, heads·d)`, before the output projection.
    fn attention(
        &self,
        li: usize,
        b: &Block,
        xn: &Tensor,
        cache: &mut KvCache,
        pass: &Pass,
    ) -> Result<Tensor> {
        let (n, h, kvh, d) = (
            pass.n,
            self.cfg.n_head,
            self.cfg.n_kv_head,
            self.cfg.head_dim,
        );
        let (q, k, v) = self.project_qkv(b, xn, pass.rowwise)?;
        let q = q.reshape((1, n, h, d))?.transpose(1, 2)?.contiguous()?;
        let k = k.reshape((1, n, kvh, d))?.transpose(1, 2)?.contiguous()?;
        let v = v.reshape((n, kvh, d))?.transpose(0, 1)?.contiguous()?;
        let q = self.rope(&q, &pass.cos, &pass.sin)?;
        let k = self.rope(&k, &pass.cos, &pass.sin)?.squeeze(0)?;
        self.dump
            .write(format_args!("Qcur-{li}"), &q.transpose(1, 2)?)?;
        self.dump
            .write(format_args!("Kcur-{li}"), &k.transpose(0, 1)?)?;
        self.dump
            .write(format_args!("Vcur-{li}"), &v.transpose(0, 1)?)?;
        let scale = if b.q_prescaled {
            1.0
        } else {
            1.0 / (d as f64).sqrt()
        };
        if pass.cpu_kernels {
            return self.attend_cpu(li, &q, &k, &v, cache, pass, scale as f32);
        }
        let (k, v) = (self.kv_round(k)?, self.kv_round(v)?);
        let (ka, va) = cache.layer_mut(li).append(&k, &v, self.cfg.n_ctx)?;
        if self.ggml_on_cpu() {
            self.attend_ggml(&q, &ka, &va, pass, scale as f32)
        } else {
            self.attend_candle(&q, &ka, &va, pass, b.q_prescaled)
        }
    }

    /// aha's attention kernel on its own cache layout. `q`: `(1, h, n, d)`; `k`, `v`:
    /// `(kvh, n, d)`.
    #[allow(clippy::too_many_arguments)]
    fn attend_cpu(
        &self,
        li: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        pass: &Pass,
        scale: f32,
    ) -> Result<Tensor> {
        let (n, h, kvh, d) = (
            pass.n,
            self.cfg.n_head,
            self.cfg.n_kv_head,
            self.cfg.head_dim,
        );
        let ks = k.flatten_all()?.to_vec1::<f32>()?;
        let vs = v.flatten_all()?.to_vec1::<f32>()?;
        let (layer, stride) =
            cache
                .layer_mut(li)
                .append_cpu(&ks, &vs, (kvh, n, d), self.cfg.n_ctx)?;
        let qs = q.flatten_all()?.to_vec1::<f32>()?;
        let shape = aha_kernels::attention::Shape {
            n,
            pos: pass.pos,
            heads: h,
            kv_heads: kvh,
            d,
            stride,
        };
        let mut y = vec![0f32; n * h * d];
        if pass.rowwise {
            // Row by row, each over the keys up to its own position, as decode computes it (the
            // kernel splits the keys by the call's shape, and the splits change the rounding).
            let mut qrow = vec![0f32; h * d];
            for i in 0..n {
                for hd in 0..h {
                    qrow[hd * d..(hd + 1) * d].copy_from_slice(&qs[(hd * n + i) * d..][..d]);
                }
                let one = aha_kernels::attention::Shape {
                    n: 1,
                    pos: pass.pos + i,
                    ..shape
                };
                let out = &mut y[i * h * d..(i + 1) * h * d];
                aha_kernels::attention::attend(&qrow, &layer.keys, &layer.values, one, scale, out);
            }
        } else {
            aha_kernels::attention::attend(&qs, &layer.keys, &layer.values, shape, scale, &mut y);
        }
        Tensor::from_vec(y, (n, h * d), &self.device)
    }

    /// Attention as llama.cpp's CPU backend rounds it ([`super::ggml_math::attention`]) over
    /// the cached keys and values `ka`, `va` (`(kvh, total, d)`).
    fn attend_ggml(
        &self,
        q: &Tensor,
        ka: &Tensor,
        va: &Tensor,
        pass: &Pass,
        scale: f32,
    ) -> Result<Tensor> {
        let (n, h, kvh, d) = (
            pass.n,
            self.cfg.n_head,
            self.cfg.n_kv_head,
            self.cfg.head_dim,
        );
        let qs = q
            .squeeze(0)?
            .transpose(0, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let ks = ka.flatten_all()?.to_vec1::<f32>()?;
        let vs = va.flatten_all()?.to_vec1::<f32>()?;
        let total = pass.pos + n;
        let y = super::ggml_math::attention(&qs, &ks, &vs, n, pass.pos, h, kvh, d, total, scale);
        Tensor::from_vec(y, (n, h * d), &self.device)
    }

    /// Attention with candle's ops over the cached keys and values `ka`, `va`.
    fn attend_candle(
        &self,
        q: &Tensor,
        ka: &Tensor,
        va: &Tensor,
        pass: &Pass,
        q_prescaled: bool,
    ) -> Result<Tensor> {
        let (n, h, kvh, d) = (
            pass.n,
            self.cfg.n_head,
            self.cfg.n_kv_head,
            self.cfg.head_dim,
        );
        let g = h / kvh;
        // Grouped-query attention without copying keys: (kvh, g*n, d) x (kvh, d, total).
        let q = q.reshape((kvh, g * n, d))?;
        let att = q.matmul(&ka.t()?)?;
        let att = if q_prescaled {
            att
        } else {
            (att * (1.0 / (d as f64).sqrt()))?
        };
        let att = match &pass.mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(va)?; // (kvh, g*n, d)
        y.reshape((h, n, d))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, h * d))
    }

    /// Block `li`'s feed-forward (SwiGLU) for normalised `xn`.
    fn feed_forward(&self, li: usize, b: &Block, xn: &Tensor, rowwise: bool) -> Result<Tensor> {
        let (gate, up) = match &b.gate_up {
            Some(w) => {
                let gu = xn.matmul(&w.t()?)?;
                let f = gu.dim(1)? / 2;
                (gu.narrow(1, 0, f)?, gu.narrow(1, f, f)?)
            }
            None => (
                b.w_gate.forward_as(xn, rowwise)?,
                b.w_up.forward_as(xn, rowwise)?,
            ),
        };
        self.dump.write(format_args!("ffn_gate-{li}"), &gate)?;
        self.dump.write(format_args!("ffn_up-{li}"), &up)?;
        let sw = if self.ggml_on_cpu() {
            let gs = gate.flatten_all()?.to_vec1::<f32>()?;
            let us = up.flatten_all()?.to_vec1::<f32>()?;
            Tensor::from_vec(
                super::ggml_math::swiglu(&gs, &us),
                gate.shape(),
                &self.device,
            )?
        } else {
            (candle_nn::ops::silu(&gate)? * up)?
        };
        self.dump.write(format_args!("ffn_swiglu-{li}"), &sw)?;
        let y = b.w_down.forward_as(&sw, rowwise)?;
        self.dump.write(format_args!("ffn_out-{li}"), &y)?;
        Ok(y)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_needs_tokens_and_room_in_the_context() {
        assert_eq!(check_room(3, 5, 8), None);
        assert_eq!(
            check_room(0, 0, 8).as_deref(),
            Some("forward called with no tokens")
        );
        assert_eq!(
            check_room(4, 5, 8).as_deref(),
            Some("context full: 5 cached + 4 new tokens exceed the context length 8")
        );
    }

    #[test]
    fn the_mask_hides_each_rows_future() {
        let inf = f32::NEG_INFINITY;
        // Two new rows at positions 1 and 2, over keys 0..3.
        assert_eq!(causal_mask(2, 1), vec![0.0, 0.0, inf, 0.0, 0.0, 0.0]);
        assert_eq!(causal_mask(1, 3), vec![0.0; 4]);
    }

    #[test]
    fn dump_writes_each_call_into_its_own_folder_and_nothing_without_a_dir() {
        let t = Tensor::new(&[1.5f32, -2.0], &Device::Cpu).unwrap();
        let off = Dump::new(None);
        off.next_call();
        off.write(format_args!("x"), &t).unwrap();
        assert_eq!(off.call.load(Ordering::Relaxed), 0);

        let dir = tempfile::tempdir().unwrap();
        let on = Dump::new(Some(dir.path().to_path_buf()));
        on.next_call();
        on.write(format_args!("l_out-{}", 3), &t).unwrap();
        on.next_call();
        on.write(format_args!("result_norm"), &t).unwrap();
        let bytes = std::fs::read(dir.path().join("1/l_out-3.bin")).unwrap();
        let want: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        assert_eq!(bytes, want);
        assert!(dir.path().join("2/result_norm.bin").is_file());
    }
}
