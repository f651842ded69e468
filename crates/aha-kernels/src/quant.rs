//! Quantized mat-vec kernels: GGUF weight blocks (Q8_0, Q5_0, Q4_0, Q4_1, Q4_K, Q6_K) times an
//! activation row quantized to 8 bits, as llama.cpp quantizes it. Decode multiplies one row,
//! the prompt a tile of rows; rows of weights are split across the rayon pool.
//!
//! The arithmetic is fixed here, in the scalar reference ([`dot_row`] with [`Kernels::Scalar`]):
//! integer dot products that are exact, then float steps in a set order. The SIMD paths
//! (`x86.rs`, `neon.rs`) compute the same integers and the same float steps in the same order,
//! so every kernel set gives the same bits.
//!
//! Why our own kernels: candle's Q5_0 dot product has no SIMD path and its fast paths need rows
//! that are multiples of 256, which small models (rows of 896) do not have.

use crate::Kernels;
use half::f16;
use rayon::prelude::*;

pub(crate) const QK: usize = 32;

/// The weight formats these kernels handle (GGUF's names).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Format {
    Q8_0,
    Q5_0,
    Q4_0,
    Q4_1,
    Q4K,
    Q6K,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Self::Q8_0,
        Self::Q5_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q4K,
        Self::Q6K,
    ];

    /// Weights per block: 32, or 256 for the K-quants.
    pub fn block_len(self) -> usize {
        match self {
            Self::Q4K | Self::Q6K => 256,
            _ => QK,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 34,
            Self::Q5_0 => 22,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Bytes of one row of `cols` weights.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_len() * self.block_bytes()
    }
}

/// An activation row quantized to 8 bits per value in blocks of 32.
#[derive(Debug, Default, Clone)]
pub struct QuantRow {
    pub qs: Vec<i8>,
    /// Scale per block.
    pub d: Vec<f32>,
    /// Per block, the sums of each group of 4 codes (the lanes of a byte dot product), negated:
    /// starting a dot product there subtracts a constant code offset for free.
    pub neg_lanes: Vec<[i32; 8]>,
    /// Sum of the codes of each 16 values (the K-quant dot products' `bsums`).
    pub sum16: Vec<i32>,
    /// Per block, the sum of the values as llama.cpp's `q8_1` keeps it for Q4_1 weights:
    /// `amax/127 · Σcodes` rounded to f16.
    pub s1: Vec<f32>,
}

impl QuantRow {
    /// Quantizes `x` (its length a multiple of 32) for weights with 32-value blocks, rounding as
    /// llama.cpp's `q8_0` does: codes `round_ties_even(x · 127/amax)`, the scale `amax/127`
    /// stored as f16. Matching its rounding makes the two engines agree at near-ties.
    pub fn quantize(x: &[f32]) -> Self {
        let nb = x.len() / QK;
        let mut qs = vec![0i8; nb * QK];
        let mut d = vec![0f32; nb];
        let mut s1 = vec![0f32; nb];
        for b in 0..nb {
            let xs = &x[b * QK..(b + 1) * QK];
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            d[b] = f16::from_f32(amax / 127.0).to_f32();
            let inv = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in qs[b * QK..(b + 1) * QK].iter_mut().zip(xs) {
                *q = (v * inv).round_ties_even() as i8;
                sum += *q as i32;
            }
            s1[b] = f16::from_f32(amax / 127.0 * sum as f32).to_f32();
        }
        let mut row = Self::finish(qs, d);
        row.s1 = s1;
        row
    }

