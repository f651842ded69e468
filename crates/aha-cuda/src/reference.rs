//! The CPU reference of every decode kernel in kernels/decode.cu: the same results by the
//! plainest route (whole rows dequantized, sums in f64), against which the kernels are checked,
//! on the CUDA emulation in the unit tests and on a GPU by `aha cuda-check`. `round` rounds each
//! stored activation to bf16 where the kernels do.

use crate::{CacheType, WFormat};

/// `v` rounded to bf16 (to nearest, ties to even).
pub fn round_bf16(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

fn r(v: f32, round: bool) -> f32 {
    if round {
        round_bf16(v)
    } else {
        v
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The values of one row stored in `fmt` (`bytes`: exactly the row).
pub fn dequant_row(fmt: WFormat, bytes: &[u8], cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(cols);
    match fmt {
        WFormat::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        WFormat::Bf16 => out.extend(CacheType::Bf16.decode(bytes)),
        WFormat::F16 => out.extend(CacheType::F16.decode(bytes)),
        WFormat::Q8_0 => {
            for blk in bytes.chunks_exact(34) {
                let d = f16_at(blk, 0);
                out.extend(blk[2..].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        WFormat::Q4K => {
            for blk in bytes.chunks_exact(144) {
                let d = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let scales = &blk[4..16];
                let qs = &blk[16..];
                // Sub-block j's 6-bit scale and min.
                let sm = |j: usize| -> (f32, f32) {
                    if j < 4 {
                        ((scales[j] & 63) as f32, (scales[j + 4] & 63) as f32)
                    } else {
                        (
                            ((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4)) as f32,
                            ((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)) as f32,
                        )
                    }
                };
                for g in 0..4 {
                    let (s0, m0) = sm(2 * g);
                    let (s1, m1) = sm(2 * g + 1);
                    let q = &qs[32 * g..32 * g + 32];
                    out.extend(q.iter().map(|&b| d * s0 * (b & 0xF) as f32 - dmin * m0));
                    out.extend(q.iter().map(|&b| d * s1 * (b >> 4) as f32 - dmin * m1));
                }
            }
        }
        WFormat::Q6K => {
            for blk in bytes.chunks_exact(210) {
                let d = f16_at(blk, 208);
                let mut vals = [0f32; 256];
                for n in 0..2 {
                    let ql = &blk[64 * n..64 * n + 64];
                    let qh = &blk[128 + 32 * n..128 + 32 * n + 32];
                    let sc = |i: usize| (blk[192 + 8 * n + i] as i8) as f32;
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        vals[128 * n + l] = d * sc(is) * q1 as f32;
                        vals[128 * n + l + 32] = d * sc(is + 2) * q2 as f32;
                        vals[128 * n + l + 64] = d * sc(is + 4) * q3 as f32;
                        vals[128 * n + l + 96] = d * sc(is + 6) * q4 as f32;
                    }
                }
                out.extend_from_slice(&vals);
            }
        }
    }
    out
}

fn row_dot(fmt: WFormat, w: &[u8], row: usize, cols: usize, x: &[f32]) -> f32 {
    let rb = fmt.row_bytes(cols);
    let vals = dequant_row(fmt, &w[row * rb..(row + 1) * rb], cols);
    vals.iter()
        .zip(x)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum::<f64>() as f32
}

/// `y[r] = W[r]·x (+ bias[r])`, or `y[r] += …` with `accumulate`.
#[allow(clippy::too_many_arguments)]
pub fn matvec(
    fmt: WFormat,
    w: &[u8],
    x: &[f32],
    y: &mut [f32],
    bias: Option<&[f32]>,
    rows: usize,
    cols: usize,
    accumulate: bool,
    round: bool,
) {
    for (row, out) in y.iter_mut().enumerate().take(rows) {
        let mut v = r(row_dot(fmt, w, row, cols, x), round);
        if let Some(b) = bias {
            v = r(v + b[row], round);
        }
        if accumulate {
            v = r(*out + v, round);
        }
        *out = v;
    }
}

/// `h[r] = silu(Wg[r]·x) · (Wu[r]·x)`.
pub fn swiglu(
    fmt: WFormat,
    wg: &[u8],
    wu: &[u8],
    x: &[f32],
    rows: usize,
    cols: usize,
    round: bool,
) -> Vec<f32> {
    (0..rows)
        .map(|row| {
            let g = r(row_dot(fmt, wg, row, cols, x), round);
            let u = r(row_dot(fmt, wu, row, cols, x), round);
            let s = r((g as f64 / (1.0 + (-g as f64).exp())) as f32, round);
            r(s * u, round)
        })
        .collect()
}

/// Row `tok` of an embedding table.
pub fn embed(fmt: WFormat, table: &[u8], tok: usize, cols: usize, round: bool) -> Vec<f32> {
    let rb = fmt.row_bytes(cols);
    dequant_row(fmt, &table[tok * rb..(tok + 1) * rb], cols)
        .into_iter()
        .map(|v| r(v, round))
        .collect()
}

/// `x / sqrt(mean(x²) + eps) · w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, round: bool) -> Vec<f32> {
    let ms = x.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, w)| r((*v as f64 * scale * *w as f64) as f32, round))
        .collect()
}

/// The shapes of one attention layer's decode step.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query heads, key/value heads, head size.
    pub h: usize,
    pub kvh: usize,
    pub d: usize,
    /// Positions the cache holds room for; the cache is `(kvh, cap, d)`.
    pub cap: usize,
}

/// Rotary embedding of the queries (in place, in `qkv`) and keys at `pos`, and the write of keys
/// and values into the caches (values as `ct` stores them). `cos`/`sin`: `(positions, d/2)`.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv(
    qkv: &mut [f32],
    pos: usize,
    cos: &[f32],
    sin: &[f32],
    kc: &mut [f32],
    vc: &mut [f32],
    s: AttnShape,
    ct: CacheType,
    interleaved: bool,
    round: bool,
) {
    let (h, kvh, d) = (s.h, s.kvh, s.d);
    let half = d / 2;
    let rot = |x: &mut [f32]| {
        for i in 0..half {
            let (c, sn) = (cos[pos * half + i], sin[pos * half + i]);
            let (a, b) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            let (x0, x1) = (x[a] as f64, x[b] as f64);
            x[a] = r((x0 * c as f64 - x1 * sn as f64) as f32, round);
            x[b] = r((x0 * sn as f64 + x1 * c as f64) as f32, round);
        }
    };
    for hd in 0..h {
        rot(&mut qkv[hd * d..(hd + 1) * d]);
    }
    for kh in 0..kvh {
        let mut k = qkv[(h + kh) * d..(h + kh + 1) * d].to_vec();
        rot(&mut k);
        let v = &qkv[(h + kvh + kh) * d..(h + kvh + kh + 1) * d];
        let at = (kh * s.cap + pos) * d;
        for i in 0..d {
            kc[at + i] = ct.quantize(k[i]);
            vc[at + i] = ct.quantize(v[i]);
        }
    }
}

