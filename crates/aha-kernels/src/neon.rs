//! aarch64 paths of the quantized kernels: plain NEON (every 64-bit ARM CPU) and NEON with the
//! dot-product extension (`sdot`: Apple M1 and later, Graviton 2+, Cortex-A76+). One body per
//! kernel, generic over `D` (whether `sdot` may be used), compiled twice with the matching
//! target features. Each computes the integers and float steps of the scalar reference in
//! `quant.rs` in the same order, so both give the reference's bits:
//!
//! - 32-value blocks: eight exact i32 lanes per block (lane `L` = `Σ w·x` over the values
//!   `4L..4L+4`) in two `int32x4_t`, lanes 0–3 from the first 16 bytes and 4–7 from the rest.
//!   `sdot` gives exactly these four-byte sums; plain NEON widens the products (`smull`) and adds
//!   neighbours (`saddlp`, `addp`). Then one fused multiply-add per lane by `d·dx`, and
//!   [`crate::quant::hsum8`]'s reduction order at the end.
//! - Q4_K: exact integer sums per superblock (their order is free), the float steps per 64 values
//!   or per superblock as the reference takes them.
//! - Q6_K: eight lanes, lane `L` the values `4L..4L+4` of every group of 32, each times its
//!   group's scale, minus the reference's `32·scale·sum(x)` of the 16-groups `2L, 2L+1`.
#![allow(unsafe_code)]

use crate::quant::{Format, QuantRow, QK};
use crate::Kernels;
use std::arch::aarch64::*;
use std::arch::asm;

const F_Q8_0: u8 = 0;
const F_Q5_0: u8 = 1;
const F_Q4_0: u8 = 2;
const F_Q4_1: u8 = 3;

/// `acc` plus `Σ a·b` over each group of 4 bytes, with the `sdot` instruction.
///
/// # Safety
/// The CPU must have the dot-product extension (only the `NeonDotprod` set calls it).
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: `sdot` reads and writes only these registers; the caller runs it only on CPUs
    // that were detected to have the dot-product extension (`vdotq_s32` is not stable yet).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `Σ a·b` over each group of 4 bytes, as four exact i32 lanes added to `acc`.
#[inline(always)]
unsafe fn dot4<const D: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if D {
        sdot(acc, a, b)
    } else {
        // Products in 16 bits (exact: |a·b| ≤ 2^14), neighbours added into 32 bits, then the
        // pairs of pairs: lanes 0-3 = bytes 0-3, 4-7, 8-11, 12-15.
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        let hi = vpaddlq_s16(vmull_high_s8(a, b));
        vaddq_s32(acc, vpaddq_s32(lo, hi))
    }
}

/// An f16 at `p` (any alignment) as f32, exactly.
#[inline(always)]
unsafe fn half(p: *const u8) -> f32 {
    let h = vdup_n_u16((p as *const u16).read_unaligned());
    let f: f32;
    // SAFETY: `fcvt` from half to single precision is base ARMv8 floating point; it touches
    // only these registers. The conversion is exact.
    unsafe {
        asm!(
            "fcvt {f:s}, {h:h}",
            f = lateout(vreg) f,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    f
}

/// [`crate::quant::hsum8`] of the lanes `lo` (0–3) and `hi` (4–7), in its order.
#[inline(always)]
unsafe fn hsum8(lo: float32x4_t, hi: float32x4_t) -> f32 {
    let h = vaddq_f32(lo, hi);
    let s = vadd_f32(vget_low_f32(h), vget_high_f32(h));
    vget_lane_f32::<0>(s) + vget_lane_f32::<1>(s)
}

/// Bit masks 1, 2, 4 .. 128, twice: byte `j` of a Q5_0 block takes bit `j mod 8` of byte
/// `j / 8` of its 32 high bits.
const BIT: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
/// Which byte of the high bits each of the first (`0, 1`) and last (`2, 3`) 16 values reads.
const HI_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
const HI_HI: [u8; 16] = [2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3];

/// One block's 32 weights as signed bytes (Q5_0 and Q4_0 with their offset taken off, Q4_1's
/// codes 0..15): values 0–15, then 16–31.
#[inline(always)]
unsafe fn weights<const F: u8>(blk: *const u8) -> (int8x16_t, int8x16_t) {
    match F {
        F_Q8_0 => (
            vld1q_s8(blk.add(2) as *const i8),
            vld1q_s8(blk.add(18) as *const i8),
        ),
        F_Q5_0 => {
            let qh = (blk.add(2) as *const u32).read_unaligned();
            let q = vld1q_u8(blk.add(6));
            let bits = vreinterpretq_u8_u32(vdupq_n_u32(qh));
            let mask = vld1q_u8(BIT.as_ptr());
            let set0 = vtstq_u8(vqtbl1q_u8(bits, vld1q_u8(HI_LO.as_ptr())), mask);
            let set1 = vtstq_u8(vqtbl1q_u8(bits, vld1q_u8(HI_HI.as_ptr())), mask);
            // code - 16 = nibble - (16 where the high bit is clear).
            let c16 = vdupq_n_u8(16);
            let w0 = vsubq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), vbicq_u8(c16, set0));
            let w1 = vsubq_u8(vshrq_n_u8::<4>(q), vbicq_u8(c16, set1));
            (vreinterpretq_s8_u8(w0), vreinterpretq_s8_u8(w1))
        }
        F_Q4_0 => {
            let q = vld1q_u8(blk.add(2));
            let c8 = vdupq_n_u8(8);
            (
                vreinterpretq_s8_u8(vsubq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), c8)),
                vreinterpretq_s8_u8(vsubq_u8(vshrq_n_u8::<4>(q), c8)),
            )
        }
        _ => {
            let q = vld1q_u8(blk.add(4));
            (
                vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))),
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(q)),
            )
        }
    }
}

