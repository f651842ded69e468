//! A weight matrix applied to activations: quantized mat-vec for decode, dequantized GEMM for prefill.

use aha_kernels::Format;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use std::sync::Arc;

/// Rows of input at or above which a quantized weight is dequantized and multiplied with a real
/// GEMM instead of one quantized mat-vec per row (candle's CPU path), which makes prefill cost
/// about as much as that many decode steps. The default of [`EngineOptions::gemm_min_rows`].
///
/// [`EngineOptions::gemm_min_rows`]: crate::options::EngineOptions::gemm_min_rows
pub const GEMM_MIN_ROWS: usize = crate::options::DEFAULT_GEMM_MIN_ROWS;

/// One of aha's kernels over raw GGUF blocks: `(format, weights, rows, cols, xs, out)`.
type BlockKernel = fn(Format, &[u8], usize, usize, &[f32], &mut [f32]);

/// A linear layer without bias, `y = x W^T`, `W` of shape `(out, in)`.
#[derive(Debug)]
pub enum Linear {
    /// GGUF block-quantized weights. `gemm_min_rows`: rows of input on the CPU at or above
    /// which the weights are dequantized for a real GEMM (prefill); `None`: never.
    Quant {
        q: Arc<QTensor>,
        mm: QMatMul,
        gemm_min_rows: Option<usize>,
    },
    /// Plain weights (safetensors, or F16/F32 GGUF tensors), in the activations' dtype.
    Dense(Tensor),
}

impl Linear {
    /// Wraps a quantized tensor, multiplied by a dequantized GEMM from `gemm_min_rows` rows of
    /// input on (see [`Linear::Quant`]). F16/F32 tensors are kept dense.
    pub fn from_qtensor(q: QTensor, dtype: DType, gemm_min_rows: Option<usize>) -> Result<Self> {
        use candle_core::quantized::GgmlDType;
        match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                let dev = q.device();
                Ok(Self::Dense(q.dequantize(&dev)?.to_dtype(dtype)?))
            }
            _ => {
                let q = Arc::new(q);
                let mm = QMatMul::from_arc(q.clone())?;
                Ok(Self::Quant {
                    q,
                    mm,
                    gemm_min_rows,
                })
            }
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Self::Quant { q, .. } => {
                let d = q.shape().dims();
                (d[0], d[1])
            }
            Self::Dense(t) => {
                let d = t.dims();
                (d[0], d[1])
            }
        }
    }

    /// Bytes a forward pass reads from the weights.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Quant { q, .. } => q.storage_size_in_bytes(),
            Self::Dense(t) => t.elem_count() * t.dtype().size_in_bytes(),
        }
    }

    /// `x`: `(rows, in)` → `(rows, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_as(x, false)
    }

    /// [`Linear::forward`]; `rowwise`: on aha's kernels every row gets the bits a one-row call
    /// gives ([`aha_kernels::matvec_rows`]), not a batch's.
    pub fn forward_as(&self, x: &Tensor, rowwise: bool) -> Result<Tensor> {
        match self {
            Self::Quant {
                q,
                mm,
                gemm_min_rows,
            } => {
                let rows = x.dim(0)?;
                let cpu = x.device().is_cpu();
                let prompt = gemm_min_rows.is_some_and(|m| rows >= m) && cpu;
                // aha's kernels on the raw GGUF blocks: `mul(format, w, out, in, xs, y)`.
                let on_blocks = |f, mul: BlockKernel| {
                    let (out_dim, in_dim) = self.dims();
                    let xs = x.flatten_all()?.to_vec1::<f32>()?;
                    let mut y = vec![0f32; rows * out_dim];
                    mul(f, &q.data()?, out_dim, in_dim, &xs, &mut y);
                    Tensor::from_vec(y, (rows, out_dim), x.device())
                };
                let f32_in = x.dtype() == DType::F32;
                if let (true, true, Some(f)) =
                    (prompt, f32_in, super::qkernels::any_format(q.dtype()))
                {
                    on_blocks(f, aha_kernels::quant::matmul_dequantized)
                } else if prompt {
                    let w = q.dequantize(x.device())?;
                    x.matmul(&w.t()?)
                } else if let (true, true, Some(f)) =
                    (cpu, f32_in, super::qkernels::format(q.dtype()))
                {
                    let mul: BlockKernel = if rowwise {
                        aha_kernels::matvec_rows
                    } else {
                        aha_kernels::matvec
                    };
                    on_blocks(f, mul)
                } else {
                    mm.forward(x)
                }
            }
            Self::Dense(w) => x.matmul(&w.t()?),
        }
    }
}
