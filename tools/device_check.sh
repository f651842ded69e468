#!/usr/bin/env bash
# The GPU device check for the `cuda` feature (issue 7). Runs on the lent GPU machine, which has no
# network: build here with tools/build-cuda.sh, `strip` the binary into dist/aha (it must fit in the
# 64 MiB carried), and carry `dist`.
#   run: bash tools/device_check.sh      (writes results under $OUT, or ./device-out)
# It writes random-weight models with DeepSeek-R1-Distill-Qwen-7B's shapes (Q4_K GGUF, bf16
# safetensors), benchmarks aha on CUDA, runs PyTorch + transformers on the bf16 model as the peer,
# measures device-to-device copy bandwidth, and compares CPU and CUDA greedy tokens.
set -uo pipefail
cd "$(dirname "$0")/.."
AHA="${AHA:-dist/aha}"
OUT="${OUT:-device-out}"
W="${WORK:-/tmp/aha-dev}"
mkdir -p "$OUT" "$W"
# cuBLAS, cuRAND, NVRTC and the runtime come from the image's PyTorch (CUDA 13 wheels); libcuda
# from the driver.
NV="$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0] + "/x"))' 2>/dev/null)"
export LD_LIBRARY_PATH="$NV/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ldd "$AHA" | grep -E "not found" && echo "missing libraries above" 
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
log "synth models"
[ -f "$W/r1-7b-q4k.gguf" ] || "$AHA" synth --shape r1-qwen-7b --dtype q4_k --out "$W/r1-7b-q4k.gguf"
[ -d "$W/r1-7b-bf16" ] || "$AHA" synth --shape r1-qwen-7b --dtype st-bf16 --out "$W/r1-7b-bf16"
"$AHA" synth --shape tiny --dtype q8_0 --out "$W/tiny.gguf"
log "aha bench cuda q4_k"
"$AHA" bench --device cuda -m "$W/r1-7b-q4k.gguf" -p 512 -n 128 --json | tee -a "$OUT/summary.txt"
log "aha bench cuda bf16"
"$AHA" bench --device cuda -m "$W/r1-7b-bf16" -p 512 -n 128 --json | tee -a "$OUT/summary.txt"
log "cpu vs cuda greedy (tiny model, 3 prompts, 16 tokens)"
for p in "abc" "hello world" "1 2 3 4"; do
  c=$("$AHA" run --device cpu -m "$W/tiny.gguf" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1)
  g=$("$AHA" run --device cuda -m "$W/tiny.gguf" --raw --json --temperature 0 --max-tokens 16 "$p" | tail -1)
  python3 -c "import json,sys; a=json.loads(sys.argv[1])['tokens']; b=json.loads(sys.argv[2])['tokens']; print('SAME' if a==b else 'DIFF', a, b)" "$c" "$g" | tee -a "$OUT/summary.txt"
done
log "peer: transformers bf16, and HBM copy bandwidth"
python3 - "$W/r1-7b-bf16" <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import sys, time, torch
from transformers import AutoModelForCausalLM
d = torch.device("cuda")
x = torch.empty(4 << 30, dtype=torch.uint8, device=d); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); t = time.time()
for _ in range(10): y.copy_(x)
torch.cuda.synchronize(); bw = 2 * 10 * x.numel() / (time.time() - t) / 1e9
print(f"device-to-device copy: {bw:.0f} GB/s (read+write)")
del x, y
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.bfloat16).to(d).eval()
ids = torch.randint(0, 150000, (1, 512), device=d)
with torch.no_grad():
    m(ids); torch.cuda.synchronize()
    t = time.time(); m(ids); torch.cuda.synchronize(); pf = 512 / (time.time() - t)
    out = m.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8); torch.cuda.synchronize()
    t = time.time(); out = m.generate(ids, max_new_tokens=128, min_new_tokens=128, do_sample=False); torch.cuda.synchronize()
    dt = time.time() - t
nbytes = sum(p.numel() * p.element_size() for n, p in m.named_parameters() if "embed_tokens" not in n)
print(f"transformers bf16: prefill {pf:.0f} tok/s, decode {128/dt:.1f} tok/s (generate incl. prefill), weights read per token {nbytes/1e9:.2f} GB, ceiling {bw/2/ (nbytes/1e9):.0f} tok/s")
PY
log "done"
