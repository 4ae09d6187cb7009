"""SIGINT -> KeyboardInterrupt latency during Value.backward() on a deep chain.

Usage: ``PYTHONPATH=src python benchmarks/sigint_backward_latency.py 1e7``

A separate process sends a real SIGINT at 15%, 50% and 85% of a backward
pass (a thread of this process cannot run: backward holds the GIL) and
prints when it sent it; both sides read ``time.time()``.  Compare with a busy
pure-Python loop on the same machine (its latency is the floor).
"""
import os
import subprocess
import sys
import time

from fastgrad import Value

N = int(float(sys.argv[1]))
v = Value(1.0)
for _ in range(N):
    v = v + 1.0
t = time.perf_counter()
v.backward()
full = time.perf_counter() - t
print(f"chain {N:.0e}: backward {full*1e3:.0f} ms")
KILLER = ("import os,signal,sys,time; pid,d=int(sys.argv[1]),float(sys.argv[2]);"
          "sys.stdin.readline(); time.sleep(d); t=time.time();"
          "os.kill(pid, signal.SIGINT); print(t)")
for frac in (0.15, 0.5, 0.85):
    killer = subprocess.Popen([sys.executable, "-c", KILLER, str(os.getpid()),
                               str(full * frac)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)                       # let it start up
    killer.stdin.write("go\n")
    killer.stdin.flush()
    t0 = time.time()
    try:
        v.backward()
        where = "after backward returned"
        try:
            time.sleep(2.0)
        except KeyboardInterrupt:
            pass
    except KeyboardInterrupt:
        where = "inside backward"
    caught = time.time()
    sent = float(killer.communicate()[0])
    print(f"  SIGINT {((sent-t0)*1e3):4.0f} ms into the pass: KeyboardInterrupt "
          f"{where}, {(caught-sent)*1e3:6.1f} ms after the signal")
