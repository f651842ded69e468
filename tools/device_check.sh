#!/usr/bin/env bash
# The GPU device check for the `cuda` feature (issue 7), run on the lent GPU machine (no network).
# Here: tools/build-cuda.sh, then `strip` + gzip the binary into dist/aha.gz (what travels is
# limited to 64 MiB) and carry `dist`:
#   run: bash tools/device_check.sh      (results under $OUT, or ./device-out)
#   QUICK=1 skips the peer and the 1.5B shapes (a second run after a change to aha); QUICK=2
#   compares CUDA event tracking on/off on the 7B shapes.
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
if [ "${QUICK:-}" = 2 ]; then
  # Event tracking on (candle's default) vs off (aha's default), same binary, same run.
  step 60 "$AHA" synth --shape tiny --dtype f32 --out "$W/tiny-f32.gguf" >/dev/null
  for p in "abc" "hello world"; do
    for d in cpu cuda; do timeout 60 "$AHA" run --device $d -m "$W/tiny-f32.gguf" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1 | cut -c 1-400 | tee -a "$S"; done
  done
  step 150 "$AHA" synth --shape r1-qwen-7b --dtype st-bf16 --out "$W/r1-7b-bf16"
  AHA_CUDA_EVENTS=1 step 120 "$AHA" bench --device cuda -m "$W/r1-7b-bf16" -p 512 -n 128 -r 3 --json | tee -a "$S"
  step 120 "$AHA" bench --device cuda -m "$W/r1-7b-bf16" -p 512 -n 128 -r 3 --json | tee -a "$S"
  rm -rf "$W/r1-7b-bf16"
  step 150 "$AHA" synth --shape r1-qwen-7b --dtype q4_k --out "$W/r1-7b-q4k.gguf"
  AHA_CUDA_EVENTS=1 step 120 "$AHA" bench --device cuda -m "$W/r1-7b-q4k.gguf" -p 512 -n 128 -r 3 --json | tee -a "$S"
  step 120 "$AHA" bench --device cuda -m "$W/r1-7b-q4k.gguf" -p 512 -n 128 -r 3 --json | tee -a "$S"
  log "done (quick 2)"; exit 0
fi
log "tiny models; cpu vs cuda greedy: 3 prompts x 16 tokens"
for d in f32 q8_0 q4_0; do step 60 "$AHA" synth --shape tiny --dtype $d --out "$W/tiny-$d.gguf" >/dev/null; done
if ! timeout 60 "$AHA" run --device cuda -m "$W/tiny-f32.gguf" --raw --max-tokens 4 "abc"; then
  log "CUDA does not work here: diagnostics, then stop (saves device time)"
  ls "$NV/cu13/lib" | head -40; ldconfig -p | grep -E "libcuda|libcublas|libcurand|libnvrtc" ; ls /usr/local/nvidia/lib64 | head
  exit 3
fi
for m in tiny-f32 tiny-q8_0 tiny-q4_0; do
  for p in "abc" "hello world" "1 2 3 4"; do
    c=$(timeout 60 "$AHA" run --device cpu -m "$W/$m.gguf" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1)
    g=$(timeout 60 "$AHA" run --device cuda -m "$W/$m.gguf" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1)
    python3 -c "import json,sys
try:
  a=json.loads(sys.argv[1])['tokens']; b=json.loads(sys.argv[2])['tokens']
  n=next((i for i,(x,y) in enumerate(zip(a,b)) if x!=y), min(len(a),len(b)))
  print(sys.argv[3], repr(sys.argv[4]), 'SAME' if a==b else f'DIFF from token {n}', a, b)
except Exception as e: print(sys.argv[3], 'ERROR', e, sys.argv[1][:200], sys.argv[2][:200])" "$c" "$g" "$m" "$p" | tee -a "$S"
  done
done
export PYTHONUNBUFFERED=1
log "7B shapes: Q4_K on cuda"
step 150 "$AHA" synth --shape r1-qwen-7b --dtype q4_k --out "$W/r1-7b-q4k.gguf"
step 120 "$AHA" bench --device cuda -m "$W/r1-7b-q4k.gguf" -p 512 -n 128 -r 3 --json | tee -a "$S"
log "7B shapes: bf16 on cuda, and the peer (transformers bf16)"
step 150 "$AHA" synth --shape r1-qwen-7b --dtype st-bf16 --out "$W/r1-7b-bf16"
step 120 "$AHA" bench --device cuda -m "$W/r1-7b-bf16" -p 512 -n 128 -r 3 --json | tee -a "$S"
[ -n "${QUICK:-}" ] || step 180 python3 tools/peer_transformers.py "$W/r1-7b-bf16" 512 128 | tee -a "$S"
rm -rf "$W/r1-7b-bf16"
[ -n "${QUICK:-}" ] && { log "done (quick)"; exit 0; }
log "1.5B shapes: Q4_K, Q8_0, bf16; prefix reuse"
step 60 "$AHA" synth --shape r1-qwen-1.5b --dtype q4_k --out "$W/r1-1.5b-q4k.gguf"
step 60 "$AHA" bench --device cuda -m "$W/r1-1.5b-q4k.gguf" -p 512 -n 128 -r 3 --json | tee -a "$S"
step 60 "$AHA" bench --device cuda -m "$W/r1-1.5b-q4k.gguf" -p 2000 -n 8 --prefix-reuse --json | tee -a "$S"
step 60 "$AHA" synth --shape r1-qwen-1.5b --dtype q8_0 --out "$W/r1-1.5b-q8.gguf"
step 60 "$AHA" bench --device cuda -m "$W/r1-1.5b-q8.gguf" -p 512 -n 128 -r 3 --json | tee -a "$S"
step 60 "$AHA" synth --shape r1-qwen-1.5b --dtype st-bf16 --out "$W/r1-1.5b-bf16"
step 60 "$AHA" bench --device cuda -m "$W/r1-1.5b-bf16" -p 512 -n 128 -r 3 --json | tee -a "$S"
step 120 python3 tools/peer_transformers.py "$W/r1-1.5b-bf16" 512 128 | tee -a "$S"
log "done"