    /// Quantizes `x` (its length a multiple of 256) for K-quant weights, as llama.cpp's `q8_K`
    /// does: one scale per 256 values (`1 / (127/amax)`, kept in f32), codes rounded to nearest
    /// even. Every block of 32 inside carries that scale.
    pub fn quantize_k(x: &[f32]) -> Self {
        let mut qs = vec![0i8; x.len()];
        let mut d = vec![0f32; x.len() / QK];
        for (b, xs) in x.chunks_exact(256).enumerate() {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                continue;
            }
            let iscale = 127.0 / amax;
            for (q, v) in qs[b * 256..(b + 1) * 256].iter_mut().zip(xs) {
                *q = (iscale * v).round_ties_even().min(127.0) as i8;
            }
            d[b * 8..(b + 1) * 8].fill(1.0 / iscale);
        }
        Self::finish(qs, d)
    }

    /// Block sums and lane sums of the codes.
    fn finish(qs: Vec<i8>, d: Vec<f32>) -> Self {
        let neg_lanes = qs
            .chunks_exact(QK)
            .map(|b| {
                let mut l = [0i32; 8];
                for (i, v) in b.iter().enumerate() {
                    l[i / 4] -= *v as i32;
                }
                l
            })
            .collect();
        let sum16 = qs
            .chunks_exact(16)
            .map(|b| b.iter().map(|&v| v as i32).sum())
            .collect();
        Self {
            qs,
            d,
            neg_lanes,
            sum16,
            s1: Vec::new(),
        }
    }

    /// Quantizes `x` as llama.cpp does for weights of format `dt`.
    pub fn quantize_for(dt: Format, x: &[f32]) -> Self {
        if dt.block_len() == 256 && x.len().is_multiple_of(256) {
            Self::quantize_k(x)
        } else {
            Self::quantize(x)
        }
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Unpacks one weight block into 32 signed values (the offset of Q5_0 and Q4_0 taken off;
/// Q4_1's codes stay 0..15); returns (scale, Q4_1's per-block offset `m`).
#[inline]
pub(crate) fn unpack_scalar(dt: Format, blk: &[u8], out: &mut [i8; QK]) -> (f32, f32) {
    match dt {
        Format::Q8_0 => {
            for (o, b) in out.iter_mut().zip(&blk[2..34]) {
                *o = *b as i8;
            }
            (f16_at(blk, 0), 0.0)
        }
        Format::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            let qs = &blk[6..22];
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                out[j] = (((qs[j] & 0x0F) | h0) as i8) - 16;
                out[j + 16] = (((qs[j] >> 4) | h1) as i8) - 16;
            }
            (f16_at(blk, 0), 0.0)
        }
        Format::Q4_0 => {
            let qs = &blk[2..18];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) as i8 - 8;
                out[j + 16] = (qs[j] >> 4) as i8 - 8;
            }
            (f16_at(blk, 0), 0.0)
        }
        Format::Q4_1 => {
            let qs = &blk[4..20];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) as i8;
                out[j + 16] = (qs[j] >> 4) as i8;
            }
            (f16_at(blk, 0), f16_at(blk, 2))
        }
        Format::Q4K | Format::Q6K => unreachable!("K-quants have blocks of 256"),
    }
}

/// The sum of eight float lanes in the order of a 256-bit register's reduction: the two halves
/// added lane by lane, then lanes 0+2 and 1+3, then those two.
#[inline]
pub(crate) fn hsum8(a: [f32; 8]) -> f32 {
    let h = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (h[0] + h[2]) + (h[1] + h[3])
}

/// Q4_K's packed 6-bit (scale, min) of sub-block `j`.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 256 unsigned 6-bit codes (0..63, offset 32) of a Q6_K superblock in value order: value
/// `128n + 32k + l` takes its low 4 bits from `ql` and its high 2 bits from `qh`.
fn q6k_codes(blk: &[u8]) -> [u8; 256] {
    let (ql, qh) = (&blk[0..128], &blk[128..192]);
    let mut out = [0u8; 256];
    for n in 0..2 {
        for l in 0..32 {
            let (a, b, h) = (ql[64 * n + l], ql[64 * n + 32 + l], qh[32 * n + l]);
            out[128 * n + l] = (a & 0xF) | ((h & 3) << 4);
            out[128 * n + 32 + l] = (b & 0xF) | (((h >> 2) & 3) << 4);
            out[128 * n + 64 + l] = (a >> 4) | (((h >> 4) & 3) << 4);
            out[128 * n + 96 + l] = (b >> 4) | (((h >> 6) & 3) << 4);
        }
    }
    out
}

