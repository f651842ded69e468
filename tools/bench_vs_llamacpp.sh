#!/usr/bin/env bash
# aha vs llama.cpp on the same GGUF, same threads, same prompt token ids, in one run.
#   tools/bench_vs_llamacpp.sh [--variant V] [--ctx N] [MODEL.gguf] [THREADS] [PROMPT_TOKENS] [GEN_TOKENS] [ROUNDS]
#
# --variant picks one instruction-set level for both engines, so that a machine with AVX-512
# can still measure the AVX2 paths against llama.cpp's AVX2 build:
#   native      both engines at their best for this CPU (default)
#   avx2        aha built for x86-64-v3 with AHA_KERNELS=avx2, llama.cpp's haswell library
#   avxvnni     aha built for x86-64-v3 with AHA_KERNELS=avxvnni, llama.cpp's alderlake library
#   avx512vnni  aha built for this CPU with AHA_KERNELS=avx512vnni, llama.cpp's icelake library
# llama.cpp (node-llama-cpp) loads every libggml-cpu-*.so in its bins folder and keeps the best
# this CPU runs; a variant gets its own copy of the package with only the one library.
# (The prompt GEMM's `gemm` crate picks AVX-512 at run time where the CPU has it, whatever the
# variant: on an AVX-512 machine `avx2` restricts aha's quantized kernels and compiled code, not it.)
# --ctx N runs at an N-token context: an N-token prompt, then GEN_TOKENS decoded after it
# (llama.cpp's context is sized above both). Same as giving PROMPT_TOKENS.
# llama.cpp comes from node-llama-cpp 3.21.1 (npm, prebuilt CPU backend), installed on first use
# into ~/.cache/aha-peer. Rounds alternate engines; the median of each is reported.
set -euo pipefail
VARIANT=native
CTX=
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT="$2"; shift 2 ;;
    --ctx) CTX="$2"; shift 2 ;;
    *) break ;;
  esac
done
source "$(dirname "$0")/peer_env.sh"
P="${CTX:-${3:-512}}"
G="${4:-128}"
ROUNDS="${5:-2}"

case "$VARIANT" in
  native) LIB= ;;
  avx2) LIB=haswell; V3=1 ;;
  avxvnni) LIB=alderlake; V3=1 ;;
  avx512vnni) LIB=icelake ;;
  *) echo "unknown --variant $VARIANT (native, avx2, avxvnni, avx512vnni)" >&2; exit 2 ;;
esac
AHA_ENV=()
if [ "$VARIANT" != native ]; then
  AHA_ENV=(AHA_KERNELS="$VARIANT")
  if [ -n "${V3:-}" ]; then
    # An aha whose compiled-in code (candle's kernels, our f32 loops) uses AVX2 at most.
    V3_TARGET="$HOME/.cache/aha-target-v3"
    RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR="$V3_TARGET" cargo build --release --locked -q
    AHA="$V3_TARGET/release/aha"
  fi
  VPEER="$HOME/.cache/aha-peer-$LIB"
  if [ ! -d "$VPEER/node_modules/node-llama-cpp" ]; then
    rm -rf "$VPEER" && cp -a "$PEER" "$VPEER"
    find "$VPEER" -name 'libggml-cpu-*.so' ! -name "libggml-cpu-$LIB.so" -delete
  fi
  export AHA_PEER_DIR="$VPEER"
fi

# The same prompt token ids for both engines: aha's benchmark text, tokenized by aha.
IDS=$(mktemp)
python3 - "$AHA" "$MODEL" "$P" > "$IDS" <<'PY'
import json, subprocess, sys
aha, model, p = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open("assets/bench_prompt.txt").read()
ids = json.loads(subprocess.check_output([aha, "tokenize", "-m", model, text]))
print(json.dumps((ids * (p // len(ids) + 1))[:p]))
PY
aha_runs=(); peer_runs=()
for r in $(seq "$ROUNDS"); do
  aha_runs+=("$(env "${AHA_ENV[@]}" "$AHA" bench -m "$MODEL" -t "$THREADS" -p "$P" -n "$G" --json)")
  peer_runs+=("$(node tools/llama_peer.mjs bench "$MODEL" "$THREADS" "$P" "$G" < "$IDS")")
done
python3 - "$THREADS" "$P" "$G" "$VARIANT" "${#aha_runs[@]}" "${aha_runs[@]}" "${peer_runs[@]}" <<'PY'
import json, statistics, sys
threads, p, g, variant, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
a = [json.loads(x) for x in sys.argv[6:6 + n]]
b = [json.loads(x) for x in sys.argv[6 + n:6 + 2 * n]]
med = lambda xs, k: statistics.median(x[k] for x in xs)
print(f"variant {variant} (aha kernels {a[0].get('kernels')}, llama.cpp {b[0].get('cpu_backend', '?')}), "
      f"threads {threads}, context {p} tokens, generate {g} tokens, {n} rounds (median)")
print(f"{'':10} {'aha':>10} {'llama.cpp':>10} {'ratio':>7}")
for k in ["prefill_tok_s", "decode_tok_s"]:
    x, y = med(a, k), med(b, k)
    print(f"{k[:-6]:10} {x:10.1f} {y:10.1f} {x / y:7.2f}x")
print(f"aha peak RSS {med(a, 'peak_rss_mb'):.0f} MB, ttft {med(a, 'ttft_ms'):.0f} ms")
PY
rm -f "$IDS"
