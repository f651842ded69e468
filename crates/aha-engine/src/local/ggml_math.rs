//! Arithmetic that rounds exactly as llama.cpp's CPU backend (ggml) does, for the operations
//! where a different (often more precise) rounding makes the two engines part at near-ties:
//! attention over an f16 cache with an f16 accumulator, and SwiGLU with ggml's vectorised `expf`.
//!
//! Each function states the order of operations it reproduces. They are written for clarity over
//! speed and used where agreement with llama.cpp matters more than the last few per cent of speed
//! (`AHA_NUMERICS=ggml`, [`crate::options::Numerics::Ggml`], see `Transformer::forward`).

#![allow(unsafe_code)]

use half::f16;

/// Rounds to the nearest f16 (ties to even) and back.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Dot product of two 64-wide f16 vectors (given as f32 holding f16 values) in the order of
/// ggml's AVX-512 `ggml_vec_dot_f16`: four 16-lane accumulators, each product exact in f32, the
/// accumulators folded pairwise (0+2, 1+3, then 0+1) and the 16 lanes reduced as 8+8, 4+4, 2+2,
/// 1+1. Other lengths: the same per 64, leftovers added one by one (in f64, as ggml does).
pub fn dot_f16(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len();
    let np = n & !63;
    let mut acc = [[0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, s) in a.iter_mut().enumerate() {
                let k = i + j * 16 + l;
                *s = x[k].mul_add(y[k], *s);
            }
        }
    }
    let mut t = [0f32; 16];
    for l in 0..16 {
        t[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let mut u = [0f32; 8];
    for i in 0..8 {
        u[i] = t[i + 8] + t[i];
    }
    let mut w = [0f32; 4];
    for i in 0..4 {
        w[i] = u[i + 4] + u[i];
    }
    let z0 = w[0] + w[2];
    let z1 = w[1] + w[3];
    let mut sum = (z0 + z1) as f64;
    for k in np..n {
        sum += (x[k] * y[k]) as f64;
    }
    sum as f32
}

/// Attention for `n` query rows at positions `pos..pos + n`, as ggml's CPU flash attention
/// computes it for fewer than 64 rows (`ggml_compute_forward_flash_attn_ext_f16_one_chunk`):
/// the query rounded to f16, scores `dot_f16(k, q) · scale` in f32, an online softmax in f32
/// with libm `expf`, and the weighted sum of values accumulated in an f16 vector (every
/// multiply-add rounded to f16), divided by the sum of weights at the end.
///
/// `q`: `(n, h, d)`; `k`, `v`: `(kvh, total, d)` holding f16 values; returns `(n, h·d)`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    pos: usize,
    h: usize,
    kvh: usize,
    d: usize,
    total: usize,
    scale: f32,
) -> Vec<f32> {
    let group = h / kvh;
    let mut out = vec![0f32; n * h * d];
    let mut qh = vec![0f32; d];
    let mut acc = vec![0f32; d];
    #[cfg(target_arch = "x86_64")]
    let simd = d.is_multiple_of(64)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c");
    for i in 0..n {
        for head in 0..h {
            let kv = head / group;
            for (a, b) in qh
                .iter_mut()
                .zip(&q[(i * h + head) * d..(i * h + head + 1) * d])
            {
                *a = round_f16(*b);
            }
            // Causal: row i sees the cache up to its own position.
            let seen = (pos + i).min(total - 1) + 1;
            let ks = &k[kv * total * d..(kv * total + seen) * d];
            let vs = &v[kv * total * d..(kv * total + seen) * d];
            #[cfg(target_arch = "x86_64")]
            let s_sum = if simd {
                // SAFETY: the features were detected above; slices hold `seen` rows of `d`.
                unsafe { x86::head(&qh, ks, vs, d, scale, &mut acc) }
            } else {
                head_scalar(&qh, ks, vs, d, scale, &mut acc)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let s_sum = head_scalar(&qh, ks, vs, d, scale, &mut acc);
            let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
            let o = &mut out[(i * h + head) * d..(i * h + head + 1) * d];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = a * inv;
            }
        }
    }
    out
}

