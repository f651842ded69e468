//! The decode step on CUDA through aha's fused kernels (crates/aha-cuda): ~8 launches per layer
//! instead of candle's ~20 operations, on buffers at fixed addresses, the whole step captured
//! once as a CUDA graph and replayed for every token (`AHA_CUDA_DECODE`: `graph`, the default;
//! `fused` without the graph; `candle` for candle's operations). Prefill stays on candle (its
//! GEMMs are cuBLAS's); both write the same KV cache.
//!
//! A graph holds device addresses, so it is captured again whenever one changes: when the KV
//! cache grows (every 512 positions) and when the rotary tables grow. The token and its position
//! are read by the kernels from a small device buffer written before each replay.

use super::kv_cache::KvCache;
use super::linear::Linear;
use super::model::{Embedding, Transformer};
use crate::options::{CudaDecode, EngineOptions};
use aha_cuda::step::{LayerPlan, Plan, Ptr, Qkv, W};
use aha_cuda::{CacheType, WFormat};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor};

/// The fused decoder of one model, made on its first decode step.
pub struct FusedSlot {
    mode: std::sync::atomic::AtomicU8,
    #[cfg(feature = "cuda")]
    state: std::sync::OnceLock<std::result::Result<imp::Fused, String>>,
    /// Why a fused step failed: later steps take candle's path (until the path is set again).
    #[cfg(feature = "cuda")]
    failure: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for FusedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FusedSlot({})", self.mode().name())
    }
}

impl FusedSlot {
    /// The decode path for a model on `device`: `AHA_CUDA_DECODE`'s on a GPU (an unknown name
    /// is an error), candle's elsewhere.
    pub fn new(device: &Device, opts: &EngineOptions) -> anyhow::Result<Self> {
        let mode = if device.is_cuda() {
            opts.cuda_decode().map_err(anyhow::Error::msg)?
        } else {
            CudaDecode::Candle
        };
        Ok(Self {
            mode: std::sync::atomic::AtomicU8::new(Self::code(mode)),
            #[cfg(feature = "cuda")]
            state: std::sync::OnceLock::new(),
            #[cfg(feature = "cuda")]
            failure: std::sync::Mutex::new(None),
        })
    }

    fn code(m: CudaDecode) -> u8 {
        match m {
            CudaDecode::Graph => 0,
            CudaDecode::Fused => 1,
            CudaDecode::Candle => 2,
        }
    }

    /// The path asked for.
    pub fn mode(&self) -> CudaDecode {
        match self.mode.load(std::sync::atomic::Ordering::Relaxed) {
            0 => CudaDecode::Graph,
            1 => CudaDecode::Fused,
            _ => CudaDecode::Candle,
        }
    }

