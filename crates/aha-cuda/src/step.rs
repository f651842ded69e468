//! One decode step as a fixed sequence of kernel launches over device addresses: embedding, per
//! layer RMSNorm → q/k/v mat-vec (+ bias) → RoPE and cache write → attention → output mat-vec
//! added to the residual → RMSNorm → gate/up with SwiGLU → down mat-vec added to the residual,
//! then the final norm and the logits. The same [`Plan`] launches on a GPU (`gpu::Kernels`) and,
//! in the tests, on host memory through the CUDA emulation, where it is checked against candle's
//! forward pass of a real model file.

use crate::reference::AttnShape;
use crate::{CacheType, WFormat};
use anyhow::Result;

/// A device (or, emulated, host) address.
pub type Ptr = u64;

/// A weight matrix: its format and address.
pub type W = (WFormat, Ptr);

/// The kernels' launches, on raw addresses (see kernels/decode.cu for each one's contract).
#[allow(clippy::too_many_arguments)]
pub trait Launch {
    fn matvec(
        &self,
        fmt: WFormat,
        w: Ptr,
        x: Ptr,
        y: Ptr,
        bias: Ptr,
        rows: usize,
        cols: usize,
        accumulate: bool,
        round: bool,
    ) -> Result<()>;
    fn swiglu(
        &self,
        fmt: WFormat,
        wg: Ptr,
        wu: Ptr,
        x: Ptr,
        h: Ptr,
        rows: usize,
        cols: usize,
        round: bool,
    ) -> Result<()>;
    fn embed(
        &self,
        fmt: WFormat,
        table: Ptr,
        tokpos: Ptr,
        x: Ptr,
        cols: usize,
        round: bool,
    ) -> Result<()>;
    fn rmsnorm(&self, x: Ptr, w: Ptr, y: Ptr, n: usize, eps: f32, round: bool) -> Result<()>;
    fn rope_kv(
        &self,
        ct: CacheType,
        qkv: Ptr,
        tokpos: Ptr,
        cos: Ptr,
        sin: Ptr,
        kc: Ptr,
        vc: Ptr,
        s: AttnShape,
        interleaved: bool,
        round: bool,
    ) -> Result<()>;
    fn attend(
        &self,
        ct: CacheType,
        q: Ptr,
        kc: Ptr,
        vc: Ptr,
        tokpos: Ptr,
        y: Ptr,
        part: AttnParts,
        s: AttnShape,
        scale: f32,
        round: bool,
    ) -> Result<()>;
}

/// The most blocks one head's attention is split across (`ATT_MAX_SPLITS` in decode.cu).
pub const MAX_SPLITS: usize = 32;

/// Scratch for split attention: `o` `h · MAX_SPLITS · d` f32, `ml` `h · MAX_SPLITS · 2` f32,
/// `done` `h` i32 (zero before the first step; the kernel leaves it zero), and how many blocks
/// each head's positions are split across.
#[derive(Debug, Clone, Copy)]
pub struct AttnParts {
    pub o: Ptr,
    pub ml: Ptr,
    pub done: Ptr,
    pub splits: usize,
}

/// Blocks per head for a cache of `cap` positions: one per 128 positions, 1 to [`MAX_SPLITS`]
/// (a captured step keeps its count until the cache grows and the step is captured again).
pub fn attn_splits(cap: usize) -> usize {
    (cap / 128).clamp(1, MAX_SPLITS)
}

/// A layer's query, key and value projections.
#[derive(Debug, Clone)]
pub enum Qkv {
    /// One matrix of `(h + 2·kvh)·d` rows (dense checkpoints).
    One(W),
    Three(W, W, W),
}

/// One transformer block's weights.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// f32 norm weights.
    pub attn_norm: Ptr,
    pub ffn_norm: Ptr,
    pub qkv: Qkv,
    /// f32 biases of q, k and v in one buffer (`(h + 2·kvh)·d`), if any.
    pub bias: Option<Ptr>,
    pub wo: W,
    pub gate: W,
    pub up: W,
    pub down: W,
    /// Multiplies attention scores (1 when the query weights carry it).
    pub scale: f32,
}

/// A model's decode step.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Activations rounded to bf16 where candle's bf16 pass stores them.
    pub round: bool,
    pub cache: CacheType,
    pub n_embd: usize,
    pub h: usize,
    pub kvh: usize,
    pub d: usize,
    pub n_ff: usize,
    pub vocab: usize,
    pub eps: f32,
    pub interleaved: bool,
    pub embed: W,
    pub layers: Vec<LayerPlan>,
    /// f32 final norm weights.
    pub norm: Ptr,
    pub output: W,
}