/// Attention of every query head over cached positions `0..=pos` of its group's key head.
pub fn attend(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    pos: usize,
    s: AttnShape,
    scale: f32,
    round: bool,
) -> Vec<f32> {
    let (h, kvh, d) = (s.h, s.kvh, s.d);
    let mut y = vec![0f32; h * d];
    for hd in 0..h {
        let kh = hd / (h / kvh);
        let qh = &q[hd * d..(hd + 1) * d];
        let scores: Vec<f32> = (0..=pos)
            .map(|j| {
                let k = &kc[(kh * s.cap + j) * d..][..d];
                let dot = qh
                    .iter()
                    .zip(k)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>();
                let v = r(dot as f32, round);
                if scale != 1.0 {
                    r(v * scale, round)
                } else {
                    v
                }
            })
            .collect();
        let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = scores.iter().map(|s| (*s as f64 - m).exp()).sum();
        for (j, sc) in scores.iter().enumerate() {
            // Probabilities unrounded: a split softmax cannot round them as candle's does.
            let p = ((*sc as f64) - m).exp() / sum;
            let v = &vc[(kh * s.cap + j) * d..][..d];
            for e in 0..d {
                y[hd * d + e] = (y[hd * d + e] as f64 + p * v[e] as f64) as f32;
            }
        }
        for e in 0..d {
            y[hd * d + e] = r(y[hd * d + e], round);
        }
    }
    y
}