/// `RW` consecutive weight rows (32-value blocks) times `x`: `out[r] = row_r · x`. Each
/// activation block is loaded once for the `RW` rows, whose sums run side by side.
#[inline(always)]
unsafe fn tile32<const RW: usize, const D: bool, const F: u8>(
    w: *const u8,
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
) {
    let bb = match F {
        F_Q8_0 => 34,
        F_Q5_0 => 22,
        F_Q4_0 => 18,
        _ => 20,
    };
    let nb = row_bytes / bb;
    let zero = vdupq_n_s32(0);
    let mut acc = [[vdupq_n_f32(0.0); 2]; RW];
    let mut off = [0f32; RW];
    for b in 0..nb {
        let xq = x.qs.as_ptr().add(b * QK);
        let (x0, x1) = (vld1q_s8(xq), vld1q_s8(xq.add(16)));
        let xd = *x.d.get_unchecked(b);
        for r in 0..RW {
            let blk = w.add(r * row_bytes + b * bb);
            let (w0, w1) = weights::<F>(blk);
            let l0 = dot4::<D>(zero, w0, x0);
            let l1 = dot4::<D>(zero, w1, x1);
            let dd = vdupq_n_f32(half(blk) * xd);
            acc[r][0] = vfmaq_f32(acc[r][0], vcvtq_f32_s32(l0), dd);
            acc[r][1] = vfmaq_f32(acc[r][1], vcvtq_f32_s32(l1), dd);
            if F == F_Q4_1 {
                off[r] += half(blk.add(2)) * *x.s1.get_unchecked(b);
            }
        }
    }
    for r in 0..RW {
        out[r] = hsum8(acc[r][0], acc[r][1]) + off[r];
    }
}

#[inline(always)]
unsafe fn rows32<const D: bool, const F: u8>(
    p: *const u8,
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
) {
    let n = out.len();
    let mut r = 0;
    while r + 4 <= n {
        tile32::<4, D, F>(p.add(r * row_bytes), row_bytes, x, &mut out[r..r + 4]);
        r += 4;
    }
    while r < n {
        tile32::<1, D, F>(p.add(r * row_bytes), row_bytes, x, &mut out[r..r + 1]);
        r += 1;
    }
}

/// `Σ a·b` over 32 bytes of Q4_K (`a`: codes 0..15), as four i32 lanes in some arrangement:
/// only their total counts.
#[inline(always)]
unsafe fn dot_q4<const D: bool>(
    a0: int8x16_t,
    b0: int8x16_t,
    a1: int8x16_t,
    b1: int8x16_t,
) -> int32x4_t {
    if D {
        sdot(sdot(vdupq_n_s32(0), a0, b0), a1, b1)
    } else {
        // Four products per 16-bit lane: |Σ| ≤ 4·15·128 < 2^15, exact.
        let p = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
        let p = vmlal_high_s8(p, a0, b0);
        let p = vmlal_s8(p, vget_low_s8(a1), vget_low_s8(b1));
        let p = vmlal_high_s8(p, a1, b1);
        vpaddlq_s16(p)
    }
}