    /// Switches the path of later steps (`aha bench --decode-paths`, `aha cuda-check`); on a
    /// CPU every path is candle's.
    pub fn set_mode(&self, m: CudaDecode, device: &Device) {
        let m = if device.is_cuda() {
            m
        } else {
            CudaDecode::Candle
        };
        self.mode
            .store(Self::code(m), std::sync::atomic::Ordering::Relaxed);
        #[cfg(feature = "cuda")]
        {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl Transformer {
    /// The path decode steps take, and why not the one asked for where it does not apply
    /// (known after the first step).
    pub fn decode_path(&self) -> (CudaDecode, Option<String>) {
        #[cfg(feature = "cuda")]
        {
            if let Some(Err(why)) = self.fused.state.get() {
                return (CudaDecode::Candle, Some(why.clone()));
            }
            let failed = self.fused.failure.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(why) = failed.as_ref() {
                return (CudaDecode::Candle, Some(why.clone()));
            }
        }
        (self.fused.mode(), None)
    }

    /// One decode step of `token` through the fused kernels, appending to `cache`; `None` where
    /// that path is not taken (not a GPU, `AHA_CUDA_DECODE=candle`, a model it does not handle,
    /// or an earlier fused step that failed: then candle's operations run). A failing step
    /// leaves the cache as it was (its length is counted only after the step), so candle's path
    /// takes the same token over.
    pub(crate) fn fused_step(&self, token: u32, cache: &mut KvCache) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        {
            let mode = self.fused.mode();
            let failed = self
                .fused
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            if mode == CudaDecode::Candle || failed {
                return Ok(None);
            }
            let state = self.fused.state.get_or_init(|| {
                imp::Fused::new(self).map_err(|e| {
                    let why = format!("{e:#}");
                    tracing::warn!("fused CUDA decode does not apply, candle's ops run: {why}");
                    why
                })
            });
            match state {
                Ok(f) => match f.step(self, token, cache, mode == CudaDecode::Graph) {
                    Ok(l) => Ok(Some(l)),
                    Err(e) => {
                        let why = format!("the fused {} step failed: {e:#}", mode.name());
                        tracing::warn!("{why}; candle's ops run from here on");
                        *self.fused.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                        Ok(None)
                    }
                },
                Err(_) => Ok(None),
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (token, cache);
            Ok(None)
        }
    }
}

/// Where a plan's weights live: GPU memory, or host memory in the tests (`aha_cuda::emu`).
pub trait PlanMem {
    /// The address of a weight matrix's storage (its blocks, or its first element).
    fn linear(&mut self, l: &Linear) -> anyhow::Result<Ptr>;
    /// The address of the embedding table's storage.
    fn embedding(&mut self, e: &Embedding) -> anyhow::Result<Ptr>;
    /// A copy of `v`; its address.
    fn f32s(&mut self, v: &[f32]) -> anyhow::Result<Ptr>;
}

fn format_of(l: &Linear) -> Option<WFormat> {
    match l {
        Linear::Quant { q, .. } => WFormat::from_ggml(q.dtype()),
        Linear::Dense(t) => WFormat::from_dtype(t.dtype()),
    }
}

fn weight(mem: &mut dyn PlanMem, l: &Linear, what: &str) -> anyhow::Result<W> {
    let (rows, cols) = l.dims();
    let f = format_of(l).with_context(|| {
        format!(
            "{what}: no fused kernel reads {}",
            match l {
                Linear::Quant { q, .. } => format!("{:?}", q.dtype()),
                Linear::Dense(t) => format!("{:?}", t.dtype()),
            }
        )
    })?;
    if !f.fits(cols) || rows == 0 {
        bail!("{what}: rows of {cols} do not fit the {} kernel", f.name())
    }
    Ok((f, mem.linear(l).with_context(|| what.to_string())?))
}

fn f32_vec(t: &Tensor) -> anyhow::Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The fused decode step of `m`, its weights where `mem` puts them; an error names what the
/// fused kernels do not handle (candle's operations then run).
pub fn build_plan(m: &Transformer, mem: &mut dyn PlanMem) -> anyhow::Result<Plan> {
    if m.ggml_numerics() {
        bail!("AHA_NUMERICS=ggml rounds as llama.cpp's CPU backend; the fused kernels do not")
    }
    let round = match m.dtype {
        DType::F32 => false,
        DType::BF16 => true,
        t => bail!("activations in {t:?}"),
    };
    let cache = CacheType::from_dtype(m.dtype).context("cache dtype")?;
    let c = &m.cfg;
    let (h, kvh, d) = (c.n_head, c.n_kv_head, c.head_dim);
    if d > 256 || d % 2 != 0 || kvh == 0 || h % kvh != 0 {
        bail!("attention shape: {h} heads, {kvh} key heads of {d}")
    }
    let embed_fmt = match &m.embed {
        Embedding::Quant(q) => WFormat::from_ggml(q.dtype())
            .with_context(|| format!("embedding: no fused kernel reads {:?}", q.dtype()))?,
        Embedding::Dense(t) => WFormat::from_dtype(t.dtype())
            .with_context(|| format!("embedding: no fused kernel reads {:?}", t.dtype()))?,
    };
    if !embed_fmt.fits(c.n_embd) {
        bail!("embedding rows of {}", c.n_embd)
    }
    let embed = (embed_fmt, mem.embedding(&m.embed)?);
    let mut layers = Vec::with_capacity(m.blocks.len());
    let mut n_ff = 0;
    for (i, b) in m.blocks.iter().enumerate() {
        let nm = |s: &str| format!("layer {i} {s}");
        let qkv = match &b.qkv {
            Some((w, _)) => Qkv::One(weight(mem, &Linear::Dense(w.clone()), &nm("qkv"))?),
            None => Qkv::Three(
                weight(mem, &b.wq, &nm("q"))?,
                weight(mem, &b.wk, &nm("k"))?,
                weight(mem, &b.wv, &nm("v"))?,
            ),
        };
        let bias = if b.bq.is_some() || b.bk.is_some() || b.bv.is_some() {
            let part = |t: &Option<Tensor>, n: usize| -> anyhow::Result<Vec<f32>> {
                Ok(match t {
                    Some(t) => f32_vec(t)?,
                    None => vec![0f32; n],
                })
            };
            let mut all = part(&b.bq, h * d)?;
            all.extend(part(&b.bk, kvh * d)?);
            all.extend(part(&b.bv, kvh * d)?);
            if all.len() != (h + 2 * kvh) * d {
                bail!("{}: biases of {} values", nm("qkv"), all.len())
            }
            Some(mem.f32s(&all)?)
        } else {
            None
        };
        let gate = weight(mem, &b.w_gate, &nm("gate"))?;
        let up = weight(mem, &b.w_up, &nm("up"))?;
        if gate.0 != up.0 {
            bail!(
                "{}: gate in {} and up in {}: SwiGLU's fused kernel reads one format",
                nm("ffn"),
                gate.0.name(),
                up.0.name()
            )
        }
        n_ff = b.w_gate.dims().0;
        layers.push(LayerPlan {
            attn_norm: mem.f32s(&f32_vec(&b.attn_norm)?)?,
            ffn_norm: mem.f32s(&f32_vec(&b.ffn_norm)?)?,
            qkv,
            bias,
            wo: weight(mem, &b.wo, &nm("output"))?,
            gate,
            up,
            down: weight(mem, &b.w_down, &nm("down"))?,
            scale: if b.q_prescaled {
                1.0
            } else {
                1.0 / (d as f32).sqrt()
            },
        });
    }
    Ok(Plan {
        round,
        cache,
        n_embd: c.n_embd,
        h,
        kvh,
        d,
        n_ff,
        vocab: c.vocab_size,
        eps: c.rms_eps as f32,
        interleaved: c.rope_interleaved,
        embed,
        layers,
        norm: mem.f32s(&f32_vec(&m.norm)?)?,
        output: weight(mem, &m.output, "output")?,
    })
}

#[cfg(feature = "cuda")]
mod imp {
    use super::super::linear::Linear;
    use super::super::model::{Embedding, Transformer};
    use super::{build_plan, KvCache, PlanMem};
    use aha_cuda::gpu::{qtensor_ptr, tensor_ptr, Graph, Kernels};
    use aha_cuda::reference::rope_tables;
    use aha_cuda::step::{Plan, Ptr, StepBufs, MAX_SPLITS};
    use anyhow::{bail, Result};
    use candle_core::cuda_backend::cudarc::driver::CudaSlice;
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, Device, Storage, Tensor};
    use std::sync::Mutex;

    /// Weights in place on the GPU; small f32 copies (norms, biases) uploaded and kept.
    struct GpuMem<'a> {
        k: &'a Kernels,
        keep: Vec<CudaSlice<f32>>,
    }

    impl PlanMem for GpuMem<'_> {
        fn linear(&mut self, l: &Linear) -> Result<Ptr> {
            match l {
                Linear::Quant { q, .. } => qtensor_ptr(q),
                Linear::Dense(t) => tensor_ptr(t),
            }
        }
        fn embedding(&mut self, e: &Embedding) -> Result<Ptr> {
            match e {
                Embedding::Quant(q) => qtensor_ptr(q),
                Embedding::Dense(t) => tensor_ptr(t),
            }
        }
        fn f32s(&mut self, v: &[f32]) -> Result<Ptr> {
            let s = self.k.upload(v)?;
            let p = self.k.ptr(&s);
            self.keep.push(s);
            Ok(p)
        }
    }

