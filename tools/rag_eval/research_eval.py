#!/usr/bin/env python3
"""Research mode's answer quality and time to first token, on the QA sets of this folder.

    python3 tools/rag_eval/research_eval.py WORKSPACE [--modes on,off] [--limit N] [--out FILE]
                                            [--ttft N]

WORKSPACE holds `ko/` and `en/` from prepare.py; their index is built there (`aha index ko en`)
when it is missing. Every question goes through `aha run --agent --research --json` at
temperature 0, with retrieve-first on (`on`) and off (`off`: the model searches with its tools
if it chooses to). Reported per mode:

- accuracy: answers whose text matches the question's `answer` regex;
- citations shown as checked (`citation` events with ok): how many, and the share that are
  right by the QA set (the cited line, with one line either side, matches the answer regex or
  holds the `contains` text, or is the gold line itself);
- model citations: those the model wrote, and the share of them aha's check accepted;
- citation recall: answerable questions with a right citation shown as checked;
- abstention: unanswerable questions whose answer says the documents do not say, and the share
  that either abstain or that aha marks unsupported (`answer_check.supported` false);
- time to first token, measured from `turn_started` to the first delta as the events arrive
  (so retrieval counts), against a plain `aha run` of a prompt of the same length (the same
  researcher instructions and the same grounded message, sent as plain text), for the first
  `--ttft N` answerable questions of each language.

`aha` is $AHA_BIN, else $CARGO_TARGET_DIR/release/aha.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_qa import Corpus  # noqa: E402  (lines counted as the checker and aha's index count them)
from check_queries import Report, load as load_jsonl  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AHA = os.environ.get('AHA_BIN') or os.path.join(
    os.environ.get('CARGO_TARGET_DIR', os.path.join(ROOT, 'target')), 'release', 'aha')
RESEARCHER = open(os.path.join(ROOT, 'prompts', 'researcher.md'), encoding='utf-8').read().strip()
ABSTAIN = re.compile(
    r"not say|do(es)? not (contain|mention|state)|no information|not (mentioned|stated|specified|provided)"
    r"|cannot be found|나와 ?있지 않|언급되어 있지 않|명시되어 있지 않|알 수 없|찾을 수 없", re.I)
# research.rs: the instruction after the passages, by the question's language.
ASK_EN = ("Answer the question below in one short sentence, in the question's language, using only "
          "these passages. If they do not contain the answer, say that the documents do not say.")
ASK_KO = ("Answer the question below in Korean, in one short sentence, using only these passages. "
          "If they do not contain the answer, say that the documents do not say.")


def load(name):
    return [obj for _, obj in load_jsonl(os.path.join(HERE, name), Report())]


def run_events(args, cwd):
    """Runs aha with --json; the events with the time each arrived (seconds from start)."""
    t0 = time.monotonic()
    p = subprocess.Popen([AHA] + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, encoding='utf-8')
    out = []
    for line in p.stdout:
        if line.startswith('{'):
            out.append((time.monotonic() - t0, json.loads(line)))
    p.wait()
    return out


def ttft_of(events):
    start = next((t for t, e in events if e['type'] == 'turn_started'), None)
    first = next((t for t, e in events
                  if e['type'] in ('thinking_delta', 'answer_delta', 'tool_call')), None)
    if first is None:
        return None
    return (first - (start if start is not None else 0.0)) * 1000


corpora = {}


def lines(ws, path):
    """A corpus file's lines (none when it cannot be read)."""
    corpus = corpora.setdefault(ws, Corpus(ws))
    return corpus.lines(path) or []


def right_cite(ws, q, path, line):
    if path == q['path'] and abs(line - q['line']) <= 1:
        return True
    ls = lines(ws, path)
    if not 1 <= line <= len(ls):
        return False
    near = '\n'.join(ls[max(0, line - 2):line + 1])
    return q['contains'] in near or bool(re.search(q['answer'], near, re.I))


