#!/usr/bin/env python3
"""Writes assets/speculate_tasks.jsonl: agent-style tasks for `aha bench --speculation`.

Three kinds, the text an agent copies most: `rewrite` (a file it has read, with a small change,
given back whole), `quote` (lines of a tool result, given back exactly) and `continue` (code with
a regular structure, completed). The snippets are cut from aha's own sources at the line ranges
below, so the set is rebuilt the same way from the same commit; the committed file is the
reference the figures in BENCHMARKS.md were measured on.

    python3 tools/speculate_tasks.py > assets/speculate_tasks.jsonl
"""
import json
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent


def lines(path, start, end):
    text = (ROOT / path).read_text().splitlines()
    return "\n".join(text[start - 1 : end])


def lang(path):
    return {"rs": "rust", "py": "python", "sh": "bash", "toml": "toml", "md": "markdown"}[
        path.rsplit(".", 1)[1]
    ]


def task(tid, kind, user, max_tokens=256, tool=None):
    msgs = [{"role": "system", "content": "You are a careful coding assistant working in the user's repository."}]
    if tool:
        name, args, result = tool
        msgs.append({"role": "user", "content": user})
        msgs.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                ],
            }
        )
        msgs.append({"role": "tool", "name": name, "tool_call_id": "c1", "content": result})
    else:
        msgs.append({"role": "user", "content": user})
    return {"id": tid, "kind": kind, "messages": msgs, "max_tokens": max_tokens}


REWRITES = [
    ("crates/aha-engine/src/local/speculate.rs", 28, 52, "Rename the enum `Speculate` to `DraftMode` everywhere in this excerpt."),
    ("crates/aha-engine/src/sampler.rs", 1, 40, "Add `#[must_use]` above every public function in this excerpt."),
    ("tools/long_fns.py", 1, 40, "Change the default limit from 80 to 100 lines."),
    ("crates/aha-rag/src/chunk.rs", 1, 45, "Replace every `usize` with `u32` in this excerpt."),
    ("crates/aha-engine/src/local/kv_cache.rs", 130, 175, "Rename the field `max_len` to `capacity_limit`."),
    ("crates/aha-protocol/src/settings.rs", 1, 45, "Add the line `// Part of the aha protocol.` at the very top."),
    ("tools/compare_dumps.py", 1, 40, "Rename the variable `args` to `opts` throughout."),
    ("crates/aha-engine/src/local/generate.rs", 100, 140, "Make `ThinkBudget::new` a `const fn`."),
]

QUOTES = [
    ("search_docs", {"query": "prefill chunk"}, "crates/aha-engine/src/local/engine.rs", 300, 330,
     "Where is the prompt prefilled? Quote the relevant lines exactly."),
    ("read_file", {"path": "README.md"}, "README.md", 1, 30, "Quote the first paragraph of the README exactly."),
    ("read_file", {"path": "Cargo.toml"}, "Cargo.toml", 1, 40, "Quote the `[workspace.dependencies]` entries exactly as they appear."),
    ("git_log", {"limit": 20}, None, 0, 0, "Quote the three most recent commit subjects exactly."),
    ("read_file", {"path": "ARCHITECTURE.md"}, "ARCHITECTURE.md", 20, 45, "Quote the crate diagram exactly."),
    ("search_docs", {"query": "KV cache truncate"}, "crates/aha-engine/src/local/kv_cache.rs", 150, 180,
     "Quote the code that truncates the cache exactly."),
    ("read_file", {"path": "prompts/agent.md"}, "prompts/agent.md", 1, 25, "Quote the rules about tool calls exactly."),
]

CONTINUES = [
    ("crates/aha-kernels/src/quant.rs", 1, 60),
    ("crates/aha-engine/src/local/model.rs", 12, 40),
    ("crates/aha-protocol/src/settings.rs", 1, 40),
    ("crates/aha-engine/src/remote.rs", 1, 45),
    ("src/cli/mod.rs", 40, 100),
    ("crates/aha-engine/src/local/speculate.rs", 110, 150),
    ("crates/aha-rag/src/analyzer.rs", 1, 50),
]


def git_log():
    out = subprocess.run(
        ["git", "log", "--format=%h %s", "-20", "cf97c9b"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def main():
    out = []
    for i, (path, a, b, change) in enumerate(REWRITES):
        src = lines(path, a, b)
        user = (
            f"Here is an excerpt of `{path}`:\n\n```{lang(path)}\n{src}\n```\n\n{change} "
            "Reply with the whole updated excerpt in one code block and nothing else."
        )
        out.append(task(f"rewrite-{i + 1}", "rewrite", user, 400))
    for i, (tool, args, path, a, b, ask) in enumerate(QUOTES):
        result = git_log() if path is None else lines(path, a, b)
        out.append(task(f"quote-{i + 1}", "quote", ask, 200, (tool, args, result)))
    for i, (path, a, b) in enumerate(CONTINUES):
        src = lines(path, a, b)
        # Cut in the middle so the model completes a structure it has seen the start of.
        cut = src.splitlines()
        head = "\n".join(cut[: len(cut) * 2 // 3])
        user = (
            f"Here is the start of `{path}`:\n\n```{lang(path)}\n{src}\n```\n\n"
            f"Write the excerpt again from the top, in one code block, continuing it past this point:\n\n```{lang(path)}\n{head}\n```"
        )
        out.append(task(f"continue-{i + 1}", "continue", user, 300))
    for t in out:
        print(json.dumps(t, ensure_ascii=False))


if __name__ == "__main__":
    main()