/// Q4_K's eight 6-bit scales and eight mins (`scale_min_k4` for `j` = 0..8) as bytes, unpacked
/// from the 12 packed bytes at `q` four at a time.
#[inline(always)]
unsafe fn scales_mins_k4(q: *const u8) -> (uint8x8_t, uint8x8_t) {
    let word = |i: usize| (q.add(4 * i) as *const u32).read_unaligned();
    let (a, b, c) = (word(0), word(1), word(2));
    // j < 4: the low 6 bits of bytes j (scales) and j + 4 (mins).
    let (sc_lo, mn_lo) = (a & 0x3F3F_3F3F, b & 0x3F3F_3F3F);
    // j ≥ 4: a nibble of byte j + 4, with the top 2 bits of byte j - 4 (scales) or j (mins)
    // above it.
    let sc_hi = (c & 0x0F0F_0F0F) | ((a >> 6) & 0x0303_0303) << 4;
    let mn_hi = ((c >> 4) & 0x0F0F_0F0F) | ((b >> 6) & 0x0303_0303) << 4;
    (
        vcreate_u8(sc_lo as u64 | (sc_hi as u64) << 32),
        vcreate_u8(mn_lo as u64 | (mn_hi as u64) << 32),
    )
}

/// Bytes 0..8 widened to two i32 vectors (bytes 0–3, 4–7).
#[inline(always)]
unsafe fn widen8(v: uint8x8_t) -> (int32x4_t, int32x4_t) {
    let w = vmovl_u8(v);
    (
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))),
        vreinterpretq_s32_u32(vmovl_high_u16(w)),
    )
}

/// One Q4_K row (`nsb` superblocks) times `x`, as `dot_row_k_scalar` computes it.
#[inline(always)]
unsafe fn row_q4k<const D: bool>(row: *const u8, nsb: usize, x: &QuantRow, per64: bool) -> f32 {
    let m4 = vdupq_n_u8(0x0F);
    let (mut acc, mut accm) = (0f32, 0f32);
    for sb in 0..nsb {
        let blk = row.add(sb * 144);
        let (d, dmin) = (half(blk), half(blk.add(2)));
        let (sc8, mn8) = scales_mins_k4(blk.add(4));
        let (sc_lo, sc_hi) = widen8(sc8);
        let (mn_lo, mn_hi) = widen8(mn8);
        let qs = blk.add(16);
        let xq = x.qs.as_ptr().add(sb * 256);
        let dx = *x.d.get_unchecked(sb * 8);
        // Σ codes·x of the eight sub-blocks of 32 (sub-block 2j: the low nibbles of bytes
        // 32j..32j+32, 2j+1: their high nibbles), reduced to one sum per sub-block.
        let mut p = [vdupq_n_s32(0); 8];
        for j in 0..4 {
            let q0 = vld1q_u8(qs.add(32 * j));
            let q1 = vld1q_u8(qs.add(32 * j + 16));
            let lo0 = vreinterpretq_s8_u8(vandq_u8(q0, m4));
            let lo1 = vreinterpretq_s8_u8(vandq_u8(q1, m4));
            let hi0 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q0));
            let hi1 = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q1));
            let xj = xq.add(64 * j);
            p[2 * j] = dot_q4::<D>(lo0, vld1q_s8(xj), lo1, vld1q_s8(xj.add(16)));
            p[2 * j + 1] = dot_q4::<D>(hi0, vld1q_s8(xj.add(32)), hi1, vld1q_s8(xj.add(48)));
        }
        let s_lo = vpaddq_s32(vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3]));
        let s_hi = vpaddq_s32(vpaddq_s32(p[4], p[5]), vpaddq_s32(p[6], p[7]));
        let (i_lo, i_hi) = (vmulq_s32(s_lo, sc_lo), vmulq_s32(s_hi, sc_hi));
        // The mins: mn[k]·(sum of x over sub-block k), from the sums of its two 16-groups.
        let s16 = x.sum16.as_ptr().add(sb * 16);
        let pair_lo = vpaddq_s32(vld1q_s32(s16), vld1q_s32(s16.add(4)));
        let pair_hi = vpaddq_s32(vld1q_s32(s16.add(8)), vld1q_s32(s16.add(12)));
        let (m_lo, m_hi) = (vmulq_s32(pair_lo, mn_lo), vmulq_s32(pair_hi, mn_hi));
        if per64 {
            // Per 64 values j (sub-blocks 2j, 2j+1): the integer sums, then the float steps
            // in order of j.
            let i = vcvtq_f32_s32(vpaddq_s32(i_lo, i_hi));
            let m = vcvtq_f32_s32(vpaddq_s32(m_lo, m_hi));
            let (dd, dm) = (d * dx, dmin * dx);
            acc = vgetq_lane_f32::<0>(i).mul_add(dd, acc);
            accm = vgetq_lane_f32::<0>(m).mul_add(dm, accm);
            acc = vgetq_lane_f32::<1>(i).mul_add(dd, acc);
            accm = vgetq_lane_f32::<1>(m).mul_add(dm, accm);
            acc = vgetq_lane_f32::<2>(i).mul_add(dd, acc);
            accm = vgetq_lane_f32::<2>(m).mul_add(dm, accm);
            acc = vgetq_lane_f32::<3>(i).mul_add(dd, acc);
            accm = vgetq_lane_f32::<3>(m).mul_add(dm, accm);
        } else {
            let i = vaddvq_s32(vaddq_s32(i_lo, i_hi));
            let m = vaddvq_s32(vaddq_s32(m_lo, m_hi));
            acc = (i as f32).mul_add(d * dx, acc);
            accm = (m as f32).mul_add(dmin * dx, accm);
        }
    }
    acc - accm
}

