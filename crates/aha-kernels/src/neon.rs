//! aarch64 NEON paths of the quantized kernels (in progress: rows go through the scalar
//! reference until the NEON bodies land).

use crate::quant::{dot_row_scalar, Format, QuantRow};
use crate::Kernels;

/// [`super::quant::dot_rows`] on aarch64.
///
/// # Safety
/// `k` must be available on this CPU, and `w` must hold `out.len()` rows of `row_bytes` that
/// `x` covers (the caller checks both).
#[allow(unsafe_code)]
pub(crate) unsafe fn rows(
    _k: Kernels,
    dt: Format,
    w: &[u8],
    row_bytes: usize,
    x: &QuantRow,
    out: &mut [f32],
    per64: bool,
) {
    for (i, y) in out.iter_mut().enumerate() {
        *y = dot_row_scalar(dt, &w[i * row_bytes..(i + 1) * row_bytes], x, per64);
    }
}
