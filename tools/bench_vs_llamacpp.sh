#!/usr/bin/env bash
# aha vs llama.cpp on the same GGUF, same threads, same prompt token ids, in one run.
#   tools/bench_vs_llamacpp.sh [MODEL.gguf] [THREADS] [PROMPT_TOKENS] [GEN_TOKENS] [ROUNDS]
# llama.cpp comes from node-llama-cpp 3.21.1 (npm, prebuilt CPU backend), installed on first use
# into ~/.cache/aha-peer. Rounds alternate engines; the median of each is reported.
set -euo pipefail
source "$(dirname "$0")/peer_env.sh"
P="${3:-512}"
G="${4:-128}"
ROUNDS="${5:-2}"
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
  aha_runs+=("$("$AHA" bench -m "$MODEL" -t "$THREADS" -p "$P" -n "$G" --json)")
  peer_runs+=("$(node tools/llama_peer.mjs bench "$MODEL" "$THREADS" "$P" "$G" < "$IDS")")
done
python3 - "$THREADS" "$P" "$G" "${#aha_runs[@]}" "${aha_runs[@]}" "${peer_runs[@]}" <<'PY'
import json, statistics, sys
threads, p, g, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
a = [json.loads(x) for x in sys.argv[5:5 + n]]
b = [json.loads(x) for x in sys.argv[5 + n:5 + 2 * n]]
med = lambda xs, k: statistics.median(x[k] for x in xs)
print(f"threads {threads}, prompt {p} tokens, generate {g} tokens, {n} rounds (median)")
print(f"{'':10} {'aha':>10} {'llama.cpp':>10} {'ratio':>7}")
for k in ["prefill_tok_s", "decode_tok_s"]:
    x, y = med(a, k), med(b, k)
    print(f"{k[:-6]:10} {x:10.1f} {y:10.1f} {x / y:7.2f}x")
print(f"aha peak RSS {med(a, 'peak_rss_mb'):.0f} MB, ttft {med(a, 'ttft_ms'):.0f} ms")
PY
rm -f "$IDS"