def grounded_message(ws, question, hits):
    """The message research mode sends, rebuilt from the `retrieval` event (research.rs)."""
    order = []
    for h in hits:
        if h['path'] not in order:
            order.append(h['path'])
    text = 'Passages from the documents:\n'
    for p in order:
        text += f'\n--- {p} ---\n'
        runs = sorted((h for h in hits if h['path'] == p), key=lambda h: h['start_line'])
        for k, h in enumerate(runs):
            if k:
                text += '...\n'
            for i in range(h['start_line'], h['end_line'] + 1):
                text += lines(ws, p)[i - 1].strip() + '\n'
    ko = re.search('[\uac00-\ud7a3]', question)
    ask, label = (ASK_KO, '질문') if ko else (ASK_EN, 'Question')
    return f'{text}\n{ask}\n\n{label}: {question}'


def score(ws, qs, rows):
    """The report's figures per mode, from the rows run() wrote."""
    by_id = {q['id']: q for q in qs}
    report = {}
    for row in rows:
        q = by_id.get(row['id'])
        if q is None or 'plain_ttft_ms' in row:
            continue
        r = report.setdefault(row['mode'], dict(
            n={'ko': 0, 'en': 0}, ok={'ko': 0, 'en': 0}, shown=0, shown_right=0, shown_c=0,
            shown_c_right=0, model=0, model_ok=0, recall=0, n_ans=0, n_un=0, abst=0,
            abst_or_flag=0, ttft=[], tokens=[], flagged_right=0))
        cites, check, answer = row['citations'], row['check'], row['answer']
        r['model'] += sum(1 for c in cites if not c.get('attached'))
        r['model_ok'] += sum(1 for c in cites if not c.get('attached') and c['ok'])
        if q.get('answerable', True):
            lang = q['lang']
            r['n'][lang] += 1
            r['n_ans'] += 1
            ok = bool(re.search(q['answer'], answer, re.I))
            r['ok'][lang] += ok
            shown = [c for c in cites if c['ok']]
            right = [c for c in shown if right_cite(ws, q, c['path'], c['line'])]
            r['shown'] += len(shown)
            r['shown_right'] += len(right)
            if ok:
                r['shown_c'] += len(shown)
                r['shown_c_right'] += len(right)
            r['recall'] += bool(right)
            if check.get('supported') is False and ok:
                r['flagged_right'] += 1
        else:
            r['n_un'] += 1
            ab = bool(ABSTAIN.search(answer))
            r['abst'] += ab
            r['abst_or_flag'] += ab or check.get('supported') is False
        if row['ttft_ms'] is not None:
            r['ttft'].append(row['ttft_ms'])
        if row.get('retrieval'):
            r['tokens'].append(row['retrieval']['tokens'])
    return report


