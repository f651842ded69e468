#!/usr/bin/env bash
# Time to first token of `aha run --agent MESSAGE` with a warm prompt cache, with the cache off
# (AHA_PROMPT_CACHE=off: the system prompt and tools prefilled every time), and of plain
# `aha run MESSAGE`, alternating in one run; medians of ROUNDS, from `--json`'s turn_finished
# `ttft_ms`. The agent's workspace and the data folder (the cache) are temporary.
#   tools/ttft.sh [MODEL] [THREADS] [ROUNDS] [MESSAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-qwen2.5-coder-0.5b}"
THREADS="${2:-2}"
ROUNDS="${3:-3}"
MESSAGE="${4:-hi}"
AHA="${AHA:-${CARGO_TARGET_DIR:-target}/release/aha}"
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
mkdir -p "$DATA/ws"
: > "$DATA/config.toml"
export AHA_DATA_DIR="$DATA" AHA_CONFIG="$DATA/config.toml"

# Prints "TTFT_MS PROMPT_TOKENS PREFILLED_TOKENS" of one run of aha with the given arguments.
ttft() {
  "$AHA" run -m "$MODEL" -t "$THREADS" --json --temperature 0 --max-tokens 1 "$@" "$MESSAGE" |
    jq -r 'select(.type == "turn_finished") | "\(.stats.ttft_ms) \(.stats.prompt_tokens) \(.stats.prefilled_tokens)"' |
    tail -1
}
agent=(--agent --max-steps 1 --workspace "$DATA/ws")

# The first agent run fills the cache; it is not counted.
read -r first_ms first_prompt first_prefilled < <(ttft "${agent[@]}")
echo "filling the cache: ${first_ms} ms, ${first_prefilled} of ${first_prompt} tokens prefilled" >&2
warm=() cold=() plain=()
for r in $(seq "$ROUNDS"); do
  read -r w wp wf < <(ttft "${agent[@]}")
  read -r c cp cf < <(AHA_PROMPT_CACHE=off ttft "${agent[@]}")
  read -r p pp pf < <(ttft)
  echo "round $r: warm ${w} ms (${wf}/${wp} prefilled), cold ${c} ms (${cf}/${cp}), plain ${p} ms (${pf}/${pp})" >&2
  warm+=("$w") cold+=("$c") plain+=("$p")
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
W=$(median "${warm[@]}")
C=$(median "${cold[@]}")
P=$(median "${plain[@]}")
awk -v w="$W" -v c="$C" -v p="$P" -v m="$MODEL" -v t="$THREADS" -v n="$ROUNDS" -v msg="$MESSAGE" 'BEGIN {
  printf "model %s, %s threads, message \"%s\", median of %s\n", m, t, msg, n
  printf "agent, warm cache:  %8.0f ms  (%.2fx plain)\n", w, w / p
  printf "agent, cache off:   %8.0f ms  (%.2fx plain, %.1fx warm)\n", c, c / p, c / w
  printf "plain aha run:      %8.0f ms\n", p
}'