/// The step's buffers (f32 unless said): `tokpos` two i32 (token, position); `x` and `xn`
/// `n_embd`; `qkv` `(h + 2·kvh)·d`; `att` `h·d`; `hid` `n_ff`; `logits` `vocab`; `cos`/`sin`
/// rotary tables `(positions, d/2)`; the attention scratch as [`AttnParts`] describes.
#[derive(Debug, Clone, Copy)]
pub struct StepBufs {
    pub tokpos: Ptr,
    pub x: Ptr,
    pub xn: Ptr,
    pub qkv: Ptr,
    pub att: Ptr,
    pub hid: Ptr,
    pub logits: Ptr,
    pub cos: Ptr,
    pub sin: Ptr,
    /// Split attention's scratch (the split count follows the cache's capacity).
    pub part_o: Ptr,
    pub part_ml: Ptr,
    pub done: Ptr,
}

impl Plan {
    /// Launches one step: the token and position in `b.tokpos`, each layer's key and value
    /// caches `kv[i]` of `cap` positions (`(kvh, cap, d)`).
    pub fn launch(
        &self,
        k: &dyn Launch,
        b: &StepBufs,
        kv: &[(Ptr, Ptr)],
        cap: usize,
    ) -> Result<()> {
        let (e, h, kvh, d, round) = (self.n_embd, self.h, self.kvh, self.d, self.round);
        if kv.len() != self.layers.len() {
            anyhow::bail!("{} caches for {} layers", kv.len(), self.layers.len())
        }
        let s = AttnShape { h, kvh, d, cap };
        let part = AttnParts {
            o: b.part_o,
            ml: b.part_ml,
            done: b.done,
            splits: attn_splits(cap),
        };
        let f32_at = |base: Ptr, i: usize| base + 4 * i as u64;
        k.embed(self.embed.0, self.embed.1, b.tokpos, b.x, e, round)?;
        for (l, &(kc, vc)) in self.layers.iter().zip(kv) {
            k.rmsnorm(b.x, l.attn_norm, b.xn, e, self.eps, round)?;
            let bias = |at: usize| l.bias.map_or(0, |p| f32_at(p, at));
            match &l.qkv {
                Qkv::One(w) => k.matvec(
                    w.0,
                    w.1,
                    b.xn,
                    b.qkv,
                    bias(0),
                    (h + 2 * kvh) * d,
                    e,
                    false,
                    round,
                )?,
                Qkv::Three(wq, wk, wv) => {
                    let (ka, va) = (h * d, (h + kvh) * d);
                    k.matvec(wq.0, wq.1, b.xn, b.qkv, bias(0), h * d, e, false, round)?;
                    k.matvec(
                        wk.0,
                        wk.1,
                        b.xn,
                        f32_at(b.qkv, ka),
                        bias(ka),
                        kvh * d,
                        e,
                        false,
                        round,
                    )?;
                    k.matvec(
                        wv.0,
                        wv.1,
                        b.xn,
                        f32_at(b.qkv, va),
                        bias(va),
                        kvh * d,
                        e,
                        false,
                        round,
                    )?;
                }
            }
            k.rope_kv(
                self.cache,
                b.qkv,
                b.tokpos,
                b.cos,
                b.sin,
                kc,
                vc,
                s,
                self.interleaved,
                round,
            )?;
            k.attend(
                self.cache, b.qkv, kc, vc, b.tokpos, b.att, part, s, l.scale, round,
            )?;
            k.matvec(l.wo.0, l.wo.1, b.att, b.x, 0, e, h * d, true, round)?;
            k.rmsnorm(b.x, l.ffn_norm, b.xn, e, self.eps, round)?;
            k.swiglu(l.gate.0, l.gate.1, l.up.1, b.xn, b.hid, self.n_ff, e, round)?;
            k.matvec(l.down.0, l.down.1, b.hid, b.x, 0, e, self.n_ff, true, round)?;
        }
        k.rmsnorm(b.x, self.norm, b.xn, e, self.eps, round)?;
        k.matvec(
            self.output.0,
            self.output.1,
            b.xn,
            b.logits,
            0,
            self.vocab,
            e,
            false,
            round,
        )
    }
}
