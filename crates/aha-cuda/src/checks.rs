//! Every decode kernel against its CPU reference ([`crate::reference`]) on random inputs, through
//! [`Staged`]: on the CUDA emulation by the unit tests (host memory, `emu::Arena`), and on a real
//! GPU by `aha cuda-check` (`gpu::DevMem`). Each check reports the largest error relative to the output's largest
//! magnitude.

use crate::reference::{self, AttnShape};
use crate::step::{attn_splits, AttnParts, Launch, Ptr, MAX_SPLITS};
use crate::{CacheType, WFormat};
use anyhow::Result;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::cell::RefCell;

/// Memory [`Staged`] copies through: the GPU's, or host memory for the emulation.
pub trait Memory {
    /// A copy of `b` (16-byte aligned); its address.
    fn bytes(&mut self, b: &[u8]) -> Result<Ptr>;
    /// `n` bytes at `at`, an address this memory gave (after the launches before it finish).
    fn read(&mut self, at: Ptr, n: usize) -> Result<Vec<u8>>;
    /// Frees every buffer given so far.
    fn clear(&mut self);
}

/// The kernels on some device, called with host slices: each call copies its inputs into `mem`, launches on `k`, and
/// copies its outputs back.
pub struct Staged<'a, M: Memory> {
    pub k: &'a dyn Launch,
    pub mem: RefCell<M>,
}

impl<'a, M: Memory> Staged<'a, M> {
    pub fn new(k: &'a dyn Launch, mem: M) -> Self {
        Self {
            k,
            mem: RefCell::new(mem),
        }
    }

    /// A fresh memory for one call.
    fn mem(&self) -> std::cell::RefMut<'_, M> {
        let mut m = self.mem.borrow_mut();
        m.clear();
        m
    }
}

fn f32s(m: &mut dyn Memory, v: &[f32]) -> Result<Ptr> {
    m.bytes(&CacheType::F32.encode(v))
}

fn read_f32(m: &mut dyn Memory, at: Ptr, out: &mut [f32]) -> Result<()> {
    out.copy_from_slice(&CacheType::F32.decode(&m.read(at, 4 * out.len())?));
    Ok(())
}

/// The token and position buffer the kernels read.
fn tokpos(m: &mut dyn Memory, tok: usize, pos: usize) -> Result<Ptr> {
    m.bytes(&[(tok as i32).to_le_bytes(), (pos as i32).to_le_bytes()].concat())
}

