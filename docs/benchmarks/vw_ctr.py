# Vowpal Wabbit on gen --task ctr (train.vw = first 900k lines, hold.vw = last 100k), from its cache.
import time, sys, os, math
import numpy as np, vowpalwabbit
def learn(argv):
    t=time.perf_counter(); ws=vowpalwabbit.Workspace(arg_str=argv); ws.run_parser(); ws.finish(); return time.perf_counter()-t
y=np.array([1.0 if l.startswith('1') else 0.0 for l in open('hold.vw')])
for b in (18,24):
    for q in ("", "-q cd"):
        if os.path.exists('c.cache'): os.remove('c.cache')
        learn(f"-d train.vw -c --cache_file c.cache --loss_function logistic -b {b} {q} -f m.vw --quiet")
        ts=[learn(f"--cache_file c.cache --loss_function logistic -b {b} {q} -f m.vw --quiet") for _ in range(3)]
        ws=vowpalwabbit.Workspace(arg_str="-t -i m.vw -d hold.vw -p p.txt --quiet"); ws.run_parser(); ws.finish()
        m=np.loadtxt('p.txt', usecols=0)
        p=1/(1+np.exp(-m)); p=np.clip(p,1e-7,1-1e-7)
        ll=-np.mean(y*np.log(p)+(1-y)*np.log(1-p))
        print(f"vw -b {b} {q or '(no cross)'}: median {sorted(ts)[1]:.3f} s = {900000/sorted(ts)[1]/1e6:.3f} M rows/s, holdout log loss {ll:.4f}", flush=True)
