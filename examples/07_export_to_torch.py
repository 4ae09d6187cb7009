"""Graduating to PyTorch: train micrograd's demo with fastgrad, export it, go on in torch.

1. fastgrad trains the demo (MLP(2, [16, 16, 1]), svm loss + 1e-4 L2) for a
   few steps with the compiled training step.
2. ``prog.to_torch()`` turns the recorded program into a torch.nn.Module;
   torch.optim.SGD continues the training beside fastgrad's own
   ``sgd_step``: the losses agree.
3. ``prog.load_torch_state(net)`` copies torch's weights back into the Values.
4. DistributedDataParallel over 2 processes (gloo, on the loopback interface,
   a rendezvous file rather than a port), each process on half of the rows,
   against fastgrad's single-process training: the same losses.
5. ``prog.to_onnx(path)``: onnxruntime gives the same scores.

Needs torch, onnx and onnxruntime (``pip install "fastgrad[export]"``) and
scikit-learn for the data.  Run: ``python examples/07_export_to_torch.py``.
"""
import os
import random
import sys
import tempfile

import numpy as np

import fastgrad
from fastgrad.nn import MLP

ALPHA = 1e-4


def lr_at(k):
    return 1.0 - 0.9 * k / 100          # the demo's schedule


def make_program():
    """The demo's model and its per-sample program: inputs [x0, x1, y],
    outputs [svm loss, score], penalty alpha * sum(p*p)."""
    random.seed(1337)
    model = MLP(2, [16, 16, 1])

    def per_sample(v):
        x0, x1, y = v
        score = model([x0, x1])
        return [(1 + -y * score).relu(), score]

    prog = fastgrad.compile(per_sample, 3, params=model.parameters(),
                            penalty=lambda ps: ALPHA * sum(p * p for p in ps))
    return prog


def data():
    from sklearn.datasets import make_moons
    X, y = make_moons(n_samples=100, noise=0.1, random_state=np.random.RandomState(1337))
    return X, (y * 2 - 1).astype(np.float64)


def use_loopback():
    # gloo connects the processes over TCP; keep it on this machine
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    elif sys.platform == "darwin":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo0")


def ddp_worker(rank, world, rendezvous, out, theta, first_step, steps):
    """One DDP process: the exported program on its half of the rows."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    use_loopback()
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=world)
    try:
        net = make_program().to_torch()
        net.load_parameter_vector(torch.from_numpy(theta))
        ddp = DistributedDataParallel(net)
        opt = torch.optim.SGD(ddp.parameters(), lr=1.0)
        X, y = data()
        half = slice(rank * len(y) // world, (rank + 1) * len(y) // world)
        Xs, ys = torch.from_numpy(X[half]), torch.from_numpy(y[half])
        losses = []
        for k in range(first_step, first_step + steps):
            opt.param_groups[0]["lr"] = lr_at(k)
            opt.zero_grad()
            scores = ddp(Xs, ys)[:, 0]
            # this half's mean (rows in order) plus the penalty; DDP averages
            # the gradients, so the step is the full batch's
            local = torch.cumsum(scores, 0)[-1] * (1.0 / len(scores)) + ddp.module.penalty()
            local.backward()
            opt.step()
            total = local.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / world)
        if rank == 0:
            np.save(out, np.array(losses))
        # both processes done with every collective before either tears its
        # process group down: a rank whose peer had already gone could abort
        # in gloo's teardown ("terminate called without an active exception")
        dist.barrier()
        # the DDP wrapper holds a reference to the process group: drop it, so
        # destroy_process_group() below tears the group down right after the
        # barrier, not later when this function returns
        del ddp, opt
    finally:
        dist.destroy_process_group()


def main():
    import torch
    import torch.multiprocessing as mp

    X, y = data()
    prog = make_program()
    print(f"program: {prog}")

    # 1. fastgrad trains
    steps = 30
    for k in range(steps):
        loss = prog.sgd_step((X, y), lr_at(k))
    print(f"fastgrad: {steps} steps, loss {loss:.6f}")

    # 2. export and continue in torch, fastgrad alongside
    net = prog.to_torch()
    print("exported:", ", ".join(f"{type(m).__name__}({m.in_features}->{m.out_features})"
                                 for m in net.modules() if isinstance(m, torch.nn.Linear)))
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    worst = 0.0
    for k in range(steps, steps + 5):
        opt.param_groups[0]["lr"] = lr_at(k)
        opt.zero_grad()
        loss_t = net.loss(Xt, yt)            # mean svm loss + penalty, as sgd_step
        loss_t.backward()
        opt.step()
        loss_f = prog.sgd_step((X, y), lr_at(k))
        worst = max(worst, abs(loss_t.item() - loss_f) / loss_f)
        print(f"step {k}: fastgrad {loss_f:.15f}  torch {loss_t.item():.15f}")
    print(f"torch vs fastgrad, 5 steps: max relative loss difference {worst:.1e}")
    theta_f = prog.param_values()
    theta_t = net.parameter_vector().numpy()
    print(f"weights after the steps: max |fastgrad - torch| {np.abs(theta_f - theta_t).max():.1e}")

    # 3. torch's weights back into the Values
    prog.load_torch_state(net)
    back = np.abs(prog.param_values() - theta_t).max()
    print(f"load_torch_state: max |Value.data - torch| = {back}")

    # 4. DDP over 2 processes against fastgrad in one
    use_loopback()
    theta = prog.param_values()
    first, n_ddp = steps + 5, 20
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "losses.npy")
        mp.spawn(ddp_worker, args=(2, os.path.join(tmp, "rendezvous"), out, theta, first,
                                   n_ddp), nprocs=2, join=True)
        ddp_losses = np.load(out)
    one = np.array([prog.sgd_step((X, y), lr_at(k)) for k in range(first, first + n_ddp)])
    rel = np.abs(ddp_losses - one).max() / np.abs(one).max()
    print(f"DDP (2 processes, gloo) vs fastgrad (1 process), {n_ddp} steps: "
          f"losses {one[0]:.6f} -> {one[-1]:.6f}, max relative difference {rel:.1e}")

    # 5. ONNX, run by onnxruntime
    import onnxruntime
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "demo.onnx")
        prog.to_onnx(path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        sess = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        Y = sess.run(["Y"], {"X": np.column_stack([X, y])})[0]
    scores = prog.predict((X, y))[:, 1]
    acc = np.mean((Y[:, 1] > 0) == (y > 0))
    print(f"onnxruntime: max |score - fastgrad's| {np.abs(Y[:, 1] - scores).max():.1e}, "
          f"accuracy {acc:.2f}")


if __name__ == "__main__":
    main()