def print_report(report, ratios):
    pct = lambda a, b: f'{a}/{b} ({100 * a / b:.0f}%)' if b else '-'
    for mode, r in report.items():
        print(f'## retrieve-first {mode}')
        for lang in ('ko', 'en'):
            print(f'accuracy {lang}: {pct(r["ok"][lang], r["n"][lang])}')
        print(f'citations shown as checked: {r["shown"]}, right by the QA set: {pct(r["shown_right"], r["shown"])}; '
              f'of correct answers: {pct(r["shown_c_right"], r["shown_c"])}')
        print(f'model-written citations: {r["model"]}, accepted by the check: {pct(r["model_ok"], r["model"])}')
        print(f'citation recall (answers with a right citation): {pct(r["recall"], r["n_ans"])}')
        print(f'correct answers aha marked unsupported: {r["flagged_right"]}')
        print(f'abstention: {pct(r["abst"], r["n_un"])}; abstained or marked unsupported: {pct(r["abst_or_flag"], r["n_un"])}')
        if r['ttft']:
            print(f'time to first token: median {statistics.median(r["ttft"]):.0f} ms')
        if r['tokens']:
            print(f'passage tokens: median {statistics.median(r["tokens"]):.0f}')
    if ratios:
        med = lambda xs: statistics.median(xs)
        rs = [t / p for t, p, _ in ratios]
        print(f'## time to first token ({len(rs)} questions, the three runs one after another)')
        print(f'research on: median {med([t for t, _, _ in ratios]):.0f} ms')
        print(f'the agent asked the same grounded message as a plain question: median '
              f'{med([p for _, p, _ in ratios]):.0f} ms; research/plain median {med(rs):.2f}x, max {max(rs):.2f}x')
        offs = [(t, o) for t, _, o in ratios if o]
        if offs:
            ro = [t / o for t, o in offs]
            print(f'research with retrieve-first off (the question alone): median {med([o for _, o in offs]):.0f} ms; '
                  f'on/off median {med(ro):.2f}x, max {max(ro):.2f}x')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('workspace')
    ap.add_argument('--modes', default='on,off', help="'' for the timing alone")
    ap.add_argument('--limit', type=int, default=0, help='questions per set (0: all)')
    ap.add_argument('--ttft', type=int, default=10, help='answerable questions per language timed')
    ap.add_argument('--out', help='write every answer and its events here (JSON lines)')
    ap.add_argument('--report', help='print the report of an earlier --out file, running nothing')
    a = ap.parse_args()
    ws = os.path.abspath(a.workspace)
    sets = [load('qa_ko.jsonl'), load('qa_en.jsonl'), load('qa_unanswerable.jsonl')]
    if a.limit:
        sets = [s[:a.limit] for s in sets]
    qs = [q for s in sets for q in s]
    if a.report:
        with open(a.report, encoding='utf-8') as f:
            rows = [json.loads(l) for l in f if l.strip()]
        ratios = [(r['ttft_ms'], r['plain_ttft_ms'], r.get('off_ttft_ms')) for r in rows
                  if 'plain_ttft_ms' in r]
        print_report(score(ws, qs, rows), ratios)
        return
    if not os.path.isdir(os.path.join(ws, '.aha', 'index')):
        subprocess.run([AHA, 'index', 'ko', 'en'], cwd=ws, check=True)
    out = open(a.out, 'w', encoding='utf-8') if a.out else None
    rows = []
    for mode in filter(None, a.modes.split(',')):
        for q in qs:
            args = ['run', '--agent', '--research', '--json', '--temperature', '0', '--max-steps', '3',
                    '--max-tokens', '200', q['question']]
            if mode == 'off':
                args.insert(3, '--no-retrieve-first')
            ev = run_events(args, ws)
            es = [e for _, e in ev]
            answer = ''.join(e.get('text', '') for e in es if e['type'] == 'answer_delta')
            retrieval = next((e for e in es if e['type'] == 'retrieval'), None)
            t = ttft_of(ev)
            row = dict(mode=mode, id=q['id'], answer=answer,
                       citations=[e for e in es if e['type'] == 'citation'],
                       check=next((e for e in es if e['type'] == 'answer_check'), {}),
                       ttft_ms=t, retrieval=retrieval,
                       logprobs=[e['logprob'] for e in es if e['type'] == 'answer_delta' and 'logprob' in e])
            rows.append(row)
            if out:
                out.write(json.dumps(row, ensure_ascii=False) + '\n')
                out.flush()
            good = re.search(q['answer'], answer, re.I) if q.get('answerable', True) else ABSTAIN.search(answer)
            print(mode, q['id'], 'OK' if good else '--', answer[:100].replace('\n', ' '), file=sys.stderr, flush=True)
    # Time to first token, the three one after another for each question: research on; the
    # agent (coding assistant, calls forbidden so that the answer streams) given the same
    # grounded message as a plain question of the same length; and research with
    # retrieve-first off (the question alone; its first output may be a call).
    ratios = []
    for lang in ('ko', 'en'):
        for q in [q for q in qs if q['lang'] == lang and q.get('answerable', True)][:a.ttft]:
            ev = run_events(['run', '--agent', '--research', '--json', '--temperature', '0',
                             '--max-tokens', '1', q['question']], ws)
            t = ttft_of(ev)
            retrieval = next((e for _, e in ev if e['type'] == 'retrieval'), None)
            if not retrieval:
                continue
            msg = grounded_message(ws, q['question'], retrieval['hits'])
            pt = ttft_of(run_events(['run', '--agent', '--no-tool-calls', '--json', '--temperature',
                                     '0', '--max-tokens', '1', msg], ws))
            ot = ttft_of(run_events(['run', '--agent', '--research', '--no-retrieve-first', '--json',
                                     '--temperature', '0', '--max-tokens', '1', q['question']], ws))
            if t and pt and ot:
                ratios.append((t, pt, ot))
                if out:
                    out.write(json.dumps(dict(id=q['id'], ttft_ms=t, plain_ttft_ms=pt,
                                              off_ttft_ms=ot)) + '\n')
    print_report(score(ws, qs, rows), ratios)


if __name__ == '__main__':
    main()
