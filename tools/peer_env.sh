# Shared set-up for the llama.cpp comparison scripts (sourced, not run): builds aha if needed,
# picks the model and thread count, and installs node-llama-cpp 3.21.1 into ~/.cache/aha-peer.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aha-target}"
AHA="$CARGO_TARGET_DIR/release/aha"
[ -x "$AHA" ] || cargo build --release
MODEL="${1:-$("$AHA" models --json | python3 -c 'import sys,json;[print(m["path"]) for m in map(json.loads,sys.stdin) if m["name"]=="qwen2.5-coder-0.5b"]')}"
THREADS="${2:-$(nproc)}"
[ -f "$MODEL" ] || "$AHA" pull qwen2.5-coder-0.5b
PEER="${AHA_PEER_DIR:-$HOME/.cache/aha-peer}"
if [ ! -d "$PEER/node_modules/node-llama-cpp" ]; then
  mkdir -p "$PEER" && (cd "$PEER" && npm init -y >/dev/null && npm install --silent node-llama-cpp@3.21.1)
fi