/// A K-quant row times `x`, rounded as llama.cpp's x86 kernels do. Every superblock's integer
/// dot product is exact; only the float steps differ between orders, so they follow ggml:
/// - Q4_K (its repacked `q4_K_8x8` kernel): per superblock, `Σ scale·codes·x` and
///   `Σ min·sum(x)` as integers, each accumulated with one fused multiply-add by `d·dx` and
///   `dmin·dx`; the row is the first sum minus the second.
/// - Q6_K (`ggml_vec_dot_q6_K_q8_K`, AVX2): eight integer lanes (lane `L` holds the values
///   `4L..4L+4` of every 32, unsigned codes, minus `32·scale·sum(x)` of the 16-groups `2L, 2L+1`),
///   each accumulated with a fused multiply-add by `dx·d`, then summed as 4+4, 2+2, 1+1.
///
/// With `per64` (llama.cpp's Q4_K kernel for rows of the prompt in groups of four), Q4_K's
/// float steps come every 64 values instead of every superblock.
fn dot_row_k_scalar(dt: Format, row: &[u8], x: &QuantRow, per64: bool) -> f32 {
    let bb = dt.block_bytes();
    if dt == Format::Q4K {
        let (mut acc, mut accm) = (0f32, 0f32);
        for (sb, blk) in row.chunks_exact(bb).enumerate() {
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            let scales = &blk[4..16];
            let qs = &blk[16..144];
            let xq = &x.qs[sb * 256..(sb + 1) * 256];
            let (mut isum, mut imin) = (0i32, 0i32);
            for j in 0..4 {
                let (s0, m0) = scale_min_k4(2 * j, scales);
                let (s1, m1) = scale_min_k4(2 * j + 1, scales);
                let (mut p0, mut p1) = (0i32, 0i32);
                for l in 0..32 {
                    p0 += (qs[32 * j + l] & 0xF) as i32 * xq[64 * j + l] as i32;
                    p1 += (qs[32 * j + l] >> 4) as i32 * xq[64 * j + 32 + l] as i32;
                }
                let b = sb * 16 + 4 * j;
                let (i, m) = (
                    s0 as i32 * p0 + s1 as i32 * p1,
                    m0 as i32 * (x.sum16[b] + x.sum16[b + 1])
                        + m1 as i32 * (x.sum16[b + 2] + x.sum16[b + 3]),
                );
                if per64 {
                    let dx = x.d[sb * 8];
                    acc = (i as f32).mul_add(d * dx, acc);
                    accm = (m as f32).mul_add(dmin * dx, accm);
                } else {
                    isum += i;
                    imin += m;
                }
            }
            if !per64 {
                let dx = x.d[sb * 8];
                acc = (isum as f32).mul_add(d * dx, acc);
                accm = (imin as f32).mul_add(dmin * dx, accm);
            }
        }
        return acc - accm;
    }
    let mut acc = [0f32; 8];
    for (sb, blk) in row.chunks_exact(bb).enumerate() {
        let sc = &blk[192..208];
        let xq = &x.qs[sb * 256..(sb + 1) * 256];
        let codes = q6k_codes(blk);
        let mut lanes = [0i32; 8];
        for (p, c) in codes.iter().enumerate() {
            lanes[(p % 32) / 4] += *c as i32 * xq[p] as i32 * sc[p / 16] as i8 as i32;
        }
        for (l, v) in lanes.iter_mut().enumerate() {
            let g = sb * 16 + 2 * l;
            *v -= 32
                * (sc[2 * l] as i8 as i32 * x.sum16[g]
                    + sc[2 * l + 1] as i8 as i32 * x.sum16[g + 1]);
        }
        let d = x.d[sb * 8] * f16_at(blk, 208);
        for (a, v) in acc.iter_mut().zip(lanes) {
            *a = d.mul_add(v as f32, *a);
        }
    }
    hsum8(acc)
}

