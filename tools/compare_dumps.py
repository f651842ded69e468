#!/usr/bin/env python3
"""Compares llama.cpp's activations (tools/llama_dump.c) with aha's (AHA_DUMP) op by op.

    compare_dumps.py LLAMA_DIR AHA_DIR [LAYERS]

For each activation, in graph order: the relative difference (norm of the difference over the
norm of llama.cpp's), the largest absolute difference and the share of values that are equal
bit for bit. The first line that is not exact is where the two engines start to part.
"""
import math
import os
import sys
from array import array

STAGES = ["attn_norm", "Qcur", "Kcur", "Vcur", "kqv_out", "attn_out", "ffn_inp", "ffn_norm",
          "ffn_gate", "ffn_up", "ffn_swiglu", "ffn_out", "l_out"]


def load(path):
    a = array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def main():
    ld, ad = sys.argv[1], sys.argv[2]
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else None
    files, prev = {}, None
    for line in open(os.path.join(ld, "index.txt")):
        seq, name, *_, op = line.split()
        path = os.path.join(ld, f"{seq}_{name}_{op}.bin".replace("(", "_").replace(")", "_"))
        if name.startswith("node_") and op == "MUL_MAT" and prev and prev.startswith("kqv_out"):
            name = "attn_out-" + prev.split("-")[1]  # the output projection has no name
        if op != "VIEW" and os.path.exists(path):
            files[name] = path  # the last op of a name wins (RoPE for Q and K)
        prev = name
    if layers is None:
        layers = 1 + max(int(n.split("-")[1]) for n in files if n.startswith("l_out-"))
    names = [f"{s}-{i}" for i in range(layers) for s in STAGES] + ["result_norm", "result_output"]
    exact_so_far = True
    for n in names:
        a = os.path.join(ad, f"{n}.bin")
        if n not in files or not os.path.exists(a):
            continue
        x, y = load(files[n]), load(a)
        if len(x) != len(y):
            if len(y) > len(x) and len(y) % len(x) == 0:
                y = y[len(y) - len(x):]  # llama.cpp keeps only the last row in the last layer
            else:
                print(f"{n:16s} sizes differ: {len(x)} vs {len(y)}")
                continue
        diff = [b - a for a, b in zip(x, y)]
        norm = math.sqrt(sum(v * v for v in x)) or 1e-30
        rel = math.sqrt(sum(d * d for d in diff)) / norm
        same = sum(d == 0 for d in diff) / len(diff) * 100
        mark = "" if rel == 0 else ("  <- first difference" if exact_so_far else "")
        exact_so_far &= rel == 0
        print(f"{n:16s} rel {rel:9.2e}  max|diff| {max(map(abs, diff)):9.2e}  "
              f"exact {same:5.1f}%{mark}")
    print("bit for bit identical" if exact_so_far else "the engines differ")


if __name__ == "__main__":
    main()
