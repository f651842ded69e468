#!/usr/bin/env bash
# Builds aha with the `cuda` feature on a machine without a GPU: CUDA's compiler and headers come
# from PyPI wheels (nvidia-cuda-nvcc, -runtime, -cccl, -crt: CUDA 13) installed into a local prefix.
#   tools/build-cuda.sh            → $CARGO_TARGET_DIR (default ~/.cache/aha-target-cuda)/release/aha
#   tools/build-cuda.sh check      → `cargo check` only (what CI runs so the feature never rots;
#                                    the kernels are still compiled to PTX by nvcc)
# CUDA_COMPUTE_CAP defaults to 90 (H100/H200). The binary targets x86-64-v3 rather than this host's
# CPU so it runs on the GPU machine; aha's own decode kernels still pick AVX-512 at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
# The compiler's version must not be newer than the GPU machine's driver: candle ships its kernels
# as PTX that the driver compiles at load time, and driver 580 (CUDA 13.0) rejects the PTX ISA 9.5
# that nvcc 13.5 writes ("unsupported PTX version"). Hence nvcc 13.0, pinned.
CUDA_VER="${AHA_CUDA_VERSION:-13.0}"
PREFIX="${AHA_CUDA_PREFIX:-$HOME/.cache/aha-cuda/py$CUDA_VER}"
LIBS="${AHA_CUDA_LIBS:-$HOME/.cache/aha-cuda/libs}"
STUBS="$HOME/.cache/aha-cuda/linkstubs"
if [ ! -x "$PREFIX/nvidia/cu13/bin/nvcc" ]; then
  python3 -m pip install -q --target "$PREFIX" "nvidia-cuda-nvcc==$CUDA_VER.*" "nvidia-cuda-runtime==$CUDA_VER.*" \
    "nvidia-cuda-cccl==$CUDA_VER.*" "nvidia-cuda-crt==$CUDA_VER.*" "nvidia-nvvm==$CUDA_VER.*"
fi
export CUDA_ROOT="$PREFIX/nvidia/cu13"
export CUDA_PATH="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# cudarc binds the driver API of this version (loaded at run time); 13040 is the newest it knows.
# On a GPU host whose driver is older, set CUDARC_CUDA_VERSION=12080.
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
if [ "${1:-}" != check ]; then
# The libraries candle links against (cuBLAS, cuRAND, NVRTC, the runtime), CUDA 13 like the GPU
# machine's PyTorch; pip --target will not add to an existing folder, hence a second prefix.
if [ ! -d "$LIBS/nvidia/cu13/lib" ]; then
  python3 -m pip install -q --target "$LIBS" nvidia-cublas nvidia-curand nvidia-cuda-nvrtc nvidia-cuda-runtime
fi
# Link-time stand-ins: libcuda comes with the driver, so link against a stub that defines the
# driver API symbols (resolved from the real libcuda.so.1 at run time), and expose the wheels'
# versioned libraries under the names the linker looks for.
if [ ! -f "$STUBS/libcuda.so" ]; then
  mkdir -p "$STUBS"
  python3 tools/cuda_stub.py "$CUDA_ROOT" "$STUBS/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUBS/libcuda.so" "$STUBS/cuda_stub.c"
fi
for l in cublas cublasLt curand nvrtc cudart; do
  ln -sf "$(ls "$LIBS"/nvidia/cu13/lib/lib$l.so.* | head -1)" "$STUBS/lib$l.so"
done
export LIBRARY_PATH="$STUBS${LIBRARY_PATH:+:$LIBRARY_PATH}"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aha-target-cuda}"
export RUSTFLAGS="${RUSTFLAGS:--C target-cpu=x86-64-v3}"
nvcc --version | tail -1
if [ "${1:-}" = check ]; then
  shift
  cargo check --release --locked --features cuda "$@"
  echo "cuda feature: checked"
else
  cargo build --release --features cuda "$@"
  echo "built: $CARGO_TARGET_DIR/release/aha"
fi