    /// The buffers a step reads and writes, at fixed addresses.
    struct Bufs {
        tokpos: CudaSlice<i32>,
        x: CudaSlice<f32>,
        xn: CudaSlice<f32>,
        qkv: CudaSlice<f32>,
        att: CudaSlice<f32>,
        hid: CudaSlice<f32>,
        logits: CudaSlice<f32>,
        /// Split attention's scratch.
        part_o: CudaSlice<f32>,
        part_ml: CudaSlice<f32>,
        done: CudaSlice<i32>,
        /// Rotary tables for positions `0..len`.
        rope: Option<(usize, CudaSlice<f32>, CudaSlice<f32>)>,
        /// The captured step and the addresses it was captured with.
        graph: Option<(Vec<Ptr>, Graph)>,
    }

    pub struct Fused {
        k: Kernels,
        dev: CudaDevice,
        plan: Plan,
        _keep: Vec<CudaSlice<f32>>,
        n_ctx: usize,
        rope_base: f32,
        bufs: Mutex<Bufs>,
    }

    impl Fused {
        pub fn new(m: &Transformer) -> Result<Self> {
            let Device::Cuda(dev) = &m.device else {
                bail!("not a CUDA device")
            };
            let k = Kernels::new(dev)?;
            let mut mem = GpuMem {
                k: &k,
                keep: Vec::new(),
            };
            let plan = build_plan(m, &mut mem)?;
            let keep = mem.keep;
            let (h, kvh, d) = (plan.h, plan.kvh, plan.d);
            let bufs = Bufs {
                tokpos: k.zeros::<i32>(2)?,
                x: k.zeros(plan.n_embd)?,
                xn: k.zeros(plan.n_embd)?,
                qkv: k.zeros((h + 2 * kvh) * d)?,
                att: k.zeros(h * d)?,
                hid: k.zeros(plan.n_ff)?,
                logits: k.zeros(plan.vocab)?,
                part_o: k.zeros(h * MAX_SPLITS * d)?,
                part_ml: k.zeros(h * MAX_SPLITS * 2)?,
                done: k.zeros::<i32>(h)?,
                rope: None,
                graph: None,
            };
            Ok(Self {
                k,
                dev: dev.clone(),
                plan,
                _keep: keep,
                n_ctx: m.cfg.n_ctx,
                rope_base: m.cfg.rope_base,
                bufs: Mutex::new(bufs),
            })
        }