/// A row of 32-value blocks times `x`. Per block, eight exact integer lanes (lane `L` is
/// `Σ w·x` over the values `4L..4L+4`, `w` signed), each added to its float lane with one fused
/// multiply-add by `d·dx`; Q4_1 adds `m·s` per block in a separate float sum. At the end the
/// lanes are reduced by [`hsum8`] and the offset sum added. This is llama.cpp's AVX2 order.
fn dot_row32_scalar(dt: Format, row: &[u8], x: &QuantRow) -> f32 {
    let bb = dt.block_bytes();
    let mut acc = [0f32; 8];
    let mut off = 0f32;
    let mut w = [0i8; QK];
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let (d, m) = unpack_scalar(dt, blk, &mut w);
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let dd = d * x.d[b];
        for (l, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * l..4 * l + 4).map(|i| w[i] as i32 * xq[i] as i32).sum();
            *a = dd.mul_add(lane as f32, *a);
        }
        if dt == Format::Q4_1 {
            off += m * x.s1[b];
        }
    }
    hsum8(acc) + off
}

/// One row times `x` with the portable reference (`per64`: see [`dot_row_k_scalar`]).
pub fn dot_row_scalar(dt: Format, row: &[u8], x: &QuantRow, per64: bool) -> f32 {
    if dt.block_len() == 256 {
        dot_row_k_scalar(dt, row, x, per64)
    } else {
        dot_row32_scalar(dt, row, x)
    }
}

/// Panics unless this CPU runs kernel set `k` (the SIMD paths rely on it).
fn require(k: Kernels) {
    assert!(
        k.available(),
        "the {} kernels do not run on this CPU",
        k.name()
    );
}

/// Checks that `out.len()` rows of `row_bytes` fit in `w` and that `x` covers a row.
fn check_bounds(dt: Format, w: &[u8], row_bytes: usize, rows: usize, x: &QuantRow) {
    assert!(row_bytes.is_multiple_of(dt.block_bytes()) && w.len() >= rows * row_bytes);
    assert!(x.qs.len() / dt.block_len() * dt.block_bytes() >= row_bytes);
    assert!(x.d.len() * QK >= x.qs.len() && x.sum16.len() * 16 >= x.qs.len());
    if dt == Format::Q4_1 {
        assert!(x.s1.len() * QK >= x.qs.len());
    }
}

/// `out[i] = row_i · x` for consecutive rows of raw block bytes, with kernel set `k`
/// (`per64`: see [`dot_row_k_scalar`]). Panics if `k` is not available on this CPU.
#[allow(unsafe_code)]
pub fn dot_rows(
    k: Kernels,
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
    per64: bool,
) {
    check_bounds(dt, w, row_bytes, out.len(), x);
    require(k);
    match k {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the set was detected at run time (assert above); `check_bounds` keeps every
        // block read inside `w` and `x`.
        Kernels::Avx512Vnni | Kernels::AvxVnni | Kernels::Avx2 => unsafe {
            crate::x86::rows(k, dt, w, row_bytes, x, out, per64)
        },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: as above.
        Kernels::NeonDotprod | Kernels::Neon => unsafe {
            crate::neon::rows(k, dt, w, row_bytes, x, out, per64)
        },
        _ => {
            for (i, y) in out.iter_mut().enumerate() {
                *y = dot_row_scalar(dt, &w[i * row_bytes..(i + 1) * row_bytes], x, per64);
            }
        }
    }
}

/// The weight rows in `w` times every row of `xs` into `out` (`xs.len() × rows`), with each
/// weight block unpacked once for several rows (K-quants: rows of `xs` in groups of four take
/// llama.cpp's per-64 steps, see `matvec`). Every output equals [`dot_rows`]'s bit for bit.
pub fn dot_tile(
    k: Kernels,
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    xs: &[QuantRow],
    out: &mut [f32],
) {
    dot_tile_as(k, dt, w, row_bytes, xs, out, true)
}

