#!/usr/bin/env python3
"""End-to-end agent tasks: does the final answer hold the fact the tools found?

Each task builds a small workspace (files, a git repository), runs
`aha run --agent --json` greedily on it, and checks the answer text against an expected pattern.
With --compare it runs every task twice, with and without the agent insisting on an answer
(`--no-insist`), and prints both.

    python3 tools/agent_eval.py [--model NAME|PATH] [--aha target/release/aha] [--compare]
"""
import argparse
import json
import os
import re
import subprocess
import tempfile

COMMITS = [
    ("Grace Hopper", "add parser", {"parser.py": "def parse(s):\n    return s.split()\n"}),
    ("Grace Hopper", "fix typo in README", {"README.md": "# Demo\nA tiny demo.\n"}),
    ("Ada Lovelace", "bump version to 2.4.1", {"config.py": 'VERSION = "2.4.1"\nDEBUG = False\n'}),
]

TASKS = [
    {"prompt": "What is 123456789 * 987654321? Use run_code to compute it.",
     "expect": r"121,?932,?631,?112,?635,?269", "approve": "full-auto"},
    {"prompt": "What is 2 to the power of 64? Use run_code to compute it.",
     "expect": r"18,?446,?744,?073,?709,?551,?616", "approve": "full-auto"},
    {"prompt": "What is the sum of all integers from 1 to 1000? Compute it with run_code.",
     "expect": r"500,?500", "approve": "full-auto"},
    {"prompt": "What is the factorial of 20? Use run_code to compute it.",
     "expect": r"2,?432,?902,?008,?176,?640,?000", "approve": "full-auto"},
    {"prompt": "How many commits are in this repository?", "expect": r"\b3\b|three", "git": True},
    {"prompt": "What is the message of the latest commit in this repository?",
     "expect": r"bump version", "git": True},
    {"prompt": "Who is the author of the latest commit in this repository?",
     "expect": r"Ada", "git": True},
    {"prompt": "Which branch is checked out in this repository?", "expect": r"feature/login",
     "git": True, "branch": "feature/login"},
    {"prompt": "What is the value of VERSION in config.py?", "expect": r"2\.4\.1",
     "files": {"config.py": 'VERSION = "2.4.1"\nDEBUG = False\n'}},
    {"prompt": "How many lines does notes.txt have?", "expect": r"\b7\b|seven",
     "files": {"notes.txt": "".join(f"note {c}\n" for c in "abcdefg")}},
    {"prompt": "Which files are in the src folder?", "expect": r"(?s)(lexer.*parser|parser.*lexer)",
     "files": {"src/lexer.rs": "pub fn lex() {}\n", "src/parser.rs": "pub fn parse() {}\n"}},
    {"prompt": "What does the function greet in app.py return?", "expect": r"Hello, \{?name\}?",
     "files": {"app.py": 'def greet(name):\n    return f"Hello, {name}!"\n'}},
]


def git(ws, *args, author=None):
    env = dict(os.environ)
    if author:
        env.update(GIT_AUTHOR_NAME=author, GIT_COMMITTER_NAME=author,
                   GIT_AUTHOR_EMAIL="a@example.com", GIT_COMMITTER_EMAIL="a@example.com")
    subprocess.run(["git", *args], cwd=ws, env=env, check=True, capture_output=True)


def workspace(task):
    ws = tempfile.mkdtemp(prefix="aha-agent-eval-")
    for path, text in task.get("files", {}).items():
        os.makedirs(os.path.join(ws, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(ws, path), "w") as f:
            f.write(text)
    if task.get("git"):
        git(ws, "init", "-q", "-b", "main")
        for author, msg, files in COMMITS:
            for path, text in files.items():
                with open(os.path.join(ws, path), "w") as f:
                    f.write(text)
            git(ws, "add", "-A")
            git(ws, "commit", "-q", "-m", msg, author=author)
        if task.get("branch"):
            git(ws, "switch", "-q", "-c", task["branch"])
    return ws


def run(aha, model, task, insist):
    ws = workspace(task)
    cmd = [aha, "run", "--agent", "--json", "--temperature", "0", "--max-tokens", "400",
           "--max-steps", "4", "--approve", task.get("approve", "read-only"),
           "--workspace", ws, "-m", model, task["prompt"]]
    if not insist:
        cmd.insert(3, "--no-insist")
    out = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=600).stdout
    events = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    answer = "".join(e["text"] for e in events if e["type"] == "answer_delta")
    calls = [e["name"] for e in events if e["type"] == "tool_call"]
    fin = next((e for e in reversed(events) if e["type"] == "turn_finished"), {})
    reason = fin.get("stats", {}).get("finish_reason", "?")
    ok = re.search(task["expect"], answer, re.IGNORECASE) is not None
    subprocess.run(["rm", "-rf", ws])
    return ok, calls, reason, answer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--aha", default="target/release/aha")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--only", type=int, nargs="*", help="task numbers (1-based) to run")
    a = ap.parse_args()
    a.aha = os.path.abspath(a.aha)
    variants = [True, False] if a.compare else [True]
    totals = {v: 0 for v in variants}
    tasks = [TASKS[i - 1] for i in a.only] if a.only else TASKS
    for t in tasks:
        for v in variants:
            ok, calls, reason, answer = run(a.aha, a.model, t, v)
            totals[v] += ok
            tag = "insist" if v else "no-insist"
            short = answer.strip().replace("\n", " ")[:70]
            print(f"{'OK  ' if ok else 'MISS'} {tag:9} {reason:13} calls={','.join(calls) or '-':30} "
                  f"{t['prompt'][:45]!r} -> {short!r}", flush=True)
    for v in variants:
        print(f"{'insisting' if v else 'not insisting'}: {totals[v]}/{len(tasks)} answers hold the expected fact")


if __name__ == "__main__":
    main()
