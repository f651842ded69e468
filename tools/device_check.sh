#!/usr/bin/env bash
# The GPU device check (issue 20: fused decode kernels and CUDA graphs), run on the lent GPU
# machine (no network) in one go, within 10 minutes. Here, first:
#   tools/build-cuda.sh && mkdir -p dist && strip -o dist/aha ~/.cache/aha-target-cuda/release/aha \
#     && gzip -9f dist/aha
# then with the device tool: run `bash tools/device_check.sh` carrying `dist` (results come back
# under $OUT; elsewhere ./device-out).
#
# There, in order of what the issue's targets need (every step has its own time limit, so one
# failure still leaves the others' figures):
#   1. every fused kernel against its CPU reference on model-sized inputs (aha cuda-check);
#   2. CPU vs CUDA greedy tokens on tiny random models (f32: must be identical);
#   3. the device's copy bandwidth (PyTorch), from which the decode ceiling follows;
#   4. R1-Distill-Qwen-1.5B and -7B shapes (random weights written by `aha synth`): decode on the
#      CUDA graph, the fused kernels without a graph, and candle's ops, same binary, same run
#      (aha bench --decode-paths); on the 7B bf16 checkpoint the logits of the paths compared
#      (aha cuda-check --paths: fused vs candle within 1e-2, graph identical to fused);
#   5. a summary of the targets (tools/device_summary.py): bf16 7B decode as a share of the ceiling, Q4_K
#      graph vs candle, 1.5B vs 7B.
# PEER=1 adds PyTorch + transformers on the 7B bf16 checkpoint (~3 minutes); STEPS="4b 5" runs only
# those sections (bench lines accumulate in $OUT/bench.jsonl across runs in the same $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device-out}"
W="${WORK:-/tmp/aha-dev}"
mkdir -p "$OUT" "$W"
S="$OUT/summary.txt"
B="$OUT/bench.jsonl"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ -f dist/aha.gz ]; then gunzip -c dist/aha.gz > "$W/aha" && chmod +x "$W/aha"; AHA="$W/aha"; else AHA="${AHA:-dist/aha}"; fi
# cuBLAS, cuRAND, NVRTC and the runtime come from the image's PyTorch (CUDA 13 wheels); libcuda
# from the driver.
NV="$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null)"
export LD_LIBRARY_PATH="$NV/cu13/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
# STEPS="4b 5" runs only those sections (a second run after a fix); default: all.
STEPS="${STEPS:-1 2 3 4a 4b 4c 4d 5}"
want() { [[ " $STEPS " == *" $1 "* ]]; }
log() { echo "== [$(( $(date +%s) - T0 )) s] $*" | tee -a "$S"; }
step() { local t=$1; shift; local s=$(date +%s.%N); timeout "$t" "$@"; local rc=$?;
  echo "   (rc $rc, $(python3 -c "print(round($(date +%s.%N)-$s,1))") s: $*)" | tee -a "$S"; return $rc; }
# bench NAME MODEL PATHS: one JSON line per path into $B, tagged with NAME.
bench() { local name=$1 model=$2 paths=$3; shift 3
  step 150 "$AHA" bench --device cuda -m "$model" -p 512 -n 128 -r 3 --json --decode-paths "$paths" "$@" \
    | python3 -c "import json,sys
for l in sys.stdin:
  l=l.strip()
  if l.startswith('{'):
    j=json.loads(l); j['shape']=sys.argv[1]; print(json.dumps(j))" "$name" | tee -a "$B" "$S"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$S"
ldd "$AHA" | grep -E "not found" | tee -a "$S"
"$AHA" --version | tee -a "$S"

if want 1; then
log "1. fused kernels vs CPU references"
step 180 "$AHA" cuda-check --device cuda > "$OUT/kernels.txt" 2>&1
grep -E "FAIL|kernels:|rror" "$OUT/kernels.txt" | tee -a "$S"
if ! grep -q "kernels:" "$OUT/kernels.txt"; then
  log "CUDA does not work here: diagnostics, then stop (saves device time)"
  tail -20 "$OUT/kernels.txt"; ls "$NV/cu13/lib" | head -40; ls /usr/local/nvidia/lib64 | head
  exit 3
fi
fi

if want 2; then
log "2. tiny models: cpu vs cuda (graph path) greedy tokens, 3 prompts x 16 tokens"
for d in f32 q8_0; do step 60 "$AHA" synth --shape tiny --dtype $d --out "$W/tiny-$d.gguf" >/dev/null; done
for m in tiny-f32 tiny-q8_0; do
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
# The decode paths on the f32 model: fused within float rounding of candle, graph identical.
step 60 "$AHA" cuda-check --device cuda -m "$W/tiny-f32.gguf" --paths --no-kernels --tokens 16 --prompt-tokens 8 --tolerance 1e-4 | tee -a "$S"
fi

if want 3; then
log "3. copy bandwidth"
step 60 python3 tools/peer_transformers.py --bandwidth | tee -a "$S" "$OUT/bandwidth.json"
fi

if want 4a; then
log "4a. 1.5B shapes, bf16"
step 90 "$AHA" synth --shape r1-qwen-1.5b --dtype st-bf16 --out "$W/r1-1.5b-bf16" >/dev/null
bench 1.5b-bf16 "$W/r1-1.5b-bf16" graph,candle
rm -rf "$W/r1-1.5b-bf16"
fi

if want 4b; then
log "4b. 7B shapes, bf16: logits of the paths, then speed"
step 150 "$AHA" synth --shape r1-qwen-7b --dtype st-bf16 --out "$W/r1-7b-bf16" >/dev/null
step 120 "$AHA" cuda-check --device cuda -m "$W/r1-7b-bf16" --paths --no-kernels --tokens 32 | tee -a "$S"
bench 7b-bf16 "$W/r1-7b-bf16" graph,fused,candle
[ -n "${PEER:-}" ] && step 180 python3 tools/peer_transformers.py "$W/r1-7b-bf16" 512 128 | tee -a "$S"
rm -rf "$W/r1-7b-bf16"
fi

if want 4c; then
log "4c. 7B shapes, Q4_K"
step 150 "$AHA" synth --shape r1-qwen-7b --dtype q4_k --out "$W/r1-7b-q4k.gguf" >/dev/null
bench 7b-q4k "$W/r1-7b-q4k.gguf" graph,fused,candle
rm -f "$W/r1-7b-q4k.gguf"
fi

if want 4d; then
log "4d. 1.5B shapes, Q4_K"
step 60 "$AHA" synth --shape r1-qwen-1.5b --dtype q4_k --out "$W/r1-1.5b-q4k.gguf" >/dev/null
bench 1.5b-q4k "$W/r1-1.5b-q4k.gguf" graph,candle
rm -f "$W/r1-1.5b-q4k.gguf"
fi

if want 5; then
log "5. targets"
python3 tools/device_summary.py "$B" "$OUT/bandwidth.json" | tee -a "$S"
fi

log "done"
