"""The targets of the GPU device check (tools/device_check.sh), from its bench lines and the copy
bandwidth:

    python3 tools/device_summary.py BENCH_JSONL BANDWIDTH_JSON
"""
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
try:
    bw = json.load(open(sys.argv[2]))["copy_gb_s"]
except Exception:
    bw = None
def get(shape, path):
    for r in rows:
        if r.get("shape") == shape and str(r.get("decode_path", "")).split(" ")[0] == path:
            return r
for r in rows:
    print(f"{r['shape']:<9} {r.get('decode_path','?'):<8} decode {r['decode_tok_s']:8.1f} tok/s  prefill {r['prefill_tok_s']:9.1f} tok/s  {r['weights_gb_per_token']:.2f} GB/token")
g7 = get("7b-bf16", "graph")
if g7 and bw:
    ceil = bw / g7["weights_gb_per_token"]
    print(f"bf16 7B graph: {g7['decode_tok_s']:.1f} tok/s = {100 * g7['decode_tok_s'] / ceil:.0f}% of the ceiling {ceil:.1f} tok/s ({bw} GB/s copy) - target >= 60%")
q, c = get("7b-q4k", "graph"), get("7b-q4k", "candle")
if q and c:
    print(f"Q4_K 7B graph vs candle (today's path): {q['decode_tok_s'] / c['decode_tok_s']:.2f}x - target >= 1.5x")
for dt in ("bf16", "q4k"):
    a, b = get(f"1.5b-{dt}", "graph"), get(f"7b-{dt}", "graph")
    if a and b:
        print(f"{dt} 1.5B vs 7B on the graph: {a['decode_tok_s'] / b['decode_tok_s']:.2f}x - target >= 2x")
