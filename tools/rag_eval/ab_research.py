import json, subprocess, re, os, sys, random
aha=os.environ['CARGO_TARGET_DIR']+'/release/aha'
qs=[]
for f,n in [('qa_ko.jsonl',6),('qa_en.jsonl',6),('qa_unanswerable.jsonl',4)]:
    rows=[json.loads(l) for l in open('/work/main/tools/rag_eval/'+f)]
    random.Random(1).shuffle(rows); qs+=rows[:n]
for mode in sys.argv[1:]:
    env=dict(os.environ, AHA_PROMPT_CACHE='off')
    if mode=='tools': env['AHA_RESEARCH_TOOLS_FIRST']='1'
    ok=cit=abst=n_ans=n_un=0
    for q in qs:
        out=subprocess.run([aha,'run','--agent','--research','--json','--temperature','0','--max-steps','3','--max-tokens','300',q['question']],cwd='/tmp/rws2',env=env,capture_output=True,text=True).stdout
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
