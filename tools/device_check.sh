#!/usr/bin/env bash
# The GPU device check for the `cuda` feature (issue 7), run on the lent GPU machine (no network).
# Here: tools/build-cuda.sh, then `strip` + gzip the binary into dist/aha.gz (what travels is
# limited to 64 MiB) and carry `dist`:
#   run: bash tools/device_check.sh      (results under $OUT, or ./device-out)
# There: writes random-weight models with the shapes of DeepSeek-R1-Distill-Qwen-1.5B and -7B
# (Q4_K and Q8_0 GGUF, bf16 safetensors), benchmarks aha on CUDA (prefill 512, decode 128), runs
# PyTorch + transformers on the bf16 checkpoints as the peer (tools/peer_transformers.py, which
# also measures the copy bandwidth), and compares CPU and CUDA greedy tokens on small models.
# Every step has its own time limit, so one failure still leaves the others' figures.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device-out}"
W="${WORK:-/tmp/aha-dev}"
mkdir -p "$OUT" "$W"
S="$OUT/summary.txt"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -f dist/aha.gz ]; then gunzip -c dist/aha.gz > "$W/aha" && chmod +x "$W/aha"; AHA="$W/aha"; else AHA="${AHA:-dist/aha}"; fi
# cuBLAS, cuRAND, NVRTC and the runtime come from the image's PyTorch (CUDA 13 wheels); libcuda
# from the driver.
NV="$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null)"
export LD_LIBRARY_PATH="$NV/cu13/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log() { echo "== $*" | tee -a "$S"; }
step() { local t=$1; shift; local s=$(date +%s.%N); timeout "$t" "$@"; local rc=$?;
  echo "   (rc $rc, $(python3 -c "print(round($(date +%s.%N)-$s,1))") s: $*)" | tee -a "$S"; return $rc; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$S"
ldd "$AHA" | grep -E "not found|cuda|cublas|nvrtc|curand" | tee -a "$S"
"$AHA" --version | tee -a "$S"
log "synth models (16 cores)"
step 120 "$AHA" synth --shape tiny --dtype f32 --out "$W/tiny-f32.gguf"
step 120 "$AHA" synth --shape tiny --dtype q8_0 --out "$W/tiny-q8.gguf"
step 120 "$AHA" synth --shape tiny --dtype q4_k --out "$W/tiny-q4k.gguf"
step 120 "$AHA" synth --shape r1-qwen-1.5b --dtype q4_k --out "$W/r1-1.5b-q4k.gguf"
step 120 "$AHA" synth --shape r1-qwen-1.5b --dtype st-bf16 --out "$W/r1-1.5b-bf16"
step 240 "$AHA" synth --shape r1-qwen-7b --dtype q4_k --out "$W/r1-7b-q4k.gguf"
step 240 "$AHA" synth --shape r1-qwen-7b --dtype st-bf16 --out "$W/r1-7b-bf16"
log "cpu vs cuda greedy: 3 prompts x 16 tokens"
for m in tiny-f32.gguf tiny-q8.gguf tiny-q4k.gguf; do
  for p in "abc" "hello world" "1 2 3 4"; do
    c=$(timeout 60 "$AHA" run --device cpu -m "$W/$m" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1)
    g=$(timeout 60 "$AHA" run --device cuda -m "$W/$m" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1)
    python3 -c "import json,sys
try:
  a=json.loads(sys.argv[1])['tokens']; b=json.loads(sys.argv[2])['tokens']
  print(sys.argv[3], 'SAME' if a==b else 'DIFF', a, b)
except Exception as e: print(sys.argv[3], 'ERROR', e, sys.argv[1][:200], sys.argv[2][:200])" "$c" "$g" "$m" | tee -a "$S"
  done
done
log "aha bench on cuda (median of 3)"
for m in r1-1.5b-q4k.gguf r1-1.5b-bf16 r1-7b-q4k.gguf r1-7b-bf16; do
  step 150 "$AHA" bench --device cuda -m "$W/$m" -p 512 -n 128 -r 3 --json | tee -a "$S"
done
log "prefix reuse on cuda (1.5B q4k, 2000-token conversation + 50)"
step 120 "$AHA" bench --device cuda -m "$W/r1-1.5b-q4k.gguf" -p 2000 -n 8 --prefix-reuse --json | tee -a "$S"
log "peer: transformers bf16"
export PYTHONUNBUFFERED=1
step 240 python3 tools/peer_transformers.py "$W/r1-7b-bf16" 512 128 | tee -a "$S"
step 150 python3 tools/peer_transformers.py "$W/r1-1.5b-bf16" 512 128 | tee -a "$S"
log "q8_0 on cuda (1.5B)"
step 120 "$AHA" synth --shape r1-qwen-1.5b --dtype q8_0 --out "$W/r1-1.5b-q8.gguf"
step 120 "$AHA" bench --device cuda -m "$W/r1-1.5b-q8.gguf" -p 512 -n 128 -r 3 --json | tee -a "$S"
log "done"
