#!/usr/bin/env bash
# Correctness against llama.cpp on the same GGUF: greedy continuations of 5 fixed prompts (first
# 32 tokens compared) and perplexity on a fixed ≥2,000-token text (Korean constitution, from the
# konlpy wheel on PyPI, fetched here and not committed). Both of aha's numerics are checked:
# AHA_NUMERICS=ggml (llama.cpp's rounding, bit for bit) and the default.
#   tools/check_vs_llamacpp.sh [MODEL.gguf] [THREADS]     (AHA_CHECK_SKIP_PPL=1: greedy part only)
set -euo pipefail
source "$(dirname "$0")/peer_env.sh"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
pip download --no-deps -q -d "$WORK" konlpy==0.6.0
python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2],'wb').write(z.read('konlpy/data/corpus/kolaw/constitution.txt'))" "$WORK"/konlpy-*.whl "$WORK/text.txt"
python3 - "$AHA" "$MODEL" "$THREADS" "$WORK" <<'PY'
import json, os, subprocess, sys
aha, model, threads, work = sys.argv[1:5]
prompts = [
    "def fibonacci(n):\n",
    "The three primary colors are",
    "Once upon a time, in a small village by the sea,",
    "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
    "// Rust: read a file line by line\nuse std::io::",
]
N = 32
MODES = [("ggml", "AHA_NUMERICS=ggml"), ("", "default numerics")]


def env(mode):
    return dict(os.environ, AHA_NUMERICS=mode)


peers = []
for p in prompts:
    ids = json.loads(subprocess.check_output([aha, "tokenize", "-m", model, p]))
    peers.append(json.loads(subprocess.check_output(
        ["node", "tools/llama_peer.mjs", "greedy-ids", model, threads, str(N)], input=json.dumps(ids).encode()))["ids"])
for mode, label in MODES:
    agree = 0
    for p, peer in zip(prompts, peers):
        out = subprocess.check_output([aha, "run", "-m", model, "-t", threads, "--raw", "--json",
                                       "--temperature", "0", "--max-tokens", str(N), p], env=env(mode))
        ours = [json.loads(l) for l in out.decode().splitlines()][-1]["tokens"]
        same = 0
        while same < min(len(ours), len(peer)) and ours[same] == peer[same]:
            same += 1
        ok = same >= min(N, len(peer), len(ours)) and len(ours) > 0
        agree += ok
        print(f"{'MATCH' if ok else 'DIFF '} {same:2d}/{N} identical greedy tokens  prompt={p[:40]!r}")
    print(f"greedy, {label}: {agree}/5 prompts match for the first {N} tokens")
if os.environ.get("AHA_CHECK_SKIP_PPL") == "1":
    sys.exit(0)
text = open(f"{work}/text.txt", encoding="utf-8").read()[:5000]
open(f"{work}/ppl.txt", "w", encoding="utf-8").write(text)
ids = json.loads(subprocess.check_output([aha, "tokenize", "-m", model, text]))
peer = json.loads(subprocess.check_output(["node", "tools/llama_peer.mjs", "ppl", model, threads, "512"], input=json.dumps(ids).encode()))
for mode, label in MODES:
    ours = json.loads(subprocess.check_output([aha, "perplexity", "-m", model, "-t", threads, "--ctx", "512", "--json", f"{work}/ppl.txt"], env=env(mode)))
    d = abs(ours["perplexity"] - peer["perplexity"]) / peer["perplexity"] * 100
    print(f"perplexity over {len(ids)} tokens (windows of 512), {label}: aha {ours['perplexity']:.4f}  llama.cpp {peer['perplexity']:.4f}  difference {d:.2f}%")
PY