/// Lanes of one Q6_K group of 32 (`c`: codes 0..63, `x`: activations), the weight scale of
/// bytes 0–15 and of bytes 16–31 taken from lanes `A16`, `B16` of `sc16` (plain NEON) or
/// `A32`, `B32` of `sc32` (`sdot`): `lo += scale·(4-byte sums of bytes 0–15)`, `hi` likewise
/// for bytes 16–31.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn group_q6<
    const D: bool,
    const A16: i32,
    const B16: i32,
    const A32: i32,
    const B32: i32,
>(
    lo: &mut int32x4_t,
    hi: &mut int32x4_t,
    c0: uint8x16_t,
    c1: uint8x16_t,
    x: *const i8,
    sc16: int16x8_t,
    sc32: int32x4_t,
) {
    let (c0, c1) = (vreinterpretq_s8_u8(c0), vreinterpretq_s8_u8(c1));
    let (x0, x1) = (vld1q_s8(x), vld1q_s8(x.add(16)));
    if D {
        let zero = vdupq_n_s32(0);
        *lo = vmlaq_laneq_s32::<A32>(*lo, sdot(zero, c0, x0), sc32);
        *hi = vmlaq_laneq_s32::<B32>(*hi, sdot(zero, c1, x1), sc32);
    } else {
        // Sums of 4 products fit 16 bits (|Σ| ≤ 4·63·128 < 2^15), so they are added there.
        let p0 = vpaddq_s16(
            vmull_s8(vget_low_s8(c0), vget_low_s8(x0)),
            vmull_high_s8(c0, x0),
        );
        let p1 = vpaddq_s16(
            vmull_s8(vget_low_s8(c1), vget_low_s8(x1)),
            vmull_high_s8(c1, x1),
        );
        let q = vpaddq_s16(p0, p1);
        *lo = vmlal_laneq_s16::<A16>(*lo, vget_low_s16(q), sc16);
        *hi = vmlal_high_laneq_s16::<B16>(*hi, q, sc16);
    }
}

