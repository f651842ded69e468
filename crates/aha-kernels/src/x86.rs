//! x86-64 SIMD paths of the quantized kernels: AVX2 (+FMA, F16C), AVX-VNNI and AVX-512 VNNI.
//! One body per kernel, generic over the level `V` (0: AVX2, 1: AVX-VNNI, 2: AVX-512 VNNI),
//! compiled three times with the matching target features. Each computes the integers and
//! float steps of the scalar reference in `quant.rs`, so every level gives the same bits.
#![allow(unsafe_code)]

use crate::quant::{scale_min_k4, Format, QuantRow, QK};
use crate::Kernels;
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
unsafe fn codes<const V: u8, const F: u8>(blk: *const u8) -> __m256i {
    match F {
        F_Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
        F_Q5_0 => {
            let qh = (blk.add(2) as *const u32).read_unaligned();
            let hi = if V == 2 {
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

/// Σ codes·x per 4-byte group, as 8 i32 lanes added to `init` (exact: no sum saturates).
/// `signed`: `w` holds signed bytes (Q8_0); otherwise unsigned codes below 64.
#[inline(always)]
unsafe fn dot<const V: u8>(init: __m256i, signed: bool, w: __m256i, x: __m256i) -> __m256i {
    let (a, b) = if signed {
        (_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
    } else {
        (w, x)
    };
    match V {
        2 => _mm256_dpbusd_epi32(init, a, b),
        1 => _mm256_dpbusd_avx_epi32(init, a, b),
        _ => _mm256_add_epi32(
            init,
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)),
        ),
    }
}

/// Σ codes·x per 4-byte group times a 16-bit scale per 16 bytes (`scales`: the scale of each
/// byte's half), as 8 i32 lanes. Codes are unsigned below 64, so the pair sums fit in 16 bits.
#[inline(always)]
unsafe fn dot_scaled(w: __m256i, x: __m256i, scales: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scales)
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
unsafe fn tile<const RW: usize, const RX: usize, const V: u8, const F: u8>(
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
            if F == F_Q4_1 {
                xsum[j] = *x.s1.get_unchecked(b);
            }
            if F == F_Q5_0 || F == F_Q4_0 {
                // Σ (code - bias)·x: the dot product starts from -bias·(lane sums of x).
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
            let c = codes::<V, F>(blk);
            for j in 0..RX {
                let p = dot::<V>(init[j], signed, c, xv[j]);
                acc[r][j] =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * xd[j]), _mm256_cvtepi32_ps(p), acc[r][j]);
                if F == F_Q4_1 {
                    off[r][j] += half(blk.add(2)) * xsum[j];
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
unsafe fn tiles32<const V: u8, const F: u8>(
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
                (true, 4) => tile::<2, 4, V, F>(wp, row_bytes, xj, o, out_stride),
                (true, 3) => tile::<2, 3, V, F>(wp, row_bytes, xj, o, out_stride),
                (true, 2) => tile::<2, 2, V, F>(wp, row_bytes, xj, o, out_stride),
                (true, _) => tile::<2, 1, V, F>(wp, row_bytes, xj, o, out_stride),
                (false, 4) => tile::<1, 4, V, F>(wp, row_bytes, xj, o, out_stride),
                (false, 3) => tile::<1, 3, V, F>(wp, row_bytes, xj, o, out_stride),
                (false, 2) => tile::<1, 2, V, F>(wp, row_bytes, xj, o, out_stride),
                (false, _) => tile::<1, 1, V, F>(wp, row_bytes, xj, o, out_stride),
            }
            r += if nw - r >= 2 { 2 } else { 1 };
        }
        j += rx;
    }
}

macro_rules! tiles_fn {
    ($name:ident, $feat:literal, $v:literal) => {
        /// `nw` consecutive weight rows times every row of `xs`:
        /// `out[j * out_stride + r] = row_r · xs[j]`.
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            dt: Format,
            w: &[u8],
            row_bytes: usize,
            nw: usize,
            xs: &[QuantRow],
            out: &mut [f32],
            out_stride: usize,
            group4: bool,
        ) {
            let p = w.as_ptr();
            match dt {
                Format::Q4K | Format::Q6K => {
                    tiles_k::<$v>(dt, p, row_bytes, nw, xs, out, out_stride, group4)
                }
                Format::Q8_0 => tiles32::<$v, F_Q8_0>(p, row_bytes, nw, xs, out, out_stride),
                Format::Q5_0 => tiles32::<$v, F_Q5_0>(p, row_bytes, nw, xs, out, out_stride),
                Format::Q4_0 => tiles32::<$v, F_Q4_0>(p, row_bytes, nw, xs, out, out_stride),
                Format::Q4_1 => tiles32::<$v, F_Q4_1>(p, row_bytes, nw, xs, out, out_stride),
            }
        }
    };
}

tiles_fn!(tiles_avx2, "avx2,fma,f16c", 0);
tiles_fn!(tiles_avxvnni, "avx2,fma,f16c,avxvnni", 1);
tiles_fn!(
    tiles_avx512vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
    2
);

/// [`super::quant::dot_tile`] on x86: `nw` weight rows times every row of `xs`; `group4`: Q4_K
/// rows in groups of four take the per-64 steps (a batch), else every row the decode steps.
///
/// # Safety
/// `k` must be available on this CPU, and `w` and every row of `xs` must hold `nw` rows of
/// `row_bytes` (the caller checks both).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tiles(
    k: Kernels,
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    nw: usize,
    xs: &[QuantRow],
    out: &mut [f32],
    out_stride: usize,
    group4: bool,
) {
    match k {
        Kernels::Avx512Vnni => tiles_avx512vnni(dt, w, row_bytes, nw, xs, out, out_stride, group4),
        Kernels::AvxVnni => tiles_avxvnni(dt, w, row_bytes, nw, xs, out, out_stride, group4),
        _ => tiles_avx2(dt, w, row_bytes, nw, xs, out, out_stride, group4),
    }
}

