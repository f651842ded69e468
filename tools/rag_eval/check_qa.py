#!/usr/bin/env python3
"""Validate the question-answering sets against a prepared corpus.

Usage: check_qa.py CORPUS_DIR [QA_DIR]

CORPUS_DIR is the directory written by prepare.py. QA_DIR (default: the
directory of this script) holds qa_ko.jsonl, qa_en.jsonl and
qa_unanswerable.jsonl.

Answerable questions (qa_ko.jsonl, qa_en.jsonl) are JSON objects
  {"id", "lang", "question", "answerable": true,
   "answer", "path", "line", "contains"}
where "answer" is a Python regular expression, applied with re.search and
re.IGNORECASE to a model's short answer, "path" is relative to CORPUS_DIR and
"line" is the 1-based number of the line (split on "\\n" only, as `grep -n`
and aha's chunker count) that states the fact; "contains" is an exact
substring of that line.

Unanswerable questions (qa_unanswerable.jsonl) are
  {"id", "lang", "question", "answerable": false, "absent": [str, ...]}
where "absent" lists key terms of the true answer; none of them may occur
anywhere in the corpus (compared case-insensitively).

Checks: valid JSON objects with exactly these fields and types; ids unique
across all sets; the language matches the set (and the path lies under that
language's directory); the file exists and its line `line` holds `contains`;
the answer regex compiles, matches `contains` (or, with a warning, the rest
of the line), does not match the empty string and does not match the
question itself (which would let a model pass by echoing the question);
at least MIN_KO / MIN_EN answerable and MIN_NONE unanswerable questions,
with at least MIN_NONE_PER_LANG of the latter in each language.
Exits 1 on any error.
"""

import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_queries import Report, load  # noqa: E402  (the same counter and JSONL reader)

MIN_KO = 40
MIN_EN = 40
MIN_NONE = 10
MIN_NONE_PER_LANG = 5
FLAGS = re.IGNORECASE

ANSWERABLE_KEYS = {"id", "lang", "question", "answerable", "answer", "path", "line", "contains"}
UNANSWERABLE_KEYS = {"id", "lang", "question", "answerable", "absent"}


class Corpus:
    def __init__(self, root):
        self.root = root
        self._lines = {}
        self._all = None

    def lines(self, rel):
        if rel not in self._lines:
            try:
                with open(os.path.join(self.root, rel), "r", encoding="utf-8", newline="") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                self._lines[rel] = None
            else:
                self._lines[rel] = text.replace("\r\n", "\n").split("\n")
        return self._lines[rel]

    def all_text(self):
        """Every corpus file, case-folded, keyed by relative path."""
        if self._all is None:
            self._all = {}
            for p in sorted(glob.glob(os.path.join(self.root, "**", "*"), recursive=True)):
                if not os.path.isfile(p):
                    continue
                try:
                    with open(p, "r", encoding="utf-8") as f:
                        self._all[os.path.relpath(p, self.root)] = f.read().casefold()
                except (OSError, UnicodeDecodeError):
                    continue
        return self._all


def check_common(where, obj, keys, seen, rep):
    """Field set, id, lang and question. Returns the id-qualified location or None."""
    missing = keys - set(obj)
    extra = set(obj) - keys
    if missing:
        rep.error(where, f"missing fields {sorted(missing)}")
        return None
    if extra:
        rep.error(where, f"unexpected fields {sorted(extra)}")
    qid = obj["id"]
    if not isinstance(qid, str) or not qid.strip():
        rep.error(where, "id must be a non-empty string")
        return None
    where = f"{where} [{qid}]"
    if qid in seen:
        rep.error(where, f"duplicate id (first at {seen[qid]})")
    else:
        seen[qid] = where
    if obj["lang"] not in ("ko", "en"):
        rep.error(where, f"lang must be 'ko' or 'en', not {obj['lang']!r}")
    if not isinstance(obj["question"], str) or not obj["question"].strip():
        rep.error(where, "question must be a non-empty string")
    return where


