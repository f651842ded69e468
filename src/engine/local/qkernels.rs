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
        GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4_0 | GgmlDType::Q4_1
    )
}

/// Bytes per block of 32 weights.
fn block_bytes(dt: GgmlDType) -> usize {
    match dt {
        GgmlDType::Q8_0 => 34,
        GgmlDType::Q5_0 => 22,
        GgmlDType::Q4_0 => 18,
        GgmlDType::Q4_1 => 20,
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
}

impl QuantRow {
    /// Quantizes `x` (its length a multiple of 32).
    pub fn quantize(x: &[f32]) -> Self {
        let nb = x.len() / QK;
        let mut qs = vec![0i8; nb * QK];
        let mut d = vec![0f32; nb];
        let mut s = vec![0f32; nb];
        for b in 0..nb {
            let xs = &x[b * QK..(b + 1) * QK];
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in qs[b * QK..(b + 1) * QK].iter_mut().zip(xs) {
                let r = (v * inv).round().clamp(-127.0, 127.0) as i8;
                *q = r;
                sum += r as i32;
            }
            d[b] = scale;
            s[b] = scale * sum as f32;
        }
        Self { qs, d, s }
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

/// The kernel set in use, for reports.
pub fn isa_name() -> &'static str {
    match isa() {
        Isa::Avx512Vnni => "avx512-vnni",
        Isa::Avx2 => "avx2",
        Isa::Scalar => "scalar",
    }
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

fn dot_row_scalar(dt: GgmlDType, row: &[u8], x: &QuantRow) -> f32 {
    let bb = block_bytes(dt);
    let mut acc = 0f32;
    let mut w = [0i8; QK];
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let (d, m) = unpack_scalar(dt, blk, &mut w);
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let s: i32 = w.iter().zip(xq).map(|(a, b)| *a as i32 * *b as i32).sum();
        acc += d * x.d[b] * s as f32 + m * x.s[b];
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
    unsafe fn codes<const VNNI: bool>(dt: GgmlDType, blk: *const u8) -> __m256i {
        match dt {
            GgmlDType::Q8_0 => _mm256_loadu_si256(blk.add(2) as *const __m256i),
            GgmlDType::Q5_0 => {
                let qh = (blk.add(2) as *const u32).read_unaligned();
                let hi = if VNNI {
                    _mm256_maskz_mov_epi8(qh, _mm256_set1_epi8(0x10))
                } else {
                    _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10))
                };
                _mm256_or_si256(nibbles(blk.add(6)), hi)
            }
            GgmlDType::Q4_0 => nibbles(blk.add(2)),
            GgmlDType::Q4_1 => nibbles(blk.add(4)),
            _ => _mm256_setzero_si256(),
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

    /// `R` rows at once (sharing each activation block), `out[r] = row_r · x`.
    #[inline(always)]
    unsafe fn rows<const R: usize, const VNNI: bool>(
        dt: GgmlDType,
        w: *const u8,
        row_bytes: usize,
        x: &QuantRow,
        out: &mut [f32],
    ) {
        let bb = block_bytes(dt);
        let nb = row_bytes / bb;
        let signed = dt == GgmlDType::Q8_0;
        // The constant subtracted from every code (Q4_1 has a per-block offset instead).
        let bias = match dt {
            GgmlDType::Q5_0 => 16.0,
            GgmlDType::Q4_0 => 8.0,
            _ => 0.0,
        };
        let mut acc = [_mm256_setzero_ps(); R];
        let mut off = [0f32; R];
        let xq = x.qs.as_ptr();
        for b in 0..nb {
            let xv = _mm256_loadu_si256(xq.add(b * QK) as *const __m256i);
            let xd = *x.d.get_unchecked(b);
            let xs = *x.s.get_unchecked(b);
            for r in 0..R {
                let blk = w.add(r * row_bytes + b * bb);
                let d = half(blk);
                let p = dot::<VNNI>(signed, codes::<VNNI>(dt, blk), xv);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xd), _mm256_cvtepi32_ps(p), acc[r]);
                if dt == GgmlDType::Q4_1 {
                    off[r] += half(blk.add(2)) * xs;
                } else {
                    off[r] -= bias * d * xs;
                }
            }
        }
        for r in 0..R {
            out[r] = hsum(acc[r]) + off[r];
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
            ) {
                let n = out.len();
                debug_assert!(w.len() >= n * row_bytes);
                debug_assert!(x.qs.len() * block_bytes(dt) >= row_bytes * QK);
                let p = w.as_ptr();
                let mut r = 0;
                while r + 4 <= n {
                    rows::<4, $vnni>(dt, p.add(r * row_bytes), row_bytes, x, &mut out[r..r + 4]);
                    r += 4;
                }
                while r < n {
                    rows::<1, $vnni>(dt, p.add(r * row_bytes), row_bytes, x, &mut out[r..r + 1]);
                    r += 1;
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

/// `out[i] = row_i · x` for consecutive rows of raw block bytes.
fn dot_rows(dt: GgmlDType, w: &[u8], row_bytes: usize, x: &QuantRow, out: &mut [f32]) {
    assert!(w.len() >= out.len() * row_bytes && x.qs.len() / QK * block_bytes(dt) >= row_bytes);
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` reports these only after run-time feature detection; the assert above
        // keeps every block read inside `w` and `x`.
        Isa::Avx512Vnni => unsafe { x86::rows_vnni(dt, w, row_bytes, x, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::rows_avx2(dt, w, row_bytes, x, out) },
        _ => {
            for (i, y) in out.iter_mut().enumerate() {
                *y = dot_row_scalar(dt, &w[i * row_bytes..(i + 1) * row_bytes], x);
            }
        }
    }
}

/// `y = W x` for `W` of `rows × cols` in `dt` (raw GGUF bytes) and each row of `xs` (`n × cols`).
/// Writes `n × rows` values into `out`.
pub fn matvec(dt: GgmlDType, w: &[u8], rows: usize, cols: usize, xs: &[f32], out: &mut [f32]) {
    let bb = block_bytes(dt);
    let row_bytes = cols / QK * bb;
    let n = xs.len() / cols;
    debug_assert_eq!(w.len(), rows * row_bytes);
    let qx: Vec<QuantRow> = xs.chunks_exact(cols).map(QuantRow::quantize).collect();
    let threads = rayon::current_num_threads().max(1);
    // Enough chunks to balance, few enough that scheduling stays cheap.
    let chunk = (rows.div_ceil(threads * 4).max(16) + 3) / 4 * 4;
    for (i, x) in qx.iter().enumerate().take(n) {
        let o = &mut out[i * rows..(i + 1) * rows];
        if threads == 1 || rows <= chunk {
            dot_rows(dt, w, row_bytes, x, o);
            continue;
        }
        o.par_chunks_mut(chunk).enumerate().for_each(|(c, dst)| {
            let r0 = c * chunk;
            dot_rows(dt, &w[r0 * row_bytes..], row_bytes, x, dst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Module, Tensor};

    fn check(dt: GgmlDType) {
        let (rows, cols) = (70, 96);
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
                let rb = cols / QK * block_bytes(dt);
                dot_row_scalar(dt, &bytes[r * rb..(r + 1) * rb], &QuantRow::quantize(&x))
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
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
        ] {
            check(dt);
        }
    }
}
