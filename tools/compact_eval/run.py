#!/usr/bin/env python3
"""Compaction under a small context, with the real model: how often a fact from the first turn
survives into the last answer.

Each seed runs one scripted session through `aha run --agent --json --ctx CTX`, the one
tests/aha/compact.rs runs at temperature 0: ROUNDS turns, each asking what a ~7 KB file names on
its first line (the first turn also states a codename), so the context fills and the agent
compacts; then a last turn asks for the codename. Sampling is the model's default (temperature
0.7) with the seed, so the sessions differ; each seed also gets its own codename.

    python3 tools/compact_eval/run.py [--seeds 10] [--rounds 30] [--ctx 2048] [--out results.json]

Prints a Markdown table (the one in BENCHMARKS.md, "Compaction").
"""
import argparse, json, os, subprocess, sys, tempfile, time

CODENAMES = ["KESTREL-7", "ORCHID-12", "BASALT-3", "MARLIN-40", "CINDER-9", "TUNDRA-5",
             "QUARTZ-18", "HERON-2", "SABLE-61", "JUNIPER-8", "FALCON-33", "EMBER-4"]
COLOURS = ["amber", "cobalt", "crimson", "jade", "ochre", "violet"]


def workspace(n):
    ws = tempfile.mkdtemp(prefix="aha-compact-")
    for k in range(n):
        lines = [f"colour: {COLOURS[k % len(COLOURS)]}"]
        lines += [f"row {i} of part {k}: the quick brown fox jumps over the lazy dog {i * 7 + k}"
                  for i in range(100)]
        with open(os.path.join(ws, f"part_{k:02}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return ws


def session(aha, model, ws, ctx, seed, code, rounds):
    ask = lambda k: f"What colour does part_{k % 10:02}.txt name on its first line?"
    first = f"The project codename is {code}. {ask(0)}"
    then = [ask(k) for k in range(1, rounds)]
    then.append("What is the project codename I told you at the start? "
                "Answer with the codename only.")
    cmd = [aha, "run", "--agent", "--json", "--approve", "read-only", "--ctx", str(ctx),
           "--seed", str(seed), "--max-tokens", "200", "--max-steps", "3",
           "--workspace", ws, "-m", model, first]
    for t in then:
        cmd += ["--then", t]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ws, capture_output=True, text=True,
                       env={**os.environ, "AHA_PROMPT_CACHE": "off"})
    events = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    answers, cur = [], None
    for e in events:
        if e["type"] == "turn_started":
            cur = ""
            answers.append(cur)
        elif e["type"] == "answer_delta" and answers:
            answers[-1] += e["text"]
    comp = [e for e in events if e["type"] == "compacted"]
    return {
        "seed": seed, "code": code, "secs": round(time.time() - t0, 1),
        "turns": len(then) + 1,
        "reads": sum(e["type"] == "tool_result" and e["ok"] for e in events),
        "finished": sum(e["type"] == "turn_finished" for e in events),
        "errors": [e["message"] for e in events if e["type"] == "error"],
        "compactions": len(comp),
        "summarized": sum(e["summarized_turns"] for e in comp),
        "max_after": max((e["after"] for e in comp), default=0),
        "in_summary": any(code in e.get("summary", "") for e in comp),
        "last_answer": answers[-1] if answers else "",
        "recalled": bool(answers) and code in answers[-1],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--aha", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "aha"))
    ap.add_argument("--out")
    a = ap.parse_args()
    rows = []
    for s in range(1, a.seeds + 1):
        ws = workspace(10)
        r = session(a.aha, a.model, ws, a.ctx, s, CODENAMES[(s - 1) % len(CODENAMES)], a.rounds)
        rows.append(r)
        print(json.dumps(r, ensure_ascii=False), file=sys.stderr, flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1, ensure_ascii=False)
    n = len(rows)
    ok_turns = sum(r["finished"] == r["turns"] and not r["errors"] for r in rows)
    print(f"| seeds | sessions with every turn finished, no error | files read per session | "
          f"compactions per session | fact in the model's summary | fact in the last answer |")
    print("|---|---|---|---|---|---|")
    print(f"| {n} | {ok_turns}/{n} | {sum(r['reads'] for r in rows) / n:.1f} | "
          f"{sum(r['compactions'] for r in rows) / n:.1f} | "
          f"{sum(r['in_summary'] for r in rows)}/{n} | {sum(r['recalled'] for r in rows)}/{n} |")


if __name__ == "__main__":
    main()
