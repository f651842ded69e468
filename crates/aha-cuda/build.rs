//! Builds the decode kernels (kernels/decode.cu) twice: for the unit tests, as host C++ against
//! the CUDA emulation in kernels/emu.h (every build: needs only a C++17 compiler); with the
//! `cuda` feature, to PTX by nvcc, embedded in the library and loaded at run time.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels/decode.cu");
    println!("cargo:rerun-if-changed=kernels/emu.h");
    println!("cargo:rerun-if-changed=kernels/emu.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("kernels/emu.cpp")
        .flag_if_supported("-fno-strict-aliasing")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unknown-pragmas")
        .opt_level(1)
        .compile("aha_cuda_emu");
    // The emulation starts threads.
    println!("cargo:rustc-link-lib=pthread");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        ptx();
    }
}

/// nvcc → `$OUT_DIR/decode.ptx`, for the compute capability `CUDA_COMPUTE_CAP` (default 80: the
/// PTX is compiled again by the driver for newer GPUs).
fn ptx() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("decode.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string());
    let cap: String = cap.chars().filter(|c| c.is_ascii_digit()).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", "-lineinfo"])
        .arg(format!("-arch=compute_{cap}"))
        .arg("-o")
        .arg(&out)
        .arg("kernels/decode.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("nvcc failed ({s}) compiling crates/aha-cuda/kernels/decode.cu"),
        Err(e) => panic!(
            "the `cuda` feature needs nvcc ({nvcc}: {e}): put CUDA's bin folder on PATH, or \
             build with tools/build-cuda.sh, which installs it from PyPI"
        ),
    }
}
