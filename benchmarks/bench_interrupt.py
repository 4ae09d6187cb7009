"""Ctrl-C latency of the compiled replay: SIGINT -> KeyboardInterrupt.

Sends SIGINT to this process from a timer thread while ``Program.batch`` (a
large batch through the demo MLP, with gradients), ``Program.predict`` and
``num_grad(program, x)`` run, and prints the time from the signal to the
``KeyboardInterrupt`` (or to the call's return, if the call ignored it), next
to the call's uninterrupted duration.  Run: ``python benchmarks/bench_interrupt.py``.
"""
import os
import random
import signal
import threading
import time

import numpy as np

import fastgrad
from fastgrad.compiled import make_demo_step
from fastgrad.nn import MLP


def _latency(call, delay):
    sent = []

    def fire():
        time.sleep(delay)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=fire)
    t.start()
    outcome = "KeyboardInterrupt only after the call returned"
    try:
        try:
            call()
        except KeyboardInterrupt:
            outcome = "KeyboardInterrupt inside the call"
            raise
        time.sleep(1.0)          # a signal the call ignored surfaces here
    except KeyboardInterrupt:
        end = time.perf_counter()
    finally:
        t.join()
    try:
        time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    return outcome, end - sent[0]


def main():
    random.seed(0)
    model = MLP(2, [16, 16, 1])
    prog = make_demo_step(model).program
    wide = make_demo_step(MLP(2, [128, 128, 1])).program
    rng = np.random.default_rng(0)
    B = 2_000_000
    X = rng.normal(size=(B, 3))
    x = rng.normal(size=prog.n_inputs)
    wrt = wide.wrt_params(x[:3])
    theta = wide.param_values()
    cases = {
        "batch(grad=True)": lambda: prog.batch(X),
        "predict": lambda: prog.predict(X),
    }
    for name, call in cases.items():
        t0 = time.perf_counter()
        call()
        dur = time.perf_counter() - t0
        delay = dur * 0.2
        outcome, lat = _latency(call, delay)
        print(f"{name} B={B}: call {dur * 1e3:7.1f} ms, SIGINT at "
              f"{delay * 1e3:6.1f} ms -> {outcome} after {lat * 1e3:7.2f} ms")
    cases = {f"num_grad({theta.size} params of MLP(2, [128, 128, 1]))":
             lambda: fastgrad.num_grad(wrt, theta)}
    for name, call in cases.items():
        t0 = time.perf_counter()
        call()
        dur = time.perf_counter() - t0
        outcome, lat = _latency(call, dur * 0.2)
        print(f"{name}: call {dur * 1e3:7.1f} ms, SIGINT at {dur * 200:6.1f} ms "
              f"-> {outcome} after {lat * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
