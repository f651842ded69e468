#!/usr/bin/env python3
"""A quick probe of research mode's answers (not the benchmark): 6 Korean, 6 English and 4
unanswerable questions from the QA sets, through `aha run --agent --research --json`, greedy.

    AHA_RESEARCH_WS=DIR python3 tools/rag_eval/ab_research.py LABEL…

DIR (default /tmp/rws2) holds `ko/` and `en/` from prepare.py and their index (`aha index ko en`
run inside it). Each LABEL runs the set once and prints hits by regex and abstentions.
"""
import json, subprocess, re, os, sys, random
HERE = os.path.dirname(os.path.abspath(__file__))
WS = os.environ.get('AHA_RESEARCH_WS', '/tmp/rws2')
aha=os.environ['CARGO_TARGET_DIR']+'/release/aha'
qs=[]
for f,n in [('qa_ko.jsonl',6),('qa_en.jsonl',6),('qa_unanswerable.jsonl',4)]:
    rows=[json.loads(l) for l in open(os.path.join(HERE, f))]
    random.Random(1).shuffle(rows); qs+=rows[:n]
for mode in sys.argv[1:]:
    env=dict(os.environ, AHA_PROMPT_CACHE='off')
    ok=cit=abst=n_ans=n_un=0
    for q in qs:
        out=subprocess.run([aha,'run','--agent','--research','--json','--temperature','0','--max-steps','3','--max-tokens','300',q['question']],cwd=WS,env=env,capture_output=True,text=True).stdout
        ev=[json.loads(l) for l in out.splitlines() if l.startswith('{')]
        ans=''.join(e.get('text','') for e in ev if e['type']=='answer_delta')
        if q.get('answerable',True):
            n_ans+=1
            a=bool(re.search(q['answer'],ans,re.I)); ok+=a
            c=f"{q['path']}:{q['line']}" in ans.replace('ko/','ko/') 
            cit+=bool(re.search(re.escape(q['path'].split('/')[-1])+r'[^\]]*:'+str(q['line']),ans))
            print(mode,q['id'],'OK' if a else 'no','cite' if c else '', ans[:120].replace('\n',' '))
        else:
            n_un+=1
            ab=bool(re.search(r'(not say|do not|does not|없|않)',ans,re.I)); abst+=ab
            print(mode,q['id'],'ABST' if ab else 'answered', ans[:120].replace('\n',' '))
    print(f"== {mode}: accuracy {ok}/{n_ans}, cited-line {cit}/{n_ans}, abstain {abst}/{n_un}", flush=True)
