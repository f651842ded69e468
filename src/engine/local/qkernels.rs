//! Quantized mat-vec kernels for decode: GGUF weight blocks (Q8_0, Q5_0, Q4_0, Q4_1) times an
//! activation row quantized to 8 bits, with SIMD dot products chosen at run time (AVX-512 VNNI,
//! AVX2) and a portable fallback. Rows are split across the rayon pool.
//!
//! Why our own: candle's Q5_0 dot product has no SIMD path and its fast paths need rows that are
//! multiples of 256, which small models (rows of 896) do not have; decode is a chain of these.
#![allow(unsafe_code)]

use candle_core::quantized::GgmlDType;
use half::f16;
use rayon::prelude::*;

const QK: usize = 32;

/// The weight formats these kernels handle.
pub fn supported(dt: GgmlDType) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // AHA_KERNELS=candle falls back to candle's kernels, for comparisons.
    if *OFF.get_or_init(|| std::env::var("AHA_KERNELS").as_deref() == Ok("candle")) {
        return false;
    }
    matches!(
        dt,
        GgmlDType::Q8_0
            | GgmlDType::Q5_0
            | GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q4K
            | GgmlDType::Q6K
    )
}

/// Weights per block: 32, or 256 for the K-quants.
fn block_len(dt: GgmlDType) -> usize {
    match dt {
        GgmlDType::Q4K | GgmlDType::Q6K => 256,
        _ => QK,
    }
}

/// Bytes per block of 32 weights.
fn block_bytes(dt: GgmlDType) -> usize {
    match dt {
        GgmlDType::Q8_0 => 34,
        GgmlDType::Q5_0 => 22,
        GgmlDType::Q4_0 => 18,
        GgmlDType::Q4_1 => 20,
        GgmlDType::Q4K => 144,
        GgmlDType::Q6K => 210,
        _ => 0,
    }
}

/// An activation row quantized to 8 bits per value in blocks of 32.
#[derive(Debug, Default, Clone)]
pub struct QuantRow {
    pub qs: Vec<i8>,
    /// Scale per block.
    pub d: Vec<f32>,
    /// Sum of the dequantized values per block (for formats with an offset, Q4_1).
    pub s: Vec<f32>,
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
        let s = qs
            .chunks_exact(QK)
            .zip(&d)
            .map(|(b, d)| d * b.iter().map(|&v| v as i32).sum::<i32>() as f32)
            .collect();
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
            s,
            neg_lanes,
            sum16,
            s1: Vec::new(),
        }
    }

    /// Quantizes `x` as llama.cpp does for weights of format `dt`.
    pub fn quantize_for(dt: GgmlDType, x: &[f32]) -> Self {
        if block_len(dt) == 256 && x.len().is_multiple_of(256) {
            Self::quantize_k(x)
        } else {
            Self::quantize(x)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Avx512Vnni,
    Avx2,
    Scalar,
}

fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("AHA_KERNELS").as_deref() == Ok("scalar") {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var("AHA_KERNELS").as_deref() != Ok("avx2")
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
            {
                return Isa::Avx512Vnni;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Unpacks one weight block into 32 signed values; returns (scale, offset).
#[inline]
fn unpack_scalar(dt: GgmlDType, blk: &[u8], out: &mut [i8; QK]) -> (f32, f32) {
    match dt {
        GgmlDType::Q8_0 => {
            for (o, b) in out.iter_mut().zip(&blk[2..34]) {
                *o = *b as i8;
            }
            (f16_at(blk, 0), 0.0)
        }
        GgmlDType::Q5_0 => {
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
        GgmlDType::Q4_0 => {
            let qs = &blk[2..18];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) as i8 - 8;
                out[j + 16] = (qs[j] >> 4) as i8 - 8;
            }
            (f16_at(blk, 0), 0.0)
        }
        GgmlDType::Q4_1 => {
            let qs = &blk[4..20];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) as i8;
                out[j + 16] = (qs[j] >> 4) as i8;
            }
            (f16_at(blk, 0), f16_at(blk, 2))
        }
        _ => (0.0, 0.0),
    }
}