/// One Q6_K row (`nsb` superblocks) times `x`, as `dot_row_k_scalar` computes it.
#[inline(always)]
unsafe fn row_q6k<const D: bool>(row: *const u8, nsb: usize, x: &QuantRow) -> f32 {
    let m3 = vdupq_n_u8(3);
    let m30 = vdupq_n_u8(0x30);
    let (mut acc_lo, mut acc_hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for sb in 0..nsb {
        let blk = row.add(sb * 210);
        let xq = x.qs.as_ptr().add(sb * 256);
        // The 16 scales, as i16 (8 per vector) and as i32 (4 per vector).
        let scv = vld1q_s8(blk.add(192) as *const i8);
        let sc16 = [vmovl_s8(vget_low_s8(scv)), vmovl_high_s8(scv)];
        let sc32 = [
            vmovl_s16(vget_low_s16(sc16[0])),
            vmovl_high_s16(sc16[0]),
            vmovl_s16(vget_low_s16(sc16[1])),
            vmovl_high_s16(sc16[1]),
        ];
        let (mut lo, mut hi) = (vdupq_n_s32(0), vdupq_n_s32(0));
        for n in 0..2 {
            let (a0, a1) = (vld1q_u8(blk.add(64 * n)), vld1q_u8(blk.add(64 * n + 16)));
            let (b0, b1) = (
                vld1q_u8(blk.add(64 * n + 32)),
                vld1q_u8(blk.add(64 * n + 48)),
            );
            let (h0, h1) = (
                vld1q_u8(blk.add(128 + 32 * n)),
                vld1q_u8(blk.add(144 + 32 * n)),
            );
            // The 6-bit codes of group 4n+k (bytes 0-15, 16-31): low nibbles from `a` (k = 0, 2)
            // or `b` (1, 3), two high bits from `h` (`sli` keeps the destination's low nibble
            // and puts bits 4-5 above it). Group 4n+k has the scales 8n+2k and 8n+2k+1.
            let (h0s, h1s) = (vshrq_n_u8::<2>(h0), vshrq_n_u8::<2>(h1));
            let xg = |k: usize| xq.add(128 * n + 32 * k);
            let (s16, s32a, s32b) = (sc16[n], sc32[2 * n], sc32[2 * n + 1]);
            group_q6::<D, 0, 1, 0, 1>(
                &mut lo,
                &mut hi,
                vsliq_n_u8::<4>(a0, vandq_u8(h0, m3)),
                vsliq_n_u8::<4>(a1, vandq_u8(h1, m3)),
                xg(0),
                s16,
                s32a,
            );
            group_q6::<D, 2, 3, 2, 3>(
                &mut lo,
                &mut hi,
                vsliq_n_u8::<4>(b0, vandq_u8(h0s, m3)),
                vsliq_n_u8::<4>(b1, vandq_u8(h1s, m3)),
                xg(1),
                s16,
                s32a,
            );
            group_q6::<D, 4, 5, 0, 1>(
                &mut lo,
                &mut hi,
                vorrq_u8(vshrq_n_u8::<4>(a0), vandq_u8(h0, m30)),
                vorrq_u8(vshrq_n_u8::<4>(a1), vandq_u8(h1, m30)),
                xg(2),
                s16,
                s32b,
            );
            group_q6::<D, 6, 7, 2, 3>(
                &mut lo,
                &mut hi,
                vorrq_u8(vshrq_n_u8::<4>(b0), vandq_u8(h0s, m30)),
                vorrq_u8(vshrq_n_u8::<4>(b1), vandq_u8(h1s, m30)),
                xg(3),
                s16,
                s32b,
            );
        }
        // Lane L less 32·(sc[2L]·sum16[2L] + sc[2L+1]·sum16[2L+1]).
        let s16 = x.sum16.as_ptr().add(sb * 16);
        let p: [int32x4_t; 4] =
            std::array::from_fn(|i| vmulq_s32(sc32[i], vld1q_s32(s16.add(4 * i))));
        lo = vsubq_s32(lo, vshlq_n_s32::<5>(vpaddq_s32(p[0], p[1])));
        hi = vsubq_s32(hi, vshlq_n_s32::<5>(vpaddq_s32(p[2], p[3])));
        let d = vdupq_n_f32(*x.d.get_unchecked(sb * 8) * half(blk.add(208)));
        acc_lo = vfmaq_f32(acc_lo, vcvtq_f32_s32(lo), d);
        acc_hi = vfmaq_f32(acc_hi, vcvtq_f32_s32(hi), d);
    }
    hsum8(acc_lo, acc_hi)
}

/// Rows `w` (consecutive, `row_bytes` each) times `x` into `out`, with `sdot` if `D`.
#[inline(always)]
unsafe fn rows_impl<const D: bool>(
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
    per64: bool,
) {
    let p = w.as_ptr();
    let nsb = row_bytes / dt.block_bytes();
    match dt {
        Format::Q4K => {
            for (r, y) in out.iter_mut().enumerate() {
                *y = row_q4k::<D>(p.add(r * row_bytes), nsb, x, per64);
            }
        }
        Format::Q6K => {
            for (r, y) in out.iter_mut().enumerate() {
                *y = row_q6k::<D>(p.add(r * row_bytes), nsb, x);
            }
        }
        Format::Q8_0 => rows32::<D, F_Q8_0>(p, row_bytes, x, out),
        Format::Q5_0 => rows32::<D, F_Q5_0>(p, row_bytes, x, out),
        Format::Q4_0 => rows32::<D, F_Q4_0>(p, row_bytes, x, out),
        Format::Q4_1 => rows32::<D, F_Q4_1>(p, row_bytes, x, out),
    }
}

/// Plain NEON.
#[target_feature(enable = "neon")]
unsafe fn rows_neon(
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
    per64: bool,
) {
    rows_impl::<false>(dt, w, row_bytes, x, out, per64)
}

/// NEON with `sdot`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_dotprod(
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
    per64: bool,
) {
    rows_impl::<true>(dt, w, row_bytes, x, out, per64)
}

/// [`super::quant::dot_rows`] on aarch64.
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
    // SAFETY: the caller checked that `k` runs on this CPU and that every read is in bounds.
    unsafe {
        match k {
            Kernels::NeonDotprod => rows_dotprod(dt, w, row_bytes, x, out, per64),
            _ => rows_neon(dt, w, row_bytes, x, out, per64),
        }
    }
}
