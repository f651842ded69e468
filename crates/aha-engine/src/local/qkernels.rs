//! The bridge from candle's quantized tensors to aha's own CPU kernels (`crates/aha-kernels`):
//! which formats they take, which kernel set runs, and the kernels' name for status lines.

use crate::options::{EngineOptions, KernelChoice};
use aha_kernels::{Format, Kernels};
use candle_core::quantized::GgmlDType;
use std::sync::OnceLock;

/// What multiplies quantized weights on the CPU: one of aha's kernel sets, or candle's own
/// kernels (`AHA_KERNELS=candle`, for comparisons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernels {
    Aha(Kernels),
    Candle,
}

impl CpuKernels {
    /// The name `aha bench --json` and the status bar show.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aha(k) => k.name(),
            Self::Candle => "candle",
        }
    }
}

/// The kernels, and whether the options named them (then they run even where candle's would
/// be faster).
static CHOICE: OnceLock<(CpuKernels, bool)> = OnceLock::new();

/// Selects the kernels `opts` name ([`EngineOptions::kernels`]: `avx512vnni`, `avxvnni`, `avx2`,
/// `neon-dotprod`, `neon`, `scalar`, `candle`; unset: the best this CPU runs). The kernel set is
/// process-wide: the first successful choice stays for the life of the process. A name that is
/// no kernel set, or one this CPU cannot run, is an error that lists the choices.
pub fn choose(opts: &EngineOptions) -> Result<CpuKernels, String> {
    if let Some(c) = CHOICE.get() {
        return Ok(c.0);
    }
    let c = match opts.kernel_choice()? {
        KernelChoice::Auto => (CpuKernels::Aha(aha_kernels::active()), false),
        KernelChoice::Candle => (CpuKernels::Candle, true),
        KernelChoice::Named(k) => {
            let k = aha_kernels::select(k).map_err(|e| format!("AHA_KERNELS={}: {e}", k.name()))?;
            (CpuKernels::Aha(k), true)
        }
    };
    Ok(CHOICE.get_or_init(|| c).0)
}

/// The choice made by [`choose`], with whether it was forced; unforced, the best available
/// kernels, where nothing was chosen yet.
fn chosen() -> (CpuKernels, bool) {
    CHOICE
        .get()
        .copied()
        .unwrap_or((CpuKernels::Aha(aha_kernels::active()), false))
}

/// The kernels in use (the best available if [`choose`] was never called or failed).
pub fn current() -> CpuKernels {
    chosen().0
}

/// aha's format for a GGUF type, where aha's kernels multiply it (and `AHA_KERNELS` is not
/// `candle`). Elsewhere candle's kernels run.
pub fn format(dt: GgmlDType) -> Option<Format> {
    let (k, forced) = match chosen() {
        (CpuKernels::Aha(k), forced) => (k, forced),
        (CpuKernels::Candle, _) => return None,
    };
    let f = any_format(dt)?;
    // Without SIMD of our own, candle's kernels are faster where candle has SIMD for the
    // format (compiled in for the build's target CPU); our scalar loop only where it has none.
    if k == Kernels::Scalar && candle_simd(dt) && !forced {
        return None;
    }
    Some(f)
}

/// Whether candle's CPU kernel for `dt` has a SIMD path in this build (candle chooses at
/// compile time: AVX on x86-64, NEON on aarch64).
fn candle_simd(dt: GgmlDType) -> bool {
    let simd = cfg!(any(target_feature = "avx", target_feature = "neon"));
    simd && matches!(
        dt,
        GgmlDType::Q8_0 | GgmlDType::Q4_0 | GgmlDType::Q4K | GgmlDType::Q6K
    )
}

/// aha's format for a GGUF type regardless of the kernel choice (for the prompt's dequantized
/// GEMM, which is the same arithmetic whichever kernel set multiplies single rows).
pub fn any_format(dt: GgmlDType) -> Option<Format> {
    Some(match dt {
        GgmlDType::Q8_0 => Format::Q8_0,
        GgmlDType::Q5_0 => Format::Q5_0,
        GgmlDType::Q4_0 => Format::Q4_0,
        GgmlDType::Q4_1 => Format::Q4_1,
        GgmlDType::Q4K => Format::Q4K,
        GgmlDType::Q6K => Format::Q6K,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// aha's kernels against the dequantized weights and against candle's quantized matmul, on
    /// weights candle quantized (the kernels' own tests check SIMD against scalar bit for bit).
    #[test]
    fn kernels_match_candle_and_the_dequantized_reference() {
        let (rows, cols) = (70, 512);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.clone(), (1, cols), &Device::Cpu).unwrap();
        for dt in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&wt, dt).unwrap();
            let deq = q.dequantize(&Device::Cpu).unwrap();
            let want: Vec<f32> = xt
                .matmul(&deq.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let f = format(dt).expect("aha has a kernel for every format of the test models");
            let mut got = vec![0f32; rows];
            aha_kernels::matvec(f, &q.data().unwrap(), rows, cols, &x, &mut got);
            // The prompt's path: dequantized as candle dequantizes, multiplied by the same gemm
            // as candle's matmul, so bit for bit what `x.matmul(&deq.t())` gives.
            let mut pm = vec![0f32; rows];
            let qf = any_format(dt).unwrap();
            aha_kernels::quant::matmul_dequantized(qf, &q.data().unwrap(), rows, cols, &x, &mut pm);
            for r in 0..rows {
                assert_eq!(
                    pm[r].to_bits(),
                    want[r].to_bits(),
                    "{dt:?} row {r}: prompt GEMM"
                );
            }
            let c: Vec<f32> = QMatMul::from_qtensor(q)
                .unwrap()
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for r in 0..rows {
                // 8-bit activations: a relative error of a few per mille of the row's magnitude.
                let tol = 0.02 * (1.0 + want[r].abs());
                assert!(
                    (got[r] - want[r]).abs() < tol,
                    "{dt:?} row {r}: {} vs {}",
                    got[r],
                    want[r]
                );
                assert!(
                    (got[r] - c[r]).abs() < tol,
                    "{dt:?} row {r}: {} vs candle {}",
                    got[r],
                    c[r]
                );
            }
        }
    }
}
