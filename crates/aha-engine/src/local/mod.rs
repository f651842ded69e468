//! The local engine's model: loading, forward pass, KV cache, weight kernels.

pub mod engine;
pub mod fused;
pub mod generate;
pub mod ggml_math;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod model;
pub mod prompt_cache;
pub mod qkernels;
pub mod speculate;
pub mod synth;
