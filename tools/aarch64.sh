#!/usr/bin/env bash
# Builds and tests aha for 64-bit ARM (aarch64: Apple Silicon's ISA, Graviton, Raspberry Pi) on an
# x86-64 Debian 12 machine: Debian's own Rust toolchain (rustc-web, which ships the arm64 standard
# library as a package) cross-compiles, aarch64-linux-gnu-gcc links, and qemu-user runs the test
# binaries, so the NEON kernels are checked bit for bit without ARM hardware. qemu's timings mean
# nothing: measure speed on real hardware only.
#
#   tools/aarch64.sh setup                    install the toolchain with apt if it is missing
#   tools/aarch64.sh cargo check --all-targets  any cargo command, for aarch64
#   tools/aarch64.sh cargo test -p aha-kernels --release --test bitwise
#                                             the NEON kernels against the scalar reference, in qemu
#
# Known limit: qemu-user 7.2 (Debian 12) hangs in Rust programs that start a thread, and so in
# libtest's harness. ARM code is checked by single-threaded programs without the harness
# (crates/aha-kernels/tests/bitwise.rs). qemu's default CPU has `dotprod`, so both the `neon`
# and the `neon-dotprod` kernels run.
# The target directory defaults to ~/.cache/aha-target-aarch64 (CARGO_TARGET_DIR overrides it).
set -euo pipefail

have_toolchain() {
  [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] \
    && /usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu >/dev/null 2>&1 \
    && [ -d "$(/usr/bin/rustc --print target-libdir --target aarch64-unknown-linux-gnu)" ] \
    && command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null
}

if [ "${1:-}" = setup ]; then
  have_toolchain && exit 0
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  dpkg --print-foreign-architectures | grep -qx arm64 || "${sudo[@]}" dpkg --add-architecture arm64
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user
  have_toolchain || { echo "aarch64.sh: the toolchain is still incomplete after apt-get" >&2; exit 1; }
  exit 0
fi

have_toolchain || { echo "aarch64.sh: no aarch64 toolchain; run '$0 setup' first" >&2; exit 2; }
[ $# -gt 0 ] || set -- cargo test -p aha-kernels --release --test bitwise
[ "$1" = cargo ] && shift
[ $# -gt 0 ] || { echo "aarch64.sh: which cargo command?" >&2; exit 2; }

# Debian's compiler, not rustup's (which has no arm64 standard library unless one adds it).
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aha-target-aarch64}"
# The host's rustflags (target-cpu=native in .cargo/config.toml) must not reach the ARM build.
export CARGO_ENCODED_RUSTFLAGS=""
sub="$1"
shift
exec /usr/bin/cargo "$sub" --target aarch64-unknown-linux-gnu "$@"