/// One K-quant weight row times `RX` activation rows: 256-value superblocks, the same
/// arithmetic as the scalar reference in `quant.rs` (integer dot products per superblock, ggml's
/// float steps); each superblock's codes are unpacked once for all `RX` rows.
#[inline(always)]
unsafe fn row_k<const V: u8, const RX: usize>(
    dt: Format,
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
        _mm_prefetch::<_MM_HINT_T0>(row.add(sb * dt.block_bytes() + PREFETCH) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(row.add(sb * dt.block_bytes() + PREFETCH + 64) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(row.add(sb * dt.block_bytes() + PREFETCH + 128) as *const i8);
        if dt == Format::Q4K {
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
                    let p0 = dot_scaled(codes[2 * j], x0, _mm256_set1_epi16(sc[2 * j] as i16));
                    let p1 = dot_scaled(
                        codes[2 * j + 1],
                        x1,
                        _mm256_set1_epi16(sc[2 * j + 1] as i16),
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
                    scv[4 * n + k] =
                        _mm256_set_m128i(_mm_set1_epi16(b as i16), _mm_set1_epi16(a as i16));
                }
            }
            for (r, x) in xs.iter().enumerate().take(RX) {
                let xq = x.qs.as_ptr().add(sb * 256);
                let dx = *x.d.get_unchecked(sb * 8);
                let s16 = x.sum16.as_ptr().add(sb * 16);
                let mut lanes = _mm256_setzero_si256();
                for (g, c) in codes.iter().enumerate() {
                    let xv = _mm256_loadu_si256(xq.add(32 * g) as *const __m256i);
                    lanes = _mm256_add_epi32(lanes, dot_scaled(*c, xv, scv[g]));
                }
                let mut sub = [0i32; 8];
                for (l, v) in sub.iter_mut().enumerate() {
                    *v = 32
                        * (*sc.add(2 * l) as i32 * *s16.add(2 * l)
                            + *sc.add(2 * l + 1) as i32 * *s16.add(2 * l + 1));
                }
                lanes = _mm256_sub_epi32(lanes, _mm256_loadu_si256(sub.as_ptr() as *const __m256i));
                acc6[r] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dx * d), _mm256_cvtepi32_ps(lanes), acc6[r]);
            }
        }
    }
    let mut out = [0f32; RX];
    for r in 0..RX {
        out[r] = if dt == Format::Q4K {
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
#[allow(clippy::too_many_arguments)]
unsafe fn tiles_k<const V: u8>(
    dt: Format,
    p: *const u8,
    row_bytes: usize,
    nw: usize,
    xs: &[QuantRow],
    out: &mut [f32],
    out_stride: usize,
    group4: bool,
) {
    let nsb = row_bytes / dt.block_bytes();
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
                4 => put(&row_k::<V, 4>(dt, wr, nsb, xj, group4)),
                3 => put(&row_k::<V, 3>(dt, wr, nsb, xj, false)),
                2 => put(&row_k::<V, 2>(dt, wr, nsb, xj, false)),
                _ => put(&row_k::<V, 1>(dt, wr, nsb, xj, false)),
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
unsafe fn rows_all<const V: u8, const F: u8>(
    p: *const u8,
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
) {
    let n = out.len();
    let xs = std::slice::from_ref(x);
    let mut r = 0;
    while r + 4 <= n {
        tile::<4, 1, V, F>(p.add(r * row_bytes), row_bytes, xs, &mut out[r..r + 4], n);
        r += 4;
    }
    while r < n {
        tile::<1, 1, V, F>(p.add(r * row_bytes), row_bytes, xs, &mut out[r..r + 1], n);
        r += 1;
    }
}

macro_rules! rows_fn {
    ($name:ident, $feat:literal, $v:literal) => {
        /// Rows `w` (consecutive, `row_bytes` each) times `x` into `out`.
        #[target_feature(enable = $feat)]
        unsafe fn $name(
            dt: Format,
            w: &[u8],
            row_bytes: usize,
            x: &QuantRow,
            out: &mut [f32],
            per64: bool,
        ) {
            let p = w.as_ptr();
            match dt {
                Format::Q4K | Format::Q6K => {
                    let nsb = row_bytes / dt.block_bytes();
                    let x = std::slice::from_ref(x);
                    for (r, y) in out.iter_mut().enumerate() {
                        *y = row_k::<$v, 1>(dt, p.add(r * row_bytes), nsb, x, per64)[0];
                    }
                }
                Format::Q8_0 => rows_all::<$v, F_Q8_0>(p, row_bytes, x, out),
                Format::Q5_0 => rows_all::<$v, F_Q5_0>(p, row_bytes, x, out),
                Format::Q4_0 => rows_all::<$v, F_Q4_0>(p, row_bytes, x, out),
                Format::Q4_1 => rows_all::<$v, F_Q4_1>(p, row_bytes, x, out),
            }
        }
    };
}

rows_fn!(rows_avx2, "avx2,fma,f16c", 0);
rows_fn!(rows_avxvnni, "avx2,fma,f16c,avxvnni", 1);
rows_fn!(
    rows_avx512vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni",
    2
);

/// [`super::quant::dot_rows`] on x86.
///
/// # Safety
/// `k` must be available on this CPU, and `w` must hold `out.len()` rows of `row_bytes` that
/// `x` covers (the caller checks both).
pub(crate) unsafe fn rows(
    k: Kernels,
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
    per64: bool,
) {
    match k {
        Kernels::Avx512Vnni => rows_avx512vnni(dt, w, row_bytes, x, out, per64),
        Kernels::AvxVnni => rows_avxvnni(dt, w, row_bytes, x, out, per64),
        _ => rows_avx2(dt, w, row_bytes, x, out, per64),
    }
}