        /// Grows the rotary tables to cover positions `0..need` (powers of two, at least 4096).
        fn ensure_rope(&self, b: &mut Bufs, need: usize) -> Result<()> {
            if b.rope.as_ref().is_some_and(|(len, _, _)| *len >= need) {
                return Ok(());
            }
            let len = need.next_power_of_two().max(4096).min(self.n_ctx.max(need));
            let (cos, sin) = rope_tables(len, self.plan.d, self.rope_base, self.plan.round);
            b.rope = Some((len, self.k.upload(&cos)?, self.k.upload(&sin)?));
            Ok(())
        }

        fn step_bufs(&self, b: &Bufs) -> Result<StepBufs> {
            let p = |s: &CudaSlice<f32>| self.k.ptr(s);
            let Some((_, cos, sin)) = &b.rope else {
                bail!("rotary tables missing")
            };
            Ok(StepBufs {
                tokpos: self.k.ptr(&b.tokpos),
                x: p(&b.x),
                xn: p(&b.xn),
                qkv: p(&b.qkv),
                att: p(&b.att),
                hid: p(&b.hid),
                logits: p(&b.logits),
                cos: p(cos),
                sin: p(sin),
                part_o: p(&b.part_o),
                part_ml: p(&b.part_ml),
                done: self.k.ptr(&b.done),
            })
        }