/// The rotary tables the fused decoder uploads, `(positions, d/2)` each: angles as aha's forward
/// pass and llama.cpp compute them (each frequency the previous one times `base^(-2/d)`, in
/// f32), optionally rounded to bf16 as candle's bf16 tables are.
pub fn rope_tables(positions: usize, d: usize, base: f32, round: bool) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let step = base.powf(-2.0 / d as f32);
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        let mut a = p as f32;
        for _ in 0..half {
            cos.push(r(a.cos(), round));
            sin.push(r(a.sin(), round));
            a *= step;
        }
    }
    (cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect()
    }

    /// The block decoders agree with candle's own dequantization of the same bytes.
    #[test]
    fn dequantized_rows_match_candle() {
        let (rows, cols) = (3, 512);
        let src = Tensor::from_vec(ramp(rows * cols), (rows, cols), &Device::Cpu).unwrap();
        for (g, f) in [
            (GgmlDType::Q8_0, WFormat::Q8_0),
            (GgmlDType::Q4K, WFormat::Q4K),
            (GgmlDType::Q6K, WFormat::Q6K),
            (GgmlDType::F16, WFormat::F16),
            (GgmlDType::BF16, WFormat::Bf16),
            (GgmlDType::F32, WFormat::F32),
        ] {
            let q = QTensor::quantize(&src, g).unwrap();
            let bytes = q.data().unwrap();
            assert_eq!(bytes.len(), rows * f.row_bytes(cols), "{f:?}");
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let rb = f.row_bytes(cols);
            for row in 0..rows {
                let got = dequant_row(f, &bytes[row * rb..(row + 1) * rb], cols);
                assert_eq!(got, want[row * cols..(row + 1) * cols], "{f:?} row {row}");
            }
        }
    }

    #[test]
    fn attention_over_one_position_returns_its_value() {
        let s = AttnShape {
            h: 2,
            kvh: 1,
            d: 4,
            cap: 3,
        };
        let q = vec![1.0; 8];
        let mut kc = vec![0.0; 12];
        let mut vc = vec![0.0; 12];
        vc[..4].copy_from_slice(&[1.0, -2.0, 3.0, 0.5]);
        kc[..4].copy_from_slice(&[0.3; 4]);
        let y = attend(&q, &kc, &vc, 0, s, 0.5, false);
        assert_eq!(y, [1.0, -2.0, 3.0, 0.5, 1.0, -2.0, 3.0, 0.5]);
        // Two positions of equal score share the weight.
        vc[4..8].copy_from_slice(&[3.0, 0.0, 1.0, 0.5]);
        kc[4..8].copy_from_slice(&[0.3; 4]);
        let y = attend(&q, &kc, &vc, 1, s, 0.5, false);
        assert_eq!(&y[..4], [2.0, -1.0, 2.0, 0.5]);
    }

    #[test]
    fn rmsnorm_of_a_constant_row_is_the_weight() {
        let y = rmsnorm(&[3.0; 4], &[1.0, 2.0, 0.5, -1.0], 0.0, false);
        assert_eq!(y, [1.0, 2.0, 0.5, -1.0]);
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_writes_the_cache() {
        let s = AttnShape {
            h: 1,
            kvh: 1,
            d: 4,
            cap: 2,
        };
        let (cos, sin) = rope_tables(2, 4, 10000.0, false);
        let mut qkv = vec![
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
        ];
        let (mut kc, mut vc) = (vec![0.0; 8], vec![0.0; 8]);
        rope_kv(
            &mut qkv,
            0,
            &cos,
            &sin,
            &mut kc,
            &mut vc,
            s,
            CacheType::F32,
            false,
            false,
        );
        assert_eq!(&qkv[..4], [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(&kc[..4], [5.0, 6.0, 7.0, 8.0]);
        assert_eq!(&vc[..4], [9.0, 10.0, 11.0, 12.0]);
        // Position 1 rotates the first pair (NeoX style: i with i + d/2) by one radian.
        rope_kv(
            &mut qkv,
            1,
            &cos,
            &sin,
            &mut kc,
            &mut vc,
            s,
            CacheType::F32,
            false,
            false,
        );
        let (c, sn) = (1f32.cos(), 1f32.sin());
        assert!((qkv[0] - (c - 3.0 * sn)).abs() < 1e-6);
        assert!((qkv[2] - (sn + 3.0 * c)).abs() < 1e-6);
        assert_eq!(&vc[4..8], [9.0, 10.0, 11.0, 12.0]);
    }
}
