#!/usr/bin/env bash
# The cost of `aha serve`: the same model, prompt, threads and greedy settings through `aha run`
# (in-process) and through the HTTP API (streamed, measured by the client), alternating, in one run.
#   tools/bench_serve.sh [MODEL] [THREADS] [GEN_TOKENS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-qwen2.5-coder-0.5b}"
THREADS="${2:-2}"
GEN="${3:-128}"
ROUNDS="${4:-3}"
AHA="${AHA:-${CARGO_TARGET_DIR:-target}/release/aha}"
PROMPT="Write a long story about a dragon who learns to program."
LOG=$(mktemp)
"$AHA" serve -m "$MODEL" -t "$THREADS" --port 0 2> "$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 600); do grep -q "at http://" "$LOG" && break; sleep 0.2; done
URL=$(grep -o "http://[0-9.:]*/v1" "$LOG" | head -1)
run_cli() {
  "$AHA" run -m "$MODEL" -t "$THREADS" --json --temperature 0 --max-tokens "$GEN" "$PROMPT" |
    python3 -c 'import json,sys
for l in sys.stdin:
    e = json.loads(l)
    if e["type"] == "turn_finished":
        s = e["stats"]; print(json.dumps({"decode": s["decode_tok_s"], "tokens": s["answer_tokens"] + s["thinking_tokens"], "ttft": s["ttft_ms"] / 1000}))'
}
run_http() {
  python3 - "$URL" "$MODEL" "$GEN" "$PROMPT" <<'PY'
import json, sys, time, urllib.request
url, model, gen, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                   "max_tokens": gen, "stream": True, "stream_options": {"include_usage": True}}).encode()
req = urllib.request.Request(url + "/chat/completions", body, {"Content-Type": "application/json"})
t0 = time.time(); first = last = None; usage = None
with urllib.request.urlopen(req) as r:
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        c = json.loads(line[6:])
        if c.get("usage"):
            usage = c["usage"]
        if any(ch["delta"].get("content") or ch["delta"].get("reasoning_content") for ch in c["choices"]):
            now = time.time(); first = first or now; last = now
n = usage["completion_tokens"]
print(json.dumps({"decode": (n - 1) / (last - first), "tokens": n, "ttft": first - t0}))
PY
}
cli=(); http=()
for _ in $(seq "$ROUNDS"); do
  cli+=("$(run_cli)")
  http+=("$(run_http)")
done
python3 - "$MODEL" "$THREADS" "$GEN" "${#cli[@]}" "${cli[@]}" "${http[@]}" <<'PY'
import json, statistics, sys
model, threads, gen, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
a = [json.loads(x) for x in sys.argv[5:5 + n]]
b = [json.loads(x) for x in sys.argv[5 + n:5 + 2 * n]]
med = lambda xs, k: statistics.median(x[k] for x in xs)
print(f"{model}, {threads} threads, up to {gen} tokens greedy, {n} rounds (median); tokens: run {med(a, 'tokens'):.0f}, http {med(b, 'tokens'):.0f}")
print(f"{'':12} {'aha run':>9} {'aha serve':>10} {'ratio':>7}")
x, y = med(a, "decode"), med(b, "decode")
print(f"{'decode tok/s':12} {x:9.1f} {y:10.1f} {y / x:7.2f}x")
x, y = med(a, "ttft"), med(b, "ttft")
print(f"{'ttft s':12} {x:9.2f} {y:10.2f} {y / x:7.2f}x   (run: after loading; serve: model already loaded, KV prefix reused)")
PY