#[allow(clippy::too_many_arguments)]
impl<M: Memory> Staged<'_, M> {
    pub fn matvec(
        &self,
        fmt: WFormat,
        w: &[u8],
        x: &[f32],
        y: &mut [f32],
        bias: Option<&[f32]>,
        rows: usize,
        cols: usize,
        accumulate: bool,
        round: bool,
    ) -> Result<()> {
        let m = &mut *self.mem();
        let (dw, dx, dy) = (m.bytes(w)?, f32s(m, x)?, f32s(m, y)?);
        let db = bias.map_or(Ok(0), |b| f32s(m, b))?;
        self.k
            .matvec(fmt, dw, dx, dy, db, rows, cols, accumulate, round)?;
        read_f32(m, dy, y)
    }

    pub fn swiglu(
        &self,
        fmt: WFormat,
        wg: &[u8],
        wu: &[u8],
        x: &[f32],
        h: &mut [f32],
        rows: usize,
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let m = &mut *self.mem();
        let (g, u, dx, dh) = (m.bytes(wg)?, m.bytes(wu)?, f32s(m, x)?, f32s(m, h)?);
        self.k.swiglu(fmt, g, u, dx, dh, rows, cols, round)?;
        read_f32(m, dh, h)
    }

    pub fn embed(
        &self,
        fmt: WFormat,
        table: &[u8],
        tok: usize,
        x: &mut [f32],
        cols: usize,
        round: bool,
    ) -> Result<()> {
        let m = &mut *self.mem();
        let (t, tp, dx) = (m.bytes(table)?, tokpos(m, tok, 0)?, f32s(m, x)?);
        self.k.embed(fmt, t, tp, dx, cols, round)?;
        read_f32(m, dx, x)
    }

    pub fn rmsnorm(
        &self,
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        eps: f32,
        round: bool,
    ) -> Result<()> {
        let m = &mut *self.mem();
        let (dx, dw, dy) = (f32s(m, x)?, f32s(m, w)?, f32s(m, y)?);
        self.k.rmsnorm(dx, dw, dy, x.len(), eps, round)?;
        read_f32(m, dy, y)
    }

    pub fn rope_kv(
        &self,
        ct: CacheType,
        qkv: &mut [f32],
        pos: usize,
        cos: &[f32],
        sin: &[f32],
        kc: &mut [u8],
        vc: &mut [u8],
        s: AttnShape,
        interleaved: bool,
        round: bool,
    ) -> Result<()> {
        let m = &mut *self.mem();
        let (dq, tp, dc, ds) = (
            f32s(m, qkv)?,
            tokpos(m, 0, pos)?,
            f32s(m, cos)?,
            f32s(m, sin)?,
        );
        let (dk, dv) = (m.bytes(kc)?, m.bytes(vc)?);
        self.k
            .rope_kv(ct, dq, tp, dc, ds, dk, dv, s, interleaved, round)?;
        read_f32(m, dq, qkv)?;
        kc.copy_from_slice(&m.read(dk, kc.len())?);
        vc.copy_from_slice(&m.read(dv, vc.len())?);
        Ok(())
    }

    pub fn attend(
        &self,
        ct: CacheType,
        q: &[f32],
        kc: &[u8],
        vc: &[u8],
        pos: usize,
        y: &mut [f32],
        s: AttnShape,
        scale: f32,
        round: bool,
        splits: usize,
    ) -> Result<()> {
        let m = &mut *self.mem();
        let (dq, dk, dv) = (f32s(m, q)?, m.bytes(kc)?, m.bytes(vc)?);
        let (tp, dy) = (tokpos(m, 0, pos)?, f32s(m, y)?);
        let part = AttnParts {
            o: m.bytes(&vec![0; 4 * s.h * MAX_SPLITS * s.d])?,
            ml: m.bytes(&vec![0; 4 * s.h * MAX_SPLITS * 2])?,
            done: m.bytes(&vec![0; 4 * s.h])?,
            splits,
        };
        self.k
            .attend(ct, dq, dk, dv, tp, dy, part, s, scale, round)?;
        read_f32(m, dy, y)?;
        // The last block of each head leaves its counter at zero for the next step.
        if m.read(part.done, 4 * s.h)?.iter().any(|b| *b != 0) {
            anyhow::bail!("attention left its completion counters set")
        }
        Ok(())
    }
}

/// One comparison's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    /// max |kernel − reference| / max |reference|.
    pub error: f32,
    pub tolerance: f32,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<40} error {:.2e} (tolerance {:.0e})",
            if self.passed() { "ok  " } else { "FAIL" },
            self.name,
            self.error,
            self.tolerance
        )
    }
}

/// How large the inputs are: small enough for the emulation, or model-sized for a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Small,
    Large,
}

