#!/usr/bin/env bash
# How long `/quit` takes to give the shell back while a turn is still prefilling, in the real
# workbench under tmux. The workbench offers tools, so its first prompt is ~1,300 tokens: the
# quit lands in that prefill. Prints one line per try and the median and maximum.
#
#   tools/quit_latency.sh [TRIES] [MODEL]      (defaults: 5, qwen2.5-coder-0.5b)
#
# Needs tmux and a release build ($CARGO_TARGET_DIR/release/aha or target/release/aha).
set -euo pipefail
tries=${1:-5}
model=${2:-qwen2.5-coder-0.5b}
aha="${CARGO_TARGET_DIR:-target}/release/aha"
[ -x "$aha" ] || { echo "build first: cargo build --release" >&2; exit 1; }
sock="aha-quit-$$"
tm() { tmux -L "$sock" "$@"; }
trap 'tm kill-server 2>/dev/null || true' EXIT
wait_for() { # PATTERN TIMEOUT_S
  local end=$((SECONDS + $2))
  until tm capture-pane -p -t t | grep -q -- "$1"; do
    [ $SECONDS -lt $end ] || { echo "timed out waiting for: $1" >&2; tm capture-pane -p -t t >&2; exit 1; }
    sleep 0.02
  done
}
times=()
for i in $(seq 1 "$tries"); do
  data=$(mktemp -d)
  tm kill-server 2>/dev/null || true
  tm new-session -d -s t -x 100 -y 30 "env -i PATH=/usr/bin:/bin HOME=$HOME TERM=xterm-256color LANG=C.UTF-8 AHA_DATA_DIR=$data AHA_PROMPT_CACHE=off PS1='READY$ ' bash --norc --noprofile"
  wait_for 'READY\$' 10
  tm send-keys -t t -l "$aha --model $model"
  tm send-keys -t t Enter
  wait_for 'Ask something' 120
  tm send-keys -t t -l "Explain what a linked list is."
  tm send-keys -t t Enter
  sleep 1.5 # well inside the prefill of the tool-laden first prompt
  tm send-keys -t t -l "/quit"
  t0=$(date +%s.%N)
  tm send-keys -t t Enter
  until [ "$(tm capture-pane -p -t t | grep -c 'READY\$')" -ge 2 ]; do sleep 0.01; done
  t1=$(date +%s.%N)
  saved=$(tm capture-pane -p -t t | grep -c 'saved in' || true)
  ms=$(python3 -c "print(round(($t1 - $t0) * 1000))")
  echo "try $i: $ms ms to the shell (session saved: $([ "$saved" -ge 1 ] && echo yes || echo NO))"
  times+=("$ms")
  rm -rf "$data"
done
python3 - "${times[@]}" <<'PY'
import statistics, sys
t = sorted(int(x) for x in sys.argv[1:])
print(f"/quit during prefill: median {statistics.median(t):.0f} ms, max {t[-1]} ms over {len(t)} tries")
PY