/// [`dot_tile`]; with `group4` false every row takes the decode steps (no per-64 groups), so
/// each output equals [`dot_rows`] without `per64`.
#[allow(unsafe_code)]
pub fn dot_tile_as(
    k: Kernels,
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    xs: &[QuantRow],
    out: &mut [f32],
    group4: bool,
) {
    let nw = w.len() / row_bytes;
    assert_eq!(out.len(), xs.len() * nw);
    for x in xs {
        check_bounds(dt, w, row_bytes, nw, x);
    }
    require(k);
    match k {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the set was detected at run time; the checks keep reads in bounds.
        Kernels::Avx512Vnni | Kernels::AvxVnni | Kernels::Avx2 => unsafe {
            crate::x86::tiles(k, dt, w, row_bytes, nw, xs, out, nw, group4)
        },
        _ => {
            // Row at a time (the NEON and scalar sets have no tiles of their own).
            let grouped = xs.len() - xs.len() % 4;
            for (i, x) in xs.iter().enumerate() {
                let per64 = group4 && dt == Format::Q4K && i < grouped;
                dot_rows(
                    k,
                    dt,
                    w,
                    row_bytes,
                    x,
                    &mut out[i * nw..(i + 1) * nw],
                    per64,
                );
            }
        }
    }
}

/// `y = W x` for `W` of `rows × cols` in `dt` (raw GGUF bytes) and each row of `xs` (`n × cols`).
/// Writes `n × rows` values into `out`. The rows of `xs` are one batch: llama.cpp multiplies
/// Q4_K weights with the rows of a batch in groups of four with different float steps than
/// the rest (`per64`), and this follows it so that the two agree on a prompt bit for bit.
pub fn matvec(dt: Format, w: &[u8], rows: usize, cols: usize, xs: &[f32], out: &mut [f32]) {
    matvec_as(dt, w, rows, cols, xs, out, true)
}

/// [`matvec`] where every row of `xs` gives the bits a one-row call gives (no per-64 groups of
/// a batch): for verifying drafted tokens, which must match decoding them one at a time. The
/// weights are still read once per tile of rows.
pub fn matvec_rows(dt: Format, w: &[u8], rows: usize, cols: usize, xs: &[f32], out: &mut [f32]) {
    matvec_as(dt, w, rows, cols, xs, out, false)
}

fn matvec_as(
    dt: Format,
    w: &[u8],
    rows: usize,
    cols: usize,
    xs: &[f32],
    out: &mut [f32],
    group4: bool,
) {
    let k = crate::active();
    let row_bytes = dt.row_bytes(cols);
    debug_assert_eq!(w.len(), rows * row_bytes);
    let qx: Vec<QuantRow> = xs
        .chunks_exact(cols)
        .map(|x| QuantRow::quantize_for(dt, x))
        .collect();
    let threads = rayon::current_num_threads().max(1);
    if qx.len() == 1 {
        // Decode: one activation row, the weight rows split across the pool.
        // Enough chunks to balance, few enough that scheduling stays cheap.
        let chunk = rows.div_ceil(threads * 4).max(16).div_ceil(4) * 4;
        if threads == 1 || rows <= chunk {
            dot_rows(k, dt, w, row_bytes, &qx[0], out, false);
            return;
        }
        out.par_chunks_mut(chunk).enumerate().for_each(|(c, dst)| {
            let r0 = c * chunk;
            dot_rows(k, dt, &w[r0 * row_bytes..], row_bytes, &qx[0], dst, false);
        });
        return;
    }
    // Prompt: a few weight rows (about 16 KB, they stay in L1) times a tile of activation rows
    // (in L2), so the weights are read from memory once per tile instead of once per row. The
    // arithmetic per output is the same as in decode.
    const TILE: usize = 64;
    let chunk = (16384 / row_bytes.max(1)).clamp(4, 64) / 4 * 4;
    let nchunks = rows.div_ceil(chunk);
    for t0 in (0..qx.len()).step_by(TILE) {
        let tile = &qx[t0..(t0 + TILE).min(qx.len())];
        let parts: Vec<Vec<f32>> = (0..nchunks)
            .into_par_iter()
            .map(|c| {
                let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
                let mut part = vec![0f32; tile.len() * (r1 - r0)];
                let w = &w[r0 * row_bytes..r1 * row_bytes];
                dot_tile_as(k, dt, w, row_bytes, tile, &mut part, group4);
                part
            })
            .collect();
        for (c, part) in parts.iter().enumerate() {
            let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
            for (i, src) in part.chunks_exact(r1 - r0).enumerate() {
                out[(t0 + i) * rows + r0..(t0 + i) * rows + r1].copy_from_slice(src);
            }
        }
    }
}

