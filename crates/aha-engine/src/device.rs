//! Choosing where the model runs: the one place that decides between CPU and CUDA.

use super::options::EngineOptions;
use anyhow::{bail, Result};
use candle_core::Device;

/// Resolves `--device` (`auto`, `cpu`, `cuda`, `cuda:N`). `auto` prefers CUDA when aha was built
/// with it and a GPU answers, else the CPU.
pub fn select_with(spec: &str, opts: &EngineOptions) -> Result<Device> {
    let one_stream = |d| single_stream(d, opts.cuda_events);
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" | "" => {
            if cfg!(feature = "cuda") {
                if let Ok(d) = Device::new_cuda_with_stream(0) {
                    return Ok(one_stream(d));
                }
            }
            Ok(Device::Cpu)
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| {
                    anyhow::anyhow!("bad device `{spec}`: use cuda:N with N a number")
                })?,
                None => 0,
            };
            if !cfg!(feature = "cuda") {
                bail!("this aha was built without CUDA: rebuild with `cargo build --release --features cuda` (see tools/build-cuda.sh), or use --device cpu");
            }
            Device::new_cuda_with_stream(idx).map(one_stream).map_err(|e| {
                anyhow::anyhow!("CUDA device {idx} is not available ({e}): check the NVIDIA driver and that a GPU is present, or use --device cpu")
            })
        }
        _ => bail!("unknown device `{spec}`: use auto, cpu, cuda or cuda:N"),
    }
}

/// Turns off cudarc's per-buffer event tracking on a fresh CUDA device. The device is made with
/// its own stream (`new_cuda_with_stream`: one real stream, whichever host thread submits;
/// candle's plain `new_cuda` uses CUDA's per-thread default stream, where work submitted from
/// two threads, such as a rayon worker's forward pass and the engine thread reading the logits,
/// is not ordered). That puts cudarc in multi-stream mode: every buffer then creates, records
/// and waits on CUDA events at each use, a dozen driver calls per operation, and a decode step
/// runs hundreds of small operations. aha runs all of a device's work on that one stream, so the
/// ordering those events protect is already guaranteed. `cuda_events` (`AHA_CUDA_EVENTS=1`)
/// keeps them (for comparison).
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
fn single_stream(d: Device, cuda_events: bool) -> Device {
    if let Device::Cuda(c) = &d {
        if !cuda_events {
            // SAFETY: called before any tensor exists on this device, and every tensor of it is
            // created and used on the device's single stream (aha creates no other streams).
            unsafe { c.disable_event_tracking() }
        }
    }
    d
}

#[cfg(not(feature = "cuda"))]
fn single_stream(d: Device, _cuda_events: bool) -> Device {
    d
}

/// A short description for status lines, e.g. `cpu (2 threads, avx2)` or `cuda`: on the CPU,
/// the threads and the kernel set that multiplies the weights.
pub fn describe(d: &Device) -> String {
    match d {
        Device::Cpu => format!(
            "cpu ({} threads, {})",
            candle_core::utils::get_num_threads(),
            super::local::qkernels::current().name()
        ),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}