def check_answerable(path, lang, corpus, seen, rep):
    n = 0
    for where, obj in load(path, rep):
        where = check_common(where, obj, ANSWERABLE_KEYS, seen, rep)
        if where is None:
            continue
        n += 1
        if obj["lang"] != lang:
            rep.error(where, f"lang is {obj['lang']!r} in the {lang} set")
        if obj["answerable"] is not True:
            rep.error(where, "answerable must be true")
        p, ln, c, ans = obj["path"], obj["line"], obj["contains"], obj["answer"]
        if not isinstance(p, str) or not p.startswith(lang + "/") or os.path.isabs(p) \
                or ".." in p.split("/"):
            rep.error(where, f"path {p!r} must be relative and under {lang}/")
            continue
        if not isinstance(ln, int) or isinstance(ln, bool) or ln < 1:
            rep.error(where, f"line must be a positive integer, not {ln!r}")
            continue
        if not isinstance(c, str) or not c.strip() or "\n" in c or "\r" in c:
            rep.error(where, "contains must be a non-empty single-line string")
            continue
        lines = corpus.lines(p)
        if lines is None:
            rep.error(where, f"file {p} not found/readable in {corpus.root}")
            continue
        if ln > len(lines):
            rep.error(where, f"line {ln} is past the end of {p} ({len(lines)} lines)")
            continue
        text = lines[ln - 1]
        if c not in text:
            others = [i + 1 for i, l in enumerate(lines) if c in l]
            hint = f" (found on line(s) {others[:5]})" if others else " (not in the file)"
            rep.error(where, f"line {ln} of {p} does not contain {c!r}{hint}")
            continue
        if not isinstance(ans, str) or not ans:
            rep.error(where, "answer must be a non-empty regex string")
            continue
        try:
            rx = re.compile(ans, FLAGS)
        except re.error as e:
            rep.error(where, f"answer regex does not compile: {e}")
            continue
        if rx.search(""):
            rep.error(where, f"answer regex {ans!r} matches the empty string")
            continue
        if rx.search(obj["question"] or ""):
            rep.error(where, f"answer regex {ans!r} matches the question itself")
        m = rx.search(c)
        if m is None:
            m = rx.search(text)
            if m is None:
                rep.error(where, f"answer regex {ans!r} matches neither contains nor line {ln}")
                continue
            rep.warn(where, f"answer regex matches line {ln} but not contains")
        print(f"ok    {obj['id']:12} {p}:{ln}  {m.group(0)!r}")
    return n


def check_unanswerable(path, corpus, seen, rep):
    per_lang = {"ko": 0, "en": 0}
    for where, obj in load(path, rep):
        where = check_common(where, obj, UNANSWERABLE_KEYS, seen, rep)
        if where is None:
            continue
        if obj["answerable"] is not False:
            rep.error(where, "answerable must be false")
        absent = obj["absent"]
        if not isinstance(absent, list) or not absent or \
                not all(isinstance(t, str) and t.strip() for t in absent):
            rep.error(where, "absent must be a non-empty list of non-empty strings")
            continue
        if obj["lang"] in per_lang:
            per_lang[obj["lang"]] += 1
        found = []
        for term in absent:
            t = term.casefold()
            hits = [rel for rel, text in corpus.all_text().items() if t in text]
            if hits:
                found.append(f"{term!r} in {', '.join(hits[:3])}")
        if found:
            rep.error(where, "key term(s) occur in the corpus: " + "; ".join(found))
        else:
            print(f"ok    {obj['id']:12} absent: {', '.join(absent)}")
    return per_lang


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit("usage: check_qa.py CORPUS_DIR [QA_DIR]")
    root = argv[1]
    qdir = argv[2] if len(argv) == 3 else os.path.dirname(os.path.abspath(__file__))
    rep = Report()
    if not os.path.isdir(os.path.join(root, "ko")) or not os.path.isdir(os.path.join(root, "en")):
        rep.error(root, "not a prepared corpus (no ko/ and en/): run prepare.py first")
        print(f"{rep.errors} error(s)")
        return 1
    corpus = Corpus(root)
    if not corpus.all_text():
        rep.error(root, "corpus has no readable files")
    seen = {}
    n_ko = check_answerable(os.path.join(qdir, "qa_ko.jsonl"), "ko", corpus, seen, rep)
    n_en = check_answerable(os.path.join(qdir, "qa_en.jsonl"), "en", corpus, seen, rep)
    none = check_unanswerable(os.path.join(qdir, "qa_unanswerable.jsonl"), corpus, seen, rep)
    n_none = sum(none.values())
    for name, n, need in (("qa_ko.jsonl", n_ko, MIN_KO), ("qa_en.jsonl", n_en, MIN_EN),
                          ("qa_unanswerable.jsonl", n_none, MIN_NONE)):
        if n < need:
            rep.error(name, f"only {n} questions (need >= {need})")
    for lang, n in none.items():
        if n < MIN_NONE_PER_LANG:
            rep.error("qa_unanswerable.jsonl", f"only {n} {lang} questions (need >= {MIN_NONE_PER_LANG})")
    print("---")
    print(f"ko: {n_ko} answerable questions")
    print(f"en: {n_en} answerable questions")
    print(f"unanswerable: {n_none} (ko {none['ko']}, en {none['en']})")
    print(f"{rep.errors} error(s), {rep.warnings} warning(s)")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
