//! Causal grouped-query attention over a key/value cache, for decode (one query row) and for
//! prompts (many), without materialising the score matrix: keys come in blocks of [`BK`], each
//! block's scores are turned into probabilities with an online softmax (running maximum and
//! sum, rescaled as the maximum grows), and the values are accumulated right away.
//!
//! - Work is split across the rayon pool by key/value head, by block of query positions and,
//!   when that gives too few pieces (decode: one position, two heads), by range of keys; the
//!   partial results of the key ranges are merged with their maxima.
//! - Every query head that shares a key/value head (grouped-query attention) is processed with
//!   the same key block, so each key is read once per group, not once per head.
//! - The scores of a key block and its weighted values are two small matrix products (the
//!   `gemm` crate, which candle also uses: SIMD chosen at run time, AVX2, AVX-512, NEON); the
//!   softmax between them runs along contiguous rows that the compiler vectorises.

use rayon::prelude::*;

/// Keys per block.
pub const BK: usize = 256;
/// Query positions per task in a prompt.
const BQ: usize = 16;
/// Fewest keys worth a task of their own.
const MIN_KEYS_PER_SPLIT: usize = 256;

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// New query positions (rows), at positions `pos..pos + n`.
    pub n: usize,
    /// Positions cached before these rows; keys `0..pos + n` are attended.
    pub pos: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (`heads` is a multiple).
    pub kv_heads: usize,
    /// Values per head.
    pub d: usize,
    /// Positions between one key/value head and the next in the cache (its capacity).
    pub stride: usize,
}

#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_feature = "fma", target_arch = "aarch64")) {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` for a block of values, vectorisable: `x = k·ln2 + r`, `2^k` put in the exponent bits,
/// `e^r` by a degree-6 polynomial on |r| ≤ ln2/2 (relative error below 2e-7). Values below -87
/// give 0 (the softmax's masked and negligible scores).
#[inline(always)]
fn exp_block(x: &mut [f32]) {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    for v in x.iter_mut() {
        let xc = v.clamp(-87.0, 88.0);
        let k = fma(xc, LOG2E, 0.5).floor();
        let r = fma(k, -LN2_LO, fma(k, -LN2_HI, xc));
        let mut p = 1.0 / 720.0;
        p = fma(p, r, 1.0 / 120.0);
        p = fma(p, r, 1.0 / 24.0);
        p = fma(p, r, 1.0 / 6.0);
        p = fma(p, r, 0.5);
        p = fma(p, r, 1.0);
        p = fma(p, r, 1.0);
        let scale = f32::from_bits((((k as i32) + 127) << 23) as u32);
        *v = if *v < -87.0 { 0.0 } else { p * scale };
    }
}

/// Where component `c` of the key (or value) at position `p` of key/value head `h` lives in a
/// cache of capacity `cap` and head size `d`: `(kv_heads, cap, d)`, row-major.
#[inline(always)]
pub fn key_at(h: usize, p: usize, c: usize, cap: usize, d: usize) -> usize {
    (h * cap + p) * d + c
}

/// Writes `n` new positions (from `pos`) of keys and values, each `(kv_heads, n, d)`
/// row-major, into caches of capacity `cap` laid out as [`key_at`] says.
#[allow(clippy::too_many_arguments)]
pub fn store(
    keys: &mut [f32],
    values: &mut [f32],
    k: &[f32],
    v: &[f32],
    pos: usize,
    n: usize,
    kv_heads: usize,
    d: usize,
    cap: usize,
) {
    assert!(pos + n <= cap);
    assert!(keys.len() >= kv_heads * cap * d && values.len() >= kv_heads * cap * d);
    for h in 0..kv_heads {
        let (dst, src) = (key_at(h, pos, 0, cap, d), h * n * d);
        keys[dst..dst + n * d].copy_from_slice(&k[src..src + n * d]);
        values[dst..dst + n * d].copy_from_slice(&v[src..src + n * d]);
    }
}