/// Dequantizes one row of `dt` weights into `y`, with the value formulas (and so the rounding)
/// of ggml's and candle's `to_float`.
fn dequantize_row(dt: Format, row: &[u8], y: &mut [f32]) {
    let bb = dt.block_bytes();
    match dt {
        Format::Q4K => {
            for (blk, y) in row.chunks_exact(bb).zip(y.chunks_exact_mut(256)) {
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                let (scales, qs) = (&blk[4..16], &blk[16..144]);
                for j in 0..4 {
                    let (s0, m0) = scale_min_k4(2 * j, scales);
                    let (s1, m1) = scale_min_k4(2 * j + 1, scales);
                    let (d1, m1v) = (d * s0 as f32, dmin * m0 as f32);
                    let (d2, m2v) = (d * s1 as f32, dmin * m1 as f32);
                    for (l, q) in qs[32 * j..32 * j + 32].iter().enumerate() {
                        y[64 * j + l] = d1 * (q & 0xF) as f32 - m1v;
                        y[64 * j + 32 + l] = d2 * (q >> 4) as f32 - m2v;
                    }
                }
            }
        }
        Format::Q6K => {
            for (blk, y) in row.chunks_exact(bb).zip(y.chunks_exact_mut(256)) {
                let (d, sc) = (f16_at(blk, 208), &blk[192..208]);
                for (p, (o, c)) in y.iter_mut().zip(q6k_codes(blk)).enumerate() {
                    *o = d * sc[p / 16] as i8 as f32 * (c as i8 - 32) as f32;
                }
            }
        }
        _ => {
            let mut w = [0i8; QK];
            for (blk, y) in row.chunks_exact(bb).zip(y.chunks_exact_mut(QK)) {
                let (d, m) = unpack_scalar(dt, blk, &mut w);
                for (o, q) in y.iter_mut().zip(&w) {
                    *o = if dt == Format::Q4_1 {
                        *q as f32 * d + m
                    } else {
                        *q as f32 * d
                    };
                }
            }
        }
    }
}