        /// Runs `token` at position `cache.len()`: its keys and values are appended to `cache`,
        /// the logits `(1, vocab)` returned.
        pub fn step(
            &self,
            m: &Transformer,
            token: u32,
            cache: &mut KvCache,
            graph: bool,
        ) -> Result<Tensor> {
            let plan = &self.plan;
            if token as usize >= plan.vocab {
                bail!(
                    "token id {token} is outside the vocabulary ({})",
                    plan.vocab
                )
            }
            let pos = cache.len();
            let max = cache.max_len();
            let mut kv = Vec::with_capacity(plan.layers.len());
            for li in 0..plan.layers.len() {
                let (kt, vt) = cache.layer_mut(li).reserve(
                    (plan.kvh, plan.d),
                    m.dtype,
                    &m.device,
                    pos + 1,
                    max,
                )?;
                kv.push((tensor_ptr(kt)?, tensor_ptr(vt)?));
            }
            let cap = cache.capacity();
            let mut b = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
            self.ensure_rope(&mut b, cap)?;
            self.k
                .stream()
                .memcpy_htod(&[token as i32, pos as i32], &mut b.tokpos)?;
            let sb = self.step_bufs(&b)?;
            if graph {
                let mut key: Vec<Ptr> = kv.iter().flat_map(|&(a, v)| [a, v]).collect();
                key.extend([sb.cos, cap as u64]);
                if b.graph.as_ref().is_none_or(|(k, _)| *k != key) {
                    b.graph = None;
                    let g = self.k.capture(|| plan.launch(&self.k, &sb, &kv, cap))?;
                    b.graph = Some((key, g));
                }
                if let Some((_, g)) = &b.graph {
                    g.launch()?;
                }
            } else {
                plan.launch(&self.k, &sb, &kv, cap)?;
            }
            for li in 0..plan.layers.len() {
                cache.layer_mut(li).advance(1)?;
            }
            let out = self.k.stream().clone_dtod(&b.logits)?;
            let st = CudaStorage::wrap_cuda_slice(out, self.dev.clone());
            Ok(Tensor::from_storage(
                Storage::Cuda(st),
                (1, plan.vocab),
                BackpropOp::none(),
                false,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::load::GgufFile;
    use crate::local::model::last_row;
    use crate::local::synth::SynthSpec;
    use aha_cuda::emu::{Arena, Host};
    use aha_cuda::step::{StepBufs, MAX_SPLITS};
    use candle_core::quantized::GgmlDType;

    /// Weights copied into host memory, as the GPU holds them.
    struct HostMem<'a>(&'a mut Arena);

    fn dense_bytes(t: &Tensor) -> anyhow::Result<Vec<u8>> {
        let f = WFormat::from_dtype(t.dtype()).context("dtype")?;
        let v = f32_vec(t)?;
        Ok(match f {
            WFormat::Bf16 => CacheType::Bf16.encode(&v),
            WFormat::F16 => CacheType::F16.encode(&v),
            _ => CacheType::F32.encode(&v),
        })
    }

    impl PlanMem for HostMem<'_> {
        fn linear(&mut self, l: &Linear) -> anyhow::Result<Ptr> {
            Ok(match l {
                Linear::Quant { q, .. } => self.0.bytes(&q.data()?),
                Linear::Dense(t) => self.0.bytes(&dense_bytes(t)?),
            })
        }
        fn embedding(&mut self, e: &Embedding) -> anyhow::Result<Ptr> {
            Ok(match e {
                Embedding::Quant(q) => self.0.bytes(&q.data()?),
                Embedding::Dense(t) => self.0.bytes(&dense_bytes(t)?),
            })
        }
        fn f32s(&mut self, v: &[f32]) -> anyhow::Result<Ptr> {
            Ok(self.0.f32s(v))
        }
    }

    /// `tokens` one at a time through the fused plan on the CUDA emulation: each step's logits.
    fn emulated(m: &Transformer, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut a = Arena::default();
        let plan = build_plan(m, &mut HostMem(&mut a)).unwrap();
        // Room for 384 positions: attention split three ways, as a GPU splits it at this size.
        let cap = 384;
        assert_eq!(aha_cuda::step::attn_splits(cap), 3);
        let (h, kvh, d) = (plan.h, plan.kvh, plan.d);
        let (cos, sin) = aha_cuda::reference::rope_tables(cap, d, m.cfg.rope_base, plan.round);
        let b = StepBufs {
            tokpos: a.zeros(8),
            x: a.zeros(4 * plan.n_embd),
            xn: a.zeros(4 * plan.n_embd),
            qkv: a.zeros(4 * (h + 2 * kvh) * d),
            att: a.zeros(4 * h * d),
            hid: a.zeros(4 * plan.n_ff),
            logits: a.zeros(4 * plan.vocab),
            cos: a.f32s(&cos),
            sin: a.f32s(&sin),
            part_o: a.zeros(4 * h * MAX_SPLITS * d),
            part_ml: a.zeros(4 * h * MAX_SPLITS * 2),
            done: a.zeros(4 * h),
        };
        let bytes = plan.cache.size() * kvh * cap * d;
        let kv: Vec<(Ptr, Ptr)> = (0..plan.layers.len())
            .map(|_| (a.zeros(bytes), a.zeros(bytes)))
            .collect();
        let mut out = Vec::new();
        for (pos, &t) in tokens.iter().enumerate() {
            let tp = [(t as i32).to_le_bytes(), (pos as i32).to_le_bytes()].concat();
            a.write(b.tokpos, &tp);
            plan.launch(&Host, &b, &kv, cap).unwrap();
            out.push(a.read_f32(b.logits, plan.vocab));
        }
        out
    }

    /// The same tokens through candle's forward pass, one at a time.
    fn reference(m: &Transformer, tokens: &[u32]) -> Vec<Vec<f32>> {
        let mut c = m.new_cache();
        tokens
            .iter()
            .map(|t| last_row(&m.forward(&[*t], &mut c, false).unwrap()).unwrap())
            .collect()
    }

    fn argmax(v: &[f32]) -> usize {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    }

    /// The largest relative difference over the steps, and at how many steps the greedy token
    /// differs.
    fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, usize) {
        let err = got
            .iter()
            .zip(want)
            .map(|(g, w)| aha_cuda::checks::rel_error(g, w))
            .fold(0f32, f32::max);
        let differ = got
            .iter()
            .zip(want)
            .filter(|(g, w)| argmax(g) != argmax(w))
            .count();
        (err, differ)
    }