/// Q4_K's packed 6-bit (scale, min) of sub-block `j`.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
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
fn dot_row_k_scalar(dt: GgmlDType, row: &[u8], x: &QuantRow, per64: bool) -> f32 {
    let bb = block_bytes(dt);
    if dt == GgmlDType::Q4K {
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
        let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let xq = &x.qs[sb * 256..(sb + 1) * 256];
        let mut lanes = [0i32; 8];
        for n in 0..2 {
            for l in 0..32 {
                let (a, b, h) = (ql[64 * n + l], ql[64 * n + 32 + l], qh[32 * n + l]);
                let codes = [
                    (a & 0xF) | ((h & 3) << 4),
                    (b & 0xF) | (((h >> 2) & 3) << 4),
                    (a >> 4) | (((h >> 4) & 3) << 4),
                    (b >> 4) | (((h >> 6) & 3) << 4),
                ];
                for (k, c) in codes.iter().enumerate() {
                    let p = 128 * n + 32 * k + l;
                    lanes[l / 4] += *c as i32 * xq[p] as i32 * sc[p / 16] as i8 as i32;
                }
            }
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
    let h = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (h[0] + h[2]) + (h[1] + h[3])
}

fn dot_row_scalar(dt: GgmlDType, row: &[u8], x: &QuantRow, per64: bool) -> f32 {
    if block_len(dt) == 256 {
        return dot_row_k_scalar(dt, row, x, per64);
    }
    let bb = block_bytes(dt);
    let mut acc = 0f32;
    let mut w = [0i8; QK];
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let (d, m) = unpack_scalar(dt, blk, &mut w);
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let s: i32 = w.iter().zip(xq).map(|(a, b)| *a as i32 * *b as i32).sum();
        acc += d * x.d[b] * s as f32 + m * x.s1.get(b).copied().unwrap_or(x.s[b]);
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// 16 bytes of nibbles → 32 bytes: low nibbles first, then high nibbles.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let t = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_srli_epi16(t, 4);
        _mm256_and_si256(_mm256_set_m128i(hi, t), _mm256_set1_epi8(0x0F))
    }

    /// 32 bits → 32 bytes, 0xFF where the bit is set (AVX2).
    #[inline(always)]
    unsafe fn bytes_from_bits(bits: u32) -> __m256i {
        let x = _mm256_set1_epi32(bits as i32);
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0x0000_0000_0000_0000,
        );
        let bytes = _mm256_or_si256(
            _mm256_shuffle_epi8(x, shuf),
            _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64),
        );
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    /// One block's weights as 32 bytes: unsigned codes for the offset formats (Q5_0: 0..31,
    /// Q4_0/Q4_1: 0..15), signed values for Q8_0.
    #[inline(always)]
    unsafe fn codes<const VNNI: bool, const F: u8>(blk: *const u8) -> __m256i {
        match F {
            F_Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
            F_Q5_0 => {
                let qh = (blk.add(2) as *const u32).read_unaligned();
                let hi = if VNNI {
                    _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10))
                } else {
                    _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10))
                };
                _mm256_or_si256(nibbles(blk.add(6)), hi)
            }
            F_Q4_0 => nibbles(blk.add(2)),
            _ => nibbles(blk.add(4)),
        }
    }

    /// Σ codes·x per 4-byte group, as 8 i32 lanes.
    #[inline(always)]
    unsafe fn dot<const VNNI: bool>(signed: bool, w: __m256i, x: __m256i) -> __m256i {
        let (a, b) = if signed {
            (_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
        } else {
            (w, x)
        };
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[inline(always)]
    unsafe fn half(p: *const u8) -> f32 {
        let v = _mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32);
        _mm_cvtss_f32(_mm_cvtph_ps(v))
    }

    /// `RW` weight rows times `RX` activation rows, each weight block unpacked once for all
    /// `RX` rows and each activation block shared by the `RW` weight rows. Decode uses it with
    /// one activation row, the prompt with up to four. `out[j * out_stride + r] = row_r · xs[j]`.
    #[inline(always)]
    unsafe fn tile<const RW: usize, const RX: usize, const VNNI: bool, const F: u8>(
        w: *const u8,
        row_bytes: usize,
        xs: &[QuantRow],
        out: &mut [f32],
        out_stride: usize,
    ) {
        let bb = match F {
            F_Q8_0 => 34,
            F_Q5_0 => 22,
            F_Q4_0 => 18,
            _ => 20,
        };
        let nb = row_bytes / bb;
        let signed = F == F_Q8_0;
        let bias = match F {
            F_Q5_0 => 16.0,
            F_Q4_0 => 8.0,
            _ => 0.0,
        };
        let mut acc = [[_mm256_setzero_ps(); RX]; RW];
        let mut off = [[0f32; RX]; RW];
        let mut xv = [_mm256_setzero_si256(); RX];
        let mut init = [_mm256_setzero_si256(); RX];
        let mut xd = [0f32; RX];
        let mut xsum = [0f32; RX];
        for b in 0..nb {
            // Each activation block once, shared by the RW weight rows.
            for j in 0..RX {
                let x = xs.get_unchecked(j);
                xv[j] = _mm256_loadu_si256(x.qs.as_ptr().add(b * QK) as *const __m256i);
                xd[j] = *x.d.get_unchecked(b);
                xsum[j] = if F == F_Q4_1 {
                    *x.s1.get_unchecked(b)
                } else {
                    *x.s.get_unchecked(b)
                };
                if VNNI && (F == F_Q5_0 || F == F_Q4_0) {
                    // Σ (code - bias)·x = dpbusd starting from -bias·(lane sums of x).
                    let l = _mm256_loadu_si256(x.neg_lanes.as_ptr().add(b) as *const __m256i);
                    init[j] = if F == F_Q5_0 {
                        _mm256_slli_epi32(l, 4)
                    } else {
                        _mm256_slli_epi32(l, 3)
                    };
                }
            }
            for r in 0..RW {
                let blk = w.add(r * row_bytes + b * bb);
                _mm_prefetch::<_MM_HINT_T0>(blk.add(PREFETCH) as *const i8);
                let d = half(blk);
                let c = codes::<VNNI, F>(blk);
                for j in 0..RX {
                    let p = if VNNI && (F == F_Q5_0 || F == F_Q4_0) {
                        _mm256_dpbusd_epi32(init[j], c, xv[j])
                    } else {
                        dot::<VNNI>(signed, c, xv[j])
                    };
                    acc[r][j] = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * xd[j]),
                        _mm256_cvtepi32_ps(p),
                        acc[r][j],
                    );
                    if F == F_Q4_1 {
                        off[r][j] += half(blk.add(2)) * xsum[j];
                    } else if !VNNI {
                        off[r][j] -= bias * d * xsum[j];
                    }
                }
            }
        }
        for r in 0..RW {
            for j in 0..RX {
                out[j * out_stride + r] = hsum(acc[r][j]) + off[r][j];
            }
        }
    }

    #[inline(always)]
    unsafe fn tiles<const VNNI: bool, const F: u8>(
        w: *const u8,
        row_bytes: usize,
        nw: usize,
        xs: &[QuantRow],
        out: &mut [f32],
        out_stride: usize,
    ) {
        let mut j = 0;
        while j < xs.len() {
            let rx = (xs.len() - j).min(4);
            let mut r = 0;
            while r < nw {
                let o = &mut out[j * out_stride + r..];
                let wp = w.add(r * row_bytes);
                let xj = &xs[j..];
                match (nw - r >= 2, rx) {
                    (true, 4) => tile::<2, 4, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (true, 3) => tile::<2, 3, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (true, 2) => tile::<2, 2, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (true, _) => tile::<2, 1, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (false, 4) => tile::<1, 4, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (false, 3) => tile::<1, 3, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (false, 2) => tile::<1, 2, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                    (false, _) => tile::<1, 1, VNNI, F>(wp, row_bytes, xj, o, out_stride),
                }
                r += if nw - r >= 2 { 2 } else { 1 };
            }
            j += rx;
        }
    }

    macro_rules! tiles_fn {
        ($name:ident, $feat:literal, $vnni:literal) => {
            /// `nw` consecutive weight rows times every row of `xs`:
            /// `out[j * out_stride + r] = row_r · xs[j]`.
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(
                dt: GgmlDType,
                w: &[u8],
                row_bytes: usize,
                nw: usize,
                xs: &[QuantRow],
                out: &mut [f32],
                out_stride: usize,
            ) {
                debug_assert!(w.len() >= nw * row_bytes);
                let p = w.as_ptr();
                match dt {
                    GgmlDType::Q4K | GgmlDType::Q6K => {
                        tiles_k::<$vnni>(dt, p, row_bytes, nw, xs, out, out_stride)
                    }
                    GgmlDType::Q8_0 => {
                        tiles::<$vnni, F_Q8_0>(p, row_bytes, nw, xs, out, out_stride)
                    }
                    GgmlDType::Q5_0 => {
                        tiles::<$vnni, F_Q5_0>(p, row_bytes, nw, xs, out, out_stride)
                    }
                    GgmlDType::Q4_0 => {
                        tiles::<$vnni, F_Q4_0>(p, row_bytes, nw, xs, out, out_stride)
                    }
                    _ => tiles::<$vnni, F_Q4_1>(p, row_bytes, nw, xs, out, out_stride),
                }
            }
        };
    }

    tiles_fn!(tiles_avx2, "avx2,fma,f16c", false);
    tiles_fn!(
        tiles_vnni,
        "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
        true
    );

    /// One K-quant weight row times `RX` activation rows: 256-value superblocks, the same
    /// arithmetic as [`super::dot_row_k_scalar`] (integer dot products per superblock, ggml's
    /// float steps); each superblock's codes are unpacked once for all `RX` rows.
    #[inline(always)]
    unsafe fn row_k<const VNNI: bool, const RX: usize>(
        dt: GgmlDType,
        row: *const u8,
        nsb: usize,
        xs: &[QuantRow],
        per64: bool,
    ) -> [f32; RX] {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = [0f32; RX];
        let mut accm = [0f32; RX];
        let mut acc6 = [_mm256_setzero_ps(); RX];
        for sb in 0..nsb {
            _mm_prefetch::<_MM_HINT_T0>(row.add(sb * block_bytes(dt) + PREFETCH) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(row.add(sb * block_bytes(dt) + PREFETCH + 64) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(row.add(sb * block_bytes(dt) + PREFETCH + 128) as *const i8);
            if dt == GgmlDType::Q4K {
                let blk = row.add(sb * 144);
                let d = half(blk);
                let dmin = half(blk.add(2));
                let scales = std::slice::from_raw_parts(blk.add(4), 12);
                let qs = blk.add(16);
                // Codes of the 8 sub-blocks of 32, their scales and mins.
                let mut codes = [_mm256_setzero_si256(); 8];
                let mut sc = [0i32; 8];
                let mut mn = [0i32; 8];
                for j in 0..4 {
                    let q = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                    codes[2 * j] = _mm256_and_si256(q, m4);
                    codes[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    let (s0, m0) = scale_min_k4(2 * j, scales);
                    let (s1, m1) = scale_min_k4(2 * j + 1, scales);
                    (sc[2 * j], sc[2 * j + 1]) = (s0 as i32, s1 as i32);
                    (mn[2 * j], mn[2 * j + 1]) = (m0 as i32, m1 as i32);
                }
                for (r, x) in xs.iter().enumerate().take(RX) {
                    let xq = x.qs.as_ptr().add(sb * 256);
                    let dx = *x.d.get_unchecked(sb * 8);
                    let s16 = x.sum16.as_ptr().add(sb * 16);
                    let mut isum = _mm256_setzero_si256();
                    let mut imin = 0i32;
                    for j in 0..4 {
                        let x0 = _mm256_loadu_si256(xq.add(64 * j) as *const __m256i);
                        let x1 = _mm256_loadu_si256(xq.add(64 * j + 32) as *const __m256i);
                        let p0 = _mm256_mullo_epi32(
                            dot::<VNNI>(false, codes[2 * j], x0),
                            _mm256_set1_epi32(sc[2 * j]),
                        );
                        let p1 = _mm256_mullo_epi32(
                            dot::<VNNI>(false, codes[2 * j + 1], x1),
                            _mm256_set1_epi32(sc[2 * j + 1]),
                        );
                        let m = mn[2 * j] * (*s16.add(4 * j) + *s16.add(4 * j + 1))
                            + mn[2 * j + 1] * (*s16.add(4 * j + 2) + *s16.add(4 * j + 3));
                        if per64 {
                            let i = hsum_i32(_mm256_add_epi32(p0, p1));
                            acc[r] = (i as f32).mul_add(d * dx, acc[r]);
                            accm[r] = (m as f32).mul_add(dmin * dx, accm[r]);
                        } else {
                            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
                            imin += m;
                        }
                    }
                    if !per64 {
                        acc[r] = (hsum_i32(isum) as f32).mul_add(d * dx, acc[r]);
                        accm[r] = (imin as f32).mul_add(dmin * dx, accm[r]);
                    }
                }
            } else {
                let blk = row.add(sb * 210);
                let d = half(blk.add(208));
                let sc = blk.add(192) as *const i8;
                // Unsigned 6-bit codes of the 8 groups of 32; the offset of 32 is taken off per
                // lane below. Group 4n+k has weight scales 8n+2k (first 16) and 8n+2k+1.
                let mut codes = [_mm256_setzero_si256(); 8];
                let mut scv = [_mm256_setzero_si256(); 8];
                for n in 0..2 {
                    let ql0 = _mm256_loadu_si256(blk.add(64 * n) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(blk.add(64 * n + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(blk.add(128 + 32 * n) as *const __m256i);
                    let h = |k: i32| -> __m256i {
                        let v = match k {
                            0 => qh,
                            2 => _mm256_srli_epi16(qh, 2),
                            4 => _mm256_srli_epi16(qh, 4),
                            _ => _mm256_srli_epi16(qh, 6),
                        };
                        _mm256_slli_epi16(_mm256_and_si256(v, m3), 4)
                    };
                    codes[4 * n] = _mm256_or_si256(_mm256_and_si256(ql0, m4), h(0));
                    codes[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), h(2));
                    codes[4 * n + 2] =
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h(4));
                    codes[4 * n + 3] =
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h(6));
                    for k in 0..4 {
                        let (a, b) = (
                            *sc.add(8 * n + 2 * k) as i32,
                            *sc.add(8 * n + 2 * k + 1) as i32,
                        );
                        scv[4 * n + k] = _mm256_setr_epi32(a, a, a, a, b, b, b, b);
                    }
                }
                for (r, x) in xs.iter().enumerate().take(RX) {
                    let xq = x.qs.as_ptr().add(sb * 256);
                    let dx = *x.d.get_unchecked(sb * 8);
                    let s16 = x.sum16.as_ptr().add(sb * 16);
                    let mut lanes = _mm256_setzero_si256();
                    for (g, c) in codes.iter().enumerate() {
                        let xv = _mm256_loadu_si256(xq.add(32 * g) as *const __m256i);
                        lanes = _mm256_add_epi32(
                            lanes,
                            _mm256_mullo_epi32(dot::<VNNI>(false, *c, xv), scv[g]),
                        );
                    }
                    let mut sub = [0i32; 8];
                    for (l, v) in sub.iter_mut().enumerate() {
                        *v = 32
                            * (*sc.add(2 * l) as i32 * *s16.add(2 * l)
                                + *sc.add(2 * l + 1) as i32 * *s16.add(2 * l + 1));
                    }
                    lanes =
                        _mm256_sub_epi32(lanes, _mm256_loadu_si256(sub.as_ptr() as *const __m256i));
                    acc6[r] =
                        _mm256_fmadd_ps(_mm256_set1_ps(dx * d), _mm256_cvtepi32_ps(lanes), acc6[r]);
                }
            }
        }
        let mut out = [0f32; RX];
        for r in 0..RX {
            out[r] = if dt == GgmlDType::Q4K {
                acc[r] - accm[r]
            } else {
                hsum(acc6[r])
            };
        }
        out
    }

    /// `nw` consecutive K-quant weight rows times every row of `xs`:
    /// `out[j * out_stride + r] = row_r · xs[j]`. Rows of `xs` come in groups of four
    /// (llama.cpp's `per64` rounding for Q4_K) and a tail of fewer.
    #[inline(always)]
    unsafe fn tiles_k<const VNNI: bool>(
        dt: GgmlDType,
        p: *const u8,
        row_bytes: usize,
        nw: usize,
        xs: &[QuantRow],
        out: &mut [f32],
        out_stride: usize,
    ) {
        let nsb = row_bytes / block_bytes(dt);
        let mut j = 0;
        while j < xs.len() {
            let rx = (xs.len() - j).min(4);
            for r in 0..nw {
                let wr = p.add(r * row_bytes);
                let xj = &xs[j..];
                let mut put = |v: &[f32]| {
                    for (i, v) in v.iter().enumerate() {
                        out[(j + i) * out_stride + r] = *v;
                    }
                };
                match rx {
                    4 => put(&row_k::<VNNI, 4>(dt, wr, nsb, xj, true)),
                    3 => put(&row_k::<VNNI, 3>(dt, wr, nsb, xj, false)),
                    2 => put(&row_k::<VNNI, 2>(dt, wr, nsb, xj, false)),
                    _ => put(&row_k::<VNNI, 1>(dt, wr, nsb, xj, false)),
                }
            }
            j += rx;
        }
    }

    /// Sum of 8 i32 lanes (exact).
    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    const F_Q8_0: u8 = 0;
    const F_Q5_0: u8 = 1;
    const F_Q4_0: u8 = 2;
    const F_Q4_1: u8 = 3;
    /// Bytes ahead of the current block to prefetch.
    const PREFETCH: usize = 4096;

    #[inline(always)]
    unsafe fn rows_all<const VNNI: bool, const F: u8>(
        p: *const u8,
        row_bytes: usize,
        x: &QuantRow,
        out: &mut [f32],
    ) {
        let n = out.len();
        let xs = std::slice::from_ref(x);
        let mut r = 0;
        while r + 4 <= n {
            tile::<4, 1, VNNI, F>(p.add(r * row_bytes), row_bytes, xs, &mut out[r..r + 4], n);
            r += 4;
        }
        while r < n {
            tile::<1, 1, VNNI, F>(p.add(r * row_bytes), row_bytes, xs, &mut out[r..r + 1], n);
            r += 1;
        }
    }

    macro_rules! rows_fn {
        ($name:ident, $feat:literal, $vnni:literal) => {
            /// Rows `w` (consecutive, `row_bytes` each) times `x` into `out`.
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(
                dt: GgmlDType,
                w: &[u8],
                row_bytes: usize,
                x: &QuantRow,
                out: &mut [f32],
                per64: bool,
            ) {
                let n = out.len();
                debug_assert!(w.len() >= n * row_bytes);
                debug_assert!(x.qs.len() / block_len(dt) * block_bytes(dt) >= row_bytes);
                let p = w.as_ptr();
                if block_len(dt) == 256 {
                    let nsb = row_bytes / block_bytes(dt);
                    for (r, y) in out.iter_mut().enumerate() {
                        *y = row_k::<$vnni, 1>(
                            dt,
                            p.add(r * row_bytes),
                            nsb,
                            std::slice::from_ref(x),
                            per64,
                        )[0];
                    }
                    return;
                }
                match dt {
                    GgmlDType::Q8_0 => rows_all::<$vnni, F_Q8_0>(p, row_bytes, x, out),
                    GgmlDType::Q5_0 => rows_all::<$vnni, F_Q5_0>(p, row_bytes, x, out),
                    GgmlDType::Q4_0 => rows_all::<$vnni, F_Q4_0>(p, row_bytes, x, out),
                    _ => rows_all::<$vnni, F_Q4_1>(p, row_bytes, x, out),
                }
            }
        };
    }

    rows_fn!(rows_avx2, "avx2,fma,f16c", false);
    rows_fn!(
        rows_vnni,
        "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
        true
    );
}

/// `out[i] = row_i · x` for consecutive rows of raw block bytes (`per64`: see
/// [`dot_row_k_scalar`]).
fn dot_rows(dt: GgmlDType, w: &[u8], row_bytes: usize, x: &QuantRow, out: &mut [f32], per64: bool) {
    assert!(
        w.len() >= out.len() * row_bytes
            && x.qs.len() / block_len(dt) * block_bytes(dt) >= row_bytes
    );
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` reports these only after run-time feature detection; the assert above
        // keeps every block read inside `w` and `x`.
        Isa::Avx512Vnni => unsafe { x86::rows_vnni(dt, w, row_bytes, x, out, per64) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::rows_avx2(dt, w, row_bytes, x, out, per64) },
        _ => {
            for (i, y) in out.iter_mut().enumerate() {
                *y = dot_row_scalar(dt, &w[i * row_bytes..(i + 1) * row_bytes], x, per64);
            }
        }
    }
}

/// The weight rows in `w` times every row of `xs` into `out` (`xs.len() × rows`), with each
/// weight block unpacked once for several rows (K-quants: the groups of four must line up with
/// the batch's, see `matvec`). False where there is no such kernel (CPUs without AVX2): the
/// caller then goes row by row.
fn dot_tile(dt: GgmlDType, w: &[u8], row_bytes: usize, xs: &[QuantRow], out: &mut [f32]) -> bool {
    let nw = w.len() / row_bytes;
    if out.len() != xs.len() * nw {
        return false;
    }
    for x in xs {
        assert!(x.qs.len() / block_len(dt) * block_bytes(dt) >= row_bytes);
    }
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were detected at run time; the asserts keep reads in bounds.
        Isa::Avx512Vnni => unsafe { x86::tiles_vnni(dt, w, row_bytes, nw, xs, out, nw) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::tiles_avx2(dt, w, row_bytes, nw, xs, out, nw) },
        _ => return false,
    }
    true
}

/// `y = W x` for `W` of `rows × cols` in `dt` (raw GGUF bytes) and each row of `xs` (`n × cols`).
/// Writes `n × rows` values into `out`. The rows of `xs` are one batch: llama.cpp multiplies
/// Q4_K weights with the rows of a batch in groups of four with different float steps than
/// the rest (`per64`), and this follows it so that the two agree on a prompt bit for bit.
pub fn matvec(dt: GgmlDType, w: &[u8], rows: usize, cols: usize, xs: &[f32], out: &mut [f32]) {
    let bb = block_bytes(dt);
    let row_bytes = cols / block_len(dt) * bb;
    debug_assert_eq!(w.len(), rows * row_bytes);
    let qx: Vec<QuantRow> = xs
        .chunks_exact(cols)
        .map(|x| QuantRow::quantize_for(dt, x))
        .collect();
    let threads = rayon::current_num_threads().max(1);
    let grouped = qx.len() - qx.len() % 4;
    let per64 = |i: usize| dt == GgmlDType::Q4K && i < grouped;
    if qx.len() == 1 {
        // Decode: one activation row, the weight rows split across the pool.
        // Enough chunks to balance, few enough that scheduling stays cheap.
        let chunk = rows.div_ceil(threads * 4).max(16).div_ceil(4) * 4;
        if threads == 1 || rows <= chunk {
            dot_rows(dt, w, row_bytes, &qx[0], out, per64(0));
            return;
        }
        out.par_chunks_mut(chunk).enumerate().for_each(|(c, dst)| {
            let r0 = c * chunk;
            dot_rows(dt, &w[r0 * row_bytes..], row_bytes, &qx[0], dst, per64(0));
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
                if !dot_tile(
                    dt,
                    &w[r0 * row_bytes..r1 * row_bytes],
                    row_bytes,
                    tile,
                    &mut part,
                ) {
                    for (i, x) in tile.iter().enumerate() {
                        let dst = &mut part[i * (r1 - r0)..(i + 1) * (r1 - r0)];
                        dot_rows(dt, &w[r0 * row_bytes..], row_bytes, x, dst, per64(t0 + i));
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Module, Tensor};

    fn check(dt: GgmlDType) {
        let (rows, cols) = (70, 512);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, dt).unwrap();
        let deq = q.dequantize(&Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.clone(), (1, cols), &Device::Cpu).unwrap();
        let want: Vec<f32> = xt
            .matmul(&deq.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let bytes = q.data().unwrap();
        let mut got = vec![0f32; rows];
        matvec(dt, &bytes, rows, cols, &x, &mut got);
        let scalar: Vec<f32> = (0..rows)
            .map(|r| {
                let rb = cols / block_len(dt) * block_bytes(dt);
                dot_row_scalar(
                    dt,
                    &bytes[r * rb..(r + 1) * rb],
                    &QuantRow::quantize_for(dt, &x),
                    false,
                )
            })
            .collect();
        for r in 0..rows {
            // 8-bit activations: relative error of a few per mille of the row's magnitude.
            let tol = 0.02 * (1.0 + want[r].abs());
            assert!(
                (got[r] - want[r]).abs() < tol,
                "{dt:?} row {r}: {} vs {}",
                got[r],
                want[r]
            );
            assert!(
                (got[r] - scalar[r]).abs() < 1e-3,
                "{dt:?} simd vs scalar row {r}"
            );
        }
        // Same as candle's own quantized matmul (which also quantizes activations to 8 bits).
        let qm = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        let c: Vec<f32> = qm
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for r in 0..rows {
            assert!(
                (got[r] - c[r]).abs() < 0.02 * (1.0 + c[r].abs()),
                "{dt:?} vs candle row {r}"
            );
        }
    }

    #[test]
    fn kernels_match_dequantized_reference() {
        // The K-quants (Q4_K, Q6_K) too: their SIMD path is separate code.
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            check(dt);
        }
    }

    /// A batch of rows goes through the tiled kernels; each output must be bit for bit what the
    /// row-at-a-time path gives (K-quants: what the scalar reference gives, with llama.cpp's
    /// per-64 steps for the rows in whole groups of four).
    #[test]
    fn batched_rows_equal_row_at_a_time_bit_for_bit() {
        let (rows, cols, n) = (40, 512, 7);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let xs: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0 + if i % 97 == 0 { 40.0 } else { 0.0 })
            .collect();
        let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let bytes = QTensor::quantize(&wt, dt).unwrap().data().unwrap().to_vec();
            let mut batched = vec![0f32; n * rows];
            matvec(dt, &bytes, rows, cols, &xs, &mut batched);
            let rb = cols / block_len(dt) * block_bytes(dt);
            for i in 0..n {
                let x = &xs[i * cols..(i + 1) * cols];
                let want: Vec<f32> = if block_len(dt) == 256 {
                    let qx = QuantRow::quantize_for(dt, x);
                    let per64 = dt == GgmlDType::Q4K && i < 4;
                    (0..rows)
                        .map(|r| dot_row_scalar(dt, &bytes[r * rb..(r + 1) * rb], &qx, per64))
                        .collect()
                } else {
                    let mut one = vec![0f32; rows];
                    matvec(dt, &bytes, rows, cols, x, &mut one);
                    one
                };
                assert_eq!(
                    &batched[i * rows..(i + 1) * rows],
                    &want[..],
                    "{dt:?} row {i}"
                );
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