/// `out (n × rows) = xs (n × cols) · Wᵀ` for quantized `W` (`rows × cols`), for prompts: `W` is
/// dequantized into a buffer kept between calls (no fresh allocation, zeroing and page faults
/// per layer), then multiplied in f32 by `gemm` on the rayon pool. The same values and the same
/// `gemm` call as dequantizing with candle and multiplying with its matmul.
#[allow(unsafe_code)]
pub fn matmul_dequantized(
    dt: Format,
    w: &[u8],
    rows: usize,
    cols: usize,
    xs: &[f32],
    out: &mut [f32],
) {
    static BUF: std::sync::Mutex<Vec<f32>> = std::sync::Mutex::new(Vec::new());
    let rb = dt.row_bytes(cols);
    let n = xs.len() / cols;
    assert!(w.len() >= rows * rb && xs.len() == n * cols && out.len() == n * rows);
    let mut buf = BUF.lock().unwrap_or_else(|e| e.into_inner());
    if buf.len() < rows * cols {
        buf.resize(rows * cols, 0.0);
    }
    let wf = &mut buf[..rows * cols];
    wf.par_chunks_mut(cols)
        .zip(w[..rows * rb].par_chunks(rb))
        .for_each(|(y, row)| dequantize_row(dt, row, y));
    let threads = rayon::current_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above sizes `out` (n × rows), `xs` (n × cols) and the buffer
    // (rows × cols) for exactly the elements gemm touches; the three do not overlap.
    unsafe {
        gemm::gemm(
            n,
            rows,
            cols,
            out.as_mut_ptr(),
            1,
            rows as isize,
            false,
            xs.as_ptr(),
            1,
            cols as isize,
            wf.as_ptr(),
            cols as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Test vectors and the bit-for-bit check of a kernel set against the scalar reference, shared
/// by the unit tests and the single-threaded test binary that runs under qemu for aarch64.
#[doc(hidden)]
pub mod check {
    use super::*;

    /// A small deterministic generator (xorshift64*).
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        #[allow(clippy::should_implement_trait)]
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [-1, 1).
        pub fn float(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// `rows` rows of `cols` weights in `dt`: random codes (every bit pattern, so also Q8_0's
    /// -128 and the extremes of every scale) and random finite f16 scales.
    pub fn random_rows(dt: Format, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let mut w = vec![0u8; rows * dt.row_bytes(cols)];
        for b in w.iter_mut() {
            *b = rng.next() as u8;
        }
        let put = |blk: &mut [u8], at: usize, v: f32| {
            blk[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
        };
        for blk in w.chunks_exact_mut(dt.block_bytes()) {
            let (a, b) = (rng.float() * 0.02, rng.float().abs() * 0.01);
            match dt {
                Format::Q4_1 | Format::Q4K => {
                    put(blk, 0, a.abs());
                    put(blk, 2, b);
                }
                Format::Q6K => put(blk, 208, a),
                _ => put(blk, 0, a),
            }
        }
        w
    }

    /// Activations with a few outliers (so block scales differ a lot).
    pub fn random_x(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n)
            .map(|i| rng.float() * if i % 61 == 0 { 30.0 } else { 1.5 })
            .collect()
    }

    /// Checks that kernel set `k` gives the scalar reference's bits for every format, for one
    /// row ([`dot_rows`], with and without the per-64 steps) and for tiles of 1 to 9 rows
    /// ([`dot_tile`]). Single-threaded. Returns how many outputs were compared.
    pub fn bitwise(k: Kernels) -> Result<usize, String> {
        let mut rng = Rng::new(7);
        let mut n = 0;
        for dt in Format::ALL {
            for (rows, cols) in [(9, 256), (13, 896), (5, 4864)] {
                let w = random_rows(dt, rows, cols, &mut rng);
                let rb = dt.row_bytes(cols);
                for nx in 1..=9 {
                    let xs: Vec<QuantRow> = (0..nx)
                        .map(|_| QuantRow::quantize_for(dt, &random_x(cols, &mut rng)))
                        .collect();
                    let grouped = nx - nx % 4;
                    let mut tile = vec![0f32; nx * rows];
                    dot_tile(k, dt, &w, rb, &xs, &mut tile);
                    // Rows as decode computes them: no per-64 groups anywhere.
                    let mut single = vec![0f32; nx * rows];
                    dot_tile_as(k, dt, &w, rb, &xs, &mut single, false);
                    for (i, x) in xs.iter().enumerate() {
                        for r in 0..rows {
                            let want = dot_row_scalar(dt, &w[r * rb..(r + 1) * rb], x, false);
                            if single[i * rows + r].to_bits() != want.to_bits() {
                                return Err(format!(
                                    "{} {dt:?} {rows}x{cols}, {nx} rows as decode, row {r} of x {i}",
                                    k.name()
                                ));
                            }
                            n += 1;
                        }
                    }
                    for (i, x) in xs.iter().enumerate() {
                        let per64 = dt == Format::Q4K && i < grouped;
                        let mut one = vec![0f32; rows];
                        dot_rows(k, dt, &w, rb, x, &mut one, per64);
                        for r in 0..rows {
                            let want = dot_row_scalar(dt, &w[r * rb..(r + 1) * rb], x, per64);
                            let (a, b) = (one[r], tile[i * rows + r]);
                            if a.to_bits() != want.to_bits() || b.to_bits() != want.to_bits() {
                                return Err(format!(
                                    "{} {dt:?} {rows}x{cols}, {nx} rows, row {r} of x {i} \
                                     (per64 {per64}): rows {a:e}, tile {b:e}, scalar {want:e}",
                                    k.name()
                                ));
                            }
                            n += 2;
                        }
                    }
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_set_gives_the_scalar_references_bits() {
        let sets = Kernels::all_available();
        assert!(sets.contains(&Kernels::Scalar));
        for k in sets {
            let n = check::bitwise(k).unwrap();
            assert!(n > 10_000, "{}: {n} outputs compared", k.name());
        }
    }

    #[test]
    fn matvec_equals_the_reference_for_decode_and_prompt_batches() {
        let mut rng = check::Rng::new(3);
        let (rows, cols) = (70, 512);
        for dt in Format::ALL {
            let w = check::random_rows(dt, rows, cols, &mut rng);
            let rb = dt.row_bytes(cols);
            for n in [1, 7, 70] {
                let xs = check::random_x(n * cols, &mut rng);
                let mut got = vec![0f32; n * rows];
                matvec(dt, &w, rows, cols, &xs, &mut got);
                let grouped = n - n % 4;
                for i in 0..n {
                    let qx = QuantRow::quantize_for(dt, &xs[i * cols..(i + 1) * cols]);
                    let per64 = dt == Format::Q4K && i < grouped;
                    for r in 0..rows {
                        let want = dot_row_scalar(dt, &w[r * rb..(r + 1) * rb], &qx, per64);
                        assert_eq!(got[i * rows + r].to_bits(), want.to_bits(), "{dt:?} n {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn matvec_rows_gives_every_row_the_decode_bits() {
        let mut rng = check::Rng::new(5);
        let (rows, cols) = (70, 512);
        for dt in Format::ALL {
            let w = check::random_rows(dt, rows, cols, &mut rng);
            for n in [2, 4, 5, 7] {
                let xs = check::random_x(n * cols, &mut rng);
                let mut got = vec![0f32; n * rows];
                matvec_rows(dt, &w, rows, cols, &xs, &mut got);
                for i in 0..n {
                    let mut one = vec![0f32; rows];
                    matvec(dt, &w, rows, cols, &xs[i * cols..(i + 1) * cols], &mut one);
                    for r in 0..rows {
                        assert_eq!(
                            got[i * rows + r].to_bits(),
                            one[r].to_bits(),
                            "{dt:?} n {n} row {i} output {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activations_are_rounded_as_llama_cpp_rounds_them() {
        // q8_0: scale amax/127 kept as f16, codes rounded half to even.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5; // 2.5 · 127/127 = 2.5 → 2 (ties to even)
        x[2] = 3.5; // → 4
        let q = QuantRow::quantize(&x);
        assert_eq!((q.qs[0], q.qs[1], q.qs[2]), (127, 2, 4));
        assert_eq!(q.d[0], 1.0);
        let x: Vec<f32> = (0..32).map(|i| i as f32 * 0.1).collect();
        let q = QuantRow::quantize(&x);
        let amax = x[31];
        assert_eq!(q.d[0], f16::from_f32(amax / 127.0).to_f32());
        // q8_1's block sum (Q4_1 weights): the unrounded scale times Σcodes, rounded to f16.
        let sum: i32 = q.qs.iter().map(|&v| v as i32).sum();
        assert_eq!(q.s1[0], f16::from_f32(amax / 127.0 * sum as f32).to_f32());
        // q8_K: one scale per 256 values, 1/(127/amax) in f32, on every block of 32 inside.
        let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) * 0.01).collect();
        let q = QuantRow::quantize_k(&x);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(q.d.iter().all(|&d| d == 1.0 / (127.0 / amax)));
        assert_eq!(q.qs[255], 127);
        assert_eq!(q.sum16.len(), 16);
        assert_eq!(
            q.sum16[0],
            q.qs[..16].iter().map(|&v| v as i32).sum::<i32>()
        );
    }
}