/// `dst (m×n, row stride ldd) = [dst +] a (m×k, row-major, row stride lda) · b`, where `b` is
/// `k×n` with element `(i, j)` at `b[i·b_rs + j·b_cs]`. Single-threaded (tasks are the
/// parallel unit).
#[allow(unsafe_code, clippy::too_many_arguments)]
fn matmul(
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    (m, n, k): (usize, usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * ldd + n && a.len() >= (m - 1) * lda + k);
    assert!(k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts keep every element gemm reads or writes inside the three slices,
    // which do not overlap (`dst` is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            accumulate,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// One task: query heads `kh·g..kh·g+g` at positions `q0..q1` (relative to `pos`) against keys
/// `k0..k1`. Writes, per row (member-major: `member · (q1-q0) + i`), the running maximum and sum
/// into `ml` and the unnormalised value sum into `acc` (`d` each).
///
/// Per block of [`BK`] keys: the scores of every row by one matrix product, the causal mask,
/// the online softmax along each row, then the values by a second product into `acc`.
#[allow(clippy::too_many_arguments)]
fn task(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &Shape,
    scale: f32,
    kh: usize,
    (q0, q1): (usize, usize),
    (k0, k1): (usize, usize),
    ml: &mut [(f32, f32)],
    acc: &mut [f32],
) {
    let d = s.d;
    let g = s.heads / s.kv_heads;
    let nq = q1 - q0;
    let rows = g * nq;
    // The rows' queries, scaled, contiguous.
    let mut qs = vec![0f32; rows * d];
    for m in 0..g {
        let head = kh * g + m;
        for i in 0..nq {
            let src = &q[(head * s.n + q0 + i) * d..][..d];
            for (o, x) in qs[(m * nq + i) * d..][..d].iter_mut().zip(src) {
                *o = x * scale;
            }
        }
    }
    acc[..rows * d].fill(0.0);
    let (mut mx, mut l) = (vec![f32::NEG_INFINITY; rows], vec![0f32; rows]);
    let last = (s.pos + q1).min(k1);
    // Few rows (decode): the whole key range in one block, so that each matrix product is
    // large enough to run at speed; many rows (a prompt): blocks of BK keys.
    let bk = if rows < 16 {
        last.saturating_sub(k0).max(1)
    } else {
        BK
    };
    let mut sc = vec![0f32; rows * bk];
    let first_pos = s.pos + q0;
    let mut kb = k0;
    while kb < last {
        let nk = (kb + bk).min(last) - kb;
        let kblk = &k[key_at(kh, kb, 0, s.stride, d)..][..nk * d];
        let vblk = &v[key_at(kh, kb, 0, s.stride, d)..][..nk * d];
        let sc = &mut sc[..rows * nk];
        // Scores: qs (rows × d) times the block's keys transposed (d × nk).
        matmul(sc, nk, false, &qs, d, kblk, (1, d), (rows, nk, d));
        for m in 0..g {
            for i in 0..nq {
                let r = m * nq + i;
                let srow = &mut sc[r * nk..][..nk];
                // Causal mask: keys after this row's position.
                let visible = (first_pos + i + 1).saturating_sub(kb).min(nk);
                srow[visible..].fill(f32::NEG_INFINITY);
                let bmax = srow.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let m_new = mx[r].max(bmax);
                if m_new == f32::NEG_INFINITY {
                    continue; // nothing visible yet (the row's scores are all -inf)
                }
                let corr = (mx[r] - m_new).exp(); // 0 for the first block
                for x in srow.iter_mut() {
                    *x -= m_new;
                }
                exp_block(srow);
                l[r] = l[r] * corr + srow.iter().sum::<f32>();
                mx[r] = m_new;
                if corr != 1.0 {
                    for x in acc[r * d..][..d].iter_mut() {
                        *x *= corr;
                    }
                }
            }
        }
        // Values: the probabilities (rows × nk) times the block's values (nk × d).
        matmul(acc, d, true, sc, nk, vblk, (d, 1), (rows, d, nk));
        kb += nk;
    }
    for ((o, m), lr) in ml.iter_mut().zip(&mx).zip(&l) {
        *o = (*m, *lr);
    }
}

/// One task's result: per row, the running maximum and sum, and the unnormalised value sums.
type Partial = (Vec<(f32, f32)>, Vec<f32>);

/// Causal attention of `q` (`heads × n × d`, head-major, rotary already applied) over the
/// cache's keys ([`key_at`] order) and values (`kv_heads × stride × d`), positions
/// `0..pos + n` filled ([`store`]), into `out`
/// (`n × heads·d`, position-major). `scale` multiplies the scores (1/√d, or 1 when the query
/// weights carry it).
pub fn attend(q: &[f32], k: &[f32], v: &[f32], s: Shape, scale: f32, out: &mut [f32]) {
    attend_with(q, k, v, s, scale, out, true)
}

/// [`attend`], on the calling thread alone when `parallel` is false (for the test binary that
/// runs under qemu, where threads hang). The key ranges are split as for two threads then, so
/// the result equals a two-thread [`attend`]'s bit for bit and others' to rounding.
pub fn attend_with(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: Shape,
    scale: f32,
    out: &mut [f32],
    parallel: bool,
) {
    let (n, d, kvh) = (s.n, s.d, s.kv_heads);
    assert!(s.kv_heads > 0 && s.heads.is_multiple_of(s.kv_heads) && d > 0);
    assert!(q.len() >= s.heads * n * d && out.len() >= n * s.heads * d);
    let total = s.pos + n;
    assert!(total <= s.stride);
    assert!(k.len() >= kvh * s.stride * d && v.len() >= kvh * s.stride * d);
    let g = s.heads / kvh;
    let qblocks: Vec<(usize, usize)> = (0..n)
        .step_by(BQ)
        .map(|q0| (q0, (q0 + BQ).min(n)))
        .collect();
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        2
    };
    let pieces = kvh * qblocks.len();
    let splits = if pieces >= 2 * threads {
        1
    } else {
        (2 * threads)
            .div_ceil(pieces)
            .min(total.div_ceil(MIN_KEYS_PER_SPLIT))
            .max(1)
    };
    let per_split = total.div_ceil(splits).div_ceil(BK) * BK;
    let tasks: Vec<(usize, usize, usize)> = (0..kvh)
        .flat_map(|kh| {
            (0..qblocks.len()).flat_map(move |qb| (0..splits).map(move |sp| (kh, qb, sp)))
        })
        .collect();
    let run = |&(kh, qb, sp): &(usize, usize, usize)| {
        let (q0, q1) = qblocks[qb];
        let rows = g * (q1 - q0);
        let mut ml = vec![(f32::NEG_INFINITY, 0f32); rows];
        let mut acc = vec![0f32; rows * d];
        let (k0, k1) = (sp * per_split, ((sp + 1) * per_split).min(total));
        if k0 < k1 {
            task(
                q,
                k,
                v,
                &s,
                scale,
                kh,
                (q0, q1),
                (k0, k1),
                &mut ml,
                &mut acc,
            );
        }
        (ml, acc)
    };
    let parts: Vec<Partial> = if parallel {
        tasks.par_iter().map(run).collect()
    } else {
        tasks.iter().map(run).collect()
    };
    // Merge the key ranges of each (head, query block) and normalise.
    for (t, chunk) in parts.chunks(splits).enumerate() {
        let (kh, qb) = (t / qblocks.len(), t % qblocks.len());
        let (q0, q1) = qblocks[qb];
        let nq = q1 - q0;
        for m in 0..g {
            for i in 0..nq {
                let r = m * nq + i;
                let mx = chunk
                    .iter()
                    .map(|(ml, _)| ml[r].0)
                    .fold(f32::NEG_INFINITY, f32::max);
                let dst = &mut out[((q0 + i) * s.heads + kh * g + m) * d..][..d];
                dst.fill(0.0);
                let mut l = 0f32;
                for (ml, acc) in chunk {
                    let (pm, pl) = ml[r];
                    if pl == 0.0 {
                        continue;
                    }
                    let w = (pm - mx).exp();
                    l += pl * w;
                    for (o, a) in dst.iter_mut().zip(&acc[r * d..][..d]) {
                        *o = fma(*a, w, *o);
                    }
                }
                let inv = 1.0 / l;
                for o in dst.iter_mut() {
                    *o *= inv;
                }
            }
        }
    }
}

/// Checks [`attend_with`] against [`reference`] on decode, prompt and long-cache shapes
/// (including key ranges split and merged); single-threaded unless `parallel`. Returns how many
/// values were compared.
#[doc(hidden)]
pub fn check(parallel: bool) -> Result<usize, String> {
    let mut compared = 0;
    for (i, &(n, pos, heads, kv_heads, d, big)) in [
        (1, 0, 2, 1, 8, 1.0f32),
        (1, 700, 14, 2, 64, 1.0),
        (1, 4095, 4, 4, 16, 3.0),
        (37, 0, 14, 2, 64, 1.0),
        (20, 300, 6, 3, 32, 1.0),
        (5, 2, 2, 2, 128, 30.0),
        (300, 0, 4, 2, 64, 1.0),
    ]
    .iter()
    .enumerate()
    {
        let stride = pos + n + 7;
        let mut rng = crate::quant::check::Rng::new(i as u64 + 11);
        let q: Vec<f32> = (0..heads * n * d).map(|_| rng.float() * big).collect();
        let mut k = vec![0f32; kv_heads * stride * d];
        let mut v = vec![0f32; kv_heads * stride * d];
        for (p0, len) in [(0, pos), (pos, n)] {
            let nk: Vec<f32> = (0..kv_heads * len * d).map(|_| rng.float()).collect();
            let nv: Vec<f32> = (0..kv_heads * len * d).map(|_| rng.float()).collect();
            store(&mut k, &mut v, &nk, &nv, p0, len, kv_heads, d, stride);
        }
        let s = Shape {
            n,
            pos,
            heads,
            kv_heads,
            d,
            stride,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let mut got = vec![0f32; n * heads * d];
        attend_with(&q, &k, &v, s, scale, &mut got, parallel);
        let want = reference(&q, &k, &v, s, scale);
        for (j, (a, b)) in got.iter().zip(&want).enumerate() {
            if (a - b).abs() > 2e-5 * (1.0 + b.abs()) {
                return Err(format!(
                    "n {n} pos {pos} heads {heads}/{kv_heads} d {d}: value {j}: {a} vs {b}"
                ));
            }
        }
        compared += got.len();
    }
    Ok(compared)
}

/// The plain definition, for tests: scores, softmax, weighted sum, one row at a time in f64.
#[doc(hidden)]
pub fn reference(q: &[f32], k: &[f32], v: &[f32], s: Shape, scale: f32) -> Vec<f32> {
    let (n, d) = (s.n, s.d);
    let g = s.heads / s.kv_heads;
    let mut out = vec![0f32; n * s.heads * d];
    for hh in 0..s.heads {
        let kh = hh / g;
        for i in 0..n {
            let qr = &q[(hh * n + i) * d..][..d];
            let keys = s.pos + i + 1;
            let sc: Vec<f64> = (0..keys)
                .map(|j| {
                    (0..d)
                        .map(|c| qr[c] as f64 * k[key_at(kh, j, c, s.stride, d)] as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let mx = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            let o = &mut out[(i * s.heads + hh) * d..][..d];
            for (j, p) in e.iter().enumerate() {
                let vr = &v[(kh * s.stride + j) * d..][..d];
                for (x, y) in o.iter_mut().zip(vr) {
                    *x += (p / z * *y as f64) as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_for_decode_prompts_and_long_caches() {
        for parallel in [true, false] {
            let n = check(parallel).unwrap();
            assert!(n > 100_000, "{n} values compared");
        }
    }

    #[test]
    fn exp_block_is_accurate_and_flushes_the_masked() {
        let mut x = [0f32; BK];
        for (i, v) in x.iter_mut().enumerate() {
            *v = -80.0 + i as f32 * 2.7;
        }
        let want: Vec<f32> = x.iter().map(|v| v.exp()).collect();
        exp_block(&mut x);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).abs() <= 4e-7 * b, "{a} vs {b}");
        }
        let mut m = [f32::NEG_INFINITY; BK];
        exp_block(&mut m);
        assert!(m.iter().all(|v| *v == 0.0));
    }
}
