"""ONNX Runtime per-node profile, 1 thread, batches 1 and 32: median kernel time of each node.

    ~/.cache/distill-edge/ort-venv/bin/python scripts/ort-profile.py MODEL.onnx [MODEL.onnx ...]

(the venv scripts/setup.sh makes holds onnxruntime and numpy). Prints the p50 latency of a
plain run, then one line per node: op, node, median microseconds, share.
"""
import collections, json, os, sys, tempfile, time
import numpy as np, onnxruntime as ort
def prof(path, batch, runs=200):
    so = ort.SessionOptions(); so.intra_op_num_threads=1; so.inter_op_num_threads=1; so.log_severity_level=3
    so.enable_profiling=True; so.profile_file_prefix=os.path.join(tempfile.gettempdir(), 'ort-profile')
    s = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
    x = (np.arange(batch*28*28) % 255 / 255.0).astype(np.float32).reshape(batch,1,28,28)
    for _ in range(20): s.run(None, {'input': x})
    t=[]
    for _ in range(runs):
        a=time.perf_counter(); s.run(None, {'input': x}); t.append((time.perf_counter()-a)*1e3)
    f = s.end_profiling()
    ev = json.load(open(f)); os.remove(f)
    acc = collections.defaultdict(list)
    for e in ev:
        if e.get('cat')=='Node' and e['name'].endswith('_kernel_time'):
            op=e['args']['op_name']; acc[(e['name'][:-12],op)].append(e['dur'])
    acc={k:float(np.median(v)) for k,v in acc.items()}
    tot=sum(acc.values())
    print(json.dumps({"model":path,"batch":batch,"p50_ms":float(np.median(t))}))
    for (n,op),v in sorted(acc.items(), key=lambda kv:-kv[1]):
        print(f"   {op:22s} {n:45s} {v:8.1f} us  {100*v/tot:5.1f}%")
for p in sys.argv[1:]:
    for b in (1,32): prof(p,b)