    fn spec() -> SynthSpec {
        // Rows of 256 so every GGUF format fits; a small vocabulary so the emulation is quick.
        SynthSpec {
            n_layer: 2,
            n_head: 4,
            n_kv_head: 2,
            n_embd: 256,
            n_ff: 512,
            vocab: 300,
            n_ctx: 64,
            seed: 11,
            tokenizer: None,
        }
    }

    const TOKENS: [u32; 6] = [5, 77, 201, 77, 13, 299];

    /// `m` with every quantized matrix and the embedding table dequantized to f32: what the
    /// fused kernels compute (f32 activations times the blocks' values), where candle's CPU path
    /// would round activations to 8 bits.
    fn dequantized(mut m: Transformer) -> Transformer {
        let dq = |l: &mut Linear| {
            if let Linear::Quant { q, .. } = l {
                *l = Linear::Dense(q.dequantize(&Device::Cpu).unwrap());
            }
        };
        for b in &mut m.blocks {
            b.linears_mut().into_iter().for_each(dq);
        }
        dq(&mut m.output);
        if let Embedding::Quant(q) = &m.embed {
            m.embed = Embedding::Dense(q.dequantize(&Device::Cpu).unwrap());
        }
        m
    }

    /// The whole fused step — every kernel, buffer offset, bias, rotary position, grouped-query
    /// cache and residual — against candle's forward pass of the same GGUF file, its blocks
    /// dequantized (quantized files: q, k, v as three matrices, the scale applied to the
    /// scores; f32 files: one fused matrix).
    #[test]
    fn fused_plan_matches_candles_forward_on_gguf_models() {
        let dir = tempfile::tempdir().unwrap();
        for dt in [
            GgmlDType::F32,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let path = dir.path().join(format!("{dt:?}.gguf"));
            spec().write_gguf(&path, dt).unwrap();
            let g = GgufFile::open(&path).unwrap();
            let m = g.load_model(&Device::Cpu).unwrap();
            let plan = build_plan(&m, &mut HostMem(&mut Arena::default())).unwrap();
            // f32 matrices load dense and are fused into one; quantized ones stay three.
            let one = matches!(plan.layers[0].qkv, Qkv::One(..));
            assert_eq!(one, dt == GgmlDType::F32, "{dt:?}");
            assert!(plan.layers[0].bias.is_some());
            let want = reference(&dequantized(g.load_model(&Device::Cpu).unwrap()), &TOKENS);
            let (err, differ) = compare(&emulated(&m, &TOKENS), &want);
            eprintln!(
                "{dt:?}: max relative logit difference {err:.2e}, greedy differs at {differ} steps"
            );
            assert!(err <= 1e-4, "{dt:?}: {err}");
            assert_eq!(differ, 0, "{dt:?}");
        }
    }

