#!/usr/bin/env python3
"""Validate the RAG-eval query sets against a prepared corpus.

Usage: check_queries.py OUTDIR [QUERY_DIR]

OUTDIR is the directory written by prepare.py. QUERY_DIR (default: the
directory of this script) holds en_queries.jsonl and ko_queries.jsonl.

Checks, for each file:
  * every line is a JSON object {"id", "query", "relevant": [{"path", "contains"}]}
  * ids are unique (across both files) and start with the language prefix
  * at least MIN_QUERIES queries, 1-3 relevant passages each
  * each path lies under the language's directory and exists in OUTDIR
  * each "contains" is 10-80 characters, has no line break, and occurs
    within a single line of its file
Prints how often each substring occurs in its file (a warning above 3) and
exits non-zero on any error.
"""

import json
import os
import sys

MIN_QUERIES = 40
MAX_OCCURRENCES = 3
MIN_LEN, MAX_LEN = 10, 80
LANGS = (("en", "en_queries.jsonl"), ("ko", "ko_queries.jsonl"))


class Report:
    def __init__(self):
        self.errors = 0
        self.warnings = 0

    def error(self, where, msg):
        self.errors += 1
        print(f"ERROR {where}: {msg}")

    def warn(self, where, msg):
        self.warnings += 1
        print(f"WARN  {where}: {msg}")


def load_lines(cache, outdir, rel):
    if rel not in cache:
        path = os.path.join(outdir, rel)
        try:
            with open(path, "r", encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            cache[rel] = None
        else:
            # lines without their terminators (\n, \r\n or a bare \r)
            cache[rel] = (text, text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return cache[rel]


def load(path, rep):
    """Yields (where, obj) for each non-empty line of a JSONL file."""
    if not os.path.exists(path):
        rep.error(path, "missing")
        return
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f.read().split("\n"), 1):
            where = f"{os.path.basename(path)}:{lineno}"
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                rep.error(where, f"invalid JSON: {e}")
                continue
            if not isinstance(obj, dict):
                rep.error(where, "not a JSON object")
                continue
            yield where, obj


def check_file(lang, qpath, outdir, seen_ids, rep, files):
    n_queries = n_passages = 0
    for where, obj in load(qpath, rep):
        extra = set(obj) - {"id", "query", "relevant"}
        if extra:
            rep.warn(where, f"unexpected keys {sorted(extra)}")
        qid, query, rel = obj.get("id"), obj.get("query"), obj.get("relevant")
        if not isinstance(qid, str) or not qid:
            rep.error(where, "missing/empty string id")
            continue
        where = f"{where} [{qid}]"
        if not qid.startswith(lang + "-"):
            rep.error(where, f"id should start with '{lang}-'")
        if qid in seen_ids:
            rep.error(where, f"duplicate id (first at {seen_ids[qid]})")
        else:
            seen_ids[qid] = where
        if not isinstance(query, str) or not query.strip():
            rep.error(where, "missing/empty query")
            query = ""
        if not isinstance(rel, list) or not 1 <= len(rel) <= 3:
            rep.error(where, "relevant must be a list of 1-3 passages")
            continue
        n_queries += 1
        pairs = set()
        for j, r in enumerate(rel):
            w = f"{where} relevant[{j}]"
            if not isinstance(r, dict) or set(r) != {"path", "contains"}:
                rep.error(w, "must be an object with exactly 'path' and 'contains'")
                continue
            p, c = r["path"], r["contains"]
            if not isinstance(p, str) or not isinstance(c, str):
                rep.error(w, "path and contains must be strings")
                continue
            if (p, c) in pairs:
                rep.error(w, "duplicate passage")
            pairs.add((p, c))
            n_passages += 1
            if not p.startswith(lang + "/") or ".." in p.split("/") or os.path.isabs(p):
                rep.error(w, f"path {p!r} must be relative and under {lang}/")
                continue
            if "\n" in c or "\r" in c:
                rep.error(w, "contains has a line break")
                continue
            if not MIN_LEN <= len(c) <= MAX_LEN:
                rep.error(w, f"contains is {len(c)} chars (want {MIN_LEN}-{MAX_LEN}): {c!r}")
            loaded = load_lines(files, outdir, p)
            if loaded is None:
                rep.error(w, f"file {p} not found/readable in {outdir}")
                continue
            text, lines = loaded
            total = text.count(c)
            in_line = sum(l.count(c) for l in lines)
            if in_line == 0:
                rep.error(w, f"{c!r} not found within a single line of {p}")
                continue
            msg = f"{qid:8} {total}x  {p}  {c!r}"
            if total > MAX_OCCURRENCES:
                rep.warn(w, f"{c!r} occurs {total} times in {p}")
            else:
                print(f"ok    {msg}")
            if query and c.lower() in query.lower():
                rep.warn(w, "query contains the whole substring (trivial match)")
    if n_queries < MIN_QUERIES:
        rep.error(qpath, f"only {n_queries} queries (need >= {MIN_QUERIES})")
    return n_queries, n_passages


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit("usage: check_queries.py OUTDIR [QUERY_DIR]")
    outdir = argv[1]
    qdir = argv[2] if len(argv) == 3 else os.path.dirname(os.path.abspath(__file__))
    rep = Report()
    seen_ids = {}
    files = {}
    summary = []
    for lang, fname in LANGS:
        nq, np_ = check_file(lang, os.path.join(qdir, fname), outdir, seen_ids, rep, files)
        summary.append(f"{lang}: {nq} queries, {np_} relevant passages")
    print("---")
    for s in summary:
        print(s)
    print(f"{rep.errors} error(s), {rep.warnings} warning(s)")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
