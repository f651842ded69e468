//! Times `attention::attend` alone (qwen2.5-0.5b's shape: 14 heads, 2 key/value heads, d 64):
//! `cargo run --release -p aha-kernels --example attn_speed -- N POS`.
use aha_kernels::attention::{attend, store, Shape, BK};

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (n, pos) = (a[0], a[1]);
    let (heads, kvh, d) = (14, 2, 64);
    let stride = (pos + n).div_ceil(BK) * BK;
    let val = |i: usize| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
    let q: Vec<f32> = (0..heads * n * d).map(val).collect();
    let kv: Vec<f32> = (0..kvh * (pos + n) * d).map(|i| val(i * 13)).collect();
    let (mut k, mut v) = (vec![0f32; kvh * stride * d], vec![0f32; kvh * stride * d]);
    store(&mut k, &mut v, &kv, &kv, 0, pos + n, kvh, d, stride);
    let s = Shape {
        n,
        pos,
        heads,
        kv_heads: kvh,
        d,
        stride,
    };
    let mut out = vec![0f32; n * heads * d];
    let reps = 5;
    let t = std::time::Instant::now();
    for _ in 0..reps {
        attend(&q, &k, &v, s, 0.125, &mut out);
    }
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    let flops = 4.0 * heads as f64 * d as f64 * (n as f64 * pos as f64 + n as f64 * n as f64 / 2.0);
    println!(
        "n {n} pos {pos}: {:.3} ms per call, {:.1} GFLOP/s",
        dt * 1e3,
        flops / dt / 1e9
    );
}