    /// [`spec`] as a safetensors checkpoint, loaded on the CPU.
    fn safetensors_model() -> Transformer {
        let dir = tempfile::tempdir().unwrap();
        spec().write_safetensors(dir.path()).unwrap();
        crate::local::load::load_safetensors_dir_with(
            dir.path(),
            &Device::Cpu,
            &EngineOptions::default(),
        )
        .unwrap()
    }

    /// A safetensors checkpoint: q, k and v as one matrix with the attention scale folded in.
    #[test]
    fn fused_plan_matches_candles_forward_on_a_safetensors_checkpoint() {
        let m = safetensors_model();
        let plan = build_plan(&m, &mut HostMem(&mut Arena::default())).unwrap();
        assert!(matches!(plan.layers[0].qkv, Qkv::One(..)));
        assert_eq!(plan.layers[0].scale, 1.0);
        let (err, differ) = compare(&emulated(&m, &TOKENS), &reference(&m, &TOKENS));
        eprintln!("safetensors f32: max relative logit difference {err:.2e}");
        assert!(err <= 1e-4, "{err}");
        assert_eq!(differ, 0);
    }

    /// `m` in bf16, weights and activations, as a GPU runs a safetensors checkpoint.
    fn to_bf16(mut m: Transformer) -> Transformer {
        let bf = |t: &mut Tensor| *t = t.to_dtype(DType::BF16).unwrap();
        let bfl = |l: &mut Linear| {
            if let Linear::Dense(t) = l {
                *t = t.to_dtype(DType::BF16).unwrap();
            }
        };
        for b in &mut m.blocks {
            bf(&mut b.attn_norm);
            bf(&mut b.ffn_norm);
            b.linears_mut().into_iter().for_each(bfl);
            for t in [&mut b.bq, &mut b.bk, &mut b.bv, &mut b.gate_up]
                .into_iter()
                .flatten()
            {
                bf(t);
            }
            if let Some((w, bias)) = &mut b.qkv {
                bf(w);
                if let Some(bias) = bias {
                    bf(bias);
                }
            }
        }
        bf(&mut m.norm);
        bfl(&mut m.output);
        if let Embedding::Dense(t) = &mut m.embed {
            bf(t);
        }
        m.dtype = DType::BF16;
        m
    }

    /// In bf16 the fused kernels round where candle's bf16 pass stores a tensor, and their
    /// logits track candle's bf16 forward. Here that is candle's CPU ops, whose softmax also
    /// rounds each exponential to bf16 and sums in bf16 (its CUDA kernel sums in f32), hence
    /// 3e-2 rather than the 1e-2 the GPU is held to by `aha cuda-check --paths`.
    #[test]
    fn fused_plan_in_bf16_tracks_candles_bf16_forward() {
        let m = to_bf16(safetensors_model());
        let plan = build_plan(&m, &mut HostMem(&mut Arena::default())).unwrap();
        assert!(plan.round);
        assert_eq!(plan.cache, CacheType::Bf16);
        let got = emulated(&m, &TOKENS);
        let want = reference(&m, &TOKENS);
        let (err, differ) = compare(&got, &want);
        eprintln!(
            "bf16: max relative logit difference {err:.2e}, greedy differs at {differ} steps"
        );
        assert!(err <= 3e-2, "{err}");
        assert_eq!(differ, 0);
    }

    /// What the fused kernels do not handle is named, and candle's path runs instead.
    #[test]
    fn a_model_the_kernels_do_not_read_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q4_0.gguf");
        spec().write_gguf(&path, GgmlDType::Q4_0).unwrap();
        let m = GgufFile::open(&path)
            .unwrap()
            .load_model(&Device::Cpu)
            .unwrap();
        let e = build_plan(&m, &mut HostMem(&mut Arena::default())).unwrap_err();
        assert!(
            format!("{e:#}").contains("no fused kernel reads Q4_0"),
            "{e:#}"
        );
        // On a CPU the slot always takes candle's path.
        assert_eq!(m.decode_path(), (CudaDecode::Candle, None));
        m.fused.set_mode(CudaDecode::Graph, &m.device);
        assert_eq!(m.fused.mode(), CudaDecode::Candle);
    }
}