/// A deterministic generator of test values (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// The relative error of `got` against `want` (see [`Check::error`]).
pub fn rel_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(a, b)| {
            if a.is_nan() != b.is_nan() {
                f32::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .fold(0f32, f32::max)
        / scale
}

/// `rows × cols` random weights stored in `fmt`.
fn weights(fmt: WFormat, rows: usize, cols: usize, rng: &mut Rng) -> Result<Vec<u8>> {
    let vals = rng.vec(rows * cols, 0.5);
    Ok(match fmt {
        WFormat::F32 => CacheType::F32.encode(&vals),
        WFormat::Bf16 => CacheType::Bf16.encode(&vals),
        WFormat::F16 => CacheType::F16.encode(&vals),
        WFormat::Q8_0 | WFormat::Q4K | WFormat::Q6K => {
            let g = match fmt {
                WFormat::Q8_0 => GgmlDType::Q8_0,
                WFormat::Q4K => GgmlDType::Q4K,
                _ => GgmlDType::Q6K,
            };
            let t = Tensor::from_vec(vals, (rows, cols), &Device::Cpu)?;
            QTensor::quantize(&t, g)?.data()?.into_owned()
        }
    })
}

/// Runs every check on `b`.
pub fn run<M: Memory>(b: &Staged<'_, M>, size: Size) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Rows that leave the last block of warps partly empty; columns of several super-blocks,
    // so the lanes' loops both run and stop short.
    let (rows, cols) = match size {
        Size::Small => (21, 768),
        Size::Large => (4101, 3584),
    };
    for fmt in WFormat::ALL {
        for round in [false, true] {
            let tol = if round { 2e-2 } else { 1e-4 };
            let tag = |k: &str| format!("{k} {}{}", fmt.name(), if round { " round" } else { "" });
            let w = weights(fmt, rows, cols, &mut rng)?;
            let x = rng.vec(cols, 1.0);
            let bias = rng.vec(rows, 0.1);
            // Plain, then with bias and accumulated into a residual.
            let mut got = vec![0f32; rows];
            b.matvec(fmt, &w, &x, &mut got, None, rows, cols, false, round)?;
            let mut want = vec![0f32; rows];
            reference::matvec(fmt, &w, &x, &mut want, None, rows, cols, false, round);
            out.push(Check {
                name: tag("matvec"),
                error: rel_error(&got, &want),
                tolerance: tol,
            });
            let resid = rng.vec(rows, 2.0);
            let mut got = resid.clone();
            b.matvec(fmt, &w, &x, &mut got, Some(&bias), rows, cols, true, round)?;
            let mut want = resid;
            reference::matvec(fmt, &w, &x, &mut want, Some(&bias), rows, cols, true, round);
            out.push(Check {
                name: tag("matvec+bias+residual"),
                error: rel_error(&got, &want),
                tolerance: tol,
            });
            let wu = weights(fmt, rows, cols, &mut rng)?;
            let mut got = vec![0f32; rows];
            b.swiglu(fmt, &w, &wu, &x, &mut got, rows, cols, round)?;
            let want = reference::swiglu(fmt, &w, &wu, &x, rows, cols, round);
            out.push(Check {
                name: tag("swiglu"),
                error: rel_error(&got, &want),
                tolerance: tol,
            });
            let tok = rows - 2;
            let mut got = vec![0f32; cols];
            b.embed(fmt, &w, tok, &mut got, cols, round)?;
            let want = reference::embed(fmt, &w, tok, cols, round);
            out.push(Check {
                name: tag("embed"),
                error: rel_error(&got, &want),
                tolerance: if round { 1e-2 } else { 0.0 },
            });
        }
    }
    for round in [false, true] {
        let tol = if round { 1e-2 } else { 1e-5 };
        let x = rng.vec(cols, 3.0);
        let w = rng.vec(cols, 1.0);
        let mut got = vec![0f32; cols];
        b.rmsnorm(&x, &w, &mut got, 1e-6, round)?;
        let want = reference::rmsnorm(&x, &w, 1e-6, round);
        out.push(Check {
            name: format!("rmsnorm{}", if round { " round" } else { "" }),
            error: rel_error(&got, &want),
            tolerance: tol,
        });
    }
    // Attention shapes: the 7B's (or a smaller grouped one) and the tiny test model's head size
    // of 16, smaller than a warp.
    let shapes: Vec<(AttnShape, usize)> = match size {
        Size::Small => vec![
            (
                AttnShape {
                    h: 4,
                    kvh: 2,
                    d: 64,
                    cap: 48,
                },
                37,
            ),
            (
                AttnShape {
                    h: 4,
                    kvh: 2,
                    d: 16,
                    cap: 8,
                },
                2,
            ),
        ],
        Size::Large => vec![
            (
                AttnShape {
                    h: 28,
                    kvh: 4,
                    d: 128,
                    cap: 4096,
                },
                3001,
            ),
            (
                AttnShape {
                    h: 12,
                    kvh: 2,
                    d: 128,
                    cap: 1024,
                },
                0,
            ),
            (
                AttnShape {
                    h: 4,
                    kvh: 2,
                    d: 16,
                    cap: 256,
                },
                100,
            ),
        ],
    };
    for (s, pos) in shapes {
        for ct in CacheType::ALL {
            for (round, interleaved) in [(false, false), (true, false), (false, true)] {
                // Both sides read the same stored keys and values; only the new key's rounding
                // into a 16-bit cache may fall the other way.
                let tol = if round { 2e-2 } else { 1e-5 };
                let cache_tol = if round || ct != CacheType::F32 {
                    2e-2
                } else {
                    1e-5
                };
                let tag = |k: &str| {
                    format!(
                        "{k} h{} kvh{} d{} pos{} {}{}{}",
                        s.h,
                        s.kvh,
                        s.d,
                        pos,
                        ct.name(),
                        if round { " round" } else { "" },
                        if interleaved { " interleaved" } else { "" }
                    )
                };
                let n_cache = s.kvh * s.cap * s.d;
                // Earlier positions already cached; the step adds position `pos`.
                let kc0: Vec<f32> = rng
                    .vec(n_cache, 1.0)
                    .into_iter()
                    .map(|v| ct.quantize(v))
                    .collect();
                let vc0: Vec<f32> = rng
                    .vec(n_cache, 1.0)
                    .into_iter()
                    .map(|v| ct.quantize(v))
                    .collect();
                let qkv0 = rng.vec((s.h + 2 * s.kvh) * s.d, 1.0);
                let (cos, sin) = reference::rope_tables(s.cap, s.d, 10000.0, round);
                let mut qkv = qkv0.clone();
                let (mut kc, mut vc) = (ct.encode(&kc0), ct.encode(&vc0));
                b.rope_kv(
                    ct,
                    &mut qkv,
                    pos,
                    &cos,
                    &sin,
                    &mut kc,
                    &mut vc,
                    s,
                    interleaved,
                    round,
                )?;
                let mut want_qkv = qkv0;
                let (mut want_k, mut want_v) = (kc0, vc0);
                reference::rope_kv(
                    &mut want_qkv,
                    pos,
                    &cos,
                    &sin,
                    &mut want_k,
                    &mut want_v,
                    s,
                    ct,
                    interleaved,
                    round,
                );
                let (got_k, got_v) = (ct.decode(&kc), ct.decode(&vc));
                let hd = s.h * s.d;
                out.push(Check {
                    name: tag("rope_kv q"),
                    error: rel_error(&qkv[..hd], &want_qkv[..hd]),
                    tolerance: tol,
                });
                out.push(Check {
                    name: tag("rope_kv cache"),
                    error: rel_error(&got_k, &want_k).max(rel_error(&got_v, &want_v)),
                    tolerance: cache_tol,
                });
                // Attention over the cache the reference wrote, so both read the same keys.
                let scale = 1.0 / (s.d as f32).sqrt();
                let (kb, vb) = (ct.encode(&want_k), ct.encode(&want_v));
                let want =
                    reference::attend(&want_qkv[..hd], &want_k, &want_v, pos, s, scale, round);
                // One block per head, the split the decoder uses at this capacity, and (small)
                // more splits than positions, some left empty.
                let mut splits = vec![1, attn_splits(s.cap)];
                if size == Size::Small {
                    splits.extend([3, 8]);
                }
                splits.dedup();
                for sp in splits {
                    let mut got = vec![0f32; hd];
                    b.attend(
                        ct,
                        &want_qkv[..hd],
                        &kb,
                        &vb,
                        pos,
                        &mut got,
                        s,
                        scale,
                        round,
                        sp,
                    )?;
                    out.push(Check {
                        name: format!("{} splits {sp}", tag("attend")),
                        error: rel_error(&got, &want),
                        tolerance: tol,
                    });
                }
            }
        }
    }
    Ok(out)
}