/// One query row of one head over the keys and values it sees (rows of `d`): leaves the
/// unnormalised weighted sum of values (f16 values) in `acc`, returns the sum of weights.
fn head_scalar(q: &[f32], k: &[f32], v: &[f32], d: usize, scale: f32, acc: &mut [f32]) -> f32 {
    acc.fill(0.0);
    let (mut s_sum, mut m) = (0f32, f32::NEG_INFINITY);
    for (kr, vr) in k.chunks_exact(d).zip(v.chunks_exact(d)) {
        let s = dot_f16(kr, q) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            let old = m;
            m = s;
            ms = (old - m).exp();
            for a in acc.iter_mut() {
                *a = round_f16(*a * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        for (a, x) in acc.iter_mut().zip(vr) {
            *a = round_f16(x.mul_add(vs, *a));
        }
        s_sum = s_sum * ms + vs;
    }
    s_sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Rounds 8 lanes to f16 and back.
    #[inline(always)]
    unsafe fn r16(x: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
    }

    /// [`super::dot_f16`] for `d` a multiple of 64, each 16-lane accumulator as two 8-lane
    /// halves (lane-wise sums are the same), then the same folding.
    #[inline(always)]
    unsafe fn dot(x: *const f32, y: *const f32, d: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 8];
        for i in (0..d).step_by(64) {
            for (j, a) in acc.iter_mut().enumerate() {
                let o = i + j * 8;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(o)), _mm256_loadu_ps(y.add(o)), *a);
            }
        }
        // acc[2j], acc[2j+1]: lanes 0..8 and 8..16 of ggml's accumulator j.
        let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
        let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
        let u = _mm256_add_ps(hi, lo);
        let w = _mm_add_ps(_mm256_extractf128_ps(u, 1), _mm256_castps256_ps128(u));
        let z = _mm_add_ps(w, _mm_movehl_ps(w, w));
        _mm_cvtss_f32(_mm_add_ss(z, _mm_shuffle_ps(z, z, 1)))
    }

    /// [`super::head_scalar`] with 8-lane vectors (the same roundings, element by element).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn head(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        d: usize,
        scale: f32,
        acc: &mut [f32],
    ) -> f32 {
        acc.fill(0.0);
        let (mut s_sum, mut m) = (0f32, f32::NEG_INFINITY);
        let rows = k.len() / d;
        let a = acc.as_mut_ptr();
        for c in 0..rows {
            let s = dot(k.as_ptr().add(c * d), q.as_ptr(), d) * scale;
            let (mut ms, mut vs) = (1f32, 1f32);
            if s > m {
                let old = m;
                m = s;
                ms = (old - m).exp();
                let msv = _mm256_set1_ps(ms);
                for o in (0..d).step_by(8) {
                    _mm256_storeu_ps(a.add(o), r16(_mm256_mul_ps(_mm256_loadu_ps(a.add(o)), msv)));
                }
            } else {
                vs = (s - m).exp();
            }
            let vsv = _mm256_set1_ps(vs);
            let vr = v.as_ptr().add(c * d);
            for o in (0..d).step_by(8) {
                let y = _mm256_fmadd_ps(_mm256_loadu_ps(vr.add(o)), vsv, _mm256_loadu_ps(a.add(o)));
                _mm256_storeu_ps(a.add(o), r16(y));
            }
            s_sum = s_sum * ms + vs;
        }
        s_sum
    }
}

/// `e^x` as ggml's AVX-512 `ggml_v_expf` computes it: `x = n·ln2 + b` with `n` rounded to an
/// integer, a degree-5 polynomial in `b`, scaled by `2^n` (results beyond `2^±192` saturate).
pub fn expf(x: f32) -> f32 {
    // The constants, bit for bit (hex floats in ggml's source).
    let shift = f32::from_bits(0x4b40_0000); // 0x1.8p23: adding it rounds to an integer
    let log2e = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
    let ln2_hi = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
    let ln2_lo = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
    let c5 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7
    let c4 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
    let c3 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
    let c2 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
    let c1 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
    let z = x.mul_add(log2e, shift);
    let n = z - shift;
    let b = (-n).mul_add(ln2_lo, (-n).mul_add(ln2_hi, x));
    let u = b * b;
    let j = c5
        .mul_add(b, c4)
        .mul_add(u, c3.mul_add(b, c2))
        .mul_add(u, c1.mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // scalef: j · 2^n, rounded once.
    (j as f64 * 2f64.powi(n as i32)) as f32
}

/// `silu(g) · u` elementwise, as ggml's `ggml_vec_swiglu_f32` (AVX-512): `g / (1 + expf(-g))`.
pub fn swiglu(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(&g, &u)| g / (1.0 + expf(-g)) * u)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_the_true_exponential() {
        for i in -800..800 {
            let x = i as f32 / 10.0;
            let (a, b) = (expf(x), x.exp());
            assert!((a - b).abs() <= b * 4e-7, "expf({x}) = {a}, want {b}");
        }
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(200.0), f32::INFINITY);
    }

    #[test]
    fn dot_f16_sums_like_a_plain_dot_product() {
        let x: Vec<f32> = (0..130)
            .map(|i| round_f16((i as f32 * 0.37).sin()))
            .collect();
        let y: Vec<f32> = (0..130)
            .map(|i| round_f16((i as f32 * 0.11).cos()))
            .collect();
        let want: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!((dot_f16(&x, &y) as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn attention_weights_values_by_softmax_of_scores() {
        // One query against two keys: weights softmax([s0, s1]), output their mix of values.
        let (d, total) = (64, 2);
        let q: Vec<f32> = (0..d).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        let mut k = vec![0f32; total * d];
        k[0] = 1.0; // s0 = 1·scale
        k[d] = 3.0; // s1 = 3·scale
        let mut v = vec![0f32; total * d];
        v[0] = 1.0; // value 0 = e0
        v[d + 1] = 1.0; // value 1 = e1
        let out = attention(&q, &k, &v, 1, 1, 1, 1, d, total, 0.5);
        let (w0, w1) = (0.5f32.exp(), 1.5f32.exp());
        assert!((out[0] - w0 / (w0 + w1)).abs() < 1e-3, "{}", out[0]);
        assert!((out[1] - w1 / (w0 + w1)).abs() < 1e-3, "{}", out[1]);
        // A row at position 0 sees only the first key.
        let out = attention(&q, &k, &v, 1, 0, 1, 1, d, total, 0.5);
        assert_eq!((out[0], out[1]), (1.0, 0.0));
    }
}
