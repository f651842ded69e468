#!/usr/bin/env bash
# Op-by-op comparison of aha and llama.cpp on one prompt: both engines write every activation of
# the prompt's forward pass (aha through AHA_DUMP, llama.cpp through its eval callback in
# tools/llama_dump.c, built here against node-llama-cpp's prebuilt libraries and the llama.cpp
# source it bundles), and tools/compare_dumps.py lists where they first differ.
#   tools/dump_vs_llamacpp.sh "PROMPT" [MODEL.gguf] [THREADS]
# AHA_NUMERICS defaults to ggml here (llama.cpp's rounding); set AHA_NUMERICS= for the default.
set -euo pipefail
PROMPT="$1"
shift
source "$(dirname "$0")/peer_env.sh"
BINS="$(dirname "$(find "$PEER/node_modules/@node-llama-cpp" -name 'libllama.v*.so' -path '*linux-x64/*' | head -1)")"
SRC="$HOME/.cache/aha-peer/llama-src"
if [ ! -d "$SRC/include" ]; then
  git clone -q "$PEER/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$SRC"
fi
DUMP="$HOME/.cache/aha-peer/llama_dump"
if [ ! -x "$DUMP" ] || [ tools/llama_dump.c -nt "$DUMP" ]; then
  gcc -O1 -o "$DUMP" tools/llama_dump.c -I"$SRC/include" -I"$SRC/ggml/include" \
    "$BINS"/libllama.v*.so "$BINS"/libggml.v*.so "$BINS/libggml-base.so" -Wl,-rpath,"$BINS"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/llama" "$WORK/aha"
IDS="$("$AHA" tokenize -m "$MODEL" "$PROMPT" | tr -d '[] ')"
LLBINS="$BINS" "$DUMP" "$MODEL" "$THREADS" "$WORK/llama" -1 "$IDS" 2>/dev/null
AHA_NUMERICS="${AHA_NUMERICS-ggml}" AHA_DUMP="$WORK/aha" "$AHA" run -m "$MODEL" -t "$THREADS" --raw \
  --temperature 0 --max-tokens 1 "$PROMPT" >/dev/null 2>&1
python3 tools/compare_dumps.py "$WORK/llama" "$WORK/aha/1"
