"""Hessian-vector product vs gradient on the demo MLP loss, eager and compiled.

Run: ``PYTHONPATH=src python benchmarks/bench_second_order.py [rounds]``

Workload: micrograd's demo loss (100 moons points, MLP(2, [16, 16, 1]),
svm margin + 1e-4 L2) at the demo weights, direction v ~ N(0, 1) over the
337 parameters.  Each figure is the minimum CPU time (``time.process_time``)
over rounds taken in interleaved blocks, so a ratio compares both sides under
the same machine load; only ratios are reported.

* eager gradient: build the loss graph, ``backward()``, free it;
* eager HVP, forward-over-reverse (``fastgrad.functional.hvp``'s sweep):
  build the loss graph, one C tangent/adjoint sweep, free it;
* eager HVP, reverse-over-reverse: build, ``grad(create_graph=True)``,
  ``v . grad``, ``grad`` again, free both graphs;
* compiled gradient: ``Program.batch(grad=True)`` of the per-sample loss;
* compiled HVP: ``Program.batch(grad=True)`` of the traced per-sample
  ``v . grad(loss, params, create_graph=True)`` (v as parameters), whose
  parameter gradient is H v.

The HVPs are checked against each other (1e-12) before timing.  Running the
module under pytest only does that check.
"""
import sys
import time

import numpy as np

import fastgrad
from fastgrad import Value, grad
from fastgrad.bench.workloads import demo_loss, demo_weights, engine, moons
from fastgrad._higher import hvp_sweep
from fastgrad.engine import dot_add

ALPHA = 1e-4


def setup():
    eng = engine("fastgrad")
    Xl, yl = moons(100)
    model = eng.model(demo_weights())
    params = model.parameters()
    v = np.random.default_rng(0).standard_normal(len(params))
    vs = [Value(float(t)) for t in v]
    X = np.column_stack([np.array(Xl), np.array(yl, dtype=float)])

    def eager_grad():
        model.zero_grad()
        demo_loss(eng, model, Xl, yl, ALPHA).backward()
        return np.array([p.grad for p in params])

    def eager_hvp_for():
        return np.array(hvp_sweep(demo_loss(eng, model, Xl, yl, ALPHA), params, v)[1])

    def eager_hvp_rr():
        gs = grad(demo_loss(eng, model, Xl, yl, ALPHA), params, create_graph=True)
        return np.array([h.data for h in grad(dot_add(list(gs), v.tolist(), Value(0.0)),
                                              params)])

    def per_sample(inp):
        x0, x1, yi = inp
        return (1 + -yi * model([x0, x1])).relu()

    def penalty(ps):
        return ALPHA * sum(p * p for p in ps)

    def per_sample_hvp(inp):
        gs = grad(per_sample(inp), params, create_graph=True, allow_unused=True)
        return dot_add([Value(0.0) if g is None else g for g in gs], vs, Value(0.0))

    def penalty_hvp(ps):
        gs = grad(penalty(params), params, create_graph=True)
        return dot_add(list(gs), vs, Value(0.0))

    prog_g = fastgrad.compile(per_sample, 3, params=params, penalty=penalty)
    prog_h = fastgrad.compile(per_sample_hvp, 3, params=params + vs, penalty=penalty_hvp)
    gbuf = np.empty(len(params))
    hbuf = np.empty(2 * len(params))

    def compiled_grad():
        prog_g.batch(X, grad=True, param_grad=gbuf, accumulate=False)
        return gbuf[:len(params)].copy()

    def compiled_hvp():
        prog_h.batch(X, grad=True, param_grad=hbuf, accumulate=False)
        return hbuf[:len(params)].copy()

    return {"eager_grad": eager_grad, "eager_hvp_for": eager_hvp_for,
                "eager_hvp_rr": eager_hvp_rr, "compiled_grad": compiled_grad,
                "compiled_hvp": compiled_hvp, "prog_g": prog_g, "prog_h": prog_h}


def check(w):
    ref = w["eager_hvp_rr"]()
    scale = np.max(np.abs(ref))
    for name in ("eager_hvp_for", "compiled_hvp"):
        err = np.max(np.abs(w[name]() - ref)) / scale
        assert err < 1e-12, (name, err)
    assert np.allclose(w["compiled_grad"](), w["eager_grad"](), rtol=1e-12, atol=1e-15)


def best(fns, rounds, blocks=5):
    """Minimum CPU time of each function over rounds in interleaved blocks."""
    times = {name: np.inf for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            fn()                                   # warm
            for _ in range(max(1, rounds // blocks)):
                t0 = time.process_time()
                fn()
                times[name] = min(times[name], time.process_time() - t0)
    return times


def main(rounds=50):
    w = setup()
    check(w)
    eager = best({k: w[k] for k in ("eager_grad", "eager_hvp_for", "eager_hvp_rr")}, rounds)
    comp = best({k: w[k] for k in ("compiled_grad", "compiled_hvp")}, rounds * 20)
    print(f"demo MLP loss, 100 points, 337 parameters; min CPU time over {rounds} "
          "(eager) / {} (compiled) interleaved rounds".format(rounds * 20))
    print(f"  eager gradient                      {eager['eager_grad'] * 1e3:8.3f} ms")
    print(f"  eager HVP, forward-over-reverse     {eager['eager_hvp_for'] * 1e3:8.3f} ms"
          f"   ratio {eager['eager_hvp_for'] / eager['eager_grad']:.2f}")
    print(f"  eager HVP, reverse-over-reverse     {eager['eager_hvp_rr'] * 1e3:8.3f} ms"
          f"   ratio {eager['eager_hvp_rr'] / eager['eager_grad']:.2f}")
    print(f"  compiled gradient ({w['prog_g'].n_instructions} instr.)     "
          f"{comp['compiled_grad'] * 1e3:8.3f} ms")
    print(f"  compiled HVP ({w['prog_h'].n_instructions} instr.)          "
          f"{comp['compiled_hvp'] * 1e3:8.3f} ms"
          f"   ratio {comp['compiled_hvp'] / comp['compiled_grad']:.2f}")


def test_hvp_variants_agree():
    check(setup())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
