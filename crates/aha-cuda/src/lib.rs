//! aha's fused decode step for CUDA GPUs.
//!
//! candle runs a decode step as ~20 small operations per layer, and on a GPU the host's cost of
//! launching them (not memory traffic) sets the speed: the 1.5B model decodes no faster than the
//! 7B. This crate replaces them with eight larger kernels per layer (kernels/decode.cu) —
//! RMSNorm, mat-vec straight from GGUF blocks or 16-bit weights (with bias and residual add in its
//! epilogue), RoPE fused with the write into the KV cache, decode attention over the cache in one
//! kernel, and the gate/up projections fused with SwiGLU — all on buffers at fixed addresses, so
//! that the whole step can be captured once as a CUDA graph and replayed per token
//! (`aha-engine`'s `local::fused`).
//!
//! Everything here but [`gpu`] builds without CUDA: [`reference`] holds the CPU reference of
//! every kernel, and the unit tests run the kernels' own source on the host through a small CUDA
//! emulation (kernels/emu.h) and compare. [`checks`] is that comparison, run by the tests on the
//! emulation and by `aha cuda-check` on a real GPU.

pub mod checks;
pub mod reference;
pub mod step;

#[cfg(any(test, feature = "emu"))]
pub mod emu;

#[cfg(feature = "cuda")]
pub mod gpu;

use candle_core::quantized::GgmlDType;
use candle_core::DType;

/// A weight matrix's storage, as the mat-vec kernels read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WFormat {
    F32,
    Bf16,
    F16,
    Q8_0,
    Q4K,
    Q6K,
}

impl WFormat {
    pub const ALL: [WFormat; 6] = [
        WFormat::F32,
        WFormat::Bf16,
        WFormat::F16,
        WFormat::Q8_0,
        WFormat::Q4K,
        WFormat::Q6K,
    ];

    /// The kernels' suffix (`matvec_q4_k`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4K => "q4_k",
            Self::Q6K => "q6_k",
        }
    }

    /// The id the emulated entry points take.
    pub fn id(self) -> i32 {
        self as i32
    }

    /// `(values, bytes)` of one block.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::Bf16 | Self::F16 => (1, 2),
            Self::Q8_0 => (32, 34),
            Self::Q4K => (256, 144),
            Self::Q6K => (256, 210),
        }
    }

    /// Bytes of one row of `cols` values.
    pub fn row_bytes(self, cols: usize) -> usize {
        let (n, b) = self.block();
        cols / n * b
    }

    /// Whether the kernels take rows of `cols` values: whole blocks, and 8 columns per lane step
    /// for dense weights.
    pub fn fits(self, cols: usize) -> bool {
        match self {
            Self::F32 | Self::Bf16 | Self::F16 => cols.is_multiple_of(8),
            _ => cols.is_multiple_of(self.block().0),
        }
    }

    /// The format of a GGUF tensor type, if the kernels read it.
    pub fn from_ggml(t: GgmlDType) -> Option<Self> {
        Some(match t {
            GgmlDType::F32 => Self::F32,
            GgmlDType::F16 => Self::F16,
            GgmlDType::BF16 => Self::Bf16,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q6K => Self::Q6K,
            _ => return None,
        })
    }

    /// The format of a dense tensor's dtype, if the kernels read it.
    pub fn from_dtype(t: DType) -> Option<Self> {
        Some(match t {
            DType::F32 => Self::F32,
            DType::BF16 => Self::Bf16,
            DType::F16 => Self::F16,
            _ => return None,
        })
    }
}

/// The KV cache's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheType {
    F32,
    Bf16,
    F16,
}

impl CacheType {
    pub const ALL: [CacheType; 3] = [CacheType::F32, CacheType::Bf16, CacheType::F16];

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }

    pub fn id(self) -> i32 {
        self as i32
    }

    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 | Self::F16 => 2,
        }
    }

    pub fn from_dtype(t: DType) -> Option<Self> {
        Some(match t {
            DType::F32 => Self::F32,
            DType::BF16 => Self::Bf16,
            DType::F16 => Self::F16,
            _ => return None,
        })
    }

    /// `v` as this type stores it.
    pub fn quantize(self, v: f32) -> f32 {
        match self {
            Self::F32 => v,
            Self::Bf16 => half::bf16::from_f32(v).to_f32(),
            Self::F16 => half::f16::from_f32(v).to_f32(),
        }
    }

    /// Little-endian bytes of `vs` in this type.
    pub fn encode(self, vs: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => vs.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::Bf16 => vs
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            Self::F16 => vs
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }

    /// The values of little-endian bytes in this type.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Self::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Self::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}
