//! The loading and forward paths on tiny random-weight models written by the tests themselves.

use aha::engine::local::load::{load_safetensors_dir, GgufFile};
use aha::engine::local::model::Transformer;
use aha::engine::local::synth::SynthSpec;
use candle_core::quantized::GgmlDType;
use candle_core::Device;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn last_logits(m: &Transformer, tokens: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    let l = m.forward(tokens, &mut cache, false).unwrap();
    aha::engine::local::model::last_row(&l).unwrap()
}

fn gguf_model(dir: &std::path::Path, spec: &SynthSpec, dt: GgmlDType) -> Transformer {
    let p = dir.join(format!("m-{dt:?}.gguf"));
    spec.write_gguf(&p, dt).unwrap();
    GgufFile::open(&p)
        .unwrap()
        .load_model(&Device::Cpu)
        .unwrap()
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % 290) as u32).collect()
}

#[test]
fn gguf_f32_and_safetensors_load_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec::tiny();
    let g = gguf_model(dir.path(), &spec, GgmlDType::F32);
    spec.write_safetensors(&dir.path().join("st")).unwrap();
    let s = load_safetensors_dir(&dir.path().join("st"), &Device::Cpu).unwrap();
    assert_eq!(g.cfg.n_layer, s.cfg.n_layer);
    assert_eq!(g.cfg.head_dim, s.cfg.head_dim);
    let t = tokens(20);
    let a = last_logits(&g, &t);
    let b = last_logits(&s, &t);
    assert_eq!(a.len(), spec.vocab);
    assert!(max_diff(&a, &b) < 1e-4, "diff {}", max_diff(&a, &b));
    // The logits depend on the input (a model that ignored it would pass the equality above).
    let c = last_logits(&g, &tokens(21));
    assert!(max_diff(&a, &c) > 1e-3);
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// `tol`: quantized weights run decode rows through 8-bit activations and prefill through an f32
/// GEMM, so their cached and cold paths differ by rounding; dense weights agree to float precision.
fn check_cache_paths(m: &Transformer, tol: f32) {
    let t = tokens(40);
    let cold = last_logits(m, &t);
    // Prefix reuse: 30 tokens first (batched prefill), then the last 10, then one by one.
    let mut cache = m.new_cache();
    m.forward(&t[..30], &mut cache, false).unwrap();
    m.forward(&t[30..39], &mut cache, false).unwrap();
    let l = m.forward(&t[39..], &mut cache, false).unwrap();
    let warm = aha::engine::local::model::last_row(&l).unwrap();
    assert!(
        max_diff(&cold, &warm) < tol,
        "prefix reuse diff {}",
        max_diff(&cold, &warm)
    );
    // Truncate back into the prompt and branch: must equal a cold run of the branched tokens.
    let mut other = t[..25].to_vec();
    other.extend([5, 6, 7]);
    let mut cache2 = m.new_cache();
    m.forward(&t, &mut cache2, false).unwrap();
    cache2.truncate(25);
    assert_eq!(cache2.len(), 25);
    let l = m.forward(&other[25..], &mut cache2, false).unwrap();
    let branched = aha::engine::local::model::last_row(&l).unwrap();
    let cold_branch = last_logits(m, &other);
    assert!(
        max_diff(&branched, &cold_branch) < tol,
        "truncate diff {}",
        max_diff(&branched, &cold_branch)
    );
    // A different context gives clearly different logits, far beyond the rounding tolerance.
    assert!(
        max_diff(&branched, &cold) > 5.0 * tol,
        "{}",
        max_diff(&branched, &cold)
    );
}

#[test]
fn cache_reuse_and_truncate_match_cold_runs_gguf_q8() {
    let dir = tempfile::tempdir().unwrap();
    check_cache_paths(
        &gguf_model(dir.path(), &SynthSpec::tiny(), GgmlDType::Q8_0),
        0.1,
    );
}

#[test]
fn cache_reuse_and_truncate_match_cold_runs_gguf_q4k() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        n_embd: 256,
        n_head: 4,
        n_ff: 512,
        ..SynthSpec::tiny()
    };
    check_cache_paths(&gguf_model(dir.path(), &spec, GgmlDType::Q4K), 0.1);
}

#[test]
fn cache_reuse_and_truncate_match_cold_runs_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec::tiny();
    spec.write_safetensors(dir.path()).unwrap();
    check_cache_paths(
        &load_safetensors_dir(dir.path(), &Device::Cpu).unwrap(),
        2e-3,
    );
}

#[test]
fn quantized_formats_load_and_stay_close_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        n_embd: 256,
        n_ff: 512,
        ..SynthSpec::tiny()
    };
    let t = tokens(12);
    let reference = last_logits(&gguf_model(dir.path(), &spec, GgmlDType::F32), &t);
    for dt in [
        GgmlDType::F16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        let got = last_logits(&gguf_model(dir.path(), &spec, dt), &t);
        let c = cosine(&reference, &got);
        let want = if matches!(dt, GgmlDType::F16 | GgmlDType::Q8_0) {
            0.999
        } else {
            0.95
        };
        assert!(c > want, "{dt:?}: cosine similarity to f32 logits {c}");
    }
}

#[test]
fn context_beyond_4096_positions_and_a_clear_error_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        n_ctx: 4600,
        n_layer: 1,
        ..SynthSpec::tiny()
    };
    let m = gguf_model(dir.path(), &spec, GgmlDType::Q8_0);
    let mut cache = m.new_cache();
    let t = tokens(4599);
    for c in t.chunks(512) {
        m.forward(c, &mut cache, false).unwrap();
    }
    assert_eq!(cache.len(), 4599);
    m.forward(&[1], &mut cache, false).unwrap();
    assert_eq!(cache.len(), 4600);
    let e = m.forward(&[1], &mut cache, false).unwrap_err().to_string();
    assert!(e.contains("exceed the context length 4600"), "{e}");
}
